r"""Exponential families in minimal form, with closed-form geometry.

Every family here is written as

.. math::

    q_\eta(x) = h(x)\,\exp\big(\eta^\top T(x) - A(\eta)\big),

with natural parameter :math:`\eta`, sufficient statistic :math:`T`, log-partition :math:`A`
and mean parameter :math:`\mu = \mathbb{E}_{q_\eta}[T(x)] = \nabla A(\eta)`
:cite:`wainwright2008graphical`. Each family has three coordinate systems, all flat 1-D
tensors so that every Fisher matrix is an ordinary matrix:

``params``
    the usual coordinates (``p`` for a Bernoulli, ``(mu, sigma)`` for a Gaussian, ...);
``natural``
    :math:`\eta`;
``mean``
    :math:`\mu`.

A distribution is a small frozen dataclass (``Gaussian(mu=0.0, sigma=1.0)``) whose
constructor validates its arguments. Class methods give the pure, differentiable maps between
the coordinate systems and the log-densities in each, for use with :mod:`torch.func`; they do
*not* validate, so that they can be traced, differentiated and vectorized.

Closed forms provided by every family: log-partition, sufficient statistics, log-density,
seeded sampling, the Fisher information in natural and in usual coordinates, the KL
divergence (a textbook formula, checked in the tests against the Bregman form
:meth:`ExponentialFamily.kl_bregman` and against Monte Carlo), entropy, and the convex
conjugate :math:`A^*(\mu)`.

Legendre duality: :math:`\nabla A(\eta) = \mu` (:meth:`~ExponentialFamily.mean_from_natural`),
:math:`\nabla A^*(\mu) = \eta` (:meth:`~ExponentialFamily.natural_from_mean`), and the two
Bregman divergences :meth:`~ExponentialFamily.bregman_natural` (of :math:`A`) and
:meth:`~ExponentialFamily.bregman_mean` (of :math:`A^*`), both equal to a KL divergence.

:class:`Beta`, :class:`Gamma` and :class:`NormalGamma` (collected in ``CONJUGATE_FAMILIES``)
are the conjugate priors used by :mod:`igbook.vi`; their inverse mean maps have no closed form
and are computed by a damped Newton solve that is exact to rounding and differentiable.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Self

import torch
from torch import Tensor

from igbook._validation import (
    as_tensor,
    make_generator,
    check_finite,
    check_nonempty,
    check_positive,
    check_probability,
    check_shape,
    check_simplex,
    check_symmetric_positive_definite,
)

__all__ = [
    "ExponentialFamily",
    "Bernoulli",
    "Categorical",
    "Gaussian",
    "MultivariateGaussian",
    "Poisson",
    "Exponential",
    "Beta",
    "Gamma",
    "NormalGamma",
    "FAMILIES",
    "CONJUGATE_FAMILIES",
]

_LOG_2PI = math.log(2.0 * math.pi)


def _vec(t: Tensor, name: str, size: int | None = None) -> Tensor:
    """A flat parameter vector, checked for finiteness and (optionally) length."""
    t = as_tensor(t, name)
    if t.ndim == 0:
        t = t.reshape(1)
    check_shape(t, name, (size,))
    return check_finite(t, name)


def _check_n(n: int) -> int:
    if not isinstance(n, int) or isinstance(n, bool):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return n


class ExponentialFamily(ABC):
    """Common interface of the exponential families in :mod:`igbook.families`.

    Subclasses are frozen dataclasses holding the usual parameters. The class methods whose
    names end in ``_from_...`` or start with ``log_`` are pure tensor functions (no validation),
    safe inside :func:`torch.func.grad`, :func:`torch.func.hessian` and :func:`torch.func.vmap`.
    """

    #: whether the sample space is finite (then :meth:`support` enumerates it)
    discrete: ClassVar[bool] = False

    # ----- pure maps between coordinate systems (no validation) -----------------------------
    @classmethod
    @abstractmethod
    def natural_from_params(cls, theta: Tensor) -> Tensor:
        """Natural parameter :math:`\\eta` from the usual coordinates."""

    @classmethod
    @abstractmethod
    def params_from_natural(cls, eta: Tensor) -> Tensor:
        """Usual coordinates from the natural parameter."""

    @classmethod
    @abstractmethod
    def log_partition(cls, eta: Tensor) -> Tensor:
        """Log-partition function :math:`A(\\eta)` (a scalar tensor)."""

    @classmethod
    @abstractmethod
    def mean_from_natural(cls, eta: Tensor) -> Tensor:
        """Mean parameter :math:`\\mu = \\nabla A(\\eta)` in closed form."""

    @classmethod
    @abstractmethod
    def natural_from_mean(cls, mu: Tensor) -> Tensor:
        """Natural parameter from the mean parameter, :math:`\\eta = \\nabla A^*(\\mu)`."""

    @classmethod
    @abstractmethod
    def sufficient_statistic(cls, x: Tensor) -> Tensor:
        """:math:`T(x)`, with shape ``x_batch + (d,)``."""

    @classmethod
    @abstractmethod
    def log_base_measure(cls, x: Tensor) -> Tensor:
        """:math:`\\log h(x)`, with shape ``x_batch``."""

    @classmethod
    def log_prob_natural(cls, eta: Tensor, x: Tensor) -> Tensor:
        """:math:`\\log q_\\eta(x) = \\eta^\\top T(x) - A(\\eta) + \\log h(x)` (pure)."""
        return cls.sufficient_statistic(x) @ eta - cls.log_partition(eta) + cls.log_base_measure(x)

    @classmethod
    def log_prob_params(cls, theta: Tensor, x: Tensor) -> Tensor:
        """Log-density as a function of the usual coordinates (pure)."""
        return cls.log_prob_natural(cls.natural_from_params(theta), x)

    @classmethod
    def log_prob_mean(cls, mu: Tensor, x: Tensor) -> Tensor:
        """Log-density as a function of the mean parameter (pure)."""
        return cls.log_prob_natural(cls.natural_from_mean(mu), x)

    @classmethod
    def convex_conjugate(cls, mu: Tensor) -> Tensor:
        """:math:`A^*(\\mu) = \\sup_\\eta \\eta^\\top\\mu - A(\\eta) = \\eta(\\mu)^\\top\\mu - A(\\eta(\\mu))`."""
        eta = cls.natural_from_mean(mu)
        return eta @ mu - cls.log_partition(eta)

    @classmethod
    def bregman_natural(cls, eta_p: Tensor, eta_q: Tensor) -> Tensor:
        r"""Bregman divergence of the log-partition :math:`A` (pure).

        .. math::

            D_A(\eta_p\,\|\,\eta_q) = A(\eta_p) - A(\eta_q) - (\eta_p-\eta_q)^\top\nabla A(\eta_q)
            = \mathrm{KL}(q_{\eta_q}\,\|\,q_{\eta_p}).

        Note the swap: the Bregman divergence of :math:`A` from :math:`\eta_q` to
        :math:`\eta_p` is the KL divergence *from* :math:`q_{\eta_q}` *to*
        :math:`q_{\eta_p}` :cite:`amari2016information,nielsen2020elementary`.
        """
        return (
            cls.log_partition(eta_p)
            - cls.log_partition(eta_q)
            - (eta_p - eta_q) @ cls.mean_from_natural(eta_q)
        )

    @classmethod
    def bregman_mean(cls, mu_p: Tensor, mu_q: Tensor) -> Tensor:
        r"""Bregman divergence of the convex conjugate :math:`A^*` (pure).

        .. math::

            D_{A^*}(\mu_p\,\|\,\mu_q) = A^*(\mu_p) - A^*(\mu_q) - (\mu_p-\mu_q)^\top\nabla A^*(\mu_q)
            = \mathrm{KL}(q_{\mu_p}\,\|\,q_{\mu_q}),

        with :math:`\nabla A^*(\mu_q) = \eta(\mu_q)` (:meth:`natural_from_mean`). In mean
        coordinates the order of the arguments is the order of the KL divergence
        :cite:`amari2016information`; this is the proximity term of mirror descent in
        :mod:`igbook.mirror`.
        """
        return (
            cls.convex_conjugate(mu_p)
            - cls.convex_conjugate(mu_q)
            - (mu_p - mu_q) @ cls.natural_from_mean(mu_q)
        )

    # ----- constructors ---------------------------------------------------------------------
    @classmethod
    @abstractmethod
    def from_params(cls, theta: Tensor) -> Self:
        """The distribution with usual coordinates ``theta`` (validated)."""

    @classmethod
    def from_natural(cls, eta: Tensor) -> Self:
        """The distribution with natural parameter ``eta`` (validated)."""
        eta = _vec(eta, "eta", cls._natural_dim_or_none())
        cls._check_natural(eta)
        return cls.from_params(cls.params_from_natural(eta))

    @classmethod
    def from_mean(cls, mu: Tensor) -> Self:
        """The distribution with mean parameter ``mu`` (validated)."""
        mu = _vec(mu, "mu", cls._natural_dim_or_none())
        cls._check_mean(mu)
        return cls.from_natural(cls.natural_from_mean(mu))

    @classmethod
    def _natural_dim_or_none(cls) -> int | None:
        return None

    @classmethod
    @abstractmethod
    def _check_natural(cls, eta: Tensor) -> None:
        """Raise ValueError unless ``eta`` lies in the natural parameter space."""

    @classmethod
    @abstractmethod
    def _check_mean(cls, mu: Tensor) -> None:
        """Raise ValueError unless ``mu`` lies in the interior of the mean parameter space."""

    # ----- instance views -------------------------------------------------------------------
    @property
    @abstractmethod
    def params(self) -> Tensor:
        """Usual coordinates as a flat tensor."""

    @property
    def natural(self) -> Tensor:
        """Natural parameter :math:`\\eta` as a flat tensor."""
        return self.natural_from_params(self.params)

    @property
    def mean(self) -> Tensor:
        """Mean parameter :math:`\\mu = \\mathbb{E}[T(x)]` as a flat tensor."""
        return self.mean_from_natural(self.natural)

    @property
    def dim(self) -> int:
        """Dimension of the (minimal) parameter space."""
        return int(self.params.numel())

    def log_prob(self, x: Tensor) -> Tensor:
        """Log-density (or log-mass) at ``x``; ``x`` may carry any batch shape."""
        x = as_tensor(x, "x", dtype=self.params.dtype)
        self._check_x(x)
        return self.log_prob_natural(self.natural, x)

    def _check_x(self, x: Tensor) -> None:
        check_finite(x, "x")

    @abstractmethod
    def sample(
        self, n: int, *, seed: int | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Draw ``n`` samples, reproducibly from ``seed`` or ``generator``."""

    def support(self) -> Tensor:
        """Enumerate a finite sample space (only for discrete families)."""
        raise NotImplementedError(f"{type(self).__name__} has no finite support to enumerate")

    # ----- closed-form geometry -------------------------------------------------------------
    @abstractmethod
    def fisher_natural(self) -> Tensor:
        """Fisher information in natural coordinates, :math:`\\nabla^2 A(\\eta) = \\mathrm{Cov}[T(x)]`."""

    def fisher_mean(self) -> Tensor:
        """Fisher information in mean coordinates, :math:`\\nabla^2 A^*(\\mu) = [\\nabla^2 A(\\eta)]^{-1}`."""
        return torch.linalg.inv(self.fisher_natural())

    @abstractmethod
    def fisher(self) -> Tensor:
        """Fisher information in the usual coordinates (closed form)."""

    @abstractmethod
    def kl(self, other: Self) -> Tensor:
        """:math:`\\mathrm{KL}(\\text{self}\\,\\|\\,\\text{other})` by its textbook closed form."""

    def kl_bregman(self, other: Self) -> Tensor:
        r"""KL as the Bregman divergence of the log-partition,

        .. math:: \mathrm{KL}(q_{\eta_p}\|q_{\eta_q}) = A(\eta_q) - A(\eta_p) - (\eta_q-\eta_p)^\top \nabla A(\eta_p).
        """
        self._check_same_family(other)
        ep, eq = self.natural, other.natural
        return self.log_partition(eq) - self.log_partition(ep) - (eq - ep) @ self.mean

    def kl_bregman_mean(self, other: Self) -> Tensor:
        r"""KL as the Bregman divergence of the convex conjugate :math:`A^*` in mean coordinates,

        .. math:: \mathrm{KL}(q_{\mu_p}\|q_{\mu_q}) = D_{A^*}(\mu_p\|\mu_q),

        the dual form of :meth:`kl_bregman` (see :meth:`bregman_mean`).
        """
        self._check_same_family(other)
        return self.bregman_mean(self.mean, other.mean)

    def _check_same_family(self, other: object) -> None:
        if type(other) is not type(self):
            raise TypeError(
                f"other must be a {type(self).__name__}, got {type(other).__name__}"
            )
        if other.params.shape != self.params.shape:  # type: ignore[attr-defined]
            raise ValueError(
                f"other must have parameters of shape {tuple(self.params.shape)}, "
                f"got {tuple(other.params.shape)}"  # type: ignore[attr-defined]
            )

    def entropy(self) -> Tensor:
        r"""Differential (or discrete) entropy, :math:`A(\eta) - \eta^\top\mu - \mathbb{E}[\log h(x)]`."""
        return self.log_partition(self.natural) - self.natural @ self.mean - self._expected_log_h()

    def _expected_log_h(self) -> Tensor:
        return torch.zeros((), dtype=self.params.dtype)


