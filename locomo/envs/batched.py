"""The batched MuJoCo backend: N ``MjData`` of one ``MjModel`` stepped by a pool of native threads.

Why it is fast: ``mujoco.mj_step`` releases the GIL, so ``env.threads`` Python threads (the caller
plus ``threads - 1`` workers) step the envs, pulling them one by one, at the speed of the C code;
the per-env Python work is two calls into MuJoCo and a few ``np.copyto`` of the fields the task
reads. Observations, rewards and terminations are then computed for all envs at once with numpy.

Why not ``mujoco.rollout`` or ``mujoco.batch``: both step on native threads, but they hand back
only the state (and fields of their own MjData, after the fact), while Gymnasium's humanoid and
ant observe ``cfrc_ext`` from ``mj_rnePostConstraint`` run on each env's MjData after its RK4
step, which neither can do; with them the numbers would not be Gymnasium's.

Why it is exact: each task (:mod:`locomo.envs.tasks`) is a transcription of its Gymnasium v5
env (``step``, ``_get_obs``, ``_get_rew``, ``is_healthy``, ``reset_model``), with the same
operations on the same dtypes, and every env makes the same MuJoCo calls in the same order as
Gymnasium's ``MujocoEnv`` (``mj_resetData``, ``mj_forward`` on reset; ``mj_step(nstep=frame_skip)`` then
``mj_rnePostConstraint`` on step). So the same model, initial state and actions give bit-identical
observations, rewards, terminations and truncations (tests/test_batched_env.py checks it). Env
``i`` draws its reset noise from ``np.random.Generator(PCG64(SeedSequence(seed + i)))``, as
Gymnasium's ``reset(seed=seed + i)`` does, so even the seeded resets match.

Auto-reset, ``final_obs``, terminated-vs-truncated and :class:`EpisodeRecord` follow
:class:`locomo.envs.gymnasium_backend.GymnasiumVecEnv`; reward terms are read by the same info
keys (``reward_forward``, ``reward_survive``, ...) and scaled by ``env.reward_scales``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium.envs.mujoco.mujoco_env import expand_model_path
from omegaconf import DictConfig, OmegaConf

from locomo.envs.base import EnvStep, EpisodeRecord, SpaceInfo, record_so_far
from locomo.envs.gymnasium_backend import (
    RewardTerms,
    announce_compile,
    body_record,
    check_model_runs,
    invalid_mjcf,
)
from locomo.envs.mujoco_data import UNSTABLE_SLICE
from locomo.envs.pool import WorkerPool, available_cores
from locomo.envs.tasks import TASKS, Fields, Task, check_batched_id
from locomo.errors import ConfigError
from locomo.paths import env_xml_path

_INTEGRATION = mujoco.mjtState.mjSTATE_INTEGRATION


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


def load_task(env_cfg: DictConfig) -> Task:
    """The :class:`Task` and its model for an ``env`` config (id, xml_file, kwargs)."""
    check_batched_id(env_cfg.id)
    kwargs = _tuples(_plain(env_cfg.kwargs))
    if env_cfg.xml_file is not None:
        xml = env_xml_path(env_cfg)
    else:
        xml = expand_model_path(str(kwargs.get("xml_file", TASKS[env_cfg.id].default_xml)))
    announce_compile(Path(xml))
    try:
        model = mujoco.MjModel.from_xml_path(str(xml))
    except (ValueError, mujoco.FatalError) as exc:  # MuJoCo could not compile the model
        raise invalid_mjcf(env_cfg.xml_file or str(xml), exc) from exc
    if env_cfg.xml_file is not None:
        check_model_runs(model, env_cfg.xml_file)
    return TASKS[env_cfg.id](model, kwargs)


def default_max_episode_steps(gym_id: str) -> int | None:
    """The time limit Gymnasium registers for ``gym_id``."""
    return gym.spec(gym_id).max_episode_steps


class BatchedMujocoVecEnv:
    """N copies of a Gymnasium v5 MuJoCo task on one model, stepped by ``threads`` threads."""

    def __init__(
        self,
        env_cfg: DictConfig,
        num_envs: int,
        threads: int | None = None,
        autoreset: bool = True,
    ) -> None:
        self.autoreset = autoreset
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
        self._active = np.ones(n, dtype=bool)  # without autoreset: the envs whose episode goes on
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
        self._active[:] = True
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
        stepped = self._all_list if self.autoreset else np.flatnonzero(self._active).tolist()
        self.pool.map(self._step_env, stepped)

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
        if not self.autoreset:  # an env whose episode ended is not stepped: nothing of it to report
            terminated, truncated, unstable = (x & self._active for x in (terminated, truncated, unstable))
            for value in terms64.values():
                value[~self._active] = 0.0
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
            if self.autoreset:
                obs[ids] = self._reset_envs(ids)
            else:
                self._active[ids] = False
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

    def current_episodes(self, indices: list[int]) -> list[EpisodeRecord]:
        """See :meth:`locomo.envs.base.VecEnv.current_episodes`."""
        qpos = np.stack([self.datas[i].qpos[:7] for i in indices]) if self._free_root and indices else None
        return [
            record_so_far(
                i,
                self._returns,
                self._lengths,
                self._term_sums,
                body_record(self._start_pose[i], qpos[k]) if qpos is not None else {},
            )
            for k, i in enumerate(indices)
        ]

    def mujoco_states(self) -> tuple[np.ndarray, np.ndarray]:
        """See :meth:`locomo.envs.base.VecEnv.mujoco_states`."""
        return np.stack([d.qpos for d in self.datas]), np.stack([d.qvel for d in self.datas])

    def mujoco_model(self) -> mujoco.MjModel:
        return self.model

    def close(self) -> None:
        self.pool.close()
