"""A trained policy outside training: load a checkpoint, roll out seeded episodes, label, summarise.

Episodes run one at a time in the env's Gymnasium version (whatever backend trained it), with
the training config's reward terms, so returns compare with ``rollout/return_mean``. Episode i
of a run with ``seed`` uses ``seed + i`` for the env's reset *and* for the policy's action
noise (a private ``torch.Generator``), so an episode is a pure function of (checkpoint, seed,
mode): ``locomo replay seed=s`` reproduces episode 0 of ``locomo eval seed=s``, and the videos
made during training do not touch the training RNG streams.

A :class:`Rollout` keeps the MuJoCo state (qpos, qvel) after every step, so rendering is a
separate pass that replays those states (:mod:`locomo.rendering`), not part of the simulation loop.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.distributions import Categorical, Independent, Normal

from locomo import checkpoint
from locomo.behavior import Behavior, format_counts, label_counts, label_episode
from locomo.checkpoint import CheckpointError
from locomo.config import ASSETS_DIR, upgrade_saved_config
from locomo.envs.base import EpisodeRecord, SpaceInfo
from locomo.envs.gymnasium_backend import RewardTerms, body_record, make_gymnasium_env, root_pose, space_info
from locomo.policy import Actor, ObsNormalizer, make_actor


@dataclass
class LoadedPolicy:
    """A checkpoint's policy rebuilt from its own config: actor and observation normaliser (CPU)."""

    cfg: DictConfig  # the training config stored in the checkpoint
    actor: Actor
    normalizer: ObsNormalizer
    path: Path  # the checkpoint file
    run_dir: Path  # the training run's directory (the checkpoint's folder's parent)
    counters: dict[str, int]  # iteration, env_steps at save time

    @property
    def run_name(self) -> str:
        """``<env>_<run directory name>``, e.g. ``humanoid_2025-05-14_10-00-00``."""
        return f"{self.cfg.env.name}_{self.run_dir.name}"

    def make_env(self) -> gym.Env:
        """A fresh Gymnasium env of the checkpoint's task."""
        return make_gymnasium_env(self.cfg.env)


def checkpoint_run_dir(path: Path) -> Path:
    """The run directory of ``<run>/checkpoints/<file>.pt``; else the file's own folder."""
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def resolve_checkpoint_path(path: str | Path) -> Path:
    """A checkpoint file as given, or ``checkpoints/last.pt`` (or ``last.pt``) inside a directory.

    A bare name that is no file here, e.g. ``walker``, names a policy shipped in ``assets/``
    (``assets/walker.pt``).
    """
    p = Path(path).expanduser()
    if p.is_dir():
        for candidate in (p / "checkpoints" / "last.pt", p / "last.pt"):
            if candidate.is_file():
                return candidate
    if not p.exists() and len(p.parts) == 1:
        for candidate in (ASSETS_DIR / p.name, ASSETS_DIR / f"{p.name}.pt"):
            if candidate.is_file():
                return candidate
    return p


def output_root(policy: LoadedPolicy) -> Path:
    """Where a command writes what it makes of a policy by default: its run directory, or, for a
    policy shipped in ``assets/`` (part of the installed package), the working directory."""
    return Path(".") if policy.path.parent.resolve() == ASSETS_DIR.resolve() else policy.run_dir


