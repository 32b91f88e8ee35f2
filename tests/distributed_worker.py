"""One rank of the 2-process equality check in tests/test_distributed.py (run by torchrun).

``torchrun --nproc_per_node=K tests/distributed_worker.py <out.pt>``: every rank builds the same
learners and the same synthetic job batches (T steps x N envs), keeps its own N/K envs, and runs
the updates with the ranks' gradients summed; rank 0 saves the resulting weights and statistics.
The test runs :func:`run_case` in one process on the whole batches and compares.
"""

from __future__ import annotations

import sys
from typing import Any

import torch

# Each case: the overrides of a preset whose update must come out the same.
CASES: dict[str, list[str]] = {
    "reinforce": ["env=inverted_pendulum", "algo=reinforce"],
    "mean_baseline": ["env=inverted_pendulum", "algo=baseline", "algo.normalize_advantages=true"],
    "optimal_reward_to_go": ["env=inverted_pendulum", "algo=baseline", "algo.baseline=optimal"],
    "optimal_total": ["env=inverted_pendulum", "algo=reinforce", "algo.baseline=optimal"],
    "trajectory_importance": ["env=inverted_pendulum", "algo=importance", "algo.importance=trajectory"],
    "clipped": ["env=inverted_pendulum", "algo=clipped"],  # 10 epochs x 32 minibatches of 4
    "clipped_discrete": ["env=cartpole", "algo=clipped", "algo.epochs=3"],
    "clipped_kl_stop": ["env=inverted_pendulum", "algo=clipped", "algo.target_kl=0.01"],  # stops early
    # kl_threshold low enough that the adaptive lr moves
    "walk": ["env=inverted_pendulum", "algo=walk", "model.hidden_sizes=[64,64]", "algo.kl_threshold=0.002"],
    # earlier batches trained on again (the third update reuses two), each advantage correction
    "walk_reuse_vtrace": [
        "env=inverted_pendulum", "algo=walk", "model.hidden_sizes=[64,64]", "algo.reuse_batches=3",
    ],
    # the humanoid's mirror images in the update, the symmetry loss instead, and both (the recipe's)
    "walk_symmetry_augment": [
        "env=humanoid", "algo=walk", "model.hidden_sizes=[32]", "algo.symmetry=augment",
    ],
    "walk_symmetry_loss": ["env=humanoid", "algo=walk", "model.hidden_sizes=[32]", "algo.symmetry=loss"],
    "walk_symmetry_both": [
        "env=humanoid", "algo=walk", "model.hidden_sizes=[32]", "algo.symmetry=both",
        "algo.symmetry_pairs=false",
    ],
    # both, each minibatch's images beside their samples (the symmetry loss reads their forward pass)
    "walk_symmetry_pairs": [
        "env=humanoid", "algo=walk", "model.hidden_sizes=[32]", "algo.symmetry=both",
        "algo.symmetry_pairs=true",
    ],
    "clipped_reuse_truncated": [
        "env=inverted_pendulum", "algo=clipped", "algo.epochs=2", "algo.minibatches=4",
        "algo.reuse_batches=2", "algo.reuse_correction=truncated",
    ],
}  # fmt: skip
STEPS, ENVS = 16, 8  # the job's batch: T x N = 128 samples
UPDATES = 3


def synthetic_batch(actor: Any, spaces: Any, generator: torch.Generator) -> Any:
    """A [T, N] batch with episodes ending (terminated or truncated) at random, the same on every
    rank for the same generator state; old log-probs off the current ones so weights are not 1."""
    from locomo.rl.buffer import RolloutBatch

    T, N = STEPS, ENVS
    obs = torch.randn(T, N, spaces.obs_dim, generator=generator)
    if spaces.discrete:
        actions = torch.randint(0, spaces.action_dim, (T, N), generator=generator)
    else:  # some at the clip bounds, where the clipped Gaussian's log-likelihood is a tail mass
        actions = (1.5 * torch.randn(T, N, spaces.action_dim, generator=generator)).clamp(-1.0, 1.0)
    with torch.no_grad():
        log_probs = actor.log_prob(obs.flatten(0, 1), actions.flatten(0, 1)).view(T, N)
    log_probs = log_probs + 0.1 * torch.randn(T, N, generator=generator)
    end = torch.rand(T, N, generator=generator) < 0.1
    terminated = end & (torch.rand(T, N, generator=generator) < 0.5)
    return RolloutBatch(
        obs,
        actions,
        log_probs,
        torch.randn(T, N, generator=generator) + 1.0,
        terminated,
        end & ~terminated,
        torch.randn(T, N, generator=generator),
        torch.randn(T, N, generator=generator),
    )


