"""One episode as evaluation records it and rendering replays it: :class:`Rollout`.

Shared by :mod:`locomo.evaluation.episodes` (which fills it), :mod:`locomo.evaluation.offscreen`
and :mod:`locomo.evaluation.rendering` (which film its stored states) and
:mod:`locomo.evaluation.progress` (which counts the frames to come).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from locomo.envs.base import EpisodeRecord
from locomo.evaluation.behavior import Behavior


@dataclass
class Rollout:
    """One episode: T steps, its record and label, and (optionally) the MuJoCo states to render."""

    seed: int
    deterministic: bool
    record: EpisodeRecord
    behavior: Behavior | None
    rewards: np.ndarray  # [T] reward of each step (sum of the scaled terms)
    qpos: np.ndarray | None = None  # [T + 1, nq] after the reset (row 0) and after each step
    qvel: np.ndarray | None = None  # [T + 1, nv]
    control_dt: float = 0.02  # seconds per step

    @property
    def returns_so_far(self) -> np.ndarray:
        """[T + 1] undiscounted return accumulated before each recorded state (0 at the reset)."""
        return np.concatenate([[0.0], np.cumsum(self.rewards)])

    def summary(self) -> dict[str, Any]:
        """Plain-typed description for JSON."""
        return {
            "seed": self.seed,
            "return": self.record.ret,
            "length": self.record.length,
            "terminated": self.record.terminated,
            "terms": self.record.terms,
            "behavior": None if self.behavior is None else self.behavior.as_dict(),
        }