def load_policy(path: str | Path) -> LoadedPolicy:
    """Load a checkpoint and rebuild actor + normaliser from its config; CheckpointError if unusable."""
    file = resolve_checkpoint_path(path)
    if file.is_dir():  # no last.pt: the newest intact periodic checkpoint, saying so if it is not the newest
        skipped: list[tuple[Path, str]] = []
        file, state = checkpoint.load_latest(file, map_location="cpu", skipped=skipped)
        fallback = checkpoint.describe_fallback(file, skipped)
        if fallback is not None:
            print(f"locomo: warning: {fallback}", file=sys.stderr)
    elif file.name == "last.pt" and file != Path(path).expanduser():  # a run dir's last.pt
        try:
            state = checkpoint.load(file, map_location="cpu")
        except CheckpointError as exc:  # damaged: fall back like a resume does
            file, state = checkpoint.load_latest(file.parent, map_location="cpu")
            print(f"locomo: warning: {exc}; using {file}, the newest intact checkpoint", file=sys.stderr)
    else:
        state = checkpoint.load(file, map_location="cpu")
    missing = [key for key in ("actor", "obs_normalizer", "config", "spaces") if key not in state]
    if missing:
        raise CheckpointError(f"{file} lacks {', '.join(missing)}: not a policy checkpoint")
    cfg = OmegaConf.create(upgrade_saved_config(state["config"]))
    spaces = state["spaces"]
    info = SpaceInfo(
        obs_dim=int(spaces["obs_dim"]),
        discrete=bool(spaces["discrete"]),
        action_dim=int(spaces["action_dim"]),
    )
    model = cfg.model
    actor = make_actor(
        info, list(model.hidden_sizes), model.activation, model.init_log_std, model.action_bounds
    )
    normalizer = ObsNormalizer(info.obs_dim, enabled=model.normalize_observations)
    try:
        actor.load_state_dict(state["actor"])
        normalizer.load_state_dict(state["obs_normalizer"])
    except (RuntimeError, KeyError) as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = lines[1] if len(lines) > 1 and lines[0].startswith("Error(s)") else lines[0]
        raise CheckpointError(f"{file}: weights do not fit the config saved with them ({reason})") from exc
    actor.eval()
    normalizer.eval()
    return LoadedPolicy(
        cfg=cfg,
        actor=actor,
        normalizer=normalizer,
        path=file,
        run_dir=checkpoint_run_dir(file),
        counters=dict(state.get("counters", {})),
    )


@dataclass
class Rollout:
    """One episode: T steps, its record and label, and (optionally) the MuJoCo states to render."""

    seed: int
    deterministic: bool
    record: EpisodeRecord
    behavior: Behavior | None
    rewards: np.ndarray  # [T] reward of each step (sum of the scaled terms)
    qpos: np.ndarray | None = None  # [T + 1, nq] after the reset (row 0) and after each step
    qvel: np.ndarray | None = None  # [T + 1, nv]
    control_dt: float = 0.02  # seconds per step

    @property
    def returns_so_far(self) -> np.ndarray:
        """[T + 1] undiscounted return accumulated before each recorded state (0 at the reset)."""
        return np.concatenate([[0.0], np.cumsum(self.rewards)])

    def summary(self) -> dict[str, Any]:
        """Plain-typed description for JSON."""
        return {
            "seed": self.seed,
            "return": self.record.ret,
            "length": self.record.length,
            "terminated": self.record.terminated,
            "terms": self.record.terms,
            "behavior": None if self.behavior is None else self.behavior.as_dict(),
        }


def select_action(
    actor: Actor, obs: torch.Tensor, deterministic: bool, generator: torch.Generator
) -> torch.Tensor:
    """The mode of pi(.|s) or a sample drawn with ``generator``: obs [1, O] -> action [1, A] or [1]."""
    dist = actor.distribution(obs)
    if deterministic:
        return actor.mode(dist)
    if isinstance(dist, Categorical):
        return torch.multinomial(dist.probs.cpu(), 1, generator=generator).squeeze(-1)
    assert isinstance(dist, Independent) and isinstance(dist.base_dist, Normal)
    normal = dist.base_dist
    return actor.bound(torch.normal(normal.loc.cpu(), normal.scale.cpu(), generator=generator))


def mujoco_state(env: gym.Env) -> tuple[np.ndarray, np.ndarray] | None:
    """(qpos, qvel) copies of a MuJoCo env's state; None for other envs."""
    data = getattr(env.unwrapped, "data", None)
    if data is None or not hasattr(data, "qpos"):
        return None
    return data.qpos.copy(), data.qvel.copy()


