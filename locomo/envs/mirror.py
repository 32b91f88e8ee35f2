"""The left-right mirror map of Humanoid-v5's observation, action and state.

:func:`humanoid_mirror` assembles it from the reflection of the MuJoCo model
(:func:`locomo.envs.reflection.reflect_model`, where the math of the reflection lives) and the
observation layout, read off by tracing locomo's own :meth:`locomo.envs.tasks.Humanoid.observe`,
so the map follows whatever the env kwargs put in the observation. Each map is a signed
permutation: ``mirrored[..., i] = sign[i] * x[..., perm[i]]``.

Shapes: ``O`` observation size (348 with Humanoid-v5's defaults), ``A`` = ``model.nu`` (17),
``nq`` (24), ``nv`` (23).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import mujoco
import numpy as np
import torch

from locomo.envs.reflection import reflect_model
from locomo.envs.tasks import Fields, Humanoid

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def signed_permutation(x: ArrayT, perm: np.ndarray, sign: np.ndarray) -> ArrayT:
    """``y[..., i] = sign[i] * x[..., perm[i]]`` for a numpy array or torch tensor ``x`` [..., D].

    The result keeps ``x``'s type, dtype and device (signs are cast to ``x``'s dtype, so a float32
    batch stays float32; multiplying by +-1 is exact).
    """
    if x.shape[-1] != len(perm):
        raise ValueError(f"expected a last dimension of {len(perm)}, got shape {tuple(x.shape)}")
    if isinstance(x, torch.Tensor):
        index = torch.as_tensor(perm, device=x.device)
        return x.index_select(-1, index) * torch.as_tensor(sign, dtype=x.dtype, device=x.device)
    x = np.asarray(x)
    s = sign.astype(x.dtype, copy=False) if np.issubdtype(x.dtype, np.floating) else sign
    return x[..., perm] * s


@dataclass(frozen=True, eq=False)
class Mirror:
    """The reflection y -> -y of Humanoid-v5's observation, action and MuJoCo state.

    Each pair ``(perm, sign)`` is a signed permutation: ``mirrored[..., i] = sign[i] *
    x[..., perm[i]]``; it is an involution (``perm[perm] == arange``, ``sign * sign[perm] == 1``).

    obs_perm, obs_sign: [O] int64, [O] float64 for observations [..., O].
    act_perm, act_sign: [A] for actions [..., A] (= ctrl).
    qpos_perm, qpos_sign: [nq]; qvel_perm, qvel_sign: [nv] (also the map of qacc, qfrc_*).
    """

    obs_perm: np.ndarray
    obs_sign: np.ndarray
    act_perm: np.ndarray
    act_sign: np.ndarray
    qpos_perm: np.ndarray
    qpos_sign: np.ndarray
    qvel_perm: np.ndarray
    qvel_sign: np.ndarray

    def obs(self, x: ArrayT) -> ArrayT:
        """Mirrored observations [..., O] (numpy or torch, dtype and device kept)."""
        return signed_permutation(x, self.obs_perm, self.obs_sign)

    def action(self, a: ArrayT) -> ArrayT:
        """Mirrored actions [..., A]: the controls that drive the mirrored body the mirrored way."""
        return signed_permutation(a, self.act_perm, self.act_sign)

    def state(self, qpos: ArrayT, qvel: ArrayT) -> tuple[ArrayT, ArrayT]:
        """The mirrored MuJoCo state: qpos [..., nq], qvel [..., nv] -> (qpos', qvel')."""
        return (
            signed_permutation(qpos, self.qpos_perm, self.qpos_sign),
            signed_permutation(qvel, self.qvel_perm, self.qvel_sign),
        )


def observation_layout(task: Humanoid) -> list[tuple[str, int]]:
    """[O] the (MjData field, element of the field flattened per env) each observation entry copies.

    Read off ``task.observe`` run on fields whose elements hold distinct positive integers, so
    it is the layout locomo trains on, whatever the env kwargs. Raises ValueError if an entry is
    not a plain copy of one field element, or if two entries copy the same element.
    """
    data = mujoco.MjData(task.model)
    probe: Fields = {}
    starts: list[int] = []
    names: list[str] = []
    next_id = 1
    for name in task.fields:
        shape = getattr(data, name).shape
        size = int(np.prod(shape))
        probe[name] = np.arange(next_id, next_id + size, dtype=np.float64).reshape(1, *shape)
        starts.append(next_id)
        names.append(name)
        next_id += size
    ids = task.observe(probe)[0]
    if not (np.array_equal(ids, np.round(ids)) and np.all((ids >= 1) & (ids < next_id))):
        raise ValueError("the observation is not a selection of MjData field elements: no mirror map")
    if len(np.unique(ids)) != len(ids):
        raise ValueError("the observation repeats a field element: not supported")
    layout = []
    for v in ids.astype(np.int64):
        f = int(np.searchsorted(starts, v, side="right")) - 1
        layout.append((names[f], int(v - starts[f])))
    return layout


def _observation_map(
    layout: list[tuple[str, int]], fields: dict[str, tuple[np.ndarray, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray]:
    """(obs_perm, obs_sign) [O]: entry i copies element e of field f, whose mirror image is
    ``sign_f[e] * f[perm_f[e]]``, so it takes ``sign_f[e]`` times the entry copying ``perm_f[e]``."""
    position = {source: i for i, source in enumerate(layout)}
    obs_perm, obs_sign = np.empty(len(layout), dtype=np.int64), np.empty(len(layout))
    for i, (name, element) in enumerate(layout):
        if name not in fields:
            raise ValueError(f"the observation reads MjData.{name}, which has no mirror map")
        perm, sign = fields[name]
        mirrored = (name, int(perm[element]))
        if mirrored not in position:
            raise ValueError(
                f"the observation holds element {element} of MjData.{name} but not its mirror image "
                f"(element {mirrored[1]}): no signed permutation maps it"
            )
        obs_perm[i], obs_sign[i] = position[mirrored], sign[element]
    return obs_perm, obs_sign


def humanoid_mirror(model: mujoco.MjModel, kwargs: Mapping[str, Any] | None = None) -> Mirror:
    """The :class:`Mirror` of Humanoid-v5 on ``model`` with the env's keyword arguments.

    ``kwargs`` are Gymnasium's Humanoid-v5 arguments (``env.kwargs``; None: the defaults); the
    observation layout is read off :meth:`locomo.envs.tasks.Humanoid.observe`, so every
    combination of ``exclude_current_positions_from_observation`` and the ``include_*`` flags is
    supported. With the defaults the observation [348] is qpos[2:] [22], qvel [23],
    cinert[1:] [13*10], cvel[1:] [13*6], qfrc_actuator[6:] [17], cfrc_ext[1:] [13*6].
    Raises ValueError (:class:`locomo.errors.ConfigError` for an unknown keyword) when the model
    or the observation has no mirror map; see :func:`reflect_model`.
    """
    task = Humanoid(model, dict(kwargs or {}))
    reflection = reflect_model(model)
    obs_perm, obs_sign = _observation_map(observation_layout(task), reflection.fields)
    act_perm, act_sign = reflection.fields["ctrl"]
    (qpos_perm, qpos_sign), (qvel_perm, qvel_sign) = reflection.fields["qpos"], reflection.fields["qvel"]
    return Mirror(obs_perm, obs_sign, act_perm, act_sign, qpos_perm, qpos_sign, qvel_perm, qvel_sign)
