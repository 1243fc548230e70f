r"""Fisher information: the curvature core of igbook.

One vocabulary for every curvature in the package (``natgrad``, ``kfac``, ``continual``,
``optim`` and ``vi`` consume it, none keeps its own copy). A Fisher matrix is an *expectation*,
a mean over samples or data points, never a sum.

:mod:`igbook.fisher.types`
    :class:`~igbook.fisher.types.FisherType` (exact, Monte Carlo, empirical, GGN, Hessian) and
    :func:`~igbook.fisher.types.as_fisher_type`, which also resolves the deprecated spellings
    ``"type2"`` and ``"sample"``.
:mod:`igbook.fisher.likelihoods`
    The one likelihood family: Gaussian (any variance), categorical, Bernoulli (logit, probit;
    one or many outputs), each with its loss, sampling, output gradient, output Fisher and its
    factor, and the vectors that curvature code back-propagates
    (:meth:`~igbook.fisher.likelihoods.Likelihood.output_gradient_samples`).
:mod:`igbook.fisher.density`
    Fisher information of a differentiable log-density: score covariance, expected negative
    Hessian, Monte Carlo with standard errors, pull-back under a change of coordinates.
:mod:`igbook.fisher.models`, :mod:`igbook.fisher.products`, :mod:`igbook.fisher.diagonal`
    Curvature of networks with a likelihood: dense, diagonal, per-tensor and per-layer blocks,
    matrix-free products (:class:`~igbook.fisher.products.CurvatureOperator`), per-example gradients.
:mod:`igbook.fisher.kronecker`
    K-FAC's Kronecker factors, functionally (:func:`~igbook.fisher.kronecker.kfac_factors`), and the layer statistics
    that :class:`igbook.kfac.KFACPreconditioner` averages.
:mod:`igbook.fisher.operators`, :mod:`igbook.fisher.curvature`
    One protocol, :class:`~igbook.fisher.operators.Curvature` (``matvec`` on ``(P,)`` or
    ``(P, K)``, ``to_dense``, ``diagonal``, damped ``solve``/``inverse``, named layer blocks),
    with dense, diagonal, block-diagonal and Kronecker structures;
    :func:`~igbook.fisher.curvature.curvature` builds any of them for a network.
:mod:`igbook.fisher.layout`
    The two flat parameter orders (row-major ``"flat"``, K-FAC's column-major ``"kronecker"``)
    and :func:`~igbook.fisher.layout.reorder` between them.
"""

from igbook.fisher.curvature import CURVATURE_STRUCTURES, curvature, layer_blocks
from igbook.fisher.density import (
    expected_negative_hessian,
    fisher_from_scores,
    fisher_monte_carlo,
    kl_quadratic_form,
    pullback_metric,
    reparameterized_fisher,
    score,
    score_covariance,
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
from igbook.fisher.layout import ORDERS, ParameterLayout, layer_vector, parameter_layout, reorder
from igbook.fisher.likelihoods import (
    BernoulliLikelihood,
    CategoricalLikelihood,
    GaussianLikelihood,
    Likelihood,
    get_likelihood,
)
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
from igbook.fisher.operators import (
    BlockDiagonalCurvature,
    Curvature,
    DenseCurvature,
    DiagonalCurvature,
    KroneckerCurvature,
)
from igbook.fisher.problem import ModelProblem
from igbook.fisher.types import FISHER_TYPE_ALIASES, FisherType, as_fisher_type

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
    "layer_vector",
    "ORDERS",
    "fisher_vector_product",
    "ggn_vector_product",
    "hessian_vector_product",
]
