r"""Natural-gradient VI on conjugate models: Bayes' rule as addition of natural parameters.

Let the prior be an exponential family :math:`p_0(\theta) = h(\theta)\exp(\eta_0^\top T(\theta) - A(\eta_0))`
and the candidate posterior :math:`q_\lambda` the same family. Natural-gradient ascent on the
ELBO :math:`\mathcal L(\lambda) = \sum_i\mathbb E_{q_\lambda}[\log p(y_i\mid\theta)] - \mathrm{KL}(q_\lambda\|p_0)`
with step :math:`\rho` is :cite:`khan2017conjugate,khan2023bayesian`

.. math::

    \lambda_{t+1} = (1-\rho)\,\lambda_t + \rho\,\Big(\eta_0 + \sum_i \tilde g_i(\lambda_t)\Big),
    \qquad \tilde g_i(\lambda) = \nabla_\mu\,\mathbb E_{q_\lambda}[\log p(y_i\mid\theta)].

A likelihood term is *conjugate* when :math:`\log p(y_i\mid\theta) = \lambda_i^\top T(\theta) + c_i`:
then :math:`\mathbb E_q[\log p(y_i\mid\theta)] = \lambda_i^\top\mu + c_i` is linear in
:math:`\mu`, :math:`\tilde g_i = \lambda_i` does not depend on :math:`q`, the fixed point is the
exact posterior :math:`\lambda^* = \eta_0 + \sum_i\lambda_i` (Bayes' rule is the addition of
natural parameters :cite:`khan2025information`), :math:`\rho = 1` reaches it in one step from
any start and :math:`\lambda_t - \lambda^* = (1-\rho)^t(\lambda_0 - \lambda^*)`.

:class:`ConjugateModel` holds this logic once; :class:`BetaBernoulli`, :class:`GammaPoisson`,
:class:`BayesianLinearRegression` and :class:`NormalGammaGaussian` give the messages
:math:`\lambda_i` and constants :math:`c_i` of their likelihoods.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor

from igbook._validation import as_tensor, check_finite, check_positive, check_shape
from igbook.families import Beta, ExponentialFamily, Gamma, MultivariateGaussian, NormalGamma

__all__ = [
    "check_step_size",
    "ngvi_step",
    "ConjugateModel",
    "BetaBernoulli",
    "GammaPoisson",
    "BayesianLinearRegression",
    "NormalGammaGaussian",
    "gaussian_information_posterior",
]

_LOG_2PI = math.log(2.0 * math.pi)


def check_step_size(rho: float, name: str = "rho") -> float:
    """Validate an NGVI step size: a real number in :math:`(0, 1]`."""
    if isinstance(rho, bool) or not isinstance(rho, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(rho).__name__}")
    if not (0.0 < rho <= 1.0):  # also rejects nan
        raise ValueError(f"{name} must lie in (0, 1], got {rho}")
    return float(rho)


def ngvi_step(
    lam: Tensor,
    prior_natural: Tensor,
    messages: Tensor,
    rho: float,
    family: type[ExponentialFamily] | None = None,
) -> Tensor:
    r"""One natural-gradient VI step :math:`\lambda \leftarrow (1-\rho)\lambda + \rho(\eta_0 + \sum_i g_i)`.

    Parameters
    ----------
    lam
        Current natural parameter :math:`\lambda_t` (any shape ``s``).
    prior_natural
        Prior natural parameter :math:`\eta_0`, shape ``s``.
    messages
        The :math:`\tilde g_i`, either already summed (shape ``s``) or stacked (shape ``(N,) + s``,
        summed over the first axis).
    rho
        Step size in :math:`(0, 1]`; :math:`\rho = 1` jumps to :math:`\eta_0 + \sum_i g_i`.
    family
        Optional exponential family of :mod:`igbook.families`; when given, ``lam``,
        ``prior_natural`` and the result must be valid natural parameters of it.

    Raises
    ------
    ValueError
        If ``rho`` is outside :math:`(0, 1]`, shapes do not match, an input is not finite, or
        (with ``family``) a natural parameter is outside the family's natural parameter space.
    """
    rho = check_step_size(rho)
    lam = check_finite(as_tensor(lam, "lam"), "lam")
    eta0 = check_finite(as_tensor(prior_natural, "prior_natural", dtype=lam.dtype), "prior_natural")
    g = check_finite(as_tensor(messages, "messages", dtype=lam.dtype), "messages")
    if eta0.shape != lam.shape:
        raise ValueError(
            f"prior_natural must have the shape of lam {tuple(lam.shape)}, got {tuple(eta0.shape)}"
        )
    if g.shape == lam.shape:
        total = g
    elif g.ndim == lam.ndim + 1 and g.shape[1:] == lam.shape:
        total = g.sum(0)
    else:
        raise ValueError(
            f"messages must have shape {tuple(lam.shape)} or (N, *{tuple(lam.shape)}), got {tuple(g.shape)}"
        )
    out = (1.0 - rho) * lam + rho * (eta0 + total)
    if family is not None:
        if not (isinstance(family, type) and issubclass(family, ExponentialFamily)):
            raise TypeError(f"family must be an ExponentialFamily class, got {family!r}")
        for name, value in (
            ("lam", lam),
            ("prior_natural", eta0),
            ("the updated natural parameter", out),
        ):
            try:
                family.check_natural(value)
            except ValueError as exc:
                raise ValueError(
                    f"{name} is not a valid natural parameter of {family.__name__}: {exc}"
                ) from exc
    return out


def gaussian_information_posterior(
    prior_precision: float, x: Tensor, linear: Tensor, weights: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    r"""Gaussian posterior of linear-regression form, in information form.

    For the prior :math:`\mathcal N(0, \delta^{-1}I)` and likelihood terms
    :math:`\exp(a_i\,x_i^\top w - \tfrac12 b_i (x_i^\top w)^2)`, the posterior has precision and
    shift

    .. math:: P = \delta I + X^\top\mathrm{diag}(b)X, \qquad P m = X^\top a.

    Ordinary Bayesian linear regression has :math:`a_i = y_i/\sigma^2`, :math:`b_i = 1/\sigma^2`;
    conjugate-computation VI (:mod:`igbook.vi.cvi`) calls this with pseudo-observations
    :cite:`khan2017conjugate`. Returns ``(mean, covariance, precision)``.
    """
    _n, d = x.shape
    prec = prior_precision * torch.eye(d, dtype=x.dtype) + (x * weights.unsqueeze(-1)).T @ x
    prec = 0.5 * (prec + prec.T)
    chol, info = torch.linalg.cholesky_ex(prec)
    if int(info) != 0:
        raise ValueError(
            "the posterior precision is not positive definite (negative pseudo-precisions?)"
        )
    mean = torch.cholesky_solve((x.T @ linear).unsqueeze(-1), chol).squeeze(-1)
    cov = torch.cholesky_inverse(chol)
    return mean, 0.5 * (cov + cov.T), prec


# =============================================================================================
class ConjugateModel(ABC):
    r"""A prior in an exponential family and a likelihood conjugate to it.

    Subclasses define ``family``, ``prior``, ``_check_data``, ``_messages``
    (the natural parameters :math:`\lambda_i` of each likelihood term, shape ``(N, d)``) and
    ``_constants`` (the :math:`c_i`, shape ``(N,)``), so that
    :math:`\log p(y_i\mid\theta) = \lambda_i^\top T(\theta) + c_i`. Everything else follows:
    the exact posterior, the evidence, the ELBO, its natural gradient and NGVI.

    ``data`` is a tensor or a tuple of tensors whose first axes index the observations.
    """

    family: type[ExponentialFamily]

    @property
    @abstractmethod
    def prior(self) -> ExponentialFamily:
        """The prior distribution :math:`p_0`."""

    @property
    def prior_natural(self) -> Tensor:
        r"""Prior natural parameter :math:`\eta_0`."""
        return self.prior.natural

    @abstractmethod
    def _check_data(self, data: Any) -> Any:
        """Convert and validate ``data`` (raise ValueError/TypeError naming it)."""

    @abstractmethod
    def _messages(self, data: Any) -> Tensor:
        """Natural parameters of the likelihood terms, shape ``(N, d)`` (data already checked)."""

    @abstractmethod
    def _constants(self, data: Any) -> Tensor:
        """The constants :math:`c_i`, shape ``(N,)`` (data already checked)."""

    # ----- derived -------------------------------------------------------------------------
    def messages(self, data: Any) -> Tensor:
        r"""Natural parameters :math:`\lambda_i` of the likelihood terms, shape ``(N, d)``."""
        return self._messages(self._check_data(data))

    def posterior_natural(self, data: Any) -> Tensor:
        r"""Exact posterior natural parameter :math:`\eta_0 + \sum_i\lambda_i` (Bayes' rule)."""
        return self.prior_natural + self.messages(data).sum(0)

    def posterior(self, data: Any) -> ExponentialFamily:
        """The exact posterior as a distribution (validated)."""
        return self.family.from_natural(self.posterior_natural(data))

    def log_evidence(self, data: Any) -> Tensor:
        r""":math:`\log p(y) = A(\eta_0 + \sum_i\lambda_i) - A(\eta_0) + \sum_i c_i`."""
        data = self._check_data(data)
        post = self.prior_natural + self._messages(data).sum(0)
        return (
            self.family.log_partition(post)
            - self.family.log_partition(self.prior_natural)
            + self._constants(data).sum()
        )

    def _check_lam(self, lam: Tensor, name: str = "lam") -> Tensor:
        lam = check_finite(as_tensor(lam, name, dtype=self.prior_natural.dtype), name)
        if lam.shape != self.prior_natural.shape:
            raise ValueError(
                f"{name} must have shape {tuple(self.prior_natural.shape)}, got {tuple(lam.shape)}"
            )
        try:
            self.family.check_natural(lam)
        except ValueError as exc:
            raise ValueError(
                f"{name} is not a valid natural parameter of {self.family.__name__}: {exc}"
            ) from exc
        return lam

    def expected_log_likelihood(self, lam: Tensor, data: Any) -> Tensor:
        r""":math:`\sum_i\mathbb E_{q_\lambda}[\log p(y_i\mid\theta)] = \sum_i(\lambda_i^\top\mu + c_i)`."""
        lam = self._check_lam(lam)
        data = self._check_data(data)
        mu = self.family.mean_from_natural(lam)
        return (self._messages(data) @ mu).sum() + self._constants(data).sum()

    def elbo(self, lam: Tensor, data: Any) -> Tensor:
        r"""Evidence lower bound :math:`\sum_i\mathbb E_q[\log p(y_i\mid\theta)] - \mathrm{KL}(q_\lambda\|p_0)`.

        The KL divergence is the Bregman divergence :math:`D_A(\eta_0\|\lambda)`. The ELBO equals
        :meth:`log_evidence` minus :math:`\mathrm{KL}(q_\lambda\|p(\theta\mid y))`.
        """
        lam = self._check_lam(lam)
        kl = self.family.bregman_natural(self.prior_natural, lam)
        return self.expected_log_likelihood(lam, data) - kl

    def natural_gradient(self, lam: Tensor, data: Any) -> Tensor:
        r"""Natural gradient of the ELBO,
        :math:`F(\lambda)^{-1}\nabla_\lambda\mathcal L = \eta_0 + \sum_i\lambda_i - \lambda`."""
        lam = self._check_lam(lam)
        return self.posterior_natural(data) - lam

    def ngvi(self, data: Any, rho: float, steps: int, init: Tensor | None = None) -> Tensor:
        r"""Run NGVI with constant step :math:`\rho`; return the iterates, shape ``(steps + 1, d)``.

        ``init`` defaults to the prior. With :math:`\rho = 1` the first iterate is the exact
        posterior whatever ``init`` is.
        """
        rho = check_step_size(rho)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps must be an int >= 0, got {steps!r}")
        lam = self.prior_natural if init is None else self._check_lam(init, "init")
        msg = self.messages(data).sum(0)
        out = [lam]
        for _ in range(steps):
            lam = ngvi_step(lam, self.prior_natural, msg, rho)
            out.append(lam)
        return torch.stack(out)


def _positive_scalar(value: float, name: str) -> Tensor:
    t = as_tensor(value, name)
    check_shape(t, name, ())
    return check_positive(t, name)


class BetaBernoulli(ConjugateModel):
    r"""Bernoulli observations :math:`y_i\in\{0,1\}` with a :math:`\mathrm{Beta}(\alpha_0, \beta_0)` prior.

    In :math:`T(p) = (\log p, \log(1-p))`, observation :math:`y` has message :math:`(y, 1-y)`
    and :math:`c = 0`; the posterior is :math:`\mathrm{Beta}(\alpha_0 + k, \beta_0 + n - k)`.
    """

    family = Beta

    def __init__(self, alpha0: float = 1.0, beta0: float = 1.0) -> None:
        self.alpha0 = _positive_scalar(alpha0, "alpha0")
        self.beta0 = _positive_scalar(beta0, "beta0")

    @property
    def prior(self) -> Beta:
        return Beta(self.alpha0, self.beta0)

    def _check_data(self, data: Any) -> Tensor:
        y = check_finite(as_tensor(data, "data"), "data")
        check_shape(y, "data", (None,))
        if not bool(((y == 0) | (y == 1)).all()):
            raise ValueError("data must hold 0/1 outcomes for a Bernoulli likelihood")
        return y.to(self.alpha0.dtype)

    def _messages(self, data: Tensor) -> Tensor:
        return torch.stack([data, 1.0 - data], -1)

    def _constants(self, data: Tensor) -> Tensor:
        return torch.zeros_like(data)


class GammaPoisson(ConjugateModel):
    r"""Poisson counts with a :math:`\mathrm{Gamma}(\alpha_0, \beta_0)` prior on the rate (:math:`\beta_0` a rate).

    In :math:`T(r) = (\log r, r)`, count :math:`y` has message :math:`(y, -1)` and
    :math:`c = -\log y!`; the posterior is :math:`\mathrm{Gamma}(\alpha_0 + \sum y_i, \beta_0 + n)`.
    """

    family = Gamma

    def __init__(self, alpha0: float = 1.0, beta0: float = 1.0) -> None:
        self.alpha0 = _positive_scalar(alpha0, "alpha0")
        self.beta0 = _positive_scalar(beta0, "beta0")

    @property
    def prior(self) -> Gamma:
        return Gamma(self.alpha0, self.beta0)

    def _check_data(self, data: Any) -> Tensor:
        y = check_finite(as_tensor(data, "data"), "data")
        check_shape(y, "data", (None,))
        if not bool(((y == y.round()) & (y >= 0)).all()):
            raise ValueError("data must hold non-negative integer counts for a Poisson likelihood")
        return y.to(self.alpha0.dtype)

    def _messages(self, data: Tensor) -> Tensor:
        return torch.stack([data, -torch.ones_like(data)], -1)

    def _constants(self, data: Tensor) -> Tensor:
        return -torch.lgamma(data + 1.0)


class BayesianLinearRegression(ConjugateModel):
    r"""Linear regression :math:`y_i = x_i^\top w + \varepsilon_i`, :math:`\varepsilon_i\sim\mathcal N(0,\sigma^2)`,
    prior :math:`w\sim\mathcal N(0,\delta^{-1}I)`.

    The posterior family is :class:`~igbook.families.MultivariateGaussian` (minimal natural
    coordinates). Observation :math:`(x, y)` has message
    :math:`(y x/\sigma^2,\; -\tfrac12 x_j^2/\sigma^2,\; -x_jx_k/\sigma^2\ (j>k))` (the information
    form :math:`h = yx/\sigma^2`, :math:`\Lambda = xx^\top/\sigma^2`) and
    :math:`c = -\tfrac12\log(2\pi\sigma^2) - y^2/(2\sigma^2)`. The exact posterior has
    :math:`P = \delta I + X^\top X/\sigma^2`, :math:`m = P^{-1}X^\top y/\sigma^2`.
    ``data`` is the pair ``(x, y)`` with shapes ``(N, dim)`` and ``(N,)``.
    """

    family = MultivariateGaussian

    def __init__(self, dim: int, prior_precision: float = 1.0, noise_variance: float = 1.0) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be an int >= 1, got {dim!r}")
        self.dim = dim
        self.prior_precision = _positive_scalar(prior_precision, "prior_precision")
        self.noise_variance = _positive_scalar(noise_variance, "noise_variance")

    @property
    def prior(self) -> MultivariateGaussian:
        eye = torch.eye(self.dim, dtype=self.prior_precision.dtype)
        return MultivariateGaussian(
            torch.zeros(self.dim, dtype=eye.dtype), eye / self.prior_precision
        )

    def _check_data(self, data: Any) -> tuple[Tensor, Tensor]:
        if not isinstance(data, (tuple, list)) or len(data) != 2:
            raise TypeError("data must be a pair (x, y)")
        x = check_finite(as_tensor(data[0], "x"), "x")
        y = check_finite(as_tensor(data[1], "y", dtype=x.dtype), "y")
        check_shape(x, "x", (None, self.dim))
        check_shape(y, "y", (x.shape[0],))
        return x, y

    def _messages(self, data: tuple[Tensor, Tensor]) -> Tensor:
        x, y = data
        s2 = self.noise_variance
        return MultivariateGaussian.natural_from_precision(
            y.unsqueeze(-1) * x / s2, x.unsqueeze(-1) * x.unsqueeze(-2) / s2
        )

    def _constants(self, data: tuple[Tensor, Tensor]) -> Tensor:
        _, y = data
        s2 = self.noise_variance
        return -0.5 * torch.log(2 * math.pi * s2) - y**2 / (2 * s2)

    def posterior_mean_cov(self, data: Any) -> tuple[Tensor, Tensor]:
        r"""The exact posterior's mean and covariance by the textbook formula, an independent check."""
        x, y = self._check_data(data)
        s2 = self.noise_variance
        w = torch.full_like(y, 1.0) / s2
        mean, cov, _ = gaussian_information_posterior(float(self.prior_precision), x, y / s2, w)
        return mean, cov


class NormalGammaGaussian(ConjugateModel):
    r"""Gaussian observations with unknown mean and precision and a Normal-Gamma prior.

    :math:`y_i\sim\mathcal N(m, 1/\tau)`, :math:`(m,\tau)\sim\mathrm{NG}(\text{loc}_0,\kappa_0,\alpha_0,\beta_0)`.
    In :math:`T = (\tau m, \tau m^2, \tau, \log\tau)` observation :math:`y` has message
    :math:`(y, -\tfrac12, -\tfrac12y^2, \tfrac12)` and :math:`c = -\tfrac12\log 2\pi`, which gives
    the textbook update :math:`\kappa_N = \kappa_0 + N`,
    :math:`\text{loc}_N = (\kappa_0\text{loc}_0 + N\bar y)/\kappa_N`, :math:`\alpha_N = \alpha_0 + N/2`,
    :math:`\beta_N = \beta_0 + \tfrac12\sum(y_i-\bar y)^2 + \kappa_0N(\bar y-\text{loc}_0)^2/(2\kappa_N)`
    :cite:`bishop2006pattern,murphy2007conjugate`.
    """

    family = NormalGamma

    def __init__(
        self, loc0: float = 0.0, kappa0: float = 1.0, alpha0: float = 1.0, beta0: float = 1.0
    ) -> None:
        loc = as_tensor(loc0, "loc0")
        check_shape(loc, "loc0", ())
        self.loc0 = check_finite(loc, "loc0")
        self.kappa0 = _positive_scalar(kappa0, "kappa0")
        self.alpha0 = _positive_scalar(alpha0, "alpha0")
        self.beta0 = _positive_scalar(beta0, "beta0")

    @property
    def prior(self) -> NormalGamma:
        return NormalGamma(self.loc0, self.kappa0, self.alpha0, self.beta0)

    def _check_data(self, data: Any) -> Tensor:
        y = check_finite(as_tensor(data, "data"), "data")
        check_shape(y, "data", (None,))
        return y

    def _messages(self, data: Tensor) -> Tensor:
        half = torch.full_like(data, 0.5)
        return torch.stack([data, -half, -0.5 * data**2, half], -1)

    def _constants(self, data: Tensor) -> Tensor:
        return torch.full_like(data, -0.5 * _LOG_2PI)
