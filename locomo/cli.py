"""``locomo <command> [hydra overrides]``: dispatch to the command's module in :mod:`locomo.commands`,
which Hydra runs as an app with its config in ``locomo/conf/``.

So ``--help``, ``--cfg job``, ``-m`` (multirun) and ``key=value`` overrides work as in any
Hydra app. User errors (bad config values, unreadable checkpoints) print one line and exit 2;
the other exit statuses are listed in :mod:`locomo.errors` and docs/bad_inputs.md. The command
line is composed once before Hydra's app runs (:func:`locomo.config.composition.check_composition`), so
that a typo (an unknown key or group option, a value of the wrong type) is such a line too, not
Hydra's message. Then the command's ``prepare(args)``, where it has one, decides what its job
needs beyond the config (a :class:`locomo.launch.Launch`: a resume's checkpoint, the run dir, ...),
and :func:`run_hydra_app` runs its Hydra app with that object handed to the job.

Importing this module does not import torch, so a bad command line fails fast.
"""

from __future__ import annotations

import sys

# What a Ctrl-C before Hydra's job says (before any import, so that the guard below can say it).
INTERRUPTED_STARTING = "interrupted while starting up; nothing was written"

# Ctrl-C while the imports below run (about half a second of every start: Hydra, OmegaConf, the
# commands' registry) would print an import traceback: one line and exit 130 instead, as for an
# interrupt later in the start-up. Every import is inside the guard (``import sys`` above, a
# built-in module, is already loaded), and ``import locomo`` before this module imports nothing
# heavy (Gymnasium is registered lazily, see locomo/__init__.py), so no moment of a start is left
# unguarded but the interpreter's own start and the console script's ``import re``.
try:
    import contextlib
    import signal

    # A library may also swallow the Ctrl-C of an import: a bare ``except:`` around an optional
    # import of its own, or ctypes, which turns an interrupt inside a conversion into an
    # ``ArgumentError``. The start would then go on and train as if nothing had come. So every
    # SIGINT of the start-up is also counted here, and :func:`end_start_up` stops on the count.
    _start_up_sigints: list[int] = []

    def _count_sigint(signum: int, frame: object) -> None:
        _start_up_sigints.append(signum)
        signal.default_int_handler(signum, frame)  # KeyboardInterrupt, as always

    def _watch_sigint() -> None:
        """Count SIGINTs from now until :func:`end_start_up` (unless SIGINT is ignored, as in a
        shell's background job, or this is not the main thread)."""
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            with contextlib.suppress(ValueError):  # not the main thread: signals are not its to handle
                signal.signal(signal.SIGINT, _count_sigint)

    _watch_sigint()

    import functools
    import logging
    import os
    from collections.abc import Callable, Iterator
    from contextlib import contextmanager
    from pathlib import Path
    from types import ModuleType
    from typing import Any

    import hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import DictConfig

    from locomo.cli_help import register_help_resolver
    from locomo.commands import COMMANDS
    from locomo.commands import load as load_command
    from locomo.config.composition import check_composition
    from locomo.config.overrides import check_overrides
    from locomo.config.schema import register_configs
    from locomo.errors import (
        EXIT_NONFINITE,
        EXIT_UNEXPECTED,
        EXIT_USER_ERROR,
        GL_FIX,
        CheckpointError,
        ConfigError,
        DistributedError,
        MetricsError,
        NonFiniteError,
        RenderError,
        StoppedBySignal,
        TrainingInterrupted,
        first_line,
        interrupt_behind,
        say,
        write_traceback,
    )
    from locomo.launch import PRINT_ONLY_FLAGS, Launch
    from locomo.messages import job_messages
    from locomo.paths import CONF_DIR
    from locomo.runs.hydra_job import check_run_dir
    from locomo.training.signals import handled_stop_signals
except BaseException as _exc:
    # An interrupt may also come out of an import as the library's own failure (a C extension's
    # "ImportError: initialization failed" with the KeyboardInterrupt as its context).
    _seen: BaseException | None = _exc
    while _seen is not None and not isinstance(_seen, KeyboardInterrupt):
        _seen = _seen.__cause__ or _seen.__context__
    if _seen is None:
        raise
    try:
        sys.stderr.write(f"locomo: {INTERRUPTED_STARTING}\n")
        sys.stderr.flush()
    except OSError:  # the terminal is gone: the exit status must still be 130
        pass
    sys.exit(130)


def start_up_interrupted() -> bool:
    """Whether a SIGINT came during the start-up, even one that a library swallowed; the count is
    read once (a later in-process start begins with none)."""
    seen = bool(_start_up_sigints)
    _start_up_sigints.clear()
    return seen


def end_start_up() -> None:
    """The start-up is over: SIGINT goes back to Python's own handler (the training loop installs
    its own), and a Ctrl-C of the start-up that did not stop it, because a library swallowed it,
    stops it now."""
    if signal.getsignal(signal.SIGINT) is _count_sigint:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if start_up_interrupted():
        raise KeyboardInterrupt


