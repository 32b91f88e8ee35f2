"""Configuration schema (Hydra structured configs) and validation.

Every field has a one-line docstring (the comment after it); `validate_*` functions check
ranges, choices and files once, before any simulation starts, and raise
:class:`ConfigError` naming the key, the bad value and what is allowed.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent
CONF_DIR = REPO_DIR / "conf"
ASSETS_DIR = REPO_DIR / "assets"

RETURNS = ("total", "reward_to_go")
BASELINES = ("none", "mean", "optimal", "value")
IMPORTANCE = ("per_step", "trajectory")
DEVICES = ("auto", "cpu", "cuda")
WANDB_MODES = ("auto", "online", "offline", "disabled")
ACTIVATIONS = ("tanh", "relu", "elu")
BACKENDS = ("gymnasium", "batched")


class ConfigError(ValueError):
    """A user-facing configuration error: names the key, the value and what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r} is invalid: {allowed}")


@dataclass
class EnvConfig:
    name: str = "humanoid"  # locomo's name for the task (the `env=` group option)
    id: str = "Humanoid-v5"  # Gymnasium id the task is built on
    backend: str = "gymnasium"  # gymnasium: one Gymnasium env per slot, stepped in-process
    xml_file: str | None = None  # MJCF model: a path, or a file name under assets/
    max_episode_steps: int | None = None  # time limit (truncation); None keeps the env's own
    kwargs: dict[str, Any] = field(default_factory=dict)  # extra keyword arguments for gymnasium.make
    # Reward = sum_k reward_scales[k] * term_k, term_k read from the env's info dict (key
    # reward_terms[k]). With no terms the env's own reward is the single term "env".
    reward_terms: dict[str, str] = field(default_factory=dict)
    reward_scales: dict[str, float] = field(default_factory=dict)


@dataclass
class AlgoConfig:
    name: str = "clipped"  # preset name (the `algo=` group option), informational
    lr: float = 3e-4  # Adam learning rate for policy and value network
    returns: str = "reward_to_go"  # total (vanilla REINFORCE) | reward_to_go (causality)
    baseline: str = "value"  # none | mean | optimal | value
    gamma: float = 0.99  # discount, in (0, 1]
    gae_lambda: float = 0.95  # GAE lambda in [0, 1], used with the value baseline
    normalize_advantages: bool = True  # standardise advantages over the batch
    epochs: int = 1  # gradient passes over each batch (>1 reuses it with importance weights)
    minibatches: int = 1  # minibatches per pass
    importance: str = "per_step"  # per_step ratio | trajectory product of ratios
    clip_ratio: float | None = None  # PPO-style clipping of the importance weight; None = off
    target_kl: float | None = None  # stop the passes early when approx KL exceeds this; None = off
    max_log_weight: float = 20.0  # trajectory log-weights are clamped to +-this (no overflow)
    value_coef: float = 0.5  # weight of the value regression loss
    entropy_coef: float = 0.0  # weight of the entropy bonus
    max_grad_norm: float | None = None  # clip the global gradient norm; None = off
    optimal_baseline_chunk: int = 1024  # samples per vmap chunk for the optimal baseline's grads


@dataclass
class ModelConfig:
    hidden_sizes: list[int] = field(default_factory=lambda: [64, 64])  # MLP widths (policy and value)
    activation: str = "tanh"  # tanh | relu | elu
    init_log_std: float = -0.5  # initial state-independent log-std of the Gaussian policy
    normalize_observations: bool = True  # running mean/std observation normalisation


@dataclass
class TrainConfig:
    iterations: int = 300  # collect -> update cycles
    steps_per_iteration: int = 4096  # env steps per batch, all envs together
    num_envs: int = 16  # parallel envs; steps per env per batch = steps_per_iteration / num_envs
    device: str = "auto"  # auto (CUDA when available) | cpu | cuda
    checkpoint_every: int = 50  # iterations between checkpoints (and one at the end); 0 = end only
    keep_checkpoints: int = 3  # periodic checkpoints kept on disk (last.pt is always kept)
    torch_threads: int = 1  # intra-op threads for torch; 0 = torch's default
    deterministic: bool = False  # torch.use_deterministic_algorithms


@dataclass
class WandbConfig:
    mode: str = "auto"  # auto (online when logged in, else offline) | online | offline | disabled
    project: str = "locomo"  # W&B project
    entity: str | None = None  # W&B entity (team or user); None = your default
    group: str | None = None  # W&B run group, e.g. to compare estimators
    name: str | None = None  # W&B run name; None = W&B's
    init_timeout: float = 30.0  # seconds to wait for the W&B server before logging offline instead


@dataclass
class LoggerConfig:
    wandb: WandbConfig = field(default_factory=WandbConfig)
    metrics_file: str = "metrics.jsonl"  # JSON-lines metrics in the run directory
    progress: bool = True  # a progress bar on the terminal


@dataclass
class LocomoConfig:
    seed: int = 0  # seeds torch, numpy and the envs (>= 0)
    # Continue a run: its run directory (or checkpoints/ dir, or one checkpoint file). The config
    # then comes from the checkpoint; see docs/checkpoints.md for what may still be overridden.
    resume: str | None = None
    env: EnvConfig = field(default_factory=EnvConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)


def register_configs() -> None:
    """Put the schemas in Hydra's ConfigStore, so conf/*.yaml are type-checked against them."""
    cs = ConfigStore.instance()
    cs.store(name="locomo_schema", node=LocomoConfig)


# ---------------------------------------------------------------------------------------------
# Validation


def _choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(key, value, f"allowed values are {', '.join(allowed)}")


