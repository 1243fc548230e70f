r"""Kronecker factors of a network's Fisher, computed functionally: :func:`kfac_factors`.

For a layer :math:`s = W\bar a` with input :math:`\bar a = (a, 1)` (a column of ones for the
bias) the per-example gradient of the loss is :math:`g\bar a^\top` with
:math:`g = \partial\ell/\partial s`, and the layer's block of the Fisher is approximated by

.. math::

    F_\ell = \mathbb E\big[\bar a\bar a^\top\otimes gg^\top\big]
    \approx \mathbb E\big[\bar a\bar a^\top\big]\otimes\mathbb E\big[gg^\top\big] = A\otimes G

:cite:`martens2015optimizing` (column-major :math:`\operatorname{vec}`). The vectors
:math:`g` are the back-propagated columns of the likelihood's
:meth:`~igbook.fisher.likelihoods.Likelihood.output_gradient_samples`: the closed-form output
Fisher factor (``EXACT``: Martens and Grosse's "type-2" statistics), gradients at labels sampled
from the model (``MC``) or at the observed labels (``EMPIRICAL``). Weight sharing
(``nn.Conv2d``, ``nn.Linear`` on inputs with extra leading axes) follows the "expand"
convention of :cite:`grosse2016kronecker`: :math:`A` averages over data points *and*
positions, :math:`G` sums over positions and averages over data points. ``reduction="sum"``
multiplies :math:`G` by :math:`N` (the curvature of :math:`\sum_n\ell_n`).

The helpers here (:func:`kronecker_layers`, :func:`layer_input_rows`,
:func:`layer_output_rows`, :func:`backpropagate_output_vectors`) are also what
:class:`igbook.kfac.KFACPreconditioner` uses for its moving averages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as tnf
from torch import Tensor, nn

from igbook._validation import check_choice, check_finite, check_integer
from igbook.fisher.layout import parameter_layout
from igbook.fisher.likelihoods import Likelihood, get_likelihood
from igbook.fisher.operators import BlockDiagonalCurvature, Curvature, KroneckerCurvature
from igbook.fisher.problem import mc_generator
from igbook.fisher.types import FisherType, as_fisher_type

__all__ = [
    "KroneckerFactors",
    "KRONECKER_FISHER_TYPES",
    "BIAS_MODES",
    "REDUCTIONS",
    "kronecker_layers",
    "unsupported_layer_reason",
    "layer_input_rows",
    "layer_output_rows",
    "backpropagate_output_vectors",
    "kfac_factors",
    "kronecker_curvature",
]

#: the Fisher types with Kronecker factors (output matrices that are sums of outer products)
KRONECKER_FISHER_TYPES = (FisherType.EXACT, FisherType.MC, FisherType.EMPIRICAL, FisherType.GGN)
#: ``"joint"``: ``[W | b]`` is one block (ones column in A); ``"separate"``: W and b have their own blocks
BIAS_MODES = ("joint", "separate")
#: the reduction over data points of the loss whose curvature the factors approximate
REDUCTIONS = ("mean", "sum")


@dataclass(frozen=True)
class KroneckerFactors:
    r"""The two Kronecker factors of one block: the block is :math:`A\otimes G`.

    ``A`` is the second moment of the layer inputs (with a trailing ones coordinate when the bias
    is in the block; ``[[1]]`` for a bias-only block), ``G`` that of the output gradients.
    ``bias`` says whether the block's last parameter column is a bias.
    """

    A: Tensor
    G: Tensor
    bias: bool = False

    def dense(self) -> Tensor:
        r"""The dense block :math:`A\otimes G` (column-major ``[vec(W), b]`` ordering)."""
        return torch.kron(self.A, self.G)

    def curvature(self) -> KroneckerCurvature:
        """The block as a :class:`~igbook.fisher.operators.KroneckerCurvature` (flat order)."""
        return KroneckerCurvature(self.A, self.G, bias=self.bias)


def _check_module(m: object) -> None:
    if not isinstance(m, nn.Module):
        raise TypeError(f"m must be a torch.nn.Module (a layer), got {type(m).__name__}")


def _check_rows(t: object, name: str, m: nn.Module) -> None:
    if not isinstance(t, Tensor) or not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {type(t).__name__}")
    if t.ndim < (3 if isinstance(m, nn.Conv2d) else 1):
        raise ValueError(f"{name} must have the layer's feature axes, got shape {tuple(t.shape)}")


def unsupported_layer_reason(m: nn.Module) -> str | None:
    """Why K-FAC cannot factor the layer ``m`` (``None`` for ``nn.Linear`` and plain ``nn.Conv2d``)."""
    _check_module(m)
    if isinstance(m, nn.Conv2d):
        if m.groups != 1:
            return "grouped convolution"
        if m.padding_mode != "zeros":
            return f"padding_mode={m.padding_mode!r}"
        if isinstance(m.padding, str):
            return f"padding={m.padding!r}"
        return None
    if isinstance(m, nn.Linear):
        return None
    return "layer type not supported"


def kronecker_layers(model: nn.Module) -> tuple[dict[str, nn.Module], list[str]]:
    """The layers K-FAC factors, by name (``"<model>"`` for the model itself), and the others.

    Returns ``(layers, unsupported)``: trainable ``nn.Linear``/``nn.Conv2d`` layers, and a
    description of every other module with trainable parameters of its own (with the reason).
    Layers inside an unsupported module with parameters of its own are unsupported too: such a
    parent (``nn.MultiheadAttention``) may use its children's weights without calling them.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    layers: dict[str, nn.Module] = {}
    unsupported: list[str] = []
    opaque: list[str] = []
    for name, m in model.named_modules():
        own = [p for p in m.parameters(recurse=False) if p.requires_grad]
        if not own:
            continue
        parent = next((q for q in opaque if name.startswith(q + ".")), None)
        if parent is not None:
            unsupported.append(
                f"{name} ({type(m).__name__}: inside the unsupported layer {parent})"
            )
            continue
        reason = unsupported_layer_reason(m)
        if reason is not None or not m.weight.requires_grad:
            label = name or type(m).__name__
            unsupported.append(f"{label} ({type(m).__name__}: {reason or 'weight frozen'})")
            if reason is not None and name:
                opaque.append(name)
            continue
        layers[name or "<model>"] = m
    return layers, unsupported


