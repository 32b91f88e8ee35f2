"""Configuration schema (Hydra structured configs) and validation.

Every field has a one-line docstring (the comment after it); `validate_*` functions check
ranges, choices and files once, before any simulation starts, and raise
:class:`ConfigError` naming the key, the bad value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import sys
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

PACKAGE_DIR = Path(__file__).resolve().parent
# Inside the package, so that a wheel carries them (the repository's top-level conf/ and assets/
# are links here, for people who browse or edit from a checkout).
CONF_DIR = PACKAGE_DIR / "conf"
ASSETS_DIR = PACKAGE_DIR / "assets"

RETURNS = ("total", "reward_to_go")
BASELINES = ("none", "mean", "optimal", "value")
IMPORTANCE = ("per_step", "trajectory")
DEVICES = ("auto", "cpu", "cuda")
UPDATE_PRECISIONS = ("auto", "float32", "bfloat16")
WANDB_MODES = ("auto", "online", "offline", "disabled")
WANDB_TAG_MAX = 64  # characters in a W&B tag
ACTIVATIONS = ("tanh", "relu", "elu")
BACKENDS = ("gymnasium", "batched")
QUALITIES = ("fast", "full")
EVAL_MODES = ("both", "deterministic", "stochastic")
# locomo export: format -> the suffixes its out may have (the first one is the default out's, walker<suffix>)
EXPORT_SUFFIXES = {"checkpoint": (".pt",), "torchscript": (".ts", ".pt"), "onnx": (".onnx",)}
VIEWERS = ("auto", "window", "video")
PLOT_KINDS = ("curves", "behavior")
ACTION_BOUNDS = ("clip", "none")
LR_SCHEDULES = ("constant", "linear", "adaptive")
REUSE_CORRECTIONS = ("none", "truncated", "vtrace")
SYMMETRIES = ("none", "augment", "auto")


class ConfigError(ValueError):
    """A user-facing configuration error: names the key, the value and what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r} is invalid: {allowed}")


@dataclass
class EnvConfig:
    name: str = "humanoid"  # locomo's name for the task (the `env=` group option)
    id: str = "Humanoid-v5"  # Gymnasium id the task is built on
    # gymnasium: one Gymnasium env per slot, stepped in turn (any Gymnasium id);
    # batched: N MjData of one model on env.threads native threads (the MuJoCo v5 tasks, same numbers)
    backend: str = "gymnasium"
    threads: int = 0  # batched backend: simulator threads; 0 = one per CPU core
    xml_file: str | None = None  # MJCF model: a path, or a file name under assets/
    # Set by `locomo train` when a run starts (any value given is replaced): the sha256 of the
    # model (model_sha256), with xml_file then pinned to an absolute path, or to a name under
    # assets/ for the package's own models; every load refuses a model that differs. None: not pinned.
    xml_sha256: str | None = None
    max_episode_steps: int | None = None  # time limit (truncation); None keeps the env's own
    kwargs: dict[str, Any] = field(default_factory=dict)  # extra keyword arguments for gymnasium.make
    # Reward = sum_k reward_scales[k] * term_k, term_k read from the env's info dict (key
    # reward_terms[k]). With no terms the env's own reward is the single term "env".
    reward_terms: dict[str, str] = field(default_factory=dict)
    reward_scales: dict[str, float] = field(default_factory=dict)  # weight of each term (see reward_terms)


