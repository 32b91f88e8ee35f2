"""Labelled rollout videos and contact sheets: overlays, grids, frame rates, H.264 mp4.

The frames come from :class:`~locomo.evaluation.offscreen.FrameRenderer` (offscreen MuJoCo images of the
states a rollout stored). Layout: each rollout is a tile (``width`` x ``height``) with its episode
index, step, return so far and final behaviour label drawn on it; a grid video shows several
rollouts side by side (tau_1 ... tau_n), a finished rollout holding its last frame. Playback is
real time: the frame rate is 1 / control_dt, or ``fps`` with every round(1 / (fps * control_dt))-th
state drawn.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from locomo.errors import RenderError, first_line
from locomo.evaluation.offscreen import FrameRenderer
from locomo.evaluation.rollout import Rollout
from locomo.runs.outputs import atomic_output

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
