"""``locomo <command> [hydra overrides]``: each command is a Hydra app with its config in conf/.

So ``--help``, ``--cfg job``, ``-m`` (multirun) and ``key=value`` overrides work as in any
Hydra app. User errors (bad config values, unreadable checkpoints) print one line and exit 2;
the other exit statuses are listed in :mod:`locomo.errors` and docs/bad_inputs.md.

Importing this module does not import torch, so a bad command line fails fast.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from locomo.config import (
    CONF_DIR,
    ConfigError,
    register_configs,
    validate_bench,
    validate_config,
    validate_eval_config,
    validate_export_config,
    validate_plot,
    validate_render_config,
    validate_replay_config,
)
from locomo.errors import (
    EXIT_NONFINITE,
    EXIT_USER_ERROR,
    CheckpointError,
    NonFiniteError,
    RenderError,
    TrainingInterrupted,
)

USER_ERRORS: tuple[type[Exception], ...] = (ConfigError, CheckpointError, RenderError)


def exit_for(exc: Exception) -> None:
    """One line on stderr and the exit status of a user-facing error (see locomo.errors)."""
    if isinstance(exc, TrainingInterrupted):
        print(f"locomo: {exc}", file=sys.stderr)
        sys.exit(exc.exit_status)
    print(f"locomo: error: {exc}", file=sys.stderr)
    sys.exit(EXIT_NONFINITE if isinstance(exc, NonFiniteError) else EXIT_USER_ERROR)


def user_errors(fn: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Turn user errors into one line on stderr and an exit status (no traceback).

    Bad input: 2. NaN/inf stopped training: 3. SIGINT/SIGTERM (checkpoint saved): 128 + signal.
    """

    @functools.wraps(fn)
    def wrapper(cfg: DictConfig) -> Any:
        try:
            return fn(cfg)
        except (*USER_ERRORS, NonFiniteError, TrainingInterrupted) as exc:
            exit_for(exc)

    return wrapper


def check_run_dir(args: list[str]) -> None:
    """Create an explicitly given ``hydra.run.dir`` now, so that failing to is one clear line.

    (Hydra would fail later with a stack trace.) Directories with interpolations (the default
    ``outputs/<env>/<date>``) are left to Hydra.
    """
    for arg in args:
        if arg.startswith("hydra.run.dir="):
            value = arg.split("=", 1)[1].strip("'\"")
            if "${" in value:
                continue
            try:
                Path(value).expanduser().mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(
                    "hydra.run.dir", value, f"cannot create the run directory ({exc.strerror})"
                ) from exc


def run_dir() -> Path:
    """The Hydra output directory of this job."""
    return Path(HydraConfig.get().runtime.output_dir)


@hydra.main(version_base=None, config_path=str(CONF_DIR), config_name="train")
@user_errors
def train(cfg: DictConfig) -> float:
    """Train a policy; returns the final mean episodic return (for Hydra sweepers).

    With ``resume=`` the config is the checkpoint's (see :mod:`locomo.resume`) and the run
    continues in the checkpoint's run dir.
    """
    resume_state, resume_path = None, None
    if cfg.resume is not None:
        from locomo.resume import resumed_config

        cfg, resume_path, resume_state = resumed_config(cfg, list(HydraConfig.get().overrides.task))
    validate_config(cfg)
    from locomo.checkpoint import RunDirLock  # heavy imports only after the config is known good
    from locomo.runner import Runner

    out = run_dir()
    with RunDirLock(out):  # one process per run dir: a resume of a run still going is refused
        runner = Runner(cfg, out, resume=resume_state, resume_path=resume_path)
        OmegaConf.save(cfg, out / "config.yaml", resolve=True)
        if resume_state is not None:
            print(
                f"locomo: resuming {out} at iteration {runner.iteration} ({runner.env_steps} env steps) "
                f"from {resume_path}"
            )
        metrics = runner.run()
    ret = metrics.get("rollout/return_mean", float("nan"))
    print(f"locomo: trained {cfg.train.iterations} iterations; mean return {ret:.2f}; run dir {out}")
    return ret


