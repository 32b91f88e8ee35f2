"""The Hydra job around a run directory: checked before Hydra creates it, recorded once the job
has claimed it, and removed again when the job refuses to start.

- :func:`check_run_dir`: the run dir can be created and written (one clear line, not Hydra's
  stack trace later).
- :func:`record_subdir`, :func:`write_job_record`, :func:`write_hydra_record`: locomo asks
  Hydra not to write its ``.hydra/`` record before the job starts, and the job writes it itself
  once the run dir is its own, so that a refused start cannot rewrite the record of the run in
  progress.
- :func:`sweep_subdir`: a sweep's job dirs are numbered when their names would be too long.
- :func:`created_below`, :func:`run_dir_launch`: what a start may remove again, in its
  :class:`~locomo.launch.Launch`.
- :func:`removed_if_refused`: a start refused leaves nothing behind (:func:`remove_refused_start`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from locomo.errors import CheckpointError, ConfigError
from locomo.launch import Launch
from locomo.paths import NAME_MAX, check_path
from locomo.runs.outputs import write_text_atomic
from locomo.runs.rundir import lock_holder, previous_run


def write_run_file(path: Path, text: str, what: str) -> None:
    """Write one of the run's own files whole (atomically), or raise CheckpointError naming it.

    A full disk (or a file size limit, or a read-only file system) while a run starts is bad
    input like a full disk at a checkpoint: one line that names the file, exit 2.
    """
    try:
        write_text_atomic(path, text)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            fix = "free space on that disk"
        elif exc.errno == errno.EFBIG:
            fix = "raise the file size limit (ulimit -f)"
        else:
            fix = "make the run directory writable"
        raise CheckpointError(
            f"cannot write {path} ({what}): {exc.strerror or exc}; {fix}, then start again"
        ) from exc


def write_hydra_record(
    run_dir: Path, subdir: str, task_cfg: DictConfig, hydra_cfg: Any, overrides: list[str]
) -> None:
    """``<run>/<subdir>/{config,hydra,overrides}.yaml`` as Hydra writes them (Hydra's own format).

    Each file is written whole or not at all; when one cannot be written (CheckpointError), the
    ones this call wrote are removed again, so that a refused start leaves no partial record.
    """
    out = run_dir / subdir
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        why = exc.strerror or exc
        raise CheckpointError(f"cannot create {out} (Hydra's record of the run): {why}") from exc
    records = {
        "config.yaml": task_cfg,
        "hydra.yaml": OmegaConf.create({"hydra": OmegaConf.to_container(hydra_cfg, resolve=False)}),
        "overrides.yaml": OmegaConf.create(list(overrides)),
    }
    written: list[Path] = []
    try:
        for name, cfg in records.items():
            write_run_file(out / name, OmegaConf.to_yaml(cfg), "Hydra's record of the run")
            written.append(out / name)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty: files of an earlier record, kept
            out.rmdir()
        raise


def _writable(path: Path) -> OSError | None:
    """None if ``path`` can be created and written in, else the error saying why not."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return NotADirectoryError(20, "Not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        return PermissionError(13, f"Permission denied: {existing} is not writable")
    return None


def check_run_dir(launch: Launch, roots: tuple[str, str] | None = ("outputs", "multirun")) -> None:
    """Check now that the run directory can be created and written, so that failing is one clear line.

    (Hydra would fail later with a stack trace.) ``launch``: the command's start, whose
    ``hydra.run.dir`` / ``hydra.sweep.dir`` (given, or set by locomo) are checked. ``roots``: where
    the command puts its run dirs (single run, sweep) when those are not given, i.e. the first
    component of the defaults in its conf/*.yaml; None for commands that write into the working
    directory. An explicit ``hydra.run.dir`` is created; for
    one with interpolations (the default ``outputs/<env>/<date>``) the part before the first
    interpolation must be creatable and writable.
    """
    given = {}
    for key in ("hydra.run.dir", "hydra.sweep.dir"):
        value = launch.value(key)
        if value is not None:
            given[key] = value
    for key, value in given.items():  # '' would be the working directory itself
        if not value.strip():
            raise ConfigError(
                key,
                value,
                "it is empty, which would be the working directory; give a directory, or leave it out",
            )
        check_path(key, value)
    multirun = launch.multirun
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    if key not in given and roots is None:
        return
    value = given.get(key, roots[1] if multirun else roots[0]) if roots else given[key]
    static = value.split("${", 1)[0]
    target = Path(static or ".").expanduser()
    # A resume's run dir is locomo.training.resume's choice (hydra.run.dir from the command line is refused
    # then): what to do is said for the resume.
    resumed = launch.resume.path if launch.resume is not None else None
    if key in given and "${" not in value:
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            if resumed is not None:
                raise CheckpointError(_unwritable_resume(resumed, target, exc)) from exc
            raise ConfigError(key, value, f"cannot create the run directory ({exc.strerror})") from exc
    problem = _writable(target)
    if problem is not None:
        if resumed is not None:
            raise CheckpointError(_unwritable_resume(resumed, target, problem))
        where = "" if key in given else f" under {Path.cwd()}"
        raise ConfigError(
            key,
            value,
            f"cannot create or write the run directory{where} ({problem.strerror}); run from a writable "
            f"directory or set {key}=<a writable directory>",
        )


def _unwritable_resume(checkpoint: Path, run_dir: Path, problem: OSError) -> str:
    """What to do when a resume cannot write where it would continue (advice a resume accepts)."""
    if checkpoint.parent.name == "checkpoints" and checkpoint.parent.parent.resolve() == run_dir.resolve():
        return (
            f"cannot write in run directory {run_dir} ({problem.strerror}), and a resume continues the run "
            f"there; copy it somewhere writable and resume the copy: cp -r {run_dir} <copy>; locomo train "
            "resume=<copy>"
        )
    return (
        f"cannot create the new run directory {run_dir} for the resumed checkpoint {checkpoint} "
        f"({problem.strerror}); run the resume from a writable directory (its run dir goes under "
        "outputs/ there)"
    )


# conf/train.yaml names a sweep's job dirs ${hydra.job.num}_${hydra.job.override_dirname}: the
# job's overrides but these (hydra.job.config.override_dirname.exclude_keys), joined with ','.
SWEEP_DIRNAME_EXCLUDED = ("seed",)
# Room left for what the estimate below cannot see (Hydra writes some values back differently).
_DIRNAME_MARGIN = 16


def sweep_dirname_length(overrides: list[str]) -> int:
    """About the longest file name a sweep's job dir gets from its ``overrides`` (0 when unknown).

    Each override counts with its longest value (a sweep's), as Hydra joins them, and a value
    with '/' in it counts per part (each part is a folder of its own).
    """
    parser = OverridesParser.create()
    lines, jobs = [], 1
    for arg in overrides:
        if arg.startswith("-") or "=" not in arg:
            continue
        try:
            override = parser.parse_override(arg)
            if override.key_or_group.startswith("hydra") or override.key_or_group in SWEEP_DIRNAME_EXCLUDED:
                continue
            values = list(override.sweep_string_iterator()) if override.is_sweep_override() else []
        except HydraException:
            return 0
        jobs *= max(len(values), 1)
        lines.append(max((f"{override.key_or_group}={v}" for v in values), key=len, default=arg))
    joined = f"{jobs - 1}_" + ",".join(sorted(lines))
    return max(len(os.fsencode(part)) for part in joined.split("/"))


def sweep_subdir(launch: Launch) -> str | None:
    """For ``locomo train -m``: ``${hydra.job.num}`` (numbered job dirs, said in a note) when the
    overrides would name the sweep's job dirs longer than the file system allows (Hydra would fail
    with "File name too long" after the first jobs' set-up, as a traceback); else None (Hydra's
    names, or the ``hydra.sweep.subdir`` given, which is kept as it is)."""
    if not launch.multirun or launch.given("hydra.sweep.subdir") is not None:
        return None
    length = sweep_dirname_length([text for text, _ in launch.overrides])
    if length <= NAME_MAX - _DIRNAME_MARGIN:
        return None
    print(
        f"locomo: note: this sweep's job directories would be named after its overrides ({length} "
        f"characters; file systems allow {NAME_MAX} per name): they are numbered instead (0, 1, ...); "
        "each job's overrides are in its .hydra/overrides.yaml",
        file=sys.stderr,
    )
    return "${hydra.job.num}"


def created_below(launch: Launch, roots: tuple[str, str] = ("outputs", "multirun")) -> Path:
    """The deepest folder of the run dir's path, or of a sweep's folder, that exists now, before
    Hydra creates the rest and the job's log: a refused start removes what Hydra made below it
    (:func:`removed_if_refused`).

    ``roots``: the first folder of the command's default run dir and sweep dir (its
    ``OUTPUT_ROOTS``), used when ``hydra.run.dir`` / ``hydra.sweep.dir`` is not given.
    """
    multirun = launch.multirun
    value = launch.value("hydra.sweep.dir" if multirun else "hydra.run.dir")
    default = (roots[1] if multirun else roots[0]) + "/"
    static = (value if value is not None else default).split("${", 1)[0]
    existing = Path(static or ".").expanduser().absolute()
    while not existing.is_dir() and existing != existing.parent:
        existing = existing.parent
    return existing


def record_subdir(launch: Launch) -> str | None:
    """Where the job writes Hydra's ``.hydra/`` record itself (None: nowhere), with Hydra's own
    switched off (:attr:`Launch.hydra_writes_record` False).

    Hydra writes the record before the job starts, so a start that the job then refuses (a bad
    value, the run dir is in use or holds another run) would leave a record behind, or rewrite
    the record of the run in progress. The job writes it itself once the run dir is its own
    (:func:`write_job_record`). An explicit ``hydra.output_subdir=<dir>`` is honoured, and
    ``hydra.output_subdir=null`` writes none.
    """
    value = launch.given("hydra.output_subdir")
    if value is None:
        return ".hydra"
    return None if value.lower() in ("null", "none", "~") else value


def run_dir_launch(args: list[str], roots: tuple[str, str]) -> Launch:
    """The :class:`Launch` of a command with a run dir of its own (``variance``, ``bench``): a start
    it refuses leaves nothing behind (:func:`created_below`, :func:`record_subdir`,
    :func:`removed_if_refused`)."""
    launch = Launch(tuple(args))
    return replace(
        launch,
        created_below=created_below(launch, roots),
        hydra_writes_record=False,
        record_subdir=record_subdir(launch),
    )


def write_job_record(task_cfg: DictConfig, subdir: str | None) -> None:
    """The job's ``.hydra/`` record in ``subdir`` of its run dir (:attr:`Launch.record_subdir`;
    nothing if None): called by a job once its checks passed, i.e. once its start is no longer
    refused."""
    if not subdir:
        return

    hydra_cfg = HydraConfig.get()
    write_hydra_record(hydra_run_dir(), subdir, task_cfg, hydra_cfg, list(hydra_cfg.overrides.task))


@contextlib.contextmanager
def removed_if_refused(below: Path | None) -> Iterator[None]:
    """Around a Hydra job: when it fails (a refused or interrupted start), remove what Hydra made
    for it below ``below`` (:attr:`Launch.created_below`; None: keep all, e.g. a torchrun rank
    other than 0) and nobody wrote in since (:func:`remove_refused_start`); the exception goes on.

    A job that has started writes its record or files first, so its run dir is kept.
    """
    try:
        yield
    except BaseException:
        if below is not None:
            _remove_refused_job(below)
        raise


def _remove_refused_job(below: Path) -> None:
    """:func:`remove_refused_start` for this process's Hydra job, up to ``below``."""

    try:
        hydra_cfg = HydraConfig.get()
    except ValueError:  # not in a Hydra job (the Python API): Hydra made nothing
        return
    sweep = None
    if hydra_cfg.mode == RunMode.MULTIRUN:  # from where locomo started: hydra.job.chdir may have moved
        sweep = Path(str(hydra_cfg.runtime.cwd)) / str(hydra_cfg.sweep.dir)
    log = f"{hydra_cfg.job.name}.log"
    remove_refused_start(hydra_run_dir(), below, log, sweep_dir=sweep)


def remove_refused_start(
    run_dir: Path, created_below: Path, log_name: str = "train.log", sweep_dir: Path | None = None
) -> None:
    """Undo what a start that was then refused made: Hydra's empty job log (``log_name``) and this
    process's ``.lock`` in a run dir that holds no run, then the run dir and the folders above it
    up to ``created_below`` (what existed before) while they are empty. A lock another process
    holds, a log with content, and every other file are kept.

    ``sweep_dir``: the job is one of a sweep, whose folder Hydra gave a ``multirun.yaml``; when
    that file is all the folder holds (no other job has a folder there), it goes too.
    """
    log, lock = run_dir / log_name, run_dir / ".lock"
    try:
        ours = not lock.exists() or lock.read_text(encoding="utf-8") == lock_holder()
        if ours and previous_run(run_dir, "metrics.jsonl") is None:
            if log.is_file() and not log.is_symlink() and log.stat().st_size == 0:
                log.unlink()
            if lock.is_file() and not lock.is_symlink():
                lock.unlink()
        folder, stop = run_dir.absolute(), created_below.absolute()
        sweep = sweep_dir.absolute() if sweep_dir is not None else None
        while folder != stop and stop in folder.parents:
            if folder == sweep:
                _remove_lone_sweep_record(folder)
            folder.rmdir()  # OSError when not empty: stop there
            folder = folder.parent
    except (OSError, UnicodeDecodeError):
        return


def _remove_lone_sweep_record(sweep_dir: Path) -> None:
    """Remove Hydra's ``multirun.yaml`` from a sweep folder that holds nothing else."""
    entries = list(sweep_dir.iterdir())
    if len(entries) == 1 and entries[0].name == "multirun.yaml":
        record = entries[0]
        if record.is_file() and not record.is_symlink():
            record.unlink()


def hydra_run_dir() -> Path:
    """The Hydra output directory of this job."""
    return Path(HydraConfig.get().runtime.output_dir)