def columns(batch: Any, first: int, count: int) -> Any:
    """The envs [first, first + count) of a [T, N] batch."""
    return type(batch)(*(x[:, first : first + count].contiguous() for x in batch))


def run_case(
    overrides: list[str], group: Any, critic_thread: bool = False, precision: torch.dtype = torch.float32
) -> dict[str, Any]:
    """Build the learners of ``overrides`` (seed 0), run :data:`UPDATES` updates on this rank's
    envs of the synthetic batches (the critic's half of each step in its own thread with
    ``critic_thread``; the nets' products in ``precision``); return the weights before and
    after, statistics, lr and last diagnostics."""
    from locomo.envs import make_vec_env
    from locomo.rl.algorithm import PolicyGradient
    from locomo.rl.factory import make_learners, seed_everything
    from locomo.rl.symmetry import make_policy_mirror
    from tests.conftest import compose

    cfg = compose(*overrides, "train.num_envs=8", "train.steps_per_iteration=128", "train.device=cpu")
    env = make_vec_env(cfg.env, 1)
    spaces = env.spaces
    seed_everything(0)
    actor, critic, normalizer, _ = make_learners(cfg, spaces, torch.device("cpu"))
    mirror = make_policy_mirror(cfg.algo.symmetry, env, cfg.env, spaces, normalizer)
    env.close()
    algorithm = PolicyGradient(
        actor,
        critic,
        cfg.algo,
        torch.Generator().manual_seed(0),
        group,
        mirror=mirror,
        critic_thread=critic_thread,
        precision=precision,
    )
    start = {"actor": actor.state_dict(), "critic": critic.state_dict() if critic is not None else None}
    start = {
        part: None if sd is None else {k: v.clone() for k, v in sd.items()} for part, sd in start.items()
    }
    data = torch.Generator().manual_seed(1)
    first, count = group.shard(ENVS)
    info: dict[str, float] = {}
    kept: list[Any] = []  # as the runner keeps them: the last algo.reuse_batches - 1 batches
    for _ in range(UPDATES):
        batch = columns(synthetic_batch(actor, spaces, data), first, count)
        info = algorithm.update(batch, kept[len(kept) - cfg.algo.reuse_batches + 1 :])
        kept.append(batch)
    return {
        "actor": {k: v.clone() for k, v in actor.state_dict().items()},
        "critic": None if critic is None else {k: v.clone() for k, v in critic.state_dict().items()},
        "lr": algorithm.lr,
        "info": info,
        "start": start,
    }


def normaliser_stats(group: Any) -> list[dict[str, Any]]:
    """The observation normaliser's and the reward scaler's statistics at each of 4 syncs, 5 steps of
    N envs apart, each rank feeding its own envs (observations far from zero: the merge must not
    lose the variance to cancellation)."""
    from locomo.rl.running_stats import RewardScaler, RunningMeanStd

    data = torch.Generator().manual_seed(2)
    first, count = group.shard(ENVS)
    normalizer = RunningMeanStd(5)
    scaler = RewardScaler(count, gamma=0.99)
    synced = []
    for step in range(20):
        obs = 100.0 + 3.0 * torch.randn(ENVS, 5, generator=data)
        rewards = torch.randn(ENVS, generator=data)
        done = torch.rand(ENVS, generator=data) < 0.2
        normalizer.update(obs[first : first + count], group)
        scaler(rewards[first : first + count], done[first : first + count], group)
        if step % 5 == 4:  # a batch of 5 steps ends
            normalizer.sync(group)
            scaler.sync(group)
            synced.append(
                {
                    "obs": {k: v.clone() for k, v in normalizer.state_dict().items()},
                    "returns_std": {k: v.clone() for k, v in scaler.returns_std.state_dict().items()},
                }
            )
    return synced


def main(out: str) -> None:
    from locomo import distributed

    group = distributed.init()
    results = {name: run_case(overrides, group) for name, overrides in CASES.items()}
    results["normalisers"] = normaliser_stats(group)
    if group.is_main:
        torch.save(results, out)
    distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
