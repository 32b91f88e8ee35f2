"""The rules of a config's keys and sections: ranges, choices, files; each ``validate_<section>``
checks one section and raises :class:`~locomo.errors.ConfigError` naming the key, the bad value and
what is allowed. :mod:`locomo.config.validation` applies them to each command's composed config.

Light on purpose (no torch, no MuJoCo at import): a bad command line fails in a fraction of a second.
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from locomo.config.schema import (
    ACTION_BOUNDS,
    ACTIVATIONS,
    AUTOMATIC_SYMMETRIES,
    BACKENDS,
    BASELINES,
    DEVICES,
    IMPORTANCE,
    LR_SCHEDULES,
    QUALITIES,
    RETURNS,
    REUSE_CORRECTIONS,
    SYMMETRIES,
    SYMMETRY_PARTS,
    UPDATE_PRECISIONS,
    WANDB_MODES,
    WANDB_TAG_MAX,
    AlgoConfig,
    BehaviorConfig,
    EnvConfig,
    FrameConfig,
    LocomoConfig,
    LoggerConfig,
    ModelConfig,
    TrainConfig,
    VideoConfig,
)
from locomo.errors import ConfigError, shown
from locomo.paths import RUN_DIR_NAMES, check_path, pinned_model_problem, resolve_xml_file


def check_choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    """ConfigError unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise ConfigError(key, value, f"allowed values are {', '.join(allowed)}")


def check_positive(key: str, value: Any, strict: bool = True) -> None:
    """ConfigError unless ``value`` is finite and > 0 (``strict``) or >= 0."""
    ok = value > 0 if strict else value >= 0
    if not ok or not math.isfinite(value):
        raise ConfigError(key, value, "must be > 0" if strict else "must be >= 0")


def check_at_most(key: str, value: Any, limit: int) -> None:
    """ConfigError when a thread count ``value`` exceeds ``limit``."""
    if value > limit:
        raise ConfigError(key, value, f"must be at most {limit} (0 = one per CPU core)")


def check_finite_number(key: str, value: Any) -> None:
    """ConfigError when ``value`` is NaN or infinite."""
    if not math.isfinite(value):
        raise ConfigError(key, value, "must be a finite number")


# Seeds reach numpy's legacy seeding (np.random.seed), which takes 0 .. 2**32 - 1.
MAX_SEED = 2**32 - 1
# Threads per pool: beyond this many, threads only add scheduling cost (and each has a stack).
MAX_THREADS = 1024
# model.init_log_std is the Gaussian policy's initial log-std. Actions are normalised to [-1, 1]
# by default (model.action_bounds=clip), and the MuJoCo tasks' own action ranges are of order 1
# too (action_bounds=none): a std of e^5 ~ 148 already samples only the bounds (every gradient
# then comes from clipped actions), and far beyond it exp() overflows (e^89 is inf in float32:
# the first loss is NaN). Below e^-5 ~ 0.007 a policy hardly explores, and near float32's
# resolution (e^-16) an action minus its mean is rounding noise. So: |init_log_std| <= 5.
MAX_ABS_INIT_LOG_STD = 5.0
# env.name names the run dir (outputs/<env.name>/<time>) and the W&B run: a file name's
# characters, short enough that the run dir's path stays usable (file systems allow 255 per name).
ENV_NAME_MAX = 100
_ENV_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def warn(message: str) -> None:
    """A config that is accepted but probably not what was meant: one line on stderr."""
    print(f"locomo: warning: {message}", file=sys.stderr)


def validate_env_name(name: Any) -> None:
    """``env.name`` is a folder of the run dir's path (outputs/<env.name>/<time>): a short file name."""
    text = str(name)
    if len(text) > ENV_NAME_MAX or not _ENV_NAME.match(text):
        raise ConfigError(
            "env.name",
            shown(text),
            f"must be 1 to {ENV_NAME_MAX} letters, digits, '_', '-' or '.', not starting with '.' or '-' "
            "(it names the run directory, outputs/<env.name>/<time>, and the W&B run); e.g. "
            "env.name=my_walker",
        )


