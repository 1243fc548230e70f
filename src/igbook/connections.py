r"""Affine connections of statistical manifolds, curvature and geodesics, by automatic differentiation.

For an exponential family :math:`q_\eta(x) = h(x)\exp(\eta^\top T(x) - A(\eta))` in a chart
:math:`\theta` with natural parameter :math:`\eta(\theta)` and mean parameter
:math:`\mu(\theta) = \nabla A(\eta(\theta))`, every object below is computed from the
log-partition :math:`A` alone :cite:`amari2000methods,amari2016information`:

- the Fisher metric :math:`g_{ij} = \partial_i\eta^\top\,\nabla^2A\,\partial_j\eta`;
- the Amari-Chentsov cubic tensor :math:`T_{ijk} = \E[\partial_i\ell\,\partial_j\ell\,\partial_k\ell]
  = \nabla^3A[\partial_i\eta, \partial_j\eta, \partial_k\eta]`;
- the e-connection :math:`\Gamma^{(e)}_{ij,k} = \E[\partial_i\partial_j\ell\,\partial_k\ell]
  = \partial_i\partial_j\eta^\top\,\nabla^2A\,\partial_k\eta` (zero in :math:`\eta`: e-flat);
- the m-connection :math:`\Gamma^{(m)}_{ij,k} = \E[(\partial_i\partial_j\ell
  + \partial_i\ell\,\partial_j\ell)\,\partial_k\ell] = \partial_i\partial_j\mu^\top\,\partial_k\eta`
  (zero in :math:`\mu`: m-flat);
- the alpha-connections :math:`\Gamma^{(\alpha)} = \tfrac{1+\alpha}2\Gamma^{(e)} + \tfrac{1-\alpha}2\Gamma^{(m)}`,
  so that :math:`\Gamma^{(1)} = \Gamma^{(e)}`, :math:`\Gamma^{(-1)} = \Gamma^{(m)}`, :math:`\Gamma^{(0)}` is
  Levi-Civita and :math:`\Gamma^{(m)} - \Gamma^{(e)} = T`.

Index convention: ``gamma[i, j, k]`` is :math:`\Gamma_{ij,k} = \langle\nabla_{\partial_i}\partial_j, \partial_k\rangle`
(first kind); :func:`raise_index` gives the second kind ``[k, i, j]`` = :math:`\Gamma^k_{ij}`.

For an arbitrary metric (a function ``theta -> (d, d)`` matrix) :func:`levi_civita` gives the
Christoffel symbols from its derivatives, :func:`gaussian_curvature` the curvature of a surface by
Brioschi's formula, and :func:`integrate_geodesic` solves the geodesic equation
:math:`\ddot\theta^k + \Gamma^k_{ij}\dot\theta^i\dot\theta^j = 0` by the classical Runge-Kutta method.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor
from torch.func import hessian, jacfwd, vmap

from igbook._validation import as_tensor, check_finite, check_shape
from igbook.families import family_class

__all__ = [
    "Chart",
    "alpha_connection",
    "batched_acceleration",
    "cubic_tensor",
    "duality_defect",
    "e_connection",
    "e_geodesic",
    "fisher_metric",
    "gaussian_curvature",
    "geodesic_acceleration",
    "integrate_geodesic",
    "levi_civita",
    "m_connection",
    "m_geodesic",
    "metric_function",
    "natural_map",
    "raise_index",
    "metric_at",
    "rk4_geodesic",
]

Chart = Literal["params", "natural", "mean"]
Metric = Callable[[Tensor], Tensor]


# ------------------------------------------------------------------------------------- helpers
def natural_map(family: object, chart: Chart = "params") -> Callable[[Tensor], Tensor]:
    r"""The pure map :math:`\theta\mapsto\eta(\theta)` from a chart to the natural parameter.

    ``chart`` is ``"params"`` (the usual coordinates), ``"natural"`` (identity) or ``"mean"``
    (:math:`\nabla A^*`). The result can be traced by :mod:`torch.func`.
    """
    cls = family_class(family)
    if chart == "params":
        return cls.natural_from_params
    if chart == "natural":
        return lambda eta: eta
    if chart == "mean":
        return cls.natural_from_mean
    raise ValueError(f"chart must be 'params', 'natural' or 'mean', got {chart!r}")


def _point(family: object, theta: object, chart: Chart, name: str = "theta") -> Tensor:
    """Validate a point of the chart: a finite 1-D tensor inside the parameter space."""
    cls = family_class(family)
    t = check_finite(as_tensor(theta, name), name)
    if t.ndim == 0:
        t = t.reshape(1)
    check_shape(t, name, (None,))
    try:
        if chart == "params":
            cls.from_params(t)
        elif chart == "natural":
            cls.from_natural(t)
        elif chart == "mean":
            cls.from_mean(t)
        else:
            raise ValueError(f"chart must be 'params', 'natural' or 'mean', got {chart!r}")
    except ValueError as exc:
        if str(exc).startswith("chart"):
            raise
        raise ValueError(
            f"{name} is not a point of the {cls.__name__} family in the {chart!r} chart: {exc}"
        ) from exc
    return t


def metric_at(metric: Metric, theta: Tensor) -> Tensor:
    r"""Evaluate a metric function at a checked point: :math:`g(\theta)`, a ``(d, d)`` tensor.

    ``metric`` must be callable and return a ``(d, d)`` tensor for a ``(d,)`` point ``theta``
    (a Riemannian metric in coordinates :cite:`amari2000methods`); otherwise this raises
    :class:`TypeError`/:class:`ValueError` naming ``metric``. Used by every function that takes
    a metric, before it differentiates it.
    """
    if not callable(metric):
        raise TypeError(
            f"metric must be a function theta -> (d, d) matrix, got {type(metric).__name__}"
        )
    g = metric(theta)
    d = theta.shape[0]
    if not isinstance(g, Tensor) or g.shape != (d, d):
        raise ValueError(
            f"metric(theta) must return a ({d}, {d}) tensor, got {getattr(g, 'shape', type(g))}"
        )
    return g


# -------------------------------------------------------------------------- exponential families
def metric_function(family: object, chart: Chart = "params") -> Metric:
    r"""The Fisher metric of ``family`` in ``chart`` as a pure function :math:`\theta\mapsto g(\theta)`.

    :math:`g(\theta) = J^\top\nabla^2A(\eta(\theta))\,J` with :math:`J = \partial\eta/\partial\theta`
    :cite:`amari2000methods`; no validation, so it can be differentiated (for :func:`levi_civita`,
    :func:`gaussian_curvature`, :func:`integrate_geodesic`).
    """
    cls = family_class(family)
    to_eta = natural_map(cls, chart)

    def g(theta: Tensor) -> Tensor:
        jac = jacfwd(to_eta)(theta)
        return jac.T @ hessian(cls.log_partition)(to_eta(theta)) @ jac

    return g


def fisher_metric(family: object, theta: object, chart: Chart = "params") -> Tensor:
    r"""Fisher metric :math:`g_{ij}(\theta) = \partial_i\eta^\top\nabla^2A(\eta)\,\partial_j\eta` at ``theta``."""
    t = _point(family, theta, chart)
    return metric_function(family, chart)(t)


def cubic_tensor(family: object, theta: object, chart: Chart = "params") -> Tensor:
    r"""Amari-Chentsov tensor :math:`T_{ijk} = \E[\partial_i\ell\,\partial_j\ell\,\partial_k\ell]`, shape ``(d, d, d)``.

    For an exponential family the score is :math:`J^\top(T(x) - \mu)`, so
    :math:`T_{ijk} = \sum_{abc}\partial_a\partial_b\partial_c A\;J_{ai}J_{bj}J_{ck}`, the third cumulant of
    the sufficient statistic pulled back to the chart :cite:`amari2000methods,chentsov1982statistical`.
    """
    cls = family_class(family)
    t = _point(cls, theta, chart)
    to_eta = natural_map(cls, chart)
    jac = jacfwd(to_eta)(t)
    a3 = jacfwd(hessian(cls.log_partition))(to_eta(t))
    return torch.einsum("abc,ai,bj,ck->ijk", a3, jac, jac, jac)


def e_connection(family: object, theta: object, chart: Chart = "params") -> Tensor:
    r"""Exponential connection :math:`\Gamma^{(e)}_{ij,k} = \partial_i\partial_j\eta^\top\,\nabla^2A\,\partial_k\eta`.

    It is :math:`\E[\partial_i\partial_j\ell\,\partial_k\ell]`; it vanishes in the natural chart
    (the family is e-flat) :cite:`amari2000methods`.
    """
    cls = family_class(family)
    t = _point(cls, theta, chart)
    to_eta = natural_map(cls, chart)
    jac = jacfwd(to_eta)(t)
    hess_eta = jacfwd(jacfwd(to_eta))(t)  # [a, i, j] = d^2 eta_a / dtheta_i dtheta_j
    fisher_eta = hessian(cls.log_partition)(to_eta(t))
    return torch.einsum("aij,ab,bk->ijk", hess_eta, fisher_eta, jac)


def m_connection(family: object, theta: object, chart: Chart = "params") -> Tensor:
    r"""Mixture connection :math:`\Gamma^{(m)}_{ij,k} = \partial_i\partial_j\mu^\top\,\partial_k\eta`.

    It is :math:`\E[(\partial_i\partial_j\ell + \partial_i\ell\,\partial_j\ell)\,\partial_k\ell]`; it vanishes in the
    mean chart (the family is m-flat) :cite:`amari2000methods`.
    """
    cls = family_class(family)
    t = _point(cls, theta, chart)
    to_eta = natural_map(cls, chart)

    def to_mu(th: Tensor) -> Tensor:
        return cls.mean_from_natural(to_eta(th))

    jac = jacfwd(to_eta)(t)
    hess_mu = jacfwd(jacfwd(to_mu))(t)  # [a, i, j]
    return torch.einsum("aij,ak->ijk", hess_mu, jac)


def alpha_connection(
    family: object, theta: object, alpha: float = 0.0, chart: Chart = "params"
) -> Tensor:
    r"""Amari's alpha-connection
    :math:`\Gamma^{(\alpha)} = \frac{1+\alpha}2\Gamma^{(e)} + \frac{1-\alpha}2\Gamma^{(m)}`.

    Equivalently :math:`\Gamma^{(\alpha)}_{ij,k} = \Gamma^{(0)}_{ij,k} - \frac\alpha2 T_{ijk}` with the
    Levi-Civita connection :math:`\Gamma^{(0)}` :cite:`amari2000methods`. ``alpha = 1`` is the
    e-connection, ``alpha = -1`` the m-connection.
    """
    a = as_tensor(alpha, "alpha")
    check_shape(a, "alpha", ())
    check_finite(a, "alpha")
    ge = e_connection(family, theta, chart)
    gm = m_connection(family, theta, chart)
    return 0.5 * (1 + a) * ge + 0.5 * (1 - a) * gm


def raise_index(gamma: Tensor, metric: Tensor) -> Tensor:
    r"""Christoffel symbols of the second kind: :math:`\Gamma^k_{ij} = g^{kl}\Gamma_{ij,l}`,
    returned as ``[k, i, j]``."""
    gamma = check_finite(as_tensor(gamma, "gamma"), "gamma")
    metric = check_finite(as_tensor(metric, "metric", dtype=gamma.dtype), "metric")
    d = metric.shape[-1]
    check_shape(metric, "metric", (d, d))
    check_shape(gamma, "gamma", (d, d, d))
    return torch.einsum("kl,ijl->kij", torch.linalg.inv(metric), gamma)


# ------------------------------------------------------------------------------ any metric
def _levi_civita(metric: Metric, theta: Tensor) -> Tensor:
    dg = jacfwd(metric)(theta)  # [j, k, i] = d_i g_jk
    d_i_gjk = dg.permute(2, 0, 1)  # [i, j, k]
    return 0.5 * (d_i_gjk + d_i_gjk.permute(1, 0, 2) - d_i_gjk.permute(1, 2, 0))


def levi_civita(metric: Metric, theta: object) -> Tensor:
    r"""Levi-Civita connection of a metric, first kind:
    :math:`\Gamma_{ij,k} = \tfrac12(\partial_ig_{jk} + \partial_jg_{ik} - \partial_kg_{ij})`.

    ``metric`` is a differentiable function ``theta -> (d, d)``; its derivatives come from
    :func:`torch.func.jacfwd`. Returns ``[i, j, k]`` :cite:`amari2000methods`.
    """
    t = check_finite(as_tensor(theta, "theta"), "theta")
    check_shape(t, "theta", (None,))
    metric_at(metric, t)
    return _levi_civita(metric, t)


def duality_defect(
    family: object, theta: object, alpha: float = 0.0, chart: Chart = "params"
) -> Tensor:
    r"""The residual :math:`\partial_kg_{ij} - \Gamma^{(\alpha)}_{ki,j} - \Gamma^{(-\alpha)}_{kj,i}`,
    shape ``[k, i, j]``.

    It vanishes identically: the alpha- and (-alpha)-connections are dual with respect to the
    Fisher metric :cite:`amari2000methods`. The metric derivative is taken by autograd of
    :func:`metric_function`, independently of the connection formulas.
    """
    cls = family_class(family)
    t = _point(cls, theta, chart)
    dg = jacfwd(metric_function(cls, chart))(t).permute(2, 0, 1)  # [k, i, j] = d_k g_ij
    ga = alpha_connection(cls, t, alpha, chart)
    gd = alpha_connection(cls, t, -float(alpha), chart)
    return dg - ga - gd.permute(0, 2, 1)


def gaussian_curvature(metric: Metric, theta: object) -> Tensor:
    r"""Gaussian curvature of a 2-D metric by Brioschi's formula (derivatives by autograd).

    With :math:`g = \begin{pmatrix}E&F\\F&G\end{pmatrix}` in coordinates :math:`(u, v)`,

    .. math::

        K = \frac{1}{(EG-F^2)^2}\left(\det\begin{pmatrix}
        -\tfrac12E_{vv}+F_{uv}-\tfrac12G_{uu} & \tfrac12E_u & F_u-\tfrac12E_v\\
        F_v-\tfrac12G_u & E & F\\ \tfrac12G_v & F & G\end{pmatrix}
        - \det\begin{pmatrix}0&\tfrac12E_v&\tfrac12G_u\\ \tfrac12E_v&E&F\\ \tfrac12G_u&F&G\end{pmatrix}\right),

    which depends on the metric alone (Gauss's *Theorema Egregium*) :cite:`docarmo1976differential`.
    """
    t = check_finite(as_tensor(theta, "theta"), "theta")
    check_shape(t, "theta", (2,))
    g = metric_at(metric, t)
    d1 = jacfwd(metric)(t)  # [a, b, c] = d_c g_ab
    d2 = jacfwd(jacfwd(metric))(t)  # [a, b, c, e] = d_c d_e g_ab
    e_, f_, g_ = g[0, 0], g[0, 1], g[1, 1]
    eu, ev = d1[0, 0, 0], d1[0, 0, 1]
    fu, fv = d1[0, 1, 0], d1[0, 1, 1]
    gu, gv = d1[1, 1, 0], d1[1, 1, 1]
    evv, fuv, guu = d2[0, 0, 1, 1], d2[0, 1, 0, 1], d2[1, 1, 0, 0]
    m1 = torch.stack(
        [
            torch.stack([-0.5 * evv + fuv - 0.5 * guu, 0.5 * eu, fu - 0.5 * ev]),
            torch.stack([fv - 0.5 * gu, e_, f_]),
            torch.stack([0.5 * gv, f_, g_]),
        ]
    )
    zero = torch.zeros((), dtype=t.dtype)
    m2 = torch.stack(
        [
            torch.stack([zero, 0.5 * ev, 0.5 * gu]),
            torch.stack([0.5 * ev, e_, f_]),
            torch.stack([0.5 * gu, f_, g_]),
        ]
    )
    return (torch.linalg.det(m1) - torch.linalg.det(m2)) / (e_ * g_ - f_**2) ** 2


def geodesic_acceleration(metric: Metric, theta: Tensor, velocity: Tensor) -> Tensor:
    r""":math:`\ddot\theta^k = -\Gamma^k_{ij}\dot\theta^i\dot\theta^j` for the Levi-Civita connection of ``metric``."""
    gamma = _levi_civita(metric, theta)
    return -torch.linalg.solve(metric(theta), torch.einsum("ijl,i,j->l", gamma, velocity, velocity))


def rk4_geodesic(
    acceleration: Callable[[Tensor, Tensor], Tensor],
    th: Tensor,
    v: Tensor,
    steps: int,
    t_end: float,
) -> tuple[Tensor, Tensor]:
    r"""Classical fourth-order Runge-Kutta for :math:`(\theta, v)' = (v, a(\theta, v))`, batched over rows.

    ``th`` and ``v`` are ``(B, d)``; ``acceleration`` is batched, ``(B, d), (B, d) -> (B, d)`` (for a
    geodesic :math:`a^k = -\Gamma^k_{ij}v^iv^j`, e.g. :func:`batched_acceleration`). Takes
    ``steps`` equal steps of size :math:`h = t_\mathrm{end}/\text{steps}` and returns the points
    and velocities, each ``(steps + 1, B, d)``; the global error is :math:`O(h^4)`
    :cite:`amari2000methods`. Raises :class:`ValueError` if the curve leaves the domain of the
    metric (a non-finite point). The arguments are trusted (callers validate them):
    :func:`integrate_geodesic` is the checked single-curve entry point.
    """
    h = t_end / steps
    xs, vs = [th], [v]
    for _ in range(steps):
        k1x, k1v = v, acceleration(th, v)
        k2x, k2v = v + 0.5 * h * k1v, acceleration(th + 0.5 * h * k1x, v + 0.5 * h * k1v)
        k3x, k3v = v + 0.5 * h * k2v, acceleration(th + 0.5 * h * k2x, v + 0.5 * h * k2v)
        k4x, k4v = v + h * k3v, acceleration(th + h * k3x, v + h * k3v)
        th = th + h / 6 * (k1x + 2 * k2x + 2 * k3x + k4x)
        v = v + h / 6 * (k1v + 2 * k2v + 2 * k3v + k4v)
        if not bool(torch.isfinite(th).all()):
            raise ValueError(
                "the geodesic left the domain of the metric (non-finite point): shorten t_end or the velocity"
            )
        xs.append(th)
        vs.append(v)
    return torch.stack(xs), torch.stack(vs)


def batched_acceleration(metric: Metric) -> Callable[[Tensor, Tensor], Tensor]:
    """:func:`geodesic_acceleration` of ``metric`` vectorized over rows ``(B, d)`` (by :func:`torch.func.vmap`)."""
    return vmap(lambda x, u: geodesic_acceleration(metric, x, u))


def integrate_geodesic(
    metric: Metric,
    theta0: object,
    velocity0: object,
    *,
    t_end: float = 1.0,
    steps: int = 200,
    acceleration: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    r"""Solve the geodesic equation :math:`\ddot\theta^k + \Gamma^k_{ij}\dot\theta^i\dot\theta^j = 0` by RK4.

    Starts at ``theta0`` with velocity ``velocity0`` and takes ``steps`` equal steps up to
    ``t_end``. Returns ``(points, velocities)``, each of shape ``(steps + 1, d)``. The Christoffel
    symbols are those of :func:`levi_civita` (autograd of ``metric``), unless ``acceleration``, a
    batched closed form ``(theta (B, d), v (B, d)) -> (B, d)`` of :math:`-\Gamma^k_{ij}v^iv^j`, is
    given. The speed :math:`\dot\theta^\top g\dot\theta` is conserved along the exact solution, so the
    length of the curve is :math:`t_\mathrm{end}\sqrt{\dot\theta_0^\top g(\theta_0)\dot\theta_0}`
    :cite:`amari2000methods`.
    """
    th = check_finite(as_tensor(theta0, "theta0"), "theta0")
    check_shape(th, "theta0", (None,))
    v = check_finite(as_tensor(velocity0, "velocity0", dtype=th.dtype), "velocity0")
    check_shape(v, "velocity0", (th.shape[0],))
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if not (isinstance(t_end, (int, float)) and t_end > 0):
        raise ValueError(f"t_end must be a number > 0, got {t_end!r}")
    metric_at(metric, th)
    acc = acceleration if acceleration is not None else batched_acceleration(metric)
    xs, vs = rk4_geodesic(acc, th.unsqueeze(0), v.unsqueeze(0), steps, float(t_end))
    return xs[:, 0], vs[:, 0]


def _flat_geodesic(
    family: object, p: object, q: object, num: int, flat: str, chart: Chart
) -> Tensor:
    cls = family_class(family)
    tp, tq = _point(cls, p, chart, "p"), _point(cls, q, chart, "q")
    if tp.shape != tq.shape:
        raise ValueError(
            f"p and q must have the same shape, got {tuple(tp.shape)} and {tuple(tq.shape)}"
        )
    if not isinstance(num, int) or isinstance(num, bool) or num < 2:
        raise ValueError(f"num must be an int >= 2, got {num!r}")
    to_eta = natural_map(cls, chart)
    s = torch.linspace(0, 1, num, dtype=tp.dtype).unsqueeze(-1)
    if flat == "e":
        etas = (1 - s) * to_eta(tp) + s * to_eta(tq)
    else:
        mu_p, mu_q = cls.mean_from_natural(to_eta(tp)), cls.mean_from_natural(to_eta(tq))
        etas = torch.stack([cls.natural_from_mean(m) for m in (1 - s) * mu_p + s * mu_q])
    if chart == "natural":
        return etas
    if chart == "mean":
        return torch.stack([cls.mean_from_natural(e) for e in etas])
    return torch.stack([cls.params_from_natural(e) for e in etas])


def e_geodesic(
    family: object, p: object, q: object, num: int = 101, chart: Chart = "params"
) -> Tensor:
    r"""Points of the e-geodesic from ``p`` to ``q``: :math:`\eta(s) = (1-s)\eta_p + s\eta_q`, in ``chart``.

    Its densities are the normalized geometric mixtures :math:`q_s\propto p^{1-s}q^s`; shape ``(num, d)``
    :cite:`amari2000methods`.
    """
    return _flat_geodesic(family, p, q, num, "e", chart)


def m_geodesic(
    family: object, p: object, q: object, num: int = 101, chart: Chart = "params"
) -> Tensor:
    r"""Points of the m-geodesic from ``p`` to ``q``: :math:`\mu(s) = (1-s)\mu_p + s\mu_q`, in ``chart``.

    Within the family it is the moment-matching path (for a full family such as the categorical,
    the mixtures :math:`(1-s)p + sq`); shape ``(num, d)`` :cite:`amari2000methods`.
    """
    return _flat_geodesic(family, p, q, num, "m", chart)
