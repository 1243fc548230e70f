r"""What the Gaussian mean-field optimizers BGD and MESU share: hyperparameter checks and the clamps.

Both optimizers (:mod:`igbook.optim.bgd`, :mod:`igbook.optim.mesu`) keep a Gaussian synapse
:math:`\omega_i\sim\mathcal N(\mu_i,\sigma_i^2)` per weight, with the means in the parameters
and the standard deviations in the optimizer state (their base class is
:class:`igbook.optim.bgd.GaussianMeanFieldOptimizer`). The functions here check the
hyperparameters the two have in common and apply the optional clamps of the MESU authors'
code (``ratio_max``, ``sigma_bounds``) :cite:`bonnet2025bayesian`. The generic checks are
those of ``igbook._validation``; these say what the mean-field hyperparameters are.

They are implementation helpers of the two optimizer modules (hence not in ``__all__``, which
lists the reader-facing API).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from igbook._validation import (
    as_tensor,
    check_finite,
    check_positive,
    check_positive_real,
    check_scalar,
)

__all__: list[str] = []

#: an initial standard deviation: a number, or a callable ``param -> sigma``
SigmaInit = float | Callable[[Tensor], "Tensor | float"]


def check_sigma_init(value: Any) -> SigmaInit:
    """``sigma_init``: a callable ``param -> sigma`` (checked when called) or a finite number ``> 0``."""
    if callable(value):
        return value
    try:
        return check_positive_real(value, "sigma_init")
    except (TypeError, ValueError):
        raise ValueError(
            f"sigma_init must be a finite number > 0 or a callable(param) -> sigma, got {value!r}"
        ) from None


def check_sigma_bounds(bounds: Any, name: str = "sigma_bounds") -> tuple[float, float] | None:
    """``None`` or a pair ``(low, high)`` with :math:`0 < \\text{low} < \\text{high} < \\infty`."""
    if bounds is None:
        return None
    try:
        lo, hi = bounds
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be None or a pair (low, high), got {bounds!r}") from exc
    lo = check_positive_real(lo, f"{name}[0]")
    hi = check_scalar(hi, f"{name}[1]", low=lo, closed_low=False)
    return lo, hi


def check_ratio_max(value: Any) -> float | None:
    """``ratio_max``: ``None`` (no clamp) or a finite number ``> 0``."""
    return None if value is None else check_positive_real(value, "ratio_max")


def check_mean_field(
    mu: object, sigma: object, grad_mu: object, grad_sigma: object
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The inputs of a checked mean-field update (:func:`igbook.optim.bgd_update`,
    :func:`igbook.optim.mesu_delta`): finite means and gradients and positive standard
    deviations, all of one shape, as tensors of the dtype of ``mu``."""
    mu = check_finite(as_tensor(mu, "mu"), "mu")
    sigma = check_positive(as_tensor(sigma, "sigma", dtype=mu.dtype), "sigma")
    grad_mu = check_finite(as_tensor(grad_mu, "grad_mu", dtype=mu.dtype), "grad_mu")
    grad_sigma = check_finite(as_tensor(grad_sigma, "grad_sigma", dtype=mu.dtype), "grad_sigma")
    for nm, t in (("sigma", sigma), ("grad_mu", grad_mu), ("grad_sigma", grad_sigma)):
        if t.shape != mu.shape:
            raise ValueError(
                f"{nm} must have the shape of mu {tuple(mu.shape)}, got {tuple(t.shape)}"
            )
    return mu, sigma, grad_mu, grad_sigma


def clamp_and_bound(
    p: Tensor, sigma: Tensor, d_mu: Tensor, d_sigma: Tensor, group: dict[str, Any]
) -> None:
    r"""Apply the changes :math:`\Delta\mu, \Delta\sigma` in place, with the group's optional clamps.

    With ``group["ratio_max"]`` :math:`= r`, both changes are first clamped to
    :math:`\pm r\sigma`; after adding them, with ``group["sigma_bounds"]`` :math:`= (a, b)`,
    :math:`\sigma` is clamped to :math:`[a, b]` (knobs of the MESU authors' code
    :cite:`bonnet2025bayesian`; both off by default).
    """
    ratio = group.get("ratio_max")
    if ratio is not None:
        lim = ratio * sigma
        d_mu = torch.maximum(torch.minimum(d_mu, lim), -lim)
        d_sigma = torch.maximum(torch.minimum(d_sigma, lim), -lim)
    p.add_(d_mu)
    sigma.add_(d_sigma)
    bounds = group.get("sigma_bounds")
    if bounds is not None:
        sigma.clamp_(bounds[0], bounds[1])
