"""``locomo train``: the main job. Composes the config (or, with ``resume=``, takes the checkpoint's),
claims the run dir, and hands the loop to :class:`locomo.runner.Runner`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from locomo.config import validate_config

CONFIG = "train"
OUTPUT_ROOTS = ("outputs", "multirun")  # its run dirs, when hydra.run.dir / hydra.sweep.dir are not given

# Set by prepare_argv(): where each job writes Hydra's ``.hydra/`` record itself (unset: Hydra does,
# or nobody, as on a resume that keeps the run's original record). An environment variable, not a
# module global, so that the jobs of a sweep that a launcher runs in other processes (joblib,
# submitit) see it too.
HYDRA_RECORD_ENV = "LOCOMO_HYDRA_RECORD"


def prepare_argv(args: list[str]) -> list[str]:
    """The command line as Hydra should see it: a resume's overrides checked and completed
    (:func:`locomo.resume.prepare_resume_argv`), and Hydra's ``.hydra/`` record left to the job."""
    from locomo.resume import prepare_resume_argv

    args, subdir = hydra_record_args(prepare_resume_argv(args))
    if subdir is None:
        os.environ.pop(HYDRA_RECORD_ENV, None)
    else:
        os.environ[HYDRA_RECORD_ENV] = subdir
    return args


def hydra_record_args(args: list[str]) -> tuple[list[str], str | None]:
    """``train`` arguments with Hydra's ``.hydra/`` record switched off, and where the job writes it.

    Hydra writes the record before the job starts, so a start that the job then refuses (the
    run dir is in use, or holds another run) would rewrite the record of the run in progress.
    The job writes it itself once the run dir is its own. A resume keeps the run's record
    (``hydra.output_subdir=null`` already); an explicit ``hydra.output_subdir=<dir>`` is honoured.
    """
    values = [a.split("=", 1)[1].strip("'\"") for a in args if a.startswith("hydra.output_subdir=")]
    if values and values[-1].lower() in ("null", "none", "~"):
        return args, None
    subdir = values[-1] if values else ".hydra"
    kept = [a for a in args if not a.startswith("hydra.output_subdir=")]
    # Next to the other overrides: argparse refuses overrides on both sides of a flag (--cfg job).
    at = next((i for i, a in enumerate(kept) if "=" in a and not a.startswith("-")), len(kept))
    return [*kept[:at], "hydra.output_subdir=null", *kept[at:]], subdir


def run(cfg: DictConfig) -> float:
    """Train a policy; returns the final mean episodic return (for Hydra sweepers).

    With ``resume=`` the config is the checkpoint's (see :mod:`locomo.resume`) and the run
    continues in the checkpoint's run dir. A new run refuses a run dir that holds another run
    (:func:`locomo.rundir.claim_run_dir`).
    """
    job_cfg = cfg
    resume_state, resume_path = None, None
    if cfg.resume is not None:
        from locomo.resume import resumed_config

        cfg, resume_path, resume_state = resumed_config(cfg, list(HydraConfig.get().overrides.task))
    validate_config(cfg)
    if cfg.logger.wandb.group is None and HydraConfig.get().mode == RunMode.MULTIRUN:
        # One W&B group per sweep, named after its folder, so a sweep's runs are compared together.
        cfg.logger.wandb.group = Path(HydraConfig.get().sweep.dir).name
    from locomo.checkpoint import RunDirLock  # heavy imports only after the config is known good
    from locomo.preflight import check_resources
    from locomo.rundir import claim_run_dir, hydra_run_dir, write_hydra_record

    check_resources(cfg)
    out = hydra_run_dir()
    with RunDirLock(out):  # one process per run dir: a second start or resume is refused, untouched
        if resume_state is None:
            removed = claim_run_dir(out, cfg.logger.metrics_file, bool(cfg.overwrite))
            if removed:
                names = ", ".join(removed)
                print(
                    f"locomo: warning: overwrite=true: removed the previous run's {names} in {out}",
                    file=sys.stderr,
                )
        subdir = os.environ.get(HYDRA_RECORD_ENV)
        if subdir:
            hydra_cfg = HydraConfig.get()
            write_hydra_record(out, subdir, job_cfg, hydra_cfg, list(hydra_cfg.overrides.task))
        from locomo.runner import Runner

        runner = Runner(cfg, out, resume=resume_state, resume_path=resume_path)
        OmegaConf.save(cfg, out / "config.yaml", resolve=True)
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
