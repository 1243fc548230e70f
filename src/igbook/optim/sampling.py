r"""Posterior sampling and predictives of the Bayesian-learning-rule optimizers, and calibration metrics.

A variational optimizer (:class:`~igbook.optim.blr.IVON`, :class:`~igbook.optim.blr.VOGN`, ...)
defines a posterior :math:`q(\theta)`; its posterior predictive is

.. math::

    p(y\mid x, \mathcal{D}) \approx \mathbb{E}_{q(\theta)}[p(y\mid x,\theta)]
    \approx \frac1S\sum_{k=1}^S p(y\mid x,\theta_k), \qquad \theta_k\sim q,

which :func:`predictive` computes for any object with a ``sampled_params()`` context manager
(the optimizers here, and also the reference ``ivon.IVON``). The metrics judge predicted class
probabilities: accuracy, negative log-likelihood, Brier score and the expected calibration
error with its reliability diagram :cite:`guo2017calibration`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import torch
from torch import Tensor

from igbook._validation import check_callable, check_count, check_simplex

__all__ = [
    "sampled_params",
    "predictive",
    "ReliabilityCurve",
    "reliability_curve",
    "expected_calibration_error",
    "ClassificationMetrics",
    "classification_metrics",
]


@contextmanager
def sampled_params(optimizer: Any, *, train: bool = False) -> Iterator[None]:
    """Function form of ``optimizer.sampled_params(train=...)``: weights are a posterior sample
    inside the block, and the means are restored on exit, also when the block raises."""
    if not hasattr(optimizer, "sampled_params"):
        raise TypeError(
            f"optimizer must have a sampled_params() context manager, got {type(optimizer).__name__}"
        )
    with optimizer.sampled_params(train=train):
        yield


def predictive(
    optimizer: Any,
    fn: Callable[[], Tensor],
    num_samples: int,
    *,
    return_samples: bool = False,
) -> Tensor:
    r"""Monte Carlo posterior predictive :math:`\frac1S\sum_k f(\theta_k)`, :math:`\theta_k \sim q`.

    Runs under :func:`torch.no_grad`; the weights are the posterior means again afterwards.

    Parameters
    ----------
    optimizer
        Any object with a ``sampled_params()`` context manager.
    fn
        Evaluates the quantity to average with the current weights; for a classifier pass a
        function returning class probabilities such as ``lambda: model(x).softmax(-1)``
        (average probabilities, not logits).
    num_samples
        :math:`S \ge 1`.
    return_samples
        Return the stacked ``(S, ...)`` evaluations instead of their mean.
    """
    if not hasattr(optimizer, "sampled_params"):
        raise TypeError(
            f"optimizer must have a sampled_params() context manager, got {type(optimizer).__name__}"
        )
    check_callable(fn, "fn")
    check_count(num_samples, "num_samples")
    outs: list[Tensor] = []
    mean: Tensor | None = None
    with torch.no_grad():
        for k in range(num_samples):
            with optimizer.sampled_params():
                out = fn()
            if not isinstance(out, Tensor):
                raise TypeError(f"fn must return a tensor, got {type(out).__name__}")
            if return_samples:
                outs.append(out)
            else:
                mean = out.clone() if mean is None else mean + (out - mean) / (k + 1)
    if return_samples:
        return torch.stack(outs)
    assert mean is not None
    return mean


def _check_probs_labels(probs: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Predicted class probabilities ``(n, classes)`` (rows on the simplex) and integer labels ``(n,)``."""
    if not isinstance(probs, Tensor) or not isinstance(labels, Tensor):
        raise TypeError("probs and labels must be tensors")
    if probs.ndim != 2 or probs.shape[1] < 2 or probs.shape[0] == 0:
        raise ValueError(
            f"probs must have shape (n, classes) with classes >= 2, got {tuple(probs.shape)}"
        )
    if labels.shape != (probs.shape[0],):
        raise ValueError(f"labels must have shape ({probs.shape[0]},), got {tuple(labels.shape)}")
    if labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"labels must be integer class indices, got {labels.dtype}")
    if bool((labels < 0).any()) or bool((labels >= probs.shape[1]).any()):
        raise ValueError(f"labels must lie in [0, {probs.shape[1]})")
    tol = 1e-4 if probs.dtype in (torch.float16, torch.bfloat16, torch.float32) else 1e-8
    check_simplex(probs, "probs (probabilities, not logits)", atol=tol, interior=False)
    return probs, labels.long()


