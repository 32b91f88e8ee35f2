"""`locomo variance` and `locomo plot` end to end, and the variance table's arithmetic."""

from __future__ import annotations

import json
import math

import pytest
import torch

from locomo.errors import ConfigError
from locomo.evaluation.variance import parse_estimator, variance_table
from tests.conftest import TINY


def test_variance_table_hand_computed():
    grads = {"a": torch.tensor([[1.0, 0.0], [3.0, 0.0]]), "b": torch.tensor([[2.0, 0.0], [2.0, 0.0]])}
    table = variance_table(grads)
    # a: mean (2, 0), deviations +-1 -> variance (1 + 1) / (2 - 1) = 2; b: no spread.
    assert table["a"] == {"variance": 2.0, "mean_norm": 2.0, "relative_variance": 0.5}
    assert table["b"]["variance"] == 0.0


def test_parse_estimator_names_the_allowed_values():
    assert parse_estimator("total/optimal") == ("total", "optimal")
    with pytest.raises(ConfigError, match="each must be one of total/none"):
        parse_estimator("total/value")


@pytest.mark.slow
def test_variance_command_writes_table_and_figure(locomo_cli):
    result = locomo_cli(
        "variance", "env=cartpole", "batches=3", "train.num_envs=2", "train.steps_per_iteration=64"
    )
    assert result.returncode == 0, result.stderr
    (json_file,) = locomo_cli.cwd.glob("outputs/variance/cartpole/*/gradient_variance.json")
    table = json.loads(json_file.read_text())
    assert set(table) == {f"{r}/{b}" for r in ("total", "reward_to_go") for b in ("none", "mean", "optimal")}
    assert all(row["variance"] > 0 for row in table.values())
    png = json_file.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_multirun_then_plot_groups_runs_by_estimator(locomo_cli):
    sweep = locomo_cli(
        "train",
        "-m",
        "env=cartpole",
        "seed=0,1",
        "algo=baseline",
        "algo.baseline=none,mean",
        *TINY,
        "logger.wandb.mode=disabled",
        "hydra.sweep.dir=sweep",
    )
    assert sweep.returncode == 0, sweep.stderr
    assert len(list((locomo_cli.cwd / "sweep").glob("*/metrics.jsonl"))) == 4  # 2 seeds x 2 baselines
    result = locomo_cli("plot", "runs=sweep")
    assert result.returncode == 0, result.stderr
    assert "algo.baseline=mean: 2 run(s)" in result.stdout
    assert "algo.baseline=none: 2 run(s)" in result.stdout
    assert (locomo_cli.cwd / "sweep" / "curves.png").stat().st_size > 1000


def test_plot_of_a_missing_folder_is_a_clear_error(locomo_cli):
    result = locomo_cli("plot", "runs=nowhere")
    assert result.returncode == 2
    assert "runs='nowhere' is invalid: must be a folder holding runs" in result.stderr


def test_behavior_mix_weights_rows_by_their_finished_episodes():
    from locomo.evaluation.plots import behavior_mix

    rows = [
        {"env_steps": 10, "rollout/episodes": 3.0, "behavior/fell_forward": 1.0},
        {"env_steps": 20, "rollout/episodes": 1.0, "behavior/walked_forward": 1.0},
        {"env_steps": 30, "rollout/episodes": 0.0},  # nothing finished: no weight, no label keys
        {"env_steps": 40, "rollout/episodes": 0.0},
    ]
    steps, mix = behavior_mix(rows, window=2)
    assert steps == [20.0, 40.0]
    assert mix["fell_forward"][0] == 0.75 and mix["walked_forward"][0] == 0.25
    assert math.isnan(mix["fell_forward"][1])  # a window where no episode finished


def test_plot_behavior_draws_a_run(locomo_cli):
    runs = locomo_cli.cwd / "runs" / "r"
    runs.mkdir(parents=True)
    rows = [
        {
            "iteration": i,
            "env_steps": 100 * i,
            "rollout/episodes": 4.0,
            "behavior/fell_forward": 1 - i / 10,
            "behavior/walked_forward": i / 10,
        }
        for i in range(1, 11)
    ]
    (runs / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = locomo_cli("plot", f"runs={runs.parent}", "kind=behavior", "window=5")
    assert result.returncode == 0, result.stderr
    assert (runs.parent / "behavior.png").stat().st_size > 10_000
    assert "last window: fell_forward 20%, walked_forward 80%" in result.stdout


def test_plot_says_what_it_skipped_and_refuses_when_nothing_is_left(tmp_path, monkeypatch):
    """Garbage, NaN and Infinity in metrics files: the rows and runs left out are counted in one
    warning; when nothing plottable remains, one error line and exit 2 (it drew an empty chart)."""
    from tests.safety_helpers import call_locomo

    monkeypatch.chdir(tmp_path)
    good, bad = tmp_path / "runs" / "good", tmp_path / "runs" / "bad"
    good.mkdir(parents=True)
    bad.mkdir()
    rows = [{"env_steps": 100 * i, "rollout/return_mean": float(i)} for i in range(1, 4)]
    (good / "metrics.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows) + '{"env_steps": 400, "rollout/return_mean": NaN}\n'
    )
    (bad / "metrics.jsonl").write_bytes(
        b'garbage\n{"env_steps": Infinity, "rollout/return_mean": 1}\n'
        b'{"env_steps": 9, "rollout/return_mean": "x"}\n'
    )
    status, out, err = call_locomo("plot", f"runs={tmp_path / 'runs'}")
    assert status == 0, err
    assert err.splitlines() == [
        "locomo: warning: skipped 4 of 7 metrics row(s): 1 unreadable (torn, not UTF-8 or not a JSON "
        "object), 1 without a finite env_steps, 2 with rollout/return_mean NaN, Infinity or not a number; "
        f"1 of 2 run(s) left out, nothing plottable in them ({bad / 'metrics.jsonl'})"
    ]
    assert "run: 1 run(s)" in out and (tmp_path / "runs" / "curves.png").stat().st_size > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]  # no plot.log in the working directory
    (good / "metrics.jsonl").unlink()
    status, out, err = call_locomo("plot", f"runs={tmp_path / 'runs'}", "overwrite=true")
    assert status == 2
    (line,) = err.splitlines()
    runs = tmp_path / "runs"
    assert line.startswith(f"locomo: error: runs='{runs}' is invalid: nothing to plot: skipped 3 of 3")


def test_plot_behavior_leaves_non_finite_values_out(tmp_path):
    from locomo.evaluation.plots import Skipped, plot_behavior

    run = tmp_path / "r"
    run.mkdir()
    nan = float("nan")
    rows = [
        {"env_steps": 100, "rollout/episodes": 2.0, "behavior/fell_forward": 1.0},
        {"env_steps": 200, "rollout/episodes": 2.0, "behavior/fell_forward": 1.0},
        {"env_steps": 300, "rollout/episodes": 2, "behavior/fell_forward": 1, "behavior/walked_forward": nan},
        {"env_steps": 400, "rollout/episodes": 2.0, "behavior/walked_forward": 1.0},
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))  # NaN as JSON's NaN
    skipped = Skipped()
    last = plot_behavior([run / "metrics.jsonl"], 2, tmp_path / "b.png", skipped)
    assert last["fell_forward"] == 0.5 and last["walked_forward"] == 0.5  # the NaN made the window NaN
    assert skipped.bad_values == {"behavior/walked_forward": 1} and skipped.rows == 4
