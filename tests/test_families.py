"""Exponential families: closed forms against autograd, exact sums and Monte Carlo."""

from __future__ import annotations

import math
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import grad, hessian, jacrev

from igbook.families import (
    FAMILIES,
    Bernoulli,
    Categorical,
    Exponential,
    ExponentialFamily,
    Gaussian,
    MultivariateGaussian,
    Poisson,
)
from igbook.fisher import expected_negative_hessian, score_covariance

D = torch.float64


def examples() -> list[ExponentialFamily]:
    return [
        Bernoulli(0.3),
        Categorical(torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=D)),
        Gaussian(0.7, 1.3),
        MultivariateGaussian(
            torch.tensor([0.5, -1.0, 2.0], dtype=D),
            torch.tensor([[2.0, 0.3, 0.1], [0.3, 1.0, -0.2], [0.1, -0.2, 0.5]], dtype=D),
        ),
        Poisson(3.5),
        Exponential(1.7),
    ]


def perturbed(dist: ExponentialFamily) -> ExponentialFamily:
    """A second member of the same family, a finite distance away."""
    if isinstance(dist, Categorical):
        return Categorical(torch.tensor([0.25, 0.25, 0.2, 0.3], dtype=D))
    if isinstance(dist, MultivariateGaussian):
        return MultivariateGaussian(dist.mean_vector + 0.3, dist.cov + 0.2 * torch.eye(3, dtype=D))
    theta = dist.params.clone()
    return type(dist).from_params(theta * 1.2 + (0.1 if isinstance(dist, Gaussian) else 0.0))


IDS = [type(d).__name__ for d in examples()]


def test_every_family_has_an_example() -> None:
    assert {type(d) for d in examples()} == set(FAMILIES)


