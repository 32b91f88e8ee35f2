"""Each command's check of its composed config: :func:`validate_config` (train, variance) and one
``validate_<command>`` for the others; they raise :class:`~locomo.errors.ConfigError` on the first
bad value, before any simulation starts. Settings that are valid but do less than they say only
warn (:func:`config_warnings`). The rules of single keys and sections are :mod:`locomo.config.rules`.
"""

from __future__ import annotations

from omegaconf import DictConfig

from locomo.config.rules import (
    check_choice,
    check_positive,
    off_policy_needs,
    refuse_unknown_keys,
    validate_algo,
    validate_behavior,
    validate_env,
    validate_env_name,
    validate_frames,
    validate_init_log_std,
    validate_logger,
    validate_model,
    validate_seed,
    validate_train,
    validate_video,
    warn,
)
from locomo.config.schema import (
    AUTOMATIC_SYMMETRIES,
    EVAL_MODES,
    EXPORT_SUFFIXES,
    PLOT_KINDS,
    VIEWERS,
    BenchConfig,
    EvalConfig,
    ExportConfig,
    LocomoConfig,
    PlotConfig,
    RenderConfig,
    ReplayConfig,
    VarianceConfig,
    has_mirror_map,
)
from locomo.errors import ConfigError
from locomo.paths import check_path

# The most episodes ``locomo render`` films in one call (each is a video and a tile of the grid).
MAX_RENDER_EPISODES = 100


def _validate_checkpoint_command(cfg: DictConfig, command: str) -> None:
    if not cfg.checkpoint:
        raise ConfigError(
            "checkpoint",
            cfg.checkpoint,
            f"give the checkpoint to load, e.g. locomo {command} "
            "checkpoint=outputs/humanoid/<run>/checkpoints/last.pt",
        )
    check_path("checkpoint", cfg.checkpoint)  # else Path.is_dir() itself raises "File name too long"
    if cfg.max_steps is not None:
        check_positive("max_steps", cfg.max_steps)
    validate_seed("seed", cfg.seed)
    validate_behavior(cfg.behavior)


def validate_plot(cfg: DictConfig | PlotConfig) -> None:
    """Check a composed ``locomo plot`` config (beyond ``runs``, which the command checks)."""
    check_choice("kind", cfg.kind, PLOT_KINDS)
    check_positive("window", cfg.window)


def validate_render_config(cfg: DictConfig) -> None:
    """Check a composed ``locomo render`` config."""
    refuse_unknown_keys(cfg, RenderConfig)
    _validate_checkpoint_command(cfg, "render")
    check_positive("episodes", cfg.episodes)
    if cfg.iterations is not None and (len(cfg.iterations) == 0 or any(i < 1 for i in cfg.iterations)):
        raise ConfigError("iterations", list(cfg.iterations), "must be a non-empty list of iterations >= 1")
    if cfg.episodes > MAX_RENDER_EPISODES:
        raise ConfigError(
            "episodes",
            cfg.episodes,
            f"must be at most {MAX_RENDER_EPISODES} (one video each, and one tile each in the grid); "
            "for more, run render again with seed=<seed + episodes>, or use locomo eval for statistics",
        )
    validate_frames(cfg)


def validate_eval_config(cfg: DictConfig) -> None:
    """Check a composed ``locomo eval`` config."""
    refuse_unknown_keys(cfg, EvalConfig)
    _validate_checkpoint_command(cfg, "eval")
    check_positive("episodes", cfg.episodes)
    check_choice("mode", cfg.mode, EVAL_MODES)


def validate_export_config(cfg: DictConfig) -> None:
    """Check a composed ``locomo export`` config."""
    refuse_unknown_keys(cfg, ExportConfig)
    _validate_checkpoint_command(cfg, "export")
    check_positive("episodes", cfg.episodes)
    check_choice("format", cfg.format, tuple(EXPORT_SUFFIXES))
    suffixes = EXPORT_SUFFIXES[cfg.format]
    if cfg.out is not None and not str(cfg.out).endswith(suffixes):
        checkpoint = cfg.format == "checkpoint"
        why = "(its evaluation is written beside it as .json)" if checkpoint else f"for format={cfg.format}"
        raise ConfigError("out", cfg.out, f"must be a {' or '.join(suffixes)} file {why}")


def validate_replay_config(cfg: DictConfig) -> None:
    """Check a composed ``locomo replay`` config."""
    refuse_unknown_keys(cfg, ReplayConfig)
    _validate_checkpoint_command(cfg, "replay")
    check_choice("viewer", cfg.viewer, VIEWERS)
    validate_frames(cfg)


