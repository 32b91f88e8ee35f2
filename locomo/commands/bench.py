"""``locomo bench``: how fast locomo samples and trains Humanoid-v5 on this machine, against the field.

Samplers (random actions, the same [T, N, A] array for all, auto-reset as each does it):

- ``locomo_sampler``: :class:`~locomo.envs.batched.BatchedMujocoVecEnv`, ``bench.threads`` threads;
- ``raw_physics``: the physics limit: ``mj_step`` (frame_skip substeps) on N ``MjData`` from the
  same thread pool, no observation, reward or ``mj_rnePostConstraint`` work; an env is reset
  (``mj_resetData`` + ``mj_forward``) when its torso height leaves Humanoid-v5's healthy range
  (1, 2), so it simulates the same mix of standing and falling bodies as the samplers;
- ``gymnasium_sync`` / ``gymnasium_async``: ``gymnasium.make_vec(..., vectorization_mode=...)``;
- ``envpool``: ``envpool.make(..., num_threads=threads)`` when EnvPool is importable;
- ``locomo_gymnasium_backend``: locomo's own ``env.backend=gymnasium`` (for reference);
- ``raw_physics_default``: ``raw_physics`` at the default job's model, envs and simulator threads
  (below), measured only when those differ from ``bench.num_envs`` and ``bench.threads``.

Trainers, the identical workload (batch ``train_batch`` env steps from ``num_envs`` envs, ``train_epochs``
passes of ``train_minibatches`` minibatches, 64x64 tanh MLPs, Gaussian policy, value baseline with
GAE, clipped importance weights, observation normalisation):

- ``locomo_train``: :class:`~locomo.runner.Runner` with the default thread settings (torch on one
  thread while collecting and while updating, ``train.torch_threads=1 train.update_threads=1``),
  env steps / (collect + update) per iteration;
- ``locomo_train_all_cores``: the same with ``train.update_threads=0``: the update on every core
  (faster on an idle machine, much slower when another process holds a core, hence not the default);
- ``locomo_train_ranks``: the same config as one ``torchrun`` job of ``bench.ranks`` processes
  (gloo), each stepping its share of the envs on 1 simulator thread (:mod:`locomo.distributed`),
  env steps / (collect + update) of the job per iteration, as rank 0 times it;
- ``sb3_ppo``: Stable-Baselines3 PPO on a ``DummyVecEnv`` with ``VecNormalize(norm_reward=False)``,
  torch on one thread, env steps / wall time between the starts of successive rollouts.

The default job's own workload, ``locomo_train_default``: the config ``locomo train`` composes
with no overrides (``conf/train.yaml``: env=humanoid, algo=walk, with whatever networks, batch,
epochs, minibatches, ``algo.reuse_batches`` and thread settings they hold when the bench runs), on
the CPU with the bench's seed, no videos and no W&B, for ``bench.train_iterations`` iterations
through :class:`~locomo.runner.Runner`: env steps/s per iteration (the runner's
``perf/steps_per_s``: collect + update, or their overlapped wall time with ``train.overlap``).
The ratio ``locomo_train_default/raw_physics`` divides it by the raw physics at the same envs
and threads (``default_workload.raw_physics`` says which figure: ``raw_physics`` or
``raw_physics_default``).

``default_iteration_split``: where one of its iterations' time goes, CPU seconds
(``time.process_time``: every thread of the process, MuJoCo's simulator threads and torch's
intra-op threads included) and wall seconds per iteration, the mean over the iterations after
the warm-up. They are measured inside the real iterations, by wrapping the runner's own objects
(:class:`PartClock`): ``physics`` the vector env's ``step`` (``mj_step`` on the simulator threads,
observations, rewards, resets), ``policy_forward`` the actor's ``act`` on the N normalised
observations of each step, ``critic`` the value net's passes of the collection (the batch's
[T*N, O] observations and the bootstrap rows), ``update`` ``algorithm.update`` (advantages, every
epoch and minibatch, the critic's passes in it included); ``other`` is the iteration's total
minus those (observation normalisation, the buffer, numpy <-> torch, checks, metrics), so the
parts sum to the total exactly. (With ``train.overlap`` the update runs beside the collection
and process-wide CPU time cannot tell the parts apart, so the split is measured on the same
workload with ``train.overlap=false``, and a note says so.)
``default_idle_share``: 1 - CPU s / (wall s x the cores this process may run on), the share of
the cores' time the iteration leaves unused.

Every figure is a median over repeats (samplers interleaved repeat by repeat, so a busy neighbour
slows all of them alike) or over iterations after a warm-up one (the split: a mean, so that its
parts add up). Nothing here asserts a speed.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from locomo.config import (
    CONF_DIR,
    AlgoConfig,
    ConfigError,
    EnvConfig,
    LocomoConfig,
    register_configs,
    to_container,
    validate_bench,
    validate_config,
)
from locomo.envs.batched import BatchedMujocoVecEnv, load_task
from locomo.envs.gymnasium_backend import GymnasiumVecEnv
from locomo.envs.pool import WorkerPool, available_cores
from locomo.launch import Launch

CONFIG = "bench"
OUTPUT_ROOTS = ("outputs", "multirun")  # its run dirs, when hydra.run.dir / hydra.sweep.dir are not given
# Its lines reach bench.log, and Hydra's record its run dir, only once its checks passed
# (locomo.messages.release): a refused start leaves nothing behind.
CLAIMS_RUN_DIR = True

ENV_ID = "Humanoid-v5"
HEALTHY_Z = (1.0, 2.0)  # Humanoid-v5's healthy torso height: outside it an episode terminates
REQUIRED_KEYS = (
    "locomo_sampler",
    "raw_physics",
    "gymnasium_sync",
    "gymnasium_async",
    "envpool",
    "locomo_train",
    "locomo_train_default",
    "sb3_ppo",
)
# The parts of the default job's iteration that are timed (the rest of the iteration is "other").
SPLIT_PARTS = ("physics", "policy_forward", "critic", "update")
QUICK = {
    "num_envs": 4,
    "sampler_steps": 20,
    "repeats": 1,
    "train_batch": 512,
    "train_iterations": 2,
}

Stepper = Callable[[np.ndarray], Any]  # one vector step with actions [N, A]
Sampler = tuple[Stepper, Callable[[], None], int]  # step, close, and how many envs a step steps


def resolve_threads(threads: int) -> int:
    """``bench.threads``: 0 means one per core."""
    return threads if threads > 0 else available_cores()


# ---------------------------------------------------------------------------------------------
# Samplers


class RawPhysics:
    """N MjData of Humanoid-v5 stepped by ``threads`` threads: mj_step and nothing else.

    ``env_cfg``: the model to load (default: Gymnasium's own Humanoid-v5 XML).
    """

    def __init__(self, num_envs: int, threads: int, env_cfg: Any = None) -> None:
        self.task = load_task(env_cfg if env_cfg is not None else EnvConfig(id=ENV_ID, backend="batched"))
        self.model = self.task.model
        self.datas = [mujoco.MjData(self.model) for _ in range(num_envs)]
        for d in self.datas:
            mujoco.mj_forward(self.model, d)
        self.ctrl = np.zeros((num_envs, self.model.nu))
        self.pool = WorkerPool(threads)
        self.indices = list(range(num_envs))
        self.low, self.high = self.model.actuator_ctrlrange.T

    def _step(self, i: int) -> None:
        d = self.datas[i]
        d.ctrl[:] = self.ctrl[i]
        mujoco.mj_step(self.model, d, self.task.frame_skip)
        if not HEALTHY_Z[0] < d.qpos[2] < HEALTHY_Z[1]:
            mujoco.mj_resetData(self.model, d)
            mujoco.mj_forward(self.model, d)

    def step(self, actions: np.ndarray) -> None:
        self.ctrl[:] = np.clip(actions, self.low, self.high)
        self.pool.map(self._step, self.indices)

    def close(self) -> None:
        self.pool.close()


def make_samplers(
    settings: Any, seed: int, raw_default: RawSetup | None = None
) -> tuple[dict[str, Sampler], dict[str, str]]:
    """name -> (step, close, envs) for every sampler that can run here; notes on those that cannot.

    ``raw_default``: also ``raw_physics_default``, the raw physics at the default job's model, envs
    and threads (when those differ from ``raw_physics``'s).
    """
    n, threads = settings.num_envs, resolve_threads(settings.threads)
    samplers: dict[str, Sampler] = {}
    notes: dict[str, str] = {}

    batched = BatchedMujocoVecEnv(EnvConfig(id=ENV_ID, backend="batched"), n, threads=threads)
    batched.reset(seed)
    samplers["locomo_sampler"] = (batched.step, batched.close, n)

    raw = RawPhysics(n, threads)
    samplers["raw_physics"] = (raw.step, raw.close, n)
    if raw_default is not None and raw_default.separate:
        other = RawPhysics(raw_default.num_envs, raw_default.threads, raw_default.env_cfg)
        samplers["raw_physics_default"] = (other.step, other.close, raw_default.num_envs)

    for mode in ("sync", "async"):
        if mode == "async" and not settings.gymnasium_async:
            notes["gymnasium_async"] = "skipped (bench.gymnasium_async=false)"
            continue
        vec = gym.make_vec(ENV_ID, num_envs=n, vectorization_mode=mode)
        vec.reset(seed=seed)
        samplers[f"gymnasium_{mode}"] = (vec.step, vec.close, n)

    if settings.envpool:
        try:
            import envpool  # type: ignore[import-not-found]

            pool = envpool.make(
                ENV_ID, env_type="gymnasium", num_envs=n, batch_size=n, num_threads=threads, seed=seed
            )
            pool.reset()
            samplers["envpool"] = (pool.step, pool.close, n)
        except ImportError as exc:
            notes["envpool"] = f"not installed ({exc}); pip install -e .[bench]"
    else:
        notes["envpool"] = "skipped (bench.envpool=false)"

    backend = GymnasiumVecEnv(EnvConfig(id=ENV_ID), n)
    backend.reset(seed)
    samplers["locomo_gymnasium_backend"] = (backend.step, backend.close, n)
    return samplers, notes


def measure_samplers(
    settings: Any, seed: int, raw_default: RawSetup | None = None
) -> tuple[dict[str, list[float]], dict[str, str]]:
    """env steps/s of each sampler, one figure per repeat."""
    samplers, notes = make_samplers(settings, seed, raw_default)
    steps = settings.sampler_steps
    low, high = -0.4, 0.4  # Humanoid-v5's control range
    rng = np.random.default_rng(seed)
    # The bench's own size first, so its samplers step the same actions whatever else is measured.
    sizes = dict.fromkeys([settings.num_envs, *(envs for _, _, envs in samplers.values())])
    actions = {n: rng.uniform(low, high, size=(steps, n, 17)).astype(np.float32) for n in sizes}
    rates: dict[str, list[float]] = {name: [] for name in samplers}
    try:
        for step, _, n in samplers.values():  # warm-up: first calls, page faults, thread start
            for a in actions[n][: min(5, steps)]:
                step(a)
        for _ in range(settings.repeats):
            for name, (step, _, n) in samplers.items():
                start = time.perf_counter()
                for a in actions[n]:
                    step(a)
                rates[name].append(steps * n / (time.perf_counter() - start))
    finally:
        for _, close, _ in samplers.values():
            close()
    return rates, notes


# ---------------------------------------------------------------------------------------------
# Trainers


def locomo_train_config(settings: Any, seed: int, update_threads: int | None = None) -> DictConfig:
    """conf/env/humanoid + conf/algo/clipped, resized to the benchmark's workload.

    Thread settings are the defaults of ``train``, unless ``update_threads`` is given.
    """
    cfg = OmegaConf.structured(LocomoConfig)
    cfg.seed = seed
    cfg.env = OmegaConf.merge(
        OmegaConf.structured(EnvConfig),
        OmegaConf.load(CONF_DIR / "env" / "humanoid.yaml"),
        {"xml_file": None, "threads": settings.threads},  # Gymnasium's own Humanoid-v5 XML, as SB3's
    )
    cfg.algo = OmegaConf.merge(
        OmegaConf.structured(AlgoConfig),
        OmegaConf.load(CONF_DIR / "algo" / "clipped.yaml"),
        # SB3's PPO runs without reward normalisation: the same work on both sides.
        {
            "epochs": settings.train_epochs,
            "minibatches": settings.train_minibatches,
            "normalize_rewards": False,
        },
    )
    cfg.model.hidden_sizes = [64, 64]
    cfg.model.activation = "tanh"
    cfg.train.update(
        iterations=settings.train_iterations,
        steps_per_iteration=settings.train_batch,
        num_envs=settings.num_envs,
        device="cpu",
        checkpoint_every=0,
    )
    if update_threads is not None:
        cfg.train.update_threads = update_threads
    cfg.logger.wandb.mode = "disabled"
    cfg.logger.progress = False
    validate_config(cfg)
    return cfg


def measure_locomo_train(
    settings: Any, seed: int, run_dir: Path, name: str, update_threads: int | None = None
) -> dict[str, list[float]]:
    """Per iteration after the first: env steps/s end to end, collect steps/s and update seconds."""
    from locomo.runner import Runner

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


# ---------------------------------------------------------------------------------------------
# The default job


def default_train_config(seed: int, iterations: int) -> DictConfig:
    """The config ``locomo train`` composes with no overrides (``conf/train.yaml``: env=humanoid,
    algo=walk, as they are now), for ``iterations`` iterations with the bench's seed, on the CPU,
    with no videos, W&B, progress bar or periodic checkpoints (those are not its workload)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    overrides = [
        f"seed={seed}",
        f"train.iterations={iterations}",
        "train.device=cpu",
        "train.checkpoint_every=0",
        "video.enabled=false",
        "logger.wandb.mode=disabled",
        "logger.progress=false",
    ]
    register_configs()
    if GlobalHydra.instance().is_initialized():
        # Inside the ``locomo bench`` app: its search path is CONF_DIR already, where train.yaml is.
        cfg = compose(config_name="train", overrides=overrides)
    else:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            cfg = compose(config_name="train", overrides=overrides)
    validate_config(cfg)
    return cfg


@dataclass(frozen=True)
class RawSetup:
    """The raw physics that ``locomo_train_default/raw_physics`` compares with: the default job's
    model (``env_cfg``), envs and simulator threads; ``separate``: measured as its own sampler,
    ``raw_physics_default``, since ``raw_physics`` (``bench.num_envs``, ``bench.threads``) differs."""

    env_cfg: Any
    num_envs: int
    threads: int
    separate: bool


def raw_default_setup(cfg: DictConfig, settings: Any) -> RawSetup:
    """The default job's envs and simulator threads (as the batched env resolves ``env.threads``),
    against the bench's ``raw_physics``."""
    n = cfg.train.num_envs
    threads = min(n, cfg.env.threads if cfg.env.threads > 0 else available_cores())
    bench_n = settings.num_envs
    same = (n, threads) == (bench_n, min(bench_n, resolve_threads(settings.threads)))
    return RawSetup(cfg.env, n, threads, separate=not same)


class PartClock:
    """CPU and wall seconds of named parts of each training iteration.

    CPU seconds are ``time.process_time()``: every thread of the process, so the simulator's
    native threads count to the physics and torch's intra-op threads to the update. The parts
    are wrapped methods; a part entered while another is running, in any thread (the update runs
    the critic, in the update's critic thread too), counts to the outer one, so while the parts
    run one after another (not with
    ``train.overlap``) they never overlap and the rest of an iteration is ``other``, >= 0.
    """

    def __init__(self) -> None:
        # The part running now, if any: process-wide, since CPU time is (the update's critic
        # thread calls the critic while the update runs in the main thread).
        self.active: str | None = None
        self.lock = threading.Lock()
        self.current = self._empty()
        self.iterations: list[dict[str, list[float]]] = []  # part or "total" -> [cpu_s, wall_s, calls]

    @staticmethod
    def _empty() -> dict[str, list[float]]:
        return {name: [0.0, 0.0, 0.0] for name in SPLIT_PARTS}

    def wrap(self, part: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn``, its time counted to ``part``."""

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.lock:
                outer, self.active = self.active, self.active or part
            if outer is not None:
                return fn(*args, **kwargs)
            cpu, wall = time.process_time(), time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent = self.current[part]
                spent[0] += time.process_time() - cpu
                spent[1] += time.perf_counter() - wall
                spent[2] += 1
                self.active = None

        return timed

    def wrap_iteration(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` (one whole iteration), its parts and total recorded as one row of :attr:`iterations`."""

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            self.current = self._empty()
            cpu, wall = time.process_time(), time.perf_counter()
            out = fn(*args, **kwargs)
            total = [time.process_time() - cpu, time.perf_counter() - wall, 1.0]
            self.iterations.append({**self.current, "total": total})
            return out

        return timed


def clock_runner(runner: Any, clock: PartClock) -> None:
    """Time ``runner``'s iterations and their parts with ``clock``: physics is the numpy-side
    vector env's ``step`` (mj_step on the simulator threads, observations, rewards, resets),
    policy forward the collecting actor's ``act``, critic the collecting value net's passes
    (V(s_t) of the batch and the bootstrap rows; its passes inside the update are update time),
    update ``algorithm.update`` (advantages, every epoch and minibatch). The methods are wrapped
    on these objects only; nothing else changes."""

    def wrap(obj: Any, name: str, part: str) -> None:
        setattr(obj, name, clock.wrap(part, getattr(obj, name)))

    collector = runner.collector  # its actor and critic: the runner's, or their copies (train.overlap)
    wrap(runner.env.env, "step", "physics")
    wrap(collector.actor, "act", "policy_forward")
    if collector.critic is not None:
        # nn.Module.__call__ looks forward up on the instance, so this times every pass.
        wrap(collector.critic, "forward", "critic")
    wrap(runner.algorithm, "update", "update")
    runner._train_iteration = clock.wrap_iteration(runner._train_iteration)


def measure_locomo_train_default(
    cfg: DictConfig, run_dir: Path, name: str = "locomo_train_default"
) -> tuple[list[float], list[dict]]:
    """The default job through :class:`~locomo.runner.Runner`, its iterations clocked by
    :class:`PartClock`: env steps/s (``perf/steps_per_s``) of each iteration after the first, and
    every iteration's parts (:attr:`PartClock.iterations`)."""
    from locomo.runner import Runner

    out = run_dir / name
    out.mkdir(parents=True, exist_ok=True)
    runner = Runner(cfg, out)
    clock = PartClock()
    clock_runner(runner, clock)
    runner.run()
    rows = [json.loads(line) for line in (out / cfg.logger.metrics_file).read_text().splitlines()][1:]
    return [r["perf/steps_per_s"] for r in rows], clock.iterations


def iteration_split(
    iterations: list[dict], cores: int
) -> tuple[dict[str, dict[str, float]], float, list[str]]:
    """Means over the iterations after the first (the warm-up): CPU and wall seconds per iteration
    of each part, ``other`` (the iteration's total minus the parts) and ``total``, each part's
    CPU seconds as a fraction of the total; the cores' idle share, 1 - CPU s / (wall s x cores);
    and the parts that were never called (their time, if any, is in ``other``)."""
    timed = iterations[1:]

    def mean(part: str, i: int) -> float:
        return statistics.fmean(row[part][i] for row in timed)

    total_cpu, total_wall = mean("total", 0), mean("total", 1)
    split: dict[str, dict[str, float]] = {}
    for part in SPLIT_PARTS:
        split[part] = {"cpu_s": mean(part, 0), "wall_s": mean(part, 1)}
    split["other"] = {
        "cpu_s": total_cpu - sum(p["cpu_s"] for p in split.values()),
        "wall_s": total_wall - sum(p["wall_s"] for p in split.values()),
    }
    split["total"] = {"cpu_s": total_cpu, "wall_s": total_wall}
    for part in split.values():
        part["cpu_fraction"] = part["cpu_s"] / total_cpu if total_cpu > 0 else 0.0
    idle = 1.0 - total_cpu / (total_wall * cores)
    unused = [part for part in SPLIT_PARTS if not any(row[part][2] for row in timed)]
    return split, idle, unused


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


# ---------------------------------------------------------------------------------------------
# The table


def median(values: list[float] | None) -> float | None:
    return float(statistics.median(values)) if values else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def run_bench(settings: DictConfig, seed: int, run_dir: Path) -> dict[str, Any]:
    """Measure everything; return the JSON-ready result (the required keys are env steps/s or None)."""
    load_start = os.getloadavg()
    default_cfg = default_train_config(seed, settings.train_iterations)
    raw_default = raw_default_setup(default_cfg, settings)
    samples, notes = measure_samplers(settings, seed, raw_default)
    train = measure_locomo_train(settings, seed, run_dir, "locomo_train")
    all_cores = measure_locomo_train(settings, seed, run_dir, "locomo_train_all_cores", update_threads=0)
    default_rates, default_iterations = measure_locomo_train_default(default_cfg, run_dir)
    if default_cfg.train.get("overlap", False):
        # Overlapped, the parts run at once and process-wide CPU time cannot tell them apart: the
        # split is of the same workload with its parts in sequence.
        sequential = default_cfg.copy()
        sequential.train.overlap = False
        split_run = "locomo_train_default_split"
        _, default_iterations = measure_locomo_train_default(sequential, run_dir, split_run)
        notes["default_iteration_split"] = (
            "measured on the default workload with train.overlap=false (its parts in sequence); "
            "with train.overlap the update runs beside the collection"
        )
    split, idle, unused = iteration_split(default_iterations, available_cores())
    for part in unused:
        notes[f"default_iteration_split.{part}"] = "not called in the timed iterations: its time is in other"
    ranks = measure_locomo_train_ranks(settings, seed, run_dir)
    if isinstance(ranks, str):
        notes["locomo_train_ranks"] = ranks
        ranks = {}
    sb3 = measure_sb3(settings, seed)
    if isinstance(sb3, str):
        notes["sb3_ppo"] = sb3
    else:
        samples["sb3_ppo"] = sb3
    samples["locomo_train"] = train["train"]
    samples["locomo_collect"] = train["collect"]
    samples["locomo_train_all_cores"] = all_cores["train"]
    samples["locomo_train_default"] = default_rates
    if ranks:
        samples["locomo_train_ranks"] = ranks["train"]

    result: dict[str, Any] = {key: median(samples.get(key)) for key in REQUIRED_KEYS}
    result["locomo_gymnasium_backend"] = median(samples.get("locomo_gymnasium_backend"))
    result["locomo_collect"] = median(train["collect"])
    result["locomo_update_s"] = median(train["update_s"])
    result["locomo_train_all_cores"] = median(all_cores["train"])
    result["locomo_update_s_all_cores"] = median(all_cores["update_s"])
    result["locomo_train_ranks"] = median(ranks.get("train"))
    result["ranks"] = int(ranks["ranks"][0]) if ranks else None
    raw_key = "raw_physics_default" if raw_default.separate else "raw_physics"
    result["raw_physics_default"] = median(samples.get(raw_key))
    result["default_iteration_split"] = split
    result["default_idle_share"] = idle
    algo, model = default_cfg.algo, default_cfg.model
    result["default_workload"] = {
        "algo": algo.name,
        "num_envs": default_cfg.train.num_envs,
        "steps_per_iteration": default_cfg.train.steps_per_iteration,
        "epochs": algo.epochs,
        "minibatches": algo.minibatches,
        "reuse_batches": algo.reuse_batches,
        "symmetry": algo.get("symmetry"),  # keys of the default recipe that change the update's work
        "overlap": default_cfg.train.get("overlap"),
        "hidden_sizes": list(model.hidden_sizes),
        "activation": model.activation,
        "simulator_threads": raw_default.threads,
        "torch_threads": default_cfg.train.torch_threads,
        "update_threads": default_cfg.train.update_threads,
        "iterations": default_cfg.train.iterations,
        # Which raw-physics figure the ratio divides by: the bench's own when its envs and
        # threads are the default job's, else the one measured at the default job's.
        "raw_physics": raw_key,
    }
    result["ratios"] = {
        "locomo_sampler/raw_physics": ratio(result["locomo_sampler"], result["raw_physics"]),
        "locomo_sampler/envpool": ratio(result["locomo_sampler"], result["envpool"]),
        "locomo_train/locomo_sampler": ratio(result["locomo_train"], result["locomo_sampler"]),
        "locomo_collect/locomo_sampler": ratio(result["locomo_collect"], result["locomo_sampler"]),
        "locomo_train_all_cores/locomo_sampler": ratio(
            result["locomo_train_all_cores"], result["locomo_sampler"]
        ),
        "locomo_train/sb3_ppo": ratio(result["locomo_train"], result["sb3_ppo"]),
        "locomo_train_ranks/locomo_train": ratio(result["locomo_train_ranks"], result["locomo_train"]),
        "locomo_train_default/raw_physics": ratio(
            result["locomo_train_default"], result["raw_physics_default"]
        ),
    }
    result["samples"] = samples
    result["notes"] = notes
    result["settings"] = {
        "env_id": ENV_ID,
        **OmegaConf.to_container(settings),
        "threads_resolved": resolve_threads(settings.threads),
        "seed": seed,
    }
    result["machine"] = {
        "cores": available_cores(),
        "load_avg_start": list(load_start),
        "load_avg_end": list(os.getloadavg()),
        "python": platform.python_version(),
        "mujoco": mujoco.__version__,
        "gymnasium": gym.__version__,
        "torch": torch.__version__,
    }
    return result


def _fmt(x: float | None, digits: int = 0) -> str:
    return "n/a" if x is None else f"{x:,.{digits}f}"


def format_table(result: dict[str, Any]) -> str:
    """The human-readable table of a :func:`run_bench` result."""
    s, m = result["settings"], result["machine"]
    ranks_label = f"locomo, torchrun {result['ranks'] or 'K'} processes x 1 thread"
    lines = [
        f"locomo bench: {s['env_id']}, {s['num_envs']} envs, {s['threads_resolved']} simulator threads, "
        f"{m['cores']} cores (load avg {m['load_avg_start'][0]:.2f} at start, "
        f"{m['load_avg_end'][0]:.2f} at end)",
        f"medians over {s['repeats']} repeats of {s['sampler_steps']} vector steps; "
        f"training: median over {s['train_iterations'] - 1} iterations after a warm-up",
        "",
        f"{'sampler, random actions':44s}{'env steps/s':>14s}",
    ]
    rows = [
        ("locomo batched (env.backend=batched)", "locomo_sampler"),
        ("raw physics: mj_step only, threads = cores", "raw_physics"),
        ("EnvPool", "envpool"),
        ("Gymnasium SyncVectorEnv", "gymnasium_sync"),
        ("Gymnasium AsyncVectorEnv", "gymnasium_async"),
        ("locomo env.backend=gymnasium", "locomo_gymnasium_backend"),
    ]
    lines += [f"  {label:42s}{_fmt(result[key]):>14s}" for label, key in rows]
    w = result["default_workload"]
    raw_default = f"raw physics at {w['num_envs']} envs x {w['simulator_threads']} threads"
    if w["raw_physics"] == "raw_physics_default":
        lines.append(f"  {raw_default:42s}{_fmt(result['raw_physics_default']):>14s}")
    lines += [
        "",
        f"training: batch {s['train_batch']}, {s['train_epochs']} epochs x {s['train_minibatches']} "
        "minibatches, 64x64 tanh MLPs, Gaussian, value baseline",
        f"  {'locomo, default threads (collect + update)':42s}{_fmt(result['locomo_train']):>14s}",
        f"  {'  of which collect only':42s}{_fmt(result['locomo_collect']):>14s}",
        f"  {'  update seconds per iteration':42s}{_fmt(result['locomo_update_s'], 3):>14s}",
        f"  {'locomo, train.update_threads=0':42s}{_fmt(result['locomo_train_all_cores']):>14s}",
        f"  {'  update seconds per iteration':42s}{_fmt(result['locomo_update_s_all_cores'], 3):>14s}",
        f"  {ranks_label:42s}{_fmt(result['locomo_train_ranks']):>14s}",
        f"  {'Stable-Baselines3 PPO':42s}{_fmt(result['sb3_ppo']):>14s}",
        "",
        *format_default(result),
        "",
        "ratios",
    ]
    lines += [f"  {name:42s}{_fmt(value, 2):>14s}" for name, value in result["ratios"].items()]
    lines.append(f"  (locomo_train_default/raw_physics divides by the {raw_default})")
    for name, note in result["notes"].items():
        lines.append(f"note: {name}: {note}")
    return "\n".join(lines)


def format_default(result: dict[str, Any]) -> list[str]:
    """The table's lines on the default job: its env steps/s and where an iteration's time goes."""
    w, split = result["default_workload"], result["default_iteration_split"]
    hidden = "-".join(str(h) for h in w["hidden_sizes"])
    timed = w["iterations"] - 1
    lines = [
        f"the default job (locomo train, algo={w['algo']}): {w['num_envs']} envs, batch "
        f"{w['steps_per_iteration']}, {w['epochs']} epochs x {w['minibatches']} minibatches,",
        f"  algo.reuse_batches={w['reuse_batches']} algo.symmetry={w['symmetry']} "
        f"train.overlap={w['overlap']}, {hidden} {w['activation']} MLPs,",
        f"  {w['simulator_threads']} simulator threads, train.torch_threads={w['torch_threads']} "
        f"train.update_threads={w['update_threads']}",
        f"  {'locomo_train_default (env steps/s)':42s}{_fmt(result['locomo_train_default']):>14s}",
        f"  where one iteration's time goes (mean over {timed} after a warm-up; CPU s: all threads)",
        f"  {'part':20s}{'CPU s':>10s}{'wall s':>10s}{'CPU share':>12s}",
    ]
    labels = {
        "physics": "physics",
        "policy_forward": "policy forward",
        "critic": "critic",
        "update": "update",
        "other": "other",
        "total": "total",
    }
    for key, label in labels.items():
        part = split[key]
        share = f"{100 * part['cpu_fraction']:.1f}%"
        lines.append(f"    {label:18s}{part['cpu_s']:>10.3f}{part['wall_s']:>10.3f}{share:>12s}")
    lines.append(
        f"  cores idle: {100 * result['default_idle_share']:.1f}% of {result['machine']['cores']} cores' "
        "time (1 - CPU s / (wall s x cores))"
    )
    return lines


def bench_settings(cfg: DictConfig) -> DictConfig:
    """``cfg.bench``, shrunk to :data:`QUICK` sizes when ``quick=true``."""
    settings = cfg.bench.copy()
    if cfg.quick:
        settings.update(QUICK)
    return settings


def prepare(args: list[str]) -> Launch:
    """Hydra's ``.hydra/`` record left to the job, so that a refused start leaves nothing behind
    (:func:`locomo.rundir.run_dir_launch`)."""
    from locomo.rundir import run_dir_launch

    return run_dir_launch(args, OUTPUT_ROOTS)


def check_writable(path: Path, key: str, value: str) -> None:
    """Create ``path``'s folder and a file in it, then remove both: a place the checks by name let
    through but the system refuses (``/proc/x/``: root passes the permission check there) is
    refused now, naming ``key``, not after the minutes of measuring."""
    missing = []
    folder = path.parent.absolute()
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".probe", dir=path.parent)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise ConfigError(
            key, value, f"cannot write there ({exc.strerror or exc}); choose another path"
        ) from exc
    finally:
        for created in missing:  # deepest first; the results' file creates them again at the end
            try:
                created.rmdir()
            except OSError:
                break


def run(cfg: DictConfig, launch: Launch) -> dict[str, Any]:
    """Run the benchmark in this job's run dir, print the table, write the JSON; return the result.

    A start refused (a bad value or ``bench.out``) leaves nothing behind, not even the run dir.
    """
    from locomo.rundir import removed_if_refused

    with removed_if_refused(launch.created_below):
        return _run(cfg, launch)


def _run(cfg: DictConfig, launch: Launch) -> dict[str, Any]:
    """:func:`run` without the clean-up of a refused start."""
    from locomo import messages
    from locomo.outputs import safe_output, write_text_atomic
    from locomo.rundir import hydra_run_dir, write_job_record

    validate_bench(cfg)
    run_dir = hydra_run_dir()
    settings = bench_settings(cfg)
    # Checked before the minutes of measuring, so that the results are never lost to a bad path.
    target = run_dir / "bench.json" if settings.out is None else settings.out
    out = safe_output(target, "json", "bench.out", cfg.overwrite)
    check_writable(out, "bench.out", str(target))
    # The run dir is this job's now: its record, and its lines into bench.log.
    write_job_record(cfg, launch.record_subdir)
    messages.release()
    result = run_bench(settings, cfg.seed, run_dir)
    print(format_table(result))
    write_text_atomic(out, json.dumps(result, indent=2) + "\n")
    print(f"locomo: wrote {out}")
    return result
