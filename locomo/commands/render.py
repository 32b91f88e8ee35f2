"""``locomo render``: labelled videos of a checkpoint's rollouts (grid, one per episode, a PNG sheet),
or of several checkpoints of one run side by side (``iterations=[...]``)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from locomo.config import validate_render_config

CONFIG = "render"



def run(cfg: Any) -> list[Path]:
    """N labelled rollouts of a checkpoint -> grid mp4, per-episode mp4s, PNG sheet."""
    import torch

    from locomo.behavior import format_counts, label_counts
    from locomo.evaluation import Rollout, load_policy, run_episodes
    from locomo.rendering import FrameRenderer, VideoStats, contact_sheet, model_of, write_rollout_video

    validate_render_config(cfg)
    torch.set_num_threads(1)
    if cfg.iterations:
        return render_comparison(cfg)
    policy = load_policy(cfg.checkpoint)
    out_dir = Path(cfg.output_dir) if cfg.output_dir else Path("videos") / policy.run_name
    mode = "deterministic" if cfg.deterministic else "stochastic"
    stem = f"{policy.path.stem}_seed{cfg.seed}_{mode}"
    env = policy.make_env(cfg.episodes)
    try:
        model = model_of(env, policy.cfg.env.id)
        start = time.perf_counter()
        rollouts = run_episodes(
            policy, env, cfg.seed, cfg.deterministic, cfg.behavior, cfg.max_steps, True
        )
        rollout_s = time.perf_counter() - start
    finally:
        env.close()
    written: list[Path] = []
    total = VideoStats(rollout_s=rollout_s)
    with FrameRenderer(model, cfg.width, cfg.height, cfg.camera, cfg.quality) as renderer:
        jobs: list[tuple[Path, list[Rollout], int]] = []
        if cfg.grid:
            jobs.append((out_dir / f"{stem}_grid.mp4", rollouts, 1))
        if cfg.per_episode:
            for i, r in enumerate(rollouts):
                label = "unlabelled" if r.behavior is None else r.behavior.label
                jobs.append((out_dir / f"{stem}_ep{i + 1:02d}_{label}.mp4", [r], i + 1))
        for path, group, first in jobs:
            stats = write_rollout_video(path, group, renderer, cfg.fps, cfg.columns, first)
            for key in ("frames", "renders", "render_s", "overlay_s", "encode_s"):
                setattr(total, key, getattr(total, key) + getattr(stats, key))
            written.append(path)
        if cfg.sheet:
            sheet_path = out_dir / f"{stem}_sheet.png"
            # No video may have made the folder (grid=false per_episode=false).
            out_dir.mkdir(parents=True, exist_ok=True)
            contact_sheet(rollouts, renderer).save(sheet_path, optimize=True)
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
    from locomo.config import ConfigError
    from locomo.evaluation import checkpoint_run_dir, resolve_checkpoint_path

    folder = checkpoint_run_dir(resolve_checkpoint_path(checkpoint)) / "checkpoints"
    paths = [folder / f"iter_{it:06d}.pt" for it in iterations]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        have = sorted(int(p.stem[5:]) for p in folder.glob("iter_*.pt") if p.stem[5:].isdigit())
        raise ConfigError(
            "iterations", list(iterations), f"no {missing[0]}; this run has checkpoints of iterations {have}"
        )
    return paths


def render_comparison(cfg: Any) -> list[Path]:
    """``locomo render iterations=[...]``: the same seeds under several checkpoints of one run.

    One column per checkpoint (titled with its iteration and env steps), one row per episode:
    ``<run>_iters_<a>-<b>-..._seed<seed>_<mode>.mp4`` and a PNG sheet with a row per tile.
    """
    from locomo.behavior import format_counts, label_counts
    from locomo.evaluation import load_policy, run_episodes
    from locomo.rendering import FrameRenderer, contact_sheet, model_of, write_rollout_video

    paths = comparison_checkpoints(cfg.checkpoint, list(cfg.iterations))
    policies = [load_policy(p) for p in paths]
    mode = "deterministic" if cfg.deterministic else "stochastic"
    out_dir = Path(cfg.output_dir) if cfg.output_dir else Path("videos") / policies[0].run_name
    stem = f"iters_{'-'.join(str(i) for i in cfg.iterations)}_seed{cfg.seed}_{mode}"
    titles = [
        f"iter {it} ({policy.counters.get('env_steps', 0) / 1e6:.1f}M steps)"
        for it, policy in zip(cfg.iterations, policies, strict=True)
    ]
    written: list[Path] = []
    # Checkpoints of one run share its env: one env serves every policy's rollouts and the renderer.
    env = policies[0].make_env(cfg.episodes)
    try:
        start = time.perf_counter()
        per_policy = [
            run_episodes(p, env, cfg.seed, cfg.deterministic, cfg.behavior, cfg.max_steps, True)
            for p in policies
        ]
        rollout_s = time.perf_counter() - start
        # Row e holds episode e under every checkpoint, left to right in training order.
        tiles = [per_policy[c][e] for e in range(cfg.episodes) for c in range(len(policies))]
        tile_titles = [titles[c] for _ in range(cfg.episodes) for c in range(len(policies))]
        model = model_of(env, policies[0].cfg.env.id)
        with FrameRenderer(model, cfg.width, cfg.height, cfg.camera, cfg.quality) as renderer:
            if cfg.grid:
                path = out_dir / f"{stem}.mp4"
                write_rollout_video(path, tiles, renderer, cfg.fps, len(policies), 1, tile_titles)
                written.append(path)
            if cfg.sheet:
                path = out_dir / f"{stem}_sheet.png"
                out_dir.mkdir(parents=True, exist_ok=True)
                contact_sheet(tiles, renderer, titles=tile_titles).save(path, optimize=True)
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
