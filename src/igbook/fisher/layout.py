r"""Flat parameter vectors: one order for the dense curvature, one for Kronecker factors.

``"flat"`` order (:func:`flatten_params`): the trainable parameters in
``model.named_parameters()`` order, each tensor flattened row-major; every dense matrix of
:mod:`igbook.fisher` uses it. ``"kronecker"`` order: per ``nn.Linear``/``nn.Conv2d`` layer,
``[vec(W), b]`` with :math:`\operatorname{vec}` stacking the *columns* of the ``(out, in)``
weight matrix, the order in which a K-FAC block is :math:`A\otimes G`
:cite:`martens2015optimizing`; other parameters as in ``"flat"``. :func:`parameter_layout`
describes either order and :func:`reorder` maps vectors and matrices between them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from igbook._validation import check_choice, check_finite

__all__ = [
    "model_params",
    "flatten_params",
    "unflatten_params",
    "param_slices",
    "ParameterLayout",
    "parameter_layout",
    "reorder",
    "layer_vector",
    "ORDERS",
]

Params = Mapping[str, Tensor]
#: the two flat orders of a network's parameters
ORDERS = ("flat", "kronecker")


def model_params(model: nn.Module) -> dict[str, Tensor]:
    """Detached copies of the trainable parameters of ``model``, in registration order."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def flatten_params(params: Params) -> Tensor:
    """Concatenate the tensors of ``params`` (each flattened row-major) into one flat vector."""
    if not isinstance(params, Mapping) or not params:
        raise ValueError("params must be a non-empty dict of name -> tensor")
    return torch.cat([t.reshape(-1) for t in params.values()])


def param_slices(params: Params) -> dict[str, slice]:
    """Where each tensor of ``params`` lives in the flat vector of :func:`flatten_params`."""
    out, i = {}, 0
    for name, t in params.items():
        out[name] = slice(i, i + t.numel())
        i += t.numel()
    return out


def unflatten_params(vec: Tensor, like: Params) -> dict[str, Tensor]:
    """Split a flat vector into tensors shaped like ``like`` (inverse of :func:`flatten_params`)."""
    total = sum(t.numel() for t in like.values())
    if not isinstance(vec, Tensor) or vec.shape[-1:] != (total,):
        shape = tuple(vec.shape) if isinstance(vec, Tensor) else type(vec).__name__
        raise ValueError(
            f"vector must have last axis of size {total} (the number of parameters), got {shape}"
        )
    lead = vec.shape[:-1]
    return {n: vec[..., s].reshape(*lead, *like[n].shape) for n, s in param_slices(like).items()}


@dataclass(frozen=True)
class ParameterLayout:
    """How a network's trainable parameters are stacked into one vector.

    ``entries`` lists ``(parameter name, module name, slice, column_major)`` in vector order;
    ``layers`` maps an ``nn.Linear``/``nn.Conv2d`` module name (``"<model>"`` for the model
    itself) to the slice of its block; ``order`` is ``"flat"`` or ``"kronecker"`` (module
    docstring); ``shapes`` maps parameter names to shapes.
    """

    entries: tuple[tuple[str, str, slice, bool], ...]
    layers: dict[str, slice]
    size: int
    order: str = "kronecker"
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def flatten(self, tensors: Mapping[str, Tensor]) -> Tensor:
        """Stack per-parameter tensors (parameters, gradients) into one vector in this layout."""
        out = []
        for pname, _, _, colmajor in self.entries:
            t = tensors[pname]
            out.append(t.reshape(t.shape[0], -1).T.reshape(-1) if colmajor else t.reshape(-1))
        return torch.cat(out)

    def unflatten(
        self, vector: Tensor, like: Mapping[str, Tensor] | None = None
    ) -> dict[str, Tensor]:
        """Inverse of :meth:`flatten`: cut ``vector`` into tensors shaped like ``like`` (default: :attr:`shapes`)."""
        out = {}
        for pname, _, sl, colmajor in self.entries:
            shape = tuple(like[pname].shape) if like is not None else self.shapes[pname]
            v = vector[sl]
            if colmajor:
                v = v.reshape(math.prod(shape[1:]), shape[0]).T
            out[pname] = v.reshape(shape)
        return out


