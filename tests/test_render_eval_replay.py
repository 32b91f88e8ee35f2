"""render / eval / replay end to end, from a checkpoint that a tiny ``locomo train`` run wrote.

The training run itself films every iteration (real EGL rendering, real mp4s) and logs the
videos to an offline W&B run; the commands then load its last.pt in fresh processes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import imageio.v3 as iio
import pytest
import torch

from locomo.evaluation.behavior import LABELS
from locomo.evaluation.episodes import load_policy
from locomo.runs.checkpoint import CheckpointError, save_atomic
from tests.conftest import TINY, metrics_rows, run_locomo

pytestmark = pytest.mark.slow

SMALL_VIDEO = ["width=160", "height=120", "max_steps=40"]
HEADLESS = {"DISPLAY": "", "WAYLAND_DISPLAY": ""}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(working directory, run directory) of a 2-iteration humanoid run with a video per iteration."""
    cwd = tmp_path_factory.mktemp("cli")
    result = run_locomo(
        "train",
        *TINY,
        "logger.wandb.mode=offline",
        "video.every=1",
        "video.episodes=2",
        "video.width=160",
        "video.height=120",
        "video.max_steps=40",
        "train.checkpoint_every=1",  # iter_000001.pt and iter_000002.pt, for render iterations=[1,2]
        cwd=cwd,
    )
    assert result.returncode == 0, result.stderr
    (run,) = (p.parent for p in cwd.glob("outputs/humanoid/*/config.yaml"))
    return cwd, run


def test_training_writes_labelled_videos_and_logs_them_to_wandb(trained):
    _, run = trained
    videos = sorted((run / "videos").glob("*.mp4"))
    assert [p.name for p in videos] == ["iter_000001.mp4", "iter_000002.mp4"]
    frames = iio.imread(videos[-1])
    assert frames.shape[1:] == (120, 320, 3) and frames.shape[0] >= 2  # two tiles side by side
    rows = metrics_rows(run)
    for row in rows:
        fractions = [row[f"behavior/{label}"] for label in LABELS]
        assert sum(fractions) == pytest.approx(1.0)  # every finished episode has one label
        assert sum(row[f"video/behavior/{label}"] for label in LABELS) == 2  # the video's 2 rollouts
        assert row["perf/video_s"] > 0 and row["perf/video_render_ms_per_frame"] > 0
    (offline,) = run.glob("wandb/offline-run-*")
    media = sorted((offline / "files" / "media" / "videos").rglob("*.mp4"))
    assert len(media) == 2 and all(p.stat().st_size > 1000 for p in media)
    # The behaviour mix as a stacked-area chart, drawn at each checkpoint (every iteration here).
    charts = sorted((offline / "files" / "media" / "images").rglob("charts/behavior*.png"))
    assert len(charts) == 2 and (run / "behavior.png").stat().st_size > 5000


def test_render_writes_grid_per_episode_videos_and_a_sheet(trained):
    cwd, run = trained
    result = run_locomo("render", f"checkpoint={run}", "episodes=2", "seed=7", *SMALL_VIDEO, cwd=cwd)
    assert result.returncode == 0, result.stderr
    out = run / "render"  # the run's own folder, wherever the command runs
    grid = out / "last_seed7_stochastic_grid.mp4"
    episodes = sorted(out.glob("last_seed7_stochastic_ep*.mp4"))
    assert grid.is_file() and len(episodes) == 2 and (out / "last_seed7_stochastic_sheet.png").is_file()
    assert all(re.search(r"_ep0[12]_(" + "|".join(LABELS) + r")\.mp4$", p.name) for p in episodes)
    grid_frames, first = iio.imread(grid), iio.imread(episodes[0])
    assert grid_frames.shape[1:] == (120, 320, 3) and first.shape[1:] == (120, 160, 3)
    assert grid_frames.shape[0] == max(first.shape[0], iio.imread(episodes[1]).shape[0])
    assert "render cost:" in result.stdout and "ms per rendered frame" in result.stdout
    assert not (cwd / ".hydra").exists() and not list(cwd.glob("*.log"))  # no Hydra clutter


