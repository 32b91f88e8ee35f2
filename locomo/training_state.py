"""What a training checkpoint holds, assembled from the runner's parts and put back into them.

A checkpoint is plain tensors and Python types (``torch.load(weights_only=True)`` reads it): the
learned parts (actor, critic, normalisers, optimiser), the counters and RNG, the config and
spaces, and where the envs are (their state and the current observation), so that a resume
continues bit for bit. File handling (atomic writes, retention, safe loading) is
:mod:`locomo.checkpoint`'s.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from omegaconf import DictConfig

from locomo.checkpoint import CheckpointError, check_spaces, restore_rng, rng_state
from locomo.config import to_container
from locomo.envs import EpisodeRecord, SpaceInfo
from locomo.policy import Actor, ObsNormalizer, RewardScaler, ValueNet


@dataclass
class Learned:
    """The parts of a run that training changes, besides the envs."""

    actor: Actor
    critic: ValueNet | None
    normalizer: ObsNormalizer
    reward_scaler: RewardScaler
    optimizer: torch.optim.Optimizer
    generator: torch.Generator  # the update's minibatch shuffling


def assemble(
    learned: Learned,
    cfg: DictConfig,
    spaces: SpaceInfo,
    iteration: int,
    env_steps: int,
    env_state: dict[str, Any] | None,
    obs: torch.Tensor | None,
    episodes: list[EpisodeRecord],
    wandb_run_id: str | None,
) -> dict[str, Any]:
    """The checkpoint's contents. ``obs`` [N, O]: the raw observations the next step acts on."""
    return {
        "actor": learned.actor.state_dict(),
        "critic": None if learned.critic is None else learned.critic.state_dict(),
        "obs_normalizer": learned.normalizer.state_dict(),
        "reward_scaler": learned.reward_scaler.state_dict(),
        "optimizer": learned.optimizer.state_dict(),
        "config": to_container(cfg),
        "counters": {"iteration": iteration, "env_steps": env_steps},
        "rng": rng_state(learned.generator),
        "spaces": {"obs_dim": spaces.obs_dim, "action_dim": spaces.action_dim, "discrete": spaces.discrete},
        # Where the envs are: with these, a resumed run continues bit for bit.
        "env": env_state,
        "obs": None if obs is None else obs.detach().cpu().clone(),
        "episodes": [asdict(e) for e in episodes],
        "wandb": {"run_id": wandb_run_id},
    }


def restore(state: dict[str, Any], learned: Learned, spaces: SpaceInfo, env_name: str) -> tuple[int, int]:
    """Load weights, optimiser and RNG from a checkpoint into ``learned``; return (iteration, env_steps).

    CheckpointError when the checkpoint does not fit (other spaces, other layers, missing keys).
    """
    check_spaces(state, spaces.obs_dim, spaces.action_dim, spaces.discrete, env_name)
    try:
        learned.actor.load_state_dict(state["actor"])
        if learned.critic is not None:
            learned.critic.load_state_dict(state["critic"])
        learned.normalizer.load_state_dict(state["obs_normalizer"])
        if "reward_scaler" in state:
            learned.reward_scaler.load_state_dict(state["reward_scaler"])
        learned.optimizer.load_state_dict(state["optimizer"])
        restore_rng(state["rng"], learned.generator)
        return int(state["counters"]["iteration"]), int(state["counters"]["env_steps"])
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise CheckpointError(f"checkpoint does not match its own config: {exc}") from exc
