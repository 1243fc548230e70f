r"""Cramér-Rao bound, Fisher efficiency, and online natural-gradient learning.

- :func:`cramer_rao_bound`: an unbiased estimator from :math:`n` i.i.d. draws has covariance at
  least :math:`F(\theta)^{-1}/n`; for a function :math:`\psi(\theta)` at least
  :math:`J F^{-1}J^\top/n` :cite:`rao1945information,cramer1946mathematical`.
- :func:`online_natural_gradient`:
  :math:`\theta_{t+1} = \theta_t + \frac1{t+t_0}F(\theta_t)^{-1}\nabla\log p(x_t;\theta_t)`,
  one observation per step; asymptotically :math:`n\,\mathrm{Cov}(\theta_n)\to F^{-1}`: Fisher efficient
  :cite:`amari1998natural`.
- :func:`online_sgd`: the same with the plain gradient and step :math:`c/(t+t_0)`; its asymptotic
  covariance :func:`sgd_asymptotic_covariance` solves a Lyapunov equation and exceeds :math:`F^{-1}`
  unless :math:`cF = I` :cite:`amari1998natural,bottou2018optimization`.
- :func:`scaled_covariance`: :math:`n\,\mathrm{Cov}` of Monte Carlo replications with its standard errors.

Both online methods run ``R`` independent replications at once: ``data`` has shape ``(R, n)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.func import grad, vmap

from igbook._validation import (
    as_tensor,
    check_finite,
    check_real,
    check_shape,
    check_symmetric_positive_definite,
)
from igbook.families import family_class

__all__ = [
    "ScaledCovariance",
    "cramer_rao_bound",
    "family_score",
    "online_natural_gradient",
    "online_sgd",
    "scaled_covariance",
    "sgd_asymptotic_covariance",
]

Score = Callable[[Tensor, Tensor], Tensor]


def cramer_rao_bound(fisher: object, n: int = 1, jacobian: object | None = None) -> Tensor:
    r"""The Cramér-Rao lower bound :math:`F^{-1}/n`, or :math:`JF^{-1}J^\top/n` for :math:`\psi(\theta)`
    with :math:`J = \partial\psi/\partial\theta`.

    For an unbiased estimator :math:`\hat\psi` from :math:`n` i.i.d. observations,
    :math:`\mathrm{Cov}(\hat\psi) - JF^{-1}J^\top/n` is positive semi-definite
    :cite:`rao1945information,cramer1946mathematical`.
    """
    f = check_symmetric_positive_definite(as_tensor(fisher, "fisher"), "fisher")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    inv = torch.linalg.inv(f) / n
    if jacobian is None:
        return inv
    j = check_finite(as_tensor(jacobian, "jacobian", dtype=f.dtype), "jacobian")
    if j.ndim == 1:
        j = j.unsqueeze(0)
    check_shape(j, "jacobian", (None, f.shape[0]))
    return j @ inv @ j.T


def family_score(family: object, to_params: Callable[[Tensor], Tensor] | None = None) -> Score:
    r"""Batched score :math:`\nabla_\phi\log p(x;\theta(\phi))` of an :mod:`igbook.families` family.

    Returns ``score(phi (R, d), x (R,)) -> (R, d)``, by :func:`torch.func.grad` of ``log_prob_params``
    vectorized with :func:`torch.func.vmap`. ``to_params`` maps a chart :math:`\phi` to the usual
    coordinates (default: the usual coordinates themselves), e.g. ``(mu, log sigma) -> (mu, sigma)``.
    """
    cls = family_class(family)
    if to_params is not None and not callable(to_params):
        raise TypeError(
            f"to_params must be a function phi -> theta, got {type(to_params).__name__}"
        )
    chart = to_params if to_params is not None else (lambda th: th)
    return vmap(grad(lambda th, x: cls.log_prob_params(chart(th), x)))


def _setup(score: Score, theta0: object, data: object, offset: float) -> tuple[Tensor, Tensor]:
    if not callable(score):
        raise TypeError(
            f"score must be a function (theta (R, d), x (R,)) -> (R, d), got {type(score).__name__}"
        )
    th = check_finite(as_tensor(theta0, "theta0"), "theta0")
    check_shape(th, "theta0", (None,))
    x = check_finite(as_tensor(data, "data", dtype=th.dtype), "data")
    check_shape(x, "data", (None, None))
    if not (isinstance(offset, (int, float)) and offset >= 0):
        raise ValueError(f"offset must be a number >= 0, got {offset!r}")
    return th.expand(x.shape[0], th.shape[0]).clone(), x


def online_natural_gradient(
    score: Score,
    fisher: Callable[[Tensor], Tensor],
    theta0: object,
    data: object,
    *,
    offset: float = 0.0,
) -> Tensor:
    r"""Online natural-gradient learning with step :math:`1/(t+t_0)`, one observation per step.

    .. math::

        \theta_{t+1} = \theta_t + \frac1{t+t_0}\,F(\theta_t)^{-1}\,\nabla_\theta\log p(x_t;\theta_t),
        \qquad t = 1,\dots,n.

    ``score(theta (R, d), x (R,))`` is the batched score (e.g. :func:`family_score`), ``fisher(theta (R, d))``
    the batched Fisher matrix ``(R, d, d)``; ``data`` of shape ``(R, n)`` holds ``R`` independent
    streams. Returns :math:`\theta_{n+1}`, shape ``(R, d)``. Amari (1998) shows
    :math:`n\,\mathrm{Cov}(\theta_n)\to F^{-1}`: the estimator is Fisher efficient :cite:`amari1998natural`.
    """
    if not callable(fisher):
        raise TypeError(
            f"fisher must be a function theta (R, d) -> (R, d, d), got {type(fisher).__name__}"
        )
    th, x = _setup(score, theta0, data, offset)
    for t in range(x.shape[1]):
        step = torch.linalg.solve(fisher(th), score(th, x[:, t]).unsqueeze(-1)).squeeze(-1)
        th = th + step / (t + 1 + offset)
        if not bool(torch.isfinite(th).all()):
            raise ValueError(
                f"online natural gradient diverged at step {t + 1}: use a larger offset"
            )
    return th


def online_sgd(
    score: Score, theta0: object, data: object, *, lr: float, offset: float = 0.0
) -> Tensor:
    r"""Online stochastic gradient ascent on the log-likelihood with step :math:`c/(t+t_0)`:
    :math:`\theta_{t+1} = \theta_t + \frac{c}{t+t_0}\nabla_\theta\log p(x_t;\theta_t)`.
    Returns :math:`\theta_{n+1}`, ``(R, d)`` :cite:`robbins1951stochastic`."""
    lr = check_real(lr, "lr")
    if not lr > 0:
        raise ValueError(f"lr must be a number > 0, got {lr!r}")
    th, x = _setup(score, theta0, data, offset)
    for t in range(x.shape[1]):
        th = th + lr / (t + 1 + offset) * score(th, x[:, t])
        if not bool(torch.isfinite(th).all()):
            raise ValueError(
                f"online SGD diverged at step {t + 1}: use a larger offset or a smaller lr"
            )
    return th


def sgd_asymptotic_covariance(fisher: object, lr: float) -> Tensor:
    r"""Limit of :math:`n\,\mathrm{Cov}(\theta_n)` for :func:`online_sgd` with step :math:`c/t` at the true parameter.

    Near the optimum the Hessian of the expected negative log-likelihood and the covariance of the
    score are both :math:`F`, and the limit :math:`\Sigma` solves the Lyapunov equation

    .. math:: (cF - \tfrac12I)\,\Sigma + \Sigma\,(cF - \tfrac12I) = c^2F,

    which needs :math:`2c\lambda_{\min}(F) > 1` (otherwise the error decays slower than
    :math:`n^{-1/2}`). :math:`\Sigma = F^{-1}` exactly when :math:`cF = I`; for a diagonal :math:`F`,
    :math:`\Sigma_{ii} = c^2F_{ii}/(2cF_{ii}-1) \ge 1/F_{ii}` :cite:`amari1998natural,bottou2018optimization`.
    """
    f = check_symmetric_positive_definite(as_tensor(fisher, "fisher"), "fisher")
    lr = check_real(lr, "lr")
    if not lr > 0:
        raise ValueError(f"lr must be a number > 0, got {lr!r}")
    lam_min = float(torch.linalg.eigvalsh(f)[0])
    if not 2 * lr * lam_min > 1:
        raise ValueError(
            f"lr must satisfy 2 lr lambda_min(F) > 1 for a 1/n rate, got 2 * {lr} * {lam_min:.4g} <= 1"
        )
    d = f.shape[0]
    eye = torch.eye(d, dtype=f.dtype)
    a = lr * f - 0.5 * eye
    big = torch.kron(eye, a) + torch.kron(
        a, eye
    )  # vec(A S + S A) with column-major vec (A symmetric)
    sol = torch.linalg.solve(big, (lr**2 * f).T.reshape(-1))
    s = sol.reshape(d, d).T
    return 0.5 * (s + s.T)


@dataclass(frozen=True)
class ScaledCovariance:
    """``n * Cov`` of replicated estimates (``value``) and the standard error of each entry (``stderr``)."""

    value: Tensor
    stderr: Tensor
    replications: int

    def z(self, target: object) -> Tensor:
        """Entrywise ``(value - target) / stderr``: a standard normal under the hypothesis ``target``."""
        t = as_tensor(target, "target", dtype=self.value.dtype)
        return (self.value - t) / self.stderr


def scaled_covariance(estimates: object, n: int) -> ScaledCovariance:
    r""":math:`n\,\widehat{\mathrm{Cov}}` of ``estimates`` (``(R, d)``, one row per replication), with standard errors.

    The entry :math:`(i,j)` is :math:`n` times the mean of :math:`Y_{ij} = (X_i-\bar X_i)(X_j-\bar X_j)`
    (with the :math:`R/(R-1)` correction); its standard error is :math:`n\,\mathrm{sd}(Y_{ij})/\sqrt R`
    (the delta method, ignoring the :math:`O(1/R)` effect of centring) :cite:`robert2004monte`.
    """
    e = check_finite(as_tensor(estimates, "estimates"), "estimates")
    if e.ndim == 1:
        e = e.unsqueeze(-1)
    check_shape(e, "estimates", (None, None))
    r = e.shape[0]
    if r < 10:
        raise ValueError(f"estimates must hold at least 10 replications (rows), got {r}")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    c = e - e.mean(0)
    y = c.unsqueeze(-1) * c.unsqueeze(-2)
    value = n * y.mean(0) * r / (r - 1)
    stderr = n * y.std(0) / math.sqrt(r)
    return ScaledCovariance(value, stderr, r)
