"""The walker shipped in assets/ walks: what `locomo replay|render|eval checkpoint=walker` show.

Its command, source and full evaluation are in assets/walker.json (written by `locomo export`).
"""

from __future__ import annotations

import json

import pytest
import torch

from locomo.behavior import WALKED_FORWARD
from locomo.config import ASSETS_DIR, BehaviorConfig
from locomo.evaluation import load_policy, resolve_checkpoint_path, run_episodes

WALKER = ASSETS_DIR / "walker.pt"


def test_shipped_walker_is_small_and_found_by_name():
    assert WALKER.is_file() and WALKER.stat().st_size < 2 * 2**20
    assert resolve_checkpoint_path("walker") == WALKER
    summary = json.loads(WALKER.with_suffix(".json").read_text())
    assert summary["training_command"].startswith("locomo train")
    assert summary["deterministic"]["labels"][WALKED_FORWARD] >= 16  # of 20 episodes


def test_shipped_walker_walks_forward():
    torch.set_num_threads(1)
    policy = load_policy("walker")
    env = policy.make_env()
    try:
        # 400 steps = 6 s of simulated time, deterministic (mean action), a seed not in its summary.
        (rollout,) = run_episodes(policy, env, 123, True, BehaviorConfig(), max_steps=400)
    finally:
        env.close()
    assert not rollout.record.terminated and rollout.record.length == 400
    assert rollout.behavior is not None and rollout.behavior.label == WALKED_FORWARD
    assert rollout.behavior.forward >= 3.0, rollout.behavior  # metres along +x in 6 s
    assert rollout.record.ret > 5 * 400 * 0.9  # alive bonus of 5 per step, plus forward progress
    assert rollout.record.ret == pytest.approx(sum(rollout.rewards.tolist()))
