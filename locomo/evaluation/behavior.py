"""What the body did in an episode: one label from the root body's trajectory, and the numbers behind it.

Pure functions of an :class:`~locomo.envs.base.EpisodeRecord` (its ``body`` summary: the root's
ground-plane position at the start, x0 y0, and its position x y z and orientation quaternion
qw qx qy qz at the last step), the control timestep and the ``behavior`` thresholds.

Directions are in the world frame, where +x is *forward*: the direction the forward-velocity
reward pays for. The torso's lean is read from its up axis u = R(q) e_z:

    u = (2 (qx qz + qw qy),  2 (qy qz - qw qx),  1 - 2 (qx^2 + qy^2))
    tilt  = arccos(u_z)             0 upright, 90 lying down
    pitch = atan2(u_x, u_z)         > 0 leaning forward (towards +x)
    roll  = atan2(u_y, u_z)         > 0 leaning left (towards +y)

The labels, decided in this order:

``fell_*``
    The body fell: the episode *terminated* (the env's own test, e.g. Humanoid's torso height
    leaving (1, 2) m), or it ran to the time limit with tilt > ``fallen_tilt_deg``. The fall's
    direction is where the body went, the root's displacement (dx, dy), when that is at least
    ``walk_distance`` (a lunge or a few steps, then down: what forward-velocity rewards pay
    for); otherwise, falling over on the spot, the direction of the lean (u_x, u_y) when
    tilt >= ``fall_tilt_deg``. Within ``forward_cone_deg`` of +x it is ``fell_forward``, of -x
    ``fell_backward``, otherwise ``fell_sideways``.
``collapsed``
    Fell without going anywhere and without leaning far: sank down on the spot.
``stood_still``
    Did not fall and moved less than ``walk_distance`` in the ground plane.
``walked_forward`` / ``walked_backward`` / ``walked_sideways``
    Did not fall and moved at least ``walk_distance``; the direction of (dx, dy) as above.
    (Upright travel of any gait counts as walking: shuffling, hopping, running.)

Episodes of envs without a free root body (cartpole, pendulum) have no label (``None``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from locomo.envs.base import EpisodeRecord

FELL_FORWARD = "fell_forward"
FELL_BACKWARD = "fell_backward"
FELL_SIDEWAYS = "fell_sideways"
COLLAPSED = "collapsed"
STOOD_STILL = "stood_still"
WALKED_FORWARD = "walked_forward"
WALKED_BACKWARD = "walked_backward"
WALKED_SIDEWAYS = "walked_sideways"

LABELS: tuple[str, ...] = (
    FELL_FORWARD,
    FELL_BACKWARD,
    FELL_SIDEWAYS,
    COLLAPSED,
    STOOD_STILL,
    WALKED_FORWARD,
    WALKED_BACKWARD,
    WALKED_SIDEWAYS,
)

BODY_KEYS = ("x0", "y0", "x", "y", "z", "qw", "qx", "qy", "qz")


@dataclass(frozen=True)
class Behavior:
    """One episode's label and the numbers it was decided from."""

    label: str  # one of LABELS
    fell: bool  # terminated, or lying down (tilt > fallen_tilt_deg) at the time limit
    distance: float  # m, |(dx, dy)|: root displacement in the ground plane, start to end
    forward: float  # m, dx: displacement along +x (negative: went backwards)
    sideways: float  # m, dy: displacement along +y (left)
    duration: float  # s, length * control_dt
    forward_speed: float  # m/s, dx / duration
    height: float  # m, root height at the end
    pitch_deg: float  # final forward lean, > 0 towards +x
    roll_deg: float  # final sideways lean, > 0 towards +y
    tilt_deg: float  # final angle between the torso's up axis and the vertical

    def as_dict(self) -> dict[str, Any]:
        """Plain types, for JSON."""
        return asdict(self)


