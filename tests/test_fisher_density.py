"""Fisher information of log-densities, and the metric as a tensor."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch.func import jacrev

from igbook.families import Bernoulli, Gaussian, Poisson
from igbook.fisher import (
    expected_negative_hessian,
    fisher_from_scores,
    fisher_monte_carlo,
    kl_quadratic_form,
    pullback_metric,
    reparameterized_fisher,
    score,
    score_covariance,
)

D = torch.float64


def gauss_log_sigma(phi: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """N(x | mu, exp(s)^2) in coordinates phi = (mu, s = log sigma)."""
    return Gaussian.log_prob_params(torch.stack([phi[0], torch.exp(phi[1])]), x)


def test_score_has_zero_mean_exactly_on_finite_support() -> None:
    b = Bernoulli(0.3)
    s = score(Bernoulli.log_prob_params, b.params, b.support())
    w = torch.exp(b.log_prob(b.support()))
    torch.testing.assert_close((w[:, None] * s).sum(0), torch.zeros(1, dtype=D), rtol=0, atol=1e-14)


def test_score_has_zero_mean_in_monte_carlo() -> None:
    g = Gaussian(0.5, 2.0)
    x = g.sample(200_000, seed=0)
    s = score(Gaussian.log_prob_params, g.params, x)
    se = s.std(0) / math.sqrt(len(x))
    assert bool((s.mean(0).abs() < 5 * se).all())


def test_monte_carlo_fisher_standard_error_covers_the_truth() -> None:
    g = Gaussian(-1.0, 0.7)
    est, se = fisher_monte_carlo(
        Gaussian.log_prob_params,
        g.params,
        lambda n, gen: g.sample(n, generator=gen),
        50_000,
        seed=3,
    )
    assert bool(((est - g.fisher()).abs() <= 5 * se + 1e-12).all())
    est2, _ = fisher_monte_carlo(
        Gaussian.log_prob_params,
        g.params,
        lambda n, gen: g.sample(n, generator=gen),
        50_000,
        seed=3,
    )
    torch.testing.assert_close(est, est2, rtol=0, atol=0)


def test_monte_carlo_error_shrinks_like_one_over_sqrt_n() -> None:
    g = Gaussian(0.0, 1.0)
    errs = []
    for n in (1_000, 100_000):
        e = [
            float(
                (
                    fisher_monte_carlo(
                        Gaussian.log_prob_params,
                        g.params,
                        lambda k, gen: g.sample(k, generator=gen),
                        n,
                        seed=s,
                    )[0]
                    - g.fisher()
                ).norm()
            )
            for s in range(8)
        ]
        errs.append(sum(e) / len(e))
    assert 4 < errs[0] / errs[1] < 25  # sqrt(100) = 10


def test_fisher_transforms_as_a_tensor() -> None:
    """Fisher in (mu, log sigma) equals J^T F J and equals the direct score covariance there."""
    phi = torch.tensor([0.3, math.log(1.7)], dtype=D)
    to_theta = lambda p: torch.stack([p[0], torch.exp(p[1])])  # noqa: E731
    f_phi = reparameterized_fisher(lambda th: Gaussian.from_params(th).fisher(), to_theta, phi)
    torch.testing.assert_close(
        f_phi, torch.diag(torch.tensor([1 / 1.7**2, 2.0], dtype=D)), rtol=1e-12, atol=1e-12
    )
    # exact: the expected negative Hessian in phi, using E[(x-mu)^2] = sigma^2, by Gauss-Hermite quadrature
    nodes, weights = _gauss_hermite(40)
    xs = 0.3 + 1.7 * math.sqrt(2) * nodes
    w = weights / math.sqrt(math.pi)
    torch.testing.assert_close(
        expected_negative_hessian(gauss_log_sigma, phi, xs, w), f_phi, rtol=1e-10, atol=1e-12
    )
    torch.testing.assert_close(
        score_covariance(gauss_log_sigma, phi, xs, w), f_phi, rtol=1e-10, atol=1e-12
    )


def _gauss_hermite(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    import numpy as np

    x, w = np.polynomial.hermite.hermgauss(n)
    return torch.tensor(x, dtype=D), torch.tensor(w, dtype=D)


def test_pullback_composes() -> None:
    torch.manual_seed(0)
    f = torch.randn(3, 3, dtype=D)
    f = f @ f.T + torch.eye(3, dtype=D)
    j1, j2 = torch.randn(3, 3, dtype=D), torch.randn(3, 2, dtype=D)
    torch.testing.assert_close(
        pullback_metric(pullback_metric(f, j1), j2), pullback_metric(f, j1 @ j2)
    )


def test_poisson_fisher_in_sqrt_coordinates_is_constant() -> None:
    """In r = sqrt(lambda) the Poisson metric is 4 dr^2: flat, hence d_FR = 2|sqrt l1 - sqrt l2|."""
    for lam in (0.5, 3.0, 40.0):
        r = torch.tensor([math.sqrt(lam)], dtype=D)
        f = reparameterized_fisher(lambda th: Poisson.from_params(th).fisher(), lambda rr: rr**2, r)
        torch.testing.assert_close(f, torch.tensor([[4.0]], dtype=D), rtol=1e-12, atol=1e-12)


def test_kl_quadratic_form_batches() -> None:
    f = torch.tensor([[2.0, 0.0], [0.0, 8.0]], dtype=D)
    d = torch.tensor([[1.0, 0.0], [0.0, 0.5]], dtype=D)
    torch.testing.assert_close(kl_quadratic_form(f, d), torch.tensor([1.0, 1.0], dtype=D))


def test_fisher_from_scores_weights() -> None:
    s = torch.tensor([[1.0], [-1.0]], dtype=D)
    torch.testing.assert_close(
        fisher_from_scores(s, torch.tensor([0.25, 0.75], dtype=D)), torch.tensor([[1.0]], dtype=D)
    )


BAD = [
    (lambda: score(Gaussian.log_prob_params, torch.tensor([[0.0, 1.0]]), torch.zeros(3)), "theta"),
    (
        lambda: score(Gaussian.log_prob_params, torch.tensor([float("nan"), 1.0]), torch.zeros(3)),
        "theta",
    ),
    (
        lambda: score_covariance(
            Gaussian.log_prob_params, torch.tensor([0.0, 1.0]), torch.tensor(1.0)
        ),
        "x",
    ),
    (
        lambda: score_covariance(
            Bernoulli.log_prob_params,
            torch.tensor([0.3]),
            torch.tensor([0.0, 1.0]),
            torch.tensor([0.5, 0.6]),
        ),
        "weights",
    ),
    (
        lambda: score_covariance(
            Bernoulli.log_prob_params,
            torch.tensor([0.3]),
            torch.tensor([0.0, 1.0]),
            torch.tensor([0.5]),
        ),
        "weights",
    ),
    (
        lambda: score_covariance(
            Bernoulli.log_prob_params,
            torch.tensor([0.3]),
            torch.tensor([0.0, 1.0]),
            torch.tensor([1.5, -0.5]),
        ),
        "weights",
    ),
    (lambda: pullback_metric(torch.eye(2), torch.ones(3, 2)), "jacobian"),
    (lambda: pullback_metric(torch.ones(2, 3), torch.ones(3, 2)), "metric"),
    (lambda: kl_quadratic_form(torch.eye(2), torch.ones(3)), "delta"),
    (lambda: fisher_from_scores(torch.ones(3)), "scores"),
    (
        lambda: fisher_monte_carlo(
            Gaussian.log_prob_params, torch.tensor([0.0, 1.0]), lambda n, g: torch.zeros(n), 1
        ),
        "n",
    ),
]


@pytest.mark.parametrize(("call", "name"), BAD, ids=[f"{i}-{n}" for i, (_, n) in enumerate(BAD)])
def test_bad_input(call, name: str) -> None:  # type: ignore[no-untyped-def]
    # the name as a word of the message (a one-letter name must not match inside other words)
    with pytest.raises((ValueError, TypeError), match=rf"(?<![\w.]){re.escape(name)}(?!\w)"):
        call()


def test_reparameterized_fisher_matches_jacrev_by_hand() -> None:
    phi = torch.tensor([0.2, -0.4], dtype=D)
    to_theta = lambda p: torch.stack([p[0] * 2, torch.exp(p[1])])  # noqa: E731
    j = jacrev(to_theta)(phi)
    f = Gaussian.from_params(to_theta(phi)).fisher()
    torch.testing.assert_close(
        reparameterized_fisher(lambda th: Gaussian.from_params(th).fisher(), to_theta, phi),
        j.T @ f @ j,
    )