USER_ERRORS: tuple[type[Exception], ...] = (
    ConfigError,
    CheckpointError,
    MetricsError,
    RenderError,
    DistributedError,
)


class _Ending:
    """Whether the line that ends this command has been said. A stop signal after it, while the
    command unwinds, is not news: torchrun sends SIGTERM to the ranks that are left once one
    fails, and a rank that has said why it stops must not say a second line."""

    said = False


def last_line(line: str) -> None:
    """Say the line that ends the command (its exit follows)."""
    say(line)
    _Ending.said = True


def exit_for(exc: Exception) -> None:
    """One line on stderr and the exit status of a user-facing error (see locomo.errors)."""
    if isinstance(exc, TrainingInterrupted):
        last_line(f"locomo: {exc}")
        sys.exit(exc.exit_status)
    last_line(f"locomo: error: {exc}")
    if isinstance(exc, DistributedError):
        sys.exit(EXIT_UNEXPECTED)
    sys.exit(EXIT_NONFINITE if isinstance(exc, NonFiniteError) else EXIT_USER_ERROR)


def report_unexpected(exc: BaseException, directory: Path | None) -> None:
    """One line for a failure locomo did not foresee, the full traceback to a file; exit 1.

    The traceback goes to ``<directory>/traceback.log`` (the run dir), or to a temporary file
    when there is no run dir of its own (commands that write into the working directory).
    """
    interrupt = interrupt_behind(exc)
    if interrupt is not None:  # Ctrl-C inside an import that a library reported as its own failure
        say(f"locomo: {str(interrupt) or 'interrupted'}")
        sys.exit(getattr(interrupt, "exit_status", 130))
    where = write_traceback(exc, directory)
    reason = first_line(exc)
    notes = "".join(f"; {note}" for note in getattr(exc, "__notes__", []))
    saved = f"full traceback in {where}" if where is not None else "the traceback could not be written"
    last_line(f"locomo: error: unexpected failure ({reason}){notes}; {saved}")
    sys.exit(EXIT_UNEXPECTED)


def _own_output_dir() -> Path | None:
    """This job's run dir, unless it is the working directory (eval, render, replay, plot)."""
    try:
        out = Path(HydraConfig.get().runtime.output_dir)
    except Exception:  # no Hydra job (yet)
        return None
    return None if out.resolve() == Path.cwd().resolve() else out


def user_errors(fn: Callable[[DictConfig], Any], hold_messages: bool = False) -> Callable[[DictConfig], Any]:
    """Turn every failure into one line on stderr and an exit status (no traceback).

    Bad input: 2. NaN/inf stopped training: 3. SIGINT/SIGTERM (checkpoint saved): 128 + signal.
    Anything else: 1, with the full traceback in the run dir (``traceback.log``).
    locomo's own lines also go to the job's log file (:mod:`locomo.messages`); with
    ``hold_messages``, only once ``fn`` has claimed its run dir (``train``).
    """

    @functools.wraps(fn)
    def wrapper(cfg: DictConfig) -> Any:
        # PyOpenGL logs an INFO line on import, which Hydra's job logging would print; set here too
        # because a sweep's launcher may run the job in another process.
        logging.getLogger("OpenGL").setLevel(logging.WARNING)
        with job_messages(hold_messages):  # locomo's own lines, the error line included, into the job's log
            try:
                return fn(cfg)
            except (*USER_ERRORS, NonFiniteError, TrainingInterrupted) as exc:
                exit_for(exc)
            except Exception as exc:  # a bug or the system: one line, the traceback to a file
                report_unexpected(exc, _own_output_dir())

    return wrapper


USAGE = """usage: locomo <command> [hydra overrides]
       locomo <command> --help     # that command's keys, one line each
       locomo --version

commands:
{commands}

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
  torchrun --standalone --nproc_per_node=2 -m locomo train    # one job, 2 processes
""".format(commands="\n".join(f"  {name:<10}{line}" for name, (_, line) in COMMANDS.items()))


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
        interrupt = interrupt_behind(exc)
        if interrupt is not None:  # Ctrl-C during the import is no broken library: stop, do not go on
            raise interrupt from None
        if start_up_interrupted():  # the same, come out as e.g. ctypes' ArgumentError
            raise KeyboardInterrupt from None
        for name in [m for m in sys.modules if m.split(".")[0] in ("mujoco", "OpenGL")]:
            del sys.modules[name]  # a half-imported module would fail again
        problem = f"MUJOCO_GL={value} does not work here ({first_line(exc)})"
        if command in ("render", "replay"):
            raise RenderError(f"{problem}; {GL_FIX}") from exc
        os.environ["MUJOCO_GL"] = "disable"
        print(f"locomo: warning: {problem}: going on without videos; {GL_FIX}", file=sys.stderr)


