"""The networks: policies (Gaussian for Box actions, categorical for Discrete) and the value network.

An actor maps observations [B, O] to its action distribution (:mod:`locomo.rl.distributions`):
``actor(obs)`` is a :class:`~locomo.rl.distributions.BoundedGaussian` (``model.action_bounds=clip``,
every Box env by default), a :class:`~locomo.rl.distributions.Gaussian` (``action_bounds=none``) or
a :class:`~locomo.rl.distributions.Categorical`, and everything else is asked of that object:
``log_prob``, ``sample``, ``entropy``, ``mode``. The policy-gradient loss needs one thing of it,
log pi_theta(a | s) of the actions taken (and executed).

The running statistics that normalise observations, returns and value targets are
:mod:`locomo.rl.running_stats`'s. Checkpoints hold the modules' state dicts: the attribute names
here (``mean_net``, ``log_std``, ``action_scale``, ``action_offset``, ``logits_net``, ``net``,
``value_stats``) are the keys of every saved checkpoint.

Every network can be built on the meta device (``with torch.device("meta"): make_actor(...)``):
shapes and names without memory or random numbers, e.g. to check a checkpoint's weights against
its config.
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from locomo.config.schema import std_cap
from locomo.distributed import SINGLE, Group
from locomo.envs.base import SpaceInfo
from locomo.errors import ConfigError
from locomo.rl.distributions import ActionDistribution, BoundedGaussian, Categorical, Gaussian
from locomo.rl.running_stats import RunningMeanStd

if TYPE_CHECKING:
    from locomo.config.schema import ModelConfig

_ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU}


class MLP(nn.Sequential):
    """Layers in sequence; a half-precision output (the layers ran under ``torch.autocast``,
    ``train.update_precision``) comes back as float32, so the math around the nets stays float32.
    Float32 and float64 nets return their own dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = layer(x)
        if x.dtype == torch.bfloat16 or x.dtype == torch.float16:
            x = x.float()
        return x


def mlp(in_dim: int, hidden_sizes: list[int], out_dim: int, activation: str, out_gain: float) -> MLP:
    """An MLP with orthogonal init; the last layer's gain is ``out_gain`` (small for policy heads)."""
    layers: list[nn.Module] = []
    sizes = [in_dim, *hidden_sizes]
    for a, b in itertools.pairwise(sizes):
        linear = nn.Linear(a, b)
        nn.init.orthogonal_(linear.weight, math.sqrt(2))
        nn.init.zeros_(linear.bias)
        layers += [linear, _ACTIVATIONS[activation]()]
    head = nn.Linear(sizes[-1], out_dim)
    nn.init.orthogonal_(head.weight, out_gain)
    nn.init.zeros_(head.bias)
    layers.append(head)
    return MLP(*layers)


