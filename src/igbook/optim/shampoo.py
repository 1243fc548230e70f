r"""Shampoo: a Kronecker-factored full-matrix AdaGrad :cite:`gupta2018shampoo`.

For a matrix parameter :math:`W\in\mathbb R^{m\times n}` with gradient :math:`G_t`, Shampoo
keeps two factor statistics and preconditions from both sides,

.. math::

    L_t = \beta_2 L_{t-1} + w\,G_tG_t^\top,\qquad
    R_t = \beta_2 R_{t-1} + w\,G_t^\top G_t,\qquad
    W_{t+1} = W_t - \eta\,(L_t + \epsilon I_m)^{-1/4}\,G_t\,(R_t + \epsilon I_n)^{-1/4},

with :math:`w = 1` when :math:`\beta_2 = 1` (the paper's sums, the default) and
:math:`w = 1-\beta_2` otherwise (the exponential moving average of
:cite:`anil2020scalable`). In vectorized form the preconditioner is
:math:`(L_t^{1/4}\otimes R_t^{1/4})^{-1}` (row-major ``vec``), a Kronecker approximation of
full-matrix AdaGrad's :math:`H_t^{1/2}`, :math:`H_t = \sum_s \operatorname{vec}(G_s)
\operatorname{vec}(G_s)^\top`; the paper's Lemma 8 gives
:math:`\tfrac1r H_t \preceq L_t^{1/2}\otimes R_t^{1/2}` for gradients of rank at most
:math:`r`. The factors have K-FAC's structure :cite:`martens2015optimizing` (for one example
:math:`G = g a^\top`: :math:`GG^\top = \|a\|^2 gg^\top`, :math:`G^\top G = \|g\|^2 aa^\top`,
the empirical-Fisher factors up to scalars), raised to the power :math:`-1/4` each instead of
:math:`-1`.

**Epsilon.** :math:`\epsilon I` is added to each factor *before* the root, at every
recomputation (the per-factor convention). With :math:`\beta_2 = 1` this is the paper's
initialization :math:`L_0 = \epsilon I_m, R_0 = \epsilon I_n`; with :math:`\beta_2 < 1` it does
not decay away. The roots are the per-factor ones (not the product-epsilon root of
:math:`R\otimes L + \epsilon I`), each computed by a symmetric eigendecomposition in float64,
eigenvalues clipped at 0 before :math:`\epsilon` is added, and cast back to the parameter's
dtype.

**Bias correction.** With :math:`\beta_2 < 1` the statistics start at zero, so after
:math:`t` steps they hold only the weight :math:`1-\beta_2^t` of a full average; without a
correction the first step is :math:`(1-\beta_2)^{-1/2}` times too long (about 32x at
:math:`\beta_2 = 0.999`) for the Kronecker roots, the diagonal fallback and AdaGrad grafting
alike. ``bias_correction=True`` (default) divides every statistic by :math:`1-\beta_2^t` before
its root, as Adam does for its second moment :cite:`kingma2015adam`; with :math:`\beta_2 = 1`
(sums) there is nothing to correct.

**Preconditioner frequency.** The statistics are updated every step; the inverse roots are
recomputed on steps :math:`1, k+1, 2k+1, \dots` (``precondition_frequency`` :math:`= k`) and
the stale roots are applied to the current gradient in between.

**Other parameters.** A tensor with more than two axes is treated as the matrix
``p.reshape(p.shape[0], -1)`` (the dimension merging of :cite:`anil2020scalable`). A vector
(and a scalar, as a vector of length 1) gets ``vector_preconditioner="diagonal"`` (default):
diagonal AdaGrad :math:`(h_t + \epsilon)^{-1/2}\odot g_t` with
:math:`h_t = \beta_2 h_{t-1} + w\,g_t^2`, the fallback of practical Shampoo
:cite:`anil2020scalable`; or ``"full"``: the paper's rule for an order-1 tensor, exponent
:math:`-1/2`, i.e. full-matrix AdaGrad :math:`(L_t + \epsilon I)^{-1/2} g_t`.

**Grafting** :cite:`anil2020scalable`. With ``grafting="sgd"`` or ``"adagrad"`` each
parameter's Shampoo direction :math:`P` is rescaled to the Frobenius norm of the grafted
optimizer's direction :math:`A` (:math:`A = G` for SGD,
:math:`A = (h_t+\epsilon)^{-1/2}\odot G` for diagonal AdaGrad with the same :math:`\beta_2`):
:math:`D = \|A\|_F\,P/\|P\|_F` (:math:`D = 0` when :math:`P = 0`). ``"none"``: :math:`D = P`.

**Momentum and weight decay.** ``weight_decay`` :math:`\lambda` is added to the gradient
before the statistics (:math:`G \leftarrow G + \lambda W`), or with
``decoupled_weight_decay=True`` applied as :math:`W \leftarrow (1-\eta\lambda)W`. Momentum is
heavy ball on the final direction: :math:`M \leftarrow \mu M + D`, :math:`W \leftarrow W - \eta M`.

**Differences from pytorch-optimizer's** ``Shampoo`` (checked step for step in
``tests/test_shampoo.py`` where both coincide: ``momentum=0``, ``precondition_frequency=1``,
``beta2=1``, ``vector_preconditioner="full"``, no grafting, coupled weight decay). There the
roots are first computed at step :math:`k` (the update is zero before), momentum mixes the
previous *preconditioned* update into the gradient before the statistics, tensors of order
:math:`k` get one factor per axis with exponent :math:`-1/(2k)`, and the roots come from an
SVD; there is no :math:`\beta_2` and no grafting.

**Failures** (``igbook._safety``): a non-finite gradient raises
:class:`~igbook._safety.NonFiniteStepError` naming the parameter before anything is written
(``nonfinite="skip"``: the step is skipped and counted in ``skipped_steps``); a closure that
raises leaves nothing changed; a step whose result would be non-finite is undone and then
raises (or is skipped).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from igbook._safety import Snapshot, check_nonfinite_mode, first_nonfinite, nonfinite_error
from igbook._validation import (
    check_choice,
    check_integer,
    check_nonnegative_real,
    check_positive_real,
    check_scalar,
)

__all__ = ["GRAFTING_TYPES", "VECTOR_PRECONDITIONERS", "Shampoo"]

#: the grafting types of :class:`Shampoo`
GRAFTING_TYPES = ("none", "sgd", "adagrad")
#: what :class:`Shampoo` does with vectors (and scalars)
VECTOR_PRECONDITIONERS = ("diagonal", "full")


def _inverse_root(stat: Tensor, eps: float, root: int) -> Tensor:
    r""":math:`(S + \epsilon I)^{-1/\text{root}}` by a float64 symmetric eigendecomposition."""
    m = stat.to(torch.float64)
    m = 0.5 * (m + m.T)
    evals, evecs = torch.linalg.eigh(m)
    scale = (evals.clamp_min(0.0) + eps).pow(-1.0 / root)
    return ((evecs * scale) @ evecs.T).to(stat.dtype)


def _check_group(group: dict[str, Any]) -> None:
    check_positive_real(group["lr"], "lr")
    check_scalar(group["beta2"], "beta2", low=0.0, high=1.0, closed_low=False)
    check_positive_real(group["eps"], "eps")
    check_scalar(group["momentum"], "momentum", low=0.0, high=1.0, closed_high=False)
    check_nonnegative_real(group["weight_decay"], "weight_decay")
    if not isinstance(group["decoupled_weight_decay"], bool):
        raise TypeError(
            "decoupled_weight_decay must be a bool, got "
            f"{type(group['decoupled_weight_decay']).__name__}"
        )
    check_integer(group["precondition_frequency"], "precondition_frequency", minimum=1)
    check_choice(group["grafting"], "grafting", GRAFTING_TYPES)
    check_choice(group["vector_preconditioner"], "vector_preconditioner", VECTOR_PRECONDITIONERS)
    if not isinstance(group.get("bias_correction", True), bool):
        raise TypeError(
            f"bias_correction must be a bool, got {type(group['bias_correction']).__name__}"
        )


class Shampoo(Optimizer):
    r"""Shampoo :cite:`gupta2018shampoo` with the options of :cite:`anil2020scalable`.

    .. math::

        W \leftarrow W - \eta\,(L_t + \epsilon I)^{-1/4}\,G_t\,(R_t + \epsilon I)^{-1/4},
        \quad L_t = \beta_2 L_{t-1} + w\,G_tG_t^\top,\quad R_t = \beta_2 R_{t-1} + w\,G_t^\top G_t

    (module docstring: epsilon convention, frequency, vectors, grafting, momentum).

    Parameters
    ----------
    params
        Iterable of tensors or of param-group dicts.
    lr
        Step size :math:`\eta > 0`.
    beta2
        Decay of the statistics in :math:`(0, 1]`; 1 (default) sums them as the paper does
        (:math:`w = 1`), otherwise :math:`w = 1-\beta_2`.
    eps
        :math:`\epsilon > 0` added to each factor (and to the diagonal statistics) before the root.
    momentum
        Heavy-ball coefficient :math:`\mu\in[0, 1)` on the final direction.
    weight_decay, decoupled_weight_decay
        :math:`\lambda \ge 0`, added to the gradient (default) or decoupled.
    precondition_frequency
        :math:`k\ge 1`: the inverse roots are recomputed every :math:`k` steps (from step 1).
    grafting
        ``"none"`` (default), ``"sgd"`` or ``"adagrad"``: the norm each update is rescaled to.
    vector_preconditioner
        ``"diagonal"`` (default, diagonal AdaGrad) or ``"full"`` (full-matrix AdaGrad).
    bias_correction
        Divide the statistics by :math:`1-\beta_2^t` before their roots when :math:`\beta_2 < 1`
        (default ``True``; module docstring).
    nonfinite
        ``"raise"`` (default) or ``"skip"``: what a step does with a non-finite gradient.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        *,
        beta2: float = 1.0,
        eps: float = 1e-6,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
        precondition_frequency: int = 1,
        grafting: str = "none",
        vector_preconditioner: str = "diagonal",
        bias_correction: bool = True,
        nonfinite: str = "raise",
    ) -> None:
        self.nonfinite = check_nonfinite_mode(nonfinite)
        #: number of steps skipped under ``nonfinite="skip"``
        self.skipped_steps = 0
        defaults = {
            "lr": lr,
            "beta2": beta2,
            "eps": eps,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "decoupled_weight_decay": decoupled_weight_decay,
            "precondition_frequency": precondition_frequency,
            "grafting": grafting,
            "vector_preconditioner": vector_preconditioner,
            "bias_correction": bias_correction,
        }
        _check_group(defaults)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        _check_group(group)
        for p in group["params"]:
            if p.is_complex() or not p.is_floating_point():
                raise TypeError(f"Shampoo needs real floating-point parameters, got {p.dtype}")

    # -- the step ------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:  # type: ignore[override]
        """One Shampoo step; ``closure`` (optional) re-evaluates the loss and calls ``backward()``.

        Returns the closure's loss (``None`` without a closure). Nothing is written before the
        closure returns and every gradient has been checked.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        items = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise TypeError("Shampoo does not support sparse gradients")
                items.append((p, group))
        if not items:
            return loss
        bad = first_nonfinite([p.grad for p, _ in items])
        if bad is not None:
            if self.nonfinite == "skip":
                self.skipped_steps += 1
                return loss
            p = items[bad][0]
            raise nonfinite_error("Shampoo", "gradient", f"#{bad} (shape {tuple(p.shape)})")
        params = [p for p, _ in items]
        snap = Snapshot(params, self.state)
        try:
            for p, group in items:
                self._update(p, group)
            bad = first_nonfinite(params)
        except BaseException:
            snap.restore()
            raise
        if bad is not None:
            snap.restore()
            if self.nonfinite == "skip":
                self.skipped_steps += 1
                return loss
            p = items[bad][0]
            raise nonfinite_error("Shampoo", "update", f"#{bad} (shape {tuple(p.shape)})")
        return loss

    def _update(self, p: Tensor, group: dict[str, Any]) -> None:
        lr, beta2, eps = group["lr"], group["beta2"], group["eps"]
        wd, mom = group["weight_decay"], group["momentum"]
        w = 1.0 if beta2 == 1.0 else 1.0 - beta2
        grad = p.grad.detach()
        if wd != 0.0 and not group["decoupled_weight_decay"]:
            grad = grad.add(p.detach(), alpha=wd)
        state = self.state[p]
        if "step" not in state:
            state["step"] = 0
        state["step"] += 1
        recompute = (state["step"] - 1) % group["precondition_frequency"] == 0
        # 1 - beta2^t: the weight the zero-started statistics hold (module docstring)
        c = 1.0
        if beta2 < 1.0 and group.get("bias_correction", True):
            c = 1.0 - beta2 ** state["step"]
        if p.ndim >= 2:
            g = grad.reshape(p.shape[0], -1)
            for key, stat in (("L", g @ g.T), ("R", g.T @ g)):
                if key not in state:
                    state[key] = torch.zeros_like(stat)
                    state[key + "_root"] = torch.zeros_like(stat)
                state[key].mul_(beta2).add_(stat, alpha=w)
                if recompute:
                    state[key + "_root"].copy_(_inverse_root(state[key] / c, eps, 4))
            direction = (state["L_root"] @ g @ state["R_root"]).reshape(p.shape)
        elif group["vector_preconditioner"] == "full":
            g = grad.reshape(-1, 1)
            if "L" not in state:
                state["L"] = torch.zeros(g.shape[0], g.shape[0], dtype=p.dtype, device=p.device)
                state["L_root"] = torch.zeros_like(state["L"])
            state["L"].mul_(beta2).add_(g @ g.T, alpha=w)
            if recompute:
                state["L_root"].copy_(_inverse_root(state["L"] / c, eps, 2))
            direction = (state["L_root"] @ g).reshape(p.shape)
        else:
            direction = self._diagonal(state, "h", grad, beta2, w, eps, c)
        graft = group["grafting"]
        if graft != "none":
            graft_dir = (
                grad if graft == "sgd" else self._diagonal(state, "graft_h", grad, beta2, w, eps, c)
            )
            target = graft_dir.norm()
            norm = direction.norm()
            ratio = torch.where(norm > 0, target / torch.where(norm > 0, norm, 1.0), 0.0)
            direction = direction * ratio
        if mom != 0.0:
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p)
            direction = state["momentum_buffer"].mul_(mom).add_(direction)
        if wd != 0.0 and group["decoupled_weight_decay"]:
            p.mul_(1.0 - lr * wd)
        p.add_(direction, alpha=-lr)

    @staticmethod
    def _diagonal(
        state: dict[str, Any],
        key: str,
        grad: Tensor,
        beta2: float,
        w: float,
        eps: float,
        c: float = 1.0,
    ) -> Tensor:
        r"""Diagonal AdaGrad :math:`(h/c+\epsilon)^{-1/2}\odot g` after :math:`h\leftarrow\beta_2h+wg^2`
        (:math:`c = 1-\beta_2^t` with bias correction, else 1)."""
        if key not in state:
            state[key] = torch.zeros_like(grad)
        state[key].mul_(beta2).addcmul_(grad, grad, value=w)
        return grad / (state[key] / c + eps).sqrt()
