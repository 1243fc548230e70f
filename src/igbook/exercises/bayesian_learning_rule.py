"""Self-checks for the exercises of the chapter "The Bayesian learning rule"."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from igbook._validation import as_tensor
from igbook.exercises._core import Feedback, compare, need_function, run_reader

__all__ = [
    "check_gd_from_blr",
    "check_ivon_hessian_update",
    "check_newton_fixed_point",
    "check_vadam_stationary_variance",
]


def check_gd_from_blr(step: Callable[[Tensor, Tensor, float], Tensor]) -> Feedback:
    """Check ``step(m, grad, rho)``: the BLR mean update for the family N(m, I) with fixed
    covariance and the delta method (it should be gradient descent)."""
    if (bad := need_function(step, "(m, grad, rho) -> new mean")) is not None:
        return bad
    g = torch.Generator().manual_seed(0)
    for rho in (0.1, 0.7, 2.0):
        m = torch.randn(3, generator=g, dtype=torch.float64)
        gr = torch.randn(3, generator=g, dtype=torch.float64)
        where = f"at rho={rho}"
        out = run_reader(step, m.clone(), gr.clone(), rho, where=where)
        if isinstance(out, Feedback):
            return out
        fb = compare(
            out,
            m - rho * gr,
            what="the new mean",
            where=where,
            rtol=1e-10,
            atol=1e-12,
            mistakes=[
                (
                    m + rho * gr,
                    "You moved uphill: the BLR *subtracts* rho times the expected gradient.",
                ),
                (
                    (1 - rho) * m - rho * gr,
                    (
                        "You applied lambda <- (1-rho) lambda - rho grad_mu E[l] to m: with a fixed covariance "
                        "the entropy does not depend on m, so there is no (1-rho) shrinkage."
                    ),
                ),
                (
                    -rho * gr,
                    "You returned the change of the mean; return the new mean m - rho grad.",
                ),
                (m - gr, "The step size rho is missing."),
            ],
            hint="With Sigma = I fixed, the natural parameter is m itself and the entropy does not depend on it.",
        )
        if not fb:
            return fb
    return Feedback(
        True, "m <- m - rho * grad l(m): gradient descent with step rho, for any rho > 0."
    )


def check_ivon_hessian_update(update: Callable[[Tensor, Tensor, float, float], Tensor]) -> Feedback:
    """Check ``update(h, hhat, delta, beta2)``: IVON's corrected Hessian average, element-wise."""
    if (bad := need_function(update, "(h, hhat, delta, beta2) -> new h")) is not None:
        return bad
    g = torch.Generator().manual_seed(1)
    h = torch.rand(1000, generator=g, dtype=torch.float64) * 2 + 1e-3
    hhat = torch.randn(1000, generator=g, dtype=torch.float64) * 50  # many very negative estimates
    for delta, beta2 in ((1e-3, 0.9), (0.0, 0.5), (0.1, 0.999)):
        where = f"at delta={delta}, beta2={beta2}"
        out = run_reader(update, h.clone(), hhat.clone(), delta, beta2, where=where)
        if isinstance(out, Feedback):
            return out
        avg = beta2 * h + (1 - beta2) * hhat
        corr = (1 - beta2) ** 2 * (h - hhat) ** 2 / (h + delta)
        ref = avg + 0.5 * corr
        fb = compare(
            out,
            ref,
            what="the new h",
            where=where,
            rtol=1e-9,
            atol=1e-12,
            mistakes=[
                (
                    avg,
                    "That is the plain moving average: it goes negative. Add the correction term.",
                ),
                (avg + corr, "The correction term has a 1/2 in front."),
                (
                    avg + 0.5 * (1 - beta2) * (h - hhat) ** 2 / (h + delta),
                    "The correction is second order in (1 - beta2): square it.",
                ),
                (
                    avg + 0.5 * (1 - beta2) ** 2 * (h - hhat) ** 2 / h,
                    "Divide the correction by h + delta, not h.",
                ),
                (avg - 0.5 * corr, "The correction is added: it is what keeps h + delta positive."),
            ],
            hint="IVON adds (1/2) (1 - beta2)^2 (h - hhat)^2 / (h + delta) to the moving average.",
        )
        if not fb:
            return fb
    return Feedback(
        True,
        "Correct, and h + delta > 0 on all 3000 test points, even where hhat = -150: "
        "(a^2 + (a + x)^2) / (2a) > 0 with a = h + delta, x = (1 - beta2)(hhat - h).",
    )


