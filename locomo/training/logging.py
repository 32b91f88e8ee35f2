"""Metrics to a local JSON-lines file and to Weights & Biases, through one interface.

:class:`MetricsLogger` appends each row to the metrics file and mirrors it to W&B (with the
checkpoints as model artifacts and a final evaluation in the run's summary); :class:`NoLogger` is
the same interface for a rank that does not write. Reading the file back, and cutting a resumed
run's rows back to its checkpoint: :mod:`locomo.runs.metrics_file`.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from locomo.errors import first_line
from locomo.runs.metrics_file import missing_iterations, read_metrics, truncate_metrics

if TYPE_CHECKING:  # for annotations only: nothing is imported at run time
    from omegaconf import DictConfig

    from locomo.config.schema import LocomoConfig, WandbConfig


def wandb_logged_in() -> bool:
    """True when W&B has an API key (env var or netrc) — without contacting the server."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        import netrc

        netrc_path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
        if netrc_path.is_file():
            auth = netrc.netrc(str(netrc_path)).authenticators("api.wandb.ai")
            return auth is not None
    except (OSError, netrc.NetrcParseError):
        return False
    return False


def resolve_wandb_mode(mode: str) -> str:
    """``auto`` becomes ``online`` when logged in, ``offline`` otherwise (never blocks on network)."""
    if mode == "auto":
        return "online" if wandb_logged_in() else "offline"
    return mode


def sync_command(run: Any, run_id: str | None = None) -> str:
    """``wandb sync <offline run dir>``; for a resumed run (``run_id``), every offline dir of it."""
    sync_dir = Path(run.settings.sync_dir)
    if run_id is None:
        return f"wandb sync {shlex.quote(str(sync_dir))}"
    # A resume logs into a new offline-run-<time>-<id> dir: sync the earlier ones too.
    return f"wandb sync {shlex.quote(str(sync_dir.parent))}/offline-run-*-{run.id}"


def wandb_run_name(config: dict[str, Any]) -> str:
    """The default W&B run name, ``<env>-<algo preset>-s<seed>``: e.g. ``humanoid-walk-s0``."""
    algo = config.get("algo", {}).get("name", "algo")
    return f"{config.get('env', {}).get('name', 'env')}-{algo}-s{config.get('seed', 0)}"


def wandb_tags(config: dict[str, Any], extra: Any = ()) -> list[str]:
    """The run's tags: env, algo preset, ``overlap`` / ``reuse`` when on, then ``extra`` (config order)."""
    train, algo = config.get("train", {}), config.get("algo", {})
    tags = [str(config.get("env", {}).get("name", "")), str(algo.get("name", ""))]
    tags += ["overlap"] if train.get("overlap") else []
    tags += ["reuse"] if int(algo.get("reuse_batches", 1) or 1) > 1 else []
    tags += [str(t).strip() for t in extra]
    return [t for i, t in enumerate(tags) if t and t not in tags[:i]]  # W&B keeps a tag once anyway


def policy_state(state: dict[str, Any]) -> dict[str, Any]:
    """A training checkpoint's policy alone, as ``locomo export`` writes it (no critic, optimiser,
    env state or kept batches): what a model artifact holds, under 2 MB for the walker."""
    from locomo.runs.checkpoint_format import (  # torch: only when a policy is logged
        FORMAT,
        POLICY_KEYS,
        VERSION,
    )

    full = {"format": FORMAT, "version": VERSION, **state}
    return {key: full[key] for key in POLICY_KEYS if key in full}


def final_eval(cfg: DictConfig | LocomoConfig, actor: Any, normalizer: Any, episodes: int) -> dict[str, Any]:
    """``episodes`` deterministic episodes of the trained policy, seeded 0, 1, ... as ``locomo eval``
    seeds them (so ``locomo eval checkpoint=<run> episodes=N mode=deterministic`` gives the same
    numbers), as flat ``eval/...`` summary keys: return, length, distance, label counts."""
    from locomo.envs import make_vec_env
    from locomo.evaluation.episodes import EPISODES_AT_ONCE, rollouts, summarize

    was_training = actor.training
    actor.eval()
    done: list[Any] = []
    try:  # in chunks, as locomo eval runs them: memory stays flat however many episodes
        for start in range(0, episodes, EPISODES_AT_ONCE):
            env = make_vec_env(cfg.env, min(EPISODES_AT_ONCE, episodes - start), autoreset=False)
            try:
                done += rollouts(env, actor, normalizer, start, True, cfg.behavior)
            finally:
                env.close()
    finally:
        actor.train(was_training)
    summary = summarize(done)
    out: dict[str, Any] = {
        f"eval/{k}": v for k, v in summary.items() if k not in ("per_episode", "labels") and v is not None
    }
    out |= {f"eval/labels/{label}": n for label, n in summary["labels"].items()}
    return out


