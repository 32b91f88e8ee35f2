"""What a run writes and reads back: checkpoints, the run directory, the metrics file, outputs.

- :mod:`~locomo.runs.checkpoint`: checkpoint files written atomically, read safely, found in a run.
- :mod:`~locomo.runs.checkpoint_format`: what a checkpoint holds, and its one check.
- :mod:`~locomo.runs.rundir`: who owns a run directory (its lock).
- :mod:`~locomo.runs.hydra_job`: the Hydra job around a run dir: its record, a refused start undone.
- :mod:`~locomo.runs.outputs`: where commands write; the check and atomic write of every output.
- :mod:`~locomo.runs.metrics_file`: the metrics file read back (its writer is
  :mod:`locomo.training.logging`).

Nothing is imported here.
"""
