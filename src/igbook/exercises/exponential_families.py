"""Self-checks for the exercises of the chapter "Exponential families and mirror descent"."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.func import hessian

from igbook.exercises._core import Feedback, as_answer, compare, need_function, run_reader
from igbook.families import Gamma, Gaussian, Poisson
from igbook.mirror import exponentiated_gradient_step

__all__ = [
    "check_bernoulli_natural_gradient_step",
    "check_exponentiated_gradient_step",
    "check_gamma_fisher_natural",
    "check_gaussian_hessian_of_log_partition",
    "check_poisson_bregman",
]

D = torch.float64


def check_bernoulli_natural_gradient_step(step: Callable[[float, float, float], float]) -> Feedback:
    r"""Check ``step(p, dL_dp, rho)``: one natural-gradient step for Bernoulli(p), taken in the log-odds.

    The natural gradient in the natural parameter :math:`\eta = \log\frac p{1-p}` is the ordinary
    gradient in the mean parameter :math:`p`, so the step is
    :math:`\eta \leftarrow \eta - \rho\,\partial L/\partial p` and the answer is
    :math:`p^+ = \sigma(\operatorname{logit}p - \rho\,\partial L/\partial p)`.
    """
    if (bad := need_function(step, "(p, dL_dp, rho) -> the new p")) is not None:
        return bad
    for p in (0.05, 0.3, 0.5, 0.9):
        for g, rho in ((1.0, 0.5), (-2.5, 0.2), (4.0, 1.0)):
            where = f"at p={p}, dL/dp={g}, rho={rho}"
            out = run_reader(step, p, g, rho, where=where)
            if isinstance(out, Feedback):
                return out
            eta = torch.logit(torch.tensor(p, dtype=D))
            want = torch.sigmoid(eta - rho * g)
            fb = compare(
                out,
                want,
                what="the new p",
                where=where,
                rtol=1e-8,
                mistakes=[
                    (
                        p - rho * p * (1 - p) * g,
                        (
                            "You took the natural-gradient step in the coordinate p, "
                            "p - rho p(1-p) dL/dp. It agrees to first order in rho, but the exercise "
                            "asks for the step in the natural parameter eta = logit(p), where "
                            "F(eta)^{-1} dL/deta = dL/dp exactly."
                        ),
                    ),
                    (
                        torch.sigmoid(eta - rho * p * (1 - p) * g),
                        (
                            "You stepped along the Euclidean gradient of the log-odds, "
                            "dL/deta = p(1-p) dL/dp. Precondition it by F(eta)^{-1} = 1/(p(1-p))."
                        ),
                    ),
                    (
                        torch.sigmoid(eta + rho * g),
                        "Wrong sign: a descent step subtracts rho times the natural gradient.",
                    ),
                    (
                        eta - rho * g,
                        "You returned the new log-odds eta: map it back to p with the sigmoid.",
                    ),
                    (
                        p - rho * g,
                        "That is a Euclidean step in p; the exercise takes the step in eta = logit(p).",
                    ),
                ],
                hint="Write the step in eta = logit(p), where the natural gradient is dL/dp, "
                "then map back with the sigmoid.",
            )
            if not fb:
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
    if (bad := need_function(fisher, "(eta1, eta2) -> 2x2 matrix")) is not None:
        return bad
    for mu, sigma in ((0.0, 1.0), (1.5, 0.5), (-2.0, 3.0)):
        eta = Gaussian(mu, sigma).natural
        where = f"at mu={mu}, sigma={sigma}"
        out = run_reader(
            fisher,
            float(eta[0]),
            float(eta[1]),
            where=f"at eta=({float(eta[0]):.4g}, {float(eta[1]):.4g})",
        )
        if isinstance(out, Feedback):
            return out
        want = hessian(Gaussian.log_partition)(eta)
        s2 = sigma**2
        fb = compare(
            out,
            want,
            what="the Hessian of A",
            where=where,
            rtol=1e-8,
            atol=1e-10,
            mistakes=[
                (
                    torch.tensor([[1 / s2, 0.0], [0.0, 1 / (2 * s2**2)]], dtype=D),
                    "That is the Fisher in (mu, sigma^2); in eta the Fisher is the Hessian of A, Cov[(x, x^2)].",
                ),
                (
                    torch.tensor([[s2, mu * s2], [mu * s2, 4 * mu**2 * s2 + 2 * s2**2]], dtype=D),
                    "The off-diagonal entry Cov(x, x^2) = 2 mu sigma^2: a factor 2 from x^2 = (mu + (x - mu))^2.",
                ),
            ],
            hint="Differentiate A(eta) = -eta1^2/(4 eta2) - log(-2 eta2)/2 twice, or compute Cov[(x, x^2)].",
        )
        if not fb:
            a = as_answer(out, "the Hessian")
            if (
                isinstance(a, torch.Tensor)
                and a.numel() == 4
                and bool(torch.isfinite(a).all())
                and abs(float(a.reshape(2, 2)[0, 1] - a.reshape(2, 2)[1, 0])) > 1e-9
            ):
                return Feedback(False, f"Your matrix {where} is not symmetric: a Hessian is.")
            return fb
    return Feedback(
        True,
        "The Hessian of A is [[s2, 2 m s2], [2 m s2, 4 m^2 s2 + 2 s2^2]] = Cov[(x, x^2)]: the Fisher "
        "matrix in natural coordinates, with no expectation left to compute.",
    )


def check_gamma_fisher_natural(fisher: Callable[[float, float], object]) -> Feedback:
    r"""Check ``fisher(alpha, beta)``: the Fisher matrix of Gamma(alpha, rate beta) in
    :math:`\eta = (\alpha-1, -\beta)`."""
    if (bad := need_function(fisher, "(alpha, beta) -> 2x2 matrix")) is not None:
        return bad
    for a, b in ((0.5, 1.0), (3.0, 2.0), (10.0, 0.3)):
        where = f"at alpha={a}, beta={b}"
        out = run_reader(fisher, a, b, where=where)
        if isinstance(out, Feedback):
            return out
        want = Gamma(a, b).fisher_natural()
        tri = float(torch.polygamma(1, torch.tensor(a, dtype=D)))
        dig = float(torch.digamma(torch.tensor(a, dtype=D)))
        fb = compare(
            out,
            want,
            what="the Fisher matrix",
            where=where,
            rtol=1e-6,
            atol=1e-9,
            mistakes=[
                (
                    [[tri, -1 / b], [-1 / b, a / b**2]],
                    (
                        "Off-diagonal sign: in eta = (alpha - 1, -beta) the entry is +1/beta "
                        "(Cov(log x, x) > 0); -1/beta is the value in (alpha, beta)."
                    ),
                ),
                (
                    [[dig, 1 / b], [1 / b, a / b**2]],
                    "The (1,1) entry is Var(log x) = trigamma(alpha); digamma(alpha) - log beta is its mean.",
                ),
                (
                    [[tri, 1 / b], [1 / b, a / b]],
                    "Var(x) = alpha/beta^2 for a rate beta: check the power of beta.",
                ),
            ],
            hint="F(eta) = Hessian of A(eta) = Cov[(log x, x)] for x ~ Gamma(alpha, rate beta).",
        )
        if not fb:
            return fb
    return Feedback(
        True, "F(eta) = [[trigamma(alpha), 1/beta], [1/beta, alpha/beta^2]] = Cov[(log x, x)]."
    )


def check_poisson_bregman(bregman: Callable[[float, float], float]) -> Feedback:
    r"""Check ``bregman(rate_p, rate_q)``: :math:`D_{A^*}(\mu_p\|\mu_q)` for the Poisson family, which is
    :math:`\mathrm{KL}(p\|q)`."""
    if (bad := need_function(bregman, "(rate_p, rate_q) -> divergence")) is not None:
        return bad
    for rp, rq in ((1.0, 2.0), (3.5, 0.7), (2.0, 2.0), (0.1, 5.0)):
        where = f"at rates ({rp}, {rq})"
        out = run_reader(bregman, rp, rq, where=where)
        if isinstance(out, Feedback):
            return out
        want = Poisson(rp).kl(Poisson(rq))
        fb = compare(
            out,
            want,
            what="D_{A*}",
            where=where,
            rtol=1e-8,
            atol=1e-12,
            mistakes=[
                (
                    Poisson(rq).kl(Poisson(rp)),
                    "You computed KL(q || p): the Bregman divergence of A* keeps the order of its arguments.",
                ),
                (
                    rp * math.log(rp / rq),
                    (
                        "Missing the linear terms -mu_p + mu_q: D(x||y) = A*(x) - A*(y) - A*'(y)(x - y) with "
                        "A*(mu) = mu log mu - mu."
                    ),
                ),
            ],
            hint="D_{A*}(x || y) = A*(x) - A*(y) - A*'(y)(x - y) with the convex conjugate A*(mu) = mu log mu - mu.",
        )
        if not fb:
            return fb
    return Feedback(
        True,
        "D_{A*}(mu_p || mu_q) = mu_p log(mu_p/mu_q) - mu_p + mu_q = KL(Poisson(mu_p) || Poisson(mu_q)).",
    )


def check_exponentiated_gradient_step(
    step: Callable[[torch.Tensor, torch.Tensor, float], object],
) -> Feedback:
    r"""Check ``step(x, g, lr)``: one exponentiated-gradient step on the probability simplex."""
    if (bad := need_function(step, "(x, g, lr) -> new point of the simplex")) is not None:
        return bad
    cases = [
        (torch.tensor([0.2, 0.5, 0.3], dtype=D), torch.tensor([1.0, -0.5, 0.3], dtype=D), 0.7),
        (
            torch.tensor([0.25, 0.25, 0.25, 0.25], dtype=D),
            torch.tensor([3.0, 0.0, -1.0, 2.0], dtype=D),
            0.1,
        ),
        (torch.tensor([0.9, 0.05, 0.05], dtype=D), torch.tensor([100.0, 0.0, 0.0], dtype=D), 5.0),
    ]
    for x, g, lr in cases:
        where = f"at x={x.tolist()}, g={g.tolist()}, lr={lr}"
        out = run_reader(step, x.clone(), g.clone(), lr, where=where)
        if isinstance(out, Feedback):
            return out
        a = torch.as_tensor(out, dtype=D) if isinstance(out, torch.Tensor) else None
        if a is not None and a.shape == x.shape and not bool(torch.isfinite(a).all()):
            return Feedback(
                False,
                f"Overflow {where}: subtract max(-lr g) before exponentiating (or work with log x).",
            )
        want = exponentiated_gradient_step(x, g, lr)
        unnorm = x * torch.exp(-lr * g)
        fb = compare(
            out,
            want,
            what="the new point",
            where=where,
            rtol=1e-8,
            atol=1e-12,
            mistakes=[
                (unnorm, "Your point does not sum to 1: normalize x * exp(-lr g)."),
                (exponentiated_gradient_step(x, -g, lr), "Wrong sign: descend, with exp(-lr g)."),
                (
                    x * (1 - lr * g),
                    "That is the first-order (linearized) update: the mirror step multiplies by exp(-lr g).",
                ),
                (
                    torch.softmax(-lr * g, -1),
                    "The new point forgets x: multiply x by exp(-lr g), then normalize.",
                ),
            ],
            hint="Mirror descent with the negative entropy: x_k <- x_k exp(-lr g_k), then divide by the sum.",
        )
        if not fb:
            return fb
    return Feedback(
        True,
        "x_k <- x_k exp(-lr g_k) / Z: mirror descent with the negative entropy, "
        "and natural-gradient descent for a Categorical.",
    )
