"""``locomo export``: a checkpoint's policy alone (actor + observation normaliser, under 2 MB for the
walker), evaluated in deterministic and stochastic mode, with a JSON summary beside it (how it was
made, how it did); or, with ``format=torchscript|onnx``, a standalone file for deployment
(:mod:`locomo.evaluation.deploy`)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from locomo.config.schema import EXPORT_SUFFIXES
from locomo.config.validation import validate_export_config
from locomo.errors import ConfigError
from locomo.paths import ASSETS_DIR
from locomo.runs.outputs import atomic_output, safe_output, write_text_atomic

if TYPE_CHECKING:  # torch and MuJoCo load only when a command runs (--help stays fast)
    from locomo.evaluation.rollout import Rollout

CONFIG = "export"


def training_command(run_dir: Path) -> str | None:
    """``locomo train <overrides>`` as the run was started (its .hydra/overrides.yaml), if known;
    a ``train.init_from`` path is named as :func:`portable_name` names it (no machine's folders)."""
    overrides = run_dir / ".hydra" / "overrides.yaml"
    if not overrides.is_file():
        return None
    import yaml

    from locomo.evaluation.episodes import portable_name, resolve_checkpoint_path, shipped_checkpoint

    args = [str(a) for a in yaml.safe_load(overrides.read_text(encoding="utf-8")) or []]
    for i, arg in enumerate(args):
        key, _, value = arg.partition("=")
        path = key.lstrip("+") == "train.init_from" and value not in ("", "null")
        if path and not shipped_checkpoint(value):
            args[i] = f"{key}={portable_name(resolve_checkpoint_path(value))}"
    return " ".join(["locomo train", *args])


def started_from(cfg: DictConfig) -> dict[str, Any] | None:
    """What a fine-tuned run (``train.init_from``) started from: that checkpoint's portable name and,
    when its run dir is still where the run found it, the command that trained it."""
    from omegaconf import OmegaConf

    from locomo.evaluation.episodes import (
        checkpoint_run_dir,
        portable_name,
        resolve_checkpoint_path,
        shipped_checkpoint,
    )

    init_from = OmegaConf.select(cfg, "train.init_from")
    if init_from is None:
        return None
    if shipped_checkpoint(init_from) is not None:
        return {"source": str(init_from), "training_command": None}
    path = resolve_checkpoint_path(init_from)
    return {"source": portable_name(path), "training_command": training_command(checkpoint_run_dir(path))}


def exported_name(out: Path) -> str:
    """How the JSON beside an exported policy names it in its eval commands: the bare name when it
    sits in ``assets/`` (``checkpoint=walker`` works from anywhere), else its file name, as run from
    the folder it shares with the JSON (a full path would be this machine's, not the reader's)."""
    return out.stem if out.resolve().parent == ASSETS_DIR.resolve() else out.name


def given_output(cfg: DictConfig) -> Path | None:
    """``out`` when given, checked (:func:`locomo.runs.outputs.safe_output`) before anything loads; for
    ``format=checkpoint`` the ``.json`` summary beside it too."""
    if cfg.out is None:
        return None
    out = safe_output(cfg.out, cfg.format, "out", cfg.overwrite)
    if cfg.format == "checkpoint":
        safe_output(out.with_suffix(".json"), "json", "out", cfg.overwrite)
    return out


def output_path(cfg: DictConfig, given: Path | None, source: Any) -> Path:
    """Where the export goes: ``out`` as given, else ``<run>/export/policy_<checkpoint><suffix>``
    (``outputs/export/<time>/`` for a shipped policy); never the checkpoint it is made from."""
    from locomo.evaluation.episodes import output_root

    if given is None:
        name = f"policy_{source.path.stem}{EXPORT_SUFFIXES[cfg.format][0]}"
        given = safe_output(output_root(source, "export") / name, cfg.format, "out")
        if cfg.format == "checkpoint":
            safe_output(given.with_suffix(".json"), "json", "out")
    if given.exists() and given.resolve() == source.path.resolve():
        raise ConfigError(
            "out", str(given), "it is the checkpoint being exported; write the policy elsewhere"
        )
    return given


def run_deployed(cfg: DictConfig) -> dict[str, Any]:
    """``format=torchscript|onnx``: write the standalone file (raw obs [N, obs_dim] -> env-unit action),
    then run it on probe observations and compare with locomo eval's deterministic actions."""
    import numpy as np
    import torch

    from locomo.evaluation import deploy
    from locomo.evaluation.episodes import load_policy

    if cfg.format == "onnx":
        deploy.require_onnx()  # before loading anything: the one-line install hint
    given = given_output(cfg)
    torch.set_num_threads(1)
    source = load_policy(cfg.checkpoint)
    out = output_path(cfg, given, source)
    module = deploy.DeployedPolicy.from_policy(source)
    metadata = deploy.description(source, cfg.format)
    obs = deploy.probe_observations(source.normalizer)
    try:
        with atomic_output(out) as tmp:  # checked before it replaces anything
            if cfg.format == "onnx":
                deploy.export_onnx(module, tmp, metadata)
            else:
                deploy.export_torchscript(module, tmp, metadata)
            # The file must act as locomo does: a mismatch is a bug, reported as such (exit 1).
            difference = float(np.abs(deploy.run_exported(tmp, obs) - deploy.eval_actions(source, obs)).max())
            if not difference <= deploy.TOLERANCE:
                raise RuntimeError(f"{out} differs from locomo's own actions by up to {difference:.3g}")
    except OSError as exc:
        raise ConfigError("out", str(out), f"cannot write there ({exc})") from exc
    size_mb = out.stat().st_size / 2**20
    iteration = source.counters.get("iteration", "?")
    print(f"{out} ({cfg.format}, {size_mb:.2f} MB) from {source.path} (iteration {iteration})")
    print(f"{metadata['input']} -> {metadata['output']}")
    print(f"checked on {len(obs)} observations: max |action - locomo eval's| = {difference:.2g}")
    print(f"wrote {out}")
    return {**metadata, "policy": out.name, "max_difference": difference}


# Both of locomo eval's modes: the mean action (what replay shows by default) and sampled actions
# (the policy as it acted in training); a walker must walk in both.
MODES = ("deterministic", "stochastic")


def eval_command(name: str, cfg: DictConfig, mode: str) -> str:
    """The ``locomo eval`` command that reproduces the export's evaluation in ``mode``: every setting
    that changes an episode or its label (``max_steps`` and thresholds only when not the default)."""
    from locomo.config.schema import BehaviorConfig

    args = [f"checkpoint={name}", f"episodes={cfg.episodes}", f"seed={cfg.seed}"]
    if cfg.max_steps is not None:
        args.append(f"max_steps={cfg.max_steps}")
    defaults = BehaviorConfig()
    args += [
        f"behavior.{key}={value}"
        for key, value in cfg.behavior.items()
        if value != getattr(defaults, str(key))
    ]
    return " ".join(["locomo eval", *args, f"mode={mode}"])


def episode_row(rollout: Rollout) -> dict[str, Any]:
    """One episode as the JSON keeps it: enough to check it again (seed, return, length) and to
    count what the body did (label, distance); ``locomo eval`` writes the rest (terms, angles)."""
    behavior = rollout.behavior
    return {
        "seed": rollout.seed,
        "return": rollout.record.ret,
        "length": rollout.record.length,
        "label": None if behavior is None else behavior.label,
        "distance": None if behavior is None else behavior.distance,
    }


def report_text(report: dict[str, Any]) -> str:
    """``report`` as indented JSON, except that each per-episode row is one line: 2 x 100 episodes
    stay 200 lines instead of 1400."""
    rows: dict[str, str] = {}

    def placeholder(row: dict[str, Any]) -> str:
        key = f"@episode {len(rows)}@"
        rows[json.dumps(key)] = json.dumps(row)
        return key

    shown = {
        key: {**value, "per_episode": [placeholder(row) for row in value["per_episode"]]}
        if key in MODES
        else value
        for key, value in report.items()
    }
    text = json.dumps(shown, indent=2)
    return re.sub(r'"@episode \d+@"', lambda match: rows[match.group(0)], text) + "\n"


def run(cfg: DictConfig) -> dict[str, Any]:
    """A training checkpoint's policy alone (actor and observation normaliser,
    no critic or optimiser), evaluated; writes ``out`` and, beside it, ``<out>.json`` with the
    training command, the counters and the evaluation in both modes (summary and one row per
    episode). The JSON names no path of this machine, so it can ship with the policy."""
    import torch
    from omegaconf import OmegaConf

    from locomo.evaluation.episodes import (
        check_episode_count,
        evaluate_modes,
        format_table,
        load_policy,
        portable_name,
        summarize,
    )
    from locomo.runs import checkpoint, checkpoint_format
    from locomo.runs.checkpoint import CheckpointError

    validate_export_config(cfg)
    if cfg.format != "checkpoint":  # no evaluation: episodes is not used
        return run_deployed(cfg)
    check_episode_count(cfg.episodes, "export")
    given = given_output(cfg)
    torch.set_num_threads(1)
    source = load_policy(cfg.checkpoint)
    state = checkpoint.load(source.path, map_location="cpu")
    out = output_path(cfg, given, source)
    policy_state = {key: state[key] for key in checkpoint_format.POLICY_KEYS if key in state}
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        checkpoint.save_atomic(policy_state, out)
    except (OSError, CheckpointError) as exc:
        raise ConfigError("out", str(out), f"cannot write there ({exc})") from exc
    exported = load_policy(out)  # what users will load: evaluate exactly that
    # Both modes on the same seeds and envs, as locomo eval mode=both.
    results = evaluate_modes(
        exported, list(MODES), cfg.episodes, cfg.seed, cfg.behavior, cfg.max_steps, "export"
    )
    summaries = {mode: summarize(rollouts) for mode, rollouts in results.items()}
    name = exported_name(out)
    report: dict[str, Any] = {
        "policy": out.name,
        "source": portable_name(source.path),
        "training_command": training_command(source.run_dir),
        "started_from": started_from(exported.cfg),
        "env": exported.cfg.env.name,
        "counters": exported.counters,
        "seed": cfg.seed,
        "max_steps": cfg.max_steps,
        "behavior_thresholds": OmegaConf.to_container(cfg.behavior),
        "eval_command": eval_command(name, cfg, "both"),
    }
    for mode, summary in summaries.items():
        report[mode] = {
            **{k: v for k, v in summary.items() if k != "per_episode"},
            "eval_command": eval_command(name, cfg, mode),
            "per_episode": [episode_row(rollout) for rollout in results[mode]],
        }
    summary_path = out.with_suffix(".json")
    write_text_atomic(summary_path, report_text(report))
    size_mb = out.stat().st_size / 2**20
    iteration = exported.counters.get("iteration", "?")
    print(f"{out} ({size_mb:.2f} MB) from {source.path} (iteration {iteration})")
    print(format_table(summaries))
    print(f"wrote {out} and {summary_path}")
    return report
