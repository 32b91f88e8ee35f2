"""Figures: return curves of several runs, the behaviour mix of runs, the estimators' variance.

``locomo plot``: a metric of several runs (a Hydra multirun folder) against env steps, grouped by
the overrides that differ between them, mean over seeds with a min-max band
(:func:`plot_curves`); or the behaviour-label mix of their finished episodes as a stacked area
(:func:`plot_behavior`, also drawn for W&B during training). ``locomo variance``'s bar chart is
:func:`plot_variance`. Rows that cannot be plotted are counted in :class:`Skipped` and said.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import yaml

from locomo.errors import ConfigError
from locomo.evaluation.behavior import LABELS
from locomo.runs.metrics_file import read_metrics

matplotlib.use("Agg")  # figures go to files: no display needed, none used
import matplotlib.pyplot as plt


def plot_variance(table: dict[str, dict[str, float]], title: str, path: Path) -> None:
    """Bar chart of relative gradient variance per estimator, labelled with the ratio to the first."""
    names = list(table)
    values = [table[n]["relative_variance"] for n in names]
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=100)
    bars = ax.bar(range(len(names)), values, color="#4c72b0")
    ax.bar_label(bars, [f"{v / values[0]:.2f}x" for v in values], fontsize=8)
    ax.set_xticks(range(len(names)), [n.replace("/", "\n") for n in names], fontsize=8)
    ax.set_ylabel("variance / |mean gradient|^2")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def save_figure(fig: Any, path: Path) -> None:
    """Write a matplotlib figure and close it; a path that cannot be written is a ConfigError on ``out``."""
    try:
        fig.savefig(path)
    except OSError as exc:
        raise ConfigError("out", str(path), f"cannot write the figure ({exc.strerror or exc})") from exc
    finally:
        plt.close(fig)


def _overrides(run: Path) -> dict[str, str]:
    """The command-line overrides of a Hydra run (from .hydra/overrides.yaml), key -> value."""
    overrides_file = run / ".hydra" / "overrides.yaml"
    try:
        overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else []
    except (OSError, UnicodeDecodeError, yaml.YAMLError):  # a damaged record: the run is unlabelled
        overrides = []
    if not isinstance(overrides, list):
        overrides = []
    return dict(o.split("=", 1) for o in overrides if isinstance(o, str) and "=" in o)


def run_labels(runs: list[Path], keys: list[str] | None) -> list[str]:
    """A label per run: the given override keys, or else those whose values differ between runs.

    ``seed`` never names a curve: runs that differ only in seed are one curve.
    """
    overrides = [_overrides(run) for run in runs]
    if keys is None:
        all_keys = sorted({k for o in overrides for k in o})
        keys = [k for k in all_keys if len({o.get(k) for o in overrides}) > 1]
    keys = [k for k in keys if k != "seed"]
    return [" ".join(f"{k}={o[k]}" for k in keys if k in o) or "run" for o in overrides]


def finite(value: Any) -> float | None:
    """``value`` as a float if it is a finite number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


@dataclass
class Skipped:
    """What ``locomo plot`` left out of its metrics files, and why (said in one line)."""

    rows: int = 0  # lines read (blank lines aside)
    unreadable: int = 0  # torn, not UTF-8, or not a JSON object
    no_steps: int = 0  # no finite env_steps: no place on the x axis
    bad_values: dict[str, int] = field(default_factory=dict)  # key -> rows where it is NaN, inf or no number
    runs: list[Path] = field(default_factory=list)  # metrics files with nothing plottable

    def read(self, path: Path) -> list[dict[str, Any]]:
        """The rows of ``path`` that have a finite ``env_steps``; the others are counted."""
        unreadable: list[int] = []
        rows = read_metrics(path, unreadable)
        kept = [row for row in rows if finite(row.get("env_steps")) is not None]
        self.rows += len(rows) + len(unreadable)
        self.unreadable += len(unreadable)
        self.no_steps += len(rows) - len(kept)
        return kept

    def value(self, row: dict[str, Any], key: str) -> float | None:
        """``row[key]`` if it is a finite number; None if absent or null (nothing logged: no
        episode had finished); None and counted if it is NaN, Infinity or not a number."""
        raw = row.get(key)
        number = finite(raw)
        if raw is not None and number is None:
            self.bad_values[key] = self.bad_values.get(key, 0) + 1
        return number

    @property
    def bad_rows(self) -> int:
        return self.unreadable + self.no_steps + sum(self.bad_values.values())

    def describe(self, files: int) -> str | None:
        """One line: how many rows and runs were left out and why; None when nothing was."""
        if not self.bad_rows and not self.runs:
            return None
        why = []
        if self.unreadable:
            why.append(f"{self.unreadable} unreadable (torn, not UTF-8 or not a JSON object)")
        if self.no_steps:
            why.append(f"{self.no_steps} without a finite env_steps")
        why += [f"{n} with {key} NaN, Infinity or not a number" for key, n in self.bad_values.items()]
        parts = [f"skipped {self.bad_rows} of {self.rows} metrics row(s): {', '.join(why)}"] if why else []
        if self.runs:
            names = ", ".join(str(f) for f in self.runs[:3]) + (", ..." if len(self.runs) > 3 else "")
            parts.append(f"{len(self.runs)} of {files} run(s) left out, nothing plottable in them ({names})")
        return "; ".join(parts)


