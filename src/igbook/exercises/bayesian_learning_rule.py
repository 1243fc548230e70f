"""Self-checks for the exercises of the chapter "The Bayesian learning rule"."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from igbook.exercises._core import Feedback, call_reader, compare

__all__ = [
    "check_gd_from_blr",
    "check_ivon_hessian_update",
    "check_vadam_stationary_variance",
    "check_newton_fixed_point",
]



def check_gd_from_blr(step: Callable[[Tensor, Tensor, float], Tensor]) -> Feedback:
    """Check ``step(m, grad, rho)``: the BLR mean update for the family N(m, I) with fixed
    covariance and the delta method (it should be gradient descent)."""
    if not callable(step):
        return Feedback(False, "Pass a function (m, grad, rho) -> new mean.")
    g = torch.Generator().manual_seed(0)
    for rho in (0.1, 0.7, 2.0):
        m = torch.randn(3, generator=g, dtype=torch.float64)
        gr = torch.randn(3, generator=g, dtype=torch.float64)
        out = call_reader(step, m, gr, rho)
        if isinstance(out, Exception):
            return Feedback(False, f"Your function raised {out!r}.")
        fb = compare(out, m - rho * gr, what="the new mean", where=f"at rho={rho}", rtol=1e-10, atol=1e-12)
        if not fb:
            a = torch.as_tensor(out, dtype=torch.float64)
            if a.shape == m.shape and torch.allclose(a, m + rho * gr):
                return Feedback(False, "You moved uphill: the BLR *subtracts* rho times the expected gradient.")
            if a.shape == m.shape and torch.allclose(a, (1 - rho) * m - rho * gr):
                return Feedback(
                    False,
                    "You applied lambda <- (1-rho) lambda - rho grad_mu E[l] to m: with a fixed covariance the "
                    "entropy does not depend on m, so there is no (1-rho) shrinkage.",
                )
            return fb
    return Feedback(True, "m <- m - rho * grad l(m): gradient descent with step rho, for any rho > 0.")


def check_ivon_hessian_update(update: Callable[[Tensor, Tensor, float, float], Tensor]) -> Feedback:
    """Check ``update(h, hhat, delta, beta2)``: IVON's corrected Hessian average, element-wise."""
    if not callable(update):
        return Feedback(False, "Pass a function (h, hhat, delta, beta2) -> new h.")
    g = torch.Generator().manual_seed(1)
    h = torch.rand(1000, generator=g, dtype=torch.float64) * 2 + 1e-3
    hhat = torch.randn(1000, generator=g, dtype=torch.float64) * 50  # many very negative estimates
    for delta, beta2 in ((1e-3, 0.9), (0.0, 0.5), (0.1, 0.999)):
        out = call_reader(update, h.clone(), hhat.clone(), delta, beta2)
        if isinstance(out, Exception):
            return Feedback(False, f"Your function raised {out!r}.")
        ref = beta2 * h + (1 - beta2) * hhat + 0.5 * (1 - beta2) ** 2 * (h - hhat) ** 2 / (h + delta)
        fb = compare(out, ref, what="the new h", where=f"at delta={delta}, beta2={beta2}", rtol=1e-9, atol=1e-12)
        if not fb:
            a = torch.as_tensor(out, dtype=torch.float64)
            if a.shape == ref.shape and torch.allclose(a, beta2 * h + (1 - beta2) * hhat):
                return Feedback(False, "That is the plain moving average: it goes negative. Add the correction term.")
            return fb
        if not bool((torch.as_tensor(out, dtype=torch.float64) + delta > 0).all()):
            return Feedback(False, "h + delta must stay positive.")  # pragma: no cover - implied by the match
    return Feedback(
        True,
        "Correct, and h + delta > 0 on all 3000 test points, even where hhat = -150: "
        "(a^2 + (a + x)^2) / (2a) > 0 with a = h + delta, x = (1 - beta2)(hhat - h).",
    )


def _vadam_stationary_s(n: int, hess: float, prior_precision: float) -> float:
    """Stationary s of full-batch Vadam on a 1-D quadratic: s (N s + lambda) = H^2."""
    return (-prior_precision + math.sqrt(prior_precision**2 + 4 * n * hess**2)) / (2 * n)


def check_vadam_stationary_variance(answer: float, n: int = 100, hess: float = 2.0, prior_precision: float = 1.0) -> Feedback:
    """Check the stationary posterior variance 1/(N s + lambda) of full-batch Vadam on
    f(theta) = H (theta - a)^2 / 2 (average loss), prior precision lambda, N data points."""
    s = _vadam_stationary_s(n, hess, prior_precision)
    expected = torch.tensor(1.0 / (n * s + prior_precision), dtype=torch.float64)
    fb = compare(answer, expected, what="Vadam's variance", rtol=1e-6)
    if fb:
        exact = 1.0 / (n * hess + prior_precision)
        return Feedback(
            True,
            f"Vadam's variance {float(expected):.4g} is {float(expected) / exact:.3g} times the exact "
            f"{exact:.4g}: about sqrt(N) too large, because the squared full-batch gradient is H^2 sigma^2, "
            "not H.",
        )
    try:
        a = float(answer)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return fb
    if abs(a - 1.0 / (n * hess + prior_precision)) < 1e-9:
        return Feedback(False, "That is the exact posterior variance: Vadam's s estimates E[g^2], not H.")
    return fb


def check_newton_fixed_point(mean: object, precision: object, x: Tensor, y: Tensor, noise_std: float, prior_precision: float) -> Feedback:
    """Check the one-step BLR (rho = 1) answer for Bayesian linear regression: the exact posterior."""
    x = torch.as_tensor(x, dtype=torch.float64)
    y = torch.as_tensor(y, dtype=torch.float64)
    p = x.T @ x / noise_std**2 + prior_precision * torch.eye(x.shape[1], dtype=torch.float64)
    m = torch.linalg.solve(p, x.T @ y / noise_std**2)
    fb = compare(precision, p, what="the precision", rtol=1e-8)
    if not fb:
        a = torch.as_tensor(precision, dtype=torch.float64)
        if a.shape == p.shape and torch.allclose(a, p - prior_precision * torch.eye(x.shape[1], dtype=torch.float64)):
            return Feedback(False, "You forgot the prior's curvature lambda I in the expected Hessian.")
        return fb
    fb = compare(mean, m, what="the mean", rtol=1e-8)
    if not fb:
        return fb
    return Feedback(True, "One step with rho = 1 gives the exact posterior, from any starting point.")
