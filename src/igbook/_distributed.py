r"""The one place where igbook's optimizers talk to ``torch.distributed``.

Data-parallel training (``DistributedDataParallel``, DDP) averages the *gradients* over the
ranks. The curvature statistics that an optimizer computes itself (K-FAC's :math:`A` and
:math:`G`, the exact-Fisher products of natural-gradient descent, VON/VOGN's per-example
curvature, the sampled statistics of IVON, BGD and MESU) are averaged here, with
:func:`all_reduce_mean_`: one flat buffer, one ``all_reduce`` per call
:cite:`ba2017distributed`. Every function is a no-op when ``torch.distributed`` is not
initialized or the group has one rank, so single-process runs are bitwise unchanged.

``process_group`` arguments everywhere mean: ``None`` the default (world) group when one is
initialized, else no communication; a ``ProcessGroup`` that group.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "active_group",
    "all_reduce_mean_",
    "any_rank",
    "check_process_group",
    "communication_seconds",
    "rank_of",
    "rank_seed",
]

_COMM = {"seconds": 0.0, "calls": 0}


def check_process_group(process_group: Any) -> Any:
    """``process_group`` if it is ``None`` or a ``torch.distributed`` process group, else raise."""
    if process_group is None:
        return None
    if not isinstance(process_group, dist.ProcessGroup):
        raise TypeError(
            "process_group must be None or a torch.distributed ProcessGroup, got "
            f"{type(process_group).__name__}"
        )
    return process_group


def active_group(process_group: Any = None) -> Any:
    """The group to reduce over, or ``False`` when there is nothing to do (one process).

    ``None`` resolves to the world group when ``torch.distributed`` is initialized.
    """
    if not dist.is_available() or not dist.is_initialized():
        return False
    group = process_group if process_group is not None else dist.group.WORLD
    if dist.get_world_size(group) <= 1:
        return False
    return group


def rank_of(process_group: Any = None) -> int:
    """This process's rank in the group (0 without ``torch.distributed``)."""
    group = active_group(process_group)
    return 0 if group is False else dist.get_rank(group)


def rank_seed(seed: int, process_group: Any = None) -> int:
    """The seed of this rank's private generator: ``seed + rank`` (``seed`` in one process).

    Distinct on every rank, reproducible, and equal to ``seed`` on rank 0, so that rank 0 of a
    distributed run draws what a one-process run with the same seed draws.
    """
    return int(seed) + rank_of(process_group)


@torch.no_grad()
def all_reduce_mean_(tensors: list[Tensor], process_group: Any = None) -> list[Tensor]:
    r"""Replace each tensor, in place, by its mean over the ranks: :math:`t \leftarrow \frac1R\sum_r t_r`.

    The tensors are packed into one flat buffer per dtype, so each call is one ``all_reduce``
    per dtype. A non-finite value on any rank makes the mean non-finite on every rank, so the
    optimizers' finite checks after the reduction fail (and restore) on all ranks together.
    Without an active group the tensors are returned untouched.
    """
    group = active_group(process_group)
    if group is False or not tensors:
        return tensors
    start = time.perf_counter()
    size = dist.get_world_size(group)
    by_dtype: dict[torch.dtype, list[Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    for ts in by_dtype.values():
        flat = torch.cat([t.reshape(-1) for t in ts])
        dist.all_reduce(flat, group=group)
        flat.div_(size)
        offset = 0
        for t in ts:
            n = t.numel()
            t.copy_(flat[offset : offset + n].view_as(t))
            offset += n
    _COMM["seconds"] += time.perf_counter() - start
    _COMM["calls"] += 1
    return tensors


def any_rank(flag: bool, process_group: Any = None) -> bool:
    """Whether ``flag`` is true on any rank (one small ``all_reduce``; ``flag`` in one process).

    Used before an early error so that every rank raises together instead of one rank
    leaving the others waiting in a collective.
    """
    group = active_group(process_group)
    if group is False:
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
    return bool(t.item() > 0)


def communication_seconds(reset: bool = False) -> tuple[float, int]:
    """Wall time spent in igbook's reductions so far in this process, and their number."""
    out = (_COMM["seconds"], _COMM["calls"])
    if reset:
        _COMM["seconds"], _COMM["calls"] = 0.0, 0
    return out
