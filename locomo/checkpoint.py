"""Checkpoints: plain tensors and Python types, written atomically, loaded with weights_only=True.

A checkpoint is a dict::

    {"format": "locomo-checkpoint", "version": 1, "kind": "training",
     "actor": state_dict, "critic": state_dict | None, "obs_normalizer": state_dict,
     "optimizer": state_dict, "config": plain dict, "counters": {"iteration", "env_steps"},
     "rng": {...}, "spaces": {"obs_dim", "action_dim", "discrete"},
     "env": VecEnv state | None, "obs": [N, O] raw observations | None,
     "episodes": recent episode records, "wandb": {"run_id": str | None}}

``kind`` is ``training`` for checkpoints a run can resume from, ``nonfinite-diagnostic`` for the
snapshot written when training stops on NaN/inf (readable, never resumed from).

Crash safety: every file is written to a temporary file in the same directory, fsynced and
renamed over its target, so a crash (even ``kill -9``) leaves the previous file or the new one,
never a torn one. ``iter_XXXXXX.pt`` is written first, then ``last.pt`` (a hard link to it where
the filesystem allows); :func:`load_latest` picks the newest readable ``iter_*.pt``.

Loading: a file is read safely (:func:`load_file`), then checked like a command line's config
(:func:`validate`, the one check every loader shares: resume, eval, render, replay, export,
variance): its stored config with the config's own validators, its counters, its learned tensors
(finite; variances not negative), and an ``iter_XXXXXX.pt`` name against the iteration it holds.
A file that cannot be read is passed over for an older one (a disk error); a file that reads but
fails the check is refused with one line naming it, never passed over silently. Directory scans
(:func:`periodic_files`) see regular files only, so a FIFO or a device named like a checkpoint
is never opened.
"""

from __future__ import annotations

import ast
import errno
import fcntl
import os
import pickle
import pickletools
import random
import re
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from locomo.config import LocomoConfig, upgrade_saved_config
from locomo.config_rules import (
    validate_algo,
    validate_behavior,
    validate_logger,
    validate_model,
    validate_seed,
    validate_train,
    validate_video,
)
from locomo.errors import CheckpointError, ConfigError
from locomo.guard import describe_nonfinite
from locomo.paths import pinned_model_problem
from locomo.preflight import check_network_memory

__all__ = [
    "FORMAT",
    "KIND_DIAGNOSTIC",
    "KIND_TRAINING",
    "POLICY_KEYS",
    "VERSION",
    "CheckpointError",
    "CheckpointManager",
    "RunDirLock",
    "assert_plain",
    "check_spaces",
    "describe_fallback",
    "load",
    "load_file",
    "load_latest",
    "missing_reason",
    "newest_in_directory",
    "periodic_files",
    "periodic_iteration",
    "require_resumable",
    "restore_rng",
    "rng_state",
    "save_atomic",
    "stored_config",
    "validate",
]

FORMAT = "locomo-checkpoint"
VERSION = 1
# What a shipped policy keeps of a training checkpoint: enough to act, evaluate and render.
POLICY_KEYS = ("format", "version", "actor", "obs_normalizer", "config", "spaces", "counters")
KIND_TRAINING = "training"
KIND_DIAGNOSTIC = "nonfinite-diagnostic"
_PERIODIC = re.compile(r"^iter_(\d+)\.pt$")
_PLAIN_SCALARS = (torch.Tensor, str, int, float, bool, type(None))


def assert_plain(obj: Any, where: str = "state") -> None:
    """Raise TypeError unless ``obj`` is tensors and plain Python types only.

    Such a state loads with ``torch.load(weights_only=True)``; checking before writing means a
    checkpoint that saves always loads (a numpy scalar would save fine and then fail to load).
    """
    if isinstance(obj, _PLAIN_SCALARS) and not isinstance(obj, np.generic):  # np.float64 is a float
        return
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, str | int):
                raise TypeError(f"{where}: key {key!r} of type {type(key).__name__} is not plain data")
            assert_plain(value, f"{where}.{key}")
        return
    if isinstance(obj, list | tuple):
        for i, value in enumerate(obj):
            assert_plain(value, f"{where}[{i}]")
        return
    raise TypeError(f"{where} is a {type(obj).__module__}.{type(obj).__name__}, not plain data")


