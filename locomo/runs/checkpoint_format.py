"""What a locomo checkpoint is, and the one check of what a checkpoint file holds.

A checkpoint is a dict::

    {"format": "locomo-checkpoint", "version": 1, "kind": "training",
     "actor": state_dict, "critic": state_dict | None, "obs_normalizer": state_dict,
     "optimizer": state_dict, "config": plain dict, "counters": {"iteration", "env_steps"},
     "rng": {...}, "spaces": {"obs_dim", "action_dim", "discrete"},
     "env": VecEnv state | None, "obs": [N, O] raw observations | None,
     "episodes": recent episode records, "wandb": {"run_id": str | None}}

``kind`` is ``training`` for checkpoints a run can resume from, ``nonfinite-diagnostic`` for the
snapshot written when training stops on NaN/inf (readable, never resumed from). A run's periodic
checkpoints are named ``iter_XXXXXX.pt`` after their iteration (:func:`periodic_iteration`).

Checked like a command line's config (:func:`validate`, the one check every loader shares:
resume, eval, render, replay, export, variance): a file's stored config with the config's own
validators (:func:`stored_config`), its networks against that config, its counters, its learned
tensors (finite; variances not negative), and an ``iter_XXXXXX.pt`` name against the iteration it
holds. What a resume needs besides (:func:`require_resumable`) and what an env needs
(:func:`check_spaces`) are the loaders' own checks. Reading and writing the files is
:mod:`locomo.runs.checkpoint`'s.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from locomo.config.preflight import check_network_memory
from locomo.config.rules import (
    validate_algo,
    validate_behavior,
    validate_logger,
    validate_model,
    validate_seed,
    validate_train,
    validate_video,
)
from locomo.config.schema import LocomoConfig, critic_widths, upgrade_saved_config
from locomo.errors import CheckpointError, ConfigError
from locomo.guard import describe_nonfinite
from locomo.paths import pinned_model_problem

FORMAT = "locomo-checkpoint"
VERSION = 1
# What a shipped policy keeps of a training checkpoint: enough to act, evaluate and render.
POLICY_KEYS = ("format", "version", "actor", "obs_normalizer", "config", "spaces", "counters")
KIND_TRAINING = "training"
KIND_DIAGNOSTIC = "nonfinite-diagnostic"
_PERIODIC = re.compile(r"^iter_(\d+)\.pt$")


def periodic_iteration(path: Path) -> int | None:
    """The iteration of a periodic checkpoint ``iter_XXXXXX.pt`` from its name, else None."""
    m = _PERIODIC.match(path.name)
    return int(m.group(1)) if m else None


# What a run needs to go on besides the policy ("critic" is None without a value baseline).
_TRAINING_KEYS = ("actor", "critic", "obs_normalizer", "optimizer", "config", "counters", "rng", "spaces")


def require_resumable(state: dict[str, Any], path: Path) -> None:
    """Refuse diagnostic snapshots, policy-only files and other non-training checkpoints to resume from."""
    kind = state.get("kind", KIND_TRAINING)
    if kind != KIND_TRAINING:
        raise CheckpointError(
            f"{path} is a {kind} snapshot, not a training checkpoint; resume from the run's "
            "last good checkpoint (its run directory or checkpoints/last.pt)"
        )
    missing = [key for key in _TRAINING_KEYS if key not in state]
    if missing:
        raise CheckpointError(
            f"{path} is not a training checkpoint (it lacks {', '.join(missing)}; locomo export writes "
            "such policy-only files): it can be evaluated, not resumed; resume from the run's directory "
            "or another checkpoints/iter_*.pt"
        )
    config = state.get("config")
    baseline = config.get("algo", {}).get("baseline") if isinstance(config, dict) else None
    if state["critic"] is None and baseline == "value":  # the runner builds one for this baseline
        raise CheckpointError(
            f"checkpoint {path} holds no critic (value network), but its config trains one "
            f"(algo.baseline=value): it cannot be resumed (only evaluated); {_USE_ANOTHER}"
        )


# -- validation: a loaded checkpoint checked like a command line's config ---------------------------

# The learned tensors: what a policy acts with and what a resume trains on. NaN or inf in them
# would be "evaluated" to a number, or trained on.
_LEARNED = ("actor", "critic", "obs_normalizer", "reward_scaler", "optimizer")
# Running statistics (observation normaliser, value and return scalers): a variance or a sample
# count below zero is impossible; the normaliser would take the square root of it.
_NON_NEGATIVE = {"var": "a variance", "count": "a sample count"}
_USE_ANOTHER = "the file is damaged or was edited; use another checkpoint of the run (checkpoints/iter_*.pt)"


def validate(state: dict[str, Any], path: Path) -> None:
    """Raise CheckpointError (one line naming ``path``) unless what ``state`` holds is usable.

    The one check shared by every loader, run on what a file holds (keys a file lacks are its
    loader's business: :func:`require_resumable`, :func:`locomo.evaluation.episodes.load_policy`):

    - ``counters``: iteration and env steps are integers >= 0, and a periodic file's name
      (``iter_XXXXXX.pt``) agrees with the iteration it holds. The newest checkpoint of a run is
      found by name, so a copy named for a later iteration would be resumed from, and the
      iterations after it overwritten, at every resume.
    - ``spaces``: positive sizes.
    - ``config``: a mapping that fits the schema, whose values pass the validators a command
      line's do (:func:`stored_config`), and whose networks fit in memory; its model file, when
      the run pinned one (``env.xml_sha256``), is still there with the same hash.
    - the learned tensors (actor, critic, normalisers, optimiser): finite, and running variances
      and counts not negative. Diagnostic snapshots hold NaN by design and are not checked for it.
    """
    _check_counters(state, path)
    spaces = state.get("spaces")
    if spaces is not None:
        sizes = [spaces.get(k) for k in ("obs_dim", "action_dim")] if isinstance(spaces, dict) else [None]
        if not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in sizes):
            raise CheckpointError(
                f"checkpoint {path}: spaces={spaces!r} is invalid: sizes must be integers > 0"
            )
    if "config" in state:
        cfg = stored_config(state, path)
        if isinstance(spaces, dict):
            _check_networks(state, cfg, spaces, path)
        # The model the run was trained on, pinned when it started (a checkpoint from before
        # locomo pinned models has no hash and loads as before).
        problem = pinned_model_problem(cfg.env)
        if problem is not None:
            raise CheckpointError(f"checkpoint {path}: {problem}")
    if state.get("kind", KIND_TRAINING) != KIND_DIAGNOSTIC:
        _check_tensors(state, path)


def _check_networks(state: dict[str, Any], cfg: DictConfig, spaces: dict[str, Any], path: Path) -> None:
    """The actor's and critic's weights have the names and shapes of the networks the stored config
    builds, as the runner and the loaders build them.

    Else loading them fails later in torch's words (``Missing key(s) in state_dict`` over several
    lines, or ``'critic'``) without naming the file. A part the file lacks, or holds as None, is
    its loader's business (:func:`require_resumable`, :func:`locomo.evaluation.episodes.load_policy`).
    """
    from locomo.envs.base import SpaceInfo
    from locomo.rl.policy import ValueNet, actor_for

    info = SpaceInfo(
        obs_dim=int(spaces["obs_dim"]),
        discrete=bool(spaces.get("discrete")),
        action_dim=int(spaces["action_dim"]),
    )
    m = cfg.model
    # Built on the meta device: names and shapes only, no memory, no initialisation, and the
    # global RNG that a command seeds or a resume restores is not drawn from.
    with torch.device("meta"):
        nets: dict[str, torch.nn.Module] = {"actor": actor_for(info, m, iteration=0)}
        if cfg.algo.baseline == "value":  # as locomo.rl.factory.make_learners: a critic for the baseline
            hidden, normalize_values = critic_widths(m), cfg.algo.normalize_values
            nets["critic"] = ValueNet(info.obs_dim, hidden, m.activation, normalize_values)
    for part, net in nets.items():
        saved = state.get(part)
        if saved is None:
            continue
        if not isinstance(saved, dict):
            raise CheckpointError(
                f"checkpoint {path}: {part} is a {type(saved).__name__}, not the network's weights; "
                f"{_USE_ANOTHER}"
            )
        want = {k: tuple(v.shape) for k, v in net.state_dict().items()}
        have = {str(k): tuple(v.shape) if isinstance(v, torch.Tensor) else None for k, v in saved.items()}
        problems = []
        missing = [k for k in want if k not in have]
        unexpected = [k for k in have if k not in want]
        if missing:
            problems.append(f"missing {', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}")
        if unexpected:
            problems.append(f"unexpected {', '.join(unexpected[:3])}{', ...' if len(unexpected) > 3 else ''}")
        problems += [
            f"{k} has shape {list(have[k] or [])}, the config's network {list(want[k])}"
            for k in want
            if k in have and have[k] != want[k]
        ][:2]
        if problems:
            raise CheckpointError(
                f"checkpoint {path}: its weights do not fit the config saved with them ({part}: "
                f"{'; '.join(problems)}); {_USE_ANOTHER}"
            )


def _check_counters(state: dict[str, Any], path: Path) -> None:
    counters = state.get("counters")
    if counters is None:
        return
    if not isinstance(counters, dict):
        raise CheckpointError(
            f"checkpoint {path}: counters={counters!r} is invalid: not a mapping; {_USE_ANOTHER}"
        )
    for key in ("iteration", "env_steps"):
        value = counters.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            problem = f"counters.{key}={value!r} is invalid: must be an integer >= 0"
            raise CheckpointError(f"checkpoint {path}: {problem}; {_USE_ANOTHER}")
    named, held = periodic_iteration(path), counters.get("iteration")
    if named is not None and held is not None and named != held:
        raise CheckpointError(
            f"checkpoint {path} holds iteration {held} but is named for iteration {named} (a copy or a "
            f"rename?): a run's newest checkpoint is found by name, so it would pass for iteration {named}, "
            f"and a resume would restart at {held} and overwrite the iterations after it; move it out of "
            f"{path.parent} (or name it iter_{held:06d}.pt)"
        )


def stored_config(state: dict[str, Any], path: Path) -> DictConfig:
    """The checkpoint's training config in the schema, checked with the config's own validators.

    A bad value is reported as the checkpoint's: no override can change it (a resume takes the
    checkpoint's config, eval rebuilds the policy from it). Env checks that depend on this machine
    (registered ids, model files, CUDA) are left to the loader, which checks them where it uses them.
    """
    saved = state.get("config")
    if not isinstance(saved, dict):
        raise CheckpointError(
            f"checkpoint {path}: its stored config is a {type(saved).__name__}, not a mapping of config "
            f"keys; {_USE_ANOTHER}"
        )
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(LocomoConfig), upgrade_saved_config(saved))
    except (OmegaConfBaseException, ValueError, TypeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"checkpoint {path}: its config does not fit this version of locomo ({reason})"
        ) from exc
    assert isinstance(cfg, DictConfig)
    try:
        validate_seed("seed", cfg.seed)
        validate_algo(cfg.algo)
        validate_model(cfg.model)
        train = cfg.train.copy()
        if train.device == "cuda":  # whether CUDA is here is the loader's question: eval runs on the CPU
            train.device = "cpu"
        validate_train(train)
        validate_logger(cfg.logger)
        validate_behavior(cfg.behavior)
        validate_video(cfg.video)
        spaces = state.get("spaces")
        if isinstance(spaces, dict):
            check_network_memory(cfg.model, int(spaces["obs_dim"]), int(spaces["action_dim"]))
    except ConfigError as exc:
        raise CheckpointError(
            f"checkpoint {path}: its stored config is invalid: {exc}; a checkpoint's config cannot be "
            "overridden (not even on resume): use another checkpoint, or start a new run"
        ) from exc
    except OmegaConfBaseException as exc:  # e.g. an interpolation written into the file by hand
        raise CheckpointError(f"checkpoint {path}: its stored config cannot be read ({exc})") from exc
    return cfg


def _named_tensors(obj: Any, name: str) -> list[tuple[str, torch.Tensor]]:
    """Every tensor in nested dicts and lists, with its dotted name (``actor.mean_net.0.weight``)."""
    if isinstance(obj, torch.Tensor):
        return [(name, obj)]
    if isinstance(obj, dict):
        return [t for key, value in obj.items() for t in _named_tensors(value, f"{name}.{key}")]
    if isinstance(obj, list | tuple):
        return [t for i, value in enumerate(obj) for t in _named_tensors(value, f"{name}[{i}]")]
    return []


def _check_tensors(state: dict[str, Any], path: Path) -> None:
    for part in _LEARNED:
        for name, tensor in _named_tensors(state.get(part), part):
            if not (tensor.is_floating_point() or tensor.is_complex()):
                continue
            detail = describe_nonfinite(tensor)
            if detail is not None:
                raise CheckpointError(
                    f"checkpoint {path}: {name} has non-finite values: {detail}; {_USE_ANOTHER}"
                )
            what = _NON_NEGATIVE.get(name.rsplit(".", 1)[-1])
            if what is not None and tensor.numel() and float(tensor.min()) < 0:
                raise CheckpointError(
                    f"checkpoint {path}: {name} has negative values (min {float(tensor.min()):g}): {what} "
                    f"cannot be negative; {_USE_ANOTHER}"
                )


def load_error_reason(exc: BaseException) -> str:
    """The line of a failed weight load that says what does not fit: torch's ``load_state_dict``
    writes a header ("Error(s) in loading state_dict ...") and then one line per problem, of
    which the first says enough; any other error, its first line (or its type's name)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith("Error(s)"):
        return lines[1]
    return lines[0] if lines else type(exc).__name__


def check_spaces(state: dict[str, Any], obs_dim: int, action_dim: int, discrete: bool, env_name: str) -> None:
    """Raise CheckpointError if the checkpoint's policy does not fit the env's spaces."""
    saved = state.get("spaces", {})
    have = (saved.get("obs_dim"), saved.get("action_dim"), saved.get("discrete"))
    if have != (obs_dim, action_dim, discrete):
        kind = lambda d: "discrete" if d else "continuous"  # noqa: E731
        trained_on = state.get("config", {}).get("env", {}).get("name", "?")
        raise CheckpointError(
            f"checkpoint was trained on env {trained_on!r} with observation size {have[0]} and "
            f"{have[1]} {kind(have[2])} actions, but env {env_name!r} has observation size {obs_dim} "
            f"and {action_dim} {kind(discrete)} actions"
        )
