"""One policy-gradient update over a collected batch: advantages, then epochs x minibatches.

The math lives in :mod:`locomo.returns` and :mod:`locomo.losses`; this module wires the
configured options together and owns the optimiser.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, TypeVar

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from locomo import losses, returns
from locomo.buffer import RolloutBatch
from locomo.distributed import SINGLE, Group
from locomo.guard import check_finite
from locomo.policy import Actor, ValueNet
from locomo.symmetry import PolicyMirror

R = TypeVar("R")


@dataclass
class Advantages:
    """What the update needs from the batch's rewards, flattened to B = T * N samples."""

    advantages: torch.Tensor  # [B] weights A of grad log pi in the estimator
    value_targets: torch.Tensor | None  # [B] regression targets for V (value baseline only)
    segment: torch.Tensor  # [B] trajectory-segment id of each sample
    num_segments: int
    baseline: float  # the constant baseline used (0 for none/value)
    std: float  # the advantages' std over every rank's samples, before any normalisation


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


def compute_advantages(
    batch: RolloutBatch, cfg: Any, actor: Actor, group: Group = SINGLE, log_rho: torch.Tensor | None = None
) -> Advantages:
    """Returns and baseline as configured (``algo.returns``, ``algo.baseline``, ``algo.gamma``, ...).

    - ``returns``: ``total`` gives each step its segment's whole return r(tau) (REINFORCE);
      ``reward_to_go`` gives it sum_{t' >= t} gamma^(t'-t) r_t'.
    - ``baseline``: ``none``; ``mean`` subtracts the batch average of those returns; ``optimal``
      the gradient-norm-weighted average (:func:`returns.optimal_baseline`); ``value``
      subtracts V(s_t) (GAE(lambda) for reward-to-go; r(tau) - V(s_t) for total).
    - ``log_rho`` [T, N] (kept batches, ``algo.reuse_batches`` > 1; value baseline and
      reward-to-go only): log pi_k - log mu of each step, pi_k the policy starting the update
      and mu the one that collected the step; the advantages and value targets are then
      :func:`returns.off_policy_targets` with ``algo.reuse_correction``.

    With several ranks ``batch`` is this rank's envs; returns never cross envs, and the batch
    averages (baselines, normalisation) are over every rank's samples.
    """
    end, term = batch.episode_end, batch.terminated
    seg = returns.segment_ids(end)
    num_segments = int(seg.max()) + 1
    use_value = cfg.baseline == "value"
    boot = batch.next_values if use_value else None

    def weighted_returns() -> torch.Tensor:
        if cfg.returns == "total":
            return returns.total_return(batch.rewards, end, term, cfg.gamma, boot)
        return returns.discounted_reward_to_go(batch.rewards, end, term, cfg.gamma, boot)

    value_targets = None
    baseline = 0.0
    if use_value and log_rho is not None:
        adv, targets = returns.off_policy_targets(
            batch.rewards, batch.values, batch.next_values, end, term, cfg.gamma, cfg.gae_lambda,
            log_rho, cfg.reuse_correction,
        )  # fmt: skip
        value_targets = targets.flatten()
    elif use_value:
        values, rewards = batch.values, batch.rewards
        gae = returns.gae(rewards, values, batch.next_values, end, term, cfg.gamma, cfg.gae_lambda)
        # reward_to_go with a value baseline is GAE(lambda); total keeps r(tau) - V(s_t).
        adv = gae if cfg.returns == "reward_to_go" else weighted_returns() - values
        value_targets = (gae + values).flatten()
    elif cfg.baseline == "mean":
        ret = weighted_returns()
        b = returns.mean_baseline(ret) if not group.active else global_mean(ret.flatten(), group)[0]
        adv, baseline = ret - b, float(b)
    elif cfg.baseline == "optimal":
        ret = weighted_returns()
        b = optimal_baseline_for(batch, ret, seg.flatten(), num_segments, cfg, actor, group)
        adv, baseline = ret - b, float(b)
    else:
        adv = weighted_returns()
    adv = adv.flatten()
    mean, std = global_mean_std(adv, group)
    if cfg.normalize_advantages:
        adv = returns.normalize_with(adv, mean, std)
    return Advantages(adv, value_targets, seg.flatten(), num_segments, baseline, float(std))


