r"""Projection methods: Fisher-orthogonal projected natural gradient descent (FOPNG).

:class:`FOPNG` takes natural-gradient steps projected to be Fisher-orthogonal to stored
old-task gradients :cite:`garg2026fisher`; :func:`fopng_direction` is the projection itself
on flat vectors with diagonal Fishers, which come from the curvature core
(:func:`igbook.continual.importance.diagonal_fisher`, the empirical Fisher of each task).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from igbook._validation import (
    check_count,
    check_nonnegative_real,
    check_positive_real,
    check_scalar,
)
from igbook.continual.importance import diagonal_fisher, named_params, restrict_logits
from igbook.continual.learner import Active, ContinualLearner
from igbook.continual.streams import Task

__all__ = ["fopng_direction", "FOPNG"]


def fopng_direction(
    grad: Tensor,
    directions: Tensor,
    fisher_old: Tensor,
    fisher_new: Tensor,
    *,
    damping: float = 0.0,
    variant: str = "exact",
    rcond: float = 1e-10,
) -> Tensor:
    r"""The FOPNG natural direction :math:`F_{\mathrm{new}}^{-1}Pg` (diagonal Fishers, flat vectors).

    FOPNG :cite:`garg2026fisher` solves

    .. math::

        \min_v\ g^\top v\quad\text{s.t.}\quad \tfrac12 v^\top F_{\mathrm{new}}v\le\epsilon,\qquad
        G^\top F_{\mathrm{old}}\,v = 0,

    i.e. the steepest descent in the Fisher metric of the current task among the updates
    that are Fisher-orthogonal (in the old tasks' metric) to the stored old-task gradients
    :math:`G` (columns). The Lagrangian gives :math:`v\propto -F_{\mathrm{new}}^{-1}Pg` with

    .. math::

        Pg = g - F_{\mathrm{old}}G\,A^{+}\,G^\top F_{\mathrm{old}}F_{\mathrm{new}}^{-1}g,
        \qquad A = G^\top F_{\mathrm{old}}F_{\mathrm{new}}^{-1}F_{\mathrm{old}}G

    (``variant="exact"``, computed stably as an orthogonal projection in whitened coordinates;
    the constraint holds to rounding error, and :math:`g^\top F_{\mathrm{new}}^{-1}Pg\ge 0`, so the
    step always descends). The authors' code (``FOPNGMethod``) writes
    :math:`G^\top F_{\mathrm{old}}g` in place of :math:`G^\top F_{\mathrm{old}}F_{\mathrm{new}}^{-1}g` and adds
    ``damping`` to :math:`A` (``variant="reference_code"``: only that code is known to use this
    formula, so the variant is named after it; the former name ``"paper"`` still works and emits a
    :class:`DeprecationWarning`). The two agree when :math:`F_{\mathrm{new}} = I`. Otherwise that direction
    violates the constraint, changes under a rescaling :math:`F_{\mathrm{new}}\to cF_{\mathrm{new}}`
    (which leaves the constrained problem unchanged), and need not be a descent direction.

    Parameters
    ----------
    grad
        Gradient :math:`g`, shape ``(P,)``.
    directions
        :math:`G`, shape ``(P, k)`` (``k = 0`` allowed: plain natural gradient).
    fisher_old, fisher_new
        Diagonal Fishers, shape ``(P,)``, :math:`\geq 0`.
    damping
        :math:`\lambda\geq 0` added to :math:`F_{\mathrm{new}}` (and, for ``"reference_code"``, to :math:`A`).
    variant
        ``"exact"`` or ``"reference_code"`` (``"paper"``: deprecated alias of ``"reference_code"``).
    rcond
        Relative cut-off of the pseudo-inverse.
    """
    variant = _fopng_variant(variant)
    if grad.ndim != 1:
        raise ValueError(f"grad must be a flat vector, got shape {tuple(grad.shape)}")
    p = grad.shape[0]
    if directions.ndim != 2 or directions.shape[0] != p:
        raise ValueError(f"directions must have shape ({p}, k), got {tuple(directions.shape)}")
    for name, f in (("fisher_old", fisher_old), ("fisher_new", fisher_new)):
        if f.shape != grad.shape:
            raise ValueError(f"{name} must have shape {tuple(grad.shape)}, got {tuple(f.shape)}")
        if not bool((f >= 0).all()) or not bool(torch.isfinite(f).all()):
            raise ValueError(f"{name} must be finite and >= 0 (a diagonal Fisher)")
    check_nonnegative_real(damping, "damping")
    fn = fisher_new + damping
    if not bool((fn > 0).all()):
        raise ValueError("fisher_new + damping must be > 0 everywhere: add damping")
    if directions.shape[1] == 0:
        return grad / fn
    b = fisher_old.unsqueeze(1) * directions  # F_old G
    if variant == "exact":
        m = b / fn.sqrt().unsqueeze(1)  # F_new^{-1/2} F_old G
        u = grad / fn.sqrt()
        q = _orthonormal_basis(m, rcond)
        u_perp = u - q @ (q.T @ u)
        return u_perp / fn.sqrt()
    a = b.T @ (b / fn.unsqueeze(1)) + damping * torch.eye(b.shape[1], dtype=b.dtype)
    pg = grad - b @ (torch.linalg.pinv(a, rtol=rcond) @ (b.T @ grad))
    return pg / fn


def _fopng_variant(variant: str) -> str:
    """Check ``variant``; the deprecated name ``"paper"`` warns and becomes ``"reference_code"``."""
    if variant == "paper":
        warnings.warn(
            'FOPNG variant="paper" is deprecated, use variant="reference_code": the formula is known '
            "only from the authors' code, not verified against the paper",
            DeprecationWarning,
            stacklevel=3,
        )
        return "reference_code"
    if variant not in ("exact", "reference_code"):
        raise ValueError(f"variant must be 'exact' or 'reference_code', got {variant!r}")
    return variant


def _orthonormal_basis(m: Tensor, rcond: float) -> Tensor:
    """Orthonormal basis of the column space of ``m`` (SVD with a relative rank cut-off)."""
    if m.shape[1] == 0:
        return m
    u, s, _ = torch.linalg.svd(m, full_matrices=False)
    if s.numel() == 0 or float(s[0]) == 0.0:
        return m[:, :0]
    keep = s > rcond * s[0]
    return u[:, keep]


class FOPNG(ContinualLearner):
    r"""Fisher-orthogonal projected natural gradient descent :cite:`garg2026fisher` (diagonal Fisher).

    Each step moves a fixed distance ``lr`` in the Fisher metric of the current task,

    .. math::

        \theta\leftarrow\theta - \mathrm{lr}\;\frac{F_{\mathrm{new}}^{-1}Pg}{\sqrt{(Pg)^\top F_{\mathrm{new}}^{-1}Pg}},

    along the Fisher-orthogonal projection :math:`P` of :func:`fopng_direction`, so that the
    update keeps :math:`G^\top F_{\mathrm{old}}v=0` for the stored old-task gradients :math:`G`
    (OGD-AVE :cite:`farajtabar2020orthogonal`: the gradient of the mean logit over the task's
    classes for ``directions_per_task`` random training examples of each finished task, at most
    ``max_directions``, oldest dropped first). :math:`F_{\mathrm{new}}` is the empirical
    diagonal Fisher of the current task, re-estimated at the task start and every
    ``fisher_refresh`` steps; :math:`F_{\mathrm{old}}\leftarrow(1-w)F_{\mathrm{old}}+wF_{\mathrm{task}}`
    after each task (:math:`w` = ``fisher_mix``, 0.5 in the authors' code).

    Parameters
    ----------
    lr
        Fisher-norm length :math:`\epsilon` of each step.
    directions_per_task, max_directions
        Size of the stored gradient memory.
    fisher_mix
        :math:`w\in(0, 1]`.
    damping
        :math:`\lambda>0` added to :math:`F_{\mathrm{new}}` (and to :math:`A` for ``variant="reference_code"``).
    variant
        ``"exact"`` (constraint satisfied) or ``"reference_code"`` (the formula of the authors' code;
        ``"paper"`` is a deprecated alias).
    fisher_refresh
        Steps between re-estimates of :math:`F_{\mathrm{new}}`.
    fisher_samples
        Examples used for each Fisher estimate (at most).
    first_task_lr
        If set, the first task uses plain SGD with this learning rate (as the authors' code);
        by default it uses the same (unprojected) natural-gradient step.
    seed
        Seed of the example choices.
    """

    name = "FOPNG"
    requires_task_boundaries = True

    def __init__(
        self,
        model: nn.Module,
        *,
        lr: float = 0.05,
        directions_per_task: int = 50,
        max_directions: int = 500,
        fisher_mix: float = 0.5,
        damping: float = 1e-3,
        variant: str = "exact",
        fisher_refresh: int = 100,
        fisher_samples: int = 512,
        first_task_lr: float | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(model, seed=seed)
        self.lr = check_positive_real(lr, "lr")
        self.directions_per_task = check_count(directions_per_task, "directions_per_task")
        self.max_directions = check_count(max_directions, "max_directions")
        self.fisher_mix = check_scalar(
            fisher_mix, "fisher_mix", low=0.0, high=1.0, closed_low=False
        )
        self.damping = check_positive_real(damping, "damping")
        self.variant = _fopng_variant(variant)
        self.fisher_refresh = check_count(fisher_refresh, "fisher_refresh")
        self.fisher_samples = check_count(fisher_samples, "fisher_samples")
        self.first_task_lr = (
            None if first_task_lr is None else check_positive_real(first_task_lr, "first_task_lr")
        )
        self.generator = torch.Generator().manual_seed(seed)
        p = sum(q.numel() for q in self.params)
        dtype = self.params[0].dtype
        self.G = torch.zeros(p, 0, dtype=dtype)
        self.fisher_old = torch.zeros(p, dtype=dtype)
        self.fisher_new = torch.ones(p, dtype=dtype)
        self.tasks_done = 0
        self._task: Task | None = None
        self._since_refresh = 0
        self._basis: Tensor | None = None
        self._a_pinv: Tensor | None = None

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "lr": self.lr,
            "directions_per_task": self.directions_per_task,
            "max_directions": self.max_directions,
            "fisher_mix": self.fisher_mix,
            "damping": self.damping,
            "variant": self.variant,
        }

    def _flat_fisher(self, task: Task) -> Tensor:
        x, y = task.x_train, task.y_train
        if self.fisher_samples < x.shape[0]:
            idx = torch.randperm(x.shape[0], generator=self.generator)[: self.fisher_samples]
            x, y = x[idx], y[idx]
        f = diagonal_fisher(self.model, x, y, fisher_type="empirical", active=task.active_classes)
        return torch.cat([f[k].reshape(-1) for k in self.names])

    def _refresh(self) -> None:
        """Re-estimate F_new on the current task and recompute the cached projection."""
        if self._task is not None:
            self.fisher_new = self._flat_fisher(self._task)
        self._since_refresh = 0
        fn = self.fisher_new + self.damping
        b = self.fisher_old.unsqueeze(1) * self.G
        if self.variant == "exact":
            self._basis = _orthonormal_basis(b / fn.sqrt().unsqueeze(1), 1e-10)
        else:
            a = b.T @ (b / fn.unsqueeze(1)) + self.damping * torch.eye(b.shape[1], dtype=b.dtype)
            self._a_pinv = torch.linalg.pinv(a, rtol=1e-10)

    def begin_task(self, task: Task) -> None:
        self._task = task
        self._refresh()

    def projected_direction(self, g: Tensor) -> Tensor:
        r""":math:`F_{\mathrm{new}}^{-1}Pg` with the cached factors (equals :func:`fopng_direction`)."""
        if self._basis is None and self._a_pinv is None:
            self._refresh()
        fn = self.fisher_new + self.damping
        if self.G.shape[1] == 0:
            return g / fn
        if self.variant == "exact":
            q = self._basis
            u = g / fn.sqrt()
            return (u - q @ (q.T @ u)) / fn.sqrt()  # type: ignore[union-attr]
        b = self.fisher_old.unsqueeze(1) * self.G
        return (g - b @ (self._a_pinv @ (b.T @ g))) / fn  # type: ignore[operator]

    def observe(self, x: Tensor, y: Tensor, active: Active = None) -> float:
        if self._task is not None and self._since_refresh >= self.fisher_refresh:
            self._refresh()
        for p in self.params:
            p.grad = None
        logits = self.model(x)
        loss = nn.functional.cross_entropy(
            restrict_logits(logits, active), self._targets(logits, y, active)
        )
        grads = torch.autograd.grad(loss, self.params)
        g = torch.cat([q.reshape(-1) for q in grads]).detach()
        with torch.no_grad():
            theta = parameters_to_vector(self.params)
            if self.tasks_done == 0 and self.first_task_lr is not None:
                step = -self.first_task_lr * g
            else:
                d = self.projected_direction(g)
                norm = torch.sqrt((d * (self.fisher_new + self.damping) * d).sum())
                step = torch.zeros_like(d) if float(norm) == 0.0 else -self.lr * d / norm
            if not bool(torch.isfinite(step).all()):
                raise RuntimeError(
                    f"FOPNG produced a non-finite step at step {self.steps}; increase damping"
                )
            vector_to_parameters(theta + step, self.params)
        self._since_refresh += 1
        self.steps += 1
        return float(loss.detach())

    def _ogd_directions(self, task: Task) -> Tensor:
        n = task.x_train.shape[0]
        k = min(self.directions_per_task, n)
        idx = torch.randperm(n, generator=self.generator)[:k]
        p0 = named_params(self.model)
        cls = (
            None
            if task.active_classes is None
            else torch.as_tensor(task.active_classes, dtype=torch.long)
        )

        def mean_logit(
            p: dict[str, Tensor], xn: Tensor
        ) -> Tensor:  # traced by vmap: no value checks
            z = functional_call(self.model, p, (xn.unsqueeze(0),))[0]
            return (z if cls is None else z.index_select(-1, cls)).mean()

        g = vmap(grad(mean_logit), in_dims=(None, 0))(p0, task.x_train[idx])
        return torch.cat([g[k_].reshape(k, -1) for k_ in self.names], dim=1).T  # (P, k)

    def end_task(self, task: Task) -> None:
        f_task = self._flat_fisher(task)
        self.fisher_old = (
            f_task
            if self.tasks_done == 0
            else (1 - self.fisher_mix) * self.fisher_old + self.fisher_mix * f_task
        )
        self.G = torch.cat([self.G, self._ogd_directions(task).to(self.G.dtype)], dim=1)[
            :, -self.max_directions :
        ]
        self.tasks_done += 1
        self._task = None
        self._refresh()
