"""Fisher-Rao distances: closed forms against geodesic lengths, KL, and metric axioms."""

from __future__ import annotations

import math
import re

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from igbook.families import Bernoulli, Categorical, Exponential, Gaussian, Poisson
from igbook.geometry import (
    curve_length,
    ellipse_points,
    fisher_ellipse,
    fisher_rao_bernoulli,
    fisher_rao_binomial,
    fisher_rao_categorical,
    fisher_rao_distance,
    fisher_rao_exponential,
    fisher_rao_gaussian,
    fisher_rao_poisson,
    gaussian_geodesic,
)

D = torch.float64


def gaussian_metric(th: torch.Tensor) -> torch.Tensor:
    return Gaussian(th[0], th[1]).fisher()


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ((-1.0, 0.5), (2.0, 1.5)),
        ((0.0, 0.3), (0.0, 3.0)),
        ((1.0, 1.0), (1.2, 0.9)),
        ((-3.0, 2.0), (3.0, 2.0)),
    ],
)
def test_gaussian_distance_is_the_geodesic_length(a, b) -> None:  # type: ignore[no-untyped-def]
    path = gaussian_geodesic(*a, *b, num=4001)
    torch.testing.assert_close(path[0], torch.tensor(a, dtype=D), rtol=0, atol=1e-10)
    torch.testing.assert_close(path[-1], torch.tensor(b, dtype=D), rtol=0, atol=1e-10)
    length = curve_length(path, gaussian_metric)
    torch.testing.assert_close(length, fisher_rao_gaussian(*a, *b), rtol=1e-6, atol=0)


def test_geodesic_is_shorter_than_other_paths() -> None:
    a, b = (-1.0, 0.5), (2.0, 0.5)
    straight = torch.stack(
        [torch.linspace(a[0], b[0], 2001, dtype=D), torch.full((2001,), 0.5, dtype=D)], 1
    )
    assert (
        float(curve_length(straight, gaussian_metric)) > float(fisher_rao_gaussian(*a, *b)) * 1.05
    )


@pytest.mark.parametrize(
    ("p", "q", "closed"),
    [
        (Bernoulli(0.2), Bernoulli(0.7), lambda p, q: fisher_rao_bernoulli(p.p, q.p)),
        (Poisson(1.0), Poisson(9.0), lambda p, q: fisher_rao_poisson(p.rate, q.rate)),
        (Exponential(0.5), Exponential(4.0), lambda p, q: fisher_rao_exponential(p.rate, q.rate)),
    ],
)
def test_one_dimensional_distances_integrate_sqrt_fisher(p, q, closed) -> None:  # type: ignore[no-untyped-def]
    t = torch.linspace(float(p.params[0]), float(q.params[0]), 20001, dtype=D).unsqueeze(1)
    length = curve_length(t, lambda th: type(p).from_params(th).fisher())
    torch.testing.assert_close(length, closed(p, q).to(D), rtol=1e-7, atol=0)
    torch.testing.assert_close(fisher_rao_distance(p, q), closed(p, q))


def test_categorical_distance_is_a_great_circle_on_the_sphere_of_radius_two() -> None:
    p = torch.tensor([0.1, 0.3, 0.6], dtype=D)
    q = torch.tensor([0.5, 0.4, 0.1], dtype=D)
    # geodesic: normalized slerp between sqrt p and sqrt q, mapped back by squaring
    a, b = torch.sqrt(p), torch.sqrt(q)
    ang = torch.arccos(a @ b)
    ts = torch.linspace(0, 1, 4001, dtype=D)
    path = (
        (torch.sin((1 - ts) * ang)[:, None] * a + torch.sin(ts * ang)[:, None] * b) / torch.sin(ang)
    ) ** 2
    length = curve_length(path[:, :2], lambda th: Categorical.from_params(th).fisher())
    torch.testing.assert_close(length, fisher_rao_categorical(p, q), rtol=1e-6, atol=0)


