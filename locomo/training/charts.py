"""Charts made during ``locomo train`` for its W&B run (beside :mod:`locomo.training.videos`).

``charts/behavior``: the run's behaviour mix so far as a stacked area, drawn from the metrics file
as ``locomo plot`` draws it (:func:`locomo.evaluation.plots.plot_behavior`), at every checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from locomo.errors import ConfigError


def chart_behavior(logger: Any, run_dir: Path, iteration: int, env_steps: int, discrete: bool) -> None:
    """Log ``charts/behavior`` (written to ``<run_dir>/behavior.png``) to ``logger``'s W&B run, if it
    has one; ``iteration``: the iterations so far; ``discrete``: the env's actions (no body to label)."""
    if logger.wandb_run is None or discrete:
        return
    # Here, not at the top: wandb and matplotlib load only for a run that logs to W&B.
    import wandb

    from locomo.evaluation.plots import plot_behavior

    path = run_dir / "behavior.png"
    window = max(1, iteration // 50)  # about 50 points, however long the run
    try:
        plot_behavior([logger.path], window, path)
    except ConfigError:  # no labelled episodes (an env without a root body): nothing to draw
        return
    logger.log_media("charts/behavior", wandb.Image(str(path)), env_steps)
