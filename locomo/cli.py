"""``locomo <command> [hydra overrides]``: each command is a Hydra app with its config in conf/.

So ``--help``, ``--cfg job``, ``-m`` (multirun) and ``key=value`` overrides work as in any
Hydra app. User errors (bad config values, unreadable checkpoints) print one line and exit 2;
the other exit statuses are listed in :mod:`locomo.errors` and docs/bad_inputs.md.

Importing this module does not import torch, so a bad command line fails fast.
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

from locomo.config import CONF_DIR, ConfigError, register_configs, validate_config
from locomo.errors import (
    EXIT_NONFINITE,
    EXIT_USER_ERROR,
    CheckpointError,
    NonFiniteError,
    TrainingInterrupted,
)

USER_ERRORS: tuple[type[Exception], ...] = (ConfigError, CheckpointError)


def user_errors(fn: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Turn user errors into one line on stderr and an exit status (no traceback).

    Bad input: 2. NaN/inf stopped training: 3. SIGINT/SIGTERM (checkpoint saved): 128 + signal.
    """

    @functools.wraps(fn)
    def wrapper(cfg: DictConfig) -> Any:
        try:
            return fn(cfg)
        except USER_ERRORS as exc:
            print(f"locomo: error: {exc}", file=sys.stderr)
            sys.exit(EXIT_USER_ERROR)
        except NonFiniteError as exc:
            print(f"locomo: error: {exc}", file=sys.stderr)
            sys.exit(EXIT_NONFINITE)
        except TrainingInterrupted as exc:
            print(f"locomo: {exc}", file=sys.stderr)
            sys.exit(exc.exit_status)

    return wrapper


def check_run_dir(args: list[str]) -> None:
    """Create an explicitly given ``hydra.run.dir`` now, so that failing to is one clear line.

    (Hydra would fail later with a stack trace.) Directories with interpolations (the default
    ``outputs/<env>/<date>``) are left to Hydra.
    """
    for arg in args:
        if arg.startswith("hydra.run.dir="):
            value = arg.split("=", 1)[1].strip("'\"")
            if "${" in value:
                continue
            try:
                Path(value).expanduser().mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(
                    "hydra.run.dir", value, f"cannot create the run directory ({exc.strerror})"
                ) from exc


def run_dir() -> Path:
    """The Hydra output directory of this job."""
    return Path(HydraConfig.get().runtime.output_dir)


@hydra.main(version_base=None, config_path=str(CONF_DIR), config_name="train")
@user_errors
def train(cfg: DictConfig) -> float:
    """Train a policy; returns the final mean episodic return (for Hydra sweepers).

    With ``resume=`` the config is the checkpoint's (see :mod:`locomo.resume`) and the run
    continues in the checkpoint's run dir.
    """
    resume_state, resume_path = None, None
    if cfg.resume is not None:
        from locomo.resume import resumed_config

        cfg, resume_path, resume_state = resumed_config(cfg, list(HydraConfig.get().overrides.task))
    validate_config(cfg)
    from locomo.checkpoint import RunDirLock  # heavy imports only after the config is known good
    from locomo.runner import Runner

    out = run_dir()
    with RunDirLock(out):  # one process per run dir: a resume of a run still going is refused
        runner = Runner(cfg, out, resume=resume_state, resume_path=resume_path)
        OmegaConf.save(cfg, out / "config.yaml", resolve=True)
        if resume_state is not None:
            print(
                f"locomo: resuming {out} at iteration {runner.iteration} ({runner.env_steps} env steps) "
                f"from {resume_path}"
            )
        metrics = runner.run()
    ret = metrics.get("rollout/return_mean", float("nan"))
    print(f"locomo: trained {cfg.train.iterations} iterations; mean return {ret:.2f}; run dir {out}")
    return ret


COMMANDS: dict[str, Callable[[], Any]] = {"train": train}

USAGE = """usage: locomo <command> [hydra overrides]

commands:
  train     train a policy (see `locomo train --help` for its config)

examples:
  locomo train
  locomo train env=cartpole algo=baseline train.iterations=50
  locomo train -m seed=0,1,2 algo.baseline=none,mean,optimal
  locomo train resume=outputs/humanoid/2025-01-01_12-00-00 train.iterations=600
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
    try:
        args = argv[1:]
        if command == "train":
            from locomo.resume import prepare_resume_argv

            args = prepare_resume_argv(args)
        check_run_dir(args)
        sys.argv = [f"locomo {command}", *args]
        COMMANDS[command]()
    except USER_ERRORS as exc:
        print(f"locomo: error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt as exc:  # Ctrl-C outside the training loop, or a second signal inside it
        message = str(exc) or "interrupted; the checkpoints already on disk are kept"
        print(f"locomo: {message}", file=sys.stderr)
        sys.exit(getattr(exc, "exit_status", 130))
