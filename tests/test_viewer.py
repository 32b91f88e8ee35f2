"""`locomo replay` opens MuJoCo's interactive viewer when a display exists (a real X server: Xvfb),
and says so in one line when the display it is given cannot be reached."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TINY, cli_env, run_locomo, start_locomo, wait_for
from tests.safety_helpers import call_locomo

needs_xvfb = pytest.mark.skipif(
    shutil.which("Xvfb") is None or shutil.which("xdotool") is None,
    reason="needs Xvfb and xdotool (Debian: apt-get install xvfb xdotool; .ci/run installs them)",
)


def free_display() -> tuple[str, Path]:
    for n in range(90, 190):
        socket = Path(f"/tmp/.X11-unix/X{n}")
        if not socket.exists() and not Path(f"/tmp/.X{n}-lock").exists():
            return f":{n}", socket
    raise RuntimeError("no free X display number")


@contextmanager
def xvfb(*extra: str) -> Iterator[str]:
    """A real X server (Xvfb) on a free display number for the duration; yields ``:N``."""
    display, socket = free_display()
    # Not a pipe: a long-lived server's log could fill one and block it.
    command = ["Xvfb", display, "-screen", "0", "1024x768x24", *extra]
    server = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    try:
        wait_for(socket.exists, 15, proc=server, poll=0.25, what="Xvfb")
        yield display
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture(scope="module")
def pendulum_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny pendulum run for the replays of this module (they write nothing into it)."""
    cwd = tmp_path_factory.mktemp("pendulum")
    trained = run_locomo(
        "train",
        *TINY,
        "env=inverted_pendulum",
        "logger.wandb.mode=disabled",
        "video.enabled=false",
        "hydra.run.dir=run",
        cwd=cwd,
    )
    assert trained.returncode == 0, trained.stderr
    return cwd / "run"


@needs_xvfb
@pytest.mark.slow
def test_replay_opens_the_interactive_viewer_on_a_display(tmp_path: Path, pendulum_run: Path):
    from PIL import ImageGrab

    run = pendulum_run
    with xvfb() as display:
        on_display = {"DISPLAY": display, "MUJOCO_GL": "glfw"}
        env = cli_env(on_display)
        replay = start_locomo("replay", f"checkpoint={run}", "viewer=window", cwd=tmp_path, env=on_display)

        def viewer_window() -> str:
            found = subprocess.run(
                ["xdotool", "search", "--name", "^MuJoCo : "], env=env, capture_output=True, text=True
            )
            return found.stdout.strip()

        try:
            # proc: a replay that exits instead of opening the window fails at once, with its stderr
            assert wait_for(viewer_window, 90, proc=replay, poll=0.25, what="the viewer window")
            time.sleep(2.0)  # let it draw a few frames of the episode
            screen = np.asarray(ImageGrab.grab(xdisplay=display))
            assert replay.poll() is None, replay.communicate()  # still playing: it loops until closed
        finally:
            replay.terminate()
            out, err = replay.communicate(timeout=30)
            if sys.exc_info()[0] is not None:  # say what the replay printed beside the failure
                print(f"replay exit {replay.returncode}\nstdout:\n{out}\nstderr:\n{err}")
    # The window shows the scene and the viewer's panels: far from a blank screen.
    assert screen.std() > 10.0
    assert len(np.unique(screen.reshape(-1, 3), axis=0)) > 50
    # It simulated the episode and said what it got before opening the window.
    assert "(deterministic): return" in out, (out, err)
    assert "Traceback" not in err, err
    # SIGTERM closes the window in order and exits with one line, not a hang or an X error.
    assert replay.returncode == 143, (replay.returncode, err)
    assert "stopped by SIGTERM" in err and "X Error" not in err, err


@needs_xvfb
def test_a_display_without_opengl_is_one_line_and_auto_writes_a_video(tmp_path: Path, pendulum_run: Path):
    """An X server without GLX (as ``ssh -X`` to some machines gives): GLFW initialises, but the
    viewer's window cannot get an OpenGL context, and MuJoCo would fail on it in C++ ("could not
    create window", exit 1). ``window``: one line before the episode runs; ``auto``: a video."""
    run = pendulum_run
    with xvfb("-extension", "GLX") as display:
        on_display = {"DISPLAY": display, "WAYLAND_DISPLAY": None}
        window = run_locomo("replay", f"checkpoint={run}", "viewer=window", cwd=tmp_path, env=on_display)
        video = tmp_path / "auto.mp4"
        args = ("viewer=auto", "width=64", "height=48", f"output={video}")
        auto = run_locomo("replay", f"checkpoint={run}", *args, cwd=tmp_path, env=on_display)
    assert window.returncode == 2, window.stderr
    assert window.stderr.splitlines() == [
        f"locomo: error: viewer='window' is invalid: no usable display (DISPLAY='{display}': GLX: GLX "
        "extension not found); use viewer=auto or video"
    ]
    assert "replay" not in window.stdout  # refused before the episode ran
    assert auto.returncode == 0, auto.stderr
    assert f"locomo: no usable display (DISPLAY='{display}': GLX: GLX extension not found): " in auto.stderr
    assert video.stat().st_size > 0 and not (tmp_path / "MUJOCO_LOG.TXT").exists()


def test_an_unreachable_display_is_one_line_and_auto_writes_a_video(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """``DISPLAY`` set to a display no X server serves: MuJoCo's viewer would fail in C++ (a raw
    GLFWError, exit 1, MUJOCO_LOG.TXT in the working directory). ``window``: one line before the
    episode runs; ``auto``: the video, with a note. Neither leaves MUJOCO_LOG.TXT."""
    display, _ = free_display()
    monkeypatch.setenv("DISPLAY", display)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.chdir(tmp_path)
    status, out, err = call_locomo("replay", "checkpoint=walker", "viewer=window", "max_steps=5")
    assert status == 2, err
    assert err.splitlines() == [
        f"locomo: error: viewer='window' is invalid: no usable display (DISPLAY='{display}': X11: Failed "
        f"to open display {display}); use viewer=auto or video"
    ]
    assert "replay" not in out  # refused before the episode ran
    video = tmp_path / "walker.mp4"
    args = ("viewer=auto", "max_steps=5", "width=64", "height=48", f"output={video}")
    status, out, err = call_locomo("replay", "checkpoint=walker", *args)
    assert status == 0, err
    assert f"locomo: no usable display (DISPLAY='{display}': " in err
    assert "writing a video instead of opening the viewer" in err and video.stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["walker.mp4"]  # no MUJOCO_LOG.TXT
