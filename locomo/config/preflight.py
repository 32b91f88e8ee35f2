"""One pre-flight check of a training config's model and memory, before anything big is allocated.

:func:`check_resources` builds one env of the task (cheap: one simulator, no batch) to learn the
sizes a config will allocate at, refuses models a task cannot train on (no actuators, or a
model file of another task), and estimates the memory the run needs (rollout buffer, batch
temporaries, the N simulators, the videos' stored states) against what this machine has
available. A config that would not fit fails with one line giving both figures, instead of an
allocation traceback minutes later (or the kernel's out-of-memory kill).

:func:`estimate_memory` and :func:`memory_limit_from` are pure, so the figures are testable.
"""

from __future__ import annotations

import itertools
import resource
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from locomo.config.schema import AUTOMATIC_SYMMETRIES, SYMMETRY_PARTS, critic_widths, has_mirror_map
from locomo.errors import ConfigError

if TYPE_CHECKING:  # for annotations only: nothing is imported at run time
    from locomo.config.schema import EnvConfig, LocomoConfig

GIB = 2**30
# Resident memory of one simulator beyond its MjData buffer (measured: ~0.45 MiB per MjData of
# humanoid or pendulum, the arena's first pages), and of one whole Gymnasium env (~1.2 MiB).
MJDATA_OVERHEAD = 512 * 1024
GYMNASIUM_ENV_OVERHEAD = 1536 * 1024
NON_MUJOCO_ENV_BYTES = 64 * 1024
# A rollout step's float32 values beside its observation and action: log-prob, reward, flags,
# values, next values, advantages, returns and the estimators' temporaries.
SCALARS_PER_STEP = 16
# Headroom over the sum of the parts (allocator slack, copies torch makes in the update).
SAFETY = 1.5


