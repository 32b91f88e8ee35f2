"""Sweeps on Hydra's launchers: a joblib sweep (parallel processes) and a submitit_local one (the
local backend of the SLURM launcher) finish, each run keeps its record and joins the sweep's
W&B group, and ``locomo plot`` draws them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.conftest import run_locomo

SMALL = [
    "env=cartpole",
    "train.iterations=2",
    "train.num_envs=2",
    "train.steps_per_iteration=64",
    "logger.progress=false",
    "logger.wandb.mode=offline",
    "video.enabled=false",
]

LAUNCHERS = {
    "joblib": ("hydra_plugins.hydra_joblib_launcher", ["hydra.launcher.n_jobs=2"]),
    "submitit_local": ("hydra_plugins.hydra_submitit_launcher", ["hydra.launcher.timeout_min=10"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("launcher", list(LAUNCHERS))
def test_a_two_job_sweep_finishes_on_the_launcher_and_plots(launcher: str, tmp_path: Path):
    plugin, settings = LAUNCHERS[launcher]
    if importlib.util.find_spec(plugin) is None:
        pytest.skip(f"needs the launcher plugin: pip install -e '.[sweep]' ({plugin})")
    sweep_args = ["-m", f"hydra/launcher={launcher}", *settings, "seed=0,1", "hydra.sweep.dir=my_sweep"]
    result = run_locomo("train", *sweep_args, *SMALL, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = tmp_path / "my_sweep"
    runs = sorted(p.parent for p in sweep.glob("*/metrics.jsonl"))
    assert len(runs) == 2, list(sweep.iterdir())
    for run in runs:
        assert (run / "checkpoints" / "last.pt").is_file()
        overrides = (run / ".hydra" / "overrides.yaml").read_text()  # written by the job itself
        assert "seed=" in overrides and "env=cartpole" in overrides
        (wandb_file,) = run.glob("wandb/offline-run-*/run-*.wandb")
        assert b"my_sweep" in wandb_file.read_bytes()  # the W&B group, named after the sweep
    plotted = run_locomo("plot", f"runs={sweep}", cwd=tmp_path)
    assert plotted.returncode == 0, plotted.stderr
    assert (sweep / "curves.png").stat().st_size > 0
    assert "run: 2 run(s)" in plotted.stdout  # the two seeds are one curve
