"""A trained policy outside training: load a checkpoint, roll out seeded episodes, label, summarise.

Episodes run through the same vectorised envs as training (``make_vec_env``, the config's
backend and reward terms, the :class:`~locomo.envs.TorchVecEnv` boundary), N episodes in N envs
at once, built with ``autoreset=False`` so that each env plays exactly one episode; returns
compare with ``rollout/return_mean`` and episodes come with the env's own
:class:`~locomo.envs.EpisodeRecord` (simulator blow-ups included). Episode i of a run with
``seed`` uses ``seed + i`` for its env's reset *and* for the policy's action noise (a private
``torch.Generator`` per env), so an episode is a pure function of (checkpoint, seed, mode):
``locomo replay seed=s`` reproduces episode 0 of ``locomo eval seed=s``, and the videos made
during training do not touch the training RNG streams. The policy is evaluated one env (row) at
a time: a matrix product's rounding may depend on the batch size, and an episode must not depend
on how many others run beside it.

A :class:`Rollout` keeps the MuJoCo state (qpos, qvel) after every step, so rendering is a
separate pass that replays those states (:mod:`locomo.evaluation.offscreen`), not part of the simulation loop.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from locomo.config.schema import BehaviorConfig, upgrade_saved_config
from locomo.envs import TorchVecEnv, VecEnv, make_vec_env
from locomo.envs.base import EpisodeRecord, SpaceInfo
from locomo.errors import ConfigError
from locomo.evaluation.behavior import format_counts, label_counts, label_episode
from locomo.evaluation.progress import progress_bar, step_limit
from locomo.evaluation.rollout import Rollout
from locomo.paths import ASSETS_DIR
from locomo.rl.policy import Actor, actor_for
from locomo.rl.running_stats import RunningMeanStd
from locomo.runs import checkpoint, checkpoint_format
from locomo.runs.checkpoint import CheckpointError
from locomo.runs.outputs import command_output_dir


@dataclass
class LoadedPolicy:
    """A checkpoint's policy rebuilt from its own config: actor and observation normaliser (CPU)."""

    cfg: DictConfig  # the training config stored in the checkpoint
    actor: Actor
    normalizer: RunningMeanStd
    path: Path  # the checkpoint file
    run_dir: Path  # the training run's directory (the checkpoint's folder's parent)
    counters: dict[str, int]  # iteration, env_steps at save time

    @property
    def run_name(self) -> str:
        """``<env>_<run directory name>``, e.g. ``humanoid_2025-05-14_10-00-00``."""
        return f"{self.cfg.env.name}_{self.run_dir.name}"

    def make_env(self, num_envs: int = 1) -> VecEnv:
        """Fresh vectorised envs of the checkpoint's task, one episode each (no auto-reset)."""
        return make_vec_env(self.cfg.env, num_envs, autoreset=False)


def checkpoint_run_dir(path: Path) -> Path:
    """The run directory of ``<run>/checkpoints/<file>.pt``; else the file's own folder."""
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def portable_name(path: Path) -> str:
    """A checkpoint named without the machine it sits on, for files that are shipped or shared
    (``locomo export``'s JSON and metadata): ``<run dir name>/checkpoints/<file>`` for a run's
    checkpoint, e.g. ``default_s1/checkpoints/iter_000400.pt``, else the file name alone."""
    # abspath, not resolve(): a run's name as the user sees it, even through links, and "." or a
    # relative path gets its real folder name.
    file = Path(os.path.abspath(path))
    if file.parent.name == "checkpoints":
        return "/".join(p for p in (file.parent.parent.name, "checkpoints", file.name) if p)
    return file.name


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
    return shipped_checkpoint(p) or p


def shipped_checkpoint(path: str | Path) -> Path | None:
    """The policy shipped in ``assets/`` that a bare name such as ``walker`` names (``assets/walker.pt``),
    or None: a path, or a name that is a file (or link) here, is the user's."""
    p = Path(path).expanduser()
    # A link here (even a broken one or a loop) is the user's, not a name of the assets.
    if not p.exists() and not p.is_symlink() and len(p.parts) == 1:
        for candidate in (ASSETS_DIR / p.name, ASSETS_DIR / f"{p.name}.pt"):
            if candidate.is_file():
                return candidate
    return None


def output_root(policy: LoadedPolicy, command: str) -> Path:
    """Where ``command`` writes what it makes of a policy by default: ``<run>/<command>/``, or, for
    a policy shipped in ``assets/`` (part of the installed package, never written into),
    ``outputs/<command>/<time>/`` under the working directory (:mod:`locomo.runs.outputs`)."""
    if policy.path.parent.resolve() == ASSETS_DIR.resolve():
        return command_output_dir(command)
    return policy.run_dir / command


