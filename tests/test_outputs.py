"""Issue 17: an output never destroys what it does not own, and one run stays one run.

The one-line refusals are rows of the bad-input catalogue (tests/test_bad_inputs.py); here are the
cases that need files checked afterwards: what survives, what is removed, what is left behind.
Most run the real CLI in this process (``call_locomo``) on one tiny pendulum run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from locomo.errors import ConfigError
from locomo.paths import ASSETS_DIR
from locomo.runs.outputs import atomic_output, safe_output, write_text_atomic
from tests.conftest import PENDULUM_RUN, cli_env, start_locomo, wait_for
from tests.safety_helpers import call_locomo, finished_pendulum_run

ONE_EPISODE = ["episodes=1", "max_steps=5"]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every regular file under ``folder`` (relative path -> bytes) but Hydra's train.log, which
    collects the log lines of every command that runs in this process."""
    files = (p for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "train.log")
    return {str(p.relative_to(folder)): p.read_bytes() for p in files}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-iteration pendulum run (checkpoints 1, 2 and last.pt, a hard link to 2)."""
    out = tmp_path_factory.mktemp("outputs") / "r"
    finished_pendulum_run(out)
    return out


def copy_of(run: Path, where: Path) -> Path:
    """A copy of the run that a test may change (hard links are not kept: plain files)."""
    shutil.copytree(run, where)
    return where


# -- the check and the atomic write, in-process


def test_safe_output_checks_suffix_directory_parent_and_records(run: Path, tmp_path: Path):
    assert safe_output(tmp_path / "new" / "e.json", "json", "output") == tmp_path / "new" / "e.json"
    cases = [
        (tmp_path / "v.pt", "video", "must be a .mp4 file"),
        (tmp_path, "json", "it is a directory"),
        (run / "metrics.jsonl" / "x.json", "json", "is a file, not a directory"),
        (run / "checkpoints" / "x.json", "json", "inside the checkpoints/ folder"),
        (run / ".hydra" / "x.json", "json", "inside the .hydra/ folder"),
        (ASSETS_DIR / "walker.pt", "checkpoint", "a file shipped with locomo"),
    ]
    for path, kind, message in cases:
        with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
            safe_output(path, kind, "out")
    # overwrite=true lets a shipped file be replaced by the same kind only; nothing is written here.
    assert safe_output(ASSETS_DIR / "walker.pt", "checkpoint", "out", overwrite=True)
    with pytest.raises(ConfigError, match="overwrite=true does not replace it"):
        safe_output(ASSETS_DIR / "walker.pt", "torchscript", "out", overwrite=True)
    # A run's own outputs (eval/, render/ ...) are not its records.
    assert safe_output(run / "eval" / "x.json", "json", "output")


def test_atomic_write_keeps_the_old_file_on_failure_and_its_permissions(tmp_path: Path):
    target = tmp_path / "a.json"
    target.write_text("old\n")
    os.chmod(target, 0o640)
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("the encoder failed")
    assert target.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
    write_text_atomic(target, "new\n")
    assert target.read_text() == "new\n" and (target.stat().st_mode & 0o777) == 0o640


# -- lost data: the cases of the issue, through the CLI


def test_export_over_a_training_checkpoint_leaves_the_run_whole(run: Path):
    before = snapshot(run)
    for extra in ([], ["overwrite=true"]):
        status, _, err = call_locomo(
            "export", f"checkpoint={run}", f"out={run}/checkpoints/iter_000002.pt", *extra
        )
        assert status == 2 and "inside the checkpoints/ folder of the training run" in err, err
    assert snapshot(run) == before


def test_the_shipped_walker_is_not_replaced_through_the_assets_link(tmp_path: Path):
    (tmp_path / "assets").symlink_to(ASSETS_DIR)
    before = snapshot(ASSETS_DIR)
    status, _, err = call_locomo("export", "checkpoint=walker", f"out={tmp_path}/assets/walker.pt")
    assert status == 2 and "add overwrite=true to replace it" in err, err
    assert snapshot(ASSETS_DIR) == before


def test_eval_output_through_a_hard_link_replaces_the_link_not_the_checkpoint(run: Path, tmp_path: Path):
    last = run / "checkpoints" / "last.pt"
    before = last.read_bytes()
    link = tmp_path / "linked.json"
    os.link(last, link)  # as last.pt and iter_000002.pt are linked
    status, _, err = call_locomo("eval", f"checkpoint={run}", f"output={link}", *ONE_EPISODE)
    assert status == 0, err
    assert last.read_bytes() == before and json.loads(link.read_text())["seeds"] == [0]
    assert link.stat().st_ino != last.stat().st_ino


def test_overwrite_removes_only_what_a_run_wrote_and_says_so_first(run: Path, tmp_path: Path):
    old = copy_of(run, tmp_path / "r")
    (old / "videos").mkdir(exist_ok=True)
    (old / "videos" / "holiday.mp4").write_bytes(b"mine")
    (old / "videos" / "iter_000001.mp4").write_bytes(b"the run's")
    (old / "eval").mkdir()
    (old / "eval" / "results.json").write_text("{}\n")
    (old / "eval" / "last_seed0.json").write_text("{}\n")  # what locomo eval wrote
    (old / "notes.txt").write_text("mine\n")
    status, _, err = call_locomo(
        "train", *PENDULUM_RUN, "train.iterations=1", "seed=3", "overwrite=true", f"hydra.run.dir={old}"
    )
    assert status == 0, err
    assert (
        "overwrite=true: removing the previous run's files in" in err and "anything else in it is kept" in err
    )
    assert "videos/ (2 of its entries)" in err and "eval/ (1 of its entries)" in err
    kept = snapshot(old)
    assert (
        kept["videos/holiday.mp4"] == b"mine" and kept["eval/results.json"] == b"{}\n" and "notes.txt" in kept
    )
    assert kept.get("videos/iter_000001.mp4") != b"the run's" and "eval/last_seed0.json" not in kept
    assert "iter_000002.pt" not in os.listdir(old / "checkpoints")  # the old run's, gone


def test_overwrite_refuses_a_users_directory_and_adds_nothing_to_it(tmp_path: Path):
    user = tmp_path / "mine"
    (user / "videos").mkdir(parents=True)
    (user / "eval").mkdir()
    (user / "config.yaml").write_text("holiday: true\n")
    (user / "videos" / "holiday.mp4").write_bytes(b"mine")
    (user / "eval" / "results.json").write_text("{}\n")
    before = snapshot(user)
    for extra in (["overwrite=true"], []):
        status, _, err = call_locomo(
            "train", *PENDULUM_RUN, "train.iterations=1", f"hydra.run.dir={user}", *extra
        )
        assert status == 2 and "holds config.yaml that no locomo run wrote" in err, err
    assert snapshot(user) == before and sorted(os.listdir(user)) == ["config.yaml", "eval", "videos"]


def test_variance_refuses_an_earlier_measurement_without_overwrite(tmp_path: Path):
    from locomo.commands.variance import prepare

    (tmp_path / "gradient_variance.json").write_text("{}\n")
    with pytest.raises(ConfigError, match="holds an earlier measurement"):
        prepare([f"hydra.run.dir={tmp_path}"])
    assert prepare([f"hydra.run.dir={tmp_path}", "overwrite=true"]).record_subdir == ".hydra"


# -- one run stays one run


def test_a_refused_start_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    status, _, err = call_locomo("train", *PENDULUM_RUN, "algo.gamma=5")  # the default run dir
    assert status == 2 and "algo.gamma=5.0 is invalid" in err
    status, _, err = call_locomo("train", *PENDULUM_RUN, "algo.gamma=5", "hydra.run.dir=new/deeper")
    assert status == 2
    assert os.listdir(tmp_path) == []  # no outputs/<env>/<time>/train.log, no new/deeper
    (tmp_path / "outputs" / "mine").mkdir(parents=True)  # what existed before stays
    status, _, _ = call_locomo("train", *PENDULUM_RUN, "algo.gamma=5")
    assert status == 2 and os.listdir(tmp_path / "outputs") == ["mine"]


def test_resume_after_the_metrics_were_deleted_warns(run: Path, tmp_path: Path):
    copy = copy_of(run, tmp_path / "r")
    (copy / "metrics.jsonl").unlink()
    status, _, err = call_locomo("train", f"resume={copy}", "train.iterations=3")
    assert status == 0, err
    assert (
        "metrics.jsonl is missing or empty: iterations 1-2 (before the checkpoint) will have no metrics row"
        in err
    )
    assert [json.loads(line)["iteration"] for line in (copy / "metrics.jsonl").read_text().splitlines()] == [
        3
    ]


def test_two_runs_started_together_get_a_directory_each(tmp_path: Path):
    args = ["train", *PENDULUM_RUN, "train.iterations=1", "train.checkpoint_every=0"]
    procs = [start_locomo(*args, cwd=tmp_path) for _ in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    runs = sorted(p.parent for p in tmp_path.glob("outputs/inverted_pendulum/*/config.yaml"))
    assert len(runs) == 2 and all(len((r / "metrics.jsonl").read_text().splitlines()) == 1 for r in runs)


# -- where outputs go


def test_without_a_path_outputs_go_to_the_run_or_to_outputs_command(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(tmp_path)
    status, out, err = call_locomo("eval", f"checkpoint={run}", "seed=4", *ONE_EPISODE)
    assert status == 0, err
    assert f"wrote {run / 'eval' / 'last_seed4.json'}" in out
    status, out, err = call_locomo("eval", "checkpoint=walker", *ONE_EPISODE)
    assert status == 0, err
    (written,) = tmp_path.glob("outputs/eval/*/walker_seed0.json")
    assert f"wrote {written.relative_to(tmp_path)}" in out
    status, out, err = call_locomo("export", f"checkpoint={run}", *ONE_EPISODE)
    assert status == 0, err
    assert (run / "export" / "policy_last.pt").is_file() and (run / "export" / "policy_last.json").is_file()
    assert sorted(os.listdir(tmp_path)) == ["outputs"]  # nothing in the working directory itself


@pytest.mark.slow
def test_ctrl_c_while_render_writes_keeps_the_earlier_video(tmp_path: Path):
    # The shipped walker walks its 1000 steps: its video takes long enough to be interrupted.
    args = ["render", "checkpoint=walker", "episodes=1", "per_episode=false", "sheet=false"]
    small = ["width=64", "height=48", f"output_dir={tmp_path}"]
    done = subprocess.run(
        [sys.executable, "-m", "locomo", *args, *small, "max_steps=5"],
        cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (video,) = tmp_path.glob("*_grid.mp4")
    before = video.read_bytes()
    proc = start_locomo(*args, *small, "max_steps=1000", cwd=tmp_path)
    wait_for(
        lambda: list(tmp_path.glob(".*.tmp.mp4")), timeout=120, proc=proc, poll=0.005, what="the encoder"
    )
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted; 0 file(s) finished" in err and "checkpoint" not in err and "Traceback" not in err
    assert video.read_bytes() == before and not list(tmp_path.glob(".*"))  # whole, no torn temp file
