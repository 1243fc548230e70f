r"""Predictive, aleatoric and epistemic uncertainty from posterior samples; OOD detection AUC.

Given class probabilities :math:`p_s = p(\cdot\mid x,\omega_s)` under :math:`S` posterior
samples :math:`\omega_s\sim q` and their mean :math:`\bar p`, in bits
:cite:`bonnet2025bayesian`:

.. math::

    \underbrace{H[\bar p]}_{\text{predictive}}
    = \underbrace{\frac1S\sum_s H[p_s]}_{\text{aleatoric}}
    + \underbrace{\Big(H[\bar p] - \frac1S\sum_s H[p_s]\Big)}_{\text{epistemic}} ,

the epistemic part being the mutual information between the label and the weights, which is
:math:`\ge 0` by concavity of the entropy and vanishes when all samples agree (a point
estimate, or a collapsed posterior).

Out-of-distribution detection scores each input by an uncertainty and reports the ROC AUC of
separating OOD inputs (positives) from in-distribution ones (negatives): the probability that
a random OOD input scores higher than a random in-distribution one, ties counting one half
(the Mann-Whitney statistic, equal to the trapezoidal area under the ROC curve).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from igbook._validation import as_tensor, check_finite, check_simplex

__all__ = ["entropy", "Uncertainty", "uncertainty_decomposition", "roc_auc", "ood_auc"]


def entropy(probs: Tensor, dim: int = -1, *, base: float = 2.0) -> Tensor:
    r"""Shannon entropy :math:`-\sum p\log p` along ``dim`` (with :math:`0\log 0 = 0`), in base ``base``.

    ``probs`` must be probability vectors along ``dim`` (entries >= 0 summing to 1 within
    1e-6); ``base`` a finite number > 0 other than 1.
    """
    if not isinstance(probs, Tensor):
        raise TypeError(f"probs must be a tensor, got {type(probs).__name__}")
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"dim must be an int, got {type(dim).__name__}")
    if probs.ndim == 0 or not -probs.ndim <= dim < probs.ndim:
        raise ValueError(f"dim must be an axis of probs (ndim {probs.ndim}), got {dim}")
    if isinstance(base, bool) or not isinstance(base, (int, float)):
        raise TypeError(f"base must be a real number, got {type(base).__name__}")
    if not (base > 0 and math.isfinite(base)) or base == 1:
        raise ValueError(f"base must be finite, > 0 and != 1, got {base}")
    probs = as_tensor(probs, "probs")
    if not bool(torch.isfinite(probs).all()) or not bool((probs >= 0).all()):
        raise ValueError("probs must be finite and >= 0")
    if probs.shape[dim] >= 2:
        check_simplex(probs.movedim(dim, -1), "probs", interior=False)
    elif not bool(torch.allclose(probs, torch.ones_like(probs), atol=1e-6, rtol=0)):
        raise ValueError("probs must sum to 1 along dim (a single category has probability 1)")
    h = -torch.special.xlogy(probs, probs).sum(dim)
    return h / torch.log(torch.tensor(base, dtype=h.dtype))


class Uncertainty(NamedTuple):
    """Per-input uncertainties in bits: ``predictive = aleatoric + epistemic``."""

    predictive: Tensor
    aleatoric: Tensor
    epistemic: Tensor


def uncertainty_decomposition(sample_probs: Tensor) -> Uncertainty:
    r"""Split the predictive entropy into aleatoric and epistemic parts.

    Parameters
    ----------
    sample_probs
        Shape ``(S, n, C)``: class probabilities of ``n`` inputs under ``S`` posterior samples.

    Returns
    -------
    Uncertainty
        Three tensors of shape ``(n,)`` in bits. Rounding can make the epistemic part a
        few ulp below zero; it is clipped at 0.
    """
    if not isinstance(sample_probs, Tensor) or sample_probs.ndim != 3:
        raise ValueError("sample_probs must be a tensor of shape (S, n, C)")
    s = sample_probs.sum(-1)
    if not torch.allclose(s, torch.ones_like(s), atol=1e-4):
        raise ValueError("sample_probs must sum to 1 over the last axis")
    pred = entropy(sample_probs.mean(0))
    alea = entropy(sample_probs).mean(0)
    return Uncertainty(pred, alea, (pred - alea).clamp_min(0.0))


def roc_auc(scores_in: Tensor, scores_out: Tensor) -> float:
    r"""ROC AUC for detecting ``scores_out`` (positives) against ``scores_in`` (negatives).

    :math:`\Pr[s_{\mathrm{out}} > s_{\mathrm{in}}] + \tfrac12\Pr[s_{\mathrm{out}} = s_{\mathrm{in}}]`,
    computed from mid-ranks in :math:`O(n\log n)`. 1 is perfect detection, 0.5 chance.
    """
    a = as_tensor(scores_in, "scores_in", dtype=torch.float64).reshape(-1)
    b = as_tensor(scores_out, "scores_out", dtype=torch.float64).reshape(-1)
    for name, t in (("scores_in", a), ("scores_out", b)):
        if t.numel() == 0:
            raise ValueError(f"{name} must be non-empty, got no scores")
        check_finite(t, name)
    allv = torch.cat([a, b])
    sorted_v, order = torch.sort(allv, stable=True)
    ranks = torch.empty_like(sorted_v)
    # mid-ranks of tied groups
    _, inverse, counts = torch.unique_consecutive(sorted_v, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).to(torch.float64)
    mid = ends - (counts.to(torch.float64) - 1) / 2
    ranks[order] = mid[inverse]
    n_in, n_out = a.numel(), b.numel()
    r_out = ranks[n_in:].sum()
    u = r_out - n_out * (n_out + 1) / 2
    return float(u / (n_in * n_out))


def ood_auc(
    sample_probs_in: Tensor, sample_probs_out: Tensor, *, score: str = "epistemic"
) -> float:
    """OOD-detection AUC from posterior-sample probabilities of in- and out-of-distribution inputs.

    ``score`` is ``"epistemic"``, ``"aleatoric"`` or ``"predictive"`` (the uncertainty used to
    flag an input as OOD).
    """
    if score not in Uncertainty._fields:
        raise ValueError(f"score must be one of {Uncertainty._fields}, got {score!r}")
    u_in = getattr(uncertainty_decomposition(sample_probs_in), score)
    u_out = getattr(uncertainty_decomposition(sample_probs_out), score)
    return roc_auc(u_in, u_out)
