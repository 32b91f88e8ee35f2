"""Issue 18, "Tidy outputs and messages": ``--version``, a bare ``locomo``, per-command ``--help``,
locomo's messages in ``train.log``, ``train.total_steps``, progress bars and ``.gitignore``.

Most tests run ``main()`` in this process (:func:`call_locomo`) on tiny budgets: seconds each.
"""

from __future__ import annotations

import io
import logging
import re
import subprocess
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import locomo
from locomo.cli_help import SCHEMAS, command_help, schema_keys
from locomo.commands import COMMANDS
from locomo.config.rules import resolve_total_steps
from locomo.errors import ConfigError
from locomo.evaluation.progress import PROGRESS_ENV
from locomo.messages import LOGGER, LineTee, job_messages
from tests.conftest import REPO, compose, metrics_rows
from tests.safety_helpers import call_locomo

# A cartpole run of 32-step iterations, nothing but training.
TINY_CARTPOLE = [
    "env=cartpole",
    "logger.wandb.mode=disabled",
    "logger.progress=false",
    "train.num_envs=2",
    "train.steps_per_iteration=32",
    "train.checkpoint_every=0",
    "video.enabled=false",
]


# -- the command line: --version, no command, --help


def test_version_prints_the_version_and_exits_0():
    status, out, err = call_locomo("--version")
    assert status == 0, err
    assert out.strip() == f"locomo {locomo.__version__}"


def test_no_command_prints_usage_on_stderr_and_exits_2():
    status, out, err = call_locomo()
    assert status == 2
    assert out == ""
    assert err.startswith("usage: locomo <command>")


def help_keys(text: str) -> list[str]:
    """The keys a ``--help`` text lists (the first word of each indented line of its keys section)."""
    section = text.split("keys (", 1)[1].split("\n\n", 1)[0]
    return [m.group(1) for m in re.finditer(r"^  (\S+)", section, re.MULTILINE)]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_help_lists_exactly_the_commands_keys_each_with_a_meaning(command: str):
    status, out, err = call_locomo(command, "--help")
    assert status == 0, err
    keys = schema_keys(SCHEMAS[command])
    assert help_keys(out) == [key for key, _ in keys]
    # Every key of every schema has a comment in locomo/config/schema.py: the help has no empty line.
    assert [key for key, meaning in keys if not meaning] == []
    assert out.startswith(f"locomo {command}: {COMMANDS[command][1]}")


def test_eval_help_has_evals_keys_and_no_training_options():
    status, out, _ = call_locomo("eval", "--help")
    assert status == 0
    assert re.search(r"^  episodes +episodes per mode", out, re.MULTILINE)
    assert "algo." not in out and "env." not in out and "config groups" not in out


def test_train_help_has_total_steps_and_the_config_groups():
    text = command_help("train")
    assert re.search(r"^  train.total_steps +A budget in env steps", text, re.MULTILINE)
    status, out, _ = call_locomo("train", "--help")
    assert status == 0
    assert re.search(r"^algo: .*walk", out, re.MULTILINE)
    assert re.search(r"^env: .*humanoid", out, re.MULTILINE)


# -- locomo's messages in train.log


def test_train_log_holds_locomos_own_messages_and_the_console_is_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(tmp_path)
    # algo.minibatches=3 does not divide the batch of 32: a warning (config.warn) before training.
    status, out, err = call_locomo(
        "train", *TINY_CARTPOLE, "train.iterations=2", "algo.minibatches=3", "hydra.run.dir=run"
    )
    assert status == 0, err
    log = (tmp_path / "run" / "train.log").read_text()
    assert "[locomo][WARNING] - locomo: warning: algo.minibatches=3 does not divide" in log
    assert re.search(r"\[locomo\]\[INFO\] - locomo: trained 2 iterations; .*run dir", log)
    # The console: the same lines as before, once each, not in the log's format.
    assert err.count("locomo: warning: algo.minibatches=3") == 1
    assert "[locomo]" not in err + out
    assert out.count("locomo: trained 2 iterations") == 1