@dataclass
class AlgoConfig:
    name: str = "clipped"  # preset name (the `algo=` group option), informational
    lr: float = 3e-4  # Adam learning rate for policy and value network
    returns: str = "reward_to_go"  # total (vanilla REINFORCE) | reward_to_go (causality)
    baseline: str = "value"  # none | mean | optimal | value
    gamma: float = 0.99  # discount, in (0, 1]
    gae_lambda: float = 0.95  # GAE lambda in [0, 1], used with the value baseline
    normalize_advantages: bool = True  # standardise advantages over the batch
    normalize_rewards: bool = False  # divide rewards by the running std of the discounted return
    epochs: int = 1  # gradient passes over each batch (>1 reuses it with importance weights)
    minibatches: int = 1  # minibatches per pass
    importance: str = "per_step"  # per_step ratio | trajectory product of ratios
    clip_ratio: float | None = None  # PPO-style clipping of the importance weight; None = off
    target_kl: float | None = None  # stop the passes early when approx KL exceeds this; None = off
    max_log_weight: float = 20.0  # trajectory log-weights are clamped to +-this (no overflow)
    value_coef: float = 0.5  # weight of the value regression loss
    entropy_coef: float = 0.0  # weight of the entropy bonus
    max_grad_norm: float | None = None  # clip the global gradient norm; None = off
    # regress V on value targets standardised by their running mean/std (the critic's output is
    # de-standardised for the advantages), so the value loss keeps one scale as returns grow
    normalize_values: bool = False
    # constant | linear (decays to 0 at train.iterations) | adaptive (per epoch: lr / 1.5 when the
    # approx KL > 2 kl_threshold, lr * 1.5 when < kl_threshold / 2, within [1e-6, 1e-2])
    lr_schedule: str = "constant"
    kl_threshold: float = 0.008  # the approx KL per epoch the adaptive schedule steers towards
    optimal_baseline_chunk: int = 1024  # samples per vmap chunk for the optimal baseline's grads
    # keep the last K batches and train every update on all of them, each sample weighted by
    # pi_theta / pi_behaviour (the policy that collected it), clipped around pi_k / pi_behaviour
    reuse_batches: int = 1
    # how old samples' advantages and value targets are re-estimated: none (GAE as if on-policy)
    # | truncated (traces cut by min(1, pi_k / mu)) | vtrace (those advantages, V-trace targets)
    reuse_correction: str = "vtrace"
    # none | augment: each update also learns from the left-right mirror image of every sample
    # (the humanoid envs), with its importance weight (locomo/symmetry.py) | auto: augment where
    # it applies (an env with a mirror map, the humanoid's, and per-step weights), none elsewhere
    symmetry: str = "none"


@dataclass
class ModelConfig:
    hidden_sizes: list[int] = field(default_factory=lambda: [64, 64])  # MLP widths (policy and value)
    activation: str = "tanh"  # tanh | relu | elu
    init_log_std: float = -0.5  # initial state-independent log-std of the Gaussian policy
    normalize_observations: bool = True  # running mean/std observation normalisation
    # Box actions. clip: the Gaussian is over actions normalised to [-1, 1] within the env's
    # bounds, the stored and executed action is its clip, log-probs are the clipped Gaussian's;
    # none: the Gaussian is in the env's units and the env clips (checkpoints saved before this
    # key existed behave so)
    action_bounds: str = "clip"


@dataclass
class TrainConfig:
    iterations: int = 300  # collect -> update cycles
    # A budget in env steps instead of iterations: train.iterations becomes ceil(total_steps /
    # steps_per_iteration). null = train.iterations decides; both on the command line is an error.
    total_steps: int | None = None
    steps_per_iteration: int = 4096  # env steps per batch, all envs together
    num_envs: int = 16  # parallel envs; steps per env per batch = steps_per_iteration / num_envs
    device: str = "auto"  # auto (CUDA when available) | cpu | cuda
    checkpoint_every: int = 50  # iterations between checkpoints (and one at the end); 0 = end only
    keep_checkpoints: int = 3  # periodic checkpoints kept on disk (last.pt is always kept)
    # intra-op threads for torch; 0 = torch's default (one per core). 1 leaves the cores to the
    # simulator threads (env.threads): policy inference on N envs is too small to gain from more.
    torch_threads: int = 1
    # collect the next batch while the update runs (a thread beside the simulator's): that batch
    # comes from the policy before the update and is weighted like a kept batch (pi_k / mu). Needs
    # what algo.reuse_batches > 1 needs (value baseline, reward-to-go, per-step weights)
    overlap: bool = False
    # intra-op threads for torch during the update; 0 = one per core. The simulator threads are
    # idle then, so 0 helps a little on an idle machine; but with one other busy process the
    # update gets several times slower (torch's worker threads wait on each other whenever one
    # is descheduled), so the default stays 1. Measured figures: README, "Training keys".
    update_threads: int = 1
    # the update's matrix products (the nets' forward and backward): float32, or bfloat16 (weights,
    # optimiser and all the math around the nets stay float32). auto = bfloat16 where the device
    # computes it natively (a CPU with AVX512-BF16 or AMX; a CUDA GPU with bf16), else float32
    update_precision: str = "float32"
    deterministic: bool = False  # torch.use_deterministic_algorithms


@dataclass
class WandbConfig:
    mode: str = "auto"  # auto (online when logged in, else offline) | online | offline | disabled
    project: str = "locomo"  # W&B project
    entity: str | None = None  # W&B entity (team or user); None = your default
    group: str | None = None  # W&B run group, e.g. to compare estimators
    name: str | None = None  # W&B run name; None = <env>-<algo preset>-s<seed>, e.g. humanoid-walk-s0
    init_timeout: float = 30.0  # seconds to wait for the W&B server before logging offline instead
    tags: list[str] = field(default_factory=list)  # more run tags, beside env, algo preset, overlap, reuse
    log_model: bool = True  # each checkpoint's policy as a W&B model artifact (aliases latest, best)
    eval_episodes: int = 10  # deterministic episodes at the end, into the run's summary; 0 = none


