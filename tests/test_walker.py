"""The walker shipped in assets/ walks: what `locomo replay|render|eval checkpoint=walker` show.

Its command, source and evaluation are in assets/walker.json (written by `locomo export`): 100 or
more episodes in each mode, one row each. The bar ("a walker that always greets you walking"):
over seeds 0-99, at least 98 deterministic and 90 stochastic episodes end `walked_forward`. Those
numbers are read from the record (200 full episodes take minutes); a few of its episodes are run
again here, so the record is this file's, and replay's default episode is one that walks.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import torch

from locomo.commands.export import episode_row
from locomo.config.compose import compose_config
from locomo.config.schema import BehaviorConfig
from locomo.evaluation.behavior import WALKED_FORWARD
from locomo.evaluation.episodes import evaluate_episodes, load_policy, resolve_checkpoint_path, run_episodes
from locomo.evaluation.rollout import Rollout
from locomo.paths import ASSETS_DIR
from tests.safety_helpers import machine_paths

WALKER = ASSETS_DIR / "walker.pt"
RECORD = WALKER.with_suffix(".json")
# Issue 18's bar: the fraction of seeds 0-99 that must end walked_forward, per eval mode (the
# shipped walker measured 100 and 99: README, "Right after install").
BAR = {"deterministic": 0.98, "stochastic": 0.90}
SEEDS = range(100)
# Episodes of each mode run again from the record (full length, 10 envs at once): ~10-20 s in all.
LIVE_EPISODES = 10


@pytest.fixture(scope="module")
def record() -> dict[str, Any]:
    return json.loads(RECORD.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def live(record: dict[str, Any]) -> dict[str, list[Rollout]]:
    """The first LIVE_EPISODES episodes of the record, run again in each mode as export ran them."""
    torch.set_num_threads(1)
    policy = load_policy("walker")
    thresholds = BehaviorConfig(**record["behavior_thresholds"])
    envs: dict[int, Any] = {}  # both modes in the same 10 envs, as export and eval share them
    try:
        return {
            mode: evaluate_episodes(
                policy,
                LIVE_EPISODES,
                record["seed"],
                mode == "deterministic",
                thresholds,
                record["max_steps"],
                envs=envs,
            )
            for mode in BAR
        }
    finally:
        for env in envs.values():
            env.close()


def test_shipped_walker_is_small_and_found_by_name(record):
    assert WALKER.is_file() and WALKER.stat().st_size < 2 * 2**20
    assert resolve_checkpoint_path("walker") == WALKER
    assert record["policy"] == "walker.pt" and record["training_command"].startswith("locomo train")
    assert record["counters"] == load_policy("walker").counters  # the record is this file's


def test_shipped_walker_record_names_no_machine_path(record):
    assert machine_paths(record) == []
    text = RECORD.read_text(encoding="utf-8")
    assert "/work/" not in text and "/home/" not in text and "/tmp/" not in text
    home = str(Path.home())
    assert home in ("", "/") or home not in text
    # The source is the run's name and the path inside it (or a bare file name), e.g.
    # default_s1/checkpoints/last.pt.
    assert re.fullmatch(r"([^/]+/checkpoints/)?[^/]+\.pt", record["source"]), record["source"]


@pytest.mark.parametrize("mode", BAR)
def test_shipped_walker_record_holds_its_floor(record, mode):
    evaluation = record[mode]
    rows = evaluation["per_episode"]
    seeds = [row["seed"] for row in rows]
    # Full episodes (the env's time limit) labelled with the default thresholds, seeds from 0 on.
    assert record["max_steps"] is None and record["behavior_thresholds"] == asdict(BehaviorConfig())
    assert len(rows) >= len(SEEDS), f"{mode}: {len(rows)} episodes recorded; the bar is over seeds 0-99"
    assert record["seed"] == 0 and seeds == list(range(len(rows))) and len(rows) == evaluation["episodes"]
    assert Counter(row["label"] for row in rows) == {k: n for k, n in evaluation["labels"].items() if n}
    command = f"locomo eval checkpoint=walker episodes={len(rows)} seed=0 mode={mode}"
    assert evaluation["eval_command"] == command
    walked = [row["seed"] for row in rows if row["label"] == WALKED_FORWARD]
    in_bar = sum(seed in SEEDS for seed in walked)
    others = Counter(row["label"] for row in rows if row["seed"] in SEEDS and row["label"] != WALKED_FORWARD)
    assert in_bar >= BAR[mode] * len(SEEDS), f"{mode}: {in_bar}/{len(SEEDS)} walked_forward; {dict(others)}"
    assert len(walked) >= BAR[mode] * len(rows), f"{mode}: {len(walked)}/{len(rows)} walked_forward"


def test_replay_default_episode_is_recorded_walking(record):
    """`locomo replay checkpoint=walker` with its defaults shows an episode the record counts as a walk."""
    replay = compose_config("replay", ["checkpoint=walker"])
    assert replay.max_steps is None  # a full episode, as the record's
    mode = "deterministic" if replay.deterministic else "stochastic"
    (row,) = [row for row in record[mode]["per_episode"] if row["seed"] == replay.seed]
    assert row["label"] == WALKED_FORWARD, row


# Where this CPU's float32 kernels round differently from the exporting machine's, the live episodes
# are fresh draws of the same walker: each mode must walk in at least this many of LIVE_EPISODES.
# Ten fresh episodes miss these floors by chance with probability 1.6% and 1.3% at the bar's rates
# (98% and 90%), and about never at the record's (100 and 99 of 100).
LIVE_FLOOR = {"deterministic": 9, "stochastic": 7}


def same_floats(record: dict[str, Any], live: dict[str, list[Rollout]]) -> bool:
    """Whether this machine computes the walker's episodes with the record's floats.

    The policy's float32 matrix products round by the CPU's kernels (AVX2 and AVX512 sum in
    different orders), a difference of ~1e-7 in the first action that 1000 steps of contact
    dynamics grow into a different episode. The witness is the first deterministic episode: a
    return equal to the record's to 1e-9 after 1000 steps does not happen by chance."""
    row = record["deterministic"]["per_episode"][0]
    again = episode_row(live["deterministic"][0])
    return again["length"] == row["length"] and again["return"] == pytest.approx(row["return"], rel=1e-9)


