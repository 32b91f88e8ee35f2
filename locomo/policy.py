"""Policies (Gaussian for Box actions, categorical for Discrete), value network, observation normaliser.

The policy-gradient loss needs one thing from a policy: ``log_prob(obs, actions)``, the log
likelihood log pi_theta(a | s) of the taken actions. For a Gaussian with mean mu_theta(s) and
state-independent std sigma it is

    log pi(a|s) = -sum_j [ (a_j - mu_j)^2 / (2 sigma_j^2) + log sigma_j + log(2 pi) / 2 ]

(a log-std-weighted squared error), for a categorical it is minus the cross-entropy of the
logits against the taken action.

Bounded actions (``model.action_bounds=clip``, every Box env by default): the Gaussian lives in
normalised units u in which the env's bounds [low, high] are [-1, 1]; the env executes
``low + (a + 1) (high - low) / 2`` with a = clip(u, -1, 1), and a is what is stored. The policy
over executed actions is then the *clipped* (censored) Gaussian, so the stored log-likelihood is
that of the executed action (Fujita & Maeda 2018, "Clipped Action Policy Gradient"), per dim j:

    log pi(a_j|s) = log N(a_j; mu_j, sigma_j)        if -1 < a_j < 1
                  = log Phi((-1 - mu_j) / sigma_j)    if a_j = -1   (the mass clipped to -1)
                  = log Phi((mu_j - 1) / sigma_j)     if a_j = +1   (the mass clipped to +1)

Its score function has the same expectation as the unclipped one and a smaller variance.
``model.action_bounds=none`` keeps the Gaussian in the env's own units and lets the env clip,
with the log-likelihood of the unclipped sample (how checkpoints before this option behave).
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn
from torch.distributions import Categorical, Distribution, Independent, Normal

from locomo.distributed import SINGLE, Group
from locomo.envs.base import SpaceInfo

_ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU}
_LOG_SQRT_2PI = math.log(math.sqrt(2 * math.pi))


def gaussian_log_prob(actions: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """log N(a; mu, diag(std^2)) summed over action dims: actions, mean [B, A], std [A] -> [B].

    The operations of ``Independent(Normal(mean, std), 1).log_prob`` in the same order, so the same
    bits, without building distribution objects (they cost more than the math on one env step).
    """
    return (-((actions - mean) ** 2) / (2 * std**2) - std.log() - _LOG_SQRT_2PI).sum(-1)


def log_ndtr(x: torch.Tensor) -> torch.Tensor:
    """log Phi(x), the log of the standard normal CDF, finite far into both tails.

    x < 0: log(erfc(-x / sqrt 2) / 2) = log(erfcx(-x / sqrt 2) / 2) - x^2 / 2 (erfcx(z) = e^(z^2)
    erfc(z) does not underflow); x >= 0: log1p(-erfc(x / sqrt 2) / 2). The same numbers as
    ``torch.special.log_ndtr``, from ops that torch.func's vmap batches (the optimal baseline's
    per-sample gradients); each branch sees only its own half of x, so neither sends inf or NaN
    into the other's gradient.
    """
    z_neg = x.clamp(max=0.0) / math.sqrt(2)
    z_pos = x.clamp(min=0.0) / math.sqrt(2)
    negative = torch.log(0.5 * torch.special.erfcx(-z_neg)) - z_neg * z_neg
    positive = torch.log1p(-0.5 * torch.special.erfc(z_pos))
    return torch.where(x < 0, negative, positive)


def clipped_gaussian_log_prob(actions: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """log-likelihood of a = clip(u, -1, 1), u ~ N(mu, diag(std^2)): actions, mean [B, A], std [A] -> [B].

    Inside (-1, 1) the Gaussian density; at the bounds the log of the mass beyond them,
    log Phi((mu - 1) / std) at +1 and log Phi((-1 - mu) / std) at -1 (:func:`log_ndtr` stays
    finite far in the tail, where Phi itself underflows).
    """
    inner = -((actions - mean) ** 2) / (2 * std**2) - std.log() - _LOG_SQRT_2PI
    upper = log_ndtr((mean - 1.0) / std)
    lower = log_ndtr((-1.0 - mean) / std)
    per_dim = torch.where(actions >= 1.0, upper, torch.where(actions <= -1.0, lower, inner))
    return per_dim.sum(-1)


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


class ObsNormalizer(nn.Module):
    """Running mean/variance of observations (Chan et al. parallel update); saved with the model.

    Folding a batch of n with mean m_b and variance v_b into c samples with mean m and variance v:

        t = c + n,  d = m_b - m,  m <- m + d n / t,  v <- v c / t + v_b n / t + d^2 c n / t^2
    """

    def __init__(self, obs_dim: int, enabled: bool = True, clip: float = 10.0, eps: float = 1e-8) -> None:
        super().__init__()
        self.enabled, self.clip, self.eps = enabled, clip, eps
        self.register_buffer("mean", torch.zeros(obs_dim, dtype=torch.float64))
        self.register_buffer("var", torch.ones(obs_dim, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(0.0, dtype=torch.float64))
        # Caches for the per-step hot path, dropped whenever the buffers may have changed:
        # (mean, std) in the dtype of the observations, and the count as a Python float (so the
        # update's weights are plain numbers, not tensor ops and, on a GPU, no sync).
        self._affine: tuple[torch.Tensor, torch.Tensor] | None = None
        self._count: float | None = None
        # Several ranks: the statistics (mean, var, count) at the last sync, and the sums of what
        # this rank has seen since (see :meth:`sync`).
        self._synced: tuple[torch.Tensor, torch.Tensor, float] | None = None
        self._pending: torch.Tensor | None = None

    def _load_from_state_dict(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        self._affine, self._count = None, None
        self._synced, self._pending = None, None
        super()._load_from_state_dict(*args, **kwargs)

    def _apply(self, *args, **kwargs):  # type: ignore[no-untyped-def]  # .to(), .cuda(), .double()
        self._affine, self._count = None, None
        return super()._apply(*args, **kwargs)

    @torch.no_grad()
    def update(self, obs: torch.Tensor, group: Group = SINGLE) -> None:
        """Fold a batch obs [B, O] into the running statistics.

        With several ranks (``group``) this rank's statistics take in its own observations at
        once, and the ranks agree again at the next :meth:`sync`, which folds in everyone's.
        """
        if not self.enabled:
            return
        x = obs.to(torch.float64)
        if group.active:
            self._remember(x)
        # Two-pass variance: as exact as x.var(0), ~5x faster on small batches (runs every env step).
        batch_mean, n = x.mean(0), x.shape[0]
        batch_var = (x - batch_mean).square_().mean(0)
        c = float(self.count) if self._count is None else self._count
        t = c + n
        delta = batch_mean.sub_(self.mean)
        self.mean.add_(delta, alpha=n / t)
        self.var.mul_(c / t).add_(batch_var, alpha=n / t).add_(delta.square_(), alpha=c * n / t**2)
        self.count.fill_(t)
        self._affine, self._count = None, t

    def _remember(self, x: torch.Tensor) -> None:
        """Add x [B, O] to the sums since the last sync: n, sum d and sum d^2 with d = x - m, m the
        mean at the last sync (the same on every rank; the sums are of small numbers, so the
        subtraction in :meth:`sync` loses no precision)."""
        pending = self._pending if self._pending is not None else self._start_pending()
        assert self._synced is not None
        d = x - self._synced[0]
        dim = self.mean.shape[0]
        pending[:dim] += d.sum(0)
        pending[dim : 2 * dim] += d.square().sum(0)
        pending[-1] += x.shape[0]

    def _start_pending(self) -> torch.Tensor:
        """Remember the statistics as they are now (the last sync's) and start empty sums."""
        self._synced = (self.mean.clone(), self.var.clone(), float(self.count))
        self._pending = torch.zeros(2 * self.mean.shape[0] + 1, dtype=torch.float64, device=self.mean.device)
        return self._pending

    @torch.no_grad()
    def sync(self, group: Group) -> None:
        """Make every rank's statistics the job's: the statistics at the last sync with every
        rank's observations since then folded in (one all-reduce of 2 O + 1 numbers).

        Over all n new rows, batch mean = m + sum d / n and batch variance = sum d^2 / n -
        (sum d / n)^2; then the same parallel update as :meth:`update`, from the last sync's state.
        Every rank must call it at the same point (the collective); a no-op in one process.
        """
        if not self.enabled or not group.active:
            return
        dim = self.mean.shape[0]
        # Nothing seen since the last sync: empty sums, but still take part in the collective.
        pending = self._pending if self._pending is not None else self._start_pending()
        assert self._synced is not None
        sums = group.sum_(pending)
        mean, var, c = self._synced
        self._synced, self._pending = None, None
        n = float(sums[-1])
        if n == 0:
            return
        delta = sums[:dim] / n
        batch_var = (sums[dim : 2 * dim] / n - delta.square()).clamp_(min=0.0)
        t = c + n
        self.mean.copy_(mean + delta * (n / t))
        self.var.copy_(var * (c / t) + batch_var * (n / t) + delta.square() * (c * n / t**2))
        self.count.fill_(t)
        self._affine, self._count = None, t

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Normalised obs [B, O], clipped to +-clip."""
        if not self.enabled:
            return obs
        if self._affine is None or self._affine[0].dtype != obs.dtype:
            self._affine = (self.mean.to(obs.dtype), torch.sqrt(self.var.to(obs.dtype) + self.eps))
        mean, std = self._affine
        return ((obs - mean) / std).clamp(-self.clip, self.clip)


class RewardScaler(nn.Module):
    """Divides rewards by the running std of each env's discounted return (saved with the model).

    R_n <- gamma * R_n * (1 - done_n) + r_n  per env n;  r / sqrt(Var[R] + eps), clipped to +-clip.
    The scale of the returns stops depending on the task's reward units, which keeps the value
    loss (and its share of a clipped gradient norm) in range; advantages change by a positive
    constant factor per batch, so the estimator's direction is unchanged. (The same trick as
    Stable-Baselines3's VecNormalize(norm_reward=True) and Gymnasium's NormalizeReward.)
    """

    def __init__(self, num_envs: int, gamma: float, enabled: bool = True, clip: float = 10.0) -> None:
        super().__init__()
        self.enabled, self.gamma, self.clip = enabled, gamma, clip
        self.returns_std = ObsNormalizer(1, enabled=enabled)
        self.register_buffer("running_return", torch.zeros(num_envs, dtype=torch.float64))

    @torch.no_grad()
    def forward(
        self, rewards: torch.Tensor, episode_end: torch.Tensor, group: Group = SINGLE
    ) -> torch.Tensor:
        """Scaled rewards [N] for rewards [N]; episode_end [N] bool resets R_n after this step.

        With several ranks, N is this rank's envs; the std is every rank's after :meth:`sync`.
        """
        if not self.enabled:
            return rewards
        self.running_return.mul_(self.gamma).add_(rewards.to(torch.float64))
        self.returns_std.update(self.running_return.unsqueeze(1), group)
        scale = torch.sqrt(self.returns_std.var + self.returns_std.eps).to(rewards.dtype)
        self.running_return.masked_fill_(episode_end, 0.0)
        return (rewards / scale).clamp(-self.clip, self.clip)

    def sync(self, group: Group) -> None:
        """Make the returns' statistics the job's (:meth:`ObsNormalizer.sync`)."""
        self.returns_std.sync(group)


class Actor(nn.Module):
    """Common interface of the policies: distribution, log-prob, entropy, action selection."""

    def distribution(self, obs: torch.Tensor) -> Distribution:
        """pi_theta(. | s) for obs [B, O]."""
        raise NotImplementedError

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """log pi_theta(a | s): obs [B, O], actions [B, A] or [B] -> [B]."""
        return self.distribution(obs).log_prob(actions)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The module's forward is the log-likelihood (what torch.func transforms need)."""
        return self.log_prob(obs, actions)

    def log_prob_and_entropy(
        self, obs: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """log pi_theta(a | s) [B] and the mean entropy (a scalar) from one forward pass over obs [B, O]."""
        dist = self.distribution(obs)
        return dist.log_prob(actions), dist.entropy().mean()

    def act(self, obs: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample (or take the mode of) actions for obs [B, O]; return (actions, log_prob [B])."""
        dist = self.distribution(obs)
        actions = self.mode(dist) if deterministic else dist.sample()
        return actions, dist.log_prob(actions)

    def mode(self, dist: Distribution) -> torch.Tensor:
        """The most likely action of a distribution."""
        raise NotImplementedError

    def bound(self, samples: torch.Tensor) -> torch.Tensor:
        """The action stored and executed for raw draws of :meth:`distribution` (identity here)."""
        return samples

    def env_action(self, actions: torch.Tensor) -> torch.Tensor:
        """Stored actions [B, A] in the env's units (identity: the policy acts in them)."""
        return actions


class GaussianActor(Actor):
    """a ~ N(mu_theta(s), diag(exp(log_std))^2), log-std a free parameter (state-independent).

    With ``bounds=(low, high)`` ([A] each, finite) the Gaussian is over normalised actions and
    the stored action is its clip to [-1, 1] (see the module docstring); ``action_scale`` and
    ``action_offset`` map it to the env's units and are saved with the weights.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden: list[int],
        activation: str,
        init_log_std: float,
        bounds: tuple[torch.Tensor, torch.Tensor] | None = None,
    ):
        super().__init__()
        self.mean_net = mlp(obs_dim, hidden, action_dim, activation, out_gain=0.01)
        self.log_std = nn.Parameter(torch.full((action_dim,), float(init_log_std)))
        self.clipped = bounds is not None
        if bounds is not None:
            low, high = (torch.as_tensor(b, dtype=torch.float32).reshape(action_dim) for b in bounds)
            self.register_buffer("action_scale", (high - low) / 2)
            self.register_buffer("action_offset", (high + low) / 2)
        self._log_prob_fn = clipped_gaussian_log_prob if self.clipped else gaussian_log_prob

    def distribution(self, obs: torch.Tensor) -> Distribution:
        mean = self.mean_net(obs)
        # No argument validation: it costs ~15% of an update; non-finite values are caught by the
        # training loop's own checks, with a message that says where they came from.
        std = self.log_std.exp().expand_as(mean)
        return Independent(Normal(mean, std, validate_args=False), 1, validate_args=False)

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self._log_prob_fn(actions, self.mean_net(obs), self.log_std.exp())

    def log_prob_and_entropy(
        self, obs: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # The std does not depend on the state, so neither does the entropy:
        # H = sum_j (1/2 + log(2 pi)/2 + log sigma_j), the same for every sample. (With clipped
        # actions it is the entropy of the Gaussian before the clip: what the bonus widens.)
        std = self.log_std.exp()
        entropy = (0.5 + _LOG_SQRT_2PI + std.log()).sum()
        return self._log_prob_fn(actions, self.mean_net(obs), std), entropy

    def act(self, obs: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        # What Actor.act does with the distribution, on the collection hot path without it:
        # Normal.sample draws torch.normal(mean, std) without grad, so the same numbers.
        mean, std = self.mean_net(obs), self.log_std.exp()
        if deterministic:
            actions = mean
        else:
            with torch.no_grad():
                actions = torch.normal(mean, std.expand_as(mean))
        actions = self.bound(actions)
        return actions, self._log_prob_fn(actions, mean, std)

    def mode(self, dist: Distribution) -> torch.Tensor:
        return self.bound(dist.mean)

    def bound(self, samples: torch.Tensor) -> torch.Tensor:
        return samples.clamp(-1.0, 1.0) if self.clipped else samples

    def env_action(self, actions: torch.Tensor) -> torch.Tensor:
        if not self.clipped:
            return actions
        return torch.addcmul(self.action_offset, actions, self.action_scale)


class CategoricalActor(Actor):
    """a ~ Categorical(softmax(logits_theta(s))); log pi(a|s) = -cross_entropy(logits, a)."""

    def __init__(self, obs_dim: int, num_actions: int, hidden: list[int], activation: str):
        super().__init__()
        self.logits_net = mlp(obs_dim, hidden, num_actions, activation, out_gain=0.01)

    def distribution(self, obs: torch.Tensor) -> Distribution:
        return Categorical(logits=self.logits_net(obs), validate_args=False)

    def mode(self, dist: Distribution) -> torch.Tensor:
        assert isinstance(dist, Categorical)
        return dist.probs.argmax(-1)


class ValueNet(nn.Module):
    """V_phi(s): obs [B, O] -> [B], in the units of the (possibly scaled) rewards.

    With ``normalize_values`` the network regresses standardised targets (V - m) / s, with m, s
    the running mean and std of the value targets (``value_stats``, saved with the weights), and
    :meth:`forward` returns m + s * net(obs).
    """

    def __init__(self, obs_dim: int, hidden: list[int], activation: str, normalize_values: bool = False):
        super().__init__()
        self.net = mlp(obs_dim, hidden, 1, activation, out_gain=1.0)
        self.value_stats = ObsNormalizer(1) if normalize_values else None

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
    spaces: SpaceInfo, hidden: list[int], activation: str, init_log_std: float, action_bounds: str = "none"
) -> Actor:
    """The policy that fits the action space.

    ``action_bounds``: ``clip`` acts in normalised units within the space's bounds (which must be
    finite; a checkpoint's saved bounds replace them on load), ``none`` in the env's units.
    """
    if spaces.discrete:
        return CategoricalActor(spaces.obs_dim, spaces.action_dim, hidden, activation)
    bounds = None
    if action_bounds == "clip":
        low, high = spaces.action_low, spaces.action_high
        if low is None or high is None:  # rebuilt from a checkpoint: load_state_dict sets them
            low, high = -torch.ones(spaces.action_dim), torch.ones(spaces.action_dim)
        bounds = (torch.as_tensor(low), torch.as_tensor(high))
        if not all(bool(torch.isfinite(b).all()) for b in bounds):
            from locomo.config import ConfigError

            why = "this env's action bounds are not finite; use model.action_bounds=none"
            raise ConfigError("model.action_bounds", "clip", why)
    return GaussianActor(spaces.obs_dim, spaces.action_dim, hidden, activation, init_log_std, bounds)
