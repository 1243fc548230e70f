"""Bernoulli, categorical, Poisson and exponential distributions in minimal form.

The discrete families (whose sample space :meth:`~igbook.families.ExponentialFamily.support`
enumerates or truncates) and the exponential distribution, each with closed-form Fisher
information in natural and usual coordinates and a textbook KL divergence
:cite:`wainwright2008graphical,amari2016information`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from igbook._validation import (
    as_tensor,
    check_count,
    check_finite,
    check_positive,
    check_probability,
    check_scalar,
    check_shape,
    check_simplex,
    resolve_generator,
)
from igbook.families.base import ExponentialFamily

__all__ = ["Bernoulli", "Categorical", "Poisson", "Exponential"]


@dataclass(frozen=True)
class Bernoulli(ExponentialFamily):
    r"""Bernoulli distribution with success probability ``p`` in (0, 1).

    :math:`\eta = \log\frac{p}{1-p}`, :math:`T(x) = x`, :math:`A(\eta) = \log(1+e^\eta)`,
    :math:`\mu = p`; Fisher :math:`p(1-p)` in :math:`\eta` and :math:`1/(p(1-p))` in :math:`p`.
    """

    p: Tensor | float
    discrete: ClassVar[bool] = True

    def __post_init__(self) -> None:
        p = as_tensor(self.p, "p")
        check_shape(p, "p", ())
        check_probability(p, "p")
        object.__setattr__(self, "p", p)

    @classmethod
    def natural_from_params(cls, theta: Tensor) -> Tensor:
        return torch.logit(theta)

    @classmethod
    def params_from_natural(cls, eta: Tensor) -> Tensor:
        return torch.sigmoid(eta)

    @classmethod
    def log_partition(cls, eta: Tensor) -> Tensor:
        return torch.nn.functional.softplus(eta).sum()

    @classmethod
    def mean_from_natural(cls, eta: Tensor) -> Tensor:
        return torch.sigmoid(eta)

    @classmethod
    def natural_from_mean(cls, mu: Tensor) -> Tensor:
        return torch.logit(mu)

    @classmethod
    def sufficient_statistic(cls, x: Tensor) -> Tensor:
        return x.unsqueeze(-1)

    @classmethod
    def log_base_measure(cls, x: Tensor) -> Tensor:
        return torch.zeros_like(x)

    @classmethod
    def _natural_dim_or_none(cls) -> int | None:
        return 1

    @classmethod
    def _check_natural(cls, eta: Tensor) -> None:
        check_finite(eta, "eta")

    @classmethod
    def _check_mean(cls, mu: Tensor) -> None:
        check_probability(mu, "mu")

    @classmethod
    def from_params(cls, theta: Tensor) -> Bernoulli:
        return cls(p=cls._parameter_vector(theta, "theta", 1)[0])

    @property
    def params(self) -> Tensor:
        return self.p.reshape(1)  # type: ignore[union-attr]

    def _check_x(self, x: Tensor) -> None:
        if not bool(((x == 0) | (x == 1)).all()):
            raise ValueError("x must be 0 or 1 for a Bernoulli distribution")

    def sample(self, n, *, seed=None, generator=None):  # type: ignore[no-untyped-def]
        g = resolve_generator(seed, generator)
        u = torch.rand(check_count(n, "n"), generator=g, dtype=self.params.dtype)
        return (u < self.p).to(self.params.dtype)

    def support(self) -> Tensor:
        return torch.tensor([0.0, 1.0], dtype=self.params.dtype)

    def fisher_natural(self) -> Tensor:
        p = self.params
        return (p * (1 - p)).reshape(1, 1)

    def fisher(self) -> Tensor:
        p = self.params
        return (1.0 / (p * (1 - p))).reshape(1, 1)

    def fisher_mean(self) -> Tensor:
        return self.fisher()

    def kl(self, other: Bernoulli) -> Tensor:
        self._check_same_family(other)
        p, q = self.params[0], other.params[0]
        return p * torch.log(p / q) + (1 - p) * torch.log((1 - p) / (1 - q))


# =============================================================================================
@dataclass(frozen=True)
class Categorical(ExponentialFamily):
    r"""Categorical distribution on :math:`\{0,\dots,K-1\}` with probabilities ``probs``.

    Minimal form with the last category as reference: :math:`\eta_k = \log(p_k/p_{K-1})`,
    :math:`T(x)_k = [x=k]` for :math:`k<K-1`, :math:`A(\eta)=\log(1+\sum_k e^{\eta_k})`. The usual
    coordinates are the first :math:`K-1` probabilities, where the Fisher information is
    :math:`\mathrm{diag}(1/p_k) + \mathbf{1}\mathbf{1}^\top/p_{K-1}`.
    """

    probs: Tensor
    discrete: ClassVar[bool] = True

    def __post_init__(self) -> None:
        p = as_tensor(self.probs, "probs")
        check_shape(p, "probs", (None,))
        check_simplex(p, "probs")
        object.__setattr__(self, "probs", p)

    @property
    def num_categories(self) -> int:
        return int(self.probs.shape[0])

    @classmethod
    def natural_from_params(cls, theta: Tensor) -> Tensor:
        last = 1 - theta.sum()
        return torch.log(theta) - torch.log(last)

    @classmethod
    def params_from_natural(cls, eta: Tensor) -> Tensor:
        full = torch.cat([eta, torch.zeros(1, dtype=eta.dtype)])
        return torch.softmax(full, 0)[:-1]

    @classmethod
    def log_partition(cls, eta: Tensor) -> Tensor:
        return torch.logsumexp(torch.cat([eta, torch.zeros(1, dtype=eta.dtype)]), 0)

    @classmethod
    def mean_from_natural(cls, eta: Tensor) -> Tensor:
        return cls.params_from_natural(eta)

    @classmethod
    def natural_from_mean(cls, mu: Tensor) -> Tensor:
        return cls.natural_from_params(mu)

    def sufficient_statistic(self, x: Tensor) -> Tensor:  # type: ignore[override]
        """One-hot indicators of the first ``K-1`` categories (needs ``K``, so an instance method)."""
        k = torch.arange(self.num_categories - 1, dtype=x.dtype)
        return (x.unsqueeze(-1) == k).to(self.probs.dtype)

    @classmethod
    def log_base_measure(cls, x: Tensor) -> Tensor:
        return torch.zeros_like(x)

    @classmethod
    def log_prob_natural(cls, eta: Tensor, x: Tensor) -> Tensor:
        full = torch.cat([eta, torch.zeros(1, dtype=eta.dtype)])
        logp = full - torch.logsumexp(full, 0)
        onehot = (x.unsqueeze(-1) == torch.arange(full.shape[0], dtype=x.dtype)).to(eta.dtype)
        return onehot @ logp

    @classmethod
    def _check_natural(cls, eta: Tensor) -> None:
        check_finite(eta, "eta")

    @classmethod
    def _check_mean(cls, mu: Tensor) -> None:
        if not bool((mu > 0).all()) or not bool(mu.sum() < 1):
            raise ValueError(
                "mu must have positive entries summing to less than 1 (the free probabilities)"
            )

    @classmethod
    def from_params(cls, theta: Tensor) -> Categorical:
        theta = cls._parameter_vector(theta, "theta")
        return cls(probs=torch.cat([theta, (1 - theta.sum()).reshape(1)]))

    @property
    def params(self) -> Tensor:
        return self.probs[:-1]

    def _check_x(self, x: Tensor) -> None:
        if not bool(((x == x.round()) & (x >= 0) & (x < self.num_categories)).all()):
            raise ValueError(f"x must be an integer category in [0, {self.num_categories - 1}]")

    def sample(self, n, *, seed=None, generator=None):  # type: ignore[no-untyped-def]
        g = resolve_generator(seed, generator)
        return torch.multinomial(self.probs, check_count(n, "n"), replacement=True, generator=g).to(
            self.probs.dtype
        )

    def support(self) -> Tensor:
        return torch.arange(self.num_categories, dtype=self.probs.dtype)

    def fisher_natural(self) -> Tensor:
        p = self.params
        return torch.diag(p) - torch.outer(p, p)

    def fisher(self) -> Tensor:
        p = self.params
        return torch.diag(1.0 / p) + 1.0 / self.probs[-1]

    def kl(self, other: Categorical) -> Tensor:
        if not isinstance(other, Categorical):
            raise TypeError(f"other must be a Categorical, got {type(other).__name__}")
        if other.num_categories != self.num_categories:
            raise ValueError(
                f"other must have {self.num_categories} categories, got {other.num_categories}"
            )
        return (self.probs * torch.log(self.probs / other.probs)).sum()


# =============================================================================================
@dataclass(frozen=True)
class Poisson(ExponentialFamily):
    r"""Poisson distribution with rate :math:`\lambda > 0`.

    :math:`\eta = \log\lambda`, :math:`T(x) = x`, :math:`A(\eta) = e^\eta`,
    :math:`h(x) = 1/x!`; Fisher :math:`\lambda` in :math:`\eta` and :math:`1/\lambda` in :math:`\lambda`.
    """

    rate: Tensor | float
    discrete: ClassVar[bool] = True

    def __post_init__(self) -> None:
        r = as_tensor(self.rate, "rate")
        check_shape(r, "rate", ())
        check_positive(r, "rate")
        object.__setattr__(self, "rate", r)

    @classmethod
    def natural_from_params(cls, theta: Tensor) -> Tensor:
        return torch.log(theta)

    @classmethod
    def params_from_natural(cls, eta: Tensor) -> Tensor:
        return torch.exp(eta)

    @classmethod
    def log_partition(cls, eta: Tensor) -> Tensor:
        return torch.exp(eta).sum()

    @classmethod
    def mean_from_natural(cls, eta: Tensor) -> Tensor:
        return torch.exp(eta)

    @classmethod
    def natural_from_mean(cls, mu: Tensor) -> Tensor:
        return torch.log(mu)

    @classmethod
    def sufficient_statistic(cls, x: Tensor) -> Tensor:
        return x.unsqueeze(-1)

    @classmethod
    def log_base_measure(cls, x: Tensor) -> Tensor:
        return -torch.lgamma(x + 1)

    @classmethod
    def _natural_dim_or_none(cls) -> int | None:
        return 1

    @classmethod
    def _check_natural(cls, eta: Tensor) -> None:
        check_finite(eta, "eta")

    @classmethod
    def _check_mean(cls, mu: Tensor) -> None:
        check_positive(mu, "mu")

    @classmethod
    def from_params(cls, theta: Tensor) -> Poisson:
        return cls(rate=cls._parameter_vector(theta, "theta", 1)[0])

    @property
    def params(self) -> Tensor:
        return self.rate.reshape(1)  # type: ignore[union-attr]

    def _check_x(self, x: Tensor) -> None:
        if not bool(((x == x.round()) & (x >= 0)).all()):
            raise ValueError("x must be a non-negative integer count for a Poisson distribution")

    def sample(self, n, *, seed=None, generator=None):  # type: ignore[no-untyped-def]
        g = resolve_generator(seed, generator)
        return torch.poisson(
            self.rate * torch.ones(check_count(n, "n"), dtype=self.params.dtype), generator=g
        )

    def support(self, tail: float = 1e-15) -> Tensor:
        r"""Counts ``0..k_max``, with ``k_max`` past the mode where the omitted tail is below ``tail``.

        For :math:`k > \lambda` the tail beyond :math:`k` is at most
        :math:`p(k)\,\lambda/(k+1-\lambda)`, which is what is checked.
        """
        tail = check_scalar(tail, "tail", low=0.0, high=1.0, closed_low=False, closed_high=False)
        lam = float(self.rate)
        k = int(lam + 10 * math.sqrt(lam) + 20)
        while True:
            log_pk = k * math.log(lam) - lam - math.lgamma(k + 1)
            if math.exp(log_pk) * lam / (k + 1 - lam) < tail:
                break
            k = int(k * 1.5) + 1
        return torch.arange(k + 1, dtype=self.params.dtype)

    def fisher_natural(self) -> Tensor:
        return self.params.reshape(1, 1)

    def fisher(self) -> Tensor:
        return (1.0 / self.params).reshape(1, 1)

    def kl(self, other: Poisson) -> Tensor:
        self._check_same_family(other)
        p, q = self.params[0], other.params[0]
        return p * torch.log(p / q) - p + q

    def _expected_log_h(self) -> Tensor:
        ks = self.support()
        return (torch.exp(self.log_prob(ks)) * -torch.lgamma(ks + 1)).sum()


# =============================================================================================
@dataclass(frozen=True)
class Exponential(ExponentialFamily):
    r"""Exponential distribution with rate :math:`\lambda > 0` on :math:`x \ge 0`.

    :math:`\eta = -\lambda`, :math:`T(x) = x`, :math:`A(\eta) = -\log(-\eta)`; Fisher
    :math:`1/\eta^2 = 1/\lambda^2` in both coordinates.
    """

    rate: Tensor | float

    def __post_init__(self) -> None:
        r = as_tensor(self.rate, "rate")
        check_shape(r, "rate", ())
        check_positive(r, "rate")
        object.__setattr__(self, "rate", r)

    @classmethod
    def natural_from_params(cls, theta: Tensor) -> Tensor:
        return -theta

    @classmethod
    def params_from_natural(cls, eta: Tensor) -> Tensor:
        return -eta

    @classmethod
    def log_partition(cls, eta: Tensor) -> Tensor:
        return -torch.log(-eta).sum()

    @classmethod
    def mean_from_natural(cls, eta: Tensor) -> Tensor:
        return -1.0 / eta

    @classmethod
    def natural_from_mean(cls, mu: Tensor) -> Tensor:
        return -1.0 / mu

    @classmethod
    def sufficient_statistic(cls, x: Tensor) -> Tensor:
        return x.unsqueeze(-1)

    @classmethod
    def log_base_measure(cls, x: Tensor) -> Tensor:
        return torch.zeros_like(x)

    @classmethod
    def _natural_dim_or_none(cls) -> int | None:
        return 1

    @classmethod
    def _check_natural(cls, eta: Tensor) -> None:
        if not bool((eta < 0).all()):
            raise ValueError(f"eta = -rate must be < 0, got {float(eta.max()):.6g}")

    @classmethod
    def _check_mean(cls, mu: Tensor) -> None:
        check_positive(mu, "mu")

    @classmethod
    def from_params(cls, theta: Tensor) -> Exponential:
        return cls(rate=cls._parameter_vector(theta, "theta", 1)[0])

    @property
    def params(self) -> Tensor:
        return self.rate.reshape(1)  # type: ignore[union-attr]

    def _check_x(self, x: Tensor) -> None:
        check_finite(x, "x")
        if not bool((x >= 0).all()):
            raise ValueError("x must be >= 0 for an Exponential distribution")

    def sample(self, n, *, seed=None, generator=None):  # type: ignore[no-untyped-def]
        g = resolve_generator(seed, generator)
        u = torch.rand(check_count(n, "n"), generator=g, dtype=self.params.dtype)
        return -torch.log1p(-u) / self.rate

    def fisher_natural(self) -> Tensor:
        return (1.0 / self.params**2).reshape(1, 1)

    def fisher(self) -> Tensor:
        return (1.0 / self.params**2).reshape(1, 1)

    def kl(self, other: Exponential) -> Tensor:
        self._check_same_family(other)
        p, q = self.params[0], other.params[0]
        return torch.log(p / q) + q / p - 1
