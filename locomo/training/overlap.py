"""``train.overlap``: the update on one batch runs in a worker thread while the next batch is
collected, by a copy of the policy as it was before that update (:class:`BehaviourPolicy`).

The runner (:meth:`locomo.training.runner.Runner._overlapped_iteration`) says what happens in which order;
this holds the copy, the worker thread and the batch collected but not yet trained on.
"""

from __future__ import annotations

import copy
import time
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from locomo.envs import EpisodeRecord
from locomo.rl.algorithm import PolicyGradient
from locomo.rl.buffer import RolloutBatch
from locomo.rl.collector import Collector
from locomo.rl.policy import Actor, ValueNet


class BehaviourPolicy:
    """Copies of actor and critic that act while the originals are trained (``train.overlap``)."""

    def __init__(self, actor: Actor, critic: ValueNet | None) -> None:
        self.actor = copy.deepcopy(actor)
        self.critic = copy.deepcopy(critic)

    @torch.no_grad()
    def sync(self, actor: Actor, critic: ValueNet | None) -> None:
        """Become the current policy (and critic), before an update starts changing them."""
        self.actor.load_state_dict(actor.state_dict())
        if self.critic is not None and critic is not None:
            self.critic.load_state_dict(critic.state_dict())


class Overlap:
    """The behaviour copy of ``actor`` and ``critic``, the update's worker thread, and
    :attr:`pending`: the batch collected and not yet trained on (a checkpoint keeps it)."""

    def __init__(self, actor: Actor, critic: ValueNet | None) -> None:
        self.behaviour = BehaviourPolicy(actor, critic)
        self.worker = ThreadPoolExecutor(1, "locomo-update")
        self.pending: RolloutBatch | None = None

    @staticmethod
    def collect_copy(
        collector: Collector, obs_raw: torch.Tensor
    ) -> tuple[RolloutBatch, torch.Tensor, list[EpisodeRecord], dict[str, float]]:
        """A batch collected by the behaviour copy, copied out of the buffer (which the next
        collection overwrites while the update may still read this one), and the next raw
        observations [N, O]."""
        batch, obs_raw, episodes, term_sums = collector.collect(obs_raw)
        return RolloutBatch(*(x.clone() for x in batch)), obs_raw, episodes, term_sums

    def start_update(
        self, algorithm: PolicyGradient, batch: RolloutBatch, kept: list[RolloutBatch], fresh: bool
    ) -> Future[tuple[dict[str, float], float]]:
        """The update on ``batch`` (and the ``kept`` ones), started in the worker thread; its
        future holds the update's metrics and its seconds."""
        return self.worker.submit(_timed_update, algorithm, batch, kept, fresh)

    def close(self) -> None:
        """Wait for the worker thread and stop it."""
        self.worker.shutdown(wait=True)


def _timed_update(
    algorithm: PolicyGradient, batch: RolloutBatch, kept: list[RolloutBatch], fresh: bool
) -> tuple[dict[str, float], float]:
    start = time.perf_counter()
    info = algorithm.update(batch, kept, fresh)
    return info, time.perf_counter() - start
