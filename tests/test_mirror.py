"""The left-right mirror map of Humanoid-v5 (locomo/envs/mirror.py) against MuJoCo's physics.

The main check: mirror a physically sensible state (reset noise, then random actions until the
feet touch the floor), put it in a second MjData, and step both sims, one with actions ``a``, the
other with ``mirror.action(a)``; after every control step the second sim's observation must be
``mirror.obs`` of the first's, and the rewards equal. Observations come from locomo's own
:class:`locomo.envs.tasks.Humanoid` (what ``env.backend=batched`` trains on, bit-identical to
Gymnasium's Humanoid-v5: tests/test_batched_env.py).

The shipped model (assets/humanoid.xml, Gymnasium's) is not exactly mirror-symmetric in its
dynamics: right_hip_y has armature 0.008, left_hip_y 0.01; left_knee has stiffness 1, right_knee
none. And its PGS solver, capped at 50 iterations, stops before convergence at a point that
depends on the order of the constraint rows (which the reflection changes: the friction pyramid
edges of a mirrored contact come in swapped order). So the tight check runs on the shipped model
with those two parameters made equal and a converged solver; on the shipped model itself the
same check shows the drift (a negative control: the test sees a 0.002 armature difference).
"""

from __future__ import annotations

from typing import Any

import mujoco
import numpy as np
import pytest
import torch

from locomo.envs.mirror import Mirror, humanoid_mirror, observation_layout
from locomo.envs.reflection import asymmetries, reflect_model
from locomo.envs.tasks import Humanoid
from locomo.paths import ASSETS_DIR

XML = ASSETS_DIR / "humanoid.xml"
FRAME_SKIP = 5  # Humanoid-v5's control step: 5 substeps of 3 ms
# The two dynamic asymmetries of the shipped model, as asymmetries() words them.
SHIPPED_ASYMMETRIES = [
    "joints right_hip_y / left_hip_y: dof_armature 0.008 vs 0.01",
    "joints right_knee / left_knee: jnt_stiffness 0.0 vs 1.0",
]
KWARGS_VARIANTS = [
    {},
    {"exclude_current_positions_from_observation": False},
    {"include_cinert_in_observation": False, "include_cvel_in_observation": False},
    {"include_qfrc_actuator_in_observation": False, "include_cfrc_ext_in_observation": False},
]


def shipped_model() -> mujoco.MjModel:
    return mujoco.MjModel.from_xml_path(str(XML))


def symmetric_model() -> mujoco.MjModel:
    """The shipped model with the two asymmetric parameters made equal and the solver converged.

    right_hip_y takes left_hip_y's armature, right_knee left_knee's stiffness. ``mj_setConst``
    then recomputes what MuJoCo derived from the armature at compile time (``dof_invweight0``
    and ``body_invweight0``, which set the constraints' softness ``efc_R``): without it the
    mirrored contact forces still differ by ~1e-3. Newton to 1e-14 instead of 50 PGS sweeps
    (tolerance 1e-8), whose unconverged result depends on the order of the constraint rows.
    """
    model = shipped_model()
    left_hip_y, right_hip_y = model.joint("left_hip_y"), model.joint("right_hip_y")
    model.dof_armature[right_hip_y.dofadr[0]] = model.dof_armature[left_hip_y.dofadr[0]]
    model.jnt_stiffness[model.joint("right_knee").id] = model.jnt_stiffness[model.joint("left_knee").id]
    mujoco.mj_setConst(model, mujoco.MjData(model))
    model.opt.solver = mujoco.mjtSolver.mjSOL_NEWTON
    model.opt.tolerance = 1e-14
    model.opt.iterations = 100
    return model


class Sim:
    """One MjData stepped as locomo's batched backend steps an env, observed by locomo's task."""

    def __init__(self, model: mujoco.MjModel, kwargs: dict[str, Any] | None = None) -> None:
        self.model, self.task = model, Humanoid(model, kwargs or {})
        self.data = mujoco.MjData(model)

    def set_state(self, qpos: np.ndarray, qvel: np.ndarray, ctrl: np.ndarray) -> None:
        """A fresh MjData (zero solver warm start) in the state, with every observed field computed."""
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[:], self.data.qvel[:], self.data.ctrl[:] = qpos, qvel, ctrl
        mujoco.mj_forward(self.model, self.data)
        mujoco.mj_rnePostConstraint(self.model, self.data)  # cfrc_ext, as after a step

    def fields(self) -> dict[str, np.ndarray]:
        return {name: getattr(self.data, name)[None].copy() for name in self.task.fields}

    def obs(self) -> np.ndarray:
        """[O] float64 observation."""
        return self.task.observe(self.fields())[0]

    def step(self, action: np.ndarray) -> tuple[np.ndarray, dict[str, float], bool]:
        """One control step (batched backend's _step_env + evaluate): obs [O], info, terminated."""
        before = self.task.position(self.fields())
        self.data.ctrl[:] = action
        mujoco.mj_step(self.model, self.data, FRAME_SKIP)
        mujoco.mj_rnePostConstraint(self.model, self.data)
        f = self.fields()
        _, terminated, info = self.task.evaluate(f, before, self.task.position(f), action[None])
        return self.task.observe(f)[0], {k: float(v[0]) for k, v in info.items()}, bool(terminated[0])


