"""The policy's action distributions (locomo/rl/distributions.py): the clipped Gaussian's likelihood at
and beyond the bounds by hand, its mode and samples, and that evaluation, export and the Python API
act through the same object as training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.distributions import Normal

import locomo
from locomo.envs.base import SpaceInfo
from locomo.evaluation.deploy import TOLERANCE, DeployedPolicy, eval_actions, probe_observations
from locomo.evaluation.episodes import load_policy, select_actions
from locomo.rl.distributions import BoundedGaussian, Categorical, Gaussian
from locomo.rl.policy import ValueNet, make_actor

BOX = SpaceInfo(obs_dim=5, discrete=False, action_dim=3, action_low=-2 * np.ones(3), action_high=np.ones(3))


def by_hand(actions: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """The censored Gaussian's log-likelihood per dim from torch.special.ndtr and Normal: the mass
    above +1 at a >= 1, below -1 at a <= -1, the density inside."""
    normal = Normal(mean, std)
    upper = torch.log(1 - torch.special.ndtr((1 - mean) / std))  # P(u >= 1)
    lower = torch.log(torch.special.ndtr((-1 - mean) / std))  # P(u <= -1)
    inner = normal.log_prob(actions)
    return torch.where(actions >= 1, upper, torch.where(actions <= -1, lower, inner)).sum(-1)


def test_bounded_gaussian_log_prob_at_and_beyond_the_bounds_is_the_tail_mass():
    mean = torch.tensor([[0.3, -0.5, 2.0], [0.0, 0.9, -1.5]], dtype=torch.float64)
    std = torch.tensor([0.7, 1.3, 0.4], dtype=torch.float64)
    dist = BoundedGaussian(mean, std)
    for actions in (
        [[1.0, -1.0, 1.0], [-1.0, 1.0, -1.0]],  # at the bounds
        [[1.7, -3.0, 1.0001], [-1.2, 5.0, -40.0]],  # beyond them: the same as at them
        [[0.2, -0.99, 0.5], [1.0, 0.0, -1.0]],  # inside, and mixed
    ):
        a = torch.tensor(actions, dtype=torch.float64)
        torch.testing.assert_close(dist.log_prob(a), by_hand(a, mean, std), rtol=1e-12, atol=1e-12)
    beyond = torch.tensor([[1.7, -3.0, 9.0]], dtype=torch.float64)
    at = beyond.clamp(-1, 1)
    assert torch.equal(dist.log_prob(beyond), dist.log_prob(at))
    # The unbounded Gaussian (action_bounds=none) is Normal's density everywhere.
    torch.testing.assert_close(
        Gaussian(mean, std).log_prob(beyond), Normal(mean, std).log_prob(beyond).sum(-1)
    )


def test_bounded_gaussian_mode_samples_and_entropy():
    mean = torch.tensor([[0.3, -1.8, 2.0], [0.0, 0.9, -0.2]])
    std = torch.tensor([0.5, 1.0, 2.0])
    dist = BoundedGaussian(mean, std)
    assert torch.equal(dist.mode, mean.clamp(-1, 1))
    assert torch.equal(Gaussian(mean, std).mode, mean)
    samples = torch.stack([dist.sample(torch.Generator().manual_seed(s)) for s in range(200)])
    assert samples.shape == (200, 2, 3)
    assert samples.abs().max() == 1.0 and (samples.abs() == 1.0).any()  # in the bounds, some at them
    # A draw is the clip of the unbounded Gaussian's draw from the same generator.
    expected = Gaussian(mean, std).sample(torch.Generator().manual_seed(7)).clamp(-1, 1)
    assert torch.equal(dist.sample(torch.Generator().manual_seed(7)), expected)
    # The entropy is the Gaussian's before the clip (what the bonus widens), the same for every state.
    torch.testing.assert_close(dist.entropy(), Normal(mean, std).entropy().sum(-1).mean())
    assert dist.entropy().shape == ()


def test_categorical_mode_samples_and_log_prob():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 5.0]])
    dist = Categorical(logits)
    assert dist.mode.tolist() == [0, 2]
    torch.testing.assert_close(
        dist.log_prob(torch.tensor([1, 2])), torch.log_softmax(logits, -1)[[0, 1], [1, 2]]
    )
    draws = torch.stack([dist.sample(torch.Generator().manual_seed(s)) for s in range(2000)])
    share = (draws[:, 0] == 0).double().mean()
    assert float(share) == pytest.approx(float(torch.softmax(logits[0], -1)[0]), abs=0.03)


def test_each_actor_returns_its_distribution():
    assert type(make_actor(BOX, [8], "tanh", 0.0, "clip")(torch.zeros(2, 5))) is BoundedGaussian
    assert type(make_actor(BOX, [8], "tanh", 0.0, "none")(torch.zeros(2, 5))) is Gaussian
    discrete = SpaceInfo(obs_dim=5, discrete=True, action_dim=4)
    assert type(make_actor(discrete, [8], "tanh", 0.0)(torch.zeros(2, 5))) is Categorical


def test_networks_build_on_the_meta_device_with_the_same_names_and_shapes():
    """Shape-only nets (no memory, no random numbers): what a checkpoint's weights are checked against."""
    for bounds in ("clip", "none"):
        cpu = make_actor(BOX, [16, 8], "elu", -0.5, bounds).state_dict()
        rng = torch.get_rng_state()
        with torch.device("meta"):
            meta = make_actor(BOX, [16, 8], "elu", -0.5, bounds).state_dict()
            critic = ValueNet(5, [16, 8], "elu", normalize_values=True).state_dict()
        assert torch.equal(torch.get_rng_state(), rng)  # no draw from the global generator
        assert {k: v.shape for k, v in meta.items()} == {k: v.shape for k, v in cpu.items()}
        assert all(v.is_meta for v in [*meta.values(), *critic.values()])
    assert set(critic) == set(ValueNet(5, [16, 8], "elu", normalize_values=True).state_dict())


