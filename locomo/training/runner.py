"""The training loop, and only the loop: collect -> returns -> update -> log -> checkpoint -> video.

:meth:`Runner.run` reads top to bottom: each iteration collects a batch (:mod:`locomo.rl.collector`),
turns it into returns and an update (:mod:`locomo.rl.algorithm`), films it now and then
(:mod:`locomo.training.videos`), logs its metrics row (:mod:`locomo.training.metrics`,
:mod:`locomo.training.logging`) and checkpoints at iteration boundaries everything a bit-exact resume needs
(:mod:`locomo.training.state`); with ``train.overlap`` the update runs while the next batch is
collected (:mod:`locomo.training.overlap`). What keeps the run safe at the loop's edges is
:mod:`locomo.training.safekeeping`'s: NaN/inf stops the run with a diagnostic snapshot, an unexpected
failure keeps the trained iterations; SIGINT/SIGTERM finish the iteration, save, and exit.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from tqdm import tqdm

from locomo.config.schema import std_cap, to_container
from locomo.distributed import SINGLE, Group
from locomo.envs import EpisodeRecord, TorchVecEnv, make_vec_env
from locomo.errors import MetricsError, NonFiniteError, TrainingAborted, TrainingInterrupted
from locomo.guard import check_finite, check_parameters
from locomo.rl.buffer import RolloutBatch
from locomo.rl.collector import Collector
from locomo.rl.factory import (
    cores_per_process,
    env_config_for,
    make_algorithm,
    make_learners,
    seed_everything,
    training_device,
)
from locomo.rl.policy import GaussianActor
from locomo.runs.checkpoint import CheckpointError
from locomo.training import state as training_state
from locomo.training.charts import chart_behavior
from locomo.training.logging import MetricsLogger, NoLogger
from locomo.training.metrics import add_terms, gather_rollout, iteration_metrics
from locomo.training.overlap import Overlap
from locomo.training.safekeeping import Safekeeping
from locomo.training.signals import GracefulStop
from locomo.training.videos import TrainingVideos


def _warn(message: str) -> None:
    print(f"locomo: warning: {message}", file=sys.stderr)


class Runner:
    """Builds env, policy, algorithm and logger from a validated config; :meth:`run` trains.

    ``resume`` is a loaded checkpoint (its config must be ``cfg``): the runner then continues
    it exactly where it stopped; ``resume_path`` is where it came from (the last good checkpoint
    until this run writes one).

    ``group``: this process's rank in a multi-process job (:mod:`locomo.distributed`). It steps
    ``train.num_envs / world_size`` envs (the job's envs ``rank * N/K`` on), seeded and sampled
    from its own streams, and trains the same weights as every other rank; rank 0 alone writes.
    """

    def __init__(
        self,
        cfg: DictConfig,
        run_dir: Path,
        resume: dict[str, Any] | None = None,
        resume_path: Path | None = None,
        group: Group = SINGLE,
        init_state: dict[str, Any] | None = None,
    ) -> None:
        self.cfg, self.run_dir, self.group = cfg, run_dir, group
        seed_everything(cfg.seed)  # the same initial weights on every rank
        default_threads = torch.get_num_threads()
        self.collect_threads = cfg.train.torch_threads or default_threads
        self.update_threads = cfg.train.update_threads or cores_per_process(group)
        torch.set_num_threads(self.collect_threads)
        if cfg.train.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
        self.device = training_device(cfg.train.device, group)
        self.generator = torch.Generator().manual_seed(cfg.seed)

        self.first_env, num_envs = group.shard(cfg.train.num_envs)
        self.env = TorchVecEnv(make_vec_env(env_config_for(cfg, group), num_envs), self.device)
        self.actor, self.critic, self.normalizer, self.reward_scaler = make_learners(
            cfg, self.env.spaces, self.device, num_envs
        )
        if init_state is not None and resume is None:  # train.init_from; a resume has its own weights
            nets = (self.actor, self.critic, self.normalizer, self.reward_scaler)
            training_state.start_from(init_state, nets, self.env.spaces, cfg, announce=group.is_main)
        if group.active:
            group.broadcast_tensors_(self._named_tensors())  # rank 0's weights, whatever happened before
            seed_everything(group.rank_seed(cfg.seed))  # but each rank samples its own actions
        learners = (self.actor, self.critic, self.normalizer)
        self.algorithm = make_algorithm(
            cfg, self.env, learners, self.generator, group, self.update_threads, self.device
        )
        # train.overlap: the collector acts with its own copy of the policy (and critic), the one
        # before the update that runs meanwhile in the worker thread. Not in a torchrun job: the
        # two threads' collectives would interleave differently on each rank.
        overlap = bool(cfg.train.overlap) and not group.active
        if cfg.train.overlap and group.active and group.is_main:
            _warn("train.overlap is off in a torchrun job (each update waits for its batch)")
        self.overlap = Overlap(self.actor, self.critic) if overlap else None
        acting = self.overlap.behaviour if self.overlap is not None else self
        self.collector = Collector(
            self.env,
            acting.actor,
            acting.critic,
            self.normalizer,
            self.reward_scaler,
            cfg.train.steps_per_iteration // cfg.train.num_envs,
            self.device,
            group,
        )
        self.iteration = 0
        self.env_steps = 0
        # The checkpoints, and the last good one: where a resume came from, until this run writes one.
        self.keeper = Safekeeping(run_dir, cfg.train.keep_checkpoints, group, resume_path)
        self.recent_episodes: deque[EpisodeRecord] = deque(maxlen=100)
        # The last algo.reuse_batches - 1 batches (oldest first), trained on again with the next one.
        self.kept: deque[RolloutBatch] = deque(maxlen=cfg.algo.reuse_batches - 1)
        self.videos = TrainingVideos(cfg, run_dir)
        self.videos.enabled = self.videos.enabled and group.is_main
        self.obs_raw: torch.Tensor | None = None  # [N, O] current raw observations (None: not reset)
        self.wandb_run_id: str | None = None
        self.resumed = resume is not None
        self._warned_env_state = False
        self._batch: RolloutBatch | None = None  # the batch being trained on (for diagnostics)
        self._in_iteration = False  # inside _train_iteration: the state is not at a boundary
        if resume is not None:
            self._restore(resume)
        self._start_iteration = self.iteration

    @property
    def learned(self) -> training_state.Learned:
        """The parts training changes (for checkpoints)."""
        optimizer = self.algorithm.optimizer
        return training_state.Learned(
            self.actor, self.critic, self.normalizer, self.reward_scaler, optimizer, self.generator
        )

    # -- the loop -------------------------------------------------------------------------------

    def run(self) -> dict[str, float]:
        """Train until ``train.iterations``; return the last logged metrics.

        Each iteration: collect -> returns and update (:meth:`_train_iteration`) -> video -> log
        -> checkpoint. Raises NonFiniteError (after writing a diagnostic snapshot),
        TrainingInterrupted (after saving a checkpoint), CheckpointError (a checkpoint could not be
        written) and MetricsError (the metrics file could not be written); after any other error
        between iterations the iterations trained so far are checkpointed first
        (:mod:`locomo.training.safekeeping`).
        """
        cfg, main = self.cfg, self.group.is_main
        logger: MetricsLogger | NoLogger = (
            MetricsLogger(
                self.run_dir,
                cfg.logger.metrics_file,
                cfg.logger.wandb,
                to_container(cfg),
                run_id=self.wandb_run_id,
                resume_at=self.env_steps if self.resumed else None,
            )
            if main
            else NoLogger()
        )
        self.wandb_run_id = logger.run_id
        bar = tqdm(
            total=cfg.train.iterations,
            initial=self.iteration,
            desc="train",
            unit="it",
            disable=not (cfg.logger.progress and main),
            dynamic_ncols=True,
        )
        metrics: dict[str, float] = {}
        logged = self.iteration  # the last iteration whose metrics row is written
        try:
            with GracefulStop() as stop:
                if self.obs_raw is None:  # a new run, or a resume without saved env state
                    first = cfg.seed + self.iteration * cfg.train.num_envs + self.first_env
                    self.obs_raw = self.env.reset(first)
                    self._guarded(lambda: check_finite("observations", self.obs_raw, ("env",), "(at reset)"))
                while self.iteration < cfg.train.iterations:
                    self._in_iteration = True
                    metrics = self._guarded(self._train_iteration)
                    self._in_iteration = False
                    metrics |= self.videos.maybe_record(
                        self.iteration, self.actor, self.normalizer, logger, self.env_steps
                    )
                    logger.log(metrics, self.env_steps)
                    logged = self.iteration
                    bar.update(1)
                    if main:
                        bar.set_postfix(
                            steps=self.env_steps,
                            ret=f"{metrics['rollout/return_mean']:.1f}",
                            len=f"{metrics['rollout/episode_length']:.0f}",
                            sps=f"{metrics['perf/steps_per_s']:.0f}",
                        )
                    # One decision for all ranks: each saves its part of the checkpoint, then stops.
                    stopping = self.group.any(stop.signum is not None)
                    # Metrics first, then the checkpoint: a crash in between leaves rows after the
                    # checkpoint, which a resume drops and logs again (no gap, no repeat).
                    every = cfg.train.checkpoint_every
                    due = (every and self.iteration % every == 0) or self.iteration == cfg.train.iterations
                    if due or stopping:
                        self._checkpoint(logger, metrics)
                        chart_behavior(
                            logger, self.run_dir, self.iteration, self.env_steps, self.env.spaces.discrete
                        )
                    if stopping:  # a rank that got no signal itself stops for the SIGTERM torchrun sends
                        signum = stop.signum if stop.signum is not None else signal.SIGTERM
                        raise TrainingInterrupted(
                            signum, self.iteration, self.keeper.last_good, self.run_dir, self.group.launcher
                        )
                # Done: the final eval and the last checkpoint go into the W&B run's summary.
                logger.finish_summary(cfg, self.actor, self.normalizer, self.keeper.last_good)
        except TrainingAborted as exc:  # a second signal: say truthfully what is on disk
            exc.kept, exc.run_dir = self.keeper.last_good, self.run_dir
            raise
        except Exception as exc:
            if not isinstance(exc, NonFiniteError | CheckpointError | MetricsError | TrainingInterrupted):
                # Keep what was trained: the last iteration's row if not yet logged, and its checkpoint.
                at_boundary = not self._in_iteration and self.iteration != self._start_iteration

                def keep() -> None:
                    if logged < self.iteration and metrics:
                        logger.log(metrics, self.env_steps)
                    self._checkpoint(logger, metrics)

                self.keeper.rescue(exc, self.iteration, at_boundary, keep)
            raise
        finally:
            # Each clean-up on its own: one failing (a full disk when the metrics file is closed)
            # must not hide the error that stopped training, nor skip the others.
            stop_worker = [self.overlap.close] if self.overlap is not None else []
            for close in (bar.close, self.videos.close, logger.close, *stop_worker, self.env.close):
                try:
                    close()
                except Exception as exc:
                    _warn(f"while stopping: {type(exc).__name__}: {exc}")
        return metrics

    def _train_iteration(self) -> dict[str, float]:
        """One collect -> update cycle; advances the counters; returns the iteration's metrics."""
        self._cap_std()
        if self.overlap is not None:
            return self._overlapped_iteration(self.overlap)
        cfg = self.cfg
        t0 = time.perf_counter()
        self.actor.eval()
        assert self.obs_raw is not None
        self._batch = None
        batch, self.obs_raw, episodes, term_sums = self.collector.collect(self.obs_raw)
        self._batch = batch
        t1 = time.perf_counter()
        self.actor.train()
        torch.set_num_threads(self.update_threads)
        try:
            self.algorithm.begin_update(self.iteration / cfg.train.iterations)
            update_info = self.algorithm.update(batch, list(self.kept))
        finally:
            torch.set_num_threads(self.collect_threads)
        if self.kept.maxlen:  # the buffer's tensors are overwritten by the next collection
            self.kept.append(RolloutBatch(*(x.clone() for x in batch)))
        check_parameters(self._named_tensors())
        t2 = time.perf_counter()
        self.iteration += 1
        self.env_steps += cfg.train.steps_per_iteration  # the job's batch: every rank's steps
        if self.group.active:
            # The metrics are of the job: every rank's episodes and reward terms, on rank 0.
            job = gather_rollout(
                self.group, episodes, term_sums, float(batch.rewards.sum()), cfg.train.steps_per_iteration
            )
            if job is None:
                return {}
            episodes, term_sums, reward_mean = job
        else:
            reward_mean = float(batch.rewards.mean())
        return self._metrics(reward_mean, episodes, term_sums, update_info, t1 - t0, t2 - t1, None, 1)

    def _cap_std(self) -> None:
        """``model.max_log_std_from``: from that iteration on, the std's cap is in force in the
        policy that is trained and in the copy that collects (before either runs this iteration;
        a resumed run sets it here too). Samples collected before it keep their behaviour
        log-probs, so the importance weights account for the change of noise."""
        cap = std_cap(self.cfg.model, self.iteration)
        actors = [self.actor] + ([self.overlap.behaviour.actor] if self.overlap is not None else [])
        for actor in actors:
            if isinstance(actor, GaussianActor):
                actor.max_log_std = cap

    def _overlapped_iteration(self, overlap: Overlap) -> dict[str, float]:
        """``train.overlap``: the update on the pending batch runs in the worker thread while the
        next batch is collected by the copy of the policy before it (:mod:`locomo.training.overlap`)."""
        cfg = self.cfg
        assert self.obs_raw is not None
        t0 = time.perf_counter()
        episodes: list[EpisodeRecord] = []
        term_sums: dict[str, float] = {}
        fresh = overlap.pending is None  # the first batch (or a resume without one): collected first
        collected: list[RolloutBatch] = []  # what this iteration collects (its metrics' batches)
        if overlap.pending is None:
            collected_first = overlap.collect_copy(self.collector, self.obs_raw)
            overlap.pending, self.obs_raw, episodes, term_sums = collected_first
            collected.append(overlap.pending)
        batch = self._batch = overlap.pending
        overlap.behaviour.sync(self.actor, self.critic)
        self.actor.train()
        self.algorithm.begin_update(self.iteration / cfg.train.iterations)  # before the thread starts
        update = overlap.start_update(self.algorithm, batch, list(self.kept), fresh)
        try:
            t1 = time.perf_counter()
            overlap.pending, self.obs_raw, more, terms = overlap.collect_copy(self.collector, self.obs_raw)
            collect_s = time.perf_counter() - t1
        finally:
            update_info, update_s = update.result()  # the update's own errors surface here
        collected.append(overlap.pending)
        episodes += more
        term_sums = add_terms(term_sums, terms)
        if self.kept.maxlen:
            self.kept.append(batch)
        check_parameters(self._named_tensors())
        self.iteration += 1
        self.env_steps += cfg.train.steps_per_iteration * (2 if fresh else 1)
        reward_mean = float(torch.stack([b.rewards.mean() for b in collected]).mean())
        wall_s = time.perf_counter() - t0
        return self._metrics(
            reward_mean, episodes, term_sums, update_info, collect_s, update_s, wall_s, len(collected)
        )

    def _metrics(
        self,
        reward_mean: float,
        episodes: list[EpisodeRecord],
        term_sums: dict[str, float],
        update_info: dict[str, float],
        collect_s: float,
        update_s: float,
        wall_s: float | None,
        batches: int,
    ) -> dict[str, float]:
        """The iteration's metrics row (:func:`locomo.training.metrics.iteration_metrics`), of the ``batches``
        batches it collected; ``wall_s``: its time when collection and update overlapped."""
        steps = self.cfg.train.steps_per_iteration * batches
        return iteration_metrics(
            self.iteration, self.recent_episodes, reward_mean, episodes, term_sums, update_info,
            collect_s, update_s, wall_s, steps, self.env.spaces.control_dt, self.cfg.behavior,
        )  # fmt: skip

    def _checkpoint(self, logger: MetricsLogger | NoLogger, metrics: dict[str, float]) -> None:
        """Save the checkpoint of this iteration (every rank: the job's state is gathered on rank 0)
        and upload it as the W&B model artifact."""
        saved = self.keeper.save(self.state(), self.iteration)
        logger.log_checkpoint(self.keeper.last_good, saved, metrics)

    def _guarded(self, fn: Any) -> Any:
        """Run ``fn``; on NaN/inf write a diagnostic snapshot and re-raise with the iteration."""
        try:
            return fn()
        except NonFiniteError as exc:
            self.keeper.stop_nonfinite(exc, self.iteration + 1, lambda: self.state(gather=False), self._batch)
            raise

    # -- the state a checkpoint holds -----------------------------------------------------------

    def state(self, gather: bool = True) -> dict[str, Any] | None:
        """Everything a replay or resume needs, as plain tensors and Python types.

        In a multi-process job, every rank must call it (``gather``): rank 0 gets the job's
        state, the others None. ``gather=False``: this rank's own state (diagnostics).
        """
        state = training_state.assemble(
            self.learned,
            self.cfg,
            self.env.spaces,
            self.iteration,
            self.env_steps,
            self._env_state(),
            self.obs_raw,
            list(self.recent_episodes),
            list(self.kept),
            self.overlap.pending if self.overlap is not None else None,
            self.wandb_run_id,
        )
        if not self.group.active or not gather:
            return state
        parts = self.group.gather(training_state.rank_part(state))
        return None if parts is None else training_state.merge_ranks(state, parts)

    def _env_state(self) -> dict[str, Any] | None:
        try:
            return self.env.get_state()
        except NotImplementedError as exc:
            if not self._warned_env_state:
                _warn(f"{exc}: checkpoints hold no env state, so a resume starts new episodes")
                self._warned_env_state = True
            return None

    def _restore(self, state: dict[str, Any]) -> None:
        """Load a checkpoint's weights, optimiser, counters, RNGs, env state and observations."""
        training_state.check_world_size(state, self.group.world_size, "the checkpoint")
        state = training_state.rank_view(state, self.group.rank)
        self.iteration, self.env_steps = training_state.restore(
            state, self.learned, self.env.spaces, self.cfg.env.name
        )
        self.obs_raw = training_state.restore_envs(state, self.env, self.device)
        self.recent_episodes.extend(EpisodeRecord(**e) for e in state.get("episodes", []))
        reuse = self.cfg.algo.reuse_batches
        self.kept.extend(training_state.reused_batches(state, self.device, reuse, self.iteration))
        if self.overlap is not None:
            self.overlap.pending = training_state.pending_batch(state, self.device)
        self.wandb_run_id = state.get("wandb", {}).get("run_id")

    def _named_tensors(self) -> list[tuple[str, torch.Tensor]]:
        """Every learned tensor: parameters of actor and critic, normaliser statistics."""
        named = [(f"actor.{n}", p) for n, p in self.actor.named_parameters()]
        if self.critic is not None:
            named += [(f"critic.{n}", p) for n, p in self.critic.named_parameters()]
        named += [(f"obs_normalizer.{n}", b) for n, b in self.normalizer.named_buffers()]
        named += [(f"reward_scaler.{n}", b) for n, b in self.reward_scaler.named_buffers()]
        return named
