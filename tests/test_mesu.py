"""MESU and BGD optimizers: published equations, limits, stationary variance, knobs, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from igbook.optim import BGD, MESU, bgd_update, mesu_delta, mesu_stationary_variance

D = torch.float64


def _t(*v: float) -> torch.Tensor:
    return torch.tensor(v, dtype=D)


# ---------------------------------------------------------------------------------------------
# The published update on hand-computed numbers
# ---------------------------------------------------------------------------------------------
def test_mesu_delta_hand_computed() -> None:
    # mu=0.5, sigma=0.2, g_mu=1, g_sigma=0.5, N=10, sigma_prior=1, mu_prior=0:
    # dmu    = -0.04*1 + 0.04*(0-0.5)/(10*1)           = -0.04 - 0.002  = -0.042
    # dsigma = 0.5*(-0.04*0.5 + 0.2*(1-0.04)/(10*1))   = 0.5*(-0.02 + 0.0192) = -0.0004
    dmu, ds = mesu_delta(_t(0.5), _t(0.2), _t(1.0), _t(0.5), N=10, sigma_prior=1.0)
    torch.testing.assert_close(dmu, _t(-0.042), rtol=0, atol=1e-15)
    torch.testing.assert_close(ds, _t(-0.0004), rtol=0, atol=1e-15)
    # all knobs: lr_mu=2, lr_sigma=0.5, sigma_prior=0.5, mu_prior=0.1, N=4, mu=-0.3, sigma=0.1,
    # g_mu=-2, g_sigma=3:
    # dmu    = 2*(-0.01*(-2) + 0.01*(0.1+0.3)/(4*0.25)) = 2*(0.02 + 0.004) = 0.048
    # dsigma = 0.5*0.5*(-0.01*3 + 0.1*(0.25-0.01)/(4*0.25)) = 0.25*(-0.03 + 0.024) = -0.0015
    dmu, ds = mesu_delta(
        _t(-0.3),
        _t(0.1),
        _t(-2.0),
        _t(3.0),
        N=4,
        sigma_prior=0.5,
        mu_prior=0.1,
        lr_mu=2.0,
        lr_sigma=0.5,
    )
    torch.testing.assert_close(dmu, _t(0.048), rtol=0, atol=1e-15)
    torch.testing.assert_close(ds, _t(-0.0015), rtol=0, atol=1e-15)


def test_optimizer_applies_published_update() -> None:
    p = torch.nn.Parameter(_t(0.5, -0.3))
    opt = MESU([p], sigma_prior=1.0, N=10, sigma_init=0.2, num_samples=1)
    opt.apply_gradients([_t(1.0, -2.0)], [_t(0.5, 3.0)])
    dmu, ds = mesu_delta(
        _t(0.5, -0.3), _t(0.2, 0.2), _t(1.0, -2.0), _t(0.5, 3.0), N=10, sigma_prior=1.0
    )
    torch.testing.assert_close(p.detach(), _t(0.5, -0.3) + dmu, rtol=0, atol=1e-15)
    torch.testing.assert_close(opt.sigmas()[0], _t(0.2, 0.2) + ds, rtol=0, atol=1e-15)
    assert abs(float(p.detach()[0]) - (0.5 - 0.042)) < 1e-15
    assert abs(float(opt.sigmas()[0][0]) - (0.2 - 0.0004)) < 1e-15


def test_closure_path_equals_equations_on_recorded_samples() -> None:
    """step(closure): MC gradients from the reparameterization, then the published update."""
    h, b = _t(2.0, 0.5, 1.0), _t(0.3, -1.0, 0.0)
    p = torch.nn.Parameter(_t(0.4, -0.2, 1.0))
    opt = MESU([p], sigma_prior=0.8, N=7, sigma_init=0.3, num_samples=5, seed=3)
    seen: list[torch.Tensor] = []

    def closure() -> torch.Tensor:
        seen.append(p.detach().clone())
        loss = 0.5 * (h * p * p).sum() + (b * p).sum()
        loss.backward()
        return loss

    mu0 = p.detach().clone()
    opt.step(closure)
    w = torch.stack(seen)  # (S, d) sampled weights
    eps = (w - mu0) / 0.3
    grads = h * w + b
    g_mu, g_sigma = grads.mean(0), (eps * grads).mean(0)
    dmu, ds = mesu_delta(mu0, torch.full_like(mu0, 0.3), g_mu, g_sigma, N=7, sigma_prior=0.8)
    torch.testing.assert_close(p.detach(), mu0 + dmu, rtol=0, atol=1e-14)
    torch.testing.assert_close(opt.sigmas()[0], 0.3 + ds, rtol=0, atol=1e-14)
    torch.testing.assert_close(
        p.grad, g_mu, rtol=0, atol=1e-14
    )  # p.grad holds the MC mean gradient
    assert len(seen) == 5 and float(eps.std()) > 0.1  # genuinely sampled


# ---------------------------------------------------------------------------------------------
# N -> infinity: BGD without forgetting
# ---------------------------------------------------------------------------------------------
def test_infinite_window_is_first_order_bgd() -> None:
    gen = torch.Generator().manual_seed(0)
    mu, sigma = (
        torch.randn(50, generator=gen, dtype=D),
        0.05 + 0.2 * torch.rand(50, generator=gen, dtype=D),
    )
    gm, gs = torch.randn(50, generator=gen, dtype=D), torch.randn(50, generator=gen, dtype=D)
    dmu, ds = mesu_delta(mu, sigma, gm, gs, N=math.inf, sigma_prior=1.0)
    torch.testing.assert_close(dmu, -(sigma**2) * gm, rtol=0, atol=1e-15)
    torch.testing.assert_close(ds, -0.5 * sigma**2 * gs, rtol=0, atol=1e-15)
    # a huge finite window converges to it
    dmu2, ds2 = mesu_delta(mu, sigma, gm, gs, N=1e12, sigma_prior=1.0)
    torch.testing.assert_close(dmu2, dmu, rtol=0, atol=1e-11)
    torch.testing.assert_close(ds2, ds, rtol=0, atol=1e-11)
    # BGD: the same mean update; sigma differs by exactly sigma*(sqrt(1+(sigma*g/2)^2)-1) <= sigma^3 g^2/8
    mu_b, sigma_b = bgd_update(mu, sigma, gm, gs, eta=1.0)
    torch.testing.assert_close(mu_b, mu + dmu, rtol=0, atol=1e-15)
    diff = sigma_b - (sigma + ds)
    torch.testing.assert_close(
        diff, sigma * (torch.sqrt(1 + (sigma * gs / 2) ** 2) - 1), rtol=1e-12, atol=1e-15
    )
    assert bool((diff >= 0).all()) and bool((diff <= sigma**3 * gs**2 / 8 + 1e-15).all())


def test_mesu_and_bgd_optimizers_agree_for_small_gradients_when_n_is_infinite() -> None:
    p1, p2 = torch.nn.Parameter(_t(0.1, 0.2)), torch.nn.Parameter(_t(0.1, 0.2))
    m = MESU([p1], N=math.inf, sigma_init=0.1, num_samples=1)
    b = BGD([p2], eta=1.0, sigma_init=0.1, num_samples=1)
    for k in range(20):
        g = _t(0.01 * (k % 3), -0.02)
        m.apply_gradients([g], [g])
        b.apply_gradients([g], [g])
    # the two differ only at second order in sigma * g (about 1e-7 relative per step here)
    torch.testing.assert_close(p1.detach(), p2.detach(), rtol=1e-6, atol=0)
    torch.testing.assert_close(m.sigmas()[0], b.sigmas()[0], rtol=3e-5, atol=0)
    assert not torch.equal(m.sigmas()[0], b.sigmas()[0])


@settings(max_examples=60, deadline=None)
@given(
    sigma=st.floats(1e-4, 10.0),
    g=st.floats(-1e4, 1e4, allow_nan=False),
)
def test_bgd_sigma_is_the_positive_root(sigma: float, g: float) -> None:
    """sigma' solves s^2 + sigma^2 g s - sigma^2 = 0 and is > 0 for any gradient."""
    s, gs = _t(sigma), _t(g)
    _, s_new = bgd_update(_t(0.0), s, _t(0.0), gs)
    assert float(s_new) > 0
    resid = s_new**2 + s**2 * gs * s_new - s**2
    assert abs(float(resid)) <= 1e-9 * max(1.0, float(s**2 * (1 + abs(gs) * s_new)))


