"""Issue 17, part 2: a checkpoint is validated like a config, by every loader.

The one check (:func:`locomo.runs.checkpoint_format.validate`) on what a file holds, and the one scan of a
checkpoint directory (:func:`locomo.runs.checkpoint.periodic_files`, regular files only). The CLI
cases are rows of the catalogue (tests/test_bad_inputs.py, docs/bad_inputs.md); here are the
ones that need more than one command (a renamed copy resumed twice) and the pure parts.
"""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from locomo.paths import ASSETS_DIR
from locomo.runs.checkpoint import CheckpointError, load, load_latest, missing_reason, periodic_files
from locomo.runs.checkpoint_format import KIND_DIAGNOSTIC, require_resumable, validate
from tests.conftest import ONE_PENDULUM_ITERATION, metrics_rows, run_locomo
from tests.safety_helpers import call_locomo, finished_pendulum_run


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-iteration pendulum run (checkpoints of iterations 1 and 2, and last.pt)."""
    path = tmp_path_factory.mktemp("validation") / "run"
    finished_pendulum_run(path)
    return path


@pytest.fixture(scope="module")
def good(run: Path) -> dict[str, Any]:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)


def edited(good: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A deep copy of ``good`` with top-level keys replaced."""
    return {**copy.deepcopy(good), **changes}


def test_a_renamed_copy_is_refused_at_every_resume_and_nothing_is_overwritten(run: Path, tmp_path: Path):
    """iter_000002.pt copied to iter_000099.pt, last.pt deleted: resuming used to restart at 2 and
    overwrite 3 and 4 at every resume (and prune the real checkpoints by name)."""
    copied = tmp_path / "r"
    shutil.copytree(run, copied)
    ckpts = copied / "checkpoints"
    shutil.copy(ckpts / "iter_000002.pt", ckpts / "iter_000099.pt")
    (ckpts / "last.pt").unlink()
    before = sorted(p.name for p in ckpts.iterdir())
    for _ in range(2):
        status, _, err = call_locomo("train", f"resume={copied}", "train.iterations=4")
        assert status == 2, err
        assert f"checkpoint {ckpts / 'iter_000099.pt'} holds iteration 2 but is named for iteration 99" in err
        assert "move it out of" in err and "(or name it iter_000002.pt)" in err
    assert sorted(p.name for p in ckpts.iterdir()) == before
    assert len(metrics_rows(copied)) == 2
    # Following the advice resumes the run where it is.
    (ckpts / "iter_000099.pt").rename(tmp_path / "iter_000099.pt")
    status, _, err = call_locomo("train", f"resume={copied}", "train.iterations=4")
    assert status == 0, err
    assert [row["iteration"] for row in metrics_rows(copied)] == [1, 2, 3, 4]
    assert load(copied)["counters"]["iteration"] == 4


def test_the_shipped_walker_and_a_fresh_checkpoint_pass(good: dict[str, Any], run: Path):
    validate(good, run / "checkpoints" / "iter_000002.pt")
    _, state = load_latest(ASSETS_DIR / "walker.pt")
    assert state["counters"]["iteration"] > 0


@pytest.mark.parametrize(
    ("part", "message"),
    [
        ("critic", "critic.net.0.bias has non-finite values: 1 of 512 values (0 nan, 1 inf)"),
        ("optimizer", "optimizer.state.1.exp_avg has non-finite values"),
        ("reward_scaler", "reward_scaler.returns_std.mean has non-finite values"),
    ],
)
def test_every_learned_tensor_is_checked_and_named(good: dict[str, Any], part: str, message: str):
    state = edited(good)
    if part == "critic":
        state["critic"]["net.0.bias"][0] = float("inf")
    elif part == "optimizer":
        state["optimizer"]["state"][1]["exp_avg"][0, 0] = float("nan")
    else:
        state["reward_scaler"]["returns_std.mean"][0] = float("nan")
    with pytest.raises(CheckpointError, match=r"x\.pt: ") as info:
        validate(state, Path("x.pt"))
    assert message in str(info.value)


