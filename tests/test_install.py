"""A wheel built from this checkout, installed (not editable) into a fresh venv, works from anywhere.

The configs (``locomo/conf``) and assets (``locomo/assets``: the humanoid MJCF, the shipped walker)
must travel inside the wheel. The fresh venv gets locomo from the wheel alone; its dependencies
come from the interpreter running the tests, through a ``.pth`` line (so no download). Paths
listed in a ``.pth`` file are not scanned for further ``.pth`` files, so an editable install of
this checkout in that interpreter stays invisible to the fresh venv.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import imageio.v3 as iio
import pytest

from tests.conftest import REPO, TINY


def run(*cmd: str | Path, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env |= {"MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "WANDB_SILENT": "true", "DISPLAY": ""}
    result = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, (cmd, result.stdout[-2000:], result.stderr[-4000:])
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(the fresh venv's bin directory, an unrelated working directory)."""
    root = tmp_path_factory.mktemp("install")
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "locomo", src / "locomo", ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    run(*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", root / "dist", src, cwd=root)
    (wheel,) = (root / "dist").glob("locomo-*.whl")
    venv = root / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=root)
    python = venv / "bin" / "python"
    run(*pip, "--python", python, "install", "--no-deps", "--no-index", wheel, cwd=root)
    purelib = run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=root)
    deps = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib"), *site.getsitepackages()}
    (Path(purelib.stdout.strip()) / "locomo_test_deps.pth").write_text("\n".join(sorted(deps)) + "\n")
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    return venv / "bin", elsewhere


@pytest.mark.slow
def test_the_wheel_carries_configs_and_assets_and_runs_from_another_directory(installed):
    bin_dir, cwd = installed
    where = run(bin_dir / "python", "-c", "import locomo; print(locomo.__file__)", cwd=cwd).stdout
    assert Path(where.strip()).is_relative_to(bin_dir.parent), where  # the wheel's copy, not the checkout
    job = run(bin_dir / "locomo", "train", "--cfg", "job", cwd=cwd).stdout
    assert "id: Humanoid-v5" in job and "lr_schedule: adaptive" in job  # conf/ composed from the package

    run(
        bin_dir / "locomo", "train", *TINY, "logger.wandb.mode=disabled", "video.enabled=false",
        "hydra.run.dir=run", cwd=cwd,
    )  # fmt: skip
    assert (cwd / "run" / "checkpoints" / "last.pt").is_file()
    rendered = run(
        bin_dir / "locomo", "render", "checkpoint=run", "episodes=1", "width=96", "height=72", "max_steps=20",
        "sheet=false", "grid=false", cwd=cwd,
    )  # fmt: skip
    videos = list(cwd.rglob("*.mp4"))
    assert videos, rendered.stdout
    assert iio.imread(videos[0]).shape[1:] == (72, 96, 3)
    # The shipped walker is found by name, from the package's assets.
    evaluated = run(
        bin_dir / "locomo", "eval", "checkpoint=walker", "episodes=1", "max_steps=30", "mode=deterministic",
        "output=eval.json", cwd=cwd,
    )  # fmt: skip
    assert "walker" in evaluated.stdout and (cwd / "eval.json").is_file()
