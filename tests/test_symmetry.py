"""``algo.symmetry=augment``: mirror images of the samples join the update, in the policy's units."""

from __future__ import annotations

import pytest
import torch

from locomo.envs import make_vec_env
from locomo.envs.mirror import humanoid_mirror
from locomo.errors import ConfigError
from locomo.rl.factory import make_learners
from locomo.rl.running_stats import RunningMeanStd
from locomo.rl.symmetry import PolicyMirror, make_policy_mirror
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
