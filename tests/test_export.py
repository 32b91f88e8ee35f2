"""`locomo export format=torchscript|onnx`: standalone files that act exactly as `locomo eval` does.

The shipped walker is exported through the CLI (in-process), each file is run by its own runtime
(``torch.jit.load``, onnxruntime) on 1000 real Humanoid-v5 observations plus extreme ones, and its
actions are compared with locomo's own deterministic actions: the normaliser, then
``select_actions`` and ``env_action``, as ``locomo eval``'s rollouts call them.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from locomo.envs.base import SpaceInfo
from locomo.evaluation import deploy
from locomo.evaluation.episodes import LoadedPolicy, load_policy, select_actions
from locomo.paths import ASSETS_DIR
from locomo.rl.policy import make_actor
from locomo.rl.running_stats import RunningMeanStd
from tests.safety_helpers import call_locomo, machine_paths

onnx = pytest.importorskip("onnx", reason='the onnx extra: pip install -e ".[test]"')
onnxruntime = pytest.importorskip("onnxruntime", reason='the onnx extra: pip install -e ".[test]"')

TOLERANCE = 1e-5


def locomo_actions(policy: LoadedPolicy, obs: np.ndarray) -> np.ndarray:
    """The deterministic actions [N, act_dim] `locomo eval` executes for raw obs [N, obs_dim]."""
    x = torch.from_numpy(obs)
    with torch.inference_mode():
        actions = select_actions(policy.actor, policy.normalizer(x), True, [], list(range(len(x))))
        return policy.actor.env_action(actions).numpy()


def onnx_actions(path: Path, obs: np.ndarray) -> np.ndarray:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1  # the machine's other core trains
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"obs": obs})[0]


def torchscript_actions(path: Path, obs: np.ndarray) -> np.ndarray:
    module = torch.jit.load(str(path))
    with torch.inference_mode():
        return module(torch.from_numpy(obs)).numpy()


@pytest.fixture(scope="module")
def walker() -> LoadedPolicy:
    return load_policy("walker")


@pytest.fixture(scope="module")
def observations(walker: LoadedPolicy) -> np.ndarray:
    """[1000 + 8, 348] float32: Humanoid-v5 observations under random actions (resetting after each
    fall), then extreme rows: zeros, +-1e3, +-1e6, 100x the largest seen, far beyond the normaliser's
    clip in alternating directions, and a spread of 1e2-scale noise."""
    env = gym.make("Humanoid-v5")
    env.action_space.seed(0)
    obs, _ = env.reset(seed=0)
    rows = []
    while len(rows) < 1000:
        rows.append(obs)
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            obs, _ = env.reset()
    env.close()
    real = np.stack(rows).astype(np.float32)  # locomo's envs hand float32 to the policy
    dim = real.shape[1]
    mean = walker.normalizer.mean.numpy()
    std = np.sqrt(walker.normalizer.var.numpy())
    signs = np.where(np.arange(dim) % 2 == 0, 1.0, -1.0)
    extreme = np.stack(
        [
            np.zeros(dim),
            np.full(dim, 1e3),
            np.full(dim, -1e3),
            np.full(dim, 1e6),
            np.full(dim, -1e6),
            100 * np.abs(real).max(0),
            mean + 50 * std * signs,
            np.random.default_rng(0).normal(0.0, 1e2, dim),
        ]
    ).astype(np.float32)
    return np.concatenate([real, extreme])


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The walker exported by `locomo export` to both formats: format -> file."""
    folder = tmp_path_factory.mktemp("export")
    files = {"onnx": folder / "walker.onnx", "torchscript": folder / "walker.ts"}
    for fmt, out in files.items():
        status, stdout, stderr = call_locomo("export", "checkpoint=walker", f"format={fmt}", f"out={out}")
        assert status == 0, stderr
        assert f"wrote {out}" in stdout and "checked on 256 observations" in stdout
    assert sorted(p.name for p in folder.iterdir()) == ["walker.onnx", "walker.ts"]  # no JSON, no eval
    return files


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_exported_walker_acts_as_locomo_eval(fmt, exported, walker, observations):
    run = onnx_actions if fmt == "onnx" else torchscript_actions
    expected = locomo_actions(walker, observations)
    actions = run(exported[fmt], observations)
    assert actions.shape == (len(observations), 17) and actions.dtype == np.float32
    difference = float(np.abs(actions - expected).max())
    print(f"{fmt}: max |action difference| over {len(observations)} observations = {difference:.3g}")
    assert difference <= TOLERANCE
    # The clip to [-1, 1] and the rescale are inside: Humanoid-v5's bounds are [-0.4, 0.4], and the
    # extreme rows drive some actions onto them.
    assert np.abs(actions).max() <= 0.4 + 1e-6 and np.isclose(np.abs(actions[-8:]), 0.4).any()
    # The batch axis is dynamic, and a row's action does not depend on the batch it is in.
    one = run(exported[fmt], observations[:1])
    assert one.shape == (1, 17) and np.abs(one - expected[:1]).max() <= TOLERANCE


def test_exported_files_describe_themselves(exported):
    model = onnx.load(str(exported["onnx"]))
    onnx_meta = json.loads({p.key: p.value for p in model.metadata_props}["locomo"])
    extra = {"locomo.json": ""}
    torch.jit.load(str(exported["torchscript"]), _extra_files=extra)
    ts_meta = json.loads(extra["locomo.json"])
    for meta, fmt in ((onnx_meta, "onnx"), (ts_meta, "torchscript")):
        assert meta["format"] == fmt and meta["env_id"] == "Humanoid-v5"
        assert meta["input"].startswith("obs [N, 348] float32")
        assert meta["output"].startswith("action [N, 17] float32")
        assert meta["action_low"] == pytest.approx([-0.4] * 17) and meta["action_high"] == pytest.approx(
            [0.4] * 17
        )
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param == "batch"  # the dynamic axis


