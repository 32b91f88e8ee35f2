"""Offscreen MuJoCo frames of stored states: the GL backend, its context, the camera, the renderer.

Rendering is a separate pass after the rollout: :func:`locomo.evaluation.episodes.rollout` keeps qpos and
qvel of every step, and :class:`FrameRenderer` puts them back into its own ``MjData``
(``mj_forward``, no physics) and draws. The simulation loop never waits for the renderer, and
episodes can be filmed at a lower frame rate than they were simulated. What is drawn on the
frames and how they become videos: :mod:`locomo.evaluation.rendering`.

GL backend: ``MUJOCO_GL`` when set; otherwise (Linux) EGL, falling back to OSMesa, each probed
once in a subprocess (an EGL failure leaves PyOpenGL unusable for OSMesa in the same process).
When neither works, :class:`RenderError` carries a one-line message with the fix; training
then goes on without videos.
"""

from __future__ import annotations

import copy
import logging
import os
import platform
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any

import mujoco
import numpy as np

from locomo.errors import GL_FIX, RenderError, first_line, interrupt_behind

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


def model_of(env: Any, env_id: str) -> Any:
    """The MjModel of vectorised MuJoCo envs (:meth:`~locomo.envs.VecEnv.mujoco_model`) of task
    ``env_id``; RenderError for any other env."""
    model = env.mujoco_model()
    if model is None:
        raise RenderError(f"{env_id} is not a MuJoCo env: no video")
    return model
