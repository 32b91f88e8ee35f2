"""The vectorised-env interface every backend implements (numpy in, numpy out).

Semantics shared by all backends:
- ``step`` auto-resets an env whose episode ended; the returned observation is then the first
  observation of the next episode and ``final_obs`` holds the last one of the old episode.
- ``terminated`` (the MDP ended: the body fell) is kept apart from ``truncated`` (the time
  limit hit): only truncation may be bootstrapped with a value estimate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import numpy as np


@dataclass(frozen=True)
class SpaceInfo:
    """What the policy needs to know of the spaces."""

    obs_dim: int
    discrete: bool
    action_dim: int  # number of actions (discrete) or action-vector size (continuous)
    action_low: np.ndarray | None = None  # [A] lower bounds (continuous only)
    action_high: np.ndarray | None = None  # [A] upper bounds (continuous only)
    control_dt: float = 0.02  # seconds of simulated time per env step


@dataclass
class EpisodeRecord:
    """One finished episode of one env slot."""

    env_index: int
    ret: float  # undiscounted return
    length: int  # steps
    terminated: bool  # True: the MDP ended (fell); False: the time limit hit
    terms: dict[str, float] = field(default_factory=dict)  # per reward term, summed (scaled)
    # Root-body pose for MuJoCo models whose first joint is free (humanoid, ant): x0, y0 at the
    # episode's start; x, y, z and the orientation quaternion qw, qx, qy, qz at its last step.
    # Empty for other envs. What the body did (fell forward, walked, ...) is read from exactly
    # these nine keys by locomo/behavior.py (BODY_KEYS); every backend fills all or none of them.
    body: dict[str, float] = field(default_factory=dict)


class EnvStep(NamedTuple):
    """The result of one vectorised step; N = number of envs, O = observation size."""

    obs: np.ndarray  # [N, O] next observations (first obs of a new episode after a reset)
    reward: np.ndarray  # [N] total reward = sum of scaled terms
    terminated: np.ndarray  # [N] bool: episode ended in a terminal state
    truncated: np.ndarray  # [N] bool: episode cut by the time limit (not terminal)
    final_obs: np.ndarray  # [N, O] last obs of the ended episode where done, else equal to obs
    terms: dict[str, np.ndarray]  # name -> [N] scaled reward term
    episodes: list[EpisodeRecord]  # episodes that ended on this step


class VecEnv(Protocol):
    """N envs stepped together."""

    num_envs: int
    spaces: SpaceInfo

    def reset(self, seed: int) -> np.ndarray:
        """Reset every env (env i seeded with seed + i); return observations [N, O]."""
        ...

    def step(self, actions: np.ndarray) -> EnvStep:
        """Step every env with actions [N, A] (continuous) or [N] (discrete)."""
        ...

    def close(self) -> None:
        """Release the envs."""
        ...
