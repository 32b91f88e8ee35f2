"""The metrics file (``metrics.jsonl``, one JSON object per iteration) read back: its rows, the
iterations missing between them, and a resumed run's rows cut back to its checkpoint.

Writing it is :class:`locomo.training.logging.MetricsLogger`'s; a line torn by a kill mid-write, or not
UTF-8, or not a JSON object, is never a row.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


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


def read_metrics(path: Path, unreadable: list[int] | None = None) -> list[dict[str, Any]]:
    """Rows of a metrics.jsonl file (lines that are torn, not UTF-8 or not JSON objects are
    skipped; their line numbers are appended to ``unreadable``, for a caller that says so)."""
    rows = []
    with path.open("rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = _parse_row(line)
            if row is not None:
                rows.append(row)
            elif unreadable is not None:
                unreadable.append(number)
    return rows