def _positive(key: str, value: Any, strict: bool = True) -> None:
    ok = value > 0 if strict else value >= 0
    if not ok or not math.isfinite(value):
        raise ConfigError(key, value, "must be > 0" if strict else "must be >= 0")


def _finite(key: str, value: Any) -> None:
    if not math.isfinite(value):
        raise ConfigError(key, value, "must be a finite number")


def resolve_xml_file(xml_file: str) -> Path:
    """Find an MJCF file: as given (absolute or relative to the working directory), else in assets/."""
    for candidate in (Path(xml_file).expanduser(), ASSETS_DIR / xml_file):
        if candidate.is_file():
            return candidate.resolve()
    raise ConfigError("env.xml_file", xml_file, f"no such file (looked in {os.getcwd()} and {ASSETS_DIR})")


def validate_env_id(env_id: str) -> None:
    """The Gymnasium id must be registered (checked against gymnasium's registry, no env built)."""
    import gymnasium

    try:
        gymnasium.spec(env_id)
    except gymnasium.error.Error as exc:
        raise ConfigError("env.id", env_id, f"not a registered Gymnasium env ({exc})") from exc


def validate_env(env: DictConfig | EnvConfig) -> None:
    _choice("env.backend", env.backend, BACKENDS)
    if env.backend == "gymnasium":
        validate_env_id(env.id)
    if env.xml_file is not None:
        resolve_xml_file(env.xml_file)
    if env.max_episode_steps is not None:
        _positive("env.max_episode_steps", env.max_episode_steps)
    for term in env.reward_scales:
        _finite(f"env.reward_scales.{term}", env.reward_scales[term])
        if env.reward_terms and term not in env.reward_terms:
            allowed = ", ".join(env.reward_terms)
            raise ConfigError(
                f"env.reward_scales.{term}",
                env.reward_scales[term],
                f"unknown reward term; terms are {allowed}",
            )


def validate_algo(algo: DictConfig | AlgoConfig) -> None:
    _choice("algo.returns", algo.returns, RETURNS)
    _choice("algo.baseline", algo.baseline, BASELINES)
    _choice("algo.importance", algo.importance, IMPORTANCE)
    _positive("algo.lr", algo.lr)
    if not 0.0 < algo.gamma <= 1.0:
        raise ConfigError("algo.gamma", algo.gamma, "must be in (0, 1]")
    if not 0.0 <= algo.gae_lambda <= 1.0:
        raise ConfigError("algo.gae_lambda", algo.gae_lambda, "must be in [0, 1]")
    if algo.epochs < 1:
        raise ConfigError("algo.epochs", algo.epochs, "must be >= 1")
    if algo.minibatches < 1:
        raise ConfigError("algo.minibatches", algo.minibatches, "must be >= 1")
    if algo.clip_ratio is not None and not 0.0 < algo.clip_ratio < 1.0:
        raise ConfigError("algo.clip_ratio", algo.clip_ratio, "must be in (0, 1), or null for no clipping")
    if algo.target_kl is not None:
        _positive("algo.target_kl", algo.target_kl)
    if algo.max_grad_norm is not None:
        _positive("algo.max_grad_norm", algo.max_grad_norm)
    _positive("algo.max_log_weight", algo.max_log_weight)
    _positive("algo.value_coef", algo.value_coef, strict=False)
    _positive("algo.entropy_coef", algo.entropy_coef, strict=False)
    _positive("algo.optimal_baseline_chunk", algo.optimal_baseline_chunk)


def validate_model(model: DictConfig | ModelConfig) -> None:
    _choice("model.activation", model.activation, ACTIVATIONS)
    if len(model.hidden_sizes) == 0 or any(h < 1 for h in model.hidden_sizes):
        raise ConfigError(
            "model.hidden_sizes", list(model.hidden_sizes), "must be a non-empty list of widths >= 1"
        )


def validate_device(key: str, device: str) -> None:
    _choice(key, device, DEVICES)
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(key, device, "CUDA is not available on this machine; use auto or cpu")


def validate_train(train: DictConfig | TrainConfig) -> None:
    _positive("train.iterations", train.iterations)
    _positive("train.num_envs", train.num_envs)
    _positive("train.steps_per_iteration", train.steps_per_iteration)
    if train.steps_per_iteration % train.num_envs != 0:
        raise ConfigError(
            "train.steps_per_iteration",
            train.steps_per_iteration,
            f"must be a multiple of train.num_envs={train.num_envs}",
        )
    _positive("train.checkpoint_every", train.checkpoint_every, strict=False)
    _positive("train.keep_checkpoints", train.keep_checkpoints)
    _positive("train.torch_threads", train.torch_threads, strict=False)
    validate_device("train.device", train.device)


def validate_logger(logger: DictConfig | LoggerConfig) -> None:
    _choice("logger.wandb.mode", logger.wandb.mode, WANDB_MODES)
    _positive("logger.wandb.init_timeout", logger.wandb.init_timeout)


def validate_config(cfg: DictConfig) -> None:
    """Check a composed training config; raise ConfigError on the first bad value."""
    if cfg.seed < 0:
        raise ConfigError("seed", cfg.seed, "must be >= 0 (Gymnasium seeds are non-negative)")
    validate_env(cfg.env)
    validate_algo(cfg.algo)
    validate_model(cfg.model)
    validate_train(cfg.train)
    validate_logger(cfg.logger)
    minibatch = cfg.train.steps_per_iteration // cfg.algo.minibatches
    if minibatch < 1:
        raise ConfigError(
            "algo.minibatches", cfg.algo.minibatches, "must not exceed train.steps_per_iteration"
        )


def to_container(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain Python types (for checkpoints and W&B)."""
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    return container  # type: ignore[return-value]
