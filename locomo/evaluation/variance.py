"""The lecture's claims, measured: each estimator's policy-gradient variance at one policy.

``locomo variance``: collect K independent batches with one fixed policy, compute each
estimator's policy gradient on every batch, and compare the estimators' spread:

    mean   m  = (1/K) sum_k g_k
    var       = 1/(K-1) sum_k |g_k - m|^2        (trace of the covariance)
    rel. var  = var / |m_ref|^2                  (m_ref: the mean over all estimators, all batches)

All estimators here are unbiased estimates of the same gradient (up to the O(1/N) shift of a
baseline estimated on its own batch), so the one with the smaller variance needs fewer samples.
The figure of the table is :func:`locomo.evaluation.plots.plot_variance`.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from locomo.config.schema import AlgoConfig, saved_model_differences
from locomo.envs import TorchVecEnv, make_vec_env
from locomo.errors import ConfigError
from locomo.evaluation.episodes import shipped_checkpoint
from locomo.evaluation.progress import progress_bar
from locomo.rl import losses
from locomo.rl.advantages import compute_advantages
from locomo.rl.buffer import RolloutBatch
from locomo.rl.collector import Collector
from locomo.rl.factory import make_learners, resolve_device, seed_everything
from locomo.rl.policy import Actor
from locomo.runs.checkpoint import CheckpointError, load
from locomo.runs.checkpoint_format import check_spaces

ESTIMATOR_RETURNS = ("total", "reward_to_go")
ESTIMATOR_BASELINES = ("none", "mean", "optimal")


def parse_estimator(name: str) -> tuple[str, str]:
    """``"reward_to_go/mean"`` -> ("reward_to_go", "mean"); ConfigError for anything else."""
    parts = name.split("/")
    allowed = ", ".join(f"{r}/{b}" for r in ESTIMATOR_RETURNS for b in ESTIMATOR_BASELINES)
    if len(parts) != 2 or parts[0] not in ESTIMATOR_RETURNS or parts[1] not in ESTIMATOR_BASELINES:
        raise ConfigError("estimators", name, f"each must be one of {allowed}")
    return parts[0], parts[1]


def validate_variance(cfg: DictConfig) -> None:
    """``locomo variance``'s own keys, before any env is built: a non-empty list of distinct
    estimators, at least two batches."""
    estimators = list(cfg.estimators)
    if not estimators:
        allowed = ", ".join(f"{r}/{b}" for r in ESTIMATOR_RETURNS for b in ESTIMATOR_BASELINES)
        raise ConfigError("estimators", estimators, f"must be a non-empty list of: {allowed}")
    for name in estimators:
        parse_estimator(name)
    repeated = sorted({name for name in estimators if estimators.count(name) > 1})
    if repeated:  # one gradient per estimator and batch: a repeat would count each batch twice
        raise ConfigError("estimators", estimators, f"lists {', '.join(repeated)} more than once")
    if cfg.batches < 2:
        raise ConfigError("batches", cfg.batches, "must be >= 2 (a variance needs two samples)")


def checkpoint_state(cfg: DictConfig) -> dict[str, Any]:
    """The checkpoint ``locomo variance`` measures at: a file, a run directory, or the name of a
    policy shipped in ``assets/`` (``walker``), as render, eval, replay and export resolve it."""
    return load(shipped_checkpoint(cfg.checkpoint) or cfg.checkpoint)


def with_checkpoint_model(cfg: DictConfig, state: dict[str, Any]) -> DictConfig:
    """``cfg`` with the checkpoint's own ``model.*`` (its policy's layers), as every command that
    loads a checkpoint builds it; a note names the settings that differ from the composed ones."""
    changed = saved_model_differences(state.get("config"), cfg.model)
    if not changed:
        return cfg
    shown = " ".join(f"model.{key}={value}" for key, value in changed.items())
    print(
        f"locomo: checkpoint={cfg.checkpoint}: measuring with its own model settings ({shown})",
        file=sys.stderr,
    )
    out = cfg.copy()
    out.model = OmegaConf.merge(cfg.model, changed)
    return out


def estimator_gradient(
    actor: Actor, batch: RolloutBatch, algo_cfg: DictConfig | AlgoConfig, returns: str, baseline: str
) -> torch.Tensor:
    """The surrogate's gradient [P] (P = the actor's parameter count) for one estimator on one
    batch (advantages not normalised); ``batch`` holds [T, N, ...] tensors, as collected."""
    cfg = OmegaConf.merge(algo_cfg, {"returns": returns, "baseline": baseline, "normalize_advantages": False})
    adv = compute_advantages(batch, cfg, actor)
    obs, actions = batch.obs.flatten(0, 1), batch.actions.flatten(0, 1)
    log_prob = actor.log_prob(obs, actions)
    loss, _ = losses.policy_surrogate_loss(log_prob, adv.advantages, torch.ones_like(log_prob))
    grads = torch.autograd.grad(loss, [p for p in actor.parameters()], allow_unused=True)
    return torch.cat(
        [
            (g if g is not None else torch.zeros_like(p)).flatten()
            for g, p in zip(grads, actor.parameters(), strict=True)
        ]
    )


def variance_table(gradients: dict[str, torch.Tensor]) -> dict[str, dict[str, float]]:
    """Per estimator: variance (trace of covariance), mean-gradient norm, variance relative to |m_ref|^2.

    Args:
        gradients: name -> [K, P] gradient of each of K batches.
    """
    reference = torch.cat(list(gradients.values())).mean(0)
    ref_sq = float(reference.pow(2).sum())
    table = {}
    for name, g in gradients.items():
        mean = g.mean(0)
        var = float((g - mean).pow(2).sum(1).sum() / max(g.shape[0] - 1, 1))
        table[name] = {
            "variance": var,
            "mean_norm": float(mean.norm()),
            "relative_variance": var / ref_sq if ref_sq > 0 else float("nan"),
        }
    return table


def measure_gradient_variance(cfg: DictConfig) -> dict[str, dict[str, float]]:
    """Collect ``cfg.batches`` batches with a fixed policy; return :func:`variance_table`."""
    validate_variance(cfg)
    estimators = [parse_estimator(name) for name in cfg.estimators]
    state = None if cfg.checkpoint is None else checkpoint_state(cfg)
    if state is not None:
        cfg = with_checkpoint_model(cfg, state)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.train.device)
    env = TorchVecEnv(make_vec_env(cfg.env, cfg.train.num_envs), device)
    try:
        actor, critic, normalizer, scaler = make_learners(cfg, env.spaces, device)
        steps_per_env = cfg.train.steps_per_iteration // cfg.train.num_envs
        collector = Collector(env, actor, critic, normalizer, scaler, steps_per_env, device)
        if state is not None:
            spaces = env.spaces
            check_spaces(state, spaces.obs_dim, spaces.action_dim, spaces.discrete, cfg.env.name)
            try:
                actor.load_state_dict(state["actor"])
                normalizer.load_state_dict(state["obs_normalizer"])
            except (KeyError, RuntimeError) as exc:  # weights that do not fit the model stored with them
                reason = str(exc).strip().splitlines()
                raise CheckpointError(
                    f"checkpoint={cfg.checkpoint}: its policy does not fit its own model settings "
                    f"({reason[1].strip() if len(reason) > 1 else reason[0] if reason else exc!r}); "
                    "the file is damaged or was edited; use another checkpoint"
                ) from exc
        grads: dict[str, list[torch.Tensor]] = defaultdict(list)
        obs_raw = env.reset(cfg.seed)
        with progress_bar(cfg.batches, "variance: batches", "batch") as bar:
            for _ in range(cfg.batches):
                batch, obs_raw, _episodes, _terms = collector.collect(obs_raw)
                batch = RolloutBatch(*(t.clone() for t in batch))  # leave inference mode's tensors behind
                for returns, baseline in estimators:
                    grads[f"{returns}/{baseline}"].append(
                        estimator_gradient(actor, batch, cfg.algo, returns, baseline)
                    )
                bar.update(1)
    finally:
        env.close()
    return variance_table({name: torch.stack(g) for name, g in grads.items()})


def write_json(data: Any, path: Path) -> None:
    """``data`` as indented JSON (the variance table, for ``gradient_variance.json``)."""
    path.write_text(json.dumps(data, indent=2) + "\n")
