r"""Muon: momentum orthogonalized by Newton-Schulz :cite:`jordan2024muon`.

Muon is steepest descent under the spectral norm (:func:`igbook.optim.spectral_direction`)
applied to a momentum of the gradient of each hidden weight matrix :cite:`bernstein2024old`:
the update :math:`UV^\top` (the orthogonal polar factor of the momentum :math:`B = U\Sigma V^\top`)
changes every singular direction by the same amount. :math:`UV^\top` is approximated without an
SVD by an odd matrix polynomial iterated a few times (:func:`newton_schulz`), cheap in low
precision on accelerators.

Non-matrix parameters (biases, gains) and the embedding and output layers are not hidden weight
matrices: the Muon references train them with AdamW :cite:`jordan2024muon`. :class:`Muon` does the
same inside one optimizer: a param group with ``use_muon=False`` is updated by AdamW
:cite:`loshchilov2019decoupled`, and :func:`muon_param_groups` splits a model's parameters into
the two kinds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from igbook._safety import Snapshot, check_nonfinite_mode, first_nonfinite, nonfinite_error
from igbook._validation import (
    as_tensor,
    check_choice,
    check_finite,
    check_integer,
    check_nonnegative_real,
    check_positive_real,
    check_real,
    check_scalar,
)

__all__ = [
    "ADJUST_LR_FNS",
    "QUINTIC_COEFFICIENTS",
    "Muon",
    "muon_lr_scale",
    "muon_param_groups",
    "newton_schulz",
    "polar_factor",
]

#: the quintic coefficients (a, b, c) of Jordan et al.: the largest slope a at 0 for which five
#: iterations still map (0, 1] into a band around 1
QUINTIC_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
#: the learning-rate adjustments of :class:`Muon` (None is "original")
ADJUST_LR_FNS = ("original", "match_rms_adamw")


def _matrix(G: Any, name: str) -> Tensor:
    t = as_tensor(G, name)
    if t.ndim != 2 or t.numel() == 0:
        raise ValueError(
            f"{name} must be a non-empty matrix (2-D tensor), got shape {tuple(t.shape)}"
        )
    return check_finite(t, name)


def _coefficients(coefficients: Any) -> tuple[float, float, float]:
    if not isinstance(coefficients, Sequence) or isinstance(coefficients, str):
        raise TypeError(
            f"coefficients must be a sequence of three real numbers, got {type(coefficients).__name__}"
        )
    if len(coefficients) != 3:
        raise ValueError(f"coefficients must hold three numbers (a, b, c), got {len(coefficients)}")
    a, b, c = (check_real(x, "coefficients") for x in coefficients)
    return a, b, c


def polar_factor(G: Tensor) -> Tensor:
    r"""The orthogonal polar factor :math:`UV^\top` of :math:`G = U\Sigma V^\top` (thin SVD), exactly.

    The reference that :func:`newton_schulz` approximates: :math:`G = (UV^\top)(V\Sigma V^\top)`,
    and :math:`UV^\top` is the nearest semi-orthogonal matrix to :math:`G` in the Frobenius norm
    :cite:`higham2008functions`. For a rank-deficient :math:`G` the SVD completes :math:`U, V`
    arbitrarily (see :func:`igbook.optim.spectral_direction` for the range-restricted factor).

    Parameters
    ----------
    G
        A matrix of shape ``(m, n)``.
    """
    G = _matrix(G, "G")
    u, _, vh = torch.linalg.svd(G, full_matrices=False)
    return u @ vh


def newton_schulz(
    G: Tensor,
    steps: int = 5,
    coefficients: Sequence[float] = QUINTIC_COEFFICIENTS,
    eps: float = 1e-7,
    *,
    dtype: torch.dtype | None = None,
) -> Tensor:
    r"""Approximate the polar factor :math:`UV^\top` of :math:`G` by a Newton-Schulz iteration.

    With :math:`X_0 = G/\max(\|G\|_F, \epsilon)` (so :math:`\sigma_{\max}(X_0)\le 1`; a tall
    :math:`G` is transposed first, so that :math:`A` below is the smaller Gram matrix, and the
    result is transposed back),

    .. math::
        A_k = X_k X_k^\top, \qquad X_{k+1} = aX_k + (bA_k + cA_k^2)X_k
        = U\,p(\Sigma_k)\,V^\top,\quad p(\sigma) = a\sigma + b\sigma^3 + c\sigma^5 .

    The iteration acts on each singular value separately. The classic cubic Newton-Schulz
    :math:`(a,b,c) = (3/2,-1/2,0)` converges quadratically to :math:`\sigma=1`, hence to
    :math:`UV^\top` :cite:`higham2008functions`. Muon's quintic :data:`QUINTIC_COEFFICIENTS`
    maximize the slope :math:`a` at 0 (small singular values grow fastest) and accept that the
    fixed point is a band around 1 rather than 1: :math:`p` maps the band
    :math:`[0.682, 1.134]` into itself, after five steps singular values in :math:`[10^{-3}, 1]`
    land in :math:`[0.47, 1.21]` and after seven in the band (measured in ``tests/test_muon.py``)
    :cite:`jordan2024muon`.

    Parameters
    ----------
    G
        A matrix of shape ``(m, n)``.
    steps
        Number of iterations (>= 0).
    coefficients
        :math:`(a, b, c)`.
    eps
        Lower bound of the normalizing norm (a zero :math:`G` gives zeros).
    dtype
        Precision of the iteration (``torch.bfloat16`` as Muon on accelerators); the result is
        in that dtype. Default: ``G``'s dtype.
    """
    G = _matrix(G, "G")
    steps = check_integer(steps, "steps", minimum=0)
    a, b, c = _coefficients(coefficients)
    eps = check_positive_real(eps, "eps")
    if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    return newton_schulz_unchecked(G, steps, (a, b, c), eps, dtype or G.dtype)


def newton_schulz_unchecked(
    G: Tensor, steps: int, coefficients: tuple[float, float, float], eps: float, dtype: torch.dtype
) -> Tensor:
    """:func:`newton_schulz` without argument checks (the optimizer's inner loop; unchecked by
    design: :class:`Muon` validates its hyperparameters once and its gradients each step)."""
    a, b, c = coefficients
    tall = G.shape[0] > G.shape[1]
    X = G.to(dtype)
    if tall:
        X = X.T
    X = X / X.norm().clamp(min=eps)
    for _ in range(steps):
        A = X @ X.T
        # b A + c A^2 and a X + B X, each as one fused product-and-sum
        B = torch.addmm(A, A, A, beta=b, alpha=c)
        X = torch.addmm(X, B, X, beta=a)
    return X.T if tall else X


def muon_lr_scale(shape: Sequence[int], adjust_lr_fn: str | None = None) -> float:
    r"""The factor that :class:`Muon` multiplies the learning rate by for a ``(rows, cols)`` matrix.

    ``"original"`` (and ``None``): :math:`\sqrt{\max(1, \text{rows}/\text{cols})}`
    :cite:`jordan2024muon`; ``"match_rms_adamw"``: :math:`0.2\sqrt{\max(\text{rows},\text{cols})}`,
    which gives the update the root-mean-square of a typical AdamW update, so that AdamW's learning
    rate and weight decay carry over :cite:`liu2025muon`.

    Parameters
    ----------
    shape
        ``(rows, cols)``.
    adjust_lr_fn
        ``None``, ``"original"`` or ``"match_rms_adamw"``.
    """
    if adjust_lr_fn is not None:
        check_choice(adjust_lr_fn, "adjust_lr_fn", ADJUST_LR_FNS)
    if isinstance(shape, Tensor) or not isinstance(shape, Sequence) or len(shape) != 2:
        raise TypeError(f"shape must be a pair (rows, cols), got {shape!r}")
    rows, cols = (check_integer(s, "shape", minimum=1) for s in shape)
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    return math.sqrt(max(1, rows / cols))


def muon_param_groups(
    model: nn.Module, *, head: bool = True, exclude: Iterable[str] = ()
) -> list[dict[str, Any]]:
    r"""Split a model's parameters into Muon's hidden weight matrices and the AdamW rest.

    Muon is for the 2-D weights of hidden layers; the references train everything else with AdamW:
    1-D and scalar parameters (biases, normalization gains), embeddings (``nn.Embedding``), the
    output layer (the last ``nn.Linear`` of the model, when ``head=True``), and, here, any
    parameter of more than two dimensions (convolutions would need a reshape that this
    implementation leaves to the user) :cite:`jordan2024muon`. Returns two param groups for
    :class:`Muon`: ``{"params": [...], "use_muon": True}`` and ``{"params": [...], "use_muon":
    False}`` (a group is left out when empty).

    Parameters
    ----------
    model
        The network.
    head
        Whether the last ``nn.Linear`` (the output layer) goes to AdamW.
    exclude
        Parameter names (as in ``model.named_parameters()``) or module-name prefixes sent to
        AdamW as well.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(exclude, str):
        exclude = (exclude,)
    prefixes = tuple(exclude)
    if not all(isinstance(p, str) for p in prefixes):
        raise TypeError("exclude must be an iterable of parameter or module names (strings)")
    aside: set[int] = set()
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if head and linears:
        aside.update(id(p) for p in linears[-1].parameters())
    for m in model.modules():
        if isinstance(m, nn.Embedding):
            aside.update(id(p) for p in m.parameters())
    muon, rest = [], []
    for name, p in model.named_parameters():
        matched = any(name == e or name.startswith(e + ".") for e in prefixes)
        if p.ndim == 2 and id(p) not in aside and not matched:
            muon.append(p)
        else:
            rest.append(p)
    groups = []
    if muon:
        groups.append({"params": muon, "use_muon": True})
    if rest:
        groups.append({"params": rest, "use_muon": False})
    return groups


