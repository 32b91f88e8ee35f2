"""Labelled rollout videos: offscreen MuJoCo rendering of stored states, overlays, grids, H.264 mp4.

Rendering is a separate pass after the rollout: :func:`locomo.evaluation.rollout` keeps qpos and
qvel of every step, and :class:`FrameRenderer` puts them back into its own ``MjData``
(``mj_forward``, no physics) and draws. The simulation loop never waits for the renderer, and
episodes can be filmed at a lower frame rate than they were simulated.

GL backend: ``MUJOCO_GL`` when set; otherwise (Linux) EGL, falling back to OSMesa, each probed
once in a subprocess (an EGL failure leaves PyOpenGL unusable for OSMesa in the same process).
When neither works, :class:`RenderError` carries a one-line message with the fix; training
then goes on without videos.

Layout: each rollout is a tile (``width`` x ``height``) with its episode index, step, return so
far and final behaviour label drawn on it; a grid video shows several rollouts side by side
(tau_1 ... tau_n), a finished rollout holding its last frame. Playback is real time: the frame
rate is 1 / control_dt, or ``fps`` with every round(1 / (fps * control_dt))-th state drawn.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import platform
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import imageio.v2 as imageio
import mujoco
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from locomo.errors import GL_FIX, RenderError, first_line, interrupt_behind
from locomo.outputs import atomic_output
from locomo.rollout import Rollout

_GL_PROBE = (
    "import mujoco; c = mujoco.GLContext(16, 16); c.make_current(); "
    "mujoco.MjrContext(mujoco.MjModel.from_xml_string('<mujoco/>'), 100); c.free()"
)


logging.getLogger("OpenGL").setLevel(logging.WARNING)  # PyOpenGL's INFO lines under Hydra are noise


@dataclass
class _GLChoice:
    backend: str | None = None
    error: str | None = None


_gl = _GLChoice()


def gl_backend() -> str:
    """The offscreen GL backend to use (``MUJOCO_GL``, or the first of egl, osmesa that works).

    Probes at most once per process and exports the choice as ``MUJOCO_GL``; raises
    :class:`RenderError` when no backend works.
    """
    if _gl.backend is not None:
        return _gl.backend
    if _gl.error is not None:
        raise RenderError(_gl.error)
    chosen = os.environ.get("MUJOCO_GL", "").strip().lower()
    if chosen in ("disable", "disabled", "off"):
        _gl.error = f"rendering is off (MUJOCO_GL={chosen}); {GL_FIX}"
        raise RenderError(_gl.error)
    if not chosen and platform.system() == "Linux":
        failures = []
        # PyOpenGL is pinned to one platform by PYOPENGL_PLATFORM: when it names a candidate, that
        # one first (the other one could not load in this process anyway, see _gl_context).
        pinned = os.environ.get("PYOPENGL_PLATFORM", "").strip().lower()
        for candidate in sorted(("egl", "osmesa"), key=lambda c: c != pinned):
            env = {**os.environ, "MUJOCO_GL": candidate}
            env.pop("PYOPENGL_PLATFORM", None)
            try:
                probe = subprocess.run(
                    [sys.executable, "-c", _GL_PROBE], env=env, capture_output=True, text=True, timeout=120
                )
            except subprocess.TimeoutExpired:
                failures.append(f"{candidate}: no answer in 120 s")
                continue
            if probe.returncode == 0:
                chosen = candidate
                break
            last = (probe.stderr.strip().splitlines() or ["failed"])[-1]
            failures.append(f"{candidate}: {last}")
        else:
            _gl.error = f"offscreen rendering unavailable ({'; '.join(failures)}); {GL_FIX}"
            raise RenderError(_gl.error)
        os.environ["MUJOCO_GL"] = chosen
    _gl.backend = chosen
    return chosen


def _check_pyopengl_platform(backend: str) -> None:
    """MuJoCo's EGL and OSMesa contexts need PyOpenGL on the same platform: a PYOPENGL_PLATFORM set
    to another one fails their import, with a message of MuJoCo's that is left unformatted
    (``set to {!r}``). Say what is wrong, and that the fix is to unset it (or make the two agree)."""
    pinned = os.environ.get("PYOPENGL_PLATFORM", "").strip()
    if backend in ("egl", "osmesa") and pinned and pinned.lower() != backend:
        raise RenderError(
            f"PYOPENGL_PLATFORM={pinned!r} (environment variable) does not match MUJOCO_GL={backend}: "
            f"PyOpenGL would load {pinned} while MuJoCo renders with {backend}; fix: unset "
            f"PYOPENGL_PLATFORM (MuJoCo sets it from MUJOCO_GL), or set both to the same backend"
        )


def check_offscreen() -> str:
    """The offscreen GL backend, checked before any work (:class:`RenderError` now, not after the
    rollouts): ``MUJOCO_GL`` or the probe's choice, and a PYOPENGL_PLATFORM that agrees with it."""
    backend = gl_backend()
    _check_pyopengl_platform(backend)
    return backend


