"""Tests of igbook.natgrad.networks: matrix-free damped natural gradient for networks."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from igbook.fisher import (
    BernoulliLikelihood,
    CategoricalLikelihood,
    GaussianLikelihood,
    fisher_matrix,
    flatten_params,
    hessian_matrix,
    model_params,
)
from igbook.natgrad import (
    NaturalGradientDescent,
    natural_gradient,
    natural_gradient_direction,
    ngd_step,
)

D = torch.float64


def classification(n: int = 40, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g, dtype=D)
    y = (x[:, 0] + x[:, 1] ** 2 > 0.5).long() + (x[:, 2] > 0.8).long()
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).to(D)
    return model, x, y, CategoricalLikelihood()


@pytest.mark.parametrize("ftype", ["exact", "ggn", "empirical", "mc"])
def test_cg_direction_matches_dense_damped_solve(ftype: str) -> None:
    model, x, y, lik = classification()
    lam = 1e-2
    res = natural_gradient_direction(
        model, None, x, y, lik, lam, ftype, mc_samples=4, seed=1, cg_rtol=1e-12
    )
    f = fisher_matrix(model, None, x, y, lik, ftype, mc_samples=4, seed=1)
    model.zero_grad()
    lik.nll(model(x), y).mean().backward()
    g = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    torch.testing.assert_close(res.gradient, g, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(res.direction, natural_gradient(f, g, lam), rtol=1e-8, atol=1e-10)
    assert res.converged and res.cg_iterations <= 2 * g.numel()
    # at convergence the model decrease is g^T (F + lam I)^{-1} g / 2
    exact_dec = 0.5 * float(g @ natural_gradient(f, g, lam))
    assert abs(res.predicted_decrease - exact_dec) < 1e-9 * max(1.0, exact_dec)
    with torch.no_grad():
        assert abs(res.loss - float(lik.nll(model(x), y).mean())) < 1e-12


def test_truncated_cg_still_descends() -> None:
    model, x, y, lik = classification()
    res = natural_gradient_direction(model, None, x, y, lik, 1e-4, cg_max_iter=2)
    assert not res.converged and res.cg_iterations == 2
    assert float(res.gradient @ res.direction) > 0  # a descent direction
    assert res.predicted_decrease > 0


def test_large_damping_is_gradient_descent() -> None:
    model, x, y, lik = classification()
    lam = 1e6
    res = natural_gradient_direction(model, None, x, y, lik, lam, cg_rtol=1e-12)
    torch.testing.assert_close(res.direction * lam, res.gradient, rtol=1e-4, atol=1e-10)


def test_one_step_solves_linear_least_squares() -> None:
    """Square loss on a linear model: the Fisher is the exact Hessian, so lr = 1 is Newton's step."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(30, 3, generator=g, dtype=D)
    y = (
        x @ torch.tensor([[1.0], [-2.0], [0.5]], dtype=D)
        + 0.3
        + 0.1 * torch.randn(30, 1, generator=g, dtype=D)
    )
    model = nn.Linear(3, 1).to(D)
    new, res = ngd_step(
        model, None, x, y, GaussianLikelihood(), lr=1.0, damping=1e-12, cg_rtol=1e-14
    )
    xt = torch.cat([x, torch.ones(30, 1, dtype=D)], 1)
    sol = torch.linalg.lstsq(xt, y).solution.reshape(-1)
    torch.testing.assert_close(flatten_params(new), sol, rtol=1e-8, atol=1e-9)
    assert res.converged


