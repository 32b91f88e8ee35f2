"""``locomo variance``: each estimator's policy-gradient variance over independent batches collected
from one policy (table, JSON, PNG): the lecture's variance claims, measured."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from locomo import messages
from locomo.config.preflight import check_resources
from locomo.config.validation import validate_config
from locomo.errors import ConfigError
from locomo.launch import Launch
from locomo.runs.hydra_job import hydra_run_dir, removed_if_refused, run_dir_launch, write_job_record
from locomo.runs.outputs import atomic_output, is_run_dir, safe_output

CONFIG = "variance"
OUTPUT_ROOTS = ("outputs", "multirun")  # its run dirs, when hydra.run.dir / hydra.sweep.dir are not given
# Its lines reach variance.log, and Hydra's record its run dir, only once the measurement is done
# (locomo.messages.release): a refused or interrupted start leaves nothing behind.
CLAIMS_RUN_DIR = True
OUTPUTS = ("gradient_variance.json", "gradient_variance.png")


def prepare(args: list[str]) -> Launch:
    """Refuse, before Hydra creates anything, a ``hydra.run.dir`` that holds a training run
    (whatever ``overwrite`` says: it is another command's run), or an earlier measurement unless
    ``overwrite=true``; and leave Hydra's ``.hydra/`` record to the job
    (:func:`locomo.runs.hydra_job.run_dir_launch`), so that a start refused later leaves nothing."""
    launch = run_dir_launch(args, OUTPUT_ROOTS)
    value = launch.given("hydra.run.dir")
    if value is None or "${" in value:  # the default: a new timestamped directory
        return launch
    if not value.strip():
        raise ConfigError("hydra.run.dir", value, "it is empty; give a directory (or leave it out)")
    run_dir = Path(value).expanduser()
    if is_run_dir(run_dir):
        raise ConfigError(
            "hydra.run.dir",
            value,
            "it holds a training run, which locomo variance never writes into (not even with "
            "overwrite=true); give a directory of its own",
        )
    overwrite = (launch.given("overwrite") or "false").lower() in ("true", "1", "yes")
    earlier = [name for name in OUTPUTS if (run_dir / name).exists()]
    if earlier and not overwrite:
        raise ConfigError(
            "hydra.run.dir",
            value,
            f"it holds an earlier measurement ({', '.join(earlier)}); give another directory, or add "
            "overwrite=true to replace it",
        )
    return launch


def run(cfg: DictConfig, launch: Launch) -> None:
    """Measure each estimator's gradient variance over independent batches from one policy.

    A start refused (a bad value or checkpoint) or interrupted before the measurement is done
    leaves nothing behind: not even the run dir Hydra made for it.
    """
    with removed_if_refused(launch.created_below):
        _run(cfg, launch)


def _run(cfg: DictConfig, launch: Launch) -> None:
    """:func:`run` without the clean-up of a refused start."""
    validate_config(cfg)
    # Here, not at the top: torch and matplotlib load only once the command runs.
    from locomo.evaluation import plots, variance

    variance.validate_variance(cfg)  # before the env is built (check_resources) and any batch
    check_resources(cfg)
    out = hydra_run_dir()
    json_path = safe_output(out / OUTPUTS[0], "json", "hydra.run.dir", cfg.overwrite)
    png_path = safe_output(out / OUTPUTS[1], "figure", "hydra.run.dir", cfg.overwrite)
    record = OmegaConf.to_yaml(cfg)  # the config as composed, for Hydra's record of the job
    table = variance.measure_gradient_variance(cfg)  # the checkpoint (checkpoint=) is checked in here
    # Measured: the run dir is this job's now (its record, and its lines so far into variance.log).
    write_job_record(OmegaConf.create(record), launch.record_subdir)
    messages.release()
    with atomic_output(json_path) as tmp:
        variance.write_json(table, tmp)
    batch = cfg.train.steps_per_iteration
    title = f"{cfg.env.name}: policy-gradient variance over {cfg.batches} batches of {batch} steps"
    with atomic_output(png_path) as tmp:
        plots.plot_variance(table, title, tmp)
    print(f"{'estimator':<24}{'variance':>14}{'|mean grad|':>14}{'rel. variance':>15}")
    for name, row in table.items():
        print(f"{name:<24}{row['variance']:>14.4g}{row['mean_norm']:>14.4g}{row['relative_variance']:>15.4g}")
    print(f"locomo: wrote {json_path} and {png_path}")
