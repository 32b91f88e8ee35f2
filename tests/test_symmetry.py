"""``algo.symmetry=augment``: mirror images of the samples join the update, in the policy's units."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from locomo.config.rules import validate_algo
from locomo.envs import make_vec_env
from locomo.envs.mirror import humanoid_mirror
from locomo.errors import ConfigError
from locomo.rl.factory import make_learners
from locomo.rl.running_stats import RunningMeanStd
from locomo.rl.symmetry import PolicyMirror, make_policy_mirror, symmetric_policy_loss, symmetry_loss
from tests.conftest import compose


@pytest.fixture(scope="module")
def humanoid():
    cfg = compose("env=humanoid", "algo.symmetry=augment", "train.num_envs=2", "train.steps_per_iteration=64")
    env = make_vec_env(cfg.env, 2)
    yield cfg, env
    env.close()


def test_mirror_in_normalised_units_is_the_normalised_mirror(humanoid):
    """PolicyMirror.obs(normalise(x)) = normalise(M x): the image the policy sees is that of the
    raw observation, whatever the normaliser's (asymmetric) statistics."""
    cfg, env = humanoid
    mirror = humanoid_mirror(env.mujoco_model(), dict(cfg.env.kwargs))
    normalizer = RunningMeanStd(env.spaces.obs_dim)
    gen = torch.Generator().manual_seed(0)
    normalizer.update(3.0 * torch.randn(500, env.spaces.obs_dim, generator=gen) + 1.0)
    raw = torch.randn(7, env.spaces.obs_dim, generator=gen)
    images = PolicyMirror(mirror, normalizer).obs(normalizer(raw))
    torch.testing.assert_close(images, normalizer(mirror.obs(raw)), rtol=1e-5, atol=1e-5)


def test_update_learns_from_each_sample_and_its_image(humanoid):
    """Every sample's image enters with the sample's advantage, log pi_k(M a|M s), and the behaviour
    log-prob mu(a|s) (the density of the mirrored behaviour policy at the image) truncated at
    pi_k's; the update keeps its number of steps, with minibatches twice the size."""
    from locomo.rl.advantages import with_images
    from locomo.rl.algorithm import PolicyGradient
    from locomo.rl.buffer import RolloutBatch

    cfg, env = humanoid
    cfg.model.hidden_sizes = [16]
    actor, critic, normalizer, _ = make_learners(cfg, env.spaces, torch.device("cpu"))
    mirror = make_policy_mirror("augment", env, cfg.env, env.spaces, normalizer)
    assert mirror is not None
    gen = torch.Generator().manual_seed(1)
    T, N = 8, 2
    obs = torch.randn(T, N, env.spaces.obs_dim, generator=gen)
    with torch.no_grad():
        actions, log_probs = actor.act(obs.flatten(0, 1))
    zeros = torch.zeros(T, N)
    no = torch.zeros(T, N, dtype=torch.bool)
    rewards = torch.randn(T, N, generator=gen)
    batch = RolloutBatch(obs, actions.view(T, N, -1), log_probs.view(T, N), rewards, no, no, zeros, zeros)
    algo = PolicyGradient(actor, critic, cfg.algo, torch.Generator().manual_seed(0), mirror=mirror)
    data, adv = algo.samples(batch, [])
    images, adv2 = with_images(data, adv, mirror, actor.log_prob)
    B = T * N
    assert images.obs.shape[0] == 2 * B
    torch.testing.assert_close(images.obs[B:], mirror.obs(data.obs))
    torch.testing.assert_close(images.actions[B:], mirror.action(data.actions))
    torch.testing.assert_close(adv2.advantages[B:], adv.advantages)
    assert images.start is not None
    with torch.no_grad():
        image_start = actor.log_prob(images.obs[B:], images.actions[B:])
    torch.testing.assert_close(images.start[B:], image_start)
    # The exact behaviour density mu(a|s), truncated at pi_k's: no image weighs more than pi_theta/pi_k.
    torch.testing.assert_close(images.behaviour[B:], torch.maximum(data.behaviour, image_start))
    assert (images.start[B:] <= images.behaviour[B:]).all()
    info = algo.update(batch)
    assert info["is/gradient_steps"] == cfg.algo.epochs * cfg.algo.minibatches


def test_symmetry_needs_a_mirrored_env_and_per_step_weights():
    with pytest.raises(ConfigError, match=r"algo\.symmetry='augment' is invalid: env 'walker2d'"):
        compose("env=walker2d", "algo.symmetry=augment")  # refused by the env id, before any env
    cfg = compose("env=walker2d")
    env = make_vec_env(cfg.env, 1)
    try:
        with pytest.raises(ConfigError, match=r"algo\.symmetry='augment' is invalid: env 'walker2d'"):
            make_policy_mirror("augment", env, cfg.env, env.spaces, RunningMeanStd(env.spaces.obs_dim))
    finally:
        env.close()
    with pytest.raises(ConfigError, match=r"algo\.symmetry='augment' is invalid: mirror images need"):
        compose("algo=importance", "algo.importance=trajectory", "algo.symmetry=augment")


