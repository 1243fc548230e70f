r"""Natural-gradient directions and steps.

:mod:`igbook.natgrad.core`
    dense damped solve, conjugate gradient on Fisher-vector products, KL trust-region step size.
``igbook.natgrad.families``
    natural-gradient descent on the exponential families of :mod:`igbook.families`, in any
    coordinate system.
``igbook.natgrad.trust_region``, ``igbook.natgrad.loops``
    KL trust-region and KL-proximal steps; descent loops and learning-rate tuning.
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
    approximate_step,
    chart,
    chart_names,
    euclidean_step,
    fisher_in_chart,
    fisher_vector_product,
    kl_between,
    kl_loss,
    natural_gradient_at,
    natural_step,
    submanifold_chart,
)
from igbook.natgrad.loops import Trajectory, best_learning_rate, descend, iterations_to_tolerance
from igbook.natgrad.networks import (
    NaturalGradientDescent,
    NaturalGradientResult,
    natural_gradient_direction,
    ngd_step,
)
from igbook.natgrad.trust_region import (
    TrustRegionStep,
    kl_ball_steepest_descent,
    kl_proximal_step,
    trust_region_step,
)

__all__ = [
    "natural_gradient",
    "CGResult",
    "conjugate_gradient",
    "natural_gradient_cg",
    "trust_region_step_size",
    # natgrad.families, natgrad.trust_region, natgrad.loops
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
