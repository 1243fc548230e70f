r"""Continual-learning metrics from the accuracy matrix.

The accuracy matrix :math:`R\in[0,1]^{T\times T}` holds in :math:`R_{ij}` the test accuracy on
task :math:`j` after training on tasks :math:`0,\dots,i` :cite:`lopezpaz2017gradient`. With
:math:`T` tasks:

* **average accuracy** after task :math:`i`: :math:`A_i = \frac{1}{i+1}\sum_{j\le i}R_{ij}`;
  the *final* average accuracy is :math:`A_{T-1}`;
* **newest-task accuracy** :math:`R_{ii}`: accuracy on the task just learned, a measure of
  plasticity;
* **forgetting** :cite:`chaudhry2018riemannian`:
  :math:`\frac{1}{T-1}\sum_{j<T-1}\big(\max_{j\le l<T-1}R_{lj} - R_{T-1,j}\big)`, the mean drop
  from the best accuracy a task ever had;
* **backward transfer** :cite:`lopezpaz2017gradient`:
  :math:`\frac{1}{T-1}\sum_{j<T-1}(R_{T-1,j}-R_{jj})` (negative when the learner forgets).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

__all__ = [
    "check_accuracy_matrix",
    "average_accuracy",
    "newest_task_accuracy",
    "forgetting",
    "backward_transfer",
    "summarize",
    "mean_std",
]


def check_accuracy_matrix(R: Tensor | Sequence[Sequence[float]]) -> Tensor:
    """Validate and return ``R`` as a float64 square matrix with entries in [0, 1]."""
    r = torch.as_tensor(R, dtype=torch.float64)
    if r.ndim != 2 or r.shape[0] != r.shape[1] or r.shape[0] == 0:
        raise ValueError(
            f"R must be a non-empty square matrix (tasks x tasks), got shape {tuple(r.shape)}"
        )
    if not bool(torch.isfinite(r).all()) or not bool(((r >= 0) & (r <= 1)).all()):
        raise ValueError("R must hold accuracies in [0, 1]")
    return r


def average_accuracy(R: Tensor, after: int | None = None) -> float:
    """Mean accuracy over tasks ``0..after`` after training on task ``after`` (default: the last)."""
    r = check_accuracy_matrix(R)
    t = r.shape[0] - 1 if after is None else int(after)
    if not 0 <= t < r.shape[0]:
        raise ValueError(f"after must lie in [0, {r.shape[0] - 1}], got {after}")
    return float(r[t, : t + 1].mean())


def newest_task_accuracy(R: Tensor) -> Tensor:
    """Accuracy on each task right after learning it: the diagonal of ``R``."""
    return check_accuracy_matrix(R).diagonal().clone()


def forgetting(R: Tensor) -> float:
    """Mean over old tasks of (best accuracy ever, before the end) minus (final accuracy)."""
    r = check_accuracy_matrix(R)
    t = r.shape[0]
    if t < 2:
        raise ValueError("forgetting needs at least 2 tasks")
    drops = [float(r[j : t - 1, j].max() - r[t - 1, j]) for j in range(t - 1)]
    return sum(drops) / len(drops)


def backward_transfer(R: Tensor) -> float:
    """Mean over old tasks of (final accuracy) minus (accuracy right after learning it)."""
    r = check_accuracy_matrix(R)
    t = r.shape[0]
    if t < 2:
        raise ValueError("backward transfer needs at least 2 tasks")
    return float((r[t - 1, : t - 1] - r.diagonal()[: t - 1]).mean())


def summarize(R: Tensor) -> dict[str, float]:
    """All scalar metrics of ``R``: final average accuracy, final newest-task accuracy, mean
    newest-task accuracy, forgetting and backward transfer."""
    r = check_accuracy_matrix(R)
    out = {
        "average_accuracy": average_accuracy(r),
        "newest_accuracy": float(r[-1, -1]),
        "mean_newest_accuracy": float(r.diagonal().mean()),
    }
    if r.shape[0] >= 2:
        out["forgetting"] = forgetting(r)
        out["backward_transfer"] = backward_transfer(r)
    return out


def mean_std(values: Sequence[Mapping[str, float]]) -> dict[str, tuple[float, float]]:
    """Mean and sample standard deviation (ddof = 1; 0 for a single run) of each metric over runs."""
    if len(values) == 0:
        raise ValueError("values must hold at least one run")
    keys = list(values[0])
    out = {}
    for k in keys:
        xs = [float(v[k]) for v in values]
        m = sum(xs) / len(xs)
        s = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
        out[k] = (m, s)
    return out