def validate_seed(key: str, seed: Any) -> None:
    """Seeds are integers in [0, 2**32 - 1] for every command (numpy's limit)."""
    if not 0 <= seed <= MAX_SEED:
        raise ConfigError(key, seed, f"must be in [0, {MAX_SEED}] (Gymnasium and numpy seeds are 32-bit)")


def unknown_keys(cfg: DictConfig, schema: type, prefix: str = "") -> list[tuple[str, Any, list[str]]]:
    """Keys of ``cfg`` that ``schema`` (a dataclass) does not declare: (dotted key, value, known keys).

    ``+key=value`` adds keys past Hydra's schema check; such a key would be saved with the run
    and ignored by the code. Dict-typed fields (``env.kwargs``, ``env.reward_scales``, ...) are
    open by design and checked where they are used.
    """
    hints = typing.get_type_hints(schema)
    found = []
    for key in cfg:
        name = f"{prefix}{key}"
        if key not in hints:
            found.append((name, OmegaConf.select(cfg, str(key)), sorted(hints)))
            continue
        sub = hints[key]
        if dataclasses.is_dataclass(sub) and isinstance(cfg[key], DictConfig):
            found += unknown_keys(cfg[key], sub, f"{name}.")  # type: ignore[arg-type]
    return found


def refuse_unknown_keys(cfg: DictConfig, schema: type) -> None:
    """The one place where keys a command does not know are refused (see :func:`unknown_keys`)."""
    for name, value, known in unknown_keys(cfg, schema)[:1]:
        section = name.rsplit(".", 1)[0] if "." in name else "the top level"
        raise ConfigError(name, value, f"not a config key; the keys of {section} are {', '.join(known)}")


def validate_env_id(env_id: str) -> None:
    """The Gymnasium id must be registered (checked against gymnasium's registry, no env built)."""
    import gymnasium  # here, not at the top: the command line answers a typo before this import

    try:
        gymnasium.spec(env_id)
    except gymnasium.error.Error as exc:
        raise ConfigError("env.id", env_id, f"not a registered Gymnasium env ({exc})") from exc


def validate_env(env: DictConfig | EnvConfig) -> None:
    check_choice("env.backend", env.backend, BACKENDS)
    check_positive("env.threads", env.threads, strict=False)
    check_at_most("env.threads", env.threads, MAX_THREADS)
    validate_env_id(env.id)
    if env.backend == "batched":
        # Imported here: the tasks module imports MuJoCo, which a bad command line must not wait for.
        from locomo.envs.tasks import check_batched_id

        check_batched_id(env.id)
    if env.xml_file is not None and getattr(env, "xml_sha256", None) is not None:
        problem = pinned_model_problem(env)  # a resumed run's model: the one it was trained on
        if problem is not None:
            raise ConfigError("env.xml_file", env.xml_file, problem)
    elif env.xml_file is not None:
        resolve_xml_file(env.xml_file)
    if env.max_episode_steps is not None:
        check_positive("env.max_episode_steps", env.max_episode_steps)
    # Without named terms the env's own reward is the one term, "env" (see EnvConfig).
    terms = list(env.reward_terms) or ["env"]
    for term in env.reward_scales:
        check_finite_number(f"env.reward_scales.{term}", env.reward_scales[term])
        if term not in terms:
            allowed = ", ".join(terms)
            own = "" if env.reward_terms else " (the env's own reward)"
            raise ConfigError(
                f"env.reward_scales.{term}",
                env.reward_scales[term],
                f"unknown reward term; terms are {allowed}{own}",
            )


