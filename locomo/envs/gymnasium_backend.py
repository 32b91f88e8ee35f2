"""The Gymnasium backend: N Gymnasium envs stepped in turn, with locomo's reward terms."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from locomo.config import resolve_xml_file
from locomo.envs.base import EnvStep, EpisodeRecord, SpaceInfo


def make_gymnasium_env(env_cfg: Any, render_mode: str | None = None, **extra: Any) -> gym.Env:
    """Build one Gymnasium env from the ``env`` config (id, xml_file, kwargs, time limit)."""
    kwargs: dict[str, Any] = dict(env_cfg.kwargs or {})
    if env_cfg.xml_file is not None:
        kwargs["xml_file"] = str(resolve_xml_file(env_cfg.xml_file))
    if env_cfg.max_episode_steps is not None:
        kwargs["max_episode_steps"] = int(env_cfg.max_episode_steps)
    kwargs.update(extra)
    return gym.make(env_cfg.id, render_mode=render_mode, disable_env_checker=True, **kwargs)


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

    def __init__(self, env_cfg: Any, num_envs: int) -> None:
        self.num_envs = num_envs
        self.envs = [make_gymnasium_env(env_cfg) for _ in range(num_envs)]
        self.spaces = space_info(self.envs[0])
        self.reward_terms = RewardTerms(dict(env_cfg.reward_terms or {}), dict(env_cfg.reward_scales or {}))
        self._returns = np.zeros(num_envs)
        self._lengths = np.zeros(num_envs, dtype=np.int64)
        self._term_sums = {name: np.zeros(num_envs) for name in self.reward_terms.names}
        self._start_pose: list[np.ndarray | None] = [None] * num_envs

    def reset(self, seed: int) -> np.ndarray:
        obs = [env.reset(seed=seed + i)[0] for i, env in enumerate(self.envs)]
        self._start_pose = [root_pose(env) for env in self.envs]
        self._returns[:] = 0.0
        self._lengths[:] = 0
        for sums in self._term_sums.values():
            sums[:] = 0.0
        return np.stack(obs).astype(np.float32)

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
            o, r, term, trunc, info = env.step(actions[i])
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
                        body=body_record(self._start_pose[i], root_pose(env)),
                    )
                )
                self._returns[i], self._lengths[i] = 0.0, 0
                for sums in self._term_sums.values():
                    sums[i] = 0.0
                o, _ = env.reset()
                self._start_pose[i] = root_pose(env)
            obs[i] = o
        return EnvStep(obs, reward, terminated, truncated, final_obs, terms, episodes)

    def close(self) -> None:
        for env in self.envs:
            env.close()
