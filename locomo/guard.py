"""The non-finite guard: find NaN/inf in training data and state, and say where.

Pure functions of tensors; they raise :class:`~locomo.errors.NonFiniteError` naming the quantity
(observations, rewards, loss, gradients, parameters) and the first bad place. The runner adds
the iteration, writes a diagnostic snapshot and stops; no checkpoint is written after that.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch

from locomo.errors import NonFiniteError


def describe_nonfinite(x: torch.Tensor, axes: Sequence[str] = ()) -> str | None:
    """None if every value of ``x`` is finite, else e.g. ``"2 of 22 values (2 nan, 0 inf), first at env 1"``.

    ``axes`` names the leading dimensions of ``x`` (e.g. ``("env", "obs index")`` for [N, O]);
    the first bad element's index is reported with those names.
    """
    finite = torch.isfinite(x)
    if bool(finite.all()):
        return None
    bad = ~finite
    num_nan = int(torch.isnan(x).sum())
    num_bad = int(bad.sum())
    msg = f"{num_bad} of {x.numel()} values ({num_nan} nan, {num_bad - num_nan} inf)"
    if axes and x.dim() > 0:
        first = bad.nonzero()[0].tolist()
        msg += ", first at " + ", ".join(f"{name} {i}" for name, i in zip(axes, first, strict=False))
    return msg


def check_finite(what: str, x: torch.Tensor, axes: Sequence[str] = (), context: str = "") -> None:
    """Raise NonFiniteError(what, ...) if ``x`` holds NaN or inf; ``context`` says when (e.g. batch step)."""
    # Fast path (this runs on every env step): a NaN or inf anywhere makes the sum NaN or inf, so a
    # finite sum proves every value finite at the cost of one reduction (isfinite + all costs several
    # times more on a [16, 348] batch). A non-finite sum of finite values (overflow) falls through to
    # the exact test.
    if math.isfinite(float(x.sum())):
        return
    detail = describe_nonfinite(x, axes)
    if detail is not None:
        raise NonFiniteError(what, f"{detail}{' ' + context if context else ''}")


def check_parameters(named: Iterable[tuple[str, torch.Tensor]], what: str = "parameters") -> None:
    """Raise NonFiniteError naming the first tensor (parameter or buffer) that holds NaN or inf."""
    for name, tensor in named:
        detail = describe_nonfinite(tensor.detach())
        if detail is not None:
            raise NonFiniteError(what, f"{name} has {detail}")
