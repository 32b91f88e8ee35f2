"""``locomo render``: labelled videos of a checkpoint's rollouts (grid, one per episode, a PNG sheet),
or of several checkpoints of one run side by side (``iterations=[...]``)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from locomo.config.validation import validate_render_config
from locomo.runs.outputs import OutputInterrupted, atomic_output, safe_output, safe_output_dir

CONFIG = "render"


def output_dir(cfg: Any, policy: Any) -> Path:
    """``output_dir`` as given (checked before anything loads), else ``<run>/render/``
    (``outputs/render/<time>/`` for a shipped policy)."""
    from locomo.evaluation.episodes import output_root

    if cfg.output_dir is not None:
        return safe_output_dir(cfg.output_dir, "output_dir")
    return safe_output_dir(output_root(policy, "render"), "output_dir")


def save_sheet(image: Any, path: Path, overwrite: bool) -> None:
    """The PNG contact sheet, checked and written atomically as every output is."""
    with atomic_output(safe_output(path, "figure", "output_dir", overwrite)) as tmp:
        image.save(tmp, format="PNG", optimize=True)


def run(cfg: Any) -> list[Path]:
    """N labelled rollouts of a checkpoint -> grid mp4, per-episode mp4s, PNG sheet (or, with
    ``iterations``, several checkpoints side by side). Ctrl-C says which files are finished."""
    import torch

    validate_render_config(cfg)
    check_something_to_write(cfg)
    if cfg.iterations:
        comparison_checkpoints(cfg.checkpoint, list(cfg.iterations))  # before anything loads
    if cfg.output_dir is not None:
        safe_output_dir(cfg.output_dir, "output_dir")
    torch.set_num_threads(1)
    written: list[Path] = []
    try:
        return render_comparison(cfg, written) if cfg.iterations else render_one(cfg, written)
    except KeyboardInterrupt as exc:  # say what is on disk: videos, not checkpoints
        raise OutputInterrupted(exc, written, written[0].parent if written else None) from exc


def check_something_to_write(cfg: Any) -> None:
    """Refuse, before any rollout, a config that would write no file (it ran the episodes, wrote
    nothing and exited 0)."""
    from locomo.errors import ConfigError

    if cfg.iterations:  # a comparison writes one grid video and one sheet, no per-episode videos
        if not (cfg.grid or cfg.sheet):
            raise ConfigError(
                "grid",
                cfg.grid,
                "grid and sheet are both false, and with iterations= nothing else is written "
                "(per_episode is not used); set grid=true or sheet=true",
            )
    elif not (cfg.grid or cfg.per_episode or cfg.sheet):
        raise ConfigError(
            "grid",
            cfg.grid,
            "grid, per_episode and sheet are all false, so nothing would be written; set one of "
            "them to true (or use locomo eval for the numbers alone)",
        )


def render_one(cfg: Any, written: list[Path]) -> list[Path]:
    """One checkpoint's rollouts; appends each file to ``written`` once it is complete."""
    from locomo.evaluation.behavior import format_counts, label_counts
    from locomo.evaluation.episodes import load_policy, run_episodes
    from locomo.evaluation.offscreen import FrameRenderer, check_offscreen, model_of
    from locomo.evaluation.progress import render_progress
    from locomo.evaluation.rendering import VideoStats, contact_sheet, write_rollout_video
    from locomo.evaluation.rollout import Rollout

    policy = load_policy(cfg.checkpoint)
    out_dir = output_dir(cfg, policy)
    mode = "deterministic" if cfg.deterministic else "stochastic"
    stem = f"{policy.path.stem}_seed{cfg.seed}_{mode}"
    env = policy.make_env(cfg.episodes)
    try:
        model = model_of(env, policy.cfg.env.id)
        check_offscreen()  # a GL that cannot render fails now, not after the rollouts
        start = time.perf_counter()
        rollouts = run_episodes(
            policy, env, cfg.seed, cfg.deterministic, cfg.behavior, cfg.max_steps, True, "render: rollouts"
        )
        rollout_s = time.perf_counter() - start
    finally:
        env.close()
    total = VideoStats(rollout_s=rollout_s)
    jobs: list[tuple[Path, list[Rollout], int]] = []
    if cfg.grid:
        jobs.append((out_dir / f"{stem}_grid.mp4", rollouts, 1))
    if cfg.per_episode:
        for i, r in enumerate(rollouts):
            label = "unlabelled" if r.behavior is None else r.behavior.label
            jobs.append((out_dir / f"{stem}_ep{i + 1:02d}_{label}.mp4", [r], i + 1))
    for path, _, _ in jobs:
        safe_output(path, "video", "output_dir", cfg.overwrite)
    videos, sheet = [group for _, group, _ in jobs], rollouts if cfg.sheet else []
    with (
        FrameRenderer(model, cfg.width, cfg.height, cfg.camera, cfg.quality) as renderer,
        render_progress(renderer, "render: videos", videos, cfg.fps, sheet),
    ):
        for path, group, first in jobs:
            stats = write_rollout_video(path, group, renderer, cfg.fps, cfg.columns, first)
            for key in ("frames", "renders", "render_s", "overlay_s", "encode_s"):
                setattr(total, key, getattr(total, key) + getattr(stats, key))
            written.append(path)
        if cfg.sheet:
            sheet_path = out_dir / f"{stem}_sheet.png"
            save_sheet(contact_sheet(rollouts, renderer), sheet_path, cfg.overwrite)
            written.append(sheet_path)
    for i, r in enumerate(rollouts):
        b = r.behavior
        label = "-" if b is None else f"{b.label:<16} distance {b.distance:5.2f} m  pitch {b.pitch_deg:6.1f}"
        ret, length = r.record.ret, r.record.length
        print(f"episode {i + 1:>2}  seed {r.seed:>4}  return {ret:9.2f}  length {length:>5}  {label}")
    print(f"behaviour: {format_counts(label_counts(r.behavior for r in rollouts))}")
    per_frame = 1000.0 * total.render_s / max(total.renders, 1)
    print(
        f"render cost: {per_frame:.1f} ms per rendered frame ({renderer.width}x{renderer.height}, "
        f"{cfg.quality}), {total.frames} video frames in {total.total_s:.1f} s "
        f"(rollouts {total.rollout_s:.1f} s, render {total.render_s:.1f} s, overlay {total.overlay_s:.1f} s, "
        f"encode {total.encode_s:.1f} s)"
    )
    for path in written:
        print(f"wrote {path}")
    return written