def test_render_compares_checkpoints_of_one_run_side_by_side(trained):
    cwd, run = trained
    result = run_locomo(
        "render", f"checkpoint={run}", "iterations=[1,2]", "episodes=2", "seed=3", *SMALL_VIDEO, cwd=cwd
    )
    assert result.returncode == 0, result.stderr
    out = run / "render"
    frames = iio.imread(out / "iters_1-2_seed3_stochastic.mp4")
    assert frames.shape[1:] == (240, 320, 3)  # a column per checkpoint, a row per episode
    sheet = iio.imread(out / "iters_1-2_seed3_stochastic_sheet.png")
    assert sheet.shape[0] == 4 * 120  # a row per tile
    assert re.search(r"^iter 1 \(0\.0M steps\)\s+return", result.stdout, re.M)
    assert re.search(r"^iter 2 \(0\.0M steps\)\s+return", result.stdout, re.M)
    # The same seeds under one checkpoint: the first checkpoint's rollouts are the plain render's.
    missing = run_locomo("render", f"checkpoint={run}", "iterations=[1,7]", *SMALL_VIDEO, cwd=cwd)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "iter_000007.pt" in missing.stderr and "checkpoints of iterations [1, 2]" in missing.stderr


def test_export_writes_the_policy_alone_with_its_evaluation(trained):
    cwd, run = trained
    out = cwd / "shipped" / "p.pt"
    result = run_locomo("export", f"checkpoint={run}", f"out={out}", "episodes=2", "max_steps=30", cwd=cwd)
    assert result.returncode == 0, result.stderr
    state = torch.load(out, weights_only=True)
    assert set(state) == {"format", "version", "actor", "obs_normalizer", "config", "spaces", "counters"}
    assert out.stat().st_size < (run / "checkpoints" / "last.pt").stat().st_size / 2  # no critic, no Adam
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["training_command"].startswith("locomo train ") and report["counters"]["iteration"] == 2
    assert report["source"] == f"{run.name}/checkpoints/last.pt"  # no path of this machine
    # The exported file evaluates exactly as the checkpoint it came from, in both modes.
    flags = ["episodes=2", "max_steps=30", "mode=both", f"output={cwd / 'e.json'}"]
    again = run_locomo("eval", f"checkpoint={out}", *flags, cwd=cwd)
    assert again.returncode == 0, again.stderr
    evaluated = json.loads((cwd / "e.json").read_text())["modes"]
    for mode in ("deterministic", "stochastic"):
        assert report[mode]["episodes"] == 2 and len(report[mode]["per_episode"]) == 2
        assert evaluated[mode]["return_mean"] == pytest.approx(report[mode]["return_mean"], rel=1e-9)
        assert [e["return"] for e in evaluated[mode]["per_episode"]] == pytest.approx(
            [e["return"] for e in report[mode]["per_episode"]], rel=1e-9
        )
    bad = run_locomo("export", f"checkpoint={run}", "out=p.json", cwd=cwd)
    assert bad.returncode == 2 and "out='p.json' is invalid: must be a .pt file" in bad.stderr


def test_eval_table_json_and_replay_reproduces_its_returns(trained):
    cwd, run = trained
    # The same step cap as the replays below (SMALL_VIDEO's max_steps), so episode 0 is the same episode.
    result = run_locomo(
        "eval", f"checkpoint={run}/checkpoints/last.pt", "episodes=3", "seed=5", "max_steps=40", cwd=cwd
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"^deterministic\s+3\s", result.stdout, re.M)
    assert re.search(r"^stochastic\s+3\s", result.stdout, re.M)
    report = json.loads((run / "eval" / "last_seed5.json").read_text())
    # 2 iterations of the default recipe's overlapped collection: 3 batches of 64 steps
    assert report["seeds"] == [5, 6, 7] and report["counters"] == {"iteration": 2, "env_steps": 192}
    for mode in ("deterministic", "stochastic"):
        summary = report["modes"][mode]
        assert len(summary["per_episode"]) == 3 and sum(summary["labels"].values()) == 3
        assert summary["distance_mean"] >= 0 and summary["length_mean"] > 0
    for mode, flag in (("deterministic", "true"), ("stochastic", "false")):
        args = (f"checkpoint={run}", "seed=5", f"deterministic={flag}", *SMALL_VIDEO)
        replay = run_locomo("replay", *args, cwd=cwd, env=HEADLESS)
        assert replay.returncode == 0, replay.stderr
        assert "no display (DISPLAY is unset): writing a video instead" in replay.stderr
        returned = float(re.search(r"return (-?[\d.]+)", replay.stdout).group(1))
        assert returned == pytest.approx(report["modes"][mode]["per_episode"][0]["return"], abs=1e-5)
        video = run / "replay" / f"last_replay_seed5_{mode}.mp4"
        assert iio.imread(video).shape[0] == report["modes"][mode]["per_episode"][0]["length"] + 1


