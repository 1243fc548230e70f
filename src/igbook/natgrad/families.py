r"""Natural-gradient descent on the exponential families of :mod:`igbook.families`, in any coordinates.

A *chart* is a coordinate system :math:`\phi` on a family together with the map
:math:`\theta = g(\phi)` to the family's usual coordinates. The Fisher information in the chart
is the pull-back :math:`F_\phi = J^\top F_\theta J` with :math:`J = \partial\theta/\partial\phi`
(:func:`igbook.fisher.density.reparameterized_fisher`), and a natural-gradient step

.. math:: \phi_{t+1} = \phi_t - \rho\,F_\phi(\phi_t)^{-1}\nabla_\phi L(\phi_t)

moves the *distribution* to the same place, to first order in :math:`\rho`, whatever the chart
:cite:`amari1998natural,martens2020new`; a Euclidean step
:math:`\phi_{t+1} = \phi_t - \rho\nabla_\phi L` does not. Charts provided by name:

==============  ======================================================  ==========================
name            coordinates                                             families
==============  ======================================================  ==========================
``params``      the usual coordinates (``p``, ``(mu, sigma)``, ...)      all
``natural``     :math:`\eta`                                            all
``mean``        :math:`\mu = \mathbb E[T(x)]`                           all
``log_sigma``   :math:`(\mu, \log\sigma)`                               Gaussian
``variance``    :math:`(\mu, \sigma^2)`                                 Gaussian
``log_rate``    :math:`\log\lambda`                                     Poisson, Exponential
==============  ======================================================  ==========================

Losses are functions of the usual coordinates :math:`\theta` (so that the same loss can be
pulled back to every chart); :func:`kl_loss` builds the two KL objectives. The KL trust region
follows TRPO :cite:`schulman2015trust`: the step is scaled so that the quadratic model
:math:`\tfrac12 d^\top F d` equals the radius, then shortened until the *exact* KL is within the
radius and the loss decreases.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.func import hessian, jacrev, jvp, vjp

from igbook._validation import as_tensor, check_finite
from igbook.families import Exponential, ExponentialFamily, Gaussian, Poisson
from igbook.fisher import pullback_metric, reparameterized_fisher
from igbook.natgrad.core import natural_gradient, trust_region_step_size

__all__ = [
    "Chart",
    "chart",
    "chart_names",
    "submanifold_chart",
    "kl_between",
    "kl_loss",
    "fisher_in_chart",
    "fisher_vector_product",
    "NaturalGradient",
    "natural_gradient_at",
    "natural_step",
    "euclidean_step",
    "approximate_step",
    "APPROXIMATIONS",
    "TrustRegionStep",
    "trust_region_step",
    "kl_proximal_step",
    "kl_ball_steepest_descent",
    "Trajectory",
    "descend",
    "iterations_to_tolerance",
    "best_learning_rate",
]

Loss = Callable[[Tensor], Tensor]


# ------------------------------------------------------------------------------------------
# charts
@dataclass(frozen=True)
class Chart:
    r"""A coordinate system :math:`\phi` on a family: ``to_params`` (:math:`\phi\mapsto\theta`) and ``from_params``.

    Both maps must be pure, differentiable tensor functions of a flat 1-D tensor. A chart may
    cover a sub-manifold (fewer coordinates than the family has parameters); then ``to_params``
    is an immersion and the pulled-back Fisher is the metric induced on the sub-manifold.
    """

    name: str
    to_params: Callable[[Tensor], Tensor]
    from_params: Callable[[Tensor], Tensor]
    description: str = ""


def _family_cls(family: type[ExponentialFamily] | ExponentialFamily) -> type[ExponentialFamily]:
    cls = family if isinstance(family, type) else type(family)
    if not (isinstance(cls, type) and issubclass(cls, ExponentialFamily)):
        raise TypeError(f"family must be an igbook.families class or distribution, got {family!r}")
    return cls


def chart_names(family: type[ExponentialFamily] | ExponentialFamily) -> tuple[str, ...]:
    """Names of the built-in charts of ``family``."""
    cls = _family_cls(family)
    names = ["params", "natural", "mean"]
    if issubclass(cls, Gaussian):
        names += ["log_sigma", "variance"]
    if issubclass(cls, (Poisson, Exponential)):
        names += ["log_rate"]
    return tuple(names)


def chart(family: type[ExponentialFamily] | ExponentialFamily, name: str | Chart) -> Chart:
    """The built-in chart ``name`` of ``family`` (a :class:`Chart` passes through unchanged)."""
    if isinstance(name, Chart):
        return name
    cls = _family_cls(family)
    if not isinstance(name, str):
        raise TypeError(f"chart must be a name or a Chart, got {type(name).__name__}")
    if name not in chart_names(cls):
        raise ValueError(f"unknown chart {name!r} for {cls.__name__}; choose one of {chart_names(cls)}")
    if name == "params":
        return Chart("params", lambda p: p, lambda t: t, "usual coordinates")
    if name == "natural":
        return Chart("natural", cls.params_from_natural, cls.natural_from_params, "natural parameter eta")
    if name == "mean":
        return Chart(
            "mean",
            lambda m: cls.params_from_natural(cls.natural_from_mean(m)),
            lambda t: cls.mean_from_natural(cls.natural_from_params(t)),
            "mean parameter E[T(x)]",
        )
    if name == "log_sigma":
        return Chart(
            "log_sigma",
            lambda p: torch.stack([p[0], torch.exp(p[1])]),
            lambda t: torch.stack([t[0], torch.log(t[1])]),
            "(mu, log sigma)",
        )
    if name == "variance":
        return Chart(
            "variance",
            lambda p: torch.stack([p[0], torch.sqrt(p[1])]),
            lambda t: torch.stack([t[0], t[1] ** 2]),
            "(mu, sigma^2)",
        )
    # log_rate
    return Chart("log_rate", torch.exp, torch.log, "log rate")


def submanifold_chart(base_params: Tensor, free: Sequence[int], name: str = "sub") -> Chart:
    r"""Chart of the sub-manifold where only the usual coordinates ``free`` vary, the others fixed at ``base_params``.

    E.g. the Gaussians with known :math:`\sigma_0`: ``submanifold_chart([0., sigma0], [0])``;
    its pulled-back Fisher is :math:`1/\sigma_0^2`.
    """
    base = check_finite(as_tensor(base_params, "base_params"), "base_params")
    if base.ndim != 1:
        raise ValueError(f"base_params must be 1-D, got shape {tuple(base.shape)}")
    idx = list(free)
    if not idx or any(not isinstance(i, int) or isinstance(i, bool) for i in idx):
        raise TypeError("free must be a non-empty sequence of int indices")
    if len(set(idx)) != len(idx) or min(idx) < 0 or max(idx) >= base.shape[0]:
        raise ValueError(f"free must hold distinct indices in [0, {base.shape[0]}), got {idx}")
    index = torch.tensor(idx)

    def to_params(phi: Tensor) -> Tensor:
        return base.to(phi.dtype).index_put((index,), phi)

    def from_params(theta: Tensor) -> Tensor:
        return theta[index]

    return Chart(name, to_params, from_params, f"coordinates {idx} free, others fixed")


def _validated(cls: type[ExponentialFamily], theta: Tensor, what: str) -> ExponentialFamily:
    try:
        if not bool(torch.isfinite(theta).all()):
            raise ValueError("the coordinates map to non-finite parameters")
        return cls.from_params(theta.detach())
    except ValueError as exc:
        raise ValueError(f"{what} left the parameter space of {cls.__name__}: {exc}") from exc


def _start(dist: ExponentialFamily, which: str | Chart) -> tuple[type[ExponentialFamily], Chart, Tensor]:
    if not isinstance(dist, ExponentialFamily):
        raise TypeError(f"dist must be a distribution of igbook.families, got {type(dist).__name__}")
    cls = type(dist)
    ch = chart(cls, which)
    phi = ch.from_params(dist.params).detach()
    return cls, ch, phi


# ------------------------------------------------------------------------------------------
# KL and losses
def kl_between(family: type[ExponentialFamily] | ExponentialFamily, theta_p: Tensor, theta_q: Tensor) -> Tensor:
    r""":math:`\mathrm{KL}(q_{\theta_p}\|q_{\theta_q})` in the Bregman form of the log-partition; pure and differentiable.

    .. math:: \mathrm{KL} = A(\eta_q) - A(\eta_p) - (\eta_q-\eta_p)^\top\nabla A(\eta_p),

    with :math:`\eta = \eta(\theta)` in the usual coordinates. No validation (it is traced by
    :mod:`torch.func`); outside the parameter space the result is not finite.
    """
    cls = _family_cls(family)
    ep, eq = cls.natural_from_params(theta_p), cls.natural_from_params(theta_q)
    return cls.log_partition(eq) - cls.log_partition(ep) - (eq - ep) @ cls.mean_from_natural(ep)


def kl_loss(target: ExponentialFamily, *, reverse: bool = False) -> Loss:
    r"""Loss :math:`\theta\mapsto\mathrm{KL}(p^*\|q_\theta)` (``reverse=False``: fitting by maximum likelihood) or :math:`\mathrm{KL}(q_\theta\|p^*)`.

    The forward KL equals the expected negative log-likelihood under the target minus its
    entropy; in natural coordinates its gradient is :math:`\mu(\eta)-\mu^*` and its Hessian is
    the Fisher matrix, so natural-gradient descent on it with step 1 is Newton's method.
    """
    if not isinstance(target, ExponentialFamily):
        raise TypeError(f"target must be a distribution of igbook.families, got {type(target).__name__}")
    cls, tp = type(target), target.params

    if reverse:
        def loss(theta: Tensor) -> Tensor:
            return kl_between(cls, theta, tp.to(theta.dtype))
    else:
        def loss(theta: Tensor) -> Tensor:
            return kl_between(cls, tp.to(theta.dtype), theta)

    return loss


def _local(cls: type[ExponentialFamily], ch: Chart, phi: Tensor, loss: Loss, *, fisher: bool
           ) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    r"""Loss value, gradient, usual parameters and (optionally) the pulled-back Fisher at ``phi``.

    One small autograd graph gives :math:`\nabla_\phi L` and the rows of
    :math:`J=\partial\theta/\partial\phi`; the Fisher is :math:`J^\top F_\theta J` with the
    family's closed-form :math:`F_\theta` (:func:`igbook.fisher.density.pullback_metric`).
    """
    with torch.enable_grad():
        p = phi.detach().clone().requires_grad_(True)
        theta = ch.to_params(p)
        val = loss(theta)
        if not isinstance(val, Tensor) or val.ndim != 0:
            raise ValueError("loss must return a scalar tensor")
        (g,) = torch.autograd.grad(val, p, retain_graph=fisher)
        f_phi = None
        if fisher:
            rows = [torch.autograd.grad(theta[i], p, retain_graph=True, allow_unused=True)[0]
                    for i in range(theta.shape[0])]
            jac = torch.stack([torch.zeros_like(p) if r is None else r for r in rows])
    val, g, theta = val.detach(), g.detach(), theta.detach()
    if not (bool(torch.isfinite(val)) and bool(torch.isfinite(g).all())):
        raise ValueError("the loss or its gradient is not finite at this point")
    if fisher:
        f_theta = _validated(cls, theta, "the point").fisher()
        f_phi = pullback_metric(f_theta, jac)
    return val, g, theta, f_phi


def _value_and_grad(loss: Loss, ch: Chart, phi: Tensor) -> tuple[Tensor, Tensor]:
    with torch.enable_grad():
        p = phi.detach().clone().requires_grad_(True)
        val = loss(ch.to_params(p))
        if not isinstance(val, Tensor) or val.ndim != 0:
            raise ValueError("loss must return a scalar tensor")
        (g,) = torch.autograd.grad(val, p)
    val, g = val.detach(), g.detach()
    if not (bool(torch.isfinite(val)) and bool(torch.isfinite(g).all())):
        raise ValueError("the loss or its gradient is not finite at this point")
    return val, g


# ------------------------------------------------------------------------------------------
# Fisher in a chart
def fisher_in_chart(dist: ExponentialFamily, which: str | Chart = "params") -> Tensor:
    r"""Fisher information of ``dist`` in the chart, :math:`F_\phi = J^\top F_\theta J` (closed-form :math:`F_\theta`)."""
    cls, ch, phi = _start(dist, which)
    return reparameterized_fisher(lambda th: cls.from_params(th).fisher(), ch.to_params, phi)


def fisher_vector_product(dist: ExponentialFamily, which: str | Chart = "params") -> Callable[[Tensor], Tensor]:
    r"""Matrix-free :math:`v\mapsto J^\top F_\theta (J v)` in the chart, by one ``jvp`` and one ``vjp``.

    For :func:`igbook.natgrad.core.natural_gradient_cg`; the Fisher in the chart is never formed.
    """
    cls, ch, phi = _start(dist, which)
    f_theta = cls.from_params(ch.to_params(phi)).fisher()
    _, pullback = vjp(ch.to_params, phi)

    def fvp(v: Tensor) -> Tensor:
        v = as_tensor(v, "v", dtype=phi.dtype)
        if v.shape != phi.shape:
            raise ValueError(f"v must have shape {tuple(phi.shape)}, got {tuple(v.shape)}")
        _, jv = jvp(ch.to_params, (phi,), (v,))
        (out,) = pullback(f_theta @ jv)
        return out

    return fvp


@dataclass(frozen=True)
class NaturalGradient:
    """Everything about the natural gradient at one point of a chart."""

    chart: str
    coords: Tensor
    value: Tensor
    grad: Tensor
    fisher: Tensor
    direction: Tensor

    @property
    def squared_fisher_norm(self) -> Tensor:
        r""":math:`g^\top F^{-1} g`, twice the quadratic KL of a unit natural step."""
        return self.grad @ self.direction


def natural_gradient_at(dist: ExponentialFamily, loss: Loss, which: str | Chart = "params", *,
                        damping: float = 0.0) -> NaturalGradient:
    r"""Gradient, Fisher and natural gradient :math:`(F_\phi+\lambda I)^{-1}\nabla_\phi L` at ``dist`` in the chart."""
    cls, ch, phi = _start(dist, which)
    val, g, _, f = _local(cls, ch, phi, loss, fisher=True)
    assert f is not None
    if f.shape != (g.shape[0], g.shape[0]):
        raise ValueError(f"the chart gives a gradient of length {g.shape[0]} but a Fisher of shape {tuple(f.shape)}")
    return NaturalGradient(ch.name, phi, val, g, f, natural_gradient(f, g, damping))


def natural_step(dist: ExponentialFamily, loss: Loss, which: str | Chart = "params", lr: float = 0.1, *,
                 damping: float = 0.0) -> ExponentialFamily:
    r"""One step :math:`\phi - \rho(F_\phi+\lambda I)^{-1}\nabla_\phi L`, returned as a distribution."""
    lr = _pos(lr, "lr")
    ng = natural_gradient_at(dist, loss, which, damping=damping)
    ch = chart(type(dist), which)
    return _validated(type(dist), ch.to_params(ng.coords - lr * ng.direction), "the natural step")


def euclidean_step(dist: ExponentialFamily, loss: Loss, which: str | Chart = "params", lr: float = 0.1) -> ExponentialFamily:
    r"""One gradient-descent step :math:`\phi - \rho\nabla_\phi L` in the chart, returned as a distribution."""
    lr = _pos(lr, "lr")
    cls, ch, phi = _start(dist, which)
    _, g = _value_and_grad(loss, ch, phi)
    return _validated(cls, ch.to_params(phi - lr * g), "the gradient step")


#: the approximations of :func:`approximate_step`
APPROXIMATIONS = ("diagonal_fisher", "adam_first_step")


def approximate_step(dist: ExponentialFamily, loss: Loss, which: str | Chart = "params", lr: float = 0.1, *,
                     method: str = "diagonal_fisher", eps: float = 0.0) -> ExponentialFamily:
    r"""One step of a cheap approximation of the natural gradient in the chart, as a distribution.

    ``method="diagonal_fisher"``: :math:`\phi - \rho\,\nabla_\phi L / (\operatorname{diag}F_\phi + \epsilon)`,
    the diagonal of the Fisher in place of the whole matrix (what diagonal K-FAC-like and
    EWC-like methods keep). ``method="adam_first_step"``: :math:`\phi - \rho\,\nabla_\phi L /
    (|\nabla_\phi L| + \epsilon)`, Adam's first step from zero moments (bias-corrected), a sign step.

    Neither is a natural-gradient step, and neither transforms as a tangent vector: computed in
    two charts and mapped to the same distribution space, the steps differ already at first order
    in :math:`\rho` (for the diagonal Fisher unless the chart's Fisher is diagonal), while exact
    natural steps agree to second order (:func:`natural_step`).
    """
    lr = _pos(lr, "lr")
    if method not in APPROXIMATIONS:
        raise ValueError(f"method must be one of {APPROXIMATIONS}, got {method!r}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (eps >= 0 and math.isfinite(eps)):
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    cls, ch, phi = _start(dist, which)
    if method == "diagonal_fisher":
        _, g, _, f = _local(cls, ch, phi, loss, fisher=True)
        assert f is not None
        den = f.diagonal() + eps
    else:
        _, g = _value_and_grad(loss, ch, phi)
        den = g.abs() + eps
    if not bool((den > 0).all()):
        raise ValueError(f"the {method} preconditioner has a zero entry: pass eps > 0")
    return _validated(cls, ch.to_params(phi - lr * g / den), f"the {method} step")


def _pos(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if not value > 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be finite and > 0, got {value}")
    return float(value)


# ------------------------------------------------------------------------------------------
# trust region and proximal steps
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


def trust_region_step(dist: ExponentialFamily, loss: Loss, which: str | Chart = "params", radius: float = 0.01, *,
                      lr: float | None = None, damping: float = 0.0, shrink: float = 0.5, max_backtracks: int = 40,
                      line_search: bool = True) -> TrustRegionStep:
    r"""A natural-gradient step held inside the KL ball :math:`\mathrm{KL}(q_{\text{old}}\|q_{\text{new}})\le\epsilon` (TRPO).

    The step length starts at :math:`s_0=\sqrt{2\epsilon/(g^\top F^{-1}g)}` (where the quadratic
    model of the KL equals :math:`\epsilon`, :func:`igbook.natgrad.core.trust_region_step_size`),
    capped by ``lr`` if given. With ``line_search`` it is multiplied by ``shrink`` until the
    step stays in the parameter space, the exact KL is at most :math:`\epsilon` and the loss
    decreases :cite:`schulman2015trust`. Without it, the quadratic step is taken as is, which
    is what fails for large :math:`\epsilon`; if that step leaves the parameter space the result
    has ``accepted=False`` and ``exact_kl = inf``.
    """
    radius = _pos(radius, "radius")
    if not 0 < shrink < 1:
        raise ValueError(f"shrink must lie in (0, 1), got {shrink}")
    if isinstance(max_backtracks, bool) or not isinstance(max_backtracks, int) or max_backtracks < 0:
        raise ValueError(f"max_backtracks must be an int >= 0, got {max_backtracks!r}")
    cls, ch, phi = _start(dist, which)
    ng = natural_gradient_at(dist, loss, ch, damping=damping)
    d = ng.direction
    fisher = ng.fisher
    s = float(trust_region_step_size(fisher, d, radius))
    if lr is not None:
        s = min(s, _pos(lr, "lr"))
    quad = 0.5 * float(d @ fisher @ d)
    theta0 = ch.to_params(phi)
    f0 = float(ng.value)
    for k in range(max_backtracks + 1):
        theta = ch.to_params(phi - s * d)
        if not line_search:
            try:
                new = _validated(cls, theta, "the quadratic trust-region step")
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
                return TrustRegionStep(cls.from_params(theta), s, quad * s * s, ekl, f0, f1, k, True)
        s *= shrink
    return TrustRegionStep(dist, 0.0, 0.0, 0.0, f0, f0, max_backtracks, False)


def kl_proximal_step(dist: ExponentialFamily, loss: Loss, which: str | Chart = "params", lr: float = 0.1, *,
                     kl_direction: str = "new_old", tol: float = 1e-10, max_iter: int = 100) -> ExponentialFamily:
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
    lr = _pos(lr, "lr")
    tol = _pos(tol, "tol")
    if kl_direction not in ("old_new", "new_old"):
        raise ValueError(f"kl_direction must be 'old_new' or 'new_old', got {kl_direction!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be an int >= 1, got {max_iter!r}")
    cls, ch, phi0 = _start(dist, which)
    _, g = _value_and_grad(loss, ch, phi0)
    theta0 = ch.to_params(phi0)

    def objective(phi: Tensor) -> Tensor:
        th = ch.to_params(phi)
        kl = kl_between(cls, theta0, th) if kl_direction == "old_new" else kl_between(cls, th, theta0)
        return g @ (phi - phi0) + kl / lr

    grad_j = jacrev(objective)
    hess_j = hessian(objective)
    phi = phi0.clone()
    j = float(objective(phi))
    for _ in range(max_iter):
        gj = grad_j(phi)
        if float(torch.linalg.vector_norm(gj)) <= tol * (1.0 + float(torch.linalg.vector_norm(g))):
            return _validated(cls, ch.to_params(phi), "the proximal step")
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


def kl_ball_steepest_descent(dist: ExponentialFamily, loss: Loss, which: str | Chart = "params", radius: float = 1e-3, *,
                             num: int = 2880, linearize: bool = True, kl_direction: str = "old_new") -> Tensor:
    r"""Brute-force solution of the KL-constrained steepest-descent problem in a 2-D chart.

    .. math:: d^\star = \arg\min_{d:\ \mathrm{KL}(q_\phi\|q_{\phi+d})\le\epsilon}\ \nabla L^\top d
       \quad(\text{or } L(\phi+d) \text{ when } \texttt{linearize=False}).

    For each of ``num`` directions :math:`u` the boundary radius :math:`r(u)` with *exact*
    :math:`\mathrm{KL} = \epsilon` is found by bisection (vectorized over directions), the
    objective is evaluated at :math:`r(u)u`, and the best boundary point is refined by a
    parabola through its neighbours. No Fisher matrix is used, so this is an independent check
    that :math:`d^\star/\|d^\star\| \to -F^{-1}\nabla L/\|F^{-1}\nabla L\|` as :math:`\epsilon\to0`.
    """
    radius = _pos(radius, "radius")
    if isinstance(num, bool) or not isinstance(num, int) or num < 8:
        raise ValueError(f"num must be an int >= 8, got {num!r}")
    if kl_direction not in ("old_new", "new_old"):
        raise ValueError(f"kl_direction must be 'old_new' or 'new_old', got {kl_direction!r}")
    cls, ch, phi = _start(dist, which)
    if phi.shape != (2,):
        raise ValueError(f"kl_ball_steepest_descent needs a 2-D chart, got {phi.shape[0]} coordinates")
    theta0 = ch.to_params(phi)
    val0, g = _value_and_grad(loss, ch, phi)

    def kl_at(points: Tensor) -> Tensor:
        def one(p: Tensor) -> Tensor:
            th = ch.to_params(p)
            return kl_between(cls, theta0, th) if kl_direction == "old_new" else kl_between(cls, th, theta0)
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


# ------------------------------------------------------------------------------------------
# descent loops
@dataclass(frozen=True)
class Trajectory:
    r"""A descent run: coordinates in its chart, usual parameters, losses and per-step KL.

    ``step_kl[t]`` is :math:`\mathrm{KL}(q_t\|q_{t+1})` (exact); ``backtracks[t]`` the number of
    trust-region reductions (0 without a trust region).
    """

    family: type[ExponentialFamily]
    chart: str
    method: str
    lr: float
    coords: Tensor
    params: Tensor
    losses: Tensor
    step_kl: Tensor
    backtracks: Tensor

    @property
    def steps(self) -> int:
        return int(self.losses.shape[0]) - 1

    def distributions(self) -> list[ExponentialFamily]:
        """Every iterate as a distribution."""
        return [self.family.from_params(p) for p in self.params]


def descend(start: ExponentialFamily, loss: Loss, which: str | Chart = "params", *, method: str = "natural",
            lr: float = 0.1, steps: int = 100, damping: float = 0.0, trust_radius: float | None = None,
            stop_below: float | None = None, max_loss: float | None = None) -> Trajectory:
    r"""Run natural-gradient (``method="natural"``) or gradient (``"euclidean"``) descent in a chart.

    .. math:: \phi_{t+1} = \phi_t - \rho\,P_t\nabla_\phi L(\phi_t),\qquad P_t = (F_\phi(\phi_t)+\lambda I)^{-1}\ \text{or}\ I.

    With ``trust_radius`` (natural only) each step is :func:`trust_region_step` with the step
    length capped by ``lr``. Stops early once the loss is at most ``stop_below``; raises
    :class:`ValueError` if the loss exceeds ``max_loss`` (divergence). A step that
    leaves the parameter space (e.g. :math:`\sigma\le0` after a large Euclidean step) raises
    :class:`ValueError` saying which step and suggesting a smaller ``lr``.
    """
    if method not in ("natural", "euclidean"):
        raise ValueError(f"method must be 'natural' or 'euclidean', got {method!r}")
    lr = _pos(lr, "lr")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    if trust_radius is not None:
        trust_radius = _pos(trust_radius, "trust_radius")
        if method != "natural":
            raise ValueError("trust_radius applies to method='natural' only")
    cls, ch, phi = _start(start, which)
    natural = method == "natural"
    dist = start
    val, g, theta, f = _local(cls, ch, phi, loss, fisher=natural and trust_radius is None)
    coords, params, losses, kls, backs = [phi], [theta], [val], [], []
    for t in range(steps):
        if stop_below is not None and float(losses[-1]) <= stop_below:
            break
        if trust_radius is not None:
            res = trust_region_step(dist, loss, ch, trust_radius, lr=lr, damping=damping)
            if not res.accepted:  # no step inside the ball decreases the loss: converged
                break
            dist, nb = res.dist, res.backtracks
            new_theta = dist.params
            new_phi = ch.from_params(new_theta).detach()
            new_val = torch.as_tensor(res.loss_after, dtype=phi.dtype)
        else:
            direction = natural_gradient(f, g, damping) if natural else g  # type: ignore[arg-type]
            new_phi = phi - lr * direction
            try:
                new_val, g, new_theta, f = _local(cls, ch, new_phi, loss, fisher=natural)
                _validated(cls, new_theta, "the step")
            except ValueError as exc:
                raise ValueError(f"step {t + 1} of {method} descent in the {ch.name!r} chart with lr={lr:g}: {exc}; "
                                 "use a smaller lr or a trust region") from exc
            nb = 0
        if max_loss is not None and not float(new_val) <= max_loss:
            raise ValueError(f"step {t + 1} of {method} descent in the {ch.name!r} chart with lr={lr:g}: the loss "
                             f"{float(new_val):.4g} exceeds max_loss={max_loss:g} (diverging); use a smaller lr")
        kls.append(kl_between(cls, theta, new_theta).detach())
        phi, theta = new_phi, new_theta
        coords.append(phi)
        params.append(theta)
        losses.append(new_val)
        backs.append(nb)
    dt = phi.dtype
    return Trajectory(
        cls, ch.name, method, lr,
        torch.stack(coords), torch.stack(params), torch.stack(losses),
        torch.stack(kls) if kls else torch.zeros(0, dtype=dt),
        torch.tensor(backs, dtype=torch.int64),
    )


def iterations_to_tolerance(losses: Tensor | Trajectory, tol: float) -> int | None:
    """First iteration at which the loss is at most ``tol`` (``None`` if never)."""
    tol = _pos(tol, "tol")
    values = losses.losses if isinstance(losses, Trajectory) else check_finite(as_tensor(losses, "losses"), "losses")
    hit = torch.nonzero(values <= tol)
    return int(hit[0]) if hit.numel() else None


def best_learning_rate(start: ExponentialFamily, loss: Loss, which: str | Chart = "params", *, method: str = "euclidean",
                       lrs: Sequence[float] = (2.0, 1.0, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001),
                       steps: int = 1000, tol: float = 1e-8) -> tuple[float | None, int | None]:
    """The learning rate from ``lrs`` that reaches ``loss <= tol`` in the fewest iterations, and that number.

    ``lrs`` are tried from the largest down. Runs that leave the parameter space, diverge (loss
    above 100 times its start) or do not reach ``tol`` within ``steps`` are skipped; the scan
    stops at the first successful rate whose successor needs more iterations (smaller steps
    only slow gradient descent down once it is stable). ``(None, None)`` if no rate succeeds.
    This makes a fair, tuned baseline for gradient descent, whose best step size depends on the
    chart and on the starting point.
    """
    tol = _pos(tol, "tol")
    if not lrs:
        raise ValueError("lrs must hold at least one learning rate")
    rates = sorted((_pos(lr, "lrs entry") for lr in lrs), reverse=True)
    cls, ch, phi = _start(start, which)
    loss0 = float(_value_and_grad(loss, ch, phi)[0])
    best: tuple[float | None, int | None] = (None, None)
    for lr in rates:
        try:
            tr = descend(start, loss, ch, method=method, lr=lr, steps=steps, stop_below=tol,
                         max_loss=100.0 * abs(loss0) + 1.0)
        except ValueError:
            continue
        it = iterations_to_tolerance(tr, tol)
        if it is None:
            continue
        if best[1] is not None and it >= best[1]:
            break
        best = (lr, it)
    return best
