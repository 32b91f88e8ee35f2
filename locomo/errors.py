"""The errors locomo reports to the user, and the exit status each one gets.

Kept free of heavy imports (no torch), so that a bad command line fails in a fraction of a second.

Exit statuses of every command:

- 0: done.
- 1: an unexpected failure: one line naming it and the file that holds the full traceback.
  (Typos Hydra would report in its own words, such as an unknown key, group option or a wrong
  type, are checked first by :func:`locomo.config.composition.check_composition`: exit 2.)
  Also 1 for a rank of a multi-process job whose peers stopped (:class:`DistributedError`: one
  line, the failing rank says why in its own).
- 2: bad input (:class:`ConfigError`, :class:`CheckpointError`,
  :class:`MetricsError`, :class:`RenderError`).
- 3: training stopped because something became NaN or infinite (:class:`NonFiniteError`).
- 128 + signal number: stopped by SIGINT (130), SIGHUP (129: the terminal closed) or SIGTERM
  (143) after saving a checkpoint (:class:`TrainingInterrupted`), or aborted by a second signal
  without saving; 130 also for Ctrl-C while a command starts up (one line, never a traceback).
"""

from __future__ import annotations

import datetime
import os
import signal
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

# How to get offscreen rendering (said wherever rendering fails).
GL_FIX = (
    "fix: install EGL (apt-get install libegl1) or OSMesa (apt-get install libosmesa6) and set "
    "MUJOCO_GL=egl or MUJOCO_GL=osmesa"
)

EXIT_UNEXPECTED = 1
EXIT_USER_ERROR = 2
EXIT_NONFINITE = 3

# Values longer than this are shown shortened in messages (a 5,000-character path would be the line).
SHOWN_MAX = 120


class ConfigError(ValueError):
    """A user-facing configuration error: names the key, the value and what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r} is invalid: {allowed}")


def shown(value: str) -> str:
    """``value`` for a message: as it is, or, when very long, its start and end around its length."""
    if len(value) <= SHOWN_MAX:
        return value
    return f"{value[:60]}...({len(value)} characters)...{value[-40:]}"


def say(line: str) -> None:
    """``line`` on stderr in one write, so that the lines of a multi-process job's ranks, which
    share one terminal or pipe, never mix within a line."""
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except OSError:  # the terminal is gone (SIGHUP): the exit status must still be the one meant
        pass


def interrupt_behind(exc: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C (or signal) that ``exc`` hides, if any.

    An interrupt that arrives while a C extension initialises comes out as that module's
    ``ImportError: initialization failed`` (pybind11) with the interrupt as its context; code that
    catches ``Exception`` around an import must re-raise it, not report a broken library.
    """
    seen: BaseException | None = exc
    visited: set[int] = set()
    while seen is not None and id(seen) not in visited:  # a chain set by hand may loop
        if isinstance(seen, KeyboardInterrupt):
            return seen
        visited.add(id(seen))
        seen = seen.__cause__ or seen.__context__
    return None


def first_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (multi-line messages of libraries, on one line)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def write_traceback(exc: BaseException, directory: Path | None) -> Path | None:
    """Append ``exc``'s full traceback to ``<directory>/traceback.log`` (a temporary file when
    ``directory`` is None or unwritable); return the file, or None when nothing could be written.
    """
    text = f"--- {datetime.datetime.now().isoformat(timespec='seconds')} pid {os.getpid()}\n"
    text += "".join(traceback.format_exception(exc))
    if directory is not None:
        try:
            path = directory / "traceback.log"
            with path.open("a", encoding="utf-8") as f:
                f.write(text)
            return path
        except OSError:
            pass
    try:
        fd, name = tempfile.mkstemp(prefix="locomo-traceback-", suffix=".log")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        return Path(name)
    except OSError:
        return None


class CheckpointError(RuntimeError):
    """A checkpoint (or another file of a run) that cannot be written or read; meant for the user."""


class DistributedError(RuntimeError):
    """A multi-process job cannot go on: a rank could not join, or another rank stopped."""


class MetricsError(RuntimeError):
    """The run's metrics file (``metrics.jsonl``) cannot be written; meant for the user."""


class RenderError(RuntimeError):
    """Rendering is impossible here; the message is one line and says how to fix it."""


class NonFiniteError(RuntimeError):
    """NaN or inf found in training data or state.

    ``what`` names the quantity (observations, rewards, loss, gradients, parameters), ``detail``
    says where; the runner fills in ``iteration`` (1-based, the iteration that went bad) and
    the diagnostic snapshot it saved.
    """

    def __init__(self, what: str, detail: str) -> None:
        self.what, self.detail = what, detail
        self.iteration: int | None = None
        self.snapshot: Path | None = None
        self.last_good: Path | None = None
        self.note = ""
        super().__init__(what)

    def __str__(self) -> str:
        at = f" at iteration {self.iteration}" if self.iteration is not None else ""
        msg = f"non-finite {self.what}{at}: {self.detail}; training stopped"
        if self.snapshot is not None:
            msg += f"; diagnostic snapshot saved to {self.snapshot}"
        if self.last_good is not None:
            msg += f"; last good checkpoint {self.last_good} is untouched"
        else:
            msg += "; no checkpoint had been written yet"
        return msg + self.note


class TrainingInterrupted(RuntimeError):
    """SIGINT, SIGTERM or SIGHUP arrived; the runner saved a checkpoint at an iteration boundary."""

    def __init__(
        self, signum: int, iteration: int, checkpoint: Path, run_dir: Path, launcher: str = "locomo"
    ) -> None:
        self.signum, self.iteration, self.checkpoint, self.run_dir = signum, iteration, checkpoint, run_dir
        super().__init__(
            f"interrupted by {signal.Signals(signum).name} after iteration {iteration}; "
            f"checkpoint saved to {checkpoint}; continue with: {launcher} train resume={run_dir}"
        )

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


class TrainingAborted(KeyboardInterrupt):
    """A second SIGINT/SIGTERM while the first one's checkpoint was pending: stop at once.

    The runner fills in ``kept`` (the newest checkpoint on disk, None when there is none) and
    ``run_dir``, so the message says truthfully whether and how the run can be continued.
    """

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.kept: Path | None = None
        self.run_dir: Path | None = None
        super().__init__(signum)

    def __str__(self) -> str:
        head = f"aborted by a second {signal.Signals(self.signum).name} without saving"
        if self.kept is not None:
            where = self.run_dir if self.run_dir is not None else self.kept
            return f"{head}; checkpoint {self.kept} is kept; continue with: locomo train resume={where}"
        if self.run_dir is not None:
            return (
                f"{head}; no checkpoint had been written yet, so nothing can be resumed; start again "
                f"with: locomo train hydra.run.dir={self.run_dir} overwrite=true (or in a new run dir)"
            )
        return f"{head}; the checkpoints already on disk are kept"

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


class StoppedBySignal(KeyboardInterrupt):
    """SIGTERM or SIGHUP (or SIGINT) outside the training loop, e.g. while a command starts up.

    A KeyboardInterrupt so that Hydra passes it through; ``locomo.cli.main`` turns it into one
    line and exit status 128 + signal instead of a silent death by the signal.
    """

    def __init__(self, signum: int, during: str = "") -> None:
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}" + (f" {during}" if during else ""))

    @property
    def exit_status(self) -> int:
        return 128 + self.signum
