"""Self-checks for the chapter "Continual learning as geometry"."""

from __future__ import annotations

import math

import torch

from igbook.continual.metrics import backward_transfer, forgetting
from igbook.exercises._core import Feedback, compare
from igbook.optim.mesu import mesu_stationary_variance

__all__ = [
    "check_ewc_penalty",
    "check_stationary_variance",
    "check_si_path_integral",
    "check_forgetting",
    "check_backward_transfer",
    "check_halving_time",
    "check_batched_lambda",
]


def check_ewc_penalty(answer: object, fisher: object, w: object, w_star: object, lam: float = 1.0) -> Feedback:
    r"""The EWC penalty :math:`\frac{\lambda}{2}\sum_i F_i (w_i - w^*_i)^2` for the given numbers."""
    f, a, b = (torch.as_tensor(v, dtype=torch.float64) for v in (fisher, w, w_star))
    expected = 0.5 * lam * (f * (a - b) ** 2).sum()
    return compare(answer, expected, what="the EWC penalty", rtol=1e-6)


def check_stationary_variance(answer: object, hessian: float, N: float, sigma_prior: float) -> Feedback:
    r"""MESU's long-time variance :math:`1/(NH + \sigma_{\mathrm{prior}}^{-2})` for one synapse."""
    expected = mesu_stationary_variance(torch.tensor(float(hessian), dtype=torch.float64), N, sigma_prior)
    fb = compare(answer, expected, what="the stationary variance", rtol=1e-6)
    if not fb.ok:
        try:
            a = float(answer)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return fb
        if math.isclose(a, math.sqrt(float(expected)), rel_tol=1e-6):
            return Feedback(False, "That is the standard deviation; the question asks for the variance sigma^2.")
        if math.isclose(a, 1.0 / (N * hessian), rel_tol=1e-6):
            return Feedback(False, "You dropped the prior: the forgetting term adds 1/sigma_prior^2 to the precision.")
    return fb


def check_si_path_integral(answer: object, h: float, lr: float, d0: float, steps: int) -> Feedback:
    r"""SI's :math:`\omega` after ``steps`` of gradient descent on :math:`\tfrac12 h (\theta - a)^2`.

    Starting at distance ``d0`` from the minimum, :math:`\omega = \sum_t \eta g_t^2
    = h d_0^2 \frac{1 - (1-\eta h)^{2T}}{2-\eta h}`.
    """
    r = 1 - lr * h
    expected = torch.tensor(h * d0**2 * (1 - r ** (2 * steps)) / (2 - lr * h), dtype=torch.float64)
    fb = compare(answer, expected, what="omega", rtol=1e-6)
    if not fb.ok:
        try:
            a = float(answer)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return fb
        cont = 0.5 * h * d0**2 * (1 - r ** (2 * steps))
        if math.isclose(a, cont, rel_tol=1e-6):
            return Feedback(
                False,
                "That is the continuous path integral (the loss decrease); SI sums -g * delta theta over "
                "discrete steps, which is larger by the factor 2 / (2 - lr h).",
            )
    return fb


def check_forgetting(answer: object, R: object) -> Feedback:
    """Forgetting of the accuracy matrix ``R`` (mean drop from each old task's best accuracy)."""
    r = torch.as_tensor(R, dtype=torch.float64)
    fb = compare(answer, torch.tensor(forgetting(r)), what="the forgetting", rtol=1e-6)
    if not fb.ok:
        try:
            a = float(answer)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return fb
        if math.isclose(a, -backward_transfer(r), rel_tol=1e-6):
            return Feedback(False, "That is minus the backward transfer: forgetting starts from each task's *best* accuracy, not from the one right after learning it.")
    return fb


def check_backward_transfer(answer: object, R: object) -> Feedback:
    """Backward transfer of the accuracy matrix ``R``."""
    r = torch.as_tensor(R, dtype=torch.float64)
    return compare(answer, torch.tensor(backward_transfer(r)), what="the backward transfer", rtol=1e-6)


def check_halving_time(answer: object, N: float, hessian: float, sigma_prior: float, lambda0: float | None = None) -> Feedback:
    r"""Minibatches after which MESU's step with :math:`N=\infty` is half the step with window ``N``.

    The precision without forgetting grows as :math:`\lambda_0 + tH`; the windowed one settles at
    :math:`NH + \sigma_{\mathrm{prior}}^{-2}`, so :math:`t = (2(NH + \sigma_{\mathrm{prior}}^{-2}) - \lambda_0)/H`
    (``lambda0`` defaults to the prior precision). Answers within 5% are accepted (the
    exercise asks for "about").
    """
    prior_prec = 1.0 / sigma_prior**2
    lam0 = prior_prec if lambda0 is None else float(lambda0)
    expected = (2.0 * (N * hessian + prior_prec) - lam0) / hessian
    fb = compare(answer, torch.tensor(expected, dtype=torch.float64), what="the number of minibatches", rtol=0.05)
    if not fb.ok:
        try:
            a = float(answer)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return fb
        if math.isclose(a, N, rel_tol=0.05):
            return Feedback(False, "After N minibatches the infinite window has the same precision as the windowed one "
                                   "(equal steps); halving the step needs twice that precision.")
    return fb


def check_batched_lambda(answer: object, lam_batched: float, batch_size: int) -> Feedback:
    r"""The EWC strength for the empirical Fisher that matches ``lam_batched`` with a Fisher from
    squared minibatch-mean gradients: about :math:`\lambda_{\mathrm{batched}}/B` near a minimum
    (the batched Fisher is about :math:`1/B` of the empirical one). Within 10%."""
    expected = torch.tensor(lam_batched / batch_size, dtype=torch.float64)
    fb = compare(answer, expected, what="lambda for the empirical Fisher", rtol=0.1)
    if not fb.ok:
        try:
            a = float(answer)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return fb
        if math.isclose(a, lam_batched * batch_size, rel_tol=0.1):
            return Feedback(False, "The other way round: the batched Fisher is the smaller one (about 1/B of the "
                                   "empirical Fisher), so it needs the larger lambda.")
    return fb
