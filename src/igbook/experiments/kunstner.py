r"""The data sets of Kunstner, Hennig and Balles (2019), with their generators and seeds.

:cite:t:`kunstner2019limitations` show with two-parameter linear and logistic regressions that
the empirical Fisher is not the Fisher (their Figures 1 and 2). This module rebuilds their data
sets with the same generators and seeds as their code (``np.random.seed(0)`` followed by NumPy's
legacy normal and log-normal draws, reproduced here with :class:`numpy.random.RandomState`);
the losses, their closed-form curvature and the preconditioned flows are library code,
:mod:`igbook.fisher.empirical_fisher` (:class:`~igbook.fisher.empirical_fisher.GLMProblem`).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor

from igbook._validation import check_choice, check_count, check_seed

__all__ = [
    "LOGISTIC_DATASETS",
    "LINEAR_DATASETS",
    "vector_field_data",
    "logistic_data",
    "linear_data",
]

#: the names of the three data sets of each kind
Kind = Literal["well-specified", "misspecified-noise", "misspecified-model"]
#: the three logistic-regression data sets of Figure 2 (well specified, misspecified A and B)
LOGISTIC_DATASETS = ("well-specified", "misspecified-noise", "misspecified-model")
#: the three linear-regression data sets of the appendix version of Figure 2
LINEAR_DATASETS = ("well-specified", "misspecified-noise", "misspecified-model")


def _numpy_seed(seed: object) -> int:
    """A seed :class:`numpy.random.RandomState` accepts (an int in ``[0, 2**32)``), or raise."""
    seed = check_seed(seed)
    if seed >= 2**32:
        raise ValueError(f"seed must lie in [0, 2**32) (a NumPy RandomState seed), got {seed}")
    return seed


def vector_field_data(n: int = 1000, seed: int = 0) -> tuple[Tensor, Tensor]:
    r"""Data of Figure 1: :math:`x_n = (1, z_n)`, :math:`z_n\sim\mathrm{LogNormal}(0, 0.75)`,
    :math:`y_n = x_n^\top(2, 2) + \varepsilon_n`, :math:`\varepsilon_n\sim\mathcal N(0,1)`.

    Returns float64 ``x`` of shape ``(n, 2)`` (bias column first) and ``y`` of shape ``(n,)``;
    ``seed=0`` reproduces the paper's data exactly.
    """
    rs = np.random.RandomState(_numpy_seed(seed))
    n = check_count(n, "n", minimum=2)
    x = np.hstack([np.ones((n, 1)), rs.lognormal(0, 0.75, (n, 1))])
    y = x @ np.array([[2.0], [2.0]]) + rs.randn(n, 1)
    return torch.as_tensor(x), torch.as_tensor(y[:, 0])


def logistic_data(kind: Kind, n: int = 1000, seed: int = 0) -> tuple[Tensor, Tensor]:
    r"""Data of Figure 2: two Gaussian classes in :math:`\mathbb R^2`, ``n/2`` points each.

    Class 0 has mean :math:`\mu_0` and class 1 mean :math:`-\mu_0`; a point is
    :math:`\mu + \varepsilon S` with :math:`\varepsilon\sim\mathcal N(0, I_2)` (a row vector):

    - ``"well-specified"``: :math:`\mu_0 = (1, 1)`, :math:`S_0 = S_1 = 2I`. Equal covariances
      make :math:`p(y\mid x)` exactly logistic-linear (and through the origin).
    - ``"misspecified-noise"`` (their "Misspecified (A)"): :math:`\mu_0 = (1.5, 1.5)`,
      :math:`S_0 = 3I`, :math:`S_1 = I`.
    - ``"misspecified-model"`` ("Misspecified (B)"): :math:`\mu_0 = (1, 1)`,
      :math:`S_{0,1} = 1.5\begin{pmatrix}1 & \mp0.6\\ \mp0.6 & 1\end{pmatrix}`.

    Returns ``x`` ``(n, 2)`` float64 and labels ``y`` ``(n,)`` float64 in :math:`\{0,1\}`.
    """
    check_choice(kind, "kind", LOGISTIC_DATASETS)
    n = check_count(n, "n", minimum=2)
    rs = np.random.RandomState(_numpy_seed(seed))
    if kind == "well-specified":
        m, s0, s1 = 1.0, 2 * np.eye(2), 2 * np.eye(2)
    elif kind == "misspecified-noise":
        m, s0, s1 = 1.5, 3 * np.eye(2), np.eye(2)
    else:
        m = 1.0
        s0 = 1.5 * np.array([[1.0, -0.6], [-0.6, 1.0]])
        s1 = 1.5 * np.array([[1.0, 0.6], [0.6, 1.0]])
    h = n // 2
    x0 = np.array([[m, m]]) + rs.randn(h, 2) @ s0
    x1 = np.array([[-m, -m]]) + rs.randn(h, 2) @ s1
    x = np.vstack([x0, x1])
    y = np.concatenate([np.zeros(h), np.ones(h)])
    return torch.as_tensor(x), torch.as_tensor(y)


def linear_data(kind: Kind, n: int = 1000, seed: int = 0) -> tuple[Tensor, Tensor]:
    r"""Appendix data: :math:`x_n = (z_n, 1)`, :math:`z_n\sim\mathcal N(0,1)`,
    :math:`y_n = z_n + 1 + \text{noise}`.

    ``"well-specified"`` adds :math:`\mathcal N(0,1)` noise; ``"misspecified-noise"``
    :math:`\mathcal N(0, 4)`; ``"misspecified-model"`` adds :math:`0.5 z_n^2` and
    :math:`\mathcal N(0,1)` noise. The fitted model assumes unit noise in every case.
    """
    check_choice(kind, "kind", LINEAR_DATASETS)
    n = check_count(n, "n", minimum=2)
    rs = np.random.RandomState(_numpy_seed(seed))
    x = np.concatenate([rs.randn(n, 1), np.ones((n, 1))], axis=1)
    y = x @ np.array([[1.0], [1.0]])
    if kind == "misspecified-model":
        y = y + 0.5 * x[:, :1] ** 2
    y = y + (2.0 if kind == "misspecified-noise" else 1.0) * rs.randn(n, 1)
    return torch.as_tensor(x), torch.as_tensor(y[:, 0])
