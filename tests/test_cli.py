"""The CLI end to end: real MuJoCo, real files, W&B in offline mode."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import TINY, metrics_rows


def run_dir_of(cwd: Path) -> Path:
    dirs = [p.parent for p in cwd.glob("outputs/*/*/config.yaml")]
    assert len(dirs) == 1, dirs
    return dirs[0]


@pytest.mark.slow
def test_train_humanoid_tiny_writes_config_metrics_checkpoint_and_wandb(locomo_cli):
    result = locomo_cli("train", *TINY, "logger.wandb.mode=offline")
    assert result.returncode == 0, result.stderr
    run = run_dir_of(locomo_cli.cwd)
    assert "Humanoid-v5" in (run / "config.yaml").read_text()
    rows = metrics_rows(run)
    # The default recipe overlaps: iteration 1 collects the batch it trains on and the next one.
    assert [r["env_steps"] for r in rows] == [128, 192]
    assert all("rollout/return_mean" in r and "is/ess" in r for r in rows)
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["counters"] == {"iteration": 2, "env_steps": 192}
    assert ckpt["config"]["env"]["name"] == "humanoid"
    offline = list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(offline) == 1 and offline[0].stat().st_size > 0


# Bad inputs (config values, Hydra errors, unknown command, checkpoints, ...) are the catalogue in
# tests/test_bad_inputs.py, one parametrized test per row of docs/bad_inputs.md.


def test_cfg_job_prints_config(locomo_cli):
    result = locomo_cli("train", "env=cartpole", "--cfg", "job")
    assert result.returncode == 0, result.stderr
    assert "CartPole-v1" in result.stdout
