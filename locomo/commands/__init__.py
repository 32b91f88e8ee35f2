"""One module per ``locomo`` command; :mod:`locomo.cli` only dispatches to them.

Each command module defines ``CONFIG`` (the name of its ``conf/<CONFIG>.yaml``, which Hydra
composes), ``run(cfg)`` (validate, then do the work), and optionally ``OUTPUT_ROOTS`` (where its
run dirs go, for commands that have one), ``prepare(args)`` (the command's
:class:`locomo.launch.Launch`, decided from the command line before Hydra runs; its ``run`` is
then ``run(cfg, launch)``), and ``CLAIMS_RUN_DIR`` (its ``locomo:`` lines reach the job's log file
only after it calls :func:`locomo.messages.release`). Heavy imports (torch, MuJoCo) happen inside
``run``, so a bad command line fails fast.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# command -> (module in locomo.commands, one line for `locomo --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train", "train a policy (see `locomo train --help` for its config)"),
    "render": ("render", "labelled videos of a checkpoint's rollouts: grid, per episode, PNG sheet"),
    "eval": ("evaluate", "return, length, distance, behaviour counts over N seeded episodes (table + JSON)"),
    "replay": ("replay", "one episode in the MuJoCo viewer; headless: a video instead"),
    "export": ("export", "a checkpoint's policy alone (under 2 MB for the walker), evaluated, JSON summary"),
    "variance": ("variance", "the estimators' gradient variance at one policy (table, JSON, PNG)"),
    "plot": ("plot", "return curves of several runs, e.g. a multirun comparing estimators"),
    "bench": ("bench", "sampler and training throughput vs Gymnasium, EnvPool, mj_step, SB3 (Humanoid-v5)"),
}


def load(command: str) -> ModuleType:
    """The module of ``command`` (a key of :data:`COMMANDS`)."""
    return importlib.import_module(f"locomo.commands.{COMMANDS[command][0]}")
