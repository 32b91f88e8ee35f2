"""locomo from Python: ``locomo.load``, ``locomo.make_env``, ``locomo.train`` (see README "From Python").

Each function is the CLI's own code seen from Python, not a second implementation:

- :func:`load` wraps :func:`locomo.evaluation.episodes.load_policy`, and :meth:`Policy.act` picks actions
  with :func:`locomo.evaluation.episodes.select_actions` (the mode, or a sample, of the actor's action
  distribution: :mod:`locomo.rl.distributions`) and ``Actor.env_action``, as ``locomo eval`` does;
- :func:`make_env` builds ``locomo/conf/env/<name>.yaml`` with :func:`locomo.envs.make_vec_env`;
- :func:`train` composes ``conf/train.yaml`` with Hydra's compose API and runs
  :func:`locomo.commands.train.train`, the job behind ``locomo train``.

Bad input raises the CLI's one-line errors (:class:`~locomo.errors.ConfigError`,
:class:`~locomo.errors.CheckpointError`). This module is imported only when one of its names is
first used (``locomo.__getattr__``), and imports torch, MuJoCo and Hydra only inside its functions.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from locomo.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from omegaconf import DictConfig

    from locomo.envs.base import VecEnv
    from locomo.evaluation.episodes import LoadedPolicy

__all__ = ["Policy", "env_config", "env_names", "load", "make_env", "train"]


# ---------------------------------------------------------------------------------------------
# Policies


class Policy:
    """A trained policy that maps raw Gymnasium observations to actions in the env's units.

    Built by :func:`load`. Observation normalisation (the checkpoint's running statistics),
    action bounds (the bounded policy's clip to the action space) and the device are handled
    inside; :attr:`loaded` is the underlying :class:`~locomo.evaluation.episodes.LoadedPolicy`.
    """

    def __init__(self, loaded: LoadedPolicy, device: torch.device, seed: int | None = None) -> None:
        import torch

        self.loaded = loaded
        self.device = device
        self.actor = loaded.actor.to(device)
        self.normalizer = loaded.normalizer.to(device)
        self.env_name: str = str(loaded.cfg.env.name)
        self.obs_dim: int = int(loaded.normalizer.mean.shape[0])  # the normaliser's statistics: [obs_dim]
        # The default stream of stochastic actions (act(deterministic=False) without a generator).
        self.generator = torch.Generator()
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(int(seed))
        # Checkpoints trained with model.action_bounds=none act in the env's units unbounded and
        # leave the clipping to the env (locomo's vector envs clip); clip here too, so that a
        # Gymnasium env, which does not clip, executes the same actions.
        self._low: np.ndarray | None = None
        self._high: np.ndarray | None = None
        if not self.discrete and not getattr(self.actor, "clipped", True):
            env = loaded.make_env(1)
            try:
                self._low, self._high = env.spaces.action_low, env.spaces.action_high
            finally:
                env.close()

    @property
    def discrete(self) -> bool:
        """True for a categorical policy (one integer action per observation)."""
        from locomo.rl.policy import CategoricalActor

        return isinstance(self.actor, CategoricalActor)

    @property
    def cfg(self) -> DictConfig:
        """The training config saved with the checkpoint (``cfg.env`` is the task it was trained on)."""
        return self.loaded.cfg

    @property
    def path(self) -> Path:
        """The checkpoint file."""
        return self.loaded.path

    def act(
        self,
        obs: np.ndarray,
        deterministic: bool = True,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
    ) -> np.ndarray:
        """Actions for raw observations, as ``locomo eval`` picks them.

        ``obs``: one observation [obs_dim] or a batch [N, obs_dim] (any float dtype; cast to
        float32 as locomo's vector envs do). Returns float32 actions [act_dim] or [N, act_dim]
        in the env's units and within its bounds (a categorical policy: int64 [] or [N]).

        ``deterministic=True``: the mode of pi(.|s). ``False``: a sample, drawn from
        ``generator``: one ``torch.Generator`` for every row, or a sequence with one per row
        (``locomo eval``'s stochastic episode i, seeded s + i, uses
        ``torch.Generator().manual_seed(s + i)`` for its env); default: :attr:`generator`
        (seeded by ``load(..., seed=)``). Rows are computed one by one, as in eval, so a row's
        action does not depend on the batch it came in.
        """
        import torch

        from locomo.evaluation.episodes import select_actions

        array = np.asarray(obs, dtype=np.float32)
        if array.ndim not in (1, 2) or array.shape[-1] != self.obs_dim:
            raise ConfigError(
                "obs.shape",
                tuple(array.shape),
                f"must be ({self.obs_dim},) or (N, {self.obs_dim}) for this policy ({self.env_name})",
            )
        batch = array.reshape(-1, self.obs_dim)
        n = batch.shape[0]
        if generator is None:
            generators = [self.generator] * n
        elif isinstance(generator, torch.Generator):
            generators = [generator] * n
        else:
            generators = list(generator)
            if len(generators) != n:
                raise ConfigError("generator", f"{len(generators)} generators", f"need one per row ({n})")
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self.device)
            actions = select_actions(
                self.actor, self.normalizer(x), deterministic, generators, list(range(n))
            )
            out = self.actor.env_action(actions.to(self.device)).cpu().numpy()
        if self._low is not None and self._high is not None:
            out = np.clip(out, self._low, self._high)
        return out[0] if array.ndim == 1 else out

    def __repr__(self) -> str:
        return f"Policy({self.path}, env={self.env_name}, obs_dim={self.obs_dim}, device={self.device})"


def _device(name: str) -> torch.device:
    """``auto``: CUDA when available, else the CPU (as ``train.device``)."""
    import torch

    from locomo.config.rules import validate_device

    validate_device("device", name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load(name_or_path: str | os.PathLike[str], device: str = "cpu", seed: int | None = None) -> Policy:
    """The policy of ``walker`` (the shipped walker), a run directory (its ``checkpoints/last.pt``)
    or a checkpoint file, as ``locomo eval checkpoint=<name_or_path>`` loads it.

    ``device``: cpu | cuda | auto. ``seed``: seeds :attr:`Policy.generator`, the default noise of
    stochastic actions. Raises CheckpointError (one line) for a missing or unusable checkpoint.
    """
    from locomo.evaluation.episodes import load_policy

    torch_device = _device(device)
    return Policy(load_policy(Path(os.fspath(name_or_path))), torch_device, seed)


# ---------------------------------------------------------------------------------------------
# Environments


def env_names() -> list[str]:
    """The task variants of ``locomo/conf/env/`` (the ``env=`` options): ``humanoid``, ... ."""
    from locomo.paths import CONF_DIR

    return sorted(p.stem for p in (CONF_DIR / "env").glob("*.yaml"))


def env_config(name: str, **overrides: Any) -> DictConfig:
    """``locomo/conf/env/<name>.yaml`` on locomo's env schema, with ``overrides`` applied and validated.

    ``overrides`` are keys of ``env`` (``backend``, ``threads``, ``xml_file``, ``max_episode_steps``,
    ``kwargs``, ``reward_terms``, ``reward_scales``); dict values are merged into the file's, as
    ``env.reward_scales.alive=1`` does on the command line. ConfigError for an unknown name or key
    or a bad value.
    """
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from locomo.config.rules import validate_env
    from locomo.config.schema import EnvConfig
    from locomo.paths import CONF_DIR

    names = env_names()
    if name not in names:
        raise ConfigError("env", name, f"allowed values are {', '.join(names)}")
    cfg = OmegaConf.merge(OmegaConf.structured(EnvConfig), OmegaConf.load(CONF_DIR / "env" / f"{name}.yaml"))
    known = list(EnvConfig.__dataclass_fields__)
    for key, value in overrides.items():
        if key not in known:
            raise ConfigError(
                f"env.{key}", value, f"not a config key; the keys of env are {', '.join(known)}"
            )
        try:  # one key at a time, so that an error names it
            cfg = OmegaConf.merge(cfg, {key: value})
        except OmegaConfBaseException as exc:
            reason = str(exc).strip().splitlines()[0]
            raise ConfigError(f"env.{key}", value, reason) from exc
    assert isinstance(cfg, DictConfig)
    validate_env(cfg)
    return cfg


def make_env(name: str, num_envs: int = 1, autoreset: bool = True, **overrides: Any) -> VecEnv:
    """locomo's vector env of ``num_envs`` copies of the task ``name`` (``locomo/conf/env/<name>.yaml``).

    ``overrides``: see :func:`env_config` (e.g. ``reward_scales={"alive": 1.0}``, ``backend="gymnasium"``).
    The env takes and returns numpy arrays: ``reset(seed)`` -> obs [N, obs_dim] float32 (env i
    seeded ``seed + i``); ``step(actions [N, act_dim])`` -> :class:`~locomo.envs.EnvStep` (obs,
    reward, terminated, truncated [N], ...), auto-resetting envs whose episode ended unless
    ``autoreset=False``. ``env.spaces`` holds the sizes and bounds; call ``close()`` when done.
    """
    from locomo.envs import make_vec_env

    if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
        raise ConfigError("num_envs", num_envs, "must be an integer >= 1")
    return make_vec_env(env_config(name, **overrides), num_envs, autoreset=autoreset)


# ---------------------------------------------------------------------------------------------
# Training


def train(overrides: Sequence[str] = (), run_dir: str | os.PathLike[str] | None = None) -> Path:
    """Run ``locomo train <overrides>`` in this process (a script or a notebook); return its run directory.

    ``overrides``: the command line's ``key=value`` overrides, e.g. ``["env=cartpole",
    "train.iterations=50"]`` (``resume=<run>`` continues a run, as on the command line). The run
    directory is ``run_dir`` if given, else an override ``hydra.run.dir=...``, else
    ``outputs/<env>/<time>`` under the working directory, as for the CLI. One job, not a sweep:
    ``-m`` is refused. Errors are raised (ConfigError, CheckpointError, ...), not turned into
    exit statuses; Hydra's job logging (``train.log``) is the CLI's alone.
    """
    from locomo.commands import train as train_command
    from locomo.launch import Launch
    from locomo.runs.hydra_job import check_run_dir

    if isinstance(overrides, str):
        raise ConfigError("overrides", overrides, "must be a list of key=value strings, not one string")
    args = [str(a) for a in overrides]
    for arg in args:
        if arg.startswith("-"):
            raise ConfigError("overrides", arg, "locomo.train runs one job of key=value overrides (no flags)")
    given = None if run_dir is None else str(Path(os.fspath(run_dir)).expanduser())
    # resume=: the checkpoint's run dir and config, checked and read once
    launch = train_command.with_resume(Launch(tuple(args), run_dir=given))
    check_run_dir(launch, train_command.OUTPUT_ROOTS)
    cfg, hydra_cfg = _compose("train", launch.hydra_args())
    out = Path(str(hydra_cfg.run.dir)).expanduser().absolute()
    out.mkdir(parents=True, exist_ok=True)  # what Hydra does before the job
    job = train_command.Job(
        run_dir=out,
        overrides=launch.task_overrides(),
        hydra_cfg=hydra_cfg,
        record_subdir=hydra_cfg.output_subdir,
        sweep_dir=None,
        resume=launch.resume,
    )
    from locomo import distributed

    train_command.train(cfg, distributed.current(), job)
    return out


def _compose(config_name: str, args: list[str]) -> tuple[DictConfig, DictConfig]:
    """(task config, Hydra's config) for ``args``, as Hydra's app would compose them.

    Hydra's own errors (an unknown key or group option, a malformed override) become one ConfigError.
    """
    from hydra.errors import HydraException
    from omegaconf import OmegaConf, open_dict
    from omegaconf.errors import OmegaConfBaseException

    from locomo.cli_help import register_help_resolver
    from locomo.config.compose import compose_config

    register_help_resolver()  # Hydra's config, returned too, names it (hydra.help.template)
    try:
        cfg = compose_config(config_name, args, with_hydra=True)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError("overrides", args, _one_line(exc)) from exc
    hydra_cfg = cfg.hydra
    # Resolve Hydra's interpolations (${now:...}, ${env.name}) while the task config is beside it.
    run_dir = OmegaConf.select(cfg, "hydra.run.dir")
    with open_dict(cfg):
        hydra_cfg.run.dir = run_dir
        del cfg["hydra"]
    return cfg, hydra_cfg


# Lines of Hydra's and OmegaConf's messages that only repeat the key or suggest '+key=' (which
# locomo refuses: an unknown key would be saved with the run and ignored).
_NOISE = ("full_key:", "object_type", "reference_type", "To append to your config")


def _one_line(exc: BaseException) -> str:
    """Hydra's multi-line message, and that of its cause, as one line: what failed and why.

    A line ending in ':' heads a list, one item per line ("Available options in 'env':"): kept
    on one line with its items.
    """
    parts: list[str] = []
    for error in (exc, exc.__cause__):
        if error is None:
            continue
        groups: list[list[str]] = []
        for line in (line.strip() for line in str(error).splitlines()):
            if not line or line.startswith(_NOISE):
                continue
            if groups and groups[-1][0].endswith(":") and not line.endswith(":"):
                groups[-1].append(line)
            else:
                groups.append([line])
        for head, *items in groups[:2]:
            text = f"{head} {', '.join(items)}" if items else head
            if text not in parts:
                parts.append(text)
    return "; ".join(parts) or type(exc).__name__
