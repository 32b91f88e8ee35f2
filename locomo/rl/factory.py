"""Validated config -> objects: the device, the update's precision, the seeded RNGs, the networks
and running statistics a run learns, the update that trains them, and each process's share of the
machine.

Training (:class:`locomo.training.runner.Runner`) and ``locomo variance`` build the same things from a
config through these functions, so that both measure the same policy.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from locomo.config.schema import critic_widths
from locomo.distributed import Group
from locomo.envs import SpaceInfo, TorchVecEnv
from locomo.envs.pool import available_cores
from locomo.errors import ConfigError
from locomo.rl.algorithm import PolicyGradient
from locomo.rl.policy import Actor, ValueNet, actor_for
from locomo.rl.running_stats import RewardScaler, RunningMeanStd
from locomo.rl.symmetry import make_policy_mirror


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def training_device(name: str, group: Group) -> torch.device:
    """``train.device`` for a run of ``group``'s job: on CUDA, one GPU per process of the job on
    this node (NCCL needs it), else :class:`ConfigError`."""
    device = resolve_device(name)
    if device.type == "cuda" and group.active and torch.cuda.device_count() < group.local_world_size:
        raise ConfigError(
            "train.device",
            name,
            f"this node runs {group.local_world_size} processes of the job and has "
            f"{torch.cuda.device_count()} GPU(s): NCCL needs one GPU per process (lower "
            "--nproc_per_node, or train.device=cpu)",
        )
    return device


def native_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 matrix products natively (not emulated, so faster
    than float32): a CUDA GPU with bf16, a CPU with AVX512-BF16 or AMX."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's, private
    return device.type == "cpu" and any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def resolve_update_precision(name: str, device: torch.device) -> torch.dtype:
    """``train.update_precision`` -> the dtype of the update's matrix products."""
    if name == "auto":
        return torch.bfloat16 if native_bfloat16(device) else torch.float32
    return torch.bfloat16 if name == "bfloat16" else torch.float32


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global RNGs with ``seed``."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_learners(
    cfg: DictConfig, spaces: SpaceInfo, device: torch.device, num_envs: int | None = None
) -> tuple[Actor, ValueNet | None, RunningMeanStd, RewardScaler]:
    """Actor, critic (only with ``algo.baseline=value``), observation normaliser and reward scaler
    (for ``num_envs`` envs, default ``train.num_envs``) as the config describes them, on ``device``."""
    m = cfg.model
    actor = actor_for(spaces, m, iteration=0)  # the runner sets the cap of later iterations
    critic = (
        ValueNet(spaces.obs_dim, critic_widths(m), m.activation, cfg.algo.normalize_values).to(device)
        if cfg.algo.baseline == "value"
        else None
    )
    normalizer = RunningMeanStd(spaces.obs_dim, enabled=m.normalize_observations).to(device)
    envs = cfg.train.num_envs if num_envs is None else num_envs
    scaler = RewardScaler(envs, cfg.algo.gamma, enabled=cfg.algo.normalize_rewards).to(device)
    return actor.to(device), critic, normalizer, scaler


def cores_per_process(group: Group) -> int:
    """This process's share of the cores it may run on: all of them in one process, 1/L of them
    for each of a job's L processes on one node (so that the ranks do not fight over them)."""
    return max(1, available_cores() // group.local_world_size)


def env_config_for(cfg: DictConfig, group: Group) -> Any:
    """``cfg.env`` for this rank: ``env.threads=0`` (one per core) becomes its share of the cores."""
    if not group.active or cfg.env.threads != 0:
        return cfg.env
    env_cfg = cfg.env.copy()
    env_cfg.threads = cores_per_process(group)
    return env_cfg


def make_algorithm(
    cfg: DictConfig,
    env: TorchVecEnv,
    learners: tuple[Actor, ValueNet | None, RunningMeanStd],
    generator: torch.Generator,
    group: Group,
    update_threads: int,
    device: torch.device,
) -> PolicyGradient:
    """The update of ``cfg.algo`` for ``learners`` (actor, critic, observation normaliser), with
    ``generator`` shuffling its minibatches: with ``algo.symmetry``'s mirror map, in
    ``train.update_precision``, and with the critic's half of each step in a thread of its own
    where the update would otherwise run on one core of several (``update_threads`` = 1)."""
    actor, critic, normalizer = learners
    # (validated: augment implies per-step weights; auto applies only with them; the loss needs none)
    symmetry = cfg.algo.symmetry
    if cfg.algo.importance != "per_step" and symmetry != "loss":
        symmetry = "none"
    mirror = make_policy_mirror(symmetry, env.env, cfg.env, env.spaces, normalizer)
    critic_thread = device.type == "cpu" and update_threads == 1 and cores_per_process(group) > 1
    precision = resolve_update_precision(cfg.train.get("update_precision", "float32"), device)
    return PolicyGradient(actor, critic, cfg.algo, generator, group, mirror, critic_thread, precision)