def test_a_refused_start_leaves_the_runs_train_log_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """train holds its lines until it owns the run dir: a start refused there (the dir holds a run)
    writes neither its warning nor its error into that run's train.log."""
    monkeypatch.chdir(tmp_path)
    status, _, err = call_locomo("train", *TINY_CARTPOLE, "train.iterations=1", "hydra.run.dir=run")
    assert status == 0, err
    log = tmp_path / "run" / "train.log"
    before = log.read_text()
    status, _, err = call_locomo("train", *TINY_CARTPOLE, "algo.minibatches=3", "hydra.run.dir=run")
    assert status == 2 and "locomo: warning: algo.minibatches=3" in err and "locomo: error:" in err
    assert log.read_text() == before


def test_error_lines_reach_the_job_log(tmp_path: Path):
    """What the CLI prints for a failure inside a job (exit_for) is logged at ERROR level."""
    from locomo.cli import exit_for

    handler = logging.FileHandler(tmp_path / "job.log")
    root = logging.getLogger()
    root.addHandler(handler)  # as Hydra's job logging does
    try:
        with pytest.raises(SystemExit), job_messages():
            exit_for(ConfigError("train.total_steps", 0, "must be > 0"))
    finally:
        root.removeHandler(handler)
        handler.close()
    text = (tmp_path / "job.log").read_text()
    assert text == "locomo: error: train.total_steps=0 is invalid: must be > 0\n"


def test_line_tee_logs_whole_locomo_lines_only():
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    LOGGER.addHandler(handler)
    try:
        stream = io.StringIO()
        tee = LineTee(stream)  # type: ignore[arg-type]
        tee.write("locomo: warning: half ")
        tee.write("a line\nsome other output\n")
        tee.write("\rtrain:  10%|#  | 1/10" * 1000 + "\rlocomo: wrote x\n")  # a bar redrawn, then a note
        tee.write("locomo: error: no newline yet")
    finally:
        LOGGER.removeHandler(handler)
    assert stream.getvalue().startswith("locomo: warning: half a line\nsome other output\n")
    assert [(r.levelno, r.getMessage()) for r in records] == [
        (logging.WARNING, "locomo: warning: half a line"),
        (logging.INFO, "locomo: wrote x"),
    ]
    assert len(tee._pending) < 100  # the redrawn bar did not pile up


def test_job_messages_leaves_the_streams_alone_without_a_log_file(monkeypatch: pytest.MonkeyPatch):
    import sys

    # As in eval, render, replay (hydra/job_logging=none): no file handler on the root logger (an
    # earlier in-process job of this test session may have left Hydra's).
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    before = sys.stdout, sys.stderr
    with job_messages():
        assert (sys.stdout, sys.stderr) == before


# -- train.total_steps


BATCH_64 = ["env=cartpole", "train.num_envs=2", "train.steps_per_iteration=64"]


def test_total_steps_sets_the_iterations():
    cfg = compose(*BATCH_64, "train.total_steps=1000")
    resolve_total_steps(cfg, ["train.total_steps=1000"])
    assert cfg.train.iterations == 16  # ceil(1000 / 64)
    exact = compose(*BATCH_64, "train.total_steps=640")
    resolve_total_steps(exact, ["train.total_steps=640"])
    assert exact.train.iterations == 10


def test_total_steps_and_iterations_on_the_command_line_is_an_error():
    overrides = ["train.total_steps=1000", "train.iterations=5"]
    cfg = compose("env=cartpole", *overrides)
    with pytest.raises(ConfigError, match=r"give train\.total_steps or train\.iterations, not both"):
        resolve_total_steps(cfg, overrides)


def test_iterations_on_the_command_line_win_over_a_total_steps_from_elsewhere():
    """E.g. a resumed run trained with total_steps, extended with train.iterations=N."""
    cfg = compose("env=cartpole", "train.iterations=7")
    OmegaConf.update(cfg, "train.total_steps", 1000)  # as a checkpoint's config would hold it
    resolve_total_steps(cfg, ["train.iterations=7"])
    assert cfg.train.iterations == 7 and cfg.train.total_steps is None


