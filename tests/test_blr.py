"""Tests of igbook.vi.blr: the Bayesian learning rule for Gaussian posteriors.

References used here are independent of the code under test: torch.func gradients and
Hessians, closed-form Gaussian expectations, and the exact posterior of Bayesian linear
regression.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import grad, hessian

from igbook.vi.blr import (
    blr_natural_step,
    blr_step,
    blr_surrogate_objective,
    from_natural_parameters,
    gaussian_entropy,
    gaussian_expectations,
    gaussian_kl,
    mean_parameter_gradient,
    natural_parameters,
    run_blr,
    sample_gaussian,
)

DT = torch.float64


def _spd(d: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=DT)
    return scale * (a @ a.T / d + 0.5 * torch.eye(d, dtype=DT))


def _logistic_problem(seed: int = 0, n: int = 40, d: int = 3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=DT)
    y = (
        torch.rand(n, generator=g, dtype=DT)
        < torch.sigmoid(x @ torch.tensor([1.0, -2.0, 0.5], dtype=DT))
    ).to(DT)

    def loss(t: torch.Tensor) -> torch.Tensor:
        z = x @ t
        return (torch.nn.functional.softplus(z) - y * z).sum() + 0.5 * (t * t).sum()

    return loss


def _linreg_problem(seed: int = 0, n: int = 50, d: int = 3, noise: float = 0.3, prior: float = 2.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=DT)
    y = x @ torch.linspace(-1, 1, d, dtype=DT) + noise * torch.randn(n, generator=g, dtype=DT)

    def loss(t: torch.Tensor) -> torch.Tensor:
        r = y - x @ t
        return 0.5 * (r * r).sum() / noise**2 + 0.5 * prior * (t * t).sum()

    prec = x.T @ x / noise**2 + prior * torch.eye(d, dtype=DT)
    mean = torch.linalg.solve(prec, x.T @ y / noise**2)
    return loss, mean, prec


# ----------------------------------------------------------------------------------------------
# special cases: gradient descent, Newton, conjugate Bayes
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("diagonal", [False, True])
def test_fixed_precision_delta_is_gradient_descent(diagonal: bool) -> None:
    loss = _logistic_problem()
    m = torch.tensor([0.3, -0.1, 0.2], dtype=DT)
    eye = torch.ones(3, dtype=DT) if diagonal else torch.eye(3, dtype=DT)
    for rho in (0.01, 0.5, 3.0):  # any step size > 0 is allowed with a fixed covariance
        out = blr_step(loss, m, eye, rho, fixed_precision=True)
        torch.testing.assert_close(out.mean, m - rho * grad(loss)(m), rtol=0, atol=1e-15)
        assert out.precision is eye or torch.equal(out.precision, eye)


def test_fixed_general_precision_is_preconditioned_gradient_descent() -> None:
    loss = _logistic_problem()
    m = torch.tensor([0.3, -0.1, 0.2], dtype=DT)
    s = _spd(3, 1)
    out = blr_step(loss, m, s, 0.7, fixed_precision=True)
    torch.testing.assert_close(
        out.mean, m - 0.7 * torch.linalg.solve(s, grad(loss)(m)), rtol=1e-12, atol=1e-14
    )


def test_rho_one_delta_is_newton() -> None:
    loss = _logistic_problem(seed=3)
    m = torch.tensor([0.5, 0.5, -0.5], dtype=DT)
    s0 = _spd(3, 2)
    out = blr_step(loss, m, s0, 1.0)
    h = hessian(loss)(m)
    torch.testing.assert_close(out.precision, h, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(
        out.mean, m - torch.linalg.solve(h, grad(loss)(m)), rtol=1e-12, atol=1e-13
    )
    # diagonal: a diagonal Newton step
    outd = blr_step(loss, m, torch.ones(3, dtype=DT), 1.0)
    torch.testing.assert_close(outd.precision, torch.diagonal(h), rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(
        outd.mean, m - grad(loss)(m) / torch.diagonal(h), rtol=1e-12, atol=1e-13
    )


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), d=st.integers(1, 5))
def test_conjugate_model_exact_posterior_in_one_step(seed: int, d: int) -> None:
    loss, mean, prec = _linreg_problem(seed=seed, d=d)
    g = torch.Generator().manual_seed(seed + 1)
    m0 = torch.randn(d, generator=g, dtype=DT)
    s0 = _spd(d, seed + 2)
    out = blr_step(loss, m0, s0, 1.0)
    torch.testing.assert_close(out.precision, prec, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(out.mean, mean, rtol=1e-10, atol=1e-10)
    # with Monte Carlo the Hessian is still exact (it is constant), the gradient is not
    out_mc = blr_step(loss, m0, s0, 1.0, method="mc", num_samples=3, seed=seed)
    torch.testing.assert_close(out_mc.precision, prec, rtol=1e-12, atol=1e-10)


def test_conjugate_model_contracts_by_one_minus_rho() -> None:
    loss, mean, prec = _linreg_problem(seed=5)
    eta_star = natural_parameters(mean, prec)
    m, s = torch.zeros(3, dtype=DT), torch.eye(3, dtype=DT)
    rho = 0.3
    err = [
        torch.cat([(a - b).flatten() for a, b in zip(natural_parameters(m, s), eta_star)]).norm()
    ]
    for _ in range(8):
        m, s = blr_step(loss, m, s, rho)
        err.append(
            torch.cat(
                [(a - b).flatten() for a, b in zip(natural_parameters(m, s), eta_star)]
            ).norm()
        )
    ratios = torch.stack(err[1:]) / torch.stack(err[:-1])
    torch.testing.assert_close(ratios, torch.full_like(ratios, 1 - rho), rtol=1e-9, atol=0)


def test_diagonal_blr_converges_to_mean_field_posterior() -> None:
    loss, mean, prec = _linreg_problem(seed=7)
    trace = run_blr(loss, torch.zeros(3, dtype=DT), torch.ones(3, dtype=DT), 0.5, 80)
    # mean-field VI for a Gaussian target: exact mean, precisions = diagonal of the precision
    torch.testing.assert_close(trace.precisions[-1], torch.diagonal(prec), rtol=1e-10, atol=0)
    torch.testing.assert_close(trace.means[-1], mean, rtol=1e-8, atol=1e-10)
    assert trace.means.shape == (81, 3) and trace.precisions.shape == (81, 3)


# ----------------------------------------------------------------------------------------------
# natural-parameter form, Bonnet/Price, estimators
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("diagonal", [False, True])
@pytest.mark.parametrize("method", ["delta", "mc", "stein"])
def test_natural_form_equals_gaussian_form(diagonal: bool, method: str) -> None:
    loss = _logistic_problem(seed=11)
    m = torch.tensor([0.1, 0.2, -0.3], dtype=DT)
    s = torch.tensor([30.0, 20.0, 25.0], dtype=DT) if diagonal else _spd(3, 4, scale=30.0)
    a = blr_step(loss, m, s, 0.4, method=method, num_samples=5, seed=9)
    b = blr_natural_step(loss, m, s, 0.4, method=method, num_samples=5, seed=9)
    torch.testing.assert_close(a.mean, b.mean, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(a.precision, b.precision, rtol=1e-12, atol=1e-12)


def _exp_loss_closed_forms(a: torch.Tensor, q: torch.Tensor, b: torch.Tensor):
    """l(t) = exp(a.t) + t'Qt/2 + b.t with closed-form Gaussian expectations."""

    def loss(t: torch.Tensor) -> torch.Tensor:
        return torch.exp(a @ t) + 0.5 * t @ q @ t + b @ t

    def expected_loss(m: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
        return (
            torch.exp(a @ m + 0.5 * a @ cov @ a)
            + 0.5 * torch.trace(q @ cov)
            + 0.5 * m @ q @ m
            + b @ m
        )

    def expected_grad_hess(m: torch.Tensor, cov: torch.Tensor):
        e = torch.exp(a @ m + 0.5 * a @ cov @ a)
        return a * e + q @ m + b, torch.outer(a, a) * e + q

    return loss, expected_loss, expected_grad_hess


def test_bonnet_price_mean_parameter_gradient_against_autograd() -> None:
    a = torch.tensor([0.3, -0.2, 0.5], dtype=DT)
    q = _spd(3, 6)
    b = torch.tensor([0.1, 0.0, -0.4], dtype=DT)
    _, expected_loss, expected_gh = _exp_loss_closed_forms(a, q, b)
    m = torch.tensor([0.2, -0.1, 0.4], dtype=DT)
    cov = torch.linalg.inv(_spd(3, 8, scale=4.0))
    mu1 = m.clone().requires_grad_(True)
    mu2 = (cov + torch.outer(m, m)).clone().requires_grad_(True)
    val = expected_loss(mu1, mu2 - torch.outer(mu1, mu1))
    d1, d2 = torch.autograd.grad(val, (mu1, mu2))
    g, h = expected_gh(m, cov)
    p1, p2 = mean_parameter_gradient(g, h, m)
    torch.testing.assert_close(p1, d1, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(p2, d2, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("method", ["mc", "stein"])
@pytest.mark.parametrize("diagonal", [False, True])
def test_monte_carlo_expectations_are_unbiased(method: str, diagonal: bool) -> None:
    a = torch.tensor([0.4, -0.3], dtype=DT)
    q = _spd(2, 1)
    b = torch.tensor([0.2, 0.1], dtype=DT)
    loss, _, expected_gh = _exp_loss_closed_forms(a, q, b)
    m = torch.tensor([0.1, -0.2], dtype=DT)
    s = (
        torch.tensor([4.0, 9.0], dtype=DT)
        if diagonal
        else torch.tensor([[4.0, 1.0], [1.0, 9.0]], dtype=DT)
    )
    cov = torch.diag(1 / s) if diagonal else torch.linalg.inv(s)
    g_ref, h_ref = expected_gh(m, cov)
    if diagonal:
        h_ref = torch.diagonal(h_ref)
    n = 40_000
    g, h = gaussian_expectations(loss, m, s, method=method, num_samples=n, seed=0)
    # standard errors from a second, independent estimate of the per-sample spread
    gs, hs = zip(
        *(
            gaussian_expectations(loss, m, s, method=method, num_samples=n // 8, seed=k)
            for k in range(8)
        )
    )
    se_g = torch.stack(gs).std(0) / math.sqrt(8) + 1e-12
    se_h = torch.stack(hs).std(0) / math.sqrt(8) + 1e-12
    assert bool(((g - g_ref).abs() < 5 * se_g).all()), (g, g_ref, se_g)
    assert bool(((h - h_ref).abs() < 5 * se_h).all()), (h, h_ref, se_h)


def test_delta_method_is_exact_at_zero_variance_limit() -> None:
    loss = _logistic_problem(seed=2)
    m = torch.tensor([0.2, 0.1, -0.1], dtype=DT)
    g, h = gaussian_expectations(
        loss, m, 1e8 * torch.eye(3, dtype=DT), method="mc", num_samples=4, seed=1
    )
    torch.testing.assert_close(g, grad(loss)(m), rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(h, hessian(loss)(m), rtol=1e-3, atol=1e-3)


def test_sample_gaussian_covariance() -> None:
    s = torch.tensor([[4.0, 1.5], [1.5, 2.0]], dtype=DT)
    m = torch.tensor([1.0, -1.0], dtype=DT)
    x = sample_gaussian(m, s, 200_000, seed=3)
    torch.testing.assert_close(x.mean(0), m, rtol=0, atol=0.01)
    torch.testing.assert_close(torch.cov(x.T), torch.linalg.inv(s), rtol=0.02, atol=0.003)
    xd = sample_gaussian(m, torch.tensor([4.0, 0.25], dtype=DT), 200_000, seed=4)
    torch.testing.assert_close(xd.var(0), torch.tensor([0.25, 4.0], dtype=DT), rtol=0.02, atol=0)


def test_natural_parameters_round_trip() -> None:
    m = torch.tensor([0.5, -2.0, 1.0], dtype=DT)
    for s in (_spd(3, 9), torch.tensor([1.0, 2.0, 3.0], dtype=DT)):
        out = from_natural_parameters(*natural_parameters(m, s))
        torch.testing.assert_close(out.mean, m, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(out.precision, s, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# the step as a surrogate minimization
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("diagonal", [False, True])
@pytest.mark.parametrize("rho", [0.3, 1.0])
def test_blr_step_minimizes_expected_quadratic_surrogate_plus_kl(
    diagonal: bool, rho: float
) -> None:
    loss = _logistic_problem(seed=4)
    m_t = torch.tensor([0.2, -0.4, 0.1], dtype=DT)
    s_t = torch.tensor([5.0, 7.0, 6.0], dtype=DT) if diagonal else _spd(3, 3, scale=6.0)
    g, h = gaussian_expectations(loss, m_t, s_t, method="mc", num_samples=16, seed=2)
    new = blr_step(loss, m_t, s_t, rho, method="mc", num_samples=16, seed=2)

    def objective(m: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return blr_surrogate_objective(m, s, grad=g, hess=h, mean_t=m_t, precision_t=s_t, lr=rho)

    m = new.mean.clone().requires_grad_(True)
    s = new.precision.clone().requires_grad_(True)
    dm, ds = torch.autograd.grad(objective(m, s), (m, s))
    assert float(dm.abs().max()) < 1e-10 and float(ds.abs().max()) < 1e-10
    best = float(objective(new.mean, new.precision))
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):  # and it is the minimum, not a saddle
        dm_ = 0.05 * torch.randn(3, generator=gen, dtype=DT)
        if diagonal:
            ds_ = new.precision * (1 + 0.1 * torch.randn(3, generator=gen, dtype=DT)).clamp_min(0.5)
        else:
            e = 0.05 * torch.randn(3, 3, generator=gen, dtype=DT)
            ds_ = new.precision + (e + e.T) * float(new.precision.diagonal().mean())
            if int(torch.linalg.cholesky_ex(ds_)[1]) != 0:
                continue
        assert float(objective(new.mean + dm_, ds_)) > best


def test_gaussian_kl_and_entropy_against_closed_forms() -> None:
    m1, m2 = torch.tensor([0.0, 1.0], dtype=DT), torch.tensor([1.0, -1.0], dtype=DT)
    s1, s2 = torch.tensor([2.0, 0.5], dtype=DT), torch.tensor([1.0, 3.0], dtype=DT)
    v1, v2 = 1 / s1, 1 / s2
    ref = 0.5 * (v1 / v2 + (m1 - m2) ** 2 / v2 - 1 + torch.log(v2 / v1)).sum()
    torch.testing.assert_close(gaussian_kl(m1, s1, m2, s2), ref)
    torch.testing.assert_close(gaussian_kl(m1, torch.diag(s1), m2, torch.diag(s2)), ref)
    ent = torch.distributions.MultivariateNormal(m1, precision_matrix=_spd(2, 1)).entropy()
    torch.testing.assert_close(gaussian_entropy(_spd(2, 1)), ent)


# ----------------------------------------------------------------------------------------------
# determinism and bad input
# ----------------------------------------------------------------------------------------------


def test_seeded_runs_are_identical_and_seeds_matter() -> None:
    loss = _logistic_problem()
    args = (loss, torch.zeros(3, dtype=DT), torch.ones(3, dtype=DT), 0.5, 5)
    a = run_blr(*args, method="mc", num_samples=2, seed=1)
    b = run_blr(*args, method="mc", num_samples=2, seed=1)
    c = run_blr(*args, method="mc", num_samples=2, seed=2)
    assert torch.equal(a.means, b.means) and torch.equal(a.precisions, b.precisions)
    assert not torch.equal(a.means, c.means)


def test_negative_curvature_raises_instead_of_nan() -> None:
    def loss(t: torch.Tensor) -> torch.Tensor:
        return -(t * t).sum()

    with pytest.raises(ValueError, match="not positive definite"):
        blr_step(loss, torch.zeros(2, dtype=DT), torch.eye(2, dtype=DT), 1.0)
    with pytest.raises(ValueError, match="not positive definite"):
        blr_natural_step(loss, torch.zeros(2, dtype=DT), torch.ones(2, dtype=DT), 1.0)


def _quad(t: torch.Tensor) -> torch.Tensor:
    return (t * t).sum()


BAD = [
    (dict(lr=0.0), ValueError, "lr"),
    (dict(lr=-0.1), ValueError, "lr"),
    (dict(lr=1.5), ValueError, r"\(0, 1\]"),
    (dict(lr=float("nan")), ValueError, "lr"),
    (dict(lr="big"), TypeError, "lr"),
    (
        dict(precision=torch.tensor([[1.0, 2.0], [2.0, 1.0]], dtype=DT)),
        ValueError,
        "positive definite",
    ),
    (dict(precision=torch.tensor([[1.0, 0.5], [0.0, 1.0]], dtype=DT)), ValueError, "symmetric"),
    (dict(precision=torch.tensor([1.0, -1.0], dtype=DT)), ValueError, "> 0"),
    (dict(precision=torch.ones(3, dtype=DT)), ValueError, "shape"),
    (dict(mean=torch.zeros(2, 2, dtype=DT)), ValueError, "flat vector"),
    (dict(mean=torch.tensor([0.0, float("nan")], dtype=DT)), ValueError, "finite"),
    (dict(method="laplace"), ValueError, "method"),
    (dict(num_samples=0, method="mc"), ValueError, "num_samples"),
    (dict(loss=lambda t: t), ValueError, "scalar"),
    (dict(loss=3.0), TypeError, "callable"),
    (dict(seed=1, generator=torch.Generator()), ValueError, "either seed or generator"),
]


@pytest.mark.parametrize(("kwargs", "exc", "match"), BAD)
def test_bad_input_raises(kwargs: dict, exc: type, match: str) -> None:
    args = dict(loss=_quad, mean=torch.zeros(2, dtype=DT), precision=torch.eye(2, dtype=DT), lr=0.5)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        blr_step(**args)


def test_bad_natural_parameters_and_gradients() -> None:
    with pytest.raises(ValueError, match="eta2"):
        from_natural_parameters(torch.zeros(2, dtype=DT), torch.tensor([0.5, -1.0], dtype=DT))
    with pytest.raises(ValueError, match="-eta2"):
        from_natural_parameters(torch.zeros(2, dtype=DT), torch.eye(2, dtype=DT))
    with pytest.raises(ValueError, match="grad"):
        mean_parameter_gradient(
            torch.zeros(3, dtype=DT), torch.eye(2, dtype=DT), torch.zeros(2, dtype=DT)
        )
    with pytest.raises(ValueError, match="num_steps"):
        run_blr(_quad, torch.zeros(2, dtype=DT), torch.eye(2, dtype=DT), 0.5, -1)


# ----------------------------------------------------------------------------------------------
# the chapter's self-checks and experiment helpers
# ----------------------------------------------------------------------------------------------


def test_exercise_self_checks_accept_right_and_explain_wrong() -> None:
    import igbook.exercises.bayesian_learning_rule as ex

    assert ex.check_gd_from_blr(lambda m, g, rho: m - rho * g)
    fb = ex.check_gd_from_blr(lambda m, g, rho: m + rho * g)
    assert not fb and "uphill" in fb.message
    fb = ex.check_gd_from_blr(lambda m, g, rho: (1 - rho) * m - rho * g)
    assert not fb and "shrinkage" in fb.message
    assert not ex.check_gd_from_blr(lambda m, g, rho: 1 / 0)

    def right(h, hh, d, b2):
        return b2 * h + (1 - b2) * hh + 0.5 * (1 - b2) ** 2 * (h - hh) ** 2 / (h + d)

    assert ex.check_ivon_hessian_update(right)
    fb = ex.check_ivon_hessian_update(lambda h, hh, d, b2: b2 * h + (1 - b2) * hh)
    assert not fb and "correction" in fb.message
    s = (-1.0 + math.sqrt(1.0 + 4 * 100 * 4.0)) / 200
    assert ex.check_vadam_stationary_variance(1 / (100 * s + 1.0))
    fb = ex.check_vadam_stationary_variance(1 / 201)
    assert not fb and "exact posterior variance" in fb.message
    _loss, mean, prec = _linreg_problem(seed=3)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(50, 3, generator=g, dtype=DT)
    y = x @ torch.linspace(-1, 1, 3, dtype=DT) + 0.3 * torch.randn(50, generator=g, dtype=DT)
    assert ex.check_newton_fixed_point(mean, prec, x, y, 0.3, 2.0)
    fb = ex.check_newton_fixed_point(mean, prec - 2.0 * torch.eye(3, dtype=DT), x, y, 0.3, 2.0)
    assert not fb and "prior" in fb.message


def test_experiment_helpers_validate_their_input() -> None:
    from igbook.experiments.blr import (
        gap_regression_data,
        linreg_problem,
        run_linreg,
        train_classifier,
    )
    from igbook.experiments.models import mlp

    with pytest.raises(ValueError, match="name"):
        run_linreg("SGD", linreg_problem())
    with pytest.raises(ValueError, match="even"):
        gap_regression_data(n=7)
    with pytest.raises(ValueError, match="activation"):
        mlp((2, 3), activation="gelu")
    with pytest.raises(ValueError, match="sizes"):
        mlp((2,))
    with pytest.raises(ValueError, match="IVON"):
        train_classifier("SGD", torch.zeros(4, 2), torch.zeros(4, dtype=torch.long), num_classes=2)
    x, y = gap_regression_data(n=10, seed=1)
    assert x.shape == (10, 1) and y.shape == (10, 1)
    assert bool((x.abs() >= 0.8).all() and (x.abs() <= 2.0).all())  # two clusters, a gap in between
