r"""Fisher-Rao geometry where it has closed forms, and Fisher ellipses.

Closed-form Fisher-Rao distances :cite:`atkinson1981rao,costa2015fisher,miyamoto2024closed`:

- Gaussian in :math:`(\mu,\sigma)`: metric :math:`(d\mu^2 + 2d\sigma^2)/\sigma^2`, distance
  :math:`\sqrt2\,\operatorname{arccosh}\big(1+\frac{\Delta\mu^2/2+\Delta\sigma^2}{2\sigma_1\sigma_2}\big)`;
- Categorical :math:`p`: metric :math:`\sum_k dp_k^2/p_k`, distance :math:`2\arccos\sum_k\sqrt{p_k q_k}`;
- Binomial(n) :math:`p`: metric :math:`n/(p(1-p))`, distance :math:`2\sqrt n\,|\arcsin\sqrt{p}-\arcsin\sqrt{q}|`;
- Poisson :math:`\lambda`: metric :math:`1/\lambda`, distance :math:`2|\sqrt{\lambda_1}-\sqrt{\lambda_2}|`;
- Exponential :math:`\lambda`: metric :math:`1/\lambda^2`, distance :math:`|\log(\lambda_1/\lambda_2)|`.

All distance functions broadcast over their arguments, so a whole grid is one call.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from igbook._validation import (
    as_tensor,
    check_finite,
    check_positive,
    check_shape,
    check_simplex,
    check_square,
    check_symmetric,
)
from igbook.families import (
    Bernoulli,
    Categorical,
    Exponential,
    ExponentialFamily,
    Gaussian,
    Poisson,
)

__all__ = [
    "fisher_rao_gaussian",
    "fisher_rao_categorical",
    "fisher_rao_bernoulli",
    "fisher_rao_binomial",
    "fisher_rao_poisson",
    "fisher_rao_exponential",
    "fisher_rao_distance",
    "gaussian_geodesic",
    "curve_length",
    "FisherEllipse",
    "fisher_ellipse",
    "ellipse_points",
]


def _broadcast(*ts: Tensor, names: tuple[str, ...] = ()) -> tuple[Tensor, ...]:
    try:
        return tuple(torch.broadcast_tensors(*ts))
    except RuntimeError as exc:
        shapes = ", ".join(str(tuple(t.shape)) for t in ts)
        who = " and ".join(names) if names else "arguments"
        raise ValueError(f"{who} must broadcast to a common shape, got {shapes}") from exc


def fisher_rao_gaussian(mu1, sigma1, mu2, sigma2) -> Tensor:  # type: ignore[no-untyped-def]
    r"""Fisher-Rao distance between :math:`\mathcal N(\mu_1,\sigma_1^2)` and :math:`\mathcal N(\mu_2,\sigma_2^2)`.

    With :math:`u=\mu/\sqrt2` the metric is twice the Poincaré half-plane metric, so
    :math:`d = \sqrt2\,\operatorname{arccosh}\big(1
    + \frac{(\mu_1-\mu_2)^2/2 + (\sigma_1-\sigma_2)^2}{2\sigma_1\sigma_2}\big)`, evaluated as
    :math:`2\sqrt2\,\operatorname{arcsinh}\frac{\|(\Delta\mu/\sqrt2,\ \Delta\sigma)\|}{2\sqrt{\sigma_1\sigma_2}}`
    (the same function, :math:`\operatorname{arccosh}(1+z) = 2\operatorname{arcsinh}\sqrt{z/2}`), which
    keeps full relative accuracy for nearby points, where forming :math:`1 + z` would round
    :math:`z` away.
    """
    mu1, mu2 = (
        check_finite(as_tensor(mu1, "mu1"), "mu1"),
        check_finite(as_tensor(mu2, "mu2"), "mu2"),
    )
    s1, s2 = (
        check_positive(as_tensor(sigma1, "sigma1"), "sigma1"),
        check_positive(as_tensor(sigma2, "sigma2"), "sigma2"),
    )
    mu1, s1, mu2, s2 = _broadcast(mu1, s1, mu2, s2, names=("mu1", "sigma1", "mu2", "sigma2"))
    chord = torch.hypot((mu1 - mu2) / math.sqrt(2.0), s1 - s2)
    return 2.0 * math.sqrt(2.0) * torch.asinh(chord / (2.0 * torch.sqrt(s1 * s2)))


def fisher_rao_categorical(p, q) -> Tensor:  # type: ignore[no-untyped-def]
    r""":math:`2\arccos\sum_k\sqrt{p_kq_k}`: the map :math:`p\mapsto 2\sqrt p` is an isometry onto a
    sphere of radius 2."""
    p, q = as_tensor(p, "p"), as_tensor(q, "q")
    check_simplex(p, "p", interior=False)
    check_simplex(q, "q", interior=False)
    if p.shape[-1] != q.shape[-1]:
        raise ValueError(
            f"p and q must have the same number of categories, got {p.shape[-1]} and {q.shape[-1]}"
        )
    bc = torch.sqrt(p * q).sum(-1).clamp(max=1.0)
    # 2 arccos(bc) = 4 arcsin(||sqrt p - sqrt q|| / 2): accurate near p = q
    chord = torch.linalg.vector_norm(torch.sqrt(p) - torch.sqrt(q), dim=-1)
    return torch.where(bc > 0.5, 4 * torch.arcsin((chord / 2).clamp(max=1.0)), 2 * torch.arccos(bc))


def fisher_rao_binomial(n: int, p, q) -> Tensor:  # type: ignore[no-untyped-def]
    r""":math:`2\sqrt n\,|\arcsin\sqrt p - \arcsin\sqrt q|` for Binomial(n, p) and Binomial(n, q)."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be an int >= 1 (number of trials), got {n!r}")
    p, q = as_tensor(p, "p"), as_tensor(q, "q")
    from igbook._validation import check_in_interval

    check_in_interval(p, "p", 0.0, 1.0)
    check_in_interval(q, "q", 0.0, 1.0)
    p, q = _broadcast(p, q, names=("p", "q"))
    return 2 * math.sqrt(n) * (torch.arcsin(torch.sqrt(p)) - torch.arcsin(torch.sqrt(q))).abs()


