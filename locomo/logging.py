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


def _parse_row(raw: bytes) -> dict[str, Any] | None:
    """A metrics row, or None for a line that is torn, not UTF-8, or not a JSON object."""
    try:
        row = json.loads(raw)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError alike
        return None
    return row if isinstance(row, dict) else None


def truncate_metrics(path: Path, last_step: int, damaged: list[int] | None = None) -> int:
    """Keep the rows of a metrics file with ``env_steps <= last_step``; return how many were dropped.

    For a resumed run: rows logged after its checkpoint (the run was killed before the next one)
    are logged again by the resumed run, so they go, and so does a line torn by a kill mid-write.
    Unreadable lines *before* the last kept row (damaged by something else: a disk error, an
    editor) cannot be logged again; they are moved to ``<file>.damaged`` and their line numbers
    appended to ``damaged``, so that the caller can say so. The file is replaced atomically.
    """
    if not path.is_file():
        return 0
    lines = path.read_bytes().splitlines(keepends=True)
    rows = [(i, raw, _parse_row(raw)) for i, raw in enumerate(lines, 1) if raw.strip()]
    keep = [
        (i, raw, row)
        for i, raw, row in rows
        if row is not None
        and isinstance(row.get("env_steps", last_step + 1), int | float)
        and row.get("env_steps", last_step + 1) <= last_step
    ]
    last_kept = keep[-1][0] if keep else 0
    inside = [(i, raw) for i, raw, row in rows if row is None and i < last_kept]
    dropped = len(rows) - len(keep)
    if inside:
        with path.with_name(path.name + ".damaged").open("ab") as f:
            f.writelines(raw if raw.endswith(b"\n") else raw + b"\n" for _, raw in inside)
        if damaged is not None:
            damaged.extend(i for i, _ in inside)
    if dropped:
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("wb") as f:
            f.writelines(raw if raw.endswith(b"\n") else raw + b"\n" for _, raw, _ in keep)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    return dropped


def missing_iterations(rows: list[dict[str, Any]]) -> list[int]:
    """Iterations between the first and last logged one that have no row."""
    seen = {int(r["iteration"]) for r in rows if isinstance(r.get("iteration"), int | float)}
    return [i for i in range(min(seen), max(seen) + 1) if i not in seen] if seen else []


class MetricsLogger:
    """Appends one JSON object per log call to ``metrics.jsonl`` and mirrors it to W&B.

    The step axis is env steps so far; it never goes backwards. ``resume_at`` (a resumed run's
    env steps) first drops the rows logged after that point, so the axis has no repeats.
    """

    def __init__(
        self,
        run_dir: Path,
        metrics_file: str,
        wandb_cfg: Any,
        config: dict[str, Any],
        run_id: str | None = None,
        resume_at: int | None = None,
    ) -> None:
        from locomo.errors import MetricsError

        self.path = run_dir / metrics_file
        self._last_step = -1
        self._failed = False  # a write failed (and was reported): closing may fail the same way
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if resume_at is not None:
                damaged: list[int] = []
                truncate_metrics(self.path, resume_at, damaged)
                if damaged:
                    gaps = missing_iterations(read_metrics(self.path))
                    print(
                        f"locomo: warning: {self.path}: {len(damaged)} unreadable row(s) (line "
                        f"{', '.join(map(str, damaged))}) moved to {self.path.name}.damaged; "
                        f"iterations without a metrics row: {', '.join(map(str, gaps)) or 'unknown'}",
                        file=sys.stderr,
                    )
                self._last_step = resume_at
            self._file = self.path.open("a", encoding="utf-8")
        except OSError as exc:  # a directory in its place, no permission, a full disk
            raise MetricsError(
                f"cannot write metrics to {self.path}: {exc.strerror or exc}; move it away or set "
                "logger.metrics_file=<another file name>"
            ) from exc
        self.wandb_run: Any = None
        self.wandb_mode = resolve_wandb_mode(wandb_cfg.mode)
        if self.wandb_mode != "disabled":
            self.wandb_run = self._init_wandb(run_dir, wandb_cfg, config, run_id)

    def _init_wandb(self, run_dir: Path, wandb_cfg: Any, config: dict[str, Any], run_id: str | None) -> Any:
        """Start (or, with ``run_id``, continue) the W&B run.

        Online and the server unreachable or not logged in: log offline instead, so nothing is
        lost (``wandb sync`` uploads it later). Offline failing too: no W&B, training goes on.
        """
        import wandb

        def init(mode: str) -> Any:
            timeout = getattr(wandb_cfg, "init_timeout", None)
            extra = {} if timeout is None else {"init_timeout": float(timeout)}
            settings = wandb.Settings(silent=True, console="off", **extra)
            return wandb.init(
                project=wandb_cfg.project,
                entity=wandb_cfg.entity,
                group=wandb_cfg.group,
                name=wandb_cfg.name,
                config=config,
                dir=str(run_dir),
                mode=mode,
                id=run_id,
                resume="allow" if run_id else None,
                settings=settings,
            )

        try:
            run = init(self.wandb_mode)
        except Exception as exc:  # W&B unreachable or misconfigured: keep training, say so once
            reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            if self.wandb_mode != "online":
                print(f"locomo: W&B disabled for this run ({reason})", file=sys.stderr)
                return None
            try:
                run = init("offline")
            except Exception as exc2:
                print(f"locomo: W&B disabled for this run ({reason}; offline: {exc2})", file=sys.stderr)
                return None
            self.wandb_mode = "offline"
            print(
                f"locomo: W&B online failed ({reason}); logging offline to {run.dir}; "
                f"upload later with: wandb sync {Path(run.dir).parent}",
                file=sys.stderr,
            )
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
        try:
            self._file.write(json.dumps(row) + "\n")
            self._file.flush()
        except OSError as exc:  # disk full, quota, file system gone read-only
            from locomo.errors import MetricsError

            self._failed = True
            raise MetricsError(f"cannot write metrics to {self.path}: {exc.strerror or exc}") from exc
        if self.wandb_run is not None:
            self.wandb_run.log({"env_steps": step, **metrics})

    def log_media(self, key: str, media: Any, step: int) -> None:
        """Log a W&B media object (video, image) at ``step``; no-op without W&B."""
        if self.wandb_run is not None:
            self.wandb_run.log({"env_steps": step, key: media})

    def close(self) -> None:
        """Close the file and finish the W&B run.

        Closing after a failed write (a full disk) fails the same way; that was reported
        already, so it is not raised again over the error that stopped training.
        """
        try:
            self._file.close()
        except OSError:
            if not self._failed:
                raise
        if self.wandb_run is not None:
            run, self.wandb_run = self.wandb_run, None
            run.finish()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Rows of a metrics.jsonl file (lines that are torn or not UTF-8 are skipped)."""
    with path.open("rb") as f:
        return [row for line in f if line.strip() and (row := _parse_row(line)) is not None]
