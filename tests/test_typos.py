"""Issue 17, "Nothing lost to a typo": the command line is composed once before Hydra's app runs
(:func:`locomo.config.composition.check_composition`), so that an unknown key or group option, or
a value of the wrong type, is one line and exit 2; a start refused later leaves nothing behind
(:func:`locomo.runs.hydra_job.removed_if_refused`).

The messages themselves are rows of the catalogue (``tests/test_bad_inputs.py``, which also checks
that every refused start leaves the working directory empty). Here: that what Hydra handles itself
keeps working (sweeps, ``+``/``++``/``~``, ``hydra.*``, quoting, flags), and the parts.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser

from locomo.cli_help import register_help_resolver
from locomo.commands import load as load_command
from locomo.config import composition, overrides
from locomo.config.schema import register_configs
from locomo.errors import ConfigError
from locomo.runs.hydra_job import remove_refused_start
from tests.conftest import ONE_PENDULUM_ITERATION
from tests.safety_helpers import call_locomo

TINY = ONE_PENDULUM_ITERATION


@pytest.fixture(autouse=True)
def schemas() -> None:
    register_configs()  # what main() does before the check
    register_help_resolver()


# -- what must keep working


def test_a_valid_sweep_runs_every_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    status, _, err = call_locomo("train", "-m", "seed=0,1", *TINY)
    assert status == 0, err
    runs = sorted(p.parent for p in tmp_path.glob("multirun/*/*/metrics.jsonl"))
    assert len(runs) == 2, err
    assert sorted(yaml.safe_load((run / "config.yaml").read_text())["seed"] for run in runs) == [0, 1]
    for run in runs:  # each job's record, written by the job itself
        assert (run / ".hydra" / "overrides.yaml").is_file()
    assert len(list(tmp_path.glob("multirun/*/multirun.yaml"))) == 1


def test_an_added_env_kwarg_quoting_and_hydra_overrides_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``+`` on an open field, ``++`` on a key that exists, a quoted value with a space, ``hydra.*``."""
    monkeypatch.chdir(tmp_path)
    args = ["+env.kwargs.frame_skip=3", "++train.checkpoint_every=1", "hydra.run.dir='my run'"]
    status, _, err = call_locomo("train", *TINY, *args)
    assert status == 0, err
    config = yaml.safe_load((tmp_path / "my run" / "config.yaml").read_text())
    assert config["env"]["kwargs"] == {"frame_skip": 3}
    assert config["train"]["checkpoint_every"] == 1


@pytest.mark.parametrize(
    "command, args",
    [
        ("train", ["hydra.run.dir=x", "hydra/job_logging=none", "hydra.sweep.dir=y", "hydra.verbose=true"]),
        ("train", ["+env.kwargs.frame_skip=3", "++train.iterations=3", "++train.new_key=1"]),
        ("train", ["~env.reward_scales.forward"]),  # a key of an open field can go
        ("train", ["--cfg", "job", "seed=1", "--resolve"]),
        ("train", ["env=cartpole", "algo=baseline", "model.hidden_sizes=[8,8]", "video.max_steps=null"]),
        ("train", ["resume=some/run", "train.iterations=600"]),  # the resume's own checks come next
        ("eval", ["checkpoint='a=b/last.pt'", "episodes=3"]),  # as the shell passes a quoted value
        ("train", ["-m", "seed=0,1", "algo.lr=1e-3,3e-4"]),
        ("train", ["--multirun", "seed=range(0,3)", "env=cartpole,inverted_pendulum"]),
        ("train", ["-m", "seed=choice(0,1)", "+env.kwargs.frame_skip=2,3"]),
        ("variance", ["-m", "batches=2,4", "env=cartpole"]),
        ("bench", ["-m", "quick=true", "seed=0,1"]),
    ],
)
def test_what_hydra_handles_itself_passes_the_check(command: str, args: list[str]):
    composition.check_composition(command, load_command(command).CONFIG, args)


@pytest.mark.parametrize(
    "args",
    [
        ["bogus=1", "--help"],  # --help composes nothing to run
        ["bogus=1", "--info"],
        ["bogus=1", "-cn", "other"],  # another config: Hydra's to check
        ["-m", "env=glob(*)", "bogus=1"],  # a glob only Hydra expands: its jobs check themselves
        ["-m", "algo.lr=interval(0,1)", "bogus=1"],
        ["-m", "hydra/sweeper=other", "seed=0,1", "bogus=1"],
        [],
    ],
)
def test_what_only_hydra_can_check_is_left_to_it(args: list[str]):
    composition.check_composition("train", "train", args)


def test_an_error_inside_a_sweep_names_the_job_and_that_none_started():
    with pytest.raises(ConfigError) as info:
        composition.check_composition("train", "train", ["-m", "seed=0,1", "algo.lr=3e-4,-1"])
    assert str(info.value) == (
        "algo.lr=-1.0 is invalid: must be > 0 (sweep job #1 of 4: seed=0 algo.lr=-1; no job was started)"
    )


def test_a_sweep_of_one_job_says_no_more_than_a_run():
    with pytest.raises(ConfigError) as info:
        composition.check_composition("train", "train", ["-m", "algo.lr=-1"])
    assert str(info.value) == "algo.lr=-1.0 is invalid: must be > 0"


