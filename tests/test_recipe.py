"""The walking recipe's ingredients, each against hand-computed numbers or a direct computation.

- clipped (censored) Gaussian log-likelihood and its score (``model.action_bounds=clip``)
- actions: what is stored, its log-prob and what the env executes agree, for every Box env
- checkpoints from before ``model.action_bounds`` load and act as they did
- standardised value targets (``algo.normalize_values``)
- learning-rate schedules (``algo.lr_schedule``: linear, adaptive)
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from locomo.config.schema import AlgoConfig, upgrade_saved_config
from locomo.envs import make_vec_env
from locomo.evaluation.episodes import load_policy
from locomo.rl.algorithm import PolicyGradient
from locomo.rl.distributions import clipped_gaussian_log_prob, gaussian_log_prob, log_ndtr
from locomo.rl.policy import GaussianActor, ValueNet, make_actor
from locomo.rl.step_size import adaptive_lr, linear_lr
from locomo.runs import checkpoint
from tests.conftest import compose


def _log_phi(x: float) -> float:
    """log of the standard normal CDF, from math.erfc (an independent route to the same number)."""
    return math.log(0.5 * math.erfc(-x / math.sqrt(2)))


def test_clipped_gaussian_log_prob_by_hand():
    mean = torch.tensor([[0.0, 0.5, 0.0, 2.0]], dtype=torch.float64)
    std = torch.tensor([1.0, 2.0, 1.0, 0.5], dtype=torch.float64)
    actions = torch.tensor([[1.0, -1.0, 0.3, 1.0]], dtype=torch.float64)
    expected = (
        _log_phi((0.0 - 1.0) / 1.0)  # +1: the mass above the upper bound, Phi((mu - 1) / sigma)
        + _log_phi((-1.0 - 0.5) / 2.0)  # -1: the mass below the lower bound, Phi((-1 - mu) / sigma)
        + (-(0.3**2) / 2 - math.log(math.sqrt(2 * math.pi)))  # inside: the density
        + _log_phi((2.0 - 1.0) / 0.5)  # +1 with the mean beyond the bound: most of the mass
    )
    got = clipped_gaussian_log_prob(actions, mean, std)
    assert got.shape == (1,)
    assert float(got) == pytest.approx(expected, rel=1e-12)
    assert _log_phi(-1.0) == pytest.approx(math.log(0.15865525393145707), rel=1e-12)


def test_clipped_gaussian_is_a_distribution_and_stays_finite_in_the_tails():
    """Mass at -1 and +1 plus the density integrated over (-1, 1) is 1, for means in and out of range."""
    for mu, sigma in [(0.0, 1.0), (0.8, 0.3), (-3.0, 1.0), (2.5, 2.0)]:
        grid = torch.linspace(-1, 1, 200_001, dtype=torch.float64)
        mean, std = torch.full((grid.numel(), 1), mu, dtype=torch.float64), torch.tensor([sigma])
        # Inside (-1, 1) the clipped log-likelihood is the Gaussian's ...
        inner = clipped_gaussian_log_prob(grid[1:-1, None], mean[1:-1], std)
        assert torch.allclose(inner, gaussian_log_prob(grid[1:-1, None], mean[1:-1], std))
        # ... whose integral over [-1, 1] plus the two clipped masses is 1.
        inside = float(torch.trapezoid(gaussian_log_prob(grid[:, None], mean, std).exp(), grid))
        ends = clipped_gaussian_log_prob(
            torch.tensor([[1.0], [-1.0]], dtype=torch.float64),
            torch.full((2, 1), mu, dtype=torch.float64),
            torch.tensor([sigma], dtype=torch.float64),
        ).exp()
        assert inside + float(ends.sum()) == pytest.approx(1.0, abs=1e-6)
    # 40 standard deviations beyond the bound: Phi underflows, log Phi does not.
    far = clipped_gaussian_log_prob(torch.tensor([[1.0]]), torch.tensor([[-39.0]]), torch.tensor([1.0]))
    assert torch.isfinite(far).all() and float(far) < -700


def test_log_ndtr_matches_torch_in_value_and_gradient():
    x = torch.linspace(-60, 12, 7201, dtype=torch.float64, requires_grad=True)
    ours = log_ndtr(x)
    ref = torch.special.log_ndtr(x.detach())
    assert torch.allclose(ours, ref, rtol=1e-10, atol=1e-12)
    (grad,) = torch.autograd.grad(ours.sum(), x)
    y = x.detach().clone().requires_grad_()
    (ref_grad,) = torch.autograd.grad(torch.special.log_ndtr(y).sum(), y)
    assert torch.isfinite(grad).all() and torch.allclose(grad, ref_grad, rtol=1e-8, atol=1e-12)


def test_clipped_score_has_zero_mean():
    """E[grad_mu log pi(a)] = 0 under the clipped policy (the estimator stays unbiased)."""
    gen = torch.Generator().manual_seed(0)
    mean = torch.tensor([0.7, -1.2, 0.0], dtype=torch.float64, requires_grad=True)
    std = torch.tensor([0.8, 0.5, 1.5], dtype=torch.float64)
    n = 400_000
    samples = (mean.detach() + std * torch.randn(n, 3, generator=gen, dtype=torch.float64)).clamp(-1, 1)
    log_prob = clipped_gaussian_log_prob(samples, mean.expand(n, 3), std)
    (grad,) = torch.autograd.grad(log_prob.mean(), mean)
    # Each dim's score has unit-order variance; the mean over n samples is within ~5 / sqrt(n).
    assert torch.allclose(grad, torch.zeros(3, dtype=torch.float64), atol=5 / math.sqrt(n) * 3)


BOX_ENVS = ["humanoid", "walker2d", "hopper", "half_cheetah", "ant", "inverted_pendulum"]


@pytest.mark.parametrize("env_name", BOX_ENVS)
def test_stored_action_log_prob_and_executed_action_agree(env_name: str):
    """Stored a in [-1, 1]; the env executes low + (a + 1)(high - low)/2 unchanged; log pi(a) is a's."""
    cfg = compose(f"env={env_name}", "train.num_envs=64")
    env = make_vec_env(cfg.env, 64)
    spaces = env.spaces
    torch.manual_seed(0)
    actor = make_actor(spaces, [16], "tanh", init_log_std=0.5, action_bounds="clip")
    obs = torch.as_tensor(env.reset(0), dtype=torch.float32)
    actions, log_probs = actor.act(obs)
    assert actions.abs().max() <= 1.0 and (actions.abs() == 1.0).any()  # std e^0.5: some are clipped
    assert torch.allclose(actor.log_prob(obs, actions), log_probs)
    executed = actor.env_action(actions).numpy()
    low, high = spaces.action_low, spaces.action_high
    assert np.all(executed >= low - 1e-6) and np.all(executed <= high + 1e-6)
    np.testing.assert_allclose(actor.env_action(torch.ones(1, spaces.action_dim))[0].numpy(), high, rtol=1e-6)
    np.testing.assert_allclose(actor.env_action(-torch.ones(1, spaces.action_dim))[0].numpy(), low, rtol=1e-6)
    env.step(executed)
    # What the simulator was given is the executed action: the env's own clip changed nothing.
    np.testing.assert_allclose(env._ctrl, np.clip(executed, low, high), rtol=0, atol=0)
    np.testing.assert_allclose(env._ctrl, executed, rtol=1e-6, atol=1e-7)
    env.close()


