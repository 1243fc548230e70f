"""Beta, Gamma and Normal-Gamma: the conjugate priors and variational posteriors of :mod:`igbook.vi`.

Their inverse mean maps :math:`\\mu\\mapsto\\eta = \nabla A^*(\\mu)` have no closed form and
are computed by a damped Newton solve (``_newton_natural_from_mean``), exact to rounding and
differentiable to any order used in the book (Hessians of :math:`A^*`, derivatives of the Fisher
metric in mean coordinates).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from igbook._validation import (
    as_tensor,
    check_count,
    check_finite,
    check_positive,
    check_shape,
    resolve_generator,
)
from igbook.families.base import ExponentialFamily

__all__ = ["Beta", "Gamma", "NormalGamma"]

LOG_2PI = math.log(2.0 * math.pi)


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
    graph_steps: int = 3,
) -> Tensor:
    r"""Solve :math:`\nabla A(\eta) = \mu` by damped Newton from ``eta0``.

    It minimizes the strictly convex :math:`\Phi(\eta) = A(\eta) - \eta^\top\mu`, whose gradient
    is :math:`\nabla A(\eta) - \mu` and whose Hessian is the Fisher matrix, with a backtracking
    line search that keeps :math:`\eta` in the natural parameter space; the minimizer is
    :math:`\eta = \nabla A^*(\mu)`. The loop runs without autograd on detached values.

    Derivatives through the solve. Write one Newton step as
    :math:`N(\eta, \mu) = \eta - F(\eta)^{-1}(\nabla A(\eta) - \mu)`. At the solution
    :math:`\eta^\star(\mu)` the map is a fixed point with :math:`\partial_\eta N = 0`, so the
    :math:`k`-th derivative of :math:`\eta_{j+1} = N(\eta_j(\mu), \mu)` only involves derivatives
    of :math:`\eta_j` of order below :math:`k`: starting from the detached (constant) solution,
    ``graph_steps`` Newton steps taken *with* autograd give :math:`\eta(\mu)` whose derivatives
    are exact (at convergence) up to order ``graph_steps``, the implicit-function-theorem
    derivatives :math:`\partial\eta/\partial\mu = F^{-1}`,
    :math:`\partial^2\eta/\partial\mu^2 = -F^{-1}(\partial_\eta F\,F^{-1})F^{-1}`, and so on
    by the implicit function theorem. A single graph step (what an earlier version did) has the
    right first derivative but a zero second derivative, which made the Christoffel symbols and
    curvature of the Fisher metric in mean coordinates wrong. Three steps cover everything the
    book differentiates (the curvature of the metric in mean coordinates needs third derivatives
    of :math:`\eta(\mu)`); the values change only by rounding.
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
            tiny_residual = float(g.abs().max()) <= 8 * torch.finfo(g.dtype).eps * (
                1.0 + float(mu_d.abs().max())
            )
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
                    raise ValueError(
                        "the Newton solve for the natural parameter failed to make progress"
                    )
            eta = new
        else:
            raise ValueError(
                f"the Newton solve for the natural parameter did not converge in {max_iter} steps"
            )
    eta = eta.detach()
    for _ in range(graph_steps):
        eta = eta - torch.linalg.solve(fisher_natural(eta), family.mean_from_natural(eta) - mu)
    return eta


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
    def fisher_from_natural(cls, eta: Tensor) -> Tensor:
        r"""Closed-form
        :math:`F(\eta) = \mathrm{diag}(\psi'(\alpha), \psi'(\beta)) - \psi'(\alpha+\beta)\mathbf 1\mathbf 1^\top`
        with :math:`(\alpha, \beta) = \eta + 1` (unchecked, pure; :meth:`fisher_natural` is the checked twin)."""
        ab = eta + 1.0
        return torch.diag(torch.polygamma(1, ab)) - torch.polygamma(1, ab.sum())

    @classmethod
    def natural_from_mean(cls, mu: Tensor) -> Tensor:
        # start from psi(a) ~ log(a - 1/2): e^{mu_k} ~ (a_k - 1/2)/(a + b - 1/2)
        e = torch.exp(mu.detach())
        s = 0.5 / (1.0 - e.sum()).clamp_min(1e-12)
        eta0 = 0.5 + s * e - 1.0
        return _newton_natural_from_mean(
            cls, mu, eta0, cls.fisher_from_natural, lambda eta: bool((eta > -1).all())
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
        theta = cls._parameter_vector(theta, "theta", 2)
        return cls(alpha=theta[0], beta=theta[1])

    @property
    def params(self) -> Tensor:
        return torch.stack([self.alpha, self.beta])  # type: ignore[list-item]

    def _check_x(self, x: Tensor) -> None:
        check_finite(x, "x")
        if not bool(((x > 0) & (x < 1)).all()):
            raise ValueError("x must lie in (0, 1) for a Beta distribution")

    def sample(self, n, *, seed=None, generator=None):  # type: ignore[no-untyped-def]
        g = resolve_generator(seed, generator)
        n = check_count(n, "n")
        x = _sample_standard_gamma(self.params[0], n, g)
        y = _sample_standard_gamma(self.params[1], n, g)
        return x / (x + y)

    def fisher_natural(self) -> Tensor:
        return self.fisher_from_natural(self.natural)

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
    def fisher_from_natural(cls, eta: Tensor) -> Tensor:
        r"""Closed-form :math:`F(\eta) = \begin{pmatrix}\psi'(\alpha) & 1/\beta\\ 1/\beta & \alpha/\beta^2\end{pmatrix}`
        with :math:`(\alpha, \beta) = (\eta_0 + 1, -\eta_1)` (unchecked, pure; :meth:`fisher_natural` is the
        checked twin)."""
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
            cls,
            mu,
            eta0,
            cls.fisher_from_natural,
            lambda eta: bool(eta[0] > -1) and bool(eta[1] < 0),
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
        theta = cls._parameter_vector(theta, "theta", 2)
        return cls(alpha=theta[0], beta=theta[1])

    @property
    def params(self) -> Tensor:
        return torch.stack([self.alpha, self.beta])  # type: ignore[list-item]

    def _check_x(self, x: Tensor) -> None:
        check_positive(x, "x")

    def sample(self, n, *, seed=None, generator=None):  # type: ignore[no-untyped-def]
        g = resolve_generator(seed, generator)
        return _sample_standard_gamma(self.params[0], check_count(n, "n"), g) / self.params[1]

    def fisher_natural(self) -> Tensor:
        return self.fisher_from_natural(self.natural)

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
        return torch.full(x.shape[:-1], -0.5 * LOG_2PI, dtype=x.dtype)

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
            raise ValueError(
                "mu must satisfy mu[3] = E[log tau] < log E[tau] (Jensen's inequality)"
            )

    @classmethod
    def from_params(cls, theta: Tensor) -> NormalGamma:
        theta = cls._parameter_vector(theta, "theta", 4)
        return cls(loc=theta[0], kappa=theta[1], alpha=theta[2], beta=theta[3])

    @property
    def params(self) -> Tensor:
        return torch.stack([self.loc, self.kappa, self.alpha, self.beta])  # type: ignore[list-item]

    def _check_x(self, x: Tensor) -> None:
        check_finite(x, "x")
        if x.ndim == 0 or x.shape[-1] != 2:
            raise ValueError(
                f"x must have a last axis of size 2 (mean, precision), got shape {tuple(x.shape)}"
            )
        if not bool((x[..., 1] > 0).all()):
            raise ValueError("x[..., 1] (a precision) must be > 0 for a NormalGamma distribution")

    def sample(self, n, *, seed=None, generator=None):  # type: ignore[no-untyped-def]
        g = resolve_generator(seed, generator)
        n = check_count(n, "n")
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
        adds :math:`\begin{pmatrix}\bar\tau/\kappa & 2m\bar\tau/\kappa\\ 2m\bar\tau/\kappa & 4m^2\bar\tau/\kappa +
        2/\kappa^2\end{pmatrix}`
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
        """Fisher information in :math:`(\\text{loc}, \\kappa, \\alpha, \\beta)`, the pull-back
        :math:`J^\\top F_\\eta J`."""
        j = self._jacobian_natural_params()
        return j.T @ self.fisher_natural() @ j

    def kl(self, other: NormalGamma) -> Tensor:
        r"""KL of the precision marginals plus the expected KL of the conditionals of the mean:

        .. math:: \mathrm{KL}(\mathrm{Ga}_1\|\mathrm{Ga}_2) + \tfrac12\Big(\frac{\kappa_2}{\kappa_1}
            - 1 - \log\frac{\kappa_2}{\kappa_1} + \kappa_2\frac{\alpha_1}{\beta_1}(\text{loc}_1-\text{loc}_2)^2\Big).
        """
        self._check_same_family(other)
        m1, k1, a1, b1 = self.params
        m2, k2, _a2, _b2 = other.params
        r = k2 / k1
        return self.marginal_tau().kl(other.marginal_tau()) + 0.5 * (
            r - 1.0 - torch.log(r) + k2 * a1 / b1 * (m1 - m2) ** 2
        )

    def _expected_log_h(self) -> Tensor:
        return torch.tensor(-0.5 * LOG_2PI, dtype=self.params.dtype)