def test_a_negative_sample_count_is_refused(good: dict[str, Any]):
    state = edited(good)
    state["critic"]["value_stats.count"] = torch.tensor(-3.0, dtype=torch.float64)
    with pytest.raises(CheckpointError, match=r"value_stats\.count has negative values .*a sample count"):
        validate(state, Path("x.pt"))


def test_a_diagnostic_snapshot_may_hold_nan(good: dict[str, Any]):
    """The snapshot written when training stops on NaN/inf is for reading; its NaN are the point."""
    state = edited(good, kind=KIND_DIAGNOSTIC)
    state["actor"]["log_std"][0] = float("nan")
    validate(state, Path("nonfinite_iter_000003.pt"))


def test_a_cuda_run_can_be_loaded_on_a_cpu_machine(good: dict[str, Any]):
    """Whether CUDA is here is the loader's question (eval runs on the CPU; train checks it)."""
    config = copy.deepcopy(good["config"])
    config["train"]["device"] = "cuda"
    validate(edited(good, config=config), Path("x.pt"))


def test_stored_values_of_the_wrong_type_are_the_checkpoints(good: dict[str, Any]):
    config = copy.deepcopy(good["config"])
    config["model"]["hidden_sizes"] = "wide"
    with pytest.raises(CheckpointError, match=r"x.pt: its config does not fit this version of locomo"):
        validate(edited(good, config=config), Path("x.pt"))


@pytest.mark.parametrize(
    ("counters", "message"),
    [
        ({"iteration": 2, "env_steps": -1}, "counters.env_steps=-1 is invalid: must be an integer >= 0"),
        ({"iteration": 2.5, "env_steps": 0}, "counters.iteration=2.5 is invalid"),
        ("two", "counters='two' is invalid: not a mapping"),
    ],
)
def test_counters(good: dict[str, Any], counters: Any, message: str):
    with pytest.raises(CheckpointError, match=r"x\.pt: ") as info:
        validate(edited(good, counters=counters), Path("x.pt"))
    assert message in str(info.value)


def test_a_policy_only_file_is_not_resumable(good: dict[str, Any]):
    """What locomo export writes: it was resumed into "does not match its own config: 'critic'"."""
    policy = {k: good[k] for k in ("format", "version", "actor", "obs_normalizer", "config", "spaces")}
    with pytest.raises(
        CheckpointError, match=r"p.pt is not a training checkpoint \(it lacks critic, optimizer"
    ):
        require_resumable(policy, Path("p.pt"))


def test_the_scan_sees_regular_files_only(run: Path, tmp_path: Path):
    ckpts = tmp_path / "checkpoints"
    shutil.copytree(run / "checkpoints", ckpts)
    os.mkfifo(ckpts / "iter_000003.pt")
    (ckpts / "iter_000004.pt").mkdir()
    (ckpts / "iter_000005.pt").symlink_to("iter_000005.pt")  # a link to itself: a loop
    assert [p.name for p in periodic_files(ckpts)] == ["iter_000001.pt", "iter_000002.pt"]
    (ckpts / "last.pt").unlink()
    path, state = load_latest(tmp_path)  # opening the FIFO would block for ever
    assert path.name == "iter_000002.pt" and state["counters"]["iteration"] == 2


def test_missing_reason(tmp_path: Path):
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    (tmp_path / "dangling").symlink_to("nowhere.pt")
    assert missing_reason(tmp_path / "a").startswith("is a symbolic link loop")
    assert missing_reason(tmp_path / "a" / "x.pt").startswith("passes through a symbolic link loop")
    assert missing_reason(tmp_path / "dangling") == "is a symbolic link to nowhere.pt, which does not exist"
    assert missing_reason(tmp_path / "none") == "does not exist"
    assert missing_reason(tmp_path) is None


# -- the model file a run trained on is pinned (absolute path + sha256) ------------------------------

TINY_PEND_XML = [*ONE_PENDULUM_ITERATION, "env.xml_file=pend.xml"]


