r"""Fisher information.

Two halves, one convention (a Fisher matrix is an *expectation*, i.e. a mean over samples or
data points, never a sum):

:mod:`igbook.fisher.density`
    Fisher information of a differentiable log-density :math:`\log p(x\mid\theta)`: the
    covariance of the score and the expected negative Hessian, exactly on a finite support or
    by Monte Carlo; the pull-back of a metric under a change of coordinates.
:mod:`igbook.fisher.models`
    Fisher information of conditional models :math:`p(y\mid f(x;\theta))` (networks with a
    likelihood): exact, Monte Carlo and empirical Fisher, generalized Gauss-Newton, Hessian;
    dense, diagonal, per-layer blocks, and matrix-vector products.
"""

from igbook.fisher.density import (
    expected_negative_hessian,
    fisher_from_scores,
    fisher_monte_carlo,
    pullback_metric,
    reparameterized_fisher,
    score,
    score_covariance,
    kl_quadratic_form,
)

__all__ = [
    "score",
    "fisher_from_scores",
    "score_covariance",
    "expected_negative_hessian",
    "fisher_monte_carlo",
    "pullback_metric",
    "reparameterized_fisher",
    "kl_quadratic_form",
]
