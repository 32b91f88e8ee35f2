"""Running statistics with their distributed sync: :class:`RunningMeanStd` and :class:`RewardScaler`.

Both are ``nn.Module``s whose statistics are buffers, saved in checkpoints by name (``mean``,
``var``, ``count``; ``running_return`` and ``returns_std.*``). In a job of several processes each
rank folds in its own envs' data at once, and :meth:`RunningMeanStd.sync` makes every rank's
statistics the job's again (one all-reduce, at the end of each batch).
"""

from __future__ import annotations

import torch
from torch import nn

from locomo.distributed import SINGLE, Group


class RunningMeanStd(nn.Module):
    """Running mean/variance of a stream of vectors [B, D] (Chan et al. parallel update); saved with
    the model. Observations (the observation normaliser), discounted returns (:class:`RewardScaler`)
    and value targets (:class:`~locomo.rl.policy.ValueNet`) are each normalised by one.

    Folding a batch of n with mean m_b and variance v_b into c samples with mean m and variance v:

        t = c + n,  d = m_b - m,  m <- m + d n / t,  v <- v c / t + v_b n / t + d^2 c n / t^2
    """

    def __init__(self, dim: int, enabled: bool = True, clip: float = 10.0, eps: float = 1e-8) -> None:
        super().__init__()
        self.enabled, self.clip, self.eps = enabled, clip, eps
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("var", torch.ones(dim, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(0.0, dtype=torch.float64))
        # Caches for the per-step hot path, dropped whenever the buffers may have changed:
        # (mean, std) in the dtype of the inputs, and the count as a Python float (so the
        # update's weights are plain numbers, not tensor ops and, on a GPU, no sync).
        self._affine: tuple[torch.Tensor, torch.Tensor] | None = None
        self._count: float | None = None
        # Several ranks: the statistics (mean, var, count) at the last sync, and the sums of what
        # this rank has seen since (see :meth:`sync`).
        self._synced: tuple[torch.Tensor, torch.Tensor, float] | None = None
        self._pending: torch.Tensor | None = None

    def _load_from_state_dict(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        self._affine, self._count = None, None
        self._synced, self._pending = None, None
        super()._load_from_state_dict(*args, **kwargs)

    def _apply(self, *args, **kwargs):  # type: ignore[no-untyped-def]  # .to(), .cuda(), .double()
        self._affine, self._count = None, None
        return super()._apply(*args, **kwargs)

    @torch.no_grad()
    def update(self, batch: torch.Tensor, group: Group = SINGLE) -> None:
        """Fold a batch [B, D] into the running statistics.

        With several ranks (``group``) this rank's statistics take in its own batch at once, and
        the ranks agree again at the next :meth:`sync`, which folds in everyone's.
        """
        if not self.enabled:
            return
        x = batch.to(torch.float64)
        if group.active:
            self._remember(x)
        # Two-pass variance: as exact as x.var(0), and cheaper on small batches (it runs every env step).
        batch_mean, n = x.mean(0), x.shape[0]
        batch_var = (x - batch_mean).square_().mean(0)
        c = float(self.count) if self._count is None else self._count
        t = c + n
        delta = batch_mean.sub_(self.mean)
        self.mean.add_(delta, alpha=n / t)
        self.var.mul_(c / t).add_(batch_var, alpha=n / t).add_(delta.square_(), alpha=c * n / t**2)
        self.count.fill_(t)
        self._affine, self._count = None, t

    def _remember(self, x: torch.Tensor) -> None:
        """Add x [B, D] to the sums since the last sync: n, sum d and sum d^2 with d = x - m, m the
        mean at the last sync (the same on every rank; the sums are of small numbers, so the
        subtraction in :meth:`sync` loses no precision)."""
        pending = self._pending if self._pending is not None else self._start_pending()
        assert self._synced is not None
        d = x - self._synced[0]
        dim = self.mean.shape[0]
        pending[:dim] += d.sum(0)
        pending[dim : 2 * dim] += d.square().sum(0)
        pending[-1] += x.shape[0]

    def _start_pending(self) -> torch.Tensor:
        """Remember the statistics as they are now (the last sync's) and start empty sums."""
        self._synced = (self.mean.clone(), self.var.clone(), float(self.count))
        self._pending = torch.zeros(2 * self.mean.shape[0] + 1, dtype=torch.float64, device=self.mean.device)
        return self._pending

    @torch.no_grad()
    def sync(self, group: Group) -> None:
        """Make every rank's statistics the job's: the statistics at the last sync with every
        rank's data since then folded in (one all-reduce of 2 D + 1 numbers).

        Over all n new rows, batch mean = m + sum d / n and batch variance = sum d^2 / n -
        (sum d / n)^2; then the same parallel update as :meth:`update`, from the last sync's state.
        Every rank must call it at the same point (the collective); a no-op in one process.
        """
        if not self.enabled or not group.active:
            return
        dim = self.mean.shape[0]
        # Nothing seen since the last sync: empty sums, but still take part in the collective.
        pending = self._pending if self._pending is not None else self._start_pending()
        assert self._synced is not None
        sums = group.sum_(pending)
        mean, var, c = self._synced
        self._synced, self._pending = None, None
        n = float(sums[-1])
        if n == 0:
            return
        delta = sums[:dim] / n
        batch_var = (sums[dim : 2 * dim] / n - delta.square()).clamp_(min=0.0)
        t = c + n
        self.mean.copy_(mean + delta * (n / t))
        self.var.copy_(var * (c / t) + batch_var * (n / t) + delta.square() * (c * n / t**2))
        self.count.fill_(t)
        self._affine, self._count = None, t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(x - mean) / std [B, D] for x [B, D], clipped to +-clip (x itself when disabled)."""
        if not self.enabled:
            return x
        if self._affine is None or self._affine[0].dtype != x.dtype:
            self._affine = (self.mean.to(x.dtype), torch.sqrt(self.var.to(x.dtype) + self.eps))
        mean, std = self._affine
        return ((x - mean) / std).clamp(-self.clip, self.clip)


class RewardScaler(nn.Module):
    """Divides rewards by the running std of each env's discounted return (saved with the model).

    R_n <- gamma * R_n * (1 - done_n) + r_n  per env n;  r / sqrt(Var[R] + eps), clipped to +-clip.
    The scale of the returns stops depending on the task's reward units, which keeps the value
    loss (and its share of a clipped gradient norm) in range; advantages change by a positive
    constant factor per batch, so the estimator's direction is unchanged. (The same trick as
    Stable-Baselines3's VecNormalize(norm_reward=True) and Gymnasium's NormalizeReward.)
    """

    def __init__(self, num_envs: int, gamma: float, enabled: bool = True, clip: float = 10.0) -> None:
        super().__init__()
        self.enabled, self.gamma, self.clip = enabled, gamma, clip
        self.returns_std = RunningMeanStd(1, enabled=enabled)
        self.register_buffer("running_return", torch.zeros(num_envs, dtype=torch.float64))

    @torch.no_grad()
    def forward(
        self, rewards: torch.Tensor, episode_end: torch.Tensor, group: Group = SINGLE
    ) -> torch.Tensor:
        """Scaled rewards [N] for rewards [N]; episode_end [N] bool resets R_n after this step.

        With several ranks, N is this rank's envs; the std is every rank's after :meth:`sync`.
        """
        if not self.enabled:
            return rewards
        self.running_return.mul_(self.gamma).add_(rewards.to(torch.float64))
        self.returns_std.update(self.running_return.unsqueeze(1), group)
        scale = torch.sqrt(self.returns_std.var + self.returns_std.eps).to(rewards.dtype)
        self.running_return.masked_fill_(episode_end, 0.0)
        return (rewards / scale).clamp(-self.clip, self.clip)

    def sync(self, group: Group) -> None:
        """Make the returns' statistics the job's (:meth:`RunningMeanStd.sync`)."""
        self.returns_std.sync(group)
