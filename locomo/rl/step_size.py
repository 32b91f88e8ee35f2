"""The step size between updates (``algo.lr_schedule``): pure functions of the last step size,
the update's approx KL or the fraction of training done."""

from __future__ import annotations


def adaptive_lr(
    lr: float, kl: float, threshold: float, factor: float = 1.5, lr_min: float = 1e-6, lr_max: float = 1e-2
) -> float:
    """The KL-adaptive step size after one epoch whose mean approx KL was ``kl``.

    lr / factor (not below lr_min) when kl > 2 threshold; lr * factor (not above lr_max) when
    kl < threshold / 2; else unchanged. Steps that moved the policy too far shrink the next ones.
    """
    if kl > 2.0 * threshold:
        return max(lr / factor, lr_min)
    if kl < 0.5 * threshold:
        return min(lr * factor, lr_max)
    return lr


def linear_lr(base_lr: float, progress: float) -> float:
    """base_lr * (1 - progress), progress in [0, 1] the fraction of training done."""
    return base_lr * max(0.0, 1.0 - progress)