def load_policy(path: str | Path) -> LoadedPolicy:
    """Load a checkpoint and rebuild actor + normaliser from its config; CheckpointError if unusable.

    What the file holds is checked by :func:`locomo.runs.checkpoint_format.validate` (as a resume checks it)
    before anything is built from it.
    """
    file = resolve_checkpoint_path(path)
    if file.is_dir():  # no last.pt: the newest intact periodic checkpoint, saying so if it is not the newest
        skipped: list[tuple[Path, str]] = []
        file, state = checkpoint.load_latest(file, map_location="cpu", skipped=skipped)
        fallback = checkpoint.describe_fallback(file, skipped)
        if fallback is not None:
            print(f"locomo: warning: {fallback}", file=sys.stderr)
    elif file.name == "last.pt" and file != Path(path).expanduser():  # a run dir's last.pt
        try:
            state = checkpoint.load_file(file, map_location="cpu")
        except CheckpointError as exc:  # unreadable: fall back like a resume does
            file, state = checkpoint.load_latest(file.parent, map_location="cpu")
            print(f"locomo: warning: {exc}; using {file}, the newest intact checkpoint", file=sys.stderr)
        else:  # readable but bad contents: refused, not passed over
            checkpoint_format.validate(state, file)
    else:
        file, state = checkpoint.load_latest(file, map_location="cpu")
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
    counters = dict(state.get("counters", {}))
    # as it acted after the checkpoint's updates: capped where model.max_log_std_from was reached
    actor = actor_for(info, model, iteration=int(counters.get("iteration", 0)))
    normalizer = RunningMeanStd(info.obs_dim, enabled=model.normalize_observations)
    try:
        actor.load_state_dict(state["actor"])
        normalizer.load_state_dict(state["obs_normalizer"])
    except (RuntimeError, KeyError) as exc:
        reason = checkpoint_format.load_error_reason(exc)
        raise CheckpointError(f"{file}: weights do not fit the config saved with them ({reason})") from exc
    actor.eval()
    normalizer.eval()
    return LoadedPolicy(
        cfg=cfg,
        actor=actor,
        normalizer=normalizer,
        path=file,
        run_dir=checkpoint_run_dir(file),
        counters=counters,
    )


def select_actions(
    actor: Actor,
    obs: torch.Tensor,
    deterministic: bool,
    generators: list[torch.Generator],
    active: list[int],
) -> torch.Tensor:
    """Actions [N, A] (or [N]) for normalised obs [N, O]: the mode of pi(.|s_i), or a sample drawn
    with env i's generator, for the envs in ``active`` (the others get zeros: they are not stepped).
    pi(.|s_i) is the actor's distribution (:mod:`locomo.rl.distributions`): with bounded actions the
    mode and the samples are clipped to the bounds, as in training.

    Row by row (see the module docstring): env i's action does not depend on the other rows."""
    rows: dict[int, torch.Tensor] = {}
    for i in active:
        dist = actor(obs[i : i + 1])
        rows[i] = (dist.mode if deterministic else dist.sample(generators[i]))[0]
    template = next(iter(rows.values()))
    actions = torch.zeros((obs.shape[0], *template.shape), dtype=template.dtype)
    for i, row in rows.items():
        actions[i] = row.cpu()
    return actions


@torch.inference_mode()
def rollouts(
    env: VecEnv,
    actor: Actor,
    normalizer: RunningMeanStd,
    seed: int,
    deterministic: bool,
    thresholds: BehaviorConfig,
    max_steps: int | None = None,
    record_states: bool = False,
    on_step: Callable[[], Any] | None = None,
) -> list[Rollout]:
    """One episode in each of ``env``'s N envs (built with ``autoreset=False``), env i seeded
    ``seed + i``: to termination, the time limit, or ``max_steps``; each labelled.
    ``on_step`` is called after each vector step (a progress bar)."""
    n, spaces = env.num_envs, env.spaces
    device = next(actor.parameters()).device
    torch_env = TorchVecEnv(env, device)
    generators = [torch.Generator().manual_seed(seed + i) for i in range(n)]
    obs = torch_env.reset(seed)
    states = [env.mujoco_states()] if record_states else []
    rewards: list[np.ndarray] = []  # [N] per step
    ended: dict[int, EpisodeRecord] = {}
    while len(ended) < n and (max_steps is None or len(rewards) < max_steps):
        active = [i for i in range(n) if i not in ended]
        actions = select_actions(actor, normalizer(obs), deterministic, generators, active)
        step = torch_env.step(actor.env_action(actions.to(device)))
        rewards.append(step.reward.cpu().numpy().astype(np.float64))
        if record_states:
            states.append(env.mujoco_states())
        for record in step.episodes:
            ended[record.env_index] = record
        obs = step.obs
        if on_step is not None:
            on_step()
    for record in env.current_episodes([i for i in range(n) if i not in ended]):  # cut at max_steps
        ended[record.env_index] = record
    reward_rows = np.stack(rewards) if rewards else np.zeros((0, n))
    out = []
    for i in range(n):
        record = ended[i]
        length = record.length
        has_states = record_states and states[0] is not None
        out.append(
            Rollout(
                seed=seed + i,
                deterministic=deterministic,
                record=record,
                behavior=label_episode(record, spaces.control_dt, thresholds),
                rewards=reward_rows[:length, i].copy(),
                qpos=np.stack([s[0][i] for s in states[: length + 1]]) if has_states else None,  # type: ignore[index]
                qvel=np.stack([s[1][i] for s in states[: length + 1]]) if has_states else None,  # type: ignore[index]
                control_dt=spaces.control_dt,
            )
        )
    return out


