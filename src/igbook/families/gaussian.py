r"""Univariate and multivariate Gaussians in minimal exponential-family form.

:class:`Gaussian` (usual coordinates :math:`(\mu, \sigma)`, the hyperbolic half-plane of
:cite:t:`costa2015fisher`) and :class:`MultivariateGaussian` (full covariance, information
form, Fisher information by Isserlis' theorem).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from igbook._validation import (
    as_tensor,
    check_count,
    check_finite,
    check_nonempty,
    check_positive,
    check_shape,
    check_symmetric_positive_definite,
    resolve_generator,
)
from igbook.families.base import ExponentialFamily

__all__ = ["Gaussian", "MultivariateGaussian"]

LOG_2PI = math.log(2.0 * math.pi)


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
        return -(eta[0] ** 2) / (4 * eta[1]) - 0.5 * torch.log(-2 * eta[1])

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
        return torch.full_like(x, -0.5 * LOG_2PI)

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
        theta = cls._parameter_vector(theta, "theta", 2)
        return cls(mu=theta[0], sigma=theta[1])

    @property
    def params(self) -> Tensor:
        return torch.stack([self.mu, self.sigma])  # type: ignore[list-item]

    @property
    def variance(self) -> Tensor:
        return self.sigma**2  # type: ignore[operator,return-value]

    def sample(self, n, *, seed=None, generator=None):  # type: ignore[no-untyped-def]
        g = resolve_generator(seed, generator)
        z = torch.randn(check_count(n, "n"), generator=g, dtype=self.params.dtype)
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
        return torch.tensor(-0.5 * LOG_2PI, dtype=self.params.dtype)


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
    :math:`\tfrac12\operatorname{tr}(\Sigma^{-1}\partial_a\Sigma\,\Sigma^{-1}\partial_b\Sigma)` for the covariance
    block.
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
        d = round((-3 + math.sqrt(9 + 8 * n)) / 2)
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
        scale = torch.cat(
            [torch.ones(d, dtype=v.dtype), torch.full((n - d,), offdiag_scale, dtype=v.dtype)]
        )
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
            [
                torch.full((d,), -0.5, dtype=precision.dtype),
                -torch.ones(len(i) - d, dtype=precision.dtype),
            ]
        )
        return torch.cat([shift, precision[..., i, j] * coef], -1)

    @classmethod
    def natural_from_params(cls, theta: Tensor) -> Tensor:
        d = cls._dim_from_len(theta.shape[0])
        m, cov = theta[:d], cls._sym_from_pairs(theta[d:], d, 1.0)
        lam = torch.linalg.inv(cov)
        i, j = _pairs(d)
        coef = lam[i, j] * torch.cat(
            [torch.full((d,), -0.5, dtype=theta.dtype), -torch.ones(len(i) - d, dtype=theta.dtype)]
        )
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
        return torch.full(x.shape[:-1], -0.5 * x.shape[-1] * LOG_2PI, dtype=x.dtype)

    @classmethod
    def _check_natural(cls, eta: Tensor) -> None:
        cls._dim_from_len(eta.shape[0])
        check_symmetric_positive_definite(
            cls.precision_from_natural(eta), "the precision -2*eta2 implied by eta"
        )

    @classmethod
    def _check_mean(cls, mu: Tensor) -> None:
        d = cls._dim_from_len(mu.shape[0])
        i, j = _pairs(d)
        m = mu[:d]
        cov = cls._sym_from_pairs(mu[d:] - m[i] * m[j], d, 1.0)
        check_symmetric_positive_definite(cov, "the covariance implied by mu")

    @classmethod
    def from_params(cls, theta: Tensor) -> MultivariateGaussian:
        theta = cls._parameter_vector(theta, "theta")
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
        g = resolve_generator(seed, generator)
        z = torch.randn(check_count(n, "n"), self.d, generator=g, dtype=self.cov.dtype)
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
        return torch.tensor(-0.5 * self.d * LOG_2PI, dtype=self.cov.dtype)
