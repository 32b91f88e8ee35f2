"""What a training checkpoint holds, assembled from the runner's parts and put back into them.

A checkpoint is plain tensors and Python types (``torch.load(weights_only=True)`` reads it): the
learned parts (actor, critic, normalisers, optimiser), the counters and RNG, the config and
spaces, and where the envs are (their state and the current observation), so that a resume
continues bit for bit. File handling (atomic writes, retention, safe loading) is
:mod:`locomo.runs.checkpoint`'s.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Any

import torch
from omegaconf import DictConfig

from locomo.config.composition_errors import as_override_value
from locomo.config.schema import saved_model_differences, to_container
from locomo.envs import EpisodeRecord, SpaceInfo, TorchVecEnv, make_vec_env
from locomo.errors import say
from locomo.rl.buffer import RolloutBatch
from locomo.rl.policy import Actor, ValueNet
from locomo.rl.running_stats import RewardScaler, RunningMeanStd
from locomo.runs.checkpoint import CheckpointError, restore_rng, rng_state
from locomo.runs.checkpoint_format import check_spaces, load_error_reason


@dataclass
class Learned:
    """The parts of a run that training changes, besides the envs."""

    actor: Actor
    critic: ValueNet | None
    normalizer: RunningMeanStd
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
    kept: list[RolloutBatch],
    pending: RolloutBatch | None,
    wandb_run_id: str | None,
) -> dict[str, Any]:
    """The checkpoint's contents. ``obs`` [N, O]: the raw observations the next step acts on;
    ``kept``: the earlier batches the next update trains on again (``algo.reuse_batches``)."""
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
        "kept_batches": [_plain(b) for b in kept],
        # train.overlap: the batch collected during the last update, which the next one trains on
        "pending_batch": None if pending is None else _plain(pending),
        "wandb": {"run_id": wandb_run_id},
    }


def _plain(batch: RolloutBatch) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in batch._asdict().items()}


def _batch_from(saved: Any, device: torch.device, what: str) -> RolloutBatch:
    try:
        return RolloutBatch(**{k: v.to(device) for k, v in saved.items()})
    except (TypeError, AttributeError) as exc:
        raise CheckpointError(f"checkpoint's {what} is not a rollout batch: {exc}") from exc


def pending_batch(state: dict[str, Any], device: torch.device) -> RolloutBatch | None:
    """The batch a ``train.overlap`` checkpoint had collected and not yet trained on (or None);
    CheckpointError when it is not a batch."""
    pending = state.get("pending_batch")
    return None if pending is None else _batch_from(pending, device, "pending batch")


def kept_batches(state: dict[str, Any], device: torch.device) -> list[RolloutBatch]:
    """The batches a checkpoint kept for reuse, oldest first (none in checkpoints older than the
    key, which were written without reuse); CheckpointError when they are not batches."""
    kept = state.get("kept_batches", [])
    if not isinstance(kept, list):
        raise CheckpointError(f"checkpoint's kept batches are not a list: {type(kept).__name__}")
    return [_batch_from(b, device, f"kept batch {i}") for i, b in enumerate(kept)]


def reused_batches(
    state: dict[str, Any], device: torch.device, reuse_batches: int, iteration: int
) -> list[RolloutBatch]:
    """The kept batches a run with ``algo.reuse_batches`` trains on again (its last
    ``reuse_batches - 1``), warning when the checkpoint of ``iteration`` keeps fewer."""
    kept, reuse = kept_batches(state, device), reuse_batches - 1
    if reuse and len(kept) < min(reuse, iteration):
        say(
            f"locomo: warning: the checkpoint keeps {len(kept)} earlier batch(es) and algo.reuse_batches="
            f"{reuse_batches} reuses {reuse}: the next updates reuse fewer (not a bit-exact resume)"
        )
    return kept[-reuse:] if reuse else []


def restore_envs(state: dict[str, Any], env: TorchVecEnv, device: torch.device) -> torch.Tensor | None:
    """Put ``env`` back where the checkpoint left its envs; their raw observations [N, O] on
    ``device``, or None (with a warning) when it holds no env state: the envs start new episodes."""
    env_state, obs = state.get("env"), state.get("obs")
    if env_state is None or obs is None:
        say(
            "locomo: warning: the checkpoint holds no env state: the envs start new episodes "
            "(not a bit-exact resume)"
        )
        return None
    try:
        env.set_state(env_state)
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"cannot restore the env state saved in the checkpoint: {exc}") from exc
    return obs.to(device)


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


def start_from(
    state: dict[str, Any],
    nets: tuple[Actor, ValueNet | None, RunningMeanStd, RewardScaler],
    spaces: SpaceInfo,
    cfg: DictConfig,
    announce: bool = True,
) -> list[str]:
    """``train.init_from``: put a checkpoint's policy, critic and normalisers into a new run's
    ``nets`` (actor, critic, observation normaliser, reward scaler); its optimiser, counters, RNG
    and envs stay new. Returns what started fresh because the checkpoint lacks it (a shipped
    policy holds no critic). ``announce``: print one line saying so.

    The reward scaler takes the checkpoint's return statistics, which the critic's values are in
    the units of, but not its per-env running returns (a new run's envs start new episodes).
    CheckpointError naming ``train.init_from`` when the checkpoint does not fit this run's networks.
    """
    actor, critic, normalizer, reward_scaler = nets
    source = cfg.train.init_from
    try:
        check_spaces(state, spaces.obs_dim, spaces.action_dim, spaces.discrete, cfg.env.name)
        actor.load_state_dict(state["actor"])
        normalizer.load_state_dict(state["obs_normalizer"])
        fresh = []
        if critic is not None:
            if state.get("critic") is None:
                fresh.append("critic")
            else:
                critic.load_state_dict(state["critic"])
        scaler = state.get("reward_scaler")
        if isinstance(scaler, dict):
            returns = {k: v for k, v in scaler.items() if k != "running_return"}
            reward_scaler.load_state_dict(returns, strict=False)
        elif reward_scaler.enabled:
            fresh.append("reward scaler")
    except (CheckpointError, KeyError, RuntimeError, ValueError, TypeError) as exc:
        detail = load_error_reason(exc)
        hint = "start from a checkpoint of the same env, model.* and algo.baseline"
        differ = _model_keys_differing(state, cfg)
        if differ:  # e.g. the shipped walker (512-256-128) under model.hidden_sizes=[256,128,64]
            hint = f"its networks were built with {' '.join(differ)}: add that to this run"
        raise CheckpointError(
            f"train.init_from={source}: it does not fit this run's networks ({detail}); {hint}"
        ) from exc
    if announce:
        started = f"; not in it, so new: {', '.join(fresh)}" if fresh else ""
        print(f"locomo: starting from the policy in train.init_from={source}{started}")
    return fresh


def _model_keys_differing(state: dict[str, Any], cfg: DictConfig) -> list[str]:
    """``model.key=value`` of the checkpoint's network-shaping settings that differ from ``cfg``'s."""
    changed = saved_model_differences(state.get("config"), cfg.model)
    return [
        f"model.{key}=" + as_override_value(value)
        for key, value in changed.items()
        if key in ("hidden_sizes", "critic_hidden_sizes", "activation")
    ]


def check_start(state: dict[str, Any], cfg: DictConfig) -> None:
    """CheckpointError (one line) unless ``train.init_from``'s checkpoint ``state`` fits the nets
    ``cfg`` builds: checked before a run dir is claimed, on nets of the meta device (shapes
    only) and the spaces of one env of ``cfg.env``."""
    from locomo.rl.factory import make_learners

    env = make_vec_env(cfg.env, 1)
    try:
        spaces = env.spaces
    finally:
        env.close()
    with torch.device("meta"), warnings.catch_warnings():
        # loading into meta tensors copies nothing (torch warns so): only the shapes are compared
        warnings.simplefilter("ignore", UserWarning)
        nets = make_learners(cfg, spaces, torch.device("meta"), num_envs=1)
        start_from(state, nets, spaces, cfg, announce=False)


# -- multi-process jobs ----------------------------------------------------------------------------
# Each rank of a job has its own envs, observations, random streams and reward-scaler returns; the
# rest (weights, optimiser, normalisers, the minibatch generator) is the same on every rank. Rank 0
# gathers the per-rank parts into one checkpoint, in rank order: ``env`` becomes a list of the
# ranks' env states, ``obs`` [N, O] and the reward scaler's ``running_return`` [N] are concatenated
# (env n of the job is env n - r N/K of rank r), and ``distributed`` holds the world size and each
# rank's RNG state.


def world_size_of(state: dict[str, Any]) -> int:
    """How many processes wrote a checkpoint (1 for a single-process run)."""
    return int((state.get("distributed") or {}).get("world_size", 1))


def check_world_size(state: dict[str, Any], world_size: int, where: Any) -> None:
    """CheckpointError unless the checkpoint was written by a job of ``world_size`` processes."""
    saved = world_size_of(state)
    if saved == world_size:
        return
    how = (
        f"torchrun --nproc_per_node={saved} -m locomo train resume=... (or --nnodes and "
        f"--nproc_per_node with {saved} processes in all)"
        if saved > 1
        else "locomo train resume=... in one process"
    )
    raise CheckpointError(
        f"{where} was written by a job of {saved} process(es) and this job has {world_size}: each "
        f"process holds its own envs, so resume it with {how}"
    )


def rank_part(state: dict[str, Any]) -> dict[str, Any]:
    """What of a rank's own (ungathered) state differs between ranks."""
    scaler = state["reward_scaler"]
    return {
        "env": state["env"],
        "obs": state["obs"],
        "rng": state["rng"],
        "running_return": scaler.get("running_return") if isinstance(scaler, dict) else None,
        "kept_batches": state.get("kept_batches", []),
    }


def merge_ranks(state: dict[str, Any], parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Rank 0's state with every rank's :func:`rank_part` folded in (the job's checkpoint)."""
    envs = [p["env"] for p in parts]
    state["env"] = None if any(e is None for e in envs) else envs
    obs = [p["obs"] for p in parts]
    state["obs"] = None if any(o is None for o in obs) else torch.cat(obs)
    returns = [p["running_return"] for p in parts]
    if all(r is not None for r in returns):
        state["reward_scaler"]["running_return"] = torch.cat(returns)
    # A kept batch [T, N/K, ...] per rank becomes the job's [T, N, ...] (env n of rank r at r N/K + n).
    state["kept_batches"] = [
        {k: torch.cat([p["kept_batches"][i][k] for p in parts], dim=1) for k in batch}
        for i, batch in enumerate(parts[0]["kept_batches"])
    ]
    state["distributed"] = {"world_size": len(parts), "rng": [p["rng"] for p in parts]}
    return state


def rank_view(state: dict[str, Any], rank: int) -> dict[str, Any]:
    """The checkpoint of a job as rank ``rank`` restores it: its own envs, observations, RNG and
    returns in the places a single-process checkpoint has them (a shallow copy)."""
    world = world_size_of(state)
    if world == 1:
        return state
    view = dict(state)
    if state.get("env") is not None:
        view["env"] = state["env"][rank]
    if state.get("obs") is not None:
        n = state["obs"].shape[0] // world
        view["obs"] = state["obs"][rank * n : (rank + 1) * n]
    scaler = dict(state["reward_scaler"])
    if "running_return" in scaler:
        n = scaler["running_return"].shape[0] // world
        scaler["running_return"] = scaler["running_return"][rank * n : (rank + 1) * n]
    view["reward_scaler"] = scaler
    view["rng"] = state["distributed"]["rng"][rank]
    view["kept_batches"] = [
        {k: v[:, rank * (v.shape[1] // world) : (rank + 1) * (v.shape[1] // world)] for k, v in batch.items()}
        for batch in state.get("kept_batches", [])
    ]
    return view