@pytest.mark.parametrize("dist", examples(), ids=IDS)
def test_fisher_natural_is_hessian_of_log_partition(dist: ExponentialFamily) -> None:
    h = hessian(type(dist).log_partition)(dist.natural)
    torch.testing.assert_close(h, dist.fisher_natural(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dist", examples(), ids=IDS)
def test_mean_is_gradient_of_log_partition(dist: ExponentialFamily) -> None:
    g = grad(type(dist).log_partition)(dist.natural)
    torch.testing.assert_close(g, dist.mean, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dist", examples(), ids=IDS)
def test_coordinate_round_trips(dist: ExponentialFamily) -> None:
    cls = type(dist)
    torch.testing.assert_close(
        cls.from_natural(dist.natural).params, dist.params, rtol=1e-10, atol=1e-12
    )
    torch.testing.assert_close(cls.from_mean(dist.mean).params, dist.params, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(
        cls.natural_from_mean(dist.mean), dist.natural, rtol=1e-9, atol=1e-11
    )


@pytest.mark.parametrize("dist", examples(), ids=IDS)
def test_fisher_usual_coordinates_is_pullback_of_natural(dist: ExponentialFamily) -> None:
    j = jacrev(type(dist).natural_from_params)(dist.params)
    torch.testing.assert_close(
        j.T @ dist.fisher_natural() @ j, dist.fisher(), rtol=1e-9, atol=1e-11
    )


@pytest.mark.parametrize("dist", examples(), ids=IDS)
def test_fisher_mean_is_inverse_and_hessian_of_conjugate(dist: ExponentialFamily) -> None:
    eye = torch.eye(dist.dim, dtype=D)
    torch.testing.assert_close(
        dist.fisher_mean() @ dist.fisher_natural(), eye, rtol=1e-9, atol=1e-9
    )
    h = hessian(type(dist).convex_conjugate)(dist.mean)
    torch.testing.assert_close(h, dist.fisher_mean(), rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("dist", examples(), ids=IDS)
def test_kl_closed_form_equals_bregman(dist: ExponentialFamily) -> None:
    other = perturbed(dist)
    kl = dist.kl(other)
    assert float(kl) > 0
    torch.testing.assert_close(kl, dist.kl_bregman(other), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(dist.kl(dist), torch.zeros((), dtype=D), rtol=0, atol=1e-12)


@pytest.mark.parametrize("dist", examples(), ids=IDS)
def test_kl_against_monte_carlo(dist: ExponentialFamily) -> None:
    other = perturbed(dist)
    x = dist.sample(200_000, seed=1)
    diff = dist.log_prob(x) - other.log_prob(x)
    est, se = diff.mean(), diff.std() / math.sqrt(x.shape[0])
    assert abs(float(est - dist.kl(other))) < 5 * float(se) + 1e-12


@pytest.mark.parametrize("dist", examples(), ids=IDS)
def test_fisher_equals_score_covariance_and_expected_negative_hessian(
    dist: ExponentialFamily,
) -> None:
    cls = type(dist)
    if dist.discrete:
        x = dist.support()
        w = torch.exp(dist.log_prob(x))
        torch.testing.assert_close(
            score_covariance(cls.log_prob_params, dist.params, x, w),
            dist.fisher(),
            rtol=1e-9,
            atol=1e-10,
        )
        torch.testing.assert_close(
            expected_negative_hessian(cls.log_prob_params, dist.params, x, w),
            dist.fisher(),
            rtol=1e-9,
            atol=1e-10,
        )
        torch.testing.assert_close(
            score_covariance(cls.log_prob_natural, dist.natural, x, w),
            dist.fisher_natural(),
            rtol=1e-9,
            atol=1e-10,
        )
    else:
        n = 100_000
        x = dist.sample(n, seed=2)
        est = score_covariance(cls.log_prob_params, dist.params, x)
        # entrywise standard error of the Monte Carlo mean of s s^T
        s = torch.func.vmap(grad(cls.log_prob_params), in_dims=(None, 0))(dist.params, x)
        se = (s.unsqueeze(2) * s.unsqueeze(1)).std(0) / math.sqrt(n)
        assert bool(((est - dist.fisher()).abs() <= 5 * se + 1e-12).all())
        # ... and as the expected negative Hessian in the usual coordinates (not constant there)
        h = torch.func.vmap(torch.func.hessian(cls.log_prob_params), in_dims=(None, 0))(
            dist.params, x
        )
        est_h = expected_negative_hessian(
            cls.log_prob_params, dist.params, x, torch.full((n,), 1.0 / n, dtype=x.dtype)
        )
        se_h = h.std(0) / math.sqrt(n)
        assert bool(((est_h - dist.fisher()).abs() <= 5 * se_h + 1e-12).all())
        # the negative Hessian of a Gaussian/Exponential log-density in natural coordinates is constant
        torch.testing.assert_close(
            expected_negative_hessian(cls.log_prob_natural, dist.natural, x[:50]),
            dist.fisher_natural(),
            rtol=1e-9,
            atol=1e-10,
        )


@pytest.mark.parametrize("dist", examples(), ids=IDS)
def test_kl_is_locally_half_the_fisher_quadratic_form(dist: ExponentialFamily) -> None:
    """KL(p_theta || p_theta+t d) / (t^2/2 d^T F d) -> 1 with error O(t)."""
    torch.manual_seed(0)
    d = torch.randn(dist.dim, dtype=D)
    d = d / d.norm() * 0.1
    quad = 0.5 * d @ dist.fisher() @ d
    errs = []
    for t in (1.0, 0.1, 0.01):
        other = type(dist).from_params(dist.params + t * d)
        errs.append(abs(float(dist.kl(other) / (t**2 * quad)) - 1))
    assert errs[2] < 2e-2
    # first-order convergence: each tenfold smaller step cuts the error about tenfold
    assert errs[1] / errs[0] < 0.3 and errs[2] / errs[1] < 0.3


@pytest.mark.parametrize("dist", examples(), ids=IDS)
def test_log_prob_normalizes(dist: ExponentialFamily) -> None:
    if dist.discrete:
        total = torch.exp(dist.log_prob(dist.support())).sum()
        torch.testing.assert_close(total, torch.ones((), dtype=D), rtol=0, atol=1e-12)
    else:
        x = dist.sample(100_000, seed=3)
        # E[T(x)] matches the mean parameter
        t = dist.sufficient_statistic(x).mean(0)
        tt = dist.sufficient_statistic(x)
        se = tt.std(0) / math.sqrt(x.shape[0])
        assert bool(((t - dist.mean).abs() <= 5 * se).all())


@pytest.mark.parametrize("dist", examples(), ids=IDS)
def test_entropy_against_monte_carlo(dist: ExponentialFamily) -> None:
    x = dist.sample(100_000, seed=4)
    lp = -dist.log_prob(x)
    assert (
        abs(float(lp.mean() - dist.entropy())) < 5 * float(lp.std()) / math.sqrt(x.shape[0]) + 1e-12
    )


@pytest.mark.parametrize("dist", examples(), ids=IDS)
def test_sampling_is_reproducible(dist: ExponentialFamily) -> None:
    a = dist.sample(10, seed=7)
    b = dist.sample(10, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, dist.sample(10, seed=8))


def test_textbook_values() -> None:
    g = Gaussian(1.0, 2.0)
    torch.testing.assert_close(g.fisher(), torch.diag(torch.tensor([0.25, 0.5], dtype=D)))
    torch.testing.assert_close(
        g.entropy(), torch.tensor(0.5 * math.log(2 * math.pi * math.e * 4), dtype=D)
    )
    torch.testing.assert_close(Bernoulli(0.2).fisher(), torch.tensor([[1 / 0.16]], dtype=D))
    torch.testing.assert_close(Poisson(4.0).fisher(), torch.tensor([[0.25]], dtype=D))
    torch.testing.assert_close(Exponential(2.0).entropy(), torch.tensor(1 - math.log(2.0), dtype=D))
    torch.testing.assert_close(
        Gaussian(0.0, 1.0).kl(Gaussian(1.0, 1.0)), torch.tensor(0.5, dtype=D)
    )


def test_float32_is_kept() -> None:
    g = Gaussian(torch.tensor(0.0), torch.tensor(1.0))
    assert g.params.dtype == torch.float32 and g.fisher().dtype == torch.float32
    assert Gaussian(0.0, 1.0).params.dtype == torch.float64


# ---------------------------------------------------------------- property-based tests
probs = st.floats(min_value=1e-3, max_value=1 - 1e-3)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(min_value=0.05, max_value=5.0), min_size=2, max_size=6))
def test_categorical_fisher_is_symmetric_positive_definite(w: list[float]) -> None:
    p = torch.tensor(w, dtype=D)
    c = Categorical(p / p.sum())
    f = c.fisher()
    torch.testing.assert_close(f, f.T)
    assert bool((torch.linalg.eigvalsh(f) > 0).all())


@settings(max_examples=40, deadline=None)
@given(st.floats(-5, 5), st.floats(0.05, 5), st.floats(-5, 5), st.floats(0.05, 5))
def test_gaussian_kl_nonnegative_and_zero_only_at_equality(
    m1: float, s1: float, m2: float, s2: float
) -> None:
    p, q = Gaussian(m1, s1), Gaussian(m2, s2)
    kl = float(p.kl(q))
    assert kl >= -1e-12
    if abs(m1 - m2) > 1e-3 or abs(s1 - s2) > 1e-3:
        assert kl > 0


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.integers(0, 10_000))
def test_mvn_fisher_natural_spd_and_matches_hessian(d: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=D)
    cov = a @ a.T + 0.5 * torch.eye(d, dtype=D)
    m = torch.randn(d, generator=g, dtype=D)
    mvn = MultivariateGaussian(m, cov)
    f = mvn.fisher_natural()
    assert bool((torch.linalg.eigvalsh(f) > 0).all())
    torch.testing.assert_close(
        hessian(MultivariateGaussian.log_partition)(mvn.natural), f, rtol=1e-7, atol=1e-8
    )


@settings(max_examples=40, deadline=None)
@given(probs, probs)
def test_bernoulli_kl_matches_categorical(p: float, q: float) -> None:
    a = Bernoulli(p).kl(Bernoulli(q))
    b = Categorical(torch.tensor([1 - p, p], dtype=D)).kl(
        Categorical(torch.tensor([1 - q, q], dtype=D))
    )
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------- bad input
BAD_INPUTS = [
    (lambda: Gaussian(0.0, 0.0), "sigma"),
    (lambda: Gaussian(0.0, -1.0), "sigma"),
    (lambda: Gaussian(float("nan"), 1.0), "mu"),
    (lambda: Gaussian(0.0, float("inf")), "sigma"),
    (lambda: Bernoulli(1.2), "p"),
    (lambda: Bernoulli(0.0), "p"),
    (lambda: Categorical(torch.tensor([0.5, 0.6])), "probs"),
    (lambda: Categorical(torch.tensor([0.5, -0.1, 0.6])), "probs"),
    (lambda: Categorical(torch.tensor([1.0])), "probs"),
    (lambda: Categorical(torch.tensor([[0.5, 0.5]])), "probs"),
    (lambda: MultivariateGaussian(torch.zeros(2), torch.tensor([[1.0, 2.0], [2.0, 1.0]])), "cov"),
    (lambda: MultivariateGaussian(torch.zeros(2), torch.tensor([[1.0, 0.5], [0.0, 1.0]])), "cov"),
    (lambda: MultivariateGaussian(torch.zeros(3), torch.eye(2)), "cov"),
    (lambda: Poisson(-1.0), "rate"),
    (lambda: Poisson(0.0), "rate"),
    (lambda: Exponential(0.0), "rate"),
    (lambda: Gaussian.from_natural(torch.tensor([0.0, 0.5])), "eta"),
    (lambda: Exponential.from_natural(torch.tensor([1.0])), "eta"),
    (lambda: Gaussian.from_mean(torch.tensor([1.0, 0.5])), "mu"),
    (lambda: Gaussian.from_params(torch.tensor([1.0, 2.0, 3.0])), "theta"),
    (lambda: Bernoulli(0.5).log_prob(torch.tensor([0.5])), "x"),
    (lambda: Poisson(2.0).log_prob(torch.tensor([-1.0])), "x"),
    (lambda: Categorical(torch.tensor([0.5, 0.5])).log_prob(torch.tensor([2.0])), "x"),
    (lambda: MultivariateGaussian(torch.zeros(2), torch.eye(2)).log_prob(torch.zeros(3)), "x"),
    (lambda: Gaussian(0.0, 1.0).sample(0), "n"),
    (lambda: Gaussian(0.0, 1.0).kl(Gaussian(0.0, 1.0).params), "other"),
    (
        lambda: Categorical(torch.tensor([0.5, 0.5])).kl(
            Categorical(torch.tensor([0.2, 0.3, 0.5]))
        ),
        "other",
    ),
]


@pytest.mark.parametrize(
    ("call", "name"), BAD_INPUTS, ids=[f"{i}-{n}" for i, (_, n) in enumerate(BAD_INPUTS)]
)
def test_bad_input_raises_naming_the_argument(call, name: str) -> None:  # type: ignore[no-untyped-def]
    # the name as a word of the message (a one-letter name must not match inside other words)
    with pytest.raises((ValueError, TypeError), match=rf"(?<![\w.]){re.escape(name)}(?!\w)"):
        call()


def test_batched_second_derivatives_of_the_mvn_log_density_are_right() -> None:
    """Regression: vmap(hessian(.)) over samples must give the (x-independent) Hessian of A."""
    mvn = examples()[3]
    assert isinstance(mvn, MultivariateGaussian)
    x = mvn.sample(4, seed=0)
    h = torch.func.vmap(hessian(MultivariateGaussian.log_prob_natural), in_dims=(None, 0))(
        mvn.natural, x
    )
    for k in range(4):
        torch.testing.assert_close(-h[k], mvn.fisher_natural(), rtol=1e-9, atol=1e-9)