def fisher_rao_bernoulli(p, q) -> Tensor:  # type: ignore[no-untyped-def]
    """Fisher-Rao distance between Bernoulli(p) and Bernoulli(q): the binomial case ``n = 1``."""
    return fisher_rao_binomial(1, p, q)


def fisher_rao_poisson(rate1, rate2) -> Tensor:  # type: ignore[no-untyped-def]
    r""":math:`2|\sqrt{\lambda_1}-\sqrt{\lambda_2}|`."""
    r1 = check_positive(as_tensor(rate1, "rate1"), "rate1")
    r2 = check_positive(as_tensor(rate2, "rate2"), "rate2")
    r1, r2 = _broadcast(r1, r2, names=("rate1", "rate2"))
    return 2 * (torch.sqrt(r1) - torch.sqrt(r2)).abs()


def fisher_rao_exponential(rate1, rate2) -> Tensor:  # type: ignore[no-untyped-def]
    r""":math:`|\log(\lambda_1/\lambda_2)|`."""
    r1 = check_positive(as_tensor(rate1, "rate1"), "rate1")
    r2 = check_positive(as_tensor(rate2, "rate2"), "rate2")
    r1, r2 = _broadcast(r1, r2, names=("rate1", "rate2"))
    return torch.log(r1 / r2).abs()


def fisher_rao_distance(p: ExponentialFamily, q: ExponentialFamily) -> Tensor:
    """Closed-form Fisher-Rao distance between two members of the same family.

    Supported: :class:`~igbook.families.Gaussian`, :class:`~igbook.families.Categorical`,
    :class:`~igbook.families.Bernoulli`, :class:`~igbook.families.Poisson`,
    :class:`~igbook.families.Exponential`. The multivariate Gaussian with both mean and
    covariance free has no closed form and raises :class:`NotImplementedError`.
    """
    if type(p) is not type(q):
        raise TypeError(
            f"p and q must be of the same family, got {type(p).__name__} and {type(q).__name__}"
        )
    if isinstance(p, Gaussian) and isinstance(q, Gaussian):
        return fisher_rao_gaussian(p.mu, p.sigma, q.mu, q.sigma)
    if isinstance(p, Categorical) and isinstance(q, Categorical):
        return fisher_rao_categorical(p.probs, q.probs)
    if isinstance(p, Bernoulli) and isinstance(q, Bernoulli):
        return fisher_rao_bernoulli(p.p, q.p)
    if isinstance(p, Poisson) and isinstance(q, Poisson):
        return fisher_rao_poisson(p.rate, q.rate)
    if isinstance(p, Exponential) and isinstance(q, Exponential):
        return fisher_rao_exponential(p.rate, q.rate)
    raise NotImplementedError(f"no closed-form Fisher-Rao distance for {type(p).__name__}")


