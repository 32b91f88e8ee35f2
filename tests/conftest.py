"""Shared test helpers: run the real CLI in a subprocess against this checkout's code, compose
configs and build runners in-process, the small run configs, and polling for a condition.

Helpers live here once and test files import them (``from tests.conftest import ...``); the
crash-safety comparisons are in tests/safety_helpers.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent

# The signal tests stop processes the way a terminal does (Ctrl-C, a hang-up). A test runner
# started in the background inherits SIGINT ignored (a shell's `&` without job control), or
# under nohup SIGHUP ignored, and an ignored signal stays ignored in every child it starts, where
# locomo rightly leaves it so. The tests run as from a terminal: both at their defaults (children
# inherit SIG_DFL; Python turns SIGINT into KeyboardInterrupt again).
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
if signal.getsignal(signal.SIGHUP) == signal.SIG_IGN:
    signal.signal(signal.SIGHUP, signal.SIG_DFL)

# Tiny budgets that still exercise every part of a training run.
TINY = [
    "train.iterations=2",
    "train.num_envs=2",
    "train.steps_per_iteration=64",
    "logger.progress=false",
]
# No W&B, no progress bar, no checkpoints or videos: in-process runs that only train.
QUIET = [
    "logger.wandb.mode=disabled",
    "logger.progress=false",
    "train.checkpoint_every=0",
    "video.enabled=false",
]
# Iterations of 32 env steps (2 envs x 16), a checkpoint after every one: runs that write every
# kind of file a run has, in a fraction of the default budget.
SMALL_RUN = [
    "train.num_envs=2",
    "train.steps_per_iteration=32",
    "train.checkpoint_every=1",
    "logger.progress=false",
    "logger.wandb.mode=disabled",
]
PENDULUM_RUN = ["env=inverted_pendulum", *SMALL_RUN]
# The smallest whole training run from the command line: one iteration of 512 pendulum steps,
# nothing but training and its checkpoint.
ONE_PENDULUM_ITERATION = [
    "env=inverted_pendulum",
    "train.iterations=1",
    "train.steps_per_iteration=512",
    "train.num_envs=4",
    "video.enabled=false",
    "logger.wandb.mode=disabled",
    "logger.progress=false",
]
# test_learning's cartpole budget (reward-to-go, batch-mean baseline): >= 195 at the end.
CARTPOLE_LEARNS = [
    "env=cartpole",
    "algo=baseline",
    "algo.normalize_advantages=true",
    "algo.lr=3e-3",
    "train.num_envs=8",
    "train.steps_per_iteration=2048",
    "train.iterations=40",
]
CARTPOLE_RUN = ["env=cartpole", *SMALL_RUN]


@pytest.fixture(scope="session", autouse=True)
def wandb_staging(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """W&B stages artifact files (the model uploads of offline runs) and caches them under the
    user's home by default: the tests' go to the session's temporary directory instead (set in
    os.environ, so the CLI subprocesses inherit it)."""
    keys = ("WANDB_DATA_DIR", "WANDB_CACHE_DIR")
    before = {key: os.environ.get(key) for key in keys}
    base = tmp_path_factory.mktemp("wandb")
    for key in keys:
        os.environ[key] = str(base / key.lower())
    yield
    for key, value in before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def cli_env(extra: dict[str, str | None] | None = None) -> dict[str, str]:
    """The environment the CLI runs in: this checkout first on the path, W&B quiet, no API key;
    then ``extra`` (a None value unsets that variable)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    env["WANDB_SILENT"] = "true"
    env.pop("WANDB_API_KEY", None)
    for key, value in (extra or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run_locomo(
    *args: str, cwd: Path, timeout: float = 300, env: dict[str, str | None] | None = None, **kwargs: Any
) -> subprocess.CompletedProcess:
    """Run ``python -m locomo <args>`` in the :func:`cli_env` environment; return CompletedProcess.

    Further keyword arguments (``preexec_fn``) go to :func:`subprocess.run`.
    """
    return subprocess.run(
        [sys.executable, "-m", "locomo", *args],
        cwd=cwd,
        env=cli_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


def start_locomo(*args: str, cwd: Path, env: dict[str, str | None] | None = None) -> subprocess.Popen:
    """Start ``python -m locomo <args>`` without waiting (so a test can signal or kill it)."""
    return subprocess.Popen(
        [sys.executable, "-m", "locomo", *args],
        cwd=cwd,
        env=cli_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def torchrun_args(*args: str, nproc: int = 2) -> list[str]:
    """The command line of ``torchrun --standalone`` (a free port of its own) with ``nproc`` processes."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]


# What a rank prints when C++ aborts it as its process ends (a std::thread still joinable at exit,
# no Python frame left): seen in about 1 of 40 torchrun jobs on CPU with gloo, not reproduced on demand.
CPP_ABORT = "terminate called without an active exception"


def torchrun(*args: str, cwd: Path, nproc: int = 2, timeout: float = 300) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node=<nproc> <args>`` in the CLI's environment.

    A job whose rank C++ aborted (:data:`CPP_ABORT`) is said (a warning, with its stderr) and run
    once more: that abort is not locomo's outcome to assert on, and a second one fails the test.
    """

    def once() -> subprocess.CompletedProcess:
        return subprocess.run(
            torchrun_args(*args, nproc=nproc),
            cwd=cwd,
            # A rank that crashes in C++ (SIGABRT, SIGSEGV) shows its Python stack too.
            env=cli_env({"PYTHONFAULTHANDLER": "1"}),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    before = set(cwd.iterdir())
    proc = once()
    if proc.returncode != 0 and CPP_ABORT in proc.stderr:
        warnings.warn(f"a torchrun rank aborted in C++, run again: {proc.stderr[-1500:]}", stacklevel=2)
        # What the aborted job wrote goes first (its run dir would refuse the second start), so
        # the second run starts from what the first one found.
        for path in set(cwd.iterdir()) - before:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        proc = once()
    return proc


def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 60.0,
    proc: subprocess.Popen | None = None,
    poll: float = 0.02,
    what: str = "the condition",
) -> Any:
    """Poll until ``predicate()`` is truthy and return its value; fail if ``proc`` exits first or
    time runs out."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if proc is not None and proc.poll() is not None:
            said = proc.stderr.read() if proc.stderr is not None else "(stderr not captured)"
            raise AssertionError(f"process exited early ({proc.returncode}): {said}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(poll)
    return value


def metrics_rows(run: Path) -> list[dict[str, Any]]:
    """Every row of a run's metrics.jsonl (a torn or non-JSON line fails the test)."""
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


class Evil:
    """Unpickling this runs code: it writes the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


@pytest.fixture
def locomo_cli(tmp_path: Path):
    """``locomo_cli(*args)`` runs the CLI in a fresh temporary directory."""

    def run(*args: str, **kwargs):
        return run_locomo(*args, cwd=tmp_path, **kwargs)

    run.cwd = tmp_path  # type: ignore[attr-defined]
    return run


def compose(*overrides: str):
    """The training config as ``locomo train`` would compose it (validated), for in-process tests."""
    from locomo.config.compose import compose_config
    from locomo.config.validation import validate_config

    cfg = compose_config("train", list(overrides))
    validate_config(cfg)
    return cfg


def make_runner(run_dir: Path, *overrides: str):
    """An in-process :class:`~locomo.training.runner.Runner` of 3 pendulum iterations (PENDULUM_RUN) in
    ``run_dir``; ``overrides`` come last."""
    from locomo.training.runner import Runner

    return Runner(compose(*PENDULUM_RUN, "train.iterations=3", *overrides), run_dir)
