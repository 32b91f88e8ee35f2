"""A Gymnasium env's simulator data: found under its wrappers, captured and put back bit for bit
(:func:`env_state`, :func:`set_env_state`, the state a checkpoint holds), and MuJoCo's warnings
that the simulation diverged (:func:`went_unstable`).

Used by the Gymnasium backend (:mod:`locomo.envs.gymnasium_backend`), the single-env Gymnasium
wrapper (:mod:`locomo.envs.gym_env`) and the batched backend (:data:`UNSTABLE_SLICE`).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium.wrappers import TimeLimit

# MuJoCo warnings raised when the simulation diverges; MuJoCo then resets mjData mid-step.
UNSTABLE_WARNINGS = (
    int(mujoco.mjtWarning.mjWARN_BADQACC),
    int(mujoco.mjtWarning.mjWARN_BADQPOS),
    int(mujoco.mjtWarning.mjWARN_BADQVEL),
)
# They are adjacent in mjtWarning: one slice of ``MjData.warning.number`` clears and reads them
# all (the batched backend does so on every env step, where a Python loop per warning would add up).
UNSTABLE_SLICE = slice(min(UNSTABLE_WARNINGS), max(UNSTABLE_WARNINGS) + 1)
assert set(range(UNSTABLE_SLICE.start, UNSTABLE_SLICE.stop)) == set(UNSTABLE_WARNINGS)
_INTEGRATION = mujoco.mjtState.mjSTATE_INTEGRATION


def _mujoco_data(env: gym.Env) -> tuple[Any, Any] | None:
    """(model, data) of a MuJoCo-based env, else None."""
    unwrapped = env.unwrapped
    model, data = getattr(unwrapped, "model", None), getattr(unwrapped, "data", None)
    if isinstance(model, mujoco.MjModel) and isinstance(data, mujoco.MjData):
        return model, data
    return None


def _time_limit(env: gym.Env) -> TimeLimit | None:
    while isinstance(env, gym.Wrapper):
        if isinstance(env, TimeLimit):
            return env
        env = env.env
    return None


def clear_unstable_warnings(data: Any) -> None:
    """Zero MuJoCo's instability counters, so that a count > 0 after a step means this step blew up."""
    data.warning.number[UNSTABLE_SLICE] = 0


def went_unstable(data: Any) -> bool:
    """True when MuJoCo raised a bad qacc / qpos / qvel warning since the counters were cleared."""
    return bool(data.warning.number[UNSTABLE_SLICE].any())


def _data_arrays(data: Any) -> list[str]:
    """Names of mjData's array fields (state and derived quantities)."""
    return [n for n in dir(data) if not n.startswith("_") and isinstance(getattr(data, n), np.ndarray)]


def pack_arrays(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Many small arrays -> one flat array per dtype plus names and shapes (fewer tensors to save)."""
    flat: dict[str, list[np.ndarray]] = {}
    layout = []
    for name, array in arrays.items():
        flat.setdefault(array.dtype.str, []).append(array.ravel())
        layout.append([name, array.dtype.str, list(array.shape)])
    return {"layout": layout, "data": {dtype: np.concatenate(parts) for dtype, parts in flat.items()}}


def unpack_arrays(packed: dict[str, Any]) -> dict[str, np.ndarray]:
    """Inverse of :func:`pack_arrays`."""
    offsets = dict.fromkeys(packed["data"], 0)
    out = {}
    for name, dtype, shape in packed["layout"]:
        size = int(np.prod(shape, dtype=np.int64))
        start = offsets[dtype]
        out[name] = np.asarray(packed["data"][dtype][start : start + size]).reshape(shape)
        offsets[dtype] = start + size
    return out


def env_state(env: gym.Env) -> dict[str, Any]:
    """One Gymnasium env's state as plain data and numpy arrays (see ``VecEnv.get_state``).

    MuJoCo envs: the integration state (time, qpos, qvel, act, warm start, controls, applied
    forces) plus every fixed-size mjData array, because envs read derived quantities between
    steps (Humanoid's centre of mass comes from ``xipos``, Ant's torso from ``xpos``) and those
    hold the values of the last substep, which no forward pass recomputes. Classic-control envs
    (CartPole): their ``state`` vector. Both: the env's RNG and its time-limit step counter.
    """
    unwrapped = env.unwrapped
    time_limit = _time_limit(env)
    out: dict[str, Any] = {
        "np_random": unwrapped.np_random.bit_generator.state,
        "elapsed_steps": None if time_limit is None else time_limit._elapsed_steps,
    }
    md = _mujoco_data(env)
    if md is not None:
        model, data = md
        integration = np.empty(mujoco.mj_stateSize(model, _INTEGRATION))
        mujoco.mj_getState(model, data, integration, _INTEGRATION)
        out["mujoco"] = {
            "integration": integration,
            "arrays": pack_arrays({name: getattr(data, name) for name in _data_arrays(data)}),
        }
    elif isinstance(getattr(unwrapped, "state", None), np.ndarray | tuple | list):
        out["classic"] = {
            "state": np.array(unwrapped.state, dtype=np.float64),
            "steps_beyond_terminated": getattr(unwrapped, "steps_beyond_terminated", None),
        }
    else:
        spec_id = env.spec.id if env.spec is not None else type(unwrapped).__name__
        raise NotImplementedError(f"cannot capture the state of env {spec_id}")
    return out


def set_env_state(env: gym.Env, state: dict[str, Any]) -> None:
    """Inverse of :func:`env_state`, on an env built from the same config."""
    env.reset()  # satisfies the order-enforcing wrapper; everything it set is overwritten below
    unwrapped = env.unwrapped
    unwrapped.np_random.bit_generator.state = state["np_random"]
    time_limit = _time_limit(env)
    if time_limit is not None and state["elapsed_steps"] is not None:
        time_limit._elapsed_steps = int(state["elapsed_steps"])
    md = _mujoco_data(env)
    if "mujoco" in state:
        if md is None:
            raise ValueError("saved env state is a MuJoCo state but the env is not MuJoCo-based")
        model, data = md
        for name, saved in unpack_arrays(state["mujoco"]["arrays"]).items():
            current = getattr(data, name, None)
            # Arrays sized by the contacts of the moment (efc_*, island_*) differ in shape and are
            # recomputed by the next step's forward pass; everything model-sized is restored.
            if isinstance(current, np.ndarray) and current.shape == saved.shape:
                current[...] = saved
        integration = np.asarray(state["mujoco"]["integration"], dtype=np.float64)
        if integration.shape != (mujoco.mj_stateSize(model, _INTEGRATION),):
            raise ValueError("saved MuJoCo state does not fit this model (a different model file?)")
        mujoco.mj_setState(model, data, integration, _INTEGRATION)
    elif "classic" in state:
        saved = state["classic"]
        unwrapped.state = np.array(saved["state"], dtype=np.float64)
        if hasattr(unwrapped, "steps_beyond_terminated"):
            unwrapped.steps_beyond_terminated = saved["steps_beyond_terminated"]
