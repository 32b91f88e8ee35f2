"""The lecture's claims, measured: gradient variance per estimator, and return curves per estimator.

``locomo variance``: collect K independent batches with one fixed policy, compute each
estimator's policy gradient on every batch, and compare the estimators' spread:

    mean   m  = (1/K) sum_k g_k
    var       = 1/(K-1) sum_k |g_k - m|^2        (trace of the covariance)
    rel. var  = var / |m_ref|^2                  (m_ref: the mean over all estimators, all batches)

All estimators here are unbiased estimates of the same gradient (up to the O(1/N) shift of a
baseline estimated on its own batch), so the one with the smaller variance needs fewer samples.

``locomo plot``: return curves of several runs (a Hydra multirun folder), grouped by the
overrides that differ between them, mean over seeds with a min-max band.
"""

from __future__ import annotations

import json
import math
import sys
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from omegaconf import DictConfig, OmegaConf

from locomo import losses
from locomo.algorithm import compute_advantages
from locomo.buffer import RolloutBatch
from locomo.config import ConfigError
from locomo.logging import read_metrics
from locomo.policy import Actor

ESTIMATOR_RETURNS = ("total", "reward_to_go")
ESTIMATOR_BASELINES = ("none", "mean", "optimal")


def parse_estimator(name: str) -> tuple[str, str]:
    """``"reward_to_go/mean"`` -> ("reward_to_go", "mean"); ConfigError for anything else."""
    parts = name.split("/")
    allowed = ", ".join(f"{r}/{b}" for r in ESTIMATOR_RETURNS for b in ESTIMATOR_BASELINES)
    if len(parts) != 2 or parts[0] not in ESTIMATOR_RETURNS or parts[1] not in ESTIMATOR_BASELINES:
        raise ConfigError("estimators", name, f"each must be one of {allowed}")
    return parts[0], parts[1]


def validate_variance(cfg: DictConfig) -> None:
    """``locomo variance``'s own keys, before any env is built: a non-empty list of distinct
    estimators, at least two batches."""
    estimators = list(cfg.estimators)
    if not estimators:
        allowed = ", ".join(f"{r}/{b}" for r in ESTIMATOR_RETURNS for b in ESTIMATOR_BASELINES)
        raise ConfigError("estimators", estimators, f"must be a non-empty list of: {allowed}")
    for name in estimators:
        parse_estimator(name)
    repeated = sorted({name for name in estimators if estimators.count(name) > 1})
    if repeated:  # one gradient per estimator and batch: a repeat would count each batch twice
        raise ConfigError("estimators", estimators, f"lists {', '.join(repeated)} more than once")
    if cfg.batches < 2:
        raise ConfigError("batches", cfg.batches, "must be >= 2 (a variance needs two samples)")


def checkpoint_state(cfg: DictConfig) -> dict[str, Any]:
    """The checkpoint ``locomo variance`` measures at: a file, a run directory, or the name of a
    policy shipped in ``assets/`` (``walker``), as render, eval, replay and export resolve it."""
    from locomo.checkpoint import load
    from locomo.evaluation import shipped_checkpoint

    return load(shipped_checkpoint(cfg.checkpoint) or cfg.checkpoint)


def with_checkpoint_model(cfg: DictConfig, state: dict[str, Any]) -> DictConfig:
    """``cfg`` with the checkpoint's own ``model.*`` (its policy's layers), as every command that
    loads a checkpoint builds it; a note names the settings that differ from the composed ones."""
    from locomo.config import upgrade_saved_config

    stored = upgrade_saved_config(state.get("config") or {}).get("model")
    if not isinstance(stored, dict):
        return cfg
    mine = OmegaConf.to_container(cfg.model)
    assert isinstance(mine, dict)
    changed = {key: value for key, value in stored.items() if key in mine and mine[key] != value}
    if not changed:
        return cfg
    shown = " ".join(f"model.{key}={value}" for key, value in changed.items())
    print(
        f"locomo: checkpoint={cfg.checkpoint}: measuring with its own model settings ({shown})",
        file=sys.stderr,
    )
    out = cfg.copy()
    out.model = OmegaConf.merge(cfg.model, changed)
    return out


