"""The bad-input catalogue (docs/bad_inputs.md), one test per row.

Each row: an id (also the first column of the docs table), the command line after `locomo`,
the exit status and a piece of the message it must print. No row may print a traceback. Rows
run the real `main()` in this process (fast; an escaping exception fails the test instead of
printing a traceback), or, when they need a process of their own (resource limits, W&B env
vars), as `python -m locomo` subprocesses.

Adding a row for another command is one line in CATALOGUE. Placeholders in the command line:
``{run}`` a finished tiny training run, ``{cartpole_run}`` one of cartpole, ``{files}`` a
directory of prepared bad files (see
``bad_files``).
"""

# ruff: noqa: E501  (the catalogue is a table: one row per line)
from __future__ import annotations

import copy
import ctypes.util
import os
import pickle
import resource
import shlex
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from locomo.runs.rundir import RunDirLock
from tests.conftest import REPO, Evil, run_locomo
from tests.safety_helpers import call_locomo, finished_pendulum_run

FAST = "env=cartpole logger.wandb.mode=disabled logger.progress=false train.num_envs=2 train.steps_per_iteration=32"
PENDULUM = "env=inverted_pendulum logger.wandb.mode=disabled logger.progress=false train.num_envs=2 train.steps_per_iteration=32"


@dataclass(frozen=True)
class BadInput:
    id: str
    command: str  # after `locomo`; placeholders {run}, {files}
    status: int
    message: str  # must appear in stderr
    category: str = "config"  # config: must fail before any simulation
    subprocess: bool = False
    env: dict[str, str | None] = field(default_factory=dict)  # None: unset the variable
    fsize_limit: int | None = None  # RLIMIT_FSIZE for the subprocess (bytes)
    skip_if_cuda: bool = False
    skip_if_library: str | None = None  # skip where this shared library exists (the row needs it missing)
    cwd_file: str | None = None  # a file of this name in the working directory


def row(id: str, command: str, status: int, message: str, **kw) -> BadInput:
    return BadInput(id, command, status, message, **kw)