@dataclass
class LoggerConfig:
    wandb: WandbConfig = field(default_factory=WandbConfig)
    metrics_file: str = "metrics.jsonl"  # JSON-lines metrics in the run directory
    progress: bool = True  # a progress bar on the terminal


@dataclass
class BehaviorConfig:
    """Thresholds that turn an episode's root-body trajectory into a label (see locomo/behavior.py)."""

    fall_tilt_deg: float = 20.0  # a body that fell on the spot leaning this much fell in the lean's direction
    fallen_tilt_deg: float = 60.0  # a torso leaning more than this when the time limit hits also fell
    walk_distance: float = 0.5  # metres moved in the ground plane: below it the body went nowhere
    forward_cone_deg: float = 45.0  # half-angle of the forward (+x) and backward (-x) cones; else sideways


@dataclass
class FrameConfig:
    """How rollouts look on video (shared by training videos, ``locomo render`` and ``replay``)."""

    width: int = 320  # pixels per rollout tile (odd sizes are rounded up: H.264 needs even ones)
    height: int = 240  # pixels per rollout tile
    fps: float | None = None  # frames per second; null = 1 / control_dt. Playback is real time
    # either way: a lower fps renders every round(1 / (fps * control_dt))-th step.
    columns: int | None = None  # tiles per row in the grid video; null = ceil(sqrt(rollouts))
    camera: str | None = None  # MJCF camera name; null = "side", else "track", else one following the root
    quality: str = "fast"  # fast: no shadows, reflections or anti-aliasing (~5x cheaper on CPU) | full


@dataclass
class VideoConfig(FrameConfig):
    """Videos written during ``locomo train`` (to <run>/videos/ and W&B)."""

    fps: float | None = 30.0  # real-time playback at about 30 fps: half the renders of 1 / control_dt
    enabled: bool = True  # write training videos
    every: int = 50  # iterations between videos (one more at the end); 0 = only at the end
    episodes: int = 4  # rollouts per video, side by side in a grid
    deterministic: bool = False  # true: the mean action; false: sampled actions, as in training
    max_steps: int | None = 500  # steps per rollout at most; null = the env's time limit