def test_bgd_sigma_stays_positive_in_float32_for_huge_gradients() -> None:
    s = torch.tensor([0.25, 0.25], dtype=torch.float32)
    _, s_new = bgd_update(torch.zeros(2), s, torch.zeros(2), torch.tensor([1e6, -1e6]))
    assert bool((s_new > 0).all()) and bool(torch.isfinite(s_new).all())
    # for a = sigma*g/2 >> 1, sigma' ~ sigma / (2a) = 1 / g
    torch.testing.assert_close(s_new[0], torch.tensor(1e-6), rtol=1e-4, atol=0)


# ---------------------------------------------------------------------------------------------
# Long-time limit on linear regression
# ---------------------------------------------------------------------------------------------
def _regression(n: int = 40, d: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = (
        0.3
        * torch.randn(n, d, generator=gen, dtype=D)
        * torch.tensor([1.0, 0.5, 2.0, 1.5], dtype=D)
    )
    y = x @ torch.tensor([1.0, -2.0, 0.5, 0.0], dtype=D) + 0.1 * torch.randn(
        n, generator=gen, dtype=D
    )
    return x, y


@pytest.mark.parametrize("N", [5.0, 40.0])
def test_stationary_variance_exact_gradients(N: float) -> None:
    """With the exact gradients of E_q[L], sigma^2 -> 1/(N diag(H) + 1/sigma_prior^2), mu -> ridge."""
    x, y = _regression()
    H = x.T @ x
    sp = 0.7
    p = torch.nn.Parameter(torch.zeros(4, dtype=D))
    opt = MESU([p], sigma_prior=sp, N=N, sigma_init=0.3)
    for _ in range(int(60 * N) + 400):
        mu = p.detach()
        g_mu = -x.T @ (y - x @ mu)  # d/dmu of 0.5||y - X mu||^2 + 0.5 sum sigma^2 H_ii
        g_sigma = H.diagonal() * opt.sigmas()[0]
        opt.apply_gradients([g_mu], [g_sigma])
    target = mesu_stationary_variance(H.diagonal(), N, sp)
    torch.testing.assert_close(opt.sigmas()[0] ** 2, target, rtol=1e-9, atol=0)
    ridge = torch.linalg.solve(H + torch.eye(4, dtype=D) / (N * sp**2), x.T @ y)
    torch.testing.assert_close(p.detach(), ridge, rtol=1e-8, atol=1e-10)


def test_stationary_variance_monte_carlo() -> None:
    """The same limit with reparameterized Monte Carlo gradients (draw_samples + apply_gradients)."""
    x, y = _regression()
    H = x.T @ x
    N, sp = 20.0, 1.0
    p = torch.nn.Parameter(torch.zeros(4, dtype=D))
    opt = MESU([p], sigma_prior=sp, N=N, sigma_init=0.3, num_samples=32, seed=1)
    acc = torch.zeros(4, dtype=D)
    steps, burn = 3000, 1000
    for t in range(steps):
        (w,), (eps,) = opt.draw_samples()
        w.requires_grad_()
        loss = (0.5 * ((y - w @ x.T) ** 2).sum(1)).mean()  # MC mean over samples
        (g,) = torch.autograd.grad(loss, w)
        opt.apply_gradients([g.sum(0)], [(eps * g).sum(0)])
        if t >= burn:
            acc += opt.sigmas()[0] ** 2
    mean_var = acc / (steps - burn)
    target = mesu_stationary_variance(H.diagonal(), N, sp)
    torch.testing.assert_close(mean_var, target, rtol=0.05, atol=0)


def test_infinite_window_variance_collapses_like_one_over_t() -> None:
    """Without forgetting the precision grows linearly: sigma^-2 = sigma0^-2 + t H (to first order)."""
    h = _t(2.0, 0.5)
    p = torch.nn.Parameter(_t(0.0, 0.0))
    opt = MESU([p], N=math.inf, sigma_init=0.05)
    for _ in range(2000):
        opt.apply_gradients([torch.zeros(2, dtype=D)], [h * opt.sigmas()[0]])
    prec = opt.sigmas()[0] ** -2
    torch.testing.assert_close(prec, 0.05**-2 + 2000 * h, rtol=2e-3, atol=0)


def test_stationary_variance_function() -> None:
    torch.testing.assert_close(
        mesu_stationary_variance(_t(2.0, 0.0), 10, 0.5), _t(1 / 24, 0.25), rtol=1e-15, atol=0
    )
    torch.testing.assert_close(
        mesu_stationary_variance(_t(2.0, 0.0), math.inf, 0.5), _t(0.0, 0.25), rtol=0, atol=0
    )
    with pytest.raises(ValueError, match="hessian_diag"):
        mesu_stationary_variance(_t(-1.0), 10, 1.0)


# ---------------------------------------------------------------------------------------------
# Knobs of the authors' code
# ---------------------------------------------------------------------------------------------
def _one(**kw: object) -> tuple[torch.nn.Parameter, MESU]:
    p = torch.nn.Parameter(_t(0.5, -0.5))
    return p, MESU([p], sigma_prior=1.0, N=10, sigma_init=0.2, num_samples=1, **kw)  # type: ignore[arg-type]


def test_clamp_grad_clips_to_clamp_over_sigma() -> None:
    p, opt = _one(clamp_grad=0.1)
    opt.apply_gradients([_t(1e3, -1e3)], [_t(1e3, -1e3)])
    dmu, ds = mesu_delta(
        _t(0.5, -0.5), _t(0.2, 0.2), _t(0.5, -0.5), _t(0.5, -0.5), N=10, sigma_prior=1.0
    )
    torch.testing.assert_close(p.detach(), _t(0.5, -0.5) + dmu, rtol=0, atol=1e-15)
    torch.testing.assert_close(opt.sigmas()[0], 0.2 + ds, rtol=0, atol=1e-15)


def test_ratio_max_and_sigma_bounds() -> None:
    p, opt = _one(ratio_max=0.01, sigma_bounds=(0.19995, 1.0))
    opt.apply_gradients([_t(5.0, -5.0)], [_t(5.0, 5.0)])
    torch.testing.assert_close(p.detach(), _t(0.5 - 0.002, -0.5 + 0.002), rtol=0, atol=1e-15)
    torch.testing.assert_close(opt.sigmas()[0], _t(0.19995, 0.19995), rtol=0, atol=1e-15)


def test_second_order_divides_both_changes() -> None:
    p, opt = _one(second_order=True)
    opt.apply_gradients([_t(1.0, 1.0)], [_t(2.0, -3.0)])
    dmu, ds = mesu_delta(
        _t(0.5, -0.5), _t(0.2, 0.2), _t(1.0, 1.0), _t(2.0, -3.0), N=10, sigma_prior=1.0
    )
    den = 1 + 0.2 * _t(2.0, 3.0)
    torch.testing.assert_close(p.detach(), _t(0.5, -0.5) + dmu / den, rtol=0, atol=1e-15)
    torch.testing.assert_close(opt.sigmas()[0], 0.2 + ds / den, rtol=0, atol=1e-15)


def test_momentum_is_an_exponential_average() -> None:
    p, opt = _one(momentum_mu=0.5, lr_sigma=0.0)
    opt.apply_gradients([_t(1.0, 1.0)], [_t(0.0, 0.0)])
    # first step uses (1 - 0.5) * g
    dmu, _ = mesu_delta(
        _t(0.5, -0.5), _t(0.2, 0.2), _t(0.5, 0.5), _t(0.0, 0.0), N=10, sigma_prior=1.0
    )
    torch.testing.assert_close(p.detach(), _t(0.5, -0.5) + dmu, rtol=0, atol=1e-15)
    torch.testing.assert_close(
        opt.sigmas()[0], _t(0.2, 0.2), rtol=0, atol=0
    )  # lr_sigma = 0 freezes sigma


def test_param_groups_have_their_own_window() -> None:
    a, b = torch.nn.Parameter(_t(1.0)), torch.nn.Parameter(_t(1.0))
    opt = MESU(
        [{"params": [a], "N": 2.0}, {"params": [b]}], N=math.inf, sigma_init=0.5, num_samples=1
    )
    opt.apply_gradients([_t(0.0), _t(0.0)], [_t(0.0), _t(0.0)])
    assert (
        float(a.detach()) < 1.0 and float(b.detach()) == 1.0
    )  # only the finite window forgets towards mu_prior = 0
    assert opt.param_groups[0]["N"] == 2.0 and math.isinf(opt.param_groups[1]["N"])


def test_negative_sigma_raises_instead_of_nan() -> None:
    _p, opt = _one()
    with pytest.raises(RuntimeError, match="standard deviation"):
        opt.apply_gradients([_t(0.0, 0.0)], [_t(1e3, 0.0)])


# ---------------------------------------------------------------------------------------------
# Reproducibility, state_dict, dtype
# ---------------------------------------------------------------------------------------------
def _train(seed: int, steps: int = 5) -> tuple[torch.Tensor, torch.Tensor, MESU]:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2).to(D)
    x, y = torch.randn(8, 3, dtype=D), torch.randint(0, 2, (8,))
    opt = MESU(model.parameters(), sigma_prior=1.0, N=50, sigma_init=0.1, num_samples=3, seed=seed)

    def closure() -> torch.Tensor:
        loss = torch.nn.functional.cross_entropy(model(x), y, reduction="sum")
        loss.backward()
        return loss

    for _ in range(steps):
        opt.step(closure)
    return model.weight.detach().clone(), opt.sigmas()[0].clone(), opt


