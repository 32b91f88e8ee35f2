"""Metrics file and W&B mode resolution."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from locomo.config import WandbConfig
from locomo.logging import MetricsLogger, read_metrics, resolve_wandb_mode


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