def plot_curves(
    runs_dir: Path, metric: str, keys: list[str] | None, path: Path, skipped: Skipped | None = None
) -> dict[str, int]:
    """Plot ``metric`` against env steps for every run under ``runs_dir``, grouped by label.

    Rows without a finite ``env_steps`` and values that are NaN, Infinity or not numbers are left
    out and counted in ``skipped``; a run with no finite value of ``metric`` is left out. Returns
    the number of runs (seeds) per label; ConfigError when nothing is left to plot.
    """
    skipped = Skipped() if skipped is None else skipped
    files = metrics_files(runs_dir)
    groups: dict[str, list[list[dict[str, Any]]]] = defaultdict(list)
    logged: set[str] = set()
    for f, label in zip(files, run_labels([f.parent for f in files], keys), strict=True):
        rows = skipped.read(f)
        logged.update(key for row in rows for key in row)
        # env_steps and the metric as finite floats or None (a gap); bad values are counted
        points = [{"env_steps": float(row["env_steps"]), metric: skipped.value(row, metric)} for row in rows]
        if any(point[metric] is not None for point in points):
            groups[label].append(points)
        else:
            skipped.runs.append(f)
    if metric not in logged:
        shown = ", ".join(sorted(k for k in logged if k != "env_steps"))
        raise ConfigError(
            "metric", metric, f"no run under {runs_dir} logged it; logged metrics: {shown or 'none'}"
        )
    if not groups:
        why = skipped.describe(len(files))
        raise ConfigError("runs", str(runs_dir), f"nothing to plot: {why}; check these metrics files")
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for label, runs in sorted(groups.items()):
        length = min(len(r) for r in runs)
        steps = np.array([row["env_steps"] for row in runs[0][:length]])
        values = np.array(
            [[np.nan if row.get(metric) is None else row[metric] for row in r[:length]] for r in runs]
        )
        with warnings.catch_warnings():  # steps where no run has a value (no episode finished yet)
            warnings.simplefilter("ignore", RuntimeWarning)
            ax.plot(steps, np.nanmean(values, 0), label=f"{label} (n={len(runs)})")
            if len(runs) > 1:
                ax.fill_between(steps, np.nanmin(values, 0), np.nanmax(values, 0), alpha=0.2)
    ax.set_xlabel("env steps")
    ax.set_ylabel(metric)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    return {label: len(runs) for label, runs in groups.items()}


def behavior_mix(rows: list[dict[str, Any]], window: int) -> tuple[list[float], dict[str, list[float]]]:
    """Label fractions of finished episodes over windows of ``window`` consecutive rows.

    Each row's ``behavior/<label>`` fractions are weighted by its ``rollout/episodes`` (rows where
    no labelled episode finished carry no weight), so a window's fractions are those of all the
    episodes that finished in it. Returns the env steps at each window's end and, per label
    (in :data:`locomo.evaluation.behavior.LABELS` order), its fraction in each window (NaN: none finished).
    """
    steps: list[float] = []
    mix: dict[str, list[float]] = {label: [] for label in LABELS}
    for start in range(0, len(rows), window):
        chunk = rows[start : start + window]
        counts = dict.fromkeys(LABELS, 0.0)
        for row in chunk:
            n = row.get("rollout/episodes") or 0.0
            for label in LABELS:
                counts[label] += n * (row.get(f"behavior/{label}") or 0.0)
        total = sum(counts.values())
        steps.append(float(chunk[-1]["env_steps"]))
        for label in LABELS:
            mix[label].append(counts[label] / total if total > 0 else float("nan"))
    return steps, mix


