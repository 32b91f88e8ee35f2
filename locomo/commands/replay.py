"""``locomo replay``: one seeded episode of a checkpoint's policy, in the MuJoCo viewer or as a video.

The episode is simulated first (the same code path as ``locomo eval``, so its return equals
episode 0 of ``locomo eval seed=<seed>``), then its stored states are played back: in the
interactive viewer when a display exists, otherwise (headless) into an mp4.
"""

from __future__ import annotations

import os
import platform
import re
import signal
import sys
import threading
import time
import warnings
from typing import TYPE_CHECKING, Any

from locomo.config.validation import validate_replay_config
from locomo.errors import ConfigError, StoppedBySignal, first_line
from locomo.runs.outputs import OutputInterrupted, safe_output

if TYPE_CHECKING:  # torch and gymnasium: imported when the command runs, so a bad command line fails fast
    from locomo.evaluation.rollout import Rollout

CONFIG = "replay"


def display_problem() -> str | None:
    """None where a window can open (macOS, Windows, Linux with a reachable X11 / Wayland
    display); else why not, in a few words.

    A display that is set but cannot be reached (``DISPLAY=:99`` with no X server there), or one
    that cannot give the window an OpenGL context (an X server without GLX, as ``ssh -X`` to some
    servers gives), must be found here: MuJoCo's viewer fails on either inside C++, where Python
    cannot catch it (a raw ``GLFWError``, "could not initialize GLFW" or "could not create window"
    in ``MUJOCO_LOG.TXT`` in the working directory, exit 1). So GLFW, the library the viewer opens
    its window with, is initialised once first and opens a hidden window with a context.
    """
    if platform.system() != "Linux":
        return None
    shown = {key: os.environ.get(key) for key in ("DISPLAY", "WAYLAND_DISPLAY")}
    if not any(shown.values()):
        return "no display (DISPLAY is unset)"
    where = ", ".join(f"{key}={value!r}" for key, value in shown.items() if value)
    window = None
    try:
        import glfw

        with warnings.catch_warnings(record=True) as caught:  # GLFW reports why as a warning
            warnings.simplefilter("always")
            ready = glfw.init()
            if ready:
                try:
                    glfw.window_hint(glfw.VISIBLE, glfw.FALSE)
                    window = glfw.create_window(16, 16, "locomo: display check", None, None)
                    if window:
                        glfw.destroy_window(window)
                finally:
                    glfw.terminate()  # the viewer initialises GLFW again itself
    except Exception as exc:  # no GLFW library, or glfw set to raise its errors
        return f"no usable display ({where}: {first_line(exc)})"
    if ready and window:
        return None
    reasons = [re.sub(r"^\(\d+\) b?'?(.*?)'?$", r"\1", str(w.message)) for w in caught]
    failed = "GLFW could not initialise" if not ready else "GLFW could not open an OpenGL window"
    return f"no usable display ({where}: {'; '.join(reasons) or failed})"


