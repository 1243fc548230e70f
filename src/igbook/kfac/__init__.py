r"""K-FAC: Kronecker-factored approximate natural gradient :cite:`martens2015optimizing`.

:mod:`igbook.kfac.core`
    The preconditioner: moving averages of the Kronecker factors of ``nn.Linear``/``nn.Conv2d``
    layers (statistics from the curvature core, :mod:`igbook.fisher.kronecker`: exact, Monte
    Carlo or empirical Fisher, any :class:`~igbook.fisher.likelihoods.Likelihood`), π-heuristic
    or exact damping, KL clipping; it rewrites ``.grad`` in place. For the factors of one batch
    without a preconditioner, call :func:`igbook.fisher.kfac_factors`.
:mod:`igbook.kfac.optimizer`
    The :class:`~igbook.kfac.KFAC` optimizer (SGD with momentum on the preconditioned gradient).
:mod:`igbook.kfac.losses`, :mod:`igbook.kfac.inverses`
    The loss K-FAC's curvature belongs to and its output vectors; damped factor inverses.
:mod:`igbook.kfac.dense`
    Dense references: the true Fisher of a small network and its layer blocks (via
    ``torch.func``), exact natural-gradient descent, and the cost of the exact block against
    K-FAC's factors.

The chapter's training experiment (the digits autoencoder) is an experiment set-up, not library
code: :mod:`igbook.experiments.kfac_autoencoder`.
"""

from igbook.fisher.kronecker import KroneckerFactors
from igbook.fisher.layout import ParameterLayout, layer_vector
from igbook.kfac.core import DAMPING_MODES, FISHER_TYPES, KFACPreconditioner
from igbook.kfac.dense import (
    CurvatureCosts,
    DenseNaturalGradient,
    curvature_costs,
    layer_fisher_blocks,
    network_fisher,
)
from igbook.kfac.inverses import FLOAT32_INVERSE_MAX_CONDITION, damped_inverse
from igbook.kfac.losses import negative_log_likelihood, output_gradient_samples
from igbook.kfac.optimizer import KFAC

__all__ = [
    "FISHER_TYPES",
    "DAMPING_MODES",
    "FLOAT32_INVERSE_MAX_CONDITION",
    "damped_inverse",
    "negative_log_likelihood",
    "output_gradient_samples",
    "layer_vector",
    "KroneckerFactors",
    "KFACPreconditioner",
    "KFAC",
    "ParameterLayout",
    "network_fisher",
    "layer_fisher_blocks",
    "DenseNaturalGradient",
    "CurvatureCosts",
    "curvature_costs",
]