# =============================================================================================
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
        return cls(p=_vec(theta, "theta", 1)[0])

    @property
    def params(self) -> Tensor:
        return self.p.reshape(1)  # type: ignore[union-attr]

    def _check_x(self, x: Tensor) -> None:
        if not bool(((x == 0) | (x == 1)).all()):
            raise ValueError("x must be 0 or 1 for a Bernoulli distribution")

    def sample(self, n, *, seed=None, generator=None):  # type: ignore[no-untyped-def]
        g = make_generator(seed, generator)
        u = torch.rand(_check_n(n), generator=g, dtype=self.params.dtype)
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
            raise ValueError("mu must have positive entries summing to less than 1 (the free probabilities)")

    @classmethod
    def from_params(cls, theta: Tensor) -> Categorical:
        theta = _vec(theta, "theta")
        return cls(probs=torch.cat([theta, (1 - theta.sum()).reshape(1)]))

    @property
    def params(self) -> Tensor:
        return self.probs[:-1]

    def _check_x(self, x: Tensor) -> None:
        if not bool(((x == x.round()) & (x >= 0) & (x < self.num_categories)).all()):
            raise ValueError(f"x must be an integer category in [0, {self.num_categories - 1}]")

    def sample(self, n, *, seed=None, generator=None):  # type: ignore[no-untyped-def]
        g = make_generator(seed, generator)
        return torch.multinomial(self.probs, _check_n(n), replacement=True, generator=g).to(
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
class Gaussian(ExponentialFamily):
    r"""Univariate Gaussian :math:`\mathcal N(\mu, \sigma^2)`; usual coordinates :math:`(\mu, \sigma)`.

    :math:`\eta = (\mu/\sigma^2, -1/(2\sigma^2))`, :math:`T(x) = (x, x^2)`,
    :math:`A(\eta) = -\eta_1^2/(4\eta_2) - \tfrac12\log(-2\eta_2)`,
    :math:`\mu = (\mu, \mu^2+\sigma^2)`. The Fisher information in :math:`(\mu,\sigma)` is
    :math:`\mathrm{diag}(1, 2)/\sigma^2`: the hyperbolic half-plane :cite:`costa2015fisher`.
    """

    mu: Tensor | float
    sigma: Tensor | float

    def __post_init__(self) -> None:
        mu = as_tensor(self.mu, "mu")
        sigma = as_tensor(self.sigma, "sigma")
        check_shape(mu, "mu", ())
        check_shape(sigma, "sigma", ())
        check_finite(mu, "mu")
        check_positive(sigma, "sigma")
        dtype = torch.promote_types(mu.dtype, sigma.dtype)
        object.__setattr__(self, "mu", mu.to(dtype))
        object.__setattr__(self, "sigma", sigma.to(dtype))

    @classmethod
    def natural_from_params(cls, theta: Tensor) -> Tensor:
        mu, sigma = theta[0], theta[1]
        s2 = sigma**2
        return torch.stack([mu / s2, -0.5 / s2])

    @classmethod
    def params_from_natural(cls, eta: Tensor) -> Tensor:
        s2 = -0.5 / eta[1]
        return torch.stack([eta[0] * s2, torch.sqrt(s2)])

    @classmethod
    def log_partition(cls, eta: Tensor) -> Tensor:
        return -eta[0] ** 2 / (4 * eta[1]) - 0.5 * torch.log(-2 * eta[1])

    @classmethod
    def mean_from_natural(cls, eta: Tensor) -> Tensor:
        s2 = -0.5 / eta[1]
        m = eta[0] * s2
        return torch.stack([m, m**2 + s2])

    @classmethod
    def natural_from_mean(cls, mu: Tensor) -> Tensor:
        m, m2 = mu[0], mu[1]
        s2 = m2 - m**2
        return torch.stack([m / s2, -0.5 / s2])

    @classmethod
    def sufficient_statistic(cls, x: Tensor) -> Tensor:
        return torch.stack([x, x**2], -1)

    @classmethod
    def log_base_measure(cls, x: Tensor) -> Tensor:
        return torch.full_like(x, -0.5 * _LOG_2PI)

    @classmethod
    def _natural_dim_or_none(cls) -> int | None:
        return 2

    @classmethod
    def _check_natural(cls, eta: Tensor) -> None:
        if not bool(eta[1] < 0):
            raise ValueError(f"eta[1] = -1/(2 sigma^2) must be < 0, got {float(eta[1]):.6g}")

    @classmethod
    def _check_mean(cls, mu: Tensor) -> None:
        if not bool(mu[1] - mu[0] ** 2 > 0):
            raise ValueError("mu must satisfy mu[1] - mu[0]**2 > 0 (a positive variance)")

    @classmethod
    def from_params(cls, theta: Tensor) -> Gaussian:
        theta = _vec(theta, "theta", 2)
        return cls(mu=theta[0], sigma=theta[1])

    @property
    def params(self) -> Tensor:
        return torch.stack([self.mu, self.sigma])  # type: ignore[list-item]

    @property
    def variance(self) -> Tensor:
        return self.sigma**2  # type: ignore[operator,return-value]

    def sample(self, n, *, seed=None, generator=None):  # type: ignore[no-untyped-def]
        g = make_generator(seed, generator)
        z = torch.randn(_check_n(n), generator=g, dtype=self.params.dtype)
        return self.mu + self.sigma * z

    def fisher_natural(self) -> Tensor:
        m, s2 = self.params[0], self.variance
        return torch.stack(
            [
                torch.stack([s2, 2 * m * s2]),
                torch.stack([2 * m * s2, 4 * m**2 * s2 + 2 * s2**2]),
            ]
        )

    def fisher(self) -> Tensor:
        s2 = self.variance
        return torch.diag(torch.stack([1.0 / s2, 2.0 / s2]))

    def kl(self, other: Gaussian) -> Tensor:
        self._check_same_family(other)
        m1, s1 = self.params
        m2, s2 = other.params
        return torch.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5

    def _expected_log_h(self) -> Tensor:
        return torch.tensor(-0.5 * _LOG_2PI, dtype=self.params.dtype)


# =============================================================================================
def _pairs(d: int) -> tuple[Tensor, Tensor]:
    """Index pairs (i, j) of the quadratic statistics: the diagonal first, then i > j."""
    diag = torch.arange(d)
    low_i, low_j = torch.tril_indices(d, d, offset=-1)
    return torch.cat([diag, low_i]), torch.cat([diag, low_j])


@dataclass(frozen=True)
class MultivariateGaussian(ExponentialFamily):
    r"""Multivariate Gaussian :math:`\mathcal N(m, \Sigma)` with full covariance.

    Minimal form: :math:`T(x) = (x,\; x_i^2,\; x_i x_j\ (i>j))`, natural parameter
    :math:`\eta = (\Lambda m,\; -\tfrac12\Lambda_{ii},\; -\Lambda_{ij}\ (i>j))` with precision
    :math:`\Lambda=\Sigma^{-1}`, :math:`A(\eta) = \tfrac12 m^\top\Lambda m - \tfrac12\log\det\Lambda`
    and :math:`h(x) = (2\pi)^{-d/2}`. Usual coordinates: :math:`(m,\; \Sigma_{ii},\; \Sigma_{ij}\ (i>j))`,
    where the Fisher information is :math:`\Sigma^{-1}` for the mean block and
    :math:`\tfrac12\operatorname{tr}(\Sigma^{-1}\partial_a\Sigma\,\Sigma^{-1}\partial_b\Sigma)` for the covariance block.
    """

    mean_vector: Tensor
    cov: Tensor

    def __post_init__(self) -> None:
        m = as_tensor(self.mean_vector, "mean_vector")
        check_shape(m, "mean_vector", (None,))
        check_nonempty(m, "mean_vector")
        check_finite(m, "mean_vector")
        cov = as_tensor(self.cov, "cov")
        d = m.shape[0]
        check_shape(cov, "cov", (d, d))
        check_symmetric_positive_definite(cov, "cov")
        dtype = torch.promote_types(m.dtype, cov.dtype)
        object.__setattr__(self, "mean_vector", m.to(dtype))
        object.__setattr__(self, "cov", cov.to(dtype))

    @property
    def d(self) -> int:
        return int(self.mean_vector.shape[0])

    @staticmethod
    def _dim_from_len(n: int) -> int:
        # n = d + d(d+1)/2  =>  d^2 + 3d - 2n = 0
        d = int(round((-3 + math.sqrt(9 + 8 * n)) / 2))
        if d + d * (d + 1) // 2 != n:
            raise ValueError(f"a parameter vector of length {n} is not d + d(d+1)/2 for any d")
        return d

    @staticmethod
    def _sym_from_pairs(v: Tensor, d: int, offdiag_scale: float) -> Tensor:
        """Symmetric matrix from (diagonal, strictly-lower) values, by a constant linear map.

        Written as a matrix product rather than an indexed assignment so that it stays correct
        under :func:`torch.func.vmap` of higher-order derivatives.
        """
        i, j = _pairs(d)
        n = len(i)
        place = torch.zeros(d * d, n, dtype=v.dtype)
        k = torch.arange(n)
        place[i * d + j, k] = 1.0
        place[j * d + i, k] = 1.0
        scale = torch.cat([torch.ones(d, dtype=v.dtype), torch.full((n - d,), offdiag_scale, dtype=v.dtype)])
        return (place @ (scale * v)).reshape(d, d)

    @classmethod
    def precision_from_natural(cls, eta: Tensor) -> Tensor:
        d = cls._dim_from_len(eta.shape[0])
        return cls._sym_from_pairs(-eta[d:], d, 1.0) + torch.diag(-eta[d : 2 * d])

    @classmethod
    def natural_from_precision(cls, shift: Tensor, precision: Tensor) -> Tensor:
        r"""Minimal natural parameter from the information form :math:`(h, \Lambda)` (pure).

        A log-density :math:`h^\top x - \tfrac12 x^\top\Lambda x + \text{const}` has natural
        parameter :math:`(h,\; -\tfrac12\Lambda_{ii},\; -\Lambda_{ij}\ (i>j))`, the inverse of
        :meth:`precision_from_natural` (with ``shift = eta[:d]``). ``precision`` only has to be
        symmetric, so that Gaussian *likelihood* terms (a rank-one
        :math:`\Lambda = x x^\top/\sigma^2`) can be written as natural parameters and added.
        """
        d = shift.shape[-1]
        i, j = _pairs(d)
        coef = torch.cat(
            [torch.full((d,), -0.5, dtype=precision.dtype), -torch.ones(len(i) - d, dtype=precision.dtype)]
        )
        return torch.cat([shift, precision[..., i, j] * coef], -1)

    @classmethod
    def natural_from_params(cls, theta: Tensor) -> Tensor:
        d = cls._dim_from_len(theta.shape[0])
        m, cov = theta[:d], cls._sym_from_pairs(theta[d:], d, 1.0)
        lam = torch.linalg.inv(cov)
        i, j = _pairs(d)
        coef = lam[i, j] * torch.cat([torch.full((d,), -0.5, dtype=theta.dtype), -torch.ones(len(i) - d, dtype=theta.dtype)])
        return torch.cat([lam @ m, coef])

    @classmethod
    def params_from_natural(cls, eta: Tensor) -> Tensor:
        d = cls._dim_from_len(eta.shape[0])
        cov = torch.linalg.inv(cls.precision_from_natural(eta))
        i, j = _pairs(d)
        return torch.cat([cov @ eta[:d], cov[i, j]])

    @classmethod
    def log_partition(cls, eta: Tensor) -> Tensor:
        d = cls._dim_from_len(eta.shape[0])
        # Through the Cholesky factor: torch 2.13's batched second derivatives of
        # logdet/slogdet under torch.func.vmap are wrong (regression test in tests/test_families.py).
        chol = torch.linalg.cholesky(cls.precision_from_natural(eta))
        z = torch.linalg.solve_triangular(chol, eta[:d].unsqueeze(-1), upper=False).squeeze(-1)
        return 0.5 * (z @ z) - torch.log(torch.diagonal(chol)).sum()

    @classmethod
    def mean_from_natural(cls, eta: Tensor) -> Tensor:
        d = cls._dim_from_len(eta.shape[0])
        cov = torch.linalg.inv(cls.precision_from_natural(eta))
        m = cov @ eta[:d]
        i, j = _pairs(d)
        return torch.cat([m, cov[i, j] + m[i] * m[j]])

    @classmethod
    def natural_from_mean(cls, mu: Tensor) -> Tensor:
        d = cls._dim_from_len(mu.shape[0])
        m = mu[:d]
        i, j = _pairs(d)
        cov_pairs = mu[d:] - m[i] * m[j]
        return cls.natural_from_params(torch.cat([m, cov_pairs]))

    @classmethod
    def sufficient_statistic(cls, x: Tensor) -> Tensor:
        d = x.shape[-1]
        i, j = _pairs(d)
        return torch.cat([x, x[..., i] * x[..., j]], -1)

    @classmethod
    def log_base_measure(cls, x: Tensor) -> Tensor:
        return torch.full(x.shape[:-1], -0.5 * x.shape[-1] * _LOG_2PI, dtype=x.dtype)

    @classmethod
    def _check_natural(cls, eta: Tensor) -> None:
        cls._dim_from_len(eta.shape[0])
        check_symmetric_positive_definite(cls.precision_from_natural(eta), "the precision -2*eta2 implied by eta")

    @classmethod
    def _check_mean(cls, mu: Tensor) -> None:
        d = cls._dim_from_len(mu.shape[0])
        i, j = _pairs(d)
        m = mu[:d]
        cov = cls._sym_from_pairs(mu[d:] - m[i] * m[j], d, 1.0)
        check_symmetric_positive_definite(cov, "the covariance implied by mu")

    @classmethod
    def from_params(cls, theta: Tensor) -> MultivariateGaussian:
        theta = _vec(theta, "theta")
        d = cls._dim_from_len(theta.shape[0])
        return cls(mean_vector=theta[:d], cov=cls._sym_from_pairs(theta[d:], d, 1.0))

    @property
    def params(self) -> Tensor:
        i, j = _pairs(self.d)
        return torch.cat([self.mean_vector, self.cov[i, j]])

    def _check_x(self, x: Tensor) -> None:
        check_finite(x, "x")
        if x.ndim == 0 or x.shape[-1] != self.d:
            raise ValueError(f"x must have last axis of size {self.d}, got shape {tuple(x.shape)}")

    def sample(self, n, *, seed=None, generator=None):  # type: ignore[no-untyped-def]
        g = make_generator(seed, generator)
        z = torch.randn(_check_n(n), self.d, generator=g, dtype=self.cov.dtype)
        return self.mean_vector + z @ torch.linalg.cholesky(self.cov).T

    def fisher_natural(self) -> Tensor:
        # Cov[T(x)] by Isserlis' theorem.
        d, m, s = self.d, self.mean_vector, self.cov
        i, j = _pairs(d)
        lin_lin = s
        lin_quad = m[j].unsqueeze(0) * s[:, i] + m[i].unsqueeze(0) * s[:, j]  # Cov(x_k, x_i x_j)
        ii, kk = i.unsqueeze(1), i.unsqueeze(0)
        jj, ll = j.unsqueeze(1), j.unsqueeze(0)
        quad_quad = (
            s[ii, kk] * s[jj, ll]
            + s[ii, ll] * s[jj, kk]
            + m[ii] * m[kk] * s[jj, ll]
            + m[ii] * m[ll] * s[jj, kk]
            + m[jj] * m[kk] * s[ii, ll]
            + m[jj] * m[ll] * s[ii, kk]
        )
        top = torch.cat([lin_lin, lin_quad], 1)
        bottom = torch.cat([lin_quad.T, quad_quad], 1)
        return torch.cat([top, bottom], 0)

    def fisher(self) -> Tensor:
        d = self.d
        lam = torch.linalg.inv(self.cov)
        i, j = _pairs(d)
        n = len(i)
        dsig = torch.zeros(n, d, d, dtype=lam.dtype)
        dsig[torch.arange(n), i, j] = 1.0
        dsig[torch.arange(n), j, i] = 1.0
        a = lam @ dsig  # (n, d, d): Lambda dSigma_a
        cov_block = 0.5 * torch.einsum("aij,bji->ab", a, a)
        f = torch.zeros(d + n, d + n, dtype=lam.dtype)
        f[:d, :d] = lam
        f[d:, d:] = cov_block
        return f

    def kl(self, other: MultivariateGaussian) -> Tensor:
        self._check_same_family(other)
        lam_q = torch.linalg.inv(other.cov)
        dm = other.mean_vector - self.mean_vector
        return 0.5 * (
            torch.trace(lam_q @ self.cov)
            + dm @ lam_q @ dm
            - self.d
            + torch.logdet(other.cov)
            - torch.logdet(self.cov)
        )

    def _expected_log_h(self) -> Tensor:
        return torch.tensor(-0.5 * self.d * _LOG_2PI, dtype=self.cov.dtype)


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
        return cls(rate=_vec(theta, "theta", 1)[0])

    @property
    def params(self) -> Tensor:
        return self.rate.reshape(1)  # type: ignore[union-attr]

    def _check_x(self, x: Tensor) -> None:
        if not bool(((x == x.round()) & (x >= 0)).all()):
            raise ValueError("x must be a non-negative integer count for a Poisson distribution")

    def sample(self, n, *, seed=None, generator=None):  # type: ignore[no-untyped-def]
        g = make_generator(seed, generator)
        return torch.poisson(self.rate * torch.ones(_check_n(n), dtype=self.params.dtype), generator=g)

    def support(self, tail: float = 1e-15) -> Tensor:
        r"""Counts ``0..k_max``, with ``k_max`` past the mode where the omitted tail is below ``tail``.

        For :math:`k > \lambda` the tail beyond :math:`k` is at most
        :math:`p(k)\,\lambda/(k+1-\lambda)`, which is what is checked.
        """
        if not 0 < tail < 1:
            raise ValueError(f"tail must lie in (0, 1), got {tail}")
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
        return cls(rate=_vec(theta, "theta", 1)[0])

    @property
    def params(self) -> Tensor:
        return self.rate.reshape(1)  # type: ignore[union-attr]

    def _check_x(self, x: Tensor) -> None:
        check_finite(x, "x")
        if not bool((x >= 0).all()):
            raise ValueError("x must be >= 0 for an Exponential distribution")

    def sample(self, n, *, seed=None, generator=None):  # type: ignore[no-untyped-def]
        g = make_generator(seed, generator)
        u = torch.rand(_check_n(n), generator=g, dtype=self.params.dtype)
        return -torch.log1p(-u) / self.rate

    def fisher_natural(self) -> Tensor:
        return (1.0 / self.params**2).reshape(1, 1)

    def fisher(self) -> Tensor:
        return (1.0 / self.params**2).reshape(1, 1)

    def kl(self, other: Exponential) -> Tensor:
        self._check_same_family(other)
        p, q = self.params[0], other.params[0]
        return torch.log(p / q) + q / p - 1


# =============================================================================================
# Families used as conjugate priors and variational posteriors (Beta, Gamma, Normal-Gamma).
# Their inverse mean maps have no closed form: they are computed by a damped Newton solve.


def _sample_standard_gamma(alpha: Tensor, n: int, g: torch.Generator | None) -> Tensor:
    r"""``n`` draws of :math:`\mathrm{Gamma}(\alpha, 1)` by Marsaglia and Tsang's squeeze method.

    Vectorized rejection sampling (acceptance above 95 %) that takes a generator, so that draws
    are reproducible; for :math:`\alpha < 1` it samples :math:`\alpha + 1` and multiplies by
    :math:`U^{1/\alpha}`.
    """
    dtype = alpha.dtype
    a = alpha + 1.0 if bool(alpha < 1) else alpha
    d = a - 1.0 / 3.0
    c = 1.0 / torch.sqrt(9.0 * d)
    out = torch.empty(n, dtype=dtype)
    filled = 0
    while filled < n:
        m = 2 * (n - filled) + 16
        z = torch.randn(m, generator=g, dtype=dtype)
        u = torch.rand(m, generator=g, dtype=dtype)
        v = (1.0 + c * z) ** 3
        ok = v > 0
        logv = torch.log(torch.where(ok, v, torch.ones_like(v)))
        ok = ok & (torch.log(u) < 0.5 * z**2 + d - d * v + d * logv)
        acc = (d * v)[ok][: n - filled]
        out[filled : filled + acc.shape[0]] = acc
        filled += acc.shape[0]
    if bool(alpha < 1):
        u = torch.rand(n, generator=g, dtype=dtype)
        out = out * u ** (1.0 / alpha)
    return out


def _newton_natural_from_mean(
    family: type[ExponentialFamily],
    mu: Tensor,
    eta0: Tensor,
    fisher_natural: Callable[[Tensor], Tensor],
    in_domain: Callable[[Tensor], bool],
    max_iter: int = 100,
) -> Tensor:
    r"""Solve :math:`\nabla A(\eta) = \mu` by damped Newton from ``eta0``.

    It minimizes the strictly convex :math:`\Phi(\eta) = A(\eta) - \eta^\top\mu`, whose gradient
    is :math:`\nabla A(\eta) - \mu` and whose Hessian is the Fisher matrix, with a backtracking
    line search that keeps :math:`\eta` in the natural parameter space; the minimizer is
    :math:`\eta = \nabla A^*(\mu)`. The loop runs without autograd; one last Newton step is
    taken *with* autograd from the detached solution, so that derivatives through the solve
    are exact at convergence (:math:`\partial\eta/\partial\mu = F(\eta)^{-1}`).
    """
    mu_d = mu.detach()
    with torch.no_grad():
        eta = eta0.detach().clone()
        for _ in range(max_iter):
            g = family.mean_from_natural(eta) - mu_d
            step = torch.linalg.solve(fisher_natural(eta), g)
            dec = float(g @ step)  # squared Newton decrement
            if not math.isfinite(dec):
                raise ValueError("the Newton solve for the natural parameter diverged")
            tiny_residual = float(g.abs().max()) <= 8 * torch.finfo(g.dtype).eps * (1.0 + float(mu_d.abs().max()))
            tiny_step = float(step.abs().max()) <= 1e-14 * (1.0 + float(eta.abs().max()))
            if dec < 1e-28 or tiny_residual or tiny_step:
                break
            t = 1.0
            phi = family.log_partition(eta) - eta @ mu_d
            while True:
                new = eta - t * step
                if in_domain(new):
                    if dec < 1e-12:  # quadratic convergence region: take the full step
                        break
                    if float(family.log_partition(new) - new @ mu_d) <= float(phi) - 0.25 * t * dec:
                        break
                t *= 0.5
                if t < 1e-30:
                    raise ValueError("the Newton solve for the natural parameter failed to make progress")
            eta = new
        else:
            raise ValueError(f"the Newton solve for the natural parameter did not converge in {max_iter} steps")
    eta = eta.detach()
    return eta - torch.linalg.solve(fisher_natural(eta), family.mean_from_natural(eta) - mu)


@dataclass(frozen=True)
class Beta(ExponentialFamily):
    r"""Beta distribution on :math:`(0, 1)` with shapes :math:`\alpha, \beta > 0`.

    :math:`T(x) = (\log x, \log(1-x))`, :math:`\eta = (\alpha - 1, \beta - 1)`,
    :math:`A(\eta) = \log\Gamma(\alpha) + \log\Gamma(\beta) - \log\Gamma(\alpha+\beta)`,
    :math:`\mu = (\psi(\alpha) - \psi(\alpha+\beta),\; \psi(\beta) - \psi(\alpha+\beta))`. The
    Fisher information is the same in :math:`\eta` and in :math:`(\alpha,\beta)`:
    :math:`\mathrm{diag}(\psi'(\alpha), \psi'(\beta)) - \psi'(\alpha+\beta)\mathbf 1\mathbf 1^\top`.
    It is the conjugate prior of the Bernoulli success probability: a Bernoulli observation
    :math:`y` adds :math:`(y, 1-y)` to :math:`\eta`. The inverse mean map is a Newton solve.
    """

    alpha: Tensor | float
    beta: Tensor | float

    def __post_init__(self) -> None:
        a, b = as_tensor(self.alpha, "alpha"), as_tensor(self.beta, "beta")
        check_shape(a, "alpha", ())
        check_shape(b, "beta", ())
        check_positive(a, "alpha")
        check_positive(b, "beta")
        dtype = torch.promote_types(a.dtype, b.dtype)
        object.__setattr__(self, "alpha", a.to(dtype))
        object.__setattr__(self, "beta", b.to(dtype))

    @classmethod
    def natural_from_params(cls, theta: Tensor) -> Tensor:
        return theta - 1.0

    @classmethod
    def params_from_natural(cls, eta: Tensor) -> Tensor:
        return eta + 1.0

    @classmethod
    def log_partition(cls, eta: Tensor) -> Tensor:
        a, b = eta[0] + 1.0, eta[1] + 1.0
        return torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b)

    @classmethod
    def mean_from_natural(cls, eta: Tensor) -> Tensor:
        ab = eta + 1.0
        return torch.digamma(ab) - torch.digamma(ab.sum())

    @classmethod
    def _fisher_from_natural(cls, eta: Tensor) -> Tensor:
        ab = eta + 1.0
        return torch.diag(torch.polygamma(1, ab)) - torch.polygamma(1, ab.sum())

    @classmethod
    def natural_from_mean(cls, mu: Tensor) -> Tensor:
        # start from psi(a) ~ log(a - 1/2): e^{mu_k} ~ (a_k - 1/2)/(a + b - 1/2)
        e = torch.exp(mu.detach())
        s = 0.5 / (1.0 - e.sum()).clamp_min(1e-12)
        eta0 = 0.5 + s * e - 1.0
        return _newton_natural_from_mean(
            cls, mu, eta0, cls._fisher_from_natural, lambda eta: bool((eta > -1).all())
        )

    @classmethod
    def sufficient_statistic(cls, x: Tensor) -> Tensor:
        return torch.stack([torch.log(x), torch.log1p(-x)], -1)

    @classmethod
    def log_base_measure(cls, x: Tensor) -> Tensor:
        return torch.zeros_like(x)

    @classmethod
    def _natural_dim_or_none(cls) -> int | None:
        return 2

    @classmethod
    def _check_natural(cls, eta: Tensor) -> None:
        if not bool((eta > -1).all()):
            raise ValueError(f"eta = (alpha - 1, beta - 1) must be > -1, got {eta.tolist()}")

    @classmethod
    def _check_mean(cls, mu: Tensor) -> None:
        check_finite(mu, "mu")
        if not bool((mu < 0).all()) or not bool(torch.exp(mu).sum() < 1):
            raise ValueError(
                "mu = (E[log x], E[log(1-x)]) must satisfy exp(mu[0]) + exp(mu[1]) < 1 (Jensen's inequality)"
            )

    @classmethod
    def from_params(cls, theta: Tensor) -> Beta:
        theta = _vec(theta, "theta", 2)
        return cls(alpha=theta[0], beta=theta[1])

    @property
    def params(self) -> Tensor:
        return torch.stack([self.alpha, self.beta])  # type: ignore[list-item]

    def _check_x(self, x: Tensor) -> None:
        check_finite(x, "x")
        if not bool(((x > 0) & (x < 1)).all()):
            raise ValueError("x must lie in (0, 1) for a Beta distribution")

    def sample(self, n, *, seed=None, generator=None):  # type: ignore[no-untyped-def]
        g = make_generator(seed, generator)
        n = _check_n(n)
        x = _sample_standard_gamma(self.params[0], n, g)
        y = _sample_standard_gamma(self.params[1], n, g)
        return x / (x + y)

    def fisher_natural(self) -> Tensor:
        return self._fisher_from_natural(self.natural)

    def fisher(self) -> Tensor:
        return self.fisher_natural()

    def kl(self, other: Beta) -> Tensor:
        self._check_same_family(other)
        a1, b1 = self.params
        a2, b2 = other.params
        return (
            self.log_partition(other.natural)
            - self.log_partition(self.natural)
            + (a1 - a2) * torch.digamma(a1)
            + (b1 - b2) * torch.digamma(b1)
            + (a2 - a1 + b2 - b1) * torch.digamma(a1 + b1)
        )


