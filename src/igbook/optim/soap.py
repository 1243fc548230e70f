r"""SOAP: Adam in the eigenbasis of Shampoo's Kronecker factors.

For a matrix parameter :math:`W\in\mathbb R^{m\times n}` with gradient :math:`G_t`, SOAP
:cite:`vyas2024soap` keeps Shampoo's two Kronecker factors :cite:`gupta2018shampoo`

.. math::

    L_t = \beta_s L_{t-1} + (1-\beta_s)\,G_tG_t^\top,\qquad
    R_t = \beta_s R_{t-1} + (1-\beta_s)\,G_t^\top G_t,

their eigenbases :math:`Q_L, Q_R` (columns ordered by decreasing eigenvalue), and runs Adam
:cite:`kingma2015adam` in the rotated coordinates :math:`G' = Q_L^\top G Q_R`:

.. math::

    M_t &= \beta_1 M_{t-1} + (1-\beta_1)\,G_t \quad\text{(kept in the original space)},\\
    V_t &= \beta_2 V_{t-1} + (1-\beta_2)\,(Q_L^\top G_t Q_R)^{\odot 2}
          \quad\text{(kept in the rotated space)},\\
    W &\leftarrow (1-\eta\lambda)\,W - \frac{\eta}{1-\beta_1^{s}}\;
          Q_L\Big[\frac{Q_L^\top M_t Q_R}{\sqrt{V_t/(1-\beta_2^{s})}+\epsilon}\Big]Q_R^\top ,

with :math:`s` the number of moment updates so far and :math:`\lambda` the decoupled weight
decay :cite:`loshchilov2019decoupled`. A tensor with :math:`k` dimensions gets one factor per
dimension (the mode-:math:`d` Gram matrix :math:`G_{(d)}G_{(d)}^\top`) and the rotation
:math:`G\times_1Q_1^\top\cdots\times_kQ_k^\top`; a dimension larger than
``max_precondition_dim`` keeps the identity.

**Why Adam in this basis (the EKFAC argument).** If the gradient covariance is exactly a
Kronecker product, :math:`\E[\mathrm{vec}(G)\mathrm{vec}(G)^\top]=C\otimes B`, then
:math:`\E[GG^\top]=\operatorname{tr}(C)\,B` and :math:`\E[G^\top G]=\operatorname{tr}(B)\,C`
share their eigenvectors with :math:`B` and :math:`C`, and the second moment of the rotated
gradient is the spectrum of the curvature,

.. math::

    \E\big[(Q_B^\top G Q_C)_{ij}^2\big] = \lambda_i(B)\,\lambda_j(C),

so Adam's diagonal :math:`V` re-estimates the eigenvalues of the Fisher in the Kronecker
eigenbasis, exactly as eigenvalue-corrected K-FAC does :cite:`george2018fast`; when the
covariance is not Kronecker, that diagonal is still the best one (in Frobenius norm) in that
basis, better than the products of the factors' eigenvalues that K-FAC uses.

**Choices (and how they compare with the authors' code and ``pytorch_optimizer.SOAP``).**

* The first step of a parameter only accumulates the factors and computes the first eigenbasis
  (a full ``eigh``); it moves nothing, as in the authors' implementation.
* After that, the factors are updated after each step with the step's gradient, and every
  ``precondition_frequency`` moment updates the basis is refreshed by one power iteration
  followed by a QR decomposition :cite:`vyas2024soap`: :math:`P = L Q`, the columns ordered
  by the estimated eigenvalues :math:`\operatorname{diag}(Q^\top L Q)` (decreasing, the entries
  of :math:`V` permuted along with them), :math:`Q\leftarrow\operatorname{qr}(P)`. :math:`V` is
  not rotated into the new basis (as in the paper). ``eigh`` and ``qr`` run in float64 and the
  result is cast to the parameter's dtype (``pytorch_optimizer`` does the QR in float32).
* :math:`\epsilon` is added to the bias-corrected :math:`\sqrt{V/(1-\beta_2^s)}`, as in
  ``torch.optim.Adam``; the authors' code adds it before the bias correction (the two agree at
  :math:`\epsilon=0`).
* Weight decay multiplies the parameter before the update, as ``torch.optim.AdamW``; the
  authors' code decays after the update (a difference of order :math:`\eta^2\lambda`).
* Parameters with fewer than two dimensions (biases) get plain Adam unless
  ``precondition_1d=True``, which rotates them by the eigenbasis of
  :math:`\E[gg^\top]` (one-sided, full matrix), as the reference does.
* After the first step a factor has the rank of one gradient; the part of its eigenbasis in
  the null space is whatever ``eigh`` returns (as in the reference), and Adam's coordinatewise
  scaling in that part depends on it, so runs that differ only by rounding (float32 against
  float64, say) may differ at the first moving step when a factor is rank deficient.
* No dimension merging, gradient normalization or maximization.

**Failures** follow ``igbook._safety``: a non-finite gradient raises
:class:`~igbook._safety.NonFiniteStepError` (``nonfinite="skip"``: the step is skipped and
counted in ``skipped_steps``) before anything is written, and a step that raises leaves
parameters and state as before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from igbook._safety import Snapshot, check_nonfinite_mode, first_nonfinite, nonfinite_error
from igbook._validation import (
    check_count,
    check_nonnegative_real,
    check_scalar,
)

__all__ = ["SOAP", "eigenbasis", "mode_gram", "refresh_eigenbasis", "soap_rotate"]


def _check_tensor(x: Any, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} must be finite")
    return x


def _check_square(x: Any, name: str) -> Tensor:
    x = _check_tensor(x, name)
    if x.ndim != 2 or x.shape[0] != x.shape[1] or x.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty square matrix, got shape {tuple(x.shape)}")
    return x


def mode_gram(grad: Tensor, dim: int) -> Tensor:
    r"""The mode-``dim`` Gram matrix :math:`G_{(d)}G_{(d)}^\top` of a tensor.

    :math:`G_{(d)}` is the unfolding of ``grad`` with dimension ``dim`` as rows; for a matrix,
    ``dim=0`` gives :math:`GG^\top` and ``dim=1`` gives :math:`G^\top G`, Shampoo's two factor
    statistics :cite:`gupta2018shampoo`; for a vector it is the outer product :math:`gg^\top`.

    Parameters
    ----------
    grad
        A finite floating-point tensor with at least one dimension.
    dim
        The dimension, ``0 <= dim < grad.ndim``.

    Returns
    -------
    Tensor
        Symmetric positive semi-definite, shape ``(grad.shape[dim], grad.shape[dim])``.
    """
    grad = _check_tensor(grad, "grad")
    if grad.ndim == 0:
        raise ValueError("grad must have at least one dimension")
    dim = check_count(dim, "dim", minimum=0)
    if dim >= grad.ndim:
        raise ValueError(f"dim must be < grad.ndim = {grad.ndim}, got {dim}")
    other = [d for d in range(grad.ndim) if d != dim]
    return torch.tensordot(grad, grad, dims=(other, other))


def eigenbasis(factor: Tensor) -> Tensor:
    r"""Eigenvectors of a symmetric factor, columns ordered by decreasing eigenvalue.

    :math:`L = Q\Lambda Q^\top` with :math:`\lambda_1\ge\lambda_2\ge\cdots`, computed by
    ``torch.linalg.eigh`` in float64 and returned in the factor's dtype :cite:`vyas2024soap`.

    Parameters
    ----------
    factor
        A finite symmetric matrix, shape ``(n, n)``.

    Returns
    -------
    Tensor
        Orthogonal ``(n, n)`` matrix :math:`Q`.
    """
    factor = _check_square(factor, "factor")
    _, q = torch.linalg.eigh(factor.to(torch.float64))
    return q.flip(1).to(factor.dtype)


def refresh_eigenbasis(factor: Tensor, basis: Tensor) -> tuple[Tensor, Tensor]:
    r"""One power iteration and a QR decomposition: SOAP's cheap eigenbasis update.

    With :math:`P = LQ` and the estimated eigenvalues :math:`\hat\lambda = \operatorname{diag}
    (Q^\top L Q)`, the columns of :math:`P` are put in decreasing order of :math:`\hat\lambda`
    and :math:`Q_{\text{new}}` is the orthogonal factor of :math:`\operatorname{qr}(P)`
    :cite:`vyas2024soap`. Computed in float64, returned in the factor's dtype.

    Parameters
    ----------
    factor
        The symmetric factor :math:`L`, shape ``(n, n)``.
    basis
        The current orthogonal basis :math:`Q`, shape ``(n, n)``.

    Returns
    -------
    (Tensor, Tensor)
        The new basis and the order (a permutation of ``range(n)``) applied to the columns,
        by which the entries of Adam's second moment along this dimension are permuted.
    """
    factor = _check_square(factor, "factor")
    basis = _check_square(basis, "basis")
    if basis.shape != factor.shape:
        raise ValueError(
            f"basis must have the factor's shape {tuple(factor.shape)}, got {tuple(basis.shape)}"
        )
    f64, q64 = factor.to(torch.float64), basis.to(torch.float64)
    p = f64 @ q64
    order = torch.argsort((q64 * p).sum(0), descending=True)
    q, _ = torch.linalg.qr(p[:, order])
    return q.to(factor.dtype), order


def soap_rotate(x: Tensor, bases: Sequence[Tensor | None], inverse: bool = False) -> Tensor:
    r"""Rotate a tensor into (or, with ``inverse=True``, out of) the Kronecker eigenbasis.

    Forward: :math:`x\times_1Q_1^\top\times_2Q_2^\top\cdots` (for a matrix,
    :math:`Q_L^\top X Q_R`); inverse: :math:`x\times_1Q_1\times_2Q_2\cdots` (for a matrix,
    :math:`Q_L X Q_R^\top`). A ``None`` entry leaves that dimension as it is
    :cite:`vyas2024soap`.

    Parameters
    ----------
    x
        A floating-point tensor.
    bases
        One entry per dimension of ``x``: an orthogonal ``(n_d, n_d)`` matrix or ``None``.
    inverse
        Rotate back to the original coordinates.

    Returns
    -------
    Tensor
        The rotated tensor, shape of ``x``.
    """
    x = _check_tensor(x, "x")
    if isinstance(bases, Tensor) or not isinstance(bases, Sequence):
        raise TypeError(f"bases must be a sequence of tensors or None, got {type(bases).__name__}")
    if len(bases) != x.ndim:
        raise ValueError(
            f"bases must hold one entry per dimension of x ({x.ndim}), got {len(bases)}"
        )
    for d, q in enumerate(bases):
        if q is not None and (not isinstance(q, Tensor) or q.shape != (x.shape[d], x.shape[d])):
            raise ValueError(
                f"bases[{d}] must be None or a ({x.shape[d]}, {x.shape[d]}) tensor, got "
                f"{tuple(q.shape) if isinstance(q, Tensor) else type(q).__name__}"
            )
    if not isinstance(inverse, bool):
        raise TypeError(f"inverse must be a bool, got {type(inverse).__name__}")
    return _rotate(x, bases, inverse)


def _rotate(x: Tensor, bases: Sequence[Tensor | None], inverse: bool) -> Tensor:
    """:func:`soap_rotate` without the checks (the optimizer's inner loop)."""
    for d, q in enumerate(bases):
        if q is None:
            continue
        qt = q if inverse else q.T
        x = torch.movedim(torch.tensordot(qt, x, dims=([1], [d])), 0, d)
    return x


def _check_betas(betas: Any) -> tuple[float, float]:
    if isinstance(betas, (str, bytes)) or not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise TypeError(f"betas must be a pair of numbers, got {betas!r}")
    return (
        check_scalar(betas[0], "betas[0]", low=0.0, high=1.0, closed_high=False),
        check_scalar(betas[1], "betas[1]", low=0.0, high=1.0, closed_high=False),
    )


def _check_hyper(group: dict[str, Any]) -> None:
    check_nonnegative_real(group["lr"], "lr")
    _check_betas(group["betas"])
    if group["shampoo_beta"] is not None:
        check_scalar(group["shampoo_beta"], "shampoo_beta", low=0.0, high=1.0, closed_high=False)
    check_nonnegative_real(group["eps"], "eps")
    check_nonnegative_real(group["weight_decay"], "weight_decay")
    check_count(group["precondition_frequency"], "precondition_frequency")
    check_count(group["max_precondition_dim"], "max_precondition_dim")
    if not isinstance(group["precondition_1d"], bool):
        raise TypeError(
            f"precondition_1d must be a bool, got {type(group['precondition_1d']).__name__}"
        )


class SOAP(Optimizer):
    r"""SOAP :cite:`vyas2024soap`: Adam :cite:`kingma2015adam` in the eigenbasis of Shampoo's
    factors :cite:`gupta2018shampoo` (the module docstring has the update and the choices).

    .. math::

        W \leftarrow (1-\eta\lambda)W - \frac{\eta}{1-\beta_1^s}\,
        Q_L\Big[\frac{Q_L^\top M Q_R}{\sqrt{V/(1-\beta_2^s)}+\epsilon}\Big]Q_R^\top,
        \qquad V = \mathrm{EMA}_{\beta_2}\big[(Q_L^\top G Q_R)^{\odot2}\big].

    Parameters
    ----------
    params
        Parameters or param groups (each group may override every hyperparameter below).
    lr
        Learning rate :math:`\eta \ge 0`.
    betas
        :math:`(\beta_1, \beta_2)` in :math:`[0, 1)`, Adam's moment decays.
    shampoo_beta
        :math:`\beta_s\in[0,1)`, decay of the Kronecker factors; ``None`` uses :math:`\beta_2`.
    eps
        :math:`\epsilon\ge0`, added to the bias-corrected root of :math:`V`.
    weight_decay
        Decoupled weight decay :math:`\lambda \ge 0` :cite:`loshchilov2019decoupled`.
    precondition_frequency
        Moment updates between eigenbasis refreshes (one power iteration + QR).
    max_precondition_dim
        Dimensions larger than this keep the identity basis.
    precondition_1d
        Rotate parameters with one dimension by the eigenbasis of :math:`\E[gg^\top]`
        (default: plain Adam for them).
    nonfinite
        ``"raise"`` or ``"skip"``: what a step does with a NaN or infinite gradient.

    Notes
    -----
    State per parameter: ``step`` (moment updates so far), ``exp_avg`` (:math:`M`, original
    space), ``exp_avg_sq`` (:math:`V`, rotated space), ``factors`` and ``bases`` (one entry
    per dimension, ``None`` where the identity is kept).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 3e-3,
        betas: tuple[float, float] = (0.95, 0.95),
        shampoo_beta: float | None = None,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        precondition_frequency: int = 10,
        max_precondition_dim: int = 10000,
        precondition_1d: bool = False,
        nonfinite: str = "raise",
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=betas,
            shampoo_beta=shampoo_beta,
            eps=eps,
            weight_decay=weight_decay,
            precondition_frequency=precondition_frequency,
            max_precondition_dim=max_precondition_dim,
            precondition_1d=precondition_1d,
        )
        _check_hyper(defaults)
        self.nonfinite = check_nonfinite_mode(nonfinite)
        #: number of steps skipped under ``nonfinite="skip"``
        self.skipped_steps = 0
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a param group; its hyperparameters are validated like the constructor's."""
        super().add_param_group(param_group)
        _check_hyper(self.param_groups[-1])

    def _init_state(self, p: Tensor, g: Tensor, group: dict[str, Any]) -> None:
        state = self.state[p]
        state["step"] = 0
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        maxdim = group["max_precondition_dim"]
        use = p.ndim >= 2 or (p.ndim == 1 and group["precondition_1d"])
        state["factors"] = [
            torch.zeros(n, n, dtype=p.dtype, device=p.device) if use and n <= maxdim else None
            for n in p.shape
        ]
        self._accumulate(state, g, group)
        state["bases"] = [None if f is None else eigenbasis(f) for f in state["factors"]]

    @staticmethod
    def _accumulate(state: dict[str, Any], g: Tensor, group: dict[str, Any]) -> None:
        beta_s = group["shampoo_beta"]
        if beta_s is None:
            beta_s = group["betas"][1]
        for d, f in enumerate(state["factors"]):
            if f is not None:
                other = [k for k in range(g.ndim) if k != d]
                f.lerp_(torch.tensordot(g, g, dims=(other, other)), 1.0 - beta_s)

    def _update(self, p: Tensor, g: Tensor, group: dict[str, Any]) -> None:
        state = self.state[p]
        if len(state) == 0:
            self._init_state(p, g, group)
            return
        beta1, beta2 = group["betas"]
        lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
        state["step"] += 1
        s = state["step"]
        bases = state["bases"]
        m, v = state["exp_avg"], state["exp_avg_sq"]
        if wd != 0:
            p.mul_(1.0 - lr * wd)
        rotated = any(q is not None for q in bases)
        gr = _rotate(g, bases, False) if rotated else g
        m.lerp_(g, 1.0 - beta1)
        v.mul_(beta2).addcmul_(gr, gr, value=1.0 - beta2)
        bc1 = 1.0 - beta1**s
        bc2_sqrt = (1.0 - beta2**s) ** 0.5
        denom = (v.sqrt() / bc2_sqrt).add_(eps)
        if rotated:
            p.add_(_rotate(_rotate(m, bases, False) / denom, bases, True), alpha=-lr / bc1)
            self._accumulate(state, g, group)
            if s % group["precondition_frequency"] == 0:
                new = []
                for d, (f, q) in enumerate(zip(state["factors"], bases, strict=True)):
                    if f is None:
                        new.append(None)
                        continue
                    q_new, order = refresh_eigenbasis(f, q)
                    state["exp_avg_sq"] = state["exp_avg_sq"].index_select(d, order)
                    new.append(q_new)
                state["bases"] = new
        else:
            p.addcdiv_(m, denom, value=-lr / bc1)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:  # type: ignore[override]
        """One SOAP step (the first one for a parameter only initializes its factors).

        Parameters
        ----------
        closure
            Re-evaluates the model and returns the loss (called with gradients enabled).

        Returns
        -------
        Tensor or None
            The closure's loss.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        items = [(p, group) for group in self.param_groups for p in group["params"]]
        live = [(p, group) for p, group in items if p.grad is not None]
        for p, _ in live:
            if p.grad.is_sparse:
                raise TypeError("SOAP does not support sparse gradients")
        bad = first_nonfinite([p.grad for p, _ in live])
        if bad is not None:
            if self.nonfinite == "skip":
                self.skipped_steps += 1
                return loss
            idx = next(i for i, (q, _) in enumerate(items) if q is live[bad][0])
            raise nonfinite_error(
                type(self).__name__, "gradient", f"#{idx} (shape {tuple(live[bad][0].shape)})"
            )
        snap = Snapshot([p for p, _ in live], self.state)
        try:
            for p, group in live:
                self._update(p, p.grad.to(p.dtype), group)
        except BaseException:
            snap.restore()
            raise
        return loss