def test_deterministic_action_is_the_clipped_mean():
    bounds = (torch.tensor([-2.0, 0.0]), torch.tensor([2.0, 1.0]))
    actor = GaussianActor(3, 2, [8], "tanh", 0.0, bounds=bounds)
    with torch.no_grad():
        actor.mean_net[-1].bias.copy_(torch.tensor([5.0, -0.5]))
    actions, _ = actor.act(torch.zeros(1, 3), deterministic=True)
    assert actions.tolist()[0][0] == 1.0
    assert actions.tolist()[0][1] == pytest.approx(-0.5, abs=1e-3)
    assert actor.env_action(actions)[0].tolist() == pytest.approx([2.0, 0.25], abs=1e-3)


def _train_tiny(tmp_path: Path, *overrides: str) -> Path:
    from locomo.training.runner import Runner

    cfg = compose(
        "env=inverted_pendulum",
        "train.iterations=1",
        "train.num_envs=2",
        "train.steps_per_iteration=64",
        "video.enabled=false",
        "logger.wandb.mode=disabled",
        "logger.progress=false",
        *overrides,
    )
    Runner(cfg, tmp_path).run()
    return tmp_path / "checkpoints" / "last.pt"


def test_checkpoint_from_before_action_bounds_loads_and_acts_as_before(tmp_path: Path):
    """A checkpoint whose config has no model.action_bounds acts in the env's units, as it did."""
    path = _train_tiny(tmp_path, "model.action_bounds=none")
    state = checkpoint.load(path)
    del state["config"]["model"]["action_bounds"]  # as written before the key existed
    old = tmp_path / "old.pt"
    checkpoint.save_atomic(state, old)
    assert upgrade_saved_config(state["config"])["model"]["action_bounds"] == "none"
    loaded = load_policy(old)
    assert isinstance(loaded.actor, GaussianActor) and not loaded.actor.clipped
    obs = torch.randn(5, 4)
    assert torch.equal(loaded.actor.env_action(obs[:, :1]), obs[:, :1])  # no rescaling
    fresh = load_policy(path)
    assert torch.equal(loaded.actor.mean_net(obs), fresh.actor.mean_net(obs))