def test_ngd_on_logistic_regression_is_newton() -> None:
    """Canonical link + linear model: Fisher = GGN = Hessian, so Fisher scoring = Newton (IRLS)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(50, 2, generator=g, dtype=D)
    y = torch.bernoulli(torch.sigmoid(x @ torch.tensor([1.5, -1.0], dtype=D)), generator=g)
    model = nn.Linear(2, 1).to(D)
    lik = BernoulliLikelihood()
    new, res = ngd_step(model, None, x, y, lik, lr=1.0, damping=1e-12, cg_rtol=1e-14)
    h = hessian_matrix(model, None, x, y, lik)
    newton = flatten_params(model_params(model)) - torch.linalg.solve(h, res.gradient)
    torch.testing.assert_close(flatten_params(new), newton, rtol=1e-9, atol=1e-10)


def test_natural_gradient_step_is_invariant_to_linear_reparameterization() -> None:
    """theta = A phi: one NGD step in phi gives the same predictions; a GD step does not."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(60, 3, generator=g, dtype=D)
    y = torch.bernoulli(torch.sigmoid(x @ torch.tensor([1.0, 2.0, -1.0], dtype=D)), generator=g)
    a = torch.tensor([[3.0, 0.5, 0.0], [0.0, 0.2, 0.1], [1.0, 0.0, 2.0]], dtype=D)
    m1 = nn.Linear(3, 1, bias=False).to(D)
    m2 = nn.Linear(3, 1, bias=False).to(D)
    with torch.no_grad():
        m1.weight.copy_(torch.tensor([[0.3, -0.2, 0.1]], dtype=D))
        m2.weight.copy_(
            torch.linalg.solve(a, m1.weight.reshape(3)).reshape(1, 3)
        )  # phi = A^{-1} theta
    lik = BernoulliLikelihood()
    x2 = x @ a  # f = x theta = (x A) phi
    with torch.no_grad():
        torch.testing.assert_close(m1(x), m2(x2))
    p1, _ = ngd_step(m1, None, x, y, lik, lr=0.5, damping=1e-12, cg_rtol=1e-14)
    p2, _ = ngd_step(m2, None, x2, y, lik, lr=0.5, damping=1e-12, cg_rtol=1e-14)
    torch.testing.assert_close(x @ p1["weight"].T, x2 @ p2["weight"].T, rtol=1e-9, atol=1e-10)
    gd1 = ngd_step(m1, None, x, y, lik, lr=0.5 * 1e8, damping=1e8)[0]  # huge damping = GD step 0.5
    gd2 = ngd_step(m2, None, x2, y, lik, lr=0.5 * 1e8, damping=1e8)[0]
    assert float((x @ gd1["weight"].T - x2 @ gd2["weight"].T).abs().max()) > 1e-2


def test_custom_gradient_and_warm_start() -> None:
    model, x, _y, lik = classification()
    g = torch.ones(sum(p.numel() for p in model.parameters()), dtype=D)
    res = natural_gradient_direction(model, None, x, None, lik, 0.1, gradient=g, cg_rtol=1e-12)
    f = fisher_matrix(model, None, x, None, lik)
    torch.testing.assert_close(res.direction, natural_gradient(f, g, 0.1), rtol=1e-8, atol=1e-10)
    assert res.loss != res.loss  # nan: no targets, no loss
    warm = natural_gradient_direction(
        model, None, x, None, lik, 0.1, gradient=g, cg_rtol=1e-8, x0=res.direction
    )
    assert warm.cg_iterations <= 1


# --------------------------------------------------------------------------- optimizer
def test_optimizer_step_equals_functional_step() -> None:
    model, x, y, lik = classification()
    ref_model = copy.deepcopy(model)
    opt = NaturalGradientDescent(
        model.parameters(), model, lik, lr=0.7, damping=1e-2, cg_rtol=1e-12, cg_max_iter=500
    )
    opt.zero_grad()
    loss = lik.nll(model(x), y).mean()
    loss.backward()
    opt.step(inputs=x)
    new, res = ngd_step(ref_model, None, x, y, lik, lr=0.7, damping=1e-2, cg_rtol=1e-12)
    torch.testing.assert_close(
        flatten_params(model_params(model)), flatten_params(new), rtol=1e-9, atol=1e-11
    )
    assert opt.last_result["cg_iterations"] == res.cg_iterations


def test_optimizer_with_closure_param_groups_and_state_dict() -> None:
    model, x, y, lik = classification()
    first, last = model[0], model[2]
    opt = NaturalGradientDescent(
        [{"params": first.parameters(), "lr": 0.0}, {"params": last.parameters()}],
        model,
        lik,
        lr=0.5,
        damping=1e-2,
        fisher_type="ggn",
    )
    w0 = first.weight.detach().clone()
    b_last = last.bias.detach().clone()

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = lik.nll(model(x), y).mean()
        loss.backward()
        return loss

    loss = opt.step(closure, inputs=x, targets=y)
    assert isinstance(loss, torch.Tensor)
    torch.testing.assert_close(first.weight.detach(), w0)  # lr = 0 for this group
    assert float((last.bias.detach() - b_last).abs().max()) > 0
    sd = opt.state_dict()
    assert sd["param_groups"][0]["lr"] == 0.0 and sd["state"][0]["step"] == 1
    opt2 = NaturalGradientDescent(
        [{"params": first.parameters(), "lr": 0.0}, {"params": last.parameters()}],
        model,
        lik,
        lr=0.5,
        damping=1e-2,
    )
    opt2.load_state_dict(sd)
    assert opt2.state[first.weight]["step"] == 1