class Actor(nn.Module):
    """A policy pi_theta: ``actor(obs)`` [B, O] is pi_theta(. | s), an action distribution."""

    def forward(self, obs: torch.Tensor) -> ActionDistribution:
        """pi_theta(. | s) for obs [B, O]."""
        raise NotImplementedError

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """log pi_theta(a | s): obs [B, O], actions [B, A] or [B] -> [B]."""
        return self(obs).log_prob(actions)

    def act(self, obs: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Actions for obs [B, O], sampled (or the mode), and their log_prob [B] (collection)."""
        dist = self(obs)
        actions = dist.mode if deterministic else dist.sample()
        return actions, dist.log_prob(actions)

    def env_action(self, actions: torch.Tensor) -> torch.Tensor:
        """Stored actions [B, A] in the env's units (identity: the policy acts in them)."""
        return actions


class GaussianActor(Actor):
    """pi(.|s) = N(mu_theta(s), diag(exp(log_std))^2), log-std a free parameter (state-independent).

    With ``bounds=(low, high)`` ([A] each, finite) the Gaussian is over normalised actions and
    the stored action is its clip to [-1, 1] (:class:`~locomo.rl.distributions.BoundedGaussian`);
    ``action_scale`` and ``action_offset`` map it to the env's units and are saved with the weights.
    With ``max_log_std`` the std is ``exp(min(log_std, max_log_std))``: the noise is capped, and
    ``log_std`` above the cap gets no gradient.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden: list[int],
        activation: str,
        init_log_std: float,
        bounds: tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor] | None = None,
        max_log_std: float | None = None,
    ):
        super().__init__()
        self.max_log_std = max_log_std
        self.mean_net = mlp(obs_dim, hidden, action_dim, activation, out_gain=0.01)
        self.log_std = nn.Parameter(torch.full((action_dim,), float(init_log_std)))
        self.clipped = bounds is not None
        if bounds is not None:
            low, high = (torch.as_tensor(b, dtype=torch.float32).reshape(action_dim) for b in bounds)
            self.register_buffer("action_scale", (high - low) / 2)
            self.register_buffer("action_offset", (high + low) / 2)
        self._distribution = BoundedGaussian if self.clipped else Gaussian

    def forward(self, obs: torch.Tensor) -> Gaussian:
        """pi(.|s): mean [B, A] = mu_theta(obs), std [A] = :meth:`std`."""
        return self._distribution(self.mean_net(obs), self.std())

    def std(self) -> torch.Tensor:
        """[A] the policy's std: exp(log_std), capped at exp(max_log_std) when there is a cap."""
        if self.max_log_std is None:
            return self.log_std.exp()
        return self.log_std.clamp(max=self.max_log_std).exp()

    def env_action(self, actions: torch.Tensor) -> torch.Tensor:
        """low + (a + 1) (high - low) / 2 for bounded actions a [B, A] in [-1, 1]; else a itself."""
        if not self.clipped:
            return actions
        return torch.addcmul(self.action_offset, actions, self.action_scale)


class CategoricalActor(Actor):
    """pi(.|s) = Categorical(softmax(logits_theta(s))); log pi(a|s) = -cross_entropy(logits, a)."""

    def __init__(self, obs_dim: int, num_actions: int, hidden: list[int], activation: str):
        super().__init__()
        self.logits_net = mlp(obs_dim, hidden, num_actions, activation, out_gain=0.01)

    def forward(self, obs: torch.Tensor) -> Categorical:
        """pi(.|s) with logits [B, K] = logits_theta(obs)."""
        return Categorical(self.logits_net(obs))


class ValueNet(nn.Module):
    """V_phi(s): obs [B, O] -> [B], in the units of the (possibly scaled) rewards.

    With ``normalize_values`` the network regresses standardised targets (V - m) / s, with m, s
    the running mean and std of the value targets (``value_stats``, saved with the weights), and
    :meth:`forward` returns m + s * net(obs).
    """

    def __init__(self, obs_dim: int, hidden: list[int], activation: str, normalize_values: bool = False):
        super().__init__()
        self.net = mlp(obs_dim, hidden, 1, activation, out_gain=1.0)
        self.value_stats = RunningMeanStd(1) if normalize_values else None

    def _mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        stats = self.value_stats
        assert stats is not None
        return stats.mean.float(), torch.sqrt(stats.var + stats.eps).float()

    def normalized(self, obs: torch.Tensor) -> torch.Tensor:
        """The network's own output [B]: standardised values when ``normalize_values``, else V."""
        return self.net(obs).squeeze(-1)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        value = self.normalized(obs)
        if self.value_stats is None:
            return value
        mean, std = self._mean_std()
        return value * std + mean

    def update_stats(self, targets: torch.Tensor, group: Group = SINGLE) -> None:
        """Fold value targets [B] (every rank's) into the running statistics (no-op without them)."""
        if self.value_stats is not None:
            self.value_stats.update(targets.detach().unsqueeze(1), group)
            self.value_stats.sync(group)

    def normalize_targets(self, targets: torch.Tensor) -> torch.Tensor:
        """Targets [B] in the units :meth:`normalized` regresses."""
        if self.value_stats is None:
            return targets
        mean, std = self._mean_std()
        return (targets - mean) / std


def make_actor(
    spaces: SpaceInfo,
    hidden: list[int],
    activation: str,
    init_log_std: float,
    action_bounds: str = "none",
    max_log_std: float | None = None,
) -> Actor:
    """The policy that fits the action space.

    ``action_bounds``: ``clip`` acts in normalised units within the space's bounds (which must be
    finite; a checkpoint's saved bounds replace them on load), ``none`` in the env's units.
    ``max_log_std``: a cap on a Gaussian policy's log-std (None: none).
    """
    if spaces.discrete:
        return CategoricalActor(spaces.obs_dim, spaces.action_dim, hidden, activation)
    bounds = None
    if action_bounds == "clip":
        low, high = spaces.action_low, spaces.action_high
        if low is None or high is None:  # rebuilt from a checkpoint: load_state_dict sets them
            low, high = -np.ones(spaces.action_dim), np.ones(spaces.action_dim)
        # Checked in numpy, never on the device the nets are built on (the meta device has no values).
        if not (np.isfinite(low).all() and np.isfinite(high).all()):
            why = "this env's action bounds are not finite; use model.action_bounds=none"
            raise ConfigError("model.action_bounds", "clip", why)
        bounds = (low, high)
    obs_dim, action_dim = spaces.obs_dim, spaces.action_dim
    return GaussianActor(obs_dim, action_dim, hidden, activation, init_log_std, bounds, max_log_std)


def actor_for(spaces: SpaceInfo, model: ModelConfig, iteration: int) -> Actor:
    """The policy ``model`` (a run's ``model`` section, or a checkpoint's) describes, for
    ``spaces``, as it acts after ``iteration`` updates (its std's cap: :func:`std_cap`)."""
    return make_actor(
        spaces,
        list(model.hidden_sizes),
        model.activation,
        model.init_log_std,
        model.action_bounds,
        std_cap(model, iteration),
    )
