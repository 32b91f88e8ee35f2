"""One training iteration's metrics row, from what collection and the update report.

:func:`iteration_metrics` turns an iteration's finished episodes, summed reward terms, mean reward,
update statistics and timings into the row the loop logs; :func:`gather_rollout` first sums a
multi-process job's rollouts on rank 0, so that the row is of the job, not of one rank.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from locomo.distributed import Group
from locomo.envs import EpisodeRecord
from locomo.evaluation.behavior import behavior_fractions


def add_terms(earlier: dict[str, float], later: dict[str, float]) -> dict[str, float]:
    """Per reward term, the sum over two collections (the terms of ``later``)."""
    return {k: earlier.get(k, 0.0) + v for k, v in later.items()}


def gather_rollout(
    group: Group, episodes: list[EpisodeRecord], term_sums: dict[str, float], reward_sum: float, steps: int
) -> tuple[list[EpisodeRecord], dict[str, float], float] | None:
    """The job's rollout on rank 0: every rank's episodes (in rank order), reward terms summed over
    the ranks, and the mean reward over the job's ``steps`` env steps (``reward_sum``: this rank's
    batch's rewards summed). None on the other ranks, which log nothing."""
    parts = group.gather((episodes, term_sums, reward_sum))
    if parts is None:
        return None
    episodes = [e for p in parts for e in p[0]]
    term_sums = {name: sum(p[1].get(name, 0.0) for p in parts) for name in term_sums}
    return episodes, term_sums, sum(p[2] for p in parts) / steps


def iteration_metrics(
    iteration: int,
    recent: deque[EpisodeRecord],
    reward_mean: float,
    episodes: list[EpisodeRecord],
    term_sums: dict[str, float],
    update_info: dict[str, float],
    collect_s: float,
    update_s: float,
    wall_s: float | None,
    steps: int,
    control_dt: float,
    behavior: Any,
) -> dict[str, float]:
    """The iteration's metrics row; adds its episodes to ``recent`` (the last finished episodes,
    whose returns and lengths the row averages).

    ``wall_s``: the iteration's time when collection and update overlapped (None: their sum);
    ``steps``: the env steps it collected; ``term_sums``: each reward term summed over them;
    ``control_dt``, ``behavior``: the env's step and ``cfg.behavior``, to label the episodes.
    """
    wall_s = collect_s + update_s if wall_s is None else wall_s
    # Episodes cut by a simulator blow-up are counted, not averaged into the returns.
    unstable = sum(e.unstable for e in episodes)
    episodes = [e for e in episodes if not e.unstable]
    recent.extend(episodes)
    done = list(recent)
    nan = float("nan")
    out: dict[str, float] = {
        "iteration": float(iteration),
        # Mean over the last 100 finished episodes (so it is defined on every iteration).
        "rollout/return_mean": float(np.mean([e.ret for e in done])) if done else nan,
        "rollout/return_std": float(np.std([e.ret for e in done])) if done else nan,
        "rollout/episode_length": float(np.mean([e.length for e in done])) if done else nan,
        "rollout/episodes": float(len(episodes)),
        "rollout/terminated_fraction": float(np.mean([e.terminated for e in episodes])) if episodes else nan,
        # As trained on: scaled when algo.normalize_rewards (the raw terms are reward_terms/*).
        "rollout/reward_mean": reward_mean,
        "rollout/unstable_resets": float(unstable),
        "perf/steps_per_s": steps / max(wall_s, 1e-9),
        "perf/collect_steps_per_s": steps / max(collect_s, 1e-9),
        "perf/collect_s": collect_s,
        "perf/update_s": update_s,
    }
    for name, total in term_sums.items():
        out[f"rollout/reward_terms/{name}"] = total / steps
    out |= behavior_fractions(episodes, control_dt, behavior)
    out.update(update_info)
    return out
