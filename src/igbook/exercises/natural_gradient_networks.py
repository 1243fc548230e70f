r"""Self-checks for the chapter "Natural gradient for point estimation".

Each check takes the reader's answer, compares it with the reference at a stated tolerance on
several test points, and returns a :class:`~igbook.exercises.Feedback`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from igbook.exercises._core import Feedback, as_number, compare, need_function, run_reader
from igbook.fisher.likelihoods import BernoulliLikelihood

__all__ = [
    "check_gd_limit_learning_rate",
    "check_linear_regression_ggn",
    "check_minibatch_second_moment",
    "check_probit_output_fisher",
    "check_softmax_fisher_rank",
]

_POINTS = torch.tensor([-3.0, -1.2, -0.3, 0.0, 0.4, 1.7, 4.0], dtype=torch.float64)
D = torch.float64


def check_probit_output_fisher(answer: Callable[[Tensor], Tensor]) -> Feedback:
    r"""Check a function ``f -> Lambda(f)``, the output Fisher of the probit Bernoulli model.

    Reference: :math:`\Lambda(f) = \phi(f)^2/(\Phi(f)(1-\Phi(f)))`, evaluated at several
    scalars :math:`f` (passed one at a time as 0-d float64 tensors).
    """
    if (bad := need_function(answer, "f -> Lambda(f)")) is not None:
        return bad
    lik = BernoulliLikelihood("probit")
    normal = torch.distributions.Normal(torch.tensor(0.0, dtype=D), torch.tensor(1.0, dtype=D))
    for f in _POINTS:
        where = f"at f = {float(f):g}"
        got = run_reader(answer, f.clone(), where=where)
        if isinstance(got, Feedback):
            return got
        ref = lik.output_fisher(f.reshape(1, 1)).reshape(())
        pdf, cdf = normal.log_prob(f).exp(), normal.cdf(f)
        fb = compare(
            got,
            ref,
            what="Lambda(f)",
            rtol=1e-6,
            atol=1e-10,
            where=where,
            mistakes=[
                (
                    torch.sigmoid(f) * (1 - torch.sigmoid(f)),
                    "That is the logistic sigma(1 - sigma): the probit link is not canonical.",
                ),
                (
                    pdf / (cdf * (1 - cdf)),
                    "Square the density: Lambda = (dp/df)^2 / (p(1-p)) with dp/df = phi(f).",
                ),
                (
                    cdf * (1 - cdf),
                    (
                        "Phi(1 - Phi) is the Bernoulli variance in the mean parameter; chain it to f: "
                        "Lambda = (dp/df)^2 / (p(1-p))."
                    ),
                ),
            ],
            hint="The Fisher of Bernoulli(p) in p is 1/(p(1-p)); change coordinates to f with p = Phi(f).",
        )
        if not fb:
            return fb
    return Feedback(True, "Lambda(f) = phi(f)^2 / (Phi(f) (1 - Phi(f))) at all test points.")


def check_linear_regression_ggn(answer: Callable[[Tensor, float], Tensor]) -> Feedback:
    r"""Check a function ``(X, variance) -> G``, the GGN of a bias-free linear model with Gaussian noise.

    Reference (mean convention): :math:`G = X^\top X/(N\sigma^2)`, which is also the Fisher and
    the Hessian.
    """
    if (bad := need_function(answer, "(X, variance) -> G")) is not None:
        return bad
    g = torch.Generator().manual_seed(0)
    for n, d, var in ((5, 2, 1.0), (7, 3, 0.25), (4, 4, 3.0)):
        x = torch.randn(n, d, generator=g, dtype=torch.float64)
        where = f"for N={n}, D={d}, variance={var}"
        got = run_reader(answer, x.clone(), var, where=where)
        if isinstance(got, Feedback):
            return got
        ref = x.T @ x / (n * var)
        fb = compare(
            got,
            ref,
            what="G",
            rtol=1e-8,
            atol=1e-12,
            where=where,
            mistakes=[
                (
                    ref * n,
                    (
                        "Yours is N times too large: a sum over data points; "
                        "igbook averages over data points (the mean loss)."
                    ),
                ),
                (ref * var, "Divide by the noise variance sigma^2."),
                (ref * var**2, "Divide by the noise variance sigma^2 (not multiply)."),
            ],
            hint="G = (1/N) sum_n J_n^T Lambda J_n with J_n = x_n^T and Lambda = 1/sigma^2.",
        )
        if not fb:
            return fb
    return Feedback(True, "G = X^T X / (N sigma^2) on every test case.")


def check_softmax_fisher_rank(answer: object, num_points: int, num_classes: int) -> Feedback:
    r"""Check the largest possible rank of the Fisher of a softmax network on ``num_points`` inputs.

    Reference: :math:`N(C-1)` (each :math:`\Lambda_n = \operatorname{diag}(p) - pp^\top` has rank
    :math:`C-1`), assuming more parameters than that.
    """
    val = as_number(answer, "the rank")
    if isinstance(val, Feedback):
        return val
    ref = num_points * (num_classes - 1)
    if val == ref:
        return Feedback(True, f"rank <= N (C - 1) = {ref}.")
    if val != int(val):
        return Feedback(False, "A rank is a whole number.")
    if val == num_points * num_classes:
        return Feedback(
            False,
            "Not N C: Lambda = diag(p) - p p^T annihilates the all-ones vector (shifting every logit changes nothing).",
        )
    if val == num_points:
        return Feedback(
            False,
            "That is the bound for the empirical Fisher (one gradient per point); "
            "the Fisher has C - 1 directions per point.",
        )
    if val == num_classes - 1 or val == num_classes:
        return Feedback(
            False,
            "That is the rank for one input point: the Fisher sums J_n^T Lambda_n J_n over all the points.",
        )
    return Feedback(
        False,
        f"Count the rank of J_n^T Lambda_n J_n for one point and add over the {num_points} points.",
    )


def check_minibatch_second_moment(answer: Callable[[Tensor, Tensor, int], Tensor]) -> Feedback:
    r"""Check ``(gbar, ef_diag, B) -> E[g_B^2]`` for minibatches of ``B`` points drawn with replacement.

    Reference: :math:`\bar g^2 + (\operatorname{diag}\widetilde F - \bar g^2)/B`, verified here
    against enumeration of all minibatches of a small random set of per-example gradients.
    """
    import itertools

    if (bad := need_function(answer, "(gbar, ef_diag, B) -> E[g_B^2]")) is not None:
        return bad
    g = torch.Generator().manual_seed(1)
    per_example = torch.randn(4, 3, generator=g, dtype=torch.float64)
    gbar, ef = per_example.mean(0), (per_example**2).mean(0)
    for b in (1, 2, 3):
        brute = torch.stack(
            [per_example[list(i)].mean(0) ** 2 for i in itertools.product(range(4), repeat=b)]
        ).mean(0)
        where = f"for B = {b}"
        got = run_reader(answer, gbar.clone(), ef.clone(), b, where=where)
        if isinstance(got, Feedback):
            return got
        fb = compare(
            got,
            brute,
            what="E[g_B^2]",
            rtol=1e-9,
            atol=1e-12,
            where=where,
            mistakes=[
                (
                    ef / b,
                    "You dropped the squared mean gradient: the variance is diag(EF) - gbar^2.",
                ),
                (
                    gbar**2 + ef / b,
                    "The variance of one example's gradient is diag(EF) - gbar^2, not diag(EF).",
                ),
                (
                    (ef - gbar**2) / b,
                    "That is only the variance of the minibatch mean: add its squared mean gbar^2.",
                ),
                (
                    gbar**2 + (ef - gbar**2) / b**2,
                    "The variance of a mean of B independent terms is (variance) / B, not / B^2.",
                ),
            ],
            hint="E[g_B^2] = (E[g_B])^2 + Var[g_B], entry by entry.",
        )
        if not fb:
            return fb
    return Feedback(
        True,
        "E[g_B^2] = gbar^2 + (diag EF - gbar^2) / B, as enumeration over all minibatches confirms.",
    )


def check_gd_limit_learning_rate(answer: Callable[[float, float], float]) -> Feedback:
    r"""Check ``(eta, damping) -> lr`` such that damped NGD with a huge damping mimics GD with step ``eta``.

    Reference: since :math:`(F+\lambda I)^{-1}g\to g/\lambda`, the learning rate is
    :math:`\eta\lambda`.
    """
    if (bad := need_function(answer, "(eta, damping) -> lr")) is not None:
        return bad
    for eta, lam in ((0.1, 1e3), (0.5, 1e6), (2.0, 10.0)):
        where = f"for eta={eta}, damping={lam}"
        got = run_reader(answer, eta, lam, where=where)
        if isinstance(got, Feedback):
            return got
        fb = compare(
            got,
            torch.tensor(eta * lam, dtype=D),
            what="lr",
            rtol=1e-9,
            where=where,
            mistakes=[
                (
                    eta / lam,
                    "The damped direction is about g / damping, so multiply, don't divide.",
                ),
                (
                    eta,
                    (
                        "With a large damping the natural-gradient direction shrinks to g / damping: "
                        "the learning rate must make up for it."
                    ),
                ),
                (lam, "The learning rate must also carry eta."),
            ],
            hint="For a huge damping, (F + damping I)^{-1} g is about g / damping.",
        )
        if not fb:
            return fb
    return Feedback(
        True, "lr = eta * damping: a heavily damped natural gradient is gradient descent."
    )
