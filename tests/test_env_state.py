"""VecEnv.get_state / set_state: through a real checkpoint file, a second vec env continues bit for bit."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from locomo.config.schema import EnvConfig
from locomo.envs import TorchVecEnv, make_vec_env
from locomo.runs.checkpoint import assert_plain


def build(name: str, env_id: str, xml: str | None, backend: str, num_envs: int = 2) -> TorchVecEnv:
    cfg = OmegaConf.structured(EnvConfig(name=name, id=env_id, xml_file=xml, backend=backend))
    return TorchVecEnv(make_vec_env(cfg, num_envs), torch.device("cpu"))


def through_a_file(state: dict) -> dict:
    """torch.save + torch.load(weights_only=True): what a checkpoint does to the state."""
    assert_plain(state)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize(
    ("name", "env_id", "xml", "steps_before"),
    [
        # Humanoid reads its centre of mass from derived data (xipos) before each step: restoring
        # qpos/qvel alone would change the first reward after a resume.
        ("humanoid", "Humanoid-v5", "humanoid.xml", 23),
        ("hopper", "Hopper-v5", None, 57),
        ("inverted_pendulum", "InvertedPendulum-v5", None, 9),
        ("cartpole", "CartPole-v1", None, 31),  # classic control: the `state` vector
    ],
)
@pytest.mark.parametrize("backend", ["gymnasium", "batched"])
def test_restored_vec_env_continues_bit_for_bit(
    name: str, env_id: str, xml: str | None, steps_before: int, backend: str
):
    if backend == "batched" and env_id == "CartPole-v1":
        pytest.skip("the batched backend is for MuJoCo tasks")
    original = build(name, env_id, xml, backend)
    original.reset(seed=5)
    rng = np.random.default_rng(0)
    spaces = original.spaces

    def actions() -> torch.Tensor:
        if spaces.discrete:
            return torch.from_numpy(rng.integers(0, spaces.action_dim, size=2))
        return torch.from_numpy(rng.uniform(-0.5, 0.5, size=(2, spaces.action_dim)).astype(np.float32))

    for _ in range(steps_before):  # mid-episode: running returns and time-limit counters matter
        original.step(actions())
    restored = build(name, env_id, xml, backend)
    restored.set_state(through_a_file(original.get_state()))
    episodes = 0
    for _ in range(150):  # long enough for auto-resets, which draw from the env's restored RNG
        a = actions()
        x, y = original.step(a), restored.step(a)
        for field in ("obs", "reward", "terminated", "truncated", "final_obs"):
            assert torch.equal(getattr(x, field), getattr(y, field)), field
        assert x.terms.keys() == y.terms.keys()
        assert all(np.array_equal(x.terms[k], y.terms[k]) for k in x.terms)
        assert x.episodes == y.episodes
        episodes += len(x.episodes)
    assert episodes > 0
    original.close()
    restored.close()
