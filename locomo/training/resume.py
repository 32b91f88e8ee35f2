"""``locomo train resume=<run dir | checkpoint>``: continue a run exactly where it stopped.

Two steps, because Hydra fixes the run directory before the job starts:

1. :func:`resolve_resume` (``locomo train``'s :func:`~locomo.commands.train.prepare`, before
   Hydra): finds the newest complete checkpoint, reads it, and refuses overrides a resumed run
   cannot honour. The :class:`~locomo.launch.Resume` it returns (path, contents, run dir) goes
   into the job's :class:`~locomo.launch.Launch`, which points Hydra's run dir at the
   checkpoint's run dir (with Hydra's ``.hydra/`` record off, so that the run's original record
   stays as it was). A checkpoint file that is not in a run's ``checkpoints/`` directory
   continues in a new run dir.
2. :func:`resumed_config` (inside the Hydra job): the config is the checkpoint's, with only
   the overrides in :data:`RESUME_OVERRIDABLE` applied.

The checkpoint is read once: step 2 gets step 1's :class:`~locomo.launch.Resume` with the job.
"""

from __future__ import annotations

import datetime
import sys
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from locomo.config.rules import resolve_total_steps
from locomo.errors import CheckpointError, ConfigError
from locomo.launch import Launch, Resume

# What a resumed run may change: how long it goes on (in iterations or env steps), how it saves
# and logs, and where it computes. Everything else (env, algorithm, model, seed, batch sizes)
# comes from the checkpoint, or the resumed run would not continue the same training.
# train.device moves the same computation to other hardware (the checkpoint's tensors load on any
# device): a run trained on a GPU machine can go on on a CPU one, which could not otherwise
# follow "CUDA is not available; use auto or cpu". Its numbers then differ in the last bits, as
# between two machines; that is all.
RESUME_OVERRIDABLE = (
    "train.iterations",
    "train.total_steps",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.device",
    "logger.progress",
    "logger.wandb.mode",
    "logger.wandb.init_timeout",
    "logger.wandb.name",
    "logger.wandb.tags",
    "logger.wandb.log_model",
    "logger.wandb.eval_episodes",
)
_HYDRA_KEYS_SET_BY_RESUME = ("hydra.run.dir", "hydra.output_subdir")


def run_dir_of(checkpoint: Path) -> Path | None:
    """The run dir a checkpoint belongs to (``<run>/checkpoints/<file>``), else None."""
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else None