def layer_input_rows(m: nn.Module, x: Tensor) -> Tensor:
    """Rows ``a`` of a layer's input, positions expanded (unfolded patches for a convolution): ``(rows, in)``."""
    _check_module(m)
    _check_rows(x, "x", m)
    if isinstance(m, nn.Conv2d):
        if x.ndim == 3:
            x = x.unsqueeze(0)
        u = tnf.unfold(x, m.kernel_size, dilation=m.dilation, padding=m.padding, stride=m.stride)
        return u.transpose(1, 2).reshape(-1, u.shape[1])
    return x.reshape(-1, x.shape[-1])


def layer_output_rows(m: nn.Module, g: Tensor) -> Tensor:
    """Rows of a gradient with respect to a layer's output, positions expanded: ``(rows, out)``."""
    _check_module(m)
    _check_rows(g, "g", m)
    if isinstance(m, nn.Conv2d):
        if g.ndim == 3:
            g = g.unsqueeze(0)
        return g.flatten(2).transpose(1, 2).reshape(-1, g.shape[1])
    return g.reshape(-1, g.shape[-1])


def backpropagate_output_vectors(
    outputs: Tensor, layer_outputs: Sequence[Tensor], vectors: Tensor
) -> list[Tensor]:
    """Back-propagate each of ``vectors`` (``(K, N, C)``) from ``outputs`` to every layer output.

    Returns, per layer, the ``K`` gradients concatenated along the batch axis (zeros for a layer
    the outputs do not depend on). The graph is kept (``retain_graph``), so a loss can still be
    back-propagated afterwards.
    """
    rows: list[list[Tensor]] = [[] for _ in layer_outputs]
    for k in range(vectors.shape[0]):
        try:
            grads = torch.autograd.grad(
                outputs,
                list(layer_outputs),
                grad_outputs=vectors[k].reshape(outputs.shape).to(outputs.dtype),
                retain_graph=True,
                allow_unused=True,
            )
        except RuntimeError as exc:
            raise RuntimeError(
                "could not backpropagate to the recorded layer outputs: pass the outputs of the last "
                "forward pass, before loss.backward() (or use loss.backward(retain_graph=True)). "
                f"Autograd said: {exc}"
            ) from exc
        for i, (o, g) in enumerate(zip(layer_outputs, grads)):
            rows[i].append(torch.zeros_like(o) if g is None else g)
    return [r[0] if len(r) == 1 else torch.cat(r, dim=0) for r in rows]


