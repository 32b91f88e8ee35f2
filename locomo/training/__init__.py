"""``locomo train``'s loop and its edges.

- :mod:`~locomo.training.runner`: the loop: collect -> update -> log -> checkpoint -> video.
- :mod:`~locomo.training.overlap`: ``train.overlap``, the update while the next batch is collected.
- :mod:`~locomo.training.metrics`: one iteration's metrics row; :mod:`~locomo.training.logging`:
  the rows to the metrics file and W&B (checkpoints as model artifacts, a final evaluation).
- :mod:`~locomo.training.state`: what a checkpoint holds, assembled from the runner and put back.
- :mod:`~locomo.training.safekeeping`, :mod:`~locomo.training.signals`: checkpoint errors, NaN/inf
  snapshots, a crash's rescue; SIGINT/SIGTERM finish the iteration and save.
- :mod:`~locomo.training.videos`, :mod:`~locomo.training.charts`: the loop's videos and W&B charts.
- :mod:`~locomo.training.resume`: ``resume=``: the run dir, config and overrides of a resumed run.

The objects a config describes (networks, the update) are :mod:`locomo.rl.factory`'s; the check
of a config's model and memory before a start is :mod:`locomo.config.preflight`'s. Nothing is
imported here: the CLI imports this package's modules only when training starts.
"""
