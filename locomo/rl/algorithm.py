"""One policy-gradient update over a collected batch: epochs x minibatches of gradient steps.

The estimators are elsewhere: the advantages and value targets in :mod:`locomo.rl.advantages`
(from :mod:`locomo.rl.returns`), the losses in :mod:`locomo.rl.losses`. This module applies them:

1. :meth:`PolicyGradient.update` gathers the update's samples (the new batch, the kept ones of
   ``algo.reuse_batches``, their mirror images with ``algo.symmetry``) and their advantages;
2. every epoch draws a permutation of them, and every minibatch of it is one gradient step
   (:meth:`PolicyGradient._step`): the critic's loss (:func:`~locomo.rl.losses.critic_loss`, in a
   thread of its own with ``critic_thread``) and the actor's (:func:`~locomo.rl.losses.policy_loss`)
   backward, the gradients clipped to ``algo.max_grad_norm`` and applied by Adam, unless the
   step would pass ``algo.target_kl``, which ends the update;
3. after every epoch the adaptive step size (``algo.lr_schedule=adaptive``,
   :mod:`locomo.rl.step_size`) reads the approx KL measured after each of its steps.

In a job of several processes :class:`~locomo.distributed.DataParallel` wraps each step from
outside: this rank's share of the loss, then the gradients and the step's diagnostic sums
(:class:`~locomo.rl.losses.StepSums`) summed over the ranks before anything reads them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from locomo.config.schema import SYMMETRY_PARTS, AlgoConfig
from locomo.distributed import SINGLE, DataParallel, Group, global_mean
from locomo.guard import check_finite
from locomo.rl import losses
from locomo.rl.advantages import Advantages, UpdateData, explained_variance, update_samples, with_images
from locomo.rl.buffer import RolloutBatch
from locomo.rl.policy import Actor, GaussianActor, ValueNet
from locomo.rl.step_size import adaptive_lr, linear_lr
from locomo.rl.symmetry import PolicyMirror, symmetric_policy_loss

R = TypeVar("R")


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
        cfg: AlgoConfig | DictConfig,
        generator: torch.Generator,
        group: Group = SINGLE,
        mirror: PolicyMirror | None = None,
        critic_thread: bool = False,
        precision: torch.dtype = torch.float32,
    ) -> None:
        # A plain dataclass: OmegaConf attribute access is slow in the minibatch loop.
        self.cfg: AlgoConfig = OmegaConf.to_object(cfg) if isinstance(cfg, DictConfig) else cfg  # type: ignore[assignment]
        self.actor, self.critic = actor, critic
        params = list(actor.parameters()) + (list(critic.parameters()) if critic is not None else [])
        self.params = params
        # Fused Adam: one kernel for all parameters.
        self.optimizer = torch.optim.Adam(params, lr=cfg.lr, fused=True)
        # The same seed on every rank: every rank draws the same minibatches of the job's batch.
        self.generator = generator
        self.group = group
        self.parallel = DataParallel(group, params)
        # algo.symmetry: every sample's mirror image joins the update (augment), the actor's loss
        # gains the mirror-symmetry loss on it (loss), or both
        self.mirror = mirror
        self.augment, self.symmetry_loss = (
            SYMMETRY_PARTS[self.cfg.symmetry] if mirror is not None else (False, False)
        )
        # algo.symmetry_pairs: each minibatch draws p samples and their p images, whose forward
        # pass the symmetry loss reads (no second pass over image observations)
        self.pairs = self.augment and self.symmetry_loss and getattr(self.cfg, "symmetry_pairs", False)
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

    def samples(
        self, batch: RolloutBatch, kept: Sequence[RolloutBatch] = (), fresh: bool = True
    ) -> tuple[UpdateData, Advantages]:
        """The update's samples and their advantages, re-estimated with the current nets where
        earlier policies collected them (:func:`~locomo.rl.advantages.update_samples`)."""
        return update_samples(
            batch, kept, fresh, self.cfg, self.actor, self.group, self._log_prob_now, self._values_now
        )

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
        one process would take on the job's batch (:class:`~locomo.distributed.DataParallel`).
        """
        cfg, world = self.cfg, self.group.world_size
        data, adv = self.samples(batch, kept, fresh)
        envs = batch.rewards.shape[1]  # this rank's
        B = data.obs.shape[0] * world  # the job's samples, all kept batches
        minibatch_size = batch.rewards.numel() * world // cfg.minibatches
        minibatches = cfg.minibatches * (len(kept) + 1)

        critic = self.critic
        explained = float("nan")
        if critic is not None and data.value_targets is not None:
            explained = explained_variance(data.values, data.value_targets, self.group)
            critic.update_stats(data.value_targets, self.group)
            data.value_targets = critic.normalize_targets(data.value_targets)
        if self.augment:  # twice the samples in as many steps: minibatches twice the size
            assert self.mirror is not None
            data, adv = with_images(data, adv, self.mirror, self._log_prob_now)
            B, minibatch_size = 2 * B, 2 * minibatch_size
        if self.symmetry_loss and not self.pairs:
            # each sample's image observation (an image's is its sample's: M M = 1)
            assert self.mirror is not None
            half = data.obs.shape[0] // 2
            own = data.obs[:half] if self.augment else data.obs
            images = self.mirror.obs(own)
            data.image_obs = torch.cat([images, own]) if self.augment else images

        stats: dict[str, list[float]] = {}
        steps = 0
        stop = False
        for epoch in range(cfg.epochs):
            # The approx KL after each step, what the adaptive step size reads: after step j,
            # measured on minibatch j + 1 before its step (its loss's pass reads the stepped
            # policy anyway), after the epoch's last step by one more pass over its minibatch.
            epoch_kl: list[float] = []
            measure_last: Callable[[], float] | None = None
            # with pairs, a permutation of the samples; each minibatch takes their images too
            drawn = B // 2 if self.pairs else B
            perm = torch.randperm(drawn, generator=self.generator, device="cpu")
            perm = self.parallel.local_index(perm, envs).to(data.obs.device)
            for k in range(minibatches):
                if self.pairs:
                    half = minibatch_size // 2
                    own = self.parallel.own(perm[k * half : (k + 1) * half])
                    idx = torch.cat([own, own + data.obs.shape[0] // 2])  # with_images: images follow
                else:
                    idx = self.parallel.own(perm[k * minibatch_size : (k + 1) * minibatch_size])
                minibatch = Minibatch(idx, minibatch_size, f"(epoch {epoch + 1}, minibatch {k + 1})")
                info, measure = self._step(minibatch, data, adv)
                for key, value in info.items():
                    stats.setdefault(key, []).append(value)
                if k > 0 or not info["applied"]:  # the KL after the last step taken
                    epoch_kl.append(info["approx_kl"])
                if not info["applied"]:  # algo.target_kl reached: this step and the rest are not taken
                    stop = True
                    break
                steps += 1
                measure_last = measure
            if not stop and measure_last is not None:
                epoch_kl.append(measure_last())
            stats.setdefault("kl_after", []).extend(epoch_kl)
            if cfg.lr_schedule == "adaptive" and epoch_kl:
                self._set_lr(adaptive_lr(self.lr, sum(epoch_kl) / len(epoch_kl), cfg.kl_threshold))
            if stop:
                break
        return self._summary(stats, adv, explained, steps, stop, batch, kept, fresh, data)

    def _step(
        self, mb: Minibatch, data: UpdateData, adv: Advantages
    ) -> tuple[dict[str, float], Callable[[], float]]:
        """One gradient step on minibatch ``mb`` of the flat ``data``; its diagnostics, over every
        rank's samples (``approx_kl``: before the step), and a call that measures the approx KL
        after it on this minibatch (:meth:`_kl_after_step`). No step
        (``applied`` 0) when ``algo.target_kl`` is set and the policy has already moved further
        than it from where the update started, measured on this minibatch before the step."""
        cfg = self.cfg
        idx, count = mb.index, int(mb.index.numel())
        self.optimizer.zero_grad(set_to_none=True)
        mb_obs = mb_actions = None
        if count:
            # One gather of the minibatch's observations for both nets (index_select copies
            # whole rows; obs[idx] gathers element by element).
            mb_obs = data.obs.index_select(0, idx)
            mb_actions = data.actions.index_select(0, idx)
            sums, weight_max = self._backward(mb, data, adv, mb_obs, mb_actions)
        else:  # (several ranks) none of this minibatch's samples is this rank's
            sums, weight_max = losses.StepSums.zeros(data.obs.device), torch.zeros((), device=data.obs.device)
        # Data parallelism: the job's gradients and sums from here on (the same in one process).
        sums = self.parallel.sum_gradients(sums)
        weight_max = self.parallel.max(weight_max)

        totals = sums.totals()
        n = totals["samples"]
        importance = [totals[k] for k in ("samples", "weight", "weight_sq", "kl")]
        out = losses.diagnostics_from_sums(importance, float(weight_max))
        max_norm = cfg.max_grad_norm if cfg.max_grad_norm is not None else float("inf")
        grad_norm = nn.utils.clip_grad_norm_(self.params, max_norm)
        check_finite("gradients", grad_norm.detach(), context=f"(global norm) {mb.where}")
        applied = cfg.target_kl is None or out["approx_kl"] <= cfg.target_kl
        if applied:
            self.optimizer.step()
        out.update(
            clip_fraction=totals["clipped"] / n,
            policy_loss=totals["policy_loss"] / n,
            entropy=totals["entropy"] / n,
            grad_norm=float(grad_norm),
            applied=float(applied),
        )
        if self.critic is not None and data.value_targets is not None:
            out["value_loss"] = totals["value_loss"] / n
        if self.symmetry_loss:
            out["symmetry_loss"] = totals["symmetry"] / n
        return out, partial(self._kl_after_step, mb_obs, mb_actions, data, idx)

    def _backward(
        self, mb: Minibatch, data: UpdateData, adv: Advantages, mb_obs: torch.Tensor, mb_actions: torch.Tensor
    ) -> tuple[losses.StepSums, torch.Tensor]:
        """This rank's gradients of minibatch ``mb`` (its ``m`` samples ``mb_obs``, ``mb_actions``):
        the critic's loss in the critic's thread, the actor's here, each backward as this rank's
        share of the minibatch mean. Their sums and the largest importance weight."""
        cfg, idx, count = self.cfg, mb.index, int(mb.index.numel())
        critic_half = None
        if self.critic is not None and data.value_targets is not None:
            targets = data.value_targets[idx]
            critic_half = self._beside(partial(self._critic_backward, mb_obs, targets, mb))
        symmetry = None
        try:
            batch = self._policy_batch(data, adv, idx, mb_obs, mb_actions)
            with self._nets():
                if self.symmetry_loss and self.mirror is not None:  # the symmetry loss too
                    # with pairs, the images are the minibatch's second half
                    image_obs = None
                    if not self.pairs:
                        assert data.image_obs is not None
                        image_obs = data.image_obs.index_select(0, idx)
                    loss, info, symmetry = symmetric_policy_loss(
                        self.actor, batch, image_obs, self.mirror.action,
                        cfg.clip_ratio, cfg.entropy_coef, cfg.symmetry_coef,
                    )  # fmt: skip
                else:
                    loss, info = losses.policy_loss(self.actor, batch, cfg.clip_ratio, cfg.entropy_coef)
            check_finite("loss", loss.detach(), context=mb.where)  # before it reaches the parameters
            self.parallel.share(loss, count, mb.size).backward()
        finally:  # the critic's half is over before anything reads its gradients
            v_loss = critic_half.result() if critic_half is not None else torch.zeros((), device=idx.device)
        return losses.StepSums.of(info, v_loss, count, symmetry), info.weight_max

    def _policy_batch(
        self,
        data: UpdateData,
        adv: Advantages,
        idx: torch.Tensor,
        mb_obs: torch.Tensor,
        mb_actions: torch.Tensor,
    ) -> losses.PolicyBatch:
        """The actor's samples of a minibatch; with trajectory importance, their weights, which
        need every step of their segments (one pass over the whole batch without grad)."""
        weights = step_log_ratios = None
        if self.cfg.importance == "trajectory":
            with torch.no_grad(), self._nets():
                every = self.actor.log_prob(data.obs, data.actions)
            w, log_r = losses.trajectory_weights(
                every, data.behaviour, adv.segment, adv.num_segments, self.cfg.max_log_weight
            )
            weights, step_log_ratios = w[idx], log_r[idx]
        start = None if data.start is None else data.start[idx]
        return losses.PolicyBatch(
            mb_obs, mb_actions, adv.advantages[idx], data.behaviour[idx], start, weights, step_log_ratios
        )

    def _critic_backward(self, mb_obs: torch.Tensor, targets: torch.Tensor, mb: Minibatch) -> torch.Tensor:
        """The critic's half of a step: :func:`~locomo.rl.losses.critic_loss` on ``mb_obs`` [m, O]
        against ``targets`` [m] and its backward (as this rank's share); the value loss, detached.
        The actor's half adds no gradient to the critic's parameters, so this is the gradient of
        the summed loss."""
        assert self.critic is not None
        with self._nets():
            loss, v_loss = losses.critic_loss(self.critic, mb_obs, targets, self.cfg.value_coef)
        check_finite("loss", loss.detach(), context=mb.where)  # before it reaches the parameters
        self.parallel.share(loss, int(mb.index.numel()), mb.size).backward()
        return v_loss

    @torch.no_grad()
    def _kl_after_step(
        self,
        mb_obs: torch.Tensor | None,
        mb_actions: torch.Tensor | None,
        data: UpdateData,
        idx: torch.Tensor,
    ) -> float:
        """Approx KL(pi_k || pi_theta) on the minibatch with the step applied (every rank's samples).

        What the adaptive step size reads after an epoch's last step (the others' are the next
        minibatch's, measured by its loss): measured before the step, the first minibatch of an
        update would always read 0."""
        zero = torch.zeros((), dtype=torch.float64, device=data.obs.device)
        sums = losses.KlSums(zero, zero)
        if mb_obs is not None and mb_actions is not None:
            start = data.behaviour[idx] if data.start is None else data.start[idx]
            centre = None if data.start is None else (data.start[idx] - data.behaviour[idx]).exp()
            with self._nets():
                log_r = self.actor.log_prob(mb_obs, mb_actions) - start
            samples = torch.tensor(float(idx.numel()), dtype=torch.float64, device=data.obs.device)
            sums = losses.KlSums(samples, losses.kl_sum(log_r, centre).double())
        sums = self.parallel.sum(sums)
        return float(sums.kl / sums.samples)

    @torch.no_grad()
    def _log_prob_now(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """log pi_k(a|s) [B] by the current policy (no grad, in the update's precision)."""
        with self._nets():
            return self.actor.log_prob(obs, actions)

    def _values_now(self, obs: torch.Tensor) -> Future[torch.Tensor]:
        """V(s) [B] by the current critic, computed in the critic's thread (beside the actor's work)."""
        critic = self.critic
        assert critic is not None

        @torch.no_grad()
        def values() -> torch.Tensor:
            with self._nets():
                return critic(obs)

        return self._beside(values)

    def _summary(
        self,
        stats: dict[str, list[float]],
        adv: Advantages,
        explained: float,
        steps: int,
        stop: bool,
        batch: RolloutBatch,
        kept: Sequence[RolloutBatch],
        fresh: bool,
        data: UpdateData,
    ) -> dict[str, float]:
        """The update's metrics (grouped names) from its steps' diagnostics ``stats``."""
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
        if "symmetry_loss" in mean:
            out["losses/symmetry"] = mean["symmetry_loss"]
        if kept or not fresh:
            out["is/kept_batches"] = float(len(kept))
            # How far the stale samples' behaviour policies mu are from pi_k: the mean of
            # k3(log pi_k - log mu) over mu's samples estimates KL(mu || pi_k).
            old = (len(kept) + (not fresh)) * batch.log_probs.numel()
            assert data.start is not None
            log_r = data.start[:old] - data.behaviour[:old]
            out["is/behaviour_kl"] = float(global_mean(((log_r.exp() - 1) - log_r), self.group)[0])
        if isinstance(self.actor, GaussianActor):
            out["losses/action_std"] = float(self.actor.std().detach().mean())
        return out
