"""The RL core, the lecture's math: a policy acts, its returns and advantages are estimated, and
one update follows the gradient of a surrogate loss.

- :mod:`~locomo.rl.returns`: the estimators of what followed an action, pure functions of
  tensors: reward-to-go, total return, GAE (with trace cuts), V-trace targets, baselines.
- :mod:`~locomo.rl.advantages`: the configured estimator: an update's samples, their advantages
  and value targets (with kept batches and mirror images).
- :mod:`~locomo.rl.losses`: the gradient estimator's surrogate: the policy-gradient loss (clipped
  around pi_k or mu), importance weights, the value loss, diagnostics.
- :mod:`~locomo.rl.algorithm`: one update: epochs x minibatches of gradient steps, lr schedules.
- :mod:`~locomo.rl.policy`, :mod:`~locomo.rl.distributions`: the networks and their action
  distributions; :mod:`~locomo.rl.running_stats`: observation and reward normalisers.
- :mod:`~locomo.rl.collector`, :mod:`~locomo.rl.buffer`: a batch of acting, T steps x N envs.
- :mod:`~locomo.rl.symmetry`: the left-right mirror map in the policy's units (``algo.symmetry``).
- :mod:`~locomo.rl.factory`: a validated config -> device, precision, seeds, networks, the update.

Nothing is imported here: ``import locomo.rl`` costs nothing (torch loads with a module).
"""
