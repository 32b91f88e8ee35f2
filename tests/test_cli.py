"""The CLI end to end: real MuJoCo, real files, W&B in offline mode."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY


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
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["env_steps"] for r in rows] == [64, 128]
    assert all("rollout/return_mean" in r and "is/ess" in r for r in rows)
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["counters"] == {"iteration": 2, "env_steps": 128}
    assert ckpt["config"]["env"]["name"] == "humanoid"
    offline = list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(offline) == 1 and offline[0].stat().st_size > 0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("algo.gamma=1.5", "algo.gamma=1.5 is invalid: must be in (0, 1]"),
        ("algo.gae_lambda=-0.1", "algo.gae_lambda=-0.1 is invalid: must be in [0, 1]"),
        ("algo.epochs=0", "algo.epochs=0 is invalid: must be >= 1"),
        ("algo.lr=-1e-3", "algo.lr=-0.001 is invalid: must be > 0"),
        (
            "algo.baseline=median",
            "algo.baseline='median' is invalid: allowed values are none, mean, optimal, value",
        ),
        ("algo.returns=future", "allowed values are total, reward_to_go"),
        ("algo.importance=both", "allowed values are per_step, trajectory"),
        ("train.num_envs=0", "train.num_envs=0 is invalid: must be > 0"),
        ("train.steps_per_iteration=-5", "train.steps_per_iteration=-5 is invalid: must be > 0"),
        (
            "env.xml_file=/nonexistent/robot.xml",
            "env.xml_file='/nonexistent/robot.xml' is invalid: no such file",
        ),
        ("train.device=tpu", "allowed values are auto, cpu, cuda"),
    ],
)
def test_bad_config_value_names_the_key_and_fails_before_simulation(locomo_cli, override: str, message: str):
    result = locomo_cli("train", override, "logger.wandb.mode=disabled")
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not list(locomo_cli.cwd.glob("outputs/*/*/metrics.jsonl"))  # nothing was simulated


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_cuda_without_cuda_is_a_clear_error(locomo_cli):
    result = locomo_cli("train", "train.device=cuda")
    assert result.returncode == 2
    assert "train.device='cuda' is invalid: CUDA is not available" in result.stderr


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("env=moon_walker", "Could not find 'env/moon_walker'"),
        ("algo=magic", "Could not find 'algo/magic'"),
        ("algo.no_such_key=1", "no_such_key"),
        ("train.iterations=many", "train.iterations"),
    ],
)
def test_hydra_level_errors_are_clear(locomo_cli, override: str, message: str):
    result = locomo_cli("train", override)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_command(locomo_cli):
    result = locomo_cli("dance")
    assert result.returncode == 2
    assert "unknown command 'dance'" in result.stderr


def test_cfg_job_prints_config(locomo_cli):
    result = locomo_cli("train", "env=cartpole", "--cfg", "job")
    assert result.returncode == 0, result.stderr
    assert "CartPole-v1" in result.stdout


@pytest.mark.slow
def test_multirun_sweeps_seeds_and_baselines(locomo_cli):
    result = locomo_cli(
        "train",
        "-m",
        "env=cartpole",
        "seed=0,1",
        "algo.baseline=none,mean",
        *TINY,
        "logger.wandb.mode=disabled",
    )
    assert result.returncode == 0, result.stderr
    runs = sorted(locomo_cli.cwd.glob("multirun/*/*/metrics.jsonl"))
    assert len(runs) == 4