def validate_algo(algo: DictConfig | AlgoConfig) -> None:
    check_choice("algo.returns", algo.returns, RETURNS)
    check_choice("algo.baseline", algo.baseline, BASELINES)
    check_choice("algo.importance", algo.importance, IMPORTANCE)
    check_positive("algo.lr", algo.lr)
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
        check_positive("algo.target_kl", algo.target_kl)
    if algo.max_grad_norm is not None:
        check_positive("algo.max_grad_norm", algo.max_grad_norm)
    check_positive("algo.max_log_weight", algo.max_log_weight)
    check_positive("algo.value_coef", algo.value_coef, strict=False)
    check_positive("algo.entropy_coef", algo.entropy_coef, strict=False)
    check_positive("algo.optimal_baseline_chunk", algo.optimal_baseline_chunk)
    check_choice("algo.lr_schedule", algo.lr_schedule, LR_SCHEDULES)
    check_positive("algo.kl_threshold", algo.kl_threshold)
    check_choice("algo.reuse_correction", algo.reuse_correction, REUSE_CORRECTIONS)
    if not isinstance(algo.reuse_batches, int) or algo.reuse_batches < 1:
        raise ConfigError("algo.reuse_batches", algo.reuse_batches, "must be an integer >= 1 (1: no reuse)")
    check_choice("algo.symmetry", algo.symmetry, SYMMETRIES)
    symmetry_coef = getattr(algo, "symmetry_coef", 1.0)  # absent from checkpoints older than the key
    check_positive("algo.symmetry_coef", symmetry_coef, strict=False)
    pairs = getattr(algo, "symmetry_pairs", False)  # absent from checkpoints older than the key
    if not isinstance(pairs, bool):
        raise ConfigError("algo.symmetry_pairs", pairs, "must be true or false")
    # where the images or the loss are off, pairs have nothing to pair and the key has no effect, so
    # that `algo=walk algo.symmetry=augment` removes one ingredient with one key
    images = SYMMETRY_PARTS[algo.symmetry][0] and algo.symmetry not in AUTOMATIC_SYMMETRIES
    if images and algo.importance != "per_step":
        raise ConfigError(
            "algo.symmetry", algo.symmetry, "mirror images need algo.importance=per_step (weights per step)"
        )
    if algo.reuse_batches > 1:
        key, value = off_policy_needs(algo)
        if key is not None:
            raise ConfigError(
                "algo.reuse_batches",
                algo.reuse_batches,
                f"reusing earlier batches needs algo.{key}={value} (old samples' advantages are "
                f"re-estimated with the value function, per step); algo.{key} is {algo[key]!r}: "
                "set algo.reuse_batches=1 (and train.overlap=false) to use it",
            )


def off_policy_needs(algo: DictConfig | AlgoConfig) -> tuple[str | None, str]:
    """The first algo key (and the value it needs) that stops samples of an earlier policy from
    being re-weighted (kept batches, overlapped collection); (None, "") when none does."""
    needs = {"baseline": "value", "returns": "reward_to_go", "importance": "per_step"}
    for key, value in needs.items():
        if algo[key] != value:
            return key, value
    return None, ""


def validate_model(model: DictConfig | ModelConfig) -> None:
    check_choice("model.activation", model.activation, ACTIVATIONS)
    check_choice("model.action_bounds", model.action_bounds, ACTION_BOUNDS)
    check_finite_number("model.init_log_std", model.init_log_std)
    max_log_std = getattr(model, "max_log_std", None)  # absent from checkpoints older than the key
    if max_log_std is not None:
        validate_log_std("model.max_log_std", max_log_std)
    start = getattr(model, "max_log_std_from", None)  # absent from checkpoints older than the key
    if start is not None:
        if start < 0:
            why = "must be an iteration >= 0, or null for from the start"
            raise ConfigError("model.max_log_std_from", start, why)
        if max_log_std is None:
            why = "it says from which iteration model.max_log_std caps the std, and that is null: set it too"
            raise ConfigError("model.max_log_std_from", start, why)
    validate_widths("model.hidden_sizes", model.hidden_sizes)
    critic = getattr(model, "critic_hidden_sizes", None)  # absent from checkpoints older than the key
    if critic is not None:
        validate_widths("model.critic_hidden_sizes", critic)