def up_axis(qw: float, qx: float, qy: float, qz: float) -> np.ndarray:
    """[3] the body's z axis in world coordinates, R(q) e_z, for a unit quaternion (w, x, y, z)."""
    return np.array([2.0 * (qx * qz + qw * qy), 2.0 * (qy * qz - qw * qx), 1.0 - 2.0 * (qx * qx + qy * qy)])


def lean_angles(up: np.ndarray) -> tuple[float, float, float]:
    """(pitch, roll, tilt) in degrees of an up axis [3]; see the module docstring."""
    ux, uy, uz = (float(v) for v in up)
    tilt = math.degrees(math.acos(max(-1.0, min(1.0, uz / max(float(np.linalg.norm(up)), 1e-12)))))
    return math.degrees(math.atan2(ux, uz)), math.degrees(math.atan2(uy, uz)), tilt


def direction(dx: float, dy: float, forward_cone_deg: float) -> str:
    """``forward`` / ``backward`` / ``sideways``: where the ground-plane vector (dx, dy) points."""
    heading = abs(math.degrees(math.atan2(dy, dx)))  # 0 = +x, 180 = -x
    if heading <= forward_cone_deg:
        return "forward"
    if heading >= 180.0 - forward_cone_deg:
        return "backward"
    return "sideways"


def label_episode(record: EpisodeRecord, control_dt: float, thresholds: Any) -> Behavior | None:
    """Label one episode; ``thresholds`` is the ``behavior`` config. None without a root body."""
    body = record.body
    if not all(key in body for key in BODY_KEYS):
        return None
    dx, dy = body["x"] - body["x0"], body["y"] - body["y0"]
    distance = math.hypot(dx, dy)
    up = up_axis(body["qw"], body["qx"], body["qy"], body["qz"])
    pitch, roll, tilt = lean_angles(up)
    fell = bool(record.terminated) or tilt > thresholds.fallen_tilt_deg
    if fell:
        if distance >= thresholds.walk_distance:
            label = "fell_" + direction(dx, dy, thresholds.forward_cone_deg)
        elif tilt >= thresholds.fall_tilt_deg:
            label = "fell_" + direction(float(up[0]), float(up[1]), thresholds.forward_cone_deg)
        else:
            label = COLLAPSED
    elif distance < thresholds.walk_distance:
        label = STOOD_STILL
    else:
        label = "walked_" + direction(dx, dy, thresholds.forward_cone_deg)
    duration = record.length * control_dt
    return Behavior(
        label=label,
        fell=fell,
        distance=distance,
        forward=dx,
        sideways=dy,
        duration=duration,
        forward_speed=dx / duration if duration > 0 else 0.0,
        height=body["z"],
        pitch_deg=pitch,
        roll_deg=roll,
        tilt_deg=tilt,
    )


def label_counts(behaviors: Iterable[Behavior | None]) -> dict[str, int]:
    """{label: count} over every label in LABELS (zeros included); unlabelled episodes are skipped."""
    counts = dict.fromkeys(LABELS, 0)
    for behavior in behaviors:
        if behavior is not None:
            counts[behavior.label] += 1
    return counts


def format_counts(counts: dict[str, int]) -> str:
    """``fell_forward 3, stood_still 1`` (non-zero labels, most frequent first); ``-`` when empty."""
    items = sorted(((n, label) for label, n in counts.items() if n > 0), key=lambda item: -item[0])
    return ", ".join(f"{label} {n}" for n, label in items) or "-"


def behavior_fractions(
    episodes: list[EpisodeRecord], control_dt: float, thresholds: Any, prefix: str = "behavior/"
) -> dict[str, float]:
    """``{prefix + label: fraction}`` over the finished episodes that have a root body.

    Every label is present (fractions sum to 1); empty when no such episode finished.
    """
    labelled = [b for e in episodes if (b := label_episode(e, control_dt, thresholds)) is not None]
    if not labelled:
        return {}
    counts = label_counts(labelled)
    return {f"{prefix}{label}": n / len(labelled) for label, n in counts.items()}
