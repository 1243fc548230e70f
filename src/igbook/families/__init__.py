r"""Exponential families in minimal form, with closed-form geometry.

Every family here is written as

.. math::

    q_\eta(x) = h(x)\,\exp\big(\eta^\top T(x) - A(\eta)\big),

with natural parameter :math:`\eta`, sufficient statistic :math:`T`, log-partition :math:`A`
and mean parameter :math:`\mu = \mathbb{E}_{q_\eta}[T(x)] = \nabla A(\eta)`
:cite:`wainwright2008graphical`. Each family has three coordinate systems, all flat 1-D
tensors so that every Fisher matrix is an ordinary matrix:

``params``
    the usual coordinates (``p`` for a Bernoulli, ``(mu, sigma)`` for a Gaussian, ...);
``natural``
    :math:`\eta`;
``mean``
    :math:`\mu`.

A distribution is a small frozen dataclass (``Gaussian(mu=0.0, sigma=1.0)``) whose
constructor validates its arguments. Class methods give the pure, differentiable maps between
the coordinate systems and the log-densities in each, for use with :mod:`torch.func`; they do
*not* validate, so that they can be traced, differentiated and vectorized.

Closed forms provided by every family: log-partition, sufficient statistics, log-density,
seeded sampling, the Fisher information in natural and in usual coordinates, the KL
divergence (a textbook formula, checked in the tests against the Bregman form
:meth:`ExponentialFamily.kl_bregman` and against Monte Carlo), entropy, and the convex
conjugate :math:`A^*(\mu)`.

Legendre duality: :math:`\nabla A(\eta) = \mu` (:meth:`~ExponentialFamily.mean_from_natural`),
:math:`\nabla A^*(\mu) = \eta` (:meth:`~ExponentialFamily.natural_from_mean`), and the two
Bregman divergences :meth:`~ExponentialFamily.bregman_natural` (of :math:`A`) and
:meth:`~ExponentialFamily.bregman_mean` (of :math:`A^*`), both equal to a KL divergence.

:class:`Beta`, :class:`Gamma` and :class:`NormalGamma` (collected in ``CONJUGATE_FAMILIES``)
are the conjugate priors used by :mod:`igbook.vi`; their inverse mean maps have no closed form
and are computed by a damped Newton solve that is exact to rounding and differentiable.

The package is split along these lines: ``igbook.families.base`` (the interface),
``igbook.families.elementary`` (Bernoulli, Categorical, Poisson, Exponential),
``igbook.families.gaussian`` (Gaussian, MultivariateGaussian) and
``igbook.families.conjugate`` (Beta, Gamma, NormalGamma); every name is importable from
:mod:`igbook.families`.
"""

from __future__ import annotations

from igbook.families.base import ExponentialFamily, family_class
from igbook.families.conjugate import Beta, Gamma, NormalGamma
from igbook.families.elementary import Bernoulli, Categorical, Exponential, Poisson
from igbook.families.gaussian import Gaussian, MultivariateGaussian

__all__ = [
    "ExponentialFamily",
    "family_class",
    "Bernoulli",
    "Categorical",
    "Gaussian",
    "MultivariateGaussian",
    "Poisson",
    "Exponential",
    "Beta",
    "Gamma",
    "NormalGamma",
    "FAMILIES",
    "CONJUGATE_FAMILIES",
]

#: Families added for conjugate Bayesian inference (priors and variational posteriors).
CONJUGATE_FAMILIES: tuple[type[ExponentialFamily], ...] = (Beta, Gamma, NormalGamma)

#: Every family of the original list, for tests and tables.
FAMILIES: tuple[type[ExponentialFamily], ...] = (
    Bernoulli,
    Categorical,
    Gaussian,
    MultivariateGaussian,
    Poisson,
    Exponential,
)