def test_discrete_policy_exports_its_argmax_action(tmp_path):
    torch.manual_seed(0)
    actor = make_actor(SpaceInfo(obs_dim=4, discrete=True, action_dim=3), [16], "tanh", 0.0)
    normalizer = RunningMeanStd(4)
    normalizer.update(torch.randn(500, 4, dtype=torch.float64) * 3 + 1)
    policy = deploy.DeployedPolicy(actor, normalizer)
    deploy.export_onnx(policy, tmp_path / "p.onnx", {})
    deploy.export_torchscript(policy, tmp_path / "p.ts", {})
    obs = (np.random.default_rng(0).normal(size=(1000, 4)) * 4).astype(np.float32)
    with torch.inference_mode():
        expected = select_actions(actor, normalizer(torch.from_numpy(obs)), True, [], list(range(1000)))
    assert len(set(expected.tolist())) == 3  # every action is taken somewhere
    for actions in (onnx_actions(tmp_path / "p.onnx", obs), torchscript_actions(tmp_path / "p.ts", obs)):
        assert actions.dtype == np.int64 and actions.shape == (1000,)
        assert np.array_equal(actions, expected.numpy())


@pytest.mark.parametrize(
    "args, message",
    [
        (["format=tflite"], "format='tflite' is invalid: allowed values are checkpoint, torchscript, onnx"),
        (["format=onnx", "out=w.pt"], "out='w.pt' is invalid: must be a .onnx file for format=onnx"),
        (["format=torchscript", "out=w.onnx"], "out='w.onnx' is invalid: must be a .ts or .pt file"),
        (["out=w.onnx"], "out='w.onnx' is invalid: must be a .pt file"),  # format=checkpoint
    ],
)
def test_bad_format_or_extension_is_one_line(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, _, stderr = call_locomo("export", "checkpoint=walker", *args)
    lines = stderr.splitlines()
    assert status == 2 and len(lines) == 1 and lines[0].startswith(f"locomo: error: {message}")
    assert list(tmp_path.iterdir()) == []  # refused before writing anything


def test_onnx_without_the_extra_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime raises ImportError
    out = tmp_path / "w.onnx"
    status, _, stderr = call_locomo("export", "checkpoint=walker", "format=onnx", f"out={out}")
    assert status == 2 and len(stderr.splitlines()) == 1
    assert stderr.startswith("locomo: error: format='onnx' is invalid: ")
    assert 'pip install "locomo[onnx]"' in stderr and list(tmp_path.iterdir()) == []


def test_checkpoint_export_json_names_no_machine_path_and_holds_both_modes(tmp_path, monkeypatch):
    """format=checkpoint from a run's checkpoint, every path given absolute: the JSON beside the
    policy names the run and the path inside it, evaluates both modes, and names no machine path."""
    run = tmp_path / "walk_s1"  # a run dir holding the shipped walker as one of its checkpoints
    (run / "checkpoints").mkdir(parents=True)
    (run / ".hydra").mkdir()
    name = f"iter_{load_policy('walker').counters['iteration']:06d}.pt"  # as a run names it
    shutil.copyfile(ASSETS_DIR / "walker.pt", run / "checkpoints" / name)
    (run / ".hydra" / "overrides.yaml").write_text("- seed=1\n", encoding="utf-8")
    out = tmp_path / "shipped" / "w.pt"
    monkeypatch.chdir(tmp_path)
    args = ["episodes=2", "seed=5", "max_steps=20"]
    checkpoint = run / "checkpoints" / name
    status, _, stderr = call_locomo("export", f"checkpoint={checkpoint}", f"out={out}", *args)
    assert status == 0, stderr
    report = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    assert machine_paths(report) == [] and str(tmp_path) not in out.with_suffix(".json").read_text()
    assert report["policy"] == "w.pt" and report["source"] == f"walk_s1/checkpoints/{name}"
    assert report["training_command"] == "locomo train seed=1"
    assert report["eval_command"] == "locomo eval checkpoint=w.pt episodes=2 seed=5 max_steps=20 mode=both"
    for mode in ("deterministic", "stochastic"):
        evaluation = report[mode]
        assert evaluation["eval_command"] == report["eval_command"].replace("mode=both", f"mode={mode}")
        assert evaluation["episodes"] == 2 and sum(evaluation["labels"].values()) == 2
        rows = evaluation["per_episode"]
        assert [row["seed"] for row in rows] == [5, 6] and all(row["length"] == 20 for row in rows)
        assert all(set(row) == {"seed", "return", "length", "label", "distance"} for row in rows)
        assert evaluation["return_mean"] == pytest.approx(sum(row["return"] for row in rows) / 2)
    # Sampled actions are not the mean action: the two modes are two evaluations.
    assert report["deterministic"]["per_episode"] != report["stochastic"]["per_episode"]
    # A checkpoint outside any run is named by its file alone; the eval command, run from the
    # JSON's folder, finds the policy beside it.
    status, _, stderr = call_locomo("export", "checkpoint=shipped/w.pt", "out=again/w2.pt", *args)
    assert status == 0, stderr
    again = json.loads((tmp_path / "again" / "w2.json").read_text(encoding="utf-8"))
    assert again["source"] == "w.pt" and again["training_command"] is None and machine_paths(again) == []
    for mode in ("deterministic", "stochastic"):  # the same policy, the same episodes
        assert again[mode]["per_episode"] == report[mode]["per_episode"]
