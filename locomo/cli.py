"""``locomo <command> [hydra overrides]``: each command is a Hydra app with its config in conf/.

So ``--help``, ``--cfg job``, ``-m`` (multirun) and ``key=value`` overrides work as in any
Hydra app. User errors (bad config values, unreadable checkpoints) print one line and exit 2.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from locomo.checkpoint import CheckpointError
from locomo.config import CONF_DIR, ConfigError, register_configs, validate_bench, validate_config

USER_ERRORS: tuple[type[Exception], ...] = (ConfigError, CheckpointError)


def user_errors(fn: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Turn user errors into one line on stderr and exit status 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(cfg: DictConfig) -> Any:
        try:
            return fn(cfg)
        except USER_ERRORS as exc:
            print(f"locomo: error: {exc}", file=sys.stderr)
            sys.exit(2)

    return wrapper


def run_dir() -> Path:
    """The Hydra output directory of this job."""
    return Path(HydraConfig.get().runtime.output_dir)


@hydra.main(version_base=None, config_path=str(CONF_DIR), config_name="train")
@user_errors
def train(cfg: DictConfig) -> float:
    """Train a policy; returns the final mean episodic return (for Hydra sweepers)."""
    validate_config(cfg)
    from locomo.runner import Runner  # heavy imports only after the config is known good

    out = run_dir()
    OmegaConf.save(cfg, out / "config.yaml", resolve=True)
    metrics = Runner(cfg, out).run()
    ret = metrics.get("rollout/return_mean", float("nan"))
    print(f"locomo: trained {cfg.train.iterations} iterations; mean return {ret:.2f}; run dir {out}")
    return ret


@hydra.main(version_base=None, config_path=str(CONF_DIR), config_name="bench")
@user_errors
def bench(cfg: DictConfig) -> None:
    """Measure sampler and training throughput against Gymnasium, EnvPool, raw mj_step and SB3."""
    validate_bench(cfg)
    from locomo.bench import main as run_bench

    run_bench(cfg, run_dir())


COMMANDS: dict[str, Callable[[], Any]] = {"train": train, "bench": bench}

USAGE = """usage: locomo <command> [hydra overrides]

commands:
  train     train a policy (see `locomo train --help` for its config)
  bench     sampler and training throughput vs Gymnasium, EnvPool, raw mj_step, SB3 (Humanoid-v5)

examples:
  locomo train
  locomo train env=cartpole algo=baseline train.iterations=50
  locomo train -m seed=0,1,2 algo.baseline=none,mean,optimal
  locomo bench quick=true
"""


def main() -> None:
    """Entry point of the ``locomo`` script."""
    register_configs()
    argv = sys.argv[1:]
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    command = argv[0]
    if command not in COMMANDS:
        print(
            f"locomo: error: unknown command {command!r}; commands are {', '.join(COMMANDS)}", file=sys.stderr
        )
        sys.exit(2)
    sys.argv = [f"locomo {command}", *argv[1:]]
    COMMANDS[command]()
