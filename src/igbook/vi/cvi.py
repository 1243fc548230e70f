r"""Conjugate-computation VI (CVI) for Bayesian logistic regression, and Euclidean-gradient VI.

Model: :math:`p(y_i = 1\mid w) = \sigma(x_i^\top w)`, prior :math:`w\sim\mathcal N(0, \delta^{-1}I)`,
Gaussian posterior :math:`q(w) = \mathcal N(m, V)`. The ELBO is

.. math::

    \mathcal L(m, V) = \sum_i \mathbb E_{q}[f_i(x_i^\top w)]
    - \mathrm{KL}\big(\mathcal N(m,V)\,\|\,\mathcal N(0,\delta^{-1}I)\big),
    \qquad f_i(a) = y_i a - \log(1 + e^{a}),

and each expectation depends only on the one-dimensional Gaussian
:math:`a_i = x_i^\top w \sim \mathcal N(\nu_i, s_i^2)`, :math:`\nu_i = x_i^\top m`,
:math:`s_i^2 = x_i^\top V x_i`. It is estimated by :math:`\hat E_i = \sum_k \omega_k f_i(\nu_i + s_i z_k)`
with Gauss-Hermite nodes (deterministic, the default) or fixed antithetic Monte Carlo draws.
Both algorithms below use this *same* estimator and its *exact* derivatives

.. math::

    g_i = \frac{\partial\hat E_i}{\partial\nu_i} = \sum_k\omega_k f_i'(a_{ik}), \qquad
    h_i = 2\frac{\partial\hat E_i}{\partial s_i^2} = \sum_k\omega_k f_i'(a_{ik})\,\frac{z_k}{s_i}
    \;\approx\; \mathbb E[f_i''(a_i)],

so they converge to the same optimum. By the Bonnet and Price identities :cite:`opper2009variational`
:math:`\nabla_{\mu}` of the expected log-likelihood in the Gaussian's mean parameters
:math:`(m, V + mm^\top)` is :math:`\big(\sum_i x_i(g_i - h_i\nu_i),\ \tfrac12\sum_i h_i x_ix_i^\top\big)`.

**CVI** :cite:`khan2017conjugate` takes the natural-gradient step
:math:`\lambda\leftarrow(1-\rho)\lambda + \rho(\eta_0 + \nabla_\mu\mathbb E_q[\sum_i f_i])` and
keeps its non-conjugate part as one *pseudo-observation* per data point,
:math:`\tilde\alpha_i \leftarrow (1-\rho)\tilde\alpha_i + \rho(g_i - h_i\nu_i)`,
:math:`\tilde\beta_i \leftarrow (1-\rho)\tilde\beta_i - \rho h_i`; the new :math:`q` is then the
posterior of a *conjugate* model, Bayesian linear regression with those pseudo-observations
(:func:`igbook.vi.conjugate.gaussian_information_posterior`):
:math:`V^{-1} = \delta I + X^\top\mathrm{diag}(\tilde\beta)X`, :math:`V^{-1}m = X^\top\tilde\alpha`.

**Euclidean-gradient VI** ascends the same ELBO estimator in :math:`(m, L)`, :math:`V = LL^\top`
(the Cholesky parameterization of :cite:t:`challis2013gaussian`), with gradients by autograd:
plain gradient ascent, or Adam :cite:`kingma2015adam`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor

from igbook._validation import (
    as_tensor,
    check_finite,
    check_nonempty,
    check_positive,
    check_real,
    check_shape,
)
from igbook.vi.conjugate import check_step_size, gaussian_information_posterior

__all__ = [
    "gauss_hermite",
    "BayesianLogisticRegression",
    "VIResult",
    "cvi",
    "euclidean_vi",
    "steps_to_reach",
    "steps_to_settle",
]


def gauss_hermite(num: int, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    r"""Nodes and weights for :math:`\mathbb E_{z\sim\mathcal N(0,1)}[f(z)] \approx \sum_k\omega_kf(z_k)`.

    Golub-Welsch: the nodes are the eigenvalues of the Jacobi matrix of the probabilists'
    Hermite polynomials (off-diagonal :math:`\sqrt k`), the weights the squared first components
    of its eigenvectors. Exact for polynomials of degree up to :math:`2\,\text{num} - 1`.
    """
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise ValueError(f"num must be an int >= 1, got {num!r}")
    off = torch.sqrt(torch.arange(1, num, dtype=torch.float64))
    jac = torch.diag(off, 1) + torch.diag(off, -1)
    nodes, vecs = torch.linalg.eigh(jac)
    weights = vecs[0] ** 2
    return nodes.to(dtype), (weights / weights.sum()).to(dtype)


@dataclass(frozen=True)
class BayesianLogisticRegression:
    r"""Bayesian logistic regression with a Gaussian prior and an ELBO estimator.

    Parameters
    ----------
    x
        Features, shape ``(N, D)`` (add a column of ones for a bias).
    y
        Labels in :math:`\{0, 1\}`, shape ``(N,)``.
    prior_precision
        :math:`\delta > 0`.
    estimator
        ``"quadrature"`` (Gauss-Hermite, deterministic) or ``"mc"`` (antithetic standard-normal
        draws per data point, drawn once from ``seed`` and then fixed: a sample-average
        approximation of the ELBO, so that the estimator is a fixed function).
    num_points
        Quadrature nodes, or Monte Carlo draws (even).
    seed
        Seed of the Monte Carlo draws.
    """

    x: Tensor
    y: Tensor
    prior_precision: float = 1.0
    estimator: str = "quadrature"
    num_points: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        x = check_finite(as_tensor(self.x, "x"), "x")
        check_shape(x, "x", (None, None))
        y = check_finite(as_tensor(self.y, "y", dtype=x.dtype), "y")
        check_shape(y, "y", (x.shape[0],))
        if not bool(((y == 0) | (y == 1)).all()):
            raise ValueError("y must hold labels 0 or 1")
        check_positive(as_tensor(self.prior_precision, "prior_precision"), "prior_precision")
        if self.estimator not in ("quadrature", "mc"):
            raise ValueError(f"estimator must be 'quadrature' or 'mc', got {self.estimator!r}")
        if (
            isinstance(self.num_points, bool)
            or not isinstance(self.num_points, int)
            or self.num_points < 2
        ):
            raise ValueError(f"num_points must be an int >= 2, got {self.num_points!r}")
        if self.estimator == "mc" and self.num_points % 2:
            raise ValueError(
                f"num_points must be even for antithetic Monte Carlo, got {self.num_points}"
            )
        object.__setattr__(self, "x", x)
        object.__setattr__(self, "y", y)
        object.__setattr__(self, "prior_precision", float(self.prior_precision))
        if self.estimator == "quadrature":
            z, w = gauss_hermite(self.num_points, x.dtype)
            z, w = z.expand(x.shape[0], -1), w.expand(x.shape[0], -1)
        else:
            g = torch.Generator().manual_seed(self.seed)
            half = torch.randn(x.shape[0], self.num_points // 2, generator=g, dtype=x.dtype)
            z = torch.cat([half, -half], -1)
            w = torch.full_like(z, 1.0 / self.num_points)
        object.__setattr__(self, "_nodes", z)
        object.__setattr__(self, "_weights", w)

    @property
    def num_data(self) -> int:
        return int(self.x.shape[0])

    @property
    def dim(self) -> int:
        return int(self.x.shape[1])

    # ----- the estimator ----------------------------------------------------------------------
    def _check_q(self, mean: Tensor, cov: Tensor) -> tuple[Tensor, Tensor]:
        mean = as_tensor(mean, "mean", dtype=self.x.dtype)
        cov = as_tensor(cov, "cov", dtype=self.x.dtype)
        check_shape(mean, "mean", (self.dim,))
        check_shape(cov, "cov", (self.dim, self.dim))
        check_finite(mean, "mean")
        check_finite(cov, "cov")
        return mean, cov

    def marginals(self, mean: Tensor, cov: Tensor) -> tuple[Tensor, Tensor]:
        r""":math:`\nu_i = x_i^\top m` and :math:`s_i = \sqrt{x_i^\top V x_i}`, shapes ``(N,)``."""
        nu = self.x @ mean
        s2 = ((self.x @ cov) * self.x).sum(-1)
        return nu, torch.sqrt(s2.clamp_min(1e-300))

    def expectations(self, mean: Tensor, cov: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        r"""Per-example :math:`(\hat E_i, g_i, h_i)`, each of shape ``(N,)`` (see the module docstring)."""
        mean, cov = self._check_q(mean, cov)
        nu, s = self.marginals(mean, cov)
        z, w = self._nodes, self._weights
        a = nu.unsqueeze(-1) + s.unsqueeze(-1) * z
        y = self.y.unsqueeze(-1)
        f = y * a - torch.nn.functional.softplus(a)
        df = y - torch.sigmoid(a)
        value = (w * f).sum(-1)
        g = (w * df).sum(-1)
        h = (w * df * z).sum(-1) / s
        return value, g, h

    def kl_to_prior(self, mean: Tensor, cov: Tensor) -> Tensor:
        r""":math:`\tfrac12\big(\delta\operatorname{tr}V + \delta\|m\|^2 - D - D\log\delta - \log\det V\big)`."""
        d, dl = self.dim, self.prior_precision
        chol = torch.linalg.cholesky(cov)
        logdet = 2 * torch.log(torch.diagonal(chol)).sum()
        return 0.5 * (dl * torch.trace(cov) + dl * (mean @ mean) - d - d * math.log(dl) - logdet)

    def elbo(self, mean: Tensor, cov: Tensor) -> Tensor:
        """The ELBO estimate (differentiable in ``mean`` and ``cov`` by autograd)."""
        mean, cov = self._check_q(mean, cov)
        nu, s = self.marginals(mean, cov)
        a = nu.unsqueeze(-1) + s.unsqueeze(-1) * self._nodes
        f = self.y.unsqueeze(-1) * a - torch.nn.functional.softplus(a)
        return (self._weights * f).sum() - self.kl_to_prior(mean, cov)

    def natural_gradient(self, mean: Tensor, cov: Tensor) -> tuple[Tensor, Tensor]:
        r"""Natural gradient of the ELBO in the matrix natural coordinates :math:`(V^{-1}m, -\tfrac12V^{-1})`.

        It is :math:`\nabla_\mu\mathcal L = \eta_0 + \nabla_\mu\mathbb E_q[\sum_i f_i] - \lambda`:
        returns the pair (shift part :math:`X^\top(g - h\odot\nu) - V^{-1}m`, matrix part
        :math:`\tfrac12X^\top\mathrm{diag}(h)X - \tfrac12\delta I + \tfrac12V^{-1}`).
        """
        _, g, h = self.expectations(mean, cov)
        nu = self.x @ mean
        prec = torch.linalg.inv(cov)
        d = self.dim
        shift = self.x.T @ (g - h * nu) - prec @ mean
        mat = (
            0.5 * (self.x * h.unsqueeze(-1)).T @ self.x
            - 0.5 * self.prior_precision * torch.eye(d, dtype=cov.dtype)
            + 0.5 * prec
        )
        return shift, mat


@dataclass(frozen=True)
class VIResult:
    """Iterates of a VI algorithm: ``elbo[t]``, ``time[t]`` (seconds since the start) and the final ``mean``, ``cov``.

    ``means`` holds every mean iterate, ``covs`` every covariance iterate when recorded
    (``keep_history=True``), else only the last one.
    """

    elbo: Tensor
    time: Tensor
    means: Tensor
    covs: Tensor

    @property
    def mean(self) -> Tensor:
        return self.means[-1]

    @property
    def cov(self) -> Tensor:
        return self.covs[-1]


def _check_int(v: int, name: str, low: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise ValueError(f"{name} must be an int >= {low}, got {v!r}")
    return v


def cvi(
    model: BayesianLogisticRegression,
    *,
    rho: float = 1.0,
    steps: int = 20,
    sites: tuple[Tensor, Tensor] | None = None,
    keep_history: bool = False,
) -> VIResult:
    r"""Conjugate-computation VI :cite:`khan2017conjugate` for :class:`BayesianLogisticRegression`.

    Starts from the prior (all pseudo-observations zero) unless ``sites = (alpha, beta)`` is
    given, and runs ``steps`` updates

    .. math::

        \tilde\alpha_i \leftarrow (1-\rho)\tilde\alpha_i + \rho(g_i - h_i\nu_i),\quad
        \tilde\beta_i \leftarrow (1-\rho)\tilde\beta_i - \rho h_i,\quad
        V^{-1} = \delta I + X^\top\mathrm{diag}(\tilde\beta)X,\quad V^{-1}m = X^\top\tilde\alpha.

    This is the NGVI step :math:`\lambda\leftarrow(1-\rho)\lambda + \rho(\eta_0 + \sum_i\tilde g_i)`
    written per data point; :math:`h_i \le 0` for the (log-concave) logistic likelihood, so the
    pseudo-precisions stay non-negative and :math:`V` positive definite.
    """
    if not isinstance(model, BayesianLogisticRegression):
        raise TypeError(f"model must be a BayesianLogisticRegression, got {type(model).__name__}")
    rho = check_step_size(rho)
    steps = _check_int(steps, "steps", 0)
    n = model.num_data
    if sites is None:
        alpha = torch.zeros(n, dtype=model.x.dtype)
        beta = torch.zeros(n, dtype=model.x.dtype)
    else:
        alpha = check_finite(as_tensor(sites[0], "sites[0]", dtype=model.x.dtype), "sites[0]")
        beta = check_finite(as_tensor(sites[1], "sites[1]", dtype=model.x.dtype), "sites[1]")
        check_shape(alpha, "sites[0]", (n,))
        check_shape(beta, "sites[1]", (n,))
        if not bool((beta >= 0).all()):
            raise ValueError("sites[1] (pseudo-precisions) must be >= 0")
    t0 = time.perf_counter()
    mean, cov, _ = gaussian_information_posterior(model.prior_precision, model.x, alpha, beta)
    means, covs, elbos, times = [mean], [cov], [], []
    for _ in range(steps):
        value, g, h = model.expectations(mean, cov)
        elbos.append(value.sum() - model.kl_to_prior(mean, cov))
        times.append(time.perf_counter() - t0)
        nu = model.x @ mean
        alpha = (1 - rho) * alpha + rho * (g - h * nu)
        beta = (1 - rho) * beta - rho * h
        mean, cov, _ = gaussian_information_posterior(model.prior_precision, model.x, alpha, beta)
        means.append(mean)
        if keep_history:
            covs.append(cov)
        else:
            covs[-1] = cov
    elbos.append(model.elbo(mean, cov))
    times.append(time.perf_counter() - t0)
    return VIResult(
        torch.stack(elbos).detach(), torch.tensor(times), torch.stack(means), torch.stack(covs)
    )


def euclidean_vi(
    model: BayesianLogisticRegression,
    *,
    lr: float,
    steps: int,
    optimizer: str = "gd",
    init: tuple[Tensor, Tensor] | None = None,
    keep_history: bool = False,
) -> VIResult:
    r"""VI by Euclidean gradient ascent on the same ELBO estimator, in :math:`(m, L)`, :math:`V = LL^\top`.

    ``optimizer="gd"``: :math:`(m, L) \leftarrow (m, L) + \text{lr}\,\nabla_{(m,L)}\hat{\mathcal L}`;
    ``optimizer="adam"``: :class:`torch.optim.Adam` with learning rate ``lr``. Gradients by
    autograd; :math:`L` is kept lower triangular. The start is the prior unless ``init =
    (mean, cov)``. A step that makes the ELBO non-finite raises :class:`ValueError` (lr too large).
    """
    if not isinstance(model, BayesianLogisticRegression):
        raise TypeError(f"model must be a BayesianLogisticRegression, got {type(model).__name__}")
    if (
        isinstance(lr, bool)
        or not isinstance(lr, (int, float))
        or not (lr > 0 and math.isfinite(lr))
    ):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    steps = _check_int(steps, "steps", 0)
    if optimizer not in ("gd", "adam"):
        raise ValueError(f"optimizer must be 'gd' or 'adam', got {optimizer!r}")
    d = model.dim
    if init is None:
        m0 = torch.zeros(d, dtype=model.x.dtype)
        l0 = torch.eye(d, dtype=model.x.dtype) / math.sqrt(model.prior_precision)
    else:
        m0, c0 = model._check_q(*init)
        l0 = torch.linalg.cholesky(c0)
    m = m0.clone().requires_grad_(True)
    chol = l0.clone().requires_grad_(True)
    mask = torch.tril(torch.ones(d, d, dtype=torch.bool))
    opt = torch.optim.Adam([m, chol], lr=lr) if optimizer == "adam" else None
    t0 = time.perf_counter()
    means, covs, elbos, times = [m0.clone()], [l0 @ l0.T], [], []

    def objective() -> Tensor:
        low = torch.where(mask, chol, torch.zeros_like(chol))
        cov = low @ low.T
        nu = model.x @ m
        s = torch.sqrt((((model.x @ low) ** 2).sum(-1)).clamp_min(1e-300))
        a = nu.unsqueeze(-1) + s.unsqueeze(-1) * model._nodes
        f = model.y.unsqueeze(-1) * a - torch.nn.functional.softplus(a)
        dl = model.prior_precision
        logdet = torch.log(torch.diagonal(low) ** 2).sum()
        kl = 0.5 * (dl * torch.trace(cov) + dl * (m @ m) - d - d * math.log(dl) - logdet)
        return (model._weights * f).sum() - kl

    for step in range(steps):
        value = objective()
        if not bool(torch.isfinite(value)):
            raise ValueError(f"the ELBO became non-finite at step {step}: lr={lr} is too large")
        elbos.append(value.detach())
        times.append(time.perf_counter() - t0)
        gm, gl = torch.autograd.grad(value, [m, chol])
        with torch.no_grad():
            if opt is None:
                m += lr * gm
                chol += lr * torch.where(mask, gl, torch.zeros_like(gl))
            else:
                m.grad, chol.grad = -gm, -torch.where(mask, gl, torch.zeros_like(gl))
                opt.step()
        if keep_history:
            low = torch.where(mask, chol, torch.zeros_like(chol)).detach()
            means.append(m.detach().clone())
            covs.append(low @ low.T)
    with torch.no_grad():
        value = objective()
        if not bool(torch.isfinite(value)):
            raise ValueError(f"the ELBO became non-finite at step {steps}: lr={lr} is too large")
        elbos.append(value)
        times.append(time.perf_counter() - t0)
        low = torch.where(mask, chol, torch.zeros_like(chol))
        if not keep_history:
            means, covs = [m.detach().clone()], [low @ low.T]
    return VIResult(torch.stack(elbos), torch.tensor(times), torch.stack(means), torch.stack(covs))


def _trace_and_level(elbo: Tensor, target: float, tol: float) -> tuple[Tensor, float]:
    """``elbo`` a finite non-empty 1-D trace, ``target`` finite, ``tol`` finite and >= 0; returns the
    trace and ``target - tol``."""
    e = check_finite(as_tensor(elbo, "elbo"), "elbo")
    check_shape(e, "elbo", (None,))
    check_nonempty(e, "elbo")
    target = check_real(target, "target")
    tol = check_real(tol, "tol")
    if tol < 0:
        raise ValueError(f"tol must be >= 0, got {tol}")
    return e, target - tol


def steps_to_reach(elbo: Tensor, target: float, tol: float) -> int | None:
    """First iteration ``t`` with ``elbo[t] >= target - tol``, or ``None`` if never.

    ``elbo`` is a finite 1-D trace, ``target`` a finite real, ``tol`` a finite real >= 0.
    """
    e, level = _trace_and_level(elbo, target, tol)
    hit = torch.nonzero(e >= level)
    return int(hit[0]) if hit.numel() else None


def steps_to_settle(elbo: Tensor, target: float, tol: float) -> int | None:
    """First iteration ``t`` from which ``elbo[s] >= target - tol`` for every ``s >= t``, or ``None``.

    Stricter than :func:`steps_to_reach` for methods whose ELBO is not monotone (Adam); the
    arguments are checked as there.
    """
    e, level = _trace_and_level(elbo, target, tol)
    ok = e >= level
    if not bool(ok[-1]):
        return None
    bad = torch.nonzero(~ok)
    return int(bad[-1]) + 1 if bad.numel() else 0
