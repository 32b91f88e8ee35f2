"""Issue 17, part 4: signals other than one Ctrl-C in the training loop.

SIGHUP (the terminal closed) stops a run like SIGTERM: the iteration finishes, a checkpoint is
saved, one line, exit 129 (128 + signal, as SIGTERM's 143); under ``nohup`` it is left ignored.
Ctrl-C while a command starts up is one line and exit 130: never an import traceback, never
taken for a broken OpenGL library (an interrupt inside ``import mujoco`` comes out as pybind11's
``ImportError: initialization failed``).
"""

from __future__ import annotations

import builtins
import functools
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from locomo.errors import StoppedBySignal, interrupt_behind
from locomo.training.signals import GracefulStop
from tests.conftest import PENDULUM_RUN, cli_env, metrics_rows, wait_for
from tests.safety_helpers import call_locomo

STARTING = "outside the training loop (no trained iteration was lost)"
LONG_RUN = [*PENDULUM_RUN, "train.iterations=100000", "train.checkpoint_every=0", "video.enabled=false"]


def first_row(run: Path) -> bool:
    path = run / "metrics.jsonl"
    return path.is_file() and bool(path.read_text().strip())


def wait_child(pid: int, timeout: float) -> int:
    """The wait status of child ``pid``; killed, and the test failed, if it runs past ``timeout``
    seconds (a training of 100,000 iterations that ignored its signal would otherwise hang the suite)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"the child was still running {timeout:.0f} s after the hang-up")


def test_closing_the_terminal_saves_a_checkpoint_and_exits_129(tmp_path: Path):
    """A real hang-up: training on a pseudo-terminal whose master side is closed."""
    run = tmp_path / "r"
    pid, master = pty.fork()
    if pid == 0:  # the child: a session of its own with the pty as its controlling terminal
        os.execve(
            sys.executable,
            [sys.executable, "-m", "locomo", "train", *LONG_RUN, f"hydra.run.dir={run}"],
            cli_env(),
        )
    try:
        deadline = time.monotonic() + 120
        while not first_row(run):  # keep reading: a full pty would block the child's writes
            assert time.monotonic() < deadline, "no metrics row"
            if select.select([master], [], [], 0.05)[0]:
                try:
                    os.read(master, 65536)
                except OSError:
                    break
    finally:
        os.close(master)  # the terminal goes away: the kernel sends SIGHUP
    status = wait_child(pid, timeout=120)
    assert os.waitstatus_to_exitcode(status) == 128 + signal.SIGHUP
    rows = metrics_rows(run)
    last = run / "checkpoints" / f"iter_{len(rows):06d}.pt"
    assert last.is_file() and (run / "checkpoints" / "last.pt").is_file()


def test_sighup_is_left_ignored_under_nohup(tmp_path: Path):
    run = tmp_path / "r"
    args = ["train", *PENDULUM_RUN, "train.iterations=3", f"hydra.run.dir={run}"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "locomo", *args],
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),  # what nohup does
    )
    wait_for(lambda: first_row(run), proc=proc, what="the first metrics row")
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "SIGHUP" not in err
    assert [row["iteration"] for row in metrics_rows(run)] == [1, 2, 3]


def test_sighup_while_starting_up_is_one_line_and_129(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import locomo.config.preflight

    monkeypatch.chdir(tmp_path)
    hangup = lambda cfg: os.kill(os.getpid(), signal.SIGHUP)  # noqa: E731
    monkeypatch.setattr(locomo.config.preflight, "check_resources", hangup)
    status, _, err = call_locomo("train", *PENDULUM_RUN, "train.iterations=1")
    assert status == 129, err
    assert err.strip() == f"locomo: stopped by SIGHUP {STARTING}"
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL  # main() put the default back


def test_a_stop_signal_after_the_last_line_says_nothing_more(capsys: pytest.CaptureFixture[str]):
    """A rank of a torchrun job that has said why it stops gets torchrun's SIGTERM while it
    unwinds: still one line, and the exit status of the error it said."""
    from locomo.cli import exit_for, stop_signals_as_exception
    from locomo.errors import ConfigError

    with stop_signals_as_exception("train"), pytest.raises(SystemExit) as ended:
        try:
            exit_for(ConfigError("train.total_steps", 0, "must be > 0"))
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives while the SystemExit unwinds
    assert ended.value.code == 2
    assert capsys.readouterr().err == "locomo: error: train.total_steps=0 is invalid: must be > 0\n"
    # The next command in this process starts afresh: a SIGTERM before its last line stops it.
    with stop_signals_as_exception("train"), pytest.raises(StoppedBySignal):
        os.kill(os.getpid(), signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_the_training_loop_handles_sighup_unless_ignored():
    previous = signal.getsignal(signal.SIGHUP)
    try:
        with GracefulStop() as stop:
            os.kill(os.getpid(), signal.SIGHUP)
            assert stop.signum == signal.SIGHUP  # remembered, not fatal
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        with GracefulStop():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)


def _interrupted_import() -> ImportError:
    """What an interrupt inside a pybind11 module's initialisation looks like to its importer."""
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt:
        try:
            raise ImportError("initialization failed")  # the interrupt is its __context__
        except ImportError as exc:
            return exc
    raise AssertionError("unreachable")


