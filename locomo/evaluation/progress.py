"""Progress bars of the commands that make you wait without training: eval, render, replay, variance.

Shown on stderr when it is a terminal (tqdm's rule), so that piped or captured output stays as it
was; ``LOCOMO_PROGRESS=1`` shows them anywhere (e.g. in a CI log), ``LOCOMO_PROGRESS=0`` nowhere.
(Training's bar follows ``logger.progress`` instead: it is part of the run's config.)
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import gymnasium
from tqdm import tqdm

from locomo.evaluation.rendering import TileStream, contact_sheet, frame_stride
from locomo.evaluation.rollout import Rollout

if TYPE_CHECKING:  # for annotations only: nothing is imported at run time
    from omegaconf import DictConfig

    from locomo.config.schema import EnvConfig

PROGRESS_ENV = "LOCOMO_PROGRESS"


def bar_disabled() -> bool | None:
    """tqdm's ``disable`` from LOCOMO_PROGRESS: None (only on a terminal), False (on) or True (off)."""
    value = os.environ.get(PROGRESS_ENV, "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return False
    if value in ("0", "false", "no", "off"):
        return True
    return None


def progress_bar(total: int | None, desc: str, unit: str) -> tqdm:
    """A bar on stderr (see the module's docstring for when it shows); use it as a context manager."""
    return tqdm(total=total, desc=desc, unit=unit, disable=bar_disabled(), dynamic_ncols=True, leave=False)


def render_calls(rollouts: Sequence[Rollout], fps: float | None) -> int:
    """How many images a video of ``rollouts`` (side by side) renders: one per distinct video
    frame of each tile (a finished tile's last frame is drawn once)."""
    if not rollouts:
        return 0
    stride, _ = frame_stride(rollouts[0].control_dt, fps)
    return sum(TileStream(r, 1, stride).num_frames for r in rollouts)


@contextmanager
def counting_renders(renderer: Any, bar: tqdm) -> Iterator[None]:
    """Advance ``bar`` by one for each image ``renderer`` renders while the block runs.

    The renders happen deep inside the video writer; counting them on the renderer (this one
    object, for this block only) gives a frame-accurate bar without threading a callback through.
    """
    render = renderer.render

    def counted(*args: Any, **kwargs: Any) -> Any:
        image = render(*args, **kwargs)
        bar.update(1)
        return image

    renderer.render = counted
    try:
        yield
    finally:
        del renderer.render  # the class's method again


def step_limit(env_cfg: DictConfig | EnvConfig, max_steps: int | None) -> int | None:
    """The most steps an episode of ``env_cfg``'s task can take: its time limit, or ``max_steps``
    when that is shorter; None when neither is known (the bar then counts without a total)."""
    limit = env_cfg.max_episode_steps
    if limit is None:
        try:
            limit = gymnasium.spec(env_cfg.id).max_episode_steps
        except Exception:  # an id gymnasium does not know here: a bar without a total still helps
            limit = None
    limits = [int(n) for n in (limit, max_steps) if n is not None]
    return min(limits) if limits else None


def sheet_renders(rollouts: Sequence[Rollout]) -> int:
    """Images :func:`locomo.evaluation.rendering.contact_sheet` renders for ``rollouts`` with its
    default snapshots."""
    return len(rollouts) * int(inspect.signature(contact_sheet).parameters["snapshots"].default)


@contextmanager
def render_progress(
    renderer: Any,
    desc: str,
    videos: Sequence[Sequence[Rollout]],
    fps: float | None,
    sheet: Sequence[Rollout] = (),
) -> Iterator[None]:
    """A bar over the images ``renderer`` renders in the block: the frames of ``videos`` (each a
    list of rollouts filmed side by side) at ``fps``, then a contact sheet of ``sheet``."""
    total = sum(render_calls(group, fps) for group in videos) + (sheet_renders(sheet) if sheet else 0)
    with progress_bar(total, desc, "frame") as bar, counting_renders(renderer, bar):
        yield
