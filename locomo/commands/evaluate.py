"""``locomo eval``: return, length, distance and behaviour counts of a checkpoint's policy over N
seeded episodes, in deterministic and/or stochastic mode (a table on stdout, the full result as JSON)."""

from __future__ import annotations

import json
from typing import Any

from omegaconf import DictConfig, OmegaConf

from locomo.config.validation import validate_eval_config
from locomo.errors import ConfigError
from locomo.runs.outputs import safe_output, write_text_atomic

CONFIG = "eval"


def run(cfg: DictConfig) -> dict[str, Any]:
    """Episodes in the chosen modes, a table on stdout, the full result as JSON."""
    import torch

    from locomo.evaluation.episodes import (
        check_episode_count,
        evaluate_modes,
        format_table,
        load_policy,
        output_root,
        summarize,
    )

    validate_eval_config(cfg)
    check_episode_count(cfg.episodes, "eval")
    # A path given is checked before anything loads; the default one once the run is known.
    given = None if cfg.output is None else safe_output(cfg.output, "json", "output", cfg.overwrite)
    torch.set_num_threads(1)
    policy = load_policy(cfg.checkpoint)
    out = given or safe_output(
        output_root(policy, "eval") / f"{policy.path.stem}_seed{cfg.seed}.json", "json", "output"
    )
    modes = ["deterministic", "stochastic"] if cfg.mode == "both" else [cfg.mode]
    # The modes share seeds and envs; episodes run in chunks (memory stays flat).
    rollouts = evaluate_modes(policy, modes, cfg.episodes, cfg.seed, cfg.behavior, cfg.max_steps, "eval")
    results = {mode: summarize(runs) for mode, runs in rollouts.items()}
    report = {
        "checkpoint": str(policy.path),
        "env": policy.cfg.env.name,
        "counters": policy.counters,
        "seed": cfg.seed,
        "seeds": [cfg.seed + i for i in range(cfg.episodes)],
        "max_steps": cfg.max_steps,
        "behavior_thresholds": OmegaConf.to_container(cfg.behavior),
        "modes": results,
    }
    try:
        write_text_atomic(out, json.dumps(report, indent=2) + "\n")
    except OSError as exc:
        raise ConfigError("output", str(out), f"cannot write there ({exc.strerror or exc})") from exc
    iteration = policy.counters.get("iteration", "?")
    last_seed = cfg.seed + cfg.episodes - 1
    print(f"{policy.path} (iteration {iteration}, {policy.cfg.env.name}), seeds {cfg.seed}..{last_seed}")
    print(format_table(results))
    print(f"wrote {out}")
    return report
