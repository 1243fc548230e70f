r"""Self-checks for the exercises of the chapter "The geometry of a Gaussian mixture"."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from igbook import mixtures as mx
from igbook.exercises._core import Feedback, call_reader, compare

__all__ = [
    "check_mixture_score",
    "check_exchange_score",
    "check_singularity_constants",
    "check_isotropic_separation",
    "check_singular_speed_exponent",
    "check_explorer_condition_separation",
    "condition_separation",
]

D = torch.float64
_POINTS = ((0.3, -0.9, 0.8, 0.1), (1.0, 1.02, 1.0, -2.0), (-2.0, 3.0, 0.5, 0.7), (0.0, 0.0, 1.5, 1.2))



def check_mixture_score(score: Callable[[float, float, float, float], object]) -> Feedback:
    r"""Check ``score(x, mu1, mu2, sigma)``: :math:`\nabla_{(\mu_1,\mu_2)}\log p(x)`, a 2-vector :math:`(r_i(x)(x-\mu_i)/\sigma^2)_i`."""
    if not callable(score):
        return Feedback(False, "Pass a function (x, mu1, mu2, sigma) -> 2-vector.")
    for m1, m2, s, x in _POINTS:
        where = f"at x={x}, mu=({m1}, {m2}), sigma={s}"
        out = call_reader(score, x, m1, m2, s)
        if isinstance(out, Exception):
            return Feedback(False, f"Your function raised {out!r} {where}.")
        want = mx.score(torch.tensor([x], dtype=D), torch.tensor([m1, m2], dtype=D), s)[0]
        fb = compare(out, want, what="the score", where=where, rtol=1e-8, atol=1e-12)
        if not fb:
            try:
                a = torch.as_tensor(out, dtype=D).reshape(2)
            except (TypeError, ValueError, RuntimeError):
                return fb
            no_r = torch.tensor([(x - m1) / s**2, (x - m2) / s**2], dtype=D)
            if torch.allclose(a, no_r) or torch.allclose(a, 0.5 * no_r):
                return Feedback(False, "Each component's score must be weighted by its responsibility "
                                       "r_i(x) = 0.5 N(x|mu_i) / p(x), not by a constant.")
            return fb
    return Feedback(True, "d log p / d mu_i = r_i(x)(x - mu_i)/sigma^2: a Gaussian score gated by the responsibility.")


def check_exchange_score(score: Callable[[float, float, float, float], float]) -> Feedback:
    r"""Check ``score(x, m, eps, sigma)``: :math:`\partial_\epsilon\log p` with :math:`\mu_{1,2} = m\pm\epsilon`.

    Expected :math:`\big(z\tanh(\epsilon z/\sigma) - \epsilon/\sigma\big)/\sigma` with
    :math:`z=(x-m)/\sigma`; checked against :math:`s_1 - s_2` of :func:`igbook.mixtures.score`.
    """
    if not callable(score):
        return Feedback(False, "Pass a function (x, m, eps, sigma) -> number.")
    for m1, m2, s, x in _POINTS:
        m, eps = 0.5 * (m1 + m2), 0.5 * (m1 - m2)
        where = f"at x={x}, m={m}, eps={eps}, sigma={s}"
        out = call_reader(score, x, m, eps, s)
        if isinstance(out, Exception):
            return Feedback(False, f"Your function raised {out!r} {where}.")
        sc = mx.score(torch.tensor([x], dtype=D), torch.tensor([m1, m2], dtype=D), s)[0]
        fb = compare(out, sc[0] - sc[1], what="the exchange score", where=where, rtol=1e-8, atol=1e-12)
        if not fb:
            return fb
    return Feedback(True, "The exchange score z tanh(eps z / sigma)/sigma - eps/sigma^2 is O(eps): it vanishes on "
                          "the singular line, and with it the exchange eigenvalue, like eps^2.")


def check_singularity_constants(c_min: float, c_kappa: float) -> Feedback:
    r"""Check the constants in :math:`\lambda_{\min}\approx c_{\min}\Delta^2/\sigma^4` and :math:`\kappa\approx c_\kappa\sigma^2/\Delta^2` (:math:`\Delta=\mu_1-\mu_2\to0`).

    Expected :math:`c_{\min}=1/4` and :math:`c_\kappa = 2`; checked against the quadrature Fisher at
    :math:`\Delta = 10^{-3}\sigma`.
    """
    s, gap = 1.3, 1e-3 * 1.3
    f = mx.fisher(torch.tensor([gap / 2, -gap / 2], dtype=D), s)
    ev, _ = mx.fisher_eigen(f)
    fb = compare(c_min, ev[0] * s**4 / gap**2, what="c_min", rtol=1e-4)
    if not fb:
        v = float(torch.as_tensor(c_min, dtype=D)) if isinstance(c_min, (int, float)) else None
        if v is not None and abs(v - 0.5) < 1e-6:
            return Feedback(False, "c_min = 1/2 forgets the normalization: a unit step along (1,-1)/sqrt(2) changes "
                                   "the half-gap eps by only 1/sqrt(2), so the eigenvalue is F_eps,eps / 2.")
        return fb
    fk = compare(c_kappa, mx.condition_number(f) * gap**2 / s**2, what="c_kappa", rtol=1e-4)
    if not fk:
        return fk
    return Feedback(True, "lambda_min ~ Delta^2/(4 sigma^4) and lambda_max -> 1/(2 sigma^2), so kappa ~ 2 sigma^2/Delta^2.")


def check_isotropic_separation(delta: float) -> Feedback:
    r"""Check the separation :math:`|\mu_1-\mu_2|/\sigma` at which :math:`F` is a multiple of the identity (to 1e-3)."""
    if isinstance(delta, bool) or not isinstance(delta, (int, float)):
        return Feedback(False, f"Pass a number, got {type(delta).__name__}.")
    fb = compare(delta, torch.tensor(mx.ISOTROPIC_SEPARATION, dtype=D), what="the separation", rtol=1e-3)
    if not fb:
        if math.isfinite(delta) and abs(float(mx.fisher(torch.tensor([0.0, float(delta)], dtype=D), 1.0)[0, 1])) > 1e-3:
            return Feedback(False, f"F_12 is not zero at {delta}: bisect on the sign of F_12 between 1 and 2.5.")
        return fb
    return Feedback(True, "Below ~1.636 sigma the exchange direction is the flat one; above, the mean-shift direction "
                          "is (slightly) flatter; at the crossing the ellipses are circles.")


def check_singular_speed_exponent(p: float) -> Feedback:
    r"""Check the exponent :math:`p` in :math:`\|F^{-1}\nabla L\| \propto |\mu_1-\mu_2|^{-p}` near the singular line.

    The exchange component of :math:`\nabla L` vanishes like :math:`\Delta` while
    :math:`\lambda_{\min}` vanishes like :math:`\Delta^2`, so :math:`p = 1`.
    """
    loss = mx.KLToTarget(torch.tensor([-1.5, 1.5], dtype=D), 1.0)
    gaps = torch.tensor([1e-2, 1e-3], dtype=D)
    th = torch.stack([0.4 + gaps / 2, 0.4 - gaps / 2], -1)
    _, n = mx.natural_gradient_field(th, loss)
    slope = -float(torch.log(n[0].norm() / n[1].norm()) / torch.log(gaps[0] / gaps[1]))
    fb = compare(p, torch.tensor(round(slope), dtype=D), what="the exponent p", rtol=1e-6)
    if not fb and isinstance(p, (int, float)) and abs(p - 2) < 1e-9:
        return Feedback(False, "p = 2 would hold if the gradient's exchange component stayed finite; it vanishes "
                               f"like |mu1 - mu2| too. The numerical log-log slope is {slope:.3f}.")
    if not fb:
        return Feedback(False, f"{fb.message} The numerical log-log slope is {slope:.3f}.")
    return Feedback(True, f"p = 1 (measured slope {slope:.3f}): the undamped natural flow is infinitely fast at the "
                          "singular line, which is why the flows are damped there.")


def condition_separation(kappa: float = 50.0, sigma: float = 1.0) -> float:
    r"""The separation :math:`|\mu_1-\mu_2|/\sigma` at which the mixture's Fisher has condition number ``kappa``
    (bisection on :math:`\kappa`, which decreases as the components separate, below the isotropic point)."""
    lo, hi = 1e-4, float(mx.ISOTROPIC_SEPARATION)
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        th = torch.tensor([-mid * sigma / 2, mid * sigma / 2], dtype=D)
        k = float(mx.condition_number(mx.fisher(th, sigma)))
        lo, hi = (mid, hi) if k > kappa else (lo, mid)
    return 0.5 * (lo + hi)


def check_explorer_condition_separation(delta: float, kappa: float = 50.0) -> Feedback:
    r"""Check the separation read off the explorer at which :math:`\kappa(F)` equals ``kappa`` (within 3%:
    sliders move in steps). Near the singular line :math:`\kappa\approx 2\sigma^2/\Delta^2`."""
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not math.isfinite(delta):
        return Feedback(False, f"Pass a finite number, got {delta!r}.")
    exact = condition_separation(kappa)
    fb = compare(delta, torch.tensor(exact, dtype=D), what="the separation |mu1 - mu2| / sigma", rtol=0.03)
    if not fb:
        if math.isclose(delta, exact / 2, rel_tol=0.05):
            return Feedback(False, "That is half the separation: the handles sit at -d/2 and +d/2, so |mu1 - mu2| = d.")
        if math.isclose(delta, 2.0 / kappa, rel_tol=0.05):
            return Feedback(False, "kappa ~ 2 sigma^2 / Delta^2 gives Delta^2 = 2/kappa: take the square root.")
        return fb
    return Feedback(True, f"{exact:.3f} (the approximation sqrt(2/kappa) gives {math.sqrt(2 / kappa):.3f}).")