def test_seeded_runs_are_reproducible() -> None:
    w1, s1, _ = _train(seed=4)
    w2, s2, _ = _train(seed=4)
    w3, _, _ = _train(seed=5)
    assert torch.equal(w1, w2) and torch.equal(s1, s2)
    assert not torch.equal(w1, w3)


def test_state_dict_round_trip() -> None:
    _, _, opt = _train(seed=1)
    model2 = torch.nn.Linear(3, 2).to(D)
    opt2 = MESU(model2.parameters(), sigma_prior=1.0, N=50, sigma_init=0.9, num_samples=3)
    opt2.load_state_dict(opt.state_dict())
    for s1, s2 in zip(opt.sigmas(), opt2.sigmas()):
        torch.testing.assert_close(s1, s2, rtol=0, atol=0)
    assert opt2.param_groups[0]["N"] == 50


def test_float32_parameters_keep_their_dtype() -> None:
    p = torch.nn.Parameter(torch.zeros(3))
    opt = BGD([p], sigma_init=0.1, num_samples=2)
    opt.step(lambda: (p.sum() ** 2).backward() or p.sum() ** 2)  # type: ignore[func-returns-value]
    assert p.dtype == torch.float32 and opt.sigmas()[0].dtype == torch.float32


def test_sampled_params_restores_means() -> None:
    p = torch.nn.Parameter(_t(1.0, 2.0))
    opt = BGD([p], sigma_init=0.5)
    with opt.sampled_params() as (eps,):
        torch.testing.assert_close(p.detach(), _t(1.0, 2.0) + 0.5 * eps, rtol=0, atol=1e-15)
    torch.testing.assert_close(p.detach(), _t(1.0, 2.0), rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"N": 0.5}, "memory window"),
        ({"N": 0}, "memory window"),
        ({"N": -3}, "memory window"),
        ({"N": float("nan")}, "memory window"),
        ({"sigma_prior": 0.0}, "sigma_prior"),
        ({"sigma_prior": -1.0}, "sigma_prior"),
        ({"sigma_prior": math.inf}, "sigma_prior"),
        ({"lr_mu": -1.0}, "lr_mu"),
        ({"lr_sigma": -0.1}, "lr_sigma"),
        ({"sigma_init": 0.0}, "sigma_init"),
        ({"sigma_init": -1.0}, "sigma_init"),
        ({"num_samples": 0}, "num_samples"),
        ({"clamp_grad": -1.0}, "clamp_grad"),
        ({"momentum_mu": 1.0}, "momentum_mu"),
        ({"ratio_max": 0.0}, "ratio_max"),
        ({"sigma_bounds": (0.5, 0.1)}, "sigma_bounds"),
        ({"sigma_bounds": (0.0, 1.0)}, "sigma_bounds"),
        ({"mu_prior": math.nan}, "mu_prior"),
    ],
)
def test_mesu_bad_hyperparameters(kw: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MESU([torch.nn.Parameter(torch.zeros(2))], **kw)  # type: ignore[arg-type]


def test_mesu_bad_group_and_calls() -> None:
    p = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match="memory window"):
        MESU([{"params": [p], "N": 0.1}])
    with pytest.raises(TypeError, match="second_order"):
        MESU([p], second_order="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="seed"):
        MESU([p], seed=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="num_samples"):  # a count is an int (igbook._validation)
        MESU([p], num_samples=2.5)  # type: ignore[arg-type]
    opt = MESU([p])
    with pytest.raises(ValueError, match="closure"):
        opt.step()
    with pytest.raises(ValueError, match="one entry per parameter"):
        opt.apply_gradients([], [])
    with pytest.raises(ValueError, match="shape"):
        opt.apply_gradients([torch.zeros(3)], [torch.zeros(3)])
    with pytest.raises(ValueError, match="memory window"):
        mesu_delta(_t(0.0), _t(1.0), _t(0.0), _t(0.0), N=0.0, sigma_prior=1.0)
    with pytest.raises(ValueError, match="sigma_prior"):
        mesu_delta(_t(0.0), _t(1.0), _t(0.0), _t(0.0), N=2.0, sigma_prior=-1.0)


@pytest.mark.parametrize(
    "kw", [{"eta": -1.0}, {"sigma_init": 0.0}, {"num_samples": 0}, {"lr_sigma": -1.0}]
)
def test_bgd_bad_hyperparameters(kw: dict[str, float]) -> None:
    (name,) = kw
    with pytest.raises(ValueError, match=f"^{name} must be"):
        BGD([torch.nn.Parameter(torch.zeros(2))], **kw)  # type: ignore[arg-type]


def test_mesu_is_the_first_order_solution_of_the_truncated_posterior_free_energy() -> None:
    """Quadratic minibatch cost C = h (w - m)^2 / 2.

    The free energy E_q[C] + (1 - 1/N) KL(q || q_old) + KL(q || prior) / N is minimized exactly
    by the Gaussian q_old^(1-1/N) prior^(1/N) exp(-C); MESU's step matches it to first order
    in 1/N."""
    h, m, mu0, sp, mp = 2.0, -0.4, 0.3, 1.0, 0.1
    rel = []
    for N in (100.0, 200.0, 400.0, 800.0):
        s0 = 1.5 / math.sqrt(N * h + 1 / sp**2)  # away from the stationary sd, so sigma moves
        prec = (1 - 1 / N) / s0**2 + 1 / (N * sp**2) + h
        mean = ((1 - 1 / N) * mu0 / s0**2 + mp / (N * sp**2) + h * m) / prec
        exact = torch.tensor([mean - mu0, prec**-0.5 - s0], dtype=torch.float64)
        t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
        dmu, dsig = mesu_delta(
            t(mu0), t(s0), t(h * (mu0 - m)), t(h * s0), N=N, sigma_prior=sp, mu_prior=mp
        )
        rel.append((torch.stack([dmu, dsig]) - exact).abs() / exact.abs())
    for a, b in zip(rel, rel[1:]):
        assert bool(((b / a > 0.4) & (b / a < 0.6)).all())  # relative error O(1/N)
    assert float(rel[-1].max()) < 5e-3
