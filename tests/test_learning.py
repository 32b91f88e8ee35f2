"""The agent actually learns: returns improve past stated thresholds within CI-sized budgets.

Budgets (in env steps; mean return of the last 100 episodes at the end):
- cartpole, reward-to-go + batch-mean baseline (the lecture's rung 3, `algo=baseline`) with
  normalised advantages and lr 3e-3: 40 iterations x 2048 steps = 81,920 env steps, >= 195.
  Measured: 486 (seed 0, the test's), 455 (seed 1), 449 (seed 2).
- inverted_pendulum, reward-to-go + value baseline + clipped importance weights + reward
  normalisation (`algo=clipped`): 70 iterations x 2048 steps = 143,360 env steps, >= 900.
  Measured: 1000 for seeds 0, 1 and 2.
"""

from __future__ import annotations

import pytest

from locomo.training.runner import Runner
from tests.conftest import CARTPOLE_LEARNS, QUIET, compose


@pytest.mark.slow
def test_cartpole_reward_to_go_with_mean_baseline_reaches_195(tmp_path):
    cfg = compose(*CARTPOLE_LEARNS, *QUIET)
    metrics = Runner(cfg, tmp_path).run()
    assert metrics["iteration"] == 40
    assert metrics["rollout/return_mean"] >= 195.0, metrics["rollout/return_mean"]


@pytest.mark.slow
def test_inverted_pendulum_reaches_900(tmp_path):
    cfg = compose(
        "env=inverted_pendulum",
        "algo=clipped",
        "train.num_envs=8",
        "train.steps_per_iteration=2048",
        "train.iterations=70",
        *QUIET,
    )
    metrics = Runner(cfg, tmp_path).run()
    assert metrics["rollout/return_mean"] >= 900.0, metrics["rollout/return_mean"]