def gaussian_geodesic(
    mu1: float, sigma1: float, mu2: float, sigma2: float, num: int = 101
) -> Tensor:
    r"""Points on the Fisher-Rao geodesic between two univariate Gaussians, shape ``(num, 2)`` of :math:`(\mu,\sigma)`.

    In :math:`(u, \sigma) = (\mu/\sqrt2, \sigma)` geodesics are vertical lines or semicircles
    centred on the axis :math:`\sigma = 0`; points are spaced uniformly in arc length.
    """
    if not isinstance(num, int) or num < 2:
        raise ValueError(f"num must be an int >= 2, got {num!r}")
    for nm, v in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)):
        if isinstance(v, Tensor):
            if v.numel() != 1:
                raise ValueError(f"{nm} must be a scalar, got shape {tuple(v.shape)}")
        elif isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(f"{nm} must be a real number, got {type(v).__name__}")
    mu1, sigma1, mu2, sigma2 = (float(v) for v in (mu1, sigma1, mu2, sigma2))
    d_total = float(fisher_rao_gaussian(mu1, sigma1, mu2, sigma2))
    u1, u2 = mu1 / math.sqrt(2), mu2 / math.sqrt(2)
    t = torch.linspace(0, 1, num, dtype=torch.float64)
    if abs(u1 - u2) < 1e-14 * max(1.0, abs(u1)):
        # vertical geodesic: log sigma is linear in arc length
        sig = sigma1 * torch.exp(t * math.log(sigma2 / sigma1))
        return torch.stack([torch.full_like(t, mu1), sig], 1)
    # semicircle centre c on the axis: (u1-c)^2 + s1^2 = (u2-c)^2 + s2^2
    c = (u2**2 + sigma2**2 - u1**2 - sigma1**2) / (2 * (u2 - u1))
    r = math.hypot(u1 - c, sigma1)
    # hyperbolic arc length along the semicircle: s = log tan(phi/2) in the half-plane (times sqrt 2)
    phi1 = math.atan2(sigma1, u1 - c)
    phi2 = math.atan2(sigma2, u2 - c)
    l1, l2 = math.log(math.tan(phi1 / 2)), math.log(math.tan(phi2 / 2))
    ell = l1 + t * (l2 - l1)
    phi = 2 * torch.atan(torch.exp(ell))
    u = c + r * torch.cos(phi)
    sig = r * torch.sin(phi)
    out = torch.stack([u * math.sqrt(2), sig], 1)
    # sanity: the construction has the right total length (guards the formula above)
    assert abs(math.sqrt(2) * abs(l2 - l1) - d_total) < 1e-8 * max(1.0, d_total)
    return out


def curve_length(points: Tensor, metric: Callable[[Tensor], Tensor]) -> Tensor:
    r"""Riemannian length :math:`\sum_k \sqrt{\Delta_k^\top G(\bar\theta_k)\Delta_k}` of a polyline.

    ``points`` has shape ``(n, d)``; ``metric(theta)`` returns the ``(d, d)`` metric at a
    point and is evaluated at segment midpoints (second-order accurate).
    """
    points = check_finite(as_tensor(points, "points"), "points")
    if points.ndim != 2 or points.shape[0] < 2:
        raise ValueError(f"points must have shape (n >= 2, d), got {tuple(points.shape)}")
    mids = 0.5 * (points[1:] + points[:-1])
    deltas = points[1:] - points[:-1]
    g = torch.stack([metric(m) for m in mids])
    return torch.sqrt(torch.einsum("ni,nij,nj->n", deltas, g, deltas).clamp_min(0)).sum()