def resolve_resume(launch: Launch) -> Resume | None:
    """The checkpoint that ``launch``'s ``resume=`` continues, read, and where the run goes on;
    None when there is no ``resume=`` (or an override that does not parse: Hydra reports it).

    Raises ConfigError for an override a resume cannot honour and CheckpointError when there
    is no usable checkpoint, before Hydra creates or touches any directory.
    """
    parsed = launch.overrides
    if any(o is None for _, o in parsed):
        return None
    resume_args = [(arg, o) for arg, o in parsed if o is not None and o.key_or_group == "resume"]
    if not resume_args or resume_args[-1][1].value() is None:
        return None
    value = str(resume_args[-1][1].value())
    if launch.multirun:
        raise ConfigError("resume", value, "cannot be combined with -m/--multirun: resume one run at a time")
    allowed = ", ".join(RESUME_OVERRIDABLE)
    given = [
        (o.key_or_group, arg.split("=", 1)[1] if "=" in arg else arg) for arg, o in parsed if o is not None
    ]
    if launch.run_dir is not None:  # locomo.train(run_dir=...)
        given.append(("hydra.run.dir", launch.run_dir))
    for key, text in given:
        if key == "resume" or key in RESUME_OVERRIDABLE:
            continue
        if key.startswith("hydra.") and key not in _HYDRA_KEYS_SET_BY_RESUME:
            continue
        raise ConfigError(
            key,
            text,
            f"cannot be changed when resuming: the config comes from the checkpoint (a resume may "
            f"set only {allowed}); to train with other settings, start a new run",
        )

    from locomo.runs.checkpoint import (
        describe_fallback,
        load_file,
        load_latest,
        missing_reason,
        periodic_files,
    )
    from locomo.runs.checkpoint_format import periodic_iteration, require_resumable, validate

    reason = missing_reason(Path(value).expanduser())
    if reason == "does not exist":
        raise CheckpointError(f"resume={value!r}: no such run directory or checkpoint file")
    if reason is not None:
        raise CheckpointError(f"resume={value!r} {reason}")
    skipped: list[tuple[Path, str]] = []
    path, state = load_latest(value, skipped=skipped)
    if path.name == "last.pt":  # last.pt lags iter_*.pt if a run was killed between the two writes
        path, state = load_latest(path.parent, skipped=skipped)
    require_resumable(state, path)
    from locomo.distributed import world_size_from_env
    from locomo.training.state import check_world_size

    check_world_size(state, world_size_from_env(), path)
    run_dir = run_dir_of(path.resolve())
    iteration = periodic_iteration(path)
    if run_dir is not None and iteration is not None:
        # A newer checkpoint that can be read would be overwritten by resuming this one in place;
        # newer ones that cannot be read (damaged) are what a resume falls back from.
        for newer in periodic_files(path.parent)[::-1]:
            if (periodic_iteration(newer) or 0) <= iteration:
                break
            try:
                newer_state = load_file(newer)
            except CheckpointError as exc:
                if all(newer != f for f, _ in skipped):
                    skipped.append((newer, str(exc)))
                continue
            validate(newer_state, newer)  # e.g. a copy named for a later iteration: say so, not "older"
            raise CheckpointError(
                f"resume={value!r}: {path.name} is older than the run's newest checkpoint {newer.name}, "
                "and resuming it in its run dir would overwrite the newer checkpoints and metrics; "
                f"resume the run dir (locomo train resume={run_dir}), or copy the checkpoint out of it "
                "to continue in a new run dir"
            )
    fallback = describe_fallback(path, skipped)
    if fallback is not None:
        print(f"locomo: warning: {fallback}", file=sys.stderr)
    if run_dir is not None:
        return Resume(path=path.resolve(), state=state, run_dir=run_dir, in_place=True)
    env_name = state.get("config", {}).get("env", {}).get("name", "resumed")
    stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    new_dir = Path("outputs") / str(env_name) / stamp
    return Resume(path=path.resolve(), state=state, run_dir=new_dir, in_place=False)


def resumed_config(
    cfg: DictConfig, task_overrides: list[str], resume: Resume | None
) -> tuple[DictConfig, Path, dict[str, Any]]:
    """The checkpoint's config plus the allowed overrides; also the checkpoint path and contents.

    ``cfg.resume`` is the checkpoint file that :func:`resolve_resume` chose, and ``resume`` what
    it read (None, or another file: a job started some other way, which reads ``cfg.resume``);
    ``task_overrides`` are the command line's overrides (Hydra's ``overrides.task``).
    """
    from locomo.runs.checkpoint import load_latest
    from locomo.runs.checkpoint_format import require_resumable, stored_config

    if resume is not None and resume.path == Path(cfg.resume).expanduser().resolve():
        path, state = Path(cfg.resume), resume.state
    else:
        path, state = load_latest(cfg.resume)
    require_resumable(state, path)
    resumed = stored_config(state, path)  # the schema's config, checked as every loader checks it
    parser = OverridesParser.create()
    for override in parser.parse_overrides(list(task_overrides)):
        key = override.key_or_group
        if key in RESUME_OVERRIDABLE:
            OmegaConf.update(resumed, key, OmegaConf.select(cfg, key), merge=False)
    resumed.resume = str(path)
    resolve_total_steps(resumed, task_overrides)  # train.total_steps=N extends the run to N env steps
    done = int(state["counters"]["iteration"])
    if resumed.train.iterations <= done:
        total = resumed.train.get("total_steps")
        if total is not None and any(o.split("=", 1)[0] == "train.total_steps" for o in task_overrides):
            per = int(resumed.train.steps_per_iteration)
            raise ConfigError(
                "train.total_steps",
                total,
                f"the run is already at iteration {done}, and train.total_steps=N trains ceil(N / {per}) "
                f"iterations; pass train.total_steps=N with N > {done * per} to train on",
            )
        raise ConfigError(
            "train.iterations",
            resumed.train.iterations,
            f"the run is already at iteration {done}; pass train.iterations=N with N > {done} to train on",
        )
    return resumed, path, state