def contact_state(model: mujoco.MjModel, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(qpos, qvel, last action): a reset drawn as Humanoid-v5 draws it, then random actions
    until a foot is on the floor (the body starts ~7 mm above it), plus a few more steps."""
    sim, rng = Sim(model), np.random.default_rng(seed)
    qpos, qvel = sim.task.reset_noise(rng)
    action = np.zeros(model.nu)
    sim.set_state(qpos, qvel, action)
    for _ in range(4):  # ~60 ms of free fall and landing
        action = rng.uniform(-0.4, 0.4, model.nu)
        sim.step(action)
    for _ in range(50):
        if sim.data.ncon > 0:
            break
        action = rng.uniform(-0.4, 0.4, model.nu)
        sim.step(action)
    assert sim.data.ncon > 0, "no contact: the state would not exercise the contact forces"
    return sim.data.qpos.copy(), sim.data.qvel.copy(), action


def mirrored_pair(
    model: mujoco.MjModel, mirror: Mirror, seed: int, kwargs: dict[str, Any] | None = None
) -> tuple[Sim, Sim]:
    """Two sims: a contact state (with its last action) and its mirror image."""
    qpos, qvel, action = contact_state(model, seed)
    a, b = Sim(model, kwargs), Sim(model, kwargs)
    a.set_state(qpos, qvel, action)
    b.set_state(*mirror.state(qpos, qvel), mirror.action(action))
    return a, b


def rollout_deviation(model: mujoco.MjModel, seed: int, steps: int) -> float:
    """Max |obs' - mirror(obs)| over ``steps`` control steps of a mirrored pair of sims."""
    mirror = humanoid_mirror(model)
    a, b = mirrored_pair(model, mirror, seed)
    rng = np.random.default_rng(1000 + seed)
    deviation = 0.0
    for _ in range(steps):
        action = rng.uniform(-0.4, 0.4, model.nu)
        obs_a, _, _ = a.step(action)
        obs_b, _, _ = b.step(mirror.action(action))
        deviation = max(deviation, float(np.abs(obs_b - mirror.obs(obs_a)).max()))
    return deviation


@pytest.fixture(scope="module")
def mirror() -> Mirror:
    return humanoid_mirror(shipped_model())


def test_mirror_is_an_involution(mirror: Mirror) -> None:
    for perm, sign in (
        (mirror.obs_perm, mirror.obs_sign),
        (mirror.act_perm, mirror.act_sign),
        (mirror.qpos_perm, mirror.qpos_sign),
        (mirror.qvel_perm, mirror.qvel_sign),
    ):
        assert np.array_equal(np.sort(perm), np.arange(len(perm)))  # a permutation
        assert np.array_equal(perm[perm], np.arange(len(perm)))
        assert np.all(sign * sign[perm] == 1.0)
    rng = np.random.default_rng(0)
    obs, act = rng.normal(size=(5, 348)), rng.normal(size=(5, 17))
    assert np.array_equal(mirror.obs(mirror.obs(obs)), obs)
    assert np.array_equal(mirror.action(mirror.action(act)), act)
    qpos, qvel = rng.normal(size=24), rng.normal(size=23)
    twice = mirror.state(*mirror.state(qpos, qvel))
    assert np.array_equal(twice[0], qpos) and np.array_equal(twice[1], qvel)
    obs_t = torch.from_numpy(obs.astype(np.float32)).reshape(5, 1, 348)
    assert torch.equal(mirror.obs(mirror.obs(obs_t)), obs_t)


def test_numpy_and_torch_agree(mirror: Mirror) -> None:
    rng = np.random.default_rng(1)
    obs = rng.normal(size=(2, 3, 348)).astype(np.float32)
    act = rng.normal(size=(4, 17)).astype(np.float32)
    assert mirror.obs(obs).dtype == np.float32 and mirror.obs(obs).shape == (2, 3, 348)
    out = mirror.obs(torch.from_numpy(obs))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert np.array_equal(out.numpy(), mirror.obs(obs))
    assert np.array_equal(mirror.action(torch.from_numpy(act)).numpy(), mirror.action(act))
    with pytest.raises(ValueError, match="last dimension of 348"):
        mirror.obs(np.zeros((2, 347)))


def test_derived_map_matches_the_hand_derivation() -> None:
    """The signs read off the joint axes, as worked out by hand from humanoid.xml.

    A hinge angle maps to its partner's with s = -(a' . M a). The abdomen's z and x axes lie in
    the mirror plane (M a = a): s = -1; its y axis is normal to it (M a = -a): s = +1. The legs'
    paired axes are each other's reflection negated (hip_x 1 0 0 / -1 0 0, hip_z 0 0 1 / 0 0 -1;
    hip_y and knee share a y axis): s = +1. The shoulders (2 1 1 / 2 -1 1, 0 -1 1 / 0 1 1) are
    each other's reflection: s = -1; the elbows (0 -1 1 / 0 -1 -1) the negated one: s = +1.
    """
    model = shipped_model()
    r = reflect_model(model)
    signs = {model.joint(j).name: r.joint_sign[j] for j in range(1, model.njnt)}
    expected = {"abdomen_z": -1, "abdomen_y": 1, "abdomen_x": -1}
    for side in ("right", "left"):
        expected |= {f"{side}_{j}": 1 for j in ("hip_x", "hip_z", "hip_y", "knee", "elbow")}
        expected |= {f"{side}_{j}": -1 for j in ("shoulder1", "shoulder2")}
    assert signs == expected
    partners = {model.joint(j).name: model.joint(r.joint_partner[j]).name for j in range(model.njnt)}
    assert partners["right_elbow"] == "left_elbow" and partners["abdomen_y"] == "abdomen_y"
    # Each actuator drives its joint's partner's actuator with the joint's sign (gears match).
    for k in range(model.nu):
        partner = r.actuator_partner[k]
        assert model.actuator(partner).name == model.joint(r.joint_partner[model.actuator_trnid[k, 0]]).name
    # The observation: qpos[2:] | qvel | cinert[1:] | cvel[1:] | qfrc_actuator[6:] | cfrc_ext[1:].
    layout = observation_layout(Humanoid(model, {}))
    blocks = [name for i, (name, _) in enumerate(layout) if i == 0 or layout[i - 1][0] != name]
    assert blocks == ["qpos", "qvel", "cinert", "cvel", "qfrc_actuator", "cfrc_ext"]
    assert len(layout) == 348
    m = humanoid_mirror(model)
    # qpos[2:] starts with z (kept), then the root quaternion (w, -x, y, -z).
    assert m.obs_perm[:5].tolist() == [0, 1, 2, 3, 4]
    assert m.obs_sign[:5].tolist() == [1, 1, -1, 1, -1]
    # qvel starts with the root's (vx, -vy, vz, -wx, wy, -wz).
    assert m.obs_sign[22:28].tolist() == [1, -1, 1, -1, 1, -1]


def test_shipped_model_asymmetries() -> None:
    """The shipped model's only dynamic asymmetries; the symmetric variant has none."""
    assert asymmetries(shipped_model()) == SHIPPED_ASYMMETRIES
    assert asymmetries(symmetric_model()) == []


@pytest.mark.parametrize("kwargs", KWARGS_VARIANTS, ids=lambda k: ",".join(k) or "defaults")
def test_mirrored_state_has_the_mirrored_observation(kwargs: dict[str, Any]) -> None:
    """obs(mirror(state)) == mirror(obs(state)), every field the map covers too, on both models.

    Shipped model: exact except the contact forces (cfrc_ext), which the asymmetric armature
    and stiffness change (they enter the accelerations the constraint solver starts from).
    """
    for model, exact_contacts in ((symmetric_model(), True), (shipped_model(), False)):
        mirror = humanoid_mirror(model, kwargs)
        layout = observation_layout(Humanoid(model, kwargs))
        contact = np.array([name == "cfrc_ext" for name, _ in layout], dtype=bool)
        for seed in (0, 1):
            a, b = mirrored_pair(model, mirror, seed, kwargs)
            assert np.abs(a.data.qfrc_actuator).max() > 1.0 and np.abs(a.data.cfrc_ext).max() > 1.0
            obs_a, obs_b = a.obs(), b.obs()
            mirrored = mirror.obs(obs_a)
            np.testing.assert_allclose(obs_b[~contact], mirrored[~contact], rtol=1e-12, atol=1e-12)
            if exact_contacts:
                np.testing.assert_allclose(obs_b[contact], mirrored[contact], rtol=1e-9, atol=1e-9)
                for name, (perm, sign) in reflect_model(model).fields.items():
                    x, y = getattr(a.data, name).ravel(), getattr(b.data, name).ravel()
                    np.testing.assert_allclose(y, sign * x[perm], rtol=1e-9, atol=1e-9, err_msg=name)
            elif contact.any():
                assert np.abs(obs_b[contact] - mirrored[contact]).max() > 1e-3


def test_mirrored_actions_drive_the_mirrored_motion() -> None:
    """The physics test: mirrored sims stepped with a and mirror(a) stay mirror images.

    Symmetric model, 3 contact states x 20 control steps (0.3 s of walking-like flailing:
    contacts made and broken, falls below the healthy height). Measured deviation ~2e-11 on
    values up to ~1e3 (the contact forces); the tolerances leave room for rounding to grow.
    """
    model = symmetric_model()
    mirror = humanoid_mirror(model)
    contact_steps = 0
    for seed in (0, 1, 2):
        a, b = mirrored_pair(model, mirror, seed)
        rng = np.random.default_rng(1000 + seed)
        for t in range(20):
            action = rng.uniform(-0.4, 0.4, model.nu)
            obs_a, info_a, done_a = a.step(action)
            obs_b, info_b, done_b = b.step(mirror.action(action))
            where = f"seed {seed}, step {t}"
            np.testing.assert_allclose(obs_b, mirror.obs(obs_a), rtol=1e-8, atol=1e-8, err_msg=where)
            assert done_a == done_b, where
            for key in ("reward_forward", "reward_survive", "reward_ctrl", "reward_contact", "x_velocity"):
                assert info_b[key] == pytest.approx(info_a[key], rel=1e-9, abs=1e-9), (where, key)
            for key in ("y_velocity", "y_position"):
                assert info_b[key] == pytest.approx(-info_a[key], rel=1e-9, abs=1e-9), (where, key)
            contact_steps += a.data.ncon > 0 and info_a["reward_contact"] < 0.0
    assert contact_steps >= 10  # the steps went through contacts, not only a free fall


def test_shipped_model_drifts_from_its_mirror_image() -> None:
    """Negative control: on the shipped model the same rollout departs from the mirror image.

    Measured (MuJoCo 4.0, seeds 0-2): max |obs' - mirror(obs)| over 10 control steps 6 to 24
    (contact forces; joint velocities 0.1 to 1), reward terms of one step from a mirrored state
    differing by up to ~1e-2. With the two parameters made equal but PGS's 50 sweeps kept:
    2e-3 to 5e-3 (contact forces; velocities ~1e-5). Symmetric model: ~2e-11.
    """
    assert rollout_deviation(shipped_model(), seed=0, steps=10) > 1e-1
    assert rollout_deviation(symmetric_model(), seed=0, steps=10) < 1e-8


def test_gymnasium_model_gives_the_same_map() -> None:
    """Gymnasium's own Humanoid-v5 model (locomo's minus a camera): same map, its obs size."""
    import gymnasium

    env = gymnasium.make("Humanoid-v5")
    try:
        theirs = humanoid_mirror(env.unwrapped.model)
        ours = humanoid_mirror(shipped_model())
        assert len(theirs.obs_perm) == env.observation_space.shape[0] == 348
        for field in ("obs_perm", "obs_sign", "act_perm", "act_sign", "qpos_perm", "qvel_sign"):
            assert np.array_equal(getattr(theirs, field), getattr(ours, field)), field
    finally:
        env.close()


def test_unsupported_models_and_kwargs_raise() -> None:
    xml = XML.read_text()
    moved = xml.replace('name="left_thigh" pos="0 0.1 -0.04"', 'name="left_thigh" pos="0 0.11 -0.04"')
    assert moved != xml
    with pytest.raises(ValueError, match=r"left_thigh.*position"):
        humanoid_mirror(mujoco.MjModel.from_xml_string(moved))
    tilted = xml.replace('axis="2 -1 1" name="left_shoulder1"', 'axis="2 -1 1.1" name="left_shoulder1"')
    assert tilted != xml
    with pytest.raises(ValueError, match="left_shoulder1"):
        humanoid_mirror(mujoco.MjModel.from_xml_string(tilted))
    with pytest.raises(ValueError, match="not an argument"):
        humanoid_mirror(shipped_model(), {"no_such_kwarg": 1})
