r"""Fisher-Rao distances without a closed form, by numerical geodesics, and one more closed form.

- :func:`geodesic_shooting` finds the geodesic between two points of any metric by shooting:
  Newton's method on the initial velocity of :func:`igbook.connections.integrate_geodesic`, so
  that the curve ends at the target. Its length is :math:`\sqrt{v_0^\top g(\theta_0)v_0}`.
- :func:`geodesic_energy` finds it independently, by minimizing the discrete energy
  :math:`\sum_k \Delta_k^\top g(\bar\theta_k)\Delta_k / \Delta t` of a polyline (L-BFGS); the
  minimizer has constant speed and its length is the distance :cite:`amari2000methods`.
- :func:`fisher_rao_gamma` and :func:`fisher_rao_beta`: Gamma(shape, rate) and Beta, whose
  Fisher-Rao distances have no closed form, by shooting.
- :func:`fisher_rao_gaussian_fixed_mean`: multivariate Gaussians with a common mean,
  :math:`d(\Sigma_1, \Sigma_2) = \sqrt{\tfrac12\sum_i\log^2\lambda_i(\Sigma_1^{-1}\Sigma_2)}`
  :cite:`skovgaard1984riemannian,atkinson1981rao`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.func import vmap

from igbook._validation import (
    as_tensor,
    check_count,
    check_finite,
    check_positive,
    check_shape,
    check_symmetric_positive_definite,
)
from igbook.connections import Metric, batched_acceleration, metric_at, rk4_geodesic

__all__ = [
    "Geodesic",
    "beta_acceleration",
    "beta_metric_natural",
    "fisher_rao_beta",
    "fisher_rao_gamma",
    "fisher_rao_gaussian_fixed_mean",
    "gamma_acceleration",
    "gamma_metric_natural",
    "geodesic_energy",
    "geodesic_shooting",
]


@dataclass(frozen=True)
class Geodesic:
    """A numerical geodesic: its ``points`` (``(n, d)``), ``length``, and the endpoint ``residual``."""

    points: Tensor
    length: Tensor
    residual: float
    iterations: int


def _two_points(theta0: object, theta1: object) -> tuple[Tensor, Tensor]:
    a = check_finite(as_tensor(theta0, "theta0"), "theta0")
    check_shape(a, "theta0", (None,))
    b = check_finite(as_tensor(theta1, "theta1", dtype=a.dtype), "theta1")
    check_shape(b, "theta1", (a.shape[0],))
    return a, b


def geodesic_shooting(
    metric: Metric,
    theta0: object,
    theta1: object,
    *,
    steps: int = 40,
    tol: float = 1e-10,
    max_iter: int = 30,
    acceleration: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> Geodesic:
    r"""Geodesic from ``theta0`` to ``theta1`` by shooting on the initial velocity.

    Solves :math:`\Phi(v) = \theta_1` where :math:`\Phi(v)` is the end point at :math:`t = 1` of the
    geodesic with :math:`\theta(0) = \theta_0`, :math:`\dot\theta(0) = v` (RK4, ``steps`` steps, Christoffel
    symbols by autograd of ``metric`` or the closed form ``acceleration``, see
    :func:`igbook.connections.integrate_geodesic`). The Jacobian of :math:`\Phi` is taken by central
    differences, integrated in one batch with :math:`\Phi(v)`; the Newton step is halved until the
    end-point error decreases. Start: the straight line :math:`v = \theta_1 - \theta_0`. The length is
    :math:`\sqrt{v^\top g(\theta_0)v}`, up to the RK4 error :math:`O(\text{steps}^{-4})`
    :cite:`amari2000methods`. Raises :class:`ValueError` if Newton fails.
    """
    a, b = _two_points(theta0, theta1)
    metric_at(metric, a)
    if not (isinstance(max_iter, int) and max_iter >= 1):
        raise ValueError(f"max_iter must be an int >= 1, got {max_iter!r}")
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol!r}")
    if not (isinstance(steps, int) and steps >= 1):
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    acc = acceleration if acceleration is not None else batched_acceleration(metric)
    d = a.shape[0]
    eye = torch.eye(d, dtype=a.dtype)

    def ends(vs: Tensor) -> Tensor:
        try:
            return rk4_geodesic(acc, a.expand(vs.shape[0], d), vs, steps, 1.0)[0][-1]
        except ValueError:
            return torch.full_like(vs, float("nan"))

    v = b - a
    r = ends(v.unsqueeze(0))[0] - b
    err = float(torch.linalg.vector_norm(r))
    target = tol * max(1.0, float(torch.linalg.vector_norm(b - a)))
    it = 0
    while not err <= target and it < max_iter:
        it += 1
        h = 1e-6 * max(1.0, float(v.norm()))
        out = ends(torch.cat([v + h * eye, v - h * eye]))
        jac = ((out[:d] - out[d:]) / (2 * h)).T
        dv = torch.linalg.solve(jac, -r)
        step = 1.0
        while step > 1e-4:
            v_new = v + step * dv
            r_new = ends(v_new.unsqueeze(0))[0] - b
            e_new = float(torch.linalg.vector_norm(r_new))
            if math.isfinite(e_new) and e_new < err:
                break
            step /= 2
        else:
            raise ValueError(
                "geodesic shooting failed to converge (the end-point error stopped decreasing)"
            )
        v, r, err = v_new, r_new, e_new
    if not err <= target:
        raise ValueError(
            f"geodesic shooting did not converge in {max_iter} iterations (end-point error {err:.2e})"
        )
    pts = rk4_geodesic(acc, a.unsqueeze(0), v.unsqueeze(0), steps, 1.0)[0][:, 0]
    length = torch.sqrt(v @ metric(a) @ v)
    return Geodesic(pts, length, err, it)


def geodesic_energy(
    metric: Metric, theta0: object, theta1: object, *, num: int = 40, max_iter: int = 500
) -> Geodesic:
    r"""Geodesic from ``theta0`` to ``theta1`` by minimizing the energy of a polyline with ``num`` points.

    Minimizes :math:`E = (n-1)\sum_k \Delta_k^\top g(\bar\theta_k)\Delta_k` over the interior points
    (midpoint metric, L-BFGS with strong-Wolfe line search), started from the straight line. By
    Cauchy-Schwarz :math:`L^2\le E` with equality for constant speed, so the minimizer is a
    discrete geodesic; the returned length is :math:`\sum_k\sqrt{\Delta_k^\top g(\bar\theta_k)\Delta_k}`,
    accurate to :math:`O(n^{-2})`. An algorithm independent of :func:`geodesic_shooting` (no
    Christoffel symbols, no ODE) :cite:`amari2000methods`.
    """
    a, b = _two_points(theta0, theta1)
    metric_at(metric, a)
    if not (isinstance(num, int) and num >= 3):
        raise ValueError(f"num must be an int >= 3, got {num!r}")
    s = torch.linspace(0, 1, num, dtype=a.dtype).unsqueeze(-1)
    inner = ((1 - s) * a + s * b)[1:-1].clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [inner],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=1e-12,
        tolerance_change=1e-15,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def sq_lengths(path: Tensor) -> Tensor:
        mids = 0.5 * (path[1:] + path[:-1])
        dl = path[1:] - path[:-1]
        g = vmap(metric)(mids)
        return torch.einsum("ni,nij,nj->n", dl, g, dl)

    def closure() -> Tensor:
        opt.zero_grad()
        path = torch.cat([a.unsqueeze(0), inner, b.unsqueeze(0)])
        e = (num - 1) * sq_lengths(path).sum()
        e.backward()
        return e

    opt.step(closure)
    with torch.no_grad():
        path = torch.cat([a.unsqueeze(0), inner.detach(), b.unsqueeze(0)])
        length = sq_lengths(path).clamp_min(0).sqrt().sum()
    return Geodesic(path, length, 0.0, max_iter)


def _two_shape_pairs(
    a1: object, b1: object, a2: object, b2: object, names: tuple[str, str]
) -> tuple[Tensor, Tensor]:
    n1, n2 = names
    vals = [
        check_positive(as_tensor(v, n), n)
        for v, n in ((a1, f"{n1}1"), (b1, f"{n2}1"), (a2, f"{n1}2"), (b2, f"{n2}2"))
    ]
    for v, n in zip(vals, (f"{n1}1", f"{n2}1", f"{n1}2", f"{n2}2")):
        check_shape(v, n, ())
    return torch.stack(vals[:2]), torch.stack(vals[2:])


def _natural_point(eta: object, family: str) -> Tensor:
    """``eta`` checked: finite, last axis of size 2, inside the natural domain of ``family``."""
    t = check_finite(as_tensor(eta, "eta"), "eta")
    if t.ndim == 0 or t.shape[-1] != 2:
        raise ValueError(
            f"eta must have a last axis of size 2 (the natural parameters of {family}), got shape {tuple(t.shape)}"
        )
    if family == "Gamma":
        inside = (t[..., 0] > -1.0) & (t[..., 1] < 0.0)
        domain = "eta_0 > -1 and eta_1 < 0 (alpha = eta_0 + 1 > 0, rate = -eta_1 > 0)"
    else:
        inside = (t > -1.0).all(-1)
        domain = "eta > -1 (alpha = eta_0 + 1 > 0, beta = eta_1 + 1 > 0)"
    if not bool(inside.all()):
        raise ValueError(f"eta must lie in the natural domain of {family}: {domain}")
    return t


def _velocity(v: object, eta: Tensor) -> Tensor:
    t = check_finite(as_tensor(v, "v", dtype=eta.dtype), "v")
    if t.shape != eta.shape:
        raise ValueError(f"v must have the shape of eta {tuple(eta.shape)}, got {tuple(t.shape)}")
    return t


def _gamma_metric_natural(eta: Tensor) -> Tensor:
    a, b = eta[..., 0] + 1.0, -eta[..., 1]
    row0 = torch.stack([torch.polygamma(1, a), 1.0 / b], -1)
    row1 = torch.stack([1.0 / b, a / b**2], -1)
    return torch.stack([row0, row1], -2)


def _gamma_acceleration(eta: Tensor, v: Tensor) -> Tensor:
    a, b = eta[..., 0] + 1.0, -eta[..., 1]
    t = torch.stack(
        [
            torch.polygamma(2, a) * v[..., 0] ** 2 + v[..., 1] ** 2 / b**2,
            2 * v[..., 0] * v[..., 1] / b**2 + 2 * a * v[..., 1] ** 2 / b**3,
        ],
        -1,
    )
    return -0.5 * torch.linalg.solve(_gamma_metric_natural(eta), t)


def _beta_metric_natural(eta: Tensor) -> Tensor:
    ab = eta + 1.0
    return (
        torch.diag_embed(torch.polygamma(1, ab)) - torch.polygamma(1, ab.sum(-1))[..., None, None]
    )


def _beta_acceleration(eta: Tensor, v: Tensor) -> Tensor:
    ab = eta + 1.0
    t = torch.polygamma(2, ab) * v**2 - (torch.polygamma(2, ab.sum(-1)) * v.sum(-1) ** 2).unsqueeze(
        -1
    )
    return -0.5 * torch.linalg.solve(_beta_metric_natural(eta), t)


def gamma_metric_natural(eta: Tensor) -> Tensor:
    r"""Fisher metric of Gamma in :math:`\eta = (\alpha-1, -\beta)`:
    :math:`\nabla^2A = \begin{pmatrix}\psi'(\alpha)&1/\beta\\1/\beta&\alpha/\beta^2\end{pmatrix}`.

    ``eta`` (shape ``(..., 2)``) must be finite with :math:`\alpha > 0` and :math:`\beta > 0`
    :cite:`amari2000methods`.
    """
    return _gamma_metric_natural(_natural_point(eta, "Gamma"))


def gamma_acceleration(eta: Tensor, v: Tensor) -> Tensor:
    r"""Levi-Civita geodesic acceleration of Gamma in natural coordinates, batched over rows.

    In natural coordinates :math:`\Gamma_{ij,k} = \tfrac12\partial_i\partial_j\partial_kA`
    :cite:`amari2000methods`; with :math:`A = \log\Gamma(\alpha) - \alpha\log\beta` the non-zero third
    derivatives are :math:`A_{000} = \psi''(\alpha)`, :math:`A_{011} = 1/\beta^2`, :math:`A_{111} = 2\alpha/\beta^3`,
    so :math:`\ddot\eta = -\tfrac12 g^{-1}\big(\psi''(\alpha)v_0^2 + v_1^2/\beta^2,
    \ 2v_0v_1/\beta^2 + 2\alpha v_1^2/\beta^3\big)`.
    ``eta`` and ``v`` are checked (finite, same shape ``(..., 2)``, ``eta`` in the domain);
    :func:`fisher_rao_gamma` integrates an unchecked twin.
    """
    e = _natural_point(eta, "Gamma")
    return _gamma_acceleration(e, _velocity(v, e))


def beta_metric_natural(eta: Tensor) -> Tensor:
    r"""Fisher metric of Beta in :math:`\eta = (\alpha-1, \beta-1)`:
    :math:`\mathrm{diag}(\psi'(\alpha),\psi'(\beta)) - \psi'(\alpha+\beta)\mathbf 1\mathbf 1^\top`.

    ``eta`` (shape ``(..., 2)``) must be finite with :math:`\alpha, \beta > 0` :cite:`amari2000methods`.
    """
    return _beta_metric_natural(_natural_point(eta, "Beta"))


def beta_acceleration(eta: Tensor, v: Tensor) -> Tensor:
    r"""Levi-Civita geodesic acceleration of Beta in natural coordinates, batched over rows.

    :math:`A_{ijk} = \psi''(\alpha)[i=j=k=0] + \psi''(\beta)[i=j=k=1] - \psi''(\alpha+\beta)`, so
    :math:`\ddot\eta = -\tfrac12 g^{-1}\big((\psi''(\alpha)v_0^2, \psi''(\beta)v_1^2)
    - \psi''(\alpha+\beta)(v_0+v_1)^2\mathbf 1\big)`
    :cite:`amari2000methods`. ``eta`` and ``v`` are checked as in :func:`gamma_acceleration`;
    :func:`fisher_rao_beta` integrates an unchecked twin.
    """
    e = _natural_point(eta, "Beta")
    return _beta_acceleration(e, _velocity(v, e))


def fisher_rao_gamma(
    alpha1: object, beta1: object, alpha2: object, beta2: object, *, steps: int = 40
) -> Tensor:
    r"""Fisher-Rao distance between Gamma(alpha1, rate beta1) and Gamma(alpha2, rate beta2), by shooting.

    The metric in :math:`(\alpha, \beta)` is
    :math:`\begin{pmatrix}\psi'(\alpha)&-1/\beta\\-1/\beta&\alpha/\beta^2\end{pmatrix}`;
    in :math:`(\alpha, \log\beta)` it does not depend on :math:`\log\beta`, so the distance is
    invariant under a common rescaling of the rates. There is no closed form
    :cite:`atkinson1981rao,miyamoto2024closed`; the geodesic is shot in natural coordinates with the
    closed-form :func:`gamma_acceleration`.
    """
    p, q = _two_shape_pairs(alpha1, beta1, alpha2, beta2, ("alpha", "beta"))
    steps = check_count(steps, "steps")
    if torch.equal(p, q):
        return torch.zeros((), dtype=p.dtype)

    def nat(t):
        return torch.stack([t[0] - 1.0, -t[1]])

    return geodesic_shooting(
        _gamma_metric_natural, nat(p), nat(q), steps=steps, acceleration=_gamma_acceleration
    ).length


def fisher_rao_beta(
    alpha1: object, beta1: object, alpha2: object, beta2: object, *, steps: int = 40
) -> Tensor:
    r"""Fisher-Rao distance between Beta(alpha1, beta1) and Beta(alpha2, beta2), by shooting.

    The metric is :math:`\mathrm{diag}(\psi'(\alpha), \psi'(\beta)) - \psi'(\alpha+\beta)\mathbf 1\mathbf 1^\top`
    (the same in :math:`(\alpha,\beta)` and in :math:`\eta`); there is no closed form
    :cite:`atkinson1981rao`. Symmetric under :math:`(\alpha,\beta)\mapsto(\beta,\alpha)`, the image of
    :math:`x\mapsto 1-x`. The geodesic is shot in natural coordinates with :func:`beta_acceleration`.
    """
    p, q = _two_shape_pairs(alpha1, beta1, alpha2, beta2, ("alpha", "beta"))
    steps = check_count(steps, "steps")
    if torch.equal(p, q):
        return torch.zeros((), dtype=p.dtype)
    return geodesic_shooting(
        _beta_metric_natural, p - 1.0, q - 1.0, steps=steps, acceleration=_beta_acceleration
    ).length


def fisher_rao_gaussian_fixed_mean(cov1: object, cov2: object) -> Tensor:
    r"""Fisher-Rao distance between :math:`\mathcal N(m, \Sigma_1)` and :math:`\mathcal N(m, \Sigma_2)` (same mean).

    On the covariances the Fisher metric is
    :math:`\tfrac12\operatorname{tr}(\Sigma^{-1}\dd\Sigma\,\Sigma^{-1}\dd\Sigma)`,
    invariant under :math:`\Sigma\mapsto A\Sigma A^\top`; its geodesics are
    :math:`\Sigma_1^{1/2}\exp(t\log(\Sigma_1^{-1/2}\Sigma_2\Sigma_1^{-1/2}))\Sigma_1^{1/2}` and

    .. math:: d(\Sigma_1,\Sigma_2) = \sqrt{\tfrac12\textstyle\sum_i \log^2\lambda_i},

    with :math:`\lambda_i` the eigenvalues of :math:`\Sigma_1^{-1}\Sigma_2`
    :cite:`skovgaard1984riemannian,atkinson1981rao`.
    For :math:`d = 1` it is :math:`\sqrt2\,|\log(\sigma_2/\sigma_1)|`.
    """
    s1 = check_symmetric_positive_definite(as_tensor(cov1, "cov1"), "cov1")
    s2 = check_symmetric_positive_definite(as_tensor(cov2, "cov2", dtype=s1.dtype), "cov2")
    if s1.shape != s2.shape:
        raise ValueError(
            f"cov1 and cov2 must have the same shape, got {tuple(s1.shape)} and {tuple(s2.shape)}"
        )
    chol = torch.linalg.cholesky(s1)
    w = torch.linalg.solve_triangular(chol, s2, upper=False)
    m = torch.linalg.solve_triangular(
        chol, w.mT, upper=False
    )  # L^-1 S2 L^-T, symmetric, same spectrum
    lam = torch.linalg.eigvalsh(0.5 * (m + m.mT))
    return torch.sqrt(0.5 * (torch.log(lam) ** 2).sum(-1))