class ModelArtifacts:
    """Uploads each checkpoint's policy (:func:`policy_state`) as a version of the W&B model artifact
    ``model-<run id>``: alias ``latest`` on the newest, ``best`` on the one with the highest training
    return ``rollout/return_mean`` (no eval runs during training to rank them by), ``iter_XXXXXX``.

    W&B keeps an alias on one version of an artifact at a time, so logging it again moves it.
    An upload that fails says so once and turns uploads off; training goes on.
    """

    def __init__(self, run: Any, best_return: float = -math.inf) -> None:
        self.run = run
        self.name = f"model-{run.id}"  # run ids are [a-z0-9]: a valid artifact name
        self.best_return = best_return
        self.uploaded = 0

    def log(self, path: Path, state: dict[str, Any], train_return: float) -> None:
        """A version for the checkpoint ``path`` (its ``state`` as saved), ranked by ``train_return``."""
        import wandb

        counters = state.get("counters", {})
        iteration = int(counters.get("iteration", 0))
        aliases = ["latest", f"iter_{iteration:06d}"]
        if math.isfinite(train_return) and train_return > self.best_return:  # NaN: no episode ended yet
            self.best_return = train_return
            aliases.append("best")
        metadata = {
            **{k: v for k, v in counters.items() if isinstance(v, int | float)},
            "rollout/return_mean": train_return if math.isfinite(train_return) else None,
            "checkpoint": str(path),
        }
        artifact = wandb.Artifact(self.name, type="model", metadata=metadata)
        # Written to a temporary file: add_file copies it into W&B's staging area at once.
        with tempfile.TemporaryDirectory(prefix="locomo-policy-") as tmp:
            from locomo.runs.checkpoint import save_atomic

            policy = Path(tmp) / "policy.pt"
            save_atomic(policy_state(state), policy)
            artifact.add_file(str(policy), name="policy.pt")
        self.run.log_artifact(artifact, aliases=aliases)
        self.uploaded += 1


def best_checkpoint_return(rows: list[dict[str, Any]], checkpoint_every: int) -> float:
    """The highest ``rollout/return_mean`` of the rows at checkpointed iterations (a resumed run's
    earlier uploads, so that ``best`` stays on the best of the whole run); -inf if none."""
    returns = [
        float(r["rollout/return_mean"])
        for r in rows
        if isinstance(r.get("rollout/return_mean"), int | float)
        and isinstance(r.get("iteration"), int | float)
        and checkpoint_every > 0
        and int(r["iteration"]) % checkpoint_every == 0
    ]
    return max(returns, default=-math.inf)


def remove_new_dirs(parent: Path, pattern: str, before: set[Path]) -> list[Path]:
    """Remove the directories matching ``pattern`` in ``parent`` that are not in ``before``;
    return those that could not be removed."""
    kept = []
    for path in sorted(set(parent.glob(pattern)) - before):
        if path.is_dir() and not path.is_symlink():
            try:
                shutil.rmtree(path)
            except OSError:
                kept.append(path)
    return kept