@dataclass(frozen=True)
class FisherEllipse:
    r"""The level set :math:`\{\delta: \delta^\top F\delta = \varepsilon\}` around ``center``.

    ``axes`` are the unit eigenvectors of :math:`F` (columns), ``semi_axes`` the lengths
    :math:`\sqrt{\varepsilon/\lambda_i}`, ``angle`` the direction of the first (longest) axis in
    degrees, as matplotlib's :class:`~matplotlib.patches.Ellipse` wants it.
    """

    center: Tensor
    eigenvalues: Tensor
    axes: Tensor
    semi_axes: Tensor
    angle: float

    @property
    def width(self) -> float:
        return float(2 * self.semi_axes[0])

    @property
    def height(self) -> float:
        return float(2 * self.semi_axes[1])


def _eps(eps: float) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise TypeError(f"eps must be a real number, got {type(eps).__name__}")
    if not (eps > 0 and math.isfinite(eps)):
        raise ValueError(f"eps must be finite and > 0, got {eps}")
    return float(eps)


def fisher_ellipse(center: Tensor, fisher: Tensor, eps: float = 1.0) -> FisherEllipse:
    """The Fisher ellipse of a 2x2 positive-definite metric (long axis first)."""
    fisher = check_square(as_tensor(fisher, "fisher"), "fisher")
    if fisher.shape != (2, 2):
        raise ValueError(f"fisher must be 2x2 to draw an ellipse, got {tuple(fisher.shape)}")
    check_symmetric(fisher, "fisher")
    eps = _eps(eps)
    center = check_finite(as_tensor(center, "center", dtype=fisher.dtype), "center")
    check_shape(center, "center", (2,))
    evals, evecs = torch.linalg.eigh(0.5 * (fisher + fisher.T))
    if not bool(evals[0] > 0):
        raise ValueError("fisher must be positive definite to have a bounded ellipse")
    semi = torch.sqrt(eps / evals)  # ascending eigenvalues => descending semi-axes
    angle = math.degrees(math.atan2(float(evecs[1, 0]), float(evecs[0, 0])))
    return FisherEllipse(center, evals, evecs, semi, angle)


def ellipse_points(center: Tensor, fisher: Tensor, eps: float = 1.0, num: int = 100) -> Tensor:
    r"""``num`` points on :math:`\{\theta: (\theta-c)^\top F(\theta-c) = \varepsilon\}`, shape ``(num, 2)``.

    Accepts batches: ``center`` of shape ``(..., 2)`` and ``fisher`` of shape ``(..., 2, 2)``
    give ``(..., num, 2)``, so a whole field of ellipses is one call.

    The level is the squared Fisher length :math:`\mathrm ds^2 = \varepsilon`. The quadratic KL ball
    :math:`\{\delta: \tfrac12\delta^\top F\delta = \varepsilon\}` (the book's other convention, see its
    notation appendix) is ``eps=2 * epsilon``.
    """
    fisher = as_tensor(fisher, "fisher")
    center = check_finite(as_tensor(center, "center", dtype=fisher.dtype), "center")
    if fisher.ndim < 2 or fisher.shape[-2:] != (2, 2):
        raise ValueError(f"fisher must have shape (..., 2, 2), got {tuple(fisher.shape)}")
    if center.ndim < 1 or center.shape[-1] != 2:
        raise ValueError(f"center must have shape (..., 2), got {tuple(center.shape)}")
    check_symmetric(fisher, "fisher")
    eps = _eps(eps)
    if isinstance(num, bool) or not isinstance(num, int) or num < 2:
        raise ValueError(f"num must be an int >= 2, got {num!r}")
    evals, evecs = torch.linalg.eigh(0.5 * (fisher + fisher.transpose(-1, -2)))
    if not bool((evals > 0).all()):
        raise ValueError("fisher must be positive definite to have a bounded ellipse")
    t = torch.linspace(0, 2 * math.pi, num, dtype=fisher.dtype)
    circle = torch.stack([torch.cos(t), torch.sin(t)], -1)  # (num, 2)
    scaled = circle * torch.sqrt(eps / evals).unsqueeze(-2)  # (..., num, 2)
    return center.unsqueeze(-2) + scaled @ evecs.transpose(-1, -2)