def comparison_checkpoints(checkpoint: str, iterations: Sequence[int]) -> list[Path]:
    """``iter_XXXXXX.pt`` of ``checkpoint``'s run for each iteration; ConfigError names what exists."""
    from locomo.errors import ConfigError
    from locomo.evaluation.episodes import checkpoint_run_dir, resolve_checkpoint_path
    from locomo.paths import ASSETS_DIR

    resolved = resolve_checkpoint_path(checkpoint)
    folder = checkpoint_run_dir(resolved) / "checkpoints"
    if not folder.is_dir():  # e.g. checkpoint=walker: a single policy shipped in assets/, no run
        what = (
            f"{resolved.name}, the policy shipped with locomo"
            if resolved.parent.resolve() == ASSETS_DIR.resolve()
            else f"{resolved}, which is not in a run's checkpoints/ folder"
        )
        raise ConfigError(
            "iterations",
            list(iterations),
            f"it needs checkpoint= to be a training run directory (it compares the run's "
            f"checkpoints/iter_*.pt); checkpoint={checkpoint} is {what}; give a run directory, or "
            "leave iterations out to render this one policy",
        )
    paths = [folder / f"iter_{it:06d}.pt" for it in iterations]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        have = sorted(int(p.stem[5:]) for p in folder.glob("iter_*.pt") if p.stem[5:].isdigit())
        raise ConfigError(
            "iterations", list(iterations), f"no {missing[0]}; this run has checkpoints of iterations {have}"
        )
    return paths


def render_comparison(cfg: Any, written: list[Path]) -> list[Path]:
    """``locomo render iterations=[...]``: the same seeds under several checkpoints of one run.

    One column per checkpoint (titled with its iteration and env steps), one row per episode:
    ``<run>_iters_<a>-<b>-..._seed<seed>_<mode>.mp4`` and a PNG sheet with a row per tile.
    """
    from locomo.evaluation.behavior import format_counts, label_counts
    from locomo.evaluation.episodes import load_policy, run_episodes
    from locomo.evaluation.offscreen import FrameRenderer, check_offscreen, model_of
    from locomo.evaluation.progress import render_progress
    from locomo.evaluation.rendering import contact_sheet, write_rollout_video

    paths = comparison_checkpoints(cfg.checkpoint, list(cfg.iterations))
    policies = [load_policy(p) for p in paths]
    mode = "deterministic" if cfg.deterministic else "stochastic"
    out_dir = output_dir(cfg, policies[0])
    stem = f"iters_{'-'.join(str(i) for i in cfg.iterations)}_seed{cfg.seed}_{mode}"
    titles = [
        f"iter {it} ({policy.counters.get('env_steps', 0) / 1e6:.1f}M steps)"
        for it, policy in zip(cfg.iterations, policies, strict=True)
    ]
    # Checkpoints of one run share its env: one env serves every policy's rollouts and the renderer.
    env = policies[0].make_env(cfg.episodes)
    try:
        model = model_of(env, policies[0].cfg.env.id)
        check_offscreen()  # a GL that cannot render fails now, not after the rollouts
        start = time.perf_counter()
        per_policy = [
            run_episodes(
                p, env, cfg.seed, cfg.deterministic, cfg.behavior, cfg.max_steps, True, f"render: {it}"
            )
            for p, it in zip(policies, titles, strict=True)
        ]
        rollout_s = time.perf_counter() - start
        # Row e holds episode e under every checkpoint, left to right in training order.
        tiles = [per_policy[c][e] for e in range(cfg.episodes) for c in range(len(policies))]
        tile_titles = [titles[c] for _ in range(cfg.episodes) for c in range(len(policies))]
        videos, sheet = [tiles] if cfg.grid else [], tiles if cfg.sheet else []
        with (
            FrameRenderer(model, cfg.width, cfg.height, cfg.camera, cfg.quality) as renderer,
            render_progress(renderer, "render: videos", videos, cfg.fps, sheet),
        ):
            if cfg.grid:
                path = safe_output(out_dir / f"{stem}.mp4", "video", "output_dir", cfg.overwrite)
                write_rollout_video(path, tiles, renderer, cfg.fps, len(policies), 1, tile_titles)
                written.append(path)
            if cfg.sheet:
                path = out_dir / f"{stem}_sheet.png"
                save_sheet(contact_sheet(tiles, renderer, titles=tile_titles), path, cfg.overwrite)
                written.append(path)
    finally:
        env.close()
    for title, rollouts in zip(titles, per_policy, strict=True):
        counts = format_counts(label_counts(r.behavior for r in rollouts))
        mean_ret = sum(r.record.ret for r in rollouts) / len(rollouts)
        mean_len = sum(r.record.length for r in rollouts) / len(rollouts)
        print(f"{title:<24} return {mean_ret:9.1f}  length {mean_len:6.0f}  {counts}")
    print(f"rollouts {rollout_s:.1f} s")
    for path in written:
        print(f"wrote {path}")
    return written
