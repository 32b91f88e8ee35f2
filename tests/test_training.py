"""Training runs in-process: every option combination runs, seeding is exact, metrics are sane."""

from __future__ import annotations

import math

import pytest
import torch

from locomo.rl import losses
from locomo.rl.advantages import compute_advantages
from locomo.runs import checkpoint
from locomo.training.runner import Runner
from tests.conftest import QUIET, compose

TINY = ["train.num_envs=4", "train.steps_per_iteration=128", "train.iterations=2", *QUIET]


@pytest.mark.parametrize("returns", ["total", "reward_to_go"])
@pytest.mark.parametrize("baseline", ["none", "mean", "optimal", "value"])
@pytest.mark.parametrize("importance", ["per_step", "trajectory"])
def test_every_estimator_combination_trains(tmp_path, returns: str, baseline: str, importance: str):
    cfg = compose(
        "env=inverted_pendulum",
        f"algo.returns={returns}",
        f"algo.baseline={baseline}",
        f"algo.importance={importance}",
        "algo.epochs=2",
        "algo.minibatches=2",
        "algo.reuse_batches=1",  # the default recipe's reuse and overlap need the value baseline
        "train.overlap=false",
        *TINY,
    )
    metrics = Runner(cfg, tmp_path).run()
    for key in ("losses/policy", "losses/grad_norm", "is/weight_mean", "is/ess", "is/approx_kl"):
        assert math.isfinite(metrics[key]), key
    assert metrics["is/gradient_steps"] == 4.0
    assert ("losses/value" in metrics) == (baseline == "value")


def surrogate_objective(runner: Runner, batch, adv) -> float:
    """The objective the preset's update ascends, on a fixed batch with fixed advantages A:
    J(theta) = mean(w A), w = pi_theta / pi_old per step (or the trajectory product,
    ``algo.importance``), and with ``algo.clip_ratio`` eps PPO's mean(min(w A, clip(w, 1 +- eps) A))."""
    cfg = runner.algorithm.cfg
    obs, actions = batch.obs.flatten(0, 1), batch.actions.flatten(0, 1)
    with torch.no_grad():
        new = runner.actor.log_prob(obs, actions)
    old = batch.log_probs.flatten()
    if cfg.importance == "trajectory":
        w, _ = losses.trajectory_weights(new, old, adv.segment, adv.num_segments, cfg.max_log_weight)
    else:
        w = (new - old).exp()
    a = adv.advantages
    if cfg.clip_ratio is None:
        return float((w * a).mean())
    clipped = w.clamp(1 - cfg.clip_ratio, 1 + cfg.clip_ratio)
    return float(torch.min(w * a, clipped * a).mean())


@pytest.mark.parametrize("preset", ["reinforce", "reward_to_go", "baseline", "importance", "clipped"])
@pytest.mark.parametrize("env", ["cartpole", "hopper"])
def test_each_presets_update_improves_its_own_surrogate_objective(tmp_path, preset: str, env: str):
    """On a fixed collected batch (discrete and continuous actions), the preset's update moves the
    policy uphill on the surrogate objective it estimates the gradient of: J(theta) after the
    update is above J(pi_old) = mean(A)."""
    runner = Runner(compose(f"env={env}", f"algo={preset}", *TINY), tmp_path)
    batch, _, _, _ = runner.collector.collect(runner.env.reset(0))
    batch = type(batch)(*(x.clone() for x in batch))  # the buffer's tensors are reused by the next collection
    # The advantages the update computes for itself (a fresh batch: a pure function of it).
    adv = compute_advantages(batch, runner.algorithm.cfg, runner.actor, runner.group)
    before = surrogate_objective(runner, batch, adv)
    assert before == pytest.approx(float(adv.advantages.mean()), rel=1e-4, abs=1e-5)  # w = 1 at pi_old
    info = runner.algorithm.update(batch)
    after = surrogate_objective(runner, batch, adv)
    assert math.isfinite(info["losses/policy"]) and info["is/gradient_steps"] >= 1
    assert after > before, f"{preset} on {env}: J went from {before} to {after}"


def _params_after(tmp_path, *overrides: str) -> list[torch.Tensor]:
    cfg = compose(*overrides, *TINY)
    runner = Runner(cfg, tmp_path)
    runner.run()
    return [p.detach().clone() for p in runner.actor.parameters()]


def test_same_seed_same_parameters(tmp_path):
    a = _params_after(tmp_path / "a", "env=humanoid", "seed=3")
    b = _params_after(tmp_path / "b", "env=humanoid", "seed=3")
    c = _params_after(tmp_path / "c", "env=humanoid", "seed=4")
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