def test_bernoulli_is_binomial_one_and_categorical_two() -> None:
    torch.testing.assert_close(
        fisher_rao_bernoulli(0.2, 0.6),
        fisher_rao_categorical(
            torch.tensor([0.8, 0.2], dtype=D), torch.tensor([0.4, 0.6], dtype=D)
        ),
    )
    torch.testing.assert_close(fisher_rao_binomial(9, 0.2, 0.6), 3 * fisher_rao_bernoulli(0.2, 0.6))


@pytest.mark.parametrize(
    ("p", "q"),
    [
        (Gaussian(0.0, 1.0), Gaussian(1e-3, 1.0 + 1e-3)),
        (
            Categorical(torch.tensor([0.2, 0.3, 0.5], dtype=D)),
            Categorical(torch.tensor([0.2005, 0.2995, 0.5], dtype=D)),
        ),
        (Poisson(3.0), Poisson(3.003)),
        (Exponential(2.0), Exponential(2.002)),
        (Bernoulli(0.4), Bernoulli(0.401)),
    ],
)
def test_distance_is_sqrt_two_kl_for_nearby_points(p, q) -> None:  # type: ignore[no-untyped-def]
    d = fisher_rao_distance(p, q)
    torch.testing.assert_close(d, torch.sqrt(2 * p.kl(q)).to(d.dtype), rtol=5e-3, atol=0)


finite = st.floats(-3, 3)
pos = st.floats(0.1, 3)


@settings(max_examples=60, deadline=None)
@given(finite, pos, finite, pos, finite, pos)
@example(
    0.0, 0.5, 7.134303011998335e-10, 0.5, 1.0, 0.5
)  # nearby points: 1 + z used to round z away
def test_gaussian_metric_axioms(m1, s1, m2, s2, m3, s3) -> None:  # type: ignore[no-untyped-def]
    d12 = float(fisher_rao_gaussian(m1, s1, m2, s2))
    d21 = float(fisher_rao_gaussian(m2, s2, m1, s1))
    d13 = float(fisher_rao_gaussian(m1, s1, m3, s3))
    d23 = float(fisher_rao_gaussian(m2, s2, m3, s3))
    assert d12 >= 0 and abs(d12 - d21) < 1e-9 * max(1, d12)
    assert d13 <= d12 + d23 + 1e-9
    assert float(fisher_rao_gaussian(m1, s1, m1, s1)) == 0.0


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(0.01, 1), min_size=3, max_size=3),
    st.lists(st.floats(0.01, 1), min_size=3, max_size=3),
    st.lists(st.floats(0.01, 1), min_size=3, max_size=3),
)
def test_categorical_metric_axioms(a, b, c) -> None:  # type: ignore[no-untyped-def]
    p, q, r = (torch.tensor(v, dtype=D) / sum(v) for v in (a, b, c))
    dpq, dqp = fisher_rao_categorical(p, q), fisher_rao_categorical(q, p)
    assert abs(float(dpq - dqp)) < 1e-12
    assert float(fisher_rao_categorical(p, r)) <= float(dpq + fisher_rao_categorical(q, r)) + 1e-9
    assert float(dpq) <= math.pi + 1e-12  # at most half the great circle of radius 2


def test_distances_broadcast_over_a_grid() -> None:
    mu = torch.linspace(-2, 2, 5, dtype=D)[:, None]
    sig = torch.linspace(0.5, 2, 4, dtype=D)[None, :]
    d = fisher_rao_gaussian(mu, sig, 0.0, 1.0)
    assert d.shape == (5, 4)
    torch.testing.assert_close(d[2, 1], fisher_rao_gaussian(0.0, float(sig[0, 1]), 0.0, 1.0))


