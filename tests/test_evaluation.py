"""Evaluation rolls out through the training's vectorised envs: N episodes side by side, each the
same as if it ran alone (so replay = eval's episode 0), ended episodes frozen (``autoreset=False``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from locomo.config.schema import BehaviorConfig, EnvConfig
from locomo.envs import make_vec_env
from locomo.evaluation.episodes import rollouts
from locomo.paths import CONF_DIR
from locomo.rl.policy import make_actor
from locomo.rl.running_stats import RunningMeanStd


def env_config(name: str, backend: str):
    """conf/env/<name>.yaml on the schema, on ``backend`` with two simulator threads."""
    file = OmegaConf.load(CONF_DIR / "env" / f"{name}.yaml")
    return OmegaConf.merge(OmegaConf.structured(EnvConfig), file, {"backend": backend, "threads": 2})


def policy(spaces, seed: int = 0):
    torch.manual_seed(seed)
    return make_actor(spaces, [16], "tanh", 0.0), RunningMeanStd(spaces.obs_dim)


@pytest.mark.parametrize(
    ("name", "backend"), [("humanoid", "batched"), ("humanoid", "gymnasium"), ("cartpole", "gymnasium")]
)
@pytest.mark.parametrize("deterministic", [True, False])
def test_episodes_side_by_side_equal_each_episode_alone(name: str, backend: str, deterministic: bool):
    cfg = env_config(name, backend)
    together = make_vec_env(cfg, 3, autoreset=False)
    actor, normalizer = policy(together.spaces)
    record_states = name == "humanoid"
    try:
        batch = rollouts(together, actor, normalizer, 5, deterministic, BehaviorConfig(), 60, record_states)
    finally:
        together.close()
    alone_env = make_vec_env(cfg, 1, autoreset=False)
    try:
        thresholds = BehaviorConfig()
        alone = [
            rollouts(alone_env, actor, normalizer, 5 + i, deterministic, thresholds, 60, record_states)[0]
            for i in range(3)
        ]
    finally:
        alone_env.close()
    for a, b in zip(batch, alone, strict=True):
        assert a.seed == b.seed and a.record.ret == b.record.ret and a.record.length == b.record.length
        assert a.record.terms == b.record.terms and a.record.body == b.record.body
        assert a.record.terminated == b.record.terminated
        np.testing.assert_array_equal(a.rewards, b.rewards)
        if record_states:
            assert a.qpos is not None and b.qpos is not None and a.qvel is not None
            assert a.qpos.shape == (a.record.length + 1, together.mujoco_model().nq)
            np.testing.assert_array_equal(a.qpos, b.qpos)
            np.testing.assert_array_equal(a.qvel, b.qvel)
        else:
            assert a.qpos is None
        assert len(a.rewards) == a.record.length
        assert a.record.ret == pytest.approx(float(a.rewards.sum()), rel=1e-5)
    if name == "humanoid":  # untrained, it falls within 60 steps, each seed its own way
        assert len({r.record.ret for r in batch}) == 3 and any(r.record.terminated for r in batch)


@pytest.mark.parametrize("backend", ["batched", "gymnasium"])
def test_without_autoreset_an_ended_episode_stays_as_it_ended(backend: str):
    env = make_vec_env(env_config("humanoid", backend), 2, autoreset=False)
    try:
        env.reset(0)
        falls = np.zeros((2, env.spaces.action_dim), dtype=np.float32)
        ended: dict[int, int] = {}
        for t in range(1, 400):
            step = env.step(falls)
            for record in step.episodes:
                assert record.env_index not in ended, "an ended episode ended again"
                ended[record.env_index] = t
            if len(ended) == 2:
                break
        assert len(ended) == 2  # zero torques: both bodies fall
        qpos, qvel = env.mujoco_states()
        later = env.step(falls)
        assert not later.episodes and not later.terminated.any() and not later.truncated.any()
        assert (later.reward == 0).all()
        after = env.mujoco_states()
        np.testing.assert_array_equal(after[0], qpos)  # not stepped: the fallen state is kept
        np.testing.assert_array_equal(after[1], qvel)
        env.reset(0)  # and a reset brings both back
        assert not env.step(falls).episodes
    finally:
        env.close()


@pytest.mark.parametrize("backend", ["batched", "gymnasium"])
def test_current_episodes_cut_an_episode_in_progress(backend: str):
    env = make_vec_env(env_config("humanoid", backend), 2, autoreset=True)
    try:
        env.reset(3)
        total = np.zeros(2)
        for _ in range(5):
            total += env.step(np.zeros((2, env.spaces.action_dim), dtype=np.float32)).reward
        cut = env.current_episodes([1, 0])
        assert [r.env_index for r in cut] == [1, 0]
        assert all(r.length == 5 and not r.terminated for r in cut)
        assert cut[1].ret == pytest.approx(total[0], rel=1e-5)
        assert set(cut[0].body) == {"x0", "y0", "x", "y", "z", "qw", "qx", "qy", "qz"}
    finally:
        env.close()