@dataclass
class LocomoConfig:
    seed: int = 0  # seeds torch, numpy and the envs (>= 0)
    # Continue a run: its run directory (or checkpoints/ dir, or one checkpoint file). The config
    # then comes from the checkpoint; see docs/checkpoints.md for what may still be overridden.
    resume: str | None = None
    # A new run in a run dir that already holds a run is refused; true deletes that run's files first.
    overwrite: bool = False
    env: EnvConfig = field(default_factory=EnvConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    behavior: BehaviorConfig = field(default_factory=BehaviorConfig)
    video: VideoConfig = field(default_factory=VideoConfig)


@dataclass
class RenderConfig(FrameConfig):
    """``locomo render``: roll out a checkpoint's policy and write labelled videos."""

    checkpoint: str | None = None  # a checkpoint file, or a run directory (-> checkpoints/last.pt)
    episodes: int = 6  # rollouts; episode i is seeded with seed + i
    seed: int = 0  # env reset and action sampling of episode i use seed + i
    deterministic: bool = False  # true: the mean action; false: sampled actions
    max_steps: int | None = None  # steps per rollout at most; null = the env's time limit
    output_dir: str | None = None  # null = <run>/render/ (the shipped walker: outputs/render/<time>/)
    overwrite: bool = False  # true: files shipped in locomo's assets/ may be replaced (by the same kind)
    grid: bool = True  # write one video with every rollout side by side
    per_episode: bool = True  # write one video per rollout
    sheet: bool = True  # write a PNG contact sheet: a row of snapshots per rollout
    # compare checkpoints of checkpoint's run: its iter_XXXXXX.pt at these iterations, one column
    # each, the same seeds in every column (one video and one sheet); null = render one checkpoint
    iterations: list[int] | None = None
    behavior: BehaviorConfig = field(default_factory=BehaviorConfig)


@dataclass
class EvalConfig:
    """``locomo eval``: returns, lengths, distances and behaviour counts of a checkpoint's policy."""

    checkpoint: str | None = None  # a checkpoint file, or a run directory (-> checkpoints/last.pt)
    episodes: int = 20  # episodes per mode; episode i is seeded with seed + i
    seed: int = 0  # env reset and action sampling of episode i use seed + i
    mode: str = "both"  # deterministic (mean action) | stochastic (sampled) | both
    max_steps: int | None = None  # steps per episode at most; null = the env's time limit
    output: str | None = None  # JSON file; null = <run>/eval/<checkpoint>_seed<seed>.json
    overwrite: bool = False  # true: a file shipped in locomo's assets/ may be replaced (by the same kind)
    behavior: BehaviorConfig = field(default_factory=BehaviorConfig)


@dataclass
class ExportConfig:
    """``locomo export``: a checkpoint's policy alone (for shipping), with its evaluation beside it."""

    checkpoint: str | None = None  # a checkpoint file, or a run directory (-> checkpoints/last.pt)
    # checkpoint: locomo's policy file + its evaluation in <out without .pt>.json; torchscript | onnx:
    # a standalone file mapping raw observations to deterministic env-unit actions (README "Export")
    format: str = "checkpoint"  # checkpoint (.pt) | torchscript (.pt or .ts) | onnx (.onnx)
    out: str | None = None  # the file to write; null = <run>/export/policy_<checkpoint>.pt|.ts|.onnx
    overwrite: bool = False  # true: a file shipped in locomo's assets/ may be replaced (by the same kind)
    episodes: int = 20  # format=checkpoint: episodes in each eval mode; episode i is seeded seed + i
    seed: int = 0  # seed of the first evaluation episode
    max_steps: int | None = None  # steps per episode at most; null = the env's time limit
    behavior: BehaviorConfig = field(default_factory=BehaviorConfig)


@dataclass
class ReplayConfig(FrameConfig):
    """``locomo replay``: one episode in the MuJoCo viewer (or, headless, a video)."""

    checkpoint: str | None = None  # a checkpoint file, or a run directory (-> checkpoints/last.pt)
    seed: int = 0  # the episode's seed (as episode 0 of ``locomo eval seed=<seed>``)
    deterministic: bool = True  # true: the mean action; false: sampled actions
    max_steps: int | None = None  # steps at most; null = the env's time limit
    viewer: str = "auto"  # auto: a window when a display exists, else a video | window | video
    output: str | None = None  # the video's path; null = <run>/replay/<ckpt>_replay_seed<seed>_<mode>.mp4
    overwrite: bool = False  # true: a file shipped in locomo's assets/ may be replaced (by the same kind)
    behavior: BehaviorConfig = field(default_factory=BehaviorConfig)


@dataclass
class VarianceConfig(LocomoConfig):
    """`locomo variance`: the training config plus what to measure."""

    batches: int = 16  # independent batches collected with the same policy
    estimators: list[str] = field(
        default_factory=lambda: [
            "total/none",
            "total/mean",
            "total/optimal",
            "reward_to_go/none",
            "reward_to_go/mean",
            "reward_to_go/optimal",
        ]
    )  # <returns>/<baseline> pairs to compare
    checkpoint: str | None = None  # measure at a trained policy instead of the initial one


@dataclass
class PlotConfig:
    """`locomo plot`: curves of several runs."""

    runs: str = MISSING  # a folder holding runs (e.g. a multirun folder)
    metric: str = "rollout/return_mean"  # the metrics.jsonl column to plot
    group_by: list[str] | None = None  # override keys that name a curve; None = all but seed
    out: str | None = None  # PNG path; None = <runs>/curves.png (kind=behavior: <runs>/behavior.png)
    # curves: `metric` against env steps, a curve per group; behavior: the behaviour-label mix of
    # the finished episodes as a stacked area (all runs' episodes pooled)
    kind: str = "curves"
    window: int = 10  # kind=behavior: iterations pooled per point (episodes finish unevenly)
    overwrite: bool = False  # true: a file shipped in locomo's assets/ may be replaced (by the same kind)


@dataclass
class BenchSettings:
    out: str | None = None  # JSON file for the table; None = bench.json in the run directory
    num_envs: int = 16  # envs per sampler and per trainer
    threads: int = 0  # simulator threads of locomo, EnvPool and the raw-physics loop; 0 = one per core
    sampler_steps: int = 100  # vector steps (x num_envs env steps) timed per repeat of each sampler
    repeats: int = 15  # repeats of each sampler, interleaved; the table shows medians
    train_batch: int = 8192  # env steps per training iteration (locomo and SB3 alike)
    train_epochs: int = 5  # passes over each batch
    train_minibatches: int = 4  # minibatches per pass
    train_iterations: int = 5  # iterations timed per trainer (the first is a warm-up, not counted)
    # locomo's trainer again as one torchrun job of this many processes, 1 simulator thread each
    # (against one process with `threads`); 0 = one per core, 1 = not measured
    ranks: int = 0
    gymnasium_async: bool = True  # measure Gymnasium's subprocess vector env (num_envs processes)
    envpool: bool = True  # measure EnvPool when importable
    sb3: bool = True  # measure Stable-Baselines3 PPO when importable


@dataclass
class BenchConfig:
    seed: int = 0  # seeds the random actions and the trainers
    quick: bool = False  # CI: tiny sizes, same table and JSON keys
    overwrite: bool = False  # true: a file shipped in locomo's assets/ may be replaced (by the same kind)
    bench: BenchSettings = field(default_factory=BenchSettings)


def register_configs() -> None:
    """Put the schemas in Hydra's ConfigStore, so conf/*.yaml are type-checked against them."""
    cs = ConfigStore.instance()
    cs.store(name="locomo_schema", node=LocomoConfig)
    cs.store(name="locomo_variance_schema", node=VarianceConfig)
    cs.store(name="locomo_plot_schema", node=PlotConfig)
    cs.store(name="render_schema", node=RenderConfig)
    cs.store(name="eval_schema", node=EvalConfig)
    cs.store(name="replay_schema", node=ReplayConfig)
    cs.store(name="export_schema", node=ExportConfig)
    cs.store(name="bench_schema", node=BenchConfig)
    from locomo.cli_help import register_help_resolver  # each conf/<command>.yaml's --help text

    register_help_resolver()


# ---------------------------------------------------------------------------------------------
# Validation


def _choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(key, value, f"allowed values are {', '.join(allowed)}")


def _positive(key: str, value: Any, strict: bool = True) -> None:
    ok = value > 0 if strict else value >= 0
    if not ok or not math.isfinite(value):
        raise ConfigError(key, value, "must be > 0" if strict else "must be >= 0")


def _at_most(key: str, value: Any, limit: int) -> None:
    if value > limit:
        raise ConfigError(key, value, f"must be at most {limit} (0 = one per CPU core)")


def _finite(key: str, value: Any) -> None:
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
# Linux's limits (limits.h): bytes in one file or folder name, and in a whole path. A longer one
# fails every file operation with "File name too long"; checked up front to say which key it is.
NAME_MAX = 255
PATH_MAX = 4096
# Values longer than this are shown shortened in messages (a 5,000-character path would be the line).
SHOWN_MAX = 120
# The most episodes ``locomo render`` films in one call (each is a video and a tile of the grid).
MAX_RENDER_EPISODES = 100


def warn(message: str) -> None:
    """A config that is accepted but probably not what was meant: one line on stderr."""
    print(f"locomo: warning: {message}", file=sys.stderr)


def shown(value: str) -> str:
    """``value`` for a message: as it is, or, when very long, its start and end around its length."""
    if len(value) <= SHOWN_MAX:
        return value
    return f"{value[:60]}...({len(value)} characters)...{value[-40:]}"


def path_problem(value: str) -> str | None:
    """Why ``value`` cannot be a path on this system (a name or the whole too long), else None."""
    encoded = os.fsencode(value)
    longest = max((len(part) for part in encoded.split(b"/")), default=0)
    if longest > NAME_MAX:
        return (
            f"a file or folder name in it has {longest} characters, and file systems allow {NAME_MAX}; "
            "give a path with shorter names"
        )
    if len(encoded) >= PATH_MAX:
        return (
            f"it has {len(encoded)} characters, and paths are limited to {PATH_MAX - 1}; give a shorter "
            "path (e.g. cd closer to it and give it relative to there)"
        )
    return None


def check_path(key: str, value: Any) -> None:
    """ConfigError (naming ``key``) when ``value`` is too long to be a path (:func:`path_problem`)."""
    if value is None:
        return
    problem = path_problem(str(value))
    if problem is not None:
        raise ConfigError(key, shown(str(value)), f"too long for a path: {problem}")


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


def resolve_xml_file(xml_file: str) -> Path:
    """Find an MJCF file: as given (absolute or relative to the working directory), else in assets/."""
    for candidate in (Path(xml_file).expanduser(), ASSETS_DIR / xml_file):
        if candidate.is_file():
            return candidate.resolve()
    raise ConfigError("env.xml_file", xml_file, f"no such file (looked in {os.getcwd()} and {ASSETS_DIR})")


def _included_files(xml: Path) -> list[Path]:
    """The files an MJCF model ``<include>``s (recursively; MuJoCo reads each ``file`` relative to the
    main model's directory). An unreadable or unparsable XML includes nothing: MuJoCo reports it."""
    import xml.etree.ElementTree as ET

    found: list[Path] = []
    todo = [xml]
    while todo:
        try:
            root = ET.parse(todo.pop()).getroot()
        except (OSError, ET.ParseError):
            continue
        for node in root.iter("include"):
            name = node.get("file")
            included = (xml.parent / name) if name else None
            if included is not None and included not in found:
                found.append(included)
                todo.append(included)
    return found


def model_sha256(xml: Path) -> str:
    """The sha256 of an MJCF model: of the file's bytes (what ``sha256sum`` prints) when it includes
    no other file, else of its bytes and those of each ``<include>``d file (meshes, textures and
    other assets a model names are not hashed). Raises OSError if a file cannot be read."""
    import hashlib

    digest = hashlib.sha256(xml.read_bytes())
    included = _included_files(xml)
    if not included:
        return digest.hexdigest()
    for path in included:
        digest.update(b"\0" + os.path.relpath(path, xml.parent).encode())  # where it is, as MuJoCo reads it
        digest.update(b"\0" + (path.read_bytes() if path.is_file() else b"<missing>"))
    return digest.hexdigest()


def pin_xml_file(env: DictConfig) -> None:
    """When a run starts: ``env.xml_file`` as found now, and the model's hash (``env.xml_sha256``).

    A path as typed would be resolved again, against the working directory, by every resume, eval
    and render: another directory's file of the same name would be trained or evaluated on,
    silently. A model among the package's assets is stored by its name under assets/, so that a
    run stays usable on another machine or install (the hash still says if that model changed).
    """
    if env.xml_file is None:
        env.xml_sha256 = None
        return
    xml = resolve_xml_file(env.xml_file)
    assets = ASSETS_DIR.resolve()
    env.xml_file = str(xml.relative_to(assets)) if xml.is_relative_to(assets) else str(xml)
    env.xml_sha256 = model_sha256(xml)


def env_xml_path(env: DictConfig | EnvConfig) -> Path:
    """The model file an env config builds: a pinned one (``env.xml_sha256`` set) is an absolute path
    or a name under assets/, never looked up in the working directory; else :func:`resolve_xml_file`."""
    assert env.xml_file is not None
    if getattr(env, "xml_sha256", None) is not None:
        path = Path(env.xml_file)
        return path if path.is_absolute() else ASSETS_DIR / path
    return resolve_xml_file(env.xml_file)


def pinned_model_problem(env: DictConfig | EnvConfig) -> str | None:
    """Why a pinned model (see :func:`pin_xml_file`) cannot be used here, or None."""
    sha = getattr(env, "xml_sha256", None)
    if env.xml_file is None or sha is None:
        return None
    path = env_xml_path(env)
    where = f"env.xml_file={str(path)!r}, resolved when training started"
    if not path.is_file():
        return (
            f"its model file {where}, does not exist; put that model back at that path "
            "(the run can be used only with the model it was trained on)"
        )
    try:
        now = model_sha256(path)
    except OSError as exc:
        return f"its model file {where}, cannot be read ({exc.strerror or exc})"
    if now != sha:
        return (
            f"its model file {where}, has changed since (sha256 {sha[:12]}..., now {now[:12]}...); "
            "put back the model the run was trained on, or train a new run on the changed one"
        )
    return None


def validate_env_id(env_id: str) -> None:
    """The Gymnasium id must be registered (checked against gymnasium's registry, no env built)."""
    import gymnasium

    try:
        gymnasium.spec(env_id)
    except gymnasium.error.Error as exc:
        raise ConfigError("env.id", env_id, f"not a registered Gymnasium env ({exc})") from exc


def validate_env(env: DictConfig | EnvConfig) -> None:
    _choice("env.backend", env.backend, BACKENDS)
    _positive("env.threads", env.threads, strict=False)
    _at_most("env.threads", env.threads, MAX_THREADS)
    validate_env_id(env.id)
    if env.backend == "batched":
        from locomo.envs.tasks import TASKS  # the registry of the batched tasks (imports MuJoCo)

        if env.id not in TASKS:
            supported = ", ".join(TASKS)
            raise ConfigError(
                "env.id", env.id, f"env.backend=batched supports {supported}; use env.backend=gymnasium"
            )
    if env.xml_file is not None and getattr(env, "xml_sha256", None) is not None:
        problem = pinned_model_problem(env)  # a resumed run's model: the one it was trained on
        if problem is not None:
            raise ConfigError("env.xml_file", env.xml_file, problem)
    elif env.xml_file is not None:
        resolve_xml_file(env.xml_file)
    if env.max_episode_steps is not None:
        _positive("env.max_episode_steps", env.max_episode_steps)
    # Without named terms the env's own reward is the one term, "env" (see EnvConfig).
    terms = list(env.reward_terms) or ["env"]
    for term in env.reward_scales:
        _finite(f"env.reward_scales.{term}", env.reward_scales[term])
        if term not in terms:
            allowed = ", ".join(terms)
            own = "" if env.reward_terms else " (the env's own reward)"
            raise ConfigError(
                f"env.reward_scales.{term}",
                env.reward_scales[term],
                f"unknown reward term; terms are {allowed}{own}",
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
    _choice("algo.lr_schedule", algo.lr_schedule, LR_SCHEDULES)
    _positive("algo.kl_threshold", algo.kl_threshold)
    _choice("algo.reuse_correction", algo.reuse_correction, REUSE_CORRECTIONS)
    if not isinstance(algo.reuse_batches, int) or algo.reuse_batches < 1:
        raise ConfigError("algo.reuse_batches", algo.reuse_batches, "must be an integer >= 1 (1: no reuse)")
    _choice("algo.symmetry", algo.symmetry, SYMMETRIES)
    if algo.symmetry == "augment" and algo.importance != "per_step":
        raise ConfigError(
            "algo.symmetry", algo.symmetry, "mirror images need algo.importance=per_step (weights per step)"
        )
    if algo.reuse_batches > 1:
        key, value = _off_policy_needs(algo)
        if key is not None:
            raise ConfigError(
                "algo.reuse_batches",
                algo.reuse_batches,
                f"reusing earlier batches needs algo.{key}={value} (old samples' advantages are "
                f"re-estimated with the value function, per step); algo.{key} is {algo[key]!r}: "
                "set algo.reuse_batches=1 (and train.overlap=false) to use it",
            )


def _off_policy_needs(algo: DictConfig | AlgoConfig) -> tuple[str | None, str]:
    """The first algo key (and the value it needs) that stops samples of an earlier policy from
    being re-weighted (kept batches, overlapped collection); (None, "") when none does."""
    needs = {"baseline": "value", "returns": "reward_to_go", "importance": "per_step"}
    for key, value in needs.items():
        if algo[key] != value:
            return key, value
    return None, ""


def validate_model(model: DictConfig | ModelConfig) -> None:
    _choice("model.activation", model.activation, ACTIVATIONS)
    _choice("model.action_bounds", model.action_bounds, ACTION_BOUNDS)
    _finite("model.init_log_std", model.init_log_std)
    if len(model.hidden_sizes) == 0 or any(h < 1 for h in model.hidden_sizes):
        raise ConfigError(
            "model.hidden_sizes", list(model.hidden_sizes), "must be a non-empty list of widths >= 1"
        )


def validate_init_log_std(value: float) -> None:
    """The initial log-std of a new policy (see :data:`MAX_ABS_INIT_LOG_STD`). Not a stored
    config's: what it started from does not matter once trained (an old run stays loadable)."""
    _finite("model.init_log_std", value)
    if abs(value) > MAX_ABS_INIT_LOG_STD:
        bound = MAX_ABS_INIT_LOG_STD
        raise ConfigError(
            "model.init_log_std",
            value,
            f"must be in [-{bound:g}, {bound:g}] (a std of e^-{bound:g} = {math.exp(-bound):.3g} to "
            f"e^{bound:g} = {math.exp(bound):.0f}; actions are of order 1: a larger std samples only the "
            "action bounds, and exp() of a much larger one overflows to inf)",
        )


def validate_device(key: str, device: str) -> None:
    _choice(key, device, DEVICES)
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            # train.device may be changed on resume too (locomo.resume.RESUME_OVERRIDABLE): the advice
            # holds for a run trained on a GPU machine and resumed on this one.
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
    for key in ("torch_threads", "update_threads"):
        _positive(f"train.{key}", train[key], strict=False)
        _at_most(f"train.{key}", train[key], MAX_THREADS)
    validate_device("train.device", train.device)
    _choice("train.update_precision", getattr(train, "update_precision", "float32"), UPDATE_PRECISIONS)


def validate_logger(logger: DictConfig | LoggerConfig) -> None:
    _choice("logger.wandb.mode", logger.wandb.mode, WANDB_MODES)
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
    from locomo.rundir import RUN_DIR_NAMES  # what a run writes (rundir imports this module)

    if name.parts[0] in RUN_DIR_NAMES:
        raise ConfigError(
            "logger.metrics_file",
            logger.metrics_file,
            f"{name.parts[0]} is a name locomo uses itself in a run dir; choose another, e.g. metrics.jsonl",
        )
    _positive("logger.wandb.init_timeout", logger.wandb.init_timeout)
    _positive("logger.wandb.eval_episodes", logger.wandb.eval_episodes, strict=False)
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
    _positive(f"{prefix}.walk_distance", behavior.walk_distance)
    if not 0.0 < behavior.forward_cone_deg <= 90.0:
        raise ConfigError(
            f"{prefix}.forward_cone_deg", behavior.forward_cone_deg, "must be in (0, 90] degrees"
        )


def validate_frames(frames: DictConfig | FrameConfig, prefix: str = "") -> None:
    """Video size, fps, grid columns and quality; ``prefix`` is e.g. ``video.`` for training."""
    _positive(f"{prefix}width", frames.width)
    _positive(f"{prefix}height", frames.height)
    if max(frames.width, frames.height) > 4096:
        raise ConfigError(f"{prefix}width", frames.width, "width and height must be at most 4096 pixels")
    if frames.fps is not None:
        _positive(f"{prefix}fps", frames.fps)
    if frames.columns is not None:
        _positive(f"{prefix}columns", frames.columns)
    _choice(f"{prefix}quality", frames.quality, QUALITIES)


def validate_video(video: DictConfig | VideoConfig) -> None:
    validate_frames(video, "video.")
    _positive("video.every", video.every, strict=False)
    _positive("video.episodes", video.episodes)
    if video.max_steps is not None:
        _positive("video.max_steps", video.max_steps)


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
        _positive("max_steps", cfg.max_steps)
    validate_seed("seed", cfg.seed)
    validate_behavior(cfg.behavior)


def validate_plot(cfg: DictConfig | PlotConfig) -> None:
    """Check a composed ``locomo plot`` config (beyond ``runs``, which the command checks)."""
    _choice("kind", cfg.kind, PLOT_KINDS)
    _positive("window", cfg.window)


def validate_render_config(cfg: DictConfig) -> None:
    """Check a composed ``locomo render`` config."""
    refuse_unknown_keys(cfg, RenderConfig)
    _validate_checkpoint_command(cfg, "render")
    _positive("episodes", cfg.episodes)
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
    _positive("episodes", cfg.episodes)
    _choice("mode", cfg.mode, EVAL_MODES)


def validate_export_config(cfg: DictConfig) -> None:
    """Check a composed ``locomo export`` config."""
    refuse_unknown_keys(cfg, ExportConfig)
    _validate_checkpoint_command(cfg, "export")
    _positive("episodes", cfg.episodes)
    _choice("format", cfg.format, tuple(EXPORT_SUFFIXES))
    suffixes = EXPORT_SUFFIXES[cfg.format]
    if cfg.out is not None and not str(cfg.out).endswith(suffixes):
        checkpoint = cfg.format == "checkpoint"
        why = "(its evaluation is written beside it as .json)" if checkpoint else f"for format={cfg.format}"
        raise ConfigError("out", cfg.out, f"must be a {' or '.join(suffixes)} file {why}")


def validate_replay_config(cfg: DictConfig) -> None:
    """Check a composed ``locomo replay`` config."""
    refuse_unknown_keys(cfg, ReplayConfig)
    _validate_checkpoint_command(cfg, "replay")
    _choice("viewer", cfg.viewer, VIEWERS)
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
    if cfg.algo.symmetry == "augment" and not str(cfg.env.id).startswith("Humanoid"):
        raise ConfigError(
            "algo.symmetry",
            cfg.algo.symmetry,
            f"env {cfg.env.name!r} ({cfg.env.id}) has no left-right mirror map; the humanoid envs have",
        )
    key, value = _off_policy_needs(cfg.algo)
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
        _positive(f"bench.{key}", getattr(b, key))
    _positive("bench.threads", b.threads, strict=False)
    _positive("bench.ranks", b.ranks, strict=False)
    if b.train_iterations < 2:
        raise ConfigError(
            "bench.train_iterations", b.train_iterations, "must be >= 2 (the first is a warm-up)"
        )
    if b.train_batch % (b.num_envs * b.train_minibatches) != 0:
        raise ConfigError(
            "bench.train_batch",
            b.train_batch,
            "must be a multiple of bench.num_envs * bench.train_minibatches "
            f"= {b.num_envs * b.train_minibatches}",
        )


# Keys added after checkpoints were first written, with the value that reproduces how those
# checkpoints behaved (a key's schema default may differ: it is what a new run gets).
LEGACY_DEFAULTS: dict[str, dict[str, Any]] = {"model": {"action_bounds": "none"}}


def upgrade_saved_config(saved: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's config with the keys it predates set to the behaviour it was trained with."""
    out = dict(saved)
    for group, keys in LEGACY_DEFAULTS.items():
        section = dict(out.get(group) or {})
        for key, value in keys.items():
            section.setdefault(key, value)
        out[group] = section
    return out


def to_container(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain Python types (for checkpoints and W&B)."""
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    return container  # type: ignore[return-value]
