r"""K-FAC: Kronecker-factored approximate natural gradient :cite:`martens2015optimizing`.

:mod:`igbook.kfac.core`
    Kronecker factors of ``nn.Linear``/``nn.Conv2d`` layers collected with hooks (type-2, Monte
    Carlo or empirical Fisher), moving averages, π-heuristic or exact damping, KL clipping, a
    preconditioner that rewrites ``.grad`` in place, and the :class:`~igbook.kfac.core.KFAC`
    optimizer.
:mod:`igbook.kfac.dense`
    Dense references: the true Fisher of a small network and its layer blocks (via
    ``torch.func``), exact natural-gradient descent, and the cost of the exact block against
    K-FAC's factors.

The chapter's training experiment (the digits autoencoder) is an experiment set-up, not library
code: :mod:`igbook.experiments.kfac_autoencoder`.
"""

from igbook.kfac.core import (
    FISHER_TYPES,
    KFAC,
    LIKELIHOODS,
    KFACPreconditioner,
    KroneckerFactors,
    layer_vector,
    negative_log_likelihood,
    output_gradient_samples,
)
from igbook.kfac.dense import (
    CurvatureCosts,
    DenseNaturalGradient,
    ParameterLayout,
    curvature_costs,
    layer_fisher_blocks,
    network_fisher,
)

__all__ = [
    "FISHER_TYPES",
    "LIKELIHOODS",
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
