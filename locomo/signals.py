"""SIGINT/SIGTERM during training: finish the iteration, save, stop (a second signal: stop now)."""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import Any

from locomo.errors import TrainingAborted


class GracefulStop:
    """SIGINT/SIGTERM handling for the training loop (a context manager).

    The first signal is remembered: the loop finishes the iteration in progress, saves a
    checkpoint and raises :class:`TrainingInterrupted`. A second signal aborts at once
    (:class:`TrainingAborted`), keeping the checkpoints already on disk. Outside the main
    thread (where Python allows no handlers) it does nothing.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            raise TrainingAborted(signum)
        self.signum = signum
        name = signal.Signals(signum).name
        # os.write, not print: a handler may run in the middle of another write to stderr.
        os.write(
            2,
            f"locomo: {name} received; finishing this iteration and saving a checkpoint "
            f"(send it again to stop at once without saving)\n".encode(),
        )

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