def _gl_context(backend: str, width: int, height: int) -> Any:
    """A current offscreen GL context of ``backend`` (imported explicitly, whatever mujoco chose)."""
    _check_pyopengl_platform(backend)
    try:  # each backend's module only when chosen: the others may not load on this machine
        if backend == "egl":
            from mujoco.egl import GLContext
        elif backend == "osmesa":
            from mujoco.osmesa import GLContext
        elif backend == "glfw":
            from mujoco.glfw import GLContext
        else:
            from mujoco import GLContext
        with warnings.catch_warnings():  # glfw warns (GLFWError) on its way to failing: one line is enough
            warnings.simplefilter("ignore")
            context = GLContext(width, height)
            context.make_current()
    except Exception as exc:  # every backend fails in its own way (ImportError, EGLError, ...)
        interrupt = interrupt_behind(exc)
        if interrupt is not None:  # Ctrl-C during the backend's import: not a rendering failure
            raise interrupt from None
        raise RenderError(
            f"offscreen rendering failed with MUJOCO_GL={backend or 'default'} ({first_line(exc)}); {GL_FIX}"
        ) from exc
    return context


def even(n: int) -> int:
    """n rounded up to an even number (H.264 with 4:2:0 chroma needs even width and height)."""
    return n + (n % 2)


def choose_camera(model: Any, name: str | None) -> Any:
    """A named camera; by default "side", else "track", else a free camera tracking the root body."""
    camera = mujoco.MjvCamera()
    names = [model.camera(i).name for i in range(model.ncam)]
    wanted = [name] if name else ["side", "track"]
    for candidate in wanted:
        if candidate in names:
            camera.type = mujoco.mjtCamera.mjCAMERA_FIXED
            camera.fixedcamid = names.index(candidate)
            return camera
    if name:
        raise RenderError(f"camera {name!r} is not in the model (its cameras: {', '.join(names) or 'none'})")
    mujoco.mjv_defaultFreeCamera(model, camera)
    camera.type = mujoco.mjtCamera.mjCAMERA_TRACKING
    camera.trackbodyid = 1 if model.nbody > 1 else 0
    camera.distance = 3.0 * float(model.stat.extent)
    camera.elevation, camera.azimuth = -15.0, 90.0
    return camera