def test_optimizer_skips_parameters_without_gradient() -> None:
    model, x, y, lik = classification()
    opt = NaturalGradientDescent(model.parameters(), model, lik, lr=1.0, damping=1e-2)
    opt.zero_grad(set_to_none=True)
    w = model[0].weight.detach().clone()
    lik.nll(model(x), y).mean().backward()
    model[0].weight.grad = None
    opt.step(inputs=x)
    torch.testing.assert_close(model[0].weight.detach(), w)
    assert opt.step(inputs=x) is None  # no closure: returns None


def test_kl_clip_bounds_the_quadratic_kl() -> None:
    model, x, y, lik = classification()
    params0 = flatten_params(model_params(model))
    opt = NaturalGradientDescent(
        model.parameters(), model, lik, lr=10.0, damping=1e-3, kl_clip=1e-3, cg_max_iter=200
    )
    lik.nll(model(x), y).mean().backward()
    opt.step(inputs=x)
    assert opt.last_result["step_scale"] < 1.0
    delta = flatten_params(model_params(model)) - params0
    # the Fisher at the starting point
    start = copy.deepcopy(model)
    with torch.no_grad():
        i = 0
        for p in start.parameters():
            p.copy_(params0[i : i + p.numel()].reshape(p.shape))
            i += p.numel()
    f = fisher_matrix(start, None, x, None, lik)
    assert abs(0.5 * float(delta @ f @ delta) - 1e-3) < 1e-9


def test_optimizer_decreases_the_loss_and_beats_gradient_descent() -> None:
    model, x, y, lik = classification(n=80)
    gd_model = copy.deepcopy(model)
    opt = NaturalGradientDescent(
        model.parameters(), model, lik, lr=1.0, damping=1e-2, cg_max_iter=30, warm_start=True
    )
    sgd = torch.optim.SGD(gd_model.parameters(), lr=0.5)
    losses, gd_losses = [], []
    for _ in range(15):
        for m, o, store in ((model, opt, losses), (gd_model, sgd, gd_losses)):
            o.zero_grad()
            loss = lik.nll(m(x), y).mean()
            loss.backward()
            store.append(loss.item())
            if isinstance(o, NaturalGradientDescent):
                o.step(inputs=x)
            else:
                o.step()
    assert losses[-1] < 0.5 * losses[0]
    assert losses[-1] < gd_losses[-1]


def test_mc_optimizer_is_deterministic() -> None:
    out = []
    for _ in range(2):
        model, x, y, lik = classification()
        opt = NaturalGradientDescent(
            model.parameters(), model, lik, lr=0.5, damping=1e-2, fisher_type="mc", seed=3
        )
        for _ in range(2):
            opt.zero_grad()
            lik.nll(model(x), y).mean().backward()
            opt.step(inputs=x)
        out.append(flatten_params(model_params(model)))
    torch.testing.assert_close(out[0], out[1], rtol=0, atol=0)


