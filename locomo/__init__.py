"""locomo: train MuJoCo humanoid walkers with the policy-gradient family.

From Python (README "From Python")::

    import locomo
    policy = locomo.load("walker")          # the shipped walker, a run dir or a checkpoint file
    action = policy.act(obs)                # raw obs [obs_dim] or [N, obs_dim] -> env-unit actions
    env = locomo.make_env("humanoid_forward", num_envs=8)   # locomo's vector env
    run_dir = locomo.train(["env=cartpole", "train.iterations=50"])

and, after ``import locomo``, ``gymnasium.make("locomo/HumanoidForward-v0")`` (:data:`GYMNASIUM_IDS`).

Importing the package stays cheap: the API (:mod:`locomo.api`, which loads torch and MuJoCo on
use) is imported when one of its names is first used, and the Gymnasium ids are registered with
string entry points, so nothing is built until ``gymnasium.make``. Gymnasium itself (a noticeable
share of start-up) is not imported here: the ids are registered as soon as it is, before or after
``import locomo`` (the ``locomo`` command's start-up must be interruptible from its first line).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from locomo.api import Policy, env_config, env_names, load, make_env, train

__all__ = [
    "GYMNASIUM_IDS",
    "Policy",
    "__version__",
    "env_config",
    "env_names",
    "load",
    "make_env",
    "train",
]

_API = ("Policy", "env_config", "env_names", "load", "make_env", "train")

# Gymnasium's spelling where the env config's name does not give it (cartpole -> CartPole).
_ID_NAMES = {"cartpole": "CartPole"}


def _gymnasium_id(name: str) -> str:
    """``humanoid_forward`` -> ``locomo/HumanoidForward-v0``."""
    camel = _ID_NAMES.get(name) or "".join(part[:1].upper() + part[1:] for part in name.split("_"))
    return f"locomo/{camel}-v0"


# One Gymnasium id per env config in conf/env/ (a listing of file names: no YAML is read here).
GYMNASIUM_IDS: dict[str, str] = {
    _gymnasium_id(path.stem): path.stem
    for path in sorted((Path(__file__).resolve().parent / "conf" / "env").glob("*.yaml"))
}


def _register_gymnasium_ids() -> None:
    """Register :data:`GYMNASIUM_IDS` with Gymnasium (string entry points: nothing is imported)."""
    import gymnasium

    for env_id, name in GYMNASIUM_IDS.items():
        if env_id not in gymnasium.registry:  # a reload must not re-register (Gymnasium warns)
            gymnasium.register(id=env_id, entry_point="locomo.envs.gym_env:LocomoEnv", kwargs={"task": name})


class _RegisterWhenGymnasiumLoads:
    """A ``sys.meta_path`` finder that registers the ids once ``import gymnasium`` has run.

    Importing gymnasium here would cost every ``import locomo`` (and the CLI's start-up, where a
    Ctrl-C must not land in an unguarded import) its import time; yet ``import locomo`` then
    ``gymnasium.make("locomo/...")`` must work. So the import of gymnasium, whoever does it, ends
    with the registration. The finder only wraps the spec the other finders find.
    """

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != "gymnasium":
            return None
        if self in sys.meta_path:  # once: the other finders find the real spec, and later imports
            sys.meta_path.remove(self)  # are served from sys.modules anyway
        from importlib.util import find_spec

        spec = find_spec(fullname)
        loader = getattr(spec, "loader", None)
        exec_module = getattr(loader, "exec_module", None)
        if exec_module is None:  # an unusual loader: register after the fact is impossible; do it now
            return spec

        def exec_then_register(module: Any) -> None:
            exec_module(module)
            _register_gymnasium_ids()

        loader.exec_module = exec_then_register  # type: ignore[union-attr]  # this spec's loader only
        return spec


if "gymnasium" in sys.modules:
    _register_gymnasium_ids()
elif not any(isinstance(f, _RegisterWhenGymnasiumLoads) for f in sys.meta_path):  # not twice on reload
    sys.meta_path.insert(0, _RegisterWhenGymnasiumLoads())


def __getattr__(name: str) -> Any:
    """The API's names, imported from :mod:`locomo.api` on first use."""
    if name in _API:
        from locomo import api

        return getattr(api, name)
    raise AttributeError(f"module 'locomo' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