def parameter_layout(model: nn.Module, order: str = "kronecker") -> ParameterLayout:
    """The layout of ``model``'s trainable parameters in ``order`` (``"flat"`` or ``"kronecker"``).

    Both orders visit the parameters tensor by tensor in ``named_parameters()`` order (a
    layer's weight before its bias); they differ only inside ``nn.Linear``/``nn.Conv2d``
    weights, row-major in ``"flat"``, column-major in ``"kronecker"``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    order = check_choice(order, "order", ORDERS)
    names = {id(p): n for n, p in model.named_parameters() if p.requires_grad}
    entries: list[tuple[str, str, slice, bool]] = []
    layers: dict[str, slice] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    pos = 0
    seen: set[int] = set()
    for mname, m in model.named_modules():
        own = [
            (n, p)
            for n, p in m.named_parameters(recurse=False)
            if p.requires_grad and id(p) not in seen
        ]
        if not own:
            continue
        is_layer = isinstance(m, (nn.Linear, nn.Conv2d))
        if is_layer:
            own.sort(key=lambda item: 0 if item[0] == "weight" else 1)
        start = pos
        for n, p in own:
            seen.add(id(p))
            full = names[id(p)]
            colmajor = order == "kronecker" and is_layer and n == "weight"
            entries.append((full, mname, slice(pos, pos + p.numel()), colmajor))
            shapes[full] = tuple(p.shape)
            pos += p.numel()
        if is_layer:
            layers[mname or "<model>"] = slice(start, pos)
    if pos == 0:
        raise ValueError("model has no trainable parameters")
    flat_names = list(names.values())
    if order == "flat" and [e[0] for e in entries] != flat_names:
        # a module that registers its bias before its weight: keep named_parameters() order
        by_name = {e[0]: e for e in entries}
        entries, pos = [], 0
        for full in flat_names:
            _, mname, sl, _ = by_name[full]
            n = sl.stop - sl.start
            entries.append((full, mname, slice(pos, pos + n), False))
            pos += n
        layers = {}
    return ParameterLayout(tuple(entries), layers, pos, order, shapes)


def reorder(
    t: Tensor,
    model: nn.Module,
    *,
    source: str = "flat",
    target: str = "kronecker",
    matrix: bool = False,
) -> Tensor:
    r"""Map a vector ``(P,)``, a stack of vectors ``(P, K)`` or, with ``matrix=True``, a
    ``(P, P)`` matrix (both axes) from the ``source`` order of ``model``'s parameters to ``target``.

    ``reorder(curvature_matrix(model, None, ...), model, matrix=True)`` puts a dense Fisher in
    the order in which its layer blocks compare with K-FAC's :math:`A\otimes G`.
    """
    src = parameter_layout(model, source)
    dst = parameter_layout(model, target)
    if not isinstance(t, Tensor):
        raise TypeError(f"t must be a tensor, got {type(t).__name__}")
    if t.ndim == 0 or t.shape[0] != src.size or (matrix and tuple(t.shape) != (src.size, src.size)):
        want = f"({src.size}, {src.size})" if matrix else f"({src.size},) or ({src.size}, K)"
        raise ValueError(
            f"t must have shape {want} (the model's {src.size} parameters), got {tuple(t.shape)}"
        )
    # index[i] = position in the source vector of entry i of the target vector
    positions = torch.arange(src.size, dtype=torch.float64)
    index = dst.flatten(src.unflatten(positions)).round().long()
    out = t.index_select(0, index)
    return out.index_select(1, index) if matrix else out


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
        raise ValueError(
            f"weight must have at least 2 axes (out, in, ...), got shape {tuple(weight.shape)}"
        )
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
