"""Tests of igbook.natgrad.core (dense, CG, trust region) and igbook.natgrad.families (NGD on families)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from igbook import natgrad as ng
from igbook.families import (
    Bernoulli,
    Categorical,
    Exponential,
    Gaussian,
    MultivariateGaussian,
    Poisson,
)

D = torch.float64


def t(*xs: float) -> torch.Tensor:
    return torch.tensor(xs, dtype=D)


def spd(n: int, seed: int, cond: float = 100.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=D))
    ev = torch.logspace(0, math.log10(cond), n, dtype=D)
    return q @ torch.diag(ev) @ q.T


# ----------------------------------------------------------------------------- core
@settings(max_examples=25, deadline=None)
@given(st.integers(1, 12), st.integers(0, 10_000), st.floats(0.0, 1.0))
def test_dense_natural_gradient_solves_the_damped_system(n: int, seed: int, lam: float) -> None:
    f = spd(n, seed)
    g = torch.randn(n, generator=torch.Generator().manual_seed(seed + 1), dtype=D)
    x = ng.natural_gradient(f, g, damping=lam)
    torch.testing.assert_close((f + lam * torch.eye(n, dtype=D)) @ x, g, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(
        x, torch.linalg.solve(f + lam * torch.eye(n, dtype=D), g), rtol=1e-9, atol=1e-10
    )


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 30), st.integers(0, 10_000), st.sampled_from([0.0, 1e-3, 0.5]))
def test_conjugate_gradient_matches_dense(n: int, seed: int, lam: float) -> None:
    f = spd(n, seed, cond=1e3)
    g = torch.randn(n, generator=torch.Generator().manual_seed(seed + 1), dtype=D)
    res = ng.conjugate_gradient(lambda v: f @ v, g, damping=lam, rtol=1e-12)
    assert res.converged and res.iterations <= 2 * n
    torch.testing.assert_close(res.x, ng.natural_gradient(f, g, damping=lam), rtol=1e-7, atol=1e-9)


def test_cg_on_fisher_vector_products_of_a_family() -> None:
    """Matrix-free natural gradient in a chart: CG on J^T F J v products vs the dense pull-back."""
    cov = torch.tensor([[1.0, 0.3, 0.1], [0.3, 0.8, -0.2], [0.1, -0.2, 1.5]], dtype=D)
    dist = MultivariateGaussian(t(0.2, -0.1, 0.4), cov)
    loss = ng.kl_loss(MultivariateGaussian(torch.zeros(3, dtype=D), torch.eye(3, dtype=D)))
    for chart in ("params", "natural", "mean"):
        dense = ng.natural_gradient_at(dist, loss, chart)
        fvp = ng.fisher_vector_product(dist, chart)
        v = torch.linspace(-1, 1, dense.grad.shape[0], dtype=D)
        torch.testing.assert_close(fvp(v), dense.fisher @ v, rtol=1e-10, atol=1e-12)
        x = ng.natural_gradient_cg(fvp, dense.grad, damping=1e-12, rtol=1e-12, max_iter=200)
        torch.testing.assert_close(x, dense.direction, rtol=1e-6, atol=1e-8)


def test_trust_region_step_size_meets_the_radius() -> None:
    f = spd(5, 0)
    d = torch.linspace(-1, 2, 5, dtype=D)
    for eps in (1e-4, 0.01, 0.3):
        a = ng.trust_region_step_size(f, d, eps)
        assert abs(0.5 * float(a) ** 2 * float(d @ f @ d) - eps) < 1e-12 * max(eps, 1)
        a2 = ng.trust_region_step_size(lambda v: f @ v, d, eps)
        assert abs(float(a2 - a)) < 1e-12


def test_core_errors() -> None:
    f = torch.tensor([[1.0, 1.0], [1.0, 1.0]], dtype=D)  # singular
    with pytest.raises(ValueError, match="damping > 0"):
        ng.natural_gradient(f, t(1.0, 0.0))
    ng.natural_gradient(f, t(1.0, 0.0), damping=1e-3)  # damped: fine
    with pytest.raises(ValueError, match="damping"):
        ng.natural_gradient(torch.eye(2, dtype=D), t(1.0, 0.0), damping=-1.0)
    with pytest.raises(ValueError, match="match fisher"):
        ng.natural_gradient(torch.eye(2, dtype=D), t(1.0, 0.0, 2.0))
    with pytest.raises(ValueError, match="damping must be > 0"):
        ng.natural_gradient_cg(lambda v: v, t(1.0, 0.0), damping=0.0)
    with pytest.raises(ValueError, match="radius"):
        ng.trust_region_step_size(torch.eye(2, dtype=D), t(1.0, 0.0), 0.0)
    with pytest.raises(ValueError, match="zero Fisher norm"):
        ng.trust_region_step_size(f, t(1.0, -1.0), 0.1)
    with pytest.raises(ValueError, match="non-positive curvature"):
        ng.conjugate_gradient(lambda v: -v, t(1.0, 0.0))


# ----------------------------------------------------------------------------- charts and Fisher
def test_fisher_in_charts_closed_forms() -> None:
    g = Gaussian(0.7, 1.3)
    s2 = 1.3**2
    torch.testing.assert_close(ng.fisher_in_chart(g, "params"), torch.diag(t(1 / s2, 2 / s2)))
    torch.testing.assert_close(ng.fisher_in_chart(g, "log_sigma"), torch.diag(t(1 / s2, 2.0)))
    torch.testing.assert_close(
        ng.fisher_in_chart(g, "variance"), torch.diag(t(1 / s2, 1 / (2 * s2**2)))
    )
    torch.testing.assert_close(
        ng.fisher_in_chart(g, "natural"), g.fisher_natural(), rtol=1e-10, atol=1e-12
    )
    torch.testing.assert_close(
        ng.fisher_in_chart(g, "mean"), g.fisher_mean(), rtol=1e-10, atol=1e-12
    )
    p = Poisson(2.5)
    torch.testing.assert_close(ng.fisher_in_chart(p, "log_rate"), t(2.5).reshape(1, 1))
    for dist in (Bernoulli(0.3), Categorical(t(0.2, 0.5, 0.3)), Exponential(1.7)):
        torch.testing.assert_close(
            ng.fisher_in_chart(dist, "natural"), dist.fisher_natural(), rtol=1e-10, atol=1e-12
        )


def test_internal_pullback_matches_reparameterized_fisher() -> None:
    loss = ng.kl_loss(Gaussian(0.0, 1.0))
    for chart in ng.chart_names(Gaussian):
        a = ng.natural_gradient_at(Gaussian(0.4, 0.7), loss, chart)
        torch.testing.assert_close(
            a.fisher, ng.fisher_in_chart(Gaussian(0.4, 0.7), chart), rtol=1e-12, atol=1e-12
        )


def test_charts_round_trip() -> None:
    for dist in (
        Gaussian(0.4, 0.7),
        Bernoulli(0.3),
        Poisson(2.0),
        Exponential(0.5),
        Categorical(t(0.2, 0.5, 0.3)),
    ):
        for name in ng.chart_names(dist):
            c = ng.chart(dist, name)
            torch.testing.assert_close(
                c.to_params(c.from_params(dist.params)), dist.params, rtol=1e-12, atol=1e-12
            )


# ----------------------------------------------------------------------------- invariance
def test_one_natural_step_is_chart_invariant_to_first_order() -> None:
    loss = ng.kl_loss(Gaussian(0.0, 1.0))
    d0 = Gaussian(2.0, 0.5)
    charts = ("params", "log_sigma", "natural", "mean", "variance")
    nat, euc = [], []
    for lr in (0.02, 0.01, 0.005):
        steps = [ng.natural_step(d0, loss, c, lr).params for c in charts]
        nat.append(max(float((s - steps[0]).norm()) for s in steps))
        esteps = [ng.euclidean_step(d0, loss, c, lr).params for c in charts[:3]]
        euc.append(max(float((s - esteps[0]).norm()) for s in esteps))
    # natural: differences O(lr^2) (ratio ~4 per halving); Euclidean: O(lr) (ratio ~2) and much larger
    assert nat[0] / nat[1] > 3.5 and nat[1] / nat[2] > 3.5
    assert 1.8 < euc[0] / euc[1] < 2.2 and 1.8 < euc[1] / euc[2] < 2.2
    assert euc[2] > 50 * nat[2]


def test_small_step_trajectories_coincide() -> None:
    loss = ng.kl_loss(Gaussian(0.0, 1.0))
    d0 = Gaussian(1.5, 0.6)
    gaps = []
    for lr, steps in ((0.02, 50), (0.01, 100)):
        runs = [
            ng.descend(d0, loss, c, lr=lr, steps=steps).params
            for c in ("params", "log_sigma", "natural")
        ]
        gaps.append(max(float((r - runs[0]).norm(dim=-1).max()) for r in runs))
    assert gaps[1] < 0.6 * gaps[0] and gaps[1] < 0.02  # O(lr): the same continuous-time flow
    eruns = [
        ng.descend(d0, loss, c, method="euclidean", lr=0.01, steps=100).params
        for c in ("params", "log_sigma")
    ]
    assert float((eruns[0] - eruns[1]).norm(dim=-1).max()) > 10 * gaps[1]


def test_gaussian_mean_natural_gradient_is_variance_times_gradient() -> None:
    for sigma0 in (0.3, 1.0, 2.0):
        sub = ng.submanifold_chart(t(0.0, sigma0), [0], "mean_only")
        dist = Gaussian(0.8, sigma0)
        loss = ng.kl_loss(Gaussian(-0.5, 1.0))
        a = ng.natural_gradient_at(dist, loss, sub)
        torch.testing.assert_close(a.fisher, t(1 / sigma0**2).reshape(1, 1))
        torch.testing.assert_close(a.direction, sigma0**2 * a.grad, rtol=1e-12, atol=1e-14)


def test_bernoulli_natural_gradients() -> None:
    def loss(theta: torch.Tensor) -> torch.Tensor:  # any smooth loss of p
        p = theta[0]
        return (p - 0.8) ** 2 + torch.sin(3 * p)

    for p in (0.1, 0.5, 0.93):
        dist = Bernoulli(p)
        dl = 2 * (p - 0.8) + 3 * math.cos(3 * p)
        a = ng.natural_gradient_at(dist, loss, "params")
        assert abs(float(a.direction[0]) - p * (1 - p) * dl) < 1e-12
        b = ng.natural_gradient_at(dist, loss, "natural")  # logit chart: natural gradient = dL/dp
        assert abs(float(b.direction[0]) - dl) < 1e-10


# ----------------------------------------------------------------------------- proximal and KL-ball views
def test_kl_proximal_step_agrees_with_natural_step_to_second_order() -> None:
    loss = ng.kl_loss(Gaussian(0.0, 1.0))
    d0 = Gaussian(0.5, 0.8)
    for kd in ("new_old", "old_new"):
        for chart in ("params", "log_sigma", "natural"):
            diffs = [
                float(
                    (
                        ng.kl_proximal_step(d0, loss, chart, lr, kl_direction=kd).params
                        - ng.natural_step(d0, loss, chart, lr).params
                    ).norm()
                )
                for lr in (0.02, 0.01)
            ]
            assert 3.3 < diffs[0] / diffs[1] < 4.7, (kd, chart, diffs)


def test_mirror_descent_identity_is_exact() -> None:
    for target, start in (
        (Gaussian(0.0, 1.0), Gaussian(0.5, 0.8)),
        (Poisson(3.0), Poisson(1.2)),
        (Bernoulli(0.7), Bernoulli(0.2)),
    ):
        loss = ng.kl_loss(target)
        prox = ng.kl_proximal_step(start, loss, "mean", 0.3, kl_direction="new_old", tol=1e-13)
        nat = ng.natural_step(start, loss, "natural", 0.3)
        torch.testing.assert_close(prox.params, nat.params, rtol=1e-10, atol=1e-12)


def test_kl_ball_minimizer_tends_to_the_natural_gradient() -> None:
    d0 = Gaussian(2.0, 0.5)
    loss = ng.kl_loss(Gaussian(0.0, 1.0))
    nat = ng.natural_gradient_at(d0, loss, "params").direction
    angles = []
    for eps in (1e-2, 1e-4):
        d = ng.kl_ball_steepest_descent(d0, loss, "params", eps, num=720)
        cos = float(-(d @ nat) / (d.norm() * nat.norm()))
        angles.append(math.degrees(math.acos(min(1.0, cos))))
        assert abs(float(ng.kl_between(Gaussian, d0.params, d0.params + d)) - eps) < 1e-6 * eps
    assert angles[1] < 0.2 and angles[1] < angles[0] / 5  # angle ~ sqrt(eps)


# ----------------------------------------------------------------------------- trust region and descent
def test_trust_region_step_respects_exact_kl() -> None:
    start = Gaussian(0.0, 1.0)
    loss = ng.kl_loss(Gaussian(0.0, 0.05))
    for chart in ("params", "log_sigma", "natural"):
        for eps in (0.01, 0.5):
            res = ng.trust_region_step(start, loss, chart, eps)
            assert res.accepted and res.exact_kl <= eps and res.loss_after < res.loss_before
            assert res.quadratic_kl <= eps * (1 + 1e-12)
    raw = ng.trust_region_step(start, loss, "log_sigma", 0.5, line_search=False)
    assert abs(raw.quadratic_kl - 0.5) < 1e-12 and raw.exact_kl > 0.5  # the quadratic model fails


def test_newton_like_one_step_convergence() -> None:
    target = Gaussian(-1.0, 2.0)
    tr = ng.descend(Gaussian(1.0, 0.7), ng.kl_loss(target), "mean", lr=1.0, steps=1)
    torch.testing.assert_close(tr.params[-1], target.params, rtol=1e-12, atol=1e-12)
    tr = ng.descend(
        Gaussian(1.0, 0.7), ng.kl_loss(target, reverse=True), "natural", lr=1.0, steps=1
    )
    torch.testing.assert_close(tr.params[-1], target.params, rtol=1e-12, atol=1e-12)


def test_descend_records_and_trust_region_converges_in_every_chart() -> None:
    loss = ng.kl_loss(Gaussian(0.0, 1.0))
    d0 = Gaussian(2.0, 0.5)
    for chart in ("params", "log_sigma", "natural", "mean"):
        tr = ng.descend(d0, loss, chart, lr=1.0, trust_radius=0.5, steps=50, stop_below=1e-10)
        it = ng.iterations_to_tolerance(tr, 1e-10)
        assert it is not None and it <= 12, (chart, it)
        assert bool((tr.step_kl <= 0.5).all())
        assert bool((torch.diff(tr.losses) < 0).all())
        assert tr.coords.shape[0] == tr.params.shape[0] == tr.losses.shape[0] == tr.steps + 1
        assert len(tr.distributions()) == tr.steps + 1


def test_best_learning_rate_and_iterations() -> None:
    loss = ng.kl_loss(Gaussian(0.0, 1.0))
    lr, it = ng.best_learning_rate(
        Gaussian(1.0, 0.8), loss, "params", method="euclidean", lrs=(2.0, 1.0, 0.5, 0.2), steps=300
    )
    assert lr is not None and it is not None
    tr = ng.descend(
        Gaussian(1.0, 0.8), loss, "params", method="euclidean", lr=lr, steps=300, stop_below=1e-8
    )
    assert ng.iterations_to_tolerance(tr, 1e-8) == it
    assert ng.iterations_to_tolerance(t(3.0, 2.0, 1.0), 0.5) is None
    assert ng.iterations_to_tolerance(t(3.0, 2.0, 1.0), 2.0) == 1


def test_leaving_the_parameter_space_is_reported() -> None:
    loss = ng.kl_loss(Gaussian(0.0, 1.0))
    with pytest.raises(
        ValueError, match=r"step 1 of euclidean descent .* left the parameter space"
    ):
        ng.descend(
            Gaussian(0.0, 0.5),
            ng.kl_loss(Gaussian(0.0, 0.1)),
            "params",
            method="euclidean",
            lr=1.0,
            steps=3,
        )
    with pytest.raises(ValueError, match="left the parameter space"):
        ng.natural_step(Gaussian(2.0, 0.5), loss, "natural", 0.1)
    with pytest.raises(ValueError, match="exceeds max_loss"):
        ng.descend(
            Gaussian(0.5, 1.0),
            loss,
            "log_sigma",
            method="euclidean",
            lr=8.0,
            steps=20,
            max_loss=10.0,
        )


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda: ng.chart(Gaussian, "polar"), ValueError, "unknown chart"),
        (lambda: ng.chart(Bernoulli, "log_sigma"), ValueError, "unknown chart"),
        (lambda: ng.chart(Gaussian, 3), TypeError, "chart must be"),
        (lambda: ng.chart(int, "params"), TypeError, "family"),
        (lambda: ng.submanifold_chart(t(0.0, 1.0), [2]), ValueError, "distinct indices"),
        (lambda: ng.submanifold_chart(t(0.0, 1.0), []), TypeError, "non-empty"),
        (lambda: ng.kl_loss("N(0,1)"), TypeError, "target"),
        (lambda: ng.natural_gradient_at(t(0.0, 1.0), lambda th: th.sum()), TypeError, "dist"),
        (lambda: ng.natural_gradient_at(Gaussian(0.0, 1.0), lambda th: th), ValueError, "scalar"),
        (
            lambda: ng.natural_gradient_at(Gaussian(0.0, 1.0), lambda th: th.sum(), damping=-1.0),
            ValueError,
            "damping",
        ),
        (
            lambda: ng.natural_step(Gaussian(0.0, 1.0), lambda th: th.sum(), lr=0.0),
            ValueError,
            "lr",
        ),
        (
            lambda: ng.euclidean_step(Gaussian(0.0, 1.0), lambda th: th.sum(), lr=-1.0),
            ValueError,
            "lr",
        ),
        (
            lambda: ng.descend(Gaussian(0.0, 1.0), lambda th: th.sum(), method="adam"),
            ValueError,
            "method",
        ),
        (
            lambda: ng.descend(
                Gaussian(0.0, 1.0), lambda th: th.sum(), method="euclidean", trust_radius=0.1
            ),
            ValueError,
            "trust_radius",
        ),
        (
            lambda: ng.descend(Gaussian(0.0, 1.0), lambda th: th.sum(), steps=-1),
            ValueError,
            "steps",
        ),
        (
            lambda: ng.trust_region_step(Gaussian(0.0, 1.0), lambda th: th.sum(), radius=0.0),
            ValueError,
            "radius",
        ),
        (
            lambda: ng.trust_region_step(
                Gaussian(0.0, 1.0), lambda th: th.sum(), radius=0.1, shrink=1.0
            ),
            ValueError,
            "shrink",
        ),
        (
            lambda: ng.kl_proximal_step(
                Gaussian(0.0, 1.0), lambda th: th.sum(), kl_direction="sym"
            ),
            ValueError,
            "kl_direction",
        ),
        (
            lambda: ng.kl_proximal_step(
                Gaussian(2.0, 0.5),
                ng.kl_loss(Gaussian(0.0, 1.0)),
                "params",
                0.1,
                kl_direction="old_new",
                max_iter=8,
            ),
            ValueError,
            "reduce lr",
        ),
        (
            lambda: ng.kl_ball_steepest_descent(Poisson(1.0), lambda th: th.sum(), "params", 0.1),
            ValueError,
            "2-D",
        ),
        (
            lambda: ng.kl_ball_steepest_descent(
                Gaussian(0.0, 1.0), lambda th: th.sum(), "params", -0.1
            ),
            ValueError,
            "radius",
        ),
        (lambda: ng.iterations_to_tolerance(t(1.0), 0.0), ValueError, "tol"),
        (
            lambda: ng.best_learning_rate(Gaussian(0.0, 1.0), lambda th: th.sum(), lrs=()),
            ValueError,
            "lrs",
        ),
        (lambda: ng.fisher_vector_product(Gaussian(0.0, 1.0))(t(1.0)), ValueError, "shape"),
    ],
)
def test_bad_inputs(call, exc, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(exc, match=match):
        call()


# ----------------------------------------------------------------------------- exercise self-checks
def test_exercise_checks_accept_right_and_reject_wrong_answers() -> None:
    from igbook.exercises import natural_gradient as ex

    def step_logit(p: float, q: float, rho: float) -> float:
        eta = math.log(p / (1 - p)) - rho * (p - q) / (p * (1 - p))
        return 1 / (1 + math.exp(-eta))

    assert ex.check_bernoulli_fit_steps(lambda p, q, r: p - r * (p - q), step_logit)
    wrong = ex.check_bernoulli_fit_steps(
        lambda p, q, r: p - r * (p - q) / (p * (1 - p)), step_logit
    )
    assert not wrong and "Precondition" in wrong.message
    assert not ex.check_bernoulli_fit_steps(lambda p, q, r: p - r * (p - q), lambda p, q, r: 1 / 0)
    right = ex.check_log_sigma_natural_gradient(
        lambda mu, s, m, t: [mu - m, 0.5 * (1 - (t**2 + (mu - m) ** 2) / s**2)]
    )
    assert right
    eucl = ex.check_log_sigma_natural_gradient(
        lambda mu, s, m, t: [(mu - m) / s**2, 1 - (t**2 + (mu - m) ** 2) / s**2]
    )
    assert not eucl and "Euclidean" in eucl.message

    def trust(F: torch.Tensor, g: torch.Tensor, eps: float) -> torch.Tensor:
        v = torch.linalg.solve(F, g)
        return -math.sqrt(2 * eps / float(g @ v)) * v

    assert ex.check_trust_region_step(trust)
    sign = ex.check_trust_region_step(lambda F, g, e: -trust(F, g, e))
    assert not sign and "sign" in sign.message
    assert ex.check_euclidean_discrepancy(4.0) and not ex.check_euclidean_discrepancy(0.25)
    assert not ex.check_euclidean_discrepancy("four")


def test_approximate_steps_follow_their_formulas_and_are_not_invariant() -> None:
    start, loss = Gaussian(2.0, 0.5), ng.kl_loss(Gaussian(0.0, 1.0))
    for c in ("params", "natural", "mean"):
        nat = ng.natural_gradient_at(start, loss, c)
        phi, g, f = nat.coords, nat.grad, nat.fisher
        lr = 1e-3
        diag = ng.approximate_step(start, loss, c, lr, method="diagonal_fisher")
        adam = ng.approximate_step(start, loss, c, lr, method="adam_first_step")
        ch = ng.chart(Gaussian, c)
        torch.testing.assert_close(
            diag.params, ch.to_params(phi - lr * g / f.diagonal()), rtol=1e-12, atol=0
        )
        torch.testing.assert_close(
            adam.params, ch.to_params(phi - lr * torch.sign(g)), rtol=1e-12, atol=0
        )
    # first-order disagreement between charts (natural steps agree to second order)
    lr = 1e-5
    for method in ng.APPROXIMATIONS:
        a = ng.approximate_step(start, loss, "params", lr, method=method).params
        b = ng.approximate_step(start, loss, "natural", lr, method=method).params
        n = (
            ng.natural_step(start, loss, "params", lr).params
            - ng.natural_step(start, loss, "natural", lr).params
        ).norm()
        assert float((a - b).norm()) > 1e3 * float(n)
    with pytest.raises(ValueError, match="method"):
        ng.approximate_step(start, loss, "params", 0.1, method="kfac")
    with pytest.raises(ValueError, match="eps"):
        ng.approximate_step(start, loss, "params", 0.1, eps=-1.0)
    with pytest.raises(ValueError, match="lr"):
        ng.approximate_step(start, loss, "params", 0.0)


def test_badly_scaled_but_well_determined_fisher_is_solved() -> None:
    # a diagonal Fisher spanning 170 orders of magnitude is exact to solve (van der Sluis):
    # only a system singular after diagonal scaling is refused
    from igbook.natgrad import natural_gradient

    f = torch.diag(torch.tensor([1e-170, 2.0], dtype=torch.float64))
    g = torch.tensor([3e-170, 4.0], dtype=torch.float64)
    torch.testing.assert_close(
        natural_gradient(f, g), torch.tensor([3.0, 2.0], dtype=torch.float64), rtol=1e-15, atol=0
    )
    with pytest.raises(ValueError, match="singular"):
        natural_gradient(
            torch.tensor([[1.0, 1.0], [1.0, 1.0 + 1e-17]], dtype=torch.float64),
            torch.ones(2, dtype=torch.float64),
        )