CATALOGUE = [
    # -- config values: one line naming the key, the value and what is allowed; exit 2
    row("gamma-range", "train algo.gamma=1.5", 2, "algo.gamma=1.5 is invalid: must be in (0, 1]"),
    row("action-bounds-choice", "train model.action_bounds=tanh", 2, "model.action_bounds='tanh' is invalid: allowed values are clip, none"),
    row("lr-schedule-choice", "train algo.lr_schedule=cosine", 2, "algo.lr_schedule='cosine' is invalid: allowed values are constant, linear, adaptive"),
    row("kl-threshold-zero", "train algo.kl_threshold=0", 2, "algo.kl_threshold=0.0 is invalid: must be > 0"),
    row("gae-lambda-range", "train algo.gae_lambda=-0.1", 2, "algo.gae_lambda=-0.1 is invalid: must be in [0, 1]"),
    row("epochs-zero", "train algo.epochs=0", 2, "algo.epochs=0 is invalid: must be >= 1"),
    row("lr-negative", "train algo.lr=-1e-3", 2, "algo.lr=-0.001 is invalid: must be > 0"),
    row("lr-infinite", "train algo.lr=inf", 2, "algo.lr=inf is invalid: must be > 0"),
    row("baseline-choice", "train algo.baseline=median", 2, "algo.baseline='median' is invalid: allowed values are none, mean, optimal, value"),
    row("returns-choice", "train algo.returns=future", 2, "allowed values are total, reward_to_go"),
    row("importance-choice", "train algo.importance=both", 2, "allowed values are per_step, trajectory"),
    row("clip-ratio-range", "train algo.clip_ratio=1.5", 2, "algo.clip_ratio=1.5 is invalid: must be in (0, 1)"),
    row("reuse-batches-zero", "train algo.reuse_batches=0", 2, "algo.reuse_batches=0 is invalid: must be an integer >= 1"),
    row("reuse-needs-value", "train env=inverted_pendulum algo=baseline algo.reuse_batches=2", 2, "algo.reuse_batches=2 is invalid: reusing earlier batches needs algo.baseline=value"),
    row("reuse-correction-choice", "train algo.reuse_correction=retrace", 2, "allowed values are none, truncated, vtrace"),
    row("symmetry-choice", "train algo.symmetry=mirror", 2, "algo.symmetry='mirror' is invalid: allowed values are none, augment, loss, both, auto"),
    row("symmetry-no-mirror", "train env=walker2d algo.symmetry=augment", 2, "algo.symmetry='augment' is invalid: env 'walker2d' (Walker2d-v5) has no left-right mirror map"),
    row("overlap-needs-value", "train env=inverted_pendulum algo=baseline train.overlap=true", 2, "train.overlap=True is invalid: a batch collected during the update is one update old: weighting it needs algo.baseline=value"),
    row("update-precision-choice", "train train.update_precision=fp16", 2, "train.update_precision='fp16' is invalid: allowed values are auto, float32, bfloat16"),
    row("num-envs-zero", "train train.num_envs=0", 2, "train.num_envs=0 is invalid: must be > 0"),
    row("steps-negative", "train train.steps_per_iteration=-5", 2, "train.steps_per_iteration=-5 is invalid: must be > 0"),
    row("steps-not-multiple", "train train.steps_per_iteration=100 train.num_envs=16", 2, "train.steps_per_iteration=100 is invalid: must be a multiple of train.num_envs=16"),
    row("total-steps-zero", "train train.total_steps=0", 2, "train.total_steps=0 is invalid: must be an integer > 0 (env steps), or null to use train.iterations"),
    row("total-steps-and-iterations", "train train.total_steps=100000 train.iterations=5", 2, "train.total_steps=100000 is invalid: give train.total_steps or train.iterations, not both"),
    row("keep-checkpoints-zero", "train train.keep_checkpoints=0", 2, "train.keep_checkpoints=0 is invalid: must be > 0"),
    row("device-choice", "train train.device=tpu", 2, "allowed values are auto, cpu, cuda"),
    row("cuda-unavailable", "train train.device=cuda", 2, "train.device='cuda' is invalid: CUDA is not available", skip_if_cuda=True),
    row("activation-choice", "train model.activation=sigmoid", 2, "allowed values are tanh, relu, elu"),
    row("symmetry-coef-negative", "train algo.symmetry=loss algo.symmetry_coef=-1", 2, "algo.symmetry_coef=-1.0 is invalid: must be >= 0"),
    row("symmetry-pairs-not-bool", "train algo.symmetry_pairs=maybe", 2, "algo.symmetry_pairs='maybe' is invalid: must be true or false; e.g. algo.symmetry_pairs=true (its value without this override)"),
    row("max-log-std-range", "train model.max_log_std=9", 2, "model.max_log_std=9.0 is invalid: must be in [-5, 5] (a std of e^-5"),
    row("max-log-std-from-negative", "train model.max_log_std=-1.6 model.max_log_std_from=-1", 2, "model.max_log_std_from=-1 is invalid: must be an iteration >= 0, or null for from the start"),
    row("max-log-std-from-without-cap", "train model.max_log_std=null model.max_log_std_from=300", 2, "model.max_log_std_from=300 is invalid: it says from which iteration model.max_log_std caps the std, and that is null: set it too"),
    row("hidden-sizes-empty", "train model.hidden_sizes=[]", 2, "model.hidden_sizes=[] is invalid: must be a non-empty list"),
    row("critic-hidden-sizes-zero", "train model.critic_hidden_sizes=[64,0]", 2, "model.critic_hidden_sizes=[64, 0] is invalid: must be a non-empty list of widths >= 1"),
    row("wandb-mode-choice", "train logger.wandb.mode=sometimes", 2, "allowed values are auto, online, offline, disabled"),
    row("seed-negative", "train seed=-1", 2, "seed=-1 is invalid: must be >= 0"),
    row("backend-choice", "train env.backend=warp", 2, "allowed values are gymnasium, batched"),
    row("env-id-unknown", "train env.id=NoSuchEnv-v0", 2, "env.id='NoSuchEnv-v0' is invalid: not a registered Gymnasium env"),
    row("max-episode-steps-zero", "train env.max_episode_steps=0", 2, "env.max_episode_steps=0 is invalid: must be > 0"),
    row("reward-term-unknown", "train +env.reward_scales.nope=1", 2, "env.reward_scales.nope=1.0 is invalid: unknown reward term; terms are forward, healthy, ctrl, contact"),
    row("reward-scale-nan", "train env.reward_scales.forward=nan", 2, "env.reward_scales.forward=nan is invalid: must be a finite number"),
    row("xml-missing", "train env.xml_file=/nonexistent/robot.xml", 2, "env.xml_file='/nonexistent/robot.xml' is invalid: no such file"),
    row("xml-not-mjcf", "train env=hopper env.xml_file={files}/not_mjcf.xml", 2, "is invalid: not a valid MJCF model (XML parse error"),
    row("env-kwarg-unknown", f"train {FAST} env=hopper +env.kwargs.bogus=1", 2, "env.kwargs.bogus=1 is invalid: not an argument of Hopper-v5; it takes"),
    row("env-kwarg-unknown-gymnasium", f"train {FAST} env=hopper env.backend=gymnasium +env.kwargs.bogus=1", 2, "env.kwargs={'bogus': 1} is invalid: Hopper-v5 does not accept them"),
    # -- typos Hydra would report over several lines (exit 1): one line and exit 2, before Hydra starts (locomo.cli.check_composition)
    row("env-unknown", "train env=moon_walker", 2, "env='moon_walker' is invalid: not one of the env options; choose one of "),
    row("algo-unknown", "train algo=magic", 2, "algo='magic' is invalid: not one of the algo options; choose one of "),
    row("algo-typo", "train algo=wakl", 2, "algo='wakl' is invalid: not one of the algo options; choose one of walk, baseline, reward_to_go, clipped, importance, reinforce (closest first)"),
    row("key-unknown", "train algo.no_such_key=1", 2, "algo.no_such_key='1' is invalid: not a key of locomo train; locomo train --help lists its keys"),
    row("key-unknown-no-match", "train bogus.key=1", 2, "bogus.key='1' is invalid: not a key of locomo train; locomo train --help lists its keys"),
    row("key-typo", "train train.iteratons=5", 2, "train.iteratons='5' is invalid: not a key of locomo train; did you mean train.iterations? (locomo train --help lists its keys)"),
    row("key-typo-eval", "eval checkpoint={run} episdes=3", 2, "episdes='3' is invalid: not a key of locomo eval; did you mean episodes? (locomo eval --help lists its keys)"),
    row("key-typo-bench", "bench bench.repets=3", 2, "bench.repets='3' is invalid: not a key of locomo bench; did you mean bench.repeats?"),
    row("key-typo-on-resume", "train resume={run} train.iteratons=5", 2, "train.iteratons='5' is invalid: not a key of locomo train; did you mean train.iterations?", category="checkpoint"),
    row("hydra-key-typo", "train hydra.run.dri=x", 2, "hydra.run.dri='x' is invalid: not a key of locomo train; did you mean hydra.run.dir?"),
    row("dict-key-without-plus", "train env.kwargs.frame_skip=3", 2, "env.kwargs.frame_skip='3' is invalid: env.kwargs has no key frame_skip yet; add it with +env.kwargs.frame_skip=3"),
    row("dict-key-typo", "train env.reward_scales.forwad=2", 2, "env.reward_scales.forwad='2' is invalid: env.reward_scales has no key forwad; did you mean env.reward_scales.forward? (a new key is added with +env.reward_scales.forwad=2)"),
    row("plus-on-existing-key", "train +seed=1", 2, "+seed='1' is invalid: seed is in the config already; set it without '+' (seed=1)"),
    row("delete-unknown-key", "train ~sede", 2, "~sede is invalid: there is no key sede to delete; did you mean ~seed? (locomo train --help lists its keys)"),
    row("type-wrong", "train train.iterations=many", 2, "train.iterations='many' is invalid: must be an integer; e.g. train.iterations="),
    row("type-wrong-list", "train model.hidden_sizes=[a,b]", 2, "model.hidden_sizes='[a,b]' is invalid: must be a list of integers in brackets; e.g. model.hidden_sizes=["),
    row("sweep-without-m", "train seed=0,1", 2, "seed='0,1' is invalid: a value with ',' is a sweep; add -m to run one job per value (locomo train -m seed=0,1)"),
    row("sweep-bad-value", "train -m seed=0,1 algo.lr=-1 train.iterations=1", 2, "algo.lr=-1.0 is invalid: must be > 0 (sweep job #0 of 2: seed=0 algo.lr=-1 train.iterations=1; no job was started)"),
    row("sweep-bad-option", "train -m algo=walk,wakl", 2, "algo='wakl' is invalid: not one of the algo options; choose one of walk, "),
    row("sweep-refused-job-unseen", "train -m 'env=glob(inverted*)' algo.lr=-1", 2, "algo.lr=-1.0 is invalid: must be > 0"),
    row("variance-refused-leaves-nothing", "variance algo.lr=-1", 2, "algo.lr=-1.0 is invalid: must be > 0"),
    row("bench-out-system-refuses", "bench quick=true bench.out=/proc/x/y.json", 2, "bench.out='/proc/x/y.json' is invalid: cannot write there ("),
    # -- unusable run dir
    row("run-dir-unwritable", f"train {FAST} hydra.run.dir={{files}}/a_file/run", 2, "a_file/run' is invalid: cannot create the run directory (Not a directory)", category="io"),
    row("command-unknown", "dance", 2, "unknown command 'dance'", subprocess=True),
    row("command-missing", "", 2, "usage: locomo <command>", subprocess=True),
    # -- resume and checkpoints, exit 2
    row("resume-missing", "train resume={files}/no_such_run", 2, "no such run directory or checkpoint file", category="checkpoint"),
    row("init-from-missing", f"train {PENDULUM} train.init_from={{files}}/no_such_run", 2, "train.init_from=", category="checkpoint"),
    row("init-from-other-env", f"train {FAST} train.init_from={{run}}", 2, "it does not fit this run's networks (checkpoint was trained on env 'inverted_pendulum'", category="checkpoint"),
    row("init-from-walker-other-nets", "train env=humanoid logger.wandb.mode=disabled logger.progress=false train.num_envs=2 train.steps_per_iteration=32 model.hidden_sizes=[256,128,64] train.init_from=walker", 2, "its networks were built with model.hidden_sizes=[512,256,128]: add that to this run", category="checkpoint"),
    row("resume-empty-dir", "train resume={files}/empty_dir", 2, "no checkpoint in directory", category="checkpoint"),
    row("resume-not-checkpoint", "train resume={files}/text.pt", 2, "the file is truncated or not a checkpoint", category="checkpoint"),
    row("resume-truncated", "train resume={files}/truncated.pt", 2, "the file is truncated or not a checkpoint", category="checkpoint"),
    row("resume-malicious-zip", "train resume={files}/evil.pt", 2, "refusing to load", category="checkpoint"),
    row("resume-malicious-pickle", "train resume={files}/evil.pkl", 2, "refusing to load", category="checkpoint"),
    row("resume-foreign-torch-file", "train resume={files}/state_dict.pt", 2, "state_dict.pt is not a locomo checkpoint", category="checkpoint"),
    row("resume-diagnostic-snapshot", "train resume={files}/nonfinite_iter_000003.pt", 2, "is a nonfinite-diagnostic snapshot, not a training checkpoint", category="checkpoint"),
    row("resume-newer-format", "train resume={files}/newer.pt", 2, "has checkpoint format version 99; this locomo reads versions up to 1", category="checkpoint"),
    row("resume-obs-size-mismatch", "train resume={files}/other_env_run train.iterations=3", 2, "with observation size 11 and 1 continuous actions, but env 'inverted_pendulum' has observation size 4", category="checkpoint"),
    row("resume-override-refused", "train resume={run} env=cartpole", 2, "env='cartpole' is invalid: cannot be changed when resuming", category="checkpoint"),
    row("resume-key-override-refused", "train resume={run} algo.lr=0.1", 2, "algo.lr='0.1' is invalid: cannot be changed when resuming", category="checkpoint"),
    row("resume-multirun", "train -m resume={run}", 2, "cannot be combined with -m/--multirun", category="checkpoint"),
    row("resume-finished-run", "train resume={run}", 2, "train.iterations=2 is invalid: the run is already at iteration 2", category="checkpoint"),
    row("resume-run-in-use", "train resume={locked_run} train.iterations=3", 2, "is in use by locomo process", category="checkpoint"),
    row("resume-older-than-newest", "train resume={run}/checkpoints/iter_000001.pt train.iterations=5", 2, "iter_000001.pt is older than the run's newest checkpoint iter_000002.pt", category="checkpoint"),
    # -- render / eval / replay / bench / variance / plot: same one-line errors, exit 2
    row("eval-checkpoint-missing", "eval checkpoint={files}/no_such_run", 2, "does not exist", category="checkpoint"),
    row("eval-episodes-zero", "eval checkpoint={run} episodes=0", 2, "episodes=0 is invalid: must be > 0"),
    row("eval-mode-choice", "eval checkpoint={run} mode=sometimes", 2, "mode='sometimes' is invalid: allowed values are both, deterministic, stochastic"),
    row("render-checkpoint-unset", "render", 2, "checkpoint=None is invalid: give the checkpoint to load"),
    row("render-malicious-checkpoint", "render checkpoint={files}/evil.pt", 2, "refusing to load", category="checkpoint"),
    row("render-width-zero", "render checkpoint={run} width=0", 2, "width=0 is invalid: must be > 0"),
    row("render-not-mujoco", "render checkpoint={cartpole_run}", 2, "CartPole-v1 is not a MuJoCo env: no video", category="checkpoint"),
    row("render-gl-invalid", "render checkpoint={run}", 2, "MUJOCO_GL (environment variable)='bogus' is invalid: allowed values are egl, osmesa", subprocess=True, env={"MUJOCO_GL": "bogus"}),
    row("replay-window-headless", "replay checkpoint={run} viewer=window", 2, "viewer='window' is invalid: no display", env={"DISPLAY": ""}),
    row("bench-repeats-zero", "bench bench.repeats=0", 2, "bench.repeats=0 is invalid: must be > 0"),
    row("bench-default-iterations-one", "bench bench.default_iterations=1", 2, "bench.default_iterations=1 is invalid: must be >= 2 (the first is a warm-up)"),
    row("variance-estimator-unknown", "variance estimators=[total/value]", 2, "estimators='total/value' is invalid: each must be one of total/none"),
    row("plot-runs-missing", "plot runs={files}/no_such_dir", 2, "is invalid: must be a folder holding runs"),
    row("plot-kind-choice", "plot runs={files} kind=pie", 2, "kind='pie' is invalid: allowed values are curves, behavior"),
    row("plot-window-zero", "plot runs={files} kind=behavior window=0", 2, "window=0 is invalid: must be > 0"),
    row("render-iterations-missing", "render checkpoint={run} iterations=[99]", 2, "iterations=[99] is invalid: no ", category="checkpoint"),
    row("render-iterations-empty", "render checkpoint={run} iterations=[]", 2, "iterations=[] is invalid: must be a non-empty list of iterations >= 1"),
    row("export-checkpoint-unset", "export", 2, "checkpoint=None is invalid: give the checkpoint to load"),
    row("export-out-not-pt", "export checkpoint={run} out=x.txt", 2, "out='x.txt' is invalid: must be a .pt file"),
    # -- at run time
    row("disk-full", f"train {FAST} train.iterations=2", 2, "iter_000002.pt: File too large; no checkpoint had been written yet", category="runtime", subprocess=True, fsize_limit=16_000),
    row("nonfinite-rewards", f"train {FAST} env=hopper +env.kwargs.forward_reward_weight=inf", 3, "non-finite rewards at iteration 1", category="runtime"),
    row("nonfinite-observations", f"train {FAST} env=ant +env.kwargs.contact_force_range=[nan,nan]", 3, "non-finite observations at iteration 1", category="runtime"),
    row("wandb-not-logged-in", f"train {FAST} train.iterations=1 logger.wandb.mode=online", 0, "W&B online failed (UsageError: No API key configured", category="runtime", subprocess=True),
    row("wandb-unreachable", f"train {FAST} train.iterations=1 logger.wandb.mode=online logger.wandb.init_timeout=2", 0, "W&B online failed (CommError", category="runtime", subprocess=True, env={"WANDB_API_KEY": "0" * 40, "WANDB_BASE_URL": "http://127.0.0.1:9"}),
    # -- issue 12: runs mixed or lost
    row("fresh-run-in-used-dir", f"train {FAST} train.iterations=1 hydra.run.dir={{run}}", 2, "already holds a run (metrics up to iteration 2, checkpoint iter_000002.pt); continue it with: locomo train resume=", category="checkpoint"),
    row("fresh-run-after-kill", f"train {FAST} train.iterations=1 hydra.run.dir={{files}}/killed_run", 2, "already holds a run (metrics up to iteration 1, no checkpoint); start this run in another directory (hydra.run.dir=...); or replace the old run with overwrite=true", category="checkpoint"),
    row("concurrent-start-refused", f"train {FAST} train.iterations=1 hydra.run.dir={{locked_run}}", 2, "is in use by locomo process", category="checkpoint"),
    row("resume-damaged-newest", "train resume={files}/damaged_run train.iterations=3", 0, "iter_000002.pt: the file is truncated or not a checkpoint; using ", category="runtime"),
    row("eval-damaged-last", "eval checkpoint={files}/damaged_last_run episodes=1 mode=deterministic", 0, "last.pt: the file is truncated or not a checkpoint; using ", category="runtime"),
    row("gl-glfw-no-display", f"train {PENDULUM} train.iterations=1 video.episodes=1 video.max_steps=4", 0, "videos off for this run: offscreen rendering failed with MUJOCO_GL=glfw", category="runtime", subprocess=True, env={"MUJOCO_GL": "glfw", "DISPLAY": ""}),
    row("gl-osmesa-missing", f"train {PENDULUM} train.iterations=1 video.enabled=false", 0, "MUJOCO_GL=osmesa does not work here", category="runtime", subprocess=True, env={"MUJOCO_GL": "osmesa", "PYOPENGL_PLATFORM": None}, skip_if_library="OSMesa"),
    row("metrics-file-is-directory", f"train {FAST} train.iterations=1 hydra.run.dir={{files}}/metrics_dir_run", 2, "cannot write metrics to", category="runtime"),
    row("disk-full-metrics", f"train {FAST} train.iterations=1 hydra.run.dir={{files}}/full_disk_run", 2, "cannot write metrics to", category="runtime"),
    # -- issue 12: tracebacks and silent acceptance
    row("memory-num-envs", "train env=inverted_pendulum train.num_envs=100000 train.steps_per_iteration=100000", 2, "train.num_envs=100000 is invalid: this config needs about"),
    row("memory-steps", "train env=inverted_pendulum train.steps_per_iteration=1000000000000 train.num_envs=4", 2, "train.steps_per_iteration=1000000000000 is invalid: this config needs about"),
    row("seed-too-large", "train env=cartpole seed=4294967296", 2, "seed=4294967296 is invalid: must be in [0, 4294967295]"),
    row("eval-seed-too-large", "eval checkpoint={run} seed=4294967296", 2, "seed=4294967296 is invalid: must be in [0, 4294967295]"),
    row("plot-runs-unset", "plot", 2, "runs=None is invalid: give the folder holding the runs"),
    row("plot-metric-unknown", "plot runs={run} metric=bogus", 2, "metric='bogus' is invalid: no run under"),
    row("variance-checkpoint-other-env", "variance checkpoint={cartpole_run} env=inverted_pendulum batches=2 train.num_envs=2 train.steps_per_iteration=32", 2, "checkpoint was trained on env 'cartpole'", category="checkpoint"),
    row("xml-no-actuators", "train env=inverted_pendulum env.xml_file={files}/no_actuators.xml", 2, "is invalid: the model has no actuators"),
    row("xml-other-task", "train env=inverted_pendulum env.xml_file=humanoid.xml", 2, "env.xml_file='humanoid.xml' is invalid: does not fit InvertedPendulum-v5"),
    row("key-added-unknown", "train +train.foo=1", 2, "train.foo=1 is invalid: not a config key; the keys of train are"),
    row("reward-term-unknown-own", "train env=inverted_pendulum +env.reward_scales.bogus=1", 2, "unknown reward term; terms are env (the env's own reward)"),
    row("minibatches-not-dividing", f"train {FAST} train.iterations=1 algo.minibatches=3", 0, "warning: algo.minibatches=3 does not divide the batch", category="runtime"),
    row("clip-ratio-one-step", f"train {FAST} train.iterations=1 algo=baseline algo.clip_ratio=0.2", 0, "warning: algo.clip_ratio=0.2 has no effect with algo.epochs=1", category="runtime"),
    row("metrics-file-parent", "train logger.metrics_file=../x", 2, "logger.metrics_file='../x' is invalid: must be a file name inside the run directory"),
    row("metrics-file-absolute", "train logger.metrics_file=/tmp/x.jsonl", 2, "must be a file name inside the run directory"),
    row("render-episodes-bound", "render checkpoint={run} episodes=100000", 2, "episodes=100000 is invalid: must be at most 100"),
    row("xml-file-not-mujoco", "train env=cartpole env.xml_file=humanoid.xml", 2, "CartPole-v1 takes no model file (not a MuJoCo env)"),
    row("resume-malicious-pickle-protocol4", "train resume={files}/evil4.pkl", 2, "refusing to load", category="checkpoint"),
    row("run-dir-default-unwritable", f"train {FAST}", 2, "cannot create or write the run directory under", category="io", cwd_file="outputs"),
    # -- invented (issue 12): memory, threads, names, nesting, files that are not files, every command's keys
    row("memory-hidden-sizes", "train env=inverted_pendulum model.hidden_sizes=[100000,100000,100000]", 2, "model.hidden_sizes=[100000, 100000, 100000] is invalid: this config needs about"),
    row("memory-critic-hidden-sizes", "train env=inverted_pendulum model.critic_hidden_sizes=[100000,100000,100000]", 2, "model.critic_hidden_sizes=[100000, 100000, 100000] is invalid: this config needs about"),
    row("memory-reuse-batches", "train env=humanoid algo.reuse_batches=100000", 2, "algo.reuse_batches=100000 is invalid: this config needs about"),
    row("memory-optimal-chunk", "train env=inverted_pendulum algo=baseline algo.baseline=optimal algo.optimal_baseline_chunk=1000000000 train.steps_per_iteration=1000000 train.num_envs=2 model.hidden_sizes=[2000,2000]", 2, "algo.optimal_baseline_chunk=1000000000 is invalid: this config needs about"),
    row("memory-video-episodes", "train env=inverted_pendulum video.episodes=1000000", 2, "video.episodes=1000000 is invalid: this config needs about"),
    row("init-log-std-nan", "train model.init_log_std=nan", 2, "model.init_log_std=nan is invalid: must be a finite number"),
    row("torch-threads-huge", "train train.torch_threads=100000", 2, "train.torch_threads=100000 is invalid: must be at most 1024"),
    row("env-threads-huge", "train env.threads=100000", 2, "env.threads=100000 is invalid: must be at most 1024"),
    row("metrics-file-reserved", "train logger.metrics_file=checkpoints/m.jsonl", 2, "checkpoints is a name locomo uses itself in a run dir"),
    row("metrics-file-empty", "train logger.metrics_file=''", 2, "must be a file name inside the run directory"),
    row("run-dir-nested", f"train {FAST} hydra.run.dir={{files}}/parent_run/checkpoints/x", 2, "is inside the run directory", category="checkpoint"),
    row("lock-file-is-directory", f"train {FAST} hydra.run.dir={{files}}/lock_dir_run", 2, "cannot lock run directory", category="checkpoint"),
    row("sweep-dir-unwritable", f"train -m {FAST} seed=0,1 hydra.sweep.dir={{files}}/a_file/sweep", 2, "hydra.sweep.dir=", category="io"),
    row("resume-with-overwrite", "train resume={run} overwrite=true", 2, "overwrite='true' is invalid: cannot be changed when resuming", category="checkpoint"),
    row("checkpoint-not-regular-file", "eval checkpoint=/dev/zero", 2, "checkpoint /dev/zero is not a regular file or a directory", category="checkpoint"),
    row("eval-output-unwritable", "eval checkpoint={run} episodes=1 mode=deterministic output={files}/a_file/x.json", 2, "x.json' is invalid: cannot write there", category="runtime"),
    row("plot-out-unwritable", "plot runs={run} out={files}/a_file/x.png", 2, "x.png' is invalid: cannot write there ("),
    row("eval-key-unknown", "eval checkpoint={run} +foo=1", 2, "foo=1 is invalid: not a config key"),
    row("render-key-unknown", "render checkpoint={run} +bar=1", 2, "bar=1 is invalid: not a config key"),
    row("replay-seed-too-large", "replay checkpoint={run} seed=99999999999", 2, "seed=99999999999 is invalid: must be in [0, 4294967295]"),
    row("plot-key-unknown", "plot runs={run} +x=1", 2, "x=1 is invalid: not a config key"),
    row("variance-key-unknown", "variance +train.bar=2", 2, "train.bar=2 is invalid: not a config key"),
    row("bench-seed-too-large", "bench seed=4294967296", 2, "seed=4294967296 is invalid: must be in [0, 4294967295]"),
    row("resume-malicious-pickle-protocol0", "train resume={files}/evil0.pkl", 2, "refusing to load", category="checkpoint"),
    row("eval-malicious-pickle-protocol5", "eval checkpoint={files}/evil5.pkl", 2, "refusing to load", category="checkpoint"),
    row("plot-damaged-records", "plot runs={files}/damaged_runs", 0, "warning: skipped 1 of 3 metrics row(s): 1 unreadable", category="runtime"),
    row("gl-disable-videos", f"train {PENDULUM} train.iterations=1 video.episodes=1 video.max_steps=4", 0, "videos off for this run: rendering is off (MUJOCO_GL=disable)", category="runtime", subprocess=True, env={"MUJOCO_GL": "disable"}),
    row("resume-dev-null", "train resume=/dev/null", 2, "checkpoint /dev/null is not a regular file or a directory", category="checkpoint"),
    row("xml-is-directory", "train env=hopper env.xml_file={files}", 2, "is invalid: no such file"),
    row("metrics-file-dot", "train logger.metrics_file=.", 2, "must be a file name inside the run directory"),
    row("eval-checkpoint-empty-dir", "eval checkpoint={files}/empty_dir", 2, "no checkpoint in directory", category="checkpoint"),
    row("overwrite-not-bool", "train overwrite=maybe", 2, "overwrite='maybe' is invalid: must be true or false; e.g. overwrite=false"),
    row("plot-runs-is-file", "plot runs={files}/text.pt", 2, "is invalid: must be a folder holding runs"),
    row("render-gl-disabled", "render checkpoint={run}", 2, "rendering is off (MUJOCO_GL=disable)", subprocess=True, env={"MUJOCO_GL": "disable"}),
    # -- issue 17: a checkpoint is validated like a config, by every loader (locomo.runs.checkpoint_format.validate)
    row("resume-renamed-copy", "train resume={files}/renamed_run train.iterations=4", 2, "iter_000099.pt holds iteration 2 but is named for iteration 99 (a copy or a rename?)", category="checkpoint"),
    row("eval-renamed-copy", "eval checkpoint={files}/renamed_run", 2, "iter_000099.pt holds iteration 2 but is named for iteration 99", category="checkpoint"),
    row("eval-stored-activation", "eval checkpoint={files}/activation.pt", 2, "activation.pt: its stored config is invalid: model.activation='sigmoid' is invalid: allowed values are tanh, relu, elu", category="checkpoint"),
    row("resume-stored-activation", "train resume={files}/activation.pt train.iterations=3", 2, "model.activation='sigmoid' is invalid", category="checkpoint"),
    row("eval-stored-config-string", "eval checkpoint={files}/config_string.pt", 2, "config_string.pt: its stored config is a str, not a mapping of config keys", category="checkpoint"),
    row("eval-stored-hidden-huge", "eval checkpoint={files}/hidden_huge.pt", 2, "its stored config is invalid: model.hidden_sizes=[100000, 100000, 100000] is invalid: its networks need about", category="checkpoint"),
    row("resume-stored-gamma", "train resume={files}/gamma.pt train.iterations=3", 2, "gamma.pt: its stored config is invalid: algo.gamma=5.0 is invalid: must be in (0, 1]; a checkpoint's config cannot be overridden (not even on resume)", category="checkpoint"),
    row("eval-nan-weights", "eval checkpoint={files}/nan_actor.pt", 2, "nan_actor.pt: actor.mean_net.0.weight has non-finite values: 1 of ", category="checkpoint"),
    row("resume-nan-weights", "train resume={files}/nan_actor.pt train.iterations=3", 2, "actor.mean_net.0.weight has non-finite values", category="checkpoint"),
    row("eval-negative-variance", "eval checkpoint={files}/negative_var.pt", 2, "negative_var.pt: obs_normalizer.var has negative values (min -1): a variance cannot be negative", category="checkpoint"),
    row("eval-negative-iteration", "eval checkpoint={files}/negative_iteration.pt", 2, "negative_iteration.pt: counters.iteration=-5 is invalid: must be an integer >= 0", category="checkpoint"),
    row("resume-negative-iteration", "train resume={files}/negative_iteration.pt train.iterations=3", 2, "counters.iteration=-5 is invalid", category="checkpoint"),
    row("resume-fifo-in-run", "train resume={files}/fifo_run train.iterations=3", 0, "", category="runtime"),
    row("eval-fifo-in-run", "eval checkpoint={files}/fifo_run_no_last episodes=1 mode=deterministic", 0, "", category="runtime"),
    row("eval-symlink-loop", "eval checkpoint={files}/loop_a", 2, "loop_a is a symbolic link loop (its links never reach a file)", category="checkpoint"),
    row("resume-symlink-loop", "train resume={files}/loop_a", 2, "loop_a' is a symbolic link loop", category="checkpoint"),
    # -- issue 17: an output never destroys what it does not own (locomo.runs.outputs.safe_output); one run stays one run
    row("export-over-training-checkpoint", "export checkpoint={run} out={run}/checkpoints/iter_000002.pt", 2, "iter_000002.pt' is invalid: it is inside the checkpoints/ folder of the training run", category="checkpoint"),
    row("export-over-shipped-walker", "export checkpoint=walker out={files}/assets/walker.pt", 2, "walker.pt, a file shipped with locomo; write elsewhere, or add overwrite=true to replace it"),
    row("export-over-shipped-other-kind", "export checkpoint=walker format=torchscript out={files}/assets/walker.pt overwrite=true", 2, "(it is not a TorchScript file, so overwrite=true does not replace it)"),
    row("export-over-its-source", "export checkpoint={files}/policy_only.pt out={files}/policy_only.pt", 2, "policy_only.pt' is invalid: it is the checkpoint being exported"),
    row("eval-output-metrics", "eval checkpoint={run} output={run}/metrics.jsonl", 2, "metrics.jsonl' is invalid: must be a .json file (a JSON report)"),
    row("eval-output-checkpoint", "eval checkpoint={run} output={run}/checkpoints/last.pt", 2, "last.pt' is invalid: must be a .json file"),
    row("eval-output-in-checkpoints", "eval checkpoint={run} output={run}/checkpoints/e.json", 2, "e.json' is invalid: it is inside the checkpoints/ folder of the training run"),
    row("eval-output-directory", "eval checkpoint={run} output={files}", 2, "is invalid: it is a directory; give a file path in it, e.g. output="),
    row("eval-output-empty", "eval checkpoint={run} output=''", 2, "output='' is invalid: it is empty; give a .json file, or leave output out"),
    row("replay-output-checkpoint", "replay checkpoint={run} viewer=video output={files}/v.pt", 2, "v.pt' is invalid: must be a .mp4 file (an H.264 video)"),
    row("replay-output-no-suffix", "replay checkpoint={run} viewer=video output={files}/vid", 2, "vid' is invalid: must be a .mp4 file"),
    row("render-output-dir-checkpoints", "render checkpoint={run} output_dir={run}/checkpoints", 2, "it is inside the checkpoints/ folder of the training run"),
    row("plot-out-metrics", "plot runs={run} out={run}/metrics.jsonl", 2, "metrics.jsonl' is invalid: must be a .png file (a PNG image)"),
    row("plot-out-directory", "plot runs={run} out={files}", 2, "is invalid: it is a directory; give a file path in it, e.g. out="),
    row("bench-out-under-file", "bench quick=true bench.out={files}/a_file/b.json", 2, "bench.out='", category="io"),
    row("variance-into-training-run", "variance overwrite=true batches=2 hydra.run.dir={run}", 2, "it holds a training run, which locomo variance never writes into (not even with overwrite=true)"),
    row("overwrite-foreign-files", f"train {FAST} train.iterations=1 overwrite=true hydra.run.dir={{files}}/user_dir", 2, "holds config.yaml that no locomo run wrote, and a new run would replace it", category="checkpoint"),
    row("overwrite-no-run", f"train {FAST} train.iterations=1 overwrite=true hydra.run.dir={{files}}/user_videos", 2, "holds no locomo run to replace, only other files (videos)", category="checkpoint"),
    row("resume-empty", "train resume=''", 2, "resume='' is invalid: it is empty, not a run"),
    row("run-dir-empty", "train hydra.run.dir=''", 2, "hydra.run.dir='' is invalid: it is empty, which would be the working directory"),
    row("run-dir-contains-run", f"train {FAST} train.iterations=1 hydra.run.dir={{files}}/runs_holder", 2, "runs_holder contains the run directory", category="checkpoint"),
    # -- "Nothing lost to a typo", part 5: every command's counts, displays, GL, estimators, metrics, big models
    row("eval-episodes-bound", "eval checkpoint={run} episodes=1000000", 2, "episodes=1000000 is invalid: must be at most 10000 (each episode is a row of the JSON report)"),
    row("export-episodes-bound", "export checkpoint={run} episodes=1000000", 2, "episodes=1000000 is invalid: must be at most 10000"),
    row("replay-window-unreachable-display", "replay checkpoint={run} viewer=window", 2, "viewer='window' is invalid: no usable display (DISPLAY=':987': ", env={"DISPLAY": ":987", "WAYLAND_DISPLAY": None}),
    row("replay-auto-unreachable-display", "replay checkpoint={run} viewer=auto max_steps=5 width=64 height=48 output={files}/auto_replay.mp4", 0, "no usable display (DISPLAY=':987': ", category="runtime", env={"DISPLAY": ":987", "WAYLAND_DISPLAY": None}),
    row("render-pyopengl-platform-mismatch", "render checkpoint={run}", 2, "PYOPENGL_PLATFORM='osmesa' (environment variable) does not match MUJOCO_GL=egl", subprocess=True, env={"MUJOCO_GL": "egl", "PYOPENGL_PLATFORM": "osmesa"}),
    row("variance-estimators-empty", "variance estimators=[]", 2, "estimators=[] is invalid: must be a non-empty list of: total/none"),
    row("variance-estimators-repeated", "variance estimators=[total/none,total/none]", 2, "lists total/none more than once"),
    row("variance-shipped-walker", "variance checkpoint=walker batches=2 train.num_envs=2 train.steps_per_iteration=32", 0, "checkpoint=walker: measuring with its own model settings (model.hidden_sizes=[512, 256, 128]", category="runtime"),
    row("render-iterations-shipped-walker", "render checkpoint=walker iterations=[1]", 2, "iterations=[1] is invalid: it needs checkpoint= to be a training run directory"),
    row("render-nothing-to-write", "render checkpoint={run} grid=false per_episode=false sheet=false", 2, "grid, per_episode and sheet are all false, so nothing would be written"),
    row("plot-garbage-metrics", "plot runs={files}/garbage_runs", 2, "nothing to plot: skipped 8 of 8 metrics row(s): 4 unreadable"),
    row("plot-mixed-metrics", "plot runs={files}/mixed_runs", 0, "warning: skipped 4 of 6 metrics row(s): 2 unreadable", category="runtime"),
    row("plot-no-log-in-cwd", "plot runs={run} out={files}/run_curves.png", 0, "", category="runtime"),
    row("xml-arena-too-small", "train env=inverted_pendulum env.xml_file={files}/arena_overflow.xml", 2, '(increase <size memory="..."/>)'),
    # -- "Nothing lost to a typo", part 5: names and paths, quoting, resume advice, disk, doomed configs, checkpoints
    row("env-name-too-long", f"train env.name={'a' * 300}", 2, f"env.name='{'a' * 60}...(300 characters)...{'a' * 40}' is invalid: must be 1 to 100 letters, digits"),
    row("env-name-slash", "train env.name=my/walker", 2, "env.name='my/walker' is invalid: must be 1 to 100 letters, digits, '_', '-' or '.'"),
    row("run-dir-name-too-long", f"train {FAST} hydra.run.dir={{files}}/{'r' * 300}", 2, "is invalid: too long for a path: a file or folder name in it has 300 characters, and file systems allow 255", category="io"),
    row("sweep-dirname-too-long", f"train -m {FAST} train.iterations=1 video.enabled=false logger.wandb.group={'g' * 250} hydra.sweep.dir={{files}}/long_sweep", 0, "characters; file systems allow 255 per name): they are numbered instead (0, 1, ...)", category="runtime"),
    row("resume-path-too-long", f"train resume=/tmp/{'b' * 5000}", 2, f"...(5005 characters)...{'b' * 40}' is invalid: too long for a path: a file or folder name in it has 5000 characters", category="checkpoint"),
    row("eval-checkpoint-path-too-long", f"eval checkpoint={'c/' * 2500}", 2, "' is invalid: too long for a path: it has 5000 characters, and paths are limited to 4095", category="checkpoint"),
    row("checkpoint-path-with-equals", "eval checkpoint={files}/lr=0.1/run", 2, "lr=0.1/run' is invalid: Hydra cannot parse this override (mismatched input '=' expecting <EOF>); a value with '=' in it must be quoted for Hydra: 'checkpoint=\"", category="checkpoint"),
    row("checkpoint-path-with-equals-quoted", "eval 'checkpoint=\"{files}/lr=0.1/run\"' episodes=1 mode=deterministic", 0, "", category="runtime"),
    row("override-syntax-error", "train 'algo.lr=[1'", 2, "algo.lr='[1' is invalid: Hydra cannot parse this override (no viable alternative at input '[1'); quote a value"),
    row("resume-cuda-run-on-cpu", "train resume={files}/cuda_run train.iterations=3", 2, "train.device='cuda' is invalid: CUDA is not available on this machine; use auto or cpu (train.device=cpu)", category="checkpoint", skip_if_cuda=True),
    row("resume-cuda-run-device-cpu", "train resume={files}/cuda_run_cpu train.iterations=3 train.device=cpu", 0, "", category="runtime"),
    row("disk-full-hydra-record", f"train {FAST} train.iterations=2", 2, ".hydra/hydra.yaml (Hydra's record of the run): File too large; raise the file size limit (ulimit -f), then start again", category="io", subprocess=True, fsize_limit=2500),
    row("init-log-std-huge", "train model.init_log_std=1e6", 2, "model.init_log_std=1000000.0 is invalid: must be in [-5, 5]"),
    row("batch-of-one-step", "train env=inverted_pendulum train.num_envs=1 train.steps_per_iteration=1 algo.minibatches=1", 2, "train.steps_per_iteration=1 is invalid: algo.normalize_advantages=true standardises the advantages over the batch, which needs at least 2 steps"),
    row("one-step-per-env", f"train {PENDULUM} train.iterations=1 train.steps_per_iteration=2 algo.minibatches=1 video.enabled=false", 0, "", category="runtime"),
    row("metrics-file-hydra-log", "train logger.metrics_file=train.log", 2, "logger.metrics_file='train.log' is invalid: train.log is a name locomo uses itself in a run dir"),
    row("metrics-file-render-dir", "train logger.metrics_file=render/m.jsonl", 2, "render is a name locomo uses itself in a run dir"),
    row("resume-total-steps-reached", "train resume={run} train.total_steps=64", 2, "train.total_steps=64 is invalid: the run is already at iteration 2, and train.total_steps=N trains ceil(N / 32) iterations; pass train.total_steps=N with N > 64", category="checkpoint"),
    row("resume-bad-newest-names-intact", "train resume={files}/bad_critic_run train.iterations=3", 2, "iter_000002.pt: its weights do not fit the config saved with them (critic: missing net.0.weight); the file is damaged or was edited; use another checkpoint of the run (checkpoints/iter_*.pt); the checkpoint to use instead is iter_000001.pt (iteration 1), which is intact: move iter_000002.pt out of", category="checkpoint"),
    row("eval-actor-shape", "eval checkpoint={files}/actor_shape.pt", 2, "actor_shape.pt: its weights do not fit the config saved with them (actor: mean_net.0.weight has shape [3, 3], the config's network [", category="checkpoint"),
    row("resume-no-critic", "train resume={files}/no_critic.pt train.iterations=3", 2, "no_critic.pt holds no critic (value network), but its config trains one (algo.baseline=value): it cannot be resumed (only evaluated)", category="checkpoint"),
]  # fmt: skip


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """A finished 2-iteration run plus one file or directory per bad checkpoint input."""
    root = tmp_path_factory.mktemp("catalogue")
    run, files = root / "run", root / "files"
    finished_pendulum_run(run)
    files.mkdir()
    good = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    (files / "empty_dir").mkdir()
    (files / "a_file").write_text("a file where a directory should be\n")
    (files / "not_mjcf.xml").write_text("this is not MJCF\n")
    (files / "text.pt").write_text("hello\n")
    raw = (run / "checkpoints" / "last.pt").read_bytes()
    (files / "truncated.pt").write_bytes(raw[: len(raw) // 2])
    torch.save(
        {"format": "locomo-checkpoint", "version": 1, "actor": Evil(root / "MARKER")}, files / "evil.pt"
    )
    torch.save(Evil(root / "MARKER"), files / "evil.pkl", _use_new_zipfile_serialization=False)
    torch.save({"weight": torch.zeros(3)}, files / "state_dict.pt")
    torch.save({**good, "kind": "nonfinite-diagnostic"}, files / "nonfinite_iter_000003.pt")
    torch.save({**good, "version": 99}, files / "newer.pt")
    other = files / "other_env_run" / "checkpoints"
    other.mkdir(parents=True)
    wide = copy.deepcopy(good)  # a run of an env with 11 observations: its networks' inputs too
    wide["spaces"] = {"obs_dim": 11, "action_dim": 1, "discrete": False}
    for part, first in (("actor", "mean_net.0.weight"), ("critic", "net.0.weight")):
        wide[part][first] = torch.zeros(wide[part][first].shape[0], 11)
    torch.save(wide, other / "iter_000002.pt")
    locked = root / "locked_run"  # a run another process is training in (it holds the run's lock)
    shutil.copytree(run, locked)
    cartpole_run = root / "cartpole_run"  # a checkpoint of an env that has nothing to film
    status, _, err = call_locomo(
        "train", *FAST.split(), "train.iterations=1", f"hydra.run.dir={cartpole_run}"
    )
    assert status == 0, err
    (files / "no_actuators.xml").write_text(
        '<mujoco><worldbody><body><joint type="slide" axis="1 0 0"/><geom size="0.1"/></body></worldbody></mujoco>\n'
    )
    write_plot_and_model_cases(run, files)
    for protocol in (0, 4, 5):
        (files / f"evil{protocol}.pkl").write_bytes(
            pickle.dumps({"actor": Evil(root / "MARKER")}, protocol=protocol)
        )
    killed = files / "killed_run"  # killed before its first checkpoint: metrics but no checkpoint
    killed.mkdir()
    (killed / "metrics.jsonl").write_text((run / "metrics.jsonl").read_text().splitlines()[0] + "\n")
    damaged = files / "damaged_run"  # newest checkpoint truncated, last.pt gone
    shutil.copytree(run, damaged)
    (damaged / "checkpoints" / "last.pt").unlink()
    newest = damaged / "checkpoints" / "iter_000002.pt"
    data = newest.read_bytes()
    newest.unlink()  # a hard link shared with last.pt in the copy's source is not touched
    newest.write_bytes(data[:1000])
    damaged_last = files / "damaged_last_run"
    shutil.copytree(run, damaged_last)
    (damaged_last / "checkpoints" / "last.pt").unlink()
    (damaged_last / "checkpoints" / "last.pt").write_bytes(data[:1000])
    (files / "metrics_dir_run" / "metrics.jsonl").mkdir(parents=True)
    (files / "full_disk_run").mkdir()
    (files / "full_disk_run" / "metrics.jsonl").symlink_to("/dev/full")  # every write: No space left
    (files / "parent_run" / "checkpoints").mkdir(parents=True)
    (files / "parent_run" / "config.yaml").write_text("seed: 0\n")
    (files / "lock_dir_run" / ".lock").mkdir(parents=True)
    bad_record = files / "damaged_runs" / "0"  # a run whose .hydra record and one metrics row are damaged
    (bad_record / ".hydra").mkdir(parents=True)
    (bad_record / ".hydra" / "overrides.yaml").write_text("- [unclosed\n")
    (bad_record / "metrics.jsonl").write_bytes((run / "metrics.jsonl").read_bytes() + b"\xff\xfe not utf-8\n")
    write_bad_checkpoints(run, files, good)
    write_typo_part5_cases(run, files, good)
    write_output_cases(run, files, good)
    with RunDirLock(locked):
        yield {
            "run": run,
            "files": files,
            "marker": root / "MARKER",
            "locked_run": locked,
            "cartpole_run": cartpole_run,
        }


def write_bad_checkpoints(run: Path, files: Path, good: dict) -> None:
    """Issue 17: checkpoints that read but hold bad contents, and run dirs with odd files."""

    def edited(name: str, **changes: object) -> None:
        torch.save({**copy.deepcopy(good), **changes}, files / name)

    def config(section: str, key: str, value: object) -> dict:
        cfg = copy.deepcopy(good["config"])
        cfg[section][key] = value
        return cfg

    edited("activation.pt", config=config("model", "activation", "sigmoid"))
    edited("config_string.pt", config="humanoid")
    edited("hidden_huge.pt", config=config("model", "hidden_sizes", [100000, 100000, 100000]))
    edited("gamma.pt", config=config("algo", "gamma", 5))
    actor = copy.deepcopy(good["actor"])
    actor["mean_net.0.weight"][0, 0] = float("nan")
    edited("nan_actor.pt", actor=actor)
    normalizer = copy.deepcopy(good["obs_normalizer"])
    normalizer["var"].fill_(-1.0)
    edited("negative_var.pt", obs_normalizer=normalizer)
    edited("negative_iteration.pt", counters={"iteration": -5, "env_steps": 0})
    renamed = files / "renamed_run" / "checkpoints"  # iter_000002.pt copied to iter_000099.pt, last.pt gone
    shutil.copytree(run / "checkpoints", renamed)
    shutil.copy(renamed / "iter_000002.pt", renamed / "iter_000099.pt")
    (renamed / "last.pt").unlink()
    for name, keep_last in (("fifo_run", True), ("fifo_run_no_last", False)):
        shutil.copytree(run, files / name)  # and a FIFO named like a checkpoint in it
        os.mkfifo(files / name / "checkpoints" / "iter_000003.pt")
        if not keep_last:
            (files / name / "checkpoints" / "last.pt").unlink()
    (files / "loop_a").symlink_to("loop_b")
    (files / "loop_b").symlink_to("loop_a")


def write_plot_and_model_cases(run: Path, files: Path) -> None:
    """Issue "Nothing lost to a typo", part 5: metrics files of garbage, a model whose arena is too small."""
    garbage = b'not json\n{"env_steps": NaN, "rollout/return_mean": 1}\n{"env_steps": 10, "rollout/return_mean": Infinity}\n\xff\xfe\n'
    for name in ("a", "b"):  # nothing plottable in either run
        (files / "garbage_runs" / name).mkdir(parents=True)
        (files / "garbage_runs" / name / "metrics.jsonl").write_bytes(garbage)
    (files / "mixed_runs" / "bad").mkdir(parents=True)  # one good run, one of garbage
    (files / "mixed_runs" / "bad" / "metrics.jsonl").write_bytes(garbage)
    (files / "mixed_runs" / "good").mkdir()
    shutil.copy(run / "metrics.jsonl", files / "mixed_runs" / "good" / "metrics.jsonl")
    # 40 free spheres piled up at one spot: their contacts overflow a 64 KiB arena at the first
    # forward pass (as a 20,000-body model overflows MuJoCo's default one, after a long compile)
    spheres = '<body pos="0 0 1"><freejoint/><geom size="0.1"/></body>' * 40
    (files / "arena_overflow.xml").write_text(
        f'<mujoco><size memory="64K"/><worldbody><geom type="plane" size="5 5 .1"/><body pos="0 0 1">'
        f'<joint name="j0" type="hinge" axis="0 1 0"/><geom size="0.05"/></body>{spheres}</worldbody>'
        '<actuator><motor joint="j0"/></actuator></mujoco>\n'
    )


def write_typo_part5_cases(run: Path, files: Path, good: dict) -> None:
    """Issue "Nothing lost to a typo", part 5: a run under a folder with '=' in its name, runs
    trained with train.device=cuda, and checkpoints whose weights do not fit their config."""
    shutil.copytree(run, files / "lr=0.1" / "run")
    for name in ("cuda_run", "cuda_run_cpu"):  # one is refused on a CPU machine, one resumed with device=cpu
        shutil.copytree(run, files / name)
        for path in (files / name / "checkpoints").iterdir():
            state = torch.load(path, weights_only=True)
            state["config"]["train"]["device"] = "cuda"
            torch.save(state, path)
    # The newest checkpoint lost a layer of its critic; iter_000001.pt and last.pt are intact.
    bad_critic = files / "bad_critic_run"
    shutil.copytree(run, bad_critic)
    critic = {k: v for k, v in good["critic"].items() if k != "net.0.weight"}
    torch.save({**good, "critic": critic}, bad_critic / "checkpoints" / "iter_000002.pt")
    actor = {**good["actor"], "mean_net.0.weight": torch.zeros(3, 3)}  # another architecture's layer
    torch.save({**good, "actor": actor}, files / "actor_shape.pt")
    torch.save({**good, "critic": None}, files / "no_critic.pt")


def write_output_cases(run: Path, files: Path, good: dict) -> None:
    """Issue 17: the shipped assets through a link, a policy file, a user's own directories."""
    from locomo.paths import ASSETS_DIR
    from locomo.runs.checkpoint_format import POLICY_KEYS

    (files / "assets").symlink_to(ASSETS_DIR)  # as the checkout's top-level assets link
    torch.save({k: good[k] for k in POLICY_KEYS if k in good}, files / "policy_only.pt")
    user = files / "user_dir"  # a user's own files, no locomo run
    (user / "videos").mkdir(parents=True)
    (user / "eval").mkdir()
    (user / "config.yaml").write_text("holiday: true\n")
    (user / "videos" / "holiday.mp4").write_bytes(b"not really a video")
    (user / "eval" / "results.json").write_text("{}\n")
    (files / "user_videos" / "videos").mkdir(parents=True)
    (files / "user_videos" / "videos" / "holiday.mp4").write_bytes(b"not really a video")
    inner = files / "runs_holder" / "r"  # a run one level down
    (inner / "checkpoints").mkdir(parents=True)
    (inner / "config.yaml").write_text("seed: 0\n")


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CATALOGUE])
def test_bad_input(
    case: BadInput, bad_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    if case.skip_if_cuda and torch.cuda.is_available():
        pytest.skip("checks the no-CUDA error")
    if case.skip_if_library and ctypes.util.find_library(case.skip_if_library):
        pytest.skip(f"checks the error when {case.skip_if_library} is missing")
    if case.cwd_file:
        (tmp_path / case.cwd_file).write_text("a file where the run directories would go\n")
    places = {k: bad_files[k] for k in ("run", "files", "locked_run", "cartpole_run")}
    args = [a.format(**places) for a in shlex.split(case.command)]
    if case.subprocess:
        limit = case.fsize_limit

        def preexec() -> None:
            if limit is not None:
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        result = run_locomo(*args, cwd=tmp_path, env=case.env, preexec_fn=preexec)
        status, err = result.returncode, result.stderr
    else:
        monkeypatch.chdir(tmp_path)
        for key, value in case.env.items():
            if value is None:
                monkeypatch.delenv(key, raising=False)
            else:
                monkeypatch.setenv(key, value)
        status, _, err = call_locomo(*args)
    assert status == case.status, err
    assert case.message in err, err
    assert "Traceback" not in err
    # no command leaves a log in the working directory (Hydra's <command>.log, MuJoCo's log)
    litter = sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".log" or p.name == "MUJOCO_LOG.TXT")
    assert not litter, f"left in the working directory: {litter}"
    assert not bad_files["marker"].exists()  # no checkpoint ever ran code
    if case.category in ("config", "checkpoint"):
        assert not list(tmp_path.rglob("metrics.jsonl")), "a config error must stop before any simulation"
    if case.status == 2 and case.category in ("config", "checkpoint") and not case.cwd_file:
        # a refused start leaves nothing behind: no outputs/ or multirun/ folder, no .hydra/ record, no log
        left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
        assert not left, f"a refused start left {left}"
    if case.id == "disk-full":  # the error names the file; the checkpoint directory holds no torn file
        ckpts = list(tmp_path.glob("outputs/*/*/checkpoints"))
        assert ckpts and not list(ckpts[0].iterdir())


def test_catalogue_matches_the_docs():
    """docs/bad_inputs.md lists every catalogue row (by id) and nothing else."""
    doc = (REPO / "docs" / "bad_inputs.md").read_text()
    ids_in_doc = {
        line.split("|")[1].strip().strip("`") for line in doc.splitlines() if line.startswith("| `")
    }
    assert ids_in_doc == {c.id for c in CATALOGUE}
    assert len(CATALOGUE) >= 25
    assert len({c.id for c in CATALOGUE}) == len(CATALOGUE)


def test_run_fixture_untouched_by_refused_resumes(bad_files: dict[str, Path]):
    """Refused resumes leave the run as it was (two checkpoints, two metrics rows)."""
    run = bad_files["run"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "iter_000001.pt",
        "iter_000002.pt",
        "last.pt",
    ]
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
