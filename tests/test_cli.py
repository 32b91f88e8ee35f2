"""The CLI end to end: real MuJoCo, real files, W&B in offline mode."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY, metrics_rows


def run_dir_of(cwd: Path) -> Path:
    dirs = [p.parent for p in cwd.glob("outputs/*/*/config.yaml")]
    assert len(dirs) == 1, dirs
    return dirs[0]


@pytest.mark.slow
def test_train_humanoid_tiny_writes_config_metrics_checkpoint_and_wandb(locomo_cli):
    result = locomo_cli("train", *TINY, "logger.wandb.mode=offline")
    assert result.returncode == 0, result.stderr
    run = run_dir_of(locomo_cli.cwd)
    assert "Humanoid-v5" in (run / "config.yaml").read_text()
    rows = metrics_rows(run)
    # The default recipe overlaps: iteration 1 collects the batch it trains on and the next one.
    assert [r["env_steps"] for r in rows] == [128, 192]
    assert all("rollout/return_mean" in r and "is/ess" in r for r in rows)
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["counters"] == {"iteration": 2, "env_steps": 192}
    assert ckpt["config"]["env"]["name"] == "humanoid"
    offline = list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(offline) == 1 and offline[0].stat().st_size > 0


# Bad inputs (config values, Hydra errors, unknown command, checkpoints, ...) are the catalogue in
# tests/test_bad_inputs.py, one parametrized test per row of docs/bad_inputs.md.


def test_cfg_job_prints_config(locomo_cli):
    result = locomo_cli("train", "env=cartpole", "--cfg", "job")
    assert result.returncode == 0, result.stderr
    assert "CartPole-v1" in result.stdout


def test_overrides_are_checked_before_hydra_and_flags_are_not_overrides():
    """Issue "Nothing lost to a typo", part 5: Hydra's flags and their values pass; each value of
    a sweep is checked; an unparsable override says how to quote it."""
    from locomo.config.overrides import check_overrides
    from locomo.errors import ConfigError

    check_overrides(["--cfg", "job", "-cd", "conf=1", "-m", "seed=0,1", "env.name=my_walker-2.0"])
    check_overrides(['checkpoint="a=b/last.pt"', "resume='a=b'"])  # as the shell passes them quoted
    with pytest.raises(ConfigError, match=r"env.name='a/b' is invalid: must be 1 to 100 letters"):
        check_overrides(["-m", "env.name=ok,a/b"])
    with pytest.raises(ConfigError, match=r"""must be quoted for Hydra: 'checkpoint="a=b/last.pt"'"""):
        check_overrides(["checkpoint=a=b/last.pt"])
    with pytest.raises(ConfigError) as info:  # a value with a double quote: in single quotes for Hydra
        check_overrides(['out=x="y'])
    (advice,) = shlex.split(str(info.value).split("quoted for Hydra: ", 1)[1].split(" (the outer", 1)[0])
    assert advice == "out='x=\"y'"
    check_overrides([advice])


def test_hydras_command_line_is_built_from_the_launch_alone():
    """Issue 19: what locomo sets of Hydra's config (a resume's checkpoint and run dir, rank 0's run
    dir, the record the job writes itself) replaces the command line's keys, after its overrides
    (argparse wants them together), with values Hydra reads back whole."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from locomo.launch import Launch, Resume, quoted

    parser = OverridesParser.create()
    for value in ["a b/c=d,e", "it's", "back\\slash", "ends\\", "x\\'y"]:
        assert parser.parse_override(f"k={quoted(value)}").value() == value
    given = ("seed=1", "hydra.output_subdir=mine", "resume=run", "--cfg", "job")
    resume = Resume(Path("/r/checkpoints/iter_000002.pt"), {}, Path("/r"), in_place=True)
    launch = Launch(given, resume=resume, hydra_writes_record=False)
    assert launch.hydra_args() == [
        "seed=1", "resume='/r/checkpoints/iter_000002.pt'", "hydra.run.dir='/r'", "hydra.output_subdir=null",
        "--cfg", "job",
    ]  # fmt: skip
    assert launch.task_overrides() == ["seed=1", "resume='/r/checkpoints/iter_000002.pt'"]
    assert launch.given("hydra.output_subdir") == "mine" and launch.value("hydra.output_subdir") is None
    follower = Launch(("-m", "seed=1", "hydra.run.dir=x"), run_dir="/rank0 dir", follower=True)
    assert follower.hydra_args() == ["-m", "seed=1", "hydra.run.dir='/rank0 dir'", "hydra/job_logging=none"]
    assert Launch(("--help",)).hydra_args() == ["--help"]