@hydra.main(version_base=None, config_path=str(CONF_DIR), config_name="render")
@user_errors
def render(cfg: DictConfig) -> None:
    """Labelled videos of a checkpoint's policy: a grid, one per episode, a PNG contact sheet."""
    validate_render_config(cfg)
    from locomo.video import render_main

    render_main(cfg)


@hydra.main(version_base=None, config_path=str(CONF_DIR), config_name="eval")
@user_errors
def evaluate(cfg: DictConfig) -> None:
    """Returns, lengths, distances and behaviour counts of a checkpoint's policy (table + JSON)."""
    validate_eval_config(cfg)
    from locomo.evaluation import eval_main

    eval_main(cfg)


@hydra.main(version_base=None, config_path=str(CONF_DIR), config_name="export")
@user_errors
def export(cfg: DictConfig) -> None:
    """A checkpoint's policy alone (actor + normaliser) for shipping, evaluated, with a JSON summary."""
    validate_export_config(cfg)
    from locomo.evaluation import export_main

    export_main(cfg)


@hydra.main(version_base=None, config_path=str(CONF_DIR), config_name="replay")
@user_errors
def replay(cfg: DictConfig) -> None:
    """One seeded episode in the MuJoCo viewer, or (headless) as a video."""
    validate_replay_config(cfg)
    from locomo.replay import replay_main

    replay_main(cfg)


@hydra.main(version_base=None, config_path=str(CONF_DIR), config_name="variance")
@user_errors
def variance(cfg: DictConfig) -> None:
    """Measure each estimator's gradient variance over independent batches from one policy."""
    validate_config(cfg)
    from locomo import analysis

    out = run_dir()
    table = analysis.measure_gradient_variance(cfg, out)
    analysis.write_json(table, out / "gradient_variance.json")
    batch = cfg.train.steps_per_iteration
    title = f"{cfg.env.name}: policy-gradient variance over {cfg.batches} batches of {batch} steps"
    analysis.plot_variance(table, title, out / "gradient_variance.png")
    print(f"{'estimator':<24}{'variance':>14}{'|mean grad|':>14}{'rel. variance':>15}")
    for name, row in table.items():
        print(f"{name:<24}{row['variance']:>14.4g}{row['mean_norm']:>14.4g}{row['relative_variance']:>15.4g}")
    print(f"locomo: wrote {out / 'gradient_variance.json'} and {out / 'gradient_variance.png'}")


@hydra.main(version_base=None, config_path=str(CONF_DIR), config_name="plot")
@user_errors
def plot(cfg: DictConfig) -> None:
    """Plot a metric of several runs against env steps (mean over seeds, min-max band)."""
    from locomo import analysis

    runs = Path(cfg.runs).expanduser()
    if not runs.is_dir():
        raise ConfigError("runs", cfg.runs, "must be a folder holding runs")
    validate_plot(cfg)
    if cfg.kind == "behavior":
        out = Path(cfg.out) if cfg.out else runs / "behavior.png"
        last = analysis.plot_behavior(analysis.metrics_files(runs), cfg.window, out)
        mix = ", ".join(f"{label} {share:.0%}" for label, share in last.items() if share > 0)
        print(f"last window: {mix or 'no finished episodes'}")
        print(f"locomo: wrote {out}")
        return
    out = Path(cfg.out) if cfg.out else runs / "curves.png"
    counts = analysis.plot_curves(runs, cfg.metric, list(cfg.group_by) if cfg.group_by else None, out)
    for label, n in counts.items():
        print(f"{label}: {n} run(s)")
    print(f"locomo: wrote {out}")


