r"""The manifold of a two-component Gaussian mixture with shared variance.

The model of the interactive chapter is

.. math::

    p(x\mid\mu_1,\mu_2) = \tfrac12\,\mathcal N(x\mid\mu_1,\sigma^2) + \tfrac12\,\mathcal N(x\mid\mu_2,\sigma^2),

a two-dimensional statistical manifold with coordinates :math:`\theta = (\mu_1, \mu_2)` and a
fixed, shared :math:`\sigma`. With responsibilities
:math:`r_i(x) = \tfrac12\mathcal N(x\mid\mu_i,\sigma^2)/p(x\mid\theta)` the score and the
Hessian of the log-density are

.. math::

    \partial_i \log p = r_i\,\frac{x-\mu_i}{\sigma^2}, \qquad
    \partial_i\partial_j \log p = r_i(\delta_{ij}-r_j)\frac{(x-\mu_i)(x-\mu_j)}{\sigma^4}
    - \delta_{ij}\frac{r_i}{\sigma^2},

and the Fisher information :math:`F = \mathbb E[\nabla\log p\,\nabla\log p^\top] =
-\mathbb E[\nabla^2\log p]` :cite:`amari1998natural` has no closed form. It is computed here by
quadrature, in both forms, for a whole grid of :math:`\theta` at once.

Quadrature
----------
:math:`\mathbb E_p[g] = \tfrac12\mathbb E_{\mathcal N(\mu_1,\sigma^2)}[g] +
\tfrac12\mathbb E_{\mathcal N(\mu_2,\sigma^2)}[g]`, and each Gaussian expectation is a
standard-normal rule :math:`\sum_j w_j\,g(\mu_k + \sigma z_j)`. The default rule is the
trapezoidal rule with step ``h = 0.1`` on :math:`|z|\le 8.6`, which converges geometrically
for analytic integrands :cite:`trefethen2014exponentially`. It is preferred to Gauss-Hermite
because the responsibilities are logistic functions of :math:`x` with slope
:math:`|\mu_1-\mu_2|/\sigma^2`: their complex poles, at distance :math:`\pi\sigma/|\mu_1-\mu_2|`
from the real axis, slow Gauss-Hermite down (100 nodes leave errors near :math:`10^{-6}` at
:math:`|\mu_1-\mu_2| \approx 5\sigma`), while the trapezoidal error stays below
:math:`10^{-13}` for every separation, because the poles sit where the two components overlap
and their contribution is damped by :math:`e^{-(\mu_1-\mu_2)^2/(8\sigma^2)}`. Gauss-Hermite is
available (:func:`gauss_hermite_rule`) for comparison.

Geometry in one paragraph
-------------------------
Translation and scale invariance give :math:`F(\mu_1,\mu_2;\sigma) = \sigma^{-2}G(\delta)` with
:math:`\delta=(\mu_1-\mu_2)/\sigma`, and the reflection :math:`x\mapsto\mu_1+\mu_2-x` makes
:math:`F_{11}=F_{22}`, so the eigenvectors are always the *mean-shift* direction
:math:`(1,1)/\sqrt2` and the *exchange* direction :math:`(1,-1)/\sqrt2`. As
:math:`\mu_1\to\mu_2` the exchange eigenvalue vanishes like :math:`(\mu_1-\mu_2)^2/(4\sigma^4)`
while the mean-shift eigenvalue tends to :math:`1/(2\sigma^2)`, so the condition number grows
like :math:`2\sigma^2/(\mu_1-\mu_2)^2` (:func:`small_separation_eigenvalues`); far apart
:math:`F\to I/(2\sigma^2)` with an error :math:`\propto\delta e^{-\delta^2/8}`
(:func:`large_separation_fisher`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from igbook._validation import (
    as_tensor,
    check_finite,
    check_positive,
    check_positive_semidefinite,
    check_real,
)

__all__ = [
    "QuadratureRule",
    "trapezoid_rule",
    "gauss_hermite_rule",
    "log_prob",
    "log_prob_single",
    "density",
    "sample",
    "responsibilities",
    "score",
    "negative_hessian",
    "quadrature_nodes",
    "expectation",
    "fisher",
    "parameter_grid",
    "fisher_eigen",
    "condition_number",
    "ellipse_outlines",
    "small_separation_eigenvalues",
    "large_separation_fisher",
    "ISOTROPIC_SEPARATION",
    "kl_divergence",
    "MixtureLoss",
    "KLToTarget",
    "NegativeLogLikelihood",
    "natural_gradient_field",
    "gradient_angle",
    "flow",
    "flow_pair",
]

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)

#: Separation :math:`|\mu_1-\mu_2|/\sigma` at which the Fisher matrix is a multiple of the
#: identity (its off-diagonal entry changes sign there): below it the exchange direction is the
#: flat one, above it the mean-shift direction is (slightly) flatter.
ISOTROPIC_SEPARATION = 1.6362557214809716


# ------------------------------------------------------------------------------------------
# validation helpers
def _theta(theta: object, name: str = "theta") -> Tensor:
    t = check_finite(as_tensor(theta, name), name)
    if t.ndim == 0 or t.shape[-1] != 2:
        raise ValueError(f"{name} must have last axis of size 2 (mu1, mu2), got shape {tuple(t.shape)}")
    return t


def _sigma(sigma: object, like: Tensor | None = None) -> Tensor:
    s = check_positive(as_tensor(sigma, "sigma"), "sigma")
    if like is not None:
        s = s.to(like.dtype)
        try:
            torch.broadcast_shapes(s.shape, like.shape[:-1])
        except RuntimeError as exc:
            raise ValueError(
                f"sigma of shape {tuple(s.shape)} does not broadcast against theta's batch shape "
                f"{tuple(like.shape[:-1])}"
            ) from exc
    return s


def _nonneg(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if not (value >= 0) or not math.isfinite(value):
        raise ValueError(f"{name} must be finite and >= 0, got {value}")
    return float(value)


def _pos(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if not (value > 0) or not math.isfinite(value):
        raise ValueError(f"{name} must be finite and > 0, got {value}")
    return float(value)


def _int(value: int, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return value


# ------------------------------------------------------------------------------------------
# quadrature
@dataclass(frozen=True)
class QuadratureRule:
    r"""Nodes :math:`z_j` and weights :math:`w_j` with :math:`\mathbb E_{\mathcal N(0,1)}[g] \approx \sum_j w_j g(z_j)`."""

    nodes: Tensor
    weights: Tensor
    name: str = ""

    def __post_init__(self) -> None:
        z = check_finite(as_tensor(self.nodes, "nodes"), "nodes")
        w = check_finite(as_tensor(self.weights, "weights", dtype=z.dtype), "weights")
        if z.ndim != 1 or w.shape != z.shape:
            raise ValueError(f"nodes and weights must be 1-D of equal length, got {tuple(z.shape)} and {tuple(w.shape)}")
        if abs(float(w.sum()) - 1.0) > 1e-10:
            raise ValueError(f"weights must sum to 1 (a rule for a probability), got {float(w.sum()):.12g}")
        object.__setattr__(self, "nodes", z)
        object.__setattr__(self, "weights", w)

    def __len__(self) -> int:
        return int(self.nodes.shape[0])


def trapezoid_rule(h: float = 0.1, half_width: float = 8.6) -> QuadratureRule:
    r"""Trapezoidal rule :math:`w_j = h\,\varphi(jh)` on :math:`|z|\le` ``half_width``, renormalized.

    Geometrically convergent for analytic integrands decaying like a Gaussian
    :cite:`trefethen2014exponentially`; ``half_width = 8.6`` truncates a mass below
    :math:`10^{-17}`. The weights are renormalized to sum to one (a relative change below
    :math:`10^{-15}`).
    """
    h = _pos(h, "h")
    half_width = _pos(half_width, "half_width")
    n = int(round(half_width / h))
    if n < 2:
        raise ValueError(f"half_width / h must be >= 2 nodes per side, got {half_width}/{h}")
    z = torch.arange(-n, n + 1, dtype=torch.float64) * h
    w = torch.exp(-0.5 * z**2)
    return QuadratureRule(z, w / w.sum(), f"trapezoid(h={h:g})")


def gauss_hermite_rule(n: int = 60) -> QuadratureRule:
    r"""Gauss-Hermite rule for the standard normal weight (probabilists' Hermite polynomials)."""
    n = _int(n, "n", 1)
    z, w = np.polynomial.hermite_e.hermegauss(n)
    w = w / w.sum()
    return QuadratureRule(torch.from_numpy(z), torch.from_numpy(w), f"gauss-hermite(n={n})")


_DEFAULT_RULE = trapezoid_rule()


def _rule_for(rule: QuadratureRule | None) -> QuadratureRule:
    if rule is None:
        return _DEFAULT_RULE
    if not isinstance(rule, QuadratureRule):
        raise TypeError(f"rule must be a QuadratureRule, got {type(rule).__name__}")
    return rule


# ------------------------------------------------------------------------------------------
# the model
def _log_normal(x: Tensor, mu: Tensor, sigma: Tensor) -> Tensor:
    return -0.5 * ((x - mu) / sigma) ** 2 - torch.log(sigma) - _LOG_SQRT_2PI


def _lp(x: Tensor, mu1: Tensor, mu2: Tensor, sigma: Tensor) -> Tensor:
    a = _log_normal(x, mu1, sigma)
    b = _log_normal(x, mu2, sigma)
    return torch.logaddexp(a, b) - math.log(2.0)


def _split(theta: Tensor, sigma: Tensor, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """mu1, mu2, sigma shaped to broadcast against x of shape theta_batch + (n,)."""
    return theta[..., 0:1], theta[..., 1:2], sigma.unsqueeze(-1) if sigma.ndim else sigma


def log_prob(x: object, theta: object, sigma: object = 1.0) -> Tensor:
    r""":math:`\log p(x\mid\theta)`; ``x`` of shape ``batch + (n,)``, ``theta`` of shape ``batch + (2,)``."""
    theta = _theta(theta)
    s = _sigma(sigma, theta)
    x = check_finite(as_tensor(x, "x", dtype=theta.dtype), "x")
    if x.ndim == 0:
        x = x.reshape(1)
    mu1, mu2, sg = _split(theta, s, x)
    return _lp(x, mu1, mu2, sg)


def log_prob_single(theta: Tensor, x: Tensor, sigma: float = 1.0) -> Tensor:
    r"""Pure scalar :math:`\log p(x\mid\theta)` for one ``x``: the form :mod:`igbook.fisher` and :mod:`torch.func` want.

    Deliberately unchecked, so that :func:`torch.func.grad`, :func:`torch.func.hessian` and
    :func:`torch.func.vmap` can trace it (:func:`igbook.fisher.density.score_covariance` and
    :func:`igbook.fisher.density.fisher_monte_carlo` vmap it over every quadrature node or
    Monte Carlo draw, and vmap cannot trace a check that reads values). ``theta`` has shape
    ``(2,)``, ``x`` is finite and ``sigma > 0``; nothing verifies it, and a bad value gives a NaN
    or an infinity rather than an error. Its checked public twin is :func:`log_prob`, which
    validates ``x``, ``theta`` and ``sigma`` and broadcasts (``log_prob(x, theta, sigma)`` equals
    ``log_prob_single(theta, x, sigma)`` for one ``x`` and one ``theta``).
    """
    s = torch.as_tensor(sigma, dtype=theta.dtype)
    return _lp(x, theta[0], theta[1], s)


def density(x: object, theta: object, sigma: object = 1.0) -> Tensor:
    r""":math:`p(x\mid\theta)`, broadcast like :func:`log_prob`."""
    return torch.exp(log_prob(x, theta, sigma))


def sample(n: int, theta: object, sigma: float = 1.0, *, seed: int | None = None,
           generator: torch.Generator | None = None) -> Tensor:
    """Draw ``n`` points from the mixture at one ``theta`` (shape ``(2,)``), reproducibly."""
    n = _int(n, "n", 1)
    theta = _theta(theta)
    if theta.shape != (2,):
        raise ValueError(f"theta must have shape (2,) to sample, got {tuple(theta.shape)}")
    if isinstance(sigma, Tensor) and sigma.numel() == 1:
        sigma = float(sigma)
    s = _pos(sigma, "sigma")  # type: ignore[arg-type]
    if seed is not None and generator is not None:
        raise ValueError("pass either seed or generator, not both")
    g = generator
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        g = torch.Generator().manual_seed(seed)
    comp = torch.randint(0, 2, (n,), generator=g)
    z = torch.randn(n, generator=g, dtype=theta.dtype)
    return theta[comp] + s * z


def _resp(x: Tensor, mu1: Tensor, mu2: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
    # r1 = sigmoid(log N1 - log N2) = sigmoid((mu1 - mu2)(x - (mu1 + mu2)/2) / sigma^2)
    r1 = torch.sigmoid((mu1 - mu2) * (x - 0.5 * (mu1 + mu2)) / sigma**2)
    return r1, 1.0 - r1


def responsibilities(x: object, theta: object, sigma: object = 1.0) -> Tensor:
    r""":math:`(r_1(x), r_2(x))` stacked on a last axis; :math:`r_1 = \mathrm{sigmoid}\big((\mu_1-\mu_2)(x-\bar\mu)/\sigma^2\big)`."""
    theta = _theta(theta)
    s = _sigma(sigma, theta)
    x = check_finite(as_tensor(x, "x", dtype=theta.dtype), "x")
    if x.ndim == 0:
        x = x.reshape(1)
    r1, r2 = _resp(x, *_split(theta, s, x))
    return torch.stack([r1, r2], -1)


def _score(x: Tensor, mu1: Tensor, mu2: Tensor, sigma: Tensor) -> Tensor:
    r1, r2 = _resp(x, mu1, mu2, sigma)
    s2 = sigma**2
    return torch.stack([r1 * (x - mu1) / s2, r2 * (x - mu2) / s2], -1)


def score(x: object, theta: object, sigma: object = 1.0) -> Tensor:
    r"""Score :math:`\nabla_\theta\log p(x\mid\theta) = (r_i(x)(x-\mu_i)/\sigma^2)_i`, shape ``batch + (n, 2)``."""
    theta = _theta(theta)
    s = _sigma(sigma, theta)
    x = check_finite(as_tensor(x, "x", dtype=theta.dtype), "x")
    if x.ndim == 0:
        x = x.reshape(1)
    return _score(x, *_split(theta, s, x))


def _neg_hess(x: Tensor, mu1: Tensor, mu2: Tensor, sigma: Tensor) -> Tensor:
    r1, r2 = _resp(x, mu1, mu2, sigma)
    s2 = sigma**2
    a, b = (x - mu1) / s2, (x - mu2) / s2
    h11 = r1 / s2 - r1 * r2 * a * a
    h22 = r2 / s2 - r2 * r1 * b * b
    h12 = r1 * r2 * a * b
    return torch.stack([torch.stack([h11, h12], -1), torch.stack([h12, h22], -1)], -2)


def negative_hessian(x: object, theta: object, sigma: object = 1.0) -> Tensor:
    r"""Negative Hessian :math:`-\nabla^2_\theta\log p(x\mid\theta)`, shape ``batch + (n, 2, 2)``.

    .. math:: -\partial_i\partial_j\log p = \delta_{ij}\frac{r_i}{\sigma^2} - r_i(\delta_{ij}-r_j)\frac{(x-\mu_i)(x-\mu_j)}{\sigma^4}.
    """
    theta = _theta(theta)
    s = _sigma(sigma, theta)
    x = check_finite(as_tensor(x, "x", dtype=theta.dtype), "x")
    if x.ndim == 0:
        x = x.reshape(1)
    return _neg_hess(x, *_split(theta, s, x))


def quadrature_nodes(theta: object, sigma: object = 1.0, rule: QuadratureRule | None = None) -> tuple[Tensor, Tensor]:
    r"""Nodes ``x`` (shape ``batch + (2n,)``) and weights ``w`` (shape ``(2n,)``) with :math:`\mathbb E_{p(\cdot\mid\theta)}[g]\approx\sum_j w_j g(x_j)`.

    The nodes are :math:`\mu_k + \sigma z_j` for both components; the weights
    :math:`\tfrac12 w_j` do not depend on :math:`\theta`. They sum to one, so they can be passed
    as ``weights`` to :func:`igbook.fisher.density.score_covariance`.
    """
    theta = _theta(theta)
    s = _sigma(sigma, theta)
    rule = _rule_for(rule)
    z = rule.nodes.to(theta.dtype)
    sg = s.unsqueeze(-1) if s.ndim else s
    x = torch.cat([theta[..., 0:1] + sg * z, theta[..., 1:2] + sg * z], -1)
    w = 0.5 * torch.cat([rule.weights, rule.weights]).to(theta.dtype)
    return x, w


def expectation(fn, theta: object, sigma: object = 1.0, rule: QuadratureRule | None = None) -> Tensor:  # type: ignore[no-untyped-def]
    r""":math:`\mathbb E_{p(x\mid\theta)}[f(x)]` by quadrature, for ``fn(x)`` mapping nodes ``batch + (m,)`` to ``batch + (m, ...)``."""
    x, w = quadrature_nodes(theta, sigma, rule)
    vals = fn(x)
    extra = vals.ndim - x.ndim
    return (vals * w.reshape(w.shape + (1,) * extra)).sum(x.ndim - 1)


def fisher(theta: object, sigma: object = 1.0, *, form: str = "score", rule: QuadratureRule | None = None) -> Tensor:
    r"""Fisher information of the mixture at every ``theta`` (shape ``batch + (2,)`` to ``batch + (2, 2)``).

    .. math::

        F(\theta) = \mathbb E_{p(x\mid\theta)}\big[\nabla\log p\,\nabla\log p^\top\big]
        \quad(\texttt{form="score"}) \qquad
        = -\mathbb E_{p(x\mid\theta)}\big[\nabla^2\log p\big] \quad(\texttt{form="hessian"}),

    each evaluated by the quadrature ``rule`` (default: :func:`trapezoid_rule`), vectorized over
    the whole batch: a 25 x 25 grid is one call.
    """
    if form not in ("score", "hessian"):
        raise ValueError(f"form must be 'score' or 'hessian', got {form!r}")
    theta = _theta(theta)
    s = _sigma(sigma, theta)
    if form == "score":
        # Scores in standardized form: at the nodes x = mu_k + sigma z of component k,
        # (x - mu_i)/sigma is z or z -+ delta, and r_1 = sigmoid(delta z +- delta^2/2).
        rule = _rule_for(rule)
        z, wz = rule.nodes.to(theta.dtype), 0.5 * rule.weights.to(theta.dtype)
        delta = ((theta[..., 0] - theta[..., 1]) / s).unsqueeze(-1)
        u, half = delta * z, 0.5 * delta * delta
        r_a = torch.sigmoid(u + half)  # r_1 at the nodes of component 1
        r_b = torch.sigmoid(u - half)  # r_1 at the nodes of component 2
        a1, b1 = r_a * z, (1 - r_a) * (z + delta)  # sigma * scores at component-1 nodes
        a2, b2 = r_b * (z - delta), (1 - r_b) * z  # sigma * scores at component-2 nodes
        f11 = (a1 * a1) @ wz + (a2 * a2) @ wz
        f12 = (a1 * b1) @ wz + (a2 * b2) @ wz
        f22 = (b1 * b1) @ wz + (b2 * b2) @ wz
        inv_s2 = (1.0 / s**2).unsqueeze(-1).unsqueeze(-1)
        return torch.stack([torch.stack([f11, f12], -1), torch.stack([f12, f22], -1)], -2) * inv_s2
    x, w = quadrature_nodes(theta, s, rule)
    mu1, mu2, sg = _split(theta, s, x)
    h = _neg_hess(x, mu1, mu2, sg)
    return torch.einsum("...nij,n->...ij", h, w)


def parameter_grid(low: float = -3.0, high: float = 3.0, n: int = 25) -> Tensor:
    r"""An ``n x n`` grid of :math:`(\mu_1,\mu_2)` on :math:`[\text{low},\text{high}]^2`, shape ``(n, n, 2)`` (``[i, j] = (x_j, y_i)``)."""
    n = _int(n, "n", 2)
    low, high = check_real(low, "low"), check_real(high, "high")
    if not (math.isfinite(low) and math.isfinite(high) and high > low):
        raise ValueError(f"need finite low < high, got low={low}, high={high}")
    g = torch.linspace(low, high, n, dtype=torch.float64)
    yy, xx = torch.meshgrid(g, g, indexing="ij")
    return torch.stack([xx, yy], -1)


def _sym2(f: Tensor, name: str = "fisher") -> Tensor:
    f = check_finite(as_tensor(f, name), name)
    if f.ndim < 2 or f.shape[-2:] != (2, 2):
        raise ValueError(f"{name} must have shape (..., 2, 2), got {tuple(f.shape)}")
    # symmetric to rounding (quadrature gives off-diagonals that agree to a few ulps)
    off, scale = (f[..., 0, 1] - f[..., 1, 0]).abs(), f.abs().amax(dim=(-2, -1)).clamp_min(1.0)
    if not bool((off <= 1e-8 * scale).all()):
        raise ValueError(f"{name} must be symmetric (a Fisher matrix)")
    return 0.5 * (f + f.transpose(-1, -2))


def fisher_eigen(fisher_matrix: object) -> tuple[Tensor, Tensor]:
    r"""Eigenvalues (ascending, clamped at 0) and unit eigenvectors (columns) of a batch of 2x2 Fisher matrices.

    Rounding can make the smallest eigenvalue of a singular Fisher a tiny negative number; it is
    clamped to 0, the exact value at the singularity.
    """
    f = _sym2(fisher_matrix, "fisher_matrix")
    evals, evecs = torch.linalg.eigh(f)
    check_positive_semidefinite(f, "fisher_matrix", eigenvalues=evals, symmetric_checked=True)
    return evals.clamp_min(0.0), evecs


def condition_number(fisher_matrix: object) -> Tensor:
    r""":math:`\kappa = \lambda_{\max}/\lambda_{\min}`; ``inf`` where :math:`\lambda_{\min}=0` (on the singular line :math:`\mu_1=\mu_2`)."""
    evals, _ = fisher_eigen(fisher_matrix)
    lo, hi = evals[..., 0], evals[..., 1]
    if bool((hi <= 0).any()):
        raise ValueError("fisher_matrix must not be the zero matrix (condition number undefined)")
    return torch.where(lo > 0, hi / lo.clamp_min(torch.finfo(lo.dtype).tiny), torch.full_like(lo, math.inf))


def ellipse_outlines(centers: object, fisher_matrix: object, eps: float = 1.0, *, num: int = 40,
                     max_semi_axis: float | None = None) -> tuple[Tensor, Tensor]:
    r"""Fisher ellipses :math:`\{\theta: (\theta-c)^\top F (\theta-c) = \varepsilon\}` for a whole field.

    Semi-axes are :math:`\sqrt{\varepsilon/\lambda_i}` along the eigenvectors of :math:`F`. The level is
    the squared Fisher length, as in :func:`igbook.geometry.ellipse_points`; the quadratic KL ball
    :math:`\tfrac12\delta^\top F\delta = \varepsilon` is ``eps=2 * epsilon``.
    Near the singularity they grow without bound; with ``max_semi_axis`` they are clipped for
    display, and the second output flags the clipped ellipses (so a figure can mark them).

    Returns
    -------
    outlines
        shape ``batch + (num, 2)``.
    clipped
        boolean, shape ``batch``.
    """
    eps = _pos(eps, "eps")
    num = _int(num, "num", 3)
    evals, evecs = fisher_eigen(fisher_matrix)
    centers = _theta(centers, "centers").to(evals.dtype)
    if centers.shape[:-1] != evals.shape[:-1]:
        raise ValueError(f"centers batch {tuple(centers.shape[:-1])} must match fisher batch {tuple(evals.shape[:-1])}")
    tiny = torch.finfo(evals.dtype).tiny
    semi = torch.sqrt(eps / evals.clamp_min(tiny))
    clipped = torch.zeros(evals.shape[:-1], dtype=torch.bool)
    if max_semi_axis is not None:
        cap = _pos(max_semi_axis, "max_semi_axis")
        clipped = (semi > cap).any(-1)
        semi = semi.clamp_max(cap)
    t = torch.linspace(0, 2 * math.pi, num, dtype=evals.dtype)
    circle = torch.stack([torch.cos(t), torch.sin(t)], -1)
    pts = (circle * semi.unsqueeze(-2)) @ evecs.transpose(-1, -2)
    return centers.unsqueeze(-2) + pts, clipped


# ------------------------------------------------------------------------------------------
# asymptotics
def small_separation_eigenvalues(theta: object, sigma: object = 1.0) -> tuple[Tensor, Tensor]:
    r"""Leading-order eigenvalues near the singularity :math:`\mu_1\to\mu_2`.

    In the coordinates :math:`m=(\mu_1+\mu_2)/2`, :math:`\epsilon=(\mu_1-\mu_2)/2` the density is
    :math:`\mathcal N(x\mid m,\sigma^2)\,e^{-\epsilon^2/(2\sigma^2)}\cosh(\epsilon z/\sigma)`
    with :math:`z=(x-m)/\sigma`, so the exchange score is
    :math:`\big(z\tanh(\epsilon z/\sigma)-\epsilon/\sigma\big)/\sigma =
    \epsilon(z^2-1)/\sigma^2 + O(\epsilon^3)`. Hence

    .. math::

        \lambda_{\min} = \frac{(\mu_1-\mu_2)^2}{4\sigma^4}\,(1+O(\delta^2)), \qquad
        \lambda_{\max} = \frac{1}{2\sigma^2}\,(1+O(\delta^2)), \qquad
        \kappa = \frac{2\sigma^2}{(\mu_1-\mu_2)^2}\,(1+O(\delta^2)).

    Returns ``(lambda_min, lambda_max)`` of the leading terms.
    """
    theta = _theta(theta)
    s = _sigma(sigma, theta)
    d = theta[..., 0] - theta[..., 1]
    return d**2 / (4 * s**4), (0.5 / s**2).expand_as(d).clone()


def large_separation_fisher(theta: object, sigma: object = 1.0) -> Tensor:
    r"""Leading-order Fisher matrix for well-separated components, :math:`\delta = |\mu_1-\mu_2|/\sigma\gg1`.

    .. math::

        F \approx \frac{I}{2\sigma^2} - c(\delta)\begin{pmatrix}1&1\\1&1\end{pmatrix},\qquad
        c(\delta) = \frac{\delta}{8\sigma^2}\sqrt{\frac{\pi}{2}}\,e^{-\delta^2/8},

    from :math:`F = I/(2\sigma^2) - \mathbb E_p[r_1r_2(\cdot)]/\sigma^2` and
    :math:`p\,r_1r_2 = \tfrac12 e^{-\delta^2/8}\varphi(u)/(2\cosh(\delta u/2))` in the
    midpoint coordinate :math:`u`. The relative error of the correction is :math:`O(\delta^{-2})`.
    """
    theta = _theta(theta)
    s = _sigma(sigma, theta)
    d = (theta[..., 0] - theta[..., 1]).abs() / s
    c = d / (8 * s**2) * math.sqrt(math.pi / 2) * torch.exp(-(d**2) / 8)
    eye = torch.eye(2, dtype=theta.dtype)
    ones = torch.ones(2, 2, dtype=theta.dtype)
    return eye * (0.5 / s**2)[..., None, None] - c[..., None, None] * ones


# ------------------------------------------------------------------------------------------
# losses
def _adaptive_rule(theta: Tensor, sigma: Tensor, rule: QuadratureRule | None) -> QuadratureRule:
    """A trapezoid step fine enough for responsibilities of slope |mu1 - mu2| / sigma^2 (see module doc)."""
    if rule is not None:
        return _rule_for(rule)
    sep = (theta[..., 0] - theta[..., 1]).detach().abs() / sigma.detach()
    dmax = float(sep.max()) if sep.numel() else 0.0
    h = min(0.1, 0.6 / max(dmax, 1e-12))
    h = max(h, 0.01)
    return _DEFAULT_RULE if h == 0.1 else trapezoid_rule(h)


def kl_divergence(theta_p: object, theta_q: object, sigma: object = 1.0, rule: QuadratureRule | None = None) -> Tensor:
    r""":math:`\mathrm{KL}(p_{\theta_p}\,\|\,p_{\theta_q}) = \mathbb E_{p_{\theta_p}}[\log p_{\theta_p} - \log p_{\theta_q}]` by quadrature (broadcasts)."""
    tp, tq = _theta(theta_p, "theta_p"), _theta(theta_q, "theta_q")
    tp, tq = torch.broadcast_tensors(tp, tq.to(tp.dtype))
    s = _sigma(sigma, tp)
    r = _adaptive_rule(tq, s, rule)
    x, w = quadrature_nodes(tp, s, r)
    sp, sq = _split(tp, s, x), _split(tq, s, x)
    return (_lp(x, *sp) - _lp(x, *sq)) @ w


class MixtureLoss:
    """A loss on the mixture manifold: ``value(theta)`` and ``gradient(theta)`` for any batch of ``theta``."""

    sigma: float

    def value(self, theta: object) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def gradient(self, theta: object) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass(frozen=True)
class KLToTarget(MixtureLoss):
    r"""Population loss :math:`L(\theta) = \mathrm{KL}(p_{\theta^*}\,\|\,p_\theta)` (expected NLL minus the target's entropy).

    Minimal (zero) at :math:`\theta^*` and at its mirror image :math:`(\mu_2^*,\mu_1^*)`, the
    same distribution. Gradient :math:`\nabla L = -\mathbb E_{p_{\theta^*}}[\nabla_\theta\log p_\theta(x)]`,
    by quadrature under the target.
    """

    target: Tensor
    sigma: float = 1.0
    rule: QuadratureRule | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        t = _theta(self.target, "target")
        if t.shape != (2,):
            raise ValueError(f"target must have shape (2,), got {tuple(t.shape)}")
        object.__setattr__(self, "target", t)
        object.__setattr__(self, "sigma", _pos(self.sigma, "sigma"))

    def _nodes(self, theta: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        s = torch.tensor(self.sigma, dtype=theta.dtype)
        target = self.target.to(theta.dtype)
        r = _adaptive_rule(torch.cat([theta.detach().reshape(-1, 2), target.reshape(1, 2)]), s, self.rule)
        x, w = quadrature_nodes(target, s, r)
        return x.expand(theta.shape[:-1] + x.shape), w, s

    def value(self, theta: object) -> Tensor:
        theta = _theta(theta)
        x, w, s = self._nodes(theta)
        target = self.target.to(theta.dtype)
        lp_t = _lp(x, target[0], target[1], s)
        return (lp_t - _lp(x, *_split(theta, s, x))) @ w

    def gradient(self, theta: object) -> Tensor:
        theta = _theta(theta)
        x, w, s = self._nodes(theta)
        return -torch.einsum("...ni,n->...i", _score(x, *_split(theta, s, x)), w)


@dataclass(frozen=True)
class NegativeLogLikelihood(MixtureLoss):
    r"""Empirical loss :math:`L(\theta) = -\frac1N\sum_n \log p(x_n\mid\theta)` of a data set; exact gradient."""

    data: Tensor
    sigma: float = 1.0

    def __post_init__(self) -> None:
        d = check_finite(as_tensor(self.data, "data"), "data")
        if d.ndim != 1 or d.shape[0] < 1:
            raise ValueError(f"data must be a non-empty 1-D tensor, got shape {tuple(d.shape)}")
        object.__setattr__(self, "data", d)
        object.__setattr__(self, "sigma", _pos(self.sigma, "sigma"))

    @classmethod
    def from_target(cls, target: object, n: int, sigma: float = 1.0, *, seed: int = 0) -> NegativeLogLikelihood:
        """``n`` points drawn (seeded) from the mixture at ``target``."""
        return cls(sample(n, target, sigma, seed=seed), sigma)

    def value(self, theta: object) -> Tensor:
        theta = _theta(theta)
        s = torch.tensor(self.sigma, dtype=theta.dtype)
        x = self.data.to(theta.dtype)
        return -_lp(x, *_split(theta, s, x)).mean(-1)

    def gradient(self, theta: object) -> Tensor:
        theta = _theta(theta)
        s = torch.tensor(self.sigma, dtype=theta.dtype)
        x = self.data.to(theta.dtype)
        return -_score(x, *_split(theta, s, x)).mean(-2)


# ------------------------------------------------------------------------------------------
# natural gradient field, angles, flows
def _solve2(f: Tensor, g: Tensor) -> Tensor:
    a, b, c = f[..., 0, 0], f[..., 0, 1], f[..., 1, 1]
    det = a * c - b * b
    return torch.stack([(c * g[..., 0] - b * g[..., 1]) / det, (a * g[..., 1] - b * g[..., 0]) / det], -1)


def natural_gradient_field(theta: object, loss: MixtureLoss, *, damping: float = 0.0,
                           rule: QuadratureRule | None = None) -> tuple[Tensor, Tensor]:
    r"""Euclidean gradient :math:`g` and natural gradient :math:`(F+\lambda I)^{-1}g` at every ``theta``.

    The 2x2 systems are solved in closed form for the whole batch. With ``damping = 0`` a
    point on (or numerically at) the singular line :math:`\mu_1=\mu_2`, where
    :math:`\lambda_{\min}\le 10^{-12}\lambda_{\max}`, raises :class:`ValueError`; pass
    ``damping > 0`` there.
    """
    if not isinstance(loss, MixtureLoss):
        raise TypeError(f"loss must be a MixtureLoss (KLToTarget or NegativeLogLikelihood), got {type(loss).__name__}")
    lam = _nonneg(damping, "damping")
    theta = _theta(theta)
    g = loss.gradient(theta)
    f = fisher(theta, loss.sigma, rule=rule)
    if lam == 0.0:
        evals, _ = fisher_eigen(f)
        bad = evals[..., 0] <= 1e-12 * evals[..., 1]
        if bool(bad.any()):
            raise ValueError(
                f"the Fisher matrix is singular at {int(bad.sum())} point(s) (mu1 == mu2: the information "
                "singularity); pass damping > 0"
            )
    f = f + lam * torch.eye(2, dtype=f.dtype)
    return g, _solve2(f, g)


def gradient_angle(u: object, v: object) -> Tensor:
    r"""Angle in degrees between vectors ``u`` and ``v`` along their last axis (shape ``batch``)."""
    u = check_finite(as_tensor(u, "u"), "u")
    v = check_finite(as_tensor(v, "v", dtype=u.dtype), "v")
    nu, nv = torch.linalg.vector_norm(u, dim=-1), torch.linalg.vector_norm(v, dim=-1)
    if bool((nu == 0).any()) or bool((nv == 0).any()):
        raise ValueError("u and v must be non-zero vectors (the angle of a zero vector is undefined)")
    if u.shape[-1] == 2 and v.shape[-1] == 2:
        # atan2 form: accurate for tiny angles, where arccos loses half the digits
        cross = u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]
        return torch.rad2deg(torch.atan2(cross.abs(), (u * v).sum(-1)))
    cos = ((u * v).sum(-1) / (nu * nv)).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.arccos(cos))


def flow_pair(particles: object, loss: MixtureLoss, *, steps: int = 100, dt_natural: float = 0.05,
              dt_euclidean: float = 0.05, damping: float = 1e-3, max_step: float | None = None) -> tuple[Tensor, Tensor]:
    r"""The natural and the Euclidean flow of :func:`flow` from the same particles, integrated together.

    Each Euler step evaluates the loss gradient once for both particle sets (one batched
    quadrature) and the Fisher only for the natural set, which costs about half of two
    :func:`flow` calls. Returns ``(natural_paths, euclidean_paths)``, each of shape
    ``(steps + 1,) + particles.shape``; they agree with ``flow(..., method=...)`` up to the
    quadrature error.
    """
    if not isinstance(loss, MixtureLoss):
        raise TypeError(f"loss must be a MixtureLoss, got {type(loss).__name__}")
    steps = _int(steps, "steps", 1)
    dt_n, dt_e = _pos(dt_natural, "dt_natural"), _pos(dt_euclidean, "dt_euclidean")
    lam = _pos(damping, "damping")
    cap = 0.25 * loss.sigma if max_step is None else _pos(max_step, "max_step")
    th0 = _theta(particles, "particles")
    shape = th0.shape
    nat, euc = th0.reshape(-1, 2).clone(), th0.reshape(-1, 2).clone()
    k = nat.shape[0]
    eye = lam * torch.eye(2, dtype=nat.dtype)
    out_n, out_e = [nat], [euc]
    for _ in range(steps):
        g = loss.gradient(torch.cat([nat, euc]))
        f = fisher(nat, loss.sigma) + eye
        step = torch.cat([-dt_n * _solve2(f, g[:k]), -dt_e * g[k:]])
        n = torch.linalg.vector_norm(step, dim=-1, keepdim=True)
        step = step * torch.clamp(cap / n.clamp_min(1e-300), max=1.0)
        nat, euc = nat + step[:k], euc + step[k:]
        out_n.append(nat)
        out_e.append(euc)
    return torch.stack(out_n).reshape((steps + 1,) + shape), torch.stack(out_e).reshape((steps + 1,) + shape)


def flow(particles: object, loss: MixtureLoss, *, method: str = "natural", steps: int = 100, dt: float = 0.05,
         damping: float = 1e-3, max_step: float | None = None) -> Tensor:
    r"""Particles following the negative natural or Euclidean gradient field, by explicit Euler steps.

    .. math:: \theta_{t+1} = \theta_t - \Delta t\,(F(\theta_t)+\lambda I)^{-1}\nabla L(\theta_t)
       \quad\text{or}\quad \theta_{t+1} = \theta_t - \Delta t\,\nabla L(\theta_t).

    Near the singular line the undamped natural field diverges (the exchange component of
    :math:`\nabla L` vanishes like :math:`|\mu_1-\mu_2|` while :math:`\lambda_{\min}` vanishes
    like :math:`|\mu_1-\mu_2|^2`), so the flow uses damping :math:`\lambda>0` (required) and
    clips each displacement to ``max_step`` (default :math:`0.25\sigma`).

    Returns the paths, shape ``(steps + 1,) + particles.shape``.
    """
    if method not in ("natural", "euclidean"):
        raise ValueError(f"method must be 'natural' or 'euclidean', got {method!r}")
    if not isinstance(loss, MixtureLoss):
        raise TypeError(f"loss must be a MixtureLoss, got {type(loss).__name__}")
    steps = _int(steps, "steps", 1)
    dt = _pos(dt, "dt")
    lam = _pos(damping, "damping") if method == "natural" else _nonneg(damping, "damping")
    cap = 0.25 * loss.sigma if max_step is None else _pos(max_step, "max_step")
    th = _theta(particles, "particles").clone()
    out = [th]
    for _ in range(steps):
        if method == "natural":
            _, d = natural_gradient_field(th, loss, damping=lam)
        else:
            d = loss.gradient(th)
        step = -dt * d
        n = torch.linalg.vector_norm(step, dim=-1, keepdim=True)
        step = step * torch.clamp(cap / n.clamp_min(1e-300), max=1.0)
        th = th + step
        out.append(th)
    return torch.stack(out)
