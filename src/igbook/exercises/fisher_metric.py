"""Self-checks for the exercises of the chapter "The Fisher metric"."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from igbook.exercises._core import Feedback, call_reader, compare
from igbook.families import Bernoulli, Poisson
from igbook.geometry import fisher_rao_gaussian

__all__ = [
    "check_bernoulli_fisher",
    "check_bernoulli_natural_gradient",
    "check_poisson_natural_fisher",
    "check_gaussian_log_sigma_fisher",
    "check_scale_distance",
    "check_ellipse_semi_axes",
]

_PS = (0.05, 0.3, 0.5, 0.8)



def check_bernoulli_fisher(fisher: Callable[[float], float]) -> Feedback:
    """Check ``fisher(p)``: the Fisher information of Bernoulli(p) in the coordinate ``p``."""
    if not callable(fisher):
        return Feedback(False, "Pass a function p -> F(p), e.g. `lambda p: ...`.")
    for p in _PS:
        out = call_reader(fisher, p)
        if isinstance(out, Exception):
            return Feedback(False, f"Your function raised {out!r} at p={p}.")
        expected = Bernoulli(p).fisher()[0, 0]
        fb = compare(out, expected, what="F(p)", where=f"at p={p}", rtol=1e-6)
        if not fb:
            if abs(float(torch.as_tensor(out, dtype=torch.float64)) - p * (1 - p)) < 1e-9:
                return Feedback(False, "You returned p(1-p): that is the Fisher in the natural parameter (the log-odds), not in p. Use the chain rule.")
            return fb
    return Feedback(True, "F(p) = 1/(p(1-p)) at every test point: large near 0 and 1, where a small change of p changes the distribution a lot.")


def check_bernoulli_natural_gradient(step: Callable[[float, float], float]) -> Feedback:
    """Check ``step(p, dL_dp)``: the natural-gradient direction for Bernoulli(p) in the coordinate ``p``."""
    if not callable(step):
        return Feedback(False, "Pass a function (p, dL_dp) -> natural gradient.")
    for p in _PS:
        for g in (1.0, -2.5):
            out = call_reader(step, p, g)
            if isinstance(out, Exception):
                return Feedback(False, f"Your function raised {out!r} at p={p}, dL/dp={g}.")
            fb = compare(out, torch.tensor(p * (1 - p) * g, dtype=torch.float64), what="the natural gradient", where=f"at p={p}, dL/dp={g}", rtol=1e-6)
            if not fb:
                return fb
    return Feedback(True, "The natural gradient is p(1-p) dL/dp: the Euclidean gradient shrunk where the distribution is sensitive.")


def check_poisson_natural_fisher(fisher: Callable[[float], float]) -> Feedback:
    """Check ``fisher(eta)``: the Fisher information of the Poisson family in its natural parameter."""
    if not callable(fisher):
        return Feedback(False, "Pass a function eta -> F(eta).")
    for eta in (-1.0, 0.0, 1.5):
        out = call_reader(fisher, eta)
        if isinstance(out, Exception):
            return Feedback(False, f"Your function raised {out!r} at eta={eta}.")
        expected = Poisson(math.exp(eta)).fisher_natural()[0, 0]
        fb = compare(out, expected, what="F(eta)", where=f"at eta={eta}", rtol=1e-6)
        if not fb:
            return fb
    return Feedback(True, "F(eta) = A''(eta) = exp(eta) = lambda: the variance of the sufficient statistic.")


def check_gaussian_log_sigma_fisher(fisher: Callable[[float, float], object]) -> Feedback:
    """Check ``fisher(mu, s)``: the 2x2 Fisher of N(mu, exp(s)^2) in coordinates (mu, s = log sigma)."""
    if not callable(fisher):
        return Feedback(False, "Pass a function (mu, s) -> 2x2 matrix.")
    for mu, s in ((0.0, 0.0), (1.0, math.log(2.0)), (-0.5, math.log(0.3))):
        out = call_reader(fisher, mu, s)
        if isinstance(out, Exception):
            return Feedback(False, f"Your function raised {out!r} at mu={mu}, s={s:.3f}.")
        sig = math.exp(s)
        expected = torch.diag(torch.tensor([1 / sig**2, 2.0], dtype=torch.float64))
        fb = compare(out, expected, what="F(mu, log sigma)", where=f"at mu={mu}, sigma={sig:.3f}", rtol=1e-6)
        if not fb:
            try:
                a = torch.as_tensor(out, dtype=torch.float64).reshape(2, 2)
                if abs(float(a[1, 1]) - 2 / sig**2) < 1e-9:
                    return Feedback(False, "The (2,2) entry is still 2/sigma^2, the value in (mu, sigma). Multiply by (d sigma / d s)^2 = sigma^2.")
            except (RuntimeError, ValueError, TypeError):
                pass
            return fb
    return Feedback(True, "F = diag(1/sigma^2, 2): in log sigma the scale direction has constant information.")


def check_scale_distance(distance: Callable[[float], float]) -> Feedback:
    """Check ``distance(sigma)``: the Fisher-Rao distance between N(0, 1) and N(0, sigma^2)."""
    if not callable(distance):
        return Feedback(False, "Pass a function sigma -> distance.")
    for sig in (0.5, 1.0, 3.0):
        out = call_reader(distance, sig)
        if isinstance(out, Exception):
            return Feedback(False, f"Your function raised {out!r} at sigma={sig}.")
        fb = compare(out, fisher_rao_gaussian(0.0, 1.0, 0.0, sig), what="the distance", where=f"at sigma={sig}", rtol=1e-6, atol=1e-12)
        if not fb:
            return fb
    return Feedback(True, "d = sqrt(2)|log sigma|: halving or doubling the scale costs the same distance.")


def check_ellipse_semi_axes(semi_mu: float, semi_sigma: float, sigma: float, eps: float) -> Feedback:
    r"""Check the semi-axes of the Fisher ellipse :math:`\tfrac12\delta^\top F\delta = \varepsilon` of
    :math:`\mathcal N(\mu,\sigma^2)` in :math:`(\mu,\sigma)`: :math:`F = \operatorname{diag}(1/\sigma^2, 2/\sigma^2)`,
    so :math:`\sigma\sqrt{2\varepsilon}` along :math:`\mu` and :math:`\sigma\sqrt{\varepsilon}` along
    :math:`\sigma` (within 3%: read off a figure)."""
    for name, v in (("semi_mu", semi_mu), ("semi_sigma", semi_sigma)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return Feedback(False, f"{name}: pass a finite number, got {v!r}.")
    exp = torch.tensor([sigma * math.sqrt(2 * eps), sigma * math.sqrt(eps)], dtype=torch.float64)
    ans = torch.tensor([float(semi_mu), float(semi_sigma)], dtype=torch.float64)
    fb = compare(ans, exp, what="the semi-axes (along mu, along sigma)", rtol=0.03)
    if not fb:
        if torch.allclose(ans, exp.flip(0), rtol=0.03):
            return Feedback(False, "Swapped: the ellipse is wider along mu (F_mu_mu = 1/sigma^2 is the smaller entry).")
        if torch.allclose(ans, exp / math.sqrt(2), rtol=0.03):
            return Feedback(False, "Off by sqrt(2): the level set is (1/2) d^T F d = eps, not d^T F d = eps.")
        return fb
    return Feedback(True, f"Both axes scale with sigma: ({float(exp[0]):.4f}, {float(exp[1]):.4f}).")
