r"""Fisher information.

Two halves, one convention (a Fisher matrix is an *expectation*, i.e. a mean over samples or
data points, never a sum):

:mod:`igbook.fisher.density`
    Fisher information of a differentiable log-density :math:`\log p(x\mid\theta)`: the
    covariance of the score and the expected negative Hessian, exactly on a finite support or
    by Monte Carlo; the pull-back of a metric under a change of coordinates.
``igbook.fisher.models``
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
from igbook.fisher.likelihoods import (
    BernoulliLikelihood,
    CategoricalLikelihood,
    GaussianLikelihood,
    Likelihood,
    get_likelihood,
)
from igbook.fisher.types import FISHER_TYPE_ALIASES, FisherType, as_fisher_type
from igbook.fisher.operators import (
    BlockDiagonalCurvature,
    Curvature,
    DenseCurvature,
    DiagonalCurvature,
    KroneckerCurvature,
)
from igbook.fisher.kronecker import (
    BIAS_MODES,
    KRONECKER_FISHER_TYPES,
    KroneckerFactors,
    backpropagate_output_vectors,
    kfac_factors,
    kronecker_curvature,
    kronecker_layers,
    layer_input_rows,
    layer_output_rows,
    unsupported_layer_reason,
)
from igbook.fisher.curvature import CURVATURE_STRUCTURES, curvature, layer_blocks
from igbook.fisher.layout import ORDERS, ParameterLayout, parameter_layout, reorder
from igbook.fisher.problem import ModelProblem
from igbook.fisher.models import (
    CurvatureOperator,
    curvature_matrix,
    fisher_diagonal,
    fisher_matrix,
    fisher_vector_product,
    flatten_params,
    ggn_matrix,
    ggn_vector_product,
    hessian_matrix,
    hessian_vector_product,
    minibatch_gradient_second_moment,
    model_params,
    output_curvature,
    param_slices,
    per_example_gradients,
    unflatten_params,
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
    # likelihoods and curvature of conditional models (igbook.fisher.likelihoods, .models)
    "Likelihood",
    "GaussianLikelihood",
    "CategoricalLikelihood",
    "BernoulliLikelihood",
    "get_likelihood",
    "FisherType",
    "as_fisher_type",
    "FISHER_TYPE_ALIASES",
    "model_params",
    "flatten_params",
    "unflatten_params",
    "param_slices",
    "per_example_gradients",
    "minibatch_gradient_second_moment",
    "output_curvature",
    "curvature_matrix",
    "fisher_matrix",
    "fisher_diagonal",
    "ggn_matrix",
    "hessian_matrix",
    "CurvatureOperator",
    "ModelProblem",
    "Curvature",
    "DenseCurvature",
    "DiagonalCurvature",
    "BlockDiagonalCurvature",
    "KroneckerCurvature",
    "curvature",
    "CURVATURE_STRUCTURES",
    "layer_blocks",
    "KroneckerFactors",
    "kfac_factors",
    "kronecker_curvature",
    "kronecker_layers",
    "KRONECKER_FISHER_TYPES",
    "BIAS_MODES",
    "unsupported_layer_reason",
    "layer_input_rows",
    "layer_output_rows",
    "backpropagate_output_vectors",
    "ParameterLayout",
    "parameter_layout",
    "reorder",
    "ORDERS",
    "fisher_vector_product",
    "ggn_vector_product",
    "hessian_vector_product",
]