def estimator_gradient(
    actor: Actor, batch: RolloutBatch, algo_cfg: Any, returns: str, baseline: str
) -> torch.Tensor:
    """The surrogate's gradient [P] for one estimator on one batch (advantages not normalised)."""
    cfg = OmegaConf.merge(algo_cfg, {"returns": returns, "baseline": baseline, "normalize_advantages": False})
    adv = compute_advantages(batch, cfg, actor)
    obs, actions = batch.obs.flatten(0, 1), batch.actions.flatten(0, 1)
    log_prob = actor.log_prob(obs, actions)
    loss, _ = losses.policy_surrogate_loss(log_prob, adv.advantages, torch.ones_like(log_prob))
    grads = torch.autograd.grad(loss, [p for p in actor.parameters()], allow_unused=True)
    return torch.cat(
        [
            (g if g is not None else torch.zeros_like(p)).flatten()
            for g, p in zip(grads, actor.parameters(), strict=True)
        ]
    )


def variance_table(gradients: dict[str, torch.Tensor]) -> dict[str, dict[str, float]]:
    """Per estimator: variance (trace of covariance), mean-gradient norm, variance relative to |m_ref|^2.

    Args:
        gradients: name -> [K, P] gradient of each of K batches.
    """
    reference = torch.cat(list(gradients.values())).mean(0)
    ref_sq = float(reference.pow(2).sum())
    table = {}
    for name, g in gradients.items():
        mean = g.mean(0)
        var = float((g - mean).pow(2).sum(1).sum() / max(g.shape[0] - 1, 1))
        table[name] = {
            "variance": var,
            "mean_norm": float(mean.norm()),
            "relative_variance": var / ref_sq if ref_sq > 0 else float("nan"),
        }
    return table


def measure_gradient_variance(cfg: DictConfig) -> dict[str, dict[str, float]]:
    """Collect ``cfg.batches`` batches with a fixed policy; return :func:`variance_table`."""
    from locomo.checkpoint import CheckpointError
    from locomo.checkpoint_format import check_spaces
    from locomo.collector import Collector
    from locomo.envs import TorchVecEnv, make_vec_env
    from locomo.runner import make_learners, resolve_device, seed_everything

    validate_variance(cfg)
    estimators = [parse_estimator(name) for name in cfg.estimators]
    state = None if cfg.checkpoint is None else checkpoint_state(cfg)
    if state is not None:
        cfg = with_checkpoint_model(cfg, state)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.train.device)
    env = TorchVecEnv(make_vec_env(cfg.env, cfg.train.num_envs), device)
    try:
        actor, critic, normalizer, scaler = make_learners(cfg, env.spaces, device)
        steps_per_env = cfg.train.steps_per_iteration // cfg.train.num_envs
        collector = Collector(env, actor, critic, normalizer, scaler, steps_per_env, device)
        if state is not None:
            spaces = env.spaces
            check_spaces(state, spaces.obs_dim, spaces.action_dim, spaces.discrete, cfg.env.name)
            try:
                actor.load_state_dict(state["actor"])
                normalizer.load_state_dict(state["obs_normalizer"])
            except (KeyError, RuntimeError) as exc:  # weights that do not fit the model stored with them
                reason = str(exc).strip().splitlines()
                raise CheckpointError(
                    f"checkpoint={cfg.checkpoint}: its policy does not fit its own model settings "
                    f"({reason[1].strip() if len(reason) > 1 else reason[0] if reason else exc!r}); "
                    "the file is damaged or was edited; use another checkpoint"
                ) from exc
        grads: dict[str, list[torch.Tensor]] = defaultdict(list)
        obs_raw = env.reset(cfg.seed)
        from locomo.progress import progress_bar

        with progress_bar(cfg.batches, "variance: batches", "batch") as bar:
            for _ in range(cfg.batches):
                batch, obs_raw, _episodes, _terms = collector.collect(obs_raw)
                batch = RolloutBatch(*(t.clone() for t in batch))  # leave inference mode's tensors behind
                for returns, baseline in estimators:
                    grads[f"{returns}/{baseline}"].append(
                        estimator_gradient(actor, batch, cfg.algo, returns, baseline)
                    )
                bar.update(1)
    finally:
        env.close()
    return variance_table({name: torch.stack(g) for name, g in grads.items()})


def plot_variance(table: dict[str, dict[str, float]], title: str, path: Path) -> None:
    """Bar chart of relative gradient variance per estimator, labelled with the ratio to the first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    import matplotlib.pyplot as plt

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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

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
    (in :data:`locomo.behavior.LABELS` order), its fraction in each window (NaN: none finished).
    """
    from locomo.behavior import LABELS

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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

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


def write_json(data: Any, path: Path) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")
