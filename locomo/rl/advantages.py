"""The configured estimator: an update's samples and the advantages and value targets it weighs.

The lecture's estimators live in three files: :mod:`locomo.rl.returns` (returns, GAE, baselines:
pure functions of [T, N] tensors), this module (which of them ``algo.returns`` and
``algo.baseline`` pick, over every rank's samples, and the samples they weigh: batches kept for
reuse, re-estimated with the current nets, and mirror images), and :mod:`locomo.rl.losses` (the
surrogate loss and its importance weights). :mod:`locomo.rl.algorithm` applies them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace

import torch

from locomo.config.schema import AlgoConfig
from locomo.distributed import SINGLE, Group, global_mean, global_mean_std
from locomo.rl import losses, returns
from locomo.rl.buffer import RolloutBatch
from locomo.rl.policy import Actor
from locomo.rl.symmetry import PolicyMirror


@dataclass
class Advantages:
    """What the update needs from the batch's rewards, flattened to B = T * N samples."""

    advantages: torch.Tensor  # [B] weights A of grad log pi in the estimator
    value_targets: torch.Tensor | None  # [B] regression targets for V (value baseline only)
    segment: torch.Tensor  # [B] trajectory-segment id of each sample
    num_segments: int
    baseline: float  # the constant baseline used (0 for none/value)
    std: float  # the advantages' std over every rank's samples, before any normalisation


def compute_advantages(
    batch: RolloutBatch,
    cfg: AlgoConfig,
    actor: Actor,
    group: Group = SINGLE,
    log_rho: torch.Tensor | None = None,
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
    end, terminated = batch.episode_end, batch.terminated
    seg = returns.segment_ids(end)
    num_segments = int(seg.max()) + 1
    use_value = cfg.baseline == "value"
    boot = batch.next_values if use_value else None

    def weighted_returns() -> torch.Tensor:
        if cfg.returns == "total":
            return returns.total_return(batch.rewards, end, terminated, cfg.gamma, boot)
        return returns.discounted_reward_to_go(batch.rewards, end, terminated, cfg.gamma, boot)

    value_targets = None
    baseline = 0.0
    if use_value and log_rho is not None:
        adv, targets = returns.off_policy_targets(
            batch.rewards, batch.values, batch.next_values, end, terminated, cfg.gamma, cfg.gae_lambda,
            log_rho, cfg.reuse_correction,
        )  # fmt: skip
        value_targets = targets.flatten()
    elif use_value:
        values, rewards = batch.values, batch.rewards
        gae = returns.gae(rewards, values, batch.next_values, end, terminated, cfg.gamma, cfg.gae_lambda)
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


def optimal_baseline_for(
    batch: RolloutBatch,
    ret: torch.Tensor,
    seg: torch.Tensor,
    num_segments: int,
    cfg: AlgoConfig,
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


def explained_variance(values: torch.Tensor, targets: torch.Tensor, group: Group = SINGLE) -> float:
    """1 - Var(targets - V) / Var(targets) over every rank's samples (values, targets [B]).

    1: the value function predicts its targets exactly; 0: no better than their mean; below 0:
    worse. NaN when the targets do not vary."""
    var_targets = float(global_mean_std(targets, group)[1]) ** 2
    var_error = float(global_mean_std(targets - values, group)[1]) ** 2
    return 1.0 - var_error / var_targets if var_targets > 0 else float("nan")


@dataclass
class UpdateData:
    """An update's samples, flattened to B (all kept batches): what the gradient steps index."""

    obs: torch.Tensor  # [B, O] normalised observations
    actions: torch.Tensor  # [B, A] or [B]
    behaviour: torch.Tensor  # [B] log mu(a|s): the policy that collected each sample
    start: torch.Tensor | None  # [B] log pi_k(a|s), pi_k the policy starting the update (None: = mu)
    values: torch.Tensor  # [B] V(s) the advantages were computed with
    value_targets: torch.Tensor | None  # [B] the critic's regression targets (value baseline only)
    image_obs: torch.Tensor | None = None  # [B, O] M s, each sample's mirror image (algo.symmetry=loss)

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


LogProbNow = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (obs [B, O], actions) -> log pi_k [B]
ValuesNow = Callable[[torch.Tensor], Future[torch.Tensor]]  # obs [B, O] -> V(s) [B], when ready


def update_samples(
    batch: RolloutBatch,
    kept: Sequence[RolloutBatch],
    fresh: bool,
    cfg: AlgoConfig,
    actor: Actor,
    group: Group,
    log_prob_now: LogProbNow,
    values_now: ValuesNow,
) -> tuple[UpdateData, Advantages]:
    """An update's samples and advantages: ``kept`` (oldest first) then ``batch``, along time ([K T, N]).

    Consecutive batches continue each other's episodes (env n's step T of one batch is step
    0 of the next), so the kept batches and the new one are one rollout of K T steps. Its
    steps collected by an earlier policy (the kept batches, and ``batch`` too unless
    ``fresh``) get V(s_t) from the current critic (``values_now``) and log pi_k from the current
    policy (``log_prob_now``; pi_k starts this update); V(s_t+1) at their episode ends, and after
    a stale ``batch``, stays as collected (the last observation of a finished episode is not kept).
    Their advantages are then off-policy (:func:`compute_advantages` with log pi_k - log mu).
    """
    stale = [*kept] if fresh else [*kept, batch]
    if not stale:
        adv = compute_advantages(batch, cfg, actor, group)
        return UpdateData.of(batch, None, adv), adv
    old = RolloutBatch(*(torch.cat(parts) for parts in zip(*stale, strict=True)))
    flat_obs, flat_actions = old.obs.flatten(0, 1), old.actions.flatten(0, 1)
    values_of = values_now(flat_obs)  # (in the critic's thread, beside the actor's pass)
    start = log_prob_now(flat_obs, flat_actions).view_as(old.log_probs)
    values = values_of.result().view_as(old.values)
    rollout = old
    if fresh:
        rollout = RolloutBatch(*(torch.cat(parts) for parts in zip(old, batch, strict=True)))
        values, start = torch.cat([values, batch.values]), torch.cat([start, batch.log_probs])
    shifted = torch.cat([values[1:], rollout.next_values[-1:]])
    next_values = torch.where(rollout.episode_end, rollout.next_values, shifted)
    rollout = rollout._replace(values=values, next_values=next_values)
    adv = compute_advantages(rollout, cfg, actor, group, start - rollout.log_probs)
    return UpdateData.of(rollout, start.flatten(), adv), adv


@torch.no_grad()
def with_images(
    data: UpdateData, adv: Advantages, mirror: PolicyMirror, log_prob_now: LogProbNow
) -> tuple[UpdateData, Advantages]:
    """``data`` followed by the mirror image of each sample (:mod:`locomo.rl.symmetry`): (M s, M a)
    with the sample's advantage and value target, log pi_k(M a|M s), and as its behaviour
    log-prob max(log mu(a|s), log pi_k(M a|M s)): the exact weight truncated at 1."""
    obs, actions = mirror.obs(data.obs), mirror.action(data.actions)
    start = data.behaviour if data.start is None else data.start
    image_start = log_prob_now(obs, actions)
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
