"""One way to compose a command's config in-process: Hydra's compose API, over ``conf/``.

Every in-process composition goes through :func:`compose_config`: the typo check before Hydra's
app runs (:mod:`locomo.config.composition`), the Python API (:func:`locomo.api.train`), the
benchmark's training configs (:mod:`locomo.benchmarks.training`) and the tests. It composes
exactly what ``locomo <command> <overrides>`` composes, and leaves the process's Hydra state as
it found it, so it may be called inside another Hydra app (``locomo bench``'s, or a user's).

Imports neither torch nor MuJoCo.
"""

from __future__ import annotations

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from locomo.config.schema import register_configs
from locomo.paths import CONF_DIR


def compose_config(config_name: str, overrides: list[str], *, with_hydra: bool = False) -> DictConfig:
    """``conf/<config_name>.yaml`` composed with ``overrides`` (a sweep's: one job's), as Hydra's
    app composes it. Hydra's and OmegaConf's exceptions pass through.

    ``with_hydra``: keep Hydra's own config under the ``hydra`` key (run dir, job name, help).
    A Hydra instance this process already holds (a caller's app) is put back afterwards.
    """
    register_configs()
    outer = GlobalHydra.instance().hydra
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), job_name=config_name, version_base=None):
            return compose(config_name=config_name, overrides=list(overrides), return_hydra_config=with_hydra)
    finally:
        # initialize_config_dir restores a copy of the state it found, which was cleared: put the
        # caller's instance back.
        GlobalHydra.instance().hydra = outer
