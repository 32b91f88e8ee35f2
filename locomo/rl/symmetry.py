"""Left-right symmetry in the units the policy sees (``algo.symmetry``: augment, loss, both).

The humanoid's task is symmetric under the reflection y -> -y: a step (s, a) with advantage A has
a mirror image (M s, M a) with the same advantage, since forward velocity, height, control and
contact costs do not change under the reflection (:mod:`locomo.envs.mirror` derives M from the
model and tests it against the physics). Augmenting each update's samples with their images
doubles the samples an update learns from without simulating them.

Importance weights stay exact: the image M a was drawn from the mirrored behaviour policy
mu'(a'|s') = mu(M a'|M s'), whose density at (M s, M a) is mu(a|s), the stored log-prob. So an
image enters the update like a sample of an earlier batch: weight pi_theta(M a|M s) / mu(a|s),
its clip range centred on pi_k(M a|M s) / mu(a|s) (:mod:`locomo.rl.losses`).

``algo.symmetry=loss`` instead asks the policy's mean to be symmetric: the actor's loss gains
symmetry_coef x |mu(s) - M mu(M s)|^2 (:func:`symmetry_loss`), on the update's own
samples, so the critic and the weights see only real steps; ``both`` does both (with
``auto_both``, where the env has a mirror map).

Humanoid-v5's model is not exactly symmetric (``right_hip_y``'s armature and ``left_knee``'s
stiffness differ from their partners': :func:`locomo.envs.reflection.asymmetries`), so an image is a
step of a nearly identical robot, not of this one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from locomo.config.schema import AUTOMATIC_SYMMETRIES, EnvConfig, has_mirror_map
from locomo.envs.base import SpaceInfo
from locomo.envs.mirror import Mirror, humanoid_mirror
from locomo.errors import ConfigError
from locomo.rl import losses
from locomo.rl.distributions import Gaussian
from locomo.rl.policy import Actor
from locomo.rl.running_stats import RunningMeanStd


class PolicyMirror:
    """The mirror map on normalised observations [B, O] and the policy's actions [B, A]."""

    def __init__(self, mirror: Mirror, normalizer: RunningMeanStd) -> None:
        self.mirror, self.normalizer = mirror, normalizer
        self.refresh()

    @torch.no_grad()
    def refresh(self) -> None:
        """Take the normaliser's statistics as they are now (at the start of an update): with
        ``train.overlap`` the collection updates them while the update runs, so the update must
        not read them live (the images would depend on thread timing)."""
        norm = self.normalizer
        self._mean, self._var = norm.mean.clone(), norm.var.clone()

    def obs(self, obs: torch.Tensor) -> torch.Tensor:
        """M s in normalised units: denormalise, reflect, normalise with the same statistics (those
        of the last :meth:`refresh`)."""
        norm = self.normalizer
        if not norm.enabled:
            return self.mirror.obs(obs)
        mean = self._mean.to(obs.dtype)
        std = torch.sqrt(self._var.to(obs.dtype) + norm.eps)
        return ((self.mirror.obs(obs * std + mean) - mean) / std).clamp(-norm.clip, norm.clip)

    def action(self, actions: torch.Tensor) -> torch.Tensor:
        """M a. Exact in the env's units and in bound-normalised ones, since each joint's bounds are
        its partner's, centred on 0 (checked by :func:`make_policy_mirror`)."""
        return self.mirror.action(actions)


