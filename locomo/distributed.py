"""One training job across processes: data parallelism on :mod:`torch.distributed`.

``torchrun --nproc_per_node=K [--nnodes=M ...] -m locomo train ...`` starts K x M processes
(ranks). ``train.num_envs`` and ``train.steps_per_iteration`` stay the *job's* batch: each rank
steps ``num_envs / world_size`` of the envs with its own seeds, and the ranks together compute
exactly the update one process would compute on the whole batch (tests/test_distributed.py
checks it). The update's math does not know about ranks: :class:`DataParallel` wraps each of its
gradient steps from outside, and :func:`global_mean` / :func:`global_mean_std` give its batch
statistics over every rank's samples. What the ranks exchange (P = parameters of actor and
critic, O = observation size):

- every minibatch step: one all-reduce (sum) of the P gradients together with the step's named
  diagnostic sums (:class:`locomo.rl.losses.StepSums`: the KL early stop and the adaptive
  learning rate then decide the same on every rank), one max of the largest importance weight,
  and the sums of the approx KL after the step;
- every batch, once its collection ends: the observation normaliser's sums since the last sync
  (2 O + 1 float64, :meth:`locomo.rl.running_stats.RunningMeanStd.sync`), and the reward scaler's
  (3 float64) when ``algo.normalize_rewards``; within the batch each rank's statistics take in
  its own envs' steps;
- every update: the global advantage mean and std, the mean or optimal baseline, the value
  targets' statistics and explained variance (a few floats each);
- every iteration: the finished episodes and reward-term sums, gathered on rank 0 for the
  metrics, and one flag that says whether any rank was asked to stop;
- every checkpoint: each rank's env state, observations, RNG and reward-scaler returns,
  gathered on rank 0, which alone writes checkpoints, metrics, W&B and videos.

The walking recipe's actor and critic hold 688,163 parameters: 2.75 MB of float32 per minibatch
step, 16 steps per iteration. The backend is chosen by torch for each tensor's device: gloo for
CPU tensors, NCCL for CUDA ones (``train.device`` as in one process; rank r uses GPU ``LOCAL_RANK``).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from locomo.config.schema import LocomoConfig
from locomo.errors import ConfigError, DistributedError

# torchrun's variables; WORLD_SIZE > 1 means this process is one rank of a job.
_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
# How long a rank waits in a collective for the others (rank 0 may be writing a video).
TIMEOUT = datetime.timedelta(minutes=30)


def world_size_from_env() -> int:
    """The job's process count as torchrun announces it (1 outside torchrun)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def _collective(what: str):  # type: ignore[no-untyped-def]
    """Turn a collective's failure (a rank died, the network went) into one clear error."""

    def wrap(fn):  # type: ignore[no-untyped-def]
        def inner(self: Group, *args: Any, **kwargs: Any) -> Any:
            if not self.active:
                return fn(self, *args, **kwargs)
            try:
                return fn(self, *args, **kwargs)
            except (RuntimeError, ConnectionError) as exc:
                text = str(exc).strip().splitlines()
                raise DistributedError(
                    f"rank {self.rank} of {self.world_size}: {what} failed, so another rank of this job "
                    f"has stopped (see its own error line) ({text[0] if text else type(exc).__name__})"
                ) from exc

        return inner

    return wrap


