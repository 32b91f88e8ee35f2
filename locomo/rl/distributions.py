"""The policy's action distributions: one object per state batch, with ``log_prob``, ``sample``,
``entropy`` and ``mode``.

An actor (:mod:`locomo.rl.policy`) maps observations [B, O] to one of these, and every user of the
policy goes through it: collection and the update (:mod:`locomo.rl.collector`, :mod:`locomo.rl.losses`),
evaluation (:mod:`locomo.evaluation.episodes`), export (:mod:`locomo.evaluation.deploy`) and the Python API
(:mod:`locomo.api`). So the likelihood the update differentiates is always that of the action the
env executed. B states, A action dims.

- :class:`BoundedGaussian` (``model.action_bounds=clip``, every Box env by default). The Gaussian
  lives in normalised units u, in which the env's bounds [low, high] are [-1, 1]; the action
  stored and executed is a = clip(u, -1, 1) (the env maps it to ``low + (a + 1) (high - low) / 2``).
  The policy over executed actions is then the *clipped* (censored) Gaussian, whose
  log-likelihood is that of the executed action (Fujita & Maeda 2018, "Clipped Action Policy
  Gradient"), per dim j:

      log pi(a_j|s) = log N(a_j; mu_j, sigma_j)         if -1 < a_j < 1
                    = log Phi((-1 - mu_j) / sigma_j)     if a_j = -1   (the mass clipped to -1)
                    = log Phi((mu_j - 1) / sigma_j)      if a_j = +1   (the mass clipped to +1)

  Its score function has the same expectation as the unclipped one's and a smaller variance.
- :class:`Gaussian` (``model.action_bounds=none``): the Gaussian in the env's own units, the env
  clips, and the log-likelihood is the unclipped sample's (how checkpoints from before the option
  behave):

      log pi(a|s) = -sum_j [ (a_j - mu_j)^2 / (2 sigma_j^2) + log sigma_j + log(2 pi) / 2 ]

- :class:`Categorical` (Discrete actions): softmax over logits; log pi(a|s) = logits_a - logsumexp.

The two Gaussians share a state-independent std sigma [A] (a free parameter of the actor), and
report the entropy of the Gaussian *before* any clip: what the entropy bonus widens.
"""

from __future__ import annotations

import math

import torch
from torch.distributions import Categorical as TorchCategorical

_LOG_SQRT_2PI = math.log(math.sqrt(2 * math.pi))


# -- the math, as pure functions ------------------------------------------------------------------


