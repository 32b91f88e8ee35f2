"""Rendering to real mp4 files, read back with imageio: real MuJoCo humanoid, real GL (EGL here)."""

from __future__ import annotations

import copy

import imageio.v3 as iio
import mujoco
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from locomo.config.schema import BehaviorConfig
from locomo.envs import make_vec_env
from locomo.errors import RenderError
from locomo.evaluation import offscreen
from locomo.evaluation import rendering as video
from locomo.evaluation.episodes import rollouts
from locomo.evaluation.offscreen import FrameRenderer, choose_camera
from locomo.evaluation.rendering import (
    draw_overlay,
    frame_stride,
    grid_shape,
    label_color,
    write_rollout_video,
)
from locomo.evaluation.rollout import Rollout
from locomo.paths import CONF_DIR
from locomo.rl.policy import make_actor
from locomo.rl.running_stats import RunningMeanStd

W, H = 320, 240  # tile size of the readback tests: the overlay stays clear of the body


@pytest.fixture(scope="module")
def humanoid():
    """(env config, env, actor, normaliser): a fresh, untrained policy on Humanoid-v5."""
    cfg = OmegaConf.merge(
        {"backend": "gymnasium", "kwargs": {}, "max_episode_steps": None},
        OmegaConf.load(CONF_DIR / "env" / "humanoid.yaml"),
    )
    env = make_vec_env(cfg, 1, autoreset=False)
    torch.manual_seed(0)
    actor = make_actor(env.spaces, [16], "tanh", -0.5)
    normalizer = RunningMeanStd(env.spaces.obs_dim)
    yield cfg, env, actor, normalizer
    env.close()


def episode(humanoid, seed: int = 0, max_steps: int | None = 12, deterministic: bool = False) -> Rollout:
    _, env, actor, normalizer = humanoid
    thresholds = BehaviorConfig()
    (one,) = rollouts(env, actor, normalizer, seed, deterministic, thresholds, max_steps, record_states=True)
    return one


@pytest.fixture(scope="module")
def renderer(humanoid):
    with FrameRenderer(humanoid[1].mujoco_model(), W, H) as r:
        yield r


@pytest.fixture(scope="module")
def empty_scene(humanoid):
    """The same camera and scene with the body's geoms hidden (moved to a geom group not drawn)."""
    model = copy.copy(humanoid[1].mujoco_model())
    model.geom_group[model.geom_bodyid != 0] = 5
    with FrameRenderer(model, W, H) as r:
        yield r


def test_rollout_records_every_state_and_is_a_function_of_its_seed(humanoid):
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()[1].copy()
    a, b = episode(humanoid, seed=3), episode(humanoid, seed=3)
    assert a.record.length == 12 and a.qpos.shape == (13, 24) and a.qvel.shape == (13, 23)
    assert a.record.ret == b.record.ret and np.array_equal(a.qpos, b.qpos)
    assert a.returns_so_far[-1] == pytest.approx(a.record.ret)
    assert episode(humanoid, seed=4).record.ret != a.record.ret
    assert episode(humanoid, seed=3, deterministic=True).record.ret != a.record.ret
    # the policy's noise comes from a private generator: training's RNG streams are untouched
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state)


def test_mp4_reads_back_with_frames_size_fps_and_a_visible_body(humanoid, renderer, empty_scene, tmp_path):
    r = episode(humanoid)
    path = tmp_path / "one.mp4"
    stats = write_rollout_video(path, [r], renderer, fps=None)
    frames = iio.imread(path)  # [F, H, W, 3]
    meta = iio.immeta(path)
    assert frames.shape == (13, H, W, 3) and stats.frames == 13  # the reset state + 12 steps
    assert meta["codec"] == "h264" and meta["fps"] == pytest.approx(1 / 0.015, abs=0.01)  # real time
    assert all(frame.std() > 20 for frame in frames)  # not blank
    for t in (0, 12):
        body, empty = renderer.render(r.qpos[t], r.qvel[t]), empty_scene.render(r.qpos[t], r.qvel[t])
        silhouette = np.abs(body.astype(int) - empty.astype(int)).max(-1) > 40  # where the body is
        silhouette[:70] = silhouette[-40:] = False  # keep clear of the overlay's text and label
        assert silhouette.sum() > 500
        diff = np.abs(frames[t].astype(int) - empty.astype(int)).max(-1)
        assert diff[silhouette].mean() > 40  # the video shows the body there ...
        background = ~silhouette
        background[:70] = background[-40:] = False
        assert np.median(diff[background]) < 8  # ... and the same scene elsewhere


