"""Exact resume and crash safety, end to end: real training subprocesses killed with SIGKILL,
SIGTERM and SIGINT, then resumed; the result must equal an uninterrupted run bit for bit."""

from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from locomo.runs.checkpoint import load_latest
from locomo.runs.checkpoint_format import periodic_iteration
from tests.conftest import metrics_rows, start_locomo, wait_for
from tests.safety_helpers import assert_same, call_locomo, learned_state

ITERATIONS = 40
STEPS = 32  # env steps per iteration (2 envs x 16)
# Value baseline + GAE + 2x2 minibatches: every RNG (sampling, shuffling) and the optimiser
# state matter, so an inexact resume shows up in the parameters.
CONFIG = [
    "env=inverted_pendulum",
    "algo=importance",
    "algo.epochs=2",
    "algo.minibatches=2",
    "train.num_envs=2",
    f"train.steps_per_iteration={STEPS}",
    "train.deterministic=true",
    "train.checkpoint_every=1",
    "train.keep_checkpoints=2",
    "logger.progress=false",
    "logger.wandb.mode=disabled",
    "seed=3",
]


@pytest.fixture(scope="module")
def straight_run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: ITERATIONS iterations without interruption."""
    run = tmp_path_factory.mktemp("straight") / "run"
    status, _, err = call_locomo("train", *CONFIG, f"train.iterations={ITERATIONS}", f"hydra.run.dir={run}")
    assert status == 0, err
    return run


@pytest.fixture(scope="module")
def straight_run(straight_run_dir: Path) -> dict:
    return torch.load(straight_run_dir / "checkpoints" / "last.pt", weights_only=True)


def assert_same_metrics(run: Path, reference: Path) -> None:
    """Every metric but wall-clock timings equals the uninterrupted run's (returns included)."""
    for got, want in zip(metrics_rows(run), metrics_rows(reference), strict=True):
        assert {k: v for k, v in got.items() if not k.startswith("perf/")} == {
            k: v for k, v in want.items() if not k.startswith("perf/")
        }


def metrics_steps(run: Path) -> list[int]:
    return [row["env_steps"] for row in metrics_rows(run)]


def first_checkpoint_written(run: Path):
    return lambda: _newest_iteration(run) > 0


# How long a training subprocess may take to reach a condition: generous, because the machine
# may be busy; a condition that is met returns at once, so this costs nothing when all is well.
WAIT = 300.0


def test_kill9_at_observed_moments_then_resume_matches_uninterrupted_run(
    tmp_path: Path, straight_run: dict, straight_run_dir: Path
):
    """`kill -9` in five trials, each a fresh process on the same run dir: the first starts the
    run, the others resume it. Each kill waits for something the test can see on disk, never for
    an amount of time: "after_write" as soon as a new checkpoint exists (the process is pruning,
    linking last.pt or in the next iteration); "mid_write" as soon as a checkpoint's temporary
    file appears, i.e. inside a write; "startup" as soon as the process has taken the run dir's
    lock (it names itself in ``.lock``): it is building the runner, restoring the checkpoint,
    truncating metrics or in its first iteration. After each kill the newest checkpoint must
    load; in the end the run must equal an uninterrupted one bit for bit, with every
    iteration's metrics row exactly once. The training itself is seeded (seed=3,
    train.deterministic=true); nothing here draws random numbers."""
    run = tmp_path / "run"
    ckpt_dir = run / "checkpoints"
    trials = []
    reached = 0
    for trial, moment in enumerate(["after_write", "mid_write", "startup", "mid_write", "after_write"]):
        if trial == 0:
            args = [*CONFIG, f"train.iterations={ITERATIONS}", f"hydra.run.dir={run}"]
        else:
            args = [f"resume={run}"]
        old_temp = set(_temp_files(ckpt_dir))
        proc = start_locomo("train", *args, cwd=tmp_path)
        started = time.monotonic()
        if moment == "startup":
            wait_for(lambda p=proc: _lock_holder(run) == f"locomo process {p.pid}", WAIT, proc, what=moment)
        elif moment == "mid_write":
            wait_for(
                lambda p=proc, old=old_temp: bool(set(_temp_files(ckpt_dir)) - old) or p.poll() is not None,
                WAIT,
                poll=0.0005,
                what=moment,
            )
        else:
            wait_for(
                lambda n=reached, p=proc: _newest_iteration(run) > n or p.poll() is not None,
                WAIT,
                what=moment,
            )
        delay = time.monotonic() - started
        proc.kill()  # SIGKILL: no handler runs, no cleanup
        proc.communicate()
        path, state = load_latest(run)  # the newest complete checkpoint loads
        iteration = state["counters"]["iteration"]
        assert periodic_iteration(path) == iteration
        assert state["counters"]["env_steps"] == iteration * STEPS
        assert iteration >= reached
        reached = iteration
        torn = _temp_files(ckpt_dir)
        trials.append({"moment": moment, "after_s": round(delay, 3), "iteration": iteration, "torn": torn})
    print("kill -9 trials:", json.dumps(trials))
    status, _, err = call_locomo("train", f"resume={run}")
    if reached < ITERATIONS:
        assert status == 0, err
    assert not list((run / "checkpoints").glob(".*.tmp"))  # a resumed run clears torn temp files
    final = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert_same(learned_state(final), learned_state(straight_run))
    assert metrics_steps(run) == [STEPS * (i + 1) for i in range(ITERATIONS)]  # no gap, no repeat
    assert_same_metrics(run, straight_run_dir)


