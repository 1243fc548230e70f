r"""Self-checks for the chapter "Natural gradient for point estimation".

Each check takes the reader's answer, compares it with the reference at a stated tolerance on
several test points, and returns a :class:`~igbook.exercises.Feedback`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from igbook.exercises._core import Feedback, compare
from igbook.fisher.likelihoods import BernoulliLikelihood

__all__ = [
    "check_probit_output_fisher",
    "check_linear_regression_ggn",
    "check_softmax_fisher_rank",
    "check_minibatch_second_moment",
    "check_gd_limit_learning_rate",
]

_POINTS = torch.tensor([-3.0, -1.2, -0.3, 0.0, 0.4, 1.7, 4.0], dtype=torch.float64)


def _call(fn: Callable[..., object], *args: object) -> tuple[Tensor | None, str]:
    try:
        out = fn(*args)
    except Exception as exc:  # noqa: BLE001 - report any failure of the reader's code
        return None, f"calling your function raised {type(exc).__name__}: {exc}"
    try:
        return torch.as_tensor(out, dtype=torch.float64), ""
    except (TypeError, ValueError, RuntimeError):
        return None, f"your function should return a number or a tensor, got {type(out).__name__}"


def check_probit_output_fisher(answer: Callable[[Tensor], Tensor]) -> Feedback:
    r"""Check a function ``f -> Lambda(f)``, the output Fisher of the probit Bernoulli model.

    Reference: :math:`\Lambda(f) = \phi(f)^2/(\Phi(f)(1-\Phi(f)))`, evaluated at several
    scalars :math:`f` (passed one at a time as 0-d float64 tensors).
    """
    if not callable(answer):
        return Feedback(False, f"pass a function of f, got {type(answer).__name__}")
    lik = BernoulliLikelihood("probit")
    for f in _POINTS:
        got, err = _call(answer, f.clone())
        if got is None:
            return Feedback(False, err)
        ref = lik.output_fisher(f.reshape(1, 1)).reshape(())
        fb = compare(got.reshape(-1)[0] if got.numel() == 1 else got, ref, what="Lambda(f)", rtol=1e-6, atol=1e-10, where=f"at f = {float(f):g}")
        if not fb:
            hint = ""
            logistic = torch.sigmoid(f) * (1 - torch.sigmoid(f))
            if got.numel() == 1 and abs(float(got) - float(logistic)) < 1e-8:
                hint = " That is the logistic sigma(1 - sigma): the probit link is not canonical."
            return Feedback(False, fb.message + hint)
    return Feedback(True, "Lambda(f) = phi(f)^2 / (Phi(f) (1 - Phi(f))) at all test points.")


def check_linear_regression_ggn(answer: Callable[[Tensor, float], Tensor]) -> Feedback:
    r"""Check a function ``(X, variance) -> G``, the GGN of a bias-free linear model with Gaussian noise.

    Reference (mean convention): :math:`G = X^\top X/(N\sigma^2)`, which is also the Fisher and
    the Hessian.
    """
    if not callable(answer):
        return Feedback(False, f"pass a function of (X, variance), got {type(answer).__name__}")
    g = torch.Generator().manual_seed(0)
    for n, d, var in ((5, 2, 1.0), (7, 3, 0.25), (4, 4, 3.0)):
        x = torch.randn(n, d, generator=g, dtype=torch.float64)
        got, err = _call(answer, x.clone(), var)
        if got is None:
            return Feedback(False, err)
        ref = x.T @ x / (n * var)
        fb = compare(got, ref, what="G", rtol=1e-8, atol=1e-12, where=f"for N={n}, D={d}, variance={var}")
        if not fb:
            if got.shape == ref.shape and torch.allclose(got, ref * n, rtol=1e-8):
                return Feedback(False, fb.message + " Yours is N times too large: igbook averages over data points.")
            if got.shape == ref.shape and torch.allclose(got, ref * var, rtol=1e-8):
                return Feedback(False, fb.message + " Divide by the noise variance sigma^2.")
            return fb
    return Feedback(True, "G = X^T X / (N sigma^2) on every test case.")


def check_softmax_fisher_rank(answer: object, num_points: int, num_classes: int) -> Feedback:
    r"""Check the largest possible rank of the Fisher of a softmax network on ``num_points`` inputs.

    Reference: :math:`N(C-1)` (each :math:`\Lambda_n = \operatorname{diag}(p) - pp^\top` has rank
    :math:`C-1`), assuming more parameters than that.
    """
    try:
        val = float(answer)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return Feedback(False, f"the rank should be a number, got {type(answer).__name__}")
    ref = num_points * (num_classes - 1)
    if val == ref:
        return Feedback(True, f"rank <= N (C - 1) = {ref}.")
    if val == num_points * num_classes:
        return Feedback(False, "Not N C: Lambda = diag(p) - p p^T annihilates the all-ones vector (shifting every logit changes nothing).")
    if val == num_points:
        return Feedback(False, "That is the bound for the empirical Fisher (one gradient per point); the Fisher has C - 1 directions per point.")
    return Feedback(False, f"Count the rank of J_n^T Lambda_n J_n for one point and add over the {num_points} points.")


def check_minibatch_second_moment(answer: Callable[[Tensor, Tensor, int], Tensor]) -> Feedback:
    r"""Check ``(gbar, ef_diag, B) -> E[g_B^2]`` for minibatches of ``B`` points drawn with replacement.

    Reference: :math:`\bar g^2 + (\operatorname{diag}\widetilde F - \bar g^2)/B`, verified here
    against enumeration of all minibatches of a small random set of per-example gradients.
    """
    import itertools

    if not callable(answer):
        return Feedback(False, f"pass a function of (gbar, ef_diag, B), got {type(answer).__name__}")
    g = torch.Generator().manual_seed(1)
    per_example = torch.randn(4, 3, generator=g, dtype=torch.float64)
    gbar, ef = per_example.mean(0), (per_example**2).mean(0)
    for b in (1, 2, 3):
        brute = torch.stack([per_example[list(i)].mean(0) ** 2 for i in itertools.product(range(4), repeat=b)]).mean(0)
        got, err = _call(answer, gbar.clone(), ef.clone(), b)
        if got is None:
            return Feedback(False, err)
        fb = compare(got, brute, what="E[g_B^2]", rtol=1e-9, atol=1e-12, where=f"for B = {b}")
        if not fb:
            if got.shape == brute.shape and torch.allclose(got, ef / b, rtol=1e-9):
                return Feedback(False, fb.message + " You dropped the squared mean gradient: the variance is diag(EF) - gbar^2.")
            return fb
    return Feedback(True, "E[g_B^2] = gbar^2 + (diag EF - gbar^2) / B, as enumeration over all minibatches confirms.")


def check_gd_limit_learning_rate(answer: Callable[[float, float], float]) -> Feedback:
    r"""Check ``(eta, damping) -> lr`` such that damped NGD with a huge damping mimics GD with step ``eta``.

    Reference: since :math:`(F+\lambda I)^{-1}g\to g/\lambda`, the learning rate is
    :math:`\eta\lambda`.
    """
    if not callable(answer):
        return Feedback(False, f"pass a function of (eta, damping), got {type(answer).__name__}")
    for eta, lam in ((0.1, 1e3), (0.5, 1e6), (2.0, 10.0)):
        got, err = _call(answer, eta, lam)
        if got is None:
            return Feedback(False, err)
        fb = compare(got, torch.tensor(eta * lam, dtype=torch.float64), what="lr", rtol=1e-9, where=f"for eta={eta}, damping={lam}")
        if not fb:
            if got.numel() == 1 and math.isclose(float(got), eta / lam, rel_tol=1e-9):
                return Feedback(False, fb.message + " The damped direction is about g / damping, so multiply, don't divide.")
            return fb
    return Feedback(True, "lr = eta * damping: a heavily damped natural gradient is gradient descent.")
