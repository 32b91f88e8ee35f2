"""Videos made during ``locomo train``: every ``video.every`` iterations, labelled rollouts of the
current policy, filmed with :mod:`locomo.evaluation.rendering` and logged to W&B. The training loop's only
use of rendering; a failure here turns videos off, never training."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from locomo.errors import RenderError, first_line
from locomo.evaluation.behavior import format_counts, label_counts
from locomo.evaluation.offscreen import FrameRenderer, model_of
from locomo.evaluation.rendering import write_rollout_video

if TYPE_CHECKING:  # for annotations only: nothing is imported at run time
    from omegaconf import DictConfig

    from locomo.config.schema import LocomoConfig


class TrainingVideos:
    """Every ``video.every`` iterations and at the end: roll out, label, film, log to W&B.

    Failures to render switch videos off for the rest of the run (one line on stderr); training
    goes on. Rollouts use fixed seeds (``seed + 10_000 + i``), so successive videos show the same
    starts under an improving policy.
    """

    def __init__(self, cfg: DictConfig | LocomoConfig, run_dir: Path) -> None:
        self.cfg, self.video = cfg, cfg.video
        self.directory = run_dir / "videos"
        self.enabled = bool(self.video.enabled)
        self._env: Any = None
        self._renderer: FrameRenderer | None = None

    def due(self, iteration: int) -> bool:
        """A video at every ``every``-th iteration and at the last one."""
        every = self.video.every
        return self.enabled and (
            (every > 0 and iteration % every == 0) or iteration == self.cfg.train.iterations
        )

    def maybe_record(
        self, iteration: int, actor: Any, normalizer: Any, logger: Any, env_steps: int
    ) -> dict[str, float]:
        """Make this iteration's video if due; return metrics for the iteration's log row."""
        if not self.due(iteration):
            return {}
        try:
            return self._record(iteration, actor, normalizer, logger, env_steps)
        except Exception as exc:  # videos are a by-product: no failure of theirs may stop training
            reason = str(exc) if isinstance(exc, RenderError) else f"unexpected {first_line(exc)}"
            print(f"locomo: videos off for this run: {reason}", file=sys.stderr)
            self.enabled = False
            try:
                self.close()
            except Exception:  # a renderer that failed half-way may not close cleanly either
                self._renderer = self._env = None
            return {}

    def _record(
        self, iteration: int, actor: Any, normalizer: Any, logger: Any, env_steps: int
    ) -> dict[str, float]:
        from locomo.envs import make_vec_env
        from locomo.evaluation.episodes import rollouts as run_rollouts

        if self._env is None:
            self._env = make_vec_env(self.cfg.env, self.video.episodes, autoreset=False)
        model = model_of(self._env, self.cfg.env.id)
        if self._renderer is None:
            v = self.video
            self._renderer = FrameRenderer(model, v.width, v.height, v.camera, v.quality)
        start = time.perf_counter()
        was_training = actor.training
        actor.eval()
        rollouts = run_rollouts(  # episode i seeded seed + 10_000 + i
            self._env,
            actor,
            normalizer,
            self.cfg.seed + 10_000,
            bool(self.video.deterministic),
            self.cfg.behavior,
            self.video.max_steps,
            record_states=True,
        )
        actor.train(was_training)
        rollout_s = time.perf_counter() - start
        path = self.directory / f"iter_{iteration:06d}.mp4"
        stats = write_rollout_video(path, rollouts, self._renderer, self.video.fps, self.video.columns)
        stats.rollout_s = rollout_s
        counts = label_counts(r.behavior for r in rollouts)
        returns = [r.record.ret for r in rollouts]
        caption = f"iteration {iteration}: {format_counts(counts)}; returns " + ", ".join(
            f"{x:.1f}" for x in returns
        )
        if logger.wandb_run is not None:
            import wandb

            media = wandb.Video(str(path), format="mp4", caption=caption)
            logger.log_media("video/rollouts", media, env_steps)
        metrics = {"video/return_mean": float(np.mean(returns)), **stats.as_metrics()}
        if any(r.behavior is not None for r in rollouts):
            metrics.update({f"video/behavior/{label}": float(n) for label, n in counts.items()})
        return metrics

    def close(self) -> None:
        """Release the renderer and the env."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        if self._env is not None:
            self._env.close()
            self._env = None
