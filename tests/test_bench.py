"""``locomo bench quick=true`` end to end: it measures and writes the table; nothing about speed."""

from __future__ import annotations

import json

import pytest

from locomo.commands.bench import REQUIRED_KEYS

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


def test_bench_config_errors_are_one_line(locomo_cli):
    result = locomo_cli("bench", "bench.train_batch=1000")
    assert result.returncode == 2
    assert "bench.train_batch=1000 is invalid: must be a multiple of" in result.stderr
    assert "Traceback" not in result.stderr