def test_target_kl_stops_early(tmp_path):
    cfg = compose("env=cartpole", "algo=importance", "algo.target_kl=1e-9", "algo.epochs=5", *TINY)
    metrics = Runner(cfg, tmp_path).run()
    assert metrics["is/early_stop"] == 1.0
    assert metrics["is/gradient_steps"] < 5 * 4


def test_reward_terms_are_logged_and_sum_to_reward(tmp_path):
    cfg = compose(
        "env=humanoid_forward",
        "env.reward_scales.alive=0.5",
        "env.reward_scales.ctrl_cost=0.1",
        "algo.normalize_rewards=false",  # then reward_mean is the env's reward, which the terms sum to
        *TINY,
    )
    metrics = Runner(cfg, tmp_path).run()
    terms = [metrics[f"rollout/reward_terms/{k}"] for k in ("forward_velocity", "alive", "ctrl_cost")]
    # 0.5 per upright step; the step on which the body falls earns no alive bonus.
    assert 0.4 < metrics["rollout/reward_terms/alive"] <= 0.5
    assert metrics["rollout/reward_terms/ctrl_cost"] < 0
    assert sum(terms) == pytest.approx(metrics["rollout/reward_mean"], rel=1e-4, abs=1e-5)


def test_device_auto_trains_on_cuda_when_there_is_one_else_on_the_cpu(tmp_path):
    """``train.device=auto``: the networks, the optimiser's moments and the update live on CUDA when
    there is one, else on the CPU; the checkpoint loads on the CPU either way (eval's device)."""
    cfg = compose("env=inverted_pendulum", "train.device=auto", "algo.baseline=value", *TINY)
    runner = Runner(cfg, tmp_path)
    metrics = runner.run()
    assert math.isfinite(metrics["losses/policy"])
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    learned = [*runner.actor.parameters(), *runner.critic.parameters()]
    moments = [t for s in runner.algorithm.optimizer.state.values() for t in s.values() if t.dim() > 0]
    assert moments, "the update ran: Adam holds moments"
    assert {t.device.type for t in [*learned, *moments]} == {expected}
    state = checkpoint.load(tmp_path / "checkpoints" / "last.pt")
    assert {t.device.type for t in state["actor"].values()} == {"cpu"}
    assert state["counters"]["iteration"] == 2


def test_reward_normalisation_trains_and_is_checkpointed(tmp_path):
    cfg = compose("env=hopper", "algo.normalize_rewards=true", *TINY)
    runner = Runner(cfg, tmp_path)
    metrics = runner.run()
    assert math.isfinite(metrics["losses/policy"])
    state = runner.state()["reward_scaler"]
    # One update per env step collected: 3 batches of 128 in 2 iterations with the default recipe's
    # train.overlap (the first iteration collects one to train on and one during the update).
    assert state["returns_std.count"] == runner.env_steps == 3 * 128
    assert state["running_return"].shape == (4,)
    raw_reward_per_step = sum(v for k, v in metrics.items() if k.startswith("rollout/reward_terms/"))
    assert metrics["rollout/reward_mean"] != pytest.approx(raw_reward_per_step)  # trained on scaled rewards


def test_videos_wandb_and_the_iteration_budget_do_not_change_training(tmp_path):
    """Iteration k of a run is the same whatever the run films, logs or plans to train for.

    (So a longer run's checkpoint k stands for the default job's final one, as the README uses.)
    """
    small = ["env=humanoid", "train.num_envs=4", "train.steps_per_iteration=128", "logger.progress=false"]
    video = ["video.every=1", "video.episodes=1", "video.max_steps=20", "video.width=64", "video.height=48"]
    filmed = compose(*small, "train.iterations=2", *video, "logger.wandb.mode=offline")
    plain = compose(*small, *QUIET, "train.iterations=3", "train.checkpoint_every=2")
    Runner(filmed, tmp_path / "filmed").run()
    Runner(plain, tmp_path / "plain").run()
    a = torch.load(tmp_path / "filmed" / "checkpoints" / "iter_000002.pt", weights_only=True)
    b = torch.load(tmp_path / "plain" / "checkpoints" / "iter_000002.pt", weights_only=True)
    for net in ("actor", "critic", "obs_normalizer"):
        assert a[net].keys() == b[net].keys()
        assert all(torch.equal(a[net][k], b[net][k]) for k in a[net]), net
    assert torch.equal(a["obs"], b["obs"])
