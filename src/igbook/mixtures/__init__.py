r"""The manifold of a two-component Gaussian mixture with shared variance.

The model of the interactive chapter is

.. math::

    p(x\mid\mu_1,\mu_2) = \tfrac12\,\mathcal N(x\mid\mu_1,\sigma^2) + \tfrac12\,\mathcal N(x\mid\mu_2,\sigma^2),

a two-dimensional statistical manifold with coordinates :math:`\theta = (\mu_1, \mu_2)` and a
fixed, shared :math:`\sigma`. With responsibilities
:math:`r_i(x) = \tfrac12\mathcal N(x\mid\mu_i,\sigma^2)/p(x\mid\theta)` the score and the
Hessian of the log-density are

.. math::

    \partial_i \log p = r_i\,\frac{x-\mu_i}{\sigma^2}, \qquad
    \partial_i\partial_j \log p = r_i(\delta_{ij}-r_j)\frac{(x-\mu_i)(x-\mu_j)}{\sigma^4}
    - \delta_{ij}\frac{r_i}{\sigma^2},

and the Fisher information :math:`F = \mathbb E[\nabla\log p\,\nabla\log p^\top] =
-\mathbb E[\nabla^2\log p]` :cite:`amari1998natural` has no closed form. It is computed here by
quadrature, in both forms, for a whole grid of :math:`\theta` at once.

Quadrature
----------
:math:`\mathbb E_p[g] = \tfrac12\mathbb E_{\mathcal N(\mu_1,\sigma^2)}[g] +
\tfrac12\mathbb E_{\mathcal N(\mu_2,\sigma^2)}[g]`, and each Gaussian expectation is a
standard-normal rule :math:`\sum_j w_j\,g(\mu_k + \sigma z_j)`. The default rule is the
trapezoidal rule with step ``h = 0.1`` on :math:`|z|\le 8.6`, which converges geometrically
for analytic integrands :cite:`trefethen2014exponentially`. It is preferred to Gauss-Hermite
because the responsibilities are logistic functions of :math:`x` with slope
:math:`|\mu_1-\mu_2|/\sigma^2`: their complex poles, at distance :math:`\pi\sigma/|\mu_1-\mu_2|`
from the real axis, slow Gauss-Hermite down (100 nodes leave errors near :math:`10^{-6}` at
:math:`|\mu_1-\mu_2| \approx 5\sigma`), while the trapezoidal error stays below
:math:`10^{-13}` for every separation, because the poles sit where the two components overlap
and their contribution is damped by :math:`e^{-(\mu_1-\mu_2)^2/(8\sigma^2)}`. Gauss-Hermite is
available (:func:`gauss_hermite_rule`) for comparison.

Geometry in one paragraph
-------------------------
Translation and scale invariance give :math:`F(\mu_1,\mu_2;\sigma) = \sigma^{-2}G(\delta)` with
:math:`\delta=(\mu_1-\mu_2)/\sigma`, and the reflection :math:`x\mapsto\mu_1+\mu_2-x` makes
:math:`F_{11}=F_{22}`, so the eigenvectors are always the *mean-shift* direction
:math:`(1,1)/\sqrt2` and the *exchange* direction :math:`(1,-1)/\sqrt2`. As
:math:`\mu_1\to\mu_2` the exchange eigenvalue vanishes like :math:`(\mu_1-\mu_2)^2/(4\sigma^4)`
while the mean-shift eigenvalue tends to :math:`1/(2\sigma^2)`, so the condition number grows
like :math:`2\sigma^2/(\mu_1-\mu_2)^2` (:func:`small_separation_eigenvalues`); far apart
:math:`F\to I/(2\sigma^2)` with an error :math:`\propto\delta e^{-\delta^2/8}`
(:func:`large_separation_fisher`).

The package is split into ``igbook.mixtures.model`` (coordinates, quadrature, density,
score, Fisher, KL, losses), ``igbook.mixtures.spectrum`` (grids, eigen-decomposition,
ellipses, asymptotics) and ``igbook.mixtures.flows`` (gradient fields and flows); every name
is importable from :mod:`igbook.mixtures`.
"""

from __future__ import annotations

from igbook.mixtures.flows import flow, flow_pair, gradient_angle, natural_gradient_field
from igbook.mixtures.model import (
    KLToTarget,
    MixtureLoss,
    NegativeLogLikelihood,
    QuadratureRule,
    check_sigma,
    check_theta,
    default_rule,
    density,
    expectation,
    fisher,
    gauss_hermite_rule,
    kl_divergence,
    log_prob,
    log_prob_single,
    negative_hessian,
    quadrature_nodes,
    responsibilities,
    sample,
    score,
    trapezoid_rule,
)
from igbook.mixtures.spectrum import (
    ISOTROPIC_SEPARATION,
    condition_number,
    ellipse_outlines,
    fisher_eigen,
    large_separation_fisher,
    parameter_grid,
    small_separation_eigenvalues,
)

__all__ = [
    "QuadratureRule",
    "trapezoid_rule",
    "gauss_hermite_rule",
    "default_rule",
    "check_theta",
    "check_sigma",
    "log_prob",
    "log_prob_single",
    "density",
    "sample",
    "responsibilities",
    "score",
    "negative_hessian",
    "quadrature_nodes",
    "expectation",
    "fisher",
    "parameter_grid",
    "fisher_eigen",
    "condition_number",
    "ellipse_outlines",
    "small_separation_eigenvalues",
    "large_separation_fisher",
    "ISOTROPIC_SEPARATION",
    "kl_divergence",
    "MixtureLoss",
    "KLToTarget",
    "NegativeLogLikelihood",
    "natural_gradient_field",
    "gradient_angle",
    "flow",
    "flow_pair",
]
