"""W&B in offline mode: a tiny real training run's offline files hold the run's name and tags, the
policy as a model artifact with its aliases, and the summary (final eval, metrics, counters)."""

from __future__ import annotations

import json
import math
import shutil
import struct
from pathlib import Path
from typing import Any

import pytest

from locomo.training.logging import best_checkpoint_return, wandb_run_name, wandb_tags
from tests.conftest import compose

# The brief's tiny run: 2 iterations of 256 pendulum steps, a checkpoint (and upload) after each.
RUN = [
    "env=inverted_pendulum",
    "algo=reinforce",
    "train.iterations=2",
    "train.steps_per_iteration=256",
    "train.num_envs=4",
    "train.checkpoint_every=1",
    "video.enabled=false",
    "logger.progress=false",
    "logger.wandb.mode=offline",
    "logger.wandb.eval_episodes=3",
    "logger.wandb.tags=[lecture]",
]


def wandb_records(path: Path) -> list[Any]:
    """The protobuf records of a ``run-<id>.wandb`` file.

    wandb 0.31 ships no Python reader for it (its Go core writes it), so this reads the format
    itself: a 7-byte header (``:W&B``, magic, version), then LevelDB-log blocks of 32 KiB whose
    chunks (4-byte CRC, 2-byte length, 1-byte type: 1 full, 2 first, 3 middle, 4 last) make
    up serialised ``Record`` messages of wandb's own protobuf module.
    """
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    records, pos, block, chunk = [], 7, 32 * 1024, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            records.append(record)
            chunk = b""
    return records


