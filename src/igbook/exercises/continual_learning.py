"""Self-checks for the chapter "Continual learning as geometry"."""

from __future__ import annotations

import math

import torch

from igbook._validation import as_tensor
from igbook.continual.metrics import backward_transfer, forgetting
from igbook.exercises._core import Feedback, compare
from igbook.optim.mesu import mesu_stationary_variance

__all__ = [
    "check_backward_transfer",
    "check_batched_lambda",
    "check_ewc_penalty",
    "check_forgetting",
    "check_halving_time",
    "check_si_path_integral",
    "check_stationary_variance",
]


def check_ewc_penalty(
    answer: object, fisher: object, w: object, w_star: object, lam: float = 1.0
) -> Feedback:
    r"""The EWC penalty :math:`\frac{\lambda}{2}\sum_i F_i (w_i - w^*_i)^2` for the given numbers."""
    f, a, b = (
        as_tensor(v, n, dtype=torch.float64)
        for v, n in ((fisher, "fisher"), (w, "w"), (w_star, "w_star"))
    )
    expected = 0.5 * lam * (f * (a - b) ** 2).sum()
    return compare(
        answer,
        expected,
        what="the EWC penalty",
        rtol=1e-6,
        mistakes=[
            (0.5 * (f * (a - b) ** 2).sum(), "Multiply by the strength lambda."),
            (
                0.5 * lam * ((a - b) ** 2).sum(),
                "Weight each squared change by its Fisher entry F_i: that is what protects important weights.",
            ),
            (
                0.5 * lam * (f * (a - b)).sum(),
                "Square the change (w_i - w*_i): the penalty is a quadratic form.",
            ),
            (0.5 * lam * (f * (a - b) ** 2).mean(), "Sum over the weights i, don't average."),
        ],
        hint="Add F_i (w_i - w*_i)^2 over the weights, then multiply by lambda / 2.",
    )


def check_stationary_variance(
    answer: object, hessian: float, N: float, sigma_prior: float
) -> Feedback:
    r"""MESU's long-time variance :math:`1/(NH + \sigma_{\mathrm{prior}}^{-2})` for one synapse."""
    expected = mesu_stationary_variance(
        torch.tensor(float(hessian), dtype=torch.float64), N, sigma_prior
    )
    return compare(
        answer,
        expected,
        what="the stationary variance",
        rtol=1e-6,
        mistakes=[
            (
                math.sqrt(float(expected)),
                "That is the standard deviation; the question asks for the variance sigma^2.",
            ),
            (
                1.0 / (N * hessian),
                "You dropped the prior: the forgetting term adds 1/sigma_prior^2 to the precision.",
            ),
            (
                1.0 / float(expected),
                "That is the stationary precision; the variance is its reciprocal.",
            ),
            (
                1.0 / (hessian + 1 / sigma_prior**2),
                "The Hessian term is multiplied by the window N at the fixed point.",
            ),
        ],
        hint="Set lambda_t = lambda_{t-1} in the precision recursion and solve for the fixed point.",
    )


def check_si_path_integral(answer: object, h: float, lr: float, d0: float, steps: int) -> Feedback:
    r"""SI's :math:`\omega` after ``steps`` of gradient descent on :math:`\tfrac12 h (\theta - a)^2`.

    Starting at distance ``d0`` from the minimum, :math:`\omega = \sum_t \eta g_t^2
    = h d_0^2 \frac{1 - (1-\eta h)^{2T}}{2-\eta h}`.
    """
    r = 1 - lr * h
    expected = torch.tensor(h * d0**2 * (1 - r ** (2 * steps)) / (2 - lr * h), dtype=torch.float64)
    return compare(
        answer,
        expected,
        what="omega",
        rtol=1e-6,
        mistakes=[
            (
                0.5 * h * d0**2 * (1 - r ** (2 * steps)),
                (
                    "That is the continuous path integral (the loss decrease); SI sums "
                    "-g * delta theta over discrete steps, which is larger by the factor 2 / (2 - lr h)."
                ),
            ),
            (
                float(expected) / lr,
                "omega sums -g_t * delta theta_t = lr g_t^2: you left out the learning rate.",
            ),
            (
                h * d0**2 * (1 - r ** (2 * (steps + 1))) / (2 - lr * h),
                "One step too many: sum over t = 0, ..., T - 1.",
            ),
            (
                h * d0**2 * (1 - r ** (2 * (steps - 1))) / (2 - lr * h),
                "One step too few: sum over t = 0, ..., T - 1.",
            ),
        ],
        hint="With d_t = (1 - lr h)^t d0 and g_t = h d_t, sum lr g_t^2 over the steps (a geometric series).",
    )