@dataclass(frozen=True)
class Group:
    """This process's place in the job, and the collectives the training loop needs.

    With one process every method is the identity (no torch.distributed call), so the
    single-process path pays nothing.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def active(self) -> bool:
        """True when this process is one of several."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes metrics, checkpoints, W&B and videos."""
        return self.rank == 0

    @property
    def launcher(self) -> str:
        """How to start a job like this one (for messages that say how to resume it)."""
        if not self.active:
            return "locomo"
        nodes = self.world_size // self.local_world_size
        spread = f"--nnodes={nodes} " if nodes > 1 else ""
        return f"torchrun {spread}--nproc_per_node={self.local_world_size} -m locomo"

    def shard(self, n: int) -> tuple[int, int]:
        """(first index, count) of this rank's share of n items (n divisible by world_size)."""
        count = n // self.world_size
        return self.rank * count, count

    @_collective("summing a tensor across ranks")
    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """All-reduce ``tensor`` in place (sum over ranks) and return it."""
        if self.active:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    @_collective("taking a maximum across ranks")
    def max_(self, tensor: torch.Tensor) -> torch.Tensor:
        """All-reduce ``tensor`` in place (max over ranks) and return it."""
        if self.active:
            dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return tensor

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any (one decision for all)."""
        if not self.active:
            return flag
        # A CPU tensor: gloo carries it whatever the training device.
        return bool(self.max_(torch.tensor([int(flag)])).item())

    @_collective("copying rank 0's weights")
    def broadcast_tensors_(self, named: list[tuple[str, torch.Tensor]]) -> None:
        """Overwrite every rank's tensors with rank 0's, in place."""
        if self.active:
            with torch.no_grad():
                for _, tensor in named:
                    dist.broadcast(tensor.data, src=0)

    @_collective("gathering results on rank 0")
    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj`` on rank 0 (in rank order); None on the other ranks."""
        if not self.active:
            return [obj]
        out: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    @_collective("receiving rank 0's decision")
    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def rank_seed(self, seed: int) -> int:
        """The seed of this rank's own random streams (action sampling): ``seed`` on rank 0, and
        an independent stream per rank from (seed, rank) on the others."""
        if self.rank == 0:
            return seed
        return int(np.random.SeedSequence([seed, self.rank]).generate_state(1, np.uint32)[0])


SINGLE = Group()
_GROUP = SINGLE


def current() -> Group:
    """The group :func:`init` made in this process (:data:`SINGLE` outside torchrun)."""
    return _GROUP


def init() -> Group:
    """Join the job torchrun started (its environment variables); :data:`SINGLE` outside one.

    The default process group gets gloo for CPU tensors and, where CUDA is available, NCCL for
    CUDA tensors; each rank's GPU is ``cuda:LOCAL_RANK``.
    """
    global _GROUP
    if world_size_from_env() <= 1:
        return SINGLE
    if _GROUP.active:
        return _GROUP
    try:
        rank, world, local, local_world = (int(os.environ[k]) for k in _ENV)
    except (KeyError, ValueError) as exc:
        raise DistributedError(
            f"WORLD_SIZE={os.environ.get('WORLD_SIZE')} but {exc} is missing or not a number: "
            "start a multi-process job with torchrun, which sets RANK, LOCAL_RANK and LOCAL_WORLD_SIZE"
        ) from exc
    backend = "cpu:gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(local % torch.cuda.device_count())
        backend = "cpu:gloo,cuda:nccl"
    try:
        dist.init_process_group(backend=backend, timeout=TIMEOUT)
    except (RuntimeError, ValueError, ConnectionError) as exc:
        raise DistributedError(f"rank {rank} of {world}: could not join the job ({exc})") from exc
    _GROUP = Group(rank, world, local, local_world)
    return _GROUP


def check_config(cfg: LocomoConfig, group: Group) -> None:
    """ConfigError unless the job's envs split evenly over its processes."""
    n = cfg.train.num_envs
    if group.active and n % group.world_size:
        raise ConfigError(
            "train.num_envs",
            n,
            f"must be a multiple of this job's {group.world_size} processes (torchrun's nnodes x "
            f"nproc_per_node): each process steps num_envs / {group.world_size} of the envs",
        )


def shutdown() -> None:
    """Leave the job once every rank is done with it (after a job that ended well: a failed rank
    would leave the others waiting here)."""
    global _GROUP
    if _GROUP.active and dist.is_initialized():
        # No rank tears its connections down while another still uses them (rank 0 may still be
        # writing its last files).
        dist.barrier()
        dist.destroy_process_group()
    _GROUP = SINGLE


# -- data parallelism around an update --------------------------------------------------------------

Sums = TypeVar("Sums", bound=tuple)  # a NamedTuple of 0-d tensors


