"""Hydra's composition of a command line, checked before Hydra's app runs: a typo is one line.

:func:`check_composition` composes the command's config with the overrides by Hydra's compose
API, as its app would (with ``-m``, each job of the sweep from :func:`~locomo.config.overrides.sweep_jobs`),
checks each job's values as the job would first, and raises Hydra's error as one
:class:`~locomo.errors.ConfigError` (:func:`~locomo.config.composition_errors.composition_error`). The
CLI (:func:`locomo.cli.main`) runs :func:`~locomo.config.overrides.check_overrides` and this, then exits
2 with that line.

Imports neither torch nor MuJoCo.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable

from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from locomo.config.compose import compose_config
from locomo.config.composition_errors import composition_error
from locomo.config.overrides import sweep_jobs
from locomo.config.rules import resolve_total_steps
from locomo.config.validation import validate_bench, validate_config
from locomo.errors import ConfigError, interrupt_behind
from locomo.launch import split_command_line

# Flags after which Hydra composes no config to run (help, info, shell completion), or composes
# another config than the command's (which the pre-compose cannot know): no pre-compose then.
_NO_PRECOMPOSE = (
    "-h",
    "--help",
    "--hydra-help",
    "-i",
    "--info",
    "-sc",
    "--shell-completion",
    "-cp",
    "--config-path",
    "-cn",
    "--config-name",
    "-cd",
    "--config-dir",
    "--experimental-rerun",
)


def _base_config(config_name: str, overrides: list[str], without: str | None) -> DictConfig | None:
    """The config (with Hydra's) without the override that failed, to read keys and types from."""
    for attempt in ([o for o in overrides if o != without], []):
        try:
            return compose_config(config_name, attempt, with_hydra=True)
        except (HydraException, OmegaConfBaseException):
            continue
    return None


def _compose_or_refuse(command: str, config_name: str, overrides: list[str]) -> DictConfig:
    """The composed config, or the one-line :class:`ConfigError` of why it cannot be composed."""
    try:
        return compose_config(config_name, overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        interrupt = interrupt_behind(exc)
        if interrupt is not None:  # Ctrl-C inside the composition, wrapped as its failure
            raise interrupt from None
        raise composition_error(
            exc, command, overrides, lambda without: _base_config(config_name, overrides, without)
        ) from exc


def _check_train_job(cfg: DictConfig, overrides: list[str]) -> None:
    """What ``locomo train``'s job checks before anything else (:func:`locomo.commands.train.train`)."""
    if cfg.get("resume") is not None:  # the checkpoint's config: the resume checks it
        return
    cfg.env.xml_sha256 = None
    resolve_total_steps(cfg, overrides)
    validate_config(cfg)


# What each command's job checks first, on the composed config (run() of its module), for the
# jobs of a sweep: a sweep stops at its first refused job, so one is refused before any starts.
_JOB_CHECKS: dict[str, Callable[[DictConfig, list[str]], None]] = {
    "train": _check_train_job,
    "variance": lambda cfg, overrides: validate_config(cfg),
    "bench": lambda cfg, overrides: validate_bench(cfg),
}


def _refused_job(exc: ConfigError, number: int, total: int, job: list[str]) -> ConfigError:
    """``exc`` of one job of a sweep, saying which and that none was started."""
    shown = " ".join(job)
    return ConfigError(
        exc.key, exc.value, f"{exc.allowed} (sweep job #{number} of {total}: {shown}; no job was started)"
    )


def check_composition(command: str, config_name: str, args: list[str]) -> None:
    """Compose the command's config with the command line's overrides once, before Hydra's app
    runs, so that an unknown key or group option, or a value of the wrong type, is one line and
    exit 2 (:class:`ConfigError`) instead of Hydra's message over several lines and exit 1.

    With ``-m``, each job of the sweep (or, for a large one, a set of jobs that holds every
    swept value) is composed, and checked as its job would check it first: a sweep stops at its
    first refused job, so it is refused before any job starts and leaves nothing behind.
    Overrides Hydra handles itself pass unchanged: ``hydra.*``, ``+key``, ``++key``, ``~key``.
    """
    flags, overrides = split_command_line(args)
    if not overrides or any(flag.split("=", 1)[0] in _NO_PRECOMPOSE for flag in flags):
        return  # nothing to check (the defaults compose), or nothing that runs the command's config
    multirun = (
        "-m" in flags
        or "--multirun" in flags
        or any(o.replace(" ", "").upper() == "HYDRA.MODE=MULTIRUN" for o in overrides)
    )
    if not multirun:
        _compose_or_refuse(command, config_name, overrides)
        return
    sweep = sweep_jobs(overrides)
    if sweep is None:
        return
    hydra_args, jobs, total = sweep
    check = _JOB_CHECKS.get(command)
    for number, job in jobs:
        try:
            cfg = _compose_or_refuse(command, config_name, [*hydra_args, *job])
            if check is not None:
                try:  # its warnings are the job's to print, once
                    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                        check(cfg, job)
                except ConfigError:
                    raise
                except Exception:  # not a bad value: the job reports it as it does now
                    pass
        except ConfigError as exc:
            raise (exc if total == 1 else _refused_job(exc, number, total, job)) from exc