class FrameRenderer:
    """Offscreen images of a MuJoCo model in stored states: (qpos [nq], qvel [nv]) -> [H, W, 3] uint8."""

    def __init__(
        self, model: Any, width: int, height: int, camera: str | None = None, quality: str = "fast"
    ) -> None:
        self.width, self.height = even(width), even(height)
        self.model = copy.copy(model)  # private copy: the visual settings below do not leak
        vis = self.model.vis
        vis.global_.offwidth = max(vis.global_.offwidth, self.width)
        vis.global_.offheight = max(vis.global_.offheight, self.height)
        if quality == "fast":
            vis.quality.offsamples = 0
        self.data = mujoco.MjData(self.model)
        self.camera = choose_camera(self.model, camera)
        self.option = mujoco.MjvOption()
        self.scene = mujoco.MjvScene(self.model, maxgeom=10_000)
        if quality == "fast":
            self.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            self.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        backend = gl_backend()
        self._gl = _gl_context(backend, self.width, self.height)
        try:
            self._context = mujoco.MjrContext(self.model, mujoco.mjtFontScale.mjFONTSCALE_150)
        except Exception as exc:  # e.g. glfw without a display: a context that is not one (FatalError)
            self._gl.free()
            self._gl = None
            _gl.error = f"offscreen rendering failed with MUJOCO_GL={backend} ({first_line(exc)}); {GL_FIX}"
            raise RenderError(_gl.error) from exc
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._context)
        self._rect = mujoco.MjrRect(0, 0, self.width, self.height)
        self._pixels = np.empty((self.height, self.width, 3), dtype=np.uint8)
        self.frames = 0
        self.seconds = 0.0  # time spent in mj_forward + scene update + GL render + readback

    def render(self, qpos: np.ndarray | None = None, qvel: np.ndarray | None = None) -> np.ndarray:
        """Image [H, W, 3] of the model in state (qpos, qvel); qpos None draws the model at qpos0."""
        start = time.perf_counter()
        self.data.qpos[:] = self.model.qpos0 if qpos is None else qpos
        self.data.qvel[:] = 0.0 if qvel is None else qvel
        mujoco.mj_forward(self.model, self.data)
        self._gl.make_current()
        mujoco.mjv_updateScene(
            self.model, self.data, self.option, None, self.camera, mujoco.mjtCatBit.mjCAT_ALL, self.scene
        )
        mujoco.mjr_render(self._rect, self.scene, self._context)
        mujoco.mjr_readPixels(self._pixels, None, self._rect, self._context)
        image = np.flipud(self._pixels).copy()
        self.frames += 1
        self.seconds += time.perf_counter() - start
        return image

    def close(self) -> None:
        """Free the GL resources."""
        if self._gl is not None:
            self._gl.make_current()
            self._context.free()
            self._gl.free()
            self._gl = None

    def __enter__(self) -> FrameRenderer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# Overlays and layout

RED, AMBER, GREEN, GREY = (200, 55, 45), (205, 150, 20), (40, 150, 60), (110, 110, 110)
LABEL_COLORS = {"fell": RED, "collapsed": RED, "stood": AMBER, "walked": GREEN}


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def label_color(label: str | None) -> tuple[int, int, int]:
    """Red for falls, amber for standing, green for walking, grey without a label."""
    if label is None:
        return GREY
    return LABEL_COLORS.get(label.split("_")[0], GREY)


