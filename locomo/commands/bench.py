"""``locomo bench``: how fast locomo samples and trains Humanoid-v5 on this machine, against the field.

What it measures: the samplers (:mod:`locomo.benchmarks.samplers`), the trainers on one identical
workload (:mod:`locomo.benchmarks.training`) and the default job's own workload with where its
iterations' time goes (:mod:`locomo.benchmarks.default_job`). This module runs them, prints the
table and writes the JSON (``bench.json`` in the run dir, or ``bench.out``).

Every figure is a median over repeats (samplers interleaved repeat by repeat, so a busy neighbour
slows all of them alike) or over iterations after a warm-up one (the split: a mean, so that its
parts add up). Nothing here asserts a speed.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
from pathlib import Path
from typing import Any

import gymnasium as gym
import mujoco
import torch
from omegaconf import DictConfig, OmegaConf

from locomo.benchmarks.default_job import (
    default_train_config,
    iteration_limits,
    iteration_split,
    measure_locomo_train_default,
)
from locomo.benchmarks.samplers import ENV_ID, measure_samplers, raw_default_setup, resolve_threads
from locomo.benchmarks.training import measure_locomo_train, measure_locomo_train_ranks, measure_sb3
from locomo.config.schema import critic_widths
from locomo.config.validation import validate_bench
from locomo.envs.pool import available_cores
from locomo.errors import ConfigError
from locomo.launch import Launch

CONFIG = "bench"
OUTPUT_ROOTS = ("outputs", "multirun")  # its run dirs, when hydra.run.dir / hydra.sweep.dir are not given
# Its lines reach bench.log, and Hydra's record its run dir, only once its checks passed
# (locomo.messages.release): a refused start leaves nothing behind.
CLAIMS_RUN_DIR = True
REQUIRED_KEYS = (
    "locomo_sampler",
    "raw_physics",
    "gymnasium_sync",
    "gymnasium_async",
    "envpool",
    "locomo_train",
    "locomo_train_default",
    "sb3_ppo",
)
QUICK = {
    "num_envs": 4,
    "sampler_steps": 20,
    "repeats": 1,
    "train_batch": 512,
    "train_iterations": 2,
    "default_iterations": 2,
}


def median(values: list[float] | None) -> float | None:
    return float(statistics.median(values)) if values else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def run_bench(settings: DictConfig, seed: int, run_dir: Path) -> dict[str, Any]:
    """Measure everything; return the JSON-ready result (the required keys are env steps/s or None)."""
    load_start = os.getloadavg()
    default_cfg = default_train_config(seed, settings.default_iterations)
    raw_default = raw_default_setup(default_cfg, settings)
    samples, cpu_per_step, notes = measure_samplers(settings, seed, raw_default)
    train = measure_locomo_train(settings, seed, run_dir, "locomo_train")
    all_cores = measure_locomo_train(settings, seed, run_dir, "locomo_train_all_cores", update_threads=0)
    default_rates, default_iterations = measure_locomo_train_default(default_cfg, run_dir)
    if default_cfg.train.get("overlap", False):
        # Overlapped, the parts run at once and process-wide CPU time cannot tell them apart: the
        # split is of the same workload with its parts in sequence.
        sequential = default_cfg.copy()
        sequential.train.overlap = False
        split_run = "locomo_train_default_split"
        _, default_iterations = measure_locomo_train_default(sequential, run_dir, split_run)
        notes["default_iteration_split"] = (
            "measured on the default workload with train.overlap=false (its parts in sequence); "
            "with train.overlap the update runs beside the collection"
        )
    split, idle, unused = iteration_split(default_iterations, available_cores())
    for part in unused:
        notes[f"default_iteration_split.{part}"] = "not called in the timed iterations: its time is in other"
    ranks = measure_locomo_train_ranks(settings, seed, run_dir)
    if isinstance(ranks, str):
        notes["locomo_train_ranks"] = ranks
        ranks = {}
    sb3 = measure_sb3(settings, seed)
    if isinstance(sb3, str):
        notes["sb3_ppo"] = sb3
    else:
        samples["sb3_ppo"] = sb3
    samples["locomo_train"] = train["train"]
    samples["locomo_collect"] = train["collect"]
    samples["locomo_train_all_cores"] = all_cores["train"]
    samples["locomo_train_default"] = default_rates
    if ranks:
        samples["locomo_train_ranks"] = ranks["train"]

    result: dict[str, Any] = {key: median(samples.get(key)) for key in REQUIRED_KEYS}
    result["locomo_gymnasium_backend"] = median(samples.get("locomo_gymnasium_backend"))
    result["locomo_collect"] = median(train["collect"])
    result["locomo_update_s"] = median(train["update_s"])
    result["locomo_train_all_cores"] = median(all_cores["train"])
    result["locomo_update_s_all_cores"] = median(all_cores["update_s"])
    result["locomo_train_ranks"] = median(ranks.get("train"))
    result["ranks"] = int(ranks["ranks"][0]) if ranks else None
    raw_key = "raw_physics_default" if raw_default.separate else "raw_physics"
    result["raw_physics_default"] = median(samples.get(raw_key))
    result["default_iteration_split"] = split
    result["default_idle_share"] = idle
    result["default_limits"] = iteration_limits(
        split,
        default_cfg.train.steps_per_iteration,
        available_cores(),
        result["raw_physics_default"],
        median(cpu_per_step.get(raw_key)),
    )
    algo, model = default_cfg.algo, default_cfg.model
    result["default_workload"] = {
        "algo": algo.name,
        "num_envs": default_cfg.train.num_envs,
        "steps_per_iteration": default_cfg.train.steps_per_iteration,
        "epochs": algo.epochs,
        "minibatches": algo.minibatches,
        "reuse_batches": algo.reuse_batches,
        "symmetry": algo.get("symmetry"),  # keys of the default recipe that change the update's work
        "overlap": default_cfg.train.get("overlap"),
        "hidden_sizes": list(model.hidden_sizes),
        "critic_hidden_sizes": critic_widths(model),
        "activation": model.activation,
        "simulator_threads": raw_default.threads,
        "torch_threads": default_cfg.train.torch_threads,
        "update_threads": default_cfg.train.update_threads,
        "iterations": default_cfg.train.iterations,
        # Which raw-physics figure the ratio divides by: the bench's own when its envs and
        # threads are the default job's, else the one measured at the default job's.
        "raw_physics": raw_key,
    }
    result["ratios"] = {
        "locomo_sampler/raw_physics": ratio(result["locomo_sampler"], result["raw_physics"]),
        "locomo_sampler/envpool": ratio(result["locomo_sampler"], result["envpool"]),
        "locomo_train/locomo_sampler": ratio(result["locomo_train"], result["locomo_sampler"]),
        "locomo_collect/locomo_sampler": ratio(result["locomo_collect"], result["locomo_sampler"]),
        "locomo_train_all_cores/locomo_sampler": ratio(
            result["locomo_train_all_cores"], result["locomo_sampler"]
        ),
        "locomo_train/sb3_ppo": ratio(result["locomo_train"], result["sb3_ppo"]),
        "locomo_train_ranks/locomo_train": ratio(result["locomo_train_ranks"], result["locomo_train"]),
        "locomo_train_default/raw_physics": ratio(
            result["locomo_train_default"], result["raw_physics_default"]
        ),
    }
    result["samples"] = samples
    result["notes"] = notes
    result["settings"] = {
        "env_id": ENV_ID,
        **OmegaConf.to_container(settings),
        "threads_resolved": resolve_threads(settings.threads),
        "seed": seed,
    }
    result["machine"] = {
        "cores": available_cores(),
        "load_avg_start": list(load_start),
        "load_avg_end": list(os.getloadavg()),
        "python": platform.python_version(),
        "mujoco": mujoco.__version__,
        "gymnasium": gym.__version__,
        "torch": torch.__version__,
    }
    return result


def _fmt(x: float | None, digits: int = 0) -> str:
    return "n/a" if x is None else f"{x:,.{digits}f}"


def format_table(result: dict[str, Any]) -> str:
    """The human-readable table of a :func:`run_bench` result."""
    s, m = result["settings"], result["machine"]
    ranks_label = f"locomo, torchrun {result['ranks'] or 'K'} processes x 1 thread"
    lines = [
        f"locomo bench: {s['env_id']}, {s['num_envs']} envs, {s['threads_resolved']} simulator threads, "
        f"{m['cores']} cores (load avg {m['load_avg_start'][0]:.2f} at start, "
        f"{m['load_avg_end'][0]:.2f} at end)",
        f"medians over {s['repeats']} repeats of {s['sampler_steps']} vector steps; "
        f"training: median over {s['train_iterations'] - 1} iterations after a warm-up "
        f"(the default job: {s['default_iterations'] - 1})",
        "",
        f"{'sampler, random actions':44s}{'env steps/s':>14s}",
    ]
    rows = [
        ("locomo batched (env.backend=batched)", "locomo_sampler"),
        ("raw physics: mj_step only, threads = cores", "raw_physics"),
        ("EnvPool", "envpool"),
        ("Gymnasium SyncVectorEnv", "gymnasium_sync"),
        ("Gymnasium AsyncVectorEnv", "gymnasium_async"),
        ("locomo env.backend=gymnasium", "locomo_gymnasium_backend"),
    ]
    lines += [f"  {label:42s}{_fmt(result[key]):>14s}" for label, key in rows]
    w = result["default_workload"]
    raw_default = f"raw physics at {w['num_envs']} envs x {w['simulator_threads']} threads"
    if w["raw_physics"] == "raw_physics_default":
        lines.append(f"  {raw_default:42s}{_fmt(result['raw_physics_default']):>14s}")
    lines += [
        "",
        f"training: batch {s['train_batch']}, {s['train_epochs']} epochs x {s['train_minibatches']} "
        "minibatches, 64x64 tanh MLPs, Gaussian, value baseline",
        f"  {'locomo, default threads (collect + update)':42s}{_fmt(result['locomo_train']):>14s}",
        f"  {'  of which collect only':42s}{_fmt(result['locomo_collect']):>14s}",
        f"  {'  update seconds per iteration':42s}{_fmt(result['locomo_update_s'], 3):>14s}",
        f"  {'locomo, train.update_threads=0':42s}{_fmt(result['locomo_train_all_cores']):>14s}",
        f"  {'  update seconds per iteration':42s}{_fmt(result['locomo_update_s_all_cores'], 3):>14s}",
        f"  {ranks_label:42s}{_fmt(result['locomo_train_ranks']):>14s}",
        f"  {'Stable-Baselines3 PPO':42s}{_fmt(result['sb3_ppo']):>14s}",
        "",
        *format_default(result),
        "",
        "ratios",
    ]
    lines += [f"  {name:42s}{_fmt(value, 2):>14s}" for name, value in result["ratios"].items()]
    lines.append(f"  (locomo_train_default/raw_physics divides by the {raw_default})")
    for name, note in result["notes"].items():
        lines.append(f"note: {name}: {note}")
    return "\n".join(lines)


def format_default(result: dict[str, Any]) -> list[str]:
    """The table's lines on the default job: its env steps/s and where an iteration's time goes."""
    w, split = result["default_workload"], result["default_iteration_split"]
    hidden = "-".join(str(h) for h in w["hidden_sizes"])
    critic = w.get("critic_hidden_sizes")
    if critic is not None and list(critic) != list(w["hidden_sizes"]):
        hidden += " (critic " + "-".join(str(h) for h in critic) + ")"
    timed = w["iterations"] - 1
    lines = [
        f"the default job (locomo train, algo={w['algo']}): {w['num_envs']} envs, batch "
        f"{w['steps_per_iteration']}, {w['epochs']} epochs x {w['minibatches']} minibatches,",
        f"  algo.reuse_batches={w['reuse_batches']} algo.symmetry={w['symmetry']} "
        f"train.overlap={w['overlap']}, {hidden} {w['activation']} MLPs,",
        f"  {w['simulator_threads']} simulator threads, train.torch_threads={w['torch_threads']} "
        f"train.update_threads={w['update_threads']}",
        f"  {'locomo_train_default (env steps/s)':42s}{_fmt(result['locomo_train_default']):>14s}",
        f"  where one iteration's time goes (mean over {timed} after a warm-up; CPU s: all threads)",
        f"  {'part':20s}{'CPU s':>10s}{'wall s':>10s}{'CPU share':>12s}",
    ]
    labels = {
        "physics": "physics",
        "policy_forward": "policy forward",
        "critic": "critic",
        "update": "update",
        "other": "other",
        "total": "total",
    }
    for key, label in labels.items():
        part = split[key]
        share = f"{100 * part['cpu_fraction']:.1f}%"
        lines.append(f"    {label:18s}{part['cpu_s']:>10.3f}{part['wall_s']:>10.3f}{share:>12s}")
    lines.append(
        f"  cores idle: {100 * result['default_idle_share']:.1f}% of {result['machine']['cores']} cores' "
        "time (1 - CPU s / (wall s x cores))"
    )
    limits = result["default_limits"]
    lines += [
        f"  its physics: {_fmt(limits['physics_cpu_us_per_step'])} CPU us per env step "
        f"(raw physics, random actions: {_fmt(limits['raw_physics_cpu_us_per_step'])})",
        f"  locomo_train_default/raw_physics at most {_fmt(limits['ratio_if_no_core_idle'], 2)} "
        f"with no core idle, {_fmt(limits['ratio_if_learning_were_free'], 2)} were the learning free",
    ]
    return lines


def bench_settings(cfg: DictConfig) -> DictConfig:
    """``cfg.bench``, shrunk to :data:`QUICK` sizes when ``quick=true``."""
    settings = cfg.bench.copy()
    if cfg.quick:
        settings.update(QUICK)
    return settings


def prepare(args: list[str]) -> Launch:
    """Hydra's ``.hydra/`` record left to the job, so that a refused start leaves nothing behind
    (:func:`locomo.runs.hydra_job.run_dir_launch`)."""
    from locomo.runs.hydra_job import run_dir_launch

    return run_dir_launch(args, OUTPUT_ROOTS)


def check_writable(path: Path, key: str, value: str) -> None:
    """Create ``path``'s folder and a file in it, then remove both: a place the checks by name let
    through but the system refuses (``/proc/x/``: root passes the permission check there) is
    refused now, naming ``key``, not after the minutes of measuring."""
    missing = []
    folder = path.parent.absolute()
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".probe", dir=path.parent)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise ConfigError(
            key, value, f"cannot write there ({exc.strerror or exc}); choose another path"
        ) from exc
    finally:
        for created in missing:  # deepest first; the results' file creates them again at the end
            try:
                created.rmdir()
            except OSError:
                break


def run(cfg: DictConfig, launch: Launch) -> dict[str, Any]:
    """Run the benchmark in this job's run dir, print the table, write the JSON; return the result.

    A start refused (a bad value or ``bench.out``) leaves nothing behind, not even the run dir.
    """
    from locomo.runs.hydra_job import removed_if_refused

    with removed_if_refused(launch.created_below):
        return _run(cfg, launch)


def _run(cfg: DictConfig, launch: Launch) -> dict[str, Any]:
    """:func:`run` without the clean-up of a refused start."""
    from locomo import messages
    from locomo.runs.hydra_job import hydra_run_dir, write_job_record
    from locomo.runs.outputs import safe_output, write_text_atomic

    validate_bench(cfg)
    run_dir = hydra_run_dir()
    settings = bench_settings(cfg)
    # Checked before the minutes of measuring, so that the results are never lost to a bad path.
    target = run_dir / "bench.json" if settings.out is None else settings.out
    out = safe_output(target, "json", "bench.out", cfg.overwrite)
    check_writable(out, "bench.out", str(target))
    # The run dir is this job's now: its record, and its lines into bench.log.
    write_job_record(cfg, launch.record_subdir)
    messages.release()
    result = run_bench(settings, cfg.seed, run_dir)
    print(format_table(result))
    write_text_atomic(out, json.dumps(result, indent=2) + "\n")
    print(f"locomo: wrote {out}")
    return result
