r"""KL trust-region and KL-proximal natural-gradient steps on exponential families.

:func:`trust_region_step` scales the natural-gradient step to the KL ball of radius
:math:`\epsilon` and backtracks on the *exact* KL (TRPO, :cite:`schulman2015trust`);
:func:`kl_proximal_step` minimizes a linearized loss plus a KL penalty exactly, which agrees
with the natural-gradient step to second order and equals it (mirror descent) in the mean chart
:cite:`raskutti2015information`; :func:`kl_ball_steepest_descent` solves the KL-constrained
steepest-descent problem by brute force, without any Fisher matrix. Charts and losses are those
of :mod:`igbook.natgrad.families`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.func import hessian, jacrev

from igbook._validation import check_choice, check_integer, check_positive_real, check_scalar
from igbook.families import ExponentialFamily
from igbook.natgrad.core import trust_region_step_size
from igbook.natgrad.families import (
    Chart,
    Loss,
    checked_distribution,
    kl_between,
    loss_and_gradient,
    natural_gradient_at,
    start_point,
)

__all__ = ["TrustRegionStep", "trust_region_step", "kl_proximal_step", "kl_ball_steepest_descent"]


@dataclass(frozen=True)
class TrustRegionStep:
    r"""Outcome of :func:`trust_region_step`.

    ``quadratic_kl`` is :math:`\tfrac12 s^2 d^\top F d` for the accepted step length ``step``,
    ``exact_kl`` the true :math:`\mathrm{KL}(q_{\text{old}}\|q_{\text{new}})`.
    """

    dist: ExponentialFamily
    step: float
    quadratic_kl: float
    exact_kl: float
    loss_before: float
    loss_after: float
    backtracks: int
    accepted: bool


def trust_region_step(
    dist: ExponentialFamily,
    loss: Loss,
    which: str | Chart = "params",
    radius: float = 0.01,
    *,
    lr: float | None = None,
    damping: float = 0.0,
    shrink: float = 0.5,
    max_backtracks: int = 40,
    line_search: bool = True,
) -> TrustRegionStep:
    r"""A natural-gradient step held inside the KL ball
    :math:`\mathrm{KL}(q_{\text{old}}\|q_{\text{new}})\le\epsilon` (TRPO).

    The step length starts at :math:`s_0=\sqrt{2\epsilon/(g^\top F^{-1}g)}` (where the quadratic
    model of the KL equals :math:`\epsilon`, :func:`igbook.natgrad.core.trust_region_step_size`),
    capped by ``lr`` if given. With ``line_search`` it is multiplied by ``shrink`` until the
    step stays in the parameter space, the exact KL is at most :math:`\epsilon` and the loss
    decreases :cite:`schulman2015trust`. Without it, the quadratic step is taken as is, which
    is what fails for large :math:`\epsilon`; if that step leaves the parameter space the result
    has ``accepted=False`` and ``exact_kl = inf``.
    """
    radius = check_positive_real(radius, "radius")
    shrink = check_scalar(shrink, "shrink", low=0.0, high=1.0, closed_low=False, closed_high=False)
    max_backtracks = check_integer(max_backtracks, "max_backtracks", minimum=0)
    cls, ch, phi = start_point(dist, which)
    ng = natural_gradient_at(dist, loss, ch, damping=damping)
    d = ng.direction
    fisher = ng.fisher
    s = float(trust_region_step_size(fisher, d, radius))
    if lr is not None:
        s = min(s, check_positive_real(lr, "lr"))
    quad = 0.5 * float(d @ fisher @ d)
    theta0 = ch.to_params(phi)
    f0 = float(ng.value)
    for k in range(max_backtracks + 1):
        theta = ch.to_params(phi - s * d)
        if not line_search:
            try:
                new = checked_distribution(cls, theta, "the quadratic trust-region step")
            except ValueError:  # outside the parameter space: the exact KL is infinite
                return TrustRegionStep(dist, s, quad * s * s, math.inf, f0, math.inf, 0, False)
            ekl = float(kl_between(cls, theta0, theta))
            return TrustRegionStep(new, s, quad * s * s, ekl, f0, float(loss(theta)), 0, True)
        ok_domain = bool(torch.isfinite(theta).all())
        if ok_domain:
            try:
                cls.from_params(theta)
            except ValueError:
                ok_domain = False
        if ok_domain:
            ekl = float(kl_between(cls, theta0, theta))
            f1 = float(loss(theta))
            if math.isfinite(ekl) and ekl <= radius and math.isfinite(f1) and f1 < f0:
                return TrustRegionStep(
                    cls.from_params(theta), s, quad * s * s, ekl, f0, f1, k, True
                )
        s *= shrink
    return TrustRegionStep(dist, 0.0, 0.0, 0.0, f0, f0, max_backtracks, False)


def kl_proximal_step(
    dist: ExponentialFamily,
    loss: Loss,
    which: str | Chart = "params",
    lr: float = 0.1,
    *,
    kl_direction: str = "new_old",
    tol: float = 1e-10,
    max_iter: int = 100,
) -> ExponentialFamily:
    r"""The KL-proximal step: the exact minimizer of a linearized loss plus a KL penalty.

    .. math:: \phi_{t+1} = \arg\min_\phi\; \nabla_\phi L(\phi_t)^\top(\phi-\phi_t) + \frac1\rho\,D(\phi),

    with :math:`D = \mathrm{KL}(q_{\phi_t}\|q_\phi)` (``"old_new"``) or
    :math:`\mathrm{KL}(q_\phi\|q_{\phi_t})` (``"new_old"``), solved by damped Newton iterations
    (Hessians by :func:`torch.func.hessian`). Replacing :math:`D` by its quadratic model
    :math:`\tfrac12(\phi-\phi_t)^\top F(\phi-\phi_t)` gives the natural-gradient step, so the two
    agree to :math:`O(\rho^2)`. In the mean chart with ``"new_old"`` the penalty is the Bregman
    divergence of :math:`A^*`, and the step is *exactly* the natural-gradient step in natural
    coordinates (mirror descent, :cite:`raskutti2015information`).

    The KL term is not convex in every chart and may grow only logarithmically (in
    :math:`\sigma`, say) while the linear term decreases without bound, so for a large
    :math:`\rho` the problem can have no minimizer; the step then raises :class:`ValueError`.
    """
    lr = check_positive_real(lr, "lr")
    tol = check_positive_real(tol, "tol")
    check_choice(kl_direction, "kl_direction", ("old_new", "new_old"))
    max_iter = check_integer(max_iter, "max_iter", minimum=1)
    cls, ch, phi0 = start_point(dist, which)
    _, g = loss_and_gradient(loss, ch, phi0)
    theta0 = ch.to_params(phi0)

    def objective(phi: Tensor) -> Tensor:
        th = ch.to_params(phi)
        kl = (
            kl_between(cls, theta0, th)
            if kl_direction == "old_new"
            else kl_between(cls, th, theta0)
        )
        return g @ (phi - phi0) + kl / lr

    grad_j = jacrev(objective)
    hess_j = hessian(objective)
    phi = phi0.clone()
    j = float(objective(phi))
    for _ in range(max_iter):
        gj = grad_j(phi)
        if float(torch.linalg.vector_norm(gj)) <= tol * (1.0 + float(torch.linalg.vector_norm(g))):
            return checked_distribution(cls, ch.to_params(phi), "the proximal step")
        h = hess_j(phi)
        try:
            step = -torch.linalg.solve(h, gj)
        except RuntimeError:
            step = -gj
        if float(gj @ step) >= 0:  # not a descent direction: fall back to the gradient
            step = -gj
        t = 1.0
        for _ in range(60):
            cand = phi + t * step
            jc = float(objective(cand))
            # Armijo decrease, with a rounding allowance once Newton has (nearly) converged
            if math.isfinite(jc) and jc <= j + 1e-4 * t * float(gj @ step) + 1e-13 * (1.0 + abs(j)):
                break
            t *= 0.5
        else:
            raise ValueError("the proximal problem's line search failed; reduce lr")
        phi, j = cand, jc
    raise ValueError(
        f"the proximal step did not converge to tol={tol} in {max_iter} Newton iterations; for large lr the "
        "problem may have no minimizer near the current point (the KL can grow only logarithmically along "
        "a direction in which the linear term decreases without bound): reduce lr"
    )


def kl_ball_steepest_descent(
    dist: ExponentialFamily,
    loss: Loss,
    which: str | Chart = "params",
    radius: float = 1e-3,
    *,
    num: int = 2880,
    linearize: bool = True,
    kl_direction: str = "old_new",
) -> Tensor:
    r"""Brute-force solution of the KL-constrained steepest-descent problem in a 2-D chart.

    .. math:: d^\star = \arg\min_{d:\ \mathrm{KL}(q_\phi\|q_{\phi+d})\le\epsilon}\ \nabla L^\top d
       \quad(\text{or } L(\phi+d) \text{ when } \texttt{linearize=False}).

    For each of ``num`` directions :math:`u` the boundary radius :math:`r(u)` with *exact*
    :math:`\mathrm{KL} = \epsilon` is found by bisection (vectorized over directions), the
    objective is evaluated at :math:`r(u)u`, and the best boundary point is refined by a
    parabola through its neighbours. No Fisher matrix is used, so this is an independent check
    that :math:`d^\star/\|d^\star\| \to -F^{-1}\nabla L/\|F^{-1}\nabla L\|` as :math:`\epsilon\to0`.
    """
    radius = check_positive_real(radius, "radius")
    num = check_integer(num, "num", minimum=8)
    check_choice(kl_direction, "kl_direction", ("old_new", "new_old"))
    cls, ch, phi = start_point(dist, which)
    if phi.shape != (2,):
        raise ValueError(
            f"kl_ball_steepest_descent needs a 2-D chart, got {phi.shape[0]} coordinates"
        )
    theta0 = ch.to_params(phi)
    val0, g = loss_and_gradient(loss, ch, phi)

    def kl_at(points: Tensor) -> Tensor:
        def one(p: Tensor) -> Tensor:
            th = ch.to_params(p)
            return (
                kl_between(cls, theta0, th)
                if kl_direction == "old_new"
                else kl_between(cls, th, theta0)
            )

        out = torch.func.vmap(one)(points)
        return torch.where(torch.isfinite(out), out, torch.full_like(out, math.inf))

    def objective(points: Tensor) -> Tensor:
        if linearize:
            return (points - phi) @ g
        return torch.stack([loss(ch.to_params(p)) for p in points]) - val0

    def boundary(angles: Tensor) -> Tensor:
        u = torch.stack([torch.cos(angles), torch.sin(angles)], -1)
        hi = torch.full(angles.shape, math.sqrt(radius) * 1e-3 + 1e-12, dtype=phi.dtype)
        for _ in range(200):  # grow until outside the ball (KL -> inf at the domain's edge)
            inside = kl_at(phi + hi.unsqueeze(-1) * u) < radius
            if not bool(inside.any()):
                break
            hi = torch.where(inside, 2 * hi, hi)
        lo = torch.zeros_like(hi)
        for _ in range(80):
            mid = 0.5 * (lo + hi)
            inside = kl_at(phi + mid.unsqueeze(-1) * u) < radius
            lo, hi = torch.where(inside, mid, lo), torch.where(inside, hi, mid)
        return phi + lo.unsqueeze(-1) * u

    angles = torch.linspace(0, 2 * math.pi, num + 1, dtype=phi.dtype)[:-1]
    pts = boundary(angles)
    vals = objective(pts)
    k = int(torch.argmin(vals))
    step = 2 * math.pi / num
    a3 = torch.tensor([angles[k] - step, angles[k], angles[k] + step], dtype=phi.dtype)
    v3 = objective(boundary(a3))
    denom = float(v3[0] - 2 * v3[1] + v3[2])
    shift = 0.5 * float(v3[0] - v3[2]) / denom if denom > 0 else 0.0
    best = boundary((a3[1] + max(-1.0, min(1.0, shift)) * step).reshape(1))[0]
    return best - phi
