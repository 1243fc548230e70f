"""Legendre duality, Bregman divergences and the conjugate-prior families (Beta, Gamma, Normal-Gamma)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special, stats
from torch.func import grad, hessian, jacrev

from igbook.families import (
    CONJUGATE_FAMILIES,
    FAMILIES,
    Bernoulli,
    Beta,
    Categorical,
    Exponential,
    ExponentialFamily,
    Gamma,
    Gaussian,
    MultivariateGaussian,
    NormalGamma,
    Poisson,
)

D = torch.float64


def pairs() -> list[tuple[ExponentialFamily, ExponentialFamily]]:
    """Two members of every family, a finite distance apart."""
    cov = torch.tensor([[2.0, 0.3, 0.1], [0.3, 1.0, -0.2], [0.1, -0.2, 0.5]], dtype=D)
    return [
        (Bernoulli(0.3), Bernoulli(0.65)),
        (
            Categorical(torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=D)),
            Categorical(torch.tensor([0.25, 0.25, 0.2, 0.3], dtype=D)),
        ),
        (Gaussian(0.7, 1.3), Gaussian(-0.4, 0.8)),
        (
            MultivariateGaussian(torch.tensor([0.5, -1.0, 2.0], dtype=D), cov),
            MultivariateGaussian(
                torch.tensor([0.8, -0.7, 2.3], dtype=D), cov + 0.2 * torch.eye(3, dtype=D)
            ),
        ),
        (Poisson(3.5), Poisson(2.1)),
        (Exponential(1.7), Exponential(0.6)),
        (Beta(2.5, 0.7), Beta(1.2, 3.0)),
        (Gamma(3.2, 1.7), Gamma(0.4, 2.0)),
        (NormalGamma(0.3, 2.0, 3.0, 1.5), NormalGamma(-0.5, 0.7, 1.2, 2.5)),
    ]


IDS = [type(p).__name__ for p, _ in pairs()]


def test_conjugate_families_are_separate_from_the_original_list() -> None:
    assert set(CONJUGATE_FAMILIES) == {Beta, Gamma, NormalGamma}
    assert not set(CONJUGATE_FAMILIES) & set(FAMILIES)
    assert {type(p) for p, _ in pairs()} == set(FAMILIES) | set(CONJUGATE_FAMILIES)


# ----- Legendre duality -----------------------------------------------------------------------
@pytest.mark.parametrize(("p", "q"), pairs(), ids=IDS)
def test_gradients_of_a_and_its_conjugate_are_inverse_maps(
    p: ExponentialFamily, q: ExponentialFamily
) -> None:
    cls = type(p)
    torch.testing.assert_close(grad(cls.log_partition)(p.natural), p.mean, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad(cls.convex_conjugate)(p.mean), p.natural, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(
        cls.mean_from_natural(cls.natural_from_mean(q.mean)), q.mean, rtol=1e-10, atol=1e-12
    )


@pytest.mark.parametrize(("p", "q"), pairs(), ids=IDS)
def test_hessians_are_the_fisher_matrices_and_inverse(
    p: ExponentialFamily, q: ExponentialFamily
) -> None:
    cls = type(p)
    f_nat = hessian(cls.log_partition)(p.natural)
    torch.testing.assert_close(f_nat, p.fisher_natural(), rtol=1e-10, atol=1e-12)
    f_mean = hessian(cls.convex_conjugate)(p.mean)
    torch.testing.assert_close(f_mean @ f_nat, torch.eye(p.dim, dtype=D), rtol=1e-8, atol=1e-8)
    # the Jacobian of the mean map is the Fisher matrix
    torch.testing.assert_close(
        jacrev(cls.mean_from_natural)(p.natural), f_nat, rtol=1e-10, atol=1e-12
    )


@pytest.mark.parametrize(("p", "q"), pairs(), ids=IDS)
def test_fenchel_young_equality_and_inequality(p: ExponentialFamily, q: ExponentialFamily) -> None:
    cls = type(p)
    # equality at a dual pair, strict inequality elsewhere (the gap is a KL divergence)
    eq = cls.log_partition(p.natural) + cls.convex_conjugate(p.mean) - p.natural @ p.mean
    torch.testing.assert_close(eq, torch.zeros((), dtype=D), rtol=0, atol=1e-12)
    gap = cls.log_partition(q.natural) + cls.convex_conjugate(p.mean) - q.natural @ p.mean
    torch.testing.assert_close(gap, p.kl(q), rtol=1e-9, atol=1e-12)
    assert float(gap) > 0


@pytest.mark.parametrize(("p", "q"), pairs(), ids=IDS)
def test_bregman_divergences_are_kl(p: ExponentialFamily, q: ExponentialFamily) -> None:
    cls = type(p)
    kl_pq = p.kl(q)
    # D_{A*}(mu_p || mu_q) = KL(p || q) and D_A(eta_q || eta_p) = KL(p || q): the arguments swap
    torch.testing.assert_close(cls.bregman_mean(p.mean, q.mean), kl_pq, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(
        cls.bregman_natural(q.natural, p.natural), kl_pq, rtol=1e-10, atol=1e-12
    )
    torch.testing.assert_close(p.kl_bregman_mean(q), kl_pq, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(
        cls.bregman_natural(p.natural, p.natural), torch.zeros((), dtype=D), rtol=0, atol=1e-12
    )
    torch.testing.assert_close(
        cls.bregman_mean(p.mean, p.mean), torch.zeros((), dtype=D), rtol=0, atol=1e-11
    )
    # against a Bregman divergence whose gradient is taken by autograd
    g = grad(cls.convex_conjugate)(q.mean)
    ref = cls.convex_conjugate(p.mean) - cls.convex_conjugate(q.mean) - g @ (p.mean - q.mean)
    torch.testing.assert_close(cls.bregman_mean(p.mean, q.mean), ref, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(("p", "q"), pairs(), ids=IDS)
def test_natural_gradient_in_natural_coordinates_is_gradient_in_mean_coordinates(
    p: ExponentialFamily, q: ExponentialFamily
) -> None:
    """F(eta)^{-1} grad_eta L(mu(eta)) = grad_mu L for a nonlinear loss L."""
    cls = type(p)
    target = q.mean

    def loss_mean(mu: torch.Tensor) -> torch.Tensor:
        return ((mu - target) ** 2).sum() + torch.sin(mu).sum() ** 2

    g_eta = grad(lambda e: loss_mean(cls.mean_from_natural(e)))(p.natural)
    nat = torch.linalg.solve(p.fisher_natural(), g_eta)
    torch.testing.assert_close(nat, grad(loss_mean)(p.mean), rtol=1e-9, atol=1e-11)


# ----- the new families: the same battery as the original ones -----------------------------------
NEW = [p for p, _ in pairs() if type(p) in CONJUGATE_FAMILIES] + [
    Gamma(0.05, 3.0),
    Beta(0.3, 0.4),
    NormalGamma(2.0, 0.1, 0.6, 0.2),
]
NEW_IDS = [f"{type(p).__name__}{tuple(round(float(v), 2) for v in p.params)}" for p in NEW]


@pytest.mark.parametrize("dist", NEW, ids=NEW_IDS)
def test_new_family_round_trips_and_pullback(dist: ExponentialFamily) -> None:
    cls = type(dist)
    torch.testing.assert_close(
        cls.from_natural(dist.natural).params, dist.params, rtol=1e-12, atol=1e-12
    )
    torch.testing.assert_close(cls.from_mean(dist.mean).params, dist.params, rtol=1e-9, atol=1e-11)
    j = jacrev(cls.natural_from_params)(dist.params)
    torch.testing.assert_close(
        j.T @ dist.fisher_natural() @ j, dist.fisher(), rtol=1e-10, atol=1e-12
    )
    torch.testing.assert_close(
        dist.fisher_natural(), hessian(cls.log_partition)(dist.natural), rtol=1e-10, atol=1e-12
    )


@pytest.mark.parametrize("dist", NEW, ids=NEW_IDS)
def test_new_family_against_monte_carlo(dist: ExponentialFamily) -> None:
    n = 100_000
    x = dist.sample(n, seed=11)
    t = type(dist).sufficient_statistic(x)
    se = t.std(0) / math.sqrt(n)
    assert bool(((t.mean(0) - dist.mean).abs() <= 5 * se).all())
    lp = -dist.log_prob(x)
    assert abs(float(lp.mean() - dist.entropy())) < 5 * float(lp.std()) / math.sqrt(n)
    # Fisher = Cov[T], entrywise within 5 standard errors of the covariance estimate
    c = t - t.mean(0)
    prods = c.unsqueeze(2) * c.unsqueeze(1)
    err = (prods.mean(0) - dist.fisher_natural()).abs()
    assert bool((err <= 5 * prods.std(0) / math.sqrt(n) + 1e-12).all())


@pytest.mark.parametrize(
    ("p", "q"),
    [pq for pq in pairs() if type(pq[0]) in CONJUGATE_FAMILIES],
    ids=["Beta", "Gamma", "NormalGamma"],
)
def test_new_family_kl_against_monte_carlo(p: ExponentialFamily, q: ExponentialFamily) -> None:
    x = p.sample(200_000, seed=3)
    diff = p.log_prob(x) - q.log_prob(x)
    assert abs(float(diff.mean() - p.kl(q))) < 5 * float(diff.std()) / math.sqrt(x.shape[0])
    torch.testing.assert_close(p.kl(q), p.kl_bregman(q), rtol=1e-10, atol=1e-12)


def test_new_families_against_scipy() -> None:
    x = torch.tensor([0.05, 0.3, 0.9], dtype=D)
    torch.testing.assert_close(
        Beta(2.5, 0.7).log_prob(x),
        torch.as_tensor(stats.beta(2.5, 0.7).logpdf(x.numpy())),
        rtol=1e-12,
        atol=1e-12,
    )
    torch.testing.assert_close(
        Beta(2.5, 0.7).entropy(),
        torch.tensor(float(stats.beta(2.5, 0.7).entropy()), dtype=D),
        rtol=1e-10,
        atol=1e-12,
    )
    xg = torch.tensor([0.05, 1.3, 7.0], dtype=D)
    ref = stats.gamma(3.2, scale=1 / 1.7)
    torch.testing.assert_close(
        Gamma(3.2, 1.7).log_prob(xg),
        torch.as_tensor(ref.logpdf(xg.numpy())),
        rtol=1e-12,
        atol=1e-12,
    )
    torch.testing.assert_close(
        Gamma(3.2, 1.7).entropy(),
        torch.tensor(float(ref.entropy()), dtype=D),
        rtol=1e-10,
        atol=1e-12,
    )
    # Normal-Gamma density = Gamma(tau) * Normal(m | loc, 1/(kappa tau))
    ng = NormalGamma(0.3, 2.0, 3.0, 1.5)
    pts = torch.tensor([[0.1, 0.5], [-1.0, 2.0], [0.7, 0.05]], dtype=D)
    m, tau = pts[:, 0].numpy(), pts[:, 1].numpy()
    want = stats.gamma(3.0, scale=1 / 1.5).logpdf(tau) + stats.norm(
        0.3, 1 / np.sqrt(2.0 * tau)
    ).logpdf(m)
    torch.testing.assert_close(ng.log_prob(pts), torch.as_tensor(want), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_samplers_pass_kolmogorov_smirnov(seed: int) -> None:
    for dist, ref in [
        (Beta(2.5, 0.7), stats.beta(2.5, 0.7)),
        (Gamma(0.4, 2.0), stats.gamma(0.4, scale=0.5)),
        (Gamma(3.2, 1.7), stats.gamma(3.2, scale=1 / 1.7)),
    ]:
        x = dist.sample(5000, seed=seed).numpy()
        assert stats.kstest(x, ref.cdf).pvalue > 1e-3
    # the marginal of the mean under a Normal-Gamma is a Student t with 2 alpha degrees of freedom
    ng = NormalGamma(0.3, 2.0, 3.0, 1.5)
    m = ng.sample(5000, seed=seed)[:, 0].numpy()
    t = stats.t(df=6.0, loc=0.3, scale=math.sqrt(1.5 / (3.0 * 2.0)))
    assert stats.kstest(m, t.cdf).pvalue > 1e-3


@pytest.mark.parametrize("dist", NEW, ids=NEW_IDS)
def test_sampling_is_reproducible(dist: ExponentialFamily) -> None:
    a = dist.sample(20, seed=7)
    b = dist.sample(20, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, dist.sample(20, seed=8))


@settings(max_examples=40, deadline=None)
@given(a=st.floats(1e-2, 1e3), b=st.floats(1e-2, 1e3))
def test_newton_inverse_mean_map_is_robust(a: float, b: float) -> None:
    for cls in (Beta, Gamma):
        d = cls(a, b)
        eta = cls.natural_from_mean(d.mean)
        torch.testing.assert_close(eta, d.natural, rtol=1e-8, atol=1e-8 * max(1.0, a, b))


@settings(max_examples=25, deadline=None)
@given(loc=st.floats(-5, 5), k=st.floats(0.05, 50), a=st.floats(0.05, 50), b=st.floats(0.05, 50))
def test_normal_gamma_inverse_mean_map(loc: float, k: float, a: float, b: float) -> None:
    d = NormalGamma(loc, k, a, b)
    torch.testing.assert_close(NormalGamma.from_mean(d.mean).params, d.params, rtol=1e-7, atol=1e-9)


def test_beta_and_gamma_closed_forms_against_textbook_values() -> None:
    d = Beta(2.0, 3.0)
    torch.testing.assert_close(
        d.mean,
        torch.tensor(
            [special.digamma(2) - special.digamma(5), special.digamma(3) - special.digamma(5)],
            dtype=D,
        ),
    )
    g = Gamma(2.0, 4.0)
    torch.testing.assert_close(
        g.mean, torch.tensor([special.digamma(2) - math.log(4), 0.5], dtype=D)
    )
    # KL(Gamma || Gamma) against the formula with shape/scale written differently (Penny 2001)
    p, q = Gamma(3.2, 1.7), Gamma(0.4, 2.0)
    kp, tp, kq, tq = 3.2, 1 / 1.7, 0.4, 0.5
    ref = (
        (kp - kq) * special.digamma(kp)
        - special.gammaln(kp)
        + special.gammaln(kq)
        + kq * (math.log(tq) - math.log(tp))
        + kp * (tp - tq) / tq
    )
    torch.testing.assert_close(p.kl(q), torch.tensor(ref, dtype=D), rtol=1e-12, atol=1e-12)


def test_natural_from_precision_inverts_precision_from_natural() -> None:
    torch.manual_seed(0)
    a = torch.randn(4, 4, dtype=D)
    prec = a @ a.T + torch.eye(4, dtype=D)
    h = torch.randn(4, dtype=D)
    eta = MultivariateGaussian.natural_from_precision(h, prec)
    torch.testing.assert_close(
        MultivariateGaussian.precision_from_natural(eta), prec, rtol=1e-12, atol=1e-12
    )
    torch.testing.assert_close(eta[:4], h)
    # batched, and additive: information forms add
    x = torch.randn(5, 4, dtype=D)
    batch = MultivariateGaussian.natural_from_precision(x, x.unsqueeze(-1) * x.unsqueeze(-2))
    total = MultivariateGaussian.natural_from_precision(x.sum(0), x.T @ x)
    torch.testing.assert_close(batch.sum(0), total, rtol=1e-12, atol=1e-12)


def test_newton_solve_is_differentiable() -> None:
    """d eta / d mu through the Newton solve is the inverse Fisher matrix."""
    for d in (Beta(2.5, 0.7), Gamma(3.2, 1.7), NormalGamma(0.3, 2.0, 3.0, 1.5)):
        j = jacrev(type(d).natural_from_mean)(d.mean)
        torch.testing.assert_close(j, torch.linalg.inv(d.fisher_natural()), rtol=1e-8, atol=1e-8)


# ----- bad input ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: Beta(0.0, 1.0), "alpha"),
        (lambda: Beta(1.0, -2.0), "beta"),
        (lambda: Beta(float("nan"), 1.0), "alpha"),
        (lambda: Gamma(1.0, 0.0), "beta"),
        (lambda: Gamma(torch.ones(2), 1.0), "alpha"),
        (lambda: NormalGamma(float("inf"), 1.0, 1.0, 1.0), "loc"),
        (lambda: NormalGamma(0.0, -1.0, 1.0, 1.0), "kappa"),
        (lambda: Beta.from_natural(torch.tensor([-1.5, 0.0])), "eta"),
        (lambda: Gamma.from_natural(torch.tensor([0.0, 1.0])), "eta"),
        (lambda: NormalGamma.from_natural(torch.tensor([0.0, 1.0, -1.0, 1.0])), "eta"),
        (lambda: NormalGamma.from_natural(torch.tensor([0.0, -1.0, 1.0, 1.0])), "beta"),
        (lambda: Beta.from_mean(torch.tensor([-0.1, -0.1])), "mu"),
        (lambda: Gamma.from_mean(torch.tensor([2.0, 1.0])), "mu"),
        (lambda: NormalGamma.from_mean(torch.tensor([0.0, 1.0, 1.0, 5.0])), "mu"),
        (lambda: Beta(1.0, 1.0).log_prob(torch.tensor([1.5])), "x"),
        (lambda: Gamma(1.0, 1.0).log_prob(torch.tensor([-1.0])), "x"),
        (lambda: NormalGamma(0.0, 1.0, 1.0, 1.0).log_prob(torch.tensor([0.0, -1.0])), "x"),
        (lambda: NormalGamma(0.0, 1.0, 1.0, 1.0).log_prob(torch.tensor([0.0, 1.0, 2.0])), "x"),
        (lambda: Beta(1.0, 1.0).sample(0), "n"),
        (lambda: Beta(1.0, 1.0).kl(Gamma(1.0, 1.0)), "other"),
    ],
)
def test_bad_input_raises_naming_the_argument(call, name: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises((ValueError, TypeError), match=name):
        call()
