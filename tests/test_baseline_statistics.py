"""Baselines leave the expected gradient unchanged and reduce its variance (statistical test).

A one-step continuous bandit: s ~ N(0, I), a ~ pi_theta(.|s), reward = 100 - (a - 1)^2. The
large constant offset is what a baseline removes. The reference gradient is the no-baseline
estimator on a very large batch of the same bandit with the offset taken out beforehand
(reward - 98): a fixed constant shift leaves the expected gradient unchanged, and without the
offset the reference itself has little noise.
"""

from __future__ import annotations

import torch
from omegaconf import OmegaConf

from locomo.config.schema import AlgoConfig
from locomo.rl import losses
from locomo.rl.advantages import compute_advantages
from locomo.rl.buffer import RolloutBatch
from locomo.rl.policy import GaussianActor

OBS = 2


def bandit_batch(actor: GaussianActor, n: int, gen: torch.Generator, offset: float = 100.0) -> RolloutBatch:
    obs = torch.randn(1, n, OBS, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        mean = actor.mean_net(obs[0])
        actions = mean + actor.log_std.exp() * torch.randn(mean.shape, generator=gen, dtype=torch.float64)
    rewards = offset - (actions.squeeze(-1) - 1.0) ** 2
    done = torch.ones(1, n, dtype=torch.bool)
    zeros = torch.zeros(1, n, dtype=torch.float64)
    return RolloutBatch(obs, actions.unsqueeze(0), zeros, rewards.unsqueeze(0), done, ~done, zeros, zeros)


def gradient(actor: GaussianActor, batch: RolloutBatch, baseline: str) -> torch.Tensor:
    cfg = OmegaConf.structured(
        AlgoConfig(returns="reward_to_go", baseline=baseline, normalize_advantages=False)
    )
    adv = compute_advantages(batch, cfg, actor)
    logp = actor.log_prob(batch.obs[0], batch.actions[0])
    loss, _ = losses.policy_surrogate_loss(logp, adv.advantages, torch.ones_like(logp))
    grads = torch.autograd.grad(loss, list(actor.parameters()))
    return torch.cat([g.flatten() for g in grads])


def test_baselines_are_unbiased_and_reduce_variance():
    torch.manual_seed(0)
    actor = GaussianActor(OBS, 1, [4], "tanh", init_log_std=0.0).double()
    gen = torch.Generator().manual_seed(123)
    reference = gradient(actor, bandit_batch(actor, 400_000, gen, offset=2.0), "none")

    batch_size, batches = 64, 400
    estimates = {name: [] for name in ("none", "mean", "optimal")}
    for _ in range(batches):
        batch = bandit_batch(actor, batch_size, gen)
        for name in estimates:
            estimates[name].append(gradient(actor, batch, name))
    stacked = {name: torch.stack(v) for name, v in estimates.items()}
    variance = {name: float(s.var(0).sum()) for name, s in stacked.items()}

    for name, s in stacked.items():
        mean, stderr = s.mean(0), s.std(0) / batches**0.5
        # Within 4 standard errors, plus 1/batch_size of the gradient: a baseline estimated from the
        # same batch shifts the expectation by a factor (1 - 1/n) (the sample's own term).
        tolerance = 4 * stderr + reference.abs() / batch_size + 1e-3
        assert ((mean - reference).abs() <= tolerance).all(), (name, mean, reference, tolerance)

    assert variance["mean"] < 0.2 * variance["none"], variance
    assert variance["optimal"] < 0.2 * variance["none"], variance
    # The optimal constant minimises the summed variance among constants; estimated from the batch it
    # is at worst marginally above the mean baseline.
    assert variance["optimal"] < 1.1 * variance["mean"], variance
