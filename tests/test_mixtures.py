"""Tests of igbook.mixtures: the two-component Gaussian-mixture manifold."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import hessian

from igbook import mixtures as mx
from igbook.fisher import expected_negative_hessian, fisher_monte_carlo, score_covariance
from igbook.natgrad import natural_gradient

D = torch.float64


def t(*xs: float) -> torch.Tensor:
    return torch.tensor(xs, dtype=D)


# ----------------------------------------------------------------------------- the two forms
def test_both_forms_agree_on_a_grid() -> None:
    grid = mx.parameter_grid(-4, 4, 21)
    for sigma in (0.3, 1.0, 2.5):
        f_s = mx.fisher(grid, sigma, form="score")
        f_h = mx.fisher(grid, sigma, form="hessian")
        assert f_s.shape == (21, 21, 2, 2)
        torch.testing.assert_close(f_s, f_h, rtol=0, atol=1e-12 / sigma**2)


def test_fisher_matches_autograd_scores_and_hessians_at_the_nodes() -> None:
    """igbook.fisher differentiates the log-density by torch.func: independent of the closed forms."""
    for theta, sigma in [(t(0.3, -0.9), 0.8), (t(1.0, 1.02), 1.0), (t(-2.0, 3.0), 0.5)]:
        x, w = mx.quadrature_nodes(theta, sigma)

        def lp(th: torch.Tensor, xx: torch.Tensor, s: float = sigma) -> torch.Tensor:
            return mx.log_prob_single(th, xx, s)

        f = mx.fisher(theta, sigma)
        torch.testing.assert_close(score_covariance(lp, theta, x, w), f, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(
            expected_negative_hessian(lp, theta, x, w), f, rtol=1e-10, atol=1e-13
        )


def test_score_and_hessian_closed_forms_match_autograd() -> None:
    theta, sigma = t(-0.4, 1.3), 0.7
    xs = torch.linspace(-4, 4, 17, dtype=D)
    s = mx.score(xs, theta, sigma)
    h = mx.negative_hessian(xs, theta, sigma)
    for k, x in enumerate(xs):
        g = torch.func.grad(mx.log_prob_single)(theta, x, sigma)
        hh = hessian(mx.log_prob_single)(theta, x, sigma)
        torch.testing.assert_close(s[k], g, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(h[k], -hh, rtol=1e-10, atol=1e-13)


def test_fisher_matches_adaptive_quadrature_reference() -> None:
    integrate = pytest.importorskip("scipy.integrate")
    norm = pytest.importorskip("scipy.stats").norm
    worst = 0.0
    for d in (0.0, 0.01, 0.5, 1.0, 2.0, 3.0, 5.0, 7.7, 9.1, 12.0, 20.0):
        m1, m2, s = 0.0, d, 1.0

        def integrand(
            x: float, i: int, j: int, *, m1: float = m1, m2: float = m2, s: float = s
        ) -> float:
            a, b = 0.5 * norm.pdf(x, m1, s), 0.5 * norm.pdf(x, m2, s)
            p = a + b
            sc = (a / p * (x - m1) / s**2, b / p * (x - m2) / s**2)
            return p * sc[i] * sc[j]

        ref = [
            integrate.quad(
                integrand,
                min(m1, m2) - 12,
                max(m1, m2) + 12,
                args=ij,
                epsabs=1e-14,
                epsrel=1e-13,
                limit=500,
                points=[m1, m2, 0.5 * (m1 + m2)],
            )[0]
            for ij in ((0, 0), (0, 1))
        ]
        f = mx.fisher(t(m1, m2), s)
        worst = max(worst, abs(float(f[0, 0]) - ref[0]), abs(float(f[0, 1]) - ref[1]))
    assert worst < 1e-12, worst


def test_fisher_matches_monte_carlo_within_its_standard_error() -> None:
    for theta, sigma in [(t(0.3, -0.9), 0.8), (t(0.0, 0.25), 1.0), (t(-2.0, 2.0), 1.0)]:

        def lp(th: torch.Tensor, xx: torch.Tensor, s: float = sigma) -> torch.Tensor:
            return mx.log_prob_single(th, xx, s)

        def sampler(
            n: int, g: torch.Generator, th: torch.Tensor = theta, s: float = sigma
        ) -> torch.Tensor:
            return mx.sample(n, th, s, generator=g)

        f_mc, se = fisher_monte_carlo(lp, theta, sampler, 100_000, seed=3)
        z = (f_mc - mx.fisher(theta, sigma)).abs() / se
        assert float(z.max()) < 4.5, z


def test_fisher_is_the_hessian_of_kl_by_finite_differences() -> None:
    h = 1e-3
    for theta, sigma in [(t(0.3, -0.9), 0.8), (t(0.5, 0.7), 1.0)]:
        f = mx.fisher(theta, sigma)

        def kl(d: torch.Tensor, th: torch.Tensor = theta, s: float = sigma) -> float:
            return float(mx.kl_divergence(th, th + d, s))

        e = torch.eye(2, dtype=D) * h
        fd = torch.zeros(2, 2, dtype=D)
        for i in range(2):
            for j in range(2):
                fd[i, j] = (
                    kl(e[i] + e[j]) - kl(e[i] - e[j]) - kl(-e[i] + e[j]) + kl(-e[i] - e[j])
                ) / (4 * h * h)
        torch.testing.assert_close(fd, f, rtol=1e-4, atol=1e-6)


def test_trapezoid_rule_is_converged_and_beats_gauss_hermite() -> None:
    theta = torch.stack(
        [torch.zeros(7, dtype=D), torch.tensor([0.1, 1, 3, 5, 6.5, 8, 10], dtype=D)], -1
    )
    coarse = mx.fisher(theta, 1.0)
    fine = mx.fisher(theta, 1.0, rule=mx.trapezoid_rule(0.05, 9.0))
    assert float((coarse - fine).abs().max()) < 1e-13
    gh = mx.fisher(theta, 1.0, rule=mx.gauss_hermite_rule(100))
    err_gh = float((gh - fine).abs().max())
    assert 1e-8 < err_gh < 1e-4  # Gauss-Hermite is visibly worse at intermediate separations


# ----------------------------------------------------------------------------- geometry
@settings(max_examples=40, deadline=None)
@given(st.floats(-5, 5), st.floats(-5, 5), st.floats(0.2, 3.0))
def test_fisher_symmetric_psd_forms_equal_and_scale_invariant(
    m1: float, m2: float, sigma: float
) -> None:
    theta = t(m1, m2)
    f = mx.fisher(theta, sigma)
    torch.testing.assert_close(f, f.T, rtol=0, atol=0)
    assert abs(float(f[0, 0] - f[1, 1])) <= 1e-12 / sigma**2  # reflection symmetry: F11 = F22
    assert float(torch.linalg.eigvalsh(f)[0]) >= -1e-14 / sigma**2
    torch.testing.assert_close(
        mx.fisher(theta, sigma, form="hessian"), f, rtol=0, atol=1e-12 / sigma**2
    )
    # translation and scale: F(c theta + b; c sigma) = F(theta; sigma) / c^2
    c, b = 1.7, -0.6
    torch.testing.assert_close(
        mx.fisher(c * theta + b, c * sigma), f / c**2, rtol=1e-10, atol=1e-13
    )


def test_eigenvectors_are_mean_shift_and_exchange() -> None:
    grid = mx.parameter_grid(-3, 3, 9).reshape(-1, 2)
    off = (grid[:, 0] - grid[:, 1]).abs() / 1.0
    keep = (off > 0.05) & ((off - mx.ISOTROPIC_SEPARATION).abs() > 0.3)  # distinct eigenvalues
    f = mx.fisher(grid[keep], 1.0)
    u = torch.tensor([1.0, 1.0], dtype=D) / math.sqrt(2)
    v = torch.tensor([1.0, -1.0], dtype=D) / math.sqrt(2)
    for vec in (u, v):
        fv = f @ vec
        cross = fv[:, 0] * vec[1] - fv[:, 1] * vec[0]  # fv parallel to vec
        assert float(cross.abs().max()) < 1e-13


def test_singularity_rates() -> None:
    sigma = 0.7
    deltas = torch.tensor([0.3, 0.1, 0.03, 0.01, 0.003], dtype=D)  # |mu1 - mu2| / sigma
    theta = torch.stack([deltas * sigma / 2, -deltas * sigma / 2], -1)
    ev, _ = mx.fisher_eigen(mx.fisher(theta, sigma))
    lmin_ref, lmax_ref = mx.small_separation_eigenvalues(theta, sigma)
    assert ((ev[:, 0] / lmin_ref - 1).abs() <= deltas**2).all()
    assert ((ev[:, 1] / lmax_ref - 1).abs() <= deltas**2).all()
    kappa = mx.condition_number(mx.fisher(theta, sigma))
    gap = theta[:, 0] - theta[:, 1]
    assert ((kappa * gap**2 / (2 * sigma**2) - 1).abs() <= deltas**2).all()
    slope = torch.diff(torch.log(ev[:, 0])) / torch.diff(torch.log(deltas))
    assert ((slope - 2).abs() < 0.05).all()
    slope_k = torch.diff(torch.log(kappa)) / torch.diff(torch.log(deltas))
    assert ((slope_k + 2).abs() < 0.05).all()


def test_exact_singularity() -> None:
    f = mx.fisher(t(0.4, 0.4), 1.3)
    ev, _ = mx.fisher_eigen(f)
    assert float(ev[0]) == 0.0
    assert abs(float(ev[1]) - 0.5 / 1.3**2) < 1e-14
    assert math.isinf(float(mx.condition_number(f)))


def test_well_separated_limit() -> None:
    sigma = 0.6
    for d in (6.0, 8.0, 10.0, 12.0):
        theta = t(-d * sigma / 2, d * sigma / 2)
        f = mx.fisher(theta, sigma)
        approx = mx.large_separation_fisher(theta, sigma)
        far = torch.eye(2, dtype=D) / (2 * sigma**2)
        corr_true, corr_approx = f - far, approx - far
        assert float((corr_true - corr_approx).abs().max()) <= 6 / d**2 * float(
            corr_approx.abs().max()
        )
    f = mx.fisher(t(-3.0, 3.0), 0.3)  # 20 sigma apart
    torch.testing.assert_close(f, torch.eye(2, dtype=D) / (2 * 0.09), rtol=0, atol=1e-14)


def test_isotropic_separation() -> None:
    d = mx.ISOTROPIC_SEPARATION
    f = mx.fisher(t(0.0, d), 1.0)
    assert abs(float(f[0, 1])) < 1e-13
    assert (
        float(mx.fisher(t(0.0, d - 0.1), 1.0)[0, 1])
        > 0
        > float(mx.fisher(t(0.0, d + 0.1), 1.0)[0, 1])
    )


def test_ellipse_outlines_are_level_sets() -> None:
    grid = mx.parameter_grid(-2, 2, 5).reshape(-1, 2)
    f = mx.fisher(grid, 1.0)
    pts, clipped = mx.ellipse_outlines(grid, f, 0.01, num=12, max_semi_axis=0.6)
    assert pts.shape == (25, 12, 2) and clipped.shape == (25,)
    d = pts - grid[:, None, :]
    q = torch.einsum("nki,nij,nkj->nk", d, f, d)
    torch.testing.assert_close(q[~clipped], torch.full_like(q[~clipped], 0.01), rtol=1e-10, atol=0)
    assert bool(clipped[(grid[:, 0] == grid[:, 1])].all())  # the diagonal is singular: clipped
    assert float(d.norm(dim=-1).max()) <= 0.6 + 1e-12


# ----------------------------------------------------------------------------- losses, fields, flows
def test_kl_loss_value_and_gradient() -> None:
    loss = mx.KLToTarget(t(-1.0, 1.5), 0.9)
    assert abs(float(loss.value(t(-1.0, 1.5)))) < 1e-14
    assert abs(float(loss.value(t(1.5, -1.0)))) < 1e-14  # the mirror is the same distribution
    pts = torch.tensor([[0.2, 0.5], [2.0, -2.0], [0.3, 0.3], [-2.5, 2.9]], dtype=D)
    for p in pts:
        q = p.clone().requires_grad_(True)
        loss.value(q).backward()
        torch.testing.assert_close(loss.gradient(p), q.grad, rtol=1e-10, atol=1e-13)
        assert abs(float(loss.value(p)) - float(mx.kl_divergence(t(-1.0, 1.5), p, 0.9))) < 1e-12
    assert loss.gradient(pts).shape == (4, 2)


def test_nll_value_and_gradient() -> None:
    nll = mx.NegativeLogLikelihood.from_target(t(-1.0, 1.5), 300, 1.0, seed=1)
    assert nll.data.shape == (300,)
    p = t(0.1, 0.4).requires_grad_(True)
    nll.value(p).backward()
    torch.testing.assert_close(nll.gradient(t(0.1, 0.4)), p.grad, rtol=1e-12, atol=1e-14)
    assert nll.gradient(mx.parameter_grid(-1, 1, 4)).shape == (4, 4, 2)
    again = mx.NegativeLogLikelihood.from_target(t(-1.0, 1.5), 300, 1.0, seed=1)
    torch.testing.assert_close(again.data, nll.data)  # seeded


def test_natural_gradient_field_matches_dense_solve() -> None:
    loss = mx.KLToTarget(t(-1.0, 1.5), 1.0)
    pts = torch.tensor([[0.2, 0.5], [2.0, -2.0], [-2.5, 2.9], [0.0, 0.05]], dtype=D)
    g, ng = mx.natural_gradient_field(pts, loss)
    for k in range(4):
        f = mx.fisher(pts[k], 1.0)
        torch.testing.assert_close(ng[k], natural_gradient(f, g[k]), rtol=1e-10, atol=1e-12)
    _, ngd = mx.natural_gradient_field(pts, loss, damping=0.1)
    torch.testing.assert_close(
        ngd[0], natural_gradient(mx.fisher(pts[0], 1.0), g[0], damping=0.1), rtol=1e-10, atol=0
    )


def test_gradient_angles_far_and_near_the_singularity() -> None:
    loss = mx.KLToTarget(t(-1.5, 1.5), 1.0)
    far = t(-2.0, 2.8)  # components ~5 sigma apart: F ~ I / (2 sigma^2)
    g, ng = mx.natural_gradient_field(far, loss)
    assert float(mx.gradient_angle(g, ng)) < 2.0
    near = t(1.0, 1.3)  # 0.3 sigma from the singular line, mean shifted from the target's
    g, ng = mx.natural_gradient_field(near, loss)
    assert float(mx.gradient_angle(g, ng)) > 45.0
    assert abs(float(mx.gradient_angle(t(1.0, 0.0), t(1.0, 1.0))) - 45.0) < 1e-12
    assert float(mx.gradient_angle(t(1.0, 1e-9), t(1.0, 0.0))) > 0  # tiny angles are resolved


def test_flows_reach_the_target_or_its_mirror() -> None:
    loss = mx.KLToTarget(t(-1.0, 1.5), 1.0)
    seeds = torch.tensor([[-2.0, 2.5], [2.0, -2.0], [0.8, 0.5], [-0.5, 0.0]], dtype=D)
    for method, dt in (("natural", 0.3), ("euclidean", 0.6)):
        paths = mx.flow(seeds, loss, method=method, steps=300, dt=dt, max_step=0.1)
        assert paths.shape == (301, 4, 2)
        assert float((paths[1:] - paths[:-1]).norm(dim=-1).max()) <= 0.1 + 1e-12
        end = paths[-1]
        d = torch.minimum((end - t(-1.0, 1.5)).norm(dim=-1), (end - t(1.5, -1.0)).norm(dim=-1))
        assert float(d.max()) < 1e-3, (method, end)


# ----------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda: mx.fisher(t(1.0, 2.0, 3.0)), ValueError, "last axis of size 2"),
        (lambda: mx.fisher(t(1.0, float("nan"))), ValueError, "finite"),
        (lambda: mx.fisher(t(1.0, 2.0), 0.0), ValueError, "sigma must be > 0"),
        (lambda: mx.fisher(t(1.0, 2.0), -1.0), ValueError, "sigma"),
        (lambda: mx.fisher(t(1.0, 2.0), form="outer"), ValueError, "form"),
        (lambda: mx.fisher(t(1.0, 2.0), rule="trapezoid"), TypeError, "QuadratureRule"),
        (lambda: mx.fisher("abc"), TypeError, "theta"),
        (
            lambda: mx.fisher(torch.zeros(3, 2, dtype=D), torch.ones(4, dtype=D)),
            ValueError,
            "broadcast",
        ),
        (lambda: mx.trapezoid_rule(h=0.0), ValueError, "h must be"),
        (lambda: mx.trapezoid_rule(h=5.0, half_width=1.0), ValueError, "nodes per side"),
        (lambda: mx.gauss_hermite_rule(0), ValueError, "n must be"),
        (lambda: mx.QuadratureRule(t(0.0, 1.0), t(0.3, 0.3)), ValueError, "sum to 1"),
        (lambda: mx.sample(0, t(0.0, 1.0)), ValueError, "n must be"),
        (
            lambda: mx.sample(5, t(0.0, 1.0), seed=1, generator=torch.Generator()),
            ValueError,
            "either seed",
        ),
        (lambda: mx.sample(5, torch.zeros(2, 2, dtype=D)), ValueError, "shape"),
        (lambda: mx.parameter_grid(1.0, 1.0, 5), ValueError, "low < high"),
        (lambda: mx.parameter_grid(0.0, 1.0, 1), ValueError, "n must be"),
        (lambda: mx.fisher_eigen(torch.eye(3, dtype=D)), ValueError, r"\(\.\.\., 2, 2\)"),
        (lambda: mx.condition_number(torch.zeros(2, 2, dtype=D)), ValueError, "zero matrix"),
        (lambda: mx.ellipse_outlines(t(0.0, 0.0), torch.eye(2, dtype=D), 0.0), ValueError, "eps"),
        (
            lambda: mx.ellipse_outlines(
                torch.zeros(3, 2, dtype=D), torch.eye(2, dtype=D).expand(2, 2, 2)
            ),
            ValueError,
            "must match",
        ),
        (lambda: mx.KLToTarget(torch.zeros(2, 2, dtype=D)), ValueError, "target must have shape"),
        (lambda: mx.KLToTarget(t(0.0, 1.0), sigma=-1.0), ValueError, "sigma"),
        (lambda: mx.NegativeLogLikelihood(torch.zeros(0, dtype=D)), ValueError, "non-empty"),
        (
            lambda: mx.natural_gradient_field(t(0.5, 0.5), mx.KLToTarget(t(0.0, 1.0))),
            ValueError,
            "singular",
        ),
        (
            lambda: mx.natural_gradient_field(
                t(0.5, 0.1), mx.KLToTarget(t(0.0, 1.0)), damping=-1.0
            ),
            ValueError,
            "damping",
        ),
        (lambda: mx.natural_gradient_field(t(0.5, 0.1), "kl"), TypeError, "MixtureLoss"),
        (lambda: mx.gradient_angle(t(0.0, 0.0), t(1.0, 0.0)), ValueError, "non-zero"),
        (
            lambda: mx.flow(t(0.5, 0.1), mx.KLToTarget(t(0.0, 1.0)), method="adam"),
            ValueError,
            "method",
        ),
        (
            lambda: mx.flow(t(0.5, 0.1), mx.KLToTarget(t(0.0, 1.0)), damping=0.0),
            ValueError,
            "damping",
        ),
        (lambda: mx.flow(t(0.5, 0.1), mx.KLToTarget(t(0.0, 1.0)), steps=0), ValueError, "steps"),
        (
            lambda: mx.flow(t(0.5, 0.1), mx.KLToTarget(t(0.0, 1.0)), dt=float("inf")),
            ValueError,
            "dt",
        ),
        (lambda: mx.flow(t(0.5, 0.1), mx.KLToTarget(t(0.0, 1.0)), steps=2.5), TypeError, "steps"),
    ],
)
def test_bad_inputs(call, exc, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(exc, match=match):
        call()


# ----------------------------------------------------------------------------- exercise self-checks
def test_exercise_checks_accept_right_and_reject_wrong_answers() -> None:
    from igbook.exercises import gaussian_mixture as ex

    def score(x: float, m1: float, m2: float, s: float) -> list[float]:
        r1 = 1 / (1 + math.exp(0.5 * ((x - m1) / s) ** 2 - 0.5 * ((x - m2) / s) ** 2))
        return [r1 * (x - m1) / s**2, (1 - r1) * (x - m2) / s**2]

    assert ex.check_mixture_score(score)
    no_r = ex.check_mixture_score(lambda x, m1, m2, s: [(x - m1) / s**2, (x - m2) / s**2])
    assert not no_r and "responsibility" in no_r.message
    assert ex.check_exchange_score(
        lambda x, m, e, s: ((x - m) / s * math.tanh(e * (x - m) / s**2) - e / s) / s
    )
    assert not ex.check_exchange_score(
        lambda x, m, e, s: e * ((x - m) ** 2 / s**2 - 1) / s**2 + 0.1
    )
    assert ex.check_singularity_constants(0.25, 2.0)
    assert not ex.check_singularity_constants(0.5, 2.0) and not ex.check_singularity_constants(
        0.25, 4.0
    )
    assert ex.check_isotropic_separation(1.6363) and not ex.check_isotropic_separation(1.5)
    assert not ex.check_isotropic_separation("1.6")  # type: ignore[arg-type]
    assert ex.check_singular_speed_exponent(1) and not ex.check_singular_speed_exponent(2)
    # the explorer exercise: kappa(F) = 50 at the separation found by bisection; kappa ~ 2 / delta^2
    d50 = ex.condition_separation(50.0)
    k = float(
        mx.condition_number(mx.fisher(torch.tensor([-d50 / 2, d50 / 2], dtype=torch.float64), 1.0))
    )
    assert abs(k - 50.0) < 1e-6 and abs(d50 - math.sqrt(2 / 50)) < 0.01
    assert ex.check_explorer_condition_separation(
        0.2
    ) and not ex.check_explorer_condition_separation(0.25)
    assert "half the separation" in ex.check_explorer_condition_separation(0.1).message
    assert "square root" in ex.check_explorer_condition_separation(0.04).message
    assert not ex.check_explorer_condition_separation(float("nan"))


def test_flow_pair_equals_the_two_flows() -> None:
    loss = mx.KLToTarget(torch.tensor([-1.5, 1.5], dtype=torch.float64), 1.0)
    seeds = torch.tensor([[-2.0, 0.5], [1.0, 2.5], [0.3, -0.2], [2.0, 2.1]], dtype=torch.float64)
    nat = mx.flow(seeds, loss, method="natural", steps=25, dt=0.15, damping=1e-3, max_step=0.2)
    euc = mx.flow(seeds, loss, method="euclidean", steps=25, dt=0.3, max_step=0.2)
    n2, e2 = mx.flow_pair(
        seeds, loss, steps=25, dt_natural=0.15, dt_euclidean=0.3, damping=1e-3, max_step=0.2
    )
    torch.testing.assert_close(n2, nat, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(e2, euc, rtol=1e-10, atol=1e-12)
    assert n2.shape == (26, 4, 2)
    with pytest.raises(ValueError, match="damping"):
        mx.flow_pair(seeds, loss, damping=0.0)
    with pytest.raises(ValueError, match="dt_euclidean"):
        mx.flow_pair(seeds, loss, dt_euclidean=-1.0)
    with pytest.raises(TypeError, match="MixtureLoss"):
        mx.flow_pair(seeds, "kl")  # type: ignore[arg-type]
