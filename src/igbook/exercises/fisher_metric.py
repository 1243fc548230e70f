"""Self-checks for the exercises of the chapter "The Fisher metric"."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from igbook.exercises._core import Feedback, as_number, compare, need_function, run_reader
from igbook.families import Bernoulli, Poisson
from igbook.geometry import fisher_rao_gaussian

__all__ = [
    "check_bernoulli_fisher",
    "check_bernoulli_natural_gradient",
    "check_ellipse_semi_axes",
    "check_gaussian_log_sigma_fisher",
    "check_poisson_natural_fisher",
    "check_scale_distance",
]

D = torch.float64
_PS = (0.05, 0.3, 0.5, 0.8)


def check_bernoulli_fisher(fisher: Callable[[float], float]) -> Feedback:
    """Check ``fisher(p)``: the Fisher information of Bernoulli(p) in the coordinate ``p``."""
    if (bad := need_function(fisher, "p -> F(p), e.g. `lambda p: ...`")) is not None:
        return bad
    for p in _PS:
        where = f"at p={p}"
        out = run_reader(fisher, p, where=where)
        if isinstance(out, Feedback):
            return out
        fb = compare(
            out,
            Bernoulli(p).fisher()[0, 0],
            what="F(p)",
            where=where,
            rtol=1e-6,
            mistakes=[
                (
                    p * (1 - p),
                    (
                        "You returned p(1-p): that is the Fisher in the natural parameter (the log-odds), not in p. "
                        "Use the chain rule."
                    ),
                ),
                (
                    1 / p**2 + 1 / (1 - p) ** 2,
                    (
                        "You added the squared scores 1/p^2 and 1/(1-p)^2 of the two outcomes: the "
                        "Fisher is their expectation, so weight them by their probabilities."
                    ),
                ),
                (
                    1 / p,
                    "Only the outcome x = 1 counts in your answer: average the squared score over x = 0 too.",
                ),
            ],
            hint="Compute E[(d/dp log p(x | p))^2] over the two outcomes x = 0, 1.",
        )
        if not fb:
            return fb
    return Feedback(
        True,
        "F(p) = 1/(p(1-p)) at every test point: large near 0 and 1, where a small change of p "
        "changes the distribution a lot.",
    )


def check_bernoulli_natural_gradient(step: Callable[[float, float], float]) -> Feedback:
    """Check ``step(p, dL_dp)``: the natural-gradient direction for Bernoulli(p) in the coordinate ``p``."""
    if (bad := need_function(step, "(p, dL_dp) -> natural gradient")) is not None:
        return bad
    for p in _PS:
        for g in (1.0, -2.5):
            where = f"at p={p}, dL/dp={g}"
            out = run_reader(step, p, g, where=where)
            if isinstance(out, Feedback):
                return out
            fb = compare(
                out,
                torch.tensor(p * (1 - p) * g, dtype=D),
                what="the natural gradient",
                where=where,
                rtol=1e-6,
                mistakes=[
                    (
                        g / (p * (1 - p)),
                        "You multiplied by F(p); the natural gradient is F(p)^{-1} dL/dp.",
                    ),
                    (g, "That is the Euclidean gradient dL/dp: precondition it by F(p)^{-1}."),
                    (
                        -p * (1 - p) * g,
                        "Wrong sign: return the direction F^{-1} dL/dp itself; the step subtracts it.",
                    ),
                ],
                hint="The natural gradient is F(p)^{-1} dL/dp with the F(p) of the first part.",
            )
            if not fb:
                return fb
    return Feedback(
        True,
        "The natural gradient is p(1-p) dL/dp: the Euclidean gradient shrunk where the distribution is sensitive.",
    )


def check_poisson_natural_fisher(fisher: Callable[[float], float]) -> Feedback:
    """Check ``fisher(eta)``: the Fisher information of the Poisson family in its natural parameter."""
    if (bad := need_function(fisher, "eta -> F(eta)")) is not None:
        return bad
    for eta in (-1.0, 0.0, 1.5):
        where = f"at eta={eta}"
        out = run_reader(fisher, eta, where=where)
        if isinstance(out, Feedback):
            return out
        lam = math.exp(eta)
        fb = compare(
            out,
            Poisson(lam).fisher_natural()[0, 0],
            what="F(eta)",
            where=where,
            rtol=1e-6,
            mistakes=[
                (
                    1 / lam,
                    "1/lambda is the Fisher in the mean parameter lambda; in eta = log lambda the Fisher is A''(eta).",
                ),
                (
                    eta,
                    "The Fisher does not depend on eta linearly: differentiate A(eta) = exp(eta) twice.",
                ),
            ],
            hint="In natural coordinates the Fisher is A''(eta), the variance of the sufficient statistic x.",
        )
        if not fb:
            return fb
    return Feedback(
        True, "F(eta) = A''(eta) = exp(eta) = lambda: the variance of the sufficient statistic."
    )


def check_gaussian_log_sigma_fisher(fisher: Callable[[float, float], object]) -> Feedback:
    """Check ``fisher(mu, s)``: the 2x2 Fisher of N(mu, exp(s)^2) in coordinates (mu, s = log sigma)."""
    if (bad := need_function(fisher, "(mu, s) -> 2x2 matrix")) is not None:
        return bad
    for mu, s in ((0.0, 0.0), (1.0, math.log(2.0)), (-0.5, math.log(0.3))):
        sig = math.exp(s)
        where = f"at mu={mu}, sigma={sig:.3f}"
        out = run_reader(fisher, mu, s, where=where)
        if isinstance(out, Feedback):
            return out

        def diag(a: float, b: float) -> torch.Tensor:
            return torch.diag(torch.tensor([a, b], dtype=D))

        fb = compare(
            out,
            diag(1 / sig**2, 2.0),
            what="F(mu, log sigma)",
            where=where,
            rtol=1e-6,
            mistakes=[
                (
                    diag(1 / sig**2, 2 / sig**2),
                    (
                        "The (2,2) entry is still 2/sigma^2, the value in (mu, sigma). "
                        "Multiply by (d sigma / d s)^2 = sigma^2."
                    ),
                ),
                (
                    diag(1 / sig**2, 2 / sig**4),
                    (
                        "Chain rule the wrong way round: F_ss = F_sigma,sigma (d sigma/d s)^2, a "
                        "multiplication by sigma^2."
                    ),
                ),
                (
                    diag(1 / sig**2, 1.0),
                    "The (2,2) entry is missing a factor of 2: E[(z^2 - 1)^2] = 2 for z ~ N(0, 1).",
                ),
                (diag(1.0, 2.0), "Only the scale coordinate changed: F_mu,mu is still 1/sigma^2."),
            ],
            hint="Start from F = diag(1/sigma^2, 2/sigma^2) in (mu, sigma) "
            "and change coordinates with J = d(mu, sigma)/d(mu, s).",
        )
        if not fb:
            return fb
    return Feedback(
        True, "F = diag(1/sigma^2, 2): in log sigma the scale direction has constant information."
    )


def check_scale_distance(distance: Callable[[float], float]) -> Feedback:
    """Check ``distance(sigma)``: the Fisher-Rao distance between N(0, 1) and N(0, sigma^2)."""
    if (bad := need_function(distance, "sigma -> distance")) is not None:
        return bad
    for sig in (0.5, 1.0, 3.0):
        where = f"at sigma={sig}"
        out = run_reader(distance, sig, where=where)
        if isinstance(out, Feedback):
            return out
        kl = math.log(sig) + 1 / (2 * sig**2) - 0.5
        fb = compare(
            out,
            fisher_rao_gaussian(0.0, 1.0, 0.0, sig),
            what="the distance",
            where=where,
            rtol=1e-6,
            atol=1e-12,
            mistakes=[
                (
                    abs(math.log(sig)),
                    "Missing the sqrt(2): along sigma the metric is 2/sigma^2, so ds = sqrt(2) d sigma / sigma.",
                ),
                (
                    math.sqrt(2) * math.log(sig),
                    "A distance is never negative: integrate |d sigma| / sigma.",
                ),
                (
                    math.sqrt(2 * kl),
                    (
                        "That is sqrt(2 KL), which agrees with the distance only as sigma -> 1; "
                        "integrate the metric along the sigma axis instead."
                    ),
                ),
            ],
            hint="The path with mu = 0 fixed is a geodesic: integrate sqrt(F_sigma,sigma) d sigma along it.",
        )
        if not fb:
            return fb
    return Feedback(
        True, "d = sqrt(2)|log sigma|: halving or doubling the scale costs the same distance."
    )


def check_ellipse_semi_axes(
    semi_mu: float, semi_sigma: float, sigma: float, eps: float
) -> Feedback:
    r"""Check the semi-axes of the Fisher ellipse :math:`\tfrac12\delta^\top F\delta = \varepsilon` of
    :math:`\mathcal N(\mu,\sigma^2)` in :math:`(\mu,\sigma)`: :math:`F = \operatorname{diag}(1/\sigma^2, 2/\sigma^2)`,
    so :math:`\sigma\sqrt{2\varepsilon}` along :math:`\mu` and :math:`\sigma\sqrt{\varepsilon}` along
    :math:`\sigma` (within 3%: read off a figure)."""
    vals = []
    for name, v in (("semi_mu", semi_mu), ("semi_sigma", semi_sigma)):
        x = as_number(v, name)
        if isinstance(x, Feedback):
            return x
        vals.append(x)
    exp = torch.tensor([sigma * math.sqrt(2 * eps), sigma * math.sqrt(eps)], dtype=D)
    fb = compare(
        torch.tensor(vals, dtype=D),
        exp,
        what="the semi-axes (along mu, along sigma)",
        rtol=0.03,
        mistakes=[
            (
                exp.flip(0),
                "Swapped: the ellipse is wider along mu (F_mu,mu = 1/sigma^2 is the smaller entry).",
            ),
            (
                exp / math.sqrt(2),
                "Off by sqrt(2): the level set is (1/2) d^T F d = eps, not d^T F d = eps.",
            ),
            (
                exp / sigma,
                "The axes scale with sigma: F = diag(1/sigma^2, 2/sigma^2) depends on sigma.",
            ),
            (
                exp * sigma,
                "The axes grow like sigma, not sigma^2: take the square root of 2 eps / F_ii.",
            ),
        ],
        hint="Along axis i the ellipse reaches (1/2) F_ii d_i^2 = eps.",
    )
    if not fb:
        return fb
    return Feedback(
        True, f"Both axes scale with sigma: ({float(exp[0]):.4f}, {float(exp[1]):.4f})."
    )
