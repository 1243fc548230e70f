r"""Self-checks for the exercises of the chapter "Natural gradient"."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from igbook.exercises._core import Feedback, call_reader, compare
from igbook.families import Gaussian
from igbook.natgrad import kl_loss, natural_gradient_at

__all__ = [
    "check_bernoulli_fit_steps",
    "check_log_sigma_natural_gradient",
    "check_trust_region_step",
    "check_euclidean_discrepancy",
]

D = torch.float64



def _float(x: object) -> float | None:
    try:
        return float(torch.as_tensor(x, dtype=D))
    except (TypeError, ValueError, RuntimeError):
        return None


def check_bernoulli_fit_steps(step_p: Callable[[float, float, float], float],
                              step_logit: Callable[[float, float, float], float]) -> Feedback:
    r"""Check two natural-gradient steps for fitting Bernoulli(p) to Bernoulli(q) with :math:`L(p)=\mathrm{KL}(q\|p)`.

    ``step_p(p, q, rho)`` steps in the coordinate :math:`p`: :math:`p - \rho\,(p-q)`;
    ``step_logit(p, q, rho)`` steps in :math:`\eta=\operatorname{logit}p` and returns the new
    :math:`p`: :math:`\sigma\big(\eta - \rho\,(p-q)/(p(1-p))\big)`.
    """
    if not (callable(step_p) and callable(step_logit)):
        return Feedback(False, "Pass two functions (p, q, rho) -> the new p.")
    for p in (0.05, 0.3, 0.6, 0.95):
        for q, rho in ((0.5, 0.5), (0.1, 1.0), (0.8, 0.2)):
            where = f"at p={p}, q={q}, rho={rho}"
            out = call_reader(step_p, p, q, rho)
            if isinstance(out, Exception):
                return Feedback(False, f"step_p raised {out!r} {where}.")
            want = torch.tensor(p - rho * (p - q), dtype=D)
            fb = compare(out, want, what="step_p", where=where, rtol=1e-9, atol=1e-12)
            if not fb:
                v = _float(out)
                if v is not None and abs(v - (p - rho * (p - q) / (p * (1 - p)))) < 1e-9:
                    return Feedback(False, "step_p is the Euclidean step p - rho dL/dp with dL/dp = (p-q)/(p(1-p)). "
                                           "Precondition by F(p)^{-1} = p(1-p).")
                return fb
            out = call_reader(step_logit, p, q, rho)
            if isinstance(out, Exception):
                return Feedback(False, f"step_logit raised {out!r} {where}.")
            eta = math.log(p / (1 - p))
            want = torch.sigmoid(torch.tensor(eta - rho * (p - q) / (p * (1 - p)), dtype=D))
            fb = compare(out, want, what="step_logit (the new p)", where=where, rtol=1e-9, atol=1e-12)
            if not fb:
                v = _float(out)
                if v is not None and abs(v - float(torch.sigmoid(torch.tensor(eta - rho * (p - q))))) < 1e-9:
                    return Feedback(False, "step_logit used dL/deta = p - q without preconditioning: F(eta) = p(1-p), "
                                           "so the natural gradient is (p - q)/(p(1-p)).")
                return fb
    return Feedback(True, "In p the natural step is p - rho (p - q): with rho = 1 it lands on q from anywhere. In the "
                          "logit the same first-order step overshoots near 0 and 1: invariance holds only as rho -> 0.")


def check_log_sigma_natural_gradient(natgrad: Callable[[float, float, float, float], object]) -> Feedback:
    r"""Check ``natgrad(mu, sigma, m, s)``: the natural gradient in :math:`(\mu,\log\sigma)` of :math:`\mathrm{KL}(\mathcal N(m,s^2)\|\mathcal N(\mu,\sigma^2))`.

    Expected :math:`\big(\mu-m,\ \tfrac12\,(1-(s^2+(\mu-m)^2)/\sigma^2)\big)`, computed here with
    :func:`igbook.natgrad.families.natural_gradient_at`.
    """
    if not callable(natgrad):
        return Feedback(False, "Pass a function (mu, sigma, m, s) -> 2-vector.")
    for mu, sigma, m, s in ((0.0, 1.0, 1.0, 2.0), (1.5, 0.4, -0.5, 1.0), (-2.0, 3.0, 0.0, 0.5)):
        where = f"at mu={mu}, sigma={sigma}, target N({m}, {s}^2)"
        out = call_reader(natgrad, mu, sigma, m, s)
        if isinstance(out, Exception):
            return Feedback(False, f"Your function raised {out!r} {where}.")
        want = natural_gradient_at(Gaussian(mu, sigma), kl_loss(Gaussian(m, s)), "log_sigma").direction
        fb = compare(out, want, what="the natural gradient", where=where, rtol=1e-8, atol=1e-12)
        if not fb:
            try:
                a = torch.as_tensor(out, dtype=D).reshape(2)
            except (TypeError, ValueError, RuntimeError):
                return fb
            eucl = torch.tensor([(mu - m) / sigma**2, 1 - (s**2 + (mu - m) ** 2) / sigma**2], dtype=D)
            if torch.allclose(a, eucl, rtol=1e-8, atol=1e-12):
                return Feedback(False, "That is the Euclidean gradient in (mu, log sigma). Multiply by F^{-1} = diag(sigma^2, 1/2).")
            return fb
    return Feedback(True, "The mean moves by mu - m whatever sigma is, and log sigma by half the relative variance "
                          "mismatch: each coordinate measured in units of its own information.")


def check_trust_region_step(step: Callable[[Tensor, Tensor, float], object]) -> Feedback:
    r"""Check ``step(F, g, eps)``: the step :math:`-\sqrt{2\epsilon/(g^\top F^{-1}g)}\,F^{-1}g` with :math:`\tfrac12 d^\top F d = \epsilon`."""
    if not callable(step):
        return Feedback(False, "Pass a function (F, g, eps) -> step vector.")
    gen = torch.Generator().manual_seed(7)
    for n, eps in ((2, 0.01), (3, 0.5), (5, 1e-3)):
        a = torch.randn(n, n, generator=gen, dtype=D)
        f = a @ a.T + 0.3 * torch.eye(n, dtype=D)
        g = torch.randn(n, generator=gen, dtype=D)
        out = call_reader(step, f.clone(), g.clone(), eps)
        if isinstance(out, Exception):
            return Feedback(False, f"Your function raised {out!r} (n={n}, eps={eps}).")
        nat = torch.linalg.solve(f, g)
        want = -math.sqrt(2 * eps / float(g @ nat)) * nat
        fb = compare(out, want, what="the step", where=f"(n={n}, eps={eps})", rtol=1e-8, atol=1e-12)
        if not fb:
            try:
                d = torch.as_tensor(out, dtype=D).reshape(n)
            except (TypeError, ValueError, RuntimeError):
                return fb
            if torch.allclose(d, -want, rtol=1e-8):
                return Feedback(False, "Right length, wrong sign: descend along -F^{-1} g.")
            quad = 0.5 * float(d @ f @ d)
            if abs(quad - eps) < 1e-8 * eps:
                return Feedback(False, "Your step meets the radius but is not along F^{-1} g.")
            return Feedback(False, f"0.5 d^T F d = {quad:.4g}, not eps = {eps} (n={n}). {fb.message}")
    return Feedback(True, "The largest natural step whose quadratic KL equals eps: its length scales like sqrt(eps).")


def check_euclidean_discrepancy(answer: object) -> Feedback:
    r"""Check the first-order discrepancy between Euclidean steps in :math:`(\mu,\sigma)` and :math:`(\mu,\log\sigma)`.

    At :math:`\mathcal N(0, 0.5^2)` with :math:`L = \mathrm{KL}(\mathcal N(0,1)\|q)`, a step of size
    :math:`\rho` changes :math:`\sigma` by :math:`-\rho\,\partial_\sigma L` in the first chart and
    by :math:`-\rho\,\sigma^2\partial_\sigma L` (to first order) in the second; the answer is the
    ratio :math:`\Delta\sigma_{(\mu,\sigma)}/\Delta\sigma_{(\mu,\log\sigma)} = 1/\sigma^2 = 4`.
    """
    fb = compare(answer, torch.tensor(4.0, dtype=D), what="the ratio of the two sigma changes", rtol=1e-6)
    if not fb:
        v = _float(answer)
        if v is not None and abs(v - 0.25) < 1e-6:
            return Feedback(False, "Inverted: the (mu, sigma) step is the larger one here, by 1/sigma^2.")
        if v is not None and abs(v - 2.0) < 1e-6:
            return Feedback(False, "d sigma = sigma d(log sigma) enters twice: once in the chain rule for the "
                                   "gradient and once when mapping the step back.")
        return fb
    return Feedback(True, "The two Euclidean steps differ by a factor 1/sigma^2 = 4 already at first order: "
                          "Euclidean descent depends on the chart, natural-gradient descent does not.")