def validate_widths(key: str, widths: Any) -> None:
    """A network's hidden widths (typed as integers by the schema): non-empty, each >= 1."""
    if len(widths) == 0 or any(h < 1 for h in widths):
        raise ConfigError(key, list(widths), "must be a non-empty list of widths >= 1")


def validate_init_log_std(value: float) -> None:
    """The initial log-std of a new policy (see :data:`MAX_ABS_INIT_LOG_STD`). Not a stored
    config's: what it started from does not matter once trained (an old run stays loadable)."""
    validate_log_std("model.init_log_std", value)


def validate_log_std(key: str, value: float) -> None:
    """A log-std in [-MAX_ABS_INIT_LOG_STD, MAX_ABS_INIT_LOG_STD]: ``model.init_log_std``, or the
    cap ``model.max_log_std``."""
    check_finite_number(key, value)
    if abs(value) > MAX_ABS_INIT_LOG_STD:
        bound = MAX_ABS_INIT_LOG_STD
        raise ConfigError(
            key,
            value,
            f"must be in [-{bound:g}, {bound:g}] (a std of e^-{bound:g} = {math.exp(-bound):.3g} to "
            f"e^{bound:g} = {math.exp(bound):.0f}; actions are of order 1: a larger std samples only the "
            "action bounds, and exp() of a much larger one overflows to inf)",
        )


def validate_device(key: str, device: str) -> None:
    check_choice(key, device, DEVICES)
    if device == "cuda":
        import torch  # only for train.device=cuda: the command line starts without torch

        if not torch.cuda.is_available():
            # train.device may be changed on resume too (locomo.training.resume.RESUME_OVERRIDABLE):
            # the advice holds for a run trained on a GPU machine and resumed on this one.
            raise ConfigError(
                key, device, f"CUDA is not available on this machine; use auto or cpu ({key}=cpu)"
            )


def _check_total_steps(total: Any) -> None:
    if total is not None and (isinstance(total, bool) or not isinstance(total, int) or total <= 0):
        raise ConfigError(
            "train.total_steps", total, "must be an integer > 0 (env steps), or null to use train.iterations"
        )


def resolve_total_steps(cfg: DictConfig | LocomoConfig, overrides: Sequence[str]) -> None:
    """Set ``train.iterations`` from ``train.total_steps``, in place: ceil(total / steps_per_iteration).

    ``overrides`` are the command line's (Hydra's task overrides). Both keys there is an error;
    ``train.iterations`` there with ``train.total_steps`` from elsewhere (a config file, or a
    resumed run's checkpoint) means the command line's iterations, and total_steps is dropped.
    """
    train = cfg.train
    total = getattr(train, "total_steps", None)  # a config saved before the key existed has none
    if total is None:
        return
    _check_total_steps(total)
    given = {str(o).split("=", 1)[0].lstrip("+~") for o in overrides}
    if "train.iterations" in given:
        if "train.total_steps" in given:
            raise ConfigError(
                "train.total_steps",
                total,
                f"give train.total_steps or train.iterations, not both (train.iterations={train.iterations} "
                "was given too)",
            )
        train.total_steps = None
        return
    if isinstance(train.steps_per_iteration, int) and train.steps_per_iteration > 0:  # else validate_train
        train.iterations = math.ceil(total / train.steps_per_iteration)