def _lock_holder(run: Path) -> str | None:
    """What the process holding the run dir's lock wrote into ``.lock`` (None before any did)."""
    try:
        return (run / ".lock").read_text().strip()
    except FileNotFoundError:
        return None


def _temp_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob(".*.tmp")) if directory.is_dir() else []


def _newest_iteration(run: Path) -> int:
    files = list((run / "checkpoints").glob("iter_*.pt")) if (run / "checkpoints").is_dir() else []
    return max((periodic_iteration(f) or 0 for f in files), default=0)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_saves_a_checkpoint_and_exits_then_resume_matches(
    tmp_path: Path, straight_run: dict, straight_run_dir: Path, signum: signal.Signals
):
    """SIGTERM (a cluster preempting the job) or Ctrl-C: checkpoint at the iteration boundary, exit
    128 + signal; `resume=` continues in the same run dir to the same parameters."""
    run = tmp_path / "run"
    # SIGTERM's run also logs to W&B (offline): the resumed run must continue the same W&B run.
    wandb = ["logger.wandb.mode=offline"] if signum == signal.SIGTERM else []
    proc = start_locomo(
        "train", *CONFIG, *wandb, f"train.iterations={ITERATIONS}", f"hydra.run.dir={run}", cwd=tmp_path
    )
    wait_for(first_checkpoint_written(run), WAIT, proc, what="the first checkpoint")
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in err
    name = signal.Signals(signum).name
    assert f"{name} received; finishing this iteration and saving a checkpoint" in err
    path, state = load_latest(run)
    stopped_at = state["counters"]["iteration"]
    assert f"interrupted by {name} after iteration {stopped_at}; checkpoint saved to {path}" in err
    assert f"continue with: locomo train resume={run}" in err
    assert 1 <= stopped_at < ITERATIONS
    assert metrics_steps(run) == [STEPS * (i + 1) for i in range(stopped_at)]

    status, out, err = call_locomo("train", f"resume={run}")
    assert status == 0, err
    assert f"resuming {run} at iteration {stopped_at}" in out
    final = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert_same(learned_state(final), learned_state(straight_run))
    assert metrics_steps(run) == [STEPS * (i + 1) for i in range(ITERATIONS)]
    assert_same_metrics(run, straight_run_dir)
    assert len(list((run / "checkpoints").glob("iter_*.pt"))) == 2  # train.keep_checkpoints=2
    if wandb:
        run_id = state["wandb"]["run_id"]
        assert run_id and final["wandb"]["run_id"] == run_id
        offline_runs = sorted((run / "wandb").glob("offline-run-*"))
        assert len(offline_runs) == 2 and all(d.name.endswith(f"-{run_id}") for d in offline_runs)