# Falls in warm-to-red colours, standing grey, walking in greens: the lecture's road reads left to right.
BEHAVIOR_COLORS = {
    "collapsed": "#7f7f7f",
    "fell_backward": "#8c2d04",
    "fell_sideways": "#d94801",
    "fell_forward": "#fd8d3c",
    "stood_still": "#bdbdbd",
    "walked_backward": "#c7e9c0",
    "walked_sideways": "#74c476",
    "walked_forward": "#238b45",
}


def metrics_files(runs_dir: Path) -> list[Path]:
    """Every metrics.jsonl under ``runs_dir``; ConfigError (key ``runs``) when there is none."""
    files = sorted(f for f in runs_dir.glob("**/metrics.jsonl") if f.is_file())
    if not files:
        raise ConfigError("runs", str(runs_dir), "no metrics.jsonl below this folder")
    return files


def plot_behavior(
    files: list[Path], window: int, path: Path, skipped: Skipped | None = None
) -> dict[str, float]:
    """Stacked area of the behaviour mix against env steps, the episodes of all runs' ``files`` pooled.

    Rows and values that cannot be plotted are left out and counted in ``skipped`` (as for
    :func:`plot_curves`). Returns the mix of the last window.
    """
    skipped = Skipped() if skipped is None else skipped
    runs = []
    for f in files:
        # Only finite numbers count: NaN or Infinity in one row would make every window NaN.
        rows = [
            {key: skipped.value(row, key) for key in row if key.startswith(("behavior/", "rollout/episodes"))}
            | {"env_steps": float(row["env_steps"])}
            for row in skipped.read(f)
        ]
        if rows:
            runs.append(rows)
        else:
            skipped.runs.append(f)
    if not runs:
        why = skipped.describe(len(files)) or "no rows logged yet"
        raise ConfigError("runs", ", ".join(map(str, files)), f"nothing to plot: {why}")
    length = min(len(r) for r in runs)
    # Pool the runs row by row (same iteration), so a window counts every run's episodes.
    pooled = []
    for i in range(length):
        rows = [r[i] for r in runs]
        episodes = sum(row.get("rollout/episodes") or 0.0 for row in rows)
        merged: dict[str, Any] = {"env_steps": rows[0]["env_steps"], "rollout/episodes": episodes}
        for key in {k for row in rows for k in row if k.startswith("behavior/")}:
            weighted = sum((row.get("rollout/episodes") or 0.0) * (row.get(key) or 0.0) for row in rows)
            merged[key] = weighted / episodes if episodes else 0.0
        pooled.append(merged)
    steps, mix = behavior_mix(pooled, window)
    if all(np.isnan(values).all() for values in mix.values()):
        why = skipped.describe(len(files))
        raise ConfigError(
            "runs", ", ".join(map(str, files)), "no behaviour labels logged" + (f" ({why})" if why else "")
        )
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=100)
    # Bottom to top in the order of BEHAVIOR_COLORS (falls, then standing, then walking).
    order = [*BEHAVIOR_COLORS, *(label for label in mix if label not in BEHAVIOR_COLORS)]
    labels = [label for label in order if np.nansum(np.array(mix[label])) > 0]
    ax.stackplot(
        np.array(steps) / 1e6,
        [np.nan_to_num(np.array(mix[label])) for label in labels],
        labels=labels,
        colors=[BEHAVIOR_COLORS.get(label, "#333333") for label in labels],
    )
    ax.set_xlabel("env steps (millions)")
    ax.set_ylabel("fraction of finished episodes")
    ax.set_ylim(0, 1)
    ax.set_xlim(steps[0] / 1e6, steps[-1] / 1e6)
    handles, names = ax.get_legend_handles_labels()
    ax.legend(handles[::-1], names[::-1], fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set_title(f"what the body did ({len(runs)} run(s), windows of {window} iterations)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    return {label: values[-1] for label, values in mix.items()}