def _vadam_stationary_s(n: int, hess: float, prior_precision: float) -> float:
    """Stationary s of full-batch Vadam on a 1-D quadratic: s (N s + lambda) = H^2."""
    return (-prior_precision + math.sqrt(prior_precision**2 + 4 * n * hess**2)) / (2 * n)


def check_vadam_stationary_variance(
    answer: float, n: int = 100, hess: float = 2.0, prior_precision: float = 1.0
) -> Feedback:
    """Check the stationary posterior variance 1/(N s + lambda) of full-batch Vadam on
    f(theta) = H (theta - a)^2 / 2 (average loss), prior precision lambda, N data points."""
    s = _vadam_stationary_s(n, hess, prior_precision)
    expected = torch.tensor(1.0 / (n * s + prior_precision), dtype=torch.float64)
    exact = 1.0 / (n * hess + prior_precision)
    fb = compare(
        answer,
        expected,
        what="Vadam's variance",
        rtol=1e-6,
        mistakes=[
            (exact, "That is the exact posterior variance: Vadam's s estimates E[g^2], not H."),
            (1.0 / (n * s), "Add the prior precision lambda to N s."),
            (n * s + prior_precision, "That is the precision; the variance is its reciprocal."),
            (
                1.0 / (n * hess**2 + prior_precision),
                (
                    "s is not H^2: at the fixed point the squared gradient H^2 sigma^2 depends on "
                    "the variance sigma^2 = 1/(N s + lambda) itself; solve s (N s + lambda) = H^2."
                ),
            ),
        ],
        hint="At stationarity s equals the expected squared gradient H^2 sigma^2 with sigma^2 = 1/(N s + lambda): "
        "solve this quadratic for s.",
    )
    if fb:
        return Feedback(
            True,
            f"Vadam's variance {float(expected):.4g} is {float(expected) / exact:.3g} times the exact "
            f"{exact:.4g}: about sqrt(N) too large, because the squared full-batch gradient is H^2 sigma^2, "
            "not H.",
        )
    return fb


def check_newton_fixed_point(
    mean: object, precision: object, x: Tensor, y: Tensor, noise_std: float, prior_precision: float
) -> Feedback:
    """Check the one-step BLR (rho = 1) answer for Bayesian linear regression: the exact posterior."""
    x = as_tensor(x, "x", dtype=torch.float64)
    y = as_tensor(y, "y", dtype=torch.float64)
    eye = torch.eye(x.shape[1], dtype=torch.float64)
    p = x.T @ x / noise_std**2 + prior_precision * eye
    m = torch.linalg.solve(p, x.T @ y / noise_std**2)
    fb = compare(
        precision,
        p,
        what="the precision",
        rtol=1e-8,
        mistakes=[
            (
                p - prior_precision * eye,
                "You forgot the prior's curvature lambda I in the expected Hessian.",
            ),
            (x.T @ x + prior_precision * eye, "Divide X^T X by the noise variance sigma^2."),
            (
                x.T @ x / noise_std + prior_precision * eye,
                "Divide X^T X by the noise *variance* sigma^2, not the standard deviation.",
            ),
            (
                x.T @ x / (noise_std**2 * x.shape[0]) + prior_precision * eye,
                "The log-likelihood is a sum over the data points, not a mean.",
            ),
        ],
        hint="With rho = 1 the new precision is the expected Hessian of the negative log joint: "
        "X^T X / sigma^2 plus the prior's.",
    )
    if not fb:
        return fb
    fb = compare(
        mean,
        m,
        what="the mean",
        rtol=1e-8,
        mistakes=[
            (
                torch.linalg.solve(x.T @ x, x.T @ y),
                "That is the least-squares solution: the prior shrinks the mean, use the full precision.",
            ),
            (
                x.T @ y / noise_std**2,
                "Multiply by the inverse precision (the covariance): m = P^{-1} X^T y / sigma^2.",
            ),
            (
                p @ (x.T @ y) / noise_std**2,
                "Multiply by the *inverse* precision: m = P^{-1} X^T y / sigma^2.",
            ),
        ],
        hint="With rho = 1 the mean is the precision's solve against X^T y / sigma^2 (the prior mean is 0).",
    )
    if not fb:
        return fb
    return Feedback(
        True, "One step with rho = 1 gives the exact posterior, from any starting point."
    )
