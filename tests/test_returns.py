"""Returns, GAE and baselines against hand-computed numbers."""

from __future__ import annotations

import pytest
import torch

from locomo.rl import returns

F, T_ = False, True


def col(*values: float) -> torch.Tensor:
    """A [T, 1] float tensor."""
    return torch.tensor(values, dtype=torch.float64).unsqueeze(1)


def flags(*values: bool) -> torch.Tensor:
    """A [T, 1] bool tensor."""
    return torch.tensor(values).unsqueeze(1)


def test_reward_to_go_discounted_no_episode_end():
    r = col(1, 2, 3, 4)
    none = flags(F, F, F, F)
    g = returns.discounted_reward_to_go(r, none, none, gamma=0.5)
    # G3 = 4, G2 = 3 + 0.5*4 = 5, G1 = 2 + 0.5*5 = 4.5, G0 = 1 + 0.5*4.5 = 3.25
    assert g.squeeze(1).tolist() == [3.25, 4.5, 5.0, 4.0]


def test_total_vs_reward_to_go_with_episode_ending_mid_batch():
    r = col(1, 2, 3, 4)
    end = flags(F, T_, F, F)
    terminated = flags(F, T_, F, F)
    rtg = returns.discounted_reward_to_go(r, end, terminated, gamma=1.0)
    total = returns.total_return(r, end, terminated, gamma=1.0)
    assert rtg.squeeze(1).tolist() == [3, 2, 7, 4]
    assert total.squeeze(1).tolist() == [3, 3, 7, 7]


def test_total_return_is_discounted_from_segment_start():
    r = col(1, 1, 1)
    none = flags(F, F, F)
    total = returns.total_return(r, none, none, gamma=0.5)
    assert total.squeeze(1).tolist() == [1.75, 1.75, 1.75]


def test_truncation_bootstraps_but_termination_does_not():
    r = col(1, 2, 3, 4)
    end = flags(F, T_, F, F)
    next_v = col(0, 10, 0, 100)  # V(final obs) at the truncation, V(s_T) after the batch
    truncated = returns.discounted_reward_to_go(r, end, flags(F, F, F, F), 1.0, next_v)
    terminated = returns.discounted_reward_to_go(r, end, flags(F, T_, F, F), 1.0, next_v)
    assert truncated.squeeze(1).tolist() == [13, 12, 107, 104]
    assert terminated.squeeze(1).tolist() == [3, 2, 107, 104]


def test_termination_on_last_step_is_not_bootstrapped():
    r = col(1, 1)
    end = flags(F, T_)
    g = returns.discounted_reward_to_go(r, end, end, 1.0, col(50, 50))
    assert g.squeeze(1).tolist() == [2, 1]


def test_gae_lambda_one_equals_reward_to_go_minus_value():
    gen = torch.Generator().manual_seed(0)
    T, N = 12, 3
    r = torch.randn(T, N, generator=gen, dtype=torch.float64)
    v = torch.randn(T, N, generator=gen, dtype=torch.float64)
    next_v = torch.randn(T, N, generator=gen, dtype=torch.float64)
    end = torch.rand(T, N, generator=gen) < 0.2
    terminated = end & (torch.rand(T, N, generator=gen) < 0.5)
    # Inside an episode V(s_{t+1}) is the next row's value.
    next_v[:-1] = torch.where(end[:-1], next_v[:-1], v[1:])
    adv = returns.gae(r, v, next_v, end, terminated, gamma=0.97, lam=1.0)
    rtg = returns.discounted_reward_to_go(r, end, terminated, 0.97, next_v)
    torch.testing.assert_close(adv, rtg - v)


def test_gae_lambda_zero_is_td_error():
    r, v, next_v = col(1, 2), col(0.5, 0.25), col(0.25, 3.0)
    none = flags(F, F)
    adv = returns.gae(r, v, next_v, none, none, gamma=0.9, lam=0.0)
    assert adv.squeeze(1).tolist() == pytest.approx([1 + 0.9 * 0.25 - 0.5, 2 + 0.9 * 3.0 - 0.25])


def test_gae_hand_computed():
    r, v = col(1, 1), col(0, 0)
    next_v = col(0, 2)
    none = flags(F, F)
    adv = returns.gae(r, v, next_v, none, none, gamma=0.5, lam=0.5)
    # delta = [1, 1 + 0.5*2] = [1, 2]; A1 = 2, A0 = 1 + 0.25 * 2 = 1.5
    assert adv.squeeze(1).tolist() == [1.5, 2.0]


def test_segment_ids():
    end = torch.tensor([[F, T_], [T_, F], [F, F]])
    ids = returns.segment_ids(end)
    assert ids[:, 0].tolist() == [0, 0, 1]
    assert ids[:, 1].tolist() == [2, 3, 3]


def test_mean_and_optimal_baselines():
    ret = torch.tensor([1.0, 2.0, 3.0])
    assert float(returns.mean_baseline(ret)) == 2.0
    # b* = sum g^2 R / sum g^2 = (1*1 + 0*2 + 3*3) / 4
    assert float(returns.optimal_baseline(ret, torch.tensor([1.0, 0.0, 3.0]))) == 2.5


def test_normalize():
    x = returns.normalize(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert abs(float(x.mean())) < 1e-6
    assert abs(float(x.std()) - 1.0) < 1e-6


def test_reward_scaler_divides_by_running_std_of_discounted_return():
    from locomo.rl.running_stats import RewardScaler

    scaler = RewardScaler(num_envs=1, gamma=0.5).double()
    seen = []
    for r, end in [(1.0, False), (1.0, False), (1.0, True), (4.0, False)]:
        out = scaler(torch.tensor([r], dtype=torch.float64), torch.tensor([end]))
        # R: 1, 1.5, 1.75, then reset after the episode end: 4
        seen.append({1: 1.0, 2: 1.5, 3: 1.75, 4: 4.0}[len(seen) + 1])
        std = torch.tensor(seen, dtype=torch.float64).var(unbiased=False).add(1e-8).sqrt()
        assert float(out) == pytest.approx(min(r / float(std), 10.0))
    disabled = RewardScaler(num_envs=2, gamma=0.9, enabled=False)
    rewards = torch.tensor([3.0, -2.0])
    assert torch.equal(disabled(rewards, torch.tensor([False, True])), rewards)
