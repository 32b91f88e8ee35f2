"""The Gymnasium backend: N Gymnasium envs stepped in turn, with locomo's reward terms (each env's
simulator state, captured and put back: :mod:`locomo.envs.mujoco_data`)."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import mujoco
import numpy as np

from locomo.envs.base import EnvStep, EpisodeRecord, SpaceInfo, record_so_far
from locomo.envs.mujoco_data import (
    _mujoco_data,
    clear_unstable_warnings,
    env_state,
    set_env_state,
    went_unstable,
)
from locomo.errors import ConfigError
from locomo.paths import env_xml_path

if TYPE_CHECKING:  # for annotations only: nothing is imported at run time
    from omegaconf import DictConfig


def make_gymnasium_env(env_cfg: DictConfig, render_mode: str | None = None, **extra: Any) -> gym.Env:
    """Build one Gymnasium env from the ``env`` config (id, xml_file, kwargs, time limit)."""
    kwargs: dict[str, Any] = dict(env_cfg.kwargs or {})
    if env_cfg.xml_file is not None:
        xml = env_xml_path(env_cfg)
        announce_compile(xml)
        kwargs["xml_file"] = str(xml)
    if env_cfg.max_episode_steps is not None:
        kwargs["max_episode_steps"] = int(env_cfg.max_episode_steps)
    kwargs.update(extra)
    try:
        env = gym.make(env_cfg.id, render_mode=render_mode, disable_env_checker=True, **kwargs)
    except TypeError as exc:  # a keyword the env does not take
        if env_cfg.xml_file is not None and "xml_file" in str(exc):
            raise ConfigError(
                "env.xml_file",
                env_cfg.xml_file,
                f"{env_cfg.id} takes no model file (not a MuJoCo env); drop env.xml_file",
            ) from exc
        user_kwargs = dict(env_cfg.kwargs or {})
        raise ConfigError("env.kwargs", user_kwargs, f"{env_cfg.id} does not accept them ({exc})") from exc
    except (ValueError, mujoco.FatalError) as exc:  # MuJoCo could not compile the model
        if "xml_file" in kwargs:
            raise invalid_mjcf(env_cfg.xml_file, exc) from exc
        raise
    model = getattr(env.unwrapped, "model", None)
    if env_cfg.xml_file is not None and isinstance(model, mujoco.MjModel):
        try:
            check_model_runs(model, env_cfg.xml_file)
        except ConfigError:
            env.close()
            raise
    return env


# From about this many bodies MuJoCo's compiler takes seconds, growing faster than the model: a
# line before such a compile says why nothing seems to happen.
BIG_MODEL_BODIES = 5_000


def announce_compile(xml: Path) -> None:
    """``locomo: compiling <file>: N bodies ...`` on stderr before a long compile (a big MJCF)."""
    try:
        bodies = len(re.findall(rb"<body[\s/>]", xml.read_bytes()))
    except OSError:  # unreadable: MuJoCo's compile says why
        return
    if bodies >= BIG_MODEL_BODIES:
        print(
            f"locomo: compiling {xml}: {bodies} bodies (a big model: MuJoCo may take a minute) ...",
            file=sys.stderr,
            flush=True,
        )


def mujoco_message(exc: BaseException) -> str:
    """MuJoCo's error on one line, all of it: its hint (``increase <size memory="..."/>``) and
    the XML parser's reason come on the lines after the first."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    for line in lines[1:]:
        text += (" " if text.endswith(":") else "; ") + line
    return text.removeprefix("Error: ")


def invalid_mjcf(xml_file: str, exc: BaseException) -> ConfigError:
    """The user-facing error for an ``env.xml_file`` that MuJoCo cannot compile or simulate."""
    text = mujoco_message(exc)
    if "<size memory" in text:  # the model compiles but its arena is too small to simulate it
        return ConfigError(
            "env.xml_file",
            xml_file,
            f"MuJoCo ran out of the model's memory arena ({text}); raise memory in the model "
            'file\'s <size memory="..."/>',
        )
    return ConfigError("env.xml_file", xml_file, f"not a valid MJCF model ({text})")


def check_model_runs(model: mujoco.MjModel, xml_file: str) -> None:
    """One forward pass of a user's model on fresh data: a model whose arena is too small fails
    here with MuJoCo's hint (a ConfigError), not on the first reset (an unexpected failure)."""
    try:
        mujoco.mj_forward(model, mujoco.MjData(model))
    except (ValueError, mujoco.FatalError) as exc:
        raise invalid_mjcf(xml_file, exc) from exc


