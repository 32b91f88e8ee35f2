"""``locomo plot``: a metric of several runs against env steps (mean over seeds, min-max band), or the
behaviour-label mix of runs as a stacked area (``kind=behavior``)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from locomo.config.rules import refuse_unknown_keys
from locomo.config.schema import PlotConfig
from locomo.config.validation import validate_plot
from locomo.errors import ConfigError
from locomo.runs.outputs import atomic_output, safe_output

CONFIG = "plot"


@contextmanager
def figure_file(out: Path) -> Iterator[Path]:
    """:func:`locomo.runs.outputs.atomic_output` for a figure; errors name ``out``, not the temporary file."""
    try:
        with atomic_output(out) as tmp:
            yield tmp
    except ConfigError as exc:
        if exc.key != "out":  # e.g. an unknown metric
            raise
        raise ConfigError("out", str(out), exc.allowed) from exc
    except OSError as exc:
        raise ConfigError("out", str(out), f"cannot write the figure ({exc.strerror or exc})") from exc


def run(cfg: DictConfig) -> None:
    """Plot a metric of several runs against env steps (mean over seeds, min-max band)."""
    from locomo.evaluation import plots  # here, not at the top: matplotlib loads only once the command runs

    if OmegaConf.is_missing(cfg, "runs"):
        raise ConfigError(
            "runs", None, "give the folder holding the runs, e.g. locomo plot runs=multirun/<date_time>"
        )
    refuse_unknown_keys(cfg, PlotConfig)
    runs = Path(cfg.runs).expanduser()
    if not runs.is_dir():
        raise ConfigError("runs", cfg.runs, "must be a folder holding runs")
    validate_plot(cfg)
    default = runs / ("behavior.png" if cfg.kind == "behavior" else "curves.png")
    out = safe_output(default if cfg.out is None else cfg.out, "figure", "out", cfg.overwrite)
    skipped = plots.Skipped()  # rows and runs left out: said, never silently dropped
    files = plots.metrics_files(runs)
    if cfg.kind == "behavior":
        with figure_file(out) as tmp:
            last = plots.plot_behavior(files, cfg.window, tmp, skipped)
        say_skipped(skipped, len(files))
        mix = ", ".join(f"{label} {share:.0%}" for label, share in last.items() if share > 0)
        print(f"last window: {mix or 'no finished episodes'}")
        print(f"locomo: wrote {out}")
        return
    with figure_file(out) as tmp:
        keys = list(cfg.group_by) if cfg.group_by else None
        counts = plots.plot_curves(runs, cfg.metric, keys, tmp, skipped)
    say_skipped(skipped, len(files))
    for label, n in counts.items():
        print(f"{label}: {n} run(s)")
    print(f"locomo: wrote {out}")


def say_skipped(skipped: Any, files: int) -> None:
    """One warning line when rows or runs of the metrics files were left out of the figure."""
    line = skipped.describe(files)
    if line is not None:
        print(f"locomo: warning: {line}", file=sys.stderr)
