"""``locomo train``: the main job. Composes the config (or, with ``resume=``, takes the checkpoint's),
claims the run dir, and hands the loop to :class:`locomo.training.runner.Runner`."""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from locomo.config.rules import resolve_total_steps
from locomo.config.validation import validate_config
from locomo.errors import ConfigError
from locomo.launch import Launch, Resume
from locomo.paths import pin_xml_file
from locomo.runs.hydra_job import created_below, record_subdir, removed_if_refused, sweep_subdir

if TYPE_CHECKING:  # the CLI imports this module before it knows torch is needed
    from locomo.distributed import Group
    from locomo.training.runner import Runner

CONFIG = "train"
# Its lines go to the run's train.log only once it owns the run dir (locomo.messages.release).
CLAIMS_RUN_DIR = True
OUTPUT_ROOTS = ("outputs", "multirun")  # its run dirs, when hydra.run.dir / hydra.sweep.dir are not given


def _empty_resume(launch: Launch) -> None:
    """``resume=''`` would name the working directory: refuse it (one line) instead."""
    for _, override in launch.overrides:
        if override is None or override.key_or_group != "resume" or override.value() is None:
            continue
        if not str(override.value()).strip().strip("'\"").strip():
            raise ConfigError(
                "resume", "", "it is empty, not a run; give the run directory or checkpoint to continue"
            )


def with_resume(launch: Launch) -> Launch:
    """``launch`` with its ``resume=``'s checkpoint chosen, read and checked
    (:func:`locomo.training.resume.resolve_resume`); unchanged when there is none."""
    from locomo.training.resume import resolve_resume

    _empty_resume(launch)
    resume = resolve_resume(launch)
    return launch if resume is None else replace(launch, resume=resume)


def prepare(args: list[str]) -> Launch:
    """This start's :class:`~locomo.launch.Launch`, before Hydra runs: a resume's checkpoint
    (:func:`with_resume`), Hydra's ``.hydra/`` record left to the job, what a refused start may
    remove, numbered job dirs for a sweep whose names would be too long.

    Under torchrun, the ranks join the job here, and ranks other than 0 wait for the run dir
    rank 0 claims (:func:`follow_rank0`).
    """
    launch = with_resume(Launch(tuple(args)))
    from locomo import distributed

    if distributed.world_size_from_env() > 1:
        if launch.multirun:
            raise ConfigError(
                "-m/--multirun", "torchrun", "a torchrun job trains one run; start a sweep without torchrun"
            )
        group = distributed.init()
        if not group.is_main:
            return follow_rank0(launch, group)
    below = created_below(launch, OUTPUT_ROOTS)  # a refused start (or sweep job) removes what Hydra made
    return replace(
        launch,
        created_below=below,
        sweep_subdir=sweep_subdir(launch),
        hydra_writes_record=False,  # the job writes it once the run dir is its own
        record_subdir=None if launch.resume is not None and launch.resume.in_place else record_subdir(launch),
    )


def follow_rank0(launch: Launch, group: Group) -> Launch:
    """A rank other than 0: the run dir is the one rank 0 claimed (Hydra's timestamped default
    would differ between processes); it writes nothing there, not even Hydra's log, and never
    removes it."""
    from locomo.errors import DistributedError

    status, value = group.broadcast(None)
    if status != "ok":
        raise DistributedError(f"rank {group.rank}: rank 0 did not start the run ({value})")
    return replace(launch, run_dir=value, hydra_writes_record=False, follower=True)


@dataclass
class Job:
    """Where a training job runs and what it records: from Hydra's app (:func:`hydra_job`, the CLI)
    or from the caller (``locomo.train``, which composes the config without a Hydra app, so that
    Hydra's ``HydraConfig`` is not set)."""

    run_dir: Path
    overrides: list[str]  # the task overrides as given (a resume checks them against the checkpoint)
    hydra_cfg: Any  # Hydra's config, for the ``.hydra/`` record
    record_subdir: str | None  # where in the run dir the ``.hydra/`` record goes (None: nowhere)
    sweep_dir: str | None  # a sweep's folder (its runs share a W&B group named after it), else None
    resume: Resume | None = None  # the checkpoint a resume continues, as read before the job