def test_interrupt_behind_finds_the_interrupt_in_the_chain():
    assert isinstance(interrupt_behind(_interrupted_import()), KeyboardInterrupt)
    stopped = StoppedBySignal(signal.SIGTERM)
    wrapped = RuntimeError("wrapped")
    wrapped.__cause__ = stopped
    assert interrupt_behind(wrapped) is stopped
    assert interrupt_behind(ValueError("plain")) is None


def test_ctrl_c_inside_import_mujoco_stops_instead_of_turning_videos_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """It used to say "MUJOCO_GL=egl does not work here", then train all iterations, exit 0."""
    real_import = builtins.__import__

    def interrupted(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "mujoco":
            raise _interrupted_import()
        return real_import(name, *args, **kwargs)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MUJOCO_GL", "egl")
    monkeypatch.setattr(builtins, "__import__", interrupted)
    status, _, err = call_locomo("train", *PENDULUM_RUN, "train.iterations=1")
    monkeypatch.undo()
    assert status == 130, err
    assert "does not work here" not in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and err.startswith("locomo: interrupted")
    assert not list(tmp_path.rglob("metrics.jsonl"))


def _interrupt_after(delay: float, code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter whose main thread gets KeyboardInterrupt (what SIGINT's
    default handler raises) ``delay`` seconds after ``import locomo``."""
    prelude = (
        "import signal, sys\n"
        "import locomo\n"
        "def interrupt(signum, frame):\n"
        "    raise KeyboardInterrupt\n"
        "signal.signal(signal.SIGALRM, interrupt)\n"
        f"signal.setitimer(signal.ITIMER_REAL, {delay})\n"
    )
    return subprocess.run(
        [sys.executable, "-c", prelude + code],
        cwd=tmp_path,
        env=cli_env({"MUJOCO_GL": "egl"}),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_ctrl_c_while_the_cli_imports_is_one_line(tmp_path: Path):
    """Hydra's imports take about half a second of every start: an interrupt there is exit 130."""
    result = _interrupt_after(0.02, "import locomo.cli\nprint('imported')\n", tmp_path)
    assert result.returncode == 130, result.stderr
    assert result.stderr.strip() == "locomo: interrupted while starting up; nothing was written"


def test_ctrl_c_early_in_a_real_start_is_one_line_and_130(tmp_path: Path):
    """A real ``import mujoco`` (MUJOCO_GL=egl) and Hydra start, interrupted early: wherever the
    interrupt lands, one line, exit 130, and no training."""
    code = (
        "from locomo.cli import main\n"
        "signal.setitimer(signal.ITIMER_REAL, 0.02)\n"
        f"sys.argv = ['locomo', 'train', {', '.join(repr(a) for a in PENDULUM_RUN)}, 'train.iterations=1']\n"
        "main()\n"
    )
    result = _interrupt_after(60.0, code, tmp_path)  # the first timer is replaced by the one in code
    assert result.returncode == 130, result.stderr
    assert "Traceback" not in result.stderr and "does not work here" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not list(tmp_path.rglob("metrics.jsonl"))


@pytest.mark.parametrize("swallowed_as", ["bare except", "ctypes ArgumentError"])
def test_a_ctrl_c_that_a_library_swallows_during_start_up_still_stops_it(tmp_path: Path, swallowed_as: str):
    """A real SIGINT in the start-up that a library swallows (a bare ``except:`` around an import
    of its own; ctypes' ``ArgumentError`` in PyOpenGL's calls, which ``import mujoco`` makes with
    MUJOCO_GL=egl): one line, exit 130, no training, not a warning and a finished run."""
    swallow = {
        "bare except": "    try:\n        sigint()\n    except:\n        pass\n",
        "ctypes ArgumentError": "    try:\n        sigint()\n    except BaseException as exc:\n"
        "        raise ctypes.ArgumentError('argument 1: KeyboardInterrupt') from None\n",
    }[swallowed_as]
    code = (
        "import ctypes, os, signal, sys, time\n"
        "import locomo.cli\n"
        "def sigint():\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(1)\n"
        "def library_import(command):\n"
        f"{swallow}"
        "locomo.cli.check_mujoco_import = library_import\n"
        f"sys.argv = ['locomo', 'train', {', '.join(repr(a) for a in PENDULUM_RUN)}, 'train.iterations=1']\n"
        "locomo.cli.main()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 130, result.stderr
    assert result.stderr.strip() == "locomo: interrupted while starting up; nothing was written"
    assert not list(tmp_path.rglob("metrics.jsonl"))


def test_a_failure_that_hides_an_interrupt_is_reported_as_the_interrupt(capsys: pytest.CaptureFixture[str]):
    """E.g. torch's extension initialising when Ctrl-C comes: not an "unexpected failure" (exit 1)."""
    from locomo.cli import report_unexpected

    with pytest.raises(SystemExit) as info:
        report_unexpected(_interrupted_import(), None)
    assert info.value.code == 130
    assert capsys.readouterr().err == "locomo: interrupted\n"


def _start_command(how: str) -> list[str]:
    """``python -m locomo`` or the installed console script (run by this interpreter, so that the
    checkout on PYTHONPATH is the locomo it imports)."""
    if how == "module":
        return [sys.executable, "-m", "locomo"]
    script = Path(sys.executable).parent / "locomo"
    if not script.is_file():
        pytest.skip(f"no console script next to {sys.executable}")
    return [sys.executable, str(script)]


@pytest.mark.parametrize("how", ["module", "script"])
def test_a_real_ctrl_c_at_any_moment_of_start_up_is_one_line_and_130(tmp_path: Path, how: str):
    """SIGINT sent to a fresh ``locomo train`` 0.05-0.3 s after the interpreter's own start-up:
    the package's and the CLI's imports (gymnasium, Hydra) and the checks before Hydra's job. It
    used to print the ``KeyboardInterrupt`` traceback of whichever import was running. (Before
    that, the interpreter is still in its own ``site`` start-up, before any of locomo's code runs:
    its length is measured here, on this machine under its present load, and added.)"""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], env=cli_env(), check=True)
    interpreter = time.perf_counter() - started
    for delay in (0.05, 0.1, 0.2, 0.3):
        cwd = tmp_path / f"{how}-{delay}"
        cwd.mkdir()
        proc = subprocess.Popen(
            [*_start_command(how), "train", *PENDULUM_RUN, "train.iterations=1", "video.enabled=false"],
            cwd=cwd,
            env=cli_env({"MUJOCO_GL": "egl"}),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(interpreter + delay)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        # 130, or ended by the SIGINT itself after the line (a shell reports both as 130): the
        # interpreter re-raises the signal at exit when an interrupt reached it unhandled, which
        # happens when the signal lands in one of its own steps around the guarded imports.
        assert proc.returncode in (130, -signal.SIGINT), f"after {delay} s: exit {proc.returncode}: {err}"
        assert "Traceback" not in err, f"after {delay} s: {err}"
        assert err.strip() == "locomo: interrupted while starting up; nothing was written", f"after {delay} s"
        assert not list(cwd.rglob("metrics.jsonl"))


def test_import_locomo_leaves_gymnasium_unimported_and_still_registers_the_ids(tmp_path: Path):
    """The start-up's first import is cheap; ``import locomo`` then ``gymnasium.make`` still works,
    in either order of the imports."""
    code = (
        "import sys, locomo\n"
        "print('gymnasium' in sys.modules)\n"
        "import gymnasium.spaces\n"
        "print(all(i in gymnasium.registry for i in locomo.GYMNASIUM_IDS))\n"
    )
    run = functools.partial(subprocess.run, cwd=tmp_path, env=cli_env(), capture_output=True, text=True)
    out = run([sys.executable, "-c", code])
    assert out.stdout.split() == ["False", "True"], out.stderr
    code = "import gymnasium, locomo\nprint(all(i in gymnasium.registry for i in locomo.GYMNASIUM_IDS))\n"
    out = run([sys.executable, "-c", code])
    assert out.stdout.split() == ["True"], out.stderr
