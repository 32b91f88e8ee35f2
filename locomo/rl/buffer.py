"""Preallocated rollout storage: T steps x N envs, on the training device."""

from __future__ import annotations

from typing import NamedTuple

import torch


class RolloutBatch(NamedTuple):
    """One collected batch. T steps, N envs, O observation size, A action size."""

    obs: torch.Tensor  # [T, N, O] normalised observations the policy saw
    actions: torch.Tensor  # [T, N, A] float (continuous) or [T, N] long (discrete)
    log_probs: torch.Tensor  # [T, N] log pi_old(a|s) at collection time
    rewards: torch.Tensor  # [T, N]
    terminated: torch.Tensor  # [T, N] bool: terminal state reached at t
    truncated: torch.Tensor  # [T, N] bool: time limit hit at t (not terminal)
    values: torch.Tensor  # [T, N] V(s_t) before the update (zeros without a value net)
    next_values: torch.Tensor  # [T, N] V(s_{t+1}) of the same episode (see returns.py)

    @property
    def episode_end(self) -> torch.Tensor:
        """[T, N] bool: the episode ended at t (terminated or truncated)."""
        return self.terminated | self.truncated


class RolloutBuffer:
    """Fixed-size storage filled step by step by the runner, read as a :class:`RolloutBatch`."""

    def __init__(
        self, steps: int, num_envs: int, obs_dim: int, action_dim: int, discrete: bool, device: torch.device
    ) -> None:
        T, N = steps, num_envs
        self.steps, self.num_envs = T, N
        zeros = lambda *shape, dtype=torch.float32: torch.zeros(shape, dtype=dtype, device=device)  # noqa: E731
        self.obs = zeros(T, N, obs_dim)
        self.actions = zeros(T, N, dtype=torch.long) if discrete else zeros(T, N, action_dim)
        self.log_probs = zeros(T, N)
        self.rewards = zeros(T, N)
        self.terminated = zeros(T, N, dtype=torch.bool)
        self.truncated = zeros(T, N, dtype=torch.bool)
        self.values = zeros(T, N)
        self.next_values = zeros(T, N)
        self.t = 0

    def add(
        self,
        obs: torch.Tensor,
        actions: torch.Tensor,
        log_probs: torch.Tensor,
        rewards: torch.Tensor,
        terminated: torch.Tensor,
        truncated: torch.Tensor,
    ) -> None:
        """Store one step for all envs: obs [N, O], actions [N, A]/[N], the rest [N].

        ``values`` and ``next_values`` are filled for the whole batch at once by the runner.
        """
        t = self.t
        self.obs[t], self.actions[t], self.log_probs[t] = obs, actions, log_probs
        self.rewards[t], self.terminated[t], self.truncated[t] = rewards, terminated, truncated
        self.t += 1

    def batch(self) -> RolloutBatch:
        """The full batch; resets the write position for the next collection."""
        assert self.t == self.steps, f"buffer holds {self.t} of {self.steps} steps"
        self.t = 0
        return RolloutBatch(
            self.obs,
            self.actions,
            self.log_probs,
            self.rewards,
            self.terminated,
            self.truncated,
            self.values,
            self.next_values,
        )
