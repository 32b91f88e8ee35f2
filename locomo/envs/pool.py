"""The thread pool of the batched backend: native-code work (``mj_step`` releases the GIL) on
``env.threads`` threads that pull env indices one by one."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class WorkerPool:
    """Runs ``fn(i)`` for a list of indices on ``threads`` threads that pull the indices one by one.

    The calling thread is one of the ``threads`` (so ``threads=1`` starts no thread at all).
    Pulling from a shared iterator balances the load: a thread whose core is busy with another
    process, or whose envs are costlier (a body on the ground has more contacts than one in the
    air), simply takes fewer envs, where fixed slices would make everyone wait for the slowest.
    Useful only for functions that spend their time in C code that releases the GIL.
    """

    def __init__(self, threads: int) -> None:
        self.threads = max(1, threads)
        self.executor = ThreadPoolExecutor(self.threads - 1, "locomo-sim") if self.threads > 1 else None

    def map(self, fn: Callable[[int], None], indices: Sequence[int], min_per_thread: int = 1) -> None:
        """Call ``fn(i)`` for every ``i`` in ``indices``, on at most ``len(indices) // min_per_thread``
        threads; return when all are done (re-raising the first error)."""
        helpers = min(self.threads, len(indices) // max(1, min_per_thread)) - 1
        if self.executor is None or helpers <= 0:
            for i in indices:
                fn(i)
            return
        pending = iter(indices)
        lock = threading.Lock()

        def drain() -> None:
            while True:
                with lock:
                    i = next(pending, None)
                if i is None:
                    return
                fn(i)

        futures: list[Future[None]] = [self.executor.submit(drain) for _ in range(helpers)]
        try:
            drain()
        finally:
            for future in futures:
                future.result()

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True)
            self.executor = None