def explained_variance(values: torch.Tensor, targets: torch.Tensor, group: Group = SINGLE) -> float:
    """1 - Var(targets - V) / Var(targets) over every rank's samples (values, targets [B]).

    1: the value function predicts its targets exactly; 0: no better than their mean; below 0:
    worse. NaN when the targets do not vary."""
    var_targets = float(global_mean_std(targets, group)[1]) ** 2
    var_error = float(global_mean_std(targets - values, group)[1]) ** 2
    return 1.0 - var_error / var_targets if var_targets > 0 else float("nan")


def optimal_baseline_for(
    batch: RolloutBatch,
    ret: torch.Tensor,
    seg: torch.Tensor,
    num_segments: int,
    cfg: Any,
    actor: Actor,
    group: Group = SINGLE,
) -> torch.Tensor:
    """The variance-optimal constant baseline for this batch and estimator (every rank's samples).

    For ``total`` returns the estimator's samples are trajectories (g = grad log p(tau),
    R = r(tau)); for ``reward_to_go`` they are steps (g = grad log pi(a_t|s_t), R = G_t).
    Segments never cross envs, so each rank's trajectories are whole.
    """
    obs = batch.obs.flatten(0, 1)
    actions = batch.actions.flatten(0, 1)
    if cfg.returns == "total":
        sq = losses.per_sample_grad_sq_norms(
            actor, obs, actions, seg, num_segments, cfg.optimal_baseline_chunk
        )
        samples = torch.zeros(num_segments, dtype=ret.dtype, device=ret.device)
        samples[seg] = ret.flatten()
    else:
        sq = losses.per_sample_grad_sq_norms(actor, obs, actions, chunk=cfg.optimal_baseline_chunk)
        samples = ret.flatten()
    sums = returns.optimal_baseline_sums(samples, sq)
    if group.active:
        sums = group.sum_(sums.double())
    return returns.optimal_baseline_from_sums(sums).to(ret.dtype)


def adaptive_lr(
    lr: float, kl: float, threshold: float, factor: float = 1.5, lr_min: float = 1e-6, lr_max: float = 1e-2
) -> float:
    """The KL-adaptive step size after one epoch whose mean approx KL was ``kl``.

    lr / factor (not below lr_min) when kl > 2 threshold; lr * factor (not above lr_max) when
    kl < threshold / 2; else unchanged. Steps that moved the policy too far shrink the next ones.
    """
    if kl > 2.0 * threshold:
        return max(lr / factor, lr_min)
    if kl < 0.5 * threshold:
        return min(lr * factor, lr_max)
    return lr


def linear_lr(base_lr: float, progress: float) -> float:
    """base_lr * (1 - progress), progress in [0, 1] the fraction of training done."""
    return base_lr * max(0.0, 1.0 - progress)


@dataclass
class UpdateData:
    """An update's samples, flattened to B (all kept batches): what the gradient steps index."""

    obs: torch.Tensor  # [B, O] normalised observations
    actions: torch.Tensor  # [B, A] or [B]
    behaviour: torch.Tensor  # [B] log mu(a|s): the policy that collected each sample
    start: torch.Tensor | None  # [B] log pi_k(a|s), pi_k the policy starting the update (None: = mu)
    values: torch.Tensor  # [B] V(s) the advantages were computed with
    value_targets: torch.Tensor | None  # [B] the critic's regression targets (value baseline only)

    @staticmethod
    def of(rollout: RolloutBatch, start: torch.Tensor | None, adv: Advantages) -> UpdateData:
        """The flat samples of a [T, N] rollout and its advantages' value targets."""
        return UpdateData(
            rollout.obs.flatten(0, 1),
            rollout.actions.flatten(0, 1),
            rollout.log_probs.flatten(),
            start,
            rollout.values.flatten(),
            adv.value_targets,
        )


