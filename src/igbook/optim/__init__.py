r"""``torch.optim.Optimizer`` subclasses derived from natural gradients and the Bayesian learning rule.

One module per optimizer family; each validates its hyperparameters the way ``torch.optim``
does, supports param groups, closures and ``state_dict``.
"""

# One line per optimizer module: keep the lines below in place and add yours.
from igbook.optim.blr import IVON, VOGN, VON, PerExampleClosure, Vadam, VariationalOptimizer  # [exports:optim.blr]
from igbook.optim.sampling import (  # [exports:optim.blr]
    classification_metrics,
    expected_calibration_error,
    predictive,
    reliability_curve,
    sampled_params,
)
from igbook.optim.mesu import MESU, mesu_delta, mesu_stationary_variance  # [exports:optim.mesu]
from igbook.optim.bgd import BGD, GaussianMeanFieldOptimizer, bgd_update  # [exports:optim.bgd]

# Every public name imported above (one import line per module keeps this file mergeable).
import types as _types  # noqa: E402

__all__ = sorted(
    _n for _n, _v in dict(globals()).items() if not _n.startswith("_") and not isinstance(_v, _types.ModuleType)
)
