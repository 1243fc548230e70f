r"""Vadam, Adam with weight perturbation :cite:`khan2018fast`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from igbook._validation import check_count, check_nonnegative_real, check_positive_real
from igbook.optim.blr.base import Closure, VariationalOptimizer, check_beta, group_by_step

__all__ = ["Vadam"]


class Vadam(VariationalOptimizer):
    r"""Variational Adam :cite:`khan2018fast`: Adam with weight perturbation.

    At :math:`\theta = m + \varepsilon/\sqrt{N s + \lambda}` (:math:`\tilde\lambda = \lambda/N`):

    .. math::

        u &\leftarrow \beta_1 u + (1-\beta_1)(\hat g + \tilde\lambda m), \qquad
        s \leftarrow \beta_2 s + (1-\beta_2)\,\hat g^2, \\
        m &\leftarrow m - \alpha\,\frac{u/(1-\beta_1^t)}{\sqrt{s/(1-\beta_2^t)} + \tilde\lambda}.

    This is the diagonal BLR with three further approximations: the Hessian is replaced by the
    squared minibatch gradient ("gradient magnitude"), the mean update takes Adam's square
    root, and momentum is added. The posterior variance :math:`1/(Ns + \lambda)` is therefore
    only as good as :math:`\hat g^2` is as a curvature estimate (the squared gradient of a
    minibatch of size :math:`M` estimates a mixture of the empirical Fisher and the squared
    mean gradient, exact only for :math:`M=1`).

    Parameters
    ----------
    params
        Parameters or param groups.
    lr
        :math:`\alpha \ge 0`.
    data_size
        :math:`N \ge 1`, the number of training points.
    betas
        :math:`(\beta_1, \beta_2)`, each in :math:`[0, 1)`.
    prior_precision
        :math:`\lambda > 0`.
    hess_init
        Initial :math:`s \ge 0` (the reference code's ``prec_init`` is
        :math:`N\,s_0 + \lambda`; its default corresponds to ``hess_init=0``).
    mc_samples, seed, generator
        Samples per step with a closure; randomness of the samples.
    nonfinite, move_without_grad
        See :class:`IVON`.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        data_size: int = 1,
        betas: tuple[float, float] = (0.9, 0.999),
        prior_precision: float = 1.0,
        hess_init: float = 0.0,
        mc_samples: int = 1,
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        nonfinite: str = "raise",
        move_without_grad: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            data_size=data_size,
            betas=betas,
            prior_precision=prior_precision,
            hess_init=hess_init,
        )
        self._validate_group(defaults)
        super().__init__(
            params,
            defaults,
            mc_samples=mc_samples,
            seed=seed,
            generator=generator,
            nonfinite=nonfinite,
            move_without_grad=move_without_grad,
        )

    _precision_keys = ("data_size", "prior_precision")

    def _validate_group(self, group: dict[str, Any]) -> None:
        group["lr"] = check_nonnegative_real(group["lr"], "lr")
        group["data_size"] = check_count(group["data_size"], "data_size")
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        group["betas"] = (check_beta(betas[0], "betas[0]"), check_beta(betas[1], "betas[1]"))
        group["prior_precision"] = check_positive_real(group["prior_precision"], "prior_precision")
        group["hess_init"] = check_nonnegative_real(group["hess_init"], "hess_init")

    def _init_state(self, group: dict[str, Any], p: Tensor) -> None:
        st = self.state[p]
        st["step"] = 0
        st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        st["exp_avg_sq"] = torch.full_like(
            p, group["hess_init"], memory_format=torch.preserve_format
        )

    def _precision(self, group: dict[str, Any], p: Tensor) -> Tensor:
        return group["data_size"] * self.state[p]["exp_avg_sq"] + group["prior_precision"]

    _stat_names = ("grad", "gsq")

    def _fill_statistics(
        self, out: dict[str, list[Tensor]], grads: list[Tensor], zs: list[Tensor]
    ) -> None:
        torch._foreach_copy_(out["grad"], grads)
        torch._foreach_copy_(out["gsq"], grads)
        torch._foreach_mul_(out["gsq"], grads)

    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> Tensor | None:  # type: ignore[override]
        """One Vadam step; with a closure, ``mc_samples`` sampled evaluations first."""
        return self._guarded(lambda: self._step(closure))

    def _step(self, closure: Closure | None) -> Tensor | None:
        loss = self._run_closure(closure) if closure is not None else None
        acc = self._take_samples()
        self._check_finite(acc, loss)
        moving = self._moving
        for group, sl in self._split():
            all_params = group["params"]
            if not all_params:
                continue
            all_states = [self.state[p] for p in all_params]
            for idx in group_by_step(all_states, moving[sl]):
                params = [all_params[i] for i in idx]
                g = [acc["grad"][sl][i] for i in idx]
                gsq = [acc["gsq"][sl][i] for i in idx]
                self._update(group, params, g, gsq)
        return loss

    def _update(
        self, group: dict[str, Any], params: list[Tensor], g: list[Tensor], gsq: list[Tensor]
    ) -> None:
        """The Vadam update of ``params`` (one param group, one step count)."""
        b1, b2 = group["betas"]
        tl = group["prior_precision"] / group["data_size"]
        states = [self.state[p] for p in params]
        for s in states:
            s["step"] += 1
        t = states[0]["step"]
        u = [s["exp_avg"] for s in states]
        sq = [s["exp_avg_sq"] for s in states]
        gp = torch._foreach_add(g, params, alpha=tl)
        torch._foreach_mul_(u, b1)
        torch._foreach_add_(u, gp, alpha=1.0 - b1)
        torch._foreach_mul_(sq, b2)
        torch._foreach_add_(sq, gsq, alpha=1.0 - b2)
        den = torch._foreach_div(sq, 1.0 - b2**t)
        torch._foreach_sqrt_(den)
        torch._foreach_add_(den, tl)
        num = torch._foreach_div(u, 1.0 - b1**t)
        torch._foreach_div_(num, den)
        torch._foreach_add_(params, num, alpha=-group["lr"])
