"""The default job's workload in ``locomo bench``, and where one of its iterations' time goes.

The default job's own workload, ``locomo_train_default``: the config ``locomo train`` composes
with no overrides (``conf/train.yaml``: env=humanoid, algo=walk, with whatever networks, batch,
epochs, minibatches, ``algo.reuse_batches`` and thread settings they hold when the bench runs), on
the CPU with the bench's seed, no videos and no W&B, for ``bench.default_iterations`` iterations
through :class:`~locomo.training.runner.Runner`: env steps/s per iteration (the runner's
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

``default_limits`` (:func:`iteration_limits`): how far that ratio can go on these cores. The
physics of the job's own steps costs more CPU per env step than the raw physics' random actions
(a policy that learns to stand spends its steps on the ground's contacts, which random actions
leave within a few dozen steps), and the learning's CPU seconds come on top of it; so the ratio
is at most ``steps x cores / iteration CPU s / raw`` (every core busy all the time, the CPU
seconds those of the parts in sequence) and, were the learning free, ``steps x cores / physics
CPU s / raw``.

"""

from __future__ import annotations

import functools
import json
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from locomo.benchmarks.training import compose_train

# The parts of the default job's iteration that are timed (the rest of the iteration is "other").
SPLIT_PARTS = ("physics", "policy_forward", "critic", "update")


def default_train_config(seed: int, iterations: int) -> DictConfig:
    """The config ``locomo train`` composes with no overrides (``conf/train.yaml``: env=humanoid,
    algo=walk, as they are now), for ``iterations`` iterations with the bench's seed, on the CPU,
    with no videos, W&B, progress bar or periodic checkpoints (those are not its workload)."""
    overrides = [
        f"seed={seed}",
        f"train.iterations={iterations}",
        "train.device=cpu",
        "train.checkpoint_every=0",
        "video.enabled=false",
        "logger.wandb.mode=disabled",
        "logger.progress=false",
    ]
    return compose_train(overrides)


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
    """The default job through :class:`~locomo.training.runner.Runner`, its iterations clocked by
    :class:`PartClock`: env steps/s (``perf/steps_per_s``) of each iteration after the first, and
    every iteration's parts (:attr:`PartClock.iterations`)."""
    from locomo.training.runner import Runner

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


def iteration_limits(
    split: dict[str, dict[str, float]],
    steps_per_iteration: int,
    cores: int,
    raw_steps_per_s: float | None,
    raw_cpu_s_per_step: float | None,
) -> dict[str, float | None]:
    """What bounds ``locomo_train_default/raw_physics`` on ``cores`` cores, from the split
    (:func:`iteration_split`) and the raw physics' env steps/s and CPU seconds per env step:

    - ``physics_cpu_us_per_step``: the job's physics, CPU microseconds per env step;
    - ``raw_physics_cpu_us_per_step``: the raw physics', random actions;
    - ``ratio_if_no_core_idle``: S c / (C R), S env steps per iteration, c cores, C the
      iteration's CPU seconds, R the raw physics' env steps/s: the ratio with no core ever idle;
    - ``ratio_if_learning_were_free``: S c / (P R), P the physics' CPU seconds: the ratio were the
      policy, critic, update and the rest to cost nothing.
    """
    total, physics = split["total"]["cpu_s"], split["physics"]["cpu_s"]

    def bound(cpu_s: float) -> float | None:
        if not raw_steps_per_s or cpu_s <= 0:
            return None
        return steps_per_iteration * cores / cpu_s / raw_steps_per_s

    return {
        "physics_cpu_us_per_step": 1e6 * physics / steps_per_iteration,
        "raw_physics_cpu_us_per_step": 1e6 * raw_cpu_s_per_step if raw_cpu_s_per_step is not None else None,
        "ratio_if_no_core_idle": bound(total),
        "ratio_if_learning_were_free": bound(physics),
    }
