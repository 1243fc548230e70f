"""Mirror maps, mirror descent, exponentiated gradient and the mirror-descent = natural-gradient identity."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import grad

from igbook.families import Bernoulli, Categorical, Gamma, Gaussian, MultivariateGaussian, Poisson
from igbook.mirror import (
    EuclideanMap,
    ExponentialFamilyMap,
    NegativeEntropy,
    QuadraticMap,
    bregman_divergence,
    exponentiated_gradient,
    exponentiated_gradient_step,
    mirror_descent,
    mirror_step,
    natural_gradient_descent_natural,
    project_simplex,
    projected_gradient_descent,
    proximal_objective,
)
from igbook.natgrad import natural_step

D = torch.float64
M = torch.tensor([[2.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 3.0]], dtype=D)


def maps_and_points() -> list[tuple[object, torch.Tensor, torch.Tensor]]:
    return [
        (
            EuclideanMap(),
            torch.tensor([0.3, -1.0, 2.0], dtype=D),
            torch.tensor([1.0, 0.5, -0.5], dtype=D),
        ),
        (
            QuadraticMap(M),
            torch.tensor([0.3, -1.0, 2.0], dtype=D),
            torch.tensor([1.0, 0.5, -0.5], dtype=D),
        ),
        (
            NegativeEntropy(),
            torch.tensor([0.2, 0.5, 0.3], dtype=D),
            torch.tensor([0.6, 0.1, 0.3], dtype=D),
        ),
        (ExponentialFamilyMap(Gaussian), Gaussian(0.7, 1.3).mean, Gaussian(-0.4, 0.8).mean),
        (
            ExponentialFamilyMap(Categorical),
            torch.tensor([0.2, 0.5], dtype=D),
            torch.tensor([0.6, 0.1], dtype=D),
        ),
        (ExponentialFamilyMap(Gamma, "natural"), Gamma(3.2, 1.7).natural, Gamma(0.4, 2.0).natural),
    ]


IDS = ["euclidean", "quadratic", "negentropy", "gaussian-mean", "categorical-mean", "gamma-natural"]


@pytest.mark.parametrize(("mm", "x", "y"), maps_and_points(), ids=IDS)
def test_maps_are_inverse_and_bregman_matches_autograd(mm, x, y) -> None:  # type: ignore[no-untyped-def]
    torch.testing.assert_close(mm.to_primal(mm.to_dual(x)), x, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(mm.to_dual(x), grad(mm.potential)(x), rtol=1e-9, atol=1e-11)
    b = mm.bregman(x, y)
    torch.testing.assert_close(b, bregman_divergence(mm.potential, x, y), rtol=1e-9, atol=1e-12)
    assert float(b) > 0
    torch.testing.assert_close(mm.bregman(x, x), torch.zeros((), dtype=D), rtol=0, atol=1e-12)
    # Fenchel-Young: phi(x) + phi*(grad phi(x)) = <x, grad phi(x)>
    yx = mm.to_dual(x)
    torch.testing.assert_close(mm.potential(x) + mm.conjugate(yx), x @ yx, rtol=1e-10, atol=1e-12)


def test_special_bregman_divergences() -> None:
    x, y = torch.tensor([0.3, -1.0, 2.0], dtype=D), torch.tensor([1.0, 0.5, -0.5], dtype=D)
    torch.testing.assert_close(EuclideanMap().bregman(x, y), 0.5 * ((x - y) ** 2).sum())
    torch.testing.assert_close(QuadraticMap(M).bregman(x, y), 0.5 * (x - y) @ M @ (x - y))
    p, q = torch.tensor([0.2, 0.5, 0.3], dtype=D), torch.tensor([0.6, 0.1, 0.3], dtype=D)
    torch.testing.assert_close(
        NegativeEntropy().bregman(p, q), (p * torch.log(p / q)).sum(), rtol=1e-12, atol=1e-14
    )
    # mean coordinates: B_{A*}(mu_p||mu_q) = KL(p||q); natural coordinates: the arguments swap
    a, b = Gamma(3.2, 1.7), Gamma(0.4, 2.0)
    torch.testing.assert_close(
        ExponentialFamilyMap(Gamma).bregman(a.mean, b.mean), a.kl(b), rtol=1e-9, atol=1e-12
    )
    torch.testing.assert_close(
        ExponentialFamilyMap(Gamma, "natural").bregman(b.natural, a.natural),
        a.kl(b),
        rtol=1e-10,
        atol=1e-12,
    )


@pytest.mark.parametrize(("mm", "x", "y"), maps_and_points(), ids=IDS)
def test_mirror_step_minimizes_the_proximal_objective(mm, x, y) -> None:  # type: ignore[no-untyped-def]
    g = torch.tensor([0.3, -0.2, 0.1][: x.shape[0]], dtype=D)
    if isinstance(mm, NegativeEntropy):
        g = g - g.mean()  # the simplex constraint: only the tangential part matters
    lr = 0.4
    x_new = mirror_step(mm, x, g, lr)
    obj = proximal_objective(mm, x, g, lr)
    stationarity = grad(obj)(x_new)
    if isinstance(mm, NegativeEntropy):
        stationarity = stationarity - stationarity.mean()  # a Lagrange multiplier for sum(x) = 1
    torch.testing.assert_close(stationarity, torch.zeros_like(x), rtol=0, atol=1e-12)
    # strictly smaller than at nearby admissible points
    torch.manual_seed(0)
    for _ in range(5):
        d = 1e-3 * torch.randn_like(x)
        if isinstance(mm, NegativeEntropy):
            d = d - d.mean()
        assert float(obj(x_new + d)) > float(obj(x_new))


def test_euclidean_and_quadratic_mirror_descent_are_gradient_descent() -> None:
    a = torch.tensor([[3.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.5, 1.0]], dtype=D)
    f_grad = lambda x: a @ x - 1.0  # noqa: E731
    x0 = torch.tensor([1.0, -2.0, 0.5], dtype=D)
    md = mirror_descent(EuclideanMap(), f_grad, x0, 0.1, 20)
    x, gd = x0, [x0]
    for _ in range(20):
        x = x - 0.1 * f_grad(x)
        gd.append(x)
    torch.testing.assert_close(md, torch.stack(gd), rtol=0, atol=1e-14)
    mdq = mirror_descent(QuadraticMap(M), f_grad, x0, 0.1, 5)
    x = x0
    for t in range(5):
        x = x - 0.1 * torch.linalg.solve(M, f_grad(x))
        torch.testing.assert_close(mdq[t + 1], x, rtol=1e-12, atol=1e-13)


def _simplex_loss(x: torch.Tensor) -> torch.Tensor:
    q = torch.tensor([[2.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 3.0]], dtype=D)
    return 0.5 * x @ q @ x + torch.tensor([1.0, -0.5, 0.3], dtype=D) @ x


def test_exponentiated_gradient_is_categorical_mirror_descent_and_natural_gradient() -> None:
    """EG on the simplex = MD with A* of the categorical family = NGD in its natural parameters."""
    x0 = torch.tensor([0.2, 0.5, 0.3], dtype=D)
    steps, lr = 15, 0.3
    eg = exponentiated_gradient(grad(_simplex_loss), x0, lr, steps)
    full = lambda mu: torch.cat([mu, (1 - mu.sum()).reshape(1)])  # noqa: E731
    loss_mu = lambda mu: _simplex_loss(full(mu))  # noqa: E731
    md = mirror_descent(ExponentialFamilyMap(Categorical), grad(loss_mu), x0[:2], lr, steps)
    ngd = natural_gradient_descent_natural(
        Categorical, loss_mu, Categorical.natural_from_mean(x0[:2]), lr, steps
    )
    torch.testing.assert_close(eg[:, :2], md, rtol=0, atol=1e-12)
    probs = torch.stack([Categorical.mean_from_natural(e) for e in ngd])
    torch.testing.assert_close(probs, md, rtol=0, atol=1e-12)
    # in natural parameters: lambda_k <- lambda_k - lr (g_k - g_K)
    lam = torch.log(x0[:2] / x0[2])
    for t in range(steps):
        g = grad(_simplex_loss)(eg[t])
        lam = lam - lr * (g[:2] - g[2])
        torch.testing.assert_close(lam, torch.log(eg[t + 1, :2] / eg[t + 1, 2]), rtol=0, atol=1e-12)
    # one EG step by the closed form
    g = grad(_simplex_loss)(x0)
    want = x0 * torch.exp(-lr * g)
    torch.testing.assert_close(
        exponentiated_gradient_step(x0, g, lr), want / want.sum(), rtol=1e-14, atol=1e-15
    )


def _duality_problem(family):  # type: ignore[no-untyped-def]
    """A start point of ``family`` and a non-linear loss of the mean parameter."""
    start = {
        Gaussian: Gaussian(0.5, 1.5),
        Poisson: Poisson(2.0),
        Bernoulli: Bernoulli(0.3),
        MultivariateGaussian: MultivariateGaussian(
            torch.tensor([0.1, -0.2], dtype=D), torch.tensor([[1.0, 0.3], [0.3, 0.8]], dtype=D)
        ),
        Gamma: Gamma(2.0, 1.5),
    }[family]
    target = start.mean * 1.1 + 0.05

    def loss(mu: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((mu - target) ** 2).sum() + 0.1 * torch.cos(mu).sum()

    return start, loss


@pytest.mark.parametrize("family", [Gaussian, Poisson, Bernoulli, MultivariateGaussian, Gamma])
def test_mirror_descent_with_kl_proximity_is_natural_gradient_descent(family) -> None:  # type: ignore[no-untyped-def]
    start, loss = _duality_problem(family)

    md = mirror_descent(ExponentialFamilyMap(family), grad(loss), start.mean, 0.2, 12)
    ngd = natural_gradient_descent_natural(family, loss, start.natural, 0.2, 12)
    md_natural = torch.stack([family.natural_from_mean(mu) for mu in md])
    torch.testing.assert_close(md_natural, ngd, rtol=0, atol=1e-12)


@pytest.mark.parametrize("family", [Gaussian, Poisson, Bernoulli, MultivariateGaussian, Gamma])
def test_mirror_descent_with_log_partition_is_natural_gradient_descent_in_mean_coordinates(
    family,
) -> None:  # type: ignore[no-untyped-def]
    """The dual statement: MD with phi = A on eta is NGD in mu (Fisher pulled back to the mean chart)."""
    start, loss_of_mean = _duality_problem(family)

    def loss_of_params(theta: torch.Tensor) -> torch.Tensor:
        return loss_of_mean(family.mean_from_natural(family.natural_from_params(theta)))

    steps, lr = 8, 0.1
    md = mirror_descent(
        ExponentialFamilyMap(family, coordinates="natural"),
        grad(lambda eta: loss_of_mean(family.mean_from_natural(eta))),
        start.natural,
        lr,
        steps,
    )
    q, ngd = start, [start.mean]
    for _ in range(steps):
        q = natural_step(q, loss_of_params, "mean", lr)
        ngd.append(q.mean)
    md_mean = torch.stack([family.mean_from_natural(eta) for eta in md])
    torch.testing.assert_close(md_mean, torch.stack(ngd), rtol=1e-10, atol=1e-10)
    # the proximity term of the step is KL(q_t || q_{t+1})
    prox = ExponentialFamilyMap(family, coordinates="natural").bregman(md[1], md[0])
    torch.testing.assert_close(
        prox, family.from_natural(md[0]).kl(family.from_natural(md[1])), rtol=1e-9, atol=1e-12
    )


def test_exponentiated_gradient_with_entropy_converges_geometrically_to_gibbs() -> None:
    """EG on <x, l> - H(x): log-ratios contract by (1 - lr) per step towards softmax(-l)."""
    ell = torch.tensor([0.7, -0.2, 0.1, 1.3], dtype=D)
    gibbs = torch.softmax(-ell, -1)

    def free_energy(x: torch.Tensor) -> torch.Tensor:
        return x @ ell + NegativeEntropy().potential(x)

    torch.testing.assert_close(free_energy(gibbs), -torch.logsumexp(-ell, -1), rtol=0, atol=1e-14)
    x0 = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=D)
    eta_star = Categorical.natural_from_mean(gibbs[:-1])
    for lr in (0.4, 1.0, 1.6):
        path = exponentiated_gradient(grad(free_energy), x0, lr, 60)
        err = torch.stack([Categorical.natural_from_mean(x[:-1]) for x in path]) - eta_star
        torch.testing.assert_close(err[1:], (1 - lr) * err[:-1], rtol=0, atol=1e-12)
        torch.testing.assert_close(path[-1], gibbs, rtol=0, atol=1e-10)


def test_exponentiated_gradient_regret_bound() -> None:
    """Online linear losses in [-1, 1]: regret of EG with eta = sqrt(2 log n / T) is at most sqrt(2 T log n)."""
    g = torch.Generator().manual_seed(0)
    n, t_max = 8, 400
    losses = 2 * torch.rand(t_max, n, generator=g, dtype=D) - 1
    losses[:, 3] -= 0.3  # one better expert
    eta = math.sqrt(2 * math.log(n) / t_max)
    x = torch.full((n,), 1.0 / n, dtype=D)
    total = torch.zeros((), dtype=D)
    for t in range(t_max):
        total = total + losses[t] @ x
        x = exponentiated_gradient_step(x, losses[t], eta)
    regret = float(total - losses.sum(0).min())
    assert regret <= math.sqrt(2 * t_max * math.log(n))
    assert regret > 0


@settings(max_examples=60, deadline=None)
@given(v=st.lists(st.floats(-5, 5), min_size=2, max_size=7))
def test_projection_onto_simplex_satisfies_the_variational_inequality(v: list[float]) -> None:
    v_t = torch.tensor(v, dtype=D)
    p = project_simplex(v_t)
    assert bool((p >= 0).all())
    assert abs(float(p.sum()) - 1) < 1e-12
    # <v - p, q - p> <= 0 for every q in the simplex: check the vertices
    for k in range(len(v)):
        e = torch.zeros(len(v), dtype=D)
        e[k] = 1
        assert float((v_t - p) @ (e - p)) <= 1e-12
    # a point already on the simplex is its own projection
    torch.testing.assert_close(project_simplex(p), p, rtol=0, atol=1e-12)


def test_projection_batches() -> None:
    v = torch.tensor([[0.5, 2.0, -1.0], [0.2, 0.3, 0.1]], dtype=D)
    out = project_simplex(v)
    torch.testing.assert_close(out[0], torch.tensor([0.0, 1.0, 0.0], dtype=D))
    torch.testing.assert_close(out[1], torch.tensor([0.2, 0.3, 0.1], dtype=D) + 0.4 / 3)


def test_projected_gradient_reaches_the_boundary_exponentiated_gradient_does_not() -> None:
    c = torch.tensor([2.0, 0.0, -0.5], dtype=D)
    loss_grad = lambda x: x - c  # noqa: E731   minimizer over the simplex at a vertex
    x0 = torch.tensor([0.2, 0.5, 0.3], dtype=D)
    pgd = projected_gradient_descent(loss_grad, x0, 0.5, 30)
    eg = exponentiated_gradient(loss_grad, x0, 0.5, 30)
    assert bool((pgd[-1] == 0).any())
    assert bool((eg > 0).all())
    assert float(eg[-1, 0]) > float(eg[0, 0])


def test_learning_rate_schedules() -> None:
    x0 = torch.tensor([0.2, 0.5, 0.3], dtype=D)
    gr = grad(_simplex_loss)
    a = exponentiated_gradient(gr, x0, lambda t: 0.3 / (t + 1), 5)
    b = exponentiated_gradient(gr, x0, [0.3 / (t + 1) for t in range(5)], 5)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: mirror_step(EuclideanMap(), torch.zeros(2), torch.zeros(2), 0.0), "lr"),
        (lambda: mirror_step(EuclideanMap(), torch.zeros(2), torch.zeros(2), float("nan")), "lr"),
        (lambda: mirror_step(EuclideanMap(), torch.zeros(2), torch.zeros(3), 0.1), "grad"),
        (
            lambda: mirror_step(
                EuclideanMap(), torch.zeros(2), torch.tensor([float("nan"), 0.0]), 0.1
            ),
            "grad",
        ),
        (lambda: mirror_step("not a map", torch.zeros(2), torch.zeros(2), 0.1), "mirror_map"),
        (
            lambda: mirror_step(NegativeEntropy(), torch.tensor([0.5, 0.6]), torch.zeros(2), 0.1),
            "x",
        ),
        (lambda: exponentiated_gradient_step(torch.tensor([1.0, 0.0]), torch.zeros(2), 0.1), "x"),
        (lambda: mirror_descent(EuclideanMap(), lambda x: x, torch.zeros(2), -1.0, 3), "lr"),
        (lambda: mirror_descent(EuclideanMap(), lambda x: x, torch.zeros(2), 0.1, -1), "steps"),
        (lambda: mirror_descent(EuclideanMap(), lambda x: x, torch.zeros(2), [0.1], 3), "lr"),
        (
            lambda: mirror_descent(EuclideanMap(), lambda x: x[:1], torch.zeros(2), 0.1, 3),
            "grad_fn",
        ),
        (
            lambda: mirror_descent(
                ExponentialFamilyMap(Gaussian), lambda x: x, torch.tensor([0.0, -1.0]), 0.1, 3
            ),
            "x0",
        ),
        (lambda: QuadraticMap(torch.tensor([[1.0, 2.0], [2.0, 1.0]])), "matrix"),
        (lambda: ExponentialFamilyMap(int), "family"),
        (lambda: ExponentialFamilyMap(Gaussian, "usual"), "coordinates"),
        (
            lambda: natural_gradient_descent_natural(
                Gaussian, lambda mu: mu.sum(), torch.tensor([0.0, 1.0]), 0.1, 3
            ),
            "eta0",
        ),
        (lambda: project_simplex(torch.tensor(float("inf"))), "v"),
        (lambda: projected_gradient_descent(lambda x: x, torch.tensor([0.5, 0.6]), 0.1, 3), "x0"),
        (
            lambda: bregman_divergence(lambda x: (x**2).sum(), torch.zeros(2), torch.zeros(3)),
            "x and y",
        ),
    ],
)
def test_bad_input_raises_naming_the_argument(call, name: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises((ValueError, TypeError), match=name):
        call()


def test_exponential_family_exercise_self_checks() -> None:
    from igbook.exercises import exponential_families as ex

    assert ex.check_bernoulli_natural_gradient_step(
        lambda p, g, rho: 1 / (1 + math.exp(-(math.log(p / (1 - p)) - rho * g)))
    )
    fb = ex.check_bernoulli_natural_gradient_step(lambda p, g, rho: p - rho * p * (1 - p) * g)
    assert not fb and "coordinate p" in fb.message
    fb = ex.check_bernoulli_natural_gradient_step(
        lambda p, g, rho: 1 / (1 + math.exp(-(math.log(p / (1 - p)) - rho * p * (1 - p) * g)))
    )
    assert not fb and "Euclidean gradient" in fb.message

    def hess(e1: float, e2: float) -> torch.Tensor:
        s2, m = -0.5 / e2, -e1 / (2 * e2)
        return torch.tensor([[s2, 2 * m * s2], [2 * m * s2, 4 * m**2 * s2 + 2 * s2**2]], dtype=D)

    assert ex.check_gaussian_hessian_of_log_partition(hess)
    assert not ex.check_gaussian_hessian_of_log_partition(lambda e1, e2: torch.eye(2))

    def fisher_gamma(a, b):  # type: ignore[no-untyped-def]
        return [[float(torch.polygamma(1, torch.tensor(a))), 1 / b], [1 / b, a / b**2]]

    assert ex.check_gamma_fisher_natural(fisher_gamma)
    fb = ex.check_gamma_fisher_natural(
        lambda a, b: [[float(torch.polygamma(1, torch.tensor(a))), -1 / b], [-1 / b, a / b**2]]
    )
    assert "sign" in fb.message
    assert ex.check_poisson_bregman(lambda p, q: p * math.log(p / q) - p + q)
    assert (
        "KL(q || p)" in ex.check_poisson_bregman(lambda p, q: q * math.log(q / p) - q + p).message
    )
    stable = lambda x, g, lr: torch.softmax(torch.log(x) - lr * g, -1)  # noqa: E731
    assert ex.check_exponentiated_gradient_step(stable)
    fb = ex.check_exponentiated_gradient_step(lambda x, g, lr: x * torch.exp(-lr * g))
    assert not fb and "sum to 1" in fb.message
    assert not ex.check_exponentiated_gradient_step("not a function")  # type: ignore[arg-type]


def test_a_step_that_leaves_the_domain_raises() -> None:
    start = Gaussian(0.5, 1.5)
    g = torch.tensor([0.0, -2.5], dtype=D)  # pushes eta_2 = -1/(2 sigma^2) above zero for lr = 0.2
    with pytest.raises(ValueError, match="reduce lr"):
        mirror_step(ExponentialFamilyMap(Gaussian), start.mean, g, 0.2)
    with pytest.raises(ValueError, match="reduce lr"):
        mirror_descent(ExponentialFamilyMap(Gaussian), lambda mu: g, start.mean, 0.2, 3)
    with pytest.raises(ValueError, match="reduce lr"):
        natural_gradient_descent_natural(Gaussian, lambda mu: g @ mu, start.natural, 0.2, 3)
    # a small enough step is fine
    assert (
        Gaussian.from_mean(mirror_step(ExponentialFamilyMap(Gaussian), start.mean, g, 0.05)).sigma
        > 0
    )
