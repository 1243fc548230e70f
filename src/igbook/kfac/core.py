r"""K-FAC: Kronecker-factored approximate curvature for ``nn.Linear`` and ``nn.Conv2d`` layers.

For a layer :math:`s = W\bar a` with input :math:`\bar a = (a, 1)` (the bias as a column of ones)
the gradient of the per-example loss with respect to :math:`W` is :math:`g\,\bar a^\top`, where
:math:`g = \partial \ell/\partial s`. With the column-major vectorization
:math:`\operatorname{vec}(g\bar a^\top) = \bar a\otimes g`, the layer's block of the Fisher is

.. math::

    F_\ell = \E\big[\bar a\bar a^\top\otimes g g^\top\big]
    \approx \E\big[\bar a\bar a^\top\big]\otimes\E\big[g g^\top\big] = A\otimes G

:cite:`martens2015optimizing`, and, since :math:`(A\otimes G)^{-1} = A^{-1}\otimes G^{-1}`, the
preconditioned gradient of a layer with gradient matrix :math:`V` is :math:`G^{-1} V A^{-1}`.

Conventions (all of them explicit arguments):

* **Fisher type** (``fisher_type``): ``"mc"`` (the default) backpropagates labels *sampled from
  the model's predictive distribution*, ``"type2"`` backpropagates the columns of a square root
  of the loss Hessian with respect to the network output (the exact Fisher = GGN of
  :cite:`botev2017practical`), ``"empirical"`` backpropagates the *observed* labels (the
  empirical Fisher, which is *not* the Fisher :cite:`kunstner2019limitations`; only on request).
* **Likelihood** (``likelihood``): ``"categorical"`` (``F.cross_entropy`` on logits),
  ``"bernoulli"`` (``F.binary_cross_entropy_with_logits`` summed over outputs), ``"gaussian"``
  (:math:`\tfrac12\lVert y - f\rVert^2` summed over outputs: unit variance). The per-example loss
  must be the negative log-likelihood :math:`\ell_n = -\log p(y_n\mid f(x_n))`, see
  :func:`negative_log_likelihood`.
* **Reduction** (``reduction``): with ``"mean"`` (the default) the factors approximate the
  curvature of :math:`\tfrac1N\sum_n\ell_n`, the Fisher as a mean over data points; with
  ``"sum"`` that of :math:`\sum_n\ell_n`, which is :math:`N` times larger (``G`` carries the
  factor :math:`N`). Use the reduction of the loss whose gradient you precondition.
* **Bias** (``bias``): ``"joint"`` (the default, as in :cite:`martens2015optimizing`) appends a
  ones column to the inputs, so ``[W | b]`` forms one block with an
  :math:`(d_\text{in}+1)\times(d_\text{in}+1)` factor ``A``; ``"separate"`` gives ``W`` the block
  :math:`A\otimes G` and ``b`` its own block :math:`1\otimes G` (no weight-bias coupling).
* **Ordering**: a layer's parameters are vectorized column-major, ``[vec(W), b]`` with
  :math:`\operatorname{vec}(W)` stacking the columns of the ``(out, in)`` weight matrix
  (``W.T.reshape(-1)``); :meth:`KFACPreconditioner.dense_block` uses this ordering and
  :func:`layer_vector` produces it.
* **Weight sharing** (``nn.Conv2d``, ``nn.Linear`` on inputs with extra leading axes): the
  "expand" convention of :cite:`grosse2016kronecker`: :math:`A` averages
  :math:`\bar a\bar a^\top` over data points *and* positions, :math:`G` sums
  :math:`gg^\top` over positions and averages over data points.

Numerical safety: the moving averages of the factors are kept in the parameters' dtype (float64
for every verified result); inverses are computed in float64, by Cholesky (factored damping) with a fallback to a symmetric eigendecomposition whose negative
eigenvalues (rounding noise of a positive semi-definite factor) are clipped to zero, or by the
eigendecomposition directly (exact damping). The one exception: a float32 factor whose damped
condition number is provably at most ``FLOAT32_INVERSE_MAX_CONDITION`` (:math:`10^3`, bounded by
:math:`(\operatorname{tr} M + c)/c`) is inverted in float32, which loses at most about
:math:`10^{-4}` relative accuracy and halves the cost of the inverses. Damping must be strictly positive, so every damped
matrix is positive definite and no step is ever ``inf`` or ``nan``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from igbook._validation import check_finite
from igbook._safety import check_nonfinite_mode, first_nonfinite, nonfinite_error

__all__ = [
    "FISHER_TYPES",
    "LIKELIHOODS",
    "negative_log_likelihood",
    "output_gradient_samples",
    "layer_vector",
    "KroneckerFactors",
    "KFACPreconditioner",
    "KFAC",
]

FisherType = Literal["mc", "type2", "empirical"]
Likelihood = Literal["categorical", "bernoulli", "gaussian"]

#: The Fisher types :class:`KFACPreconditioner` understands (``"exact"`` is an alias of ``"type2"``).
FISHER_TYPES = ("mc", "type2", "empirical")
#: The likelihoods (losses) :class:`KFACPreconditioner` understands.
LIKELIHOODS = ("categorical", "bernoulli", "gaussian")
_REDUCTIONS = ("mean", "sum")
_BIAS_MODES = ("joint", "separate")
_DAMPING_MODES = ("factored", "exact")


# ----------------------------------------------------------------------------- validation


def _check_choice(value: object, name: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def _check_fisher_type(value: object) -> str:
    if value == "exact":
        return "type2"
    return _check_choice(value, "fisher_type", FISHER_TYPES)


def _check_positive_real(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be finite and > 0, got {value}")
    return v


def _check_nonneg_real(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be finite and >= 0, got {value}")
    return v


def _check_decay(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"factor_decay must be a real number, got {type(value).__name__}")
    v = float(value)
    if not (0.0 < v <= 1.0):
        raise ValueError(f"factor_decay must lie in (0, 1], got {value}")
    return v


def _check_period(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= 1, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value}")
    return value


def _check_generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator:
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        return generator
    if seed is None:
        seed = 0
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- likelihoods


def _flat_outputs(outputs: Tensor, likelihood: str) -> Tensor:
    if not isinstance(outputs, Tensor):
        raise TypeError(f"outputs must be a tensor (the network output), got {type(outputs).__name__}")
    if not outputs.is_floating_point():
        raise TypeError(f"outputs must be a floating-point tensor, got dtype {outputs.dtype}")
    if likelihood == "categorical":
        if outputs.ndim != 2 or outputs.shape[1] < 2:
            raise ValueError(
                "outputs must have shape (N, C) with C >= 2 logits for likelihood='categorical', "
                f"got {tuple(outputs.shape)}"
            )
        return outputs
    if outputs.ndim < 1 or outputs.shape[0] < 1:
        raise ValueError(f"outputs must have a batch axis of length >= 1, got shape {tuple(outputs.shape)}")
    return outputs.reshape(outputs.shape[0], -1)


def _flat_targets(targets: Tensor, outputs: Tensor, likelihood: str) -> Tensor:
    if not isinstance(targets, Tensor):
        raise TypeError(f"targets must be a tensor, got {type(targets).__name__}")
    n = outputs.shape[0]
    if likelihood == "categorical":
        if targets.shape != (n,) or targets.is_floating_point() or targets.dtype == torch.bool:
            raise ValueError(
                f"targets must be integer class labels of shape ({n},) for likelihood='categorical', "
                f"got dtype {targets.dtype} and shape {tuple(targets.shape)}"
            )
        c = outputs.shape[1]
        if bool((targets < 0).any()) or bool((targets >= c).any()):
            raise ValueError(f"targets must lie in [0, {c - 1}] (class labels), got values outside")
        return targets
    if targets.shape[0] != n or targets.numel() != outputs.numel():
        raise ValueError(
            f"targets must have the shape of outputs {tuple(outputs.shape)}, got {tuple(targets.shape)}"
        )
    return targets.reshape(n, -1).to(outputs.dtype)


def negative_log_likelihood(
    outputs: Tensor, targets: Tensor, *, likelihood: str, reduction: str = "mean"
) -> Tensor:
    r"""The loss whose curvature K-FAC approximates: :math:`\sum_n` or :math:`\tfrac1N\sum_n` of :math:`-\log p(y_n\mid f_n)`.

    .. math::

        \ell_n = \begin{cases}
        -\log\operatorname{softmax}(f_n)_{y_n} & \text{categorical},\\
        \sum_d -y_{nd}\log\sigma(f_{nd}) - (1-y_{nd})\log(1-\sigma(f_{nd})) & \text{bernoulli},\\
        \tfrac12\lVert y_n - f_n\rVert^2 & \text{gaussian (unit variance, constant dropped)}.
        \end{cases}

    Note that ``F.mse_loss(f, y)`` is *not* this Gaussian loss: it divides by the number of
    outputs and drops the :math:`\tfrac12`, which rescales the curvature by
    :math:`2/\mathrm{numel}(y_n)` (a classic K-FAC scale bug).

    Parameters
    ----------
    outputs
        Network outputs (logits for categorical and bernoulli), shape ``(N, ...)``.
    targets
        Class labels ``(N,)`` (categorical) or targets shaped like ``outputs``.
    likelihood
        One of :data:`LIKELIHOODS`.
    reduction
        ``"mean"`` over the ``N`` data points or ``"sum"``.
    """
    likelihood = _check_choice(likelihood, "likelihood", LIKELIHOODS)
    reduction = _check_choice(reduction, "reduction", _REDUCTIONS)
    f = _flat_outputs(outputs, likelihood)
    y = _flat_targets(targets, f, likelihood)
    if likelihood != "categorical":
        yd = y.detach()
        if not bool(torch.isfinite(yd).all()):
            raise ValueError("targets must be finite")
        if likelihood == "bernoulli" and not bool(((yd >= 0) & (yd <= 1)).all()):
            raise ValueError(
                "targets must lie in [0, 1] for likelihood='bernoulli' (labels in {0, 1}, or "
                "intensities such as pixel values)"
            )
    if likelihood == "categorical":
        per = F.cross_entropy(f, y, reduction="none")
    elif likelihood == "bernoulli":
        per = F.binary_cross_entropy_with_logits(f, y, reduction="none").sum(1)
    else:
        per = 0.5 * ((f - y) ** 2).sum(1)
    return per.mean() if reduction == "mean" else per.sum()


def output_gradient_samples(
    outputs: Tensor,
    *,
    likelihood: str,
    fisher_type: str = "mc",
    targets: Tensor | None = None,
    mc_samples: int = 1,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Vectors :math:`v_{kn}` to backpropagate from the output so that :math:`\sum_k v_{kn}v_{kn}^\top` estimates the Fisher of the output.

    With :math:`H_n = \nabla_f^2(-\log p(y\mid f_n))`, which is the Fisher of the predictive
    distribution in the output space,

    * ``"type2"``: the columns of a square root, :math:`\sum_k v_{kn}v_{kn}^\top = H_n` exactly
      (:math:`\sqrt{p_c}(e_c - p)` for categorical, :math:`\sqrt{\sigma_c(1-\sigma_c)}\,e_c` for
      bernoulli, :math:`e_c` for gaussian);
    * ``"mc"``: :math:`v_{kn} = \nabla_f(-\log p(\tilde y_{kn}\mid f_n))/\sqrt{K}` with
      :math:`\tilde y_{kn}\sim p(\cdot\mid f_n)`, unbiased for :math:`H_n`;
    * ``"empirical"``: :math:`v_n = \nabla_f(-\log p(y_n\mid f_n))` with the observed labels.

    Returns a tensor of shape ``(K, N, C)`` (outputs flattened to ``(N, C)``), detached.
    """
    likelihood = _check_choice(likelihood, "likelihood", LIKELIHOODS)
    fisher_type = _check_fisher_type(fisher_type)
    f = _flat_outputs(outputs, likelihood).detach()
    n, c = f.shape
    if fisher_type == "mc":
        if isinstance(mc_samples, bool) or not isinstance(mc_samples, int) or mc_samples < 1:
            raise ValueError(f"mc_samples must be an int >= 1, got {mc_samples!r}")
    if fisher_type == "empirical":
        if targets is None:
            raise ValueError("targets are required for fisher_type='empirical' (the observed labels)")
        y = _flat_targets(targets, f, likelihood)
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    if likelihood == "categorical":
        p = torch.softmax(f, dim=1)
        if fisher_type == "type2":
            eye = torch.eye(c, dtype=f.dtype)
            # v_c = sqrt(p_c) (e_c - p), stacked over c: (C, N, C)
            return p.T.sqrt().unsqueeze(2) * (eye.unsqueeze(1) - p.unsqueeze(0))
        if fisher_type == "empirical":
            return (p - F.one_hot(y, c).to(f.dtype)).unsqueeze(0)
        labels = torch.multinomial(p.double(), mc_samples, replacement=True, generator=gen).T  # (K, N)
        return (p.unsqueeze(0) - F.one_hot(labels, c).to(f.dtype)) / math.sqrt(mc_samples)
    if likelihood == "bernoulli":
        s = torch.sigmoid(f)
        if fisher_type == "type2":
            eye = torch.eye(c, dtype=f.dtype)
            return (s * (1 - s)).sqrt().T.unsqueeze(2) * eye.unsqueeze(1)
        if fisher_type == "empirical":
            return (s - y).unsqueeze(0)
        u = torch.rand((mc_samples, n, c), generator=gen, dtype=torch.float64).to(f.dtype)
        ys = (u < s.unsqueeze(0)).to(f.dtype)
        return (s.unsqueeze(0) - ys) / math.sqrt(mc_samples)
    # gaussian, unit variance
    if fisher_type == "type2":
        eye = torch.eye(c, dtype=f.dtype)
        return eye.unsqueeze(1).expand(c, n, c).clone()
    if fisher_type == "empirical":
        return (f - y).unsqueeze(0)
    eps = torch.randn((mc_samples, n, c), generator=gen, dtype=torch.float64).to(f.dtype)
    return -eps / math.sqrt(mc_samples)


