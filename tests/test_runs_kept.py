"""Issue 12: no run is mixed with another or lost, whatever goes wrong around it.

Fault runs that need more set-up than one catalogue row (tests/test_bad_inputs.py): a fresh
run in a used run dir (refused, then overwrite=true), a refused start next to a running one,
damaged metrics rows on resume, a second signal, SIGTERM at start-up, an unexpected failure
between iterations; and the pure parts (memory estimate, unknown keys, warnings). Every run
here is a few cartpole or pendulum iterations of 32 steps, in this process.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from locomo.config.preflight import EnvSizes, estimate_memory, memory_limit_from
from locomo.config.rules import unknown_keys
from locomo.config.schema import LocomoConfig
from locomo.config.validation import config_warnings
from locomo.errors import TrainingAborted
from locomo.runs.metrics_file import missing_iterations, read_metrics
from locomo.runs.rundir import RunDirLock, previous_run
from tests.conftest import CARTPOLE_RUN
from tests.safety_helpers import call_locomo


def iterations(run: Path) -> list[int]:
    return [int(row["iteration"]) for row in read_metrics(run / "metrics.jsonl")]


def train(run: Path, *args: str) -> tuple[int, str]:
    status, _, err = call_locomo("train", *CARTPOLE_RUN, f"hydra.run.dir={run}", *args)
    assert "Traceback" not in err
    return status, err


def test_fresh_run_in_a_used_dir_is_refused_untouched_then_overwrite_replaces_it(tmp_path: Path):
    run = tmp_path / "r"
    assert train(run, "train.iterations=3")[0] == 0
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != "train.log"}
    status, err = train(run, "train.iterations=2", "seed=1")
    assert status == 2 and f"resume={run}" in err and "overwrite=true" in err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != "train.log"} == before
    status, err = train(run, "train.iterations=2", "seed=1", "overwrite=true")
    assert status == 0 and "overwrite=true: removing the previous run's files in" in err
    assert iterations(run) == [1, 2]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "iter_000001.pt",
        "iter_000002.pt",
        "last.pt",
    ]
    assert "seed=1" in (run / ".hydra" / "overrides.yaml").read_text()
    assert call_locomo("train", f"resume={run}", "train.iterations=3")[0] == 0
    assert iterations(run) == [1, 2, 3]


def test_refused_start_leaves_the_running_runs_record_alone(tmp_path: Path):
    run = tmp_path / "r"
    assert train(run, "train.iterations=1")[0] == 0
    record = {p.name: p.read_bytes() for p in (run / ".hydra").iterdir()}
    with RunDirLock(run):  # the run is "still going"
        status, err = train(run, "train.iterations=5", "seed=7")
    assert status == 2 and "is in use by locomo process" in err
    assert {p.name: p.read_bytes() for p in (run / ".hydra").iterdir()} == record


def test_resume_past_a_damaged_newest_checkpoint_logs_every_iteration_once(tmp_path: Path):
    run = tmp_path / "d"
    assert train(run, "train.iterations=3")[0] == 0
    (run / "checkpoints" / "last.pt").unlink()
    newest = run / "checkpoints" / "iter_000003.pt"
    newest.write_bytes(newest.read_bytes()[:500])
    status, _, err = call_locomo("train", f"resume={run}", "train.iterations=4")
    assert status == 0, err
    assert "using" in err and "iter_000002.pt, the newest intact checkpoint" in err
    assert iterations(run) == [1, 2, 3, 4]


@pytest.mark.parametrize(
    "damage", [b'{"env_steps": 64, "iter', b"\xff\xfe\x00 not utf-8"], ids=["torn", "utf8"]
)
def test_damaged_metrics_rows_on_resume_are_kept_aside_and_named(tmp_path: Path, damage: bytes):
    run = tmp_path / "m"
    assert train(run, "train.iterations=3")[0] == 0
    lines = (run / "metrics.jsonl").read_bytes().splitlines(keepends=True)
    (run / "metrics.jsonl").write_bytes(lines[0] + damage + b"\n" + lines[2])
    status, _, err = call_locomo("train", f"resume={run}", "train.iterations=4")
    assert status == 0, err
    assert (
        "1 unreadable row(s) (line 2) moved to metrics.jsonl.damaged; iterations without a metrics row: 2"
        in err
    )
    assert (run / "metrics.jsonl.damaged").read_bytes() == damage + b"\n"
    assert iterations(run) == [1, 3, 4]


def test_second_signal_says_truthfully_that_no_checkpoint_exists(tmp_path: Path, monkeypatch):
    from locomo.training.runner import Runner

    def aborted(self):
        raise TrainingAborted(signal.SIGINT)

    monkeypatch.setattr(Runner, "_train_iteration", aborted)
    run = tmp_path / "s"
    status, err = train(run, "train.iterations=2")
    assert status == 130
    assert "no checkpoint had been written yet, so nothing can be resumed" in err and "resumable" not in err
    assert not list((run / "checkpoints").glob("*.pt")) if (run / "checkpoints").exists() else True


def test_second_signal_names_the_kept_checkpoint():
    exc = TrainingAborted(signal.SIGTERM)
    exc.kept, exc.run_dir = Path("/r/checkpoints/iter_000004.pt"), Path("/r")
    assert str(exc).endswith(
        "checkpoint /r/checkpoints/iter_000004.pt is kept; continue with: locomo train resume=/r"
    )
    assert exc.exit_status == 143


def test_sigterm_during_start_up_is_one_line_and_143(tmp_path: Path, monkeypatch):
    import locomo.config.preflight

    stop = lambda cfg: os.kill(os.getpid(), signal.SIGTERM)  # noqa: E731
    monkeypatch.setattr(locomo.config.preflight, "check_resources", stop)
    status, err = train(tmp_path / "t", "train.iterations=1")
    assert status == 143
    assert err.strip().endswith(
        "stopped by SIGTERM outside the training loop (no trained iteration was lost)"
    )
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # main() put the handler back


def test_unexpected_failure_is_one_line_with_a_traceback_file_and_the_iteration_saved(
    tmp_path: Path, monkeypatch
):
    import locomo.training.runner

    class FailingBar:
        """A progress bar whose second update fails: after iteration 2 was trained and logged."""

        def __init__(self, *args, **kwargs):
            self.n = 0

        def update(self, k):
            self.n += 1
            if self.n == 2:
                raise RuntimeError("boom")

        def set_postfix(self, **kwargs):
            pass

        def close(self):
            pass

    monkeypatch.setattr(locomo.training.runner, "tqdm", FailingBar)
    run = tmp_path / "u"
    status, err = train(run, "train.iterations=5", "train.checkpoint_every=0")
    assert status == 1
    assert err.count("\n") == 1 and err.startswith("locomo: error: unexpected failure (RuntimeError: boom)")
    assert f"iteration 2 was saved to {run / 'checkpoints' / 'iter_000002.pt'}" in err
    assert f"full traceback in {run / 'traceback.log'}" in err
    assert "RuntimeError: boom" in (run / "traceback.log").read_text()
    assert iterations(run) == [1, 2]


def test_read_only_default_run_dir_is_one_line(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").write_text("not a directory")
    status, _, err = call_locomo("train", *CARTPOLE_RUN)
    assert status == 2 and "cannot create or write the run directory under" in err and "Traceback" not in err


# -- pure parts -------------------------------------------------------------------------------


def sizes(obs: int = 4, envs_bytes: int = 500_000) -> EnvSizes:
    return EnvSizes(obs_dim=obs, action_dim=1, state_dim=4, env_bytes=envs_bytes, time_limit=1000)


def test_memory_estimate_blames_the_largest_part():
    cfg = OmegaConf.structured(LocomoConfig)
    cfg.train.num_envs, cfg.train.steps_per_iteration = 100_000, 100_000
    estimate = estimate_memory(cfg, sizes())
    assert estimate.blame == "train.num_envs" and estimate.total > 50e9
    cfg.train.num_envs, cfg.train.steps_per_iteration = 4, 10**12
    assert estimate_memory(cfg, sizes()).blame == "train.steps_per_iteration"
    cfg.train.steps_per_iteration = 4096
    assert estimate_memory(cfg, sizes()).total < 100e6  # the default job is nowhere near a limit


def test_memory_limit_is_the_smallest_of_meminfo_cgroup_and_rlimit():
    meminfo = "MemTotal: 100 kB\nMemAvailable: 8000000 kB\n"
    assert memory_limit_from(meminfo, None, None, -1) == 8_000_000 * 1024
    assert memory_limit_from(meminfo, "max\n", None, -1) == 8_000_000 * 1024
    assert memory_limit_from(meminfo, "1000000\n", "400000\n", -1) == 600_000
    assert memory_limit_from(meminfo, None, None, 5000) == 5000


def test_unknown_keys_are_found_at_any_depth_but_open_dicts_stay_open():
    cfg = OmegaConf.create(OmegaConf.to_container(OmegaConf.structured(LocomoConfig)))  # no struct flag
    cfg.train.foo = 1
    cfg.bar = 2
    cfg.env.kwargs.anything = 3  # env.kwargs is open by design
    assert sorted((k, v) for k, v, _ in unknown_keys(cfg, LocomoConfig)) == [("bar", 2), ("train.foo", 1)]


def test_config_warnings():
    cfg = OmegaConf.structured(LocomoConfig)
    cfg.train.steps_per_iteration, cfg.algo.minibatches = 512, 3
    assert config_warnings(cfg) == [
        "algo.minibatches=3 does not divide the batch of train.steps_per_iteration=512 steps: each pass "
        "uses 3 minibatches of 170 and leaves 2 random steps out"
    ]
    cfg.algo.minibatches, cfg.algo.clip_ratio = 1, 0.2
    assert "algo.clip_ratio=0.2 has no effect" in config_warnings(cfg)[0]
    cfg.algo.epochs = 2
    assert config_warnings(cfg) == []


def test_previous_run_and_missing_iterations(tmp_path: Path):
    assert previous_run(tmp_path, "metrics.jsonl") is None
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"env_steps": 32, "iteration": 1.0}) + "\n")
    assert previous_run(tmp_path, "metrics.jsonl") == "metrics up to iteration 1, no checkpoint"
    assert missing_iterations([{"iteration": 1.0}, {"iteration": 4.0}]) == [2, 3]