def global_mean(x: torch.Tensor, group: Group) -> tuple[torch.Tensor, float]:
    """Mean of every rank's x [B] together (one all-reduce), and how many samples that is."""
    if not group.active:
        return x.mean(), float(x.numel())
    sums = group.sum_(torch.stack([x.sum(), torch.tensor(float(x.numel()), device=x.device)]).double())
    return (sums[0] / sums[1]).to(x.dtype), float(sums[1])


def global_mean_std(x: torch.Tensor, group: Group) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (unbiased) std of every rank's x [B] together: two passes, one all-reduce each."""
    if not group.active:
        return x.mean(), x.std()
    mean, n = global_mean(x, group)
    sq = group.sum_((x - mean).square().sum().double().reshape(1))
    return mean, torch.sqrt(sq[0] / (n - 1)).to(x.dtype)


class DataParallel:
    """Data parallelism around the gradient steps of an update, from outside their math.

    The ranks take the steps one process would take on the job's batch: the same minibatches of
    it, each rank holding some of every minibatch's samples. Three things make that so, and the
    update calls each at its place in a step:

    1. :meth:`local_index`: every rank draws the same permutation of the job's samples (a shared
       generator) and keeps its own samples of each minibatch;
    2. :meth:`share`: a rank's loss, a mean over its m_r samples, is scaled by m_r / M (M the
       minibatch's samples over all ranks), so that the ranks' gradients sum to the gradient of
       the minibatch mean;
    3. :meth:`sum_gradients`: one all-reduce of every parameter's gradient together with the
       step's diagnostic sums (a named tuple of 0-d tensors), before the gradient is clipped and
       applied; :meth:`max` and :meth:`sum` for the other statistics of a step.

    In one process each is the identity and no collective runs.
    """

    def __init__(self, group: Group, params: Sequence[nn.Parameter]) -> None:
        self.group = group
        self.params = list(params)

    @property
    def active(self) -> bool:
        """True when this process is one of several."""
        return self.group.active

    def local_index(self, perm: torch.Tensor, envs: int) -> torch.Tensor:
        """For a permutation [T * N * K] of the job's flat sample indices (t * N K + n, n the
        job-wide env index), this rank's flat index t * N + (n - rank N) of each sample it holds
        and -1 for the others' (N envs per rank, K ranks). ``perm`` itself in one process."""
        if not self.active:
            return perm
        world = envs * self.group.world_size
        t, n = perm // world, perm % world
        local = n - self.group.rank * envs
        return torch.where((local >= 0) & (local < envs), t * envs + local, -1)

    def own(self, index: torch.Tensor) -> torch.Tensor:
        """This rank's entries of a minibatch's slice of :meth:`local_index` (all in one process)."""
        return index[index >= 0] if self.active else index

    def share(self, loss: torch.Tensor, count: int, size: int) -> torch.Tensor:
        """This rank's share of a minibatch mean: ``loss`` (the mean over its ``count`` samples)
        times count / size (``size``: the minibatch's samples over all ranks); ``loss`` in one process."""
        return loss * (count / size) if self.active else loss

    def sum_gradients(self, sums: Sums) -> Sums:
        """Sum every rank's gradients of the parameters and ``sums`` (0-d tensors) in one
        all-reduce; the summed ``sums``, the same named tuple. The gradients are replaced by the
        sums (a missing one counts as zeros)."""
        if not self.active:
            return sums
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        extra = torch.stack(list(sums)).to(grads[0].dtype)
        flat = self.group.sum_(torch.cat([*(g.reshape(-1) for g in grads), extra]))
        offset = 0
        for p in self.params:
            p.grad = flat[offset : offset + p.numel()].view_as(p)
            offset += p.numel()
        return type(sums)(*flat[offset:].unbind())

    def sum(self, sums: Sums) -> Sums:
        """``sums`` (a named tuple of 0-d tensors of one dtype) summed over the ranks."""
        if not self.active:
            return sums
        return type(sums)(*self.group.sum_(torch.stack(list(sums))).unbind())

    def max(self, x: torch.Tensor) -> torch.Tensor:
        """The largest of every rank's 0-d ``x``."""
        return self.group.max_(x.reshape(1))[0] if self.active else x
