r"""The K-FAC optimizer: SGD with momentum on the K-FAC preconditioned gradient."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from igbook._safety import check_nonfinite_mode, first_nonfinite, nonfinite_error
from igbook._validation import check_nonnegative_real, check_positive_real, check_scalar
from igbook.kfac.core import KFACPreconditioner

__all__ = ["KFAC"]


class KFAC(torch.optim.Optimizer):
    r"""K-FAC optimizer: SGD with momentum on the K-FAC preconditioned gradient.

    .. math::

        g \leftarrow \nabla L + \omega\theta,\qquad
        v = \widehat F_\lambda^{-1} g \ \text{(per layer, by} \ :class:`KFACPreconditioner`),\qquad
        m \leftarrow \mu m + v,\qquad \theta \leftarrow \theta - \eta m

    :cite:`martens2015optimizing`. Parameters of unsupported layers get plain SGD with momentum.
    The training loop::

        opt = KFAC(model, likelihood="categorical", lr=0.1, damping=1e-2)
        out = model(x)
        loss = negative_log_likelihood(out, y, likelihood="categorical")
        opt.zero_grad()
        opt.update_factors(out)
        loss.backward()
        opt.step()

    Parameters
    ----------
    model
        The network (all its trainable parameters are optimized).
    lr
        Learning rate :math:`\eta > 0`.
    momentum
        :math:`\mu\in[0, 1)`.
    weight_decay
        :math:`\omega \ge 0`, an L2 penalty added to the gradient *before* preconditioning.
    nonfinite
        ``"raise"`` (default): a non-finite gradient (at :meth:`step`) or curvature statistic
        (at :meth:`update_factors`) raises :class:`~igbook.optim.NonFiniteStepError`
        naming the layer; ``"skip"``: the step is skipped (``skipped_steps`` counts them). Either
        way the parameters, the momentum, the factors (as before this step's
        :meth:`update_factors`) and the generator are left as before, so the next good step
        behaves as if the failed one never happened.
    **kfac_kwargs
        Passed to :class:`KFACPreconditioner` (``likelihood`` is required; ``damping``,
        ``fisher_type``, ``factor_decay``, ``factor_period``, ``inverse_period``, ``kl_clip``, ...).
        KL clipping uses this optimizer's ``lr``.
    """

    def __init__(
        self,
        model: nn.Module,
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        nonfinite: str = "raise",
        **kfac_kwargs: Any,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        lr = check_positive_real(lr, "lr")
        momentum = check_scalar(momentum, "momentum", low=0.0, high=1.0, closed_high=False)
        weight_decay = check_nonnegative_real(weight_decay, "weight_decay")
        params = [p for p in model.parameters() if p.requires_grad]
        super().__init__(
            params, {"lr": lr, "momentum": float(momentum), "weight_decay": weight_decay}
        )
        self.preconditioner = KFACPreconditioner(model, lr=lr, **kfac_kwargs)
        self.nonfinite = check_nonfinite_mode(nonfinite)
        #: number of steps skipped under ``nonfinite="skip"``
        self.skipped_steps = 0
        self._before_factors: dict[str, Any] | None = (
            None  # preconditioner state before update_factors
        )
        self._skip_pending = False

    def update_factors(self, outputs: Tensor, targets: Tensor | None = None) -> bool:
        """See :meth:`~igbook.kfac.core.KFACPreconditioner.update_factors`.

        The preconditioner's state before the update is kept until :meth:`step`, which puts it
        back if the step fails or is skipped. With ``nonfinite="skip"`` non-finite statistics
        mark the step as skipped instead of raising.
        """
        pre = self.preconditioner
        if not pre.factors_due:
            return False
        self._before_factors = pre.state_dict()
        try:
            return pre.update_factors(outputs, targets)
        except FloatingPointError:
            if self.nonfinite != "skip":
                self._before_factors = None
                raise
            pre._updated_this_step = True  # the statistics of this batch are dropped
            self._skip_pending = True
            return False

    def _undo(self, loss: Tensor | None) -> Tensor | None:
        """Leave no trace of a failed or skipped step (factors as before update_factors)."""
        if self._before_factors is not None:
            self.preconditioner.load_state_dict(self._before_factors)
        self._before_factors = None
        self._skip_pending = False
        return loss

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:  # type: ignore[override]
        """One K-FAC step. ``closure`` (optional) re-evaluates the loss with gradients, as in ``torch.optim``."""
        loss = None
        if closure is not None:
            try:
                with torch.enable_grad():
                    loss = closure()
            except BaseException:
                self._undo(None)  # the factors as before this step's update_factors
                raise
        params = [p for group in self.param_groups for p in group["params"]]
        bad = first_nonfinite([p.grad for p in params])
        if bad is not None or self._skip_pending:
            self._undo(loss)
            if self.nonfinite == "skip":
                self.skipped_steps += 1
                return loss
            names = {p: n for n, p in self.preconditioner.model.named_parameters()}
            raise nonfinite_error(
                type(self).__name__, "gradient", names.get(params[bad or 0], f"#{bad}")
            )
        self._before_factors = None
        for group in self.param_groups:
            wd = group["weight_decay"]
            if wd:
                for p in group["params"]:
                    if p.grad is not None:
                        p.grad.add_(p, alpha=wd)
        self.preconditioner.step(lr=self.param_groups[0]["lr"])
        for group in self.param_groups:
            lr, mu = group["lr"], group["momentum"]
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if mu:
                bufs = []
                for p in params:
                    st = self.state[p]
                    if "momentum_buffer" not in st:
                        st["momentum_buffer"] = torch.zeros_like(p)
                    bufs.append(st["momentum_buffer"])
                torch._foreach_mul_(bufs, mu)  # m <- mu m + v (the first step starts from m = 0)
                torch._foreach_add_(bufs, grads)
                grads = bufs
            torch._foreach_add_(params, grads, alpha=-lr)
        return loss

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        """The optimizer's state plus the preconditioner's (key ``"kfac"``)."""
        sd = super().state_dict()
        sd["kfac"] = self.preconditioner.state_dict()
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # type: ignore[override]
        """Restore both the optimizer's and the preconditioner's state."""
        self._before_factors, self._skip_pending = None, False
        if not isinstance(state_dict, dict) or "kfac" not in state_dict:
            raise ValueError("state_dict must come from KFAC.state_dict() (it has no 'kfac' entry)")
        sd = dict(state_dict)
        kf = sd.pop("kfac")
        super().load_state_dict(sd)
        self.preconditioner.load_state_dict(kf)