def gaussian_log_prob(actions: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """log N(a; mu, diag(std^2)) summed over action dims: actions, mean [B, A], std [A] -> [B].

    The operations of ``Independent(Normal(mean, std), 1).log_prob`` in the same order, so the same
    bits, without building torch's distribution objects (they cost more than the math on one env step).
    """
    return (-((actions - mean) ** 2) / (2 * std**2) - std.log() - _LOG_SQRT_2PI).sum(-1)


def log_ndtr(x: torch.Tensor) -> torch.Tensor:
    """log Phi(x), the log of the standard normal CDF, finite far into both tails (any shape).

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

    Inside (-1, 1) the Gaussian density; at the bounds (and beyond them) the log of the mass
    beyond them, log Phi((mu - 1) / std) at +1 and log Phi((-1 - mu) / std) at -1
    (:func:`log_ndtr` stays finite far in the tail, where Phi itself underflows).
    """
    inner = -((actions - mean) ** 2) / (2 * std**2) - std.log() - _LOG_SQRT_2PI
    upper = log_ndtr((mean - 1.0) / std)
    lower = log_ndtr((-1.0 - mean) / std)
    per_dim = torch.where(actions >= 1.0, upper, torch.where(actions <= -1.0, lower, inner))
    return per_dim.sum(-1)


def gaussian_entropy(std: torch.Tensor) -> torch.Tensor:
    """H = sum_j (1/2 + log(2 pi)/2 + log sigma_j) of N(mu, diag(std^2)): std [A] -> [] (no mu in it)."""
    return (0.5 + _LOG_SQRT_2PI + std.log()).sum()


# -- the distribution objects ---------------------------------------------------------------------


class Gaussian:
    """pi(.|s) = N(mu(s), diag(sigma^2)) over actions in the env's units (``action_bounds=none``).

    ``mean`` [B, A]; ``std`` [A], the same for every state. Its entropy is computed here, with the
    distribution, since it does not depend on the state (and so that its operations come before any
    log-likelihood's: the update's gradients then sum in the same order as ever, bit for bit).
    """

    __slots__ = ("_entropy", "mean", "std")

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.mean, self.std = mean, std
        self._entropy = gaussian_entropy(std)

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        """log pi(a|s) [B] of actions [B, A] (:func:`gaussian_log_prob`)."""
        return gaussian_log_prob(actions, self.mean, self.std)

    def entropy(self) -> torch.Tensor:
        """H(pi(.|s)) of the Gaussian: [] (the same for every state; ``.mean()`` is the batch's)."""
        return self._entropy

    def bound(self, u: torch.Tensor) -> torch.Tensor:
        """The action executed and stored for a draw u [B, A] of the Gaussian (itself here)."""
        return u

    @property
    def mode(self) -> torch.Tensor:
        """The deterministic action [B, A]: the most likely one, mu (bounded by :meth:`bound`)."""
        return self.bound(self.mean)

    @torch.no_grad()
    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """Actions [B, A]: u ~ N(mu, sigma^2), then :meth:`bound`. With ``generator`` the draw
        comes from it, on its device (a CPU generator for a policy on a GPU: the result is on the CPU)."""
        mean, std = self.mean, self.std
        if generator is not None and generator.device != mean.device:
            mean, std = mean.to(generator.device), std.to(generator.device)
        return self.bound(torch.normal(mean, std.expand_as(mean), generator=generator))


class BoundedGaussian(Gaussian):
    """The clipped Gaussian of ``action_bounds=clip``: u ~ N(mu(s), diag(sigma^2)) in normalised
    units, a = clip(u, -1, 1) executed and stored, log pi(a|s) the censored likelihood
    (:func:`clipped_gaussian_log_prob`: the tails' mass at the bounds). ``mode`` is clip(mu, -1, 1),
    and ``entropy`` stays the Gaussian's before the clip (see the module docstring)."""

    __slots__ = ()

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        """log pi(a|s) [B] of actions [B, A] in [-1, 1] (a value beyond a bound counts as at it)."""
        return clipped_gaussian_log_prob(actions, self.mean, self.std)

    def bound(self, u: torch.Tensor) -> torch.Tensor:
        """clip(u, -1, 1) [B, A]: what the env executes for a draw u."""
        return u.clamp(-1.0, 1.0)


class Categorical:
    """pi(a|s) = softmax(logits(s))_a over K actions: ``logits`` [B, K]; actions are int64 [B]."""

    __slots__ = ("_dist",)

    def __init__(self, logits: torch.Tensor) -> None:
        # torch's Categorical for the arithmetic (log-softmax, entropy), without argument checks.
        self._dist = TorchCategorical(logits=logits, validate_args=False)

    @property
    def probs(self) -> torch.Tensor:
        """[B, K] action probabilities."""
        return self._dist.probs

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        """log pi(a|s) [B] of actions [B] (int64)."""
        return self._dist.log_prob(actions)

    def entropy(self) -> torch.Tensor:
        """H(pi(.|s)) = -sum_a p_a log p_a: [B]."""
        return self._dist.entropy()

    @property
    def mode(self) -> torch.Tensor:
        """The deterministic action [B]: argmax_a pi(a|s)."""
        return self.probs.argmax(-1)

    @torch.no_grad()
    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """Actions [B] drawn from pi(.|s) (from ``generator`` on its device, when given)."""
        probs = self.probs
        if generator is not None and generator.device != probs.device:
            probs = probs.to(generator.device)
        probs_2d = probs.reshape(-1, probs.shape[-1])
        return torch.multinomial(probs_2d, 1, True, generator=generator).T.reshape(probs.shape[:-1])


ActionDistribution = Gaussian | Categorical
"""What an actor returns (:class:`BoundedGaussian` is a :class:`Gaussian`)."""
