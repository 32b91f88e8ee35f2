"""Pure functions of tensors: returns, advantages and baselines.

Shapes: T steps x N envs. A batch holds several episode *segments* per env: an episode that
ends inside the batch (``episode_end[t, n]`` True) is followed by a new one at t + 1, and the
last segment of each env is cut at T - 1 by the batch boundary.

``next_values[t, n]`` is V(s_{t+1}) of the *same* episode: at a truncation it is the value of
the final observation, at T - 1 the value of the observation after the batch. It bootstraps
what lies beyond a cut (truncation or batch end), never beyond a termination, where the true
future return is zero. Without a value function pass zeros: the cut segment then counts only
the rewards it saw.
"""

from __future__ import annotations

import torch


def discounted_reward_to_go(
    rewards: torch.Tensor,
    episode_end: torch.Tensor,
    terminated: torch.Tensor,
    gamma: float,
    next_values: torch.Tensor | None = None,
) -> torch.Tensor:
    """Reward-to-go G_t = sum_{t' >= t} gamma^(t' - t) r_t' within the episode (causality).

    Recursion, backwards in time::

        G_t = r_t + gamma * G_{t+1}                                  if the episode goes on
        G_t = r_t + gamma * (1 - terminated_t) * next_values_t       at a cut (end or t = T-1)

    Args:
        rewards: [T, N] rewards r_t.
        episode_end: [T, N] bool, episode ended at t (terminated or truncated).
        terminated: [T, N] bool, episode ended in a terminal state at t.
        gamma: discount in (0, 1].
        next_values: [T, N] V(s_{t+1}) of the same episode, or None (zeros).
    Returns:
        [T, N] reward-to-go.
    """
    T = rewards.shape[0]
    boot = torch.zeros_like(rewards) if next_values is None else next_values
    boot = boot * (~terminated).to(rewards.dtype)
    cut = episode_end.clone()
    cut[T - 1] = True  # the batch boundary cuts every env's last segment
    out = torch.empty_like(rewards)
    # Rows as views, made once: the backward scan is then three ops per step (T is ~512).
    r, b, c, g = rewards.unbind(0), boot.unbind(0), cut.unbind(0), out.unbind(0)
    torch.add(r[T - 1], gamma * b[T - 1], out=g[T - 1])
    for t in range(T - 2, -1, -1):
        torch.add(r[t], gamma * torch.where(c[t], b[t], g[t + 1]), out=g[t])
    return out


def episode_starts(episode_end: torch.Tensor) -> torch.Tensor:
    """[T, N] bool: a segment starts at t (t = 0, or the episode ended at t - 1)."""
    starts = torch.ones_like(episode_end)
    starts[1:] = episode_end[:-1]
    return starts


def total_return(
    rewards: torch.Tensor,
    episode_end: torch.Tensor,
    terminated: torch.Tensor,
    gamma: float,
    next_values: torch.Tensor | None = None,
) -> torch.Tensor:
    """Vanilla REINFORCE's weight: every step gets its whole segment's return r(tau).

    r(tau) = sum_{t in tau} gamma^(t - t0) r_t (t0 the segment's first step), i.e. the
    reward-to-go at the segment start, broadcast over the segment. Args as for
    :func:`discounted_reward_to_go`; returns [T, N].
    """
    rtg = discounted_reward_to_go(rewards, episode_end, terminated, gamma, next_values)
    starts = episode_starts(episode_end)
    out = torch.empty_like(rtg)
    s, g, o = starts.unbind(0), rtg.unbind(0), out.unbind(0)
    o[0].copy_(g[0])
    for t in range(1, rtg.shape[0]):
        torch.where(s[t], g[t], o[t - 1], out=o[t])
    return out


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    episode_end: torch.Tensor,
    terminated: torch.Tensor,
    gamma: float,
    lam: float,
    trace: torch.Tensor | None = None,
) -> torch.Tensor:
    """Generalised advantage estimation (Schulman et al. 2016), with optional trace cuts.

        delta_t = r_t + gamma * (1 - terminated_t) * V(s_{t+1}) - V(s_t)
        A_t     = delta_t + gamma * lam * (1 - end_t) * c_{t+1} * A_{t+1}

    With lam = 1 this is reward-to-go (bootstrapped at cuts) minus V(s_t); with lam = 0 the
    one-step TD error. ``trace`` c (1 when None) cuts the trace where the samples came from
    another policy than the one being evaluated: c_t = min(1, pi(a_t|s_t) / mu(a_t|s_t)) gives
    the truncated-importance (Retrace / V-trace) advantage of :func:`off_policy_targets`.

    Args:
        rewards, values, next_values: [T, N].
        episode_end, terminated: [T, N] bool.
        trace: [T, N] trace coefficients c_t in [0, 1], or None.
    Returns:
        [T, N] advantages.
    """
    T = rewards.shape[0]
    not_terminated = (~terminated).to(rewards.dtype)
    deltas = rewards + gamma * not_terminated * next_values - values
    decay = gamma * lam * (~episode_end).to(rewards.dtype)  # gamma * lam * (1 - end_t)
    if trace is not None:
        decay[:-1] *= trace[1:]  # the step after t carries c_{t+1}
    out = torch.empty_like(rewards)
    d, k, a = deltas.unbind(0), decay.unbind(0), out.unbind(0)
    a[T - 1].copy_(d[T - 1])  # the batch boundary: nothing after T - 1 is known
    for t in range(T - 2, -1, -1):
        torch.add(d[t], k[t] * a[t + 1], out=a[t])
    return out


