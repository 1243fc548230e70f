r"""IVON, the improved variational online Newton optimizer :cite:`shen2024variational`."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from igbook._validation import check_nonnegative_real, check_positive_real
from igbook.optim.blr.base import Closure, VariationalOptimizer, check_beta, group_by_step

__all__ = ["IVON"]


class IVON(VariationalOptimizer):
    r"""Improved Variational Online Newton :cite:`shen2024variational`.

    One step with gradients :math:`\hat g_k` of the average minibatch loss at
    :math:`\theta_k = m + \sigma\odot\varepsilon_k`, :math:`k = 1..K` (``mc_samples``),
    :math:`\sigma^2 = 1/(\text{ess}\,(h + \delta))`:

    .. math::

        \hat g &= \tfrac1K\textstyle\sum_k \hat g_k, \qquad
        \hat h = \tfrac1K\textstyle\sum_k \hat g_k\odot(\theta_k - m)/\sigma^2, \\
        g &\leftarrow \beta_1 g + (1-\beta_1)\,\hat g, \\
        h &\leftarrow \beta_2 h + (1-\beta_2)\,\hat h
            + \tfrac12(1-\beta_2)^2\,(h - \hat h)^2/(h + \delta), \\
        m &\leftarrow m - \alpha\,\big(g/(1-\beta_1^t) + \delta m\big)/(h + \delta).

    :math:`\hat h` is the reparameterization (Price/Stein) estimator of the diagonal Hessian:
    unbiased and free (no second backward pass, no per-example gradients). The last term of
    the :math:`h` update is the Riemannian correction of :cite:`lin2020handling`: with
    :math:`a = h + \delta > 0` and :math:`x = (1-\beta_2)(\hat h - h)` it makes
    :math:`h_{\text{new}} + \delta = (a^2 + (a + x)^2)/(2a) > 0` whatever :math:`\hat h`.
    With ``rescale_lr`` (the reference default) :math:`\alpha = \text{lr}\,(h_0 + \delta)`.

    Parameters
    ----------
    params
        Parameters or param groups (every hyperparameter below can be set per group).
        Parameters of one group share one dtype and device.
    lr
        Learning rate, :math:`\ge 0`. IVON's learning rates are larger than Adam's (0.1-1 is
        typical for small networks with ``rescale_lr``).
    ess
        Effective sample size :math:`> 0`; the training-set size :math:`N` gives the Bayesian
        posterior, larger values a colder one.
    hess_init
        :math:`h_0 > 0`, the initial Hessian estimate (sets the initial noise).
    beta1, beta2
        Decay of the gradient momentum and of the Hessian average, in :math:`[0, 1)`.
    weight_decay
        :math:`\delta \ge 0`; the prior is :math:`\mathcal{N}(0, 1/(\text{ess}\,\delta))`.
    mc_samples
        Samples per step when a closure is given.
    clip_radius
        Element-wise clipping of the preconditioned step (``inf``: none).
    debias
        Divide the momentum by :math:`1-\beta_1^t`.
    rescale_lr
        Multiply the learning rate by :math:`h_0 + \delta`.
    seed, generator
        Randomness of the weight samples (neither: the global generator, as ``ivon-opt``
        does: then with the same ``torch.manual_seed`` both draw the same samples).
    nonfinite
        ``"raise"`` (default): a non-finite gradient raises :class:`FloatingPointError` before
        anything is written; ``"skip"``: the step is skipped (``skipped_steps`` counts them).
    move_without_grad
        Update parameters that received no gradient as with a zero gradient (default
        ``False``: they are not moved, as in ``torch.optim``).

    Notes
    -----
    Against the reference implementation ``ivon-opt`` 0.1.3: the same update equations and
    the same order of random draws (one ``randn`` per param group), so from the same global
    seed the two produce the same iterates up to rounding (checked in the tests). Differences:
    state is kept per parameter (standard ``state_dict``), a closure is sampled by the
    optimizer itself, the sampling context restores the means on exceptions, parameters
    without a gradient are not moved (``move_without_grad=True``: the reference behaviour, a
    zero gradient), non-finite gradients raise or skip the step, and the ``"gradsq"`` Hessian option
    is not offered.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float,
        ess: float,
        hess_init: float = 1.0,
        beta1: float = 0.9,
        beta2: float = 0.99999,
        weight_decay: float = 1e-4,
        mc_samples: int = 1,
        clip_radius: float = math.inf,
        debias: bool = True,
        rescale_lr: bool = True,
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        nonfinite: str = "raise",
        move_without_grad: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            ess=ess,
            hess_init=hess_init,
            beta1=beta1,
            beta2=beta2,
            weight_decay=weight_decay,
            clip_radius=clip_radius,
        )
        self._validate_group(defaults)
        if not isinstance(debias, bool) or not isinstance(rescale_lr, bool):
            raise TypeError("debias and rescale_lr must be bools")
        self.debias = debias
        self.rescale_lr = rescale_lr
        super().__init__(
            params,
            defaults,
            mc_samples=mc_samples,
            seed=seed,
            generator=generator,
            nonfinite=nonfinite,
            move_without_grad=move_without_grad,
        )

    _precision_keys = ("ess", "weight_decay")

    def _validate_group(self, group: dict[str, Any]) -> None:
        group["lr"] = check_nonnegative_real(group["lr"], "lr")
        group["ess"] = check_positive_real(group["ess"], "ess")
        group["hess_init"] = check_positive_real(group["hess_init"], "hess_init")
        group["beta1"] = check_beta(group["beta1"], "beta1")
        group["beta2"] = check_beta(group["beta2"], "beta2")
        group["weight_decay"] = check_nonnegative_real(group["weight_decay"], "weight_decay")
        group["clip_radius"] = check_positive_real(
            group["clip_radius"], "clip_radius", allow_inf=True
        )

    def _init_state(self, group: dict[str, Any], p: Tensor) -> None:
        st = self.state[p]
        st["step"] = 0
        st["momentum"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        st["hess"] = torch.full_like(p, group["hess_init"], memory_format=torch.preserve_format)

    def _precision(self, group: dict[str, Any], p: Tensor) -> Tensor:
        return group["ess"] * (self.state[p]["hess"] + group["weight_decay"])

    _stat_names = ("grad", "zg")

    def _fill_statistics(
        self, out: dict[str, list[Tensor]], grads: list[Tensor], zs: list[Tensor]
    ) -> None:
        torch._foreach_copy_(out["grad"], grads)
        torch._foreach_copy_(out["zg"], zs)
        torch._foreach_mul_(out["zg"], grads)

    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> Tensor | None:  # type: ignore[override]
        """One IVON step; with a closure, ``mc_samples`` sampled evaluations first.

        Returns the closure's loss averaged over the samples (``None`` without a closure).
        """
        return self._guarded(lambda: self._step(closure))

    def _step(self, closure: Closure | None) -> Tensor | None:
        loss = self._run_closure(closure) if closure is not None else None
        acc = self._take_samples()
        self._check_finite(acc, loss)
        moving = self._moving
        for group, sl in self._split():
            params = group["params"]
            if not params:
                continue
            states = [self.state[p] for p in params]
            for idx in group_by_step(states, moving[sl]):
                pick = (
                    (lambda xs, idx=idx: [xs[i] for i in idx])
                    if len(idx) != len(params)
                    else (lambda xs: list(xs))
                )
                self._update(group, pick(params), pick(acc["grad"][sl]), pick(acc["zg"][sl]))
        return loss

    def _update(
        self, group: dict[str, Any], params: list[Tensor], g: list[Tensor], zg: list[Tensor]
    ) -> None:
        """The IVON update of ``params`` (one param group, one step count)."""
        b1, b2, wd, ess = group["beta1"], group["beta2"], group["weight_decay"], group["ess"]
        states = [self.state[p] for p in params]
        stds = [self._std(group, p) for p in params]  # sigma at the sampled (old) h
        moms = [s["momentum"] for s in states]
        hess = [s["hess"] for s in states]
        w1 = [self._buf("w1", p) for p in params]
        w2 = [self._buf("w2", p) for p in params]
        # momentum: g <- b1 g + (1 - b1) ghat
        torch._foreach_lerp_(moms, g, 1.0 - b1)
        # Hessian: hhat = mean(noise * ghat) / sigma^2 = mean(z * ghat) / sigma (in place), then
        # h <- b2 h + (1 - b2) hhat + (1 - b2)^2 / 2 (h - hhat)^2 / (h + wd)
        hhat = zg
        torch._foreach_div_(hhat, stds)
        torch._foreach_copy_(w1, hess)
        torch._foreach_sub_(w1, hhat)
        torch._foreach_mul_(w1, w1)  # (h - hhat)^2
        torch._foreach_copy_(w2, hess)
        torch._foreach_add_(w2, wd)  # h + wd (old h)
        torch._foreach_lerp_(hess, hhat, 1.0 - b2)
        torch._foreach_addcdiv_(hess, w1, w2, value=0.5 * (1.0 - b2) ** 2)
        # mean: m <- m - alpha (g / (1 - b1^t) + wd m) / (h + wd), computed as
        # m - (alpha / (1 - b1^t)) (g + (1 - b1^t) wd m) / (h + wd)
        for s in states:
            s["step"] += 1
        t = states[0]["step"]
        debias = 1.0 - b1**t if self.debias else 1.0
        lr = group["lr"] * (group["hess_init"] + wd) if self.rescale_lr else group["lr"]
        num, den = w1, w2
        torch._foreach_copy_(num, moms)
        if wd != 0.0:
            torch._foreach_add_(num, params, alpha=wd * debias)
        torch._foreach_copy_(den, hess)
        torch._foreach_add_(den, wd)
        if group["clip_radius"] != math.inf:
            torch._foreach_div_(num, den)
            torch._foreach_div_(num, debias)
            torch._foreach_clamp_min_(num, -group["clip_radius"])
            torch._foreach_clamp_max_(num, group["clip_radius"])
            torch._foreach_add_(params, num, alpha=-lr)
        else:
            torch._foreach_addcdiv_(params, num, den, value=-lr / debias)
        # the next samples' sigma = 1 / sqrt(ess (h + wd)): computed in the buffer `den`,
        # which becomes the sigma; the old sigma's memory becomes the next work buffer
        torch._foreach_mul_(den, ess)
        torch._foreach_rsqrt_(den)
        for p, sd, old in zip(params, den, stds, strict=False):
            self._set_std(group, p, sd)
            self._bufs[("w2", p)] = old
