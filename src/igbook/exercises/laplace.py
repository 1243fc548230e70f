r"""Self-checks for the exercises of the Laplace chapter."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from igbook.exercises._core import Feedback, compare
from igbook.laplace import fit_laplace, log_marginal_likelihood

__all__ = [
    "check_beta_bernoulli_laplace",
    "check_blr_evidence",
    "check_probit",
    "check_effective_parameters",
]

D = torch.float64


def check_beta_bernoulli_laplace(
    mean: float, variance: float, *, a: float, b: float, k: int, n: int
) -> Feedback:
    r"""Laplace approximation of the Beta(:math:`a+k`, :math:`b+n-k`) posterior of a coin.

    Expected: the mode :math:`m = \frac{a+k-1}{a+b+n-2}` and the inverse negative second
    derivative of the log density there, :math:`\frac{m(1-m)}{a+b+n-2}`.
    """
    s = a + b + n - 2
    m = (a + k - 1) / s
    post_mean = (a + k) / (a + b + n)
    fb = compare(
        mean,
        torch.tensor(m, dtype=D),
        what="the Laplace mean",
        rtol=1e-8,
        mistakes=[
            (post_mean, "That is the posterior mean; Laplace centres at the mode (the MAP)."),
            (k / n, "That is the maximum-likelihood estimate: the prior's a and b count too."),
        ],
        hint="Maximize (a + k - 1) log p + (b + n - k - 1) log(1 - p).",
    )
    if not fb:
        return fb
    exact_var = (a + k) * (b + n - k) / ((a + b + n) ** 2 * (a + b + n + 1))
    fv = compare(
        variance,
        torch.tensor(m * (1 - m) / s, dtype=D),
        what="the Laplace variance",
        rtol=1e-8,
        mistakes=[
            (exact_var, "That is the exact Beta variance; Laplace uses the curvature at the mode."),
            (s / (m * (1 - m)), "That is the precision; the variance is its inverse."),
            (m * (1 - m) / n, "Count the prior's pseudo-observations: divide by a + b + n - 2."),
        ],
        hint="The variance is minus the inverse second derivative of the log density at the mode.",
    )
    if not fv:
        return fv
    return Feedback(
        True,
        f"Laplace N({m:.4g}, {m * (1 - m) / s:.3g}) against the exact variance {exact_var:.3g}: "
        "they agree as n grows.",
    )


def _blr_posterior(x: Sequence[float], y: Sequence[float], delta: float, sigma: float):
    xt = torch.as_tensor(x, dtype=D).reshape(-1, 1)
    yt = torch.as_tensor(y, dtype=D).reshape(-1, 1)
    prec = float((xt**2).sum()) / sigma**2 + delta
    w = float((xt * yt).sum()) / sigma**2 / prec
    model = nn.Linear(1, 1, bias=False).to(D)
    with torch.no_grad():
        model.weight.fill_(w)
    post = fit_laplace(
        model, xt, yt, "gaussian", prior_precision=delta, sigma_noise=sigma, structure="full"
    )
    return post, xt, yt, w


def check_blr_evidence(
    log_evidence: float, *, x: Sequence[float], y: Sequence[float], delta: float, sigma: float
) -> Feedback:
    r"""The log evidence of :math:`y_n = w x_n + \varepsilon_n`.

    Prior :math:`w\sim\mathcal N(0, 1/\delta)`, noise :math:`\varepsilon_n\sim\mathcal N(0,\sigma^2)`.

    Laplace is exact here; the reference is :func:`igbook.laplace.log_marginal_likelihood`.
    """
    post, xt, yt, w = _blr_posterior(x, y, delta, sigma)
    want = float(log_marginal_likelihood(post))
    n = xt.shape[0]
    fit = float(
        -((yt - w * xt) ** 2).sum() / (2 * sigma**2) - 0.5 * n * math.log(2 * math.pi * sigma**2)
    )
    fb = compare(
        log_evidence,
        torch.tensor(want, dtype=D),
        what="the log evidence",
        rtol=1e-8,
        mistakes=[
            (fit, "That is the log-likelihood at the MAP alone: add the log Occam factor."),
            (
                want + 0.5 * delta * w**2,
                "The Occam factor also has -delta w*^2 / 2 (the prior's penalty at the MAP).",
            ),
        ],
        hint="Either integrate: y ~ N(0, sigma^2 I + x x^T / delta); or use Laplace (exact here).",
    )
    if not fb:
        return fb
    return Feedback(True, f"Data fit {fit:.4g} plus log Occam factor {want - fit:.4g}.")


def check_probit(prob: float, *, mean: float, variance: float) -> Feedback:
    r""":math:`\int\mathrm{sigmoid}(f)\,\mathcal N(f;m,v)\,df` by the probit approximation.

    Expected: :math:`\mathrm{sigmoid}(m/\sqrt{1+\pi v/8})`.
    """
    want = 1 / (1 + math.exp(-mean / math.sqrt(1 + math.pi * variance / 8)))
    fb = compare(
        prob,
        torch.tensor(want, dtype=D),
        what="the predictive probability",
        rtol=1e-8,
        mistakes=[
            (1 / (1 + math.exp(-mean)), "That ignores the variance: it is the MAP's probability."),
            (
                1 / (1 + math.exp(-mean / math.sqrt(1 + math.pi * math.sqrt(variance) / 8))),
                "The formula uses the variance v, not the standard deviation.",
            ),
            (
                1 / (1 + math.exp(-mean / (1 + math.pi * variance / 8))),
                "Take the square root of 1 + pi v / 8.",
            ),
        ],
        hint="Match the sigmoid to Phi(lambda f) with lambda^2 = pi / 8, integrate, map back.",
    )
    if not fb:
        return fb
    return Feedback(
        True, f"{want:.4f}: pulled towards 1/2 from sigmoid(m) = {1 / (1 + math.exp(-mean)):.4f}."
    )


def check_effective_parameters(
    gamma: float, *, eigenvalues: Sequence[float], delta: float
) -> Feedback:
    r"""MacKay's effective number of parameters :math:`\gamma = \sum_i \lambda_i/(\lambda_i+\delta)`."""
    lam = torch.as_tensor(eigenvalues, dtype=D)
    want = float((lam / (lam + delta)).sum())
    fb = compare(
        gamma,
        torch.tensor(want, dtype=D),
        what="gamma",
        rtol=1e-8,
        mistakes=[
            (float((delta / (lam + delta)).sum()), "That counts the prior-dominated directions."),
            (
                float(lam.numel()),
                "Not every direction counts fully: weigh each by lambda/(lambda+delta).",
            ),
        ],
        hint="Each eigen-direction counts by the fraction of its posterior precision that the data supply.",
    )
    if not fb:
        return fb
    return Feedback(
        True, f"gamma = {want:.4g} of {lam.numel()} parameters are determined by the data."
    )
