"""Self-checks for the exercises of the chapter "Exponential families and mirror descent"."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.func import hessian

from igbook.exercises._core import Feedback, call_reader, compare
from igbook.families import Gamma, Gaussian, Poisson
from igbook.mirror import exponentiated_gradient_step

__all__ = [
    "check_bernoulli_natural_gradient_step",
    "check_gaussian_hessian_of_log_partition",
    "check_gamma_fisher_natural",
    "check_poisson_bregman",
    "check_exponentiated_gradient_step",
]

D = torch.float64



def check_bernoulli_natural_gradient_step(step: Callable[[float, float, float], float]) -> Feedback:
    r"""Check ``step(p, dL_dp, rho)``: one natural-gradient step for Bernoulli(p), taken in the log-odds.

    The natural gradient in the natural parameter :math:`\eta = \log\frac p{1-p}` is the ordinary
    gradient in the mean parameter :math:`p`, so the step is
    :math:`\eta \leftarrow \eta - \rho\,\partial L/\partial p` and the answer is
    :math:`p^+ = \sigma(\operatorname{logit}p - \rho\,\partial L/\partial p)`.
    """
    if not callable(step):
        return Feedback(False, "Pass a function (p, dL_dp, rho) -> the new p.")
    for p in (0.05, 0.3, 0.5, 0.9):
        for g, rho in ((1.0, 0.5), (-2.5, 0.2), (4.0, 1.0)):
            out = call_reader(step, p, g, rho)
            if isinstance(out, Exception):
                return Feedback(False, f"Your function raised {out!r} at p={p}, dL/dp={g}, rho={rho}.")
            want = torch.sigmoid(torch.logit(torch.tensor(p, dtype=D)) - rho * g)
            fb = compare(out, want, what="the new p", where=f"at p={p}, dL/dp={g}, rho={rho}", rtol=1e-8)
            if not fb:
                try:
                    val = float(torch.as_tensor(out, dtype=D))
                except (TypeError, ValueError, RuntimeError):
                    return fb
                if abs(val - (p - rho * p * (1 - p) * g)) < 1e-9:
                    return Feedback(
                        False,
                        "You took the natural-gradient step in the coordinate p, "
                        "p - rho p(1-p) dL/dp. It agrees to first order in rho, but the exercise "
                        "asks for the step in the natural parameter eta = logit(p), where "
                        "F(eta)^{-1} dL/deta = dL/dp exactly.",
                    )
                if abs(val - float(torch.sigmoid(torch.logit(torch.tensor(p)) - rho * p * (1 - p) * g))) < 1e-7:
                    return Feedback(
                        False,
                        "You stepped along the Euclidean gradient of the log-odds, dL/deta = p(1-p) dL/dp. "
                        "Precondition it by F(eta)^{-1} = 1/(p(1-p)).",
                    )
                return fb
    return Feedback(
        True,
        "p+ = sigmoid(logit(p) - rho dL/dp): in natural coordinates the natural gradient is the "
        "plain gradient in the mean parameter p, and p stays in (0, 1) for every step size.",
    )


def check_gaussian_hessian_of_log_partition(fisher: Callable[[float, float], object]) -> Feedback:
    r"""Check ``fisher(eta1, eta2)``: the 2x2 Hessian of the Gaussian log-partition in natural coordinates.

    :math:`A(\eta) = -\eta_1^2/(4\eta_2) - \tfrac12\log(-2\eta_2)`; its Hessian is
    :math:`\mathrm{Cov}[(x, x^2)]`.
    """
    if not callable(fisher):
        return Feedback(False, "Pass a function (eta1, eta2) -> 2x2 matrix.")
    for mu, sigma in ((0.0, 1.0), (1.5, 0.5), (-2.0, 3.0)):
        eta = Gaussian(mu, sigma).natural
        out = call_reader(fisher, float(eta[0]), float(eta[1]))
        if isinstance(out, Exception):
            return Feedback(False, f"Your function raised {out!r} at eta=({float(eta[0]):.4g}, {float(eta[1]):.4g}).")
        want = hessian(Gaussian.log_partition)(eta)
        fb = compare(out, want, what="the Hessian of A", where=f"at mu={mu}, sigma={sigma}", rtol=1e-8, atol=1e-10)
        if not fb:
            try:
                a = torch.as_tensor(out, dtype=D).reshape(2, 2)
                if abs(float(a[0, 1]) - float(a[1, 0])) > 1e-9:
                    return Feedback(False, "Your matrix is not symmetric: a Hessian is.")
            except (TypeError, ValueError, RuntimeError):
                pass
            return fb
    return Feedback(
        True,
        "The Hessian of A is [[s2, 2 m s2], [2 m s2, 4 m^2 s2 + 2 s2^2]] = Cov[(x, x^2)]: the Fisher "
        "matrix in natural coordinates, with no expectation left to compute.",
    )


def check_gamma_fisher_natural(fisher: Callable[[float, float], object]) -> Feedback:
    r"""Check ``fisher(alpha, beta)``: the Fisher matrix of Gamma(alpha, rate beta) in :math:`\eta = (\alpha-1, -\beta)`."""
    if not callable(fisher):
        return Feedback(False, "Pass a function (alpha, beta) -> 2x2 matrix.")
    for a, b in ((0.5, 1.0), (3.0, 2.0), (10.0, 0.3)):
        out = call_reader(fisher, a, b)
        if isinstance(out, Exception):
            return Feedback(False, f"Your function raised {out!r} at alpha={a}, beta={b}.")
        want = Gamma(a, b).fisher_natural()
        fb = compare(out, want, what="the Fisher matrix", where=f"at alpha={a}, beta={b}", rtol=1e-6, atol=1e-9)
        if not fb:
            try:
                m = torch.as_tensor(out, dtype=D).reshape(2, 2)
                if abs(float(m[0, 1]) + 1 / b) < 1e-9:
                    return Feedback(False, "Off-diagonal sign: in eta = (alpha - 1, -beta) the entry is +1/beta (Cov(log x, x) > 0); -1/beta is the value in (alpha, beta).")
            except (TypeError, ValueError, RuntimeError):
                pass
            return fb
    return Feedback(True, "F(eta) = [[trigamma(alpha), 1/beta], [1/beta, alpha/beta^2]] = Cov[(log x, x)].")


def check_poisson_bregman(bregman: Callable[[float, float], float]) -> Feedback:
    r"""Check ``bregman(rate_p, rate_q)``: :math:`D_{A^*}(\mu_p\|\mu_q)` for the Poisson family, which is :math:`\mathrm{KL}(p\|q)`."""
    if not callable(bregman):
        return Feedback(False, "Pass a function (rate_p, rate_q) -> divergence.")
    for rp, rq in ((1.0, 2.0), (3.5, 0.7), (2.0, 2.0), (0.1, 5.0)):
        out = call_reader(bregman, rp, rq)
        if isinstance(out, Exception):
            return Feedback(False, f"Your function raised {out!r} at rates ({rp}, {rq}).")
        want = Poisson(rp).kl(Poisson(rq))
        fb = compare(out, want, what="D_{A*}", where=f"at rates ({rp}, {rq})", rtol=1e-8, atol=1e-12)
        if not fb:
            try:
                val = float(torch.as_tensor(out, dtype=D))
            except (TypeError, ValueError, RuntimeError):
                return fb
            if abs(val - float(Poisson(rq).kl(Poisson(rp)))) < 1e-9:
                return Feedback(False, "You computed KL(q || p): the Bregman divergence of A* keeps the order of its arguments.")
            return fb
    return Feedback(True, "D_{A*}(mu_p || mu_q) = mu_p log(mu_p/mu_q) - mu_p + mu_q = KL(Poisson(mu_p) || Poisson(mu_q)).")


def check_exponentiated_gradient_step(step: Callable[[torch.Tensor, torch.Tensor, float], object]) -> Feedback:
    r"""Check ``step(x, g, lr)``: one exponentiated-gradient step on the probability simplex."""
    if not callable(step):
        return Feedback(False, "Pass a function (x, g, lr) -> new point of the simplex.")
    cases = [
        (torch.tensor([0.2, 0.5, 0.3], dtype=D), torch.tensor([1.0, -0.5, 0.3], dtype=D), 0.7),
        (torch.tensor([0.25, 0.25, 0.25, 0.25], dtype=D), torch.tensor([3.0, 0.0, -1.0, 2.0], dtype=D), 0.1),
        (torch.tensor([0.9, 0.05, 0.05], dtype=D), torch.tensor([100.0, 0.0, 0.0], dtype=D), 5.0),
    ]
    for x, g, lr in cases:
        out = call_reader(step, x.clone(), g.clone(), lr)
        if isinstance(out, Exception):
            return Feedback(False, f"Your function raised {out!r} at x={x.tolist()}, g={g.tolist()}, lr={lr}.")
        want = exponentiated_gradient_step(x, g, lr)
        fb = compare(out, want, what="the new point", where=f"at x={x.tolist()}, g={g.tolist()}, lr={lr}", rtol=1e-8, atol=1e-12)
        if not fb:
            try:
                a = torch.as_tensor(out, dtype=D)
                if a.shape == x.shape and abs(float(a.sum()) - 1) > 1e-6:
                    return Feedback(False, "Your point does not sum to 1: normalize x * exp(-lr g).")
                if not bool(torch.isfinite(a).all()) or (lr == 5.0 and math.isnan(float(a.sum()))):
                    return Feedback(False, "Overflow: subtract max(-lr g) before exponentiating (or work with log x).")
            except (TypeError, ValueError, RuntimeError):
                pass
            return fb
    return Feedback(True, "x_k <- x_k exp(-lr g_k) / Z: mirror descent with the negative entropy, and natural-gradient descent for a Categorical.")