def play_in_viewer(model: Any, episode: Rollout, title: str) -> None:
    """Play the stored states in real time in MuJoCo's passive viewer, looping until it is closed.

    The viewer renders on its own (daemon) thread, and ``Handle.close`` only asks it to stop. If
    Python then exits, GLFW's atexit ``terminate`` destroys the window under that thread while it
    swaps buffers: X error GLXBadDrawable, then a hang or a segfault. So the viewer's threads are
    joined before returning, and SIGINT/SIGTERM only set a flag that ends the loop; the window
    closes in order and :class:`StoppedBySignal` is raised after that.
    """
    import mujoco
    import mujoco.viewer

    assert episode.qpos is not None and episode.qvel is not None
    data = mujoco.MjData(model)
    data.qpos[:] = episode.qpos[0]
    stop: list[int] = []

    def request_stop(signum: int, frame: object) -> None:
        stop.append(signum)

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        before = set(threading.enumerate())
        with mujoco.viewer.launch_passive(model, data) as viewer:
            viewer.cam.type = mujoco.mjtCamera.mjCAMERA_TRACKING
            viewer.cam.trackbodyid = 1 if model.nbody > 1 else 0
            label = "-" if episode.behavior is None else episode.behavior.label
            returns = episode.returns_so_far

            def playing() -> bool:
                return viewer.is_running() and not stop

            while playing():
                for t in range(episode.record.length + 1):
                    if not playing():
                        break
                    tick = time.perf_counter()
                    with viewer.lock():
                        data.qpos[:], data.qvel[:] = episode.qpos[t], episode.qvel[t]
                        mujoco.mj_forward(model, data)
                    viewer.set_texts(
                        (None, None, f"{title}\nstep\nreturn\nbehaviour", f"\n{t}\n{returns[t]:.1f}\n{label}")
                    )
                    viewer.sync()
                    time.sleep(max(0.0, episode.control_dt - (time.perf_counter() - tick)))
                deadline = time.monotonic() + 1.0  # a pause between loops, cut short by a signal
                while playing() and time.monotonic() < deadline:
                    time.sleep(0.05)
        for thread in set(threading.enumerate()) - before:  # the viewer's render and loader threads
            thread.join(timeout=10.0)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if stop:
        raise StoppedBySignal(stop[0])


def run(cfg: Any) -> Rollout:
    """Simulate the episode, print its return and label, then show it (window) or film it (video)."""
    import torch

    from locomo.evaluation.episodes import load_policy, run_episodes

    validate_replay_config(cfg)
    torch.set_num_threads(1)
    problem = None if cfg.viewer == "video" else display_problem()
    if cfg.viewer == "window" and problem is not None:
        raise ConfigError("viewer", cfg.viewer, f"{problem}; use viewer=auto or video")
    given = None if cfg.output is None else safe_output(cfg.output, "video", "output", cfg.overwrite)
    policy = load_policy(cfg.checkpoint)
    env = policy.make_env(1)
    try:
        (episode,) = run_episodes(
            policy, env, cfg.seed, cfg.deterministic, cfg.behavior, cfg.max_steps, True, "replay: episode"
        )
        model = env.mujoco_model()
    finally:
        env.close()
    mode = "deterministic" if cfg.deterministic else "stochastic"
    b = episode.behavior
    print(
        f"replay {policy.path} seed {cfg.seed} ({mode}): return {episode.record.ret:.6f}, "
        f"length {episode.record.length}, behaviour {'-' if b is None else b.label}"
    )
    window = cfg.viewer == "window" or (cfg.viewer == "auto" and problem is None)
    if model is None:
        print("locomo: not a MuJoCo env: nothing to show", file=sys.stderr)
        return episode
    if window:
        play_in_viewer(model, episode, f"{policy.run_name} seed {cfg.seed}")
        return episode
    from locomo.evaluation.episodes import output_root
    from locomo.evaluation.offscreen import FrameRenderer
    from locomo.evaluation.progress import render_progress
    from locomo.evaluation.rendering import write_rollout_video

    name = f"{policy.path.stem}_replay_seed{cfg.seed}_{mode}.mp4"
    path = given or safe_output(output_root(policy, "replay") / name, "video", "output")
    if cfg.viewer == "auto":
        print(f"locomo: {problem}: writing a video instead of opening the viewer", file=sys.stderr)
    try:
        with (
            FrameRenderer(model, cfg.width, cfg.height, cfg.camera, cfg.quality) as renderer,
            render_progress(renderer, "replay: video", [[episode]], cfg.fps),
        ):
            stats = write_rollout_video(path, [episode], renderer, cfg.fps)
    except KeyboardInterrupt as exc:  # say what is on disk: a video, not checkpoints
        raise OutputInterrupted(exc, [], path.parent) from exc
    print(f"wrote {path} ({stats.frames} frames, {stats.total_s:.1f} s)")
    return episode
