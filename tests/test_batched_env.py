"""The batched MuJoCo backend against Gymnasium itself: same model, state and actions -> same numbers.

Real MuJoCo on both sides: Gymnasium's v5 envs (through locomo's GymnasiumVecEnv, which adds the
reward terms and auto-reset) and BatchedMujocoVecEnv, seeded alike, driven by the same random
actions through terminations, auto-resets and time-limit truncations.
"""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import DictConfig, OmegaConf

from locomo.config.rules import validate_env
from locomo.config.schema import EnvConfig
from locomo.envs import EnvStep, GymnasiumVecEnv, make_vec_env
from locomo.envs.batched import BatchedMujocoVecEnv
from locomo.envs.tasks import TASKS
from locomo.errors import ConfigError
from locomo.paths import CONF_DIR


def env_config(name: str, **overrides: object) -> DictConfig:
    """conf/env/<name>.yaml on the schema, with dotted-key overrides."""
    cfg = OmegaConf.merge(OmegaConf.structured(EnvConfig), OmegaConf.load(CONF_DIR / "env" / f"{name}.yaml"))
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value)
    assert isinstance(cfg, DictConfig)
    return cfg


def random_actions(spaces, steps: int, num_envs: int, seed: int = 0) -> np.ndarray:
    """[T, N, A] float32 actions, 20% beyond the bounds on each side (so clipping is exercised)."""
    low, high = spaces.action_low, spaces.action_high
    span = high - low
    rng = np.random.default_rng(seed)
    return rng.uniform(low - 0.2 * span, high + 0.2 * span, size=(steps, num_envs, len(low))).astype(
        np.float32
    )


def episode_tuples(step: EnvStep) -> list[tuple]:
    return [(e.env_index, e.ret, e.length, e.terminated, e.terms, e.body) for e in step.episodes]


def assert_same_step(a: EnvStep, b: EnvStep, where: str) -> None:
    for field in ("obs", "reward", "terminated", "truncated", "final_obs"):
        x, y = getattr(a, field), getattr(b, field)
        assert x.dtype == y.dtype and x.shape == y.shape, (where, field)
        assert np.array_equal(x, y), f"{where}: {field} differs by {np.max(np.abs(x.astype(float) - y)):.3g}"
    assert a.terms.keys() == b.terms.keys()
    for name in a.terms:
        assert np.array_equal(a.terms[name], b.terms[name]), (where, name)
    assert episode_tuples(a) == episode_tuples(b), where


# name -> (time limit, steps): short limits so that both terminations and truncations happen.
CASES = {
    "humanoid": (24, 300),
    "humanoid_forward": (24, 300),
    "walker2d": (20, 300),
    "hopper": (18, 300),
    "ant": (30, 200),
    "half_cheetah": (30, 100),
    "inverted_pendulum": (5, 200),
}


@pytest.mark.parametrize("name", list(CASES))
def test_batched_matches_gymnasium_exactly(name: str):
    limit, steps = CASES[name]
    cfg = env_config(name, max_episode_steps=limit)
    num_envs = 4
    gym_env, batched = GymnasiumVecEnv(cfg, num_envs), BatchedMujocoVecEnv(cfg, num_envs, threads=2)
    assert batched.spaces.obs_dim == gym_env.spaces.obs_dim
    assert np.array_equal(batched.spaces.action_low, gym_env.spaces.action_low)
    assert batched.spaces.control_dt == gym_env.spaces.control_dt
    # Same seed -> same initial qpos/qvel (the reset observations include every qpos but x(, y) and qvel).
    assert np.array_equal(gym_env.reset(seed=11), batched.reset(seed=11))
    terminated = truncated = 0
    for t, actions in enumerate(random_actions(gym_env.spaces, steps, num_envs)):
        expected, got = gym_env.step(actions), batched.step(actions)
        assert_same_step(expected, got, f"{name} step {t}")
        terminated += int(got.terminated.sum())
        truncated += int(got.truncated.sum())
    assert truncated > 0
    if name != "half_cheetah":  # the cheetah never terminates
        assert terminated > 0
    gym_env.close()
    batched.close()


def test_thread_count_does_not_change_results():
    cfg = env_config("humanoid", max_episode_steps=30)
    envs = [BatchedMujocoVecEnv(cfg, 5, threads=k) for k in (1, 2, 3)]  # 5 envs: uneven slices
    assert [e.threads for e in envs] == [1, 2, 3]
    first = [e.reset(seed=3) for e in envs]
    assert all(np.array_equal(first[0], o) for o in first[1:])
    for t, actions in enumerate(random_actions(envs[0].spaces, 120, 5, seed=1)):
        steps = [e.step(actions) for e in envs]
        for other in steps[1:]:
            assert_same_step(steps[0], other, f"step {t}")
    for e in envs:
        e.close()


