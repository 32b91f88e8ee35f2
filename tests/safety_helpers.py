"""Helpers for the crash-safety, resume and bad-input tests: run the CLI in-process, compare
checkpoints, find machine paths in what is shipped. (Subprocess runs, polling and the small run
configs are in tests/conftest.py.)"""

from __future__ import annotations

import contextlib
import io
import re
import sys
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import torch


def call_locomo(*args: str) -> tuple[int, str, str]:
    """Run ``locomo <args>`` in this process (no interpreter start-up); return (status, stdout, stderr).

    The same ``main()`` the console script runs; SystemExit gives the exit status. An exception
    that escapes (which would be a traceback on a terminal) propagates and fails the test.
    """
    from locomo.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved_argv = sys.argv
    sys.argv = ["locomo", *args]
    status: Any = 0
    deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as exc:
        status = exc.code if exc.code is not None else 0
    finally:
        sys.argv = saved_argv
        torch.use_deterministic_algorithms(deterministic)  # train.deterministic is process-wide
    return int(status), out.getvalue(), err.getvalue()


def strings(value: Any) -> Iterator[str]:
    """Every string in a JSON value, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def machine_paths(value: Any) -> list[str]:
    """The words of a JSON value's strings that name a path of some machine: absolute (POSIX or
    Windows) or under a home directory (``~``). A command's words are split at ``=`` too, so
    ``checkpoint=/x/walker.pt`` counts."""
    return [
        word
        for text in strings(value)
        for word in re.split(r"[\s=]+", text)
        if PurePosixPath(word).is_absolute() or PureWindowsPath(word).is_absolute() or word.startswith("~")
    ]


def learned_state(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The parts of a checkpoint that training changes (weights, optimiser, normaliser, RNGs, counters)."""
    return {k: ckpt[k] for k in ("actor", "critic", "obs_normalizer", "optimizer", "counters", "rng", "obs")}


def assert_same(a: Any, b: Any, where: str = "checkpoint") -> None:
    """Bit-for-bit equality of nested dicts/lists of tensors and plain values."""
    if isinstance(a, dict):
        assert set(a) == set(b), f"{where}: keys differ"
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), f"{where}: tensors differ"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def finished_pendulum_run(run_dir: Path) -> Path:
    """Train the issue's ``RUN`` into ``run_dir``: a finished 2-iteration pendulum run (checkpoints
    of iterations 1 and 2, and ``last.pt``, a hard link to 2), in process; return ``run_dir``."""
    from tests.conftest import PENDULUM_RUN

    status, _, err = call_locomo("train", *PENDULUM_RUN, "train.iterations=2", f"hydra.run.dir={run_dir}")
    assert status == 0, err
    return run_dir
