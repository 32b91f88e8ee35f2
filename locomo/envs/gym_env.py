"""locomo's tasks as single Gymnasium envs: ``gymnasium.make("locomo/HumanoidForward-v0")``.

``import locomo`` registers one id per env config in ``locomo/conf/env/`` (see
``locomo.GYMNASIUM_IDS``); this module is their entry point, loaded only by ``gymnasium.make``.
Each env is the one that locomo's Gymnasium backend (``env.backend=gymnasium``) steps, built
from the same config by the same code:

- :func:`~locomo.envs.gymnasium_backend.make_gymnasium_env` builds it (Gymnasium id, locomo's
  model file, ``env.kwargs``, time limit);
- the reward is the sum of the config's scaled reward terms
  (:class:`~locomo.envs.gymnasium_backend.RewardTerms`, reported in ``info["reward_terms"]``),
  so the lecture's forward-velocity reward of ``humanoid_forward`` is what SB3 or CleanRL train on;
- actions are clipped to the action space, and a step on which MuJoCo went unstable ends the
  episode as truncated with reward 0 and the last good observation, as in locomo's vector envs.

Keyword arguments of ``gymnasium.make`` are the config's keys (``reward_scales``, ``kwargs``,
``xml_file``, ``backend``, ...; see :func:`locomo.api.env_config`), e.g.
``gymnasium.make("locomo/HumanoidForward-v0", reward_scales={"alive": 1.0})``.
"""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

from locomo.envs.gymnasium_backend import RewardTerms, make_gymnasium_env
from locomo.envs.mujoco_data import _mujoco_data, clear_unstable_warnings, went_unstable


class LocomoEnv(gym.Wrapper):
    """One env of the task ``task`` (an env config name, e.g. ``humanoid_forward``) with locomo's reward.

    Observations are the Gymnasium env's own ([obs_dim] float64 for the MuJoCo tasks); actions
    [act_dim] (or an integer for a discrete task) are clipped to the action space.
    """

    def __init__(self, task: str = "humanoid_forward", render_mode: str | None = None, **overrides: Any):
        from locomo.api import env_config

        self.env_cfg = env_config(task, **overrides)
        super().__init__(make_gymnasium_env(self.env_cfg, render_mode=render_mode))
        self.task = task
        self.reward_terms = RewardTerms(
            dict(self.env_cfg.reward_terms or {}), dict(self.env_cfg.reward_scales or {})
        )
        self._mujoco = _mujoco_data(self.env)
        self._last_obs: Any = None
        space = self.action_space
        self._bounds = (space.low, space.high) if isinstance(space, gym.spaces.Box) else None

    @property
    def spec(self) -> gym.envs.registration.EnvSpec | None:
        # The id's spec as is: this wrapper is what the id's entry point makes, not a wrapper that
        # ``gymnasium.make(env.spec)`` should apply once more (Gymnasium's Wrapper.spec adds it).
        return self.env.spec

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        obs, info = self.env.reset(seed=seed, options=options)
        self._last_obs = obs
        return obs, info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        if self._bounds is not None:
            action = np.clip(action, *self._bounds)
        if self._mujoco is not None:
            clear_unstable_warnings(self._mujoco[1])
        obs, reward, terminated, truncated, info = self.env.step(action)
        if self._mujoco is not None and went_unstable(self._mujoco[1]):
            # MuJoCo reset its data mid-step: end the episode at the last good observation.
            terms = dict.fromkeys(self.reward_terms.names, 0.0)
            obs, terminated, truncated = self._last_obs, False, True
            info = {**info, "unstable": True}
        else:
            terms = self.reward_terms.compute(float(reward), info)
        self._last_obs = obs
        return obs, sum(terms.values()), bool(terminated), bool(truncated), {**info, "reward_terms": terms}
