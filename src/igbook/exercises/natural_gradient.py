r"""Self-checks for the exercises of the chapter "Natural gradient"."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from igbook.exercises._core import Feedback, as_answer, compare, need_function, run_reader
from igbook.families import Gaussian
from igbook.natgrad import kl_loss, natural_gradient_at

__all__ = [
    "check_bernoulli_fit_steps",
    "check_euclidean_discrepancy",
    "check_log_sigma_natural_gradient",
    "check_trust_region_step",
]

D = torch.float64


def check_bernoulli_fit_steps(
    step_p: Callable[[float, float, float], float],
    step_logit: Callable[[float, float, float], float],
) -> Feedback:
    r"""Check two natural-gradient steps for fitting Bernoulli(p) to Bernoulli(q) with :math:`L(p)=\mathrm{KL}(q\|p)`.

    ``step_p(p, q, rho)`` steps in the coordinate :math:`p`: :math:`p - \rho\,(p-q)`;
    ``step_logit(p, q, rho)`` steps in :math:`\eta=\operatorname{logit}p` and returns the new
    :math:`p`: :math:`\sigma\big(\eta - \rho\,(p-q)/(p(1-p))\big)`.
    """
    for name, fn in (("step_p", step_p), ("step_logit", step_logit)):
        if (bad := need_function(fn, "(p, q, rho) -> the new p", name=name)) is not None:
            return bad
    for p in (0.05, 0.3, 0.6, 0.95):
        for q, rho in ((0.5, 0.5), (0.1, 1.0), (0.8, 0.2)):
            where = f"at p={p}, q={q}, rho={rho}"
            out = run_reader(step_p, p, q, rho, name="step_p", where=where)
            if isinstance(out, Feedback):
                return out
            fisher = p * (1 - p)
            fb = compare(
                out,
                torch.tensor(p - rho * (p - q), dtype=D),
                what="step_p",
                where=where,
                rtol=1e-9,
                atol=1e-12,
                mistakes=[
                    (
                        p - rho * (p - q) / fisher,
                        (
                            "step_p is the Euclidean step p - rho dL/dp with dL/dp = (p-q)/(p(1-p)). "
                            "Precondition by F(p)^{-1} = p(1-p)."
                        ),
                    ),
                    (
                        p + rho * (p - q),
                        "step_p has the wrong sign: descend, p - rho F^{-1} dL/dp.",
                    ),
                    (
                        p - rho * (p - q) / fisher**2,
                        "step_p multiplies by F(p) instead of F(p)^{-1}.",
                    ),
                ],
                hint="dL/dp = (p - q)/(p(1-p)) and F(p) = 1/(p(1-p)).",
            )
            if not fb:
                return fb
            out = run_reader(step_logit, p, q, rho, name="step_logit", where=where)
            if isinstance(out, Feedback):
                return out
            eta = math.log(p / (1 - p))
            new_eta = eta - rho * (p - q) / fisher
            fb = compare(
                out,
                torch.sigmoid(torch.tensor(new_eta, dtype=D)),
                what="step_logit (the new p)",
                where=where,
                rtol=1e-9,
                atol=1e-12,
                mistakes=[
                    (
                        torch.sigmoid(torch.tensor(eta - rho * (p - q), dtype=D)),
                        (
                            "step_logit used dL/deta = p - q without preconditioning: F(eta) = p(1-p), "
                            "so the natural gradient is (p - q)/(p(1-p))."
                        ),
                    ),
                    (
                        new_eta,
                        "step_logit returned the new logit eta: map it back to p with the sigmoid.",
                    ),
                    (
                        torch.sigmoid(torch.tensor(eta + rho * (p - q) / fisher, dtype=D)),
                        "step_logit has the wrong sign: descend.",
                    ),
                    (
                        torch.sigmoid(torch.tensor(eta - rho * (p - q) * fisher, dtype=D)),
                        "step_logit multiplies dL/deta by F(eta) instead of dividing by it.",
                    ),
                ],
                hint="In eta = logit(p): dL/deta = p - q and F(eta) = p(1-p); step eta, then return sigmoid(eta).",
            )
            if not fb:
                return fb
    return Feedback(
        True,
        "In p the natural step is p - rho (p - q): with rho = 1 it lands on q from anywhere. In the "
        "logit the same first-order step overshoots near 0 and 1: invariance holds only as rho -> 0.",
    )


def check_log_sigma_natural_gradient(
    natgrad: Callable[[float, float, float, float], object],
) -> Feedback:
    r"""Check ``natgrad(mu, sigma, m, s)``: the natural gradient in :math:`(\mu,\log\sigma)` of
    :math:`\mathrm{KL}(\mathcal N(m,s^2)\|\mathcal N(\mu,\sigma^2))`.

    Expected :math:`\big(\mu-m,\ \tfrac12\,(1-(s^2+(\mu-m)^2)/\sigma^2)\big)`, computed here with
    :func:`igbook.natgrad.families.natural_gradient_at`.
    """
    if (bad := need_function(natgrad, "(mu, sigma, m, s) -> 2-vector")) is not None:
        return bad
    for mu, sigma, m, s in ((0.0, 1.0, 1.0, 2.0), (1.5, 0.4, -0.5, 1.0), (-2.0, 3.0, 0.0, 0.5)):
        where = f"at mu={mu}, sigma={sigma}, target N({m}, {s}^2)"
        out = run_reader(natgrad, mu, sigma, m, s, where=where)
        if isinstance(out, Feedback):
            return out
        want = natural_gradient_at(
            Gaussian(mu, sigma), kl_loss(Gaussian(m, s)), "log_sigma"
        ).direction
        rel = 1 - (s**2 + (mu - m) ** 2) / sigma**2
        fb = compare(
            out,
            want,
            what="the natural gradient",
            where=where,
            rtol=1e-8,
            atol=1e-12,
            mistakes=[
                (
                    [(mu - m) / sigma**2, rel],
                    "That is the Euclidean gradient in (mu, log sigma). Multiply by F^{-1} = diag(sigma^2, 1/2).",
                ),
                (
                    [mu - m, sigma * rel / 2],
                    (
                        "That is the natural gradient in (mu, sigma); in log sigma the second entry is "
                        "divided by sigma (d log sigma = d sigma / sigma)."
                    ),
                ),
                ([mu - m, rel], "The log sigma entry is missing the 1/2 from F_ss = 2."),
            ],
            hint="Compute the Euclidean gradient in (mu, log sigma), then multiply by F^{-1} = diag(sigma^2, 1/2).",
        )
        if not fb:
            return fb
    return Feedback(
        True,
        "The mean moves by mu - m whatever sigma is, and log sigma by half the relative variance "
        "mismatch: each coordinate measured in units of its own information.",
    )


def check_trust_region_step(step: Callable[[Tensor, Tensor, float], object]) -> Feedback:
    r"""Check ``step(F, g, eps)``: the step :math:`-\sqrt{2\epsilon/(g^\top F^{-1}g)}\,F^{-1}g` with
    :math:`\tfrac12 d^\top F d = \epsilon`."""
    if (bad := need_function(step, "(F, g, eps) -> step vector")) is not None:
        return bad
    gen = torch.Generator().manual_seed(7)
    for n, eps in ((2, 0.01), (3, 0.5), (5, 1e-3)):
        a = torch.randn(n, n, generator=gen, dtype=D)
        f = a @ a.T + 0.3 * torch.eye(n, dtype=D)
        g = torch.randn(n, generator=gen, dtype=D)
        where = f"(n={n}, eps={eps})"
        out = run_reader(step, f.clone(), g.clone(), eps, where=where)
        if isinstance(out, Feedback):
            return out
        nat = torch.linalg.solve(f, g)
        want = -math.sqrt(2 * eps / float(g @ nat)) * nat
        fb = compare(
            out,
            want,
            what="the step",
            where=where,
            rtol=1e-8,
            atol=1e-12,
            mistakes=[
                (-want, "Right length, wrong sign: descend along -F^{-1} g."),
                (
                    -math.sqrt(eps / float(g @ nat)) * nat,
                    "The length is off by sqrt(2): the constraint is (1/2) d^T F d = eps.",
                ),
                (
                    -math.sqrt(2 * eps / float(g @ g)) * g,
                    "That step is along g: the steepest direction in the KL geometry is F^{-1} g.",
                ),
                (-eps * nat, "Right direction, but scale it so that (1/2) d^T F d = eps."),
            ],
            hint="Minimize g^T d subject to (1/2) d^T F d = eps with a Lagrange multiplier.",
        )
        if not fb:
            d = as_answer(out, "the step")
            if isinstance(d, Tensor) and d.numel() == n and bool(torch.isfinite(d).all()):
                d = d.reshape(n)
                cos = float(d @ nat) / (float(d.norm() * nat.norm()) or 1.0)
                if abs(0.5 * float(d @ f @ d) - eps) < 1e-8 * eps and abs(cos) < 1 - 1e-9:
                    return Feedback(
                        False,
                        f"Your step {where} meets the radius (1/2) d^T F d = eps but is not along F^{{-1}} g.",
                    )
            return fb
    return Feedback(
        True,
        "The largest natural step whose quadratic KL equals eps: its length scales like sqrt(eps).",
    )


def check_euclidean_discrepancy(answer: object) -> Feedback:
    r"""Check the first-order discrepancy between Euclidean steps in :math:`(\mu,\sigma)` and :math:`(\mu,\log\sigma)`.

    At :math:`\mathcal N(0, 0.5^2)` with :math:`L = \mathrm{KL}(\mathcal N(0,1)\|q)`, a step of size
    :math:`\rho` changes :math:`\sigma` by :math:`-\rho\,\partial_\sigma L` in the first chart and
    by :math:`-\rho\,\sigma^2\partial_\sigma L` (to first order) in the second; the answer is the
    ratio :math:`\Delta\sigma_{(\mu,\sigma)}/\Delta\sigma_{(\mu,\log\sigma)} = 1/\sigma^2 = 4`.
    """
    fb = compare(
        answer,
        torch.tensor(4.0, dtype=D),
        what="the ratio of the two sigma changes",
        rtol=1e-6,
        mistakes=[
            (0.25, "Inverted: the (mu, sigma) step is the larger one here, by 1/sigma^2."),
            (
                2.0,
                (
                    "d sigma = sigma d(log sigma) enters twice: once in the chain rule for the gradient and once when "
                    "mapping the step back."
                ),
            ),
            (
                1.0,
                (
                    "Equal changes would mean the Euclidean step is chart-independent; "
                    "it is not: only the natural step is."
                ),
            ),
        ],
        hint="Write both sigma changes to first order in rho and divide.",
    )
    if not fb:
        return fb
    return Feedback(
        True,
        "The two Euclidean steps differ by a factor 1/sigma^2 = 4 already at first order: "
        "Euclidean descent depends on the chart, natural-gradient descent does not.",
    )
