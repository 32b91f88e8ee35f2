"""A trained policy outside training: its episodes, what the body did, its videos, its export,
its gradient variance, and the figures of runs.

- :mod:`~locomo.evaluation.episodes`: load a checkpoint's policy; N seeded episodes side by side.
- :mod:`~locomo.evaluation.rollout`: one recorded episode, as evaluation fills it and video films it.
- :mod:`~locomo.evaluation.behavior`: what the body did in an episode (fell, stood, walked, ...).
- :mod:`~locomo.evaluation.offscreen`: GL backend, camera, offscreen frames of stored states.
- :mod:`~locomo.evaluation.rendering`: labelled videos: overlays, grids, mp4, contact sheets.
- :mod:`~locomo.evaluation.progress`: progress bars of eval, render, replay and variance.
- :mod:`~locomo.evaluation.deploy`: the policy as one ONNX / TorchScript file.
- :mod:`~locomo.evaluation.variance`: each estimator's gradient variance at one policy.
- :mod:`~locomo.evaluation.plots`: curves of runs, behaviour mix, the variance bars.

Nothing is imported here.
"""
