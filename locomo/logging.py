"""Metrics to a local JSON-lines file and to Weights & Biases, through one interface."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any


def wandb_logged_in() -> bool:
    """True when W&B has an API key (env var or netrc) — without contacting the server."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        import netrc

        netrc_path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
        if netrc_path.is_file():
            auth = netrc.netrc(str(netrc_path)).authenticators("api.wandb.ai")
            return auth is not None
    except (OSError, netrc.NetrcParseError):
        return False
    return False


def resolve_wandb_mode(mode: str) -> str:
    """``auto`` becomes ``online`` when logged in, ``offline`` otherwise (never blocks on network)."""
    if mode == "auto":
        return "online" if wandb_logged_in() else "offline"
    return mode


class MetricsLogger:
    """Appends one JSON object per log call to ``metrics.jsonl`` and mirrors it to W&B.

    The step axis is env steps so far; it never goes backwards.
    """

    def __init__(
        self,
        run_dir: Path,
        metrics_file: str,
        wandb_cfg: Any,
        config: dict[str, Any],
        run_id: str | None = None,
    ) -> None:
        self.path = run_dir / metrics_file
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")
        self._last_step = -1
        self.wandb_run: Any = None
        self.wandb_mode = resolve_wandb_mode(wandb_cfg.mode)
        if self.wandb_mode != "disabled":
            self.wandb_run = self._init_wandb(run_dir, wandb_cfg, config, run_id)

    def _init_wandb(self, run_dir: Path, wandb_cfg: Any, config: dict[str, Any], run_id: str | None) -> Any:
        import wandb

        try:
            run = wandb.init(
                project=wandb_cfg.project,
                entity=wandb_cfg.entity,
                group=wandb_cfg.group,
                name=wandb_cfg.name,
                config=config,
                dir=str(run_dir),
                mode=self.wandb_mode,
                id=run_id,
                resume="allow" if run_id else None,
                settings=wandb.Settings(silent=True, console="off"),
            )
        except Exception as exc:  # W&B unreachable or misconfigured: keep training, say so once
            print(f"locomo: W&B disabled for this run ({type(exc).__name__}: {exc})", file=sys.stderr)
            return None
        run.define_metric("env_steps")
        run.define_metric("*", step_metric="env_steps")
        return run

    @property
    def run_id(self) -> str | None:
        return None if self.wandb_run is None else str(self.wandb_run.id)

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Record metrics at env step ``step`` (must not decrease)."""
        if step < self._last_step:
            raise ValueError(f"step went backwards: {step} < {self._last_step}")
        self._last_step = step
        row = {
            "env_steps": step,
            **{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()},
        }
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self.wandb_run is not None:
            self.wandb_run.log({"env_steps": step, **metrics})

    def log_media(self, key: str, media: Any, step: int) -> None:
        """Log a W&B media object (video, image) at ``step``; no-op without W&B."""
        if self.wandb_run is not None:
            self.wandb_run.log({"env_steps": step, key: media})

    def close(self) -> None:
        self._file.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()
            self.wandb_run = None


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Rows of a metrics.jsonl file."""
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