def validate_config(cfg: DictConfig) -> None:
    """Check a composed training config; raise ConfigError on the first bad value.

    Settings that are valid but have no effect, or not the one meant, only warn.
    """
    if isinstance(cfg, DictConfig):
        refuse_unknown_keys(cfg, VarianceConfig if "batches" in cfg else LocomoConfig)
    if cfg.seed < 0:
        raise ConfigError("seed", cfg.seed, "must be >= 0 (Gymnasium seeds are non-negative)")
    validate_seed("seed", cfg.seed)
    if cfg.get("resume") is None:  # not a resumed run's: its name named its run dir already
        validate_env_name(cfg.env.name)
        validate_init_log_std(cfg.model.init_log_std)  # its weights hold the log-std it learned
    if cfg.get("checkpoint") is not None:  # locomo variance
        check_path("checkpoint", cfg.checkpoint)
    validate_env(cfg.env)
    validate_algo(cfg.algo)
    validate_model(cfg.model)
    validate_train(cfg.train)
    validate_logger(cfg.logger)
    validate_behavior(cfg.behavior)
    validate_video(cfg.video)
    chosen = cfg.algo.symmetry not in ("none", *AUTOMATIC_SYMMETRIES)
    if chosen and not has_mirror_map(cfg.env.id):
        raise ConfigError(
            "algo.symmetry",
            cfg.algo.symmetry,
            f"env {cfg.env.name!r} ({cfg.env.id}) has no left-right mirror map; the humanoid envs have",
        )
    key, value = off_policy_needs(cfg.algo)
    if cfg.train.overlap and key is not None:
        raise ConfigError(
            "train.overlap",
            cfg.train.overlap,
            f"a batch collected during the update is one update old: weighting it needs "
            f"algo.{key}={value}; algo.{key} is {cfg.algo[key]!r}: set train.overlap=false to use it",
        )
    if cfg.train.steps_per_iteration < 2 and cfg.algo.normalize_advantages:
        # Standardising the advantages divides by their std over the batch, undefined for one sample
        # (the first loss is NaN). A batch of one step per env (T=1) is fine with two envs or more.
        raise ConfigError(
            "train.steps_per_iteration",
            cfg.train.steps_per_iteration,
            "algo.normalize_advantages=true standardises the advantages over the batch, which needs "
            "at least 2 steps (the std of one is undefined); set train.steps_per_iteration >= 2 (and "
            "train.num_envs to match), or algo.normalize_advantages=false",
        )
    minibatch = cfg.train.steps_per_iteration // cfg.algo.minibatches
    if minibatch < 1:
        raise ConfigError(
            "algo.minibatches", cfg.algo.minibatches, "must not exceed train.steps_per_iteration"
        )
    for message in config_warnings(cfg):
        warn(message)


def config_warnings(cfg: DictConfig) -> list[str]:
    """Settings that are accepted but do less than they say (pure: the caller prints them)."""
    algo, batch = cfg.algo, cfg.train.steps_per_iteration
    out = []
    left_out = batch % algo.minibatches
    if left_out:
        out.append(
            f"algo.minibatches={algo.minibatches} does not divide the batch of train.steps_per_iteration="
            f"{batch} steps: each pass uses {algo.minibatches} minibatches of {batch // algo.minibatches} "
            f"and leaves {left_out} random steps out"
        )
    if algo.epochs == 1 and algo.minibatches == 1:
        # One gradient step per batch: the policy has not moved when the weights are computed.
        for key in ("clip_ratio", "target_kl"):
            if algo[key] is not None:
                out.append(
                    f"algo.{key}={algo[key]} has no effect with algo.epochs=1 and algo.minibatches=1: "
                    "the one gradient step sees the policy that collected the batch (importance weights "
                    "all 1); set algo.epochs or algo.minibatches > 1, or algo." + key + "=null"
                )
    return out


def validate_bench(cfg: DictConfig | BenchConfig) -> None:
    """Check a composed ``locomo bench`` config."""
    if isinstance(cfg, DictConfig):
        refuse_unknown_keys(cfg, BenchConfig)
    validate_seed("seed", cfg.seed)
    b = cfg.bench
    for key in ("num_envs", "sampler_steps", "repeats", "train_batch", "train_epochs", "train_minibatches"):
        check_positive(f"bench.{key}", getattr(b, key))
    check_positive("bench.threads", b.threads, strict=False)
    check_positive("bench.ranks", b.ranks, strict=False)
    for key in ("train_iterations", "default_iterations"):
        if getattr(b, key) < 2:
            raise ConfigError(f"bench.{key}", getattr(b, key), "must be >= 2 (the first is a warm-up)")
    if b.train_batch % (b.num_envs * b.train_minibatches) != 0:
        raise ConfigError(
            "bench.train_batch",
            b.train_batch,
            "must be a multiple of bench.num_envs * bench.train_minibatches "
            f"= {b.num_envs * b.train_minibatches}",
        )
