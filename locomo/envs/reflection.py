"""The left-right reflection of a MuJoCo model, derived from the model itself.

The reflection is ``M = diag(1, -1, 1)`` (y -> -y: the sagittal plane; +x forward, +z up). It maps
a configuration of the model to another configuration of the same model when the model is
mirror-symmetric: each body ``b`` has a partner ``b'`` (``right_*`` <-> ``left_*`` by name, the
others their own partner) whose frame is the mirror image, ``R_b' = M R_b M``, ``p_b' = M p_b``.
Every quantity then maps as its kind dictates:

* a position or force (a polar vector) ``v`` -> ``M v``: ``(x, -y, z)``;
* an angular velocity or torque (a pseudovector, the cross product of two polar vectors)
  ``w`` -> ``det(M) M w = -M w``: ``(-x, y, -z)``;
* a 3x3 inertia tensor ``I`` -> ``M I M``: ``xy`` and ``yz`` change sign;
* a rotation ``R`` -> ``M R M``; for a quaternion ``(w, x, y, z)``: ``(w, -x, y, -z)``
  (``M Rot(n, t) M = Rot(-M n, t)``, and ``-M n = (-n_x, n_y, -n_z)``);
* a hinge angle ``q`` about the joint axis ``a`` (world frame at ``qpos0``): ``M Rot(a, q) M =
  Rot(M a, -q)``, so the partner joint (axis ``a'``) turns by ``q' = s q`` with
  ``s = -(a' . M a)``, which must be +1 or -1. A slide joint (a displacement along ``a``) gets
  ``s = +(a' . M a)``. The joint's velocity and generalised force take the same sign.

Each mirrored MjData field is a signed permutation of the original: ``mirrored[..., i] =
sign[i] * x[..., perm[i]]``. :func:`reflect_model` derives the permutations and signs of the
joints, the actuators and the MjData fields Humanoid-v5 observes, checking the kinematic and
inertial symmetry of the model (``ValueError`` if it does not hold). :func:`asymmetries` lists
the dynamic parameters (armature, damping, stiffness, ranges, contact geometry, actuator gains,
...) in which partners differ: those do not change the map but make a mirrored trajectory only
approximately a trajectory of the model. :mod:`locomo.envs.mirror` turns the field maps into the
map of locomo's observation and action.

Shapes: ``A`` = ``model.nu`` (17), ``nq`` (24), ``nv`` (23), ``nbody`` (14) for Humanoid-v5.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mujoco
import numpy as np

M = np.diag([1.0, -1.0, 1.0])  # the reflection y -> -y

# Signs of one body row of the com-based MjData fields under the reflection.
# cinert: (Ixx, Iyy, Izz, Ixy, Ixz, Iyz, m*dx, m*dy, m*dz, m) in the com frame of the kinematic
# tree's root (MuJoCo's mju_inertCom); M I M flips xy and yz, M d flips dy.
CINERT_SIGN = np.array([1.0, 1.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0, 1.0])
# cvel (angular; linear velocity) and cfrc_ext (torque; force): a pseudovector then a polar vector.
SPATIAL_SIGN = np.array([-1.0, 1.0, -1.0, 1.0, -1.0, 1.0])
POINT_SIGN = np.array([1.0, -1.0, 1.0])  # a position (xpos, xipos)
# The free joint: qpos (x, y, z, qw, qx, qy, qz); qvel (linear velocity in the world frame,
# angular velocity in the body frame). Under R -> M R M both velocity frames reflect alike.
FREE_QPOS_SIGN = np.array([1.0, -1.0, 1.0, 1.0, -1.0, 1.0, -1.0])
FREE_QVEL_SIGN = np.array([1.0, -1.0, 1.0, -1.0, 1.0, -1.0])

_FREE, _BALL, _HINGE = (
    int(t) for t in (mujoco.mjtJoint.mjJNT_FREE, mujoco.mjtJoint.mjJNT_BALL, mujoco.mjtJoint.mjJNT_HINGE)
)
_TOL = 1e-8  # partners' geometry and parameters are compared to this (far above float rounding)


def partner_name(name: str) -> str:
    """``right_*`` <-> ``left_*``; any other name is its own partner."""
    for a, b in (("right_", "left_"), ("left_", "right_")):
        if name.startswith(a):
            return b + name[len(a) :]
    return name


@dataclass(frozen=True, eq=False)
class ModelReflection:
    """The reflection of one model's parts and MjData fields (see :func:`reflect_model`).

    body_partner [nbody], joint_partner [njnt], actuator_partner [nu]: partner indices.
    joint_sign [njnt]: the hinge/slide sign ``s`` (0 for the free joint, whose coordinates mix).
    act_sign [A]: ``ctrl'[partner(k)] = act_sign[partner(k)] * ctrl[k]``.
    fields: MjData field name -> (perm, sign) over the field flattened per env (``qpos`` [nq],
    ``qvel``, ``qacc``, ``qfrc_actuator`` [nv], ``cinert`` [nbody*10], ``cvel``, ``cfrc_ext``
    [nbody*6], ``xpos``, ``xipos`` [nbody*3], ``ctrl`` [nu]).
    """

    body_partner: np.ndarray
    joint_partner: np.ndarray
    joint_sign: np.ndarray
    actuator_partner: np.ndarray
    act_sign: np.ndarray
    fields: dict[str, tuple[np.ndarray, np.ndarray]]


def _names(model: mujoco.MjModel, obj: mujoco.mjtObj, n: int) -> list[str]:
    return [mujoco.mj_id2name(model, obj, i) or "" for i in range(n)]


def _partners(names: list[str], kind: str) -> np.ndarray:
    """[n] index of each element's partner by name; ValueError if a partner is missing."""
    index = {name: i for i, name in enumerate(names)}
    partner = np.empty(len(names), dtype=np.int64)
    for i, name in enumerate(names):
        other = partner_name(name)
        if other not in index:
            raise ValueError(f"{kind} {name!r} has no mirror partner {other!r}")
        partner[i] = index[other]
    return partner