def run_episodes(
    policy: LoadedPolicy,
    env: VecEnv,
    seed: int,
    deterministic: bool,
    thresholds: BehaviorConfig,
    max_steps: int | None = None,
    record_states: bool = False,
    progress: str | None = None,
) -> list[Rollout]:
    """One episode per env of ``env`` (``policy.make_env(episodes)``), seeded seed, seed + 1, ...

    ``progress``: the label of a progress bar over the steps (:mod:`locomo.evaluation.progress`);
    None: no bar.
    """
    if progress is None:
        return rollouts(
            env, policy.actor, policy.normalizer, seed, deterministic, thresholds, max_steps, record_states
        )
    with progress_bar(step_limit(policy.cfg.env, max_steps), progress, "step") as bar:
        return rollouts(
            env,
            policy.actor,
            policy.normalizer,
            seed,
            deterministic,
            thresholds,
            max_steps,
            record_states,
            bar.update,
        )


# Episodes simulated side by side (one env each, a whole MjData and Gymnasium env per episode):
# more are run in chunks of this many, so memory stays flat however many episodes are asked for.
# Episode i depends only on (checkpoint, seed + i, mode), so chunking changes no result.
EPISODES_AT_ONCE = 100
# The most episodes one ``locomo eval`` / ``locomo export`` evaluates: each is a row of the JSON
# report (and of the table's statistics), and beyond this a run takes hours for the humanoid.
MAX_EVAL_EPISODES = 10_000


def check_episode_count(episodes: int, command: str) -> None:
    """``episodes`` of ``command`` at most :data:`MAX_EVAL_EPISODES` (ConfigError naming the way on)."""
    if episodes > MAX_EVAL_EPISODES:
        raise ConfigError(
            "episodes",
            episodes,
            f"must be at most {MAX_EVAL_EPISODES} (each episode is a row of the JSON report); for more, "
            f"run locomo {command} again with seed=<seed + episodes> and pool the reports",
        )


def evaluate_episodes(
    policy: LoadedPolicy,
    episodes: int,
    seed: int,
    deterministic: bool,
    thresholds: BehaviorConfig,
    max_steps: int | None = None,
    progress: str | None = None,
    envs: dict[int, VecEnv] | None = None,
) -> list[Rollout]:
    """``episodes`` episodes seeded seed, seed + 1, ..., at most :data:`EPISODES_AT_ONCE` at a time.

    ``envs`` (size -> env) keeps the envs for another call (e.g. the other mode); the caller
    closes them. Without it they are closed here.
    """
    own = envs is None
    pool: dict[int, VecEnv] = {} if envs is None else envs
    out: list[Rollout] = []
    try:
        for start in range(0, episodes, EPISODES_AT_ONCE):
            n = min(EPISODES_AT_ONCE, episodes - start)
            if n not in pool:
                pool[n] = policy.make_env(n)
            label = progress
            if progress is not None and episodes > EPISODES_AT_ONCE:
                label = f"{progress} {start + 1}-{start + n}/{episodes}"
            out += run_episodes(
                policy, pool[n], seed + start, deterministic, thresholds, max_steps, False, label
            )
    finally:
        if own:
            for env in pool.values():
                env.close()
    return out


def evaluate_modes(
    policy: LoadedPolicy,
    modes: list[str],
    episodes: int,
    seed: int,
    thresholds: BehaviorConfig,
    max_steps: int | None,
    command: str,
) -> dict[str, list[Rollout]]:
    """:func:`evaluate_episodes` in each of ``modes`` ("deterministic", "stochastic"), the same
    seeds and envs for both (as ``locomo eval mode=both``); the progress bars name ``command``."""
    envs: dict[int, VecEnv] = {}
    try:
        return {
            mode: evaluate_episodes(
                policy,
                episodes,
                seed,
                mode == "deterministic",
                thresholds,
                max_steps,
                progress=f"{command}: {mode}",
                envs=envs,
            )
            for mode in modes
        }
    finally:
        for env in envs.values():
            env.close()


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
