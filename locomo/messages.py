"""locomo's own messages (the ``locomo: ...`` lines on the console) also go to the job's log file.

The commands print their notes, warnings, errors and summaries as ``locomo: ...`` lines on
stdout/stderr (from many modules, some with their own reasons to write in one piece, e.g.
:func:`locomo.errors.say`). While a Hydra job with a log file runs (``train``: the run dir's
``train.log``; ``variance`` and ``bench`` likewise), :func:`job_messages` copies each such line
to the :data:`LOGGER` named ``locomo``, whose only handler is then that log file. The console
output stays byte for byte as it was: the lines are printed as before, and the logger does not
propagate to the root logger (whose console handler would print them a second time, formatted).

Copying the lines where they are written, instead of changing every call site to log, keeps one
rule for every message, including those added later.

``train``, ``variance`` and ``bench`` hold their lines until they own their run dir
(:func:`release`): a start that is refused (the run dir is in use, holds another run, or an
output cannot be written) must leave that dir's log as it was, and a new run dir it created
empty enough to be removed again.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

LOGGER = logging.getLogger("locomo")
# Console output is printed by the callers: records go only to the handlers job_messages() adds.
LOGGER.propagate = False
LOGGER.setLevel(logging.INFO)
# Without any handler, logging's last-resort handler would print WARNING records on stderr again.
LOGGER.addHandler(logging.NullHandler())

PREFIX = "locomo:"


def level_of(line: str) -> int:
    """The logging level of a ``locomo: ...`` line: error, warning, or info for notes and summaries."""
    rest = line[len(PREFIX) :].lstrip()
    if rest.startswith("error:"):
        return logging.ERROR
    if rest.startswith("warning:"):
        return logging.WARNING
    return logging.INFO


def log_line(line: str) -> None:
    """Log one line if it is one of locomo's own messages (starts with ``locomo:``)."""
    line = line.rsplit("\r", 1)[-1].strip()  # a progress bar redraws with \r: the line is what follows
    if line.startswith(PREFIX):
        LOGGER.log(level_of(line), line)


class LineTee:
    """A text stream that writes through to ``stream`` unchanged and logs each complete
    ``locomo:`` line it sees (:func:`log_line`). Everything else is the wrapped stream's."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._pending = ""
        # The training loop's worker threads may print too; reentrant, because a signal handler
        # that prints can run while this thread holds it.
        self._lock = threading.RLock()

    def write(self, text: str) -> int:
        written = self._stream.write(text)
        try:
            with self._lock:
                *lines, rest = (self._pending + text).split("\n")
                # Keep only the visible part of an unfinished line: a progress bar that redraws
                # with \r for hours must not grow the buffer.
                self._pending = rest.rsplit("\r", 1)[-1]
            for line in lines:
                log_line(line)
        except Exception:  # logging must never break the console output
            pass
        return written

    def __getattr__(self, name: str) -> Any:  # flush, fileno, isatty, encoding, ...
        return getattr(self._stream, name)


class JobLog(logging.Handler):
    """Passes records on to the job's log file handlers; while ``held``, keeps them instead."""

    def __init__(self, targets: list[logging.Handler], hold: bool) -> None:
        super().__init__()
        self.targets = targets
        self.held: list[logging.LogRecord] | None = [] if hold else None

    def emit(self, record: logging.LogRecord) -> None:
        if self.held is not None:
            self.held.append(record)
            return
        for target in self.targets:
            target.handle(record)

    def let_through(self) -> None:
        """Write the held records, and every later one as it comes. (Not ``release``: that is
        logging.Handler's lock.)"""
        held, self.held = self.held or [], None
        for record in held:
            self.emit(record)


_current: list[JobLog] = []  # the running job's, while job_messages() is active


def release() -> None:
    """The job owns its run dir now: its held lines, and every later one, go to its log file.

    A no-op outside a job that holds them (other commands, the Python API, other ranks).
    """
    for job_log in _current:
        job_log.let_through()


def _file_handlers() -> list[logging.Handler]:
    """The root logger's file handlers: Hydra's job log (``<run dir>/<job name>.log``), if any."""
    return [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]


@contextmanager
def job_messages(hold: bool = False) -> Iterator[None]:
    """While the block runs, ``locomo:`` lines printed on stdout/stderr also go to the job's log file.

    ``hold``: keep them until :func:`release` (dropped if it is never called: a refused start).
    A no-op where Hydra writes no log file (``hydra/job_logging=none``: eval, render, replay,
    export; a torchrun job's other ranks; the Python API).
    """
    handlers = _file_handlers()
    if not handlers:
        yield
        return
    job_log = JobLog(handlers, hold)
    LOGGER.addHandler(job_log)
    _current.append(job_log)
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = LineTee(sys.stdout), LineTee(sys.stderr)  # type: ignore[assignment]
    try:
        yield
    finally:
        # Only undo our own wrappers: something inside may have replaced the streams since.
        if isinstance(sys.stdout, LineTee):
            sys.stdout = saved[0]
        if isinstance(sys.stderr, LineTee):
            sys.stderr = saved[1]
        _current.remove(job_log)
        LOGGER.removeHandler(job_log)  # a sweep's next job logs to its own run dir's file
        for handler in handlers:
            handler.flush()