def test_clipped_checkpoint_keeps_the_env_bounds(tmp_path: Path):
    path = _train_tiny(tmp_path)  # the default: action_bounds=clip
    loaded = load_policy(path)
    assert loaded.actor.clipped
    # InvertedPendulum's bounds are [-3, 3]: a = 1 is 3 in the env's units.
    assert loaded.actor.env_action(torch.ones(1, 1)).item() == pytest.approx(3.0)


def test_value_targets_are_standardised_and_values_come_back_in_reward_units():
    torch.manual_seed(0)
    critic = ValueNet(3, [8], "tanh", normalize_values=True)
    targets = torch.tensor([10.0, 20.0, 30.0, 40.0])
    critic.update_stats(targets)
    assert float(critic.value_stats.mean) == pytest.approx(25.0)
    assert float(critic.value_stats.var) == pytest.approx(125.0)
    z = critic.normalize_targets(targets)
    assert z.tolist() == pytest.approx([(t - 25.0) / math.sqrt(125.0) for t in targets.tolist()], rel=1e-5)
    obs = torch.randn(6, 3)
    assert torch.allclose(critic(obs), critic.normalized(obs) * math.sqrt(125.0) + 25.0, rtol=1e-5)
    plain = ValueNet(3, [8], "tanh")
    assert torch.equal(plain(obs), plain.normalized(obs)) and "value_stats.mean" not in plain.state_dict()


def test_adaptive_and_linear_lr_by_hand():
    assert adaptive_lr(3e-4, kl=0.02, threshold=0.008) == pytest.approx(2e-4)  # > 2 x 0.008: / 1.5
    assert adaptive_lr(3e-4, kl=0.001, threshold=0.008) == pytest.approx(4.5e-4)  # < 0.004: x 1.5
    assert adaptive_lr(3e-4, kl=0.01, threshold=0.008) == 3e-4  # within [0.004, 0.016]: kept
    assert adaptive_lr(1e-6, kl=1.0, threshold=0.008) == 1e-6  # floor
    assert adaptive_lr(9e-3, kl=0.0, threshold=0.008) == 1e-2  # ceiling
    assert linear_lr(3e-4, 0.0) == 3e-4 and linear_lr(3e-4, 0.25) == pytest.approx(2.25e-4)
    assert linear_lr(3e-4, 1.0) == 0.0 and linear_lr(3e-4, 1.5) == 0.0


def test_update_applies_the_schedules_and_logs_the_lr():
    from tests.test_losses import make_batch

    torch.manual_seed(0)
    actor = GaussianActor(4, 2, [8], "tanh", 0.0).double()
    critic = ValueNet(4, [8], "tanh", normalize_values=True).double()
    batch = make_batch(actor, seed=1)
    cfg = OmegaConf.structured(AlgoConfig)
    cfg.lr, cfg.epochs, cfg.lr_schedule, cfg.kl_threshold = 1e-3, 3, "adaptive", 1e3  # KL always "small"
    algo = PolicyGradient(actor, critic, cfg, torch.Generator().manual_seed(0))
    info = algo.update(batch)
    assert info["losses/lr"] == pytest.approx(1e-3 * 1.5**3)  # raised after each of 3 epochs
    assert float(critic.value_stats.count) == batch.rewards.numel()
    cfg.lr_schedule = "linear"
    algo = PolicyGradient(actor, critic, cfg, torch.Generator().manual_seed(0))
    algo.begin_update(progress=0.75)
    assert algo.update(batch)["losses/lr"] == pytest.approx(2.5e-4)


def test_clipped_actions_need_finite_bounds():
    from locomo.envs.base import SpaceInfo
    from locomo.errors import ConfigError

    inf = np.array([np.inf, 1.0], dtype=np.float32)
    spaces = SpaceInfo(obs_dim=3, discrete=False, action_dim=2, action_low=-inf, action_high=inf)
    with pytest.raises(ConfigError, match=r"model\.action_bounds='clip' is invalid: this env's action"):
        make_actor(spaces, [8], "tanh", 0.0, action_bounds="clip")
    assert not make_actor(spaces, [8], "tanh", 0.0, action_bounds="none").clipped
