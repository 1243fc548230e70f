r"""Self-checks for the exercises of the chapter "The geometry of a Gaussian mixture"."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from igbook import mixtures as mx
from igbook.exercises._core import Feedback, as_number, compare, need_function, run_reader

__all__ = [
    "check_exchange_score",
    "check_explorer_condition_separation",
    "check_isotropic_separation",
    "check_mixture_score",
    "check_singular_speed_exponent",
    "check_singularity_constants",
    "condition_separation",
]

D = torch.float64
_POINTS = (
    (0.3, -0.9, 0.8, 0.1),
    (1.0, 1.02, 1.0, -2.0),
    (-2.0, 3.0, 0.5, 0.7),
    (0.0, 0.0, 1.5, 1.2),
)


def check_mixture_score(score: Callable[[float, float, float, float], object]) -> Feedback:
    r"""Check ``score(x, mu1, mu2, sigma)``: :math:`\nabla_{(\mu_1,\mu_2)}\log p(x)`, a 2-vector
    :math:`(r_i(x)(x-\mu_i)/\sigma^2)_i`."""
    if (bad := need_function(score, "(x, mu1, mu2, sigma) -> 2-vector")) is not None:
        return bad
    for m1, m2, s, x in _POINTS:
        where = f"at x={x}, mu=({m1}, {m2}), sigma={s}"
        out = run_reader(score, x, m1, m2, s, where=where)
        if isinstance(out, Feedback):
            return out
        want = mx.score(torch.tensor([x], dtype=D), torch.tensor([m1, m2], dtype=D), s)[0]
        no_r = torch.tensor([(x - m1) / s**2, (x - m2) / s**2], dtype=D)
        r = want / torch.where(no_r == 0, torch.ones_like(no_r), no_r)
        msg_r = (
            "Each component's score must be weighted by its responsibility "
            "r_i(x) = 0.5 N(x|mu_i) / p(x), not by a constant."
        )
        fb = compare(
            out,
            want,
            what="the score",
            where=where,
            rtol=1e-8,
            atol=1e-12,
            mistakes=[
                (no_r, msg_r),
                (0.5 * no_r, msg_r),
                (
                    r.flip(0) * no_r,
                    "The responsibilities are swapped: component i's score is weighted by r_i(x), its own.",
                ),
                (want * s, "Divide (x - mu_i) by sigma^2, not sigma."),
            ],
            hint="d/d mu_i log(0.5 N(x|mu_1) + 0.5 N(x|mu_2)) = [0.5 N(x|mu_i) / p(x)] (x - mu_i)/sigma^2.",
        )
        if not fb:
            return fb
    return Feedback(
        True,
        "d log p / d mu_i = r_i(x)(x - mu_i)/sigma^2: a Gaussian score gated by the responsibility.",
    )


def check_exchange_score(score: Callable[[float, float, float, float], float]) -> Feedback:
    r"""Check ``score(x, m, eps, sigma)``: :math:`\partial_\epsilon\log p` with :math:`\mu_{1,2} = m\pm\epsilon`.

    Expected :math:`\big(z\tanh(\epsilon z/\sigma) - \epsilon/\sigma\big)/\sigma` with
    :math:`z=(x-m)/\sigma`; checked against :math:`s_1 - s_2` of :func:`igbook.mixtures.score`.
    """
    if (bad := need_function(score, "(x, m, eps, sigma) -> number")) is not None:
        return bad
    for m1, m2, s, x in _POINTS:
        m, eps = 0.5 * (m1 + m2), 0.5 * (m1 - m2)
        where = f"at x={x}, m={m}, eps={eps}, sigma={s}"
        out = run_reader(score, x, m, eps, s, where=where)
        if isinstance(out, Feedback):
            return out
        sc = mx.score(torch.tensor([x], dtype=D), torch.tensor([m1, m2], dtype=D), s)[0]
        z = (x - m) / s
        fb = compare(
            out,
            sc[0] - sc[1],
            what="the exchange score",
            where=where,
            rtol=1e-8,
            atol=1e-12,
            mistakes=[
                (
                    sc[0] + sc[1],
                    "That is d/dm (both means move together); the exchange direction moves them apart: s_1 - s_2.",
                ),
                (
                    z * math.tanh(eps * z / s) / s,
                    (
                        "You lost the -eps/sigma^2 term: differentiate the Gaussian factors' own "
                        "exponents too, not only the responsibilities."
                    ),
                ),
            ],
            hint="With mu_1 = m + eps and mu_2 = m - eps, d/d eps = d/d mu_1 - d/d mu_2.",
        )
        if not fb:
            return fb
    return Feedback(
        True,
        "The exchange score z tanh(eps z / sigma)/sigma - eps/sigma^2 is O(eps): it vanishes on "
        "the singular line, and with it the exchange eigenvalue, like eps^2.",
    )


def check_singularity_constants(c_min: float, c_kappa: float) -> Feedback:
    r"""Check the constants in :math:`\lambda_{\min}\approx c_{\min}\Delta^2/\sigma^4` and
    :math:`\kappa\approx c_\kappa\sigma^2/\Delta^2` (:math:`\Delta=\mu_1-\mu_2\to0`).

    Expected :math:`c_{\min}=1/4` and :math:`c_\kappa = 2`; checked against the quadrature Fisher at
    :math:`\Delta = 10^{-3}\sigma`.
    """
    s, gap = 1.3, 1e-3 * 1.3
    f = mx.fisher(torch.tensor([gap / 2, -gap / 2], dtype=D), s)
    ev, _ = mx.fisher_eigen(f)
    c_min_ref = float(ev[0] * s**4 / gap**2)
    fb = compare(
        c_min,
        torch.tensor(c_min_ref, dtype=D),
        what="c_min",
        rtol=1e-4,
        mistakes=[
            (
                2 * c_min_ref,
                (
                    "c_min = 1/2 forgets the normalization: a unit step along (1,-1)/sqrt(2) changes "
                    "the half-gap eps by only 1/sqrt(2), so the eigenvalue is F_eps,eps / 2."
                ),
            ),
            (
                4 * c_min_ref,
                "Write the eigenvalue in Delta = mu1 - mu2 = 2 eps, not in eps: eps^2 = Delta^2 / 4.",
            ),
        ],
        hint="Expand the exchange score to first order in eps, take its variance, "
        "and rotate to the unit direction (1,-1)/sqrt(2).",
    )
    if not fb:
        return fb
    c_kappa_ref = float(mx.condition_number(f) * gap**2 / s**2)
    fk = compare(
        c_kappa,
        torch.tensor(c_kappa_ref, dtype=D),
        what="c_kappa",
        rtol=1e-4,
        mistakes=[
            (
                c_kappa_ref * 2,
                "lambda_max tends to 1/(2 sigma^2) (the mean-shift direction, each mean weighted 1/2), not 1/sigma^2.",
            ),
            (
                1 / c_min_ref,
                "kappa = lambda_max / lambda_min: divide lambda_max = 1/(2 sigma^2), not 1, by lambda_min.",
            ),
        ],
        hint="kappa = lambda_max / lambda_min with lambda_max the mean-shift eigenvalue at Delta = 0.",
    )
    if not fk:
        return fk
    return Feedback(
        True,
        "lambda_min ~ Delta^2/(4 sigma^4) and lambda_max -> 1/(2 sigma^2), so kappa ~ 2 sigma^2/Delta^2.",
    )


def check_isotropic_separation(delta: float) -> Feedback:
    r"""Check the separation :math:`|\mu_1-\mu_2|/\sigma` at which :math:`F` is a multiple of the identity (to 1e-3)."""
    val = as_number(delta, "the separation")
    if isinstance(val, Feedback):
        return val
    want = torch.tensor(mx.ISOTROPIC_SEPARATION, dtype=D)
    fb = compare(val, want, what="the separation", rtol=1e-3)
    if fb:
        return Feedback(
            True,
            "Below ~1.636 sigma the exchange direction is the flat one; above, the mean-shift direction "
            "is (slightly) flatter; at the crossing the ellipses are circles.",
        )
    if val <= 0:
        return Feedback(
            False,
            "A separation |mu1 - mu2| / sigma is positive: at 0 the mixture is singular, far from isotropic.",
        )
    f12 = float(mx.fisher(torch.tensor([0.0, val], dtype=D), 1.0)[0, 1])
    side = (
        "too small: F_12 is still positive there"
        if f12 > 0
        else "too large: F_12 is already negative there"
    )
    return Feedback(
        False,
        f"The separation is not right. F_12 is not zero at {val:g}: your value is {side}. "
        "Bisect on the sign of F_12 between 1 and 2.5.",
    )


def check_singular_speed_exponent(p: float) -> Feedback:
    r"""Check the exponent :math:`p` in :math:`\|F^{-1}\nabla L\| \propto |\mu_1-\mu_2|^{-p}` near the singular line.

    The exchange component of :math:`\nabla L` vanishes like :math:`\Delta` while
    :math:`\lambda_{\min}` vanishes like :math:`\Delta^2`, so :math:`p = 1`.
    """
    val = as_number(p, "the exponent p")
    if isinstance(val, Feedback):
        return val
    loss = mx.KLToTarget(torch.tensor([-1.5, 1.5], dtype=D), 1.0)
    gaps = torch.tensor([1e-2, 1e-3], dtype=D)
    th = torch.stack([0.4 + gaps / 2, 0.4 - gaps / 2], -1)
    _, n = mx.natural_gradient_field(th, loss)
    slope = -float(torch.log(n[0].norm() / n[1].norm()) / torch.log(gaps[0] / gaps[1]))
    fb = compare(
        val,
        torch.tensor(round(slope), dtype=D),
        what="the exponent p",
        rtol=1e-6,
        mistakes=[
            (
                2.0,
                (
                    "p = 2 would hold if the gradient's exchange component stayed finite; "
                    "it vanishes like |mu1 - mu2| too."
                ),
            ),
            (
                -1.0,
                (
                    "The sign convention: the speed *grows* as the gap shrinks, "
                    "||F^{-1} grad L|| ~ |mu1 - mu2|^{-p} with p > 0."
                ),
            ),
            (
                0.0,
                "The speed is not bounded near the singular line: compare how fast the gradient and lambda_min vanish.",
            ),
        ],
        hint="Compare how fast the exchange component of grad L and the eigenvalue lambda_min vanish "
        "as the gap shrinks, or measure the log-log slope of ||F^{-1} grad L|| between two small gaps.",
    )
    if not fb:
        return fb
    return Feedback(
        True,
        f"p = 1 (measured slope {slope:.3f}): the undamped natural flow is infinitely fast at the "
        "singular line, which is why the flows are damped there.",
    )


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
    val = as_number(delta, "the separation |mu1 - mu2| / sigma")
    if isinstance(val, Feedback):
        return val
    exact = condition_separation(kappa)
    fb = compare(
        val,
        torch.tensor(exact, dtype=D),
        what="the separation |mu1 - mu2| / sigma",
        rtol=0.03,
        mistakes=[
            (
                exact / 2,
                "That is half the separation: the handles sit at -d/2 and +d/2, so |mu1 - mu2| = d.",
            ),
            (
                2.0 / kappa,
                "kappa ~ 2 sigma^2 / Delta^2 gives Delta^2 = 2/kappa: take the square root.",
            ),
        ],
        hint="Move the handles towards each other until the spectrum panel shows the condition number asked for, "
        "then read |mu1 - mu2| / sigma.",
    )
    if not fb:
        return fb
    return Feedback(
        True, f"{exact:.3f} (the approximation sqrt(2/kappa) gives {math.sqrt(2 / kappa):.3f})."
    )
