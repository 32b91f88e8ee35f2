"""Shared test helpers: run the real CLI in a subprocess, against this checkout's code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Tiny budgets that still exercise every part of a training run.
TINY = [
    "train.iterations=2",
    "train.num_envs=2",
    "train.steps_per_iteration=64",
    "logger.progress=false",
]


def run_locomo(*args: str, cwd: Path, timeout: float = 300, env: dict[str, str] | None = None):
    """Run ``python -m locomo <args>`` with this checkout first on the path; return CompletedProcess."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    full_env["WANDB_SILENT"] = "true"
    full_env.pop("WANDB_API_KEY", None)
    if env:
        full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "locomo", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def locomo_cli(tmp_path: Path):
    """``locomo_cli(*args)`` runs the CLI in a fresh temporary directory."""

    def run(*args: str, **kwargs):
        return run_locomo(*args, cwd=tmp_path, **kwargs)

    run.cwd = tmp_path  # type: ignore[attr-defined]
    return run


def compose(*overrides: str):
    """The training config as ``locomo train`` would compose it (validated), for in-process tests."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from locomo.config import CONF_DIR, register_configs, validate_config

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = hydra_compose(config_name="train", overrides=list(overrides))
    validate_config(cfg)
    return cfg