def _require_close(what: str, mirrored: np.ndarray, actual: np.ndarray) -> None:
    if not np.allclose(mirrored, actual, rtol=0.0, atol=_TOL):
        raise ValueError(
            f"the model is not mirror-symmetric about y = 0: {what}: the mirror image is "
            f"{np.round(mirrored, 9).tolist()}, the partner has {np.round(actual, 9).tolist()}"
        )


def _rows(partner: np.ndarray, row_sign: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(perm, sign) of a [n, k] field flattened, whose row i mirrors row partner[i] with row_sign."""
    k = len(row_sign)
    perm = (partner[:, None] * k + np.arange(k)[None, :]).ravel()
    return perm, np.tile(row_sign, len(partner))


def reflect_model(model: mujoco.MjModel) -> ModelReflection:
    """Derive the reflection of ``model``'s bodies, joints, actuators and MjData fields.

    Bodies and joints pair by name; actuators by the joint they drive. Checked at
    ``qpos0`` (forward kinematics), to 1e-8: every body frame and centre of mass is the mirror
    image of its partner's (``p' = M p``, ``R' = M R M``), masses and world inertia tensors
    (``I' = M I M``) agree, every joint anchor mirrors its partner's, and every hinge or slide axis
    is (anti)parallel to the mirror image of its partner's; actuators of paired joints have gears
    of equal magnitude. Raises ValueError otherwise, or for ball joints, a free joint not at the
    root of a self-paired body, or actuators not driving joints: with those no signed permutation
    maps the observation.
    """
    data = mujoco.MjData(model)
    mujoco.mj_kinematics(model, data)  # at qpos = qpos0

    body_names = _names(model, mujoco.mjtObj.mjOBJ_BODY, model.nbody)
    body_partner = _partners(body_names, "body")
    for b, p in enumerate(body_partner):
        what = f"body {body_names[b]!r} / {body_names[p]!r}"
        if body_partner[model.body_parentid[b]] != model.body_parentid[p]:
            raise ValueError(f"{what}: their parents are not partners")
        _require_close(f"{what} position", M @ data.xpos[b], data.xpos[p])
        _require_close(f"{what} orientation", M @ data.xmat[b].reshape(3, 3) @ M, data.xmat[p].reshape(3, 3))
        _require_close(f"{what} centre of mass", M @ data.xipos[b], data.xipos[p])
        _require_close(f"{what} mass", model.body_mass[b : b + 1], model.body_mass[p : p + 1])
        inertia = [(r := data.ximat[i].reshape(3, 3)) @ np.diag(model.body_inertia[i]) @ r.T for i in (b, p)]
        _require_close(f"{what} inertia tensor", M @ inertia[0] @ M, inertia[1])

    joint_names = _names(model, mujoco.mjtObj.mjOBJ_JOINT, model.njnt)
    joint_partner = _partners(joint_names, "joint")
    joint_sign = np.zeros(model.njnt)
    qpos_perm, qpos_sign = np.arange(model.nq), np.ones(model.nq)
    qvel_perm, qvel_sign = np.arange(model.nv), np.ones(model.nv)
    for j, p in enumerate(joint_partner):
        what = f"joint {joint_names[j]!r} / {joint_names[p]!r}"
        kind = int(model.jnt_type[j])
        if kind != model.jnt_type[p]:
            raise ValueError(f"{what}: different joint types")
        if body_partner[model.jnt_bodyid[j]] != model.jnt_bodyid[p]:
            raise ValueError(f"{what}: their bodies are not partners")
        _require_close(f"{what} anchor", M @ data.xanchor[j], data.xanchor[p])
        qa, qb, da, db = model.jnt_qposadr[j], model.jnt_qposadr[p], model.jnt_dofadr[j], model.jnt_dofadr[p]
        if kind == _FREE:
            if p != j or model.body_parentid[model.jnt_bodyid[j]] != 0:
                raise ValueError(f"{what}: a free joint must be on a self-paired child of the world")
            qpos_sign[qa : qa + 7] = FREE_QPOS_SIGN
            qvel_sign[da : da + 6] = FREE_QVEL_SIGN
            continue
        if kind == _BALL:
            raise ValueError(f"{what}: ball joints are not supported")
        c = float(data.xaxis[p] @ (M @ data.xaxis[j]))
        if abs(abs(c) - 1.0) > _TOL:
            raise ValueError(
                f"{what}: the mirror image of the axis {np.round(data.xaxis[j], 6).tolist()} is not "
                f"(anti)parallel to the partner's axis {np.round(data.xaxis[p], 6).tolist()}"
            )
        # A rotation is reflected into the opposite rotation about M a; a displacement is not.
        s = -np.sign(c) if kind == _HINGE else np.sign(c)
        joint_sign[j] = s
        qpos_perm[qb], qpos_sign[qb] = qa, s
        qvel_perm[db], qvel_sign[db] = da, s

    actuator_partner, act_sign = _reflect_actuators(model, joint_partner, joint_sign)
    qvel_map = (qvel_perm, qvel_sign)
    fields = {
        "qpos": (qpos_perm, qpos_sign),
        "qvel": qvel_map,
        "qacc": qvel_map,
        "qfrc_actuator": qvel_map,  # generalised forces: one per dof, as the velocities
        "cinert": _rows(body_partner, CINERT_SIGN),
        "cvel": _rows(body_partner, SPATIAL_SIGN),
        "cfrc_ext": _rows(body_partner, SPATIAL_SIGN),
        "xpos": _rows(body_partner, POINT_SIGN),
        "xipos": _rows(body_partner, POINT_SIGN),
        "ctrl": (actuator_partner, act_sign),
    }
    return ModelReflection(body_partner, joint_partner, joint_sign, actuator_partner, act_sign, fields)


def _reflect_actuators(
    model: mujoco.MjModel, joint_partner: np.ndarray, joint_sign: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """[nu] partner actuator and sign: ``ctrl'[partner(k)] = sign * ctrl[k]``.

    Actuator k applies ``gear_k * force(ctrl_k)`` to its joint j; the mirrored joint force on
    ``j'`` is ``s_j`` times it, so ``ctrl'_k' = s_j * sign(gear_k) * sign(gear_k') * ctrl_k``
    when ``|gear_k| = |gear_k'|`` (and the actuators' gains agree: see :func:`asymmetries`).
    """
    by_joint: dict[int, int] = {}
    for k in range(model.nu):
        if model.actuator_trntype[k] != mujoco.mjtTrn.mjTRN_JOINT:
            raise ValueError(f"actuator {model.actuator(k).name!r}: only joint actuators are supported")
        j = int(model.actuator_trnid[k, 0])
        if j in by_joint or joint_sign[j] == 0:
            raise ValueError(
                f"actuator {model.actuator(k).name!r}: one actuator per hinge/slide joint expected"
            )
        by_joint[j] = k
    partner, sign = np.empty(model.nu, dtype=np.int64), np.empty(model.nu)
    for j, k in by_joint.items():
        other = by_joint.get(int(joint_partner[j]))
        gear, other_gear = model.actuator_gear[k], model.actuator_gear[other] if other is not None else None
        if other_gear is None or abs(gear[0]) != abs(other_gear[0]):
            raise ValueError(
                f"actuator {model.actuator(k).name!r}: no actuator with a gear of equal magnitude "
                f"drives the partner joint {model.joint(int(joint_partner[j])).name!r}"
            )
        partner[other] = k
        sign[other] = joint_sign[j] * np.sign(gear[0]) * np.sign(other_gear[0])
    return partner, sign


def asymmetries(model: mujoco.MjModel) -> list[str]:
    """The dynamic parameters in which mirror partners differ, one line each (empty: none found).

    Compared: per joint pair, armature, damping, friction loss, stiffness, spring reference and
    range (mapped through the joint's sign), limit flags and solver parameters; per geom pair
    (by name), type, size, body, position and axes at qpos0, friction, contact dimension and
    filtering, margin, gap, priority and solver parameters; per actuator pair, the dynamics,
    gain and bias types and parameters, and control and force ranges (mapped through the
    actuator's sign); per tendon pair (by name), stiffness, damping, friction loss, range and
    spring length; and gravity and wind along y. Such differences leave :func:`humanoid_mirror`'s
    map of positions, velocities, inertias and actuator forces exact, but the constraint (contact)
    forces of a mirrored state, ``cfrc_ext``, and the motion that follows differ from the mirror
    image (armature enters the mass matrix, stiffness the passive forces, both the accelerations
    the constraint solver starts from; armature also the constraint softness, via
    ``dof_invweight0``).
    """
    r = reflect_model(model)
    out: list[str] = []

    def differ(what: str, attr: str, a: Any, b: Any) -> None:
        if not np.allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float), rtol=0.0, atol=_TOL):
            out.append(f"{what}: {attr} {np.asarray(a).tolist()} vs {np.asarray(b).tolist()}")

    for j, p in enumerate(r.joint_partner):
        if p < j or model.jnt_type[j] == _FREE:
            continue  # each pair once; the free joint has no parameters that break the symmetry
        what, s = f"joints {model.joint(j).name} / {model.joint(p).name}", r.joint_sign[j]
        da, db, qa, qb = model.jnt_dofadr[j], model.jnt_dofadr[p], model.jnt_qposadr[j], model.jnt_qposadr[p]
        for attr in ("dof_armature", "dof_damping", "dof_frictionloss", "dof_solref", "dof_solimp"):
            differ(what, attr, getattr(model, attr)[da], getattr(model, attr)[db])
        for attr in ("jnt_stiffness", "jnt_limited", "jnt_margin", "jnt_solref", "jnt_solimp"):
            differ(what, attr, getattr(model, attr)[j], getattr(model, attr)[p])
        differ(what, "qpos_spring (mirrored)", s * model.qpos_spring[qa], model.qpos_spring[qb])
        if model.jnt_limited[j]:
            differ(what, "jnt_range (mirrored)", np.sort(s * model.jnt_range[j]), model.jnt_range[p])

    data = mujoco.MjData(model)
    mujoco.mj_kinematics(model, data)
    geom_partner = _partners(_names(model, mujoco.mjtObj.mjOBJ_GEOM, model.ngeom), "geom")
    axes_compared = {int(mujoco.mjtGeom.mjGEOM_SPHERE): [], int(mujoco.mjtGeom.mjGEOM_CAPSULE): [2]}
    axes_compared[int(mujoco.mjtGeom.mjGEOM_CYLINDER)] = [2]
    for g, p in enumerate(geom_partner):
        if p < g:
            continue
        what = f"geoms {model.geom(g).name} / {model.geom(p).name}"
        if r.body_partner[model.geom_bodyid[g]] != model.geom_bodyid[p]:
            out.append(f"{what}: on bodies that are not partners")
        for attr in (
            "geom_type", "geom_size", "geom_friction", "geom_condim", "geom_contype", "geom_conaffinity",
            "geom_margin", "geom_gap", "geom_priority", "geom_solmix", "geom_solref", "geom_solimp",
        ):  # fmt: skip
            differ(what, attr, getattr(model, attr)[g], getattr(model, attr)[p])
        differ(what, "position (mirrored)", M @ data.geom_xpos[g], data.geom_xpos[p])
        frame, other = data.geom_xmat[g].reshape(3, 3), data.geom_xmat[p].reshape(3, 3)
        for axis in axes_compared.get(int(model.geom_type[g]), [0, 1, 2]):
            # Up to sign: a symmetric shape's frame may point either way along an axis.
            differ(what, f"axis {axis} (mirrored)", abs(other[:, axis] @ (M @ frame[:, axis])), 1.0)

    for k, p in enumerate(r.actuator_partner):
        if p < k:
            continue
        what, s = f"actuators {model.actuator(k).name} / {model.actuator(p).name}", r.act_sign[p]
        for attr in (
            "actuator_dyntype", "actuator_gaintype", "actuator_biastype", "actuator_dynprm",
            "actuator_gainprm", "actuator_biasprm", "actuator_ctrllimited", "actuator_forcelimited",
        ):  # fmt: skip
            differ(what, attr, getattr(model, attr)[k], getattr(model, attr)[p])
        for attr in ("actuator_ctrlrange", "actuator_forcerange"):
            ranges = getattr(model, attr)
            differ(what, f"{attr} (mirrored)", np.sort(s * ranges[k]), ranges[p])

    tendon_partner = _partners(_names(model, mujoco.mjtObj.mjOBJ_TENDON, model.ntendon), "tendon")
    for t, p in enumerate(tendon_partner):
        if p < t:
            continue
        what = f"tendons {model.tendon(t).name} / {model.tendon(p).name}"
        for attr in ("tendon_stiffness", "tendon_damping", "tendon_frictionloss", "tendon_limited",
                     "tendon_range", "tendon_lengthspring"):  # fmt: skip
            differ(what, attr, getattr(model, attr)[t], getattr(model, attr)[p])
    differ("option", "gravity y", model.opt.gravity[1], 0.0)
    differ("option", "wind y", model.opt.wind[1], 0.0)
    return out