@hydra.main(version_base=None, config_path=str(CONF_DIR), config_name="bench")
@user_errors
def bench(cfg: DictConfig) -> None:
    """Measure sampler and training throughput against Gymnasium, EnvPool, raw mj_step and SB3."""
    validate_bench(cfg)
    from locomo.bench import main as run_bench

    run_bench(cfg, run_dir())


COMMANDS: dict[str, Callable[[], Any]] = {
    "train": train,
    "render": render,
    "eval": evaluate,
    "replay": replay,
    "export": export,
    "variance": variance,
    "plot": plot,
    "bench": bench,
}

USAGE = """usage: locomo <command> [hydra overrides]

commands:
  train     train a policy (see `locomo train --help` for its config)
  render    labelled videos of a checkpoint's rollouts: grid, per episode, PNG sheet
  eval      return, length, distance and behaviour counts over N seeded episodes (table + JSON)
  replay    one episode in the MuJoCo viewer; headless: a video instead
  export    a checkpoint's policy alone (under 2 MB for the walker), evaluated, with a JSON summary
  variance  compare the estimators' gradient variance at one policy (table, JSON, PNG)
  plot      return curves of several runs, e.g. a multirun comparing estimators
  bench     sampler and training throughput vs Gymnasium, EnvPool, raw mj_step, SB3 (Humanoid-v5)

examples:
  locomo train
  locomo train env=cartpole algo=baseline train.iterations=50
  locomo train -m seed=0,1,2 algo.baseline=none,mean,optimal
  locomo render checkpoint=outputs/humanoid/<run>/checkpoints/last.pt episodes=6
  locomo eval checkpoint=outputs/humanoid/<run> episodes=20 seed=0
  locomo replay checkpoint=outputs/humanoid/<run> seed=0
  locomo replay checkpoint=walker                      # the walker shipped in assets/
  locomo export checkpoint=outputs/humanoid/<run> out=assets/walker.pt
  locomo plot runs=multirun/<date_time>
  locomo variance env=humanoid_forward batches=16
  locomo bench quick=true
  locomo train resume=outputs/humanoid/2025-01-01_12-00-00 train.iterations=600
"""


# What MuJoCo's Python bindings accept in MUJOCO_GL on Linux; anything else fails `import mujoco`.
MUJOCO_GL_VALUES = ("egl", "osmesa", "glfw", "glx", "disable")


def check_mujoco_gl() -> None:
    """A bad MUJOCO_GL makes every `import mujoco` raise: say so in one line, before anything runs."""
    value = os.environ.get("MUJOCO_GL")
    if value is not None and value.lower().strip() not in (*MUJOCO_GL_VALUES, "disabled", "off", ""):
        raise ConfigError(
            "MUJOCO_GL (environment variable)",
            value,
            f"allowed values are {', '.join(MUJOCO_GL_VALUES)}; unset, locomo tries egl, then osmesa",
        )


def main() -> None:
    """Entry point of the ``locomo`` script."""
    register_configs()
    argv = sys.argv[1:]
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    command = argv[0]
    if command not in COMMANDS:
        print(
            f"locomo: error: unknown command {command!r}; commands are {', '.join(COMMANDS)}", file=sys.stderr
        )
        sys.exit(2)
    try:
        check_mujoco_gl()
        args = argv[1:]
        if command == "train":
            from locomo.resume import prepare_resume_argv

            args = prepare_resume_argv(args)
        check_run_dir(args)
        sys.argv = [f"locomo {command}", *args]
        COMMANDS[command]()
    except USER_ERRORS as exc:  # raised before Hydra starts (resume, run dir, MUJOCO_GL)
        exit_for(exc)
    except KeyboardInterrupt as exc:  # Ctrl-C outside the training loop, or a second signal inside it
        message = str(exc) or "interrupted; the checkpoints already on disk are kept"
        print(f"locomo: {message}", file=sys.stderr)
        sys.exit(getattr(exc, "exit_status", 130))