def make_policy_mirror(
    symmetry: str, env: Any, env_cfg: EnvConfig, spaces: SpaceInfo, normalizer: RunningMeanStd
) -> PolicyMirror | None:
    """The :class:`PolicyMirror` of ``env`` for ``algo.symmetry=augment``, ``loss`` or ``both``
    (None for ``none``; for ``auto`` and ``auto_both``, the mirror of the humanoid envs and None
    for the others).

    ConfigError when the env has no mirror map (not the humanoid, or a model or observation that
    is not mirror-symmetric) or its action bounds are not symmetric.
    """
    automatic = symmetry in AUTOMATIC_SYMMETRIES
    if symmetry == "none" or (automatic and not has_mirror_map(env_cfg.id)):
        return None
    model = env.mujoco_model() if hasattr(env, "mujoco_model") else None
    why = None
    if model is None or not has_mirror_map(env_cfg.id):
        why = f"env {env_cfg.name!r} ({env_cfg.id}) has no left-right mirror map; the humanoid envs have"
    else:
        try:
            mirror = humanoid_mirror(model, dict(env_cfg.kwargs))
        except ValueError as exc:
            why = f"env {env_cfg.name!r} has no left-right mirror map: {exc}"
    if why is None and spaces.action_low is not None and spaces.action_high is not None:
        low, high = np.asarray(spaces.action_low), np.asarray(spaces.action_high)
        if not (np.allclose(low, -high) and np.allclose(high[mirror.act_perm], high)):
            why = "the env's action bounds are not symmetric (each joint's as its partner's, around 0)"
    if why is not None:
        raise ConfigError("algo.symmetry", symmetry, why)
    return PolicyMirror(mirror, normalizer)


def symmetry_loss(
    mean: torch.Tensor, image_mean: torch.Tensor, reflect_action: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """The mirror-symmetry loss (Yu, Turk and Liu 2018, "Learning Symmetric and Low-Energy
    Locomotion") on m samples:

        L_sym = (1/m) sum_b |mu_theta(s_b) - M_a mu_theta(M_s s_b)|^2

    mean [m, A] = mu_theta(s), image_mean [m, A] = mu_theta(M_s s) (both with grad), and
    ``reflect_action`` a [.., A] -> M_a a (joints swapped with their partners, lateral ones
    negated; M_a is its own inverse). It is 0 exactly when the policy's mean acts on a mirrored
    state as the mirror of how it acts on the state, which a symmetric task's best policy does.
    """
    return (mean - reflect_action(image_mean)).square().sum(-1).mean()


def symmetric_policy_loss(
    actor: Actor,
    batch: losses.PolicyBatch,
    image_obs: torch.Tensor | None,
    reflect_action: Callable[[torch.Tensor], torch.Tensor],
    clip_ratio: float | None,
    entropy_coef: float,
    symmetry_coef: float,
) -> tuple[torch.Tensor, losses.PolicyLossInfo, torch.Tensor]:
    """:func:`~locomo.rl.losses.policy_loss` + symmetry_coef x :func:`symmetry_loss`
    (``algo.symmetry=loss`` or ``both``), from one forward pass over the m observations and their mirror
    images ``image_obs`` [m, O].

    ``image_obs`` None (``algo.symmetry_pairs``): the m = 2p samples are p samples followed by
    their p images, so the loss's images are the batch's own rows and one forward pass over m
    rows serves both losses. L_sym is then the mean over the p pairs, the same value as the mean
    over all 2p rows, since a pair's two terms are equal (M_a is orthogonal and its own inverse:
    |mu(M s) - M_a mu(s)| = |M_a mu(M s) - mu(s)|).

    Returns the scalar loss (with grad), the policy loss's diagnostics and L_sym (detached).
    """
    m = batch.obs.shape[0]
    both = actor(batch.obs if image_obs is None else torch.cat([batch.obs, image_obs]))
    if not isinstance(both, Gaussian):
        raise TypeError(f"the symmetry loss needs a Gaussian policy, not {type(both).__name__}")
    # the rows whose images follow them: all m, or with pairs the first p = m / 2
    k = m // 2 if image_obs is None else m
    own = both if image_obs is None else type(both)(both.mean[:m], both.std)
    loss, info = losses.policy_loss(actor, batch, clip_ratio, entropy_coef, dist=own)
    sym = symmetry_loss(both.mean[:k], both.mean[k:], reflect_action)
    return loss + symmetry_coef * sym, info, sym.detach()
