"""``locomo bench quick=true`` end to end: it measures and writes the table; nothing about speed."""

from __future__ import annotations

import json

import pytest

from locomo.benchmarks.default_job import SPLIT_PARTS, iteration_limits
from locomo.commands.bench import REQUIRED_KEYS
from locomo.config.schema import critic_widths
from tests.conftest import compose

OPTIONAL = ("gymnasium_async", "envpool", "sb3_ppo")  # null when not installed or skipped


@pytest.mark.slow
def test_bench_quick_writes_the_table_as_json(locomo_cli):
    out = locomo_cli.cwd / "bench.json"
    result = locomo_cli("bench", "quick=true", f"bench.out={out}", timeout=120)
    assert result.returncode == 0, result.stderr
    assert "locomo batched" in result.stdout and "raw physics" in result.stdout
    table = json.loads(out.read_text())
    for key in REQUIRED_KEYS:
        assert key in table
        if key in OPTIONAL and table[key] is None:
            assert key in table["notes"]  # says why it was not measured
            continue
        assert isinstance(table[key], float) and table[key] > 0, key
    assert table["settings"]["num_envs"] == 4  # quick sizes
    assert table["ratios"]["locomo_sampler/raw_physics"] > 0
    assert table["locomo_update_s"] > 0
    # The same training as a torchrun job of one process per core (a note where that cannot be:
    # one core, or more cores than the quick size's 4 envs split over).
    if table["locomo_train_ranks"] is None:
        assert "locomo_train_ranks" in table["notes"]
    else:
        assert table["locomo_train_ranks"] > 0 and table["ranks"] == table["machine"]["cores"]
        assert table["ratios"]["locomo_train_ranks/locomo_train"] > 0
        assert "locomo, torchrun" in result.stdout
    # The default job's own workload, whatever the default is (quick=true does not shrink it).
    default = compose()
    workload = table["default_workload"]
    assert workload["num_envs"] == default.train.num_envs
    assert workload["steps_per_iteration"] == default.train.steps_per_iteration
    assert workload["hidden_sizes"] == list(default.model.hidden_sizes)
    assert workload["critic_hidden_sizes"] == critic_widths(default.model)
    assert workload["reuse_batches"] == default.algo.reuse_batches
    assert table["ratios"]["locomo_train_default/raw_physics"] > 0
    assert table["raw_physics_default"] > 0
    # Where its iteration goes: every part timed (a part the runner stops calling under the name
    # the bench wraps fails here), none negative, and together the iteration's total.
    split = table["default_iteration_split"]
    for part in (*SPLIT_PARTS, "other"):
        assert split[part]["cpu_s"] >= 0 and split[part]["wall_s"] >= 0, part
    for part in SPLIT_PARTS:
        assert split[part]["cpu_s"] > 0, part
    for unit in ("cpu_s", "wall_s"):
        parts = sum(split[part][unit] for part in (*SPLIT_PARTS, "other"))
        assert parts == pytest.approx(split["total"][unit], rel=1e-9, abs=1e-9), unit
    assert sum(split[part]["cpu_fraction"] for part in (*SPLIT_PARTS, "other")) == pytest.approx(1.0)
    assert -0.05 < table["default_idle_share"] < 1
    # Every part was called (no "default_iteration_split.<part>" note); the default recipe
    # overlaps its update, so the split is measured with the parts in sequence, and says so.
    assert not [note for note in table["notes"] if note.startswith("default_iteration_split.")]
    assert "train.overlap=false" in table["notes"]["default_iteration_split"]
    assert "the default job" in result.stdout and "policy forward" in result.stdout
    # What bounds the ratio: the job's physics and the raw physics per env step, and the ratio
    # with no core idle and were the learning free (which the physics alone bounds higher).
    limits = table["default_limits"]
    assert limits["physics_cpu_us_per_step"] > 0 and limits["raw_physics_cpu_us_per_step"] > 0
    assert 0 < limits["ratio_if_no_core_idle"] < limits["ratio_if_learning_were_free"]
    assert "were the learning free" in result.stdout


def test_iteration_limits_are_the_ratio_with_no_idle_core_and_with_free_learning():
    # 4,096 steps per iteration on 2 cores: 0.8 CPU s of physics of 1.6 in all, against raw
    # physics at 12,000 env steps/s (150 us of CPU per step).
    split = {"physics": {"cpu_s": 0.8}, "total": {"cpu_s": 1.6}}
    limits = iteration_limits(split, 4096, 2, 12_000.0, 150e-6)
    assert limits["physics_cpu_us_per_step"] == pytest.approx(1e6 * 0.8 / 4096)
    assert limits["raw_physics_cpu_us_per_step"] == pytest.approx(150.0)
    # Every core busy: 1.6 CPU s on 2 cores is 0.8 s per 4,096 steps, 5,120 env steps/s.
    assert limits["ratio_if_no_core_idle"] == pytest.approx(5_120 / 12_000)
    assert limits["ratio_if_learning_were_free"] == pytest.approx(10_240 / 12_000)
    # No raw figure (not measured): no bound, and no error.
    unknown = iteration_limits(split, 4096, 2, None, None)
    assert unknown["ratio_if_no_core_idle"] is None and unknown["raw_physics_cpu_us_per_step"] is None


def test_bench_config_errors_are_one_line(locomo_cli):
    result = locomo_cli("bench", "bench.train_batch=1000")
    assert result.returncode == 2
    assert "bench.train_batch=1000 is invalid: must be a multiple of" in result.stderr
    assert "Traceback" not in result.stderr
