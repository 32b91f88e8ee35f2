"""Checkpoint files: written atomically, read safely, found in a run's directory.

What a checkpoint holds, and the one check of it that every loader shares, are
:mod:`locomo.runs.checkpoint_format`'s; this module moves checkpoints between memory and disk.

Crash safety: every file is written to a temporary file in the same directory, fsynced and
renamed over its target, so a crash (even ``kill -9``) leaves the previous file or the new one,
never a torn one. ``iter_XXXXXX.pt`` is written first, then ``last.pt`` (a hard link to it where
the filesystem allows); :func:`load_latest` picks the newest readable ``iter_*.pt``.

Loading: a file is read safely (:func:`load_file`, ``torch.load(weights_only=True)``: plain tensors
and Python types, no code run), then checked (:func:`locomo.runs.checkpoint_format.validate`). A file
that cannot be read is passed over for an older one (a disk error); a file that reads but fails
the check is refused with one line naming it, never passed over silently. Directory scans
(:func:`periodic_files`) see regular files only, so a FIFO or a device named like a checkpoint
is never opened.
"""

from __future__ import annotations

import ast
import errno
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

from locomo.errors import CheckpointError
from locomo.runs.checkpoint_format import (
    FORMAT,
    KIND_DIAGNOSTIC,
    KIND_TRAINING,
    VERSION,
    periodic_iteration,
    validate,
)

__all__ = [
    "CheckpointError",
    "CheckpointManager",
    "assert_plain",
    "describe_fallback",
    "load",
    "load_file",
    "load_latest",
    "missing_reason",
    "newest_in_directory",
    "periodic_files",
    "restore_rng",
    "rng_state",
    "save_atomic",
]

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
        (n, f) for f in directory.iterdir() if (n := periodic_iteration(f)) is not None and f.is_file()
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


def newest_in_directory(directory: Path) -> Path | None:
    """The newest periodic checkpoint file in ``directory`` (by iteration), or None."""
    periodic = periodic_files(directory) if directory.is_dir() else []
    return periodic[-1] if periodic else None


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
