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

The trust-region and proximal steps are in ``igbook.natgrad.trust_region``, the descent
loops in ``igbook.natgrad.loops``; :mod:`igbook.natgrad` re-exports all three.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.func import jvp, vjp

from igbook._validation import (
    as_tensor,
    check_choice,
    check_finite,
    check_nonnegative_real,
    check_positive_real,
)
from igbook.families import Exponential, ExponentialFamily, Gaussian, Poisson, family_class
from igbook.fisher import pullback_metric, reparameterized_fisher
from igbook.natgrad.core import natural_gradient

__all__ = [
    "Chart",
    "chart",
    "chart_names",
    "submanifold_chart",
    "kl_between",
    "kl_loss",
    "start_point",
    "checked_distribution",
    "local_model",
    "loss_and_gradient",
    "fisher_in_chart",
    "fisher_vector_product",
    "NaturalGradient",
    "natural_gradient_at",
    "natural_step",
    "euclidean_step",
    "approximate_step",
    "APPROXIMATIONS",
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


def chart_names(family: type[ExponentialFamily] | ExponentialFamily) -> tuple[str, ...]:
    """Names of the built-in charts of ``family``."""
    cls = family_class(family)
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
    cls = family_class(family)
    if not isinstance(name, str):
        raise TypeError(f"chart must be a name or a Chart, got {type(name).__name__}")
    if name not in chart_names(cls):
        raise ValueError(
            f"unknown chart {name!r} for {cls.__name__}; choose one of {chart_names(cls)}"
        )
    if name == "params":
        return Chart("params", lambda p: p, lambda t: t, "usual coordinates")
    if name == "natural":
        return Chart(
            "natural", cls.params_from_natural, cls.natural_from_params, "natural parameter eta"
        )
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


def checked_distribution(
    cls: type[ExponentialFamily], theta: Tensor, what: str
) -> ExponentialFamily:
    """The distribution of ``cls`` at usual coordinates ``theta``, or :class:`ValueError` saying
    that ``what`` (a step, a point) left the parameter space (:cite:t:`amari2016information`)."""
    try:
        if not bool(torch.isfinite(theta).all()):
            raise ValueError("the coordinates map to non-finite parameters")
        return cls.from_params(theta.detach())
    except ValueError as exc:
        raise ValueError(f"{what} left the parameter space of {cls.__name__}: {exc}") from exc


def start_point(
    dist: ExponentialFamily, which: str | Chart
) -> tuple[type[ExponentialFamily], Chart, Tensor]:
    r"""``(family, chart, phi)`` for a step from ``dist`` in the chart ``which``: the checked
    starting point of every step and loop, :math:`\phi = \phi(\theta)` detached
    (:cite:t:`amari1998natural`)."""
    if not isinstance(dist, ExponentialFamily):
        raise TypeError(
            f"dist must be a distribution of igbook.families, got {type(dist).__name__}"
        )
    cls = type(dist)
    ch = chart(cls, which)
    phi = ch.from_params(dist.params).detach()
    return cls, ch, phi


# ------------------------------------------------------------------------------------------
# KL and losses
def kl_between(
    family: type[ExponentialFamily] | ExponentialFamily, theta_p: Tensor, theta_q: Tensor
) -> Tensor:
    r""":math:`\mathrm{KL}(q_{\theta_p}\|q_{\theta_q})` in the Bregman form of the log-partition; pure and
    differentiable.

    .. math:: \mathrm{KL} = A(\eta_q) - A(\eta_p) - (\eta_q-\eta_p)^\top\nabla A(\eta_p),

    with :math:`\eta = \eta(\theta)` in the usual coordinates. No validation (it is traced by
    :mod:`torch.func`); outside the parameter space the result is not finite.
    """
    cls = family_class(family)
    ep, eq = cls.natural_from_params(theta_p), cls.natural_from_params(theta_q)
    return cls.log_partition(eq) - cls.log_partition(ep) - (eq - ep) @ cls.mean_from_natural(ep)


def kl_loss(target: ExponentialFamily, *, reverse: bool = False) -> Loss:
    r"""Loss :math:`\theta\mapsto\mathrm{KL}(p^*\|q_\theta)` (``reverse=False``: fitting by maximum likelihood) or
    :math:`\mathrm{KL}(q_\theta\|p^*)`.

    The forward KL equals the expected negative log-likelihood under the target minus its
    entropy; in natural coordinates its gradient is :math:`\mu(\eta)-\mu^*` and its Hessian is
    the Fisher matrix, so natural-gradient descent on it with step 1 is Newton's method.
    """
    if not isinstance(target, ExponentialFamily):
        raise TypeError(
            f"target must be a distribution of igbook.families, got {type(target).__name__}"
        )
    cls, tp = type(target), target.params

    if reverse:

        def loss(theta: Tensor) -> Tensor:
            return kl_between(cls, theta, tp.to(theta.dtype))
    else:

        def loss(theta: Tensor) -> Tensor:
            return kl_between(cls, tp.to(theta.dtype), theta)

    return loss


def local_model(
    cls: type[ExponentialFamily], ch: Chart, phi: Tensor, loss: Loss, *, fisher: bool
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
            rows = [
                torch.autograd.grad(theta[i], p, retain_graph=True, allow_unused=True)[0]
                for i in range(theta.shape[0])
            ]
            jac = torch.stack([torch.zeros_like(p) if r is None else r for r in rows])
    val, g, theta = val.detach(), g.detach(), theta.detach()
    if not (bool(torch.isfinite(val)) and bool(torch.isfinite(g).all())):
        raise ValueError("the loss or its gradient is not finite at this point")
    if fisher:
        f_theta = checked_distribution(cls, theta, "the point").fisher()
        f_phi = pullback_metric(f_theta, jac)
    return val, g, theta, f_phi


def loss_and_gradient(loss: Loss, ch: Chart, phi: Tensor) -> tuple[Tensor, Tensor]:
    r"""Loss value and gradient :math:`(L(\theta(\phi)), \nabla_\phi L)` at ``phi`` of chart ``ch``,
    detached; :class:`ValueError` if either is not finite (:cite:t:`amari1998natural`)."""
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
    r"""Fisher information of ``dist`` in the chart, :math:`F_\phi = J^\top F_\theta J` (closed-form
    :math:`F_\theta`)."""
    cls, ch, phi = start_point(dist, which)
    return reparameterized_fisher(lambda th: cls.from_params(th).fisher(), ch.to_params, phi)


def fisher_vector_product(
    dist: ExponentialFamily, which: str | Chart = "params"
) -> Callable[[Tensor], Tensor]:
    r"""Matrix-free :math:`v\mapsto J^\top F_\theta (J v)` in the chart, by one ``jvp`` and one ``vjp``.

    For :func:`igbook.natgrad.core.natural_gradient_cg`; the Fisher in the chart is never formed.
    """
    cls, ch, phi = start_point(dist, which)
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


def natural_gradient_at(
    dist: ExponentialFamily, loss: Loss, which: str | Chart = "params", *, damping: float = 0.0
) -> NaturalGradient:
    r"""Gradient, Fisher and natural gradient :math:`(F_\phi+\lambda I)^{-1}\nabla_\phi L` at ``dist`` in the chart."""
    cls, ch, phi = start_point(dist, which)
    val, g, _, f = local_model(cls, ch, phi, loss, fisher=True)
    assert f is not None
    if f.shape != (g.shape[0], g.shape[0]):
        raise ValueError(
            f"the chart gives a gradient of length {g.shape[0]} but a Fisher of shape {tuple(f.shape)}"
        )
    return NaturalGradient(ch.name, phi, val, g, f, natural_gradient(f, g, damping))


def natural_step(
    dist: ExponentialFamily,
    loss: Loss,
    which: str | Chart = "params",
    lr: float = 0.1,
    *,
    damping: float = 0.0,
) -> ExponentialFamily:
    r"""One step :math:`\phi - \rho(F_\phi+\lambda I)^{-1}\nabla_\phi L`, returned as a distribution."""
    lr = check_positive_real(lr, "lr")
    ng = natural_gradient_at(dist, loss, which, damping=damping)
    ch = chart(type(dist), which)
    return checked_distribution(
        type(dist), ch.to_params(ng.coords - lr * ng.direction), "the natural step"
    )


def euclidean_step(
    dist: ExponentialFamily, loss: Loss, which: str | Chart = "params", lr: float = 0.1
) -> ExponentialFamily:
    r"""One gradient-descent step :math:`\phi - \rho\nabla_\phi L` in the chart, returned as a distribution."""
    lr = check_positive_real(lr, "lr")
    cls, ch, phi = start_point(dist, which)
    _, g = loss_and_gradient(loss, ch, phi)
    return checked_distribution(cls, ch.to_params(phi - lr * g), "the gradient step")


#: the approximations of :func:`approximate_step`
APPROXIMATIONS = ("diagonal_fisher", "adam_first_step")


def approximate_step(
    dist: ExponentialFamily,
    loss: Loss,
    which: str | Chart = "params",
    lr: float = 0.1,
    *,
    method: str = "diagonal_fisher",
    eps: float = 0.0,
) -> ExponentialFamily:
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
    lr = check_positive_real(lr, "lr")
    check_choice(method, "method", APPROXIMATIONS)
    eps = check_nonnegative_real(eps, "eps")
    cls, ch, phi = start_point(dist, which)
    if method == "diagonal_fisher":
        _, g, _, f = local_model(cls, ch, phi, loss, fisher=True)
        assert f is not None
        den = f.diagonal() + eps
    else:
        _, g = loss_and_gradient(loss, ch, phi)
        den = g.abs() + eps
    if not bool((den > 0).all()):
        raise ValueError(f"the {method} preconditioner has a zero entry: pass eps > 0")
    return checked_distribution(cls, ch.to_params(phi - lr * g / den), f"the {method} step")
