r"""Mirror maps, Bregman divergences, mirror descent and exponentiated gradient.

A *mirror map* is a strictly convex, differentiable potential :math:`\phi` on a convex set
whose gradient :math:`\nabla\phi` maps the primal point :math:`x` to a dual point
:math:`y = \nabla\phi(x)`, inverted by the gradient of the convex conjugate,
:math:`x = \nabla\phi^*(y)`. Its Bregman divergence is

.. math::

    B_\phi(x\,\|\,y) = \phi(x) - \phi(y) - \nabla\phi(y)^\top(x - y) \;\ge 0,

and the mirror-descent step :cite:`nemirovski1983problem,beck2003mirror`

.. math::

    x_{t+1} = \arg\min_x\; \nabla f(x_t)^\top x + \frac1{\rho}B_\phi(x\,\|\,x_t)
    \quad\Longleftrightarrow\quad
    \nabla\phi(x_{t+1}) = \nabla\phi(x_t) - \rho\,\nabla f(x_t)

is a gradient step taken in the dual coordinates. With :math:`\phi = \tfrac12\|x\|^2` it is
gradient descent; with the negative entropy on the simplex it is the exponentiated gradient
algorithm :cite:`kivinen1997exponentiated`; with :math:`\phi = A^*`, the convex conjugate of
an exponential family's log-partition, its Bregman divergence is the KL divergence and the
step is natural-gradient descent in the natural parameters :cite:`raskutti2015information`:

.. math::

    \eta_{t+1} = \eta_t - \rho\,\nabla_\mu f(\mu_t) = \eta_t - \rho\,F(\eta_t)^{-1}\nabla_\eta f.

:func:`natural_gradient_descent_natural` computes the right-hand side independently (Fisher
matrix and gradient by automatic differentiation of :math:`A`), so that the identity can be
checked step by step.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from igbook._validation import (
    as_tensor,
    check_finite,
    check_integer,
    check_nonempty,
    check_positive_real,
    check_simplex,
    check_symmetric_positive_definite,
)
from igbook.families import ExponentialFamily
from igbook.natgrad.core import natural_gradient

__all__ = [
    "MirrorMap",
    "EuclideanMap",
    "QuadraticMap",
    "NegativeEntropy",
    "ExponentialFamilyMap",
    "bregman_divergence",
    "mirror_step",
    "mirror_descent",
    "proximal_objective",
    "exponentiated_gradient_step",
    "exponentiated_gradient",
    "project_simplex",
    "projected_gradient_descent",
    "natural_gradient_descent_natural",
]

LearningRate = float | Callable[[int], float] | Sequence[float]


def _lr_at(lr: LearningRate, t: int) -> float:
    if callable(lr):
        value = lr(t)
    elif isinstance(lr, (int, float)) and not isinstance(lr, bool):
        value = lr
    else:
        try:
            value = lr[t]  # type: ignore[index]
        except IndexError:
            raise ValueError(
                f"lr has no step size for step {t} (a sequence of length {len(lr)})"
            ) from None  # type: ignore[arg-type]
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(
            f"lr must be a finite number > 0 (or give one at every step), got {value!r} at step {t}"
        )
    return float(value)


# =============================================================================================
class MirrorMap(ABC):
    r"""A strictly convex potential :math:`\phi` with its gradient map and the inverse map.

    Subclasses give :meth:`potential` (:math:`\phi`), :meth:`to_dual` (:math:`\nabla\phi`),
    :meth:`to_primal` (:math:`\nabla\phi^*`, the inverse of :meth:`to_dual`) and
    :meth:`check_primal`; the conjugate, the Bregman divergence and the mirror step follow.
    The maps are pure tensor functions (no validation), differentiable by :mod:`torch.func`.
    """

    @abstractmethod
    def potential(self, x: Tensor) -> Tensor:
        r""":math:`\phi(x)`, a scalar tensor."""

    @abstractmethod
    def to_dual(self, x: Tensor) -> Tensor:
        r""":math:`\nabla\phi(x)`: primal point to dual point."""

    @abstractmethod
    def to_primal(self, y: Tensor) -> Tensor:
        r""":math:`\nabla\phi^*(y)`: dual point back to the primal domain."""

    @abstractmethod
    def check_primal(self, x: Tensor, name: str = "x") -> Tensor:
        """Convert and validate a primal point (raise :class:`ValueError` naming ``name``)."""

    def check_dual(self, y: Tensor, name: str = "y") -> Tensor:
        """Raise :class:`ValueError` unless ``y`` is a valid dual point (the image of the domain
        under :meth:`to_dual`)."""
        return check_finite(y, name)

    def conjugate(self, y: Tensor) -> Tensor:
        r"""Convex conjugate :math:`\phi^*(y) = y^\top x - \phi(x)` at :math:`x = \nabla\phi^*(y)`."""
        x = self.to_primal(y)
        return y @ x - self.potential(x)

    def bregman(self, x: Tensor, y: Tensor) -> Tensor:
        r"""Bregman divergence :math:`B_\phi(x\|y) = \phi(x) - \phi(y) - \nabla\phi(y)^\top(x-y)`."""
        return self.potential(x) - self.potential(y) - self.to_dual(y) @ (x - y)

    def step(self, x: Tensor, grad: Tensor, lr: float) -> Tensor:
        r"""One mirror-descent step :math:`\nabla\phi^*(\nabla\phi(x) - \rho g)` (see :func:`mirror_step`)."""
        return mirror_step(self, x, grad, lr)


class EuclideanMap(MirrorMap):
    r""":math:`\phi(x) = \tfrac12\|x\|^2` on :math:`\mathbb R^d`: mirror descent is gradient descent,
    and :math:`B_\phi(x\|y) = \tfrac12\|x-y\|^2`."""

    def potential(self, x: Tensor) -> Tensor:
        return 0.5 * (x @ x)

    def to_dual(self, x: Tensor) -> Tensor:
        return x

    def to_primal(self, y: Tensor) -> Tensor:
        return y

    def check_primal(self, x: Tensor, name: str = "x") -> Tensor:
        x = check_finite(as_tensor(x, name), name)
        if x.ndim != 1:
            raise ValueError(f"{name} must be a flat vector, got shape {tuple(x.shape)}")
        return x


class QuadraticMap(MirrorMap):
    r""":math:`\phi(x) = \tfrac12 x^\top M x` with :math:`M` symmetric positive definite.

    Mirror descent is preconditioned gradient descent :math:`x \leftarrow x - \rho M^{-1}g`,
    i.e. natural-gradient descent for a constant metric :math:`M`.
    """

    def __init__(self, matrix: Tensor) -> None:
        m = as_tensor(matrix, "matrix")
        check_symmetric_positive_definite(m, "matrix")
        self.matrix = 0.5 * (m + m.T)
        self._chol = torch.linalg.cholesky(self.matrix)

    def potential(self, x: Tensor) -> Tensor:
        return 0.5 * (x @ self.matrix @ x)

    def to_dual(self, x: Tensor) -> Tensor:
        return self.matrix @ x

    def to_primal(self, y: Tensor) -> Tensor:
        return torch.cholesky_solve(y.unsqueeze(-1), self._chol).squeeze(-1)

    def check_primal(self, x: Tensor, name: str = "x") -> Tensor:
        x = check_finite(as_tensor(x, name, dtype=self.matrix.dtype), name)
        if x.shape != (self.matrix.shape[0],):
            raise ValueError(
                f"{name} must have shape ({self.matrix.shape[0]},), got {tuple(x.shape)}"
            )
        return x


class NegativeEntropy(MirrorMap):
    r"""Negative entropy :math:`\phi(x) = \sum_k x_k\log x_k` on the interior of the simplex.

    Dual coordinates are log-probabilities, :math:`\nabla\phi(x) = 1 + \log x` (defined up to a
    constant on the simplex), and :math:`\nabla\phi^*(y) = \mathrm{softmax}(y)`. The Bregman
    divergence on the simplex is :math:`\mathrm{KL}(x\|y) = \sum_k x_k\log(x_k/y_k)` and mirror
    descent is the exponentiated-gradient update :math:`x_k \propto x_k e^{-\rho g_k}`
    :cite:`kivinen1997exponentiated,beck2003mirror`.
    """

    def potential(self, x: Tensor) -> Tensor:
        return (x * torch.log(x)).sum()

    def to_dual(self, x: Tensor) -> Tensor:
        return 1.0 + torch.log(x)

    def to_primal(self, y: Tensor) -> Tensor:
        return torch.softmax(y, -1)

    def conjugate(self, y: Tensor) -> Tensor:
        r"""On the simplex :math:`\phi^*(y) = \sup_{x\in\Delta} y^\top x - \phi(x) = \log\sum_k e^{y_k}`."""
        return torch.logsumexp(y, -1)

    def check_primal(self, x: Tensor, name: str = "x") -> Tensor:
        x = as_tensor(x, name)
        if x.ndim != 1:
            raise ValueError(
                f"{name} must be a flat probability vector, got shape {tuple(x.shape)}"
            )
        return check_simplex(x, name, atol=1e-9)


class ExponentialFamilyMap(MirrorMap):
    r"""The mirror map of an exponential family: :math:`\phi = A^*` on mean parameters.

    Primal points are mean parameters :math:`\mu`, dual points are natural parameters
    :math:`\eta = \nabla A^*(\mu)`, :math:`\nabla\phi^* = \nabla A`, and
    :math:`B_{A^*}(\mu_p\|\mu_q) = \mathrm{KL}(q_{\mu_p}\|q_{\mu_q})`. Mirror descent with this
    map is natural-gradient descent in natural parameters :cite:`raskutti2015information`.
    With ``coordinates="natural"`` the roles swap: :math:`\phi = A` on natural parameters and
    :math:`B_A(\eta_p\|\eta_q) = \mathrm{KL}(q_{\eta_q}\|q_{\eta_p})`.

    Parameters
    ----------
    family
        A class from :mod:`igbook.families`, e.g. ``Categorical``. For ``Categorical`` pass an
        instance (the number of categories fixes the dimension); any instance works.
    coordinates
        ``"mean"`` (default) or ``"natural"``.
    """

    def __init__(
        self, family: type[ExponentialFamily] | ExponentialFamily, coordinates: str = "mean"
    ) -> None:
        if isinstance(family, ExponentialFamily):
            self.family: type[ExponentialFamily] = type(family)
        elif isinstance(family, type) and issubclass(family, ExponentialFamily):
            self.family = family
        else:
            raise TypeError(
                f"family must be an ExponentialFamily class or instance, got {family!r}"
            )
        if coordinates not in ("mean", "natural"):
            raise ValueError(f"coordinates must be 'mean' or 'natural', got {coordinates!r}")
        self.coordinates = coordinates

    def potential(self, x: Tensor) -> Tensor:
        if self.coordinates == "mean":
            return self.family.convex_conjugate(x)
        return self.family.log_partition(x)

    def to_dual(self, x: Tensor) -> Tensor:
        if self.coordinates == "mean":
            return self.family.natural_from_mean(x)
        return self.family.mean_from_natural(x)

    def to_primal(self, y: Tensor) -> Tensor:
        if self.coordinates == "mean":
            return self.family.mean_from_natural(y)
        return self.family.natural_from_mean(y)

    def conjugate(self, y: Tensor) -> Tensor:
        if self.coordinates == "mean":
            return self.family.log_partition(y)
        return self.family.convex_conjugate(y)

    def bregman(self, x: Tensor, y: Tensor) -> Tensor:
        if self.coordinates == "mean":
            return self.family.bregman_mean(x, y)
        return self.family.bregman_natural(x, y)

    def check_dual(self, y: Tensor, name: str = "y") -> Tensor:
        check_finite(y, name)
        try:
            if self.coordinates == "mean":
                self.family.check_natural(y)
            else:
                self.family.check_mean(y)
        except ValueError as exc:
            other = "natural" if self.coordinates == "mean" else "mean"
            raise ValueError(
                f"{name} is not a valid {other} parameter of {self.family.__name__}: {exc}"
            ) from exc
        return y

    def check_primal(self, x: Tensor, name: str = "x") -> Tensor:
        x = check_finite(as_tensor(x, name), name)
        if x.ndim != 1:
            raise ValueError(f"{name} must be a flat parameter vector, got shape {tuple(x.shape)}")
        try:
            if self.coordinates == "mean":
                self.family.check_mean(x)
            else:
                self.family.check_natural(x)
        except ValueError as exc:
            raise ValueError(
                f"{name} is not a valid {self.coordinates} parameter of {self.family.__name__}: {exc}"
            ) from exc
        return x


# =============================================================================================
def bregman_divergence(potential: Callable[[Tensor], Tensor], x: Tensor, y: Tensor) -> Tensor:
    r"""Bregman divergence of any differentiable convex ``potential``, gradient by autograd.

    .. math:: B_\phi(x\|y) = \phi(x) - \phi(y) - \nabla\phi(y)^\top(x - y).

    An independent reference for the closed forms of :class:`MirrorMap` subclasses.
    """
    x = check_finite(as_tensor(x, "x"), "x")
    y = check_finite(as_tensor(y, "y", dtype=x.dtype), "y")
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(
            f"x and y must be flat vectors of the same shape, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    g = torch.func.grad(potential)(y)
    return potential(x) - potential(y) - g @ (x - y)


def mirror_step(mirror_map: MirrorMap, x: Tensor, grad: Tensor, lr: float) -> Tensor:
    r"""One mirror-descent step :math:`x^+ = \nabla\phi^*\big(\nabla\phi(x) - \rho\,g\big)`.

    It is the unique minimizer of :func:`proximal_objective`,
    :math:`g^\top u + \rho^{-1}B_\phi(u\|x)` :cite:`beck2003mirror`.

    Parameters
    ----------
    mirror_map
        The potential :math:`\phi`.
    x
        Current primal point (validated by ``mirror_map.check_primal``).
    grad
        Gradient :math:`g = \nabla f(x)` in the primal coordinates, same shape as ``x``.
    lr
        Step size :math:`\rho > 0`.
    """
    if not isinstance(mirror_map, MirrorMap):
        raise TypeError(f"mirror_map must be a MirrorMap, got {type(mirror_map).__name__}")
    x = mirror_map.check_primal(x, "x")
    grad = check_finite(as_tensor(grad, "grad", dtype=x.dtype), "grad")
    if grad.shape != x.shape:
        raise ValueError(f"grad must have the shape of x {tuple(x.shape)}, got {tuple(grad.shape)}")
    rho = _lr_at(lr, 0)
    y = mirror_map.to_dual(x) - rho * grad
    try:
        mirror_map.check_dual(y, "the dual point after the step")
    except ValueError as exc:
        raise ValueError(f"the step left the domain of the mirror map ({exc}); reduce lr") from exc
    return mirror_map.to_primal(y)


def proximal_objective(
    mirror_map: MirrorMap, x: Tensor, grad: Tensor, lr: float
) -> Callable[[Tensor], Tensor]:
    r"""The function :math:`u \mapsto g^\top u + \rho^{-1} B_\phi(u\|x)` that a mirror step minimizes.

    Its gradient :math:`g + \rho^{-1}(\nabla\phi(u) - \nabla\phi(x))` vanishes exactly at
    :func:`mirror_step`, which a reader can check with :func:`torch.func.grad`.
    """
    x = mirror_map.check_primal(x, "x")
    grad = check_finite(as_tensor(grad, "grad", dtype=x.dtype), "grad")
    rho = _lr_at(lr, 0)

    def objective(u: Tensor) -> Tensor:
        return grad @ u + mirror_map.bregman(u, x) / rho

    return objective


def mirror_descent(
    mirror_map: MirrorMap,
    grad_fn: Callable[[Tensor], Tensor],
    x0: Tensor,
    lr: LearningRate,
    steps: int,
) -> Tensor:
    r"""Run ``steps`` mirror-descent steps from ``x0``; return the iterates, shape ``(steps + 1, d)``.

    ``grad_fn(x)`` returns :math:`\nabla f(x)` in primal coordinates; ``lr`` is a constant
    :math:`\rho`, a callable ``t -> rho_t`` or a sequence. A non-finite iterate raises
    :class:`ValueError` (a step size too large for the domain).
    """
    if not isinstance(mirror_map, MirrorMap):
        raise TypeError(f"mirror_map must be a MirrorMap, got {type(mirror_map).__name__}")
    if not callable(lr) and not isinstance(lr, Sequence):
        check_positive_real(lr, "lr")  # a number (a schedule is checked at each step)
    steps = check_integer(steps, "steps", minimum=0)
    x = mirror_map.check_primal(x0, "x0")
    out = [x]
    for t in range(steps):
        g = check_finite(as_tensor(grad_fn(x), "grad_fn(x)", dtype=x.dtype), "grad_fn(x)")
        if g.shape != x.shape:
            raise ValueError(f"grad_fn(x) must have shape {tuple(x.shape)}, got {tuple(g.shape)}")
        y = mirror_map.to_dual(x) - _lr_at(lr, t) * g
        try:
            mirror_map.check_dual(y, "the dual point")
        except ValueError as exc:
            raise ValueError(
                f"mirror descent left the domain at step {t + 1} ({exc}): reduce lr"
            ) from exc
        x = mirror_map.to_primal(y)
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"mirror descent left the domain at step {t + 1}: reduce lr")
        out.append(x)
    return torch.stack(out)


def exponentiated_gradient_step(x: Tensor, grad: Tensor, lr: float) -> Tensor:
    r"""Exponentiated gradient :math:`x_k \leftarrow x_k e^{-\rho g_k} / \sum_j x_j e^{-\rho g_j}`.

    The mirror step of :class:`NegativeEntropy`, computed in log space for stability
    :cite:`kivinen1997exponentiated`.
    """
    x = NegativeEntropy().check_primal(x, "x")
    grad = check_finite(as_tensor(grad, "grad", dtype=x.dtype), "grad")
    if grad.shape != x.shape:
        raise ValueError(f"grad must have the shape of x {tuple(x.shape)}, got {tuple(grad.shape)}")
    return torch.softmax(torch.log(x) - _lr_at(lr, 0) * grad, -1)


def exponentiated_gradient(
    grad_fn: Callable[[Tensor], Tensor], x0: Tensor, lr: LearningRate, steps: int
) -> Tensor:
    """Iterates of exponentiated gradient from ``x0`` on the simplex, shape ``(steps + 1, K)``."""
    return mirror_descent(NegativeEntropy(), grad_fn, x0, lr, steps)


def project_simplex(v: Tensor) -> Tensor:
    r"""Euclidean projection onto the probability simplex, :math:`\arg\min_{x\in\Delta}\|x - v\|`.

    The sort-based algorithm of :cite:t:`duchi2008efficient`: with :math:`u` sorted in
    decreasing order and :math:`k` the largest index with
    :math:`u_k > (\sum_{j\le k}u_j - 1)/k`, the projection is :math:`\max(v - \theta, 0)` for
    :math:`\theta = (\sum_{j\le k}u_j - 1)/k`. Works on the last axis of a batch.
    """
    v = check_finite(as_tensor(v, "v"), "v")
    if v.ndim == 0:
        raise ValueError("v must have at least one axis")
    check_nonempty(v, "v", axis=-1)
    u, _ = torch.sort(v, dim=-1, descending=True)
    css = torch.cumsum(u, -1) - 1.0
    k = torch.arange(1, v.shape[-1] + 1, dtype=v.dtype)
    cond = u - css / k > 0
    rho = cond.to(v.dtype).cumsum(-1).argmax(-1, keepdim=True)  # last True (cond is a prefix)
    theta = css.gather(-1, rho) / (rho + 1).to(v.dtype)
    return torch.clamp(v - theta, min=0.0)


def projected_gradient_descent(
    grad_fn: Callable[[Tensor], Tensor], x0: Tensor, lr: LearningRate, steps: int
) -> Tensor:
    r"""Euclidean projected gradient descent on the simplex, :math:`x \leftarrow \Pi_\Delta(x - \rho g)`.

    Iterates may reach the boundary (exact zeros), unlike :func:`exponentiated_gradient`.
    Returns shape ``(steps + 1, K)``.
    """
    if not callable(lr) and not isinstance(lr, Sequence):
        check_positive_real(lr, "lr")  # a number (a schedule is checked at each step)
    steps = check_integer(steps, "steps", minimum=0)
    x = check_simplex(as_tensor(x0, "x0"), "x0", atol=1e-9, interior=False)
    out = [x]
    for t in range(steps):
        g = check_finite(as_tensor(grad_fn(x), "grad_fn(x)", dtype=x.dtype), "grad_fn(x)")
        if g.shape != x.shape:
            raise ValueError(f"grad_fn(x) must have shape {tuple(x.shape)}, got {tuple(g.shape)}")
        x = project_simplex(x - _lr_at(lr, t) * g)
        out.append(x)
    return torch.stack(out)


def natural_gradient_descent_natural(
    family: type[ExponentialFamily] | ExponentialFamily,
    loss_of_mean: Callable[[Tensor], Tensor],
    eta0: Tensor,
    lr: LearningRate,
    steps: int,
) -> Tensor:
    r"""Natural-gradient descent in natural parameters, with every derivative by autograd.

    .. math::

        \eta_{t+1} = \eta_t - \rho_t\,F(\eta_t)^{-1}\nabla_\eta\big[f(\nabla A(\eta))\big]_{\eta_t},
        \qquad F(\eta) = \nabla^2 A(\eta),

    where the loss is given as a function of the mean parameter, :math:`f(\mu)`. The mean map
    :math:`\nabla A`, the Fisher matrix :math:`\nabla^2 A` and the gradient are all computed by
    :mod:`torch.func` from the log-partition alone, so that this is an independent check of
    mirror descent with :class:`ExponentialFamilyMap` :cite:`raskutti2015information`.
    Returns the natural-parameter iterates, shape ``(steps + 1, d)``.
    """
    fam = type(family) if isinstance(family, ExponentialFamily) else family
    if not (isinstance(fam, type) and issubclass(fam, ExponentialFamily)):
        raise TypeError(f"family must be an ExponentialFamily class or instance, got {family!r}")
    if not callable(lr) and not isinstance(lr, Sequence):
        check_positive_real(lr, "lr")  # a number (a schedule is checked at each step)
    steps = check_integer(steps, "steps", minimum=0)
    eta = check_finite(as_tensor(eta0, "eta0"), "eta0")
    if eta.ndim != 1:
        raise ValueError(f"eta0 must be a flat vector, got shape {tuple(eta.shape)}")
    try:
        fam.check_natural(eta)
    except ValueError as exc:
        raise ValueError(f"eta0 is not a valid natural parameter: {exc}") from exc
    mean_map = torch.func.grad(fam.log_partition)
    fisher = torch.func.hessian(fam.log_partition)
    objective = torch.func.grad(lambda e: loss_of_mean(mean_map(e)))
    out = [eta]
    for t in range(steps):
        eta = eta - _lr_at(lr, t) * natural_gradient(fisher(eta), objective(eta))
        try:
            fam.check_natural(eta)
        except ValueError as exc:
            raise ValueError(
                f"natural-gradient descent left the natural parameter space at step {t + 1} ({exc}): reduce lr"
            ) from exc
        out.append(eta)
    return torch.stack(out)