def test_odd_sizes_become_even_and_fps_keeps_real_time(humanoid, tmp_path):
    r = episode(humanoid)
    with FrameRenderer(humanoid[1].mujoco_model(), 161, 91) as small:
        stats = write_rollout_video(tmp_path / "small.mp4", [r], small, fps=20)
    frames = iio.imread(tmp_path / "small.mp4")
    stride, fps = frame_stride(0.015, 20)
    assert (stride, fps) == (3, pytest.approx(1 / 0.045))  # every 3rd step: 22.2 fps, real time
    assert frames.shape == (5, 92, 162, 3) and stats.frames == 5  # steps 0, 3, 6, 9, 12
    assert iio.immeta(tmp_path / "small.mp4")["fps"] == pytest.approx(22.22, abs=0.01)


def test_grid_puts_rollouts_side_by_side_and_holds_finished_ones(humanoid, renderer, tmp_path):
    rollouts = [episode(humanoid, seed=s, max_steps=n) for s, n in ((0, 4), (1, 8), (2, 12))]
    path = tmp_path / "grid.mp4"
    write_rollout_video(path, rollouts, renderer, fps=None, columns=2)
    frames = iio.imread(path).astype(int)
    assert grid_shape(3, 2) == (2, 2) and grid_shape(5, None) == (2, 3)
    assert frames.shape == (13, 2 * H, 2 * W, 3)  # the longest rollout sets the length
    first = frames[:, :H, :W]
    assert np.abs(first[4:] - first[4]).mean() < 2  # finished after 4 steps: its last frame is held
    assert np.abs(first[1] - first[0]).mean() > 0.5  # while it runs, it moves
    assert frames[:, H:, W:].mean() < 5  # the fourth cell is empty (black)


def test_overlay_writes_text_and_a_coloured_label():
    grey = np.full((120, 160, 3), 128, dtype=np.uint8)
    out = draw_overlay(grey, ["episode 1", "step 3/9"], "fell_forward")
    assert (out[:20, :40] != 128).any()  # text top-left
    bottom_left = out[-5:, :5].reshape(-1, 3).mean(0)
    assert bottom_left[0] > bottom_left[1] + 40  # red for a fall
    assert label_color("walked_forward") == video.GREEN and label_color("stood_still") == video.AMBER
    assert label_color(None) == video.GREY
    assert (draw_overlay(grey, ["x"], None, tag=False)[-5:, :5] == 128).all()


def test_camera_defaults_to_the_side_camera_or_tracks_the_root():
    model = mujoco.MjModel.from_xml_string(
        '<mujoco><worldbody><body><freejoint/><geom size=".1"/></body></worldbody></mujoco>'
    )
    camera = choose_camera(model, None)
    assert camera.type == mujoco.mjtCamera.mjCAMERA_TRACKING and camera.trackbodyid == 1
    with pytest.raises(RenderError, match="camera 'top' is not in the model"):
        choose_camera(model, "top")


def test_humanoid_is_filmed_by_its_side_camera(humanoid):
    model = humanoid[1].mujoco_model()
    camera = choose_camera(model, None)
    assert camera.type == mujoco.mjtCamera.mjCAMERA_FIXED and model.camera(camera.fixedcamid).name == "side"


def test_gl_backend_probes_egl_then_osmesa_and_explains_the_fix(monkeypatch):
    monkeypatch.setattr(offscreen, "_gl", offscreen._GLChoice())
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.setattr(offscreen, "_GL_PROBE", "raise SystemExit('no GL on this machine')")
    with pytest.raises(RenderError) as failure:
        offscreen.gl_backend()
    message = str(failure.value)
    assert "\n" not in message
    assert "egl: no GL on this machine; osmesa: no GL on this machine" in message
    assert "apt-get install libegl1" in message and "MUJOCO_GL=osmesa" in message
    with pytest.raises(RenderError):  # remembered: no second probe
        offscreen.gl_backend()


def test_gl_backend_probe_finds_a_working_backend_here(monkeypatch):
    monkeypatch.setattr(offscreen, "_gl", offscreen._GLChoice())
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    assert offscreen.gl_backend() in ("egl", "osmesa")


def test_an_unwritable_video_path_is_a_render_error(humanoid, renderer, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(RenderError, match="cannot write"):
        write_rollout_video(blocker / "video.mp4", [episode(humanoid, max_steps=2)], renderer, fps=None)
