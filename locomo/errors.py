"""The errors locomo reports to the user, and the exit status each one gets.

Kept free of heavy imports (no torch), so that a bad command line fails in a fraction of a second.

Exit statuses of every command:

- 0: done.
- 1: an error Hydra reports itself (unknown config group option, unknown key, wrong type).
- 2: bad input (:class:`~locomo.config.ConfigError`, :class:`CheckpointError`,
  :class:`RenderError`).
- 3: training stopped because something became NaN or infinite (:class:`NonFiniteError`).
- 128 + signal number: stopped by SIGINT (130) or SIGTERM (143) after saving a checkpoint
  (:class:`TrainingInterrupted`), or aborted by a second signal without saving.
"""

from __future__ import annotations

import signal
from pathlib import Path

EXIT_USER_ERROR = 2
EXIT_NONFINITE = 3


class CheckpointError(RuntimeError):
    """A checkpoint (or another file of a run) that cannot be written or read; meant for the user."""


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
    """SIGINT or SIGTERM arrived; the runner saved a checkpoint at an iteration boundary."""

    def __init__(self, signum: int, iteration: int, checkpoint: Path, run_dir: Path) -> None:
        self.signum, self.iteration, self.checkpoint, self.run_dir = signum, iteration, checkpoint, run_dir
        super().__init__(
            f"interrupted by {signal.Signals(signum).name} after iteration {iteration}; "
            f"checkpoint saved to {checkpoint}; continue with: locomo train resume={run_dir}"
        )

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


class TrainingAborted(KeyboardInterrupt):
    """A second SIGINT/SIGTERM while the first one's checkpoint was pending: stop at once."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(
            f"aborted by a second {signal.Signals(signum).name}; "
            "the checkpoints already on disk are kept (the newest complete one is resumable)"
        )

    @property
    def exit_status(self) -> int:
        return 128 + self.signum