def test_auto_reset_bookkeeping():
    """Episodes restart in the step they end; records add up the steps and rewards since the reset."""
    limit, num_envs = 25, 6
    env = BatchedMujocoVecEnv(env_config("humanoid", max_episode_steps=limit), num_envs, threads=2)
    obs = env.reset(seed=0)
    lengths = np.zeros(num_envs, dtype=int)
    returns = np.zeros(num_envs)
    ended = 0
    for actions in random_actions(env.spaces, 150, num_envs):
        step = env.step(actions)
        lengths += 1
        returns += step.reward
        done = step.terminated | step.truncated
        assert not (step.terminated & step.truncated).any()
        assert np.array_equal(step.truncated, (lengths == limit) & ~step.terminated)
        # Where not done the next obs is the final obs; where done it is a fresh episode's first obs.
        assert np.array_equal(step.obs[~done], step.final_obs[~done])
        assert not np.isclose(step.obs[done], step.final_obs[done]).all(axis=1).any()
        assert sorted(e.env_index for e in step.episodes) == list(np.flatnonzero(done))
        for e in step.episodes:
            i = e.env_index
            assert e.length == lengths[i] and e.terminated == bool(step.terminated[i])
            assert e.ret == pytest.approx(returns[i], rel=1e-5)
            assert e.ret == pytest.approx(sum(e.terms.values()), rel=1e-9)
            assert abs(e.body["x0"]) <= 0.01 and abs(e.body["y0"]) <= 0.01  # reset noise scale
            if e.terminated:  # fell: torso height left Humanoid-v5's healthy range (1, 2)
                assert not 1.0 < e.body["z"] < 2.0
        # A new episode starts near the initial pose: height 1.4 +- 0.01 is obs[0] (qpos[2]).
        assert np.all(np.abs(step.obs[done, 0] - 1.4) <= 0.01 + 1e-6)
        lengths[done], returns[done] = 0, 0.0
        ended += int(done.sum())
        obs = step.obs
    assert ended > num_envs
    assert obs.dtype == np.float32
    env.close()


def test_reset_is_seeded_per_env():
    cfg = env_config("humanoid")
    a, b = BatchedMujocoVecEnv(cfg, 3, threads=1), BatchedMujocoVecEnv(cfg, 2, threads=1)
    obs_a, obs_b = a.reset(seed=5), b.reset(seed=6)
    assert np.array_equal(obs_a[1:], obs_b)  # env i is seeded with seed + i
    assert not np.array_equal(obs_a[0], obs_a[1])
    assert np.array_equal(a.reset(seed=5), obs_a)


def test_make_vec_env_picks_the_backend_from_the_config():
    humanoid = make_vec_env(env_config("humanoid", threads=1), 2)
    assert isinstance(humanoid, BatchedMujocoVecEnv) and humanoid.threads == 1
    humanoid.close()
    cartpole = make_vec_env(env_config("cartpole"), 2)
    assert isinstance(cartpole, GymnasiumVecEnv)
    cartpole.close()
    for name in CASES:
        assert env_config(name).backend == "batched"
        assert env_config(name).id in TASKS


def test_config_validation():
    with pytest.raises(ConfigError, match=r"env.threads=-1 is invalid: must be >= 0"):
        validate_env(env_config("humanoid", threads=-1))
    with pytest.raises(ConfigError, match=r"env.id='Swimmer-v5' is invalid: env.backend=batched supports"):
        validate_env(env_config("humanoid", id="Swimmer-v5"))
    validate_env(env_config("humanoid", id="Swimmer-v5", backend="gymnasium"))  # any Gymnasium id there
    validate_env(env_config("humanoid", threads=0))


def test_unknown_kwarg_and_reward_key_are_config_errors():
    with pytest.raises(ConfigError, match=r"env\.kwargs\.forward_weight"):
        BatchedMujocoVecEnv(env_config("humanoid", kwargs={"forward_weight": 1.0}), 1)
    with pytest.raises(ConfigError, match=r"env\.reward_terms\.speed"):
        BatchedMujocoVecEnv(env_config("walker2d", reward_terms={"speed": "reward_speed"}), 1)


def test_kwargs_reach_the_formulas():
    """humanoid_forward's weights (forward 1.0, ctrl 1.0, no contact cost) change the info terms."""
    num_envs = 2
    default, forward = (
        BatchedMujocoVecEnv(env_config(name), num_envs, threads=1)
        for name in ("humanoid", "humanoid_forward")
    )
    default.reset(seed=0)
    forward.reset(seed=0)
    actions = random_actions(default.spaces, 1, num_envs)[0]
    a, b = default.step(actions), forward.step(actions)
    assert np.array_equal(a.obs, b.obs)  # same physics
    np.testing.assert_allclose(b.terms["forward_velocity"] * 1.25, a.terms["forward"], rtol=1e-6)
    assert np.all(b.terms["alive"] == 0.0)  # reward_scales.alive = 0
    default.close()
    forward.close()