def test_fisher_ellipse_axes() -> None:
    f = torch.tensor([[4.0, 0.0], [0.0, 1.0]], dtype=D)
    e = fisher_ellipse(torch.zeros(2, dtype=D), f, eps=1.0)
    torch.testing.assert_close(e.semi_axes, torch.tensor([1.0, 0.5], dtype=D))
    assert abs(abs(e.angle) - 90.0) < 1e-9  # long axis along the direction of small Fisher (y)
    pts = ellipse_points(torch.tensor([1.0, -1.0], dtype=D), f, eps=0.25, num=50)
    d = pts - torch.tensor([1.0, -1.0], dtype=D)
    torch.testing.assert_close(
        torch.einsum("ni,ij,nj->n", d, f, d), torch.full((50,), 0.25, dtype=D)
    )


BAD = [
    (lambda: fisher_rao_gaussian(0.0, -1.0, 0.0, 1.0), "sigma1"),
    (lambda: fisher_rao_gaussian(0.0, 1.0, float("nan"), 1.0), "mu2"),
    (lambda: fisher_rao_categorical(torch.tensor([0.5, 0.6]), torch.tensor([0.5, 0.5])), "p"),
    (
        lambda: fisher_rao_categorical(torch.tensor([0.5, 0.5]), torch.tensor([0.2, 0.3, 0.5])),
        "categories",
    ),
    (lambda: fisher_rao_binomial(0, 0.2, 0.3), "n"),
    (lambda: fisher_rao_binomial(3, 1.2, 0.3), "p"),
    (lambda: fisher_rao_poisson(0.0, 1.0), "rate1"),
    (lambda: fisher_rao_exponential(1.0, -2.0), "rate2"),
    (lambda: fisher_rao_distance(Gaussian(0.0, 1.0), Poisson(1.0)), "same family"),
    (
        lambda: fisher_ellipse(torch.zeros(2), torch.tensor([[1.0, 0.0], [0.0, -1.0]])),
        "positive definite",
    ),
    (lambda: fisher_ellipse(torch.zeros(3), torch.eye(3)), "2x2"),
    (lambda: ellipse_points(torch.zeros(2), torch.eye(2), eps=0.0), "eps"),
    (lambda: curve_length(torch.zeros(1, 2), lambda t: torch.eye(2)), "points"),
    (lambda: gaussian_geodesic(0.0, 1.0, 1.0, 1.0, num=1), "num"),
    (lambda: fisher_rao_gaussian(torch.zeros(3), 1.0, torch.zeros(2), 1.0), "broadcast"),
]


@pytest.mark.parametrize(("call", "name"), BAD, ids=[f"{i}" for i in range(len(BAD))])
def test_bad_input(call, name: str) -> None:  # type: ignore[no-untyped-def]
    # the name as a word of the message (a one-letter name must not match inside other words)
    with pytest.raises((ValueError, TypeError), match=rf"(?<![\w.]){re.escape(name)}(?!\w)"):
        call()


def test_gaussian_distance_is_accurate_for_nearby_points() -> None:
    """For nearby points d ~ sqrt((dmu^2 + 2 dsigma^2)) / sigma to full relative precision."""
    for dmu, ds in ((7e-10, 0.0), (0.0, 3e-12), (1e-9, -2e-9), (1e-150, 0.0)):
        ds = (0.5 + ds) - 0.5  # the increment that is actually represented (exact subtraction)
        d = float(fisher_rao_gaussian(0.0, 0.5, dmu, 0.5 + ds))
        local = math.sqrt(dmu**2 + 2 * ds**2) / 0.5
        assert d > 0 and abs(d - local) <= 1e-6 * local, (dmu, ds, d, local)


