"""What keeps a training run's work safe, at the loop's edges.

- :meth:`Safekeeping.save`: the checkpoint at an iteration boundary (everything a bit-exact resume
  needs); when it cannot be written, the error says which checkpoint is still on disk and how to
  go on from it.
- :meth:`Safekeeping.stop_nonfinite`: NaN/inf stops the run with a diagnostic snapshot
  (``checkpoints/nonfinite_iter_XXXXXX.pt``: the state as it was and the batch trained on).
- :meth:`Safekeeping.rescue`: after an unexpected failure between iterations, the iterations
  trained so far are checkpointed, so that nothing trained is lost.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from locomo.distributed import Group
from locomo.errors import NonFiniteError
from locomo.rl.buffer import RolloutBatch
from locomo.runs.checkpoint import CheckpointError, CheckpointManager


class Safekeeping:
    """The run's checkpoints (``<run_dir>/checkpoints``, the newest ``keep`` periodic ones kept) and
    the last good one among them (``last_good``: where a resume started, until this run writes one).

    ``group``: in a multi-process job every rank calls :meth:`save` (rank 0 writes, the others learn
    where); a diagnostic snapshot is of the rank that found the NaN/inf.
    """

    def __init__(self, run_dir: Path, keep: int, group: Group, last_good: Path | None) -> None:
        self.run_dir, self.group = run_dir, group
        self.checkpoints = CheckpointManager(run_dir / "checkpoints", keep)
        self.last_good = last_good

    def save(self, state: dict[str, Any] | None, iteration: int) -> dict[str, Any] | None:
        """Save the periodic checkpoint of ``state`` (the job's, gathered on rank 0; None on the
        other ranks); on failure say what is still on disk and how to go on.

        Returns ``state``, for the W&B model upload."""
        if state is not None:
            try:
                self.last_good = self.checkpoints.save(state, iteration)
            except CheckpointError as exc:
                kept = (
                    f"the previous checkpoint {self.last_good} is kept; free space or fix the directory, "
                    f"then: {self.group.launcher} train resume={self.run_dir}"
                    if self.last_good is not None
                    else "no checkpoint had been written yet"
                )
                raise CheckpointError(f"{exc}; {kept}") from exc
        if self.group.active:  # what rank 0 wrote (its failure stops the others here)
            self.last_good = Path(self.group.broadcast(str(self.last_good)))
        return state

    def stop_nonfinite(
        self,
        exc: NonFiniteError,
        iteration: int,
        state: Callable[[], dict[str, Any] | None],
        batch: RolloutBatch | None,
    ) -> None:
        """Complete ``exc`` (NaN/inf found in ``iteration``) with the last good checkpoint and a
        diagnostic snapshot of ``state()`` (this rank's state as it is now) and ``batch`` (the batch
        being trained on, if any), or a note on why the snapshot could not be written."""
        exc.iteration = iteration
        exc.last_good = self.last_good
        try:
            exc.snapshot = self._save_diagnostic(exc, state(), batch)
        except CheckpointError as write_error:
            exc.note = f"; the diagnostic snapshot could not be written ({write_error})"

    def _save_diagnostic(
        self, exc: NonFiniteError, state: dict[str, Any] | None, batch: RolloutBatch | None
    ) -> Path:
        """``checkpoints/nonfinite_iter_XXXXXX.pt``: the state as it is now and the bad batch.

        In a multi-process job, the state of the rank that found it (``..._rankR.pt``): the others
        are elsewhere in the loop, so nothing can be gathered.
        """
        assert state is not None
        state["nonfinite"] = {"what": exc.what, "detail": exc.detail, "iteration": exc.iteration}
        if batch is not None:
            state["batch"] = {k: v.detach().cpu().clone() for k, v in batch._asdict().items()}
        rank = f"_rank{self.group.rank}" if self.group.active else ""
        return self.checkpoints.save_snapshot(state, f"nonfinite_iter_{exc.iteration:06d}{rank}.pt")

    def rescue(self, exc: Exception, iteration: int, at_boundary: bool, keep: Callable[[], None]) -> None:
        """After an unexpected failure ``exc``, keep the trained iterations: ``keep()`` logs the
        iteration's row if it was not yet and checkpoints it (:meth:`save`).

        Only ``at_boundary``: the state is consistent at an iteration boundary, and this process
        trained at least one iteration. Says what it did in a note on ``exc`` (shown on the error line).
        """
        saved = self.checkpoints.last_saved
        if not at_boundary:
            return  # mid-iteration (the state is torn), or nothing trained by this process
        if self.group.active:
            return  # a save needs every rank, and the others are elsewhere: the last checkpoint stands
        if saved is not None and saved.name == f"iter_{iteration:06d}.pt":
            return  # already saved
        try:
            keep()
            exc.add_note(
                f"iteration {iteration} was saved to {self.last_good}; "
                f"continue with: locomo train resume={self.run_dir}"
            )
        except Exception as rescue_error:  # the disk itself may be the problem
            exc.add_note(f"saving iteration {iteration} failed too ({rescue_error})")
