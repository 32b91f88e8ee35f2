"""The non-finite guard: NaN/inf in observations, rewards, loss or parameters stops training with
a message naming what and when, after a diagnostic snapshot; the last good checkpoint stays.
Faults are injected into a real run (real MuJoCo env, real update, real files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from locomo.errors import NonFiniteError
from locomo.guard import check_parameters, describe_nonfinite
from locomo.runs.checkpoint import load
from locomo.training.runner import Runner
from tests.conftest import make_runner


class CorruptStep:
    """Wraps a numpy VecEnv; on its ``at``-th step call writes ``value`` into ``field`` of env 1."""

    def __init__(self, env, field: str, at: int, value: float) -> None:
        self.env, self.field, self.at, self.value, self.calls = env, field, at, value, 0

    def step(self, actions):
        out = self.env.step(actions)
        self.calls += 1
        if self.calls == self.at:
            array = getattr(out, self.field).copy()
            array[1] = self.value
            out = out._replace(**{self.field: array})
        return out

    def __getattr__(self, name):
        return getattr(self.env, name)


def run_until_error(runner: Runner) -> NonFiniteError:
    with pytest.raises(NonFiniteError) as info:
        runner.run()
    return info.value


def assert_stopped_cleanly(tmp_path: Path, iteration: int, what: str) -> dict:
    """Snapshot written for ``iteration``; checkpoints of earlier iterations only, last.pt untouched."""
    ckpts = tmp_path / "checkpoints"
    snapshot = torch.load(ckpts / f"nonfinite_iter_{iteration:06d}.pt", weights_only=True)
    assert snapshot["kind"] == "nonfinite-diagnostic"
    assert snapshot["nonfinite"]["what"] == what and snapshot["nonfinite"]["iteration"] == iteration
    assert not (ckpts / f"iter_{iteration:06d}.pt").exists()
    if iteration > 1:
        last = load(ckpts / "last.pt")
        assert last["counters"]["iteration"] == iteration - 1
        assert (ckpts / "last.pt").read_bytes() == (ckpts / f"iter_{iteration - 1:06d}.pt").read_bytes()
    return snapshot


def test_describe_nonfinite_counts_and_locates():
    x = torch.tensor([[0.0, 1.0], [float("nan"), float("inf")], [2.0, float("-inf")]])
    assert describe_nonfinite(x, ("step", "env")) == "3 of 6 values (1 nan, 2 inf), first at step 1, env 0"
    assert describe_nonfinite(torch.ones(3)) is None


def test_check_parameters_names_the_tensor():
    good, bad = torch.zeros(2), torch.tensor([1.0, float("nan")])
    with pytest.raises(NonFiniteError, match=r"parameters.*critic\.w has 1 of 2 values \(1 nan, 0 inf\)"):
        check_parameters([("actor.w", good), ("critic.w", bad)])


def test_nan_reward_stops_at_its_iteration_with_snapshot(tmp_path: Path):
    runner = make_runner(tmp_path, "train.overlap=false")  # batch k is iteration k's
    runner.env.env = CorruptStep(runner.env.env, "reward", at=16 + 6, value=float("nan"))
    err = run_until_error(runner)
    assert str(err).startswith(
        "non-finite rewards at iteration 2: 1 of 2 values (1 nan, 0 inf), first at env 1 (batch step 6 of 16)"
    )
    assert f"diagnostic snapshot saved to {tmp_path / 'checkpoints' / 'nonfinite_iter_000002.pt'}" in str(err)
    assert f"last good checkpoint {tmp_path / 'checkpoints' / 'iter_000001.pt'} is untouched" in str(err)
    assert_stopped_cleanly(tmp_path, 2, "rewards")


def test_inf_observation_stops_before_the_normaliser_sees_it(tmp_path: Path):
    runner = make_runner(tmp_path, "train.overlap=false")  # batch k is iteration k's
    runner.env.env = CorruptStep(runner.env.env, "obs", at=16 + 16 + 3, value=np.inf)
    err = run_until_error(runner)
    assert "non-finite observations at iteration 3" in str(err) and "first at env 1" in str(err)
    snapshot = assert_stopped_cleanly(tmp_path, 3, "observations")
    assert torch.isfinite(snapshot["obs_normalizer"]["mean"]).all()


def test_infinite_loss_stops_before_the_optimizer_step(tmp_path: Path):
    runner = make_runner(tmp_path, "algo=baseline")
    before = {k: v.clone() for k, v in runner.actor.state_dict().items()}
    runner.algorithm.cfg.entropy_coef = float("inf")  # loss = policy_loss - inf * entropy
    err = run_until_error(runner)
    assert "non-finite loss at iteration 1: 1 of 1 values (0 nan, 1 inf) (epoch 1, minibatch 1)" in str(err)
    assert "no checkpoint had been written yet" in str(err)
    snapshot = assert_stopped_cleanly(tmp_path, 1, "loss")
    for key, value in before.items():  # the bad loss never reached the parameters
        assert torch.equal(snapshot["actor"][key], value)
    assert "batch" in snapshot and snapshot["batch"]["rewards"].shape == (16, 2)


def test_nonfinite_parameter_after_update_is_named(tmp_path: Path):
    runner = make_runner(tmp_path, "algo=reinforce")
    step, calls = runner.algorithm.optimizer.step, []

    def poisoned_step(*args, **kwargs):
        out = step(*args, **kwargs)
        calls.append(1)
        if len(calls) == 2:  # the update of iteration 2
            with torch.no_grad():
                runner.actor.log_std[0] = float("nan")
        return out

    runner.algorithm.optimizer.step = poisoned_step
    err = run_until_error(runner)
    assert "non-finite parameters at iteration 2: actor.log_std has 1 of 1 values (1 nan, 0 inf)" in str(err)
    assert_stopped_cleanly(tmp_path, 2, "parameters")


UNSTABLE_XML = """<mujoco model="unstable pendulum">
  <option gravity="0 0 -9.81" integrator="RK4" timestep="0.02"/>
  <worldbody>
    <body name="cart">
      <joint name="slider" type="slide" axis="1 0 0" limited="true" range="-1 1"/>
      <geom name="cart" type="capsule" size="0.1 0.1" quat="0.707 0 0.707 0"/>
      <body name="pole">
        <joint name="hinge" type="hinge" axis="0 1 0" limited="true" range="-90 90"/>
        <geom name="cpole" type="capsule" fromto="0 0 0 0.001 0 0.6" size="0.049 0.3"/>
      </body>
    </body>
  </worldbody>
  <actuator>
    <motor joint="slider" name="slide" gear="1e14" ctrllimited="true" ctrlrange="-3 3"/>
  </actuator>
</mujoco>
"""


@pytest.mark.parametrize("backend", ["batched", "gymnasium"])
def test_mujoco_instability_resets_the_env_and_is_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
):
    """A model whose motor is 1e12 times too strong: MuJoCo's bad-qacc warning on every push.
    The batch stays finite, the episodes are cut as truncated, and the runner counts them."""
    monkeypatch.chdir(tmp_path)  # MuJoCo writes its warnings to MUJOCO_LOG.TXT in the working dir
    xml = tmp_path / "unstable.xml"
    xml.write_text(UNSTABLE_XML)
    runner = make_runner(tmp_path, f"env.xml_file={xml}", "train.iterations=1", f"env.backend={backend}")
    env = runner.env.env
    obs = env.reset(0)
    out = env.step(np.full((2, 1), 3.0, dtype=np.float32))
    assert [e.unstable for e in out.episodes] == [True, True]
    assert out.truncated.all() and not out.terminated.any()
    assert (out.reward == 0).all() and np.array_equal(out.final_obs, obs)
    assert np.isfinite(out.obs).all()

    metrics = runner.run()
    assert metrics["rollout/unstable_resets"] > 0
    assert np.isfinite(metrics["losses/policy"])
