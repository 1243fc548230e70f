r"""Natural-gradient directions and steps.

:mod:`igbook.natgrad.core`
    dense damped solve, conjugate gradient on Fisher-vector products, KL trust-region step size.
``igbook.natgrad.families``
    natural-gradient descent on the exponential families of :mod:`igbook.families`, in any
    coordinate system.
``igbook.natgrad.networks``
    natural-gradient steps for networks: damped conjugate gradient on Fisher/GGN-vector products.
"""

from igbook.natgrad.core import (
    CGResult,
    conjugate_gradient,
    natural_gradient,
    natural_gradient_cg,
    trust_region_step_size,
)

from igbook.natgrad.families import (
    APPROXIMATIONS,
    Chart,
    NaturalGradient,
    Trajectory,
    TrustRegionStep,
    approximate_step,
    best_learning_rate,
    chart,
    chart_names,
    descend,
    euclidean_step,
    fisher_in_chart,
    fisher_vector_product,
    iterations_to_tolerance,
    kl_ball_steepest_descent,
    kl_between,
    kl_loss,
    kl_proximal_step,
    natural_gradient_at,
    natural_step,
    submanifold_chart,
    trust_region_step,
)
from igbook.natgrad.networks import (
    NaturalGradientDescent,
    NaturalGradientResult,
    natural_gradient_direction,
    ngd_step,
)

__all__ = [
    "natural_gradient",
    "CGResult",
    "conjugate_gradient",
    "natural_gradient_cg",
    "trust_region_step_size",
    # natgrad.families
    "Chart",
    "chart",
    "chart_names",
    "submanifold_chart",
    "kl_between",
    "kl_loss",
    "fisher_in_chart",
    "fisher_vector_product",
    "NaturalGradient",
    "natural_gradient_at",
    "natural_step",
    "euclidean_step",
    "approximate_step",
    "APPROXIMATIONS",
    "TrustRegionStep",
    "trust_region_step",
    "kl_proximal_step",
    "kl_ball_steepest_descent",
    "Trajectory",
    "descend",
    "iterations_to_tolerance",
    "best_learning_rate",
    # natgrad.networks
    "NaturalGradientResult",
    "natural_gradient_direction",
    "ngd_step",
    "NaturalGradientDescent",
]