def test_resume_from_a_checkpoint_outside_a_run_dir_starts_a_new_run_dir(
    tmp_path: Path, straight_run_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    loose = tmp_path / "shared" / "walker.pt"
    loose.parent.mkdir()
    loose.write_bytes((straight_run_dir / "checkpoints" / "last.pt").read_bytes())
    monkeypatch.chdir(tmp_path)
    status, out, err = call_locomo("train", f"resume={loose}", f"train.iterations={ITERATIONS + 1}")
    assert status == 0, err
    (new_run,) = (tmp_path / "outputs" / "inverted_pendulum").iterdir()
    assert f"resuming {new_run} at iteration {ITERATIONS}" in out
    assert metrics_steps(new_run) == [STEPS * (ITERATIONS + 1)]
    assert load_latest(new_run)[1]["counters"]["iteration"] == ITERATIONS + 1
    assert _newest_iteration(straight_run_dir) == ITERATIONS  # the original run is untouched


def test_resume_reads_the_checkpoint_once_for_both_steps(tmp_path: Path, monkeypatch):
    """resolve_resume (before Hydra) hands what it loaded to resumed_config (in the job), in the
    start's Launch."""
    from locomo.launch import Launch
    from locomo.runs import checkpoint
    from locomo.training.resume import resolve_resume, resumed_config
    from tests.conftest import TINY, compose, run_locomo

    trained = run_locomo(
        "train", *TINY, "env=inverted_pendulum", "logger.wandb.mode=disabled", "video.enabled=false",
        "hydra.run.dir=run", cwd=tmp_path,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    reads: list[Path] = []
    real = checkpoint.load_file
    monkeypatch.setattr(checkpoint, "load_file", lambda p, *a, **k: reads.append(Path(p)) or real(p, *a, **k))
    resume = resolve_resume(Launch((f"resume={tmp_path / 'run'}", "train.iterations=5")))
    assert resume is not None and resume.in_place and resume.run_dir == (tmp_path / "run").resolve()
    chosen = str(resume.path)
    before = len(reads)
    assert before >= 1 and Path(chosen).name == "iter_000002.pt"
    cfg = compose("env=inverted_pendulum", f"resume={chosen}", "train.iterations=5")
    resumed, path, state = resumed_config(cfg, ["train.iterations=5"], resume)
    assert len(reads) == before  # no second read
    assert resumed.train.iterations == 5 and int(state["counters"]["iteration"]) == 2
    assert path == Path(chosen)
    # A job started without step 1 (or for another file) still reads it itself.
    again = resumed_config(cfg, ["train.iterations=5"], None)
    assert len(reads) == before + 1 and again[2]["counters"] == state["counters"]


def test_a_read_only_run_dir_is_resumed_from_a_copy_with_keys_that_keep_the_math(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Issue "Nothing lost to a typo", part 5: the advice for a run dir a resume cannot write is one a
    resume accepts (it said hydra.run.dir=, which a resume refuses); and a resume may extend a run
    in env steps and change the device and what W&B records (none of which changes the math)."""
    import os

    from tests.safety_helpers import finished_pendulum_run

    run = finished_pendulum_run(tmp_path / "run")
    real_access = os.access

    # The run dir is read-only (as root, who writes anywhere, a chmod would not do).
    def access(path: Any, mode: int, **kwargs: Any) -> bool:
        return False if Path(path).resolve() == run.resolve() else real_access(path, mode, **kwargs)

    monkeypatch.setattr(os, "access", access)
    status, _, err = call_locomo("train", f"resume={run}", "train.iterations=3")
    assert status == 2, err
    assert f"cannot write in run directory {run} (Permission denied" in err
    advice = f"copy it somewhere writable and resume the copy: cp -r {run} <copy>; locomo train resume=<copy>"
    assert advice in err
    assert "hydra.run.dir" not in err
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    status, _, err = call_locomo(
        "train", f"resume={copy}", "train.total_steps=96", "train.device=cpu", "logger.wandb.name=again",
        "logger.wandb.tags=[resumed]", "logger.wandb.log_model=false", "logger.wandb.eval_episodes=0",
    )  # fmt: skip
    assert status == 0, err
    state = load_latest(copy)[1]
    assert state["counters"]["iteration"] == 3  # ceil(96 / 32 steps per iteration)
    train, wandb = state["config"]["train"], state["config"]["logger"]["wandb"]
    assert (train["total_steps"], train["iterations"], train["device"]) == (96, 3, "cpu")
    recorded = (wandb["name"], wandb["tags"], wandb["log_model"], wandb["eval_episodes"])
    assert recorded == ("again", ["resumed"], False, 0)
    assert [row["iteration"] for row in metrics_rows(copy)] == [1, 2, 3]
    assert len(metrics_rows(run)) == 2  # the read-only run is untouched
