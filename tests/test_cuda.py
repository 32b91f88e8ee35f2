"""The CUDA paths: policy and update on the GPU, simulation on the CPU, CUDA RNG in checkpoints,
resume, and a GPU-trained checkpoint used on the CPU. Run where CUDA is present; skipped elsewhere."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import run_locomo, torchrun

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False here)"
)

# Humanoid on the batched CPU simulator, policy and update on cuda; deterministic kernels so that
# a resumed run can be compared bit for bit.
GPU_RUN = [
    "train.device=cuda",
    "train.deterministic=true",
    "train.num_envs=4",
    "train.steps_per_iteration=128",
    "train.checkpoint_every=1",
    "logger.progress=false",
    "logger.wandb.mode=disabled",
    "video.enabled=false",
]


def weights(path: Path) -> dict[str, torch.Tensor]:
    """Actor and critic tensors of a checkpoint, by name."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    parts = {"actor": state["actor"], "critic": state["critic"] or {}}
    return {f"{part}.{k}": v for part, tensors in parts.items() for k, v in tensors.items()}


@pytest.mark.slow
def test_training_on_cuda_saves_cuda_rng_and_evaluates_on_cpu(tmp_path: Path):
    trained = run_locomo("train", *GPU_RUN, "train.iterations=2", "hydra.run.dir=run", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert "cuda" in state["rng"], "a run sampling on the GPU must save the CUDA generators"
    evaluated = run_locomo(
        "eval", "checkpoint=run", "episodes=2", "max_steps=20", "output=eval.json", cwd=tmp_path
    )
    assert evaluated.returncode == 0, evaluated.stderr
    assert (tmp_path / "eval.json").is_file()


@pytest.mark.slow
def test_resume_on_cuda_continues_bit_for_bit(tmp_path: Path):
    straight = run_locomo("train", *GPU_RUN, "train.iterations=4", "hydra.run.dir=straight", cwd=tmp_path)
    assert straight.returncode == 0, straight.stderr
    first = run_locomo("train", *GPU_RUN, "train.iterations=2", "hydra.run.dir=split", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    resumed = run_locomo("train", f"resume={tmp_path / 'split'}", "train.iterations=4", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    a = weights(tmp_path / "straight" / "checkpoints" / "iter_000004.pt")
    b = weights(tmp_path / "split" / "checkpoints" / "iter_000004.pt")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs (NCCL: one per process)")
def test_two_processes_on_two_gpus_train_and_resume_bit_for_bit(tmp_path: Path):
    """A torchrun job of 2 processes, one GPU each (gradients over NCCL, objects over gloo)."""
    job = [*GPU_RUN, "train.num_envs=4"]
    straight = torchrun(
        "-m", "locomo", "train", *job, "train.iterations=4", "hydra.run.dir=straight", cwd=tmp_path
    )
    assert straight.returncode == 0, straight.stderr[-3000:]
    first = torchrun("-m", "locomo", "train", *job, "train.iterations=2", "hydra.run.dir=split", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = torchrun(
        "-m", "locomo", "train", f"resume={tmp_path / 'split'}", "train.iterations=4", cwd=tmp_path
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    state = torch.load(tmp_path / "split" / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert state["distributed"]["world_size"] == 2
    a = weights(tmp_path / "straight" / "checkpoints" / "iter_000004.pt")
    b = weights(tmp_path / "split" / "checkpoints" / "iter_000004.pt")
    for name, value in a.items():
        assert torch.equal(value, b[name]), name