def space_info(env: gym.Env) -> SpaceInfo:
    """Read observation/action sizes, bounds and control timestep off a Gymnasium env."""
    obs_space, act_space = env.observation_space, env.action_space
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        raise ValueError(f"locomo needs flat Box observations, got {obs_space}")
    dt = float(getattr(env.unwrapped, "dt", getattr(env.unwrapped, "tau", 0.02)))
    if isinstance(act_space, gym.spaces.Discrete):
        return SpaceInfo(
            obs_dim=obs_space.shape[0], discrete=True, action_dim=int(act_space.n), control_dt=dt
        )
    if isinstance(act_space, gym.spaces.Box) and len(act_space.shape) == 1:
        return SpaceInfo(
            obs_dim=obs_space.shape[0],
            discrete=False,
            action_dim=act_space.shape[0],
            action_low=act_space.low.astype(np.float32),
            action_high=act_space.high.astype(np.float32),
            control_dt=dt,
        )
    raise ValueError(f"locomo needs Discrete or flat Box actions, got {act_space}")


def root_pose(env: gym.Env) -> np.ndarray | None:
    """[7] root position and quaternion (x, y, z, qw, qx, qy, qz) when the first joint is free."""
    unwrapped = env.unwrapped
    model = getattr(unwrapped, "model", None)
    if model is None or model.njnt == 0 or model.jnt_type[0] != 0:  # 0 = mjJNT_FREE
        return None
    return np.array(unwrapped.data.qpos[:7], dtype=np.float64)


def body_record(start: np.ndarray | None, end: np.ndarray | None) -> dict[str, float]:
    """EpisodeRecord.body from the root pose at an episode's start and end."""
    if start is None or end is None:
        return {}
    keys = ("x", "y", "z", "qw", "qx", "qy", "qz")
    return {
        "x0": float(start[0]),
        "y0": float(start[1]),
        **{k: float(v) for k, v in zip(keys, end, strict=True)},
    }


class RewardTerms:
    """reward = sum_k scale_k * info[key_k]; with no terms, the env's reward is the term ``env``."""

    def __init__(self, terms: dict[str, str], scales: dict[str, float]) -> None:
        self.keys = dict(terms)
        self.scales = {name: float(scales.get(name, 1.0)) for name in self.keys} if terms else {"env": 1.0}
        self.names = list(self.scales)

    def compute(self, env_reward: float, info: dict[str, Any]) -> dict[str, float]:
        """Scaled terms of one env step."""
        if not self.keys:
            return {"env": float(env_reward)}
        return {name: self.scales[name] * float(info[key]) for name, key in self.keys.items()}