def summary_of(records: list[Any]) -> dict[str, Any]:
    """The run's summary as the records leave it: each key's last value."""
    summary: dict[str, Any] = {}
    for record in records:
        if record.WhichOneof("record_type") == "summary":
            for item in record.summary.update:
                summary[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return summary


@pytest.fixture
def wandb_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """W&B's data (artifact staging), cache and config directories under ``tmp_path``; no login."""
    for name in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_DIR", raising=False)
    return tmp_path


def test_offline_run_holds_name_tags_model_artifact_and_summary(wandb_home, capsys):
    from locomo.evaluation.episodes import load_policy
    from locomo.training.runner import Runner

    run_dir = wandb_home / "run"
    runner = Runner(compose(*RUN), run_dir)
    metrics = runner.run()
    # `run.finish()` only tells wandb-core that the run is done (the request is published, not
    # answered): the core closes and flushes the run's transaction log after that, so read too
    # early it can hold the header alone. A CLI run is complete at exit, where W&B's atexit hook
    # waits for the core; in process, `wandb.teardown()` is that wait.
    import wandb

    wandb.teardown()

    # One line says where the offline run is and how to upload it.
    err = capsys.readouterr().err
    (offline,) = run_dir.glob("wandb/offline-run-*")
    lines = [line for line in err.splitlines() if "wandb sync" in line]
    assert lines == [f"locomo: W&B offline: run in {offline}; upload later with: wandb sync {offline}"]

    records = wandb_records(next(offline.glob("run-*.wandb")))
    kinds = [r.WhichOneof("record_type") for r in records]
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run.display_name == "inverted_pendulum-reinforce-s0"
    assert list(run.tags) == ["inverted_pendulum", "reinforce", "lecture"]

    # A model artifact version per checkpoint; the last one holds `latest`.
    artifacts = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact"]
    assert [a.name for a in artifacts] == [f"model-{run.run_id}"] * 2
    assert all(a.type == "model" for a in artifacts)
    assert [json.loads(a.metadata)["iteration"] for a in artifacts] == [1, 2]
    assert ["latest" in a.aliases for a in artifacts] == [True, True]  # W&B moves it to the newest
    assert "iter_000002" in artifacts[1].aliases
    returns = [json.loads(a.metadata)["rollout/return_mean"] for a in artifacts]
    best = [i for i, a in enumerate(artifacts) if "best" in a.aliases]
    assert best and best[0] == 0 and returns[best[-1]] == max(returns)  # the training return ranks them

    # The artifact's file is the policy alone (as `locomo export` writes it), and it loads.
    (entry,) = artifacts[-1].manifest.contents
    assert entry.path == "policy.pt"
    staged = Path(entry.local_path)
    assert staged.is_relative_to(wandb_home / "wandb_data_dir")  # kept there for `wandb sync`
    policy_file = wandb_home / "policy.pt"
    shutil.copy(staged, policy_file)
    policy = load_policy(policy_file)
    assert policy.counters["iteration"] == 2
    assert staged.stat().st_size < (run_dir / "checkpoints" / "last.pt").stat().st_size

    # The summary: final deterministic eval, last training metrics and counters, the model.
    summary = summary_of(records)
    assert summary["eval/episodes"] == 3
    assert math.isfinite(summary["eval/return_mean"]) and summary["eval/length_mean"] > 0
    assert "eval/terminated_fraction" in summary
    assert summary["iteration"] == 2 and summary["env_steps"] == 512
    assert summary["rollout/return_mean"] == pytest.approx(metrics["rollout/return_mean"])
    assert summary["model/artifact"] == f"model-{run.run_id}:latest"
    assert summary["checkpoint"] == str(run_dir / "checkpoints" / "iter_000002.pt")
    assert kinds[-1] == "exit"


def test_names_tags_and_best_of_a_resumed_run():
    config = {"env": {"name": "humanoid"}, "algo": {"name": "walk", "reuse_batches": 2}, "seed": 3}
    config["train"] = {"overlap": True}
    assert wandb_run_name(config) == "humanoid-walk-s3"
    assert wandb_tags(config, ["walk", "mine"]) == ["humanoid", "walk", "overlap", "reuse", "mine"]
    rows = [
        {"iteration": 1, "rollout/return_mean": 50.0},  # not checkpointed (every 2): not uploaded
        {"iteration": 2, "rollout/return_mean": 10.0},
        {"iteration": 4, "rollout/return_mean": None},  # no episode had ended
    ]
    assert best_checkpoint_return(rows, 2) == 10.0
    assert best_checkpoint_return(rows, 0) == -math.inf


def test_auto_mode_without_login_says_once_how_to_sync(wandb_home, monkeypatch, capsys):
    """``auto`` without a login falls back to offline: no longer silently."""
    from omegaconf import OmegaConf

    from locomo.config.schema import WandbConfig
    from locomo.training.logging import MetricsLogger

    monkeypatch.setenv("NETRC", str(wandb_home / "no-netrc"))
    config = {"env": {"name": "cartpole"}, "algo": {"name": "baseline"}, "seed": 1}
    logger = MetricsLogger(wandb_home, "metrics.jsonl", OmegaConf.structured(WandbConfig()), config)
    logger.log({"rollout/return_mean": 1.0}, step=8)
    logger.close()
    (offline,) = wandb_home.glob("wandb/offline-run-*")
    assert capsys.readouterr().err.splitlines() == [
        f"locomo: W&B offline (not logged in; `wandb login` logs online): run in {offline}; "
        f"upload later with: wandb sync {offline}"
    ]


def test_online_fallback_removes_only_the_failed_attempts_dir(wandb_home, monkeypatch, capsys):
    """Online with no reachable server falls back to offline; the ``wandb/run-*`` dir that the failed
    online attempt made is removed (it sat beside the offline run, looking like a second run),
    and a run dir of an earlier session is kept."""
    from omegaconf import OmegaConf

    from locomo.config.schema import WandbConfig
    from locomo.training.logging import MetricsLogger

    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    earlier = wandb_home / "wandb" / "run-20250101_000000-earlier0"
    earlier.mkdir(parents=True)
    cfg = OmegaConf.structured(WandbConfig(mode="online", init_timeout=2))
    config = {"env": {"name": "cartpole"}, "algo": {"name": "baseline"}, "seed": 0}
    logger = MetricsLogger(wandb_home, "metrics.jsonl", cfg, config)
    logger.log({"rollout/return_mean": 1.0}, step=8)
    logger.close()
    (offline,) = wandb_home.glob("wandb/offline-run-*")
    assert sorted(wandb_home.glob("wandb/run-*")) == [earlier]
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("locomo:")]
    assert line.startswith("locomo: W&B online failed (") and f"wandb sync {offline}" in line
    assert "could not remove" not in line