@contextmanager
def stop_signals_as_exception(command: str) -> Iterator[None]:
    """SIGTERM and SIGHUP raise :class:`StoppedBySignal` (one line, exit 143 or 129) instead of
    killing silently; SIGINT raises KeyboardInterrupt as always (exit 130).

    The training loop installs its own handler (checkpoint, then exit) while it runs; this one
    covers start-up and shutdown. A SIGHUP ignored by ``nohup`` stays ignored.
    """
    during = "outside the training loop (no trained iteration was lost)" if command == "train" else ""
    _Ending.said = False

    def handle(signum: int, frame: object) -> None:
        if _Ending.said:  # the command has said why it ends and is on its way out
            return
        raise StoppedBySignal(signum, during)

    previous: dict[int, Any] = {}
    try:
        for sig in handled_stop_signals():
            if sig != signal.SIGINT:
                previous[sig] = signal.signal(sig, handle)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def task_function(module: ModuleType, launch: Launch) -> Callable[[DictConfig], Any]:
    """The function Hydra's app runs as the job: the module's ``run(cfg)``, or ``run(cfg, launch)``
    for a command that prepares its start (``prepare``), behind :func:`user_errors`.

    It keeps the name and module of ``run``: Hydra names the job (and its log, ``<job>.log``)
    after the module. A launcher that runs a sweep's jobs in other processes ships this function
    there, ``launch`` with it.
    """
    claims = getattr(module, "CLAIMS_RUN_DIR", False)
    if not hasattr(module, "prepare"):
        return user_errors(module.run, claims)

    @functools.wraps(module.run)
    def run_launched(cfg: DictConfig) -> Any:
        return module.run(cfg, launch)

    return user_errors(run_launched, claims)


def run_hydra_app(command: str, module: ModuleType, launch: Launch) -> None:
    """Run the command's Hydra app (``conf/<CONFIG>.yaml``) on :meth:`Launch.hydra_args`.

    Hydra's app reads its command line from ``sys.argv`` (it has no other way in): it is set here
    alone, for the app's run, and put back afterwards.
    """
    app = hydra.main(version_base=None, config_path=str(CONF_DIR), config_name=module.CONFIG)(
        task_function(module, launch)
    )
    saved = sys.argv
    sys.argv = [f"locomo {command}", *launch.hydra_args()]
    try:
        app()
    finally:
        sys.argv = saved


def main() -> None:
    """Entry point of the ``locomo`` script."""
    argv = sys.argv[1:]
    if not argv:  # a usage error, as for an unknown command (scripts must not take it for success)
        print(USAGE, file=sys.stderr)
        sys.exit(2)
    if argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    if argv[0] in ("-V", "--version"):
        from locomo import __version__

        print(f"locomo {__version__}")
        return
    command = argv[0]
    if command not in COMMANDS:
        print(
            f"locomo: error: unknown command {command!r}; commands are {', '.join(COMMANDS)}", file=sys.stderr
        )
        sys.exit(2)
    # PyOpenGL logs an INFO line on import, which Hydra's job logging would print.
    logging.getLogger("OpenGL").setLevel(logging.WARNING)
    in_job = False  # until Hydra's app starts, locomo has read files only (configs, checkpoints)
    _watch_sigint()  # already on since the imports, unless an earlier start in this process ended it
    try:
        with stop_signals_as_exception(command):
            register_configs()
            register_help_resolver()  # each conf/<command>.yaml's --help text
            check_mujoco_gl()
            check_mujoco_import(command)
            module = load_command(command)
            args = argv[1:]
            check_overrides(args)
            # On the command line as given, so that every rank of a torchrun job refuses a typo
            # alike, before any joins the job.
            check_composition(command, module.CONFIG, args)
            # What the job needs beyond its config (a resume's checkpoint, the run dir a refused
            # start removes, ...), decided once, before Hydra creates anything.
            print_only = Launch(tuple(args)).print_only  # --cfg job, --info, ...: Hydra prints, runs nothing
            if print_only and ("-m" in args or "--multirun" in args):
                flag = next(a for a in args if a.split("=", 1)[0] in PRINT_ONLY_FLAGS)
                raise ConfigError(
                    flag,
                    "with -m",
                    "Hydra prints the config of one run, not of a sweep; drop -m, or print "
                    "one of its runs (e.g. seed=1 --cfg job)",
                )
            launch = module.prepare(args) if hasattr(module, "prepare") else Launch(tuple(args))
            if not print_only:  # a start that only prints creates no run dir
                check_run_dir(launch, getattr(module, "OUTPUT_ROOTS", None))
            end_start_up()
            in_job = True
            run_hydra_app(command, module, launch)
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM outside the training loop, or a second signal in it
        quiet = "interrupted; the checkpoints already on disk are kept"
        message = str(exc) or (quiet if in_job else INTERRUPTED_STARTING)
        say(f"locomo: {message}")
        sys.exit(getattr(exc, "exit_status", 130))
    except Exception as exc:  # before Hydra's job (no run dir yet)
        if not in_job and start_up_interrupted():  # a Ctrl-C that a library turned into its own failure
            say(f"locomo: {INTERRUPTED_STARTING}")
            sys.exit(130)
        if isinstance(exc, USER_ERRORS):  # resume, run dir, MUJOCO_GL: one line
            exit_for(exc)
        report_unexpected(exc, None)  # one line, the traceback to a file
