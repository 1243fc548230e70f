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

# [exports:natgrad.families]
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
    "NaturalGradientResult",
    "natural_gradient_direction",
    "ngd_step",
    "NaturalGradientDescent",
]
