r"""K-FAC's factor update under ``torch.distributed`` (data parallel).

:class:`~igbook.kfac.core.KFACPreconditioner` calls :func:`update_factors_distributed` instead of
its fused single-process update when a process group of more than one rank is active, so
single-process runs are bitwise unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from igbook._distributed import all_reduce_mean_
from igbook._safety import first_nonfinite, nonfinite_error
from igbook.kfac.blocks import LayerBlock

__all__ = ["update_factors_distributed"]


def update_factors_distributed(
    pre: Any,
    stats: dict[nn.Module, tuple[Tensor, Tensor]],
    scale_g: float,
    rng: Tensor,
    group: Any,
) -> None:
    r"""The factor update under ``torch.distributed``: batch statistics averaged over the ranks.

    Each rank forms its batch statistics :math:`\hat A_r = \bar a_r^\top\bar a_r/n_r` and
    :math:`\hat G_r = g_r^\top g_r\cdot s` (``s`` = ``1/n_r`` for ``reduction="mean"``);
    one ``all_reduce`` replaces them by :math:`\frac1R\sum_r \hat A_r`,
    :math:`\frac1R\sum_r \hat G_r`, which for equal per-rank batches are the statistics of
    the whole global batch :cite:`ba2017distributed`; then the moving averages are updated
    identically on every rank. The finite check comes after the reduction, so all ranks
    raise together.
    """
    by_module: dict[nn.Module, list[LayerBlock]] = {}
    for blk in pre.blocks:
        by_module.setdefault(blk.module, []).append(blk)
    batch: dict[nn.Module, tuple[Tensor, Tensor]] = {}
    for m, (a, g) in stats.items():
        first = by_module[m][0]
        gb = (g.T @ g).mul_(scale_g)
        if first.has_bias:
            d = first.din - 1
            ab = torch.empty(first.din, first.din, dtype=a.dtype)
            ab[:d, :d] = a.T @ a / a.shape[0]
            mean = a.sum(0) / a.shape[0]
            ab[:d, d] = mean
            ab[d, :d] = mean
            ab[d, d] = 1.0
        else:
            ab = a.T @ a / a.shape[0]
        batch[m] = (ab, gb)
    flat = [t for ag in batch.values() for t in ag]
    all_reduce_mean_(flat, group)
    bad = first_nonfinite(flat)
    if bad is not None:
        pre.generator.set_state(rng)
        m = list(batch)[bad // 2]
        what = "layer inputs (activations)" if bad % 2 == 0 else "sampled output gradients"
        raise nonfinite_error(type(pre).__name__, f"curvature statistic ({what})", pre._layers[m])
    pre.factor_updates += 1
    eps = min(1.0 - 1.0 / pre.factor_updates, pre.factor_decay)
    for m, (ab, gb) in batch.items():
        first = by_module[m][0]
        if first.A is None:
            for blk in by_module[m]:
                blk.A = torch.zeros(blk.din, blk.din, dtype=ab.dtype)
                blk.G = torch.zeros(blk.out, blk.out, dtype=ab.dtype)
        for blk in by_module[m]:
            if blk.kind == "bias":
                blk.A.fill_(1.0)  # type: ignore[union-attr]
                blk.G = first.G
                continue
            blk.G.mul_(eps).add_(gb, alpha=1.0 - eps)  # type: ignore[union-attr]
            blk.A.mul_(eps).add_(ab, alpha=1.0 - eps)  # type: ignore[union-attr]
            if blk.has_bias:
                blk.A[-1, -1] = 1.0  # type: ignore[index]
    pre._records.clear()
    pre._factors_dirty = True
    pre._updated_this_step = True