def test_sweep_jobs_are_numbered_and_made_as_hydras_basic_sweeper_makes_them():
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    task = ["seed=0,1,2", "algo.lr=1e-3,3e-4", "env=cartpole", "+env.kwargs.frame_skip=2,3"]
    sweep = overrides.sweep_jobs(["hydra.run.dir=x", *task])
    assert sweep is not None
    hydra_args, jobs, total = sweep
    hydras = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(task), None)[0]
    assert hydra_args == ["hydra.run.dir=x"]
    assert total == len(hydras) == 12
    assert jobs == list(enumerate(hydras))


def test_a_large_sweep_checks_a_bounded_set_of_jobs_holding_every_value():
    _, jobs, total = overrides.sweep_jobs(["seed=range(0,200)", "train.num_envs=2,4,8"]) or ([], [], 0)
    assert total == 600
    assert len(jobs) == overrides.MAX_CHECKED_JOBS
    seen = {(a, b) for _, (a, b) in jobs}
    assert {b for _, b in seen} == {"train.num_envs=2", "train.num_envs=4", "train.num_envs=8"}
    _, jobs, total = overrides.sweep_jobs(["seed=range(0,20)", "train.num_envs=2,4,8"]) or ([], [], 0)
    assert len(jobs) == total == 60  # small enough: every job
    assert {tuple(job) for _, job in jobs} == {
        (f"seed={s}", f"train.num_envs={n}") for s, n in itertools.product(range(20), (2, 4, 8))
    }


def test_a_hydra_app_running_in_this_process_is_left_as_it_was(tmp_path: Path):
    """``locomo.cli.main`` called from inside another Hydra app (a script's): its Hydra stays."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from locomo.paths import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        outer = GlobalHydra.instance().hydra
        composition.check_composition("train", "train", ["seed=1"])
        with pytest.raises(ConfigError):
            composition.check_composition("train", "train", ["bogus=1"])
        assert GlobalHydra.instance().hydra is outer


def test_ctrl_c_while_composing_is_the_interrupt(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Not a composition error: one line, exit 130, nothing written."""
    from locomo.config import compose

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(compose, "compose", interrupted)  # Hydra's compose, as locomo calls it
    status, _, err = call_locomo("train", "seed=1")
    assert status == 130
    assert err.strip() == "locomo: interrupted while starting up; nothing was written"
    assert not list(tmp_path.iterdir())


# -- a refused start leaves nothing behind


def test_a_refused_sweep_job_takes_its_folder_and_a_lone_multirun_record_with_it(tmp_path: Path):
    sweep = tmp_path / "multirun" / "2025-01-01_00-00-00"
    job = sweep / "0_algo.lr=-1" / "a"  # a value with '/' nests the job's folder
    job.mkdir(parents=True)
    (job / "train.log").touch()
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    remove_refused_start(job, tmp_path, "train.log", sweep_dir=sweep)
    assert not list(tmp_path.iterdir())


def test_a_refused_sweep_job_keeps_the_sweep_of_jobs_that_ran(tmp_path: Path):
    sweep = tmp_path / "sweep"
    (sweep / "0_seed=0").mkdir(parents=True)
    (sweep / "0_seed=0" / "metrics.jsonl").write_text('{"iteration": 1}\n')
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    job = sweep / "1_seed=1"
    job.mkdir()
    (job / "train.log").touch()
    remove_refused_start(job, tmp_path, "train.log", sweep_dir=sweep)
    assert sorted(p.name for p in sweep.iterdir()) == ["0_seed=0", "multirun.yaml"]


def test_a_variance_run_writes_hydras_record_and_its_log_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The record and the log lines are held until the measurement is done (a start refused before
    leaves nothing: the catalogue's ``variance-refused-leaves-nothing``), then written as Hydra would."""
    monkeypatch.chdir(tmp_path)
    args = ["env=cartpole", "algo=baseline", "batches=2", "train.num_envs=2", "train.steps_per_iteration=32"]
    status, _, err = call_locomo("variance", *args, "hydra.run.dir=v")
    assert status == 0, err
    out = tmp_path / "v"
    assert yaml.safe_load((out / ".hydra" / "overrides.yaml").read_text()) == args
    assert yaml.safe_load((out / ".hydra" / "config.yaml").read_text())["batches"] == 2
    assert "hydra" in yaml.safe_load((out / ".hydra" / "hydra.yaml").read_text())
    assert "locomo: wrote" in (out / "variance.log").read_text()


def test_printing_the_config_creates_nothing_and_a_sweep_cannot_print(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """``--cfg job`` only prints (Hydra runs no job): not even a given run dir is created. With -m,
    Hydra would fail with its own ValueError: one line and exit 2 instead."""
    monkeypatch.chdir(tmp_path)
    status, out, err = call_locomo("train", "--cfg", "job", "hydra.run.dir=x", "seed=3")
    assert status == 0, err
    assert "seed: 3" in out
    status, _, err = call_locomo("train", "-m", "seed=0,1", "--cfg", "job")
    assert status == 2
    assert err.strip().splitlines() == [
        "locomo: error: --cfg='with -m' is invalid: Hydra prints the config of one run, not of a sweep; "
        "drop -m, or print one of its runs (e.g. seed=1 --cfg job)"
    ]
    assert list(tmp_path.iterdir()) == []
