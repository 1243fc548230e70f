r"""The Laplace approximation: curvature as a posterior.

Built on the curvature core :mod:`igbook.fisher` (no curvature of its own):

:mod:`igbook.laplace.posterior`
    :func:`~igbook.laplace.posterior.fit_laplace` and :class:`~igbook.laplace.posterior.LaplacePosterior`:
    full, diagonal, K-FAC and last-layer posteriors, scalar or per-parameter prior precision,
    observation noise, temperature; the posterior precision as a :class:`igbook.fisher.Curvature`;
    seeded samples and the log density.
:mod:`igbook.laplace.evidence`
    The Laplace log marginal likelihood with its Occam factor, the effective number of
    parameters, prior-precision and noise tuning (gradient or MacKay's fixed point).
:mod:`igbook.laplace.predictive`
    Linearized (GLM) predictive with the probit approximation or Monte Carlo; Monte Carlo with
    the network itself.
:mod:`igbook.laplace.online`
    Online Laplace across tasks and the Laplace reading of EWC's penalty.
"""

from igbook.laplace.evidence import (
    OPTIMIZERS,
    effective_parameters,
    evidence_terms,
    log_likelihood,
    log_marginal_likelihood,
    optimize_prior_precision,
)
from igbook.laplace.online import laplace_penalty, next_task_prior
from igbook.laplace.posterior import (
    FISHER_TYPES,
    STRUCTURES,
    SUBSETS,
    LaplacePosterior,
    fit_laplace,
    last_linear_layer,
)
from igbook.laplace.predictive import LINKS, METHODS, functional_variance, jacobians, predictive

__all__ = [
    "fit_laplace",
    "LaplacePosterior",
    "last_linear_layer",
    "STRUCTURES",
    "SUBSETS",
    "FISHER_TYPES",
    "log_likelihood",
    "log_marginal_likelihood",
    "evidence_terms",
    "effective_parameters",
    "optimize_prior_precision",
    "OPTIMIZERS",
    "jacobians",
    "functional_variance",
    "predictive",
    "METHODS",
    "LINKS",
    "laplace_penalty",
    "next_task_prior",
]