def check_forgetting(answer: object, R: object) -> Feedback:
    """Forgetting of the accuracy matrix ``R`` (mean drop from each old task's best accuracy)."""
    r = as_tensor(R, "R", dtype=torch.float64)
    t = r.shape[0]
    return compare(
        answer,
        torch.tensor(forgetting(r)),
        what="the forgetting",
        rtol=1e-6,
        mistakes=[
            (
                -backward_transfer(r),
                (
                    "That is minus the backward transfer: forgetting starts from each task's *best* accuracy, "
                    "not from the one right after learning it."
                ),
            ),
            (
                -forgetting(r),
                "Forgetting is a drop: best accuracy minus final accuracy, a positive number when accuracy was lost.",
            ),
            (
                forgetting(r) * (t - 1) / t,
                "Average over the old tasks only: the last task cannot be forgotten yet.",
            ),
        ],
        hint="For each task but the last: its best accuracy before the end minus its final accuracy; then average.",
    )


def check_backward_transfer(answer: object, R: object) -> Feedback:
    """Backward transfer of the accuracy matrix ``R``."""
    r = as_tensor(R, "R", dtype=torch.float64)
    t = r.shape[0]
    return compare(
        answer,
        torch.tensor(backward_transfer(r)),
        what="the backward transfer",
        rtol=1e-6,
        mistakes=[
            (
                float((r[-1, : t - 1] - r.diagonal()[: t - 1]).sum() / t),
                "Average over the T - 1 old tasks: the last one has no 'after'.",
            ),
            (
                float((r[-1, : t - 1] - r[: t - 1, : t - 1].max(0).values).mean()),
                (
                    "Backward transfer starts from the accuracy right "
                    "after learning each task (R[j, j]), not from its best."
                ),
            ),
        ],
        hint="For each task but the last: final accuracy R[T-1, j] minus R[j, j] right after learning it; "
        "then average.",
    )


def check_halving_time(
    answer: object, N: float, hessian: float, sigma_prior: float, lambda0: float | None = None
) -> Feedback:
    r"""Minibatches after which MESU's step with :math:`N=\infty` is half the step with window ``N``.

    The precision without forgetting grows as :math:`\lambda_0 + tH`; the windowed one settles at
    :math:`NH + \sigma_{\mathrm{prior}}^{-2}`, so :math:`t = (2(NH + \sigma_{\mathrm{prior}}^{-2}) - \lambda_0)/H`
    (``lambda0`` defaults to the prior precision). Answers within 5% are accepted (the
    exercise asks for "about").
    """
    prior_prec = 1.0 / sigma_prior**2
    lam0 = prior_prec if lambda0 is None else float(lambda0)
    expected = (2.0 * (N * hessian + prior_prec) - lam0) / hessian
    return compare(
        answer,
        torch.tensor(expected, dtype=torch.float64),
        what="the number of minibatches",
        rtol=0.05,
        mistakes=[
            (
                N,
                (
                    "After N minibatches the infinite window has the same precision as the windowed one "
                    "(equal steps); halving the step needs twice that precision."
                ),
            ),
            (
                4 * N,
                (
                    "The step is proportional to the variance, 1/precision: "
                    "half the step needs twice the precision, not four times."
                ),
            ),
            (
                N / 2,
                (
                    "Halving the step needs a *larger* precision than the windowed one, "
                    "which is reached after about N minibatches."
                ),
            ),
        ],
        hint="The step scales like the variance 1/lambda: "
        "find t where lambda0 + t H is twice the windowed fixed point.",
    )


def check_batched_lambda(answer: object, lam_batched: float, batch_size: int) -> Feedback:
    r"""The EWC strength for the empirical Fisher that matches ``lam_batched`` with a Fisher from
    squared minibatch-mean gradients: about :math:`\lambda_{\mathrm{batched}}/B` near a minimum
    (the batched Fisher is about :math:`1/B` of the empirical one). Within 10%."""
    expected = torch.tensor(lam_batched / batch_size, dtype=torch.float64)
    return compare(
        answer,
        expected,
        what="lambda for the empirical Fisher",
        rtol=0.1,
        mistakes=[
            (
                lam_batched * batch_size,
                (
                    "The other way round: the batched Fisher is the smaller one (about 1/B of the "
                    "empirical Fisher), so it needs the larger lambda."
                ),
            ),
            (
                lam_batched,
                "The two Fishers differ by about a factor B near a minimum, so the strengths must too.",
            ),
            (
                lam_batched / math.sqrt(batch_size),
                (
                    "The squared minibatch mean has about 1/B (not 1/sqrt(B)) of the per-example "
                    "second moment: the variance of a mean of B terms."
                ),
            ),
        ],
        hint="Near a minimum the mean gradient vanishes, "
        "so a squared minibatch-mean gradient is about 1/B of the per-example one.",
    )
