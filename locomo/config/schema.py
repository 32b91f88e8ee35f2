"""Configuration schema (Hydra structured configs): every command's keys, and the allowed values.

Every field has a one-line docstring (the comment after it). The checks of a composed config are
:mod:`locomo.config.rules` (per key and section) and :mod:`locomo.config.validation` (per command); a
checkpoint's stored config is read back with :func:`upgrade_saved_config`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

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
SYMMETRIES = ("none", "augment", "loss", "both", "auto", "auto_both")
# algo.symmetry's parts on an env with a mirror map: (mirror images in the update, symmetry loss).
# The automatic values turn into none on an env without one; the others are refused there.
SYMMETRY_PARTS = {
    "none": (False, False),
    "augment": (True, False),
    "loss": (False, True),
    "both": (True, True),
    "auto": (True, False),
    "auto_both": (True, True),
}
AUTOMATIC_SYMMETRIES = ("auto", "auto_both")


def has_mirror_map(env_id: object) -> bool:
    """Whether the env (its Gymnasium id) has a left-right mirror map: the humanoid envs."""
    return str(env_id).startswith("Humanoid")


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
    # (the humanoid envs), with its importance weight (locomo/rl/symmetry.py) | loss: the actor's
    # loss gains symmetry_coef x the mirror-symmetry loss |mu(s) - M mu(M s)|^2 instead | both:
    # augment and loss | auto: augment where it applies (an env with a mirror map, the
    # humanoid's, and per-step weights), none elsewhere | auto_both: both where it applies
    symmetry: str = "none"
    symmetry_coef: float = 1.0  # algo.symmetry=loss or both: the weight of the mirror-symmetry loss
    # with the images and the loss both on (algo.symmetry=both, or auto_both where it applies), every
    # minibatch holds its samples' mirror images, so the symmetry loss reads the images' own forward
    # pass (one pass over the minibatch, not two); no effect otherwise
    symmetry_pairs: bool = False


@dataclass
class ModelConfig:
    hidden_sizes: list[int] = field(default_factory=lambda: [64, 64])  # MLP widths (policy; value net too)
    # the value net's own widths; null = hidden_sizes. The critic's forward and backward run beside
    # the actor's in every gradient step, so a narrower one frees a core for the rest of the update
    critic_hidden_sizes: list[int] | None = None
    activation: str = "tanh"  # tanh | relu | elu
    init_log_std: float = -0.5  # initial state-independent log-std of the Gaussian policy
    normalize_observations: bool = True  # running mean/std observation normalisation
    # Box actions. clip: the Gaussian is over actions normalised to [-1, 1] within the env's
    # bounds, the stored and executed action is its clip, log-probs are the clipped Gaussian's;
    # none: the Gaussian is in the env's units and the env clips (checkpoints saved before this
    # key existed behave so)
    action_bounds: str = "clip"
    # a cap on the Gaussian policy's log-std: its std is exp(min(log_std, max_log_std)), so the
    # exploration noise never exceeds it (e.g. to fine-tune a walker that stays up while it samples
    # its actions); null = no cap
    max_log_std: float | None = None
    # the iteration from which max_log_std caps the std (null: from the start): a job that explores
    # with the full noise, then settles into a walk that stays up while it samples
    max_log_std_from: int | None = None


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
    # Start the policy, critic and normalisers from a checkpoint (a run dir, a checkpoint file, or
    # a shipped name such as walker) instead of fresh weights: a new run that fine-tunes it. The
    # optimiser, counters and envs start new. null = fresh weights
    init_from: str | None = None


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
    """Thresholds that turn an episode's root-body trajectory into a label (see
    locomo/evaluation/behavior.py)."""

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
    quality: str = "fast"  # fast: no shadows, reflections or anti-aliasing (much cheaper on a CPU) | full


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
    # iterations of the default job's workload timed (the first a warm-up): its iterations vary
    # by about a tenth with what the bodies do, so its median needs more of them than the others
    default_iterations: int = 12
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


# Keys added after checkpoints were first written, with the value that reproduces how those
# checkpoints behaved (a key's schema default may differ: it is what a new run gets).
LEGACY_DEFAULTS: dict[str, dict[str, Any]] = {
    "model": {"action_bounds": "none", "critic_hidden_sizes": None, "max_log_std_from": None}
}


def upgrade_saved_config(saved: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's config with the keys it predates set to the behaviour it was trained with."""
    out = dict(saved)
    for group, keys in LEGACY_DEFAULTS.items():
        section = dict(out.get(group) or {})
        for key, value in keys.items():
            section.setdefault(key, value)
        out[group] = section
    return out


def critic_widths(model: Any) -> list[int]:
    """The value net's hidden widths: ``model.critic_hidden_sizes``, or the policy's where it is
    null (or a stored config predates it)."""
    own = getattr(model, "critic_hidden_sizes", None)
    return [int(h) for h in (model.hidden_sizes if own is None else own)]


def std_cap(model: Any, iteration: int) -> float | None:
    """The cap on the policy's log-std in force at ``iteration`` (the updates done so far):
    ``model.max_log_std`` once ``model.max_log_std_from`` is reached (from the start where that
    is null, or a stored config predates it); None before it, or without a cap."""
    cap = getattr(model, "max_log_std", None)
    start = getattr(model, "max_log_std_from", None)
    if cap is None or (start is not None and iteration < start):
        return None
    return float(cap)


def saved_model_differences(saved: Any, model: DictConfig) -> dict[str, Any]:
    """A checkpoint's saved config's ``model.*`` values that differ from ``model``'s (the keys
    ``model`` has; keys the checkpoint predates count as :data:`LEGACY_DEFAULTS` give them)."""
    stored = upgrade_saved_config(saved if isinstance(saved, dict) else {}).get("model")
    mine = OmegaConf.to_container(model, resolve=True)
    if not isinstance(stored, dict) or not isinstance(mine, dict):
        return {}
    return {key: value for key, value in stored.items() if key in mine and mine[key] != value}


def to_container(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain Python types (for checkpoints and W&B)."""
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    return container  # type: ignore[return-value]