def draw_overlay(image: np.ndarray, lines: Sequence[str], label: str | None, tag: bool = True) -> np.ndarray:
    """Text lines top-left on a translucent box; with ``tag``, the label bottom-left in its colour."""
    height = image.shape[0]
    size = max(9, height // 17)
    font = _font(size)
    pil = Image.fromarray(image)
    draw = ImageDraw.Draw(pil, "RGBA")
    pad = max(2, size // 4)
    text = "\n".join(lines)
    box = draw.multiline_textbbox((pad, pad), text, font=font, spacing=2)
    draw.rectangle((0, 0, box[2] + pad, box[3] + pad), fill=(0, 0, 0, 140))
    draw.multiline_text((pad, pad), text, font=font, fill=(255, 255, 255), spacing=2)
    if not tag:
        return np.asarray(pil)
    text = label or "no label"
    bottom = height - pad
    tbox = draw.textbbox((pad, 0), text, font=font, anchor="lt")
    tag_height = tbox[3] - tbox[1]
    draw.rectangle((0, bottom - tag_height - 2 * pad, tbox[2] + pad, height), fill=(*label_color(label), 220))
    draw.text((pad, bottom - tag_height - pad), text, font=font, fill=(255, 255, 255), anchor="lt")
    return np.asarray(pil)


def grid_shape(count: int, columns: int | None) -> tuple[int, int]:
    """(rows, columns) for ``count`` tiles; columns default to ceil(sqrt(count))."""
    cols = min(count, columns) if columns else math.ceil(math.sqrt(count))
    return math.ceil(count / cols), cols


def tile_grid(tiles: Sequence[np.ndarray], columns: int | None) -> np.ndarray:
    """Tiles [H, W, 3] (equal sizes) side by side in rows -> [rows * H, cols * W, 3]; gaps black."""
    rows, cols = grid_shape(len(tiles), columns)
    h, w, _ = tiles[0].shape
    out = np.zeros((rows * h, cols * w, 3), dtype=np.uint8)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, cols)
        out[r * h : (r + 1) * h, c * w : (c + 1) * w] = tile
    return out


def frame_stride(control_dt: float, fps: float | None) -> tuple[int, float]:
    """(stride, fps): draw every ``stride``-th state and play at ``fps`` so playback is real time."""
    if fps is None:
        return 1, 1.0 / control_dt
    stride = max(1, round(1.0 / (fps * control_dt)))
    return stride, 1.0 / (stride * control_dt)


@dataclass
class VideoStats:
    """Where the time of one video went."""

    frames: int = 0  # video frames written
    renders: int = 0  # GL renders (a finished rollout's held frame is drawn once)
    render_s: float = 0.0  # mj_forward + scene + GL + readback
    overlay_s: float = 0.0  # text and compositing
    encode_s: float = 0.0  # H.264 encoding and writing
    rollout_s: float = 0.0  # simulating the episodes (policy + physics), when measured

    @property
    def total_s(self) -> float:
        return self.render_s + self.overlay_s + self.encode_s + self.rollout_s

    def as_metrics(self, prefix: str = "perf/video_") -> dict[str, float]:
        """Seconds per video and milliseconds per frame, for metrics."""
        per_frame = 1000.0 * (self.render_s + self.overlay_s + self.encode_s) / max(self.frames, 1)
        return {
            f"{prefix}s": self.total_s,
            f"{prefix}rollout_s": self.rollout_s,
            f"{prefix}render_ms_per_frame": 1000.0 * self.render_s / max(self.renders, 1),
            f"{prefix}ms_per_frame": per_frame,
            f"{prefix}frames": float(self.frames),
        }


@dataclass
class TileStream:
    """Frames of one rollout's tile, state k * stride at video frame k (held after the end)."""

    rollout: Rollout
    index: int  # episode index shown on the tile
    stride: int
    title: str | None = None  # the tile's first line; None = "episode <index>  seed <seed>"
    _cache: tuple[int, np.ndarray] | None = field(default=None, repr=False)

    @property
    def num_frames(self) -> int:
        return math.ceil(self.rollout.record.length / self.stride) + 1

    def frame(self, k: int, renderer: FrameRenderer, stats: VideoStats) -> np.ndarray:
        """The tile at video frame ``k``: render + overlay, or the cached image when the state repeats."""
        r = self.rollout
        t = min(k * self.stride, r.record.length)
        if self._cache is not None and self._cache[0] == t:
            return self._cache[1]
        assert r.qpos is not None and r.qvel is not None
        image = renderer.render(r.qpos[t], r.qvel[t])
        start = time.perf_counter()
        label = None if r.behavior is None else r.behavior.label
        ended = t == r.record.length
        status = ("  fell" if r.record.terminated else "  end") if ended else ""
        lines = [
            self.title or f"episode {self.index}  seed {r.seed}",
            f"step {t}/{r.record.length}{status}",
            f"return {r.returns_so_far[t]:.1f}",
        ]
        image = draw_overlay(image, lines, label)
        stats.overlay_s += time.perf_counter() - start
        self._cache = (t, image)
        return image


def video_frames(
    rollouts: Sequence[Rollout],
    renderer: FrameRenderer,
    stride: int,
    columns: int | None,
    stats: VideoStats,
    first_index: int = 1,
    titles: Sequence[str] | None = None,
) -> Iterator[np.ndarray]:
    """Frames [rows * H, cols * W, 3] of a grid video of ``rollouts`` (one tile: a plain video)."""
    tiles = [
        TileStream(r, first_index + i, stride, None if titles is None else titles[i])
        for i, r in enumerate(rollouts)
    ]
    renders_before, seconds_before = renderer.frames, renderer.seconds
    for k in range(max(tile.num_frames for tile in tiles)):
        images = [tile.frame(k, renderer, stats) for tile in tiles]
        start = time.perf_counter()
        frame = images[0] if len(images) == 1 else tile_grid(images, columns)
        stats.overlay_s += time.perf_counter() - start
        stats.renders = renderer.frames - renders_before
        stats.render_s = renderer.seconds - seconds_before
        yield frame


def write_mp4(path: Path, frames: Iterator[np.ndarray], fps: float, stats: VideoStats) -> Path:
    """Encode frames [H, W, 3] (even H, W) as H.264 (yuv420p, faststart) at ``fps``.

    Failures to write (no ffmpeg, a full disk, an unwritable folder) become :class:`RenderError`.
    """
    try:
        # A temporary file renamed over ``path`` at the end: an interrupted or failed encode leaves
        # an earlier video of that name whole, never a torn one.
        with atomic_output(path) as tmp:
            _encode(tmp, path, frames, fps, stats)
    except RenderError:
        raise
    except OSError as exc:
        raise RenderError(f"cannot write {path}: {first_line(exc)}") from exc
    return path


def _encode(tmp: Path, path: Path, frames: Iterator[np.ndarray], fps: float, stats: VideoStats) -> None:
    """:func:`write_mp4`'s encoder run into ``tmp``; errors name ``path``, the file meant."""
    try:
        writer = imageio.get_writer(
            str(tmp),
            format="FFMPEG",
            mode="I",
            fps=fps,
            codec="libx264",
            pixelformat="yuv420p",
            macro_block_size=2,
            quality=7,
            ffmpeg_log_level="error",
            output_params=["-movflags", "+faststart"],
        )
    except Exception as exc:
        raise RenderError(f"cannot write {path}: {first_line(exc)}") from exc
    try:
        for frame in frames:
            start = time.perf_counter()
            writer.append_data(frame)
            stats.encode_s += time.perf_counter() - start
            stats.frames += 1
        start = time.perf_counter()
        writer.close()
        stats.encode_s += time.perf_counter() - start
    except RenderError:
        raise
    except (OSError, RuntimeError, ValueError) as exc:
        raise RenderError(f"cannot write {path}: {first_line(exc)}") from exc
    finally:
        writer.close()  # idempotent


def write_rollout_video(
    path: Path,
    rollouts: Sequence[Rollout],
    renderer: FrameRenderer,
    fps: float | None,
    columns: int | None = None,
    first_index: int = 1,
    titles: Sequence[str] | None = None,
) -> VideoStats:
    """One mp4 of ``rollouts`` (a grid when several), real-time playback; returns the timings.

    ``titles`` (one per rollout) replace the tiles' "episode i  seed s" line.
    """
    if any(r.qpos is None for r in rollouts):
        raise RenderError("these rollouts carry no MuJoCo states: only MuJoCo envs can be filmed")
    stride, video_fps = frame_stride(rollouts[0].control_dt, fps)
    stats = VideoStats()
    frames = video_frames(rollouts, renderer, stride, columns, stats, first_index, titles)
    write_mp4(path, frames, video_fps, stats)
    return stats


def contact_sheet(
    rollouts: Sequence[Rollout],
    renderer: FrameRenderer,
    snapshots: int = 6,
    first_index: int = 1,
    titles: Sequence[str] | None = None,
) -> Image.Image:
    """A PNG-ready picture: one row per rollout, ``snapshots`` evenly spaced states from reset to end.

    A row's first tile is headed by ``titles[i]`` when given (else tau_i).
    """
    rows = []
    for i, r in enumerate(rollouts):
        assert r.qpos is not None and r.qvel is not None
        steps = np.linspace(0, r.record.length, snapshots).round().astype(int)
        label = None if r.behavior is None else r.behavior.label
        tiles = []
        for j, t in enumerate(steps):
            image = renderer.render(r.qpos[t], r.qvel[t])
            clock = f"t={t * r.control_dt:.2f}s"
            if titles is None:
                lines = [f"tau_{first_index + i}  {clock}"]
            else:  # titled rows (one checkpoint each): the title once, then the time
                lines = [f"{titles[i]}  {clock}" if j == 0 else clock]
            if j == len(steps) - 1:
                lines.append(f"return {r.returns_so_far[t]:.1f}")
            tiles.append(draw_overlay(image, lines, label, tag=j == len(steps) - 1))
        rows.append(np.concatenate(tiles, axis=1))
    return Image.fromarray(np.concatenate(rows, axis=0))



def model_of(env: Any, env_id: str) -> Any:
    """The MjModel of vectorised MuJoCo envs (:meth:`~locomo.envs.VecEnv.mujoco_model`) of task
    ``env_id``; RenderError for any other env."""
    model = env.mujoco_model()
    if model is None:
        raise RenderError(f"{env_id} is not a MuJoCo env: no video")
    return model