def test_bad_inputs_raise_clear_errors() -> None:
    model, x, y, lik = classification()
    with pytest.raises(ValueError, match="damping must be finite and > 0"):
        natural_gradient_direction(model, None, x, y, lik, 0.0)
    with pytest.raises(TypeError, match="damping must be a real number"):
        natural_gradient_direction(model, None, x, y, lik, "1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cg_rtol"):
        natural_gradient_direction(model, None, x, y, lik, 1.0, cg_rtol=-1.0)
    with pytest.raises(ValueError, match="cg_max_iter"):
        natural_gradient_direction(model, None, x, y, lik, 1.0, cg_max_iter=0)
    with pytest.raises(ValueError, match="targets"):
        natural_gradient_direction(model, None, x, None, lik, 1.0)
    with pytest.raises(ValueError, match="gradient must be a flat vector"):
        natural_gradient_direction(model, None, x, y, lik, 1.0, gradient=torch.zeros(3, dtype=D))
    with pytest.raises(ValueError, match="lr must be finite and >= 0"):
        ngd_step(model, None, x, y, lik, lr=-1.0, damping=1.0)
    with pytest.raises(ValueError, match="Invalid learning rate"):
        NaturalGradientDescent(model.parameters(), model, lik, lr=-0.1)
    with pytest.raises(ValueError, match="Invalid damping"):
        NaturalGradientDescent(model.parameters(), model, lik, damping=0.0)
    with pytest.raises(ValueError, match="Invalid damping value in a parameter group"):
        NaturalGradientDescent([{"params": model.parameters(), "damping": -1.0}], model, lik)
    with pytest.raises(ValueError, match="not positive semi-definite"):
        NaturalGradientDescent(model.parameters(), model, lik, fisher_type="hessian")
    with pytest.raises(ValueError, match="fisher_type must be one of"):
        NaturalGradientDescent(model.parameters(), model, lik, fisher_type="true")
    with pytest.raises(ValueError, match="Invalid mc_samples"):
        NaturalGradientDescent(model.parameters(), model, lik, mc_samples=0)
    with pytest.raises(ValueError, match="kl_clip"):
        NaturalGradientDescent(model.parameters(), model, lik, kl_clip=0.0)
    with pytest.raises(ValueError, match="parameter of model"):
        NaturalGradientDescent([nn.Parameter(torch.zeros(2))], model, lik)
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        NaturalGradientDescent(model.parameters(), "model", lik)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="likelihood must be one of"):
        NaturalGradientDescent(model.parameters(), model, "poisson")
    opt = NaturalGradientDescent(model.parameters(), model, lik)
    lik.nll(model(x), y).mean().backward()
    model[0].weight.grad[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"gradient .* not finite"):
        opt.step(inputs=x)
    model[0].weight.grad.zero_()
    with pytest.raises(ValueError, match=r"y .* is required"):
        NaturalGradientDescent(model.parameters(), model, lik, fisher_type="empirical").step(
            inputs=x
        )


# --------------------------------------------------------------------------- chapter self-checks
def test_exercise_self_checks() -> None:
    import math

    from igbook.exercises import natural_gradient_networks as ex

    def probit(f):
        phi = torch.exp(-0.5 * f**2) / math.sqrt(2 * math.pi)
        cdf = 0.5 * torch.erfc(-f / math.sqrt(2))
        return phi**2 / (cdf * (1 - cdf))

    assert ex.check_probit_output_fisher(probit)
    fb = ex.check_probit_output_fisher(lambda f: torch.sigmoid(f) * (1 - torch.sigmoid(f)))
    assert not fb and "canonical" in fb.message
    assert not ex.check_probit_output_fisher(lambda f: 1 / 0)
    assert not ex.check_probit_output_fisher(3.0)  # type: ignore[arg-type]

    assert ex.check_linear_regression_ggn(lambda x, v: x.T @ x / (x.shape[0] * v))
    fb = ex.check_linear_regression_ggn(lambda x, v: x.T @ x / v)
    assert not fb and "N times" in fb.message
    assert not ex.check_linear_regression_ggn(lambda x, v: x.T @ x / x.shape[0] * 0 + 1)

    assert ex.check_softmax_fisher_rank(18, 2, 10)
    assert "annihilates" in ex.check_softmax_fisher_rank(20, 2, 10).message
    assert "empirical" in ex.check_softmax_fisher_rank(2, 2, 10).message
    assert not ex.check_softmax_fisher_rank("many", 2, 10)

    assert ex.check_minibatch_second_moment(lambda gb, ef, b: gb**2 + (ef - gb**2) / b)
    fb = ex.check_minibatch_second_moment(lambda gb, ef, b: ef / b)
    assert not fb and "squared mean" in fb.message

    assert ex.check_gd_limit_learning_rate(lambda eta, lam: eta * lam)
    fb = ex.check_gd_limit_learning_rate(lambda eta, lam: eta / lam)
    assert not fb and "multiply" in fb.message