class Muon(torch.optim.Optimizer):
    r"""Muon for hidden weight matrices, with AdamW for the other parameters :cite:`jordan2024muon`.

    For a matrix parameter :math:`W_{t-1}` with gradient :math:`g_t` (a param group with
    ``use_muon=True``, the default), one step is

    .. math::
        B_t &= \mu B_{t-1} + (1-\mu) g_t, \qquad
        \tilde B_t = \begin{cases} (1-\mu) g_t + \mu B_t & \text{nesterov}\\ B_t & \text{else}\end{cases}\\
        O_t &= \mathrm{NS}^{(a,b,c)}_k(\tilde B_t) \approx UV^\top
            \quad(k = \texttt{ns\_steps})\\
        W_t &= (1 - \eta\lambda)W_{t-1} - \eta\, s(\text{shape})\, O_t

    with :math:`\mathrm{NS}` the iteration of :func:`newton_schulz`, :math:`\eta` the learning
    rate, :math:`\lambda` the decoupled weight decay and :math:`s` :func:`muon_lr_scale`. The
    momentum is an exponential moving average, :math:`(1-\mu)` times the sum :math:`\mu B + g` of
    Jordan et al.'s blog post; the Newton-Schulz iteration divides by the norm, so the two give the
    same update in exact arithmetic (the floor ``eps`` aside). These are the conventions of
    ``torch.optim.Muon`` (torch >= 2.9), including the iteration in ``torch.bfloat16``
    (``ns_dtype``; ``None`` runs it in the parameter's dtype): on 2-D parameters this optimizer
    takes bitwise the same steps (``tests/test_muon.py``).

    Unlike ``torch.optim.Muon``, which refuses non-matrix parameters, a param group with
    ``use_muon=False`` is updated by AdamW (decoupled weight decay, bias-corrected moments)
    :cite:`loshchilov2019decoupled`:

    .. math::
        m_t &= \beta_1 m_{t-1} + (1-\beta_1)g_t,\qquad v_t = \beta_2 v_{t-1} + (1-\beta_2)g_t^2,\\
        \theta_t &= (1-\eta\lambda)\theta_{t-1}
            - \eta\,\frac{m_t/(1-\beta_1^t)}{\sqrt{v_t/(1-\beta_2^t)}+\epsilon_{\mathrm{adam}}}

    as ``torch.optim.AdamW`` (which it matches step for step). :func:`muon_param_groups` builds
    the two groups from a model; give the AdamW group its own ``lr`` (the references use a
    smaller one).

    Parameters
    ----------
    params
        Parameters or param groups; a group may set ``use_muon`` and any option below.
    lr, weight_decay, momentum, nesterov
        :math:`\eta > 0`, :math:`\lambda \ge 0`, :math:`\mu\in[0,1)`, Nesterov momentum.
    ns_coefficients, ns_steps, eps
        The Newton-Schulz polynomial, its number of iterations and the normalization floor.
    adjust_lr_fn
        ``None``/``"original"`` or ``"match_rms_adamw"`` (:func:`muon_lr_scale`).
    ns_dtype
        Precision of the Newton-Schulz iteration (default ``torch.bfloat16``, as the references;
        ``None``: the parameter's dtype).
    betas, adam_eps
        AdamW's :math:`(\beta_1, \beta_2)` and :math:`\epsilon_{\mathrm{adam}}` (groups with
        ``use_muon=False``).
    nonfinite
        ``"raise"`` (default) or ``"skip"``: what a step does with a non-finite gradient
        (``igbook._safety``; a failed step changes nothing).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_coefficients: Sequence[float] = QUINTIC_COEFFICIENTS,
        eps: float = 1e-7,
        ns_steps: int = 5,
        adjust_lr_fn: str | None = None,
        *,
        ns_dtype: torch.dtype | None = torch.bfloat16,
        betas: tuple[float, float] = (0.9, 0.95),
        adam_eps: float = 1e-8,
        nonfinite: str = "raise",
    ) -> None:
        defaults = {
            "lr": lr,
            "weight_decay": weight_decay,
            "momentum": momentum,
            "nesterov": nesterov,
            "ns_coefficients": ns_coefficients,
            "eps": eps,
            "ns_steps": ns_steps,
            "adjust_lr_fn": adjust_lr_fn,
            "ns_dtype": ns_dtype,
            "betas": betas,
            "adam_eps": adam_eps,
            "use_muon": True,
        }
        self._validate_group(defaults)
        self.nonfinite = check_nonfinite_mode(nonfinite)
        #: number of steps skipped under ``nonfinite="skip"``
        self.skipped_steps = 0
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        self._validate_group(self.param_groups[-1])

    @staticmethod
    def _validate_group(group: dict[str, Any]) -> None:
        check_positive_real(group["lr"], "lr")
        check_nonnegative_real(group["weight_decay"], "weight_decay")
        check_scalar(group["momentum"], "momentum", low=0.0, high=1.0, closed_high=False)
        for key in ("nesterov", "use_muon"):
            if not isinstance(group[key], bool):
                raise TypeError(f"{key} must be a bool, got {type(group[key]).__name__}")
        group["ns_coefficients"] = _coefficients(group["ns_coefficients"])
        check_positive_real(group["eps"], "eps")
        check_integer(group["ns_steps"], "ns_steps", minimum=1, maximum=99)
        if group["adjust_lr_fn"] is not None:
            check_choice(group["adjust_lr_fn"], "adjust_lr_fn", ADJUST_LR_FNS)
        d = group["ns_dtype"]
        if d is not None and (not isinstance(d, torch.dtype) or not d.is_floating_point):
            raise TypeError(f"ns_dtype must be a floating torch.dtype or None, got {d!r}")
        betas = group["betas"]
        if not isinstance(betas, Sequence) or isinstance(betas, str) or len(betas) != 2:
            raise TypeError(f"betas must be a pair of numbers, got {betas!r}")
        group["betas"] = tuple(
            check_scalar(b, "betas", low=0.0, high=1.0, closed_high=False) for b in betas
        )
        check_positive_real(group["adam_eps"], "adam_eps")
        for p in group.get("params", ()):
            if not p.is_floating_point() or p.is_complex():
                raise TypeError(f"params must be real floating-point tensors, got {p.dtype}")
            if group["use_muon"] and p.ndim != 2:
                raise ValueError(
                    f"params of a Muon group (use_muon=True) must be matrices, got shape "
                    f"{tuple(p.shape)}: put biases, gains and embeddings into a group with "
                    "use_muon=False (AdamW), e.g. with muon_param_groups(model)"
                )

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:  # type: ignore[override]
        """One step (see the class docstring); a closure re-evaluates the loss and its gradients."""
        params = [p for g in self.param_groups for p in g["params"]]
        snap = Snapshot(params, self.state) if closure is not None else None
        try:
            loss = None
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()
            live = [(p, g) for g in self.param_groups for p in g["params"] if p.grad is not None]
            for p, _ in live:
                if p.grad.is_sparse:
                    raise TypeError(
                        "Muon does not support sparse gradients (the gradient of params)"
                    )
            bad = first_nonfinite([p.grad for p, _ in live])
            if bad is not None:
                if self.nonfinite == "skip":
                    self.skipped_steps += 1
                    return loss
                p = live[bad][0]
                raise nonfinite_error(
                    "Muon",
                    "gradient",
                    f"#{next(i for i, q in enumerate(params) if q is p)} (shape {tuple(p.shape)})",
                )
            if snap is None:
                snap = Snapshot([p for p, _ in live], self.state)
            for p, group in live:
                if group["use_muon"]:
                    self._muon_update(p, group)
                else:
                    self._adamw_update(p, group)
        except BaseException:
            if snap is not None:
                snap.restore()
            raise
        return loss

    def _muon_update(self, p: Tensor, group: dict[str, Any]) -> None:
        grad = p.grad
        state = self.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(grad)
        buf = state["momentum_buffer"]
        mu = group["momentum"]
        buf.lerp_(grad, 1 - mu)  # mu B + (1 - mu) g
        update = grad.lerp(buf, mu) if group["nesterov"] else buf
        ortho = newton_schulz_unchecked(
            update,
            group["ns_steps"],
            group["ns_coefficients"],
            group["eps"],
            group["ns_dtype"] or p.dtype,
        )
        lr = group["lr"]
        p.mul_(1 - lr * group["weight_decay"])
        p.add_(ortho, alpha=-lr * muon_lr_scale(tuple(p.shape), group["adjust_lr_fn"]))

    def _adamw_update(self, p: Tensor, group: dict[str, Any]) -> None:
        grad = p.grad
        state = self.state[p]
        if "step" not in state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        state["step"] += 1
        t = state["step"]
        beta1, beta2 = group["betas"]
        lr = group["lr"]
        m, v = state["exp_avg"], state["exp_avg_sq"]
        p.mul_(1 - lr * group["weight_decay"])
        m.lerp_(grad, 1 - beta1)
        v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bc1 = 1 - beta1**t
        bc2 = 1 - beta2**t
        denom = (v.sqrt() / math.sqrt(bc2)).add_(group["adam_eps"])
        p.addcdiv_(m, denom, value=-lr / bc1)
