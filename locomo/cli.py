"""``locomo <command> [hydra overrides]``: each command is a Hydra app with its config in conf/.

So ``--help``, ``--cfg job``, ``-m`` (multirun) and ``key=value`` overrides work as in any
Hydra app. User errors (bad config values, unreadable checkpoints) print one line and exit 2;
the other exit statuses are listed in :mod:`locomo.errors` and docs/bad_inputs.md.

Importing this module does not import torch, so a bad command line fails fast.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from locomo.config import (
    CONF_DIR,
    ConfigError,
    PlotConfig,
    refuse_unknown_keys,
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
    EXIT_UNEXPECTED,
    EXIT_USER_ERROR,
    GL_FIX,
    CheckpointError,
    MetricsError,
    NonFiniteError,
    RenderError,
    StoppedBySignal,
    TrainingInterrupted,
    first_line,
    write_traceback,
)

USER_ERRORS: tuple[type[Exception], ...] = (ConfigError, CheckpointError, MetricsError, RenderError)


def exit_for(exc: Exception) -> None:
    """One line on stderr and the exit status of a user-facing error (see locomo.errors)."""
    if isinstance(exc, TrainingInterrupted):
        print(f"locomo: {exc}", file=sys.stderr)
        sys.exit(exc.exit_status)
    print(f"locomo: error: {exc}", file=sys.stderr)
    sys.exit(EXIT_NONFINITE if isinstance(exc, NonFiniteError) else EXIT_USER_ERROR)


def report_unexpected(exc: BaseException, directory: Path | None) -> None:
    """One line for a failure locomo did not foresee, the full traceback to a file; exit 1.

    The traceback goes to ``<directory>/traceback.log`` (the run dir), or to a temporary file
    when there is no run dir of its own (commands that write into the working directory).
    """
    where = write_traceback(exc, directory)
    reason = first_line(exc)
    notes = "".join(f"; {note}" for note in getattr(exc, "__notes__", []))
    saved = f"full traceback in {where}" if where is not None else "the traceback could not be written"
    print(f"locomo: error: unexpected failure ({reason}){notes}; {saved}", file=sys.stderr)
    sys.exit(EXIT_UNEXPECTED)


def _own_output_dir() -> Path | None:
    """This job's run dir, unless it is the working directory (eval, render, replay, plot)."""
    try:
        out = Path(HydraConfig.get().runtime.output_dir)
    except Exception:  # no Hydra job (yet)
        return None
    return None if out.resolve() == Path.cwd().resolve() else out