@pytest.fixture(scope="module")
def walker():
    return load_policy("walker")


def test_evaluation_export_and_api_act_through_the_distribution(walker):
    """locomo eval's actions (select_actions), the exported module's and locomo.load(...).act's are
    the distribution's: env_action(mode) deterministic, env_action(sample(generator)) stochastic."""
    obs = probe_observations(walker.normalizer, 8)
    x = torch.from_numpy(obs)
    actor = walker.actor
    with torch.no_grad():
        rows = [actor(walker.normalizer(x[i : i + 1])) for i in range(len(x))]
        mode = torch.cat([actor.env_action(d.mode) for d in rows]).numpy()
        sampled = torch.cat(
            [actor.env_action(d.sample(torch.Generator().manual_seed(i))) for i, d in enumerate(rows)]
        ).numpy()
        deployed = DeployedPolicy.from_policy(walker)
        exported = torch.cat([deployed(x[i : i + 1]) for i in range(len(x))]).numpy()  # row by row, as eval
        batched = deployed(x).numpy()
        generators = [torch.Generator().manual_seed(i) for i in range(len(x))]
        stochastic = select_actions(actor, walker.normalizer(x), False, generators, list(range(len(x))))
    assert isinstance(rows[0], BoundedGaussian)
    np.testing.assert_array_equal(eval_actions(walker, obs), mode)
    np.testing.assert_array_equal(exported, mode)
    np.testing.assert_allclose(batched, mode, rtol=0, atol=TOLERANCE)  # a batch: BLAS may round otherwise
    np.testing.assert_array_equal(actor.env_action(stochastic).numpy(), sampled)

    policy = locomo.load("walker")
    np.testing.assert_array_equal(policy.act(obs), mode)
    generators = [torch.Generator().manual_seed(i) for i in range(len(x))]
    np.testing.assert_array_equal(policy.act(obs, deterministic=False, generator=generators), sampled)
    low, high = (
        (actor.action_offset - actor.action_scale).numpy(),
        (actor.action_offset + actor.action_scale).numpy(),
    )
    assert np.all(sampled >= low - 1e-6) and np.all(sampled <= high + 1e-6)  # within the env's bounds
