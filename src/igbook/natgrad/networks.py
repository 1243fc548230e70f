r"""Natural-gradient steps for networks, matrix-free.

For a network with a likelihood (see :mod:`igbook.fisher.models`) the damped natural-gradient
direction is the solution of

.. math::
    :label: eq-damped-ngd

    (F(\theta) + \lambda I)\,d = \nabla L(\theta),

where :math:`F` is the Fisher (or the generalized Gauss-Newton matrix, or one of their
estimates, chosen by :class:`~igbook.fisher.types.FisherType`) of the *mean* loss :math:`L`.
It is found by conjugate gradient on curvature-vector products
(:class:`~igbook.fisher.products.CurvatureOperator`), so the :math:`P\times P` matrix is never
formed: each iteration costs about two gradient passes. This is the Hessian-free / truncated
Newton recipe of :cite:`martens2020new` with the Fisher in place of the Hessian
:cite:`amari1998natural,schraudolph2002fast,pascanu2014revisiting`.

Truncating conjugate gradient after a few iterations (``cg_max_iter``) is allowed and standard:
started from zero, every CG iterate is a descent direction of the damped quadratic model, and
the result records whether the tolerance was reached. The damping :math:`\lambda` plays the role
of a trust region (large :math:`\lambda` gives gradient descent with step :math:`1/\lambda`) and
must be positive, since the Fisher of an over-parameterized network is singular.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from igbook._distributed import active_group, all_reduce_mean_, check_process_group
from igbook._safety import check_nonfinite_mode, first_nonfinite, nonfinite_error
from igbook._validation import check_seed
from igbook.fisher.likelihoods import Likelihood, get_likelihood
from igbook.fisher.models import (
    CurvatureOperator,
    flatten_params,
    unflatten_params,
)
from igbook.fisher.types import FisherType, as_fisher_type
from igbook.natgrad.core import conjugate_gradient, trust_region_step_size

__all__ = [
    "NaturalGradientResult",
    "natural_gradient_direction",
    "ngd_step",
    "NaturalGradientDescent",
]


@dataclass(frozen=True)
class NaturalGradientResult:
    r"""A damped natural-gradient direction and how it was obtained.

    Fields:

    - ``direction``: :math:`d \approx (F+\lambda I)^{-1} g`, flat (order of
      :func:`~igbook.fisher.layout.flatten_params`); step with :math:`\theta - \alpha d`.
    - ``gradient``: :math:`g = \nabla L(\theta)`, flat.
    - ``loss``: :math:`L(\theta)` (mean negative log-likelihood), or ``nan`` if a custom
      gradient was passed without targets.
    - ``cg_iterations``, ``cg_residual``, ``converged``: conjugate-gradient iterations, final
      residual norm :math:`\|(F+\lambda I)d - g\|`, and whether the relative tolerance was met.
    - ``predicted_decrease``: :math:`g^\top d - \tfrac12 d^\top(F+\lambda I)d`, the decrease
      of the damped quadratic model for a unit step (:math:`\tfrac12 g^\top(F+\lambda I)^{-1}g`
      at convergence).
    """

    direction: Tensor
    gradient: Tensor
    loss: float
    cg_iterations: int
    cg_residual: float
    converged: bool
    predicted_decrease: float


def _positive(value: float, name: str, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    ok = value >= 0 if allow_zero else value > 0
    if not (ok and math.isfinite(value)):
        raise ValueError(
            f"{name} must be finite and {'>= 0' if allow_zero else '> 0'}, got {value}"
        )
    return float(value)


def _max_iter(cg_max_iter: int | None) -> int | None:
    if cg_max_iter is None:
        return None
    if isinstance(cg_max_iter, bool) or not isinstance(cg_max_iter, int) or cg_max_iter < 1:
        raise ValueError(f"cg_max_iter must be None or an int >= 1, got {cg_max_iter!r}")
    return cg_max_iter


def natural_gradient_direction(
    model: nn.Module,
    params: Mapping[str, Tensor] | None,
    x: Tensor,
    y: Tensor | None,
    likelihood: Likelihood | str,
    damping: float,
    fisher_type: FisherType | str = FisherType.EXACT,
    *,
    gradient: Tensor | None = None,
    mc_samples: int = 1,
    seed: int | None = 0,
    cg_rtol: float = 1e-6,
    cg_max_iter: int | None = None,
    x0: Tensor | None = None,
) -> NaturalGradientResult:
    r"""Damped natural-gradient direction :eq:`eq-damped-ngd` by conjugate gradient.

    Parameters
    ----------
    model, params, x, y, likelihood
        As in :func:`igbook.fisher.models.curvature_matrix`. ``y`` is needed for the gradient
        (unless ``gradient`` is given) and for the empirical Fisher, GGN and Hessian.
    damping
        :math:`\lambda > 0`.
    fisher_type
        The curvature: ``"exact"`` (default), ``"mc"``, ``"empirical"``, ``"ggn"``; ``"hessian"``
        is accepted for comparison but conjugate gradient raises :class:`ValueError` if it meets
        negative curvature.
    gradient
        A flat gradient to precondition instead of :math:`\nabla L` (e.g. with a regularizer).
    mc_samples, seed
        Labels sampled per data point for ``"mc"``, and their seed.
    cg_rtol, cg_max_iter
        Stop at :math:`\|r\|\le` ``cg_rtol`` :math:`\|g\|` or after ``cg_max_iter`` iterations
        (default :math:`2P`); a truncated solve is returned, flagged ``converged=False``.
    x0
        Warm start for conjugate gradient (e.g. the previous direction).
    """
    lam = _positive(damping, "damping")
    rtol = _positive(cg_rtol, "cg_rtol")
    max_iter = _max_iter(cg_max_iter)
    op = CurvatureOperator(
        model, params, x, y, likelihood, fisher_type, mc_samples=mc_samples, seed=seed
    )
    if gradient is None:
        if y is None:
            raise ValueError(
                "y (the targets) is required to compute the gradient; or pass gradient="
            )
        g = op.gradient()
        loss = op.loss()
    else:
        g, _ = op.check_vector(gradient, "gradient")
        loss = op.loss() if y is not None else float("nan")
    if x0 is not None:
        x0, _ = op.check_vector(x0, "x0")
    res = conjugate_gradient(op.flat_matvec, g, damping=lam, x0=x0, rtol=rtol, max_iter=max_iter)
    d = res.x
    quad = float(d @ (op.flat_matvec(d) + lam * d))
    return NaturalGradientResult(
        direction=d,
        gradient=g,
        loss=loss,
        cg_iterations=res.iterations,
        cg_residual=res.residual_norm,
        converged=res.converged,
        predicted_decrease=float(g @ d) - 0.5 * quad,
    )


def ngd_step(
    model: nn.Module,
    params: Mapping[str, Tensor] | None,
    x: Tensor,
    y: Tensor,
    likelihood: Likelihood | str,
    lr: float,
    damping: float,
    fisher_type: FisherType | str = FisherType.EXACT,
    **kwargs: Any,
) -> tuple[dict[str, Tensor], NaturalGradientResult]:
    r"""One functional natural-gradient step :math:`\theta \leftarrow \theta - \alpha (F+\lambda I)^{-1}\nabla L`.

    Returns the new parameters (a dict like ``params``; the module is not modified) and the
    :class:`NaturalGradientResult`. Keyword arguments go to :func:`natural_gradient_direction`.
    """
    alpha = _positive(lr, "lr", allow_zero=True)
    res = natural_gradient_direction(
        model, params, x, y, likelihood, damping, fisher_type, **kwargs
    )
    if params is None:
        params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    theta = flatten_params(params).detach()
    return unflatten_params(theta - alpha * res.direction, params), res


class NaturalGradientDescent(torch.optim.Optimizer):
    r"""Natural-gradient descent for a network, matrix-free (damped CG on Fisher-vector products).

    Each :meth:`step` solves :math:`(F + \Lambda)d = g` by conjugate gradient, where :math:`g`
    is the gradient stored in ``p.grad`` (so any loss or regularizer can be used: call
    ``loss.backward()`` or pass a closure), :math:`F` is the curvature of the likelihood's mean
    negative log-likelihood on the batch ``inputs`` (``targets``) given to :meth:`step`, and
    :math:`\Lambda` holds each parameter group's ``damping``. Every parameter then moves by
    ``-lr * d`` with its group's ``lr``. The curvature couples all parameters that have a
    gradient, across groups.

    Parameters
    ----------
    params
        Parameters of ``model`` to optimize (or parameter groups).
    model
        The module whose parameters these are.
    likelihood
        A :class:`~igbook.fisher.likelihoods.Likelihood` or its name.
    lr
        Step size :math:`\alpha \ge 0` (1 is the Newton-like step).
    damping
        :math:`\lambda > 0`.
    fisher_type
        ``"exact"`` (default), ``"mc"``, ``"empirical"`` or ``"ggn"``.
    mc_samples, seed
        Monte Carlo labels per data point for ``"mc"``; step :math:`t` uses seed ``seed + t``
        (deterministic and resumable).
    cg_max_iter, cg_rtol
        Truncation of conjugate gradient.
    kl_clip
        If given, shorten the step so that the quadratic KL estimate
        :math:`\tfrac12\alpha^2 d^\top F d` stays below it (:func:`~igbook.natgrad.core.trust_region_step_size`).
    warm_start
        Start CG from the previous direction.
    nonfinite
        ``"raise"`` (default): a non-finite gradient or a non-finite direction (curvature)
        raises :class:`~igbook.optim.NonFiniteStepError` (a :class:`ValueError`) naming
        the parameter, before anything is written; ``"skip"``: the step is skipped
        (``skipped_steps`` counts them). Parameters with ``.grad is None`` are not moved.
    process_group
        Under ``torch.distributed`` with ``DistributedDataParallel`` (which averages ``p.grad``):
        every Fisher-vector product of conjugate gradient is averaged over the group
        (``None``: the world group when initialized, else no communication), so each rank
        solves with the Fisher of the global batch and takes the same step; with equal
        per-rank batches this is the one-process step on the union of the batches. ``"mc"``
        labels at step :math:`t` on rank :math:`r` of :math:`R` use seed
        ``(seed + t) * R + r`` (distinct per rank; ``seed + t`` in one process).

    Notes
    -----
    After each step, the dict ``last_result`` holds diagnostics like those of
    :class:`NaturalGradientResult` (CG iterations, residual, predicted decrease, and the step
    scale applied by ``kl_clip``).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        model: nn.Module,
        likelihood: Likelihood | str,
        *,
        lr: float = 1.0,
        damping: float = 1e-3,
        fisher_type: FisherType | str = FisherType.EXACT,
        mc_samples: int = 1,
        seed: int = 0,
        cg_max_iter: int = 50,
        cg_rtol: float = 1e-6,
        kl_clip: float | None = None,
        warm_start: bool = False,
        nonfinite: str = "raise",
        process_group: Any = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if (
            isinstance(lr, bool)
            or not isinstance(lr, (int, float))
            or not (lr >= 0 and math.isfinite(lr))
        ):
            raise ValueError(f"Invalid learning rate: {lr}")
        if (
            isinstance(damping, bool)
            or not isinstance(damping, (int, float))
            or not (damping > 0 and math.isfinite(damping))
        ):
            raise ValueError(f"Invalid damping value: {damping} (must be finite and > 0)")
        ftype = as_fisher_type(fisher_type)
        if ftype is FisherType.HESSIAN:
            raise ValueError(
                "fisher_type='hessian' is not positive semi-definite; use 'exact', 'mc', 'empirical' or 'ggn'"
            )
        if isinstance(mc_samples, bool) or not isinstance(mc_samples, int) or mc_samples < 1:
            raise ValueError(f"Invalid mc_samples: {mc_samples!r} (must be an int >= 1)")
        seed = check_seed(seed)
        _max_iter(cg_max_iter)
        _positive(cg_rtol, "cg_rtol")
        if kl_clip is not None:
            _positive(kl_clip, "kl_clip")
        self.model = model
        self.likelihood = get_likelihood(likelihood)
        defaults = dict(
            lr=lr,
            damping=damping,
            fisher_type=ftype.value,
            mc_samples=mc_samples,
            seed=seed,
            cg_max_iter=cg_max_iter,
            cg_rtol=cg_rtol,
            kl_clip=kl_clip,
            warm_start=warm_start,
        )
        super().__init__(params, defaults)
        names = {id(p): n for n, p in model.named_parameters()}
        self._names: dict[int, str] = {}
        for group in self.param_groups:
            for key in ("lr", "damping"):
                v = group[key]
                if (
                    isinstance(v, bool)
                    or not isinstance(v, (int, float))
                    or not (math.isfinite(v) and (v > 0 if key == "damping" else v >= 0))
                ):
                    raise ValueError(f"Invalid {key} value in a parameter group: {v}")
            for p in group["params"]:
                if id(p) not in names:
                    raise ValueError("every optimized parameter must be a parameter of model")
                self._names[id(p)] = names[id(p)]
        self.last_result: dict[str, float] = {}
        self.nonfinite = check_nonfinite_mode(nonfinite)
        self.process_group = check_process_group(process_group)
        #: number of steps skipped under ``nonfinite="skip"``
        self.skipped_steps = 0

    @torch.no_grad()
    def step(  # type: ignore[override]
        self,
        closure: Callable[[], Tensor] | None = None,
        *,
        inputs: Tensor,
        targets: Tensor | None = None,
    ) -> Tensor | None:
        r"""Take one natural-gradient step using ``p.grad`` and the curvature on ``inputs``.

        Parameters
        ----------
        closure
            Optional: re-evaluates the loss and calls ``backward()``; its value is returned.
        inputs, targets
            The batch on which the curvature is taken (``targets`` are needed for
            ``"empirical"`` and ``"ggn"``).
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        g0 = self.param_groups[0]
        active = [
            (p, group) for group in self.param_groups for p in group["params"] if p.grad is not None
        ]
        if not active:
            return loss
        names = [self._names[id(p)] for p, _ in active]
        params = {n: p.detach() for n, (p, _) in zip(names, active)}
        bad = first_nonfinite([p.grad for p, _ in active])
        if bad is not None:
            if self.nonfinite == "skip":
                self.skipped_steps += 1
                return loss
            raise nonfinite_error(type(self).__name__, "gradient (p.grad)", names[bad])
        grad = torch.cat([p.grad.reshape(-1) for p, _ in active]).to(
            next(iter(params.values())).dtype
        )
        lam = torch.cat(
            [
                torch.full((p.numel(),), float(group["damping"]), dtype=grad.dtype)
                for p, group in active
            ]
        )
        first = active[0][0]
        state = self.state[first]
        t = int(state.get("step", 0))
        ftype = FisherType(g0["fisher_type"])
        group = active_group(self.process_group)
        mc_seed = g0["seed"] + t
        if group is not False:
            mc_seed = mc_seed * torch.distributed.get_world_size(
                group
            ) + torch.distributed.get_rank(group)
        with torch.enable_grad():
            op = CurvatureOperator(
                self.model,
                params,
                inputs,
                targets if ftype in (FisherType.EMPIRICAL, FisherType.GGN) else None,
                self.likelihood,
                ftype,
                mc_samples=g0["mc_samples"],
                seed=mc_seed,
            )

            def fisher_product(v: Tensor) -> Tensor:
                fv = op.flat_matvec(v)
                return fv if group is False else all_reduce_mean_([fv], group)[0]

            def matvec(v: Tensor) -> Tensor:
                return fisher_product(v) + lam * v

            x0 = None
            if g0["warm_start"] and all("direction" in self.state[p] for p, _ in active):
                x0 = torch.cat([self.state[p]["direction"].reshape(-1) for p, _ in active])
            res = conjugate_gradient(
                matvec, grad, x0=x0, rtol=g0["cg_rtol"], max_iter=g0["cg_max_iter"]
            )
            d = res.x
            fd = fisher_product(d)
        if first_nonfinite([d, fd]) is not None:  # a non-finite curvature: write nothing
            if self.nonfinite == "skip":
                self.skipped_steps += 1
                return loss
            raise nonfinite_error(
                type(self).__name__, "curvature (Fisher-vector product)", names[0]
            )
        quad = float(d @ (fd + lam * d))
        scale = 1.0
        if g0["kl_clip"] is not None and float(d @ fd) > 0:
            alpha_max = float(trust_region_step_size(lambda v: fd, d, g0["kl_clip"]))
            scale = min(1.0, alpha_max / max(float(g0["lr"]), 1e-300))
        i = 0
        for p, group in active:
            k = p.numel()
            dp = d[i : i + k].reshape(p.shape).to(p.dtype)
            p.add_(dp, alpha=-float(group["lr"]) * scale)
            if group["warm_start"]:
                self.state[p]["direction"] = dp.clone()
            i += k
        for p, _ in active:
            self.state[p]["step"] = t + 1
        self.last_result = {
            "cg_iterations": float(res.iterations),
            "cg_residual": res.residual_norm,
            "converged": float(res.converged),
            "predicted_decrease": float(grad @ d) - 0.5 * quad,
            "step_scale": scale,
        }
        return loss
