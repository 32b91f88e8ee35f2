"""The samplers ``locomo bench`` times: vector envs of Humanoid-v5 stepped with random actions.

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
  (:mod:`locomo.benchmarks.default_job`), measured only when those differ from ``bench.num_envs``
  and ``bench.threads``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from omegaconf import DictConfig

from locomo.config.schema import EnvConfig
from locomo.envs.batched import BatchedMujocoVecEnv, load_task
from locomo.envs.gymnasium_backend import GymnasiumVecEnv
from locomo.envs.pool import WorkerPool, available_cores

ENV_ID = "Humanoid-v5"
HEALTHY_Z = (1.0, 2.0)  # Humanoid-v5's healthy torso height: outside it an episode terminates

Stepper = Callable[[np.ndarray], Any]  # one vector step with actions [N, A]
Sampler = tuple[Stepper, Callable[[], None], int]  # step, close, and how many envs a step steps


def resolve_threads(threads: int) -> int:
    """``bench.threads``: 0 means one per core."""
    return threads if threads > 0 else available_cores()


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
) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, str]]:
    """env steps/s of each sampler, one figure per repeat; this process's CPU seconds per env step
    in each repeat (every thread of it: the simulator threads'; a sampler that steps in other
    processes, Gymnasium's async one, spends most of its CPU time there); notes."""
    samplers, notes = make_samplers(settings, seed, raw_default)
    steps = settings.sampler_steps
    low, high = -0.4, 0.4  # Humanoid-v5's control range
    rng = np.random.default_rng(seed)
    # The bench's own size first, so its samplers step the same actions whatever else is measured.
    sizes = dict.fromkeys([settings.num_envs, *(envs for _, _, envs in samplers.values())])
    actions = {n: rng.uniform(low, high, size=(steps, n, 17)).astype(np.float32) for n in sizes}
    rates: dict[str, list[float]] = {name: [] for name in samplers}
    cpu: dict[str, list[float]] = {name: [] for name in samplers}
    try:
        for step, _, n in samplers.values():  # warm-up: first calls, page faults, thread start
            for a in actions[n][: min(5, steps)]:
                step(a)
        for _ in range(settings.repeats):
            for name, (step, _, n) in samplers.items():
                start, start_cpu = time.perf_counter(), time.process_time()
                for a in actions[n]:
                    step(a)
                rates[name].append(steps * n / (time.perf_counter() - start))
                cpu[name].append((time.process_time() - start_cpu) / (steps * n))
    finally:
        for _, close, _ in samplers.values():
            close()
    return rates, cpu, notes
