"""Gymnasium v5's MuJoCo tasks, vectorised: observation, reward and termination for N envs at once.

Each task is a transcription of its Gymnasium v5 env (``step``, ``_get_obs``, ``_get_rew``,
``is_healthy``, ``reset_model``), with the same operations on the same dtypes, so the same model,
initial state and actions give bit-identical observations, rewards and terminations
(tests/test_batched_env.py checks it). :data:`TASKS` is the one registry of the tasks
``env.backend=batched`` runs (:func:`check_batched_id` refuses any other id, for the config's check
and the backend alike); :mod:`locomo.envs.batched` steps them.
"""

from __future__ import annotations

from typing import Any, ClassVar

import mujoco
import numpy as np

from locomo.errors import ConfigError

Fields = dict[str, np.ndarray]  # MjData field name -> [N, *field shape] float64, gathered per env

# Keyword arguments Gymnasium's MujocoEnv takes for rendering only: accepted and ignored here.
RENDER_KWARGS = frozenset(
    {"width", "height", "camera_id", "camera_name", "default_camera_config", "max_geom", "visual_options"}
)


class Task:
    """One Gymnasium v5 MuJoCo env's formulas, on fields stacked over N envs.

    Subclasses declare the Gymnasium keyword arguments they take (``defaults``, same names and
    default values as the Gymnasium env's ``__init__``), the MjData fields they read
    (``fields``), and implement :meth:`observe`, :meth:`position` and :meth:`evaluate`.
    """

    gym_id: ClassVar[str]
    default_xml: ClassVar[str]  # Gymnasium's model file (in its assets) when env.xml_file is not given
    defaults: ClassVar[dict[str, Any]]
    fields: ClassVar[tuple[str, ...]] = ("qpos", "qvel")
    needs_rne_post_constraint: ClassVar[bool] = False  # cfrc_ext is read: run mj_rnePostConstraint
    normal_qvel_noise: ClassVar[bool] = False  # qvel noise: scale * N(0, 1) instead of U(-scale, scale)

    def __init__(self, model: mujoco.MjModel, kwargs: dict[str, Any]) -> None:
        unknown = set(kwargs) - set(self.defaults) - RENDER_KWARGS - {"xml_file"}
        if unknown:
            name = sorted(unknown)[0]
            raise ConfigError(
                f"env.kwargs.{name}",
                kwargs[name],
                f"not an argument of {self.gym_id}; it takes {', '.join(self.defaults)}",
            )
        self.model = model
        self.args = {**self.defaults, **{k: v for k, v in kwargs.items() if k in self.defaults}}
        self.frame_skip = int(self.args["frame_skip"])
        self.dt = model.opt.timestep * self.frame_skip  # Gymnasium's MujocoEnv.dt
        self.reset_noise_scale = self.args["reset_noise_scale"]
        self.init_qpos = mujoco.MjData(model).qpos.ravel().copy()
        self.init_qvel = np.zeros(model.nv)

    # Info keys the caller reads (None: all); info entries that cost per-env work are skipped if unread.
    wanted: frozenset[str] | None = None

    def distance_from_origin(self, qpos: np.ndarray) -> dict[str, np.ndarray]:
        """``{"distance_from_origin": [N]}`` if wanted: Gymnasium's ``np.linalg.norm(qpos[0:2])``.

        Computed row by row, as Gymnasium does, since the vectorised norm may round differently.
        """
        if self.wanted is not None and "distance_from_origin" not in self.wanted:
            return {}
        return {"distance_from_origin": np.array([np.linalg.norm(row[0:2], ord=2) for row in qpos])}

    def observe(self, f: Fields) -> np.ndarray:
        """[N, O] float64 observations (Gymnasium's ``_get_obs`` for every env)."""
        raise NotImplementedError

    def position(self, f: Fields) -> np.ndarray:
        """[N, 1 or 2] the position whose finite difference over a step is the velocity rewarded."""
        return f["qpos"][:, :1].copy()

    def evaluate(
        self, f: Fields, before: np.ndarray, after: np.ndarray, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Env reward [N], terminated [N] bool and the info dict (name -> [N]) after a step.

        ``before`` and ``after`` are :meth:`position` [N, 1 or 2] before and after the step.
        """
        raise NotImplementedError

    def reset_noise(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """qpos [nq] and qvel [nv] of a reset, drawn exactly as Gymnasium's ``reset_model``."""
        scale, model = self.reset_noise_scale, self.model
        qpos = self.init_qpos + rng.uniform(low=-scale, high=scale, size=model.nq)
        if self.normal_qvel_noise:
            qvel = self.init_qvel + scale * rng.standard_normal(model.nv)
        else:
            qvel = self.init_qvel + rng.uniform(low=-scale, high=scale, size=model.nv)
        return qpos, qvel


def _flat(x: np.ndarray) -> np.ndarray:
    """[N, ...] -> [N, prod(...)]."""
    return x.reshape(x.shape[0], -1)


class Humanoid(Task):
    """Gymnasium's Humanoid-v5 (gymnasium/envs/mujoco/humanoid_v5.py)."""

    gym_id = "Humanoid-v5"
    default_xml = "humanoid.xml"
    defaults: ClassVar[dict[str, Any]] = {
        "frame_skip": 5,
        "forward_reward_weight": 1.25,
        "ctrl_cost_weight": 0.1,
        "contact_cost_weight": 5e-7,
        "contact_cost_range": (-np.inf, 10.0),
        "healthy_reward": 5.0,
        "terminate_when_unhealthy": True,
        "healthy_z_range": (1.0, 2.0),
        "reset_noise_scale": 1e-2,
        "exclude_current_positions_from_observation": True,
        "include_cinert_in_observation": True,
        "include_cvel_in_observation": True,
        "include_qfrc_actuator_in_observation": True,
        "include_cfrc_ext_in_observation": True,
    }
    fields = ("qpos", "qvel", "cinert", "cvel", "qfrc_actuator", "cfrc_ext", "xipos")
    needs_rne_post_constraint = True

    def __init__(self, model: mujoco.MjModel, kwargs: dict[str, Any]) -> None:
        super().__init__(model, kwargs)
        self.body_mass = model.body_mass.copy()
        self.total_mass = self.body_mass.sum()

    def observe(self, f: Fields) -> np.ndarray:
        a = self.args
        parts = [
            f["qpos"][:, 2:] if a["exclude_current_positions_from_observation"] else f["qpos"],
            f["qvel"],
        ]
        if a["include_cinert_in_observation"] is True:
            parts.append(_flat(f["cinert"][:, 1:]))
        if a["include_cvel_in_observation"] is True:
            parts.append(_flat(f["cvel"][:, 1:]))
        if a["include_qfrc_actuator_in_observation"] is True:
            parts.append(f["qfrc_actuator"][:, 6:])
        if a["include_cfrc_ext_in_observation"] is True:
            parts.append(_flat(f["cfrc_ext"][:, 1:]))
        return np.concatenate(parts, axis=1)

    def position(self, f: Fields) -> np.ndarray:
        # mass_center(): (body_mass^T xipos) / sum(body_mass), x and y
        num = np.einsum("b,nbj->nj", self.body_mass, f["xipos"][:, :, :2])
        return num / self.total_mass

    def evaluate(
        self, f: Fields, before: np.ndarray, after: np.ndarray, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        a = self.args
        xy_velocity = (after - before) / self.dt
        x_velocity = xy_velocity[:, 0]
        min_z, max_z = a["healthy_z_range"]
        z = f["qpos"][:, 2]
        healthy = (min_z < z) & (z < max_z)
        forward_reward = a["forward_reward_weight"] * x_velocity
        healthy_reward = healthy * a["healthy_reward"]
        rewards = forward_reward + healthy_reward
        # Gymnasium squares data.ctrl: the float64 copy of the (clipped) action.
        ctrl_cost = a["ctrl_cost_weight"] * np.sum(np.square(actions.astype(np.float64)), axis=1)
        contact_cost = a["contact_cost_weight"] * np.sum(np.square(_flat(f["cfrc_ext"])), axis=1)
        min_cost, max_cost = a["contact_cost_range"]
        contact_cost = np.clip(contact_cost, min_cost, max_cost)
        reward = rewards - (ctrl_cost + contact_cost)
        terminated = ~healthy & bool(a["terminate_when_unhealthy"])
        qpos = f["qpos"]
        info = {
            "x_position": qpos[:, 0],
            "y_position": qpos[:, 1],
            **self.distance_from_origin(qpos),
            "x_velocity": x_velocity,
            "y_velocity": xy_velocity[:, 1],
            "reward_survive": healthy_reward,
            "reward_forward": forward_reward,
            "reward_ctrl": -ctrl_cost,
            "reward_contact": -contact_cost,
        }
        return reward, terminated, info


class Walker2d(Task):
    """Gymnasium's Walker2d-v5 (gymnasium/envs/mujoco/walker2d_v5.py)."""

    gym_id = "Walker2d-v5"
    default_xml = "walker2d_v5.xml"
    defaults: ClassVar[dict[str, Any]] = {
        "frame_skip": 4,
        "forward_reward_weight": 1.0,
        "ctrl_cost_weight": 1e-3,
        "healthy_reward": 1.0,
        "terminate_when_unhealthy": True,
        "healthy_z_range": (0.8, 2.0),
        "healthy_angle_range": (-1.0, 1.0),
        "reset_noise_scale": 5e-3,
        "exclude_current_positions_from_observation": True,
    }

    def observe(self, f: Fields) -> np.ndarray:
        position = f["qpos"][:, 1:] if self.args["exclude_current_positions_from_observation"] else f["qpos"]
        return np.concatenate((position, np.clip(f["qvel"], -10, 10)), axis=1)

    def healthy(self, f: Fields) -> np.ndarray:
        """[N] bool: torso height and angle within range."""
        z, angle = f["qpos"][:, 1], f["qpos"][:, 2]
        min_z, max_z = self.args["healthy_z_range"]
        min_angle, max_angle = self.args["healthy_angle_range"]
        return (min_z < z) & (z < max_z) & (min_angle < angle) & (angle < max_angle)

    def evaluate(
        self, f: Fields, before: np.ndarray, after: np.ndarray, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        a = self.args
        x_after = after[:, 0]
        x_velocity = (x_after - before[:, 0]) / self.dt
        healthy = self.healthy(f)
        forward_reward = a["forward_reward_weight"] * x_velocity
        healthy_reward = healthy * a["healthy_reward"]
        rewards = forward_reward + healthy_reward
        ctrl_cost = a["ctrl_cost_weight"] * np.sum(np.square(actions), axis=1)  # in the action's dtype
        reward = rewards - ctrl_cost
        terminated = ~healthy & bool(a["terminate_when_unhealthy"])
        info = {
            "x_position": x_after,
            "z_distance_from_origin": f["qpos"][:, 1] - self.init_qpos[1],
            "x_velocity": x_velocity,
            "reward_forward": forward_reward,
            "reward_ctrl": -ctrl_cost,
            "reward_survive": healthy_reward,
        }
        return reward, terminated, info


class Hopper(Walker2d):
    """Gymnasium's Hopper-v5 (gymnasium/envs/mujoco/hopper_v5.py)."""

    gym_id = "Hopper-v5"
    default_xml = "hopper.xml"
    defaults: ClassVar[dict[str, Any]] = {
        "frame_skip": 4,
        "forward_reward_weight": 1.0,
        "ctrl_cost_weight": 1e-3,
        "healthy_reward": 1.0,
        "terminate_when_unhealthy": True,
        "healthy_state_range": (-100.0, 100.0),
        "healthy_z_range": (0.7, float("inf")),
        "healthy_angle_range": (-0.2, 0.2),
        "reset_noise_scale": 5e-3,
        "exclude_current_positions_from_observation": True,
    }

    def healthy(self, f: Fields) -> np.ndarray:
        state = np.concatenate((f["qpos"], f["qvel"]), axis=1)[:, 2:]
        min_state, max_state = self.args["healthy_state_range"]
        healthy_state = np.all(np.logical_and(min_state < state, state < max_state), axis=1)
        return healthy_state & super().healthy(f)


class HalfCheetah(Task):
    """Gymnasium's HalfCheetah-v5 (gymnasium/envs/mujoco/half_cheetah_v5.py); never terminates."""

    gym_id = "HalfCheetah-v5"
    default_xml = "half_cheetah.xml"
    defaults: ClassVar[dict[str, Any]] = {
        "frame_skip": 5,
        "forward_reward_weight": 1.0,
        "ctrl_cost_weight": 0.1,
        "reset_noise_scale": 0.1,
        "exclude_current_positions_from_observation": True,
    }
    normal_qvel_noise = True

    def observe(self, f: Fields) -> np.ndarray:
        position = f["qpos"][:, 1:] if self.args["exclude_current_positions_from_observation"] else f["qpos"]
        return np.concatenate((position, f["qvel"]), axis=1)

    def evaluate(
        self, f: Fields, before: np.ndarray, after: np.ndarray, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        a = self.args
        x_after = after[:, 0]
        x_velocity = (x_after - before[:, 0]) / self.dt
        forward_reward = a["forward_reward_weight"] * x_velocity
        ctrl_cost = a["ctrl_cost_weight"] * np.sum(np.square(actions), axis=1)
        reward = forward_reward - ctrl_cost
        info = {
            "x_position": x_after,
            "x_velocity": x_velocity,
            "reward_forward": forward_reward,
            "reward_ctrl": -ctrl_cost,
        }
        return reward, np.zeros(len(reward), dtype=bool), info


class Ant(Task):
    """Gymnasium's Ant-v5 (gymnasium/envs/mujoco/ant_v5.py)."""

    gym_id = "Ant-v5"
    default_xml = "ant.xml"
    defaults: ClassVar[dict[str, Any]] = {
        "frame_skip": 5,
        "forward_reward_weight": 1,
        "ctrl_cost_weight": 0.5,
        "contact_cost_weight": 5e-4,
        "healthy_reward": 1.0,
        "main_body": 1,
        "terminate_when_unhealthy": True,
        "healthy_z_range": (0.2, 1.0),
        "contact_force_range": (-1.0, 1.0),
        "reset_noise_scale": 0.1,
        "exclude_current_positions_from_observation": True,
        "include_cfrc_ext_in_observation": True,
    }
    fields = ("qpos", "qvel", "cfrc_ext", "xpos")
    needs_rne_post_constraint = True
    normal_qvel_noise = True

    def __init__(self, model: mujoco.MjModel, kwargs: dict[str, Any]) -> None:
        super().__init__(model, kwargs)
        self.main_body = model.body(self.args["main_body"]).id

    def contact_forces(self, f: Fields) -> np.ndarray:
        """[N, nbody, 6] cfrc_ext clipped to contact_force_range."""
        min_value, max_value = self.args["contact_force_range"]
        return np.clip(f["cfrc_ext"], min_value, max_value)

    def observe(self, f: Fields) -> np.ndarray:
        position = f["qpos"][:, 2:] if self.args["exclude_current_positions_from_observation"] else f["qpos"]
        if self.args["include_cfrc_ext_in_observation"]:
            return np.concatenate((position, f["qvel"], _flat(self.contact_forces(f)[:, 1:])), axis=1)
        return np.concatenate((position, f["qvel"]), axis=1)

    def position(self, f: Fields) -> np.ndarray:
        return f["xpos"][:, self.main_body, :2].copy()

    def evaluate(
        self, f: Fields, before: np.ndarray, after: np.ndarray, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        a = self.args
        xy_velocity = (after - before) / self.dt
        x_velocity = xy_velocity[:, 0]
        qpos = f["qpos"]
        state = np.concatenate((qpos, f["qvel"]), axis=1)
        min_z, max_z = a["healthy_z_range"]
        healthy = np.isfinite(state).all(axis=1) & (min_z <= state[:, 2]) & (state[:, 2] <= max_z)
        forward_reward = x_velocity * a["forward_reward_weight"]
        healthy_reward = healthy * a["healthy_reward"]
        rewards = forward_reward + healthy_reward
        ctrl_cost = a["ctrl_cost_weight"] * np.sum(np.square(actions), axis=1)
        contact_cost = a["contact_cost_weight"] * np.sum(np.square(_flat(self.contact_forces(f))), axis=1)
        reward = rewards - (ctrl_cost + contact_cost)
        terminated = ~healthy & bool(a["terminate_when_unhealthy"])
        info = {
            "x_position": qpos[:, 0],
            "y_position": qpos[:, 1],
            **self.distance_from_origin(qpos),
            "x_velocity": x_velocity,
            "y_velocity": xy_velocity[:, 1],
            "reward_forward": forward_reward,
            "reward_ctrl": -ctrl_cost,
            "reward_contact": -contact_cost,
            "reward_survive": healthy_reward,
        }
        return reward, terminated, info


class InvertedPendulum(Task):
    """Gymnasium's InvertedPendulum-v5 (gymnasium/envs/mujoco/inverted_pendulum_v5.py)."""

    gym_id = "InvertedPendulum-v5"
    default_xml = "inverted_pendulum.xml"
    defaults: ClassVar[dict[str, Any]] = {"frame_skip": 2, "reset_noise_scale": 0.01}

    def observe(self, f: Fields) -> np.ndarray:
        return np.concatenate((f["qpos"], f["qvel"]), axis=1)

    def evaluate(
        self, f: Fields, before: np.ndarray, after: np.ndarray, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        obs = self.observe(f)
        terminated = ~np.isfinite(obs).all(axis=1) | (np.abs(obs[:, 1]) > 0.2)
        reward = (~terminated).astype(np.int64)
        return reward, terminated, {"reward_survive": reward}


# The one registry of the tasks env.backend=batched runs: Gymnasium id -> task.
TASKS: dict[str, type[Task]] = {
    task.gym_id: task for task in (Humanoid, Walker2d, Hopper, HalfCheetah, Ant, InvertedPendulum)
}


def check_batched_id(env_id: str) -> None:
    """ConfigError unless ``env.backend=batched`` runs ``env_id`` (a key of :data:`TASKS`)."""
    if env_id not in TASKS:
        raise ConfigError(
            "env.id", env_id, f"env.backend=batched supports {', '.join(TASKS)}; use env.backend=gymnasium"
        )