@torch.inference_mode()
def rollout(
    env: gym.Env,
    env_cfg: Any,
    actor: Actor,
    normalizer: ObsNormalizer,
    seed: int,
    deterministic: bool,
    thresholds: Any,
    max_steps: int | None = None,
    record_states: bool = False,
) -> Rollout:
    """Run one episode (to termination, the env's time limit, or ``max_steps``) and label it."""
    spaces = space_info(env)
    terms = RewardTerms(dict(env_cfg.reward_terms or {}), dict(env_cfg.reward_scales or {}))
    generator = torch.Generator().manual_seed(seed)
    device = next(actor.parameters()).device
    obs, _ = env.reset(seed=seed)
    start = root_pose(env)
    states = [mujoco_state(env)] if record_states else []
    rewards: list[float] = []
    term_sums = dict.fromkeys(terms.names, 0.0)
    terminated = False
    while True:
        obs_t = torch.as_tensor(np.asarray(obs, dtype=np.float32), device=device).unsqueeze(0)
        action = select_action(actor, normalizer(obs_t), deterministic, generator)
        action = actor.env_action(action.to(device))[0].cpu().numpy()
        action = int(action) if spaces.discrete else np.clip(action, spaces.action_low, spaces.action_high)
        obs, reward, term, trunc, info = env.step(action)
        step_terms = terms.compute(float(reward), info)
        for name, value in step_terms.items():
            term_sums[name] += value
        rewards.append(sum(step_terms.values()))
        if record_states:
            states.append(mujoco_state(env))
        terminated = bool(term)
        if term or trunc or (max_steps is not None and len(rewards) >= max_steps):
            break
    record = EpisodeRecord(
        env_index=0,
        ret=float(sum(rewards)),
        length=len(rewards),
        terminated=terminated,
        terms=term_sums,
        body=body_record(start, root_pose(env)),
    )
    has_states = record_states and states[0] is not None
    return Rollout(
        seed=seed,
        deterministic=deterministic,
        record=record,
        behavior=label_episode(record, spaces.control_dt, thresholds),
        rewards=np.asarray(rewards, dtype=np.float64),
        qpos=np.stack([s[0] for s in states]) if has_states else None,  # type: ignore[index]
        qvel=np.stack([s[1] for s in states]) if has_states else None,  # type: ignore[index]
        control_dt=spaces.control_dt,
    )


def run_episodes(
    policy: LoadedPolicy,
    env: gym.Env,
    episodes: int,
    seed: int,
    deterministic: bool,
    thresholds: Any,
    max_steps: int | None = None,
    record_states: bool = False,
) -> list[Rollout]:
    """Episodes seeded seed, seed + 1, ..., one after another in ``env``."""
    return [
        rollout(
            env,
            policy.cfg.env,
            policy.actor,
            policy.normalizer,
            seed + i,
            deterministic,
            thresholds,
            max_steps,
            record_states,
        )
        for i in range(episodes)
    ]


def summarize(rollouts: list[Rollout]) -> dict[str, Any]:
    """Mean/std of return, mean length, distance and forward progress, label counts, per-episode rows."""
    rets = np.array([r.record.ret for r in rollouts])
    behaviors = [r.behavior for r in rollouts]
    labelled = [b for b in behaviors if b is not None]

    def mean_of(values: list[float]) -> float | None:
        return float(np.mean(values)) if values else None

    return {
        "episodes": len(rollouts),
        "return_mean": float(rets.mean()),
        "return_std": float(rets.std()),
        "length_mean": float(np.mean([r.record.length for r in rollouts])),
        "terminated_fraction": float(np.mean([r.record.terminated for r in rollouts])),
        "distance_mean": mean_of([b.distance for b in labelled]),
        "forward_mean": mean_of([b.forward for b in labelled]),
        "labels": label_counts(behaviors) if labelled else {},
        "per_episode": [r.summary() for r in rollouts],
    }


def format_table(results: dict[str, dict[str, Any]]) -> str:
    """A text table: one row per mode (return, length, distance, label counts)."""

    def number(value: float | None, fmt: str) -> str:
        return "-" if value is None or not math.isfinite(value) else format(value, fmt)

    header = f"{'mode':<14}{'episodes':>9}{'return':>20}{'length':>9}{'distance':>10}{'forward':>9}  labels"
    rows = [header, "-" * len(header)]
    for mode, s in results.items():
        ret = f"{s['return_mean']:.2f} +- {s['return_std']:.2f}"
        rows.append(
            f"{mode:<14}{s['episodes']:>9}{ret:>20}{s['length_mean']:>9.1f}"
            f"{number(s['distance_mean'], '.2f'):>10}{number(s['forward_mean'], '.2f'):>9}  "
            f"{format_counts(s['labels'])}"
        )
    return "\n".join(rows)


