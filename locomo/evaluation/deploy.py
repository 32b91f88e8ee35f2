"""A policy as one standalone file for deployment: ONNX or TorchScript, raw observation in, action out.

:class:`DeployedPolicy` maps raw observations ``obs [N, obs_dim]`` (float32, as the env returns
them) to the action ``locomo eval`` executes in deterministic mode, in the env's units:
``[N, act_dim]`` float32 for a Box action space, ``[N]`` int64 (the argmax) for a Discrete one.
The observation normaliser (running mean/std, clipped to +-clip) and the action bounds (the
``mode`` of the policy's distribution, :mod:`locomo.rl.distributions`: for bounded actions the
Gaussian's mean in normalised units clipped to [-1, 1], rescaled to [low, high]) are inside, so
the file needs neither locomo nor its checkpoint.

Files are written from a ``torch.jit.trace`` of :class:`DeployedPolicy`, not ``torch.jit.script``:
the locomo modules it calls are not scriptable (:class:`~locomo.rl.running_stats.RunningMeanStd` keeps
a Python-side cache, the actor returns a distribution object,
:meth:`~locomo.rl.policy.GaussianActor.env_action` reads a buffer that exists only for bounded
actors). A trace is exact here because the only branches (normaliser on or off,
bounded or not, discrete or not) are fixed per policy, and every op works row by row, so no
batch size is baked in; the tests check batches of 1 and 1000 against ``locomo eval``'s own
actions. ONNX goes through the TorchScript-based exporter (``dynamo=False``: the torch.export-based
one, the default since torch 2.9, needs ``onnxscript`` and gives the same actions, more slowly);
it needs ``pip install "locomo[onnx]"`` (onnx, onnxruntime). TorchScript needs only torch.
"""

from __future__ import annotations

import copy
import inspect
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from locomo.errors import ConfigError
from locomo.evaluation.episodes import LoadedPolicy, portable_name, select_actions
from locomo.rl.policy import Actor, CategoricalActor, GaussianActor
from locomo.rl.running_stats import RunningMeanStd

INPUT_NAME = "obs"
OUTPUT_NAME = "action"
METADATA_KEY = "locomo"  # ONNX metadata_props key / TorchScript extra file (locomo.json) of the description
ONNX_INSTALL_HINT = 'needs the onnx extra: pip install "locomo[onnx]"'
TOLERANCE = 1e-5  # largest |exported action - locomo eval's action| accepted (float32 rounding)


class DeployedPolicy(nn.Module):
    """Raw observation -> deterministic env-unit action, with copies of the normaliser and actor.

    ``forward(obs [N, obs_dim] float32) -> [N, act_dim] float32`` (Box) or ``[N] int64`` (Discrete).
    It calls the same modules as ``locomo eval`` in deterministic mode
    (:func:`~locomo.evaluation.episodes.select_actions`, then ``actor.env_action``): the normaliser's
    forward, the actor's distribution's ``mode`` (a bounded Gaussian's mean clipped to [-1, 1], a
    categorical policy's argmax) and ``env_action`` (rescale to [low, high]).
    """

    def __init__(self, actor: Actor, normalizer: RunningMeanStd) -> None:
        super().__init__()
        if not isinstance(actor, GaussianActor | CategoricalActor):
            raise TypeError(f"cannot deploy a {type(actor).__name__}")
        self.actor = copy.deepcopy(actor).cpu().eval()
        # A fresh normaliser loaded from the state: no cached (mean, std) from earlier calls.
        self.normalizer = RunningMeanStd(
            normalizer.mean.shape[0], enabled=normalizer.enabled, clip=normalizer.clip, eps=normalizer.eps
        )
        self.normalizer.load_state_dict(normalizer.state_dict())
        self.normalizer.eval()
        self.requires_grad_(False)

    @classmethod
    def from_policy(cls, policy: LoadedPolicy) -> DeployedPolicy:
        """The deployable part of a loaded checkpoint (:func:`locomo.evaluation.episodes.load_policy`)."""
        return cls(policy.actor, policy.normalizer)

    @property
    def obs_dim(self) -> int:
        return int(self.normalizer.mean.shape[0])

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """obs [N, obs_dim] raw -> actions [N, act_dim] in the env's units (Discrete: [N] int64)."""
        return self.actor.env_action(self.actor(self.normalizer(obs)).mode)

    def example_input(self, batch: int = 2) -> torch.Tensor:
        """A float32 observation batch [batch, obs_dim] to trace with (its values do not matter)."""
        return torch.zeros(batch, self.obs_dim, dtype=torch.float32)

    def traced(self) -> torch.jit.ScriptModule:
        """A ``torch.jit.trace`` of :meth:`forward` (see the module docstring for why a trace)."""
        self._drop_normalizer_cache()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated in torch 2.9+
            # No check_trace: its second run would hit the normaliser's cache and differ from the
            # first graph (which reads the buffers, as it should); the tests compare outputs instead.
            return torch.jit.trace(self, self.example_input(), check_trace=False)

    def _drop_normalizer_cache(self) -> None:
        """RunningMeanStd caches (mean, std) on first use; reloading its state drops the cache, so
        that a trace reads the buffers (and a loaded module moved with ``.to()`` takes them along)
        instead of baking the cached tensors in as constants."""
        self.normalizer.load_state_dict(self.normalizer.state_dict())


