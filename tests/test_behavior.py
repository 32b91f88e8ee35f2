"""Behaviour labels, checked on scripted physical scenarios with the real MuJoCo humanoid.

Each scenario runs assets/humanoid.xml through locomo's own Gymnasium backend (so the episode
record is the one training sees) with zero motor commands, and moves the body from outside:
- pushes: an external force on the torso (``data.xfrc_applied``) for a moment, then nothing,
  until the env terminates the episode (torso height out of (1, 2) m);
- held / dragged: the model plus a mocap "handle" welded to the torso; the handle stays put
  (held upright) or moves at constant speed (dragged), until the time limit.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from locomo.config.schema import BehaviorConfig
from locomo.envs.base import EpisodeRecord
from locomo.envs.gymnasium_backend import GymnasiumVecEnv
from locomo.evaluation.behavior import (
    BODY_KEYS,
    LABELS,
    Behavior,
    behavior_fractions,
    direction,
    format_counts,
    label_counts,
    label_episode,
    lean_angles,
    up_axis,
)
from locomo.paths import ASSETS_DIR, CONF_DIR

THRESHOLDS = BehaviorConfig()
TORSO_HEIGHT = 1.4  # the torso's height at qpos0 in humanoid.xml


def humanoid_cfg(xml_file: Path | str = "humanoid.xml", max_episode_steps: int | None = None):
    base = {"backend": "gymnasium", "kwargs": {}, "max_episode_steps": max_episode_steps}
    cfg = OmegaConf.merge(base, OmegaConf.load(CONF_DIR / "env" / "humanoid.yaml"))
    cfg.xml_file = str(xml_file)
    return cfg


def run_episode(vec: GymnasiumVecEnv, before_step, max_steps: int = 400) -> EpisodeRecord:
    """Zero motor commands; ``before_step(data, t)`` may push or move the body; the first episode."""
    vec.reset(seed=0)
    data = vec.envs[0].unwrapped.data
    actions = np.zeros((1, vec.spaces.action_dim))
    for t in range(max_steps):
        before_step(data, t)
        out = vec.step(actions)
        if out.episodes:
            return out.episodes[0]
    raise AssertionError(f"episode did not end in {max_steps} steps")


def push(force: tuple[float, float, float], newtons: float = 150.0, steps: int = 20):
    """Push the torso with ``newtons`` along ``force`` for ``steps`` control steps (0.3 s), then let go."""

    def before_step(data, t: int) -> None:
        torso = 1  # body 0 is the world
        data.xfrc_applied[torso, :3] = np.asarray(force) * newtons if t < steps else 0.0

    return before_step


def label_of(record: EpisodeRecord, control_dt: float) -> Behavior:
    behavior = label_episode(record, control_dt, THRESHOLDS)
    assert behavior is not None
    return behavior


@pytest.fixture(scope="module")
def free_humanoid():
    vec = GymnasiumVecEnv(humanoid_cfg(), 1)
    yield vec
    vec.close()


@pytest.fixture(scope="module")
def handled_humanoid(tmp_path_factory):
    """The humanoid with its torso welded to a mocap body (the handle), 100-step episodes (1.5 s)."""
    xml = (ASSETS_DIR / "humanoid.xml").read_text()
    handle = f'<body name="handle" mocap="true" pos="0 0 {TORSO_HEIGHT}"/>\n    </worldbody>'
    xml = xml.replace("</worldbody>", handle, 1)
    weld = '<equality><weld name="hold" body1="torso" body2="handle"/></equality>\n    <actuator>'
    xml = xml.replace("<actuator>", weld, 1)
    path = tmp_path_factory.mktemp("mjcf") / "humanoid_on_a_handle.xml"
    path.write_text(xml)
    vec = GymnasiumVecEnv(humanoid_cfg(path, max_episode_steps=100), 1)
    yield vec
    vec.close()


def drag(speed: float, axis: int = 0, control_dt: float = 0.015):
    """Move the handle at ``speed`` m/s along world axis ``axis`` (0 = x, 1 = y)."""

    def before_step(data, t: int) -> None:
        if t == 0:
            data.mocap_pos[0] = (0.0, 0.0, TORSO_HEIGHT)
        data.mocap_pos[0, axis] = speed * (t + 1) * control_dt

    return before_step


# -- falls: pushed and let go ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("force", "label"),
    [
        ((1.0, 0.0, 0.0), "fell_forward"),
        ((-1.0, 0.0, 0.0), "fell_backward"),
        ((0.0, 1.0, 0.0), "fell_sideways"),
        ((0.0, -1.0, 0.0), "fell_sideways"),
    ],
)
def test_pushed_humanoid_falls_in_the_push_direction(free_humanoid, force, label):
    record = run_episode(free_humanoid, push(force))
    behavior = label_of(record, free_humanoid.spaces.control_dt)
    assert record.terminated  # the env itself ended it: the torso dropped below 1 m
    assert behavior.label == label, behavior
    assert behavior.fell and behavior.height < 1.0
    assert behavior.tilt_deg > THRESHOLDS.fall_tilt_deg
    if label == "fell_forward":
        assert behavior.pitch_deg > 45 and behavior.forward > 0.3
    if label == "fell_backward":
        assert behavior.pitch_deg < -30 and behavior.forward < -0.3
    assert behavior.duration == pytest.approx(record.length * 0.015)


def test_unpushed_limp_humanoid_collapses_on_the_spot(free_humanoid):
    record = run_episode(free_humanoid, lambda data, t: None)
    behavior = label_of(record, free_humanoid.spaces.control_dt)
    assert record.terminated
    assert behavior.label == "collapsed", behavior
    assert behavior.distance < THRESHOLDS.walk_distance and behavior.tilt_deg < THRESHOLDS.fall_tilt_deg


# -- upright: held by the handle -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("speed", "axis", "label"),
    [
        (0.0, 0, "stood_still"),
        (1.0, 0, "walked_forward"),
        (-1.0, 0, "walked_backward"),
        (1.0, 1, "walked_sideways"),
    ],
)
def test_humanoid_held_upright_or_dragged(handled_humanoid, speed, axis, label):
    dt = handled_humanoid.spaces.control_dt
    record = run_episode(handled_humanoid, drag(speed, axis, dt))
    behavior = label_of(record, dt)
    assert not record.terminated and record.length == 100  # time limit, never fell
    assert behavior.label == label, behavior
    assert not behavior.fell and behavior.tilt_deg < 5 and behavior.height > 1.3
    travelled = (behavior.forward, behavior.sideways)[axis]
    assert travelled == pytest.approx(speed * 100 * dt, abs=0.1)  # followed the handle
    if label == "walked_forward":
        assert behavior.forward_speed == pytest.approx(1.0, abs=0.1)


# -- the pure parts --------------------------------------------------------------------------


def test_up_axis_and_lean_angles_of_known_rotations():
    assert up_axis(1, 0, 0, 0) == pytest.approx([0, 0, 1])
    half = math.radians(30) / 2  # 30 degrees about +y: the top tips towards +x (forward)
    up = up_axis(math.cos(half), 0, math.sin(half), 0)
    assert up == pytest.approx([0.5, 0, math.sqrt(3) / 2])
    pitch, roll, tilt = lean_angles(up)
    assert (pitch, roll, tilt) == pytest.approx((30, 0, 30))
    half = math.radians(90) / 2  # 90 degrees about +x: the top tips towards -y (right)
    pitch, roll, tilt = lean_angles(up_axis(math.cos(half), math.sin(half), 0, 0))
    assert (roll, tilt) == pytest.approx((-90, 90))


@pytest.mark.parametrize(
    ("dx", "dy", "expected"),
    [
        (1, 0, "forward"),
        (1, 0.9, "forward"),
        (-1, 0.5, "backward"),
        (0, 1, "sideways"),
        (0.5, -1, "sideways"),
    ],
)
def test_direction_cones(dx, dy, expected):
    assert direction(dx, dy, 45.0) == expected


def test_lying_down_at_the_time_limit_counts_as_a_fall():
    q = (math.cos(math.pi / 4), 0, math.sin(math.pi / 4), 0)  # face down towards +x, not terminated
    body = dict(zip(BODY_KEYS, (0, 0, 0.2, 0, 0.3, *q), strict=True))
    record = EpisodeRecord(env_index=0, ret=0.0, length=50, terminated=False, body=body)
    assert label_of(record, 0.02).label == "fell_forward"


def test_a_fall_goes_where_the_body_went_else_where_it_leans():
    lean_back = (math.cos(math.radians(-25) / 2), 0, math.sin(math.radians(-25) / 2), 0)
    lunge = dict(zip(BODY_KEYS, (0, 0, 0.8, 0.1, 0.95, *lean_back), strict=True))  # 0.8 m forward
    on_the_spot = {**lunge, "x": 0.1}
    sank = {**on_the_spot, "qw": 1.0, "qy": 0.0}
    labels = [
        label_of(EpisodeRecord(env_index=0, ret=0.0, length=40, terminated=True, body=body), 0.015).label
        for body in (lunge, on_the_spot, sank)
    ]
    assert labels == ["fell_forward", "fell_backward", "collapsed"]


def test_no_root_body_means_no_label_and_no_fractions():
    record = EpisodeRecord(env_index=0, ret=1.0, length=10, terminated=True)
    assert label_episode(record, 0.02, THRESHOLDS) is None
    assert behavior_fractions([record], 0.02, THRESHOLDS) == {}


def test_fractions_and_counts_cover_every_label(free_humanoid):
    dt = free_humanoid.spaces.control_dt
    records = [run_episode(free_humanoid, push(f)) for f in [(1, 0, 0), (1, 0, 0), (-1, 0, 0), (0, 1, 0)]]
    fractions = behavior_fractions(records, dt, THRESHOLDS)
    assert set(fractions) == {f"behavior/{label}" for label in LABELS}
    assert fractions["behavior/fell_forward"] == 0.5
    assert fractions["behavior/fell_backward"] == fractions["behavior/fell_sideways"] == 0.25
    assert sum(fractions.values()) == pytest.approx(1.0)
    counts = label_counts(label_episode(r, dt, THRESHOLDS) for r in records)
    assert format_counts(counts) == "fell_forward 2, fell_backward 1, fell_sideways 1"
