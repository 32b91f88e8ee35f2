"""The trainers ``locomo bench`` times, and the one way it builds their configs.

Trainers, the identical workload (batch ``train_batch`` env steps from ``num_envs`` envs, ``train_epochs``
passes of ``train_minibatches`` minibatches, 64x64 tanh MLPs, Gaussian policy, value baseline with
GAE, clipped importance weights, observation normalisation):

- ``locomo_train``: :class:`~locomo.training.runner.Runner` with the default thread settings (torch on one
  thread while collecting and while updating, ``train.torch_threads=1 train.update_threads=1``),
  env steps / (collect + update) per iteration;
- ``locomo_train_all_cores``: the same with ``train.update_threads=0``: the update on every core
  (faster on an idle machine, much slower when another process holds a core, hence not the default);
- ``locomo_train_ranks``: the same config as one ``torchrun`` job of ``bench.ranks`` processes
  (gloo), each stepping its share of the envs on 1 simulator thread (:mod:`locomo.distributed`),
  env steps / (collect + update) of the job per iteration, as rank 0 times it;
- ``sb3_ppo``: Stable-Baselines3 PPO on a ``DummyVecEnv`` with ``VecNormalize(norm_reward=False)``,
  torch on one thread, env steps / wall time between the starts of successive rollouts.

Every training config is composed by Hydra from ``conf/train.yaml``, as ``locomo train`` composes
it (:func:`compose_train`), with the workload's overrides.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch
from omegaconf import DictConfig, OmegaConf

from locomo.benchmarks.samplers import ENV_ID
from locomo.config.compose import compose_config
from locomo.config.schema import to_container
from locomo.config.validation import validate_config
from locomo.envs.pool import available_cores


def compose_train(overrides: list[str]) -> DictConfig:
    """The config ``locomo train <overrides>`` composes (``conf/train.yaml``), validated."""
    cfg = compose_config("train", overrides)
    validate_config(cfg)
    return cfg


def locomo_train_config(settings: Any, seed: int, update_threads: int | None = None) -> DictConfig:
    """conf/env/humanoid + conf/algo/clipped, resized to the benchmark's workload.

    Thread settings are the defaults of ``train``, unless ``update_threads`` is given.
    """
    overrides = [
        f"seed={seed}",
        "env=humanoid",
        "env.xml_file=null",  # Gymnasium's own Humanoid-v5 XML, as SB3's
        f"env.threads={settings.threads}",
        "algo=clipped",
        # SB3's PPO runs without reward normalisation: the same work on both sides.
        f"algo.epochs={settings.train_epochs}",
        f"algo.minibatches={settings.train_minibatches}",
        "algo.normalize_rewards=false",
        "model.hidden_sizes=[64,64]",
        "model.activation=tanh",
        f"train.iterations={settings.train_iterations}",
        f"train.steps_per_iteration={settings.train_batch}",
        f"train.num_envs={settings.num_envs}",
        "train.device=cpu",
        "train.checkpoint_every=0",
        *([f"train.update_threads={update_threads}"] if update_threads is not None else []),
        "logger.wandb.mode=disabled",
        "logger.progress=false",
    ]
    return compose_train(overrides)


def measure_locomo_train(
    settings: Any, seed: int, run_dir: Path, name: str, update_threads: int | None = None
) -> dict[str, list[float]]:
    """Per iteration after the first: env steps/s end to end, collect steps/s and update seconds."""
    from locomo.training.runner import Runner

    cfg = locomo_train_config(settings, seed, update_threads)
    out = run_dir / name
    out.mkdir(parents=True, exist_ok=True)
    Runner(cfg, out).run()
    rows = [json.loads(line) for line in (out / cfg.logger.metrics_file).read_text().splitlines()][1:]
    return {
        "train": [r["perf/steps_per_s"] for r in rows],
        "collect": [r["perf/collect_steps_per_s"] for r in rows],
        "update_s": [r["perf/update_s"] for r in rows],
    }


def measure_locomo_train_ranks(settings: Any, seed: int, run_dir: Path) -> dict[str, list[float]] | str:
    """:func:`measure_locomo_train`'s workload as one torchrun job of ``bench.ranks`` processes with
    one simulator thread each; or why it was not measured."""
    ranks = settings.ranks or available_cores()
    if ranks < 2:
        return f"skipped (bench.ranks={settings.ranks} on {available_cores()} core(s))"
    if settings.num_envs % ranks:
        return f"skipped: bench.num_envs={settings.num_envs} does not split over {ranks} processes"
    cfg = locomo_train_config(settings, seed)
    cfg.env.threads = 1
    cfg.video.enabled = False
    # The exact config of the one-process measurement, as the job's primary config (typed by the schema).
    conf = run_dir / "locomo_train_ranks.yaml"
    conf.parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create({"defaults": ["locomo_schema", "_self_"], **to_container(cfg)}), conf)
    out = run_dir / "locomo_train_ranks"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
        "-m", "locomo", "train", "--config-path", str(conf.parent.resolve()), "--config-name", conf.stem,
        "hydra.run.dir='" + str(out.resolve()).replace("'", "\\'") + "'",
    ]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        said = [line for line in proc.stderr.splitlines() if line.startswith("locomo:")]
        return f"torchrun failed ({said[0] if said else f'exit status {proc.returncode}'})"
    rows = [json.loads(line) for line in (out / cfg.logger.metrics_file).read_text().splitlines()][1:]
    return {"train": [r["perf/steps_per_s"] for r in rows], "ranks": [float(ranks)]}


def measure_sb3(settings: Any, seed: int) -> list[float] | str:
    """SB3 PPO's env steps/s per iteration after the first, or why it was not measured."""
    if not settings.sb3:
        return "skipped (bench.sb3=false)"
    try:
        from stable_baselines3 import PPO
        from stable_baselines3.common.callbacks import BaseCallback
        from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize
    except ImportError as exc:
        return f"not installed ({exc}); pip install -e .[bench]"

    class RolloutClock(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.starts: list[float] = []

        def _on_rollout_start(self) -> None:
            self.starts.append(time.perf_counter())

        def _on_step(self) -> bool:
            return True

    n, batch = settings.num_envs, settings.train_batch
    torch.set_num_threads(1)
    venv = VecNormalize(DummyVecEnv([lambda: gym.make(ENV_ID)] * n), norm_obs=True, norm_reward=False)
    model = PPO(
        "MlpPolicy",
        venv,
        n_steps=batch // n,
        batch_size=batch // settings.train_minibatches,
        n_epochs=settings.train_epochs,
        learning_rate=3e-4,
        gamma=0.99,
        gae_lambda=0.95,
        clip_range=0.2,
        ent_coef=0.0,
        vf_coef=0.5,
        max_grad_norm=0.5,
        policy_kwargs={
            "net_arch": {"pi": [64, 64], "vf": [64, 64]},
            "activation_fn": torch.nn.Tanh,
            "log_std_init": -0.5,
        },
        device="cpu",
        seed=seed,
        verbose=0,
    )
    clock = RolloutClock()
    # One more rollout than timed iterations: iteration k is the time from rollout k to k + 1.
    model.learn(total_timesteps=(settings.train_iterations + 1) * batch, callback=clock)
    venv.close()
    return [batch / (b - a) for a, b in zip(clock.starts[1:-1], clock.starts[2:], strict=True)]