def description(policy: LoadedPolicy, fmt: str) -> dict[str, Any]:
    """What the exported file is and where it came from (stored inside it, printed by the command)."""
    actor = policy.actor
    discrete = isinstance(actor, CategoricalActor)
    info: dict[str, Any] = {
        "format": fmt,
        "input": f"{INPUT_NAME} [N, {policy.normalizer.mean.shape[0]}] float32, raw observations",
        "output": (
            f"{OUTPUT_NAME} [N] int64, the argmax action"
            if discrete
            else f"{OUTPUT_NAME} [N, {actor.log_std.shape[0]}] float32, the deterministic action in env units"
        ),
        "env": policy.cfg.env.name,
        "env_id": policy.cfg.env.id,
        "source": portable_name(policy.path),  # no machine paths in a file that is handed on
        "counters": policy.counters,
    }
    if isinstance(actor, GaussianActor) and actor.clipped:
        info["action_low"] = (actor.action_offset - actor.action_scale).tolist()
        info["action_high"] = (actor.action_offset + actor.action_scale).tolist()
    return info


def export_torchscript(module: DeployedPolicy, path: Path, metadata: dict[str, Any]) -> None:
    """Write the traced module to ``path``; ``metadata`` goes in as the extra file ``locomo.json``
    (``torch.jit.load(path, _extra_files={"locomo.json": ""})`` reads it back)."""
    traced = module.traced()
    extra = {f"{METADATA_KEY}.json": json.dumps(metadata)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(traced, str(path), _extra_files=extra)


def require_onnx() -> None:
    """ConfigError (one line, the install command) unless onnx and onnxruntime import."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise ConfigError("format", "onnx", f"{ONNX_INSTALL_HINT} ({exc})") from exc


def export_onnx(module: DeployedPolicy, path: Path, metadata: dict[str, Any], opset: int = 17) -> None:
    """Write an ONNX model to ``path``: input ``obs`` [batch, obs_dim] float32, output ``action``,
    the batch axis dynamic; ``metadata`` as the JSON value of metadata_props["locomo"]."""
    require_onnx()
    import onnx

    module._drop_normalizer_cache()
    kwargs: dict[str, Any] = {}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:  # torch >= 2.5; the default since 2.9
        kwargs["dynamo"] = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript-based exporter is deprecated
        torch.onnx.export(
            module,
            (module.example_input(),),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=opset,
            **kwargs,
        )
    model = onnx.load(str(path))
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def eval_actions(policy: LoadedPolicy, obs: np.ndarray) -> np.ndarray:
    """``locomo eval``'s deterministic actions in env units for raw obs [N, obs_dim]: the normaliser,
    :func:`~locomo.evaluation.episodes.select_actions` (row by row) and ``env_action``, as in its rollouts."""
    x = torch.from_numpy(np.ascontiguousarray(obs, dtype=np.float32))
    with torch.inference_mode():
        # Deterministic: select_actions draws nothing, so it needs no generators.
        actions = select_actions(policy.actor, policy.normalizer(x), True, [], list(range(len(x))))
        return policy.actor.env_action(actions).numpy()


def run_exported(path: Path, obs: np.ndarray) -> np.ndarray:
    """Actions of an exported file (``.onnx``: onnxruntime on one thread; else TorchScript) for
    raw observations obs [N, obs_dim] (cast to float32)."""
    obs = np.ascontiguousarray(obs, dtype=np.float32)
    if path.suffix == ".onnx":
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return session.run([OUTPUT_NAME], {INPUT_NAME: obs})[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        loaded = torch.jit.load(str(path), map_location="cpu")
    with torch.inference_mode():
        return loaded(torch.from_numpy(obs)).numpy()


def probe_observations(normalizer: RunningMeanStd, n: int = 256, seed: int = 0) -> np.ndarray:
    """n float32 observations [n, obs_dim] around the normaliser's mean, from 0 to 1.5 clip standard
    deviations away (the last third beyond the clip), for checking an exported file without an env."""
    generator = torch.Generator().manual_seed(seed)
    dim = normalizer.mean.shape[0]
    scale = torch.linspace(0.0, 1.5 * normalizer.clip, n, dtype=torch.float64).unsqueeze(1)
    noise = torch.randn(n, dim, generator=generator, dtype=torch.float64) * scale
    std = torch.sqrt(normalizer.var + normalizer.eps) if normalizer.enabled else torch.ones(dim)
    mean = normalizer.mean if normalizer.enabled else torch.zeros(dim)
    return (mean + noise * std).to(torch.float32).numpy()
