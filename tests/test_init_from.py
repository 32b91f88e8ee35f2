"""Fine-tuning: ``train.init_from`` starts a new run from a checkpoint's policy, critic and
normalisers; ``model.max_log_std`` caps the Gaussian policy's noise (how the shipped walker was
taught to stay up while it samples its actions)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import yaml

from locomo.rl.policy import GaussianActor
from locomo.runs.checkpoint import load
from locomo.training.runner import Runner
from tests.conftest import PENDULUM_RUN, compose, make_runner, run_locomo


def test_max_log_std_caps_the_std_and_stops_its_gradient_above_the_cap():
    torch.manual_seed(0)
    obs = torch.randn(5, 4)
    capped = GaussianActor(4, 2, [8], "tanh", init_log_std=0.0, max_log_std=-1.0)
    dist = capped(obs)
    assert torch.allclose(dist.std, torch.full((2,), math.exp(-1.0)))
    dist.log_prob(dist.sample()).sum().backward()
    assert torch.equal(capped.log_std.grad, torch.zeros(2))  # above the cap: no gradient
    below = GaussianActor(4, 2, [8], "tanh", init_log_std=-2.0, max_log_std=-1.0)
    dist = below(obs)
    assert torch.allclose(dist.std, torch.full((2,), math.exp(-2.0)))  # under the cap: its own std
    dist.log_prob(dist.sample()).sum().backward()
    assert below.log_std.grad.abs().sum() > 0


def test_a_run_started_from_a_checkpoint_has_its_weights_and_new_counters(tmp_path: Path):
    first = make_runner(tmp_path / "first", "algo=walk", "train.overlap=false", "train.iterations=2")
    first.run()
    saved = load(tmp_path / "first")
    cfg = compose(*PENDULUM_RUN, "algo=walk", "train.overlap=false", f"train.init_from={tmp_path / 'first'}")
    second = Runner(cfg, tmp_path / "second", init_state=saved)
    for name, tensor in second.actor.state_dict().items():
        assert torch.equal(tensor, saved["actor"][name]), name
    assert second.critic is not None
    for name, tensor in second.critic.state_dict().items():
        assert torch.equal(tensor, saved["critic"][name]), name
    for name, tensor in second.normalizer.state_dict().items():
        assert torch.equal(tensor, saved["obs_normalizer"][name]), name
    assert (second.iteration, second.env_steps) == (0, 0)
    assert not second.algorithm.optimizer.state  # a new optimiser: no moments yet
    # the per-env running returns are the new envs' own; the return statistics are the checkpoint's
    scaler = second.reward_scaler.state_dict()
    assert torch.equal(scaler["running_return"], torch.zeros_like(scaler["running_return"]))


def test_fine_tuning_the_shipped_walker_from_the_command_line(tmp_path: Path):
    """``train.init_from=walker`` (a shipped policy, which holds no critic) with a noise cap:
    the run starts from the walker's policy, says what starts new, and records the key."""
    result = run_locomo(
        "train",
        "env=humanoid",
        "train.init_from=walker",
        "model.max_log_std=-1.6",
        "train.num_envs=2",
        "train.steps_per_iteration=64",
        "train.iterations=1",
        "train.overlap=false",
        "video.enabled=false",
        "logger.wandb.mode=disabled",
        "logger.progress=false",
        "hydra.run.dir=run",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "starting from the policy in train.init_from=walker; not in it, so new: critic" in result.stdout
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert config["train"]["init_from"] == "walker"
    assert config["model"]["max_log_std"] == -1.6
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert abs(rows[-1]["losses/action_std"] - math.exp(-1.6)) < 1e-6  # the walker's std is above the cap


def test_export_of_a_fine_tuned_run_names_what_it_started_from_without_machine_paths(tmp_path: Path):
    tiny = [*PENDULUM_RUN, "train.iterations=2", "video.enabled=false"]
    first = run_locomo("train", *tiny, "hydra.run.dir=first", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    start = tmp_path / "first" / "checkpoints" / "iter_000002.pt"
    second = run_locomo("train", *tiny, f"train.init_from={start}", "hydra.run.dir=second", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    exported = run_locomo("export", "checkpoint=second", "out=policy.pt", "episodes=2", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    text = (tmp_path / "policy.json").read_text()
    assert str(tmp_path) not in text
    record = json.loads(text)
    assert "train.init_from=first/checkpoints/iter_000002.pt" in record["training_command"]
    assert record["started_from"]["source"] == "first/checkpoints/iter_000002.pt"
    assert record["started_from"]["training_command"].startswith("locomo train env=inverted_pendulum")


def test_the_critic_can_be_narrower_than_the_policy_and_its_checkpoints_resume_and_start_runs(tmp_path: Path):
    """``model.critic_hidden_sizes``: the value net's own widths, kept in checkpoints (resume and
    eval rebuild it), and named in the one-line error of a run that starts from it with others."""
    policy = ("algo=walk", "train.overlap=false", "model.hidden_sizes=[32,32]")
    narrow = (*policy, "model.critic_hidden_sizes=[8]")
    first = make_runner(tmp_path / "first", *narrow, "train.iterations=2")
    assert next(p.shape for p in first.actor.parameters() if p.dim() == 2) == (32, 4)
    assert first.critic is not None
    assert [tuple(p.shape) for p in first.critic.parameters() if p.dim() == 2] == [(8, 4), (1, 8)]
    first.run()
    resumed = compose(*PENDULUM_RUN, *narrow, "train.iterations=3")
    again = Runner(resumed, tmp_path / "first", resume=load(tmp_path / "first"))
    assert again.iteration == 2
    again.run()
    checkpoint = f"checkpoint={tmp_path / 'first'}"
    evaluated = run_locomo("eval", checkpoint, "episodes=1", "output=e.json", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    refused = run_locomo(
        "train", *PENDULUM_RUN, *policy, f"train.init_from={tmp_path / 'first'}", "train.iterations=1",
        "hydra.run.dir=second", cwd=tmp_path,
    )  # fmt: skip
    assert refused.returncode == 2
    hint = "its networks were built with model.critic_hidden_sizes=[8]: add that to this run"
    assert hint in refused.stderr


def test_a_checkpoint_older_than_critic_hidden_sizes_builds_its_critic_at_the_policy_widths():
    from locomo.config.schema import critic_widths, upgrade_saved_config

    old = {"model": {"hidden_sizes": [64, 32], "activation": "tanh"}}  # saved before the key existed
    model = upgrade_saved_config(old)["model"]
    assert model["critic_hidden_sizes"] is None
    assert critic_widths(compose(*PENDULUM_RUN, "model.hidden_sizes=[64,32]").model) == [64, 32]
    assert critic_widths(compose(*PENDULUM_RUN, "model.critic_hidden_sizes=[5]").model) == [5]