@pytest.mark.parametrize("mode", BAR)
def test_shipped_walker_reproduces_its_record(record, live, mode):
    """On a CPU that rounds as the exporting one did, the first episodes are the record's exactly;
    on another, they are the same walker's episodes and walk as often as the record says."""
    recorded = {row["seed"]: row for row in record[mode]["per_episode"]}
    first = record["seed"]
    assert [rollout.seed for rollout in live[mode]] == list(range(first, first + LIVE_EPISODES))
    rows = [episode_row(rollout) for rollout in live[mode]]
    if not same_floats(record, live):
        walked = sum(row["label"] == WALKED_FORWARD for row in rows)
        assert walked >= LIVE_FLOOR[mode], (mode, [(row["seed"], row["label"]) for row in rows])
        return
    for rollout, again in zip(live[mode], rows, strict=True):
        row = recorded[rollout.seed]
        assert (again["length"], again["label"]) == (row["length"], row["label"]), (mode, row, again)
        assert again["return"] == pytest.approx(row["return"], rel=1e-9), (mode, row, again)
        assert again["distance"] == pytest.approx(row["distance"], rel=1e-9), (mode, row, again)


def test_shipped_walker_walks_forward():
    torch.set_num_threads(1)
    policy = load_policy("walker")
    env = policy.make_env()
    try:
        # 400 steps = 6 s of simulated time, deterministic (mean action), a seed beyond the bar's 0-99.
        (rollout,) = run_episodes(policy, env, 123, True, BehaviorConfig(), max_steps=400)
    finally:
        env.close()
    assert not rollout.record.terminated and rollout.record.length == 400
    assert rollout.behavior is not None and rollout.behavior.label == WALKED_FORWARD
    assert rollout.behavior.forward >= 3.0, rollout.behavior  # metres along +x in 6 s
    assert rollout.record.ret > 5 * 400 * 0.9  # alive bonus of 5 per step, plus forward progress
    assert rollout.record.ret == pytest.approx(sum(rollout.rewards.tolist()))