def _record_forward(
    model: nn.Module, layers: dict[str, nn.Module], x: Tensor
) -> tuple[Tensor, dict[str, tuple[Tensor, Tensor]]]:
    """One forward pass with temporary hooks: the output and each layer's (input, output)."""
    records: dict[str, tuple[Tensor, Tensor]] = {}
    calls: dict[str, int] = {}

    def make_hook(name: str) -> Any:
        def hook(mod: nn.Module, args: tuple[Any, ...], out: Tensor) -> None:
            calls[name] = calls.get(name, 0) + 1
            records[name] = (args[0].detach(), out)

        return hook

    handles = [m.register_forward_hook(make_hook(name)) for name, m in layers.items()]
    try:
        with torch.enable_grad():
            out = model(x)
    finally:
        for h in handles:
            h.remove()
    twice = [n for n, c in calls.items() if c > 1]
    if twice:
        raise ValueError(
            f"layers {twice} were called more than once in one forward pass: K-FAC does not support parameter reuse"
        )
    missing = [n for n in layers if n not in records]
    if missing:
        raise ValueError(f"layers {missing} were not called by the model's forward pass")
    return out, records


def kfac_factors(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    likelihood: Likelihood | str,
    fisher_type: FisherType | str = FisherType.EXACT,
    mc_samples: int = 1,
    seed: int = 0,
    generator: torch.Generator | None = None,
    bias: str = "joint",
    reduction: str = "mean",
) -> dict[str, KroneckerFactors | tuple[KroneckerFactors, KroneckerFactors]]:
    r"""K-FAC's factors :math:`A, G` of every ``nn.Linear``/``nn.Conv2d`` layer of ``model`` on a batch.

    A pure function: it runs one forward pass with temporary hooks (removed before it returns,
    also on error) and leaves no state on the model. Layers of other types are not factored
    (see :func:`kronecker_layers`).

    Parameters
    ----------
    model, x, y
        The network, a batch of inputs ``(N, ...)`` and (for ``EMPIRICAL``) the observed targets.
    likelihood
        A :class:`~igbook.fisher.likelihoods.Likelihood` or its name.
    fisher_type
        ``EXACT`` (default; ``GGN`` is the same for a canonical likelihood), ``MC`` or ``EMPIRICAL``.
    mc_samples, seed, generator
        Sampled labels per data point for ``MC``, and their source (``generator`` wins).
    bias
        ``"joint"``: one block per layer over ``[W | b]``; ``"separate"``: ``(weight, bias)``
        factor pairs, the bias block with ``A = [[1]]``.
    reduction
        ``"mean"`` (the curvature of :math:`\frac1N\sum_n\ell_n`) or ``"sum"``.

    Returns
    -------
    dict
        layer name :math:`\to` :class:`KroneckerFactors` (or a ``(weight, bias)`` pair).
    """
    lik = get_likelihood(likelihood)
    ftype = as_fisher_type(fisher_type, allowed=KRONECKER_FISHER_TYPES)
    if ftype is FisherType.GGN and not lik.canonical:
        raise ValueError(
            f"fisher_type='ggn' of the non-canonical {lik!r} has no Kronecker factors: use 'exact'"
        )
    bias = check_choice(bias, "bias", BIAS_MODES)
    reduction = check_choice(reduction, "reduction", REDUCTIONS)
    mc_samples = check_integer(mc_samples, "mc_samples", minimum=1)
    if not isinstance(x, Tensor) or x.ndim == 0 or x.shape[0] == 0:
        raise ValueError("x must be a tensor with a non-empty batch axis")
    if x.is_floating_point():
        check_finite(x, "x")
    layers, _ = kronecker_layers(model)
    if not layers:
        raise ValueError(
            "model has no nn.Linear or nn.Conv2d layer with trainable weights: nothing to factor"
        )
    out, records = _record_forward(model, layers, x)
    f = lik.flatten_output(out)
    n = f.shape[0]
    yf = None
    if ftype is FisherType.EMPIRICAL:
        if y is None:
            raise ValueError("y (the observed targets) is required for fisher_type='empirical'")
        yf = lik.check_targets(y, out.detach())
    gen = mc_generator(seed, generator) if ftype is FisherType.MC else None
    vs = lik.output_gradient_samples(f.detach(), ftype, y=yf, mc_samples=mc_samples, generator=gen)
    names = list(layers)
    grads = backpropagate_output_vectors(out, [records[nm][1] for nm in names], vs)
    scale_g = 1.0 if reduction == "sum" else 1.0 / n
    result: dict[str, KroneckerFactors | tuple[KroneckerFactors, KroneckerFactors]] = {}
    for nm, g in zip(names, grads):
        m = layers[nm]
        a = layer_input_rows(m, records[nm][0])
        gr = layer_output_rows(m, g.detach())
        G = (gr.T @ gr) * scale_g
        has_bias = m.bias is not None and m.bias.requires_grad
        if has_bias and bias == "joint":
            a = torch.cat([a, torch.ones(a.shape[0], 1, dtype=a.dtype)], dim=1)
        A = (a.T @ a) / a.shape[0]
        if has_bias and bias == "separate":
            one = torch.ones(1, 1, dtype=A.dtype)
            result[nm] = (KroneckerFactors(A, G, bias=False), KroneckerFactors(one, G, bias=True))
        else:
            result[nm] = KroneckerFactors(A, G, bias=has_bias)
    return result