@dataclass
class Minibatch:
    """Which samples of the flat batch one gradient step uses."""

    index: torch.Tensor  # [m] long: this rank's samples of the minibatch (all of them in one process)
    size: int  # M: the minibatch's size over all ranks
    where: str  # for error messages: "(epoch e, minibatch k)"


class PolicyGradient:
    """Owns the optimiser; :meth:`update` turns one batch into ``epochs x minibatches`` steps."""

    def __init__(
        self,
        actor: Actor,
        critic: ValueNet | None,
        cfg: Any,
        generator: torch.Generator,
        group: Group = SINGLE,
        mirror: PolicyMirror | None = None,
        critic_thread: bool = False,
        precision: torch.dtype = torch.float32,
    ) -> None:
        # A plain dataclass: OmegaConf attribute access is slow in the minibatch loop.
        self.cfg = OmegaConf.to_object(cfg) if isinstance(cfg, DictConfig) else cfg
        self.actor, self.critic = actor, critic
        params = list(actor.parameters()) + (list(critic.parameters()) if critic is not None else [])
        self.params = params
        # Fused Adam: one kernel for all parameters (~3x faster than foreach on CPU for these sizes).
        self.optimizer = torch.optim.Adam(params, lr=cfg.lr, fused=True)
        # The same seed on every rank: every rank draws the same minibatches of the job's batch.
        self.generator = generator
        self.group = group
        self.mirror = mirror  # algo.symmetry=augment: every sample's mirror image joins the update
        # The actor and the critic share no parameter, so the critic's forward and backward can
        # run in a second thread beside the actor's (each single-threaded, so the results are
        # those of one thread, bit for bit): a core the update would leave idle. Coarse work
        # items (a minibatch's whole critic step) keep it robust to a busy core, unlike torch's
        # intra-op threads, which wait on each other at every operation.
        self._critic_worker = (
            ThreadPoolExecutor(1, "locomo-critic", initializer=torch.set_num_threads, initargs=(1,))
            if critic_thread and critic is not None
            else None
        )

        # train.update_precision: the nets' matrix products in bfloat16 under autocast (weights,
        # gradients' accumulation, optimiser and losses stay float32). Autocast is per thread:
        # every forward below enters it itself, the critic's thread included.
        self.precision = precision
        self._device_type = next(actor.parameters()).device.type

    def _nets(self) -> AbstractContextManager[object]:
        """The context in which the update runs the nets: autocast to ``precision``, or nothing."""
        if self.precision == torch.float32:
            return nullcontext()
        return torch.autocast(self._device_type, dtype=self.precision)

    def _beside(self, fn: Callable[[], R]) -> Future[R]:
        """Run ``fn`` in the critic's thread (or now, without one); its result as a future."""
        if self._critic_worker is not None:
            return self._critic_worker.submit(fn)
        return self._done(fn())

    @staticmethod
    def _done(value: R) -> Future[R]:
        done: Future[R] = Future()
        done.set_result(value)
        return done

    @property
    def lr(self) -> float:
        """The optimiser's current step size (saved with its state in checkpoints)."""
        return float(self.optimizer.param_groups[0]["lr"])

    def _set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def begin_update(self, progress: float) -> None:
        """Called before each update (in the thread that collects) with the fraction of training
        done: the linear schedule's lr, and the mirror's normaliser statistics."""
        if self.cfg.lr_schedule == "linear":
            self._set_lr(linear_lr(self.cfg.lr, progress))
        if self.mirror is not None:
            self.mirror.refresh()

    def _weights(
        self, new_log_prob_all: torch.Tensor, old_log_prob_all: torch.Tensor, adv: Advantages
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample importance weights [B] (detached) and per-step log-ratios [B]."""
        step_log_ratio = losses.log_ratios(new_log_prob_all, old_log_prob_all)
        if self.cfg.importance == "trajectory":
            log_w = losses.trajectory_log_weights(
                step_log_ratio, adv.segment, adv.num_segments, self.cfg.max_log_weight
            )
        else:
            log_w = step_log_ratio
        return log_w.exp(), step_log_ratio

    def _local_index(self, perm: torch.Tensor, envs: int) -> torch.Tensor:
        """For a permutation [T * N * K] of the job's flat sample indices (t * N K + n, n the
        job-wide env index), this rank's flat index t * N + (n - rank N) of each sample it holds
        and -1 for the others' (N envs per rank, K ranks)."""
        world = envs * self.group.world_size
        t, n = perm // world, perm % world
        local = n - self.group.rank * envs
        return torch.where((local >= 0) & (local < envs), t * envs + local, -1)

    def _all_reduce_gradients(self, extra: torch.Tensor) -> torch.Tensor:
        """Sum every rank's gradients (and ``extra`` [E]) in one all-reduce; return the summed extra."""
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        flat = self.group.sum_(torch.cat([*(g.reshape(-1) for g in grads), extra.to(grads[0].dtype)]))
        offset = 0
        for p in self.params:
            p.grad = flat[offset : offset + p.numel()].view_as(p)
            offset += p.numel()
        return flat[offset:]

    def _step(
        self, mb: Minibatch, data: UpdateData, adv: Advantages
    ) -> tuple[dict[str, float], Future[float]]:
        """One gradient step on minibatch ``mb`` of the flat ``data``; its diagnostics, over every
        rank's samples, and the approx KL after it (a future: :meth:`_kl_after_step`). No step
        (``applied`` 0) when ``algo.target_kl`` is set and the policy has
        already moved further than it from where the update started, measured on this minibatch
        before the step: a step past the target is not taken."""
        cfg, group, critic = self.cfg, self.group, self.critic
        obs, actions = data.obs, data.actions
        idx, count = mb.index, int(mb.index.numel())
        self.optimizer.zero_grad(set_to_none=True)
        # Per-sample sums (importance_sums' four, then clipped samples, policy loss, entropy and
        # value loss times the count): summed across ranks they give the minibatch's means.
        sums = torch.zeros(8, device=obs.device)
        weight_max = torch.zeros((), device=obs.device)
        mb_obs = mb_actions = centre = None
        if count:
            # One gather of the minibatch's observations for both nets (index_select copies
            # whole rows; obs[idx] gathers element by element, ~3x slower on [2048, 348]).
            mb_obs = obs.index_select(0, idx)
            mb_actions = actions.index_select(0, idx)
            # This rank's share of the minibatch mean: the shares' gradients sum to the mean's.
            share = count / mb.size if group.active else None
            value_step = None
            if critic is not None and data.value_targets is not None:
                targets = data.value_targets[idx]
                value_step = self._beside(partial(self._value_step, mb_obs, targets, share, mb.where))
            try:
                with self._nets():
                    new_log_prob, entropy = self.actor.log_prob_and_entropy(mb_obs, mb_actions)
                if cfg.importance == "trajectory":
                    # A trajectory's weight needs every step of it, not just this minibatch's.
                    with torch.no_grad(), self._nets():
                        all_new = self.actor.log_prob(obs, actions)
                    weights_all, log_ratio_all = self._weights(all_new, data.behaviour, adv)
                    weights, step_log_ratio = weights_all[idx], log_ratio_all[idx]
                else:
                    weights, step_log_ratio = self._weights(new_log_prob.detach(), data.behaviour[idx], adv)
                if data.start is not None:  # kept batches: clip around pi_k / mu, KL from pi_k
                    centre = (data.start[idx] - data.behaviour[idx]).exp()
                    step_log_ratio = new_log_prob.detach() - data.start[idx]
                policy_loss, info = losses.policy_surrogate_loss(
                    new_log_prob, adv.advantages[idx], weights, cfg.clip_ratio, centre
                )
                loss = policy_loss - cfg.entropy_coef * entropy
                check_finite("loss", loss.detach(), context=mb.where)  # before it reaches the parameters
                (loss * share if share is not None else loss).backward()
            finally:  # the critic's half is over before anything reads its gradients
                v_loss = value_step.result() if value_step is not None else torch.zeros((), device=obs.device)
            sums[:4] = losses.importance_sums(weights, step_log_ratio, centre)
            clipped = policy_loss.new_tensor(info["clip_fraction"])
            sums[4:] = torch.stack([clipped, policy_loss.detach(), entropy.detach(), v_loss.detach()]) * count
            weight_max = weights.detach().max()
        if group.active:
            sums = self._all_reduce_gradients(sums)
            weight_max = group.max_(weight_max.reshape(1))[0]
        totals = sums.tolist()
        n = totals[0]
        out = losses.diagnostics_from_sums(totals[:4], float(weight_max))
        max_norm = cfg.max_grad_norm if cfg.max_grad_norm is not None else float("inf")
        grad_norm = nn.utils.clip_grad_norm_(self.params, max_norm)
        check_finite("gradients", grad_norm.detach(), context=f"(global norm) {mb.where}")
        applied = cfg.target_kl is None or out["approx_kl"] <= cfg.target_kl
        if applied:
            self.optimizer.step()
        # With no step taken the policy stands where this minibatch measured it before. The
        # measurement reads the stepped policy only: in the critic's thread (queued before the
        # next minibatch's critic half, which the next step waits for) it runs beside the next
        # minibatch's actor half. Not in a job of several ranks, whose collectives keep one order.
        if not applied:
            kl_after = self._done(out["approx_kl"])
        elif group.active:
            kl_after = self._done(self._kl_after_step(mb_obs, mb_actions, data, idx, centre))
        else:
            kl_after = self._beside(partial(self._kl_after_step, mb_obs, mb_actions, data, idx, centre))
        out.update(
            clip_fraction=totals[4] / n,
            policy_loss=totals[5] / n,
            entropy=totals[6] / n,
            grad_norm=float(grad_norm),
            applied=float(applied),
        )
        if critic is not None and data.value_targets is not None:
            out["value_loss"] = totals[7] / n
        return out, kl_after

    def _value_step(
        self, mb_obs: torch.Tensor, targets: torch.Tensor, share: float | None, where: str
    ) -> torch.Tensor:
        """The critic's half of a step: value loss on observations ``mb_obs`` [m, O] against
        ``targets`` [m], its backward (times ``algo.value_coef`` and this rank's ``share``); the
        loss, detached. The actor's half adds no gradient to the critic's parameters, so this is
        the gradient of the summed loss."""
        assert self.critic is not None
        with self._nets():
            predicted = self.critic.normalized(mb_obs)
        v_loss = losses.value_loss(predicted, targets)
        scaled = self.cfg.value_coef * v_loss
        check_finite("loss", scaled.detach(), context=where)  # before it reaches the parameters
        (scaled * share if share is not None else scaled).backward()
        return v_loss.detach()

    @torch.no_grad()
    def _kl_after_step(
        self,
        mb_obs: torch.Tensor | None,
        mb_actions: torch.Tensor | None,
        data: UpdateData,
        idx: torch.Tensor,
        centre: torch.Tensor | None,
    ) -> float:
        """Approx KL(pi_k || pi_theta) on the minibatch with the step applied (every rank's samples).

        What the adaptive step size reads: measured before the step, the first minibatch of an
        update would always read 0."""
        kl = torch.zeros(2, dtype=torch.float64, device=data.obs.device)
        if mb_obs is not None and mb_actions is not None:
            start = data.behaviour[idx] if data.start is None else data.start[idx]
            with self._nets():
                log_r = self.actor.log_prob(mb_obs, mb_actions) - start
            kl[0], kl[1] = float(idx.numel()), losses.kl_sum(log_r, centre).double()
        if self.group.active:
            kl = self.group.sum_(kl)
        return float(kl[1] / kl[0])

    def _prepare(
        self, batch: RolloutBatch, kept: Sequence[RolloutBatch], fresh: bool = True
    ) -> tuple[UpdateData, Advantages]:
        """The update's samples: ``kept`` (oldest first) then ``batch``, along time ([K T, N]).

        Consecutive batches continue each other's episodes (env n's step T of one batch is step
        0 of the next), so the kept batches and the new one are one rollout of K T steps. Its
        steps collected by an earlier policy (the kept batches, and ``batch`` too unless
        ``fresh``) get V(s_t) from the current critic and log pi_k from the current policy (pi_k
        starts this update); V(s_t+1) at their episode ends, and after a stale ``batch``, stays
        as collected (the last observation of a finished episode is not kept).
        """
        stale = [*kept] if fresh else [*kept, batch]
        if not stale:
            adv = compute_advantages(batch, self.cfg, self.actor, self.group)
            return UpdateData.of(batch, None, adv), adv
        assert self.critic is not None  # validated: reuse needs the value baseline
        old = RolloutBatch(*(torch.cat(parts) for parts in zip(*stale, strict=True)))
        critic = self.critic

        @torch.no_grad()
        def values_now() -> torch.Tensor:
            with self._nets():
                return critic(flat_obs).view_as(old.values)

        with torch.no_grad():
            flat_obs, flat_actions = old.obs.flatten(0, 1), old.actions.flatten(0, 1)
            values_of = self._beside(values_now)
            with self._nets():
                start = self.actor.log_prob(flat_obs, flat_actions).view_as(old.log_probs)
            values = values_of.result()
        rollout = old
        if fresh:
            rollout = RolloutBatch(*(torch.cat(parts) for parts in zip(old, batch, strict=True)))
            values, start = torch.cat([values, batch.values]), torch.cat([start, batch.log_probs])
        shifted = torch.cat([values[1:], rollout.next_values[-1:]])
        next_values = torch.where(rollout.episode_end, rollout.next_values, shifted)
        rollout = rollout._replace(values=values, next_values=next_values)
        adv = compute_advantages(rollout, self.cfg, self.actor, self.group, start - rollout.log_probs)
        return UpdateData.of(rollout, start.flatten(), adv), adv

    @torch.no_grad()
    def _with_images(
        self, data: UpdateData, adv: Advantages, mirror: PolicyMirror
    ) -> tuple[UpdateData, Advantages]:
        """``data`` followed by the mirror image of each sample (:mod:`locomo.symmetry`): (M s, M a)
        with the sample's advantage and value target, log pi_k(M a|M s), and as its behaviour
        log-prob max(log mu(a|s), log pi_k(M a|M s)): the exact weight truncated at 1."""
        obs, actions = mirror.obs(data.obs), mirror.action(data.actions)
        start = data.behaviour if data.start is None else data.start
        with self._nets():
            image_start = self.actor.log_prob(obs, actions)
        targets = data.value_targets
        images = UpdateData(
            torch.cat([data.obs, obs]),
            torch.cat([data.actions, actions]),
            torch.cat([data.behaviour, torch.maximum(data.behaviour, image_start)]),
            torch.cat([start, image_start]),
            torch.cat([data.values, data.values]),
            None if targets is None else torch.cat([targets, targets]),
        )
        return images, replace(adv, advantages=torch.cat([adv.advantages, adv.advantages]))

    def update(
        self, batch: RolloutBatch, kept: Sequence[RolloutBatch] = (), fresh: bool = True
    ) -> dict[str, float]:
        """Run the configured gradient steps on one batch; return diagnostics (grouped names).

        ``batch`` [T, N] was collected by the current policy (``fresh``), or by the one before
        the last update (``train.overlap``: collected while that update ran; its samples are then
        weighted like a kept batch's, with pi_k / mu); ``kept`` are earlier batches
        (oldest first, ``algo.reuse_batches`` - 1 of them at most), each sample with the log-prob
        of the policy that collected it. Every epoch visits all K of them, in ``algo.minibatches``
        minibatches per batch (so K times the gradient steps of one batch).

        With several ranks ``batch`` is this rank's envs, and the ranks together take the steps
        one process would take on the job's batch: the same minibatches of it (one permutation
        drawn by the shared generator), each rank's share of a minibatch's mean weighted by its
        share of the samples (m_r / M), the gradients summed across ranks before clipping.
        """
        cfg, group = self.cfg, self.group
        data, adv = self._prepare(batch, kept, fresh)
        obs = data.obs
        envs = batch.rewards.shape[1]  # this rank's
        B = obs.shape[0] * group.world_size  # the job's samples, all kept batches
        minibatch_size = batch.rewards.numel() * group.world_size // cfg.minibatches
        minibatches = cfg.minibatches * (len(kept) + 1)

        critic = self.critic
        explained = float("nan")
        if critic is not None and data.value_targets is not None:
            explained = explained_variance(data.values, data.value_targets, group)
            critic.update_stats(data.value_targets, group)
            data.value_targets = critic.normalize_targets(data.value_targets)
        if self.mirror is not None:  # twice the samples in as many steps: minibatches twice the size
            data, adv = self._with_images(data, adv, self.mirror)
            B, minibatch_size = 2 * B, 2 * minibatch_size

        stats: dict[str, list[float]] = {}
        steps = 0
        stop = False
        for epoch in range(cfg.epochs):
            pending_kl: list[Future[float]] = []
            perm = torch.randperm(B, generator=self.generator, device="cpu")
            if group.active:
                perm = self._local_index(perm, envs)
            perm = perm.to(obs.device)
            for k in range(minibatches):
                idx = perm[k * minibatch_size : (k + 1) * minibatch_size]
                if group.active:
                    idx = idx[idx >= 0]
                minibatch = Minibatch(idx, minibatch_size, f"(epoch {epoch + 1}, minibatch {k + 1})")
                info, kl_after = self._step(minibatch, data, adv)
                for key, value in info.items():
                    stats.setdefault(key, []).append(value)
                pending_kl.append(kl_after)
                if not info["applied"]:  # algo.target_kl reached: this step and the rest are not taken
                    stop = True
                    break
                steps += 1
            epoch_kl = [kl.result() for kl in pending_kl]
            stats.setdefault("kl_after", []).extend(epoch_kl)
            if cfg.lr_schedule == "adaptive" and epoch_kl:
                self._set_lr(adaptive_lr(self.lr, sum(epoch_kl) / len(epoch_kl), cfg.kl_threshold))
            if stop:
                break

        mean = {k: sum(v) / len(v) for k, v in stats.items()}
        out = {
            "losses/policy": mean["policy_loss"],
            "losses/entropy": mean["entropy"],
            "losses/grad_norm": mean["grad_norm"],
            "losses/baseline": adv.baseline,
            "losses/advantage_std": adv.std,
            "is/weight_mean": mean["weight_mean"],
            "is/weight_max": max(stats["weight_max"]),
            "is/ess": mean["ess"],
            # After each step, as the adaptive step size reads it (before it, the first
            # minibatch's would be 0 by construction).
            "is/approx_kl": mean["kl_after"],
            "is/clip_fraction": mean["clip_fraction"],
            "is/gradient_steps": float(steps),
            "is/early_stop": float(stop),
            "losses/lr": self.lr,
        }
        if "value_loss" in mean:
            out["losses/value"] = mean["value_loss"]
            out["losses/explained_variance"] = explained
        if kept or not fresh:
            out["is/kept_batches"] = float(len(kept))
            # How far the stale samples' behaviour policies mu are from pi_k: the mean of
            # k3(log pi_k - log mu) over mu's samples estimates KL(mu || pi_k).
            old = (len(kept) + (not fresh)) * batch.log_probs.numel()
            assert data.start is not None
            log_r = data.start[:old] - data.behaviour[:old]
            out["is/behaviour_kl"] = float(global_mean(((log_r.exp() - 1) - log_r), group)[0])
        log_std = getattr(self.actor, "log_std", None)
        if log_std is not None:
            out["losses/action_std"] = float(log_std.detach().exp().mean())
        return out
