"""The batched MuJoCo backend: N ``MjData`` of one ``MjModel`` stepped by a pool of native threads.

Why it is fast: ``mujoco.mj_step`` releases the GIL, so ``env.threads`` Python threads (the caller
plus ``threads - 1`` workers) step the envs, pulling them one by one, at the speed of the C code;
the per-env Python work is two calls into MuJoCo and a few ``np.copyto`` of the fields the task
reads. Observations, rewards and terminations are then computed for all envs at once with numpy.

Why not ``mujoco.rollout`` or ``mujoco.batch``: both step on native threads, but they hand back
only the state (and fields of their own MjData, after the fact), while Gymnasium's humanoid and
ant observe ``cfrc_ext`` from ``mj_rnePostConstraint`` run on each env's MjData after its RK4
step, which neither can do; with them the numbers would not be Gymnasium's.

Why it is exact: each task below is a transcription of its Gymnasium v5 env (``step``, ``_get_obs``,
``_get_rew``, ``is_healthy``, ``reset_model``), with the same operations on the same dtypes, and
every env makes the same MuJoCo calls in the same order as Gymnasium's ``MujocoEnv``
(``mj_resetData``, ``mj_forward`` on reset; ``mj_step(nstep=frame_skip)`` then
``mj_rnePostConstraint`` on step). So the same model, initial state and actions give bit-identical
observations, rewards, terminations and truncations (tests/test_batched_env.py checks it). Env
``i`` draws its reset noise from ``np.random.Generator(PCG64(SeedSequence(seed + i)))``, as
Gymnasium's ``reset(seed=seed + i)`` does, so even the seeded resets match.

Auto-reset, ``final_obs``, terminated-vs-truncated and :class:`EpisodeRecord` follow
:class:`locomo.envs.gymnasium_backend.GymnasiumVecEnv`; reward terms are read by the same info
keys (``reward_forward``, ``reward_survive``, ...) and scaled by ``env.reward_scales``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, ClassVar

import mujoco
import numpy as np
from gymnasium.envs.mujoco.mujoco_env import expand_model_path
from omegaconf import DictConfig, OmegaConf

from locomo.config import BATCHED_ENV_IDS, ConfigError, resolve_xml_file
from locomo.envs.base import EnvStep, EpisodeRecord, SpaceInfo
from locomo.envs.gymnasium_backend import UNSTABLE_SLICE, RewardTerms, body_record, invalid_mjcf

_INTEGRATION = mujoco.mjtState.mjSTATE_INTEGRATION

Fields = dict[str, np.ndarray]  # MjData field name -> [N, *field shape] float64, gathered per env

# Keyword arguments Gymnasium's MujocoEnv takes for rendering only: accepted and ignored here.
RENDER_KWARGS = frozenset(
    {"width", "height", "camera_id", "camera_name", "default_camera_config", "max_geom", "visual_options"}
)


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# ---------------------------------------------------------------------------------------------
# Tasks: Gymnasium v5's observation, reward and termination, vectorised over envs


class Task:
    """One Gymnasium v5 MuJoCo env's formulas, on fields stacked over N envs.

    Subclasses declare the Gymnasium keyword arguments they take (``defaults``, same names and
    default values as the Gymnasium env's ``__init__``), the MjData fields they read
    (``fields``), and implement :meth:`observe`, :meth:`position` and :meth:`evaluate`.
    """

    gym_id: ClassVar[str]
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


TASKS: dict[str, type[Task]] = {
    task.gym_id: task for task in (Humanoid, Walker2d, Hopper, HalfCheetah, Ant, InvertedPendulum)
}
DEFAULT_XML = {
    "Humanoid-v5": "humanoid.xml",
    "Walker2d-v5": "walker2d_v5.xml",
    "Hopper-v5": "hopper.xml",
    "HalfCheetah-v5": "half_cheetah.xml",
    "Ant-v5": "ant.xml",
    "InvertedPendulum-v5": "inverted_pendulum.xml",
}
assert set(TASKS) == set(BATCHED_ENV_IDS) == set(DEFAULT_XML)


# ---------------------------------------------------------------------------------------------
# The thread pool


class WorkerPool:
    """Runs ``fn(i)`` for a list of indices on ``threads`` threads that pull the indices one by one.

    The calling thread is one of the ``threads`` (so ``threads=1`` starts no thread at all).
    Pulling from a shared iterator balances the load: a thread whose core is busy with another
    process, or whose envs are costlier (a body on the ground has more contacts than one in the
    air), simply takes fewer envs, where fixed slices would make everyone wait for the slowest.
    Useful only for functions that spend their time in C code that releases the GIL.
    """

    def __init__(self, threads: int) -> None:
        self.threads = max(1, threads)
        self.executor = ThreadPoolExecutor(self.threads - 1, "locomo-sim") if self.threads > 1 else None

    def map(self, fn: Callable[[int], None], indices: Sequence[int], min_per_thread: int = 1) -> None:
        """Call ``fn(i)`` for every ``i`` in ``indices``, on at most ``len(indices) // min_per_thread``
        threads; return when all are done (re-raising the first error)."""
        helpers = min(self.threads, len(indices) // max(1, min_per_thread)) - 1
        if self.executor is None or helpers <= 0:
            for i in indices:
                fn(i)
            return
        pending = iter(indices)
        lock = threading.Lock()

        def drain() -> None:
            while True:
                with lock:
                    i = next(pending, None)
                if i is None:
                    return
                fn(i)

        futures: list[Future[None]] = [self.executor.submit(drain) for _ in range(helpers)]
        try:
            drain()
        finally:
            for future in futures:
                future.result()

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True)
            self.executor = None


# ---------------------------------------------------------------------------------------------
# The vector env


def _plain(cfg: Any) -> dict[str, Any]:
    """A config mapping as plain Python values."""
    if cfg is None:
        return {}
    if isinstance(cfg, DictConfig):
        container = OmegaConf.to_container(cfg, resolve=True)
        assert isinstance(container, dict)
        return {str(k): v for k, v in container.items()}
    return dict(cfg)


def _tuples(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Lists from YAML (ranges such as healthy_z_range) as the tuples Gymnasium expects."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}


def load_task(env_cfg: Any) -> Task:
    """The :class:`Task` and its model for an ``env`` config (id, xml_file, kwargs)."""
    if env_cfg.id not in TASKS:
        raise ConfigError(
            "env.id",
            env_cfg.id,
            f"env.backend=batched supports {', '.join(TASKS)}; use env.backend=gymnasium for other ids",
        )
    kwargs = _tuples(_plain(env_cfg.kwargs))
    if env_cfg.xml_file is not None:
        xml = resolve_xml_file(env_cfg.xml_file)
    else:
        xml = expand_model_path(str(kwargs.get("xml_file", DEFAULT_XML[env_cfg.id])))
    try:
        model = mujoco.MjModel.from_xml_path(str(xml))
    except ValueError as exc:  # MuJoCo could not compile the model
        raise invalid_mjcf(env_cfg.xml_file or str(xml), exc) from exc
    return TASKS[env_cfg.id](model, kwargs)


def default_max_episode_steps(gym_id: str) -> int | None:
    """The time limit Gymnasium registers for ``gym_id``."""
    import gymnasium as gym

    return gym.spec(gym_id).max_episode_steps


class BatchedMujocoVecEnv:
    """N copies of a Gymnasium v5 MuJoCo task on one model, stepped by ``threads`` threads."""

    def __init__(self, env_cfg: Any, num_envs: int, threads: int | None = None) -> None:
        self.task = task = load_task(env_cfg)
        self.model = model = task.model
        self.num_envs = n = num_envs
        cfg_threads = int(getattr(env_cfg, "threads", 0) or 0) if threads is None else threads
        self.threads = min(n, cfg_threads if cfg_threads > 0 else available_cores())
        self.pool = WorkerPool(self.threads)
        steps = env_cfg.max_episode_steps
        self.max_episode_steps = int(steps) if steps is not None else default_max_episode_steps(env_cfg.id)
        self.reward_terms = RewardTerms(_plain(env_cfg.reward_terms), _plain(env_cfg.reward_scales))

        self.datas = [mujoco.MjData(model) for _ in range(n)]
        probe = self.datas[0]
        self.fields: Fields = {
            name: np.zeros((n, *getattr(probe, name).shape), dtype=np.float64) for name in task.fields
        }
        # Instability counters of every env after its last step (cleared before each step).
        self._unstable_counts = np.zeros((n, UNSTABLE_SLICE.stop - UNSTABLE_SLICE.start), dtype=np.int32)
        self._unstable_views = [d.warning.number[UNSTABLE_SLICE] for d in self.datas]
        # Per env: (destination row, MjData view) pairs, so a gather is a few np.copyto calls.
        self._gather = [
            [(self.fields[name][i], getattr(d, name)) for name in task.fields]
            + [(self._unstable_counts[i], self._unstable_views[i])]
            for i, d in enumerate(self.datas)
        ]
        self._ctrl_views = [d.ctrl for d in self.datas]
        self._ctrl = np.zeros((n, model.nu))
        self._all = np.arange(n)
        self._all_list = list(range(n))
        self._rngs = [np.random.Generator(np.random.PCG64(np.random.SeedSequence(i))) for i in range(n)]
        self._reset_qpos = np.zeros((n, model.nq))
        self._reset_qvel = np.zeros((n, model.nv))
        self._frame_skip, self._rne = task.frame_skip, task.needs_rne_post_constraint
        self._free_root = model.njnt > 0 and model.jnt_type[0] == int(mujoco.mjtJoint.mjJNT_FREE)

        bounds = model.actuator_ctrlrange.copy().astype(np.float32)
        self.spaces = SpaceInfo(
            obs_dim=task.observe({k: v[:1] for k, v in self.fields.items()}).shape[1],
            discrete=False,
            action_dim=model.nu,
            action_low=bounds[:, 0].copy(),
            action_high=bounds[:, 1].copy(),
            control_dt=float(task.dt),
        )
        self._check_reward_terms()
        task.wanted = frozenset(self.reward_terms.keys.values())

        self._returns = np.zeros(n)
        self._lengths = np.zeros(n, dtype=np.int64)
        self._term_sums = {name: np.zeros(n) for name in self.reward_terms.names}
        self._start_pose = np.zeros((n, 7))
        self._position = task.position(self.fields)  # [N, 1 or 2] position after the last step
        self._last_obs = self._reset_envs(self._all).astype(np.float32)

    def _check_reward_terms(self) -> None:
        """Every ``env.reward_terms`` key must be one the task reports (as Gymnasium's info)."""
        if not self.reward_terms.keys:
            return
        probe = {k: v[:1] for k, v in self.fields.items()}
        position = self.task.position(probe)
        _, _, info = self.task.evaluate(probe, position, position, np.zeros((1, self.model.nu)))
        for name, key in self.reward_terms.keys.items():
            if key not in info:
                raise ConfigError(
                    f"env.reward_terms.{name}", key, f"{self.task.gym_id} reports {', '.join(info)}"
                )

    # -- the work done on the threads -----------------------------------------------------------

    def _step_env(self, i: int) -> None:
        """Step env ``i`` by frame_skip substeps with its ctrl; gather its fields and blow-up counts."""
        d = self.datas[i]
        self._ctrl_views[i][:] = self._ctrl[i]
        self._unstable_views[i].fill(0)  # a count > 0 after the step means this step blew up
        mujoco.mj_step(self.model, d, self._frame_skip)
        if self._rne:
            mujoco.mj_rnePostConstraint(self.model, d)
        for dst, src in self._gather[i]:
            np.copyto(dst, src)

    def _reset_env(self, i: int) -> None:
        """MujocoEnv.reset + set_state for env ``i`` (noise already drawn); gather its fields."""
        d = self.datas[i]
        mujoco.mj_resetData(self.model, d)
        d.qpos[:] = self._reset_qpos[i]
        d.qvel[:] = self._reset_qvel[i]
        mujoco.mj_forward(self.model, d)
        for dst, src in self._gather[i]:
            np.copyto(dst, src)

    def _reset_envs(self, indices: np.ndarray) -> np.ndarray:
        """Reset envs ``indices``; return their first observations [len(indices), O] float64."""
        for i in indices:  # each env's own generator, in Gymnasium's order of draws
            self._reset_qpos[i], self._reset_qvel[i] = self.task.reset_noise(self._rngs[i])
        # A reset costs about one mj_forward: share them out only when every thread gets two.
        self.pool.map(self._reset_env, indices.tolist(), min_per_thread=2)
        self._returns[indices] = 0.0
        self._lengths[indices] = 0
        for sums in self._term_sums.values():
            sums[indices] = 0.0
        fields = {k: v[indices] for k, v in self.fields.items()}
        self._position[indices] = self.task.position(fields)
        if self._free_root:
            self._start_pose[indices] = fields["qpos"][:, :7]
        return self.task.observe(fields)

    # -- VecEnv ---------------------------------------------------------------------------------

    def reset(self, seed: int) -> np.ndarray:
        self._rngs = [
            np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed + i)))
            for i in range(self.num_envs)
        ]
        self._last_obs = self._reset_envs(self._all).astype(np.float32)
        return self._last_obs.copy()

    def get_state(self) -> dict[str, Any]:
        """See :meth:`locomo.envs.base.VecEnv.get_state`.

        MuJoCo's integration state of every env, plus the gathered fields the next step reads
        before it simulates (the position the forward velocity is measured from): mj_step
        recomputes every other derived quantity from the integration state.
        """
        integration = np.empty((self.num_envs, mujoco.mj_stateSize(self.model, _INTEGRATION)))
        for i, d in enumerate(self.datas):
            mujoco.mj_getState(self.model, d, integration[i], _INTEGRATION)
        return {
            "integration": integration,
            "fields": {name: array.copy() for name, array in self.fields.items()},
            "rngs": [rng.bit_generator.state for rng in self._rngs],
            "returns": self._returns.copy(),
            "lengths": self._lengths.copy(),
            "term_sums": {name: sums.copy() for name, sums in self._term_sums.items()},
            "start_pose": self._start_pose.copy(),
            "last_obs": self._last_obs.copy(),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """See :meth:`locomo.envs.base.VecEnv.set_state`."""
        integration = np.asarray(state["integration"], dtype=np.float64)
        expected = (self.num_envs, mujoco.mj_stateSize(self.model, _INTEGRATION))
        if integration.shape != expected:
            raise ValueError(
                f"saved env state has shape {integration.shape}, this vec env needs {expected} "
                "(a different number of envs or model?)"
            )
        for i, d in enumerate(self.datas):
            mujoco.mj_setState(self.model, d, integration[i], _INTEGRATION)
        for name, array in self.fields.items():
            array[...] = state["fields"][name]
        self._position = self.task.position(self.fields)
        for rng, saved in zip(self._rngs, state["rngs"], strict=True):
            rng.bit_generator.state = saved
        self._returns[:] = state["returns"]
        self._lengths[:] = state["lengths"]
        for name, sums in self._term_sums.items():
            sums[:] = state["term_sums"][name]
        self._start_pose[:] = state["start_pose"]
        self._last_obs = np.array(state["last_obs"], dtype=np.float32)

    def step(self, actions: np.ndarray) -> EnvStep:
        """Step all envs with actions [N, A] (clipped to the bounds), auto-resetting those that end.

        When no env ended, ``final_obs`` is the same array as ``obs`` (read-only use assumed).
        """
        actions = np.clip(actions, self.spaces.action_low, self.spaces.action_high)
        task, n = self.task, self.num_envs
        self._ctrl[:] = actions
        self.pool.map(self._step_env, self._all_list)

        f = self.fields
        before, self._position = self._position, task.position(f)
        obs64 = task.observe(f)
        env_reward, terminated, info = task.evaluate(f, before, self._position, actions)
        self._lengths += 1
        time_up = (
            self._lengths >= self.max_episode_steps
            if self.max_episode_steps is not None
            else np.zeros(n, dtype=bool)
        )
        truncated = time_up & ~terminated

        names = self.reward_terms.names
        if self.reward_terms.keys:
            terms64 = {
                name: np.multiply(self.reward_terms.scales[name], info[key], dtype=np.float64)
                for name, key in self.reward_terms.keys.items()
            }
        else:
            terms64 = {"env": env_reward.astype(np.float64)}
        unstable = self._unstable_counts.any(axis=1)
        if unstable.any():  # MuJoCo reset those envs mid-step: cut the episode at the last good obs
            for value in terms64.values():
                value[unstable] = 0.0
            terminated = terminated & ~unstable
            truncated = truncated | unstable
            obs64[unstable] = self._last_obs[unstable]
        total = sum(terms64.values(), start=np.zeros(n))
        self._returns += total
        for name, value in terms64.items():
            self._term_sums[name] += value

        obs = final_obs = obs64.astype(np.float32)
        episodes: list[EpisodeRecord] = []
        done = terminated | truncated
        if done.any():
            final_obs = obs.copy()
            ids = np.flatnonzero(done)
            qpos = f["qpos"]
            for i in ids:
                episodes.append(
                    EpisodeRecord(
                        env_index=int(i),
                        ret=float(self._returns[i]),
                        length=int(self._lengths[i]),
                        terminated=bool(terminated[i]),
                        terms={name: float(self._term_sums[name][i]) for name in names},
                        body=body_record(self._start_pose[i], qpos[i, :7])
                        if self._free_root and not unstable[i]
                        else {},
                        unstable=bool(unstable[i]),
                    )
                )
            obs[ids] = self._reset_envs(ids)
        self._last_obs = obs  # never written to after this point
        return EnvStep(
            obs,
            total.astype(np.float32),
            terminated,
            truncated,
            final_obs,
            {name: value.astype(np.float32) for name, value in terms64.items()},
            episodes,
        )

    def close(self) -> None:
        self.pool.close()