class GymnasiumVecEnv:
    """N Gymnasium envs in one process, auto-reset, with named reward terms."""

    def __init__(self, env_cfg: DictConfig, num_envs: int, autoreset: bool = True) -> None:
        self.num_envs, self.autoreset = num_envs, autoreset
        self._active = np.ones(num_envs, dtype=bool)  # without autoreset: the envs whose episode goes on
        self.envs = [make_gymnasium_env(env_cfg) for _ in range(num_envs)]
        self.spaces = space_info(self.envs[0])
        self.reward_terms = RewardTerms(dict(env_cfg.reward_terms or {}), dict(env_cfg.reward_scales or {}))
        self._returns = np.zeros(num_envs)
        self._lengths = np.zeros(num_envs, dtype=np.int64)
        self._term_sums = {name: np.zeros(num_envs) for name in self.reward_terms.names}
        self._start_pose: list[np.ndarray | None] = [None] * num_envs
        self._last_obs = np.zeros((num_envs, self.spaces.obs_dim), dtype=np.float32)
        self._mujoco = [_mujoco_data(env) for env in self.envs]

    def reset(self, seed: int) -> np.ndarray:
        obs = [env.reset(seed=seed + i)[0] for i, env in enumerate(self.envs)]
        self._start_pose = [root_pose(env) for env in self.envs]
        self._returns[:] = 0.0
        self._lengths[:] = 0
        for sums in self._term_sums.values():
            sums[:] = 0.0
        self._last_obs = np.stack(obs).astype(np.float32)
        self._active[:] = True
        return self._last_obs.copy()

    def get_state(self) -> dict[str, Any]:
        """See :meth:`locomo.envs.base.VecEnv.get_state`."""
        return {
            "envs": [env_state(env) for env in self.envs],
            "returns": self._returns.copy(),
            "lengths": self._lengths.copy(),
            "term_sums": {name: sums.copy() for name, sums in self._term_sums.items()},
            "start_pose": [None if pose is None else pose.copy() for pose in self._start_pose],
            "last_obs": self._last_obs.copy(),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """See :meth:`locomo.envs.base.VecEnv.set_state`."""
        if len(state["envs"]) != self.num_envs:
            raise ValueError(f"saved state has {len(state['envs'])} envs, this vec env {self.num_envs}")
        for env, saved in zip(self.envs, state["envs"], strict=True):
            set_env_state(env, saved)
        self._returns[:] = state["returns"]
        self._lengths[:] = state["lengths"]
        for name, sums in self._term_sums.items():
            sums[:] = state["term_sums"][name]
        self._start_pose = [None if pose is None else np.array(pose) for pose in state["start_pose"]]
        self._last_obs = np.array(state["last_obs"], dtype=np.float32)

    def _clip(self, actions: np.ndarray) -> np.ndarray:
        if self.spaces.discrete:
            return actions.astype(np.int64)
        return np.clip(actions, self.spaces.action_low, self.spaces.action_high)

    def step(self, actions: np.ndarray) -> EnvStep:
        actions = self._clip(actions)
        n, names = self.num_envs, self.reward_terms.names
        obs = np.empty((n, self.spaces.obs_dim), dtype=np.float32)
        final_obs = np.empty_like(obs)
        reward = np.empty(n, dtype=np.float32)
        terminated = np.zeros(n, dtype=bool)
        truncated = np.zeros(n, dtype=bool)
        terms = {name: np.empty(n, dtype=np.float32) for name in names}
        episodes: list[EpisodeRecord] = []
        for i, env in enumerate(self.envs):
            if not self._active[i]:  # its episode ended (no autoreset): not stepped, nothing to report
                obs[i] = final_obs[i] = self._last_obs[i]
                reward[i] = 0.0
                for name in names:
                    terms[name][i] = 0.0
                continue
            md = self._mujoco[i]
            if md is not None:
                clear_unstable_warnings(md[1])
            o, r, term, trunc, info = env.step(actions[i])
            unstable = md is not None and went_unstable(md[1])
            if unstable:  # MuJoCo reset the data mid-step: cut the episode at the last good obs
                step_terms = {name: 0.0 for name in names}
                term, trunc, o = False, True, self._last_obs[i]
            else:
                step_terms = self.reward_terms.compute(float(r), info)
            total = sum(step_terms.values())
            reward[i] = total
            for name, value in step_terms.items():
                terms[name][i] = value
                self._term_sums[name][i] += value
            self._returns[i] += total
            self._lengths[i] += 1
            final_obs[i] = o
            if term or trunc:
                terminated[i], truncated[i] = bool(term), bool(trunc) and not term
                episodes.append(
                    EpisodeRecord(
                        env_index=i,
                        ret=float(self._returns[i]),
                        length=int(self._lengths[i]),
                        terminated=bool(term),
                        terms={name: float(self._term_sums[name][i]) for name in names},
                        body={} if unstable else body_record(self._start_pose[i], root_pose(env)),
                        unstable=unstable,
                    )
                )
                if self.autoreset:
                    self._returns[i], self._lengths[i] = 0.0, 0
                    for sums in self._term_sums.values():
                        sums[i] = 0.0
                    o, _ = env.reset()
                    self._start_pose[i] = root_pose(env)
                else:
                    self._active[i] = False
            obs[i] = o
        self._last_obs = obs.copy()
        return EnvStep(obs, reward, terminated, truncated, final_obs, terms, episodes)

    def current_episodes(self, indices: list[int]) -> list[EpisodeRecord]:
        """See :meth:`locomo.envs.base.VecEnv.current_episodes`."""
        bodies = [body_record(self._start_pose[i], root_pose(self.envs[i])) for i in indices]
        return [
            record_so_far(i, self._returns, self._lengths, self._term_sums, body)
            for i, body in zip(indices, bodies, strict=True)
        ]

    def mujoco_states(self) -> tuple[np.ndarray, np.ndarray] | None:
        """See :meth:`locomo.envs.base.VecEnv.mujoco_states`."""
        if self._mujoco[0] is None:
            return None
        datas = [md[1] for md in self._mujoco if md is not None]
        return np.stack([d.qpos for d in datas]), np.stack([d.qvel for d in datas])

    def mujoco_model(self) -> Any:
        md = self._mujoco[0]
        return None if md is None else md[0]

    def close(self) -> None:
        for env in self.envs:
            env.close()
