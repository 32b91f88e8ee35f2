"""Who owns a run directory: a new run never writes into another run's files.

``locomo train`` with a run dir that already holds a run (its checkpoints, metrics or resolved
config) would interleave two runs' metrics and checkpoints. :func:`claim_run_dir` refuses
that with the three ways out (resume it, another dir, ``overwrite=true``); with
``overwrite=true`` it removes the previous run's files first. It runs under the run dir's lock
and before anything is written, and it also writes the ``.hydra/`` record that Hydra would
have written before the job started (locomo asks Hydra not to, so that a refused start cannot
rewrite the record of the run in progress).

Pure helpers (:func:`previous_run`) are separate from the ones that touch the disk.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from locomo.config import ConfigError
from locomo.errors import CheckpointError

# Files and folders a locomo training run writes into its run dir (the metrics file is added
# from the config). ``overwrite=true`` removes exactly these; anything else in the dir is kept,
# and so is Hydra's train.log, which Hydra has already opened for this run when the job starts.
RUN_FILES = ("config.yaml", "checkpoints", "videos", "wandb", "eval", ".hydra", "traceback.log")


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


def previous_run(run_dir: Path, metrics_file: str) -> str | None:
    """A description of the run already in ``run_dir`` (None when it holds none).

    A run is there when it left checkpoints, a non-empty metrics file or its resolved
    ``config.yaml``.
    """
    checkpoints = sorted((run_dir / "checkpoints").glob("*.pt")) if (run_dir / "checkpoints").is_dir() else []
    metrics = run_dir / metrics_file
    has_metrics = metrics.is_file() and metrics.stat().st_size > 0
    if not checkpoints and not has_metrics and not (run_dir / "config.yaml").exists():
        return None
    parts = []
    if has_metrics:
        last = _last_iteration(metrics)
        if last is not None:
            parts.append(f"metrics up to iteration {last}")
    periodic = [p.name for p in checkpoints if p.name.startswith("iter_")]
    if periodic:
        parts.append(f"checkpoint {periodic[-1]}")
    elif not checkpoints:
        parts.append("no checkpoint")
    return ", ".join(parts) or "its config"


def claim_run_dir(run_dir: Path, metrics_file: str, overwrite: bool) -> list[str]:
    """Make ``run_dir`` this new run's: refuse if it holds another run, or clear it with ``overwrite``.

    Returns the names removed (empty unless ``overwrite`` found a previous run). Call it while
    holding the run dir's lock, so that the run it finds is not one still going.
    """
    for parent in run_dir.resolve().parents:  # a run dir nested in another run's files
        if (parent / "config.yaml").is_file() and (parent / "checkpoints").is_dir():
            raise CheckpointError(
                f"run directory {run_dir} is inside the run directory {parent}; start this run in a "
                "directory of its own (hydra.run.dir=...)"
            )
    found = previous_run(run_dir, metrics_file)
    if found is None:
        return []
    if not overwrite:
        resumable = "no checkpoint" not in found
        ways = (f"continue it with: locomo train resume={run_dir}; or " if resumable else "") + (
            "start this run in another directory (hydra.run.dir=...); or replace the old run "
            "with overwrite=true (its checkpoints, metrics and videos are deleted)"
        )
        raise CheckpointError(f"run directory {run_dir} already holds a run ({found}); {ways}")
    removed = []
    for name in (*RUN_FILES, metrics_file):
        path = run_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        else:
            continue
        removed.append(name)
    return removed


def write_hydra_record(
    run_dir: Path, subdir: str, task_cfg: DictConfig, hydra_cfg: Any, overrides: list[str]
) -> None:
    """``<run>/<subdir>/{config,hydra,overrides}.yaml`` as Hydra writes them (Hydra's own format)."""
    out = run_dir / subdir
    out.mkdir(parents=True, exist_ok=True)
    records = {
        "config.yaml": task_cfg,
        "hydra.yaml": OmegaConf.create({"hydra": OmegaConf.to_container(hydra_cfg, resolve=False)}),
        "overrides.yaml": OmegaConf.create(list(overrides)),
    }
    for name, cfg in records.items():
        (out / name).write_text(OmegaConf.to_yaml(cfg), encoding="utf-8")


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


def check_run_dir(args: list[str], roots: tuple[str, str] | None = ("outputs", "multirun")) -> None:
    """Check now that the run directory can be created and written, so that failing is one clear line.

    (Hydra would fail later with a stack trace.) ``roots``: where the command puts its run dirs
    (single run, sweep) when ``hydra.run.dir`` / ``hydra.sweep.dir`` are not given, i.e. the first
    component of the defaults in its conf/*.yaml; None for commands that write into the working
    directory. An explicit ``hydra.run.dir`` is created; for
    one with interpolations (the default ``outputs/<env>/<date>``) the part before the first
    interpolation must be creatable and writable.
    """
    given = {}
    for arg in args:
        for key in ("hydra.run.dir", "hydra.sweep.dir"):
            if arg.startswith(key + "="):
                given[key] = arg.split("=", 1)[1].strip("'\"")
    multirun = "-m" in args or "--multirun" in args
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    if key not in given and roots is None:
        return
    value = given.get(key, roots[1] if multirun else roots[0]) if roots else given[key]
    static = value.split("${", 1)[0]
    target = Path(static or ".").expanduser()
    if key in given and "${" not in value:
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(key, value, f"cannot create the run directory ({exc.strerror})") from exc
    problem = _writable(target)
    if problem is not None:
        where = "" if key in given else f" under {Path.cwd()}"
        raise ConfigError(
            key,
            value,
            f"cannot create or write the run directory{where} ({problem.strerror}); run from a writable "
            f"directory or set {key}=<a writable directory>",
        )


def hydra_run_dir() -> Path:
    """The Hydra output directory of this job."""
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)
