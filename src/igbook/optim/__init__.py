r"""``torch.optim.Optimizer`` subclasses derived from natural gradients and the Bayesian learning rule.

One module per optimizer family; each validates its hyperparameters the way ``torch.optim``
does, supports param groups, closures and ``state_dict``, and shares one failure policy
(``igbook._safety``): a non-finite gradient raises :class:`NonFiniteStepError` (or skips
the step under ``nonfinite="skip"``) before anything is written, and a failed step leaves
parameters, optimizer state and random generator bitwise as before.
"""

from igbook._safety import NonFiniteStepError
from igbook.optim.bgd import BGD, GaussianMeanFieldOptimizer, bgd_update
from igbook.optim.blr import IVON, VOGN, VON, PerExampleClosure, Vadam, VariationalOptimizer
from igbook.optim.mesu import MESU, mesu_delta, mesu_stationary_variance
from igbook.optim.muon import Muon, muon_param_groups, newton_schulz, polar_factor
from igbook.optim.sampling import (
    classification_metrics,
    expected_calibration_error,
    predictive,
    reliability_curve,
    sampled_params,
)
from igbook.optim.shampoo import Shampoo
from igbook.optim.soap import SOAP
from igbook.optim.steepest import (
    SteepestDirection,
    euclidean_direction,
    kl_spent,
    kronecker_direction,
    linf_direction,
    quadratic_direction,
    spectral_direction,
    steepest_direction,
    step_angle,
)

__all__ = [
    "BGD",
    "IVON",
    "MESU",
    "Muon",
    "SOAP",
    "VOGN",
    "VON",
    "GaussianMeanFieldOptimizer",
    "NonFiniteStepError",
    "PerExampleClosure",
    "SteepestDirection",
    "Shampoo",
    "Vadam",
    "VariationalOptimizer",
    "bgd_update",
    "classification_metrics",
    "euclidean_direction",
    "expected_calibration_error",
    "kl_spent",
    "kronecker_direction",
    "linf_direction",
    "mesu_delta",
    "mesu_stationary_variance",
    "muon_param_groups",
    "newton_schulz",
    "polar_factor",
    "predictive",
    "quadratic_direction",
    "reliability_curve",
    "sampled_params",
    "spectral_direction",
    "steepest_direction",
    "step_angle",
]
