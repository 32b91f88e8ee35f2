"""``locomo variance``: each estimator's policy-gradient variance over independent batches collected
from one policy (table, JSON, PNG): the lecture's variance claims, measured."""

from __future__ import annotations

from omegaconf import DictConfig

from locomo.config import validate_config

CONFIG = "variance"
OUTPUT_ROOTS = ("outputs", "multirun")  # its run dirs, when hydra.run.dir / hydra.sweep.dir are not given


def run(cfg: DictConfig) -> None:
    """Measure each estimator's gradient variance over independent batches from one policy."""
    validate_config(cfg)
    from locomo import analysis
    from locomo.preflight import check_resources
    from locomo.rundir import hydra_run_dir

    check_resources(cfg)
    out = hydra_run_dir()
    table = analysis.measure_gradient_variance(cfg)
    analysis.write_json(table, out / "gradient_variance.json")
    batch = cfg.train.steps_per_iteration
    title = f"{cfg.env.name}: policy-gradient variance over {cfg.batches} batches of {batch} steps"
    analysis.plot_variance(table, title, out / "gradient_variance.png")
    print(f"{'estimator':<24}{'variance':>14}{'|mean grad|':>14}{'rel. variance':>15}")
    for name, row in table.items():
        print(f"{name:<24}{row['variance']:>14.4g}{row['mean_norm']:>14.4g}{row['relative_variance']:>15.4g}")
    print(f"locomo: wrote {out / 'gradient_variance.json'} and {out / 'gradient_variance.png'}")
