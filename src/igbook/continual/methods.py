r"""Continual-learning methods behind one interface.

Every method is a :class:`~igbook.continual.learner.ContinualLearner` wrapping a
:class:`torch.nn.Module` classifier:

* :meth:`~ContinualLearner.observe` takes one minibatch ``(x, y)`` and makes one update;
* :meth:`~ContinualLearner.begin_task` / :meth:`~ContinualLearner.end_task` are called at task
  boundaries in the boundary-aware mode (methods with ``requires_task_boundaries = True``
  consolidate there; the others ignore them, and run unchanged in the streaming mode);
* :meth:`~ContinualLearner.sample_proba` returns class probabilities under ``S`` posterior
  samples, shape ``(S, n, C)`` (``S = 1`` for point estimates), and
  :meth:`~ContinualLearner.predict` the predicted labels.

The methods and the geometry each one uses:

* :class:`~igbook.continual.learner.FineTuning`:
  plain SGD on the current minibatch: the Euclidean baseline that forgets
* :class:`~igbook.continual.regularization.EWC`:
  a quadratic penalty per old task, :math:`\tfrac\lambda2\sum_i F_{ii}(\theta_i-\theta^*_i)^2`,
  the diagonal quadratic approximation of the KL between predictive distributions
  :cite:`kirkpatrick2017overcoming`
* :class:`~igbook.continual.regularization.OnlineEWC`:
  one running Fisher :math:`F^*\leftarrow\gamma F^*+F_t` and one anchor
  :cite:`schwarz2018progress`
* :class:`~igbook.continual.regularization.SI`:
  importance from the path integral of the loss decrease :cite:`zenke2017continual`
* :class:`~igbook.continual.bayesian.BGDLearner`:
  Gaussian weights, Bayesian gradient descent, no forgetting :cite:`zeno2018task`
* :class:`~igbook.continual.bayesian.MESULearner`:
  Gaussian weights, MESU: variance-scaled steps and forgetting over a window of
  :math:`N` minibatches :cite:`bonnet2025bayesian`
* :class:`~igbook.continual.projection.FOPNG`:
  natural-gradient steps projected to be Fisher-orthogonal to stored old-task gradients
  :cite:`garg2026fisher`

Point-estimate methods minimize the minibatch-*mean* cross-entropy; the penalties of EWC, online
EWC and SI are added through their closed-form gradients (so the path integral of SI uses
the gradient of the task loss alone, as in the original code). MESU and BGD minimize the
expected cross-entropy under their Gaussian posterior, *summed* over the minibatch by default
(MESU's memory window ``N`` counts minibatches), with weight samples evaluated in one
vectorized call.

The methods live in :mod:`igbook.continual.learner` (the interface, fine-tuning),
:mod:`igbook.continual.regularization` (EWC, online EWC, SI), :mod:`igbook.continual.bayesian`
(BGD, MESU) and :mod:`igbook.continual.projection` (FOPNG); this module re-exports them and
holds the factory :func:`make_learner` and the small models of the chapter.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from igbook.continual.bayesian import BGDLearner, MESULearner, fan_in_sigma_groups
from igbook.continual.learner import ContinualLearner, FineTuning
from igbook.continual.projection import FOPNG, fopng_direction
from igbook.continual.regularization import EWC, SI, OnlineEWC

__all__ = [
    "BinaryLogits",
    "ContinualLearner",
    "FineTuning",
    "EWC",
    "OnlineEWC",
    "SI",
    "BGDLearner",
    "MESULearner",
    "FOPNG",
    "fopng_direction",
    "fan_in_sigma_groups",
    "METHODS",
    "make_learner",
]


class BinaryLogits(nn.Module):
    r"""Turn one score :math:`s` per example into the two logits :math:`(0, s)` (logistic regression).

    ``nn.Sequential(nn.Linear(d, 1, bias=False), BinaryLogits())`` is a two-class classifier
    whose parameters are a single vector :math:`w\in\R^d`, convenient for drawing loss
    landscapes in the plane.
    """

    def forward(self, s: Tensor) -> Tensor:
        return torch.cat([torch.zeros_like(s), s], dim=-1)


METHODS: dict[str, type[ContinualLearner]] = {
    "sgd": FineTuning,
    "ewc": EWC,
    "online_ewc": OnlineEWC,
    "si": SI,
    "bgd": BGDLearner,
    "mesu": MESULearner,
    "fopng": FOPNG,
}


def make_learner(method: str, model: nn.Module, **hyperparameters: Any) -> ContinualLearner:
    """Build a learner by name: one of ``METHODS``.

    ``"sgd"``, ``"ewc"``, ``"online_ewc"``, ``"si"``, ``"bgd"``, ``"mesu"`` or ``"fopng"``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    return METHODS[method](model, **hyperparameters)