def hydra_job(launch: Launch) -> Job:
    """The :class:`Job` of the Hydra app this process runs in (``locomo train``), started as ``launch``."""
    from locomo.runs.hydra_job import hydra_run_dir

    hydra_cfg = HydraConfig.get()
    return Job(
        run_dir=hydra_run_dir(),
        overrides=list(hydra_cfg.overrides.task),
        hydra_cfg=hydra_cfg,
        record_subdir=launch.record_subdir,
        sweep_dir=str(hydra_cfg.sweep.dir) if hydra_cfg.mode == RunMode.MULTIRUN else None,
        resume=launch.resume,
    )


def run(cfg: DictConfig, launch: Launch) -> float:
    """Train a policy; returns the final mean episodic return (for Hydra sweepers).

    With ``resume=`` the config is the checkpoint's (see :mod:`locomo.training.resume`) and the run
    continues in the checkpoint's run dir. A new run refuses a run dir that holds another run
    (:func:`locomo.runs.rundir.claim_run_dir`).
    """
    with removed_if_refused(launch.created_below):  # a refused (or interrupted) start leaves nothing behind
        return _run(cfg, launch)


def _run(cfg: DictConfig, launch: Launch) -> float:
    """:func:`run` without the clean-up of a refused start."""
    from locomo import distributed

    group = distributed.current()
    job = hydra_job(launch)
    if not group.active:
        return train(cfg, group, job)
    announced: list[bool] = []
    try:
        ret = train(cfg, group, job, announced)
    except BaseException as exc:
        if group.is_main and not announced:  # the others wait to hear where the run is
            # If they are gone already, rank 0's own error is the one to show.
            with contextlib.suppress(Exception):
                group.broadcast(("error", str(exc) or type(exc).__name__))
        raise
    distributed.shutdown()
    return ret


def train(cfg: DictConfig, group: Group, job: Job, announced: list[bool] | None = None) -> float:
    """:func:`run` in this process; in a multi-process job, rank 0 claims the run dir and tells
    the other ranks (appending to ``announced`` once it has), which only train.

    ``job``: where it runs (the Hydra app's, :func:`hydra_job`, or the caller's).
    """
    job_cfg = cfg
    resume_state, resume_path = None, None
    if cfg.resume is not None:
        from locomo.training.resume import resumed_config

        cfg, resume_path, resume_state = resumed_config(cfg, job.overrides, job.resume)
    else:
        cfg.env.xml_sha256 = None  # a new run's model is pinned below, from the file found now
    resolve_total_steps(cfg, job.overrides)  # train.total_steps -> train.iterations, before any check
    validate_config(cfg)
    if resume_state is None:
        pin_xml_file(cfg.env)  # stored with the run: later loads use this file, and only as it is now
    from locomo.distributed import check_config

    check_config(cfg, group)
    if cfg.logger.wandb.group is None and job.sweep_dir is not None:
        # One W&B group per sweep, named after its folder, so a sweep's runs are compared together.
        cfg.logger.wandb.group = Path(job.sweep_dir).name
    from locomo.config.preflight import check_resources  # heavy imports only after the config is known good
    from locomo.runs.hydra_job import write_hydra_record, write_run_file
    from locomo.runs.rundir import RunDirLock, claim_run_dir, describe_removal, remove_run_files

    check_resources(cfg)
    init_state = start_state(cfg) if resume_state is None else None  # read before any write
    out = job.run_dir
    if not group.is_main:  # rank 0 holds the run dir and writes everything in it
        make_runner(cfg, out, resume_state, resume_path, group, init_state).run()
        return float("nan")
    with RunDirLock(out):  # one process per run dir: a second start or resume is refused, untouched
        if resume_state is None:
            plan = claim_run_dir(out, cfg.logger.metrics_file, bool(cfg.overwrite))
            if plan:  # said before anything goes
                print(
                    f"locomo: warning: overwrite=true: removing the previous run's files in {out}: "
                    f"{describe_removal(out, plan)}; anything else in it is kept",
                    file=sys.stderr,
                )
                remove_run_files(out, plan)
        else:
            warn_missing_metrics(out / cfg.logger.metrics_file, resume_state)
        from locomo import messages

        messages.release()  # the run dir is this job's: its lines so far, and the later ones, to train.log
        if job.record_subdir:
            write_hydra_record(out, job.record_subdir, job_cfg, job.hydra_cfg, job.overrides)
        if group.active and announced is not None:
            group.broadcast(("ok", str(out)))
            announced.append(True)
        runner = make_runner(cfg, out, resume_state, resume_path, group, init_state)
        write_run_file(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True), "the run's resolved config")
        if resume_state is not None:
            print(
                f"locomo: resuming {out} at iteration {runner.iteration} ({runner.env_steps} env steps) "
                f"from {resume_path}"
            )
        metrics = runner.run()
    ret = metrics.get("rollout/return_mean", float("nan"))
    summary = f"mean return {ret:.2f}" if ret == ret else "no episode finished yet (mean return undefined)"
    print(f"locomo: trained {cfg.train.iterations} iterations; {summary}; run dir {out}")
    return ret


