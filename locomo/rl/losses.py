"""Pure loss functions: the policy-gradient surrogate, importance weights, value loss.

The update (:mod:`locomo.rl.algorithm`) learns from two pure functions of (minibatch, network):
:func:`policy_loss` (the actor's: surrogate and entropy bonus) and :func:`critic_loss` (the
critic's regression). Each returns ``(loss, diagnostics)``, as brax's ``compute_ppo_loss`` and
Spinning Up's losses do; the two share no parameter, so the update may run them side by side.
A step's diagnostics travel as per-sample sums (:class:`StepSums`), which add up over the parts
of a minibatch that the ranks of a multi-process job hold.

The surrogate (lecture section 4). With advantages A held constant and importance weights w
held constant (detached),

    L(theta) = -(1/B) sum_b w_b * m_b * log pi_theta(a_b | s_b) * A_b

has gradient  -(1/B) sum_b w_b m_b grad log pi_theta(a_b|s_b) A_b, the lecture's estimator,
from a single backward pass. (The lecture scales by 1/N trajectories, we by 1/B samples: a
constant factor that Adam ignores.)

- First pass over a fresh batch: w = 1, m = 1, so L is the advantage-weighted negative
  log-likelihood (REINFORCE).
- ``per_step`` importance (section 5's final form): w_t = pi_theta(a_t|s_t) / pi_old(a_t|s_t).
  Since grad w_t = w_t grad log pi, this equals the gradient of -(1/B) sum w_t A_t.
- ``trajectory`` importance: w_t = prod_{t' in tau} pi_theta / pi_old over the whole segment
  tau that contains t, computed as exp(sum of log-ratios) with the log clamped to
  +-max_log_weight so long horizons cannot overflow.
- Clipping (PPO, beyond the lecture): m_b = 0 where the weight has left [1 - eps, 1 + eps] in
  the direction the advantage pushes it, exactly the gradient of PPO's clipped objective.
- Samples of earlier batches (``algo.reuse_batches``, the lecture's reuse carried across
  batches): w_b = pi_theta / mu_b with mu_b the policy that collected sample b, and the clip
  range is centred on where the update started, c_b = pi_k / mu_b (pi_k the policy at the start
  of this update): [c_b - eps, c_b + eps], as in generalised PPO (Queeney et al. 2021). An old
  sample is then neither cut off because its behaviour policy is far away, nor trusted beyond
  the eps the update may move; for fresh samples c_b = 1, PPO's range.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch.func import functional_call, grad, vmap

from locomo.rl.distributions import ActionDistribution
from locomo.rl.policy import Actor, ValueNet


def log_ratios(new_log_prob: torch.Tensor, old_log_prob: torch.Tensor) -> torch.Tensor:
    """log pi_theta(a|s) - log pi_old(a|s), [B]."""
    return new_log_prob - old_log_prob


def trajectory_log_weights(
    step_log_ratios: torch.Tensor, segment: torch.Tensor, num_segments: int, max_log_weight: float
) -> torch.Tensor:
    """Log of the trajectory importance weight, per step.

    log W_t = clamp( sum_{t' in tau(t)} log(pi_theta / pi_old)(a_t'|s_t'), +-max_log_weight )

    Args:
        step_log_ratios: [B] per-step log-ratios of the whole batch.
        segment: [B] long, the segment id of each step (ids in [0, num_segments)).
        num_segments: number of segments.
        max_log_weight: clamp bound on the log-weight.
    Returns:
        [B] log W of the segment each step belongs to.
    """
    sums = torch.zeros(num_segments, dtype=step_log_ratios.dtype, device=step_log_ratios.device)
    sums.index_add_(0, segment, step_log_ratios)
    return sums.clamp(-max_log_weight, max_log_weight)[segment]


def clip_mask(
    weights: torch.Tensor,
    advantages: torch.Tensor,
    clip_ratio: float | None,
    centre: torch.Tensor | None = None,
) -> torch.Tensor:
    """[B] 1.0 where the sample's gradient counts, 0.0 where the clip cuts it off.

    Cut: A > 0 and w > c + eps, or A < 0 and w < c - eps, with c = ``centre`` [B] (1 when None:
    PPO's clip; pi_k / mu for samples of earlier batches, see the module docstring).
    """
    if clip_ratio is None:
        return torch.ones_like(weights)
    if centre is None:
        too_high = (advantages > 0) & (weights > 1.0 + clip_ratio)
        too_low = (advantages < 0) & (weights < 1.0 - clip_ratio)
    else:
        too_high = (advantages > 0) & (weights > centre + clip_ratio)
        too_low = (advantages < 0) & (weights < centre - clip_ratio)
    return (~(too_high | too_low)).to(weights.dtype)


def trajectory_weights(
    log_prob: torch.Tensor,
    behaviour: torch.Tensor,
    segment: torch.Tensor,
    num_segments: int,
    max_log_weight: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Trajectory importance weights W [B] (the product of the segment's ratios, see
    :func:`trajectory_log_weights`) and the per-step log-ratios [B], from log pi_theta and log mu
    [B] of a whole batch (every step of each segment), segment ids [B]."""
    step_log_ratios = log_ratios(log_prob, behaviour)
    log_w = trajectory_log_weights(step_log_ratios, segment, num_segments, max_log_weight)
    return log_w.exp(), step_log_ratios


def policy_surrogate_loss(
    new_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    weights: torch.Tensor,
    clip_ratio: float | None = None,
    centre: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """L = -mean( w * m * log pi_theta(a|s) * A ), with w and A constant (see module docstring).

    Args:
        new_log_prob: [B] log pi_theta(a|s) with grad.
        advantages: [B] advantages (constant).
        weights: [B] importance weights pi_theta / mu (treated as constants).
        clip_ratio: PPO clip epsilon, or None.
        centre: [B] the clip range's centre pi_k / mu, or None (1: PPO).
    Returns:
        (loss, info) with info: clip_fraction.
    """
    w = weights.detach()
    mask = clip_mask(w, advantages, clip_ratio, centre)
    loss = -(w * mask * new_log_prob * advantages.detach()).mean()
    return loss, {"clip_fraction": float(1.0 - mask.mean())}


def value_loss(values: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0.5 * mean (V(s) - target)^2 over [B]."""
    return 0.5 * (values - targets.detach()).pow(2).mean()


class PolicyBatch(NamedTuple):
    """The samples of one gradient step of the actor: m of them (this rank's part of a minibatch)."""

    obs: torch.Tensor  # [m, O] normalised observations
    actions: torch.Tensor  # [m, A] float or [m] long: the actions taken (and executed)
    advantages: torch.Tensor  # [m] A, constants
    behaviour: torch.Tensor  # [m] log mu(a|s): the policy that collected each sample
    start: torch.Tensor | None  # [m] log pi_k(a|s), pi_k the policy starting the update; None: pi_k = mu
    # Trajectory importance (``algo.importance=trajectory``): the weights W [m] and per-step
    # log-ratios [m], computed over whole segments (:func:`trajectory_weights`); None: per step.
    weights: torch.Tensor | None = None
    step_log_ratios: torch.Tensor | None = None


class ImportanceSums(NamedTuple):
    """Sums over m samples of what the importance diagnostics are made of (0-d tensors); sums over
    parts of a minibatch add up to the whole minibatch's (the ranks of a multi-process job)."""

    samples: torch.Tensor  # m
    weight: torch.Tensor  # sum w
    weight_sq: torch.Tensor  # sum w^2
    kl: torch.Tensor  # sum of the KL estimator's terms (:func:`kl_sum`)


class PolicyLossInfo(NamedTuple):
    """Diagnostics of :func:`policy_loss` on one minibatch (detached)."""

    surrogate: torch.Tensor  # [] the surrogate loss L (without the entropy bonus)
    entropy: torch.Tensor  # [] mean entropy of pi_theta(.|s) over the samples
    clip_fraction: float  # share of the samples whose gradient the clip cut off
    importance: ImportanceSums
    weight_max: torch.Tensor  # [] the largest importance weight


def policy_loss(
    actor: Actor,
    batch: PolicyBatch,
    clip_ratio: float | None,
    entropy_coef: float,
    dist: ActionDistribution | None = None,
) -> tuple[torch.Tensor, PolicyLossInfo]:
    """The actor's loss on a minibatch of m samples, and its diagnostics (pure: no state, no step).

        loss = -(1/m) sum_b w_b m_b log pi_theta(a_b|s_b) A_b  -  c_H (1/m) sum_b H(pi_theta(.|s_b))

    with w_b the importance weight (held constant), m_b the clip mask (module docstring) and c_H
    = ``entropy_coef``:

    - per step (``batch.weights`` None): w_b = pi_theta(a_b|s_b) / mu(a_b|s_b), from this forward pass;
    - trajectory: w_b = the product over the sample's segment, given (:func:`trajectory_weights`);
    - samples of earlier batches (``batch.start``): the clip range is centred on c_b = pi_k / mu_b, and
      the approx KL is measured from pi_k (log-ratios log pi_theta - log pi_k, weighted pi_k / mu).

    Shapes as in :class:`PolicyBatch`; ``actor(obs)`` is pi_theta(.|s) (:mod:`locomo.rl.distributions`),
    or ``dist`` when the caller has made it (one forward pass shared with another loss).
    Returns the scalar loss (with grad) and :class:`PolicyLossInfo`.
    """
    dist = actor(batch.obs) if dist is None else dist
    # log pi, then H: autograd then sums the shared inputs' gradients in the order it always has
    # (bit for bit; the Gaussian's H, state-independent, is made with the distribution).
    new_log_prob = dist.log_prob(batch.actions)  # [m], with grad
    entropy = dist.entropy().mean()
    if batch.weights is None:
        step_log_ratios = log_ratios(new_log_prob.detach(), batch.behaviour)
        weights = step_log_ratios.exp()
    else:
        assert batch.step_log_ratios is not None
        weights, step_log_ratios = batch.weights, batch.step_log_ratios
    centre = None
    if batch.start is not None:  # kept batches: clip around pi_k / mu, KL from pi_k
        centre = (batch.start - batch.behaviour).exp()
        step_log_ratios = new_log_prob.detach() - batch.start
    surrogate, info = policy_surrogate_loss(new_log_prob, batch.advantages, weights, clip_ratio, centre)
    loss = surrogate - entropy_coef * entropy
    diagnostics = PolicyLossInfo(
        surrogate.detach(),
        entropy.detach(),
        info["clip_fraction"],
        importance_sums(weights, step_log_ratios, centre),
        weights.detach().max(),
    )
    return loss, diagnostics


def critic_loss(
    critic: ValueNet, obs: torch.Tensor, targets: torch.Tensor, value_coef: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The critic's loss on a minibatch (pure): value_coef * 0.5 * mean (V_phi(s) - target)^2.

    obs [m, O]; targets [m] in the units the network regresses (standardised with
    ``algo.normalize_values``: :meth:`~locomo.rl.policy.ValueNet.normalize_targets`). Returns the
    scaled loss (with grad) and the unscaled value loss (detached, for the logs).
    """
    v_loss = value_loss(critic.normalized(obs), targets)
    return value_coef * v_loss, v_loss.detach()


class StepSums(NamedTuple):
    """One gradient step's diagnostics as sums over its samples (0-d float32 tensors): over this
    rank's part of the minibatch, and after :meth:`~locomo.distributed.DataParallel.sum_gradients`
    over all of it. Each divided by ``samples`` is the minibatch's mean."""

    samples: torch.Tensor  # m
    weight: torch.Tensor  # sum of the importance weights w
    weight_sq: torch.Tensor  # sum of w^2
    kl: torch.Tensor  # sum of the approx KL's terms (before the step)
    clipped: torch.Tensor  # m x the fraction of samples the clip cut off
    policy_loss: torch.Tensor  # m x the surrogate loss
    entropy: torch.Tensor  # m x the mean entropy
    value_loss: torch.Tensor  # m x the value loss (0 without a critic)
    symmetry: torch.Tensor  # m x the mirror-symmetry loss (0 unless algo.symmetry adds it)

    @staticmethod
    def of(
        policy: PolicyLossInfo, value_loss: torch.Tensor, count: int, symmetry: torch.Tensor | None = None
    ) -> StepSums:
        """The sums of ``count`` samples from the losses' diagnostics (float32 whatever the nets')."""
        clipped = policy.surrogate.new_tensor(policy.clip_fraction)
        sym = torch.zeros_like(policy.surrogate) if symmetry is None else symmetry.to(policy.surrogate.dtype)
        means = torch.stack([clipped, policy.surrogate, policy.entropy, value_loss, sym]) * count
        return StepSums(*torch.stack(list(policy.importance)).float().unbind(), *means.float().unbind())

    @staticmethod
    def zeros(device: torch.device) -> StepSums:
        """The sums of no samples (a rank that holds none of a minibatch)."""
        return StepSums(*torch.zeros(len(StepSums._fields), device=device).unbind())

    def totals(self) -> dict[str, float]:
        """The sums as Python floats, by name."""
        return dict(zip(self._fields, torch.stack(list(self)).tolist(), strict=True))


class KlSums(NamedTuple):
    """The approx KL after a step as sums (0-d float64 tensors), summed over the ranks' samples."""

    samples: torch.Tensor
    kl: torch.Tensor


def importance_diagnostics(weights: torch.Tensor, step_log_ratios: torch.Tensor) -> dict[str, float]:
    """Mean/max weight, normalised effective sample size (sum w)^2 / (B sum w^2), approx KL.

    approx KL = mean((r - 1) - log r) with r the per-step ratio (Schulman's k3 estimator of
    KL(pi_old || pi_theta), always >= 0).
    """
    sums = importance_sums(weights, step_log_ratios)
    return diagnostics_from_sums([float(x) for x in sums], float(weights.max()))


def importance_sums(
    weights: torch.Tensor, step_log_ratios: torch.Tensor, kl_weights: torch.Tensor | None = None
) -> ImportanceSums:
    """(B, sum w, sum w^2, sum of the KL estimator's terms) for weights, step_log_ratios [B].

    The KL terms are k3(log r) = (r - 1) - log r. For samples of earlier batches, ``kl_weights``
    [B] = pi_k / mu_b and step_log_ratios = log pi_theta - log pi_k: the importance-weighted
    estimate, from mu's samples, of KL(pi_k || pi_theta), how far this update has moved.
    Sums over parts of a minibatch add up to the whole minibatch's (ranks of a multi-process job).
    """
    w = weights.detach()
    log_r = step_log_ratios.detach()
    count = torch.tensor(float(w.numel()), dtype=w.dtype, device=w.device)
    return ImportanceSums(count, w.sum(), (w**2).sum(), kl_sum(log_r, kl_weights))


def kl_sum(log_r: torch.Tensor, kl_weights: torch.Tensor | None = None) -> torch.Tensor:
    """sum_b v_b k3(log r_b), k3(x) = (e^x - 1) - x >= 0 (Schulman's KL estimator), v = 1 when None.

    log_r [B] = log pi_theta - log pi_ref; kl_weights v [B] = pi_ref / mu when the samples came
    from mu (then the sum estimates B KL(pi_ref || pi_theta) from mu's samples)."""
    terms = (log_r.exp() - 1) - log_r
    return terms.sum() if kl_weights is None else (kl_weights * terms).sum()


def diagnostics_from_sums(sums: list[float], weight_max: float) -> dict[str, float]:
    """:func:`importance_diagnostics` from :func:`importance_sums` and the largest weight."""
    n, w_sum, w_sq, kl = sums
    return {
        "weight_mean": w_sum / n,
        "weight_max": weight_max,
        "ess": w_sum**2 / max(n * w_sq, 1e-12),
        "approx_kl": kl / n,
    }


def per_sample_grad_sq_norms(
    actor: Actor,
    obs: torch.Tensor,
    actions: torch.Tensor,
    groups: torch.Tensor | None = None,
    num_groups: int = 0,
    chunk: int = 1024,
) -> torch.Tensor:
    """|grad_theta log pi|^2 per sample, or per group of samples (summed log-probs).

    With ``groups`` (e.g. trajectory segment ids) the gradient of a group is the sum of its
    steps' gradients, grad log p_theta(tau) = sum_t grad log pi(a_t|s_t), and the squared norm is
    taken of that sum.

    Args:
        actor: the policy.
        obs: [B, O] observations (already normalised).
        actions: [B, A] or [B] actions.
        groups: [B] long group ids in [0, num_groups), or None (each sample its own group).
        chunk: samples per vmap call (bounds memory at chunk x number of parameters).
    Returns:
        [B] or [num_groups] squared gradient norms.
    """
    params = {k: v.detach() for k, v in actor.named_parameters()}

    def log_prob_one(p: dict[str, torch.Tensor], o: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        # actor(obs) is pi(.|s) built from the parameters p (functional_call), log pi(a|s) of it.
        return functional_call(actor, p, (o.unsqueeze(0),)).log_prob(a.unsqueeze(0)).squeeze(0)

    per_sample_grad = vmap(grad(log_prob_one), in_dims=(None, 0, 0))
    if groups is None:
        out = torch.empty(obs.shape[0], dtype=obs.dtype, device=obs.device)
        for start in range(0, obs.shape[0], chunk):
            grads = per_sample_grad(params, obs[start : start + chunk], actions[start : start + chunk])
            out[start : start + chunk] = sum(g.flatten(1).pow(2).sum(1) for g in grads.values())
        return out
    sums = {k: torch.zeros((num_groups, *v.shape), dtype=v.dtype, device=v.device) for k, v in params.items()}
    for start in range(0, obs.shape[0], chunk):
        grads = per_sample_grad(params, obs[start : start + chunk], actions[start : start + chunk])
        for k, g in grads.items():
            sums[k].index_add_(0, groups[start : start + chunk], g)
    return sum(s.flatten(1).pow(2).sum(1) for s in sums.values())