class ReliabilityCurve(NamedTuple):
    """Per-bin mean confidence, accuracy and count of a reliability diagram; ``edges`` has
    ``num_bins + 1`` entries. Empty bins hold ``nan`` confidence/accuracy and count 0."""

    confidence: Tensor
    accuracy: Tensor
    count: Tensor
    edges: Tensor


def reliability_curve(probs: Tensor, labels: Tensor, num_bins: int = 10) -> ReliabilityCurve:
    r"""Bin predictions by confidence :math:`\max_c p_c` into ``num_bins`` equal-width bins
    :math:`(b/B, (b+1)/B]` and return each bin's mean confidence and accuracy
    :cite:`guo2017calibration`."""
    probs, labels = _check_probs_labels(probs, labels)
    check_count(num_bins, "num_bins")
    conf, pred = probs.max(1)
    correct = (pred == labels).to(probs.dtype)
    edges = torch.linspace(0.0, 1.0, num_bins + 1, dtype=probs.dtype)
    idx = (torch.bucketize(conf, edges, right=False) - 1).clamp(0, num_bins - 1)
    count = torch.bincount(idx, minlength=num_bins)
    conf_sum = torch.zeros(num_bins, dtype=probs.dtype).index_add_(0, idx, conf)
    acc_sum = torch.zeros(num_bins, dtype=probs.dtype).index_add_(0, idx, correct)
    denom = count.to(probs.dtype)
    nan = torch.full_like(denom, float("nan"))
    return ReliabilityCurve(
        torch.where(count > 0, conf_sum / denom.clamp_min(1), nan),
        torch.where(count > 0, acc_sum / denom.clamp_min(1), nan),
        count,
        edges,
    )


def expected_calibration_error(probs: Tensor, labels: Tensor, num_bins: int = 10) -> Tensor:
    r"""Expected calibration error :cite:`guo2017calibration`.

    .. math::

        \mathrm{ECE} = \sum_{b=1}^{B}\frac{n_b}{n}\,\big|\mathrm{acc}_b - \mathrm{conf}_b\big|,

    with equal-width confidence bins (see :func:`reliability_curve`).
    """
    curve = reliability_curve(probs, labels, num_bins)
    w = curve.count.to(probs.dtype) / probs.shape[0]
    gap = (curve.accuracy - curve.confidence).abs()
    return torch.where(curve.count > 0, w * gap, torch.zeros_like(gap)).sum()


class ClassificationMetrics(NamedTuple):
    """Accuracy, mean negative log-likelihood, Brier score and ECE of class probabilities."""

    accuracy: float
    nll: float
    brier: float
    ece: float


def classification_metrics(
    probs: Tensor, labels: Tensor, num_bins: int = 10
) -> ClassificationMetrics:
    r"""Accuracy, NLL :math:`-\frac1n\sum_i\log p_{i,y_i}`, Brier score
    :math:`\frac1n\sum_i\|p_i - e_{y_i}\|^2` and ECE of predicted probabilities.

    Probabilities are clamped at the smallest positive normal number inside the logarithm, so
    a confidently wrong prediction gives a large but finite NLL.
    """
    probs, labels = _check_probs_labels(probs, labels)
    n = probs.shape[0]
    p_true = probs[torch.arange(n), labels]
    nll = -p_true.clamp_min(torch.finfo(probs.dtype).tiny).log().mean()
    onehot = torch.nn.functional.one_hot(labels, probs.shape[1]).to(probs.dtype)
    brier = ((probs - onehot) ** 2).sum(1).mean()
    acc = (probs.argmax(1) == labels).to(probs.dtype).mean()
    ece = expected_calibration_error(probs, labels, num_bins)
    return ClassificationMetrics(float(acc), float(nll), float(brier), float(ece))