def test_unusable_checkpoints_are_one_line_errors(trained, tmp_path):
    cwd, run = trained
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    whole = (run / "checkpoints" / "last.pt").read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(whole[: len(whole) // 2])
    # the wording of load errors belongs to locomo.runs.checkpoint; here: one line that names the file
    for path in (text, foreign, truncated, tmp_path / "missing.pt"):
        with pytest.raises(CheckpointError, match=path.name):
            load_policy(path)
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    state["config"]["model"]["hidden_sizes"] = [7]  # weights of another architecture
    mismatched = tmp_path / "mismatched.pt"
    save_atomic(state, mismatched)
    with pytest.raises(CheckpointError, match="weights do not fit the config saved with them"):
        load_policy(mismatched)
    cases = [
        ("render", f"checkpoint={tmp_path / 'missing.pt'}", "missing.pt does not exist"),
        ("replay", f"checkpoint={foreign}", "foreign.pt is not a locomo checkpoint"),
        ("eval", f"checkpoint={truncated}", "truncated.pt"),
        ("render", "episodes=2", "checkpoint=None is invalid: give the checkpoint to load"),
    ]
    for command, arg, message in cases:
        result = run_locomo(command, arg, cwd=cwd, env=HEADLESS)
        assert result.returncode == 2, (command, arg, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("locomo: error:") and message in lines[0], lines


def test_replay_window_without_a_display_is_a_clear_error(trained):
    cwd, run = trained
    result = run_locomo("replay", f"checkpoint={run}", "viewer=window", cwd=cwd, env=HEADLESS)
    assert result.returncode == 2
    assert "viewer='window' is invalid: no display" in result.stderr and "Traceback" not in result.stderr


def test_training_goes_on_without_video_when_rendering_fails(tmp_path):
    # OSMesa with PyOpenGL pinned to EGL cannot work anywhere: a deterministic GL failure, whose
    # fix is to unset PYOPENGL_PLATFORM (not to install EGL: MuJoCo's own message said so, unformatted).
    broken_gl = {"MUJOCO_GL": "osmesa", "PYOPENGL_PLATFORM": "egl"}
    result = run_locomo("train", *TINY, "logger.wandb.mode=disabled", cwd=tmp_path, env=broken_gl)
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if "videos off" in line]
    assert len(notes) == 1, result.stderr
    assert "PYOPENGL_PLATFORM='egl' (environment variable) does not match MUJOCO_GL=osmesa" in notes[0]
    assert "fix: unset PYOPENGL_PLATFORM" in notes[0] and "{!r}" not in notes[0]
    (run,) = (p.parent for p in tmp_path.glob("outputs/humanoid/*/config.yaml"))
    assert (run / "checkpoints" / "last.pt").is_file() and not list(run.glob("videos/*.mp4"))


def test_eval_in_chunks_gives_the_episodes_of_one_batch(monkeypatch):
    """Episodes run at most EPISODES_AT_ONCE at a time (memory stays flat for any count up to the
    bound); episode i depends only on seed + i, so the chunks give what one batch of envs gives."""
    from locomo.errors import ConfigError
    from locomo.evaluation import episodes as evaluation
    from locomo.evaluation.episodes import (
        MAX_EVAL_EPISODES,
        check_episode_count,
        evaluate_episodes,
        run_episodes,
    )

    policy = load_policy("walker")
    thresholds = policy.cfg.behavior
    env = policy.make_env(3)
    try:
        whole = run_episodes(policy, env, 7, False, thresholds, max_steps=8)
    finally:
        env.close()
    monkeypatch.setattr(evaluation, "EPISODES_AT_ONCE", 2)
    chunked = evaluate_episodes(policy, 3, 7, False, thresholds, max_steps=8)
    assert [r.seed for r in chunked] == [7, 8, 9]
    assert [r.record.ret for r in chunked] == [r.record.ret for r in whole]
    check_episode_count(MAX_EVAL_EPISODES, "eval")
    with pytest.raises(ConfigError, match=f"must be at most {MAX_EVAL_EPISODES}"):
        check_episode_count(MAX_EVAL_EPISODES + 1, "eval")