@pytest.mark.parametrize("bad", [0, -5])
def test_total_steps_must_be_positive(bad: int):
    cfg = compose("env=cartpole")
    OmegaConf.update(cfg, "train.total_steps", bad)
    with pytest.raises(ConfigError, match=rf"train.total_steps={bad} is invalid: must be an integer > 0"):
        resolve_total_steps(cfg, [f"train.total_steps={bad}"])


def test_total_steps_trains_that_many_steps_and_a_resume_extends_by_iterations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(tmp_path)
    status, out, err = call_locomo("train", *TINY_CARTPOLE, "train.total_steps=70", "hydra.run.dir=run")
    assert status == 0, err
    assert "trained 3 iterations" in out  # ceil(70 / 32)
    rows = metrics_rows(tmp_path / "run")
    assert len(rows) == 3  # one metrics row per iteration
    saved = OmegaConf.load(tmp_path / "run" / "config.yaml")
    assert saved.train.iterations == 3 and saved.train.total_steps == 70
    status, out, err = call_locomo("train", "resume=run", "train.iterations=4")
    assert status == 0, err
    assert "trained 4 iterations" in out


# -- progress bars


@pytest.fixture
def walker_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


SHORT = ["checkpoint=walker", "max_steps=5"]


@pytest.mark.parametrize(
    ("args", "bars"),
    [
        (["eval", *SHORT, "episodes=2"], ["eval: deterministic", "eval: stochastic"]),
        (["render", *SHORT, "episodes=2", "width=64", "height=64"], ["render: rollouts", "render: videos"]),
        (["replay", *SHORT, "viewer=video", "width=64", "height=64"], ["replay: episode", "replay: video"]),
    ],
    ids=["eval", "render", "replay"],
)
def test_progress_bars_when_forced_and_not_in_captured_output(
    args: list[str], bars: list[str], walker_cwd: Path, monkeypatch: pytest.MonkeyPatch
):
    status, _, err = call_locomo(*args)
    assert status == 0, err
    assert not any(bar in err for bar in bars), err  # not a terminal: no bar
    monkeypatch.setenv(PROGRESS_ENV, "1")
    status, _, err = call_locomo(*args, "overwrite=true")
    assert status == 0, err
    for bar in bars:
        assert bar in err, err
    if args[0] == "render":  # the bar counts every render: 2 tiles x 6 frames, 2 x 6 each, a sheet of 12
        assert "/36 " in err, err


def test_variance_progress_bar(walker_cwd: Path, monkeypatch: pytest.MonkeyPatch):
    args = ["variance", "env=cartpole", "algo=baseline", "batches=2", "train.num_envs=2"]
    monkeypatch.setenv(PROGRESS_ENV, "1")
    status, _, err = call_locomo(*args, "train.steps_per_iteration=32", "hydra.run.dir=v")
    assert status == 0, err
    assert "variance: batches" in err and "/2 " in err


# -- .gitignore


def test_gitignore_covers_every_output_and_keeps_the_shipped_files():
    written = [
        "outputs/humanoid/2025-01-01_12-00-00/checkpoints/last.pt",
        "outputs/eval/2025-01-01_12-00-00/walker_seed0.json",
        "multirun/2025-01-01_12-00-00/0_seed=0/train.log",
        "videos/humanoid_run/last_seed0_stochastic_grid.mp4",
        "runs/a/metrics.jsonl",
        "wandb/offline-run-1/files/config.yaml",
        "walker.pt",
        "walker.json",
        "walker.ts",
        "walker.onnx",
        "exports/walker.onnx",
        "bench.json",
        "curves.png",
        "plot.log",
        "MUJOCO_LOG.TXT",
        ".hydra/config.yaml",
    ]
    shipped = [
        "locomo/assets/walker.pt",
        "locomo/assets/walker.json",
        "docs/walk_return.png",
        "docs/walk_road_seed0.mp4",
        "videos/README.md",
        "pyproject.toml",
    ]
    check = subprocess.run(
        ["git", "check-ignore", "--no-index", "--stdin"],
        cwd=REPO,
        input="\n".join(written + shipped) + "\n",
        capture_output=True,
        text=True,
    )
    ignored = set(check.stdout.split())
    assert [p for p in written if p not in ignored] == []
    assert [p for p in shipped if p in ignored] == []