def test_gaussian_distance_matches_a_geodesic_found_by_energy_minimization() -> None:
    """Independent of the closed-form geodesic: minimize the discrete energy
    sum_k |Delta_k|^2_F (K segments) over the interior points; the minimizer's length
    approaches the closed-form distance (and no path is shorter)."""
    a, b = torch.tensor([-1.0, 0.5], dtype=D), torch.tensor([2.0, 1.5], dtype=D)
    k = 64
    ts = torch.linspace(0, 1, k + 1, dtype=D)[1:-1, None]
    inner = (a + ts * (b - a)).clone().requires_grad_(True)  # start from the straight line

    def energy(pts: torch.Tensor) -> torch.Tensor:
        path = torch.cat([a[None], pts, b[None]])
        mids, deltas = 0.5 * (path[1:] + path[:-1]), path[1:] - path[:-1]
        sig = mids[:, 1]
        # closed-form Gaussian metric diag(1, 2) / sigma^2 at the midpoints
        return k * ((deltas[:, 0] ** 2 + 2 * deltas[:, 1] ** 2) / sig**2).sum()

    opt = torch.optim.LBFGS(
        [inner],
        lr=1.0,
        max_iter=500,
        tolerance_grad=1e-12,
        tolerance_change=1e-15,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        e = energy(inner)
        e.backward()
        return e

    opt.step(closure)
    path = torch.cat([a[None], inner.detach(), b[None]])
    length = curve_length(path, gaussian_metric)
    exact = fisher_rao_gaussian(a[0], a[1], b[0], b[1])
    straight = curve_length(torch.cat([a[None], (a + ts * (b - a)), b[None]]), gaussian_metric)
    assert float(straight) > float(exact) * 1.01  # the straight line is measurably longer
    torch.testing.assert_close(length, exact, rtol=1e-4, atol=0)
    assert float(length) >= float(exact) * (
        1 - 1e-4
    )  # (midpoint quadrature: length is accurate to O(1/K^2))


@settings(max_examples=40, deadline=None)
@given(
    st.floats(0.02, 0.98),
    st.floats(0.02, 0.98),
    st.floats(0.02, 0.98),
    st.floats(0.1, 20),
    st.floats(0.1, 20),
    st.floats(0.1, 20),
)
def test_one_dimensional_distances_are_metrics(p1, p2, p3, r1, r2, r3) -> None:  # type: ignore[no-untyped-def]
    """Symmetry, zero on the diagonal and the triangle inequality for Bernoulli, Binomial, Poisson, Exponential."""
    for dist in (
        lambda u, v: fisher_rao_bernoulli(u, v),
        lambda u, v: fisher_rao_binomial(7, u, v),
    ):
        d12, d21, d13, d23 = (float(dist(*uv)) for uv in ((p1, p2), (p2, p1), (p1, p3), (p2, p3)))
        assert d12 >= 0 and abs(d12 - d21) <= 1e-12 * max(1.0, d12) and float(dist(p1, p1)) == 0.0
        assert d13 <= d12 + d23 + 1e-12
    for dist in (fisher_rao_poisson, fisher_rao_exponential):
        d12, d21, d13, d23 = (float(dist(*uv)) for uv in ((r1, r2), (r2, r1), (r1, r3), (r2, r3)))
        assert d12 >= 0 and abs(d12 - d21) <= 1e-12 * max(1.0, d12) and float(dist(r1, r1)) == 0.0
        assert d13 <= d12 + d23 + 1e-12


def test_ellipse_conventions_squared_length_and_kl_ball() -> None:
    """ellipse_points(eps) is d^T F d = eps; with eps = 2 epsilon the points sit at
    KL = epsilon (1 + O(sqrt(epsilon)))."""
    p = Gaussian(0.4, 0.7)
    worst = []
    for epsilon in (1e-3, 1e-4, 1e-5):
        pts = ellipse_points(p.params, p.fisher(), eps=2 * epsilon, num=24)
        d = pts - p.params
        torch.testing.assert_close(
            torch.einsum("ni,ij,nj->n", d, p.fisher(), d),
            torch.full((24,), 2 * epsilon, dtype=torch.float64),
            rtol=1e-10,
            atol=0,
        )
        kl = torch.stack(
            [p.kl(Gaussian(float(m), float(s))) for m, s in pts]
        )  # closed-form KL, no Fisher
        worst.append(float((kl / epsilon - 1).abs().max()))
    assert worst[0] < 3 * math.sqrt(1e-3)
    assert all(
        2.5 < a / b < 4.0 for a, b in zip(worst, worst[1:])
    )  # the cubic term: O(sqrt(epsilon)) relative
