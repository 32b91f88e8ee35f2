"""Pure loss functions: the policy-gradient surrogate, importance weights, value loss.

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

import torch
from torch.func import functional_call, grad, vmap

from locomo.policy import Actor


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


def importance_diagnostics(weights: torch.Tensor, step_log_ratios: torch.Tensor) -> dict[str, float]:
    """Mean/max weight, normalised effective sample size (sum w)^2 / (B sum w^2), approx KL.

    approx KL = mean((r - 1) - log r) with r the per-step ratio (Schulman's k3 estimator of
    KL(pi_old || pi_theta), always >= 0).
    """
    return diagnostics_from_sums(importance_sums(weights, step_log_ratios).tolist(), float(weights.max()))


def importance_sums(
    weights: torch.Tensor, step_log_ratios: torch.Tensor, kl_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """[4] (B, sum w, sum w^2, sum of the KL estimator's terms) for weights, step_log_ratios [B].

    The KL terms are k3(log r) = (r - 1) - log r. For samples of earlier batches, ``kl_weights``
    [B] = pi_k / mu_b and step_log_ratios = log pi_theta - log pi_k: the importance-weighted
    estimate, from mu's samples, of KL(pi_k || pi_theta), how far this update has moved.
    Sums over parts of a minibatch add up to the whole minibatch's (ranks of a multi-process job).
    """
    w = weights.detach()
    log_r = step_log_ratios.detach()
    count = torch.tensor(float(w.numel()), dtype=w.dtype, device=w.device)
    return torch.stack([count, w.sum(), (w**2).sum(), kl_sum(log_r, kl_weights)])


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
        # Actor.forward is log_prob, so functional_call evaluates log pi with parameters p.
        return functional_call(actor, p, (o.unsqueeze(0), a.unsqueeze(0))).squeeze(0)

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