# ----------------------------------------------------------------------------- layers


def layer_vector(weight: Tensor, bias: Tensor | None = None) -> Tensor:
    r"""Column-major vectorization ``[vec(W), b]`` of a layer's weight (and bias).

    The weight is viewed as a matrix of shape ``(out, rest)`` (a ``Conv2d`` kernel
    ``(out, in, kh, kw)`` becomes ``(out, in*kh*kw)``) and :math:`\operatorname{vec}` stacks its
    columns, the ordering in which the K-FAC block is :math:`A\otimes G` :cite:`martens2015optimizing`.
    Both tensors must be finite (a NaN gradient is refused here, not stacked).
    """
    if not isinstance(weight, Tensor):
        raise TypeError(f"weight must be a tensor, got {type(weight).__name__}")
    if weight.ndim < 2:
        raise ValueError(f"weight must have at least 2 axes (out, in, ...), got shape {tuple(weight.shape)}")
    check_finite(weight, "weight")
    w = weight.reshape(weight.shape[0], -1)
    parts = [w.T.reshape(-1)]
    if bias is not None:
        if not isinstance(bias, Tensor):
            raise TypeError(f"bias must be a tensor or None, got {type(bias).__name__}")
        check_finite(bias, "bias")
        if bias.shape != (weight.shape[0],):
            raise ValueError(f"bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
        parts.append(bias)
    return torch.cat(parts)


def _unsupported_reason(m: nn.Module) -> str | None:
    if isinstance(m, nn.Conv2d):
        if m.groups != 1:
            return "grouped convolution"
        if m.padding_mode != "zeros":
            return f"padding_mode={m.padding_mode!r}"
        if isinstance(m.padding, str):
            return f"padding={m.padding!r}"
        return None
    if type(m) is nn.Linear or isinstance(m, nn.Linear):
        return None
    return "layer type not supported"


def _layer_inputs(m: nn.Module, x: Tensor) -> Tensor:
    """Rows ``a`` of the layer's input (positions expanded), shape ``(rows, in)``."""
    if isinstance(m, nn.Conv2d):
        if x.ndim == 3:
            x = x.unsqueeze(0)
        u = F.unfold(x, m.kernel_size, dilation=m.dilation, padding=m.padding, stride=m.stride)
        return u.transpose(1, 2).reshape(-1, u.shape[1])
    return x.reshape(-1, x.shape[-1])


def _layer_output_grads(m: nn.Module, g: Tensor) -> Tensor:
    """Rows of the output gradient, shape ``(rows, out)``."""
    if isinstance(m, nn.Conv2d):
        if g.ndim == 3:
            g = g.unsqueeze(0)
        return g.flatten(2).transpose(1, 2).reshape(-1, g.shape[1])
    return g.reshape(-1, g.shape[-1])


@dataclass(frozen=True)
class KroneckerFactors:
    r"""The two Kronecker factors of one block: the block is :math:`A\otimes G`.

    ``A`` is the second moment of the layer inputs (with a trailing ones coordinate when the bias
    is in the block), ``G`` that of the output gradients; both in the parameters' dtype.
    """

    A: Tensor
    G: Tensor

    def dense(self) -> Tensor:
        r"""The dense block :math:`A\otimes G` (column-major parameter ordering)."""
        return torch.kron(self.A, self.G)


class _Block:
    """One Kronecker-factored block: a layer's weight (and bias), or a layer's bias alone."""

    def __init__(self, name: str, module: nn.Module, kind: str) -> None:
        self.name = name
        self.module = module
        self.kind = kind  # "joint" (weight and bias, or weight without bias), "weight", "bias"
        w = module.weight
        self.has_bias = module.bias is not None and module.bias.requires_grad and kind == "joint"
        self.params: list[Tensor] = (
            [module.bias] if kind == "bias" else ([w, module.bias] if self.has_bias else [w])
        )
        self.out = w.shape[0]
        self.din = 1 if kind == "bias" else (w[0].numel() + (1 if self.has_bias else 0))
        self.A: Tensor | None = None  # moving averages, in the parameters' dtype
        self.G: Tensor | None = None
        # inverse data
        self.inv_A: Tensor | None = None
        self.inv_G: Tensor | None = None
        self.eig_A: tuple[Tensor, Tensor] | None = None
        self.eig_G: tuple[Tensor, Tensor] | None = None
        self.pi = 1.0
        self.denom: Tensor | None = None
        self.denom_damping: float | None = None

    def grad_matrix(self) -> Tensor | None:
        if self.kind == "bias":
            g = self.params[0].grad
            return None if g is None else g.reshape(-1, 1)
        w = self.params[0]
        if w.grad is None:
            return None
        mat = w.grad.reshape(self.out, -1)
        if self.has_bias:
            b = self.params[1].grad
            bcol = torch.zeros(self.out, 1, dtype=mat.dtype) if b is None else b.reshape(-1, 1)
            mat = torch.cat([mat, bcol], dim=1)
        return mat

    def write_grad(self, u: Tensor) -> None:
        if self.kind == "bias":
            self.params[0].grad.copy_(u.reshape(-1))
            return
        w = self.params[0]
        k = w[0].numel()
        w.grad.copy_(u[:, :k].reshape(w.shape))
        if self.has_bias and self.params[1].grad is not None:
            self.params[1].grad.copy_(u[:, k])


def _sym_eig(m: Tensor, what: str) -> tuple[Tensor, Tensor]:
    """float64 symmetric eigendecomposition with eigenvalues clipped at 0 (a PSD factor)."""
    m = 0.5 * (m + m.T)
    try:
        evals, evecs = torch.linalg.eigh(m)
    except torch.linalg.LinAlgError:  # pragma: no cover - extremely rare in float64
        scale = float(m.diagonal().abs().mean()) or 1.0
        evals, evecs = torch.linalg.eigh(m + 1e-12 * scale * torch.eye(m.shape[0], dtype=m.dtype))
    return evals.clamp_min(0.0), evecs


#: largest provable condition number of a damped float32 factor that is inverted in float32
FLOAT32_INVERSE_MAX_CONDITION = 1e3


def _damped_inverse(m: Tensor, shift: float) -> Tensor:
    r""":math:`(M + cI)^{-1}` for a positive semi-definite factor :math:`M`, in ``m``'s dtype.

    By Cholesky, falling back to a clipped eigendecomposition. The computation runs in float64,
    except for a float32 factor whose damped condition number is provably small:
    :math:`\kappa(M + cI) \le (\operatorname{tr} M + c)/c \le` ``FLOAT32_INVERSE_MAX_CONDITION``
    (the largest eigenvalue of a PSD matrix is at most its trace), where float32 loses at most
    about :math:`\kappa\,\varepsilon_{32} \approx 10^{-4}` relative accuracy and costs half the time.
    """
    dt = m.dtype
    tr = float(m.diagonal().sum())
    fast = dt == torch.float32 and shift > 0 and (max(tr, 0.0) + shift) / shift <= FLOAT32_INVERSE_MAX_CONDITION
    if fast:
        inv = _damped_inverse_in(m, shift)
        if inv is not None:
            return inv
    inv = _damped_inverse_in(m.double(), shift)
    if inv is None:
        evals, evecs = _sym_eig(m.double(), "factor")
        inv = (evecs / (evals + shift)) @ evecs.T
    return inv.to(dt)


def _damped_inverse_in(m: Tensor, shift: float) -> Tensor | None:
    """Cholesky inverse of the damped factor in ``m``'s own dtype, or ``None`` if it fails."""
    eye = torch.eye(m.shape[0], dtype=m.dtype)
    ms = 0.5 * (m + m.T) + shift * eye
    chol, info = torch.linalg.cholesky_ex(ms)
    if int(info) == 0:
        inv = torch.cholesky_inverse(chol)
        if bool(torch.isfinite(inv).all()):
            return 0.5 * (inv + inv.T)
    return None


# ----------------------------------------------------------------------------- preconditioner


class KFACPreconditioner:
    r"""K-FAC preconditioner: rewrites the gradients of supported layers in place.

    For every ``nn.Linear`` and ``nn.Conv2d`` layer of ``model`` it keeps exponential moving
    averages of the Kronecker factors :math:`A` and :math:`G` and replaces the layer's gradient
    matrix :math:`V` (``[grad W | grad b]``) by the damped natural gradient

    .. math::

        \text{factored (π-heuristic):}\quad
        (G + \tfrac{\sqrt\lambda}{\pi} I)^{-1}\, V\, (A + \pi\sqrt\lambda I)^{-1},\qquad
        \pi = \sqrt{\frac{\operatorname{tr}(A)/\dim A}{\operatorname{tr}(G)/\dim G}},

        \text{exact:}\quad
        Q_G\Big[\frac{Q_G^\top V Q_A}{d_G d_A^\top + \lambda}\Big]Q_A^\top
        = \operatorname{mat}\big((A\otimes G + \lambda I)^{-1}\operatorname{vec}V\big),

    with :math:`A = Q_A\diag(d_A)Q_A^\top`, :math:`G = Q_G\diag(d_G)Q_G^\top`
    :cite:`martens2015optimizing`. Because it only rewrites ``.grad``, it composes with any
    ``torch.optim`` optimizer. Layers of other types keep their plain gradients; they are named
    in one warning when the preconditioner is built.

    The training loop, with the factors updated every ``factor_period`` steps and the inverses
    every ``inverse_period`` steps::

        out = model(x)
        loss = negative_log_likelihood(out, y, likelihood="categorical")
        optimizer.zero_grad()
        pre.update_factors(out)      # before loss.backward(); a no-op when not due
        loss.backward()
        pre.step()                   # rewrites .grad
        optimizer.step()

    Parameters
    ----------
    model
        The network. Its forward pass is hooked to record each supported layer's input and output.
    likelihood
        ``"categorical"``, ``"bernoulli"`` or ``"gaussian"`` (see :func:`negative_log_likelihood`).
    fisher_type
        ``"mc"`` (default), ``"type2"`` (alias ``"exact"``) or ``"empirical"``.
    damping
        :math:`\lambda > 0`. It can be changed between steps (``pre.damping = ...``).
    damping_mode
        ``"factored"`` (π-heuristic, Cholesky inverses of the two damped factors) or ``"exact"``
        (eigendecompositions, damping added to the Kronecker product's eigenvalues).
    factor_decay
        :math:`\varepsilon\in(0, 1]`, the weight of the old statistics in the moving average
        :math:`A_k = \varepsilon_k A_{k-1} + (1-\varepsilon_k)\hat A_k` with
        :math:`\varepsilon_k = \min(1 - 1/k, \varepsilon)` (:math:`k` counts factor updates), so
        that early averages are not biased towards an initial guess and ``factor_decay=1`` gives
        the exact average over all updates.
    factor_period, inverse_period
        Update the factors every ``factor_period`` steps and recompute the inverses every
        ``inverse_period`` steps (both ints >= 1; step 0 does both).
    mc_samples
        Sampled labels per data point for ``fisher_type="mc"``.
    reduction
        ``"mean"`` or ``"sum"``: the reduction over data points of the loss you differentiate.
    bias
        ``"joint"`` (ones column, one block per layer) or ``"separate"``.
    kl_clip
        If given, scale all preconditioned gradients :math:`v` by
        :math:`\nu = \min\big(1, \sqrt{\kappa / (\tfrac12\eta^2\textstyle\sum_\ell v_\ell^\top g_\ell)}\big)`
        so that the quadratic estimate of the KL divergence of the step :math:`-\eta v` is at most
        :math:`\kappa`; requires ``lr`` (:math:`\eta`), here or in :meth:`step`. Convention: this
        :math:`\kappa` bounds :math:`\tfrac12\eta^2 v^\top g`, with the :math:`\tfrac12` of the quadratic
        KL. :cite:`ba2017distributed` and common K-FAC libraries bound :math:`\eta^2 v^\top g` (no
        :math:`\tfrac12`), so their threshold :math:`c` is ``kl_clip = c / 2`` here.
    lr
        The learning rate used by KL clipping.
    seed, generator
        Source of the sampled labels (``generator`` wins; its state is in :meth:`state_dict`).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        likelihood: str,
        fisher_type: str = "mc",
        damping: float = 1e-3,
        damping_mode: str = "factored",
        factor_decay: float = 0.95,
        factor_period: int = 1,
        inverse_period: int = 10,
        mc_samples: int = 1,
        reduction: str = "mean",
        bias: str = "joint",
        kl_clip: float | None = None,
        lr: float | None = None,
        seed: int | None = 0,
        generator: torch.Generator | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.likelihood = _check_choice(likelihood, "likelihood", LIKELIHOODS)
        self.fisher_type = _check_fisher_type(fisher_type)
        self.damping = damping
        self.damping_mode = _check_choice(damping_mode, "damping_mode", _DAMPING_MODES)
        self.factor_decay = _check_decay(factor_decay)
        self.factor_period = _check_period(factor_period, "factor_period")
        self.inverse_period = _check_period(inverse_period, "inverse_period")
        if isinstance(mc_samples, bool) or not isinstance(mc_samples, int) or mc_samples < 1:
            raise ValueError(f"mc_samples must be an int >= 1, got {mc_samples!r}")
        self.mc_samples = mc_samples
        self.reduction = _check_choice(reduction, "reduction", _REDUCTIONS)
        self.bias = _check_choice(bias, "bias", _BIAS_MODES)
        self.kl_clip = None if kl_clip is None else _check_positive_real(kl_clip, "kl_clip")
        self.lr = None if lr is None else _check_positive_real(lr, "lr")
        self.generator = _check_generator(seed, generator)

        self.blocks: list[_Block] = []
        self._layers: dict[nn.Module, str] = {}
        unsupported: list[str] = []
        # Layers inside an unsupported layer that has parameters of its own are left alone too:
        # such a parent (nn.MultiheadAttention, say) may use its children's weights without
        # calling them (attention's out_proj), so no hook would see their inputs.
        opaque: list[str] = []
        for name, m in model.named_modules():
            own = [p for p in m.parameters(recurse=False) if p.requires_grad]
            if not own:
                continue
            parent = next((q for q in opaque if name.startswith(q + ".")), None)
            if parent is not None:
                unsupported.append(f"{name} ({type(m).__name__}: inside the unsupported layer {parent})")
                continue
            reason = _unsupported_reason(m)
            if reason is not None or not m.weight.requires_grad:
                label = name or type(m).__name__
                unsupported.append(f"{label} ({type(m).__name__}: {reason or 'weight frozen'})")
                if reason is not None and name:
                    opaque.append(name)
                continue
            lname = name or "<model>"
            self._layers[m] = lname
            if self.bias == "joint" or m.bias is None or not m.bias.requires_grad:
                self.blocks.append(_Block(lname, m, "joint"))
            else:
                self.blocks.append(_Block(lname, m, "weight"))
                self.blocks.append(_Block(lname, m, "bias"))
        if not self.blocks:
            raise ValueError(
                "model has no supported layer (nn.Linear or nn.Conv2d with trainable weights): "
                "nothing for K-FAC to precondition"
            )
        self.unsupported = unsupported
        if unsupported:
            warnings.warn(
                "K-FAC leaves these layers unpreconditioned (their gradients pass through unchanged): "
                + ", ".join(unsupported),
                UserWarning,
                stacklevel=2,
            )
        self.steps = 0
        self.factor_updates = 0
        self._factors_dirty = False
        self._inverse_damping: float | None = None
        self._updated_this_step = False
        self._records: dict[nn.Module, tuple[Tensor, Tensor]] = {}
        self._calls: dict[nn.Module, int] = {}
        self._handles = [model.register_forward_pre_hook(self._model_pre_hook)]
        for m in self._layers:
            self._handles.append(m.register_forward_hook(self._layer_hook))

    # -- hyperparameters ------------------------------------------------------------------

    @property
    def damping(self) -> float:
        r"""The damping :math:`\lambda > 0`; settable between steps."""
        return self._damping

    @damping.setter
    def damping(self, value: float) -> None:
        self._damping = _check_positive_real(value, "damping")

    # -- hooks ----------------------------------------------------------------------------

    def _model_pre_hook(self, module: nn.Module, args: Any) -> None:
        self._calls.clear()

    def _layer_hook(self, module: nn.Module, args: tuple[Any, ...], output: Tensor) -> None:
        if not torch.is_grad_enabled() or not isinstance(output, Tensor) or not output.requires_grad:
            return
        self._calls[module] = self._calls.get(module, 0) + 1
        self._records[module] = (args[0].detach(), output)

    def remove_hooks(self) -> None:
        """Detach the preconditioner from the model's forward pass."""
        for h in self._handles:
            h.remove()
        self._handles = []

    # -- factors --------------------------------------------------------------------------

    @property
    def factors_due(self) -> bool:
        """Whether :meth:`update_factors` must run at the current step."""
        return self.steps % self.factor_period == 0

    def update_factors(self, outputs: Tensor, targets: Tensor | None = None) -> bool:
        r"""Update the moving averages of :math:`A` and :math:`G` from the last forward pass.

        Call it after ``outputs = model(x)`` and *before* ``loss.backward()`` (it backpropagates
        through the same graph, keeping it). It backpropagates the vectors of
        :func:`output_gradient_samples` (sampled labels by default) to every supported layer's
        output, without computing any weight gradient. Returns ``False`` (and does nothing) when
        the factors are not due at this step.

        Parameters
        ----------
        outputs
            The output of the model's last forward pass (logits for categorical/bernoulli).
        targets
            The observed labels; required only for ``fisher_type="empirical"``.
        """
        if not self.factors_due:
            return False
        f = _flat_outputs(outputs, self.likelihood)
        if not outputs.requires_grad:
            raise ValueError("outputs must be the output of a forward pass with gradients enabled")
        n = f.shape[0]
        missing = [self._layers[m] for m in self._layers if m not in self._records]
        if missing:
            raise RuntimeError(
                "no forward pass recorded for layers " + ", ".join(missing) + ": call the model with "
                "gradients enabled before update_factors"
            )
        twice = [self._layers[m] for m, c in self._calls.items() if c > 1]
        if twice:
            raise RuntimeError(
                "layers " + ", ".join(twice) + " were called more than once in one forward pass; "
                "K-FAC does not support parameter reuse"
            )
        if first_nonfinite([f.detach()]) is not None:
            raise nonfinite_error(type(self).__name__, "curvature statistic (model outputs)", "<outputs>")
        rng = self.generator.get_state()
        vs = output_gradient_samples(
            outputs,
            likelihood=self.likelihood,
            fisher_type=self.fisher_type,
            targets=targets,
            mc_samples=self.mc_samples,
            generator=self.generator,
        )
        layers = list(self._layers)
        outs = [self._records[m][1] for m in layers]
        rows: dict[nn.Module, list[Tensor]] = {m: [] for m in layers}
        for k in range(vs.shape[0]):
            try:
                grads = torch.autograd.grad(
                    outputs, outs, grad_outputs=vs[k].reshape(outputs.shape), retain_graph=True, allow_unused=True
                )
            except RuntimeError as exc:
                raise RuntimeError(
                    "could not backpropagate to the recorded layer outputs: call update_factors(outputs) "
                    "with the outputs of the last forward pass and before loss.backward() "
                    f"(or use loss.backward(retain_graph=True)). Autograd said: {exc}"
                ) from exc
            for m, o, g in zip(layers, outs, grads):
                rows[m].append(torch.zeros_like(o) if g is None else g)
        scale_g = 1.0 if self.reduction == "sum" else 1.0 / n
        stats: dict[nn.Module, tuple[Tensor, Tensor]] = {}
        for m in layers:
            a = _layer_inputs(m, self._records[m][0])
            if a.shape[0] % n != 0:
                raise RuntimeError(
                    f"layer {self._layers[m]} saw {a.shape[0]} input rows, not a multiple of the batch size {n} "
                    "of outputs: pass the outputs of the same forward pass"
                )
            g = rows[m][0] if len(rows[m]) == 1 else torch.cat(rows[m], dim=0)
            stats[m] = (a, _layer_output_grads(m, g))
        # nothing is written before every statistic is known to be finite (igbook._safety)
        flat = [t for ag in stats.values() for t in ag]
        bad = first_nonfinite(flat)
        if bad is not None:
            self.generator.set_state(rng)
            m = list(stats)[bad // 2]
            what = "layer inputs (activations)" if bad % 2 == 0 else "sampled output gradients"
            raise nonfinite_error(type(self).__name__, f"curvature statistic ({what})", self._layers[m])
        self.factor_updates += 1
        eps = min(1.0 - 1.0 / self.factor_updates, self.factor_decay)
        by_module: dict[nn.Module, list[_Block]] = {}
        for blk in self.blocks:
            by_module.setdefault(blk.module, []).append(blk)
        for m in layers:
            a, g = stats[m]
            wa = (1.0 - eps) / a.shape[0]
            first = by_module[m][0]
            if first.A is None:  # eps == 0 here: addmm_ with beta=0 ignores the zeros
                for blk in by_module[m]:
                    blk.A = torch.zeros(blk.din, blk.din, dtype=a.dtype)
                    blk.G = torch.zeros(blk.out, blk.out, dtype=a.dtype)
            for blk in by_module[m]:
                if blk.kind == "bias":
                    blk.A.fill_(1.0)  # type: ignore[union-attr]
                    blk.G = first.G  # one G per layer, shared by its weight and bias blocks
                    continue
                # G <- eps G + (1 - eps) scale * g^T g ;  A <- eps A + (1 - eps) a^T a / rows (fused)
                blk.G.addmm_(g.T, g, beta=eps, alpha=(1.0 - eps) * scale_g)  # type: ignore[union-attr]
                if blk.has_bias:
                    d = blk.din - 1
                    blk.A[:d, :d].addmm_(a.T, a, beta=eps, alpha=wa)  # type: ignore[index]
                    mean = a.sum(0) * wa
                    blk.A[:d, d].mul_(eps).add_(mean)  # type: ignore[index]
                    blk.A[d, :d].mul_(eps).add_(mean)  # type: ignore[index]
                    blk.A[d, d] = 1.0  # type: ignore[index]
                else:
                    blk.A.addmm_(a.T, a, beta=eps, alpha=wa)  # type: ignore[union-attr]
        self._records.clear()
        self._factors_dirty = True
        self._updated_this_step = True
        return True

    def _block_of(self, module: nn.Module) -> list[_Block]:
        if module not in self._layers:
            raise ValueError("module is not a layer preconditioned by this K-FAC preconditioner")
        blks = [b for b in self.blocks if b.module is module]
        if blks[0].A is None:
            raise RuntimeError("no factors yet: call update_factors first")
        return blks

    def factors(self, module: nn.Module) -> KroneckerFactors | tuple[KroneckerFactors, KroneckerFactors]:
        """The current (moving-average) factors of a layer: one pair, or (weight, bias) pairs with ``bias="separate"``."""
        blks = self._block_of(module)
        out = [KroneckerFactors(b.A.clone(), b.G.clone()) for b in blks]  # type: ignore[union-attr]
        return out[0] if len(out) == 1 else (out[0], out[1])

    def dense_block(self, module: nn.Module) -> Tensor:
        r"""The dense K-FAC block of a layer in the ordering of :func:`layer_vector`.

        :math:`A\otimes G` for ``bias="joint"``; the block diagonal of :math:`A\otimes G`
        (weight) and :math:`1\otimes G` (bias) for ``bias="separate"``. Meant for tests and
        figures: it has :math:`(d_\text{in}d_\text{out})^2` entries.
        """
        blks = self._block_of(module)
        return torch.block_diag(*[torch.kron(b.A, b.G) for b in blks])  # type: ignore[arg-type]

    def named_layers(self) -> dict[str, nn.Module]:
        """The preconditioned layers by name (``"<model>"`` when the model is itself a layer)."""
        return {name: m for m, name in self._layers.items()}

    # -- inverses and the step ------------------------------------------------------------

    def update_inverses(self) -> None:
        """Recompute the inverses (or eigendecompositions) of the damped factors now, in float64
        (a float32 factor whose damped condition number is provably at most
        ``FLOAT32_INVERSE_MAX_CONDITION``: in float32).

        The results are stored in the parameters' dtype for the preconditioning products.
        Raises :class:`ValueError` if a factor is not finite (the activations or the sampled
        output gradients overflowed).
        """
        lam = self.damping
        for blk in self.blocks:
            if blk.A is None or blk.G is None:
                raise RuntimeError("no factors yet: call update_factors(outputs) before the first step")
            for name, f in (("A", blk.A), ("G", blk.G)):
                if not math.isfinite(float(f.sum())):  # a NaN or an infinity anywhere makes the sum non-finite
                    raise ValueError(
                        f"the Kronecker factor {name} of layer {blk.name} is not finite: the activations "
                        "or the outputs overflowed (lower the learning rate or raise the damping)"
                    )
            dt = blk.A.dtype
            if self.damping_mode == "exact":
                A, G = blk.A.double(), blk.G.double()
                da, qa = _sym_eig(A, "A")
                dg, qg = _sym_eig(G, "G")
                blk.eig_A, blk.eig_G = (da.to(dt), qa.to(dt)), (dg.to(dt), qg.to(dt))
                blk.inv_A = blk.inv_G = None
                blk.denom = None
            else:
                ta = float(blk.A.double().diagonal().mean())
                tg = float(blk.G.double().diagonal().mean())
                blk.pi = math.sqrt(ta / tg) if ta > 0 and tg > 0 else 1.0
                gamma = math.sqrt(lam)
                blk.inv_A = _damped_inverse(blk.A, blk.pi * gamma)
                blk.inv_G = _damped_inverse(blk.G, gamma / blk.pi)
                blk.eig_A = blk.eig_G = None
        self._inverse_damping = lam
        self._factors_dirty = False

    def _precondition(self, blk: _Block, v: Tensor) -> Tensor:
        if self.damping_mode == "exact":
            da, qa = blk.eig_A  # type: ignore[misc]
            dg, qg = blk.eig_G  # type: ignore[misc]
            if blk.denom is None or blk.denom_damping != self.damping:
                blk.denom = 1.0 / (torch.outer(dg.double(), da.double()) + self.damping)
                blk.denom_damping = self.damping
            inner = (qg.T @ v @ qa) * blk.denom.to(v.dtype)
            return qg @ inner @ qa.T
        return blk.inv_G @ v @ blk.inv_A  # type: ignore[operator]

    @torch.no_grad()
    def step(self, lr: float | None = None) -> None:
        """Rewrite the gradients of the supported layers in place by their K-FAC preconditioned versions.

        Recomputes the inverses when due (every ``inverse_period`` steps, and whenever the damping
        changed under ``damping_mode="factored"``), applies KL clipping if configured, and
        advances the step counter.
        """
        if self.factor_updates == 0:
            raise RuntimeError("no factors yet: call update_factors(outputs) before loss.backward() and step()")
        if self.factors_due and not self._updated_this_step:
            raise RuntimeError(
                f"the factors are due at step {self.steps} (factor_period={self.factor_period}): call "
                "update_factors(outputs) after the forward pass and before loss.backward()"
            )
        grads = [(blk, blk.grad_matrix()) for blk in self.blocks]
        bad = first_nonfinite([v for _, v in grads])
        if bad is not None:  # checked before the inverses, the counters or any .grad change
            raise nonfinite_error(type(self).__name__, "gradient", grads[bad][0].name)
        stale = self._inverse_damping is None or (
            self._factors_dirty and self.steps % self.inverse_period == 0
        )
        if self.damping_mode == "factored" and self._inverse_damping != self.damping:
            stale = True
        if stale:
            self.update_inverses()
        results: list[tuple[_Block, Tensor, Tensor]] = []
        for blk, v in grads:
            if v is None:
                continue
            results.append((blk, v, self._precondition(blk, v)))
        if self.kl_clip is not None and results:
            eta = self.lr if lr is None else _check_positive_real(lr, "lr")
            if eta is None:
                raise ValueError("kl_clip needs the learning rate: pass lr to the constructor or to step()")
            vg = sum(float((u * v).sum()) for _, v, u in results)
            kl = 0.5 * eta**2 * max(vg, 0.0)
            nu = 1.0 if kl <= self.kl_clip else math.sqrt(self.kl_clip / kl)
            self.last_kl = kl * nu**2
            if nu < 1.0:
                results = [(b, v, u * nu) for b, v, u in results]
        for blk, _, u in results:
            blk.write_grad(u)
        self.steps += 1
        self._updated_this_step = False

    # -- state ----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: counters, hyperparameters, factors, inverses, RNG state."""
        blocks = {}
        for blk in self.blocks:
            key = f"{blk.name}:{blk.kind}"
            blocks[key] = {
                "A": None if blk.A is None else blk.A.clone(),
                "G": None if blk.G is None else blk.G.clone(),
                "inv_A": None if blk.inv_A is None else blk.inv_A.clone(),
                "inv_G": None if blk.inv_G is None else blk.inv_G.clone(),
                "eig_A": None if blk.eig_A is None else tuple(t.clone() for t in blk.eig_A),
                "eig_G": None if blk.eig_G is None else tuple(t.clone() for t in blk.eig_G),
                "pi": blk.pi,
            }
        return {
            "steps": self.steps,
            "factor_updates": self.factor_updates,
            "factors_dirty": self._factors_dirty,
            "inverse_damping": self._inverse_damping,
            "hyperparameters": {
                "likelihood": self.likelihood,
                "fisher_type": self.fisher_type,
                "damping": self.damping,
                "damping_mode": self.damping_mode,
                "factor_decay": self.factor_decay,
                "factor_period": self.factor_period,
                "inverse_period": self.inverse_period,
                "mc_samples": self.mc_samples,
                "reduction": self.reduction,
                "bias": self.bias,
                "kl_clip": self.kl_clip,
                "lr": self.lr,
            },
            "generator": self.generator.get_state(),
            "blocks": blocks,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` taken from a preconditioner of the same model structure."""
        if not isinstance(state, dict) or "blocks" not in state:
            raise TypeError("state must be a dict produced by KFACPreconditioner.state_dict()")
        keys = {f"{b.name}:{b.kind}" for b in self.blocks}
        if set(state["blocks"]) != keys:
            raise ValueError(
                f"state holds blocks {sorted(state['blocks'])}, but this preconditioner has {sorted(keys)}"
            )
        hp = state["hyperparameters"]
        self.likelihood = _check_choice(hp["likelihood"], "likelihood", LIKELIHOODS)
        self.fisher_type = _check_fisher_type(hp["fisher_type"])
        self.damping = hp["damping"]
        self.damping_mode = _check_choice(hp["damping_mode"], "damping_mode", _DAMPING_MODES)
        self.factor_decay = _check_decay(hp["factor_decay"])
        self.factor_period = _check_period(hp["factor_period"], "factor_period")
        self.inverse_period = _check_period(hp["inverse_period"], "inverse_period")
        self.mc_samples = hp["mc_samples"]
        self.reduction = _check_choice(hp["reduction"], "reduction", _REDUCTIONS)
        if hp["bias"] != self.bias:
            raise ValueError(f"state has bias={hp['bias']!r} but this preconditioner has bias={self.bias!r}")
        self.kl_clip = hp["kl_clip"]
        self.lr = hp["lr"]
        self.steps = int(state["steps"])
        self.factor_updates = int(state["factor_updates"])
        self._factors_dirty = bool(state["factors_dirty"])
        self._inverse_damping = state["inverse_damping"]
        self._updated_this_step = False
        self.generator.set_state(state["generator"])

        def cl(t: Any) -> Any:
            if t is None:
                return None
            if isinstance(t, tuple):
                return tuple(x.clone() for x in t)
            return t.clone()

        for blk in self.blocks:
            s = state["blocks"][f"{blk.name}:{blk.kind}"]
            blk.A, blk.G = cl(s["A"]), cl(s["G"])
            blk.inv_A, blk.inv_G = cl(s["inv_A"]), cl(s["inv_G"])
            blk.eig_A, blk.eig_G = cl(s["eig_A"]), cl(s["eig_G"])
            blk.pi = float(s["pi"])
            blk.denom = None


# ----------------------------------------------------------------------------- optimizer


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
        lr = _check_positive_real(lr, "lr")
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must lie in [0, 1), got {momentum}")
        weight_decay = _check_nonneg_real(weight_decay, "weight_decay")
        params = [p for p in model.parameters() if p.requires_grad]
        super().__init__(params, {"lr": lr, "momentum": float(momentum), "weight_decay": weight_decay})
        self.preconditioner = KFACPreconditioner(model, lr=lr, **kfac_kwargs)
        self.nonfinite = check_nonfinite_mode(nonfinite)
        #: number of steps skipped under ``nonfinite="skip"``
        self.skipped_steps = 0
        self._before_factors: dict[str, Any] | None = None  # preconditioner state before update_factors
        self._skip_pending = False

    def update_factors(self, outputs: Tensor, targets: Tensor | None = None) -> bool:
        """See :meth:`KFACPreconditioner.update_factors`.

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
            raise nonfinite_error(type(self).__name__, "gradient", names.get(params[bad or 0], f"#{bad}"))
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
                for p, d in zip(params, grads):
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

