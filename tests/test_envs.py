"""Every env steps without NaN; truncation is kept apart from termination; auto-reset semantics."""

from __future__ import annotations

import numpy as np
import pytest

from locomo.envs import make_vec_env
from tests.conftest import compose

ENVS = [
    "humanoid",
    "humanoid_forward",
    "walker2d",
    "hopper",
    "half_cheetah",
    "ant",
    "inverted_pendulum",
    "cartpole",
]


def env_cfg(name: str, *overrides: str):
    return compose(f"env={name}", *overrides).env


@pytest.mark.parametrize("name", ENVS)
def test_env_steps_without_nan(name: str):
    env = make_vec_env(env_cfg(name), num_envs=2)
    rng = np.random.default_rng(0)
    obs = env.reset(seed=0)
    assert obs.shape == (2, env.spaces.obs_dim) and obs.dtype == np.float32
    for _ in range(60):
        if env.spaces.discrete:
            actions = rng.integers(0, env.spaces.action_dim, size=2)
        else:
            actions = rng.uniform(
                env.spaces.action_low, env.spaces.action_high, size=(2, env.spaces.action_dim)
            )
        step = env.step(actions)
        assert np.isfinite(step.obs).all() and np.isfinite(step.reward).all()
        assert not (step.terminated & step.truncated).any()
        total = sum(step.terms.values())
        np.testing.assert_allclose(total, step.reward, rtol=1e-5, atol=1e-5)
    env.close()


def test_time_limit_is_truncation_not_termination():
    env = make_vec_env(env_cfg("inverted_pendulum", "env.max_episode_steps=5"), num_envs=1)
    env.reset(seed=0)
    for t in range(5):
        step = env.step(np.zeros((1, 1), dtype=np.float32))
        if t < 4:
            assert not step.terminated[0] and not step.truncated[0]
    assert step.truncated[0] and not step.terminated[0]
    (episode,) = step.episodes
    assert episode.length == 5 and not episode.terminated and episode.ret == 5.0
    # Auto-reset: the returned obs starts the next episode; final_obs is the last one of the old.
    assert not np.array_equal(step.obs, step.final_obs)


def test_falling_humanoid_terminates_and_records_its_pose():
    env = make_vec_env(env_cfg("humanoid"), num_envs=1)
    env.reset(seed=0)
    for _ in range(200):
        step = env.step(np.zeros((1, 17), dtype=np.float32))
        if step.terminated[0]:
            break
    assert step.terminated[0] and not step.truncated[0]
    (episode,) = step.episodes
    assert episode.terminated and episode.length < 200
    assert episode.body["z"] < 1.0  # Humanoid-v5 ends the episode when the torso drops below z = 1
    assert set(episode.body) == {"x0", "y0", "x", "y", "z", "qw", "qx", "qy", "qz"}


def test_reset_is_seeded():
    a = make_vec_env(env_cfg("hopper"), num_envs=3).reset(seed=7)
    b = make_vec_env(env_cfg("hopper"), num_envs=3).reset(seed=7)
    c = make_vec_env(env_cfg("hopper"), num_envs=3).reset(seed=8)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def arena_overflow_xml(path, spheres: int = 40, memory: str = "64K"):
    """A model that compiles but whose contacts overflow its arena at the first forward pass:
    free spheres piled at one spot (a 20,000-body model does the same to MuJoCo's default arena)."""
    bodies = '<body pos="0 0 1"><freejoint/><geom size="0.1"/></body>' * spheres
    path.write_text(
        f'<mujoco><size memory="{memory}"/><worldbody><geom type="plane" size="5 5 .1"/><body pos="0 0 1">'
        f'<joint name="j0" type="hinge" axis="0 1 0"/><geom size="0.05"/></body>{bodies}</worldbody>'
        '<actuator><motor joint="j0"/></actuator></mujoco>\n'
    )
    return path


@pytest.mark.parametrize(("name", "backend"), [("inverted_pendulum", "gymnasium"), ("humanoid", "batched")])
def test_a_model_whose_arena_overflows_is_one_line_with_mujocos_hint(tmp_path, name, backend):
    from locomo.errors import ConfigError

    xml = arena_overflow_xml(tmp_path / "pile.xml")
    cfg = env_cfg(name, f"env.xml_file={xml}", f"env.backend={backend}")
    with pytest.raises(ConfigError) as caught:
        make_vec_env(cfg, num_envs=1)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"env.xml_file='{xml}' is invalid: MuJoCo ran out of the model's memory arena")
    assert '(increase <size memory="..."/>)' in message  # MuJoCo's own hint, from its second line
    assert message.endswith('raise memory in the model file\'s <size memory="..."/>')


def test_a_big_model_is_announced_before_its_compile(tmp_path, capsys):
    from locomo.envs.gymnasium_backend import BIG_MODEL_BODIES, announce_compile, mujoco_message

    big, small = tmp_path / "big.xml", tmp_path / "small.xml"
    body = '<body pos="0 0 1"><joint type="hinge"/><geom size="0.05"/></body>'
    big.write_text(f"<mujoco><worldbody>{body * BIG_MODEL_BODIES}</worldbody></mujoco>\n")
    small.write_text(f"<mujoco><worldbody>{body * 3}</worldbody></mujoco>\n")
    announce_compile(big)
    announce_compile(small)
    assert capsys.readouterr().err.splitlines() == [
        f"locomo: compiling {big}: {BIG_MODEL_BODIES} bodies (a big model: MuJoCo may take a minute) ..."
    ]
    # MuJoCo's multi-line errors stay whole, on one line
    error = ValueError("XML parse error 18:\nError=XML_ELEMENT_DEPTH_EXCEEDED ErrorID=18\n")
    assert mujoco_message(error) == "XML parse error 18: Error=XML_ELEMENT_DEPTH_EXCEEDED ErrorID=18"
