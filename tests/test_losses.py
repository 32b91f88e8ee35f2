"""The surrogate's gradient equals the lecture's estimator; importance weights are right."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from locomo.config.schema import AlgoConfig
from locomo.rl import losses
from locomo.rl.advantages import compute_advantages
from locomo.rl.algorithm import PolicyGradient
from locomo.rl.buffer import RolloutBatch
from locomo.rl.policy import CategoricalActor, GaussianActor

T, N, OBS, ACT = 7, 3, 4, 2


def algo_cfg(**overrides) -> OmegaConf:
    cfg = OmegaConf.structured(AlgoConfig)
    for k, v in overrides.items():
        cfg[k] = v
    return cfg


def make_batch(actor, seed: int = 0, gen_values: bool = False) -> RolloutBatch:
    gen = torch.Generator().manual_seed(seed)
    obs = torch.randn(T, N, OBS, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        dist = actor(obs.flatten(0, 1))
        actions = (
            dist.sample().reshape(T, N, -1)
            if isinstance(actor, GaussianActor)
            else dist.sample().reshape(T, N)
        )
        log_probs = actor.log_prob(obs.flatten(0, 1), actions.flatten(0, 1)).reshape(T, N)
    rewards = torch.randn(T, N, generator=gen, dtype=torch.float64) + 2.0
    end = torch.zeros(T, N, dtype=torch.bool)
    end[2, 0] = end[4, 1] = end[1, 2] = end[5, 2] = True
    terminated = end.clone()
    terminated[4, 1] = False  # one truncation
    truncated = end & ~terminated
    zeros = torch.zeros(T, N, dtype=torch.float64)
    return RolloutBatch(obs, actions, log_probs, rewards, terminated, truncated, zeros, zeros)


def explicit_weights(batch: RolloutBatch, returns_kind: str, gamma: float) -> list[list[float]]:
    """The lecture's per-step weight, by plain loops over each env's episodes (no bootstrap)."""
    out = [[0.0] * N for _ in range(T)]
    end = batch.episode_end
    for n in range(N):
        start = 0
        for t in range(T):
            if end[t, n] or t == T - 1:
                seg = range(start, t + 1)
                for s in seg:
                    if returns_kind == "total":
                        out[s][n] = sum(gamma ** (u - start) * float(batch.rewards[u, n]) for u in seg)
                    else:
                        out[s][n] = sum(
                            gamma ** (u - s) * float(batch.rewards[u, n]) for u in range(s, t + 1)
                        )
                start = t + 1
    return out


def grad_log_pi(actor, obs, action) -> torch.Tensor:
    logp = actor.log_prob(obs.unsqueeze(0), action.unsqueeze(0)).sum()
    grads = torch.autograd.grad(logp, list(actor.parameters()), allow_unused=True)
    return torch.cat(
        [
            (g if g is not None else torch.zeros_like(p)).flatten()
            for g, p in zip(grads, actor.parameters(), strict=True)
        ]
    )


def explicit_estimator(
    actor, batch: RolloutBatch, returns_kind: str, baseline: str, gamma: float
) -> torch.Tensor:
    """-(1/B) sum_b grad log pi(a_b|s_b) (R_b - b), one autograd call per sample."""
    R = explicit_weights(batch, returns_kind, gamma)
    grads = {
        (t, n): grad_log_pi(actor, batch.obs[t, n], batch.actions[t, n]) for t in range(T) for n in range(N)
    }
    if baseline == "none":
        b = 0.0
    elif baseline == "mean":
        b = sum(R[t][n] for t in range(T) for n in range(N)) / (T * N)
    elif returns_kind == "reward_to_go":  # optimal, per step
        sq = {k: float(g.pow(2).sum()) for k, g in grads.items()}
        b = sum(sq[t, n] * R[t][n] for t, n in sq) / sum(sq.values())
    else:  # optimal, per trajectory: g_tau = sum_t g_t, R_tau its return
        trajs: dict[tuple[int, int], list[tuple[int, int]]] = {}
        end = batch.episode_end
        for n in range(N):
            start = 0
            for t in range(T):
                trajs.setdefault((start, n), []).append((t, n))
                if end[t, n]:
                    start = t + 1
        sq_tau = {k: float(sum(grads[s] for s in steps).pow(2).sum()) for k, steps in trajs.items()}
        ret_tau = {k: R[k[0]][k[1]] for k in trajs}
        b = sum(sq_tau[k] * ret_tau[k] for k in trajs) / sum(sq_tau.values())
    total = sum(grads[t, n] * (R[t][n] - b) for t in range(T) for n in range(N))
    return -total / (T * N)


def surrogate_gradient(actor, batch: RolloutBatch, cfg) -> torch.Tensor:
    adv = compute_advantages(batch, cfg, actor)
    obs, actions = batch.obs.flatten(0, 1), batch.actions.flatten(0, 1)
    new_logp = actor.log_prob(obs, actions)
    loss, _ = losses.policy_surrogate_loss(new_logp, adv.advantages, torch.ones_like(new_logp))
    actor.zero_grad()
    loss.backward()
    return torch.cat(
        [(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in actor.parameters()]
    )


@pytest.mark.parametrize("returns_kind", ["total", "reward_to_go"])
@pytest.mark.parametrize("baseline", ["none", "mean", "optimal"])
def test_surrogate_gradient_equals_lecture_estimator(returns_kind: str, baseline: str):
    torch.manual_seed(1)
    actor = GaussianActor(OBS, ACT, [8], "tanh", init_log_std=-0.3).double()
    batch = make_batch(actor)
    cfg = algo_cfg(returns=returns_kind, baseline=baseline, gamma=0.9, normalize_advantages=False)
    expected = explicit_estimator(actor, batch, returns_kind, baseline, 0.9)
    got = surrogate_gradient(actor, batch, cfg)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("baseline", ["none", "mean", "optimal"])
def test_surrogate_gradient_categorical(baseline: str):
    torch.manual_seed(2)
    actor = CategoricalActor(OBS, 3, [8], "tanh").double()
    batch = make_batch(actor, seed=3)
    cfg = algo_cfg(returns="reward_to_go", baseline=baseline, gamma=0.95, normalize_advantages=False)
    expected = explicit_estimator(actor, batch, "reward_to_go", baseline, 0.95)
    torch.testing.assert_close(surrogate_gradient(actor, batch, cfg), expected, rtol=1e-9, atol=1e-10)


def test_log_probs_are_gaussian_formula_and_cross_entropy():
    torch.manual_seed(0)
    g = GaussianActor(OBS, ACT, [8], "tanh", init_log_std=-0.5).double()
    obs, a = torch.randn(5, OBS, dtype=torch.float64), torch.randn(5, ACT, dtype=torch.float64)
    mu, log_std = g.mean_net(obs), g.log_std
    formula = -(((a - mu) ** 2) / (2 * torch.exp(2 * log_std)) + log_std + 0.5 * math.log(2 * math.pi)).sum(
        -1
    )
    torch.testing.assert_close(g.log_prob(obs, a), formula)
    c = CategoricalActor(OBS, 3, [8], "tanh").double()
    actions = torch.tensor([0, 2, 1, 1, 0])
    ce = F.cross_entropy(c.logits_net(obs), actions, reduction="none")
    torch.testing.assert_close(c.log_prob(obs, actions), -ce)


@pytest.mark.parametrize("importance", ["per_step", "trajectory"])
def test_importance_weights_are_exactly_one_on_first_pass(importance: str):
    torch.manual_seed(0)
    actor = GaussianActor(OBS, ACT, [8], "tanh", init_log_std=0.0).double()
    batch = make_batch(actor)
    cfg = algo_cfg(importance=importance, baseline="mean", epochs=1, minibatches=1)
    info = PolicyGradient(actor, None, cfg, torch.Generator().manual_seed(0)).update(batch)
    assert info["is/weight_mean"] == 1.0
    assert info["is/weight_max"] == 1.0
    # Measured after the step (what the adaptive lr reads), it sees how far the step moved.
    assert info["is/approx_kl"] > 0.0


def test_the_kl_after_each_step_is_read_from_the_next_minibatch():
    """What the adaptive lr reads: the approx KL after step j is measured on minibatch j + 1 by
    its own loss, before its step (the stepped policy), and after an epoch's last step by one
    more pass over that minibatch: one extra pass per epoch, none per step."""
    torch.manual_seed(0)
    actor = GaussianActor(OBS, ACT, [8], "tanh", init_log_std=0.0).double()
    batch = make_batch(actor)
    cfg = algo_cfg(baseline="mean", epochs=2, minibatches=4, clip_ratio=0.2, lr_schedule="adaptive")
    algo = PolicyGradient(actor, None, cfg, torch.Generator().manual_seed(0))
    before, extra = [], []
    step, measure = algo._step, algo._kl_after_step

    def spy_step(mb, data, adv):
        info, after = step(mb, data, adv)
        before.append(info["approx_kl"])
        return info, after

    def spy_measure(*args):
        extra.append(measure(*args))
        return extra[-1]

    algo._step, algo._kl_after_step = spy_step, spy_measure
    info = algo.update(batch)
    assert len(before) == 8 and len(extra) == 2  # one extra pass per epoch
    assert before[0] == 0.0  # the first step's own minibatch, before any step: not read
    read = before[1:4] + extra[:1] + before[5:8] + extra[1:]
    assert all(kl > 0.0 for kl in read)
    assert info["is/approx_kl"] == pytest.approx(sum(read) / len(read), rel=1e-12)


def test_per_step_and_trajectory_weights_match_direct_computation():
    gen = torch.Generator().manual_seed(0)
    new = torch.randn(T * N, generator=gen, dtype=torch.float64)
    old = torch.randn(T * N, generator=gen, dtype=torch.float64)
    end = torch.zeros(T, N, dtype=torch.bool)
    end[3, 0] = end[1, 1] = True
    from locomo.rl.returns import segment_ids

    seg = segment_ids(end).flatten()
    per_step = losses.log_ratios(new, old).exp()
    torch.testing.assert_close(per_step, torch.exp(new) / torch.exp(old))
    traj = losses.trajectory_log_weights(losses.log_ratios(new, old), seg, int(seg.max()) + 1, 50.0).exp()
    for s in seg.unique():
        members = (seg == s).nonzero().flatten()
        product = math.prod(float(torch.exp(new[i]) / torch.exp(old[i])) for i in members)
        for i in members:
            assert float(traj[i]) == pytest.approx(product, rel=1e-10)


def test_trajectory_product_does_not_overflow_for_long_horizons():
    steps = 5000  # 5000 per-step ratios of e^0.1 multiply to e^500: inf in float32 without log space
    log_ratio = torch.full((steps,), 0.1)
    seg = torch.zeros(steps, dtype=torch.long)
    log_w = losses.trajectory_log_weights(log_ratio, seg, 1, max_log_weight=20.0)
    w = log_w.exp()
    assert torch.isfinite(w).all() and float(w.max()) == pytest.approx(math.exp(20.0), rel=1e-5)
    assert math.isinf(math.prod([math.exp(0.1)] * 400) * 1e300)  # the naive product overflows
    new_logp = torch.zeros(steps, requires_grad=True)
    loss, _ = losses.policy_surrogate_loss(new_logp, torch.ones(steps), w)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(new_logp.grad).all()


def test_clipped_surrogate_gradient_matches_ppo_objective():
    gen = torch.Generator().manual_seed(0)
    old = torch.randn(64, generator=gen, dtype=torch.float64)
    new = (old + 0.5 * torch.randn(64, generator=gen, dtype=torch.float64)).requires_grad_(True)
    adv = torch.randn(64, generator=gen, dtype=torch.float64)
    eps = 0.2
    ratio = torch.exp(new - old)
    ppo = -torch.min(ratio * adv, ratio.clamp(1 - eps, 1 + eps) * adv).mean()
    (ppo_grad,) = torch.autograd.grad(ppo, new)
    ours, info = losses.policy_surrogate_loss(new, adv, ratio.detach(), clip_ratio=eps)
    (our_grad,) = torch.autograd.grad(ours, new)
    torch.testing.assert_close(our_grad, ppo_grad)
    assert 0.0 < info["clip_fraction"] < 1.0


def test_importance_diagnostics():
    w = torch.tensor([1.0, 1.0, 1.0, 1.0])
    info = losses.importance_diagnostics(w, torch.zeros(4))
    assert info == {"weight_mean": 1.0, "weight_max": 1.0, "ess": 1.0, "approx_kl": 0.0}
    info = losses.importance_diagnostics(torch.tensor([4.0, 0.0, 0.0, 0.0]), torch.zeros(4))
    assert info["ess"] == 0.25
