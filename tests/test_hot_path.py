"""The per-step fast paths give the same numbers as the plain formulations they replace."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.distributions import Categorical as TorchCategorical
from torch.distributions import Independent, Normal

from locomo.errors import NonFiniteError
from locomo.guard import check_finite
from locomo.rl.policy import CategoricalActor, GaussianActor
from locomo.rl.running_stats import RunningMeanStd
from locomo.training.runner import Runner
from tests.conftest import TINY, compose


def test_gaussian_act_is_torch_normal_sample_and_log_prob_bit_for_bit():
    """The actor's own Gaussian (no torch.distributions objects on the hot path) gives the bits of
    torch's Independent(Normal): samples, log-likelihoods, mode; the entropy to rounding."""
    torch.manual_seed(0)
    actor = GaussianActor(6, 3, [8], "tanh", init_log_std=-0.5)
    with torch.no_grad():
        actor.log_std.copy_(torch.tensor([-0.3, 0.1, -1.2]))
    obs = torch.randn(5, 6)
    reference = Independent(Normal(actor.mean_net(obs), actor.log_std.exp().expand(5, 3)), 1)

    torch.manual_seed(1)
    actions, log_probs = actor.act(obs)
    torch.manual_seed(1)
    expected = reference.sample()
    assert torch.equal(actions, expected)
    assert torch.equal(log_probs, reference.log_prob(expected))
    assert torch.equal(actor.log_prob(obs, expected), reference.log_prob(expected))

    mode, mode_log_prob = actor.act(obs, deterministic=True)
    assert torch.equal(mode, reference.mean) and torch.equal(
        mode_log_prob, reference.log_prob(reference.mean)
    )

    entropy = actor(obs).entropy()
    assert entropy.shape == ()  # the std does not depend on the state
    assert entropy.item() == pytest.approx(reference.entropy().mean().item(), rel=1e-6)


def test_categorical_actor_is_torch_categorical():
    actor = CategoricalActor(6, 4, [8], "tanh")
    obs, actions = torch.randn(5, 6), torch.tensor([0, 1, 2, 3, 0])
    dist = actor(obs)
    reference = TorchCategorical(logits=actor.logits_net(obs))
    assert torch.equal(dist.log_prob(actions), reference.log_prob(actions))
    assert torch.equal(dist.entropy(), reference.entropy())
    assert torch.equal(dist.mode, reference.probs.argmax(-1))
    torch.manual_seed(3)
    sampled = dist.sample()
    torch.manual_seed(3)
    assert torch.equal(sampled, reference.sample())


def test_running_mean_std_matches_batch_statistics_and_follows_loaded_state():
    torch.manual_seed(0)
    batches = [torch.randn(16, 5) * 3 + 1 for _ in range(40)]
    normalizer = RunningMeanStd(5)
    for x in batches:
        normalizer.update(x)
    everything = torch.cat(batches).double()
    torch.testing.assert_close(normalizer.mean, everything.mean(0), rtol=0, atol=1e-12)
    torch.testing.assert_close(normalizer.var, everything.var(0, unbiased=False), rtol=0, atol=1e-12)
    assert normalizer.count.item() == 640
    x = torch.randn(3, 5)
    expected = ((x - normalizer.mean.float()) / torch.sqrt(normalizer.var.float() + normalizer.eps)).clamp(
        -10, 10
    )
    assert torch.equal(normalizer(x), expected)

    # Loading another state drops the cached (mean, std) and count: forward and update follow it.
    fresh = RunningMeanStd(5)
    fresh(x)  # fills the cache with the initial statistics
    fresh.load_state_dict(normalizer.state_dict())
    assert torch.equal(fresh(x), expected)
    fresh.update(batches[0])
    normalizer.update(batches[0])
    assert torch.equal(fresh.mean, normalizer.mean) and torch.equal(fresh.var, normalizer.var)
    assert fresh.count.item() == 656


def test_check_finite_fast_path_catches_nan_and_inf_but_not_an_overflowing_sum():
    for bad in (float("nan"), float("inf"), -float("inf")):
        x = torch.zeros(4, 3)
        x[2, 1] = bad
        with pytest.raises(NonFiniteError, match="env 2, index 1"):
            check_finite("observations", x, ("env", "index"))
    huge = torch.full((4,), 3e38)  # finite, but the float32 sum overflows to inf
    check_finite("observations", huge)


@pytest.mark.parametrize("backend", ["batched", "gymnasium"])
def test_values_filled_after_collection_are_the_per_step_ones(tmp_path: Path, backend: str):
    """V(s_t) is the value net on the stored obs; V(s_t+1) is the next row's V(s_t) within an episode,
    V of the last observation (normalised as at that step) where an episode ended, and V of the
    observation after the batch on the last row."""
    overrides = [*TINY, "env=hopper", f"env.backend={backend}", "env.max_episode_steps=5", "algo=clipped"]
    runner = Runner(compose(*overrides), tmp_path)
    env, finals = runner.env, {}
    real_step = env.step

    def recording_step(actions: torch.Tensor):
        out = real_step(actions)
        t = len(finals)
        finals[t] = {
            e.env_index: runner.normalizer(out.final_obs[e.env_index : e.env_index + 1])[0]
            for e in out.episodes
        }
        return out

    env.step = recording_step  # type: ignore[method-assign]
    obs_raw = env.reset(0)
    batch, next_obs_raw, episodes, _ = runner.collector.collect(obs_raw)
    assert episodes, "the 5-step time limit should end episodes inside the batch"
    critic = runner.critic
    assert critic is not None
    with torch.no_grad():
        values = critic(batch.obs)
        torch.testing.assert_close(batch.values, values)
        torch.testing.assert_close(batch.next_values[-1], critic(runner.normalizer(next_obs_raw)))
        T, N = batch.values.shape
        for t in range(T):
            for n in range(N):
                if n in finals[t]:
                    expected = critic(finals[t][n].unsqueeze(0))[0]
                elif t < T - 1:
                    expected = values[t + 1, n]
                else:
                    continue
                torch.testing.assert_close(batch.next_values[t, n], expected)
