"""Who owns a run directory: a new run never writes into another run's files.

``locomo train`` with a run dir that already holds a run (its checkpoints, metrics or resolved
config) would interleave two runs' metrics and checkpoints. :func:`claim_run_dir` refuses
that with the three ways out (resume it, another dir, ``overwrite=true``); with
``overwrite=true`` it removes the previous run's files first (:func:`remove_run_files`). It runs
under the run dir's lock (:class:`RunDirLock`: one process per run dir) and before anything is
written. Hydra's side of a run dir (its ``.hydra/`` record, a refused start undone) is
:mod:`locomo.runs.hydra_job`'s.

Pure helpers (:func:`previous_run`) are separate from the ones that touch the disk.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from locomo.errors import CheckpointError
from locomo.paths import RUN_FOLDERS, RUN_TOP_FILES

# How deep below a new run's dir another run is looked for (runs/<name>, multirun/<time>/<job>).
NESTED_RUN_DEPTH = 3
NESTED_SCAN_LIMIT = 5000  # folders looked at, at most: a home directory is not walked whole


def _last_iteration(metrics: Path) -> int | None:
    """The last readable ``iteration`` in a metrics file (None when there is none)."""
    last = None
    try:
        with metrics.open("rb") as f:
            for line in f:
                try:
                    row = json.loads(line)
                except ValueError:  # torn or undecodable line
                    continue
                if isinstance(row, dict) and isinstance(row.get("iteration"), int | float):
                    last = int(row["iteration"])
    except OSError:
        return None
    return last


def is_locomo_config(path: Path) -> bool:
    """True when ``path`` is a config.yaml a locomo run wrote (a mapping with env, algo and train)."""
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    except Exception:  # unreadable, not YAML, not UTF-8: not locomo's
        return False
    return isinstance(cfg, dict) and {"env", "algo", "train"} <= set(cfg)


def _has_checkpoints(run_dir: Path) -> list[Path]:
    """The run's checkpoint files (regular files named as locomo names them), oldest name first."""
    folder = run_dir / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.pt") if p.is_file() and p.name != ".pt")


def foreign_files(run_dir: Path, metrics_file: str) -> list[str]:
    """Files where a new run writes its own that no locomo run wrote (a new run would replace them)."""
    found = []
    config = run_dir / "config.yaml"
    if config.exists() and not is_locomo_config(config):
        found.append("config.yaml")
    metrics = run_dir / metrics_file
    if metrics.is_file() and metrics.stat().st_size > 0 and _last_iteration(metrics) is None:
        found.append(metrics_file)
    return found


def previous_run(run_dir: Path, metrics_file: str) -> str | None:
    """A description of the locomo run already in ``run_dir`` (None when it holds none).

    A run is there when it left checkpoints, metrics rows or its resolved ``config.yaml``; files
    of those names that locomo did not write are not a run (:func:`foreign_files`).
    """
    checkpoints = _has_checkpoints(run_dir)
    metrics = run_dir / metrics_file
    last = _last_iteration(metrics) if metrics.is_file() else None
    if not checkpoints and last is None and not is_locomo_config(run_dir / "config.yaml"):
        return None
    parts = []
    if last is not None:
        parts.append(f"metrics up to iteration {last}")
    periodic = [p.name for p in checkpoints if p.name.startswith("iter_")]
    if periodic:
        parts.append(f"checkpoint {periodic[-1]}")
    elif not checkpoints:
        parts.append("no checkpoint")
    return ", ".join(parts) or "its config"


def nested_run(run_dir: Path) -> Path | None:
    """A run directory below ``run_dir`` (a few levels deep), if there is one."""
    if not run_dir.is_dir():
        return None
    level, seen = [run_dir], 0
    for _ in range(NESTED_RUN_DEPTH):
        below = []
        for folder in level:
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue
            for entry in entries:
                if not entry.is_dir(follow_symlinks=False) or (
                    folder == run_dir and entry.name in RUN_FOLDERS
                ):
                    continue
                path = Path(entry.path)
                if (path / "config.yaml").is_file() and (path / "checkpoints").is_dir():
                    return path
                below.append(path)
                seen += 1
                if seen > NESTED_SCAN_LIMIT:
                    return None
        level = below
    return None


