r"""The two-component Gaussian mixture: coordinates, quadrature, log-density, score, Fisher, KL and losses.

See :mod:`igbook.mixtures` for the model, the quadrature and the geometry; this module holds the
computations on which the others (``igbook.mixtures.spectrum``, ``igbook.mixtures.flows``)
build.
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
    check_integer,
    check_positive,
    check_positive_real,
    resolve_generator,
)

__all__ = [
    "check_theta",
    "check_sigma",
    "QuadratureRule",
    "trapezoid_rule",
    "gauss_hermite_rule",
    "default_rule",
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
    "kl_divergence",
    "MixtureLoss",
    "KLToTarget",
    "NegativeLogLikelihood",
]

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


# ------------------------------------------------------------------------------------------
# validation of the mixture's coordinates
def check_theta(theta: object, name: str = "theta") -> Tensor:
    r"""``theta`` as a finite tensor of shape ``batch + (2,)``, the coordinates :math:`(\mu_1, \mu_2)`
    of the mixture manifold :cite:`amari1998natural`, or raise naming ``name``."""
    t = check_finite(as_tensor(theta, name), name)
    if t.ndim == 0 or t.shape[-1] != 2:
        raise ValueError(
            f"{name} must have last axis of size 2 (mu1, mu2), got shape {tuple(t.shape)}"
        )
    return t


def check_sigma(sigma: object, like: Tensor | None = None) -> Tensor:
    r"""The shared standard deviation :math:`\sigma > 0` as a tensor (in ``like``'s dtype and
    broadcasting against its batch shape, if given), or raise naming ``sigma``
    :cite:`amari1998natural`."""
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


# ------------------------------------------------------------------------------------------
# quadrature
@dataclass(frozen=True)
class QuadratureRule:
    r"""Nodes :math:`z_j` and weights :math:`w_j` with
    :math:`\mathbb E_{\mathcal N(0,1)}[g] \approx \sum_j w_j g(z_j)`."""

    nodes: Tensor
    weights: Tensor
    name: str = ""

    def __post_init__(self) -> None:
        z = check_finite(as_tensor(self.nodes, "nodes"), "nodes")
        w = check_finite(as_tensor(self.weights, "weights", dtype=z.dtype), "weights")
        if z.ndim != 1 or w.shape != z.shape:
            raise ValueError(
                f"nodes and weights must be 1-D of equal length, got {tuple(z.shape)} and {tuple(w.shape)}"
            )
        if abs(float(w.sum()) - 1.0) > 1e-10:
            raise ValueError(
                f"weights must sum to 1 (a rule for a probability), got {float(w.sum()):.12g}"
            )
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
    h = check_positive_real(h, "h")
    half_width = check_positive_real(half_width, "half_width")
    n = round(half_width / h)
    if n < 2:
        raise ValueError(f"half_width / h must be >= 2 nodes per side, got {half_width}/{h}")
    z = torch.arange(-n, n + 1, dtype=torch.float64) * h
    w = torch.exp(-0.5 * z**2)
    return QuadratureRule(z, w / w.sum(), f"trapezoid(h={h:g})")


def gauss_hermite_rule(n: int = 60) -> QuadratureRule:
    r"""Gauss-Hermite rule for the standard normal weight (probabilists' Hermite polynomials)."""
    n = check_integer(n, "n", minimum=1)
    z, w = np.polynomial.hermite_e.hermegauss(n)
    w = w / w.sum()
    return QuadratureRule(torch.from_numpy(z), torch.from_numpy(w), f"gauss-hermite(n={n})")


_DEFAULT_RULE = trapezoid_rule()


def default_rule(rule: QuadratureRule | None = None) -> QuadratureRule:
    """``rule`` if it is a :class:`QuadratureRule`, the default trapezoid rule (``h = 0.1``) for
    ``None``, else :class:`TypeError` naming ``rule`` :cite:`trefethen2014exponentially`."""
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
    theta = check_theta(theta)
    s = check_sigma(sigma, theta)
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


def sample(
    n: int,
    theta: object,
    sigma: float = 1.0,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Draw ``n`` points from the mixture at one ``theta`` (shape ``(2,)``), reproducibly."""
    n = check_integer(n, "n", minimum=1)
    theta = check_theta(theta)
    if theta.shape != (2,):
        raise ValueError(f"theta must have shape (2,) to sample, got {tuple(theta.shape)}")
    if isinstance(sigma, Tensor) and sigma.numel() == 1:
        sigma = float(sigma)
    s = check_positive_real(sigma, "sigma")  # type: ignore[arg-type]
    g = resolve_generator(seed, generator)
    comp = torch.randint(0, 2, (n,), generator=g)
    z = torch.randn(n, generator=g, dtype=theta.dtype)
    return theta[comp] + s * z


def _resp(x: Tensor, mu1: Tensor, mu2: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
    # r1 = sigmoid(log N1 - log N2) = sigmoid((mu1 - mu2)(x - (mu1 + mu2)/2) / sigma^2)
    r1 = torch.sigmoid((mu1 - mu2) * (x - 0.5 * (mu1 + mu2)) / sigma**2)
    return r1, 1.0 - r1


def responsibilities(x: object, theta: object, sigma: object = 1.0) -> Tensor:
    r""":math:`(r_1(x), r_2(x))` stacked on a last axis;
    :math:`r_1 = \mathrm{sigmoid}\big((\mu_1-\mu_2)(x-\bar\mu)/\sigma^2\big)`."""
    theta = check_theta(theta)
    s = check_sigma(sigma, theta)
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
    theta = check_theta(theta)
    s = check_sigma(sigma, theta)
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

    .. math:: -\partial_i\partial_j\log p = \delta_{ij}\frac{r_i}{\sigma^2} -
        r_i(\delta_{ij}-r_j)\frac{(x-\mu_i)(x-\mu_j)}{\sigma^4}.
    """
    theta = check_theta(theta)
    s = check_sigma(sigma, theta)
    x = check_finite(as_tensor(x, "x", dtype=theta.dtype), "x")
    if x.ndim == 0:
        x = x.reshape(1)
    return _neg_hess(x, *_split(theta, s, x))


def quadrature_nodes(
    theta: object, sigma: object = 1.0, rule: QuadratureRule | None = None
) -> tuple[Tensor, Tensor]:
    r"""Nodes ``x`` (shape ``batch + (2n,)``) and weights ``w`` (shape ``(2n,)``) with
    :math:`\mathbb E_{p(\cdot\mid\theta)}[g]\approx\sum_j w_j g(x_j)`.

    The nodes are :math:`\mu_k + \sigma z_j` for both components; the weights
    :math:`\tfrac12 w_j` do not depend on :math:`\theta`. They sum to one, so they can be passed
    as ``weights`` to :func:`igbook.fisher.density.score_covariance`.
    """
    theta = check_theta(theta)
    s = check_sigma(sigma, theta)
    rule = default_rule(rule)
    z = rule.nodes.to(theta.dtype)
    sg = s.unsqueeze(-1) if s.ndim else s
    x = torch.cat([theta[..., 0:1] + sg * z, theta[..., 1:2] + sg * z], -1)
    w = 0.5 * torch.cat([rule.weights, rule.weights]).to(theta.dtype)
    return x, w


def expectation(
    fn, theta: object, sigma: object = 1.0, rule: QuadratureRule | None = None
) -> Tensor:  # type: ignore[no-untyped-def]
    r""":math:`\mathbb E_{p(x\mid\theta)}[f(x)]` by quadrature, for ``fn(x)`` mapping nodes ``batch + (m,)`` to
    ``batch + (m, ...)``."""
    x, w = quadrature_nodes(theta, sigma, rule)
    vals = fn(x)
    extra = vals.ndim - x.ndim
    return (vals * w.reshape(w.shape + (1,) * extra)).sum(x.ndim - 1)


def fisher(
    theta: object, sigma: object = 1.0, *, form: str = "score", rule: QuadratureRule | None = None
) -> Tensor:
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
    theta = check_theta(theta)
    s = check_sigma(sigma, theta)
    if form == "score":
        # Scores in standardized form: at the nodes x = mu_k + sigma z of component k,
        # (x - mu_i)/sigma is z or z -+ delta, and r_1 = sigmoid(delta z +- delta^2/2).
        rule = default_rule(rule)
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


# ------------------------------------------------------------------------------------------
# losses
def _adaptive_rule(theta: Tensor, sigma: Tensor, rule: QuadratureRule | None) -> QuadratureRule:
    """A trapezoid step fine enough for responsibilities of slope |mu1 - mu2| / sigma^2 (see module doc)."""
    if rule is not None:
        return default_rule(rule)
    sep = (theta[..., 0] - theta[..., 1]).detach().abs() / sigma.detach()
    dmax = float(sep.max()) if sep.numel() else 0.0
    h = min(0.1, 0.6 / max(dmax, 1e-12))
    h = max(h, 0.01)
    return _DEFAULT_RULE if h == 0.1 else trapezoid_rule(h)


def kl_divergence(
    theta_p: object, theta_q: object, sigma: object = 1.0, rule: QuadratureRule | None = None
) -> Tensor:
    r""":math:`\mathrm{KL}(p_{\theta_p}\,\|\,p_{\theta_q}) = \mathbb E_{p_{\theta_p}}[\log p_{\theta_p} - \log
    p_{\theta_q}]` by quadrature (broadcasts)."""
    tp, tq = check_theta(theta_p, "theta_p"), check_theta(theta_q, "theta_q")
    tp, tq = torch.broadcast_tensors(tp, tq.to(tp.dtype))
    s = check_sigma(sigma, tp)
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
    r"""Population loss :math:`L(\theta) = \mathrm{KL}(p_{\theta^*}\,\|\,p_\theta)` (expected NLL minus the
    target's entropy).

    Minimal (zero) at :math:`\theta^*` and at its mirror image :math:`(\mu_2^*,\mu_1^*)`, the
    same distribution. Gradient :math:`\nabla L = -\mathbb E_{p_{\theta^*}}[\nabla_\theta\log p_\theta(x)]`,
    by quadrature under the target.
    """

    target: Tensor
    sigma: float = 1.0
    rule: QuadratureRule | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        t = check_theta(self.target, "target")
        if t.shape != (2,):
            raise ValueError(f"target must have shape (2,), got {tuple(t.shape)}")
        object.__setattr__(self, "target", t)
        object.__setattr__(self, "sigma", check_positive_real(self.sigma, "sigma"))

    def _nodes(self, theta: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        s = torch.tensor(self.sigma, dtype=theta.dtype)
        target = self.target.to(theta.dtype)
        r = _adaptive_rule(
            torch.cat([theta.detach().reshape(-1, 2), target.reshape(1, 2)]), s, self.rule
        )
        x, w = quadrature_nodes(target, s, r)
        return x.expand(theta.shape[:-1] + x.shape), w, s

    def value(self, theta: object) -> Tensor:
        theta = check_theta(theta)
        x, w, s = self._nodes(theta)
        target = self.target.to(theta.dtype)
        lp_t = _lp(x, target[0], target[1], s)
        return (lp_t - _lp(x, *_split(theta, s, x))) @ w

    def gradient(self, theta: object) -> Tensor:
        theta = check_theta(theta)
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
        object.__setattr__(self, "sigma", check_positive_real(self.sigma, "sigma"))

    @classmethod
    def from_target(
        cls, target: object, n: int, sigma: float = 1.0, *, seed: int = 0
    ) -> NegativeLogLikelihood:
        """``n`` points drawn (seeded) from the mixture at ``target``."""
        return cls(sample(n, target, sigma, seed=seed), sigma)

    def value(self, theta: object) -> Tensor:
        theta = check_theta(theta)
        s = torch.tensor(self.sigma, dtype=theta.dtype)
        x = self.data.to(theta.dtype)
        return -_lp(x, *_split(theta, s, x)).mean(-1)

    def gradient(self, theta: object) -> Tensor:
        theta = check_theta(theta)
        s = torch.tensor(self.sigma, dtype=theta.dtype)
        x = self.data.to(theta.dtype)
        return -_score(x, *_split(theta, s, x)).mean(-2)
