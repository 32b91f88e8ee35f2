"""Collection: the policy acts in the N envs for T steps and fills the rollout buffer.

The runner owns the loop; this owns one batch's worth of acting, and is all that
``locomo variance`` needs to sample batches from a fixed policy.
"""

from __future__ import annotations

import numpy as np
import torch

from locomo.distributed import SINGLE, Group
from locomo.envs import EpisodeRecord, TorchStep, TorchVecEnv
from locomo.guard import check_finite
from locomo.rl.buffer import RolloutBatch, RolloutBuffer
from locomo.rl.policy import Actor, ValueNet
from locomo.rl.running_stats import RewardScaler, RunningMeanStd


class EndedEpisodes:
    """The last observations of the episodes that end during a collection, for the value net."""

    def __init__(self, num_envs: int) -> None:
        self.num_envs = num_envs
        self.flat_index: list[int] = []  # t * N + env index, into a [T, N] tensor
        self.obs: list[torch.Tensor] = []  # [k, O] normalised last observations, in that order

    def add(self, t: int, env_ids: list[int], normalizer: RunningMeanStd, final_obs: torch.Tensor) -> None:
        """Episodes of envs ``env_ids`` ended at step ``t``; final_obs [N, O] raw."""
        self.flat_index.extend(t * self.num_envs + i for i in env_ids)
        self.obs.append(normalizer(final_obs[env_ids]))


class Collector:
    """Acts with ``actor`` in ``env`` for ``steps_per_env`` steps per env and returns the batch.

    The observation normaliser is updated with every observation seen (before it is used); the
    reward scaler, when enabled, scales rewards as they are stored; with a ``critic`` the batch
    also gets V(s_t) and V(s_t+1) (bootstrapping truncated episodes from their last observation).
    """

    def __init__(
        self,
        env: TorchVecEnv,
        actor: Actor,
        critic: ValueNet | None,
        normalizer: RunningMeanStd,
        reward_scaler: RewardScaler,
        steps_per_env: int,
        device: torch.device,
        group: Group = SINGLE,
    ) -> None:
        self.env, self.actor, self.critic = env, actor, critic
        self.group = group  # the normalisers' statistics are over every rank's envs, at every batch end
        self.normalizer, self.reward_scaler = normalizer, reward_scaler
        self.steps_per_env = steps_per_env
        spaces = env.spaces
        self.buffer = RolloutBuffer(
            steps_per_env, env.num_envs, spaces.obs_dim, spaces.action_dim, spaces.discrete, device
        )

    @torch.inference_mode()
    def collect(self, obs_raw: torch.Tensor) -> tuple[RolloutBatch, torch.Tensor, list[EpisodeRecord], dict]:
        """Run the policy for T steps in all N envs; return the batch, the next raw obs, episodes."""
        episodes: list[EpisodeRecord] = []
        reward_term_sums: dict[str, np.ndarray] = {}
        ended = EndedEpisodes(self.env.num_envs)
        for t in range(self.steps_per_env):
            self.normalizer.update(obs_raw, self.group)
            obs = self.normalizer(obs_raw)
            actions, log_probs = self.actor.act(obs)
            step = self.env.step(self.actor.env_action(actions))
            self._check_step(step, t)
            if step.episodes and self.critic is not None:
                # The value net runs once after the loop; keep what it needs of the episodes that
                # end here: their last observations, normalised as at this step.
                ended.add(t, [e.env_index for e in step.episodes], self.normalizer, step.final_obs)
            rewards = step.reward
            if self.reward_scaler.enabled:
                rewards = self.reward_scaler(rewards, step.terminated | step.truncated, self.group)
            self.buffer.add(obs, actions, log_probs, rewards, step.terminated, step.truncated)
            episodes.extend(step.episodes)
            for name, value in step.terms.items():
                if name in reward_term_sums:
                    reward_term_sums[name] += value
                else:
                    reward_term_sums[name] = value.astype(np.float64)
            obs_raw = step.obs
        if self.critic is not None:
            self._fill_values(self.normalizer(obs_raw), ended)
        # Each rank's statistics took in its own envs' observations during the batch; from here on
        # they are the job's again (one exchange per batch, not one per step).
        self.normalizer.sync(self.group)
        self.reward_scaler.sync(self.group)
        totals = {name: float(sums.sum()) for name, sums in reward_term_sums.items()}
        return self.buffer.batch(), obs_raw, episodes, totals

    def _fill_values(self, next_obs: torch.Tensor, ended: EndedEpisodes) -> None:
        """V(s_t) and V(s_t+1) of the batch in the buffer, in two batched passes of the value net.

        ``next_obs`` [N, O] is the normalised observation after the last step. Within an episode
        V(s_t+1) is the next step's V(s_t); where an episode ended at t it is V of its last
        observation (reached by a time limit, it bootstraps the truncated return).
        """
        assert self.critic is not None
        buffer = self.buffer
        T, N = buffer.steps, buffer.num_envs
        values = self.critic(buffer.obs.view(T * N, -1)).view(T, N)
        extra = self.critic(torch.cat([next_obs, *ended.obs]))
        buffer.values.copy_(values)
        buffer.next_values[:-1] = values[1:]
        buffer.next_values[-1] = extra[:N]
        if ended.flat_index:
            index = torch.tensor(ended.flat_index, device=extra.device)
            buffer.next_values.view(-1)[index] = extra[N:]

    def _check_step(self, step: TorchStep, t: int) -> None:
        """Stop on NaN/inf from the env before it reaches the normaliser or the batch."""
        when = f"(batch step {t + 1} of {self.steps_per_env})"
        check_finite("observations", step.obs, ("env", "observation index"), when)
        if step.episodes:  # final_obs differs from obs only in envs whose episode just ended
            check_finite("observations", step.final_obs, ("env", "observation index"), when)
        check_finite("rewards", step.reward, ("env",), when)