@dataclass(frozen=True)
class Gamma(ExponentialFamily):
    r"""Gamma distribution on :math:`x > 0` with shape :math:`\alpha > 0` and *rate* :math:`\beta > 0`.

    Density :math:`\beta^\alpha x^{\alpha-1}e^{-\beta x}/\Gamma(\alpha)`;
    :math:`T(x) = (\log x, x)`, :math:`\eta = (\alpha - 1, -\beta)`,
    :math:`A(\eta) = \log\Gamma(\alpha) - \alpha\log\beta`,
    :math:`\mu = (\psi(\alpha) - \log\beta,\; \alpha/\beta)`. Fisher information
    :math:`\begin{pmatrix}\psi'(\alpha) & 1/\beta\\ 1/\beta & \alpha/\beta^2\end{pmatrix}` in
    :math:`\eta` and :math:`\begin{pmatrix}\psi'(\alpha) & -1/\beta\\ -1/\beta & \alpha/\beta^2\end{pmatrix}`
    in :math:`(\alpha, \beta)`. It is the conjugate prior of a Poisson rate (an observed count
    :math:`y` adds :math:`(y, -1)` to :math:`\eta`) and of a Gaussian precision. The inverse
    mean map is a Newton solve started from the approximation of :cite:t:`minka2002estimating`.
    """

    alpha: Tensor | float
    beta: Tensor | float

    def __post_init__(self) -> None:
        a, b = as_tensor(self.alpha, "alpha"), as_tensor(self.beta, "beta")
        check_shape(a, "alpha", ())
        check_shape(b, "beta", ())
        check_positive(a, "alpha")
        check_positive(b, "beta")
        dtype = torch.promote_types(a.dtype, b.dtype)
        object.__setattr__(self, "alpha", a.to(dtype))
        object.__setattr__(self, "beta", b.to(dtype))

    @classmethod
    def natural_from_params(cls, theta: Tensor) -> Tensor:
        return torch.stack([theta[0] - 1.0, -theta[1]])

    @classmethod
    def params_from_natural(cls, eta: Tensor) -> Tensor:
        return torch.stack([eta[0] + 1.0, -eta[1]])

    @classmethod
    def log_partition(cls, eta: Tensor) -> Tensor:
        a = eta[0] + 1.0
        return torch.lgamma(a) - a * torch.log(-eta[1])

    @classmethod
    def mean_from_natural(cls, eta: Tensor) -> Tensor:
        a, b = eta[0] + 1.0, -eta[1]
        return torch.stack([torch.digamma(a) - torch.log(b), a / b])

    @classmethod
    def _fisher_from_natural(cls, eta: Tensor) -> Tensor:
        a, b = eta[0] + 1.0, -eta[1]
        return torch.stack(
            [torch.stack([torch.polygamma(1, a), 1.0 / b]), torch.stack([1.0 / b, a / b**2])]
        )

    @classmethod
    def natural_from_mean(cls, mu: Tensor) -> Tensor:
        # Minka (2002): psi(a) - log(a) = mu0 - log(mu1) = -s, a ~ (3 - s + sqrt((s-3)^2 + 24 s)) / (12 s)
        m = mu.detach()
        s = (torch.log(m[1]) - m[0]).clamp_min(1e-12)
        a = (3.0 - s + torch.sqrt((s - 3.0) ** 2 + 24.0 * s)) / (12.0 * s)
        eta0 = torch.stack([a - 1.0, -a / m[1]])
        return _newton_natural_from_mean(
            cls, mu, eta0, cls._fisher_from_natural, lambda eta: bool(eta[0] > -1) and bool(eta[1] < 0)
        )

    @classmethod
    def sufficient_statistic(cls, x: Tensor) -> Tensor:
        return torch.stack([torch.log(x), x], -1)

    @classmethod
    def log_base_measure(cls, x: Tensor) -> Tensor:
        return torch.zeros_like(x)

    @classmethod
    def _natural_dim_or_none(cls) -> int | None:
        return 2

    @classmethod
    def _check_natural(cls, eta: Tensor) -> None:
        if not (bool(eta[0] > -1) and bool(eta[1] < 0)):
            raise ValueError(
                f"eta = (alpha - 1, -beta) must have eta[0] > -1 and eta[1] < 0, got {eta.tolist()}"
            )

    @classmethod
    def _check_mean(cls, mu: Tensor) -> None:
        check_finite(mu, "mu")
        if not (bool(mu[1] > 0) and bool(mu[0] < torch.log(mu[1]))):
            raise ValueError(
                "mu = (E[log x], E[x]) must satisfy mu[1] > 0 and mu[0] < log(mu[1]) (Jensen's inequality)"
            )

    @classmethod
    def from_params(cls, theta: Tensor) -> Gamma:
        theta = _vec(theta, "theta", 2)
        return cls(alpha=theta[0], beta=theta[1])

    @property
    def params(self) -> Tensor:
        return torch.stack([self.alpha, self.beta])  # type: ignore[list-item]

    def _check_x(self, x: Tensor) -> None:
        check_positive(x, "x")

    def sample(self, n, *, seed=None, generator=None):  # type: ignore[no-untyped-def]
        g = make_generator(seed, generator)
        return _sample_standard_gamma(self.params[0], _check_n(n), g) / self.params[1]

    def fisher_natural(self) -> Tensor:
        return self._fisher_from_natural(self.natural)

    def fisher(self) -> Tensor:
        a, b = self.params
        return torch.stack(
            [torch.stack([torch.polygamma(1, a), -1.0 / b]), torch.stack([-1.0 / b, a / b**2])]
        )

    def kl(self, other: Gamma) -> Tensor:
        self._check_same_family(other)
        a1, b1 = self.params
        a2, b2 = other.params
        return (
            (a1 - a2) * torch.digamma(a1)
            - torch.lgamma(a1)
            + torch.lgamma(a2)
            + a2 * (torch.log(b1) - torch.log(b2))
            + a1 * (b2 - b1) / b1
        )