def user_errors(fn: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Turn every failure into one line on stderr and an exit status (no traceback).

    Bad input: 2. NaN/inf stopped training: 3. SIGINT/SIGTERM (checkpoint saved): 128 + signal.
    Anything else: 1, with the full traceback in the run dir (``traceback.log``).
    """

    @functools.wraps(fn)
    def wrapper(cfg: DictConfig) -> Any:
        try:
            return fn(cfg)
        except (*USER_ERRORS, NonFiniteError, TrainingInterrupted) as exc:
            exit_for(exc)
        except Exception as exc:  # a bug or the system: one line, the traceback to a file
            report_unexpected(exc, _own_output_dir())

    return wrapper


def _writable(path: Path) -> OSError | None:
    """None if ``path`` can be created and written in, else the error saying why not."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return NotADirectoryError(20, "Not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        return PermissionError(13, f"Permission denied: {existing} is not writable")
    return None


# Where each command puts its run dirs when hydra.run.dir / hydra.sweep.dir are not given (the
# first component of the defaults in conf/*.yaml); the others write into the working directory.
DEFAULT_OUTPUT_ROOTS = {name: ("outputs", "multirun") for name in ("train", "variance", "bench")}


def check_run_dir(args: list[str], command: str = "train") -> None:
    """Check now that the run directory can be created and written, so that failing is one clear line.

    (Hydra would fail later with a stack trace.) An explicit ``hydra.run.dir`` is created; for
    one with interpolations (the default ``outputs/<env>/<date>``) the part before the first
    interpolation must be creatable and writable.
    """
    given = {}
    for arg in args:
        for key in ("hydra.run.dir", "hydra.sweep.dir"):
            if arg.startswith(key + "="):
                given[key] = arg.split("=", 1)[1].strip("'\"")
    multirun = "-m" in args or "--multirun" in args
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    roots = DEFAULT_OUTPUT_ROOTS.get(command)
    if key not in given and roots is None:
        return
    value = given.get(key, roots[1] if multirun else roots[0]) if roots else given[key]
    static = value.split("${", 1)[0]
    target = Path(static or ".").expanduser()
    if key in given and "${" not in value:
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(key, value, f"cannot create the run directory ({exc.strerror})") from exc
    problem = _writable(target)
    if problem is not None:
        where = "" if key in given else f" under {Path.cwd()}"
        raise ConfigError(
            key,
            value,
            f"cannot create or write the run directory{where} ({problem.strerror}); run from a writable "
            f"directory or set {key}=<a writable directory>",
        )


def run_dir() -> Path:
    """The Hydra output directory of this job."""
    return Path(HydraConfig.get().runtime.output_dir)


# Set by main(): where this train job writes Hydra's ``.hydra/`` record itself (None: Hydra does,
# or nobody, as on a resume that keeps the run's original record).
_HYDRA_RECORD: dict[str, str | None] = {"subdir": None}


@hydra.main(version_base=None, config_path=str(CONF_DIR), config_name="train")
@user_errors
def train(cfg: DictConfig) -> float:
    """Train a policy; returns the final mean episodic return (for Hydra sweepers).

    With ``resume=`` the config is the checkpoint's (see :mod:`locomo.resume`) and the run
    continues in the checkpoint's run dir. A new run refuses a run dir that holds another run
    (:func:`locomo.rundir.claim_run_dir`).
    """
    job_cfg = cfg
    resume_state, resume_path = None, None
    if cfg.resume is not None:
        from locomo.resume import resumed_config

        cfg, resume_path, resume_state = resumed_config(cfg, list(HydraConfig.get().overrides.task))
    validate_config(cfg)
    from locomo.checkpoint import RunDirLock  # heavy imports only after the config is known good
    from locomo.preflight import check_resources
    from locomo.rundir import claim_run_dir, write_hydra_record

    check_resources(cfg)
    out = run_dir()
    with RunDirLock(out):  # one process per run dir: a second start or resume is refused, untouched
        if resume_state is None:
            removed = claim_run_dir(out, cfg.logger.metrics_file, bool(cfg.overwrite))
            if removed:
                names = ", ".join(removed)
                print(
                    f"locomo: warning: overwrite=true: removed the previous run's {names} in {out}",
                    file=sys.stderr,
                )
        subdir = _HYDRA_RECORD["subdir"]
        if subdir is not None:
            hydra_cfg = HydraConfig.get()
            write_hydra_record(out, subdir, job_cfg, hydra_cfg, list(hydra_cfg.overrides.task))
        from locomo.runner import Runner

        runner = Runner(cfg, out, resume=resume_state, resume_path=resume_path)
        OmegaConf.save(cfg, out / "config.yaml", resolve=True)
        if resume_state is not None:
            print(
                f"locomo: resuming {out} at iteration {runner.iteration} ({runner.env_steps} env steps) "
                f"from {resume_path}"
            )
        metrics = runner.run()
    ret = metrics.get("rollout/return_mean", float("nan"))
    summary = f"mean return {ret:.2f}" if ret == ret else "no episode finished yet (mean return undefined)"
    print(f"locomo: trained {cfg.train.iterations} iterations; {summary}; run dir {out}")
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
    from locomo.preflight import check_resources

    check_resources(cfg)
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

    if OmegaConf.is_missing(cfg, "runs"):
        raise ConfigError(
            "runs", None, "give the folder holding the runs, e.g. locomo plot runs=multirun/<date_time>"
        )
    refuse_unknown_keys(cfg, PlotConfig)
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


def hydra_record_args(args: list[str]) -> tuple[list[str], str | None]:
    """``train`` arguments with Hydra's ``.hydra/`` record switched off, and where the job writes it.

    Hydra writes the record before the job starts, so a start that the job then refuses (the
    run dir is in use, or holds another run) would rewrite the record of the run in progress.
    The job writes it itself once the run dir is its own. A resume keeps the run's record
    (``hydra.output_subdir=null`` already); an explicit ``hydra.output_subdir=<dir>`` is honoured.
    """
    values = [a.split("=", 1)[1].strip("'\"") for a in args if a.startswith("hydra.output_subdir=")]
    if values and values[-1].lower() in ("null", "none", "~"):
        return args, None
    subdir = values[-1] if values else ".hydra"
    kept = [a for a in args if not a.startswith("hydra.output_subdir=")]
    # Next to the other overrides: argparse refuses overrides on both sides of a flag (--cfg job).
    at = next((i for i, a in enumerate(kept) if "=" in a and not a.startswith("-")), len(kept))
    return [*kept[:at], "hydra.output_subdir=null", *kept[at:]], subdir


# MUJOCO_GL values that load an OpenGL library when mujoco is imported.
_GL_LIBRARIES = ("egl", "osmesa", "glx", "glfw")


def check_mujoco_import(command: str) -> None:
    """A MUJOCO_GL whose library is missing (e.g. osmesa without libOSMesa) breaks ``import mujoco``.

    Then render and replay fail with one line naming the fix; the other commands go on with
    ``MUJOCO_GL=disable`` (training without videos, as when rendering fails later).
    """
    value = os.environ.get("MUJOCO_GL", "").strip().lower()
    if value not in _GL_LIBRARIES or command in ("plot",):
        return
    try:
        import mujoco  # noqa: F401
    except Exception as exc:  # PyOpenGL fails inside mujoco's import in its own ways
        for name in [m for m in sys.modules if m.split(".")[0] in ("mujoco", "OpenGL")]:
            del sys.modules[name]  # a half-imported module would fail again
        problem = f"MUJOCO_GL={value} does not work here ({first_line(exc)})"
        if command in ("render", "replay"):
            raise RenderError(f"{problem}; {GL_FIX}") from exc
        os.environ["MUJOCO_GL"] = "disable"
        print(f"locomo: warning: {problem}: going on without videos; {GL_FIX}", file=sys.stderr)


@contextmanager
def sigterm_as_exception(command: str) -> Iterator[None]:
    """SIGTERM raises :class:`StoppedBySignal` (one line, exit 143) instead of killing silently.

    The training loop installs its own handler (checkpoint, then exit) while it runs; this one
    covers start-up and shutdown.
    """
    during = "outside the training loop (no trained iteration was lost)" if command == "train" else ""

    def handle(signum: int, frame: object) -> None:
        raise StoppedBySignal(signum, during)

    try:
        previous = signal.signal(signal.SIGTERM, handle)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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
    _HYDRA_RECORD["subdir"] = None
    # PyOpenGL logs an INFO line on import, which Hydra's job logging would print.
    logging.getLogger("OpenGL").setLevel(logging.WARNING)
    try:
        with sigterm_as_exception(command):
            check_mujoco_gl()
            check_mujoco_import(command)
            args = argv[1:]
            if command == "train":
                from locomo.resume import prepare_resume_argv

                args = prepare_resume_argv(args)
                args, _HYDRA_RECORD["subdir"] = hydra_record_args(args)
            check_run_dir(args, command)
            sys.argv = [f"locomo {command}", *args]
            COMMANDS[command]()
    except USER_ERRORS as exc:  # raised before Hydra starts (resume, run dir, MUJOCO_GL)
        exit_for(exc)
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM outside the training loop, or a second signal in it
        message = str(exc) or "interrupted; the checkpoints already on disk are kept"
        print(f"locomo: {message}", file=sys.stderr)
        sys.exit(getattr(exc, "exit_status", 130))
    except Exception as exc:  # before Hydra's job (no run dir yet): one line, the traceback to a file
        report_unexpected(exc, None)