def start_state(cfg: DictConfig) -> dict[str, Any] | None:
    """The checkpoint ``train.init_from`` names (a run dir, a checkpoint file, or a shipped name such
    as ``walker``), loaded and checked against the nets ``cfg`` builds; None without one.
    CheckpointError (one line naming the key) when it cannot be read or does not fit."""
    init_from = cfg.train.init_from
    if init_from is None:
        return None
    from locomo.errors import CheckpointError
    from locomo.evaluation.episodes import resolve_checkpoint_path
    from locomo.runs.checkpoint import load
    from locomo.training.state import check_start

    try:
        state = load(resolve_checkpoint_path(init_from))
    except CheckpointError as exc:
        raise CheckpointError(f"train.init_from={init_from}: {exc}") from exc
    check_start(state, cfg)
    return state


def make_runner(
    cfg: DictConfig,
    out: Path,
    resume_state: dict[str, Any] | None,
    resume_path: Path | None,
    group: Group,
    init_state: dict[str, Any] | None = None,
) -> Runner:
    """The training loop, its state restored from ``resume_state`` when resuming.

    A checkpoint whose parts do not fit the networks its config builds is refused by the runner
    (CheckpointError) in torch's words, which name no file and may span lines: said in one line
    naming the checkpoint, with what to do.
    """
    from locomo.errors import CheckpointError
    from locomo.training.runner import Runner

    try:
        return Runner(cfg, out, resume_state, resume_path, group, init_state)
    except CheckpointError as exc:
        if resume_path is None or str(resume_path) in str(exc):
            raise
        detail = " ".join(str(exc).split())
        raise CheckpointError(
            f"checkpoint {resume_path}: {detail}; use another checkpoint of the run (checkpoints/iter_*.pt), "
            "or start a new run"
        ) from exc


def warn_missing_metrics(metrics: Path, state: dict[str, Any]) -> None:
    """On resume: a warning when the metrics file is gone or empty, so that the iterations before
    the checkpoint have no rows (the curves start at the resumed iteration)."""
    from locomo.runs.metrics_file import read_metrics

    iteration = int(state.get("counters", {}).get("iteration", 0))
    if iteration < 1 or (metrics.is_file() and read_metrics(metrics)):
        return
    which = "iteration 1" if iteration == 1 else f"iterations 1-{iteration}"
    print(
        f"locomo: warning: {metrics} is missing or empty: {which} (before the checkpoint) will have "
        "no metrics row; this run's curves start after them",
        file=sys.stderr,
    )
