"""The training loop, and only the loop: collect -> update -> log -> checkpoint."""

from __future__ import annotations

import os
import random
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from locomo.algorithm import PolicyGradient
from locomo.behavior import behavior_fractions
from locomo.buffer import RolloutBatch, RolloutBuffer
from locomo.checkpoint import CheckpointManager, rng_state
from locomo.config import to_container
from locomo.envs import EpisodeRecord, TorchVecEnv, make_vec_env
from locomo.logging import MetricsLogger
from locomo.policy import ObsNormalizer, ValueNet, make_actor
from locomo.video import TrainingVideos


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Runner:
    """Builds env, policy, algorithm and logger from a validated config; :meth:`run` trains."""

    def __init__(self, cfg: DictConfig, run_dir: Path) -> None:
        self.cfg, self.run_dir = cfg, run_dir
        seed_everything(cfg.seed)
        if cfg.train.torch_threads > 0:
            torch.set_num_threads(cfg.train.torch_threads)
        if cfg.train.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
        self.device = resolve_device(cfg.train.device)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.np_rng = np.random.default_rng(cfg.seed)

        self.env = TorchVecEnv(make_vec_env(cfg.env, cfg.train.num_envs), self.device)
        spaces = self.env.spaces
        m = cfg.model
        self.actor = make_actor(spaces, list(m.hidden_sizes), m.activation, m.init_log_std).to(self.device)
        self.critic = (
            ValueNet(spaces.obs_dim, list(m.hidden_sizes), m.activation).to(self.device)
            if cfg.algo.baseline == "value"
            else None
        )
        self.normalizer = ObsNormalizer(spaces.obs_dim, enabled=m.normalize_observations).to(self.device)
        self.algorithm = PolicyGradient(self.actor, self.critic, cfg.algo, self.generator)
        self.steps_per_env = cfg.train.steps_per_iteration // cfg.train.num_envs
        self.buffer = RolloutBuffer(
            self.steps_per_env,
            cfg.train.num_envs,
            spaces.obs_dim,
            spaces.action_dim,
            spaces.discrete,
            self.device,
        )
        self.iteration = 0
        self.env_steps = 0
        self.checkpoints = CheckpointManager(run_dir / "checkpoints", cfg.train.keep_checkpoints)
        self.recent_episodes: deque[EpisodeRecord] = deque(maxlen=100)
        self.videos = TrainingVideos(cfg, run_dir)

    # -- collection -----------------------------------------------------------------------------

    def _value(self, obs: torch.Tensor) -> torch.Tensor:
        if self.critic is None:
            return torch.zeros(obs.shape[0], device=obs.device)
        return self.critic(obs)

    @torch.inference_mode()
    def collect(self, obs_raw: torch.Tensor) -> tuple[RolloutBatch, torch.Tensor, list[EpisodeRecord], dict]:
        """Run the policy for T steps in all N envs; return the batch, the next raw obs, episodes."""
        episodes: list[EpisodeRecord] = []
        term_sums: dict[str, float] = {}
        for _ in range(self.steps_per_env):
            self.normalizer.update(obs_raw)
            obs = self.normalizer(obs_raw)
            actions, log_probs = self.actor.act(obs)
            step = self.env.step(actions)
            # V(s_t) and V(s_t+1) of the same episode in one forward pass over [2N, O].
            values, next_values = self._value(torch.cat((obs, self.normalizer(step.final_obs)))).chunk(2)
            self.buffer.add(
                obs, actions, log_probs, step.reward, step.terminated, step.truncated, values, next_values
            )
            episodes.extend(step.episodes)
            for name, value in step.terms.items():
                term_sums[name] = term_sums.get(name, 0.0) + float(value.sum())
            obs_raw = step.obs
        return self.buffer.batch(), obs_raw, episodes, term_sums

    # -- the loop -------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Everything a replay or resume needs, as plain tensors and Python types."""
        return {
            "actor": self.actor.state_dict(),
            "critic": None if self.critic is None else self.critic.state_dict(),
            "obs_normalizer": self.normalizer.state_dict(),
            "optimizer": self.algorithm.optimizer.state_dict(),
            "config": to_container(self.cfg),
            "counters": {"iteration": self.iteration, "env_steps": self.env_steps},
            "rng": rng_state(self.generator, self.np_rng),
            "spaces": {
                "obs_dim": self.env.spaces.obs_dim,
                "action_dim": self.env.spaces.action_dim,
                "discrete": self.env.spaces.discrete,
            },
        }

    def run(self) -> dict[str, float]:
        """Train for ``train.iterations``; return the last logged metrics."""
        cfg = self.cfg
        logger = MetricsLogger(self.run_dir, cfg.logger.metrics_file, cfg.logger.wandb, to_container(cfg))
        obs_raw = self.env.reset(cfg.seed)
        bar = tqdm(
            total=cfg.train.iterations,
            initial=self.iteration,
            desc="train",
            unit="it",
            disable=not cfg.logger.progress,
            dynamic_ncols=True,
        )
        metrics: dict[str, float] = {}
        try:
            while self.iteration < cfg.train.iterations:
                t0 = time.perf_counter()
                self.actor.eval()
                batch, obs_raw, episodes, term_sums = self.collect(obs_raw)
                t1 = time.perf_counter()
                self.actor.train()
                update_info = self.algorithm.update(batch)
                t2 = time.perf_counter()
                self.iteration += 1
                self.env_steps += cfg.train.steps_per_iteration
                metrics = self._metrics(batch, episodes, term_sums, update_info, t1 - t0, t2 - t1)
                metrics |= self.videos.maybe_record(
                    self.iteration, self.actor, self.normalizer, logger, self.env_steps
                )
                logger.log(metrics, self.env_steps)
                bar.update(1)
                bar.set_postfix(
                    steps=self.env_steps,
                    ret=f"{metrics['rollout/return_mean']:.1f}",
                    len=f"{metrics['rollout/episode_length']:.0f}",
                    sps=f"{metrics['perf/steps_per_s']:.0f}",
                )
                every = cfg.train.checkpoint_every
                if (every and self.iteration % every == 0) or self.iteration == cfg.train.iterations:
                    self.checkpoints.save(self.state(), self.iteration)
        finally:
            bar.close()
            self.videos.close()
            logger.close()
            self.env.close()
        return metrics

    def _metrics(
        self,
        batch: RolloutBatch,
        episodes: list[EpisodeRecord],
        term_sums: dict[str, float],
        update_info: dict[str, float],
        collect_s: float,
        update_s: float,
    ) -> dict[str, float]:
        self.recent_episodes.extend(episodes)
        recent = list(self.recent_episodes)
        nan = float("nan")
        steps = self.cfg.train.steps_per_iteration
        out: dict[str, float] = {
            "iteration": float(self.iteration),
            # Mean over the last 100 finished episodes (so it is defined on every iteration).
            "rollout/return_mean": float(np.mean([e.ret for e in recent])) if recent else nan,
            "rollout/return_std": float(np.std([e.ret for e in recent])) if recent else nan,
            "rollout/episode_length": float(np.mean([e.length for e in recent])) if recent else nan,
            "rollout/episodes": float(len(episodes)),
            "rollout/terminated_fraction": float(np.mean([e.terminated for e in episodes]))
            if episodes
            else nan,
            "rollout/reward_mean": float(batch.rewards.mean()),
            "perf/steps_per_s": steps / max(collect_s + update_s, 1e-9),
            "perf/collect_steps_per_s": steps / max(collect_s, 1e-9),
            "perf/collect_s": collect_s,
            "perf/update_s": update_s,
        }
        for name, total in term_sums.items():
            out[f"rollout/reward_terms/{name}"] = total / steps
        out |= behavior_fractions(episodes, self.env.spaces.control_dt, self.cfg.behavior)
        out.update(update_info)
        return out
