"""Self-checks for the exercises of the chapter "Natural-gradient variational inference"."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from igbook.exercises._core import Feedback, as_number, compare, need_function, run_reader
from igbook.vi.conjugate import BetaBernoulli, GammaPoisson

__all__ = [
    "check_beta_bernoulli_posterior",
    "check_cvi_site_update",
    "check_ngvi_steps_needed",
    "check_poisson_message",
    "check_vmp_precision_shape",
]

D = torch.float64


def check_beta_bernoulli_posterior(
    answer: Sequence[float], alpha0: float, beta0: float, data: Sequence[float]
) -> Feedback:
    r"""Check ``answer = (alpha_N, beta_N)``: the Beta posterior after the 0/1 outcomes ``data``."""
    y = torch.as_tensor(list(data), dtype=D)
    want = BetaBernoulli(alpha0, beta0).posterior(y).params
    ones, zeros = float(y.sum()), float((1 - y).sum())
    fb = compare(
        answer,
        want,
        what="(alpha_N, beta_N)",
        rtol=1e-9,
        mistakes=[
            (
                want - 1,
                (
                    "You gave the natural parameter eta_N = (alpha_N - 1, beta_N - 1); "
                    "the exercise asks for (alpha_N, beta_N)."
                ),
            ),
            (want.flip(0), "Swapped: alpha counts the ones (successes), beta the zeros."),
            ([ones, zeros], "You forgot the prior: the messages add to the prior's parameters."),
            ([alpha0 + ones, beta0 + ones], "beta counts the zeros (failures), not the ones."),
            (
                [alpha0 + ones / len(y), beta0 + zeros / len(y)],
                "Each observation adds a whole count, not a fraction: sum over the data, don't average.",
            ),
        ],
        hint="Each outcome y sends the message (y, 1 - y) in the natural parameter (alpha - 1, beta - 1).",
    )
    if fb:
        return Feedback(
            True,
            f"alpha_N = alpha0 + #ones = {float(want[0]):g}, beta_N = beta0 + #zeros = {float(want[1]):g}: "
            "the messages (y, 1 - y) add to eta0 = (alpha0 - 1, beta0 - 1).",
        )
    return fb


def check_ngvi_steps_needed(answer: int, rho: float, factor: float) -> Feedback:
    r"""Check ``answer``: the fewest NGVI steps with step ``rho`` that shrink the error by ``factor``.

    On a conjugate model :math:`\|\lambda_t - \lambda^*\| = (1-\rho)^t\|\lambda_0 - \lambda^*\|`,
    so the answer is :math:`\lceil \log(\text{factor}) / \log(1-\rho) \rceil`.
    """
    if not 0 < rho < 1 or not 0 < factor < 1:
        raise ValueError("rho and factor must lie in (0, 1)")
    want = math.ceil(math.log(factor) / math.log(1 - rho) - 1e-12)
    val = as_number(answer, "the number of steps")
    if isinstance(val, Feedback):
        return val
    if isinstance(answer, bool) or val != int(val):
        return Feedback(
            False,
            f"The number of steps is a whole number, got {answer!r}: round the solution of (1 - rho)^t = factor.",
        )
    t = int(val)
    if t == want:
        return Feedback(
            True,
            f"{want} steps: (1 - {rho})^{want} = {(1 - rho) ** want:.3g} <= {factor:g} < "
            f"(1 - {rho})^{want - 1} = {(1 - rho) ** (want - 1):.3g}.",
        )
    if t == want - 1:
        return Feedback(
            False,
            "One short: after that many steps the error is still above the factor. Round up, not down.",
        )
    if t == math.ceil(math.log(factor) / math.log(rho) - 1e-12):
        return Feedback(
            False, "Each step keeps (1 - rho) of the error, not rho: solve (1 - rho)^t <= factor."
        )
    return Feedback(
        False,
        "Not yet: the error after t steps is (1 - rho)^t times the initial error; "
        "find the smallest t with (1 - rho)^t <= factor. "
        + ("That many steps is more than needed." if t > want else "That many steps is too few."),
    )


def check_poisson_message(message: Callable[[float], object]) -> Feedback:
    r"""Check ``message(y)``: the natural parameter that a Poisson count ``y`` adds to a Gamma posterior on the rate."""
    if (
        bad := need_function(message, "y -> 2-vector (the message in T(r) = (log r, r))")
    ) is not None:
        return bad
    model = GammaPoisson()
    for y in (0.0, 1.0, 4.0, 17.0):
        where = f"at y={y}"
        out = run_reader(message, y, where=where)
        if isinstance(out, Feedback):
            return out
        want = model.messages(torch.tensor([y], dtype=D))[0]
        fb = compare(
            out,
            want,
            what="the message",
            where=where,
            rtol=1e-12,
            atol=1e-12,
            mistakes=[
                (
                    [y, 1.0],
                    "The rate enters the Poisson likelihood as exp(-r): its coefficient on T_2(r) = r is -1.",
                ),
                (
                    [-1.0, y],
                    "Swapped: the first statistic is log r (coefficient y), the second is r (coefficient -1).",
                ),
                (
                    [y - 1, -1.0],
                    (
                        "The message adds y to the natural parameter alpha - 1 (alpha grows by y): "
                        "there is no -1 in the message."
                    ),
                ),
            ],
            hint="Write log p(y | r) = y log r - r - log y! and read off the coefficients of (log r, r).",
        )
        if not fb:
            return fb
    return Feedback(
        True,
        "log p(y | r) = y log r - r - log y!: the message is (y, -1), whatever q is, so NGVI with rho = 1 is exact.",
    )


def check_vmp_precision_shape(answer: float, alpha0: float, n: int) -> Feedback:
    r"""Check ``answer``: the shape of :math:`q(\tau)` under mean-field VMP, :math:`\alpha_0 + (N+1)/2`."""
    want = alpha0 + (n + 1) / 2
    fb = compare(
        answer,
        torch.tensor(want, dtype=D),
        what="the shape of q(tau)",
        rtol=1e-12,
        mistakes=[
            (
                alpha0 + n / 2,
                (
                    "alpha0 + N/2 is the shape of the *exact* posterior; mean-field q(tau) also collects 1/2 from the "
                    "prior p(m | tau) = N(loc0, 1/(kappa0 tau))."
                ),
            ),
            (
                alpha0 + n + 1,
                "Each Gaussian factor contributes 1/2 to the shape (tau^{1/2} in its normalizer), not 1.",
            ),
            ((n + 1) / 2, "Add the prior's shape alpha0."),
        ],
        hint="Collect the powers of tau in log p(x, m, tau): "
        "each Gaussian factor with precision proportional to tau gives tau^{1/2}.",
    )
    if fb:
        return Feedback(
            True,
            f"alpha0 + (N + 1)/2 = {want:g}: N/2 from the likelihood and 1/2 from p(m | tau), whose precision "
            "kappa0 tau also involves tau.",
        )
    return fb


def check_cvi_site_update(
    update: Callable[[float, float, float, float, float, float], object],
) -> Feedback:
    r"""Check ``update(alpha, beta, g, h, nu, rho)``: one CVI update of a pseudo-observation.

    The site of data point :math:`i` moves as
    :math:`\tilde\alpha \leftarrow (1-\rho)\tilde\alpha + \rho(g - h\nu)`,
    :math:`\tilde\beta \leftarrow (1-\rho)\tilde\beta - \rho h`; return the pair.
    """
    if (
        bad := need_function(update, "(alpha, beta, g, h, nu, rho) -> (alpha_new, beta_new)")
    ) is not None:
        return bad
    for alpha, beta, g, h, nu, rho in (
        (0.0, 0.0, 0.3, -0.2, 1.0, 1.0),
        (1.2, 0.5, -0.4, -0.1, -2.0, 0.3),
        (-0.5, 2.0, 0.05, -0.25, 0.5, 0.7),
    ):
        where = f"at (alpha, beta, g, h, nu, rho) = {(alpha, beta, g, h, nu, rho)}"
        out = run_reader(update, alpha, beta, g, h, nu, rho, where=where)
        if isinstance(out, Feedback):
            return out
        want = torch.tensor(
            [(1 - rho) * alpha + rho * (g - h * nu), (1 - rho) * beta - rho * h], dtype=D
        )
        fb = compare(
            out,
            want,
            what="(alpha_new, beta_new)",
            where=where,
            rtol=1e-12,
            atol=1e-14,
            mistakes=[
                (
                    [(1 - rho) * alpha + rho * g, (1 - rho) * beta - rho * h],
                    (
                        "The shift needs -h nu: the gradient with respect to the first mean parameter "
                        "is E[f'] - E[f''] m, not E[f'] alone."
                    ),
                ),
                (
                    [(1 - rho) * alpha + rho * (g + h * nu), (1 - rho) * beta + rho * h],
                    "Sign of h: the site's precision is -h (h = E[f''] < 0 for a log-concave likelihood).",
                ),
                (
                    [(1 - rho) * alpha + rho * (g - h * nu), (1 - rho) * beta + rho * h],
                    "Sign of h in beta: the site's precision is -h (h = E[f''] < 0 for a log-concave likelihood).",
                ),
                (
                    [alpha + rho * (g - h * nu), beta - rho * h],
                    "Forgetting the old site: CVI is a moving average, (1 - rho) old + rho new.",
                ),
            ],
            hint="Each site is an exponential moving average, with weight rho, "
            "of the natural-parameter gradient (g - h nu, -h).",
        )
        if not fb:
            return fb
    return Feedback(
        True,
        "Each site is an exponential moving average of (g - h nu, -h): a pseudo-observation with precision -h.",
    )
