r"""Build any curvature of a network as a :class:`~igbook.fisher.operators.Curvature`: :func:`curvature`.

One entry point for the structures of :mod:`igbook.fisher.operators` (what preconditioners, the
Laplace approximation and the chapters consume), all with the vocabulary of
:class:`~igbook.fisher.types.FisherType` and :mod:`igbook.fisher.likelihoods`:

=================  ==============================================================================
``structure``      result
=================  ==============================================================================
``"dense"``        :class:`DenseCurvature` (named layer blocks)
``"diagonal"``     :class:`DiagonalCurvature` (named layer blocks)
``"blocks"``       :class:`BlockDiagonalCurvature` of dense blocks, one per parameter tensor
``"layers"``       :class:`BlockDiagonalCurvature` of dense blocks, one per module (weight and bias)
``"kron"``         :class:`BlockDiagonalCurvature` of :class:`KroneckerCurvature` blocks (K-FAC)
``"operator"``     :class:`~igbook.fisher.CurvatureOperator` (matrix-free products)
=================  ==============================================================================

Every structure is a mean over the data points (``"kron"``: as :func:`~igbook.fisher.kronecker.kfac_factors` with
``reduction="mean"``) and uses the flat parameter order of :func:`igbook.fisher.flatten_params`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from igbook._validation import check_choice
from igbook.fisher.kronecker import kfac_factors, kronecker_curvature
from igbook.fisher.layout import Params, model_params, param_slices
from igbook.fisher.likelihoods import Likelihood
from igbook.fisher.models import curvature_matrix
from igbook.fisher.operators import (
    BlockDiagonalCurvature,
    Curvature,
    DenseCurvature,
    DiagonalCurvature,
)
from igbook.fisher.products import CurvatureOperator
from igbook.fisher.types import FisherType, as_fisher_type

__all__ = ["CURVATURE_STRUCTURES", "curvature", "layer_blocks"]

#: the structures :func:`curvature` builds
CURVATURE_STRUCTURES = ("dense", "diagonal", "blocks", "layers", "kron", "operator")


def layer_blocks(params: Params) -> dict[str, slice]:
    """Named blocks of the flat vector, one per module (``"fc1"`` holds ``fc1.weight`` and ``fc1.bias``).

    Parameters of the model itself (no dot in the name) form the block ``"<model>"``.
    """
    slices = param_slices(params)
    out: dict[str, slice] = {}
    for name, sl in slices.items():
        mod = name.rpartition(".")[0] or "<model>"
        if mod in out and out[mod].stop == sl.start:
            out[mod] = slice(out[mod].start, sl.stop)
        elif mod in out:  # a module whose tensors are not contiguous: name the tensors instead
            out[name] = sl
        else:
            out[mod] = sl
    return out


def curvature(
    model: nn.Module,
    params: Params | None,
    x: Tensor,
    y: Tensor | None,
    likelihood: Likelihood | str,
    fisher_type: FisherType | str = FisherType.EXACT,
    *,
    structure: str = "dense",
    mc_samples: int = 1,
    seed: int = 0,
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
) -> Curvature:
    """The curvature of ``model`` with ``likelihood`` on the batch ``(x, y)`` as a :class:`Curvature`.

    Arguments as in :func:`igbook.fisher.curvature_matrix`; ``structure`` from
    :data:`CURVATURE_STRUCTURES` (module docstring). ``"kron"`` needs ``params=None`` (the
    model's own parameters, all in ``nn.Linear``/``nn.Conv2d`` layers) and a Fisher type with
    Kronecker factors (exact, GGN of a canonical likelihood, MC, empirical).
    """
    structure = check_choice(structure, "structure", CURVATURE_STRUCTURES)
    ftype = as_fisher_type(fisher_type)
    kw = {"mc_samples": mc_samples, "seed": seed, "generator": generator}
    if structure == "operator":
        return CurvatureOperator(model, params, x, y, likelihood, ftype, **kw)
    if structure == "kron":
        if params is not None:
            raise ValueError(
                "params must be None for structure='kron' (K-FAC factors the model's own layers)"
            )
        factors = kfac_factors(model, x, y, likelihood=likelihood, fisher_type=ftype, **kw)
        return kronecker_curvature(model, factors)
    p = model_params(model) if params is None else params
    names = layer_blocks(p)
    if structure in ("dense", "diagonal"):
        m = curvature_matrix(
            model, params, x, y, likelihood, ftype, structure=structure, chunk_size=chunk_size, **kw
        )
        assert isinstance(m, Tensor)
        return (
            DenseCurvature(m, blocks=names)
            if structure == "dense"
            else DiagonalCurvature(m, blocks=names)
        )
    blocks = curvature_matrix(
        model, params, x, y, likelihood, ftype, structure=structure, chunk_size=chunk_size, **kw
    )
    assert isinstance(blocks, dict)
    return BlockDiagonalCurvature({name: DenseCurvature(b) for name, b in blocks.items()})