@pytest.fixture(scope="module")
def pinned_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny run trained on ``pend.xml`` (gymnasium's inverted_pendulum.xml) given relative to its
    working directory; returns (run dir, the model file)."""
    import gymnasium.envs.mujoco

    base = tmp_path_factory.mktemp("pinned")
    (base / "train").mkdir()
    xml = base / "train" / "pend.xml"
    shutil.copy(Path(gymnasium.envs.mujoco.__file__).parent / "assets" / "inverted_pendulum.xml", xml)
    result = run_locomo("train", *TINY_PEND_XML, f"hydra.run.dir={base / 'run'}", cwd=base / "train")
    assert result.returncode == 0, result.stderr
    return base / "run", xml


def test_a_run_stores_its_model_as_an_absolute_path_and_hash(pinned_run: tuple[Path, Path]):
    import hashlib

    run, xml = pinned_run
    env = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["config"]["env"]
    assert env["xml_file"] == str(xml.resolve())
    assert env["xml_sha256"] == hashlib.sha256(xml.read_bytes()).hexdigest()  # what sha256sum prints


def test_a_pinned_model_is_refused_when_changed_or_missing(pinned_run: tuple[Path, Path], tmp_path: Path):
    run, xml = pinned_run
    original = xml.read_bytes()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # Another directory's pend.xml (a different body) is not what the run resumes on.
    (elsewhere / "pend.xml").write_bytes(original.replace(b'timestep="0.02"', b'timestep="0.03"'))
    resumed = run_locomo("train", f"resume={run}", "train.iterations=2", cwd=elsewhere)
    assert resumed.returncode == 0, resumed.stderr
    rows = metrics_rows(run)
    assert [r["iteration"] for r in rows] == [1, 2]
    pinned = f"env.xml_file='{xml.resolve()}', resolved when training started"
    try:
        xml.write_bytes(original + b"<!-- edited -->\n")
        for args in (["train", f"resume={run}", "train.iterations=3"], ["eval", f"checkpoint={run}"]):
            result = run_locomo(*args, cwd=elsewhere)
            assert result.returncode == 2, result.stderr
            assert len(result.stderr.strip().splitlines()) == 1, result.stderr
            assert result.stderr.startswith("locomo: error: checkpoint ")
            assert f"{pinned}, has changed" in result.stderr
        xml.unlink()
        for args in (["train", f"resume={run}", "train.iterations=3"], ["eval", f"checkpoint={run}"]):
            result = run_locomo(*args, cwd=elsewhere)
            assert result.returncode == 2, result.stderr
            assert len(result.stderr.strip().splitlines()) == 1, result.stderr
            assert f"{pinned}, does not exist" in result.stderr
    finally:
        xml.write_bytes(original)
    assert [r["iteration"] for r in metrics_rows(run)] == [1, 2]  # nothing trained on another body


def test_a_bundled_model_is_pinned_by_its_name_under_assets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A model of the package's assets/ is stored by name, so the run loads on another install;
    a file of that name in the working directory is never taken for it."""
    from omegaconf import OmegaConf

    from locomo.config.schema import EnvConfig
    from locomo.paths import env_xml_path, model_sha256, pin_xml_file, pinned_model_problem

    monkeypatch.chdir(tmp_path)
    env = OmegaConf.structured(EnvConfig(xml_file="humanoid.xml"))
    pin_xml_file(env)
    assert env.xml_file == "humanoid.xml"
    assert env.xml_sha256 == model_sha256(ASSETS_DIR / "humanoid.xml")
    (tmp_path / "humanoid.xml").write_text("<mujoco/>")
    assert env_xml_path(env) == ASSETS_DIR / "humanoid.xml"
    assert pinned_model_problem(env) is None
    env.xml_sha256 = "0" * 64
    assert "has changed since" in (pinned_model_problem(env) or "")


def test_an_included_file_is_part_of_the_model_hash(tmp_path: Path):
    from locomo.paths import model_sha256

    (tmp_path / "body.xml").write_text("<mujoco><worldbody/></mujoco>")
    main = tmp_path / "main.xml"
    main.write_text('<mujoco><include file="body.xml"/></mujoco>')
    before = model_sha256(main)
    (tmp_path / "body.xml").write_text("<mujoco><worldbody><body/></worldbody></mujoco>")
    assert model_sha256(main) != before