class MetricsLogger:
    """Appends one JSON object per log call to ``metrics.jsonl`` and mirrors it to W&B.

    The step axis is env steps so far; it never goes backwards. ``resume_at`` (a resumed run's
    env steps) first drops the rows logged after that point, so the axis has no repeats.
    """

    def __init__(
        self,
        run_dir: Path,
        metrics_file: str,
        wandb_cfg: DictConfig | WandbConfig,
        config: dict[str, Any],
        run_id: str | None = None,
        resume_at: int | None = None,
    ) -> None:
        from locomo.errors import MetricsError

        self.path = run_dir / metrics_file
        self._last_step = -1
        self._failed = False  # a write failed (and was reported): closing may fail the same way
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if resume_at is not None:
                damaged: list[int] = []
                truncate_metrics(self.path, resume_at, damaged)
                if damaged:
                    gaps = missing_iterations(read_metrics(self.path))
                    print(
                        f"locomo: warning: {self.path}: {len(damaged)} unreadable row(s) (line "
                        f"{', '.join(map(str, damaged))}) moved to {self.path.name}.damaged; "
                        f"iterations without a metrics row: {', '.join(map(str, gaps)) or 'unknown'}",
                        file=sys.stderr,
                    )
                self._last_step = resume_at
            self._file = self.path.open("a", encoding="utf-8")
        except OSError as exc:  # a directory in its place, no permission, a full disk
            raise MetricsError(
                f"cannot write metrics to {self.path}: {exc.strerror or exc}; move it away or set "
                "logger.metrics_file=<another file name>"
            ) from exc
        self.wandb_run: Any = None
        self.models: ModelArtifacts | None = None
        self.eval_episodes = int(getattr(wandb_cfg, "eval_episodes", 0))
        self.wandb_mode = resolve_wandb_mode(wandb_cfg.mode)
        if self.wandb_mode != "disabled":
            self.wandb_run = self._init_wandb(run_dir, wandb_cfg, config, run_id)
        if self.wandb_run is not None and getattr(wandb_cfg, "log_model", False):
            every = int(config.get("train", {}).get("checkpoint_every", 0) or 0)
            best = (
                best_checkpoint_return(read_metrics(self.path), every) if resume_at is not None else -math.inf
            )
            self.models = ModelArtifacts(self.wandb_run, best)

    def _init_wandb(
        self, run_dir: Path, wandb_cfg: DictConfig | WandbConfig, config: dict[str, Any], run_id: str | None
    ) -> Any:
        """Start (or, with ``run_id``, continue) the W&B run.

        Online and the server unreachable or not logged in: log offline instead, so nothing is
        lost (``wandb sync`` uploads it later). Offline failing too: no W&B, training goes on.
        """
        import wandb

        def init(mode: str) -> Any:
            timeout = getattr(wandb_cfg, "init_timeout", None)
            extra = {} if timeout is None else {"init_timeout": float(timeout)}
            settings = wandb.Settings(silent=True, console="off", **extra)
            return wandb.init(
                project=wandb_cfg.project,
                entity=wandb_cfg.entity,
                group=wandb_cfg.group,
                name=wandb_cfg.name or wandb_run_name(config),
                tags=wandb_tags(config, getattr(wandb_cfg, "tags", None) or ()),
                config=config,
                dir=str(run_dir),
                mode=mode,
                id=run_id,
                resume="allow" if run_id else None,
                settings=settings,
            )

        chosen = self.wandb_mode  # what was asked for (auto resolved), before any fallback
        wandb_dir = run_dir / "wandb"
        before = set(wandb_dir.glob("run-*"))  # an online run's own dirs (a resumed run has some)
        try:
            run = init(self.wandb_mode)
        except Exception as exc:  # W&B unreachable or misconfigured: keep training, say so once
            reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            if self.wandb_mode != "online":
                print(f"locomo: W&B disabled for this run ({reason})", file=sys.stderr)
                return None
            # The failed attempt leaves a run-<time>-<id> dir that holds nothing to sync: it would
            # sit beside the offline run, looking like a second run of this one. It goes.
            kept = remove_new_dirs(wandb_dir, "run-*", before)
            left = f"; could not remove {', '.join(map(str, kept))}, the failed attempt's dir" if kept else ""
            try:
                run = init("offline")
            except Exception as exc2:
                print(f"locomo: W&B disabled for this run ({reason}; offline: {exc2}){left}", file=sys.stderr)
                return None
            self.wandb_mode = "offline"
            print(
                f"locomo: W&B online failed ({reason}); logging offline to {run.dir}; "
                f"upload later with: {sync_command(run, run_id)}{left}",
                file=sys.stderr,
            )
        if chosen == "offline":  # asked for, or `auto` without a login: say where it goes, once
            why = " (not logged in; `wandb login` logs online)" if wandb_cfg.mode == "auto" else ""
            print(
                f"locomo: W&B offline{why}: run in {Path(run.dir).parent}; upload later with: "
                f"{sync_command(run, run_id)}",
                file=sys.stderr,
            )
        run.define_metric("env_steps")
        run.define_metric("*", step_metric="env_steps")
        return run

    @property
    def run_id(self) -> str | None:
        return None if self.wandb_run is None else str(self.wandb_run.id)

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Record metrics at env step ``step`` (must not decrease)."""
        if step < self._last_step:
            raise ValueError(f"step went backwards: {step} < {self._last_step}")
        self._last_step = step
        row = {
            "env_steps": step,
            **{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()},
        }
        try:
            self._file.write(json.dumps(row) + "\n")
            self._file.flush()
        except OSError as exc:  # disk full, quota, file system gone read-only
            from locomo.errors import MetricsError

            self._failed = True
            raise MetricsError(f"cannot write metrics to {self.path}: {exc.strerror or exc}") from exc
        if self.wandb_run is not None:
            self.wandb_run.log({"env_steps": step, **metrics})

    def log_checkpoint(
        self, path: Path | None, state: dict[str, Any] | None, metrics: dict[str, float]
    ) -> None:
        """Upload the checkpoint just written to ``path`` (``state``, as saved) as a model artifact,
        ranked by its iteration's ``metrics``; no-op without W&B or with ``log_model=false``.
        A failure is said once and turns uploads off: it must not stop training."""
        if self.models is None or path is None or state is None:
            return
        ret = metrics.get("rollout/return_mean", float("nan"))
        try:
            self.models.log(path, state, float(ret) if isinstance(ret, int | float) else float("nan"))
        except Exception as exc:
            print(f"locomo: warning: W&B model upload off for this run ({first_line(exc)})", file=sys.stderr)
            self.models = None

    def finish_summary(
        self, cfg: DictConfig | LocomoConfig, actor: Any, normalizer: Any, last_checkpoint: Path | None
    ) -> None:
        """At the end of training: the run's summary gets the final deterministic eval
        (``logger.wandb.eval_episodes``), the last checkpoint and the model artifact; the last
        training metrics and counters are there already (W&B keeps each key's last value)."""
        if self.wandb_run is None:
            return
        summary: dict[str, Any] = {}
        if last_checkpoint is not None:
            summary["checkpoint"] = str(last_checkpoint)
        if self.models is not None and self.models.uploaded:
            summary["model/artifact"] = f"{self.models.name}:latest"
            if math.isfinite(self.models.best_return):
                summary["model/best_return"] = self.models.best_return
        if self.eval_episodes > 0:
            try:
                summary |= final_eval(cfg, actor, normalizer, self.eval_episodes)
            except Exception as exc:  # the eval is a by-product: training is done and saved
                print(f"locomo: warning: final eval for W&B failed ({first_line(exc)})", file=sys.stderr)
        try:
            self.wandb_run.summary.update(summary)
        except Exception as exc:  # as above: nothing of the training itself depends on it
            print(f"locomo: warning: W&B summary not updated ({first_line(exc)})", file=sys.stderr)

    def log_media(self, key: str, media: Any, step: int) -> None:
        """Log a W&B media object (video, image) at ``step``; no-op without W&B."""
        if self.wandb_run is not None:
            self.wandb_run.log({"env_steps": step, key: media})

    def close(self) -> None:
        """Close the file and finish the W&B run.

        Closing after a failed write (a full disk) fails the same way; that was reported
        already, so it is not raised again over the error that stopped training.
        """
        try:
            self._file.close()
        except OSError:
            if not self._failed:
                raise
        if self.wandb_run is not None:
            run, self.wandb_run = self.wandb_run, None
            run.finish()


class NoLogger:
    """What ranks other than 0 of a multi-process job log: nothing (rank 0 logs the job's metrics)."""

    run_id: str | None = None
    wandb_run: Any = None

    def log(self, metrics: dict[str, float], step: int) -> None:
        pass

    def log_media(self, key: str, media: Any, step: int) -> None:
        pass

    def log_checkpoint(
        self, path: Path | None, state: dict[str, Any] | None, metrics: dict[str, float]
    ) -> None:
        pass

    def finish_summary(
        self, cfg: DictConfig | LocomoConfig, actor: Any, normalizer: Any, last_checkpoint: Path | None
    ) -> None:
        pass

    def close(self) -> None:
        pass
