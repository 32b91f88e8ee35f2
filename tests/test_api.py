"""The Python API (``locomo.load``, ``make_env``, ``train``) and the Gymnasium ids, on the real parts:
the shipped walker, MuJoCo, Hydra's configs, a real (tiny) training run, SB3."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from omegaconf import OmegaConf

import locomo
from locomo.config.schema import BehaviorConfig
from locomo.errors import CheckpointError, ConfigError
from locomo.evaluation.episodes import run_episodes
from locomo.paths import CONF_DIR
from tests.conftest import REPO, cli_env

# A tiny training run: one iteration of 256 steps on the inverted pendulum (about a second).
TINY_TRAIN = [
    "env=inverted_pendulum",
    "algo=reinforce",
    "train.iterations=1",
    "train.steps_per_iteration=256",
    "train.num_envs=4",
    "video.enabled=false",
    "logger.wandb.mode=disabled",
    "logger.progress=false",
]


def test_import_locomo_stays_cheap() -> None:
    """``import locomo`` loads neither torch, MuJoCo nor Hydra (the API loads them on first use)."""
    code = "import sys, locomo; print(sorted(m for m in ('torch', 'mujoco', 'hydra') if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=cli_env(), capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
    assert locomo.__version__
    assert {"load", "make_env", "train", "Policy"} <= set(dir(locomo))
    with pytest.raises(AttributeError):
        _ = locomo.no_such_name  # type: ignore[attr-defined]


# --- load / act ------------------------------------------------------------------------------


@pytest.mark.parametrize("deterministic", [True, False], ids=["deterministic", "stochastic"])
def test_walker_in_stock_gymnasium_reproduces_eval(deterministic: bool) -> None:
    """``locomo.load("walker")`` acting in stock ``gymnasium.make("Humanoid-v5")`` gives the per-episode
    returns of ``locomo eval`` (its code: :func:`run_episodes`) exactly, for seeds 0 and 1.

    Eval runs episode i of ``seed=s`` in locomo's batched env reset with seed s + i (drawn as
    Gymnasium's ``reset(seed=s + i)`` draws) and, in stochastic mode, samples with
    ``torch.Generator().manual_seed(s + i)``: so the same seed for ``reset`` and the generator
    here. Stochastic episodes are cut at 300 steps (eval's ``max_steps``) to keep the test short.
    """
    torch.set_num_threads(1)  # as locomo eval
    policy = locomo.load("walker")
    max_steps = None if deterministic else 300
    env = policy.loaded.make_env(2)
    try:
        thresholds = OmegaConf.structured(BehaviorConfig)
        reference = run_episodes(policy.loaded, env, 0, deterministic, thresholds, max_steps)
    finally:
        env.close()
    for seed, rollout in enumerate(reference):
        gym_env = gymnasium.make("Humanoid-v5")
        obs, _ = gym_env.reset(seed=seed)
        generator = torch.Generator().manual_seed(seed)
        rewards: list[float] = []
        done = False
        while not done and (max_steps is None or len(rewards) < max_steps):
            obs, reward, terminated, truncated, _ = gym_env.step(
                policy.act(obs, deterministic=deterministic, generator=generator)
            )
            rewards.append(float(reward))
            done = terminated or truncated
        gym_env.close()
        assert len(rewards) == rollout.record.length
        # Every step's reward as eval's rollout keeps it (through a float32 tensor) bit for bit; the
        # return (the env's float64 rewards) up to the order of its sum.
        stored = np.asarray(rollout.rewards).astype(np.float32)
        assert np.array_equal(np.asarray(rewards, dtype=np.float32), stored), f"seed {seed}: rewards differ"
        assert sum(rewards) == pytest.approx(rollout.record.ret, rel=1e-12, abs=0.0)


def test_act_takes_one_observation_or_a_batch() -> None:
    """[obs_dim] -> [act_dim], [N, obs_dim] -> [N, act_dim], row for row the same numbers, in bounds."""
    policy = locomo.load("walker", seed=0)
    env = gymnasium.make("Humanoid-v5")
    batch = np.stack([env.reset(seed=s)[0] for s in range(3)])  # [3, 348] float64, as Gymnasium gives
    space = env.action_space
    single = policy.act(batch[1])
    actions = policy.act(batch)
    assert single.shape == space.shape and actions.shape == (3, *space.shape)
    assert single.dtype == np.float32
    np.testing.assert_array_equal(actions[1], single)
    assert np.all(actions >= space.low) and np.all(actions <= space.high)
    # Stochastic: a seeded generator per row gives reproducible, batch-independent samples.
    a = policy.act(batch, deterministic=False, generator=[torch.Generator().manual_seed(s) for s in range(3)])
    b = policy.act(batch[2], deterministic=False, generator=torch.Generator().manual_seed(2))
    np.testing.assert_array_equal(a[2], b)
    assert not np.array_equal(a[0], actions[0])
    with pytest.raises(ConfigError, match=r"obs.shape=\(5,\) is invalid: must be \(348,\)"):
        policy.act(np.zeros(5))
    with pytest.raises(ConfigError, match="generator"):
        policy.act(batch, deterministic=False, generator=[torch.Generator()])
    with pytest.raises(CheckpointError):
        locomo.load("no_such_policy_here.pt")
    with pytest.raises(ConfigError, match="device"):
        locomo.load("walker", device="tpu")


# --- make_env --------------------------------------------------------------------------------


def test_make_env_builds_locomos_vector_env() -> None:
    """make_env: the env config with overrides (dicts merged), validated; reset/step on numpy arrays."""
    env = locomo.make_env("humanoid_forward", num_envs=2, reward_scales={"alive": 1.0})
    try:
        obs = env.reset(seed=0)
        assert obs.shape == (2, env.spaces.obs_dim) and obs.dtype == np.float32
        step = env.step(np.zeros((2, env.spaces.action_dim), dtype=np.float32))
        assert step.obs.shape == obs.shape and step.reward.shape == (2,)
        assert set(step.terms) == {"forward_velocity", "alive", "ctrl_cost"}
        np.testing.assert_array_equal(step.terms["alive"], [1.0, 1.0])  # alive now weighted 1
    finally:
        env.close()
    with pytest.raises(ConfigError, match="env='humanoids' is invalid: allowed values are ant, cartpole"):
        locomo.make_env("humanoids")
    with pytest.raises(ConfigError, match=r"env\.reward_scale=.*not a config key"):
        locomo.make_env("humanoid", reward_scale={"forward": 2.0})
    with pytest.raises(ConfigError, match=r"env\.reward_scales\.alive=1\.0 is invalid: unknown reward term"):
        locomo.make_env("humanoid", reward_scales={"alive": 1.0})  # humanoid's: forward, healthy, ...
    with pytest.raises(ConfigError, match=r"env\.threads"):
        locomo.make_env("hopper", threads="many")
    with pytest.raises(ConfigError, match="num_envs"):
        locomo.make_env("hopper", num_envs=0)


# --- train -----------------------------------------------------------------------------------


def test_train_from_python_writes_a_run_that_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """locomo.train outside the CLI (no HydraConfig): outputs/<env>/<time> by default, a checkpoint
    that locomo.load reads, Hydra's record; hydra.run.dir / run_dir honoured; bad overrides one line."""
    monkeypatch.chdir(tmp_path)
    run_dir = locomo.train(TINY_TRAIN)
    assert run_dir.is_absolute() and run_dir.parent == tmp_path / "outputs" / "inverted_pendulum"
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    assert (run_dir / ".hydra" / "overrides.yaml").is_file()
    assert OmegaConf.load(run_dir / "config.yaml").train.iterations == 1
    policy = locomo.load(run_dir)
    env = gymnasium.make("InvertedPendulum-v5")
    obs, _ = env.reset(seed=0)
    assert policy.act(obs).shape == env.action_space.shape
    assert policy.path == run_dir / "checkpoints" / "last.pt"

    # A policy of model.action_bounds=none acts in the env's units unbounded (locomo's envs clip):
    # act clips to the bounds, so that a Gymnasium env gets what locomo's env would execute.
    unbounded = ["model.action_bounds=none", "model.init_log_std=2.0"]
    given = locomo.train([*TINY_TRAIN, *unbounded, "hydra.run.dir=runs/first", "seed=1"])
    assert given == tmp_path / "runs" / "first" and (given / "checkpoints" / "last.pt").is_file()
    noisy = locomo.load(given, seed=0).act(np.tile(obs, (64, 1)), deterministic=False)
    assert np.abs(noisy).max() == env.action_space.high[0] == 3.0  # std e^2: some samples clipped
    with pytest.raises(CheckpointError, match="already holds a run"):  # the CLI's refusal
        locomo.train(TINY_TRAIN, run_dir=given)

    with pytest.raises(ConfigError, match="Key 'iteration' not in 'TrainConfig'"):
        locomo.train(["train.iteration=1"])
    with pytest.raises(ConfigError, match="Could not find 'env/nope'"):
        locomo.train(["env=nope"])
    with pytest.raises(ConfigError, match="no flags"):
        locomo.train(["-m", "seed=0,1"])


# --- Gymnasium ids ---------------------------------------------------------------------------


def test_every_env_config_has_a_gymnasium_id() -> None:
    names = sorted(p.stem for p in (CONF_DIR / "env").glob("*.yaml"))
    assert sorted(locomo.GYMNASIUM_IDS.values()) == names
    assert locomo.GYMNASIUM_IDS["locomo/HumanoidForward-v0"] == "humanoid_forward"
    assert locomo.GYMNASIUM_IDS["locomo/Humanoid-v0"] == "humanoid"
    for env_id in locomo.GYMNASIUM_IDS:
        assert env_id in gymnasium.registry


@pytest.mark.parametrize("env_id", ["locomo/HumanoidForward-v0", "locomo/Hopper-v0"])
def test_gymnasium_check_env_passes(env_id: str) -> None:
    """Gymnasium's env checker (rendering skipped: its "human" mode opens a window)."""
    env = gymnasium.make(env_id)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a checker warning fails the test ...
        # ... except these, which Gymnasium's own MuJoCo envs raise too.
        warnings.filterwarnings("ignore", message=".*is different from the unwrapped version.*")
        warnings.filterwarnings("ignore", message=".*Box observation space (minimum|maximum) value is")
        check_env(env, skip_render_check=True)
    remade = gymnasium.make(env.spec)  # the spec makes the same env again
    assert remade.spec.id == env_id
    env.close()
    remade.close()


def test_gymnasium_id_is_locomos_env() -> None:
    """locomo/HumanoidForward-v0 steps like locomo's own vector env of humanoid_forward (same obs,
    rewards, terminations); reward_scales is a gymnasium.make keyword; bad keywords are one line."""
    scales = {"alive": 0.5, "ctrl_cost": 0.1}
    env = gymnasium.make("locomo/HumanoidForward-v0", reward_scales=scales)
    vec = locomo.make_env("humanoid_forward", num_envs=1, autoreset=False, reward_scales=scales)
    try:
        obs, _ = env.reset(seed=3)
        np.testing.assert_array_equal(obs.astype(np.float32), vec.reset(seed=3)[0])
        rng = np.random.default_rng(0)
        for _ in range(40):
            action = rng.uniform(-0.4, 0.4, size=env.action_space.shape).astype(np.float32)
            obs, reward, terminated, truncated, info = env.step(action)
            step = vec.step(action[None])
            np.testing.assert_array_equal(obs.astype(np.float32), step.obs[0])
            assert np.float32(reward) == step.reward[0]
            assert (terminated, truncated) == (step.terminated[0], step.truncated[0])
            assert set(info["reward_terms"]) == {"forward_velocity", "alive", "ctrl_cost"}
            if terminated or truncated:
                break
    finally:
        env.close()
        vec.close()
    with pytest.raises(ConfigError, match=r"env\.reward_scales\.speed"):
        gymnasium.make("locomo/HumanoidForward-v0", reward_scales={"speed": 1.0})
    with pytest.raises(ConfigError, match=r"env\.reward_weight=.*not a config key"):
        gymnasium.make("locomo/Humanoid-v0", reward_weight=1.0)


def test_stable_baselines3_ppo_runs_on_the_lectures_humanoid() -> None:
    """The SB3 smoke run of the issue: PPO's MlpPolicy for two rollouts of 64 steps."""
    from stable_baselines3 import PPO

    env = gymnasium.make("locomo/HumanoidForward-v0")
    model = PPO("MlpPolicy", env, n_steps=64, batch_size=64, seed=0, device="cpu")
    model.learn(128)
    assert model.num_timesteps == 128
    env.close()