@dataclass(frozen=True)
class NormalGamma(ExponentialFamily):
    r"""Normal-Gamma distribution of a Gaussian's mean and precision :math:`(m, \tau)`.

    :math:`\tau \sim \mathrm{Gamma}(\alpha, \beta)` (rate :math:`\beta`) and
    :math:`m \mid \tau \sim \mathcal N(\text{loc}, 1/(\kappa\tau))` :cite:`bishop2006pattern`.
    A sample is a pair ``x = (m, tau)``. Minimal form:
    :math:`T(m,\tau) = (\tau m,\; \tau m^2,\; \tau,\; \log\tau)`,
    :math:`\eta = (\kappa\,\text{loc},\; -\kappa/2,\; -\beta - \kappa\,\text{loc}^2/2,\; \alpha - \tfrac12)`,
    :math:`A(\eta) = \log\Gamma(\alpha) - \alpha\log\beta - \tfrac12\log\kappa` and
    :math:`h = (2\pi)^{-1/2}`. It is the conjugate prior of a Gaussian with unknown mean and
    precision: an observation :math:`y` adds :math:`(y, -\tfrac12, -\tfrac12 y^2, \tfrac12)` to
    :math:`\eta`. Usual coordinates :math:`(\text{loc}, \kappa, \alpha, \beta)`.
    """

    loc: Tensor | float
    kappa: Tensor | float
    alpha: Tensor | float
    beta: Tensor | float

    def __post_init__(self) -> None:
        vals = {k: as_tensor(getattr(self, k), k) for k in ("loc", "kappa", "alpha", "beta")}
        for k, v in vals.items():
            check_shape(v, k, ())
            if k == "loc":
                check_finite(v, k)
            else:
                check_positive(v, k)
        dtype = vals["loc"].dtype
        for v in vals.values():
            dtype = torch.promote_types(dtype, v.dtype)
        for k, v in vals.items():
            object.__setattr__(self, k, v.to(dtype))

    @classmethod
    def natural_from_params(cls, theta: Tensor) -> Tensor:
        m, k, a, b = theta[0], theta[1], theta[2], theta[3]
        return torch.stack([k * m, -0.5 * k, -b - 0.5 * k * m**2, a - 0.5])

    @classmethod
    def params_from_natural(cls, eta: Tensor) -> Tensor:
        k = -2.0 * eta[1]
        m = eta[0] / k
        return torch.stack([m, k, eta[3] + 0.5, -eta[2] - 0.5 * k * m**2])

    @classmethod
    def log_partition(cls, eta: Tensor) -> Tensor:
        _, k, a, b = cls.params_from_natural(eta)
        return torch.lgamma(a) - a * torch.log(b) - 0.5 * torch.log(k)

    @classmethod
    def mean_from_natural(cls, eta: Tensor) -> Tensor:
        m, k, a, b = cls.params_from_natural(eta)
        et = a / b
        return torch.stack([m * et, m**2 * et + 1.0 / k, et, torch.digamma(a) - torch.log(b)])

    @classmethod
    def natural_from_mean(cls, mu: Tensor) -> Tensor:
        # the marginal of tau is Gamma(alpha, beta) with mean parameter (E[log tau], E[tau])
        gam = Gamma.natural_from_mean(torch.stack([mu[3], mu[2]]))
        a, b = gam[0] + 1.0, -gam[1]
        m = mu[0] / mu[2]
        k = 1.0 / (mu[1] - mu[0] ** 2 / mu[2])
        return cls.natural_from_params(torch.stack([m, k, a, b]))

    @classmethod
    def sufficient_statistic(cls, x: Tensor) -> Tensor:
        m, t = x[..., 0], x[..., 1]
        return torch.stack([t * m, t * m**2, t, torch.log(t)], -1)

    @classmethod
    def log_base_measure(cls, x: Tensor) -> Tensor:
        return torch.full(x.shape[:-1], -0.5 * _LOG_2PI, dtype=x.dtype)

    @classmethod
    def _natural_dim_or_none(cls) -> int | None:
        return 4

    @classmethod
    def _check_natural(cls, eta: Tensor) -> None:
        if not bool(eta[1] < 0):
            raise ValueError(f"eta[1] = -kappa/2 must be < 0, got {float(eta[1]):.6g}")
        _, _, a, b = cls.params_from_natural(eta)
        if not (bool(a > 0) and bool(b > 0)):
            raise ValueError(
                "eta must give alpha = eta[3] + 1/2 > 0 and beta = -eta[2] + eta[0]**2/(4 eta[1]) > 0, "
                f"got alpha = {float(a):.6g}, beta = {float(b):.6g}"
            )

    @classmethod
    def _check_mean(cls, mu: Tensor) -> None:
        check_finite(mu, "mu")
        if not bool(mu[2] > 0):
            raise ValueError(f"mu[2] = E[tau] must be > 0, got {float(mu[2]):.6g}")
        if not bool(mu[1] - mu[0] ** 2 / mu[2] > 0):
            raise ValueError("mu must satisfy mu[1] > mu[0]**2 / mu[2] (a positive 1/kappa)")
        if not bool(mu[3] < torch.log(mu[2])):
            raise ValueError("mu must satisfy mu[3] = E[log tau] < log E[tau] (Jensen's inequality)")

    @classmethod
    def from_params(cls, theta: Tensor) -> NormalGamma:
        theta = _vec(theta, "theta", 4)
        return cls(loc=theta[0], kappa=theta[1], alpha=theta[2], beta=theta[3])

    @property
    def params(self) -> Tensor:
        return torch.stack([self.loc, self.kappa, self.alpha, self.beta])  # type: ignore[list-item]

    def _check_x(self, x: Tensor) -> None:
        check_finite(x, "x")
        if x.ndim == 0 or x.shape[-1] != 2:
            raise ValueError(f"x must have a last axis of size 2 (mean, precision), got shape {tuple(x.shape)}")
        if not bool((x[..., 1] > 0).all()):
            raise ValueError("x[..., 1] (a precision) must be > 0 for a NormalGamma distribution")

    def sample(self, n, *, seed=None, generator=None):  # type: ignore[no-untyped-def]
        g = make_generator(seed, generator)
        n = _check_n(n)
        m, k, a, b = self.params
        tau = _sample_standard_gamma(a, n, g) / b
        z = torch.randn(n, generator=g, dtype=tau.dtype)
        return torch.stack([m + z / torch.sqrt(k * tau), tau], -1)

    def marginal_tau(self) -> Gamma:
        """The marginal of the precision, :math:`\\mathrm{Gamma}(\\alpha, \\beta)`."""
        return Gamma(self.alpha, self.beta)

    def fisher_natural(self) -> Tensor:
        r""":math:`\mathrm{Cov}[T]` in closed form, by the law of total covariance given :math:`\tau`.

        With :math:`c = (m, m^2, 1)`, :math:`\bar\tau = \alpha/\beta`:
        :math:`\mathrm{Cov}(\mathbb E[T\mid\tau])` has blocks :math:`cc^\top\alpha/\beta^2`,
        :math:`c/\beta` and :math:`\psi'(\alpha)`, and :math:`\mathbb E[\mathrm{Cov}(T\mid\tau)]`
        adds :math:`\begin{pmatrix}\bar\tau/\kappa & 2m\bar\tau/\kappa\\ 2m\bar\tau/\kappa & 4m^2\bar\tau/\kappa + 2/\kappa^2\end{pmatrix}`
        to the :math:`(\tau m, \tau m^2)` block.
        """
        m, k, a, b = self.params
        one = torch.ones((), dtype=m.dtype)
        c = torch.stack([m, m**2, one])
        f = torch.zeros(4, 4, dtype=m.dtype)
        f[:3, :3] = torch.outer(c, c) * a / b**2
        f[:3, 3] = c / b
        f[3, :3] = c / b
        f[3, 3] = torch.polygamma(1, a)
        et = a / b
        f[0, 0] = f[0, 0] + et / k
        f[0, 1] = f[0, 1] + 2 * m * et / k
        f[1, 0] = f[1, 0] + 2 * m * et / k
        f[1, 1] = f[1, 1] + 4 * m**2 * et / k + 2 / k**2
        return f

    def _jacobian_natural_params(self) -> Tensor:
        m, k, _, _ = self.params
        zero, one = torch.zeros((), dtype=m.dtype), torch.ones((), dtype=m.dtype)
        # columns: d eta / d(loc, kappa, alpha, beta)
        return torch.stack(
            [
                torch.stack([k, m, zero, zero]),
                torch.stack([zero, -0.5 * one, zero, zero]),
                torch.stack([-k * m, -0.5 * m**2, zero, -one]),
                torch.stack([zero, zero, one, zero]),
            ]
        )

    def fisher(self) -> Tensor:
        """Fisher information in :math:`(\\text{loc}, \\kappa, \\alpha, \\beta)`, the pull-back :math:`J^\\top F_\\eta J`."""
        j = self._jacobian_natural_params()
        return j.T @ self.fisher_natural() @ j

    def kl(self, other: NormalGamma) -> Tensor:
        r"""KL of the precision marginals plus the expected KL of the conditionals of the mean:

        .. math:: \mathrm{KL}(\mathrm{Ga}_1\|\mathrm{Ga}_2) + \tfrac12\Big(\frac{\kappa_2}{\kappa_1}
            - 1 - \log\frac{\kappa_2}{\kappa_1} + \kappa_2\frac{\alpha_1}{\beta_1}(\text{loc}_1-\text{loc}_2)^2\Big).
        """
        self._check_same_family(other)
        m1, k1, a1, b1 = self.params
        m2, k2, a2, b2 = other.params
        r = k2 / k1
        return self.marginal_tau().kl(other.marginal_tau()) + 0.5 * (
            r - 1.0 - torch.log(r) + k2 * a1 / b1 * (m1 - m2) ** 2
        )

    def _expected_log_h(self) -> Tensor:
        return torch.tensor(-0.5 * _LOG_2PI, dtype=self.params.dtype)


#: Families added for conjugate Bayesian inference (priors and variational posteriors).
CONJUGATE_FAMILIES: tuple[type[ExponentialFamily], ...] = (Beta, Gamma, NormalGamma)


#: Every family of this module, for tests and tables.
FAMILIES: tuple[type[ExponentialFamily], ...] = (
    Bernoulli,
    Categorical,
    Gaussian,
    MultivariateGaussian,
    Poisson,
    Exponential,
)