def _random_batch(spaces, actor, T: int, N: int, seed: int):
    from locomo.rl.buffer import RolloutBatch

    gen = torch.Generator().manual_seed(seed)
    obs = torch.randn(T, N, spaces.obs_dim, generator=gen)
    with torch.no_grad():
        actions, log_probs = actor.act(obs.flatten(0, 1))
    zeros = torch.zeros(T, N)
    no = torch.zeros(T, N, dtype=torch.bool)
    rewards = torch.randn(T, N, generator=gen)
    return RolloutBatch(obs, actions.view(T, N, -1), log_probs.view(T, N), rewards, no, no, zeros, zeros)


def test_symmetry_loss_by_hand_and_zero_for_a_symmetric_policy(humanoid):
    """L_sym = (1/m) sum_b |mu(s_b) - M mu(M s_b)|^2, summed by hand; it is 0 for a policy whose
    mean is made symmetric, mu_sym(s) = (mu(s) + M mu(M s)) / 2; and symmetric_policy_loss is the
    policy loss of the same samples plus coef x L_sym, from one forward pass over s and M s."""
    from locomo.rl import losses

    cfg, env = humanoid
    cfg = cfg.copy()
    cfg.model.hidden_sizes = [16]
    actor, _, normalizer, _ = make_learners(cfg, env.spaces, torch.device("cpu"))
    mirror = make_policy_mirror("loss", env, cfg.env, env.spaces, normalizer)
    assert mirror is not None
    gen = torch.Generator().manual_seed(3)
    obs = torch.randn(5, env.spaces.obs_dim, generator=gen)
    image = mirror.obs(obs)
    with torch.no_grad():
        mean, image_mean = actor(obs).mean, actor(image).mean
        by_hand = (
            sum(float(((mean[b] - mirror.action(image_mean[b : b + 1])[0]) ** 2).sum()) for b in range(5)) / 5
        )
        assert by_hand > 1e-4  # a random net is not symmetric
        assert float(symmetry_loss(mean, image_mean, mirror.action)) == pytest.approx(by_hand, rel=1e-5)
        sym_mean = (mean + mirror.action(image_mean)) / 2
        sym_image = (image_mean + mirror.action(mean)) / 2  # the symmetric policy at M s (M M s = s)
        assert float(symmetry_loss(sym_mean, sym_image, mirror.action)) < 1e-10

    with torch.no_grad():
        actions, log_probs = actor.act(obs)
    batch = losses.PolicyBatch(obs, actions, torch.randn(5, generator=gen), log_probs, None)
    plain, plain_info = losses.policy_loss(actor, batch, 0.2, 0.0)
    total, info, sym = symmetric_policy_loss(actor, batch, image, mirror.action, 0.2, 0.0, 2.5)
    torch.testing.assert_close(sym, torch.tensor(by_hand), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(total, plain + 2.5 * sym, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(info.surrogate, plain_info.surrogate, rtol=1e-5, atol=1e-6)


def test_symmetry_loss_update_makes_the_policy_more_symmetric(humanoid):
    """algo.symmetry=loss: the update trains on the real samples only (no images: as many samples
    per minibatch as without symmetry), logs losses/symmetry, and with the policy loss switched
    off (zero advantages) its steps shrink the policy's asymmetry on the batch."""
    from locomo.rl.algorithm import PolicyGradient

    cfg, env = humanoid
    cfg = cfg.copy()
    cfg.model.hidden_sizes = [16]
    cfg.algo.symmetry = "loss"
    cfg.algo.symmetry_coef = 1.0
    cfg.algo.epochs = 4
    cfg.algo.lr = 3e-3
    torch.manual_seed(0)  # the nets' initial weights
    actor, critic, normalizer, _ = make_learners(cfg, env.spaces, torch.device("cpu"))
    mirror = make_policy_mirror("loss", env, cfg.env, env.spaces, normalizer)
    batch = _random_batch(env.spaces, actor, 8, 2, seed=4)
    flat = batch.obs.flatten(0, 1)

    def asymmetry() -> float:
        with torch.no_grad():
            return float(symmetry_loss(actor(flat).mean, actor(mirror.obs(flat)).mean, mirror.action))

    with torch.no_grad():  # a policy far from symmetric (a new one's means are all near 0)
        last = [m for m in actor.mean_net if isinstance(m, torch.nn.Linear)][-1]
        last.weight.add_(0.05 * torch.randn(last.weight.shape, generator=torch.Generator().manual_seed(5)))
    before = asymmetry()
    assert before > 0.1
    algo = PolicyGradient(actor, critic, cfg.algo, torch.Generator().manual_seed(0), mirror=mirror)
    assert algo.symmetry_loss
    zero_adv = batch._replace(rewards=torch.zeros_like(batch.rewards))
    algo.cfg.normalize_advantages = False  # zero rewards and values: zero advantages, no policy gradient
    info = algo.update(zero_adv)
    assert info["is/gradient_steps"] == cfg.algo.epochs * cfg.algo.minibatches
    assert 0 < info["losses/symmetry"] < before  # the mean over the steps, as they shrank it
    assert asymmetry() < 0.5 * before


def test_symmetry_loss_needs_a_mirrored_env_and_a_coefficient_of_at_least_zero():
    with pytest.raises(ConfigError, match=r"algo\.symmetry='loss' is invalid: env 'walker2d'"):
        compose("env=walker2d", "algo.symmetry=loss")
    with pytest.raises(ConfigError, match=r"algo\.symmetry_coef=-1\.0 is invalid: must be >= 0"):
        compose("algo.symmetry=loss", "algo.symmetry_coef=-1")
    # Trajectory weights are no obstacle: the loss reads no weight.
    cfg = compose("env=humanoid", "algo=importance", "algo.importance=trajectory", "algo.symmetry=loss")
    assert cfg.algo.symmetry == "loss"


def test_both_trains_on_the_images_with_the_symmetry_loss(humanoid):
    """algo.symmetry=both: the images join the update (minibatches twice the size, as augment) and
    every row's loss term reads its own image: a sample's is M s, an image's is the sample's s."""
    from locomo.rl.algorithm import PolicyGradient

    cfg, env = humanoid
    cfg = cfg.copy()
    cfg.model.hidden_sizes = [16]
    cfg.algo.symmetry = "both"
    cfg.algo.symmetry_pairs = False  # each row's image observation stored beside the rows
    torch.manual_seed(0)
    actor, critic, normalizer, _ = make_learners(cfg, env.spaces, torch.device("cpu"))
    mirror = make_policy_mirror("both", env, cfg.env, env.spaces, normalizer)
    algo = PolicyGradient(actor, critic, cfg.algo, torch.Generator().manual_seed(0), mirror=mirror)
    assert algo.augment and algo.symmetry_loss
    seen = {}
    step = algo._step

    def spy(mb, data, adv):
        seen["data"] = data
        return step(mb, data, adv)

    algo._step = spy
    info = algo.update(_random_batch(env.spaces, actor, 8, 2, seed=6))
    data, B = seen["data"], 16
    assert data.obs.shape[0] == data.image_obs.shape[0] == 2 * B
    torch.testing.assert_close(data.image_obs[:B], mirror.obs(data.obs[:B]))
    assert torch.equal(data.image_obs[B:], data.obs[:B])
    assert info["is/gradient_steps"] == cfg.algo.epochs * cfg.algo.minibatches
    assert info["losses/symmetry"] > 0
    with pytest.raises(ConfigError, match=r"algo\.symmetry='both' is invalid: mirror images need"):
        compose("algo=importance", "algo.importance=trajectory", "algo.symmetry=both")


def test_auto_both_is_both_on_the_humanoid_and_nothing_elsewhere(humanoid):
    """algo.symmetry=auto_both (the walking recipe's): images and the loss where the env has a
    mirror map, and the recipe still runs on an env without one (no mirror, no error)."""
    from locomo.rl.algorithm import PolicyGradient

    cfg, env = humanoid
    cfg = cfg.copy()
    cfg.model.hidden_sizes = [16]
    cfg.algo.symmetry = "auto_both"
    actor, critic, normalizer, _ = make_learners(cfg, env.spaces, torch.device("cpu"))
    mirror = make_policy_mirror("auto_both", env, cfg.env, env.spaces, normalizer)
    algo = PolicyGradient(actor, critic, cfg.algo, torch.Generator().manual_seed(0), mirror=mirror)
    assert mirror is not None and algo.augment and algo.symmetry_loss
    walker = compose("env=walker2d", "algo.symmetry=auto_both")
    walker_env = make_vec_env(walker.env, 1)
    try:
        spaces = walker_env.spaces
        assert (
            make_policy_mirror("auto_both", walker_env, walker.env, spaces, RunningMeanStd(spaces.obs_dim))
            is None
        )
    finally:
        walker_env.close()


def test_paired_symmetry_loss_is_the_loss_on_the_same_rows_with_one_forward_pass(humanoid):
    """algo.symmetry_pairs: on p samples followed by their p images, the loss read from their own
    forward pass (image_obs None) equals the one with a second pass over each row's image, in
    value and gradient: a pair's two symmetry terms are equal."""
    from locomo.rl import losses

    cfg, env = humanoid
    cfg = cfg.copy()
    cfg.model.hidden_sizes = [16]
    torch.manual_seed(0)
    actor, _, normalizer, _ = make_learners(cfg, env.spaces, torch.device("cpu"))
    # In float64: the identity is exact in arithmetic, and float32's rounding of a loss whose terms
    # cancel differs with the CPU's matrix kernels (6e-6 relative on AVX512, over assert_close's).
    actor.double()
    mirror = make_policy_mirror("both", env, cfg.env, env.spaces, normalizer)
    with torch.no_grad():  # far from symmetric, so the loss and its gradient are not ~0
        last = [m for m in actor.mean_net if isinstance(m, torch.nn.Linear)][-1]
        last.weight.add_(0.05 * torch.randn(last.weight.shape, generator=torch.Generator().manual_seed(5)))
    gen = torch.Generator().manual_seed(1)
    p, A = 6, env.spaces.action_dim
    own = torch.randn(p, env.spaces.obs_dim, generator=gen, dtype=torch.float64)
    actions = torch.randn(p, A, generator=gen, dtype=torch.float64).clamp(-1, 1)
    obs = torch.cat([own, mirror.obs(own)])
    acts = torch.cat([actions, mirror.action(actions)])
    with torch.no_grad():
        behaviour = actor(obs).log_prob(acts) - 0.1
    advantages = torch.randn(2 * p, generator=gen, dtype=torch.float64)
    batch = losses.PolicyBatch(obs, acts, advantages, behaviour, None, None, None)
    assert obs.dtype == acts.dtype == behaviour.dtype == torch.float64

    def loss_and_grads(image_obs):
        actor.zero_grad()
        loss, _, sym = symmetric_policy_loss(actor, batch, image_obs, mirror.action, 0.2, 0.0, 1.0)
        loss.backward()
        return loss.detach(), sym, [q.grad.clone() for q in actor.parameters()]

    paired = loss_and_grads(None)
    twice = loss_and_grads(torch.cat([obs[p:], obs[:p]]))  # each row's image, as with_images lays them
    assert paired[1] > 0.01
    torch.testing.assert_close(paired[0], twice[0])
    torch.testing.assert_close(paired[1], twice[1])
    for a, b in zip(paired[2], twice[2], strict=True):
        torch.testing.assert_close(a, b)


def test_pairs_put_each_sample_and_its_image_in_one_minibatch(humanoid):
    """algo.symmetry_pairs: every minibatch is p samples then their p images, all samples visited
    once per epoch, no image observations stored; with the loss or the images off the flag does nothing."""
    from locomo.rl.algorithm import PolicyGradient

    cfg, env = humanoid
    cfg = cfg.copy()
    cfg.model.hidden_sizes = [16]
    cfg.algo.symmetry = "both"
    cfg.algo.symmetry_pairs = True
    torch.manual_seed(0)
    actor, critic, normalizer, _ = make_learners(cfg, env.spaces, torch.device("cpu"))
    mirror = make_policy_mirror("both", env, cfg.env, env.spaces, normalizer)
    algo = PolicyGradient(actor, critic, cfg.algo, torch.Generator().manual_seed(0), mirror=mirror)
    assert algo.pairs
    seen = []
    step = algo._step

    def spy(mb, data, adv):
        seen.append((mb.index.clone(), data))
        return step(mb, data, adv)

    algo._step = spy
    info = algo.update(_random_batch(env.spaces, actor, 8, 2, seed=6))
    B = 16
    assert len(seen) == info["is/gradient_steps"] == cfg.algo.epochs * cfg.algo.minibatches
    for index, data in seen:
        assert data.image_obs is None and data.obs.shape[0] == 2 * B
        p = index.numel() // 2
        assert index.numel() == 2 * B // cfg.algo.minibatches
        assert torch.equal(index[p:], index[:p] + B) and bool((index[:p] < B).all())
    epoch = torch.cat([index[: index.numel() // 2] for index, _ in seen[: cfg.algo.minibatches]])
    assert sorted(epoch.tolist()) == list(range(B))
    assert info["losses/symmetry"] > 0
    # without the loss (or the images) there is nothing to pair: the key has no effect, so
    # `algo=walk algo.symmetry=augment` removes the loss with one key
    augment = compose("env=humanoid", "algo=walk", "algo.symmetry=augment")
    assert augment.algo.symmetry_pairs is True
    mirror = make_policy_mirror("augment", env, cfg.env, env.spaces, normalizer)
    assert not PolicyGradient(actor, critic, augment.algo, torch.Generator(), mirror=mirror).pairs
    with pytest.raises(ConfigError, match=r"algo\.symmetry_pairs=2 is invalid: must be true or false"):
        validate_algo(OmegaConf.create({**OmegaConf.to_container(augment.algo), "symmetry_pairs": 2}))
