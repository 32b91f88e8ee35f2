"""MuJoCo and Gymnasium environments behind one vectorised interface.

``make_vec_env`` builds the numpy-side vector env; :class:`TorchVecEnv` is the one place where
numpy arrays become torch tensors (and back).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch

from locomo.envs.base import EnvStep, EpisodeRecord, SpaceInfo, VecEnv
from locomo.envs.gymnasium_backend import GymnasiumVecEnv, make_gymnasium_env

if TYPE_CHECKING:  # for annotations only: nothing is imported at run time
    from omegaconf import DictConfig

__all__ = [
    "EnvStep",
    "EpisodeRecord",
    "GymnasiumVecEnv",
    "SpaceInfo",
    "TorchStep",
    "TorchVecEnv",
    "VecEnv",
    "make_gymnasium_env",
    "make_vec_env",
]


def make_vec_env(env_cfg: DictConfig, num_envs: int, autoreset: bool = True) -> VecEnv:
    """Build the vector env named by ``env_cfg.backend`` (``autoreset=False``: one episode per env)."""
    if env_cfg.backend == "gymnasium":
        return GymnasiumVecEnv(env_cfg, num_envs, autoreset=autoreset)
    if env_cfg.backend == "batched":
        from locomo.envs.batched import BatchedMujocoVecEnv

        return BatchedMujocoVecEnv(env_cfg, num_envs, autoreset=autoreset)
    raise ValueError(f"env.backend={env_cfg.backend!r} is not available")


class TorchStep(NamedTuple):
    """An :class:`EnvStep` with tensors on the training device."""

    obs: torch.Tensor  # [N, O]
    reward: torch.Tensor  # [N]
    terminated: torch.Tensor  # [N] bool
    truncated: torch.Tensor  # [N] bool
    final_obs: torch.Tensor  # [N, O]
    terms: dict[str, np.ndarray]  # name -> [N] (kept in numpy: only logged)
    episodes: list[EpisodeRecord]


class TorchVecEnv:
    """Wraps a numpy VecEnv so that the training loop sees only torch tensors."""

    def __init__(self, env: VecEnv, device: torch.device) -> None:
        self.env, self.device = env, device
        self.num_envs, self.spaces = env.num_envs, env.spaces

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).to(self.device)

    def reset(self, seed: int) -> torch.Tensor:
        """Observations [N, O] after seeding env i with seed + i."""
        return self._tensor(self.env.reset(seed))

    def step(self, actions: torch.Tensor) -> TorchStep:
        """Step with actions [N, A] or [N]; returns tensors on the device."""
        out = self.env.step(actions.detach().cpu().numpy())
        return TorchStep(
            obs=self._tensor(out.obs),
            reward=self._tensor(out.reward),
            terminated=self._tensor(out.terminated),
            truncated=self._tensor(out.truncated),
            final_obs=self._tensor(out.final_obs),
            terms=out.terms,
            episodes=out.episodes,
        )

    def get_state(self) -> dict[str, Any]:
        """The vec env's state with numpy arrays as CPU tensors (checkpoint-ready plain data).

        Raises NotImplementedError for a backend without ``get_state``.
        """
        get_state = getattr(self.env, "get_state", None)
        if get_state is None:
            raise NotImplementedError(f"{type(self.env).__name__} cannot save its state")
        return arrays_to_tensors(get_state())

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`get_state` (tensors back to numpy arrays)."""
        set_state = getattr(self.env, "set_state", None)
        if set_state is None:
            raise ValueError(f"{type(self.env).__name__} cannot restore a saved env state")
        set_state(tensors_to_arrays(state))

    def close(self) -> None:
        self.env.close()


def arrays_to_tensors(obj: Any) -> Any:
    """Recursively: numpy arrays -> CPU tensors (same dtype), numpy scalars -> Python scalars."""
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj).copy())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {key: arrays_to_tensors(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(arrays_to_tensors(value) for value in obj)
    return obj


def tensors_to_arrays(obj: Any) -> Any:
    """Inverse of :func:`arrays_to_tensors`."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().numpy().copy()
    if isinstance(obj, dict):
        return {key: tensors_to_arrays(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(tensors_to_arrays(value) for value in obj)
    return obj