def validate_train(train: DictConfig | TrainConfig) -> None:
    _check_total_steps(getattr(train, "total_steps", None))
    check_positive("train.iterations", train.iterations)
    check_positive("train.num_envs", train.num_envs)
    check_positive("train.steps_per_iteration", train.steps_per_iteration)
    if train.steps_per_iteration % train.num_envs != 0:
        raise ConfigError(
            "train.steps_per_iteration",
            train.steps_per_iteration,
            f"must be a multiple of train.num_envs={train.num_envs}",
        )
    check_positive("train.checkpoint_every", train.checkpoint_every, strict=False)
    check_positive("train.keep_checkpoints", train.keep_checkpoints)
    for key in ("torch_threads", "update_threads"):
        check_positive(f"train.{key}", train[key], strict=False)
        check_at_most(f"train.{key}", train[key], MAX_THREADS)
    validate_device("train.device", train.device)
    check_choice("train.update_precision", getattr(train, "update_precision", "float32"), UPDATE_PRECISIONS)
    check_path("train.init_from", getattr(train, "init_from", None))


def validate_logger(logger: DictConfig | LoggerConfig) -> None:
    check_choice("logger.wandb.mode", logger.wandb.mode, WANDB_MODES)
    name = Path(str(logger.metrics_file))
    if (
        not str(logger.metrics_file).strip()
        or name.is_absolute()
        or ".." in name.parts
        or name.name in ("", ".")
    ):
        raise ConfigError(
            "logger.metrics_file",
            logger.metrics_file,
            "must be a file name inside the run directory (no absolute path, no '..'), e.g. metrics.jsonl",
        )
    if name.parts[0] in RUN_DIR_NAMES:
        raise ConfigError(
            "logger.metrics_file",
            logger.metrics_file,
            f"{name.parts[0]} is a name locomo uses itself in a run dir; choose another, e.g. metrics.jsonl",
        )
    check_positive("logger.wandb.init_timeout", logger.wandb.init_timeout)
    check_positive("logger.wandb.eval_episodes", logger.wandb.eval_episodes, strict=False)
    for tag in logger.wandb.tags:  # W&B refuses the run itself when a tag is longer
        if not 0 < len(str(tag).strip()) <= WANDB_TAG_MAX:
            raise ConfigError("logger.wandb.tags", tag, f"each tag must have 1 to {WANDB_TAG_MAX} characters")


def validate_behavior(behavior: DictConfig | BehaviorConfig, prefix: str = "behavior") -> None:
    if not 0.0 < behavior.fall_tilt_deg < 90.0:
        raise ConfigError(f"{prefix}.fall_tilt_deg", behavior.fall_tilt_deg, "must be in (0, 90) degrees")
    if not 0.0 < behavior.fallen_tilt_deg <= 180.0:
        raise ConfigError(
            f"{prefix}.fallen_tilt_deg", behavior.fallen_tilt_deg, "must be in (0, 180] degrees"
        )
    check_positive(f"{prefix}.walk_distance", behavior.walk_distance)
    if not 0.0 < behavior.forward_cone_deg <= 90.0:
        raise ConfigError(
            f"{prefix}.forward_cone_deg", behavior.forward_cone_deg, "must be in (0, 90] degrees"
        )


def validate_frames(frames: DictConfig | FrameConfig, prefix: str = "") -> None:
    """Video size, fps, grid columns and quality; ``prefix`` is e.g. ``video.`` for training."""
    check_positive(f"{prefix}width", frames.width)
    check_positive(f"{prefix}height", frames.height)
    if max(frames.width, frames.height) > 4096:
        raise ConfigError(f"{prefix}width", frames.width, "width and height must be at most 4096 pixels")
    if frames.fps is not None:
        check_positive(f"{prefix}fps", frames.fps)
    if frames.columns is not None:
        check_positive(f"{prefix}columns", frames.columns)
    check_choice(f"{prefix}quality", frames.quality, QUALITIES)


def validate_video(video: DictConfig | VideoConfig) -> None:
    validate_frames(video, "video.")
    check_positive("video.every", video.every, strict=False)
    check_positive("video.episodes", video.episodes)
    if video.max_steps is not None:
        check_positive("video.max_steps", video.max_steps)
