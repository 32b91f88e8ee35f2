"""The vectorised-env interface every backend implements (numpy in, numpy out).

Semantics shared by all backends:
- ``step`` auto-resets an env whose episode ended; the returned observation is then the first
  observation of the next episode and ``final_obs`` holds the last one of the old episode.
  Built with ``autoreset=False`` (evaluation: one episode per env), an env whose episode ended
  is no longer stepped: it keeps its last state and observation, reports reward 0 and is
  neither terminated nor truncated again, until the next ``reset``.
- ``terminated`` (the MDP ended: the body fell) is kept apart from ``truncated`` (the time
  limit hit): only truncation may be bootstrapped with a value estimate.
- A step on which the simulator became unstable (MuJoCo's bad qacc / qpos / qvel warnings: it
  reset the model's data in the middle of the step) ends that env's episode as *truncated*,
  with reward 0 on all terms and ``final_obs`` = the last observation before the blow-up; the
  env is reset, and the episode's record has ``unstable=True``. So a blow-up never puts a
  diverged or teleported state into the batch; the runner counts these as
  ``rollout/unstable_resets``.
- ``get_state`` / ``set_state`` capture and restore everything that decides future steps, so a
  resumed run continues bit for bit (see :meth:`VecEnv.get_state`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

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
    # these nine keys by locomo/evaluation/behavior.py (BODY_KEYS); every backend fills all or none of them.
    body: dict[str, float] = field(default_factory=dict)
    # True: the simulator went unstable (see the module docstring); the episode was cut there.
    unstable: bool = False


def record_so_far(
    i: int, returns: np.ndarray, lengths: np.ndarray, term_sums: dict[str, np.ndarray], body: dict[str, float]
) -> EpisodeRecord:
    """Env ``i``'s episode in progress as a record, cut now (not terminated), from a backend's
    running statistics: ``returns`` [N], ``lengths`` [N], ``term_sums`` name -> [N]."""
    return EpisodeRecord(
        env_index=int(i),
        ret=float(returns[i]),
        length=int(lengths[i]),
        terminated=False,
        terms={name: float(sums[i]) for name, sums in term_sums.items()},
        body=body,
    )


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

    def get_state(self) -> dict[str, Any]:
        """Everything that decides what future ``step`` calls return, as plain data.

        Values are plain Python (None, bool, int, float, str, lists, dicts with str keys) and
        numpy arrays; :class:`~locomo.envs.TorchVecEnv` turns the arrays into CPU tensors for
        the checkpoint (``torch.load(weights_only=True)`` reads nothing else) and back.

        Contract (tested for every backend): build a second vec env from the same config, call
        its ``set_state(first.get_state())``, then step both with the same actions: every
        ``EnvStep`` is bit-identical, auto-resets and episode records included. So the state
        holds the simulator state (for MuJoCo: ``mj_getState(mjSTATE_INTEGRATION)`` plus the
        derived quantities envs read between steps, e.g. ``xipos``), each env's RNG (it draws
        the initial state of the next episode), time-limit step counters and the running
        episode statistics (return, length, reward-term sums, start pose).

        Taken only between ``step`` calls. A backend that cannot capture its state raises
        NotImplementedError; the runner then checkpoints without it, and a resumed run resets
        its envs (training continues, but not bit for bit).
        """
        ...

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`get_state` returned (arrays as numpy); no ``reset`` needed first."""
        ...

    def current_episodes(self, indices: list[int]) -> list[EpisodeRecord]:
        """Records of the episodes in progress in envs ``indices``, as if they were cut now
        (``terminated=False``): return, length and term sums so far, start and current pose."""
        ...

    def mujoco_states(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(qpos [N, nq], qvel [N, nv]) copies of every env's MuJoCo state now; None for other envs.

        With ``autoreset=False`` an env whose episode ended still holds its last state, so these
        after each step are what a renderer needs to film every episode to its end.
        """
        ...

    def mujoco_model(self) -> Any:
        """The ``MjModel`` the envs share (for rendering); None for envs that are not MuJoCo's."""
        ...

    def close(self) -> None:
        """Release the envs."""
        ...
