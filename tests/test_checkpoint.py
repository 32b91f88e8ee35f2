"""Checkpoint files: atomic writes, the last K kept, safe loading, full disk, metrics truncation."""

from __future__ import annotations

import errno
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from locomo.runs import checkpoint
from locomo.runs.checkpoint import CheckpointError, CheckpointManager, assert_plain, load, load_latest
from locomo.runs.metrics_file import truncate_metrics
from locomo.training.runner import Runner
from tests.conftest import Evil, make_runner


def tiny_state(value: float) -> dict:
    return {"weights": torch.full((3,), value), "counters": {"iteration": int(value)}, "name": "x"}


def test_manager_keeps_last_k_and_links_last(tmp_path: Path):
    manager = CheckpointManager(tmp_path, keep=2)
    for i in range(1, 5):
        manager.save(tiny_state(float(i)), i)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iter_000003.pt", "iter_000004.pt", "last.pt"]
    assert (tmp_path / "last.pt").read_bytes() == (tmp_path / "iter_000004.pt").read_bytes()
    assert load(tmp_path)["counters"]["iteration"] == 4
    assert load(tmp_path / "last.pt")["kind"] == "training"


def test_manager_clears_temp_files_of_a_killed_writer(tmp_path: Path):
    (tmp_path / ".iter_000002.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    CheckpointManager(tmp_path, keep=2)
    assert not list(tmp_path.iterdir())


def test_assert_plain_names_what_would_not_load():
    assert_plain({"a": [torch.zeros(1), 1, 2.0, "s", None, True, (1, 2)], "b": {"c": {}}})
    with pytest.raises(TypeError, match=r"state\.env\.qpos is a numpy\.ndarray, not plain data"):
        assert_plain({"env": {"qpos": np.zeros(2)}})
    with pytest.raises(TypeError, match=r"state\.x\[0\] is a numpy\.float64"):
        assert_plain({"x": [np.float64(1.0)]})


@pytest.mark.parametrize("zip_format", [True, False])
def test_pickle_carrying_code_is_refused_and_never_runs(tmp_path: Path, zip_format: bool):
    path, marker = tmp_path / "evil.pt", tmp_path / "MARKER"
    torch.save(
        {"format": "locomo-checkpoint", "actor": Evil(marker)},
        path,
        _use_new_zipfile_serialization=zip_format,
    )
    with pytest.raises(CheckpointError, match=r"refusing to load .*evil\.pt: .*it references exec"):
        load(path)
    assert not marker.exists()
    # The control: the same file loaded the unsafe way does run the code.
    control = tmp_path / "CONTROL"
    torch.save({"actor": Evil(control)}, tmp_path / "control.pt", _use_new_zipfile_serialization=zip_format)
    torch.load(tmp_path / "control.pt", weights_only=False)
    assert control.read_text() == "pwned"


def test_load_latest_falls_back_past_a_damaged_newest(tmp_path: Path):
    manager = CheckpointManager(tmp_path, keep=3)
    for i in (1, 2):
        manager.save(tiny_state(float(i)), i)
    (tmp_path / "iter_000003.pt").write_bytes(b"damaged by a disk error")
    path, state = load_latest(tmp_path)
    assert path.name == "iter_000002.pt" and state["counters"]["iteration"] == 2


def test_full_disk_during_training_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch):
    """The second checkpoint write hits ENOSPC: a clear error, iteration 1 stays the newest."""
    runner = make_runner(tmp_path)
    real_save, calls = torch.save, []

    def save_on_a_full_disk(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) >= 2:
            f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", save_on_a_full_disk)
    with pytest.raises(CheckpointError) as info:
        runner.run()
    ckpts = tmp_path / "checkpoints"
    assert str(info.value) == (
        f"cannot write checkpoint {ckpts / 'iter_000002.pt'}: No space left on device; the previous "
        f"checkpoint {ckpts / 'iter_000001.pt'} is kept; free space or fix the directory, then: "
        f"locomo train resume={tmp_path}"
    )
    assert sorted(p.name for p in ckpts.iterdir()) == ["iter_000001.pt", "last.pt"]  # no torn temp file
    assert load(tmp_path)["counters"]["iteration"] == 1


def test_unwritable_checkpoint_directory_is_a_clear_error(tmp_path: Path):
    """A file where the checkpoint directory should be (blocks writes even for root)."""
    (tmp_path / "blocked").write_text("not a directory")
    with pytest.raises(CheckpointError, match=r"cannot write checkpoint .*blocked/sub/iter_000001\.pt: "):
        CheckpointManager(tmp_path / "blocked" / "sub", keep=1).save(tiny_state(1.0), 1)


def test_truncate_metrics_drops_rows_after_the_checkpoint_and_torn_lines(tmp_path: Path):
    path = tmp_path / "metrics.jsonl"
    rows = [json.dumps({"env_steps": s, "x": 1.0}) for s in (64, 128, 192)]
    path.write_text("\n".join(rows) + '\n{"env_steps": 256, "x"')  # killed mid-write
    assert truncate_metrics(path, 128) == 2
    assert [json.loads(line)["env_steps"] for line in path.read_text().splitlines()] == [64, 128]
    assert truncate_metrics(path, 128) == 0


def test_raw_pickle_of_plain_data_is_not_a_checkpoint(tmp_path: Path):
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CheckpointError, match=r"truncated or not a checkpoint|is not a locomo checkpoint"):
        load(path)


def test_checkpoint_with_the_old_numpy_rng_entry_still_resumes(tmp_path: Path):
    """Checkpoints from before the runner dropped its unused numpy Generator hold rng["numpy"]."""
    runner = make_runner(tmp_path / "run", "train.iterations=1")
    runner.run()
    state = load(tmp_path / "run")
    assert "numpy" not in state["rng"]
    np_state = np.random.default_rng(0).bit_generator.state  # the entry as the old rng_state wrote it
    state["rng"]["numpy"] = {
        "bit_generator": np_state["bit_generator"],
        "state": str(np_state["state"]["state"]),
        "inc": str(np_state["state"]["inc"]),
        "has_uint32": int(np_state["has_uint32"]),
        "uinteger": int(np_state["uinteger"]),
    }
    resumed = Runner(runner.cfg, tmp_path / "run", resume=state, resume_path=tmp_path / "run")
    assert resumed.iteration == 1
    assert torch.equal(resumed.generator.get_state(), state["rng"]["torch_generator"])
    assert "numpy" not in resumed.state()["rng"]
