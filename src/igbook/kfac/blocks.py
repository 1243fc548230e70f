"""K-FAC's settings checks and the state of one Kronecker-factored block.

Shared by :class:`igbook.kfac.KFACPreconditioner`, :class:`igbook.kfac.DenseNaturalGradient`
and :mod:`igbook.kfac.losses`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from igbook._validation import check_scalar, resolve_generator
from igbook.fisher.kronecker import KRONECKER_FISHER_TYPES
from igbook.fisher.likelihoods import Likelihood
from igbook.fisher.types import FisherType, as_fisher_type

__all__ = [
    "FISHER_TYPES",
    "DAMPING_MODES",
    "check_fisher_type",
    "check_factor_decay",
    "make_kfac_generator",
    "LayerBlock",
]

#: The Fisher types :class:`KFACPreconditioner` understands (``GGN`` of a canonical likelihood is ``EXACT``).
FISHER_TYPES = (FisherType.MC, FisherType.EXACT, FisherType.EMPIRICAL)
#: ``"factored"`` (π-heuristic) or ``"exact"`` damping of the Kronecker product
DAMPING_MODES = ("factored", "exact")


def check_fisher_type(value: object, likelihood: Likelihood) -> FisherType:
    """The K-FAC Fisher type of ``value`` (``GGN`` of a canonical likelihood becomes ``EXACT``), or raise."""
    ftype = as_fisher_type(value, allowed=KRONECKER_FISHER_TYPES)
    if ftype is FisherType.GGN:
        if not likelihood.canonical:
            raise ValueError(
                f"fisher_type='ggn' of the non-canonical {likelihood!r} has no Kronecker factors: use 'exact'"
            )
        ftype = FisherType.EXACT
    return ftype


def check_factor_decay(factor_decay: object) -> float:
    """``factor_decay`` in (0, 1], or raise naming it."""
    return check_scalar(factor_decay, "factor_decay", low=0.0, high=1.0, closed_low=False)


def make_kfac_generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator:
    """The generator of K-FAC's sampled labels: ``generator``, else one seeded with ``seed`` (``None`` means 0)."""
    if generator is not None:
        return resolve_generator(None, generator)  # type: ignore[return-value]
    return resolve_generator(0 if seed is None else seed, None)  # type: ignore[return-value]


class LayerBlock:
    """One Kronecker-factored block of :class:`~igbook.kfac.core.KFACPreconditioner`: a layer's
    weight (and bias), or a layer's bias alone, with its moving-average factors and inverses."""

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