def kronecker_curvature(
    model: nn.Module,
    factors: dict[str, KroneckerFactors | tuple[KroneckerFactors, KroneckerFactors]],
) -> Curvature:
    """K-FAC's block-diagonal curvature as a :class:`~igbook.fisher.operators.Curvature` in the flat order.

    ``factors`` is what :func:`kfac_factors` returns for ``model``. Every trainable parameter of
    ``model`` must belong to a factored layer (else :class:`ValueError` names the others); the
    blocks are named after the layers (``"<layer>.weight"``/``"<layer>.bias"`` with separate bias
    blocks) and follow the flat order of :func:`igbook.fisher.flatten_params`.
    """
    layout = parameter_layout(model, "flat")
    covered: list[str] = []
    blocks: dict[str, Curvature] = {}
    modules = dict(model.named_modules())
    for name, fac in factors.items():
        m = modules["" if name == "<model>" else name]
        prefix = "" if name == "<model>" else name + "."
        if isinstance(fac, tuple):
            blocks[prefix + "weight"] = fac[0].curvature()
            blocks[prefix + "bias"] = fac[1].curvature()
        else:
            blocks[name] = fac.curvature()
        covered += [prefix + n for n, p in m.named_parameters(recurse=False) if p.requires_grad]
    flat_names = [e[0] for e in layout.entries]
    if covered != flat_names:
        others = [n for n in flat_names if n not in covered]
        raise ValueError(
            "K-FAC's curvature covers nn.Linear/nn.Conv2d layers only; these trainable parameters "
            f"have no Kronecker block: {others}"
            if others
            else "the factors' layers do not follow the model's parameter order"
        )
    return BlockDiagonalCurvature(blocks)
