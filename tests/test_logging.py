"""Metrics file and W&B mode resolution."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from locomo.config.schema import WandbConfig
from locomo.errors import MetricsError
from locomo.runs.metrics_file import read_metrics
from locomo.training.logging import MetricsLogger, resolve_wandb_mode
from tests.conftest import make_runner


def test_auto_mode_is_offline_without_credentials(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    assert resolve_wandb_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_wandb_mode("auto") == "online"
    assert resolve_wandb_mode("disabled") == "disabled"


def test_netrc_login_counts_as_logged_in(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    assert resolve_wandb_mode("auto") == "online"


def test_metrics_file_and_monotonic_step_axis(tmp_path):
    cfg = OmegaConf.structured(WandbConfig(mode="disabled"))
    logger = MetricsLogger(tmp_path, "metrics.jsonl", cfg, {"seed": 0})
    logger.log({"rollout/return_mean": 1.5, "losses/policy": float("nan")}, step=10)
    logger.log({"rollout/return_mean": 2.5, "losses/policy": 0.1}, step=20)
    with pytest.raises(ValueError, match="backwards"):
        logger.log({"rollout/return_mean": 0.0}, step=5)
    logger.close()
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["env_steps"] for r in rows] == [10, 20]
    assert rows[0]["losses/policy"] is None  # NaN is written as null: the file stays valid JSON


def test_unwritable_metrics_file_is_a_metrics_error(tmp_path):
    """Opening fails (a directory in its place) or a write fails (a full disk): MetricsError, one line."""
    cfg = OmegaConf.structured(WandbConfig(mode="disabled"))
    (tmp_path / "metrics.jsonl").mkdir()
    with pytest.raises(MetricsError, match=r"cannot write metrics to .*: Is a directory; move it away"):
        MetricsLogger(tmp_path, "metrics.jsonl", cfg, {"seed": 0})
    (tmp_path / "full.jsonl").symlink_to("/dev/full")  # every write: No space left on device
    logger = MetricsLogger(tmp_path, "full.jsonl", cfg, {"seed": 0})
    with pytest.raises(MetricsError, match=r"cannot write metrics to .*full\.jsonl: No space left on device"):
        logger.log({"rollout/return_mean": 1.0}, step=10)
    logger.close()  # fails the same way; already reported, so not raised again


def test_metrics_write_failure_stops_training_without_a_rescue_save(tmp_path):
    """Like a checkpoint write failure, it is the error itself: no extra checkpoint, no added note."""
    (tmp_path / "metrics.jsonl").symlink_to("/dev/full")
    runner = make_runner(tmp_path, "train.checkpoint_every=0")
    with pytest.raises(MetricsError) as info:
        runner.run()
    assert not getattr(info.value, "__notes__", [])
    assert not (tmp_path / "checkpoints").exists() or not list((tmp_path / "checkpoints").iterdir())
