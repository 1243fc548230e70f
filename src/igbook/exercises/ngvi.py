"""Self-checks for the exercises of the chapter "Natural-gradient variational inference"."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from igbook.exercises._core import Feedback, call_reader, compare
from igbook.vi.conjugate import BetaBernoulli, GammaPoisson

__all__ = [
    "check_beta_bernoulli_posterior",
    "check_ngvi_steps_needed",
    "check_poisson_message",
    "check_vmp_precision_shape",
    "check_cvi_site_update",
]

D = torch.float64



def check_beta_bernoulli_posterior(answer: Sequence[float], alpha0: float, beta0: float, data: Sequence[float]) -> Feedback:
    r"""Check ``answer = (alpha_N, beta_N)``: the Beta posterior after the 0/1 outcomes ``data``."""
    y = torch.as_tensor(list(data), dtype=D)
    want = BetaBernoulli(alpha0, beta0).posterior(y).params
    fb = compare(answer, want, what="(alpha_N, beta_N)", rtol=1e-9)
    if fb:
        return Feedback(True, f"alpha_N = alpha0 + #ones = {float(want[0]):g}, beta_N = beta0 + #zeros = {float(want[1]):g}: the messages (y, 1 - y) add to eta0 = (alpha0 - 1, beta0 - 1).")
    try:
        a = torch.as_tensor(answer, dtype=D).reshape(-1)
        if a.shape == (2,) and torch.allclose(a, want - 1):
            return Feedback(False, "You gave the natural parameter eta_N = (alpha_N - 1, beta_N - 1); the exercise asks for (alpha_N, beta_N).")
        if a.shape == (2,) and torch.allclose(a, want.flip(0)):
            return Feedback(False, "Swapped: alpha counts the ones (successes), beta the zeros.")
    except (TypeError, ValueError, RuntimeError):
        pass
    return fb


def check_ngvi_steps_needed(answer: int, rho: float, factor: float) -> Feedback:
    r"""Check ``answer``: the fewest NGVI steps with step ``rho`` that shrink the error by ``factor``.

    On a conjugate model :math:`\|\lambda_t - \lambda^*\| = (1-\rho)^t\|\lambda_0 - \lambda^*\|`,
    so the answer is :math:`\lceil \log(\text{factor}) / \log(1-\rho) \rceil`.
    """
    if not 0 < rho < 1 or not 0 < factor < 1:
        raise ValueError("rho and factor must lie in (0, 1)")
    want = math.ceil(math.log(factor) / math.log(1 - rho) - 1e-12)
    if isinstance(answer, bool) or not isinstance(answer, (int, float)) or answer != int(answer):
        return Feedback(False, f"The number of steps is a whole number, got {answer!r}.")
    if int(answer) == want:
        return Feedback(True, f"{want} steps: (1 - {rho})^{want} = {(1 - rho) ** want:.3g} <= {factor:g} < (1 - {rho})^{want - 1} = {(1 - rho) ** (want - 1):.3g}.")
    if int(answer) == want - 1:
        return Feedback(False, f"One short: after {want - 1} steps the error is still (1 - rho)^{want - 1} = {(1 - rho) ** (want - 1):.3g} times the initial one. Round up.")
    return Feedback(False, f"Not {answer}: the error after t steps is (1 - rho)^t times the initial error; solve (1 - rho)^t <= {factor:g}.")


def check_poisson_message(message: Callable[[float], object]) -> Feedback:
    r"""Check ``message(y)``: the natural parameter that a Poisson count ``y`` adds to a Gamma posterior on the rate."""
    if not callable(message):
        return Feedback(False, "Pass a function y -> 2-vector (the message in T(r) = (log r, r)).")
    model = GammaPoisson()
    for y in (0.0, 1.0, 4.0, 17.0):
        out = call_reader(message, y)
        if isinstance(out, Exception):
            return Feedback(False, f"Your function raised {out!r} at y={y}.")
        want = model.messages(torch.tensor([y], dtype=D))[0]
        fb = compare(out, want, what="the message", where=f"at y={y}", rtol=1e-12, atol=1e-12)
        if not fb:
            try:
                a = torch.as_tensor(out, dtype=D).reshape(-1)
                if a.shape == (2,) and abs(float(a[1]) - 1.0) < 1e-12:
                    return Feedback(False, "The rate enters the Poisson likelihood as exp(-r): its coefficient on T_2(r) = r is -1.")
            except (TypeError, ValueError, RuntimeError):
                pass
            return fb
    return Feedback(True, "log p(y | r) = y log r - r - log y!: the message is (y, -1), whatever q is, so NGVI with rho = 1 is exact.")


def check_vmp_precision_shape(answer: float, alpha0: float, n: int) -> Feedback:
    r"""Check ``answer``: the shape of :math:`q(\tau)` under mean-field VMP, :math:`\alpha_0 + (N+1)/2`."""
    want = alpha0 + (n + 1) / 2
    fb = compare(answer, torch.tensor(want, dtype=D), what="the shape of q(tau)", rtol=1e-12)
    if fb:
        return Feedback(True, f"alpha0 + (N + 1)/2 = {want:g}: N/2 from the likelihood and 1/2 from p(m | tau), whose precision kappa0 tau also involves tau.")
    try:
        val = float(torch.as_tensor(answer, dtype=D))
    except (TypeError, ValueError, RuntimeError):
        return fb
    if abs(val - (alpha0 + n / 2)) < 1e-12:
        return Feedback(False, "alpha0 + N/2 is the shape of the *exact* posterior; mean-field q(tau) also collects 1/2 from the prior p(m | tau) = N(loc0, 1/(kappa0 tau)).")
    return fb


def check_cvi_site_update(update: Callable[[float, float, float, float, float, float], object]) -> Feedback:
    r"""Check ``update(alpha, beta, g, h, nu, rho)``: one CVI update of a pseudo-observation.

    The site of data point :math:`i` moves as
    :math:`\tilde\alpha \leftarrow (1-\rho)\tilde\alpha + \rho(g - h\nu)`,
    :math:`\tilde\beta \leftarrow (1-\rho)\tilde\beta - \rho h`; return the pair.
    """
    if not callable(update):
        return Feedback(False, "Pass a function (alpha, beta, g, h, nu, rho) -> (alpha_new, beta_new).")
    for alpha, beta, g, h, nu, rho in ((0.0, 0.0, 0.3, -0.2, 1.0, 1.0), (1.2, 0.5, -0.4, -0.1, -2.0, 0.3), (-0.5, 2.0, 0.05, -0.25, 0.5, 0.7)):
        out = call_reader(update, alpha, beta, g, h, nu, rho)
        if isinstance(out, Exception):
            return Feedback(False, f"Your function raised {out!r}.")
        want = torch.tensor([(1 - rho) * alpha + rho * (g - h * nu), (1 - rho) * beta - rho * h], dtype=D)
        fb = compare(out, want, what="(alpha_new, beta_new)", where=f"at (alpha, beta, g, h, nu, rho) = {(alpha, beta, g, h, nu, rho)}", rtol=1e-12, atol=1e-14)
        if not fb:
            try:
                a = torch.as_tensor(out, dtype=D).reshape(-1)
                if a.shape == (2,) and abs(float(a[0]) - ((1 - rho) * alpha + rho * g)) < 1e-12 and h * nu != 0:
                    return Feedback(False, "The shift needs -h nu: the gradient with respect to the first mean parameter is E[f'] - E[f''] m, not E[f'] alone.")
            except (TypeError, ValueError, RuntimeError):
                pass
            return fb
    return Feedback(True, "Each site is an exponential moving average of (g - h nu, -h): a pseudo-observation with precision -h.")
