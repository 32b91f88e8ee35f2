"""``locomo train resume=<run dir | checkpoint>``: continue a run exactly where it stopped.

Two steps, because Hydra fixes the run directory before the job starts:

1. :func:`prepare_resume_argv` (in ``locomo.cli.main``, before Hydra): finds the newest
   complete checkpoint, refuses overrides a resumed run cannot honour, and points Hydra's run
   dir at the checkpoint's run dir (``hydra.run.dir=<run dir>``, ``hydra.output_subdir=null``
   so the run's original ``.hydra/`` record stays as it was). A checkpoint file that is not in
   a run's ``checkpoints/`` directory continues in a new run dir.
2. :func:`resumed_config` (inside the Hydra job): the config is the checkpoint's, with only
   the overrides in :data:`RESUME_OVERRIDABLE` applied.

The checkpoint is read once: step 1 keeps what it loaded for step 2 (same process), which reads
the file again only when it was not the one step 1 chose (e.g. a job started some other way).
"""

from __future__ import annotations

import datetime
import sys
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from locomo.config_rules import resolve_total_steps
from locomo.errors import CheckpointError, ConfigError

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

# The checkpoint prepare_resume_argv chose, and its contents, for resumed_config in the same process.
_PREPARED: dict[Path, dict[str, Any]] = {}


def _is_override(arg: str) -> bool:
    """Command-line arguments that are Hydra overrides (not flags such as ``--cfg job``)."""
    return not arg.startswith("-") and ("=" in arg or arg.startswith("~"))


def _quote(value: str) -> str:
    """A Hydra override value in single quotes (for paths with spaces or special characters)."""
    return "'" + value.replace("'", "\\'") + "'"


def run_dir_of(checkpoint: Path) -> Path | None:
    """The run dir a checkpoint belongs to (``<run>/checkpoints/<file>``), else None."""
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else None


def prepare_resume_argv(args: list[str]) -> list[str]:
    """``locomo train`` arguments with ``resume=`` resolved; unchanged when there is none.

    Raises ConfigError for an override a resume cannot honour and CheckpointError when there
    is no usable checkpoint, before Hydra creates or touches any directory.
    """
    parser = OverridesParser.create()
    parsed = []
    for arg in args:
        if _is_override(arg):
            try:
                parsed.append((arg, parser.parse_override(arg)))
            except HydraException:
                return args  # a syntax error: Hydra reports it
    resume_args = [(arg, o) for arg, o in parsed if o.key_or_group == "resume"]
    if not resume_args or resume_args[-1][1].value() is None:
        return args
    value = str(resume_args[-1][1].value())
    if "-m" in args or "--multirun" in args:
        raise ConfigError("resume", value, "cannot be combined with -m/--multirun: resume one run at a time")
    allowed = ", ".join(RESUME_OVERRIDABLE)
    for arg, o in parsed:
        key = o.key_or_group
        if key == "resume" or key in RESUME_OVERRIDABLE:
            continue
        if key.startswith("hydra.") and key not in _HYDRA_KEYS_SET_BY_RESUME:
            continue
        raise ConfigError(
            key,
            arg.split("=", 1)[1] if "=" in arg else arg,
            f"cannot be changed when resuming: the config comes from the checkpoint (a resume may "
            f"set only {allowed}); to train with other settings, start a new run",
        )

    from locomo.checkpoint import describe_fallback, load_file, load_latest, missing_reason, periodic_files
    from locomo.checkpoint_format import periodic_iteration, require_resumable, validate

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
    from locomo.training_state import check_world_size

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
    _PREPARED.clear()
    _PREPARED[path.resolve()] = state
    kept = [arg for arg in args if all(arg is not r for r, _ in resume_args)]
    out = [*kept, f"resume={_quote(str(path.resolve()))}"]
    if run_dir is not None:
        out += [f"hydra.run.dir={_quote(str(run_dir))}", "hydra.output_subdir=null"]
    else:
        env_name = state.get("config", {}).get("env", {}).get("name", "resumed")
        stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
        out.append(f"hydra.run.dir={_quote(str(Path('outputs') / str(env_name) / stamp))}")
    return out


def resumed_config(cfg: DictConfig, task_overrides: list[str]) -> tuple[DictConfig, Path, dict[str, Any]]:
    """The checkpoint's config plus the allowed overrides; also the checkpoint path and contents.

    ``cfg.resume`` is the checkpoint file that :func:`prepare_resume_argv` resolved;
    ``task_overrides`` are the command line's overrides (Hydra's ``overrides.task``).
    """
    from locomo.checkpoint import load_latest
    from locomo.checkpoint_format import require_resumable, stored_config

    prepared = _PREPARED.pop(Path(cfg.resume).expanduser().resolve(), None)
    if prepared is not None:
        path, state = Path(cfg.resume), prepared
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