@dataclass(frozen=True)
class EnvSizes:
    """What one env of the task allocates at."""

    obs_dim: int
    action_dim: int
    state_dim: int  # nq + nv (0 for non-MuJoCo envs): one stored state of a video rollout
    env_bytes: int  # resident bytes of one simulator in the configured backend
    time_limit: int  # steps per episode at most (for video rollouts)


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a training run needs, by part; ``blame`` is the config key of the largest part."""

    parts: dict[str, float]
    blame: str

    @property
    def total(self) -> float:
        return SAFETY * sum(self.parts.values())


def estimate_memory(cfg: DictConfig | LocomoConfig, sizes: EnvSizes) -> MemoryEstimate:
    """Bytes for the rollout buffer and update, the simulators and the video rollouts of ``cfg``."""
    steps, envs = int(cfg.train.steps_per_iteration), int(cfg.train.num_envs)
    hidden = sum(critic_widths(cfg.model))
    # Observations twice (buffer + the minibatch gathers), actions, scalars, and the value net's
    # activations over the whole batch (one batched pass after each collection).
    per_step = 4 * (2 * sizes.obs_dim + 2 * sizes.action_dim + SCALARS_PER_STEP + 2 * hidden)
    params = network_parameters(sizes.obs_dim, sizes.action_dim, cfg.model)
    # Parameters, gradients and Adam's two moments, in float32.
    parts = {
        "rollout buffer and update": float(steps) * per_step,
        f"{envs} simulators": float(envs) * sizes.env_bytes,
        "networks": 4.0 * 4 * params,
    }
    kept = int(cfg.algo.get("reuse_batches", 1)) - 1
    if kept > 0:  # each kept batch's copy, and its share of the update's K-batch rollout
        stored = 4 * (sizes.obs_dim + sizes.action_dim + SCALARS_PER_STEP)
        parts["kept batches"] = float(steps) * kept * (stored + per_step)
    symmetry = cfg.algo.get("symmetry", "none")
    augment, loss = SYMMETRY_PARTS[symmetry]
    if symmetry in AUTOMATIC_SYMMETRIES and not has_mirror_map(cfg.env.id):
        augment = loss = False
    update_samples = float(steps) * (kept + 1)
    images = 0.0
    if augment:  # the update's samples again as images: the samples and their copy
        update_samples *= 2
        images += update_samples * 4 * (sizes.obs_dim + sizes.action_dim + SCALARS_PER_STEP)
    if loss:  # the images' observations (of the images too, with the images)
        images += update_samples * 4 * sizes.obs_dim
    if images:
        parts["mirror images"] = images
    if cfg.algo.baseline == "optimal":  # per-sample policy gradients, a chunk at a time
        parts["per-sample gradients"] = 4.0 * min(int(cfg.algo.optimal_baseline_chunk), steps) * params
    if cfg.video.enabled and sizes.state_dim:
        video_steps = sizes.time_limit
        if cfg.video.max_steps is not None:  # a rollout also ends at the env's time limit
            video_steps = min(video_steps, int(cfg.video.max_steps))
        per_state = 2 * sizes.state_dim * 8 + 64  # qpos and qvel in float64, and the step's record
        parts["video rollouts"] = float(cfg.video.episodes) * (video_steps + 1) * per_state
    # The kept batches and the images grow with the batch too: blame K or the images only where
    # they, not the batch, make them large (more than twice the batch's own share).
    weight = {"kept batches": 0.5, "mirror images": 0.5}
    blame = {
        "rollout buffer and update": "train.steps_per_iteration",
        f"{envs} simulators": "train.num_envs",
        "video rollouts": "video.episodes",
        "networks": _widest(cfg.model, sizes.obs_dim, sizes.action_dim),
        "per-sample gradients": "algo.optimal_baseline_chunk",
        "kept batches": "algo.reuse_batches",
        "mirror images": "algo.symmetry",
    }[max(parts, key=lambda k: parts[k] * weight.get(k, 1.0))]
    return MemoryEstimate(parts, blame)


def mlp_parameters(in_dim: int, hidden: list[int], out_dim: int) -> int:
    """Weights and biases of an MLP ``in_dim`` -> ``hidden`` -> ``out_dim``."""
    widths = [in_dim, *hidden, out_dim]
    return sum(a * b + b for a, b in itertools.pairwise(widths))


def _policy_and_critic(obs_dim: int, action_dim: int, model: Any) -> tuple[int, int]:
    """Parameters of the policy (``model.hidden_sizes``) and of the value net
    (``model.critic_hidden_sizes``, or the policy's widths), heads included."""
    policy = mlp_parameters(obs_dim, [int(h) for h in model.hidden_sizes], action_dim)
    return policy, mlp_parameters(obs_dim, critic_widths(model), 1)


def network_parameters(obs_dim: int, action_dim: int, model: Any) -> int:
    """Parameters of the policy and the value net together."""
    return sum(_policy_and_critic(obs_dim, action_dim, model))


def _widest(model: Any, obs_dim: int, action_dim: int) -> str:
    """The key of the larger net, the one to lower when the networks do not fit."""
    # (a critic at the policy's widths has the smaller head: never the wider one)
    policy, critic = _policy_and_critic(obs_dim, action_dim, model)
    return "model.critic_hidden_sizes" if critic > policy else "model.hidden_sizes"


def check_network_memory(model: Any, obs_dim: int, action_dim: int) -> None:
    """Refuse networks whose weights alone would not fit in memory (a checkpoint's stored config).

    What a loader builds before it can compare the weights with the config: the networks, in
    float32, with the training estimate's headroom. A stored ``model.hidden_sizes`` edited to
    ``[100000, 100000]`` is refused here instead of allocating 40 GB.
    """
    need = SAFETY * 4.0 * network_parameters(obs_dim, action_dim, model)
    have = available_memory()
    if need > have:
        key = _widest(model, obs_dim, action_dim)
        critic = key == "model.critic_hidden_sizes"
        raise ConfigError(
            key,
            critic_widths(model) if critic else [int(h) for h in model.hidden_sizes],
            f"its networks need about {_gib(need)} of memory, more than the {_gib(have)} available here",
        )


def memory_limit_from(meminfo: str, cgroup_max: str | None, cgroup_current: str | None, rlimit: int) -> float:
    """Bytes available to this process: MemAvailable, capped by a cgroup limit and RLIMIT_AS/DATA."""
    available = float("inf")
    for line in meminfo.splitlines():
        if line.startswith("MemAvailable:"):
            available = int(line.split()[1]) * 1024
    if cgroup_max is not None and cgroup_max.strip().isdigit():
        used = int(cgroup_current) if cgroup_current and cgroup_current.strip().isdigit() else 0
        available = min(available, int(cgroup_max) - used)
    if rlimit not in (resource.RLIM_INFINITY, -1) and rlimit > 0:
        available = min(available, float(rlimit))
    return available


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def available_memory() -> float:
    """This machine's memory available to a new allocation, in bytes (inf when unknown)."""
    rlimits = [resource.getrlimit(r)[0] for r in (resource.RLIMIT_AS, resource.RLIMIT_DATA)]
    finite = [r for r in rlimits if r not in (resource.RLIM_INFINITY, -1)]
    return memory_limit_from(
        _read("/proc/meminfo") or "",
        _read("/sys/fs/cgroup/memory.max") or _read("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
        _read("/sys/fs/cgroup/memory.current") or _read("/sys/fs/cgroup/memory/memory.usage_in_bytes"),
        min(finite) if finite else resource.RLIM_INFINITY,
    )


def _gib(n: float) -> str:
    return f"{n / GIB:.3g} GiB" if n < 2**50 else f"{n / 2**50:.3g} PiB"


def env_sizes(env_cfg: DictConfig | EnvConfig) -> EnvSizes:
    """Build one env of the task and read its sizes; refuse models it cannot train on.

    The batched backend's own checks (its kwargs, its model) run first, so its messages stay
    the same as when the runner builds it.
    """
    from locomo.envs.gymnasium_backend import make_gymnasium_env, space_info

    model = None
    if env_cfg.backend == "batched":
        from locomo.envs.batched import load_task

        model = load_task(env_cfg).model
    env = make_gymnasium_env(env_cfg)
    try:
        unwrapped = env.unwrapped
        model = getattr(unwrapped, "model", model)
        if model is not None and model.nu == 0:
            raise ConfigError(
                "env.xml_file" if env_cfg.xml_file is not None else "env.id",
                env_cfg.xml_file or env_cfg.id,
                "the model has no actuators: there is nothing for a policy to control",
            )
        if model is not None and env_cfg.xml_file is not None:
            check_model_fits(env, env_cfg)
        try:
            spaces = space_info(env)
        except ValueError as exc:
            raise ConfigError("env.id", env_cfg.id, str(exc)) from exc
        limit = env.spec.max_episode_steps if env.spec is not None else None
        if model is None:
            env_bytes, state_dim = NON_MUJOCO_ENV_BYTES, 0
        else:
            env_bytes = int(model.nbuffer) + MJDATA_OVERHEAD  # MjData's buffer is sized like the model's
            if env_cfg.backend != "batched":
                env_bytes += int(model.nbuffer) + GYMNASIUM_ENV_OVERHEAD
            state_dim = int(model.nq + model.nv)
        return EnvSizes(spaces.obs_dim, spaces.action_dim, state_dim, env_bytes, int(limit or 1000))
    finally:
        env.close()


def check_model_fits(env: Any, env_cfg: DictConfig | EnvConfig) -> None:
    """A model file given to a task must produce the observations the task declares.

    (``env=inverted_pendulum env.xml_file=humanoid.xml`` would otherwise train on the
    humanoid's state with the pendulum's reward and termination, which never fire: "mean
    return nan" and exit 0.)
    """
    declared = env.observation_space.shape
    obs, _ = env.reset(seed=0)
    if getattr(obs, "shape", None) != declared:
        raise ConfigError(
            "env.xml_file",
            env_cfg.xml_file,
            f"does not fit {env_cfg.id}: the task declares observations of shape {declared} but this model "
            f"gives {getattr(obs, 'shape', None)}; give {env_cfg.id} a model built like its own (same joints "
            "and actuators), or choose the env= that this model belongs to",
        )


def check_resources(cfg: DictConfig | LocomoConfig) -> None:
    """Refuse a training config whose model cannot be trained or whose memory would not fit."""
    sizes = env_sizes(cfg.env)
    need = estimate_memory(cfg, sizes)
    have = available_memory()
    if need.total > have:
        parts = ", ".join(f"{name} {_gib(SAFETY * b)}" for name, b in need.parts.items())
        value = OmegaConf.select(cfg, need.blame) if isinstance(cfg, DictConfig) else None
        if isinstance(value, ListConfig):
            value = list(value)
        raise ConfigError(
            need.blame,
            value,
            f"this config needs about {_gib(need.total)} of memory ({parts}), more than the "
            f"{_gib(have)} available here; lower {need.blame}",
        )


__all__ = [
    "EnvSizes",
    "MemoryEstimate",
    "available_memory",
    "check_model_fits",
    "check_network_memory",
    "check_resources",
    "env_sizes",
    "estimate_memory",
    "memory_limit_from",
    "network_parameters",
]