def save_atomic(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` to ``path`` so that a crash leaves either the old file or the new one.

    torch.save to a temporary file in the same directory, fsync, then rename over ``path`` and
    fsync the directory. Any OSError (disk full, no permission, read-only filesystem) becomes a
    :class:`CheckpointError`; the temporary file is removed and ``path`` is left as it was.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise CheckpointError(f"cannot write checkpoint {path}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
            if os.fstat(f.fileno()).st_size != f.tell():  # a short write nobody reported
                raise OSError(errno.EIO, "the file on disk is shorter than what was written")
        os.replace(tmp_name, path)
        _fsync_dir(path.parent)
    except BaseException as exc:
        Path(tmp_name).unlink(missing_ok=True)
        os_error = _os_error_behind(exc)
        if os_error is not None:
            raise CheckpointError(f"cannot write checkpoint {path}: {os_error.strerror or os_error}") from exc
        raise


def _os_error_behind(exc: BaseException) -> OSError | None:
    """The OSError that caused ``exc`` (torch's zip writer re-raises a failed write as RuntimeError)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _fsync_dir(directory: Path) -> None:
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _link_atomic(source: Path, path: Path) -> bool:
    """Make ``path`` a hard link to ``source``, atomically; False where links are not supported."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.link.tmp")
    try:
        tmp.unlink(missing_ok=True)
        os.link(source, tmp)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        return True
    except OSError:
        tmp.unlink(missing_ok=True)
        return False


def _checkpoint_dir(run_or_checkpoints_dir: Path) -> Path:
    """The directory holding the checkpoints of a run dir (its checkpoints/) or of itself."""
    for directory in (run_or_checkpoints_dir / "checkpoints", run_or_checkpoints_dir):
        if directory.is_dir() and (periodic_files(directory) or (directory / "last.pt").is_file()):
            return directory
    raise CheckpointError(
        f"no checkpoint in directory {run_or_checkpoints_dir} (looked for checkpoints/iter_*.pt and last.pt)"
    )


def periodic_files(directory: Path) -> list[Path]:
    """``iter_*.pt`` regular files in ``directory``, oldest iteration (by name) first.

    The one scan of a checkpoint directory. Only regular files count (``is_file`` follows links
    and never opens the file): opening a FIFO named ``iter_000003.pt`` would block for ever, and a
    device would be read for ever.
    """
    numbered = [
        (int(m.group(1)), f) for f in directory.iterdir() if (m := _PERIODIC.match(f.name)) and f.is_file()
    ]
    return [f for _, f in sorted(numbered)]


def missing_reason(path: Path) -> str | None:
    """Why ``path`` names no file or directory (e.g. ``does not exist``), or None when it does.

    A symbolic link loop or a dangling link is said as such: "does not exist" would send the
    user looking for a file that is there.
    """
    try:
        os.stat(path)
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            where = "is a symbolic link loop" if path.is_symlink() else "passes through a symbolic link loop"
            return f"{where} (its links never reach a file); point it at the checkpoint itself"
        if exc.errno == errno.ENOENT and path.is_symlink():
            return f"is a symbolic link to {os.readlink(path)}, which does not exist"
        if exc.errno == errno.ENOENT:
            return "does not exist"
        return f"cannot be read ({exc.strerror or exc})"


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a locomo checkpoint safely (no code execution); clear errors for bad files.

    ``path`` is a checkpoint file, a run directory or its ``checkpoints/`` directory (then the
    newest readable checkpoint in it).
    """
    return load_latest(path, map_location)[1]


def load_file(p: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    try:
        with warnings.catch_warnings():  # torch's "please file an issue" note on foreign pickles
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            state = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch.load raises many types for foreign or damaged files
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        code = found.group(1) if found else None
        if code is None and isinstance(exc, pickle.UnpicklingError):
            code = code_reference(p)  # other pickle protocols fail on an opcode before naming it
        if isinstance(exc, pickle.UnpicklingError) and code is not None:
            raise CheckpointError(
                f"refusing to load {p}: not a plain-data locomo checkpoint (it references "
                f"{code}, code that unpickling would run)"
            ) from exc
        raise CheckpointError(
            f"cannot read checkpoint {p}: the file is truncated or not a checkpoint"
        ) from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{p} is not a locomo checkpoint")
    version = state.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise CheckpointError(
            f"{p} has checkpoint format version {version!r}; this locomo reads versions up to {VERSION}"
        )
    return state


# Globals a plain torch.save of tensors and containers references; any other one is code.
_DATA_GLOBALS = ("torch.", "collections.OrderedDict", "_codecs.encode", "builtins.set", "builtins.frozenset")


def _pickle_globals(data: bytes) -> list[str]:
    """The globals a pickle references, read opcode by opcode (nothing is unpickled or run)."""
    names: list[str] = []
    strings: list[str] = []
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name in ("GLOBAL", "INST") and isinstance(arg, str):
                names.append(arg.replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                names.append(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(arg, str):
                strings.append(arg)
    except Exception:  # a damaged pickle: report what was read before the damage
        pass
    return names


def code_reference(path: Path) -> str | None:
    """The first global in a pickle or torch zip checkpoint that is not plain data (None if none)."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                member = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
                data = archive.read(member) if member is not None else b""
        else:
            data = path.read_bytes()
    except (OSError, zipfile.BadZipFile):
        return None
    return next((g for g in _pickle_globals(data) if not g.startswith(_DATA_GLOBALS)), None)


def load_latest(
    path: str | Path,
    map_location: str | torch.device = "cpu",
    skipped: list[tuple[Path, str]] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """A checkpoint file and its contents; for a directory, its newest readable checkpoint.

    In a directory, periodic checkpoints are tried newest first, so one damaged file (a disk
    error, a file truncated by hand; atomic writes rule out torn files) falls back to the one
    before it. The damaged files passed over are appended to ``skipped`` as (file, reason), so
    that the caller can say which checkpoint it used instead.
    """
    p = Path(path).expanduser()
    if p.is_file():
        state = load_file(p, map_location)
        validate(state, p)
        return p, state
    reason = missing_reason(p)
    if reason is not None:
        raise CheckpointError(f"checkpoint {p} {reason}")
    if not p.is_dir():  # /dev/zero would be read for ever
        raise CheckpointError(f"checkpoint {p} is not a regular file or a directory")
    directory = _checkpoint_dir(p)
    files = periodic_files(directory)[::-1]
    if (directory / "last.pt").is_file():
        files.append(directory / "last.pt")
    errors: list[tuple[Path, str]] = []
    for i, f in enumerate(files):
        try:
            state = load_file(f, map_location)
        except CheckpointError as exc:
            errors.append((f, str(exc)))
            continue
        # A file that reads but holds bad contents is refused, not passed over for an older one
        # (which a resume would then continue from, overwriting this one); the refusal says which
        # checkpoint the command would take once the bad one is moved away.
        try:
            validate(state, f)
        except CheckpointError as exc:
            raise CheckpointError(f"{exc}{_intact_instead(f, files[i + 1 :], directory)}") from exc
        if skipped is not None:
            skipped.extend(errors)
        return f, state
    raise CheckpointError(f"no readable checkpoint in {directory}: " + "; ".join(e for _, e in errors))


def _intact_instead(bad: Path, rest: list[Path], directory: Path) -> str:
    """``; ... move <bad> out ...`` naming the checkpoint that :func:`load_latest` would take without
    ``bad`` (the first of ``rest``, in its order, that reads and validates); "" when there is none."""
    for candidate in rest:
        try:
            if os.path.samefile(candidate, bad):  # last.pt: a hard link to the bad file
                continue
            state = load_file(candidate)
            validate(state, candidate)
        except (CheckpointError, OSError):
            continue
        iteration = (state.get("counters") or {}).get("iteration")
        return (
            f"; the checkpoint to use instead is {candidate.name} (iteration {iteration}), which is intact: "
            f"move {bad.name} out of {directory} and run the command again"
        )
    return ""


def describe_fallback(used: Path, skipped: list[tuple[Path, str]]) -> str | None:
    """A warning that newer checkpoints were damaged and ``used`` was taken instead (None if not)."""
    newer = [(f, reason) for f, reason in skipped if f.name != "last.pt"]
    if not newer:
        return None
    reasons = "; ".join(reason for _, reason in newer)
    return f"{reasons}; using {used}, the newest intact checkpoint"


def periodic_iteration(path: Path) -> int | None:
    """The iteration of a periodic checkpoint ``iter_XXXXXX.pt`` from its name, else None."""
    m = _PERIODIC.match(path.name)
    return int(m.group(1)) if m else None


def newest_in_directory(directory: Path) -> Path | None:
    """The newest periodic checkpoint file in ``directory`` (by iteration), or None."""
    periodic = periodic_files(directory) if directory.is_dir() else []
    return periodic[-1] if periodic else None


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
    loader's business: :func:`require_resumable`, :func:`locomo.evaluation.load_policy`):

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
    its loader's business (:func:`require_resumable`, :func:`locomo.evaluation.load_policy`).
    """
    from locomo.envs.base import SpaceInfo
    from locomo.policy import ValueNet, make_actor

    info = SpaceInfo(
        obs_dim=int(spaces["obs_dim"]),
        discrete=bool(spaces.get("discrete")),
        action_dim=int(spaces["action_dim"]),
    )
    m = cfg.model
    # Built on the CPU (their size is bounded by check_network_memory, in stored_config), without
    # touching the global RNG that a command seeds or a resume restores.
    with torch.random.fork_rng(devices=[]):
        nets: dict[str, torch.nn.Module] = {
            "actor": make_actor(info, list(m.hidden_sizes), m.activation, m.init_log_std, m.action_bounds)
        }
        if cfg.algo.baseline == "value":  # as locomo.factory.make_learners: a critic for the value baseline
            hidden, normalize_values = list(m.hidden_sizes), cfg.algo.normalize_values
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


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """Every RNG that training draws from, as plain data."""
    return {
        "torch": torch.get_rng_state(),
        "torch_generator": generator.get_state(),
        "python": repr(random.getstate()),
        # CUDA generators (sampling on the GPU), when CUDA is in use; not exercised by CPU tests.
        **(
            {"cuda": list(torch.cuda.get_rng_state_all())}
            if torch.cuda.is_available() and torch.cuda.is_initialized()
            else {}
        ),
    }


def restore_rng(state: dict[str, Any], generator: torch.Generator) -> None:
    """Inverse of :func:`rng_state`.

    Checkpoints written before the runner dropped its unused numpy Generator also hold a
    ``"numpy"`` entry (that Generator's state); nothing draws from it, so it is ignored.
    """
    torch.set_rng_state(state["torch"])
    generator.set_state(state["torch_generator"])
    random.setstate(ast.literal_eval(state["python"]))
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


class CheckpointManager:
    """Writes ``iter_XXXXXX.pt`` (keeping the newest K) and ``last.pt`` in one directory."""

    def __init__(self, directory: Path, keep: int) -> None:
        self.directory, self.keep = directory, keep
        self.last_saved: Path | None = None
        if directory.is_dir():  # temporary files of a writer that was killed mid-write
            for stale in directory.glob(".*.tmp"):
                stale.unlink(missing_ok=True)

    def save(self, state: dict[str, Any], iteration: int) -> Path:
        """Save the periodic checkpoint and last.pt, then prune old periodic ones.

        On failure (CheckpointError) nothing already on disk is touched.
        """
        state = {"format": FORMAT, "version": VERSION, "kind": KIND_TRAINING, **state}
        assert_plain(state)
        path = self.directory / f"iter_{iteration:06d}.pt"
        save_atomic(state, path)
        if not _link_atomic(path, self.directory / "last.pt"):
            save_atomic(state, self.directory / "last.pt")
        self.last_saved = path
        for old in periodic_files(self.directory)[: -self.keep]:
            old.unlink(missing_ok=True)
        return path

    def save_snapshot(self, state: dict[str, Any], name: str) -> Path:
        """Write a diagnostic snapshot (never pruned, never picked for resume)."""
        state = {"format": FORMAT, "version": VERSION, "kind": KIND_DIAGNOSTIC, **state}
        assert_plain(state)
        path = self.directory / name
        save_atomic(state, path)
        return path


class RunDirLock:
    """An exclusive lock on a run directory while a process trains in it (a context manager).

    Two processes writing one run dir (a resume started while the run is still going) would
    overwrite each other's checkpoints and metrics; the second one is refused instead. The lock
    (``flock`` on ``<run>/.lock``) goes away with its process, even after ``kill -9``.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / ".lock"
        self._file: Any = None

    def __enter__(self) -> RunDirLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            f = self.path.open("a+", encoding="utf-8")
        except OSError as exc:  # a directory where the lock file goes, a read-only file system
            raise CheckpointError(
                f"cannot lock run directory {self.path.parent}: {self.path}: {exc.strerror or exc}"
            ) from exc
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise CheckpointError(
                f"run directory {self.path.parent} is in use by {holder}; wait for it to stop "
                "(or stop it: it saves a checkpoint on SIGTERM), then resume"
            ) from exc
        f.seek(0)
        f.truncate()
        f.write(f"locomo process {os.getpid()}")
        f.flush()
        self._file = f
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None
