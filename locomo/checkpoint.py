"""Checkpoints: plain tensors and Python types, written atomically, loaded with weights_only=True.

A checkpoint is a dict::

    {"format": "locomo-checkpoint", "version": 1,
     "actor": state_dict, "critic": state_dict | None, "obs_normalizer": state_dict,
     "optimizer": state_dict, "config": plain dict, "counters": {...}, "rng": {...},
     "spaces": {...}}
"""

from __future__ import annotations

import ast
import os
import pickle
import random
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = "locomo-checkpoint"
VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written or read; the message is meant for the user."""


def save_atomic(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` to ``path`` so that a crash leaves either the old file or the new one.

    torch.save to a temporary file in the same directory, fsync, then rename over ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException as exc:
        Path(tmp_name).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise CheckpointError(f"cannot write checkpoint {path}: {exc.strerror or exc}") from exc
        raise


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a locomo checkpoint safely (no code execution); clear errors for bad files."""
    p = Path(path).expanduser()
    if p.is_dir():
        for candidate in (p / "checkpoints" / "last.pt", p / "last.pt"):
            if candidate.is_file():
                p = candidate
                break
        else:
            raise CheckpointError(f"no checkpoint in directory {p} (looked for checkpoints/last.pt)")
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p} does not exist")
    try:
        state = torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"refusing to load {p}: not a plain-data locomo checkpoint (it holds code or foreign objects)"
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise CheckpointError(
            f"cannot read checkpoint {p}: the file is truncated or not a checkpoint"
        ) from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{p} is not a locomo checkpoint")
    return state


def rng_state(generator: torch.Generator, np_rng: np.random.Generator) -> dict[str, Any]:
    """Every RNG that training draws from, as plain data."""
    np_state = np_rng.bit_generator.state
    return {
        "torch": torch.get_rng_state(),
        "torch_generator": generator.get_state(),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "state": str(np_state["state"]["state"]),
            "inc": str(np_state["state"]["inc"]),
            "has_uint32": int(np_state["has_uint32"]),
            "uinteger": int(np_state["uinteger"]),
        },
        "python": repr(random.getstate()),
    }


def restore_rng(state: dict[str, Any], generator: torch.Generator, np_rng: np.random.Generator) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    generator.set_state(state["torch_generator"])
    s = state["numpy"]
    np_rng.bit_generator.state = {
        "bit_generator": s["bit_generator"],
        "state": {"state": int(s["state"]), "inc": int(s["inc"])},
        "has_uint32": s["has_uint32"],
        "uinteger": s["uinteger"],
    }
    random.setstate(ast.literal_eval(state["python"]))


class CheckpointManager:
    """Writes ``iter_XXXXXX.pt`` every N iterations (keeping the last K) and ``last.pt``."""

    def __init__(self, directory: Path, keep: int) -> None:
        self.directory, self.keep = directory, keep

    def save(self, state: dict[str, Any], iteration: int) -> Path:
        """Save the periodic checkpoint and last.pt; prune old periodic ones."""
        state = {"format": FORMAT, "version": VERSION, **state}
        path = self.directory / f"iter_{iteration:06d}.pt"
        save_atomic(state, path)
        save_atomic(state, self.directory / "last.pt")
        periodic = sorted(self.directory.glob("iter_*.pt"))
        for old in periodic[: -self.keep]:
            old.unlink(missing_ok=True)
        return path
