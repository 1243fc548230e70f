r"""Variational message passing on the Normal-Gamma model: a Gaussian with unknown mean and precision.

Model :cite:`bishop2006pattern,winn2005variational`: :math:`y_i \sim \mathcal N(m, 1/\tau)`,
:math:`m\mid\tau \sim \mathcal N(\text{loc}_0, 1/(\kappa_0\tau))`,
:math:`\tau\sim\mathrm{Gamma}(\alpha_0, \beta_0)`. The mean-field family is
:math:`q(m)\,q(\tau) = \mathcal N(m\mid \bar m, v)\,\mathrm{Gamma}(\tau\mid a, b)`. Each factor is an
exponential family whose natural parameter is the sum of the messages of its Markov blanket:

.. math::

    \lambda_m &= \mathbb E_q[\tau]\,\Big(\kappa_0\text{loc}_0 + \sum_i y_i,\; -\tfrac12(\kappa_0 + N)\Big)
    \quad\text{in } T(m) = (m, m^2),\\
    \lambda_\tau &= \Big(\alpha_0 - 1 + \tfrac{N+1}2,\;
        -\beta_0 - \tfrac12\,\mathbb E_{q(m)}\Big[\sum_i (y_i-m)^2 + \kappa_0(m-\text{loc}_0)^2\Big]\Big)
    \quad\text{in } T(\tau) = (\log\tau, \tau).

Setting a factor to its message is a natural-gradient step with :math:`\rho = 1` on that
factor; :func:`vmp_normal_gamma` also allows damped steps :math:`\rho < 1`
(:math:`\lambda \leftarrow (1-\rho)\lambda + \rho\,\text{message}`). The exact posterior is
Normal-Gamma (:class:`igbook.vi.conjugate.NormalGammaGaussian`), which the chapter compares with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from igbook._validation import as_tensor, check_finite, check_shape
from igbook.families import Gamma, Gaussian, NormalGamma
from igbook.vi.conjugate import check_step_size

__all__ = [
    "VMPResult",
    "normal_gamma_messages",
    "mean_field_elbo",
    "mean_field_kl",
    "vmp_normal_gamma",
]

_LOG_2PI = math.log(2.0 * math.pi)


@dataclass(frozen=True)
class VMPResult:
    """Outcome of :func:`vmp_normal_gamma`.

    ``mean_natural`` and ``precision_natural`` hold the natural parameters of :math:`q(m)`
    (:class:`~igbook.families.Gaussian`) and :math:`q(\\tau)` (:class:`~igbook.families.Gamma`)
    after each sweep (row 0 is the start); ``elbo`` the ELBO after each sweep.
    """

    mean_natural: Tensor
    precision_natural: Tensor
    elbo: Tensor

    @property
    def q_mean(self) -> Gaussian:
        """The final :math:`q(m)`."""
        return Gaussian.from_natural(self.mean_natural[-1])

    @property
    def q_precision(self) -> Gamma:
        r"""The final :math:`q(\tau)`."""
        return Gamma.from_natural(self.precision_natural[-1])

    @property
    def sweeps(self) -> int:
        return int(self.elbo.shape[0] - 1)


def _check_y(y: Tensor) -> Tensor:
    y = check_finite(as_tensor(y, "y"), "y")
    check_shape(y, "y", (None,))
    if y.shape[0] < 1:
        raise ValueError("y must hold at least one observation")
    return y


def _check_prior(prior: NormalGamma) -> NormalGamma:
    if not isinstance(prior, NormalGamma):
        raise TypeError(f"prior must be a NormalGamma, got {type(prior).__name__}")
    return prior


def normal_gamma_messages(
    y: Tensor, prior: NormalGamma, q_mean: Gaussian, q_precision: Gamma
) -> tuple[Tensor, Tensor]:
    r"""The VMP messages: the natural parameters that :math:`q(m)` and :math:`q(\tau)` are set to.

    ``q_mean`` enters the message to :math:`\tau` and ``q_precision`` the message to :math:`m`
    (formulas in the module docstring). Returns ``(lambda_m, lambda_tau)``.
    """
    y, prior = _check_y(y), _check_prior(prior)
    loc0, k0, a0, b0 = prior.params
    n = y.shape[0]
    e_tau = q_precision.alpha / q_precision.beta  # type: ignore[operator]
    lam_m = e_tau * torch.stack([k0 * loc0 + y.sum(), -0.5 * (k0 + n)])
    e_m, var_m = q_mean.mu, q_mean.variance  # type: ignore[union-attr]
    sq = ((y - e_m) ** 2).sum() + n * var_m + k0 * ((e_m - loc0) ** 2 + var_m)
    lam_tau = torch.stack([a0 - 1.0 + 0.5 * (n + 1), -b0 - 0.5 * sq])
    return lam_m, lam_tau


def mean_field_elbo(y: Tensor, prior: NormalGamma, q_mean: Gaussian, q_precision: Gamma) -> Tensor:
    r"""ELBO of :math:`q(m)q(\tau)`, term by term.

    .. math::

        \mathcal L = \mathbb E_q[\log p(y\mid m,\tau)] + \mathbb E_q[\log p(m\mid\tau)]
        + \mathbb E_q[\log p(\tau)] + \mathrm H[q(m)] + \mathrm H[q(\tau)],

    with :math:`\mathbb E[\log\tau] = \psi(a) - \log b` and
    :math:`\mathbb E[(y-m)^2] = (y-\bar m)^2 + v`.
    """
    y, prior = _check_y(y), _check_prior(prior)
    loc0, k0, a0, b0 = prior.params
    n = y.shape[0]
    a, b = q_precision.params
    e_tau, e_log_tau = a / b, torch.digamma(a) - torch.log(b)
    e_m, var_m = q_mean.mu, q_mean.variance  # type: ignore[union-attr]
    lik = 0.5 * n * (e_log_tau - _LOG_2PI) - 0.5 * e_tau * (((y - e_m) ** 2).sum() + n * var_m)
    prior_m = 0.5 * (torch.log(k0) + e_log_tau - _LOG_2PI) - 0.5 * k0 * e_tau * (
        (e_m - loc0) ** 2 + var_m
    )
    prior_tau = a0 * torch.log(b0) - torch.lgamma(a0) + (a0 - 1) * e_log_tau - b0 * e_tau
    return lik + prior_m + prior_tau + q_mean.entropy() + q_precision.entropy()


def mean_field_kl(q_mean: Gaussian, q_precision: Gamma, target: NormalGamma) -> Tensor:
    r""":math:`\mathrm{KL}(q(m)q(\tau)\,\|\,p(m,\tau))` for a Normal-Gamma :math:`p`, in closed form.

    :math:`\mathbb E_q[\log p] = \eta_p^\top\mathbb E_q[T] - A(\eta_p) - \tfrac12\log 2\pi` with
    :math:`\mathbb E_q[T] = (\mathbb E\tau\,\mathbb E m,\; \mathbb E\tau\,\mathbb E m^2,\; \mathbb E\tau,\;
    \mathbb E\log\tau)`
    under the factorization, and :math:`\mathbb E_q[\log q] = -\mathrm H[q(m)] - \mathrm H[q(\tau)]`.
    """
    if not isinstance(target, NormalGamma):
        raise TypeError(f"target must be a NormalGamma, got {type(target).__name__}")
    e_log_tau, e_tau = q_precision.mean
    e_m, e_m2 = q_mean.mean
    et = torch.stack([e_tau * e_m, e_tau * e_m2, e_tau, e_log_tau])
    eta = target.natural
    e_log_p = eta @ et - NormalGamma.log_partition(eta) - 0.5 * _LOG_2PI
    return -q_mean.entropy() - q_precision.entropy() - e_log_p


def vmp_normal_gamma(
    y: Tensor,
    prior: NormalGamma,
    sweeps: int = 20,
    *,
    rho: float = 1.0,
    init_precision: Gamma | None = None,
    init_mean: Gaussian | None = None,
) -> VMPResult:
    r"""Variational message passing (coordinate ascent) for the mean-field Normal-Gamma model.

    Each sweep updates :math:`q(m)` from :math:`q(\tau)`, then :math:`q(\tau)` from the new
    :math:`q(m)`, each by :math:`\lambda \leftarrow (1-\rho)\lambda + \rho\,\text{message}`
    (:math:`\rho = 1`: VMP of :cite:t:`winn2005variational`). With :math:`\rho = 1` every
    update maximizes the ELBO over one factor, so the ELBO never decreases.

    Parameters
    ----------
    y
        Observations, shape ``(N,)``.
    prior
        The Normal-Gamma prior.
    sweeps
        Number of sweeps (>= 0).
    rho
        Step size in :math:`(0, 1]`.
    init_precision, init_mean
        Starting factors; default :math:`q(\tau)` = the prior marginal of :math:`\tau` and
        :math:`q(m) = \mathcal N(\text{loc}_0, 1)` (only used when ``rho < 1``; with ``rho = 1``
        the first update overwrites it).
    """
    y, prior = _check_y(y), _check_prior(prior)
    rho = check_step_size(rho)
    if isinstance(sweeps, bool) or not isinstance(sweeps, int) or sweeps < 0:
        raise ValueError(f"sweeps must be an int >= 0, got {sweeps!r}")
    q_tau = prior.marginal_tau() if init_precision is None else init_precision
    q_m = Gaussian(prior.loc, 1.0) if init_mean is None else init_mean
    if not isinstance(q_tau, Gamma):
        raise TypeError(f"init_precision must be a Gamma, got {type(q_tau).__name__}")
    if not isinstance(q_m, Gaussian):
        raise TypeError(f"init_mean must be a Gaussian, got {type(q_m).__name__}")
    lam_m, lam_t = q_m.natural, q_tau.natural
    hist_m, hist_t = [lam_m], [lam_t]
    elbos = [mean_field_elbo(y, prior, q_m, q_tau)]
    for _ in range(sweeps):
        msg_m, _ = normal_gamma_messages(y, prior, q_m, q_tau)
        lam_m = (1 - rho) * lam_m + rho * msg_m
        q_m = Gaussian.from_natural(lam_m)
        _, msg_t = normal_gamma_messages(y, prior, q_m, q_tau)
        lam_t = (1 - rho) * lam_t + rho * msg_t
        q_tau = Gamma.from_natural(lam_t)
        hist_m.append(lam_m)
        hist_t.append(lam_t)
        elbos.append(mean_field_elbo(y, prior, q_m, q_tau))
    return VMPResult(torch.stack(hist_m), torch.stack(hist_t), torch.stack(elbos))
