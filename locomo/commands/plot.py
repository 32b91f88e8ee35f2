"""``locomo plot``: a metric of several runs against env steps (mean over seeds, min-max band), or the
behaviour-label mix of runs as a stacked area (``kind=behavior``)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from locomo.config import ConfigError, PlotConfig, refuse_unknown_keys, validate_plot

CONFIG = "plot"


def run(cfg: DictConfig) -> None:
    """Plot a metric of several runs against env steps (mean over seeds, min-max band)."""
    from locomo import analysis

    if OmegaConf.is_missing(cfg, "runs"):
        raise ConfigError(
            "runs", None, "give the folder holding the runs, e.g. locomo plot runs=multirun/<date_time>"
        )
    refuse_unknown_keys(cfg, PlotConfig)
    runs = Path(cfg.runs).expanduser()
    if not runs.is_dir():
        raise ConfigError("runs", cfg.runs, "must be a folder holding runs")
    validate_plot(cfg)
    if cfg.kind == "behavior":
        out = Path(cfg.out) if cfg.out else runs / "behavior.png"
        last = analysis.plot_behavior(analysis.metrics_files(runs), cfg.window, out)
        mix = ", ".join(f"{label} {share:.0%}" for label, share in last.items() if share > 0)
        print(f"last window: {mix or 'no finished episodes'}")
        print(f"locomo: wrote {out}")
        return
    out = Path(cfg.out) if cfg.out else runs / "curves.png"
    counts = analysis.plot_curves(runs, cfg.metric, list(cfg.group_by) if cfg.group_by else None, out)
    for label, n in counts.items():
        print(f"{label}: {n} run(s)")
    print(f"locomo: wrote {out}")