def off_policy_targets(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    episode_end: torch.Tensor,
    terminated: torch.Tensor,
    gamma: float,
    lam: float,
    log_rho: torch.Tensor,
    correction: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and value targets of steps taken by a behaviour policy mu, for a policy pi.

    rho_t = pi(a_t|s_t) / mu(a_t|s_t) and c_t = min(1, rho_t). The advantage of the action taken
    (the loss weighs it by pi_theta / mu itself) follows the trace only as far as pi would have:

        A_t = delta_t + gamma * lam * (1 - end_t) * c_{t+1} * A_{t+1}     (:func:`gae` with trace c)

    - ``none``: c = 1, GAE as if the steps were pi's; targets A_t + V(s_t).
    - ``truncated``: truncated importance weights in the trace; targets A_t + V(s_t) (Retrace's).
    - ``vtrace``: the same advantages; targets V-trace's v_t = V(s_t) + c_t A_t (Espeholt et al.
      2018 with rho-bar = c-bar = 1 and lam in the trace): the recursion
      v_t - V(s_t) = c_t delta_t + gamma lam c_t (v_{t+1} - V(s_{t+1})) estimates V^pi, not Q^pi.

    With rho = 1 (on-policy steps) all three are GAE and its targets.

    Args:
        rewards, values, next_values: [T, N].
        episode_end, terminated: [T, N] bool.
        log_rho: [T, N] log pi(a_t|s_t) - log mu(a_t|s_t).
        correction: none | truncated | vtrace.
    Returns:
        ([T, N] advantages, [T, N] value targets).
    """
    trace = None if correction == "none" else log_rho.clamp(max=0.0).exp()
    adv = gae(rewards, values, next_values, episode_end, terminated, gamma, lam, trace)
    if correction == "vtrace":
        assert trace is not None
        return adv, values + trace * adv
    return adv, adv + values


def segment_ids(episode_end: torch.Tensor) -> torch.Tensor:
    """[T, N] long: a distinct id for every (env, episode segment) in the batch.

    Ids are dense in [0, number of segments), numbered env by env.
    """
    starts = episode_starts(episode_end).long()
    per_env = starts.cumsum(0) - 1  # [T, N]: segment index within each env
    counts = starts.sum(0)  # [N]: segments per env
    offsets = torch.cumsum(counts, 0) - counts  # [N]
    return per_env + offsets.unsqueeze(0)


def mean_baseline(returns: torch.Tensor) -> torch.Tensor:
    """The lecture's baseline: b = average return over the batch (a scalar)."""
    return returns.mean()


def optimal_baseline(returns: torch.Tensor, grad_sq_norms: torch.Tensor) -> torch.Tensor:
    """Variance-minimising constant baseline, scalar form.

    For the estimator g = sum_i grad log pi_i (R_i - b), the b that minimises the summed
    variance over all parameters is

        b* = E[ |grad log pi|^2 R ] / E[ |grad log pi|^2 ]

    (the per-parameter form b*_k = E[g_k^2 R] / E[g_k^2] needs a different weight per
    parameter, which a single surrogate backward pass cannot express).

    Args:
        returns: [S] the R of each sample.
        grad_sq_norms: [S] |grad_theta log pi|^2 of each sample.
    Returns:
        scalar baseline.
    """
    return optimal_baseline_from_sums(optimal_baseline_sums(returns, grad_sq_norms))


def optimal_baseline_sums(returns: torch.Tensor, grad_sq_norms: torch.Tensor) -> torch.Tensor:
    """[4] the sums b* is made of: (sum |g|^2 R, sum |g|^2, sum R, S), for returns and
    grad_sq_norms [S]. Sums over parts of the samples add up to the sums over all of them (how
    ranks of a multi-process job combine theirs)."""
    weights = grad_sq_norms.to(returns.dtype)
    count = torch.tensor(float(returns.numel()), dtype=returns.dtype, device=returns.device)
    return torch.stack([(weights * returns).sum(), weights.sum(), returns.sum(), count])


def optimal_baseline_from_sums(sums: torch.Tensor) -> torch.Tensor:
    """b* = sum |g|^2 R / sum |g|^2 from :func:`optimal_baseline_sums` (the mean return when
    every |g|^2 is 0)."""
    if sums[1] <= 0:
        return sums[2] / sums[3]
    return sums[0] / sums[1]


def normalize(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / (std + eps) over all elements."""
    return normalize_with(x, x.mean(), x.std(), eps)


def normalize_with(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / (std + eps) with given moments (those of a batch x is part of)."""
    return (x - mean) / (std + eps)