def claim_run_dir(run_dir: Path, metrics_file: str, overwrite: bool) -> list[Path]:
    """Make ``run_dir`` this new run's: refuse if it holds or contains another run, or files of the
    names a run writes that locomo did not write; with ``overwrite`` and a previous run, return
    what must go (:data:`~locomo.paths.RUN_TOP_FILES`, :data:`~locomo.paths.RUN_FOLDERS`) for the
    caller to announce, then remove (:func:`remove_run_files`). Nothing is removed here.

    Call it while holding the run dir's lock, so that the run it finds is not one still going.
    """
    for parent in run_dir.resolve().parents:  # a run dir nested in another run's files
        if (parent / "config.yaml").is_file() and (parent / "checkpoints").is_dir():
            raise CheckpointError(
                f"run directory {run_dir} is inside the run directory {parent}; start this run in a "
                "directory of its own (hydra.run.dir=...)"
            )
    inner = nested_run(run_dir)
    if inner is not None:
        raise CheckpointError(
            f"run directory {run_dir} contains the run directory {inner}; start this run in a "
            "directory of its own (hydra.run.dir=...)"
        )
    foreign = foreign_files(run_dir, metrics_file)
    if foreign:
        raise CheckpointError(
            f"run directory {run_dir} holds {', '.join(foreign)} that no locomo run wrote, and a new run "
            "would replace it; start this run in another directory (hydra.run.dir=...)"
            + (" (overwrite=true removes only a locomo run's files)" if overwrite else "")
        )
    found = previous_run(run_dir, metrics_file)
    if found is None:
        others = sorted(p.name for p in run_dir.iterdir() if p.name not in ("train.log", ".lock"))
        if overwrite and others:  # a typo'd directory: overwrite=true has no run to replace there
            shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
            raise CheckpointError(
                f"overwrite=true: run directory {run_dir} holds no locomo run to replace, only other "
                f"files ({shown}); check the path, or leave overwrite out to start a run beside them"
            )
        return []
    if not overwrite:
        resumable = "no checkpoint" not in found
        ways = (f"continue it with: locomo train resume={run_dir}; or " if resumable else "") + (
            "start this run in another directory (hydra.run.dir=...); or replace the old run "
            "with overwrite=true (its checkpoints, metrics and videos are deleted)"
        )
        raise CheckpointError(f"run directory {run_dir} already holds a run ({found}); {ways}")
    plan = [run_dir / name for name in (*RUN_TOP_FILES, metrics_file, f"{metrics_file}.damaged")]
    plan = [p for p in plan if p.is_file() or p.is_symlink()]
    for folder, patterns in RUN_FOLDERS.items():
        if (run_dir / folder).is_dir() and not (run_dir / folder).is_symlink():
            plan += sorted({p for pattern in patterns for p in (run_dir / folder).glob(pattern)})
    return plan


def describe_removal(run_dir: Path, plan: list[Path]) -> str:
    """What :func:`remove_run_files` removes: ``config.yaml, checkpoints/ (3 of its entries), ...``."""
    counts: dict[str, int] = {}
    for path in plan:
        top = path.relative_to(run_dir).parts[0]
        key = top if path.parent == run_dir else f"{top}/"
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(
        key if not key.endswith("/") else f"{key} ({n} of its entries)" for key, n in counts.items()
    )


def remove_run_files(run_dir: Path, plan: list[Path]) -> None:
    """Remove the files ``claim_run_dir`` planned, then the run's folders that are left empty."""
    for path in plan:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    for folder in RUN_FOLDERS:
        with contextlib.suppress(OSError):  # not empty (a user's own files), or not there
            (run_dir / folder).rmdir()


def lock_holder() -> str:
    """What this process writes into the run dir's lock file while it holds it."""
    return f"locomo process {os.getpid()}"


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
        f.write(lock_holder())
        f.flush()
        self._file = f
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None
