"""Fine-tuning: ``train.init_from`` starts a new run from a checkpoint's policy, critic and
normalisers; ``model.max_log_std`` caps the Gaussian policy's noise (how the shipped walker was
taught to stay up while it samples its actions), from the start or from the iteration
``model.max_log_std_from``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import yaml
from omegaconf import OmegaConf

from locomo.config.schema import std_cap
from locomo.evaluation.episodes import load_policy
from locomo.rl.policy import GaussianActor
from locomo.runs.checkpoint import load
from locomo.training.runner import Runner
from tests.conftest import PENDULUM_RUN, compose, make_runner, run_locomo
from tests.safety_helpers import assert_same, learned_state


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


def test_the_cap_is_in_force_from_max_log_std_from():
    cap = compose(*PENDULUM_RUN, "model.max_log_std=-1.6", "model.max_log_std_from=2").model
    assert [std_cap(cap, i) for i in range(4)] == [None, None, -1.6, -1.6]
    always = compose(*PENDULUM_RUN, "model.max_log_std=-1.6", "model.max_log_std_from=null").model
    assert std_cap(always, 0) == -1.6
    recipe = compose(*PENDULUM_RUN).model  # the walking recipe: std 0.2 from iteration 300
    assert [std_cap(recipe, i) for i in (0, 299, 300)] == [None, None, -1.6]
    no_cap = compose(*PENDULUM_RUN, "model.max_log_std=null", "model.max_log_std_from=null").model
    assert std_cap(no_cap, 5) is None
    older = OmegaConf.create({"max_log_std": -1.0})  # a stored config older than the key: from the start
    assert std_cap(older, 0) == -1.0


def test_a_cap_from_an_iteration_caps_training_collection_and_its_checkpoints_and_resumes_exactly(
    tmp_path: Path,
):
    """``model.max_log_std_from=2``: iterations 0-1 act and learn with the full noise; from the
    third on the policy that is trained and the copy that collects (``train.overlap``) are capped.
    A checkpoint after 2 updates is evaluated as it acts then (capped), one after 1 is not, and a
    run resumed before the cap comes in is the uninterrupted run, bit for bit."""
    keys = ("algo=walk", "train.overlap=true", "model.max_log_std=-1.6", "model.max_log_std_from=2")
    straight = make_runner(tmp_path / "straight", *keys, "train.iterations=4")
    straight.run()
    rows = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    stds = [row["losses/action_std"] for row in rows if "losses/action_std" in row]
    assert len(stds) == 4
    assert all(std > 0.5 for std in stds[:2])  # init_log_std -0.5: std about 0.61
    assert all(abs(std - math.exp(-1.6)) < 1e-6 for std in stds[2:])
    assert straight.overlap is not None
    assert straight.overlap.behaviour.actor.max_log_std == -1.6  # type: ignore[union-attr]
    before = load_policy(str(tmp_path / "straight" / "checkpoints" / "iter_000001.pt")).actor
    after = load_policy(str(tmp_path / "straight" / "checkpoints" / "iter_000002.pt")).actor
    assert isinstance(before, GaussianActor) and isinstance(after, GaussianActor)
    assert float(before.std().detach().mean()) > 0.5
    assert torch.allclose(after.std(), torch.full_like(after.std(), math.exp(-1.6)))

    # resumed from the checkpoint after one iteration: uncapped until the runner reaches 2
    first = make_runner(tmp_path / "resumed", *keys, "train.iterations=1")
    first.run()
    cfg = compose(*PENDULUM_RUN, *keys, "train.iterations=4")
    resumed = Runner(cfg, tmp_path / "resumed", resume=load(tmp_path / "resumed"))
    assert resumed.iteration == 1 and resumed.actor.max_log_std is None  # type: ignore[union-attr]
    resumed.run()
    end = "checkpoints/iter_000004.pt"
    again, uninterrupted = (learned_state(load(tmp_path / run / end)) for run in ("resumed", "straight"))
    assert_same(again, uninterrupted)


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
        "model.max_log_std_from=null",  # the walking recipe caps from iteration 300 only
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
