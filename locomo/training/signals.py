"""SIGINT/SIGTERM/SIGHUP during training: finish the iteration, save, stop (a second signal: stop now)."""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import Any

from locomo.errors import TrainingAborted

# Signals that stop a run the way Ctrl-C does. SIGHUP (the terminal closed, an ssh session
# dropped) would otherwise kill the process between two checkpoints, with no message.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def handled_stop_signals() -> tuple[int, ...]:
    """:data:`STOP_SIGNALS` less a SIGHUP this process ignores: ``nohup locomo train`` is asked to
    outlive its terminal, and a handler of ours would stop it instead."""
    return tuple(
        sig for sig in STOP_SIGNALS if not (sig == signal.SIGHUP and signal.getsignal(sig) == signal.SIG_IGN)
    )


def _silence_lost_terminal() -> None:
    """Point stdout and stderr at /dev/null: after a hang-up every write to the terminal fails
    (EIO), and a failed progress-bar write must not stop the checkpoint that is on its way."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in (1, 2):
            os.dup2(devnull, fd)
    finally:
        os.close(devnull)


class GracefulStop:
    """SIGINT/SIGTERM/SIGHUP handling for the training loop (a context manager).

    The first signal is remembered: the loop finishes the iteration in progress, saves a
    checkpoint and raises :class:`TrainingInterrupted` (exit status 128 + signal). A second signal
    aborts at once (:class:`TrainingAborted`), keeping the checkpoints already on disk. Outside
    the main thread (where Python allows no handlers) it does nothing.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            raise TrainingAborted(signum)
        self.signum = signum
        name = signal.Signals(signum).name
        # os.write, not print: a handler may run in the middle of another write to stderr.
        try:
            os.write(
                2,
                f"locomo: {name} received; finishing this iteration and saving a checkpoint "
                f"(send it again to stop at once without saving)\n".encode(),
            )
        except OSError:  # the terminal hung up: nobody reads it any more, the checkpoint still matters
            _silence_lost_terminal()

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for sig in handled_stop_signals():
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
