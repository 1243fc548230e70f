"""Exactness tests of igbook.fisher.models and igbook.fisher.likelihoods.

Every curvature matrix is checked, in float64, against an independent reference built here from
``torch.func.jacrev``/``torch.func.hessian`` of flat-parameter functions and output Fisher
matrices obtained by enumerating (or integrating over) the label space, and on the cases where
the answer is known exactly: GGN = Fisher for canonical links, GGN = Hessian for models linear in
their parameters, E_y[empirical Fisher] = Fisher at the data-generating parameter, MC -> exact.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.func import functional_call, hessian, jacrev

from igbook.fisher import (
    BernoulliLikelihood,
    CategoricalLikelihood,
    CurvatureOperator,
    FisherType,
    GaussianLikelihood,
    Likelihood,
    curvature_matrix,
    fisher_diagonal,
    fisher_matrix,
    fisher_vector_product,
    flatten_params,
    get_likelihood,
    ggn_matrix,
    ggn_vector_product,
    hessian_matrix,
    hessian_vector_product,
    model_params,
    output_curvature,
    param_slices,
    per_example_gradients,
    unflatten_params,
)

D = torch.float64
TYPES = ["exact", "mc", "empirical", "ggn", "hessian"]


# --------------------------------------------------------------------------- fixtures
def mlp(
    d_in: int, d_out: int, hidden: int = 4, act: type[nn.Module] = nn.Tanh, seed: int = 0
) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_in, hidden), act(), nn.Linear(hidden, d_out)).to(D)


def problem(kind: str, n: int = 6, seed: int = 0, act: type[nn.Module] = nn.Tanh):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g, dtype=D)
    if kind == "categorical":
        return (
            mlp(3, 4, act=act, seed=seed),
            x,
            torch.randint(0, 4, (n,), generator=g),
            CategoricalLikelihood(),
        )
    if kind == "gaussian":
        return (
            mlp(3, 2, act=act, seed=seed),
            x,
            torch.randn(n, 2, generator=g, dtype=D),
            GaussianLikelihood(0.7),
        )
    if kind in ("bernoulli", "probit"):
        lik = BernoulliLikelihood("logit" if kind == "bernoulli" else "probit")
        return mlp(3, 1, act=act, seed=seed), x, torch.randint(0, 2, (n, 1), generator=g).to(D), lik
    raise AssertionError(kind)


KINDS = ["categorical", "gaussian", "bernoulli", "probit"]


def flat_fn(model: nn.Module):
    """Independent reference: outputs (N, C) as a function of one flat parameter vector."""
    params = model_params(model)
    theta = flatten_params(params)
    shapes = [(n, p.shape, p.numel()) for n, p in params.items()]

    def f(t, x):
        d, i = {}, 0
        for name, shape, k in shapes:
            d[name] = t[i : i + k].reshape(shape)
            i += k
        out = functional_call(model, d, (x,))
        return out.reshape(out.shape[0], -1)

    return f, theta


def reference_output_fisher(lik, f: torch.Tensor) -> torch.Tensor:
    """E_y[grad grad^T] by enumerating the labels (categorical/Bernoulli) or the Hessian (Gaussian)."""
    n, c = f.shape
    if isinstance(lik, CategoricalLikelihood):
        out = torch.zeros(n, c, c, dtype=D)
        for label in range(c):
            g = torch.func.vmap(torch.func.grad(lambda fi, k=label: -torch.log_softmax(fi, -1)[k]))(
                f
            )
            p = torch.softmax(f, -1)[:, label]
            out += p[:, None, None] * g[:, :, None] * g[:, None, :]
        return out
    if isinstance(lik, BernoulliLikelihood):
        psi = (
            torch.sigmoid
            if lik.link == "logit"
            else (lambda z: 0.5 * torch.erfc(-z / math.sqrt(2)))
        )

        def nll(fi, yi):
            p = psi(fi)
            return -(yi * torch.log(p) + (1 - yi) * torch.log(1 - p)).sum()

        out = torch.zeros(n, 1, 1, dtype=D)
        for label in (0.0, 1.0):
            y = torch.full((n, 1), label, dtype=D)
            g = torch.func.vmap(torch.func.grad(nll))(f, y)
            p = psi(f) if label == 1.0 else 1 - psi(f)
            out += p[:, :, None] * g[:, :, None] * g[:, None, :]
        return out
    if isinstance(lik, GaussianLikelihood):
        return torch.eye(c, dtype=D).expand(n, c, c) / lik.variance
    raise AssertionError


def reference_matrix(kind: str, ftype: str, model, x, y, lik, mc_m=None) -> torch.Tensor:
    f, theta = flat_fn(model)
    if ftype == "hessian":
        return hessian(lambda t: lik.nll(f(t, x), lik.check_targets(y, model(x))).mean())(theta)
    j = jacrev(f)(theta, x)  # (N, C, P) by reverse mode on the whole batch
    fx = f(theta, x)
    yy = lik.check_targets(y, model(x))
    if ftype == "exact":
        m = reference_output_fisher(lik, fx)
    elif ftype == "mc":
        m = mc_m
    elif ftype == "empirical":
        g = torch.func.vmap(torch.func.grad(lambda fi, yi: lik.nll(fi[None], yi[None])[0]))(fx, yy)
        m = g[:, :, None] * g[:, None, :]
    else:
        m = torch.func.vmap(torch.func.hessian(lambda fi, yi: lik.nll(fi[None], yi[None])[0]))(
            fx, yy
        )
    return torch.einsum("ncp,ncd,ndq->pq", j, m, j) / x.shape[0]


# --------------------------------------------------------------------------- likelihoods
@pytest.mark.parametrize("kind", KINDS)
def test_likelihood_closed_forms_match_autodiff_and_enumeration(kind: str) -> None:
    _, _, _, lik = problem(kind)
    g = torch.Generator().manual_seed(1)
    c = {"categorical": 4, "gaussian": 2}.get(kind, 1)
    f = 2 * torch.randn(9, c, generator=g, dtype=D)
    y = lik.sample(f, 1, g)[0]
    single = lambda fi, yi: lik.nll(fi[None], yi[None])[0]  # noqa: E731
    torch.testing.assert_close(
        lik.output_grad(f, y),
        torch.func.vmap(torch.func.grad(single))(f, y),
        rtol=1e-10,
        atol=1e-12,
    )
    torch.testing.assert_close(
        lik.output_hessian(f, y),
        torch.func.vmap(torch.func.hessian(single))(f, y),
        rtol=1e-10,
        atol=1e-12,
    )
    lam = lik.output_fisher(f)
    torch.testing.assert_close(lam, reference_output_fisher(lik, f), rtol=1e-10, atol=1e-12)
    # the two forms of the Fisher agree: E[grad grad^T] = E[Hessian] (checked by enumeration)
    if kind in ("bernoulli", "probit"):
        p = torch.exp(lik._log_psi(f)[0])
        h1 = lik.output_hessian(f, torch.ones_like(f))
        h0 = lik.output_hessian(f, torch.zeros_like(f))
        torch.testing.assert_close(
            lam, p[..., None] * h1 + (1 - p[..., None]) * h0, rtol=1e-10, atol=1e-12
        )


def test_likelihood_nll_values() -> None:
    f = torch.tensor([[0.3, -1.2, 2.0]], dtype=D)
    torch.testing.assert_close(
        CategoricalLikelihood().nll(f, torch.tensor([2])), -torch.log_softmax(f, -1)[:, 2]
    )
    fb, yb = torch.tensor([[0.7]], dtype=D), torch.tensor([[1.0]], dtype=D)
    torch.testing.assert_close(
        BernoulliLikelihood().nll(fb, yb), -torch.log(torch.sigmoid(fb)).reshape(1)
    )
    z = torch.tensor([[0.4, -0.1]], dtype=D)
    ref = (
        -torch.distributions.Normal(z, math.sqrt(2.0)).log_prob(torch.zeros(1, 2, dtype=D)).sum(-1)
    )
    torch.testing.assert_close(GaussianLikelihood(2.0).nll(z, torch.zeros(1, 2, dtype=D)), ref)


def test_probit_is_stable_in_the_tails() -> None:
    lik = BernoulliLikelihood("probit")
    f = torch.tensor([[-40.0], [-8.0], [0.0], [8.0], [40.0]], dtype=D)
    lam = lik.output_fisher(f)
    assert bool(torch.isfinite(lam).all()) and bool((lam >= 0).all()) and bool((lam[1:4] > 0).all())
    torch.testing.assert_close(
        lik._log_psi(f)[0], torch.special.log_ndtr(f), rtol=1e-12, atol=1e-12
    )
    torch.testing.assert_close(
        lik.nll(f, torch.ones_like(f)),
        -torch.special.log_ndtr(f).reshape(-1),
        rtol=1e-12,
        atol=1e-12,
    )
    # asymptotically phi^2 / (Phi (1 - Phi)) ~ |f| phi(f) / 1 -> 0 in both tails, symmetric in f
    torch.testing.assert_close(lam[0], lam[4])
    torch.testing.assert_close(lam[2], torch.tensor([[2 / math.pi]], dtype=D))


def test_get_likelihood() -> None:
    assert isinstance(get_likelihood("Categorical"), CategoricalLikelihood)
    lik = GaussianLikelihood(3.0)
    assert get_likelihood(lik) is lik
    assert "variance=3" in repr(lik)


# --------------------------------------------------------------------------- against references
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("ftype", ["exact", "empirical", "ggn", "hessian"])
def test_dense_matrices_match_torch_func_references(kind: str, ftype: str) -> None:
    model, x, y, lik = problem(kind)
    got = fisher_matrix(model, None, x, y, lik, ftype)
    ref = reference_matrix(kind, ftype, model, x, y, lik)
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("kind", KINDS)
def test_mc_fisher_matches_reference_with_same_samples(kind: str) -> None:
    model, x, y, lik = problem(kind)
    f, m = output_curvature(model, None, x, None, lik, "mc", mc_samples=5, seed=3)
    # the MC output matrix is the mean of r r^T over labels sampled with the same seed
    ys = lik.sample(f, 5, torch.Generator().manual_seed(3))
    r = torch.stack([lik.output_grad(f, yk) for yk in ys])
    torch.testing.assert_close(m, torch.einsum("knc,knd->ncd", r, r) / 5)
    got = fisher_matrix(model, None, x, None, lik, "mc", mc_samples=5, seed=3)
    torch.testing.assert_close(
        got, reference_matrix(kind, "mc", model, x, y, lik, mc_m=m), rtol=1e-9, atol=1e-11
    )


def test_mc_is_deterministic_given_seed_or_generator() -> None:
    model, x, _y, lik = problem("categorical")
    a = fisher_matrix(model, None, x, None, lik, "mc", seed=7)
    b = fisher_matrix(model, None, x, None, lik, "mc", seed=7)
    c = fisher_matrix(model, None, x, None, lik, "mc", seed=8)
    d = fisher_matrix(model, None, x, None, lik, "mc", generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, d)
    assert (a - c).abs().max() > 1e-6


def test_exact_fisher_is_expected_score_outer_product_by_enumeration() -> None:
    """F = E_{y ~ model}[g g^T]: average per-example gradient outer products over every label."""
    model, x, _, lik = problem("categorical", n=5)
    probs = torch.softmax(model(x), -1)
    ref = torch.zeros(fisher_matrix(model, None, x, None, lik).shape, dtype=D)
    for label in range(4):
        g = per_example_gradients(model, None, x, torch.full((5,), label), lik)
        ref += torch.einsum("n,np,nq->pq", probs[:, label], g, g) / 5
    torch.testing.assert_close(
        fisher_matrix(model, None, x, None, lik), ref, rtol=1e-10, atol=1e-12
    )


# --------------------------------------------------------------------------- known exact identities
@pytest.mark.parametrize("kind", ["categorical", "gaussian", "bernoulli"])
def test_ggn_equals_fisher_for_canonical_links(kind: str) -> None:
    model, x, y, lik = problem(kind)
    assert lik.canonical
    torch.testing.assert_close(
        ggn_matrix(model, None, x, y, lik),
        fisher_matrix(model, None, x, y, lik),
        rtol=1e-12,
        atol=1e-13,
    )


def test_ggn_differs_from_fisher_for_probit_link() -> None:
    model, x, y, lik = problem("probit")
    assert not lik.canonical
    ggn, fis = ggn_matrix(model, None, x, y, lik), fisher_matrix(model, None, x, y, lik)
    assert float((ggn - fis).norm() / fis.norm()) > 0.05
    # but both are positive semi-definite (-log Phi is convex)
    assert float(torch.linalg.eigvalsh(ggn).min()) > -1e-12
    # and they agree in expectation over labels drawn from the model (Bartlett identity)
    ones = ggn_matrix(model, None, x, torch.ones_like(y), lik)
    zeros = ggn_matrix(model, None, x, torch.zeros_like(y), lik)
    # per-example weighting: build it through the output matrices
    f, m1 = output_curvature(model, None, x, torch.ones_like(y), lik, "ggn")
    _, m0 = output_curvature(model, None, x, torch.zeros_like(y), lik, "ggn")
    p = torch.exp(lik._log_psi(f)[0])[:, :, None]
    _, lam = output_curvature(model, None, x, None, lik, "exact")
    torch.testing.assert_close(p * m1 + (1 - p) * m0, lam, rtol=1e-10, atol=1e-12)
    assert (ones - zeros).abs().max() > 1e-3


@pytest.mark.parametrize("kind", ["gaussian", "categorical", "bernoulli", "probit"])
def test_ggn_equals_hessian_for_models_linear_in_parameters(kind: str) -> None:
    _, x, y, lik = problem(kind)
    torch.manual_seed(1)
    d_out = {"categorical": 4, "gaussian": 2}.get(kind, 1)
    model = nn.Linear(3, d_out).to(D)
    torch.testing.assert_close(
        ggn_matrix(model, None, x, y, lik),
        hessian_matrix(model, None, x, y, lik),
        rtol=1e-10,
        atol=1e-12,
    )


def test_gauss_newton_of_linear_least_squares_is_xtx() -> None:
    """Square loss (Gaussian, variance s2) on a linear model: H = GGN = F = X~^T X~ / (N s2)."""
    _, x, _, _ = problem("gaussian")
    model = nn.Linear(3, 1).to(D)
    y = torch.randn(6, 1, generator=torch.Generator().manual_seed(4), dtype=D)
    lik = GaussianLikelihood(0.5)
    xt = torch.cat([x, torch.ones(6, 1, dtype=D)], 1)  # weight then bias, as in flatten_params
    ref = xt.T @ xt / (6 * 0.5)
    for ftype in ("exact", "ggn", "hessian"):
        torch.testing.assert_close(
            fisher_matrix(model, None, x, y, lik, ftype), ref, rtol=1e-12, atol=1e-12
        )


def test_ggn_differs_from_hessian_for_nonlinear_model() -> None:
    model, x, y, lik = problem("categorical")
    ggn, h = ggn_matrix(model, None, x, y, lik), hessian_matrix(model, None, x, y, lik)
    assert float((ggn - h).norm() / h.norm()) > 0.01


@pytest.mark.parametrize("kind", ["categorical", "gaussian"])
def test_relu_network_ggn_and_hessian_share_per_layer_blocks(kind: str) -> None:
    """A ReLU net is piecewise linear in each layer's (W, b): layer blocks of H and GGN agree, the rest not."""
    model, x, y, lik = problem(kind, act=nn.ReLU, seed=2)
    for structure in ("blocks", "layers"):
        hb = hessian_matrix(model, None, x, y, lik, structure=structure)
        gb = ggn_matrix(model, None, x, y, lik, structure=structure)
        assert hb.keys() == gb.keys()
        for k in hb:
            torch.testing.assert_close(hb[k], gb[k], rtol=1e-10, atol=1e-12)
    assert (
        hessian_matrix(model, None, x, y, lik) - ggn_matrix(model, None, x, y, lik)
    ).abs().max() > 1e-3


def test_mc_fisher_converges_to_exact() -> None:
    model, x, _, lik = problem("categorical", n=4)
    exact = fisher_matrix(model, None, x, None, lik)
    errs = []
    for k in (10, 1000, 100000):
        mc = fisher_matrix(model, None, x, None, lik, "mc", mc_samples=k, seed=0)
        errs.append(float((mc - exact).norm() / exact.norm()))
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 0.01
    # the error shrinks like 1/sqrt(k): two decades of k give roughly one decade of error
    assert 3 < errs[0] / errs[1] < 30 and 3 < errs[1] / errs[2] < 30


def test_empirical_fisher_equals_fisher_in_expectation_at_the_true_parameter() -> None:
    """If y ~ p(y | x, theta0), E_y[EF(theta0)] = F(theta0) exactly (enumerate each y_n in {0, 1})."""
    model, x, _, lik = problem("bernoulli", n=7)
    p = torch.sigmoid(model(x)).reshape(-1)
    g1 = per_example_gradients(model, None, x, torch.ones(7, 1, dtype=D), lik)
    g0 = per_example_gradients(model, None, x, torch.zeros(7, 1, dtype=D), lik)
    expected_ef = (
        torch.einsum("n,np,nq->pq", p, g1, g1) + torch.einsum("n,np,nq->pq", 1 - p, g0, g0)
    ) / 7
    torch.testing.assert_close(
        expected_ef, fisher_matrix(model, None, x, None, lik), rtol=1e-10, atol=1e-12
    )


def _fit_logistic(x: torch.Tensor, y: torch.Tensor) -> nn.Module:
    model = nn.Linear(2, 1, bias=False).to(D)
    with torch.no_grad():
        model.weight.zero_()
    lik = BernoulliLikelihood()
    for _ in range(12):  # Newton: H = GGN for a linear model
        op = CurvatureOperator(model, None, x, y, lik, "hessian")
        h = op.to_dense()
        with torch.no_grad():
            model.weight -= torch.linalg.solve(h, op.gradient()).reshape(1, 2)
    return model


def test_empirical_fisher_near_fisher_at_optimum_of_well_specified_model_only() -> None:
    g = torch.Generator().manual_seed(0)
    n = 20000
    x = 1.5 * torch.randn(n, 2, generator=g, dtype=D)
    theta0 = torch.tensor([1.0, -2.0], dtype=D)
    lik = BernoulliLikelihood()
    y_well = torch.bernoulli(torch.sigmoid(x @ theta0), generator=g).unsqueeze(1)
    # misspecified (Kunstner et al. 2019, "misspecified A"): classes with unequal spreads, so
    # p(y | x) is not logistic-linear in x
    half = n // 2
    x_miss = torch.cat(
        [
            1.5 + 3 * torch.randn(half, 2, generator=g, dtype=D),
            -1.5 + torch.randn(half, 2, generator=g, dtype=D),
        ]
    )
    y_miss = torch.cat([torch.zeros(half, 1, dtype=D), torch.ones(half, 1, dtype=D)])
    rel = {}
    for name, xx, yy in (("well", x, y_well), ("miss", x_miss, y_miss)):
        model = _fit_logistic(xx, yy)
        grad_norm = float(CurvatureOperator(model, None, xx, yy, lik).gradient().norm())
        assert grad_norm < 1e-9  # at the optimum
        ef = fisher_matrix(model, None, xx, yy, lik, "empirical")
        fi = fisher_matrix(model, None, xx, yy, lik, "exact")
        rel[name] = float((ef - fi).norm() / fi.norm())
    assert rel["well"] < 0.05, rel  # sampling error of a 20000-point average
    assert rel["miss"] > 0.3, rel


def test_empirical_fisher_differs_away_from_the_optimum() -> None:
    model, x, y, lik = problem("categorical", n=50)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    ef = fisher_matrix(model, None, x, y, lik, "empirical")
    fi = fisher_matrix(model, None, x, y, lik, "exact")
    assert float((ef - fi).norm() / fi.norm()) > 0.5


def test_empirical_fisher_is_gram_matrix_of_per_example_gradients() -> None:
    model, x, y, lik = problem("gaussian")
    g = per_example_gradients(model, None, x, y, lik)
    torch.testing.assert_close(
        fisher_matrix(model, None, x, y, lik, "empirical"), g.T @ g / 6, rtol=1e-12, atol=1e-13
    )
    # rank <= N: with N = 1 the empirical Fisher has rank 1
    ef1 = fisher_matrix(model, None, x[:1], y[:1], lik, "empirical")
    assert int(torch.linalg.matrix_rank(ef1)) == 1


def test_per_example_gradients_match_a_loop_and_average_to_the_gradient() -> None:
    model, x, y, lik = problem("categorical")
    g = per_example_gradients(model, None, x, y, lik)
    for n in range(6):
        model.zero_grad()
        lik.nll(model(x[n : n + 1]), y[n : n + 1]).sum().backward()
        torch.testing.assert_close(
            g[n], torch.cat([p.grad.reshape(-1) for p in model.parameters()])
        )
    op = CurvatureOperator(model, None, x, y, lik)
    torch.testing.assert_close(g.mean(0), op.gradient(), rtol=1e-12, atol=1e-13)
    model.zero_grad()
    lik.nll(model(x), y).mean().backward()
    torch.testing.assert_close(
        op.gradient(), torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    )
    with torch.no_grad():
        assert abs(op.loss() - float(lik.nll(model(x), y).mean())) < 1e-12


# --------------------------------------------------------------------------- structure and products
@pytest.mark.parametrize("ftype", TYPES)
@pytest.mark.parametrize("kind", ["categorical", "probit"])
def test_products_diagonal_and_blocks_match_dense(kind: str, ftype: str) -> None:
    model, x, y, lik = problem(kind)
    dense = curvature_matrix(model, None, x, y, lik, ftype, mc_samples=3)
    assert torch.allclose(dense, dense.T)
    op = CurvatureOperator(model, None, x, y, lik, ftype, mc_samples=3)
    torch.testing.assert_close(op.to_dense(), dense, rtol=1e-10, atol=1e-12)
    v = torch.randn(op.dim, generator=torch.Generator().manual_seed(5), dtype=D)
    torch.testing.assert_close(op @ v, dense @ v, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(
        fisher_vector_product(model, None, x, y, lik, v, ftype, mc_samples=3),
        dense @ v,
        rtol=1e-10,
        atol=1e-12,
    )
    # dict in, dict out
    params = model_params(model)
    vd = unflatten_params(v, params)
    out = op.matvec(vd)
    assert isinstance(out, dict) and list(out) == list(params)
    torch.testing.assert_close(flatten_params(out), dense @ v, rtol=1e-10, atol=1e-12)
    # diagonal
    diag = curvature_matrix(model, None, x, y, lik, ftype, structure="diagonal", mc_samples=3)
    torch.testing.assert_close(diag, torch.diagonal(dense), rtol=1e-10, atol=1e-12)
    # per-tensor and per-module blocks
    sl = param_slices(params)
    blocks = curvature_matrix(model, None, x, y, lik, ftype, structure="blocks", mc_samples=3)
    assert list(blocks) == list(params)
    for name, s in sl.items():
        torch.testing.assert_close(blocks[name], dense[s, s], rtol=1e-10, atol=1e-12)
    layers = curvature_matrix(model, None, x, y, lik, ftype, structure="layers", mc_samples=3)
    assert list(layers) == ["0", "2"]
    s0 = slice(sl["0.weight"].start, sl["0.bias"].stop)
    torch.testing.assert_close(layers["0"], dense[s0, s0], rtol=1e-10, atol=1e-12)


def test_fisher_diagonal_and_vector_product_helpers() -> None:
    model, x, y, lik = problem("gaussian")
    dense_ef = fisher_matrix(model, None, x, y, lik, FisherType.EMPIRICAL)
    torch.testing.assert_close(
        fisher_diagonal(model, None, x, y, lik, "empirical"), torch.diagonal(dense_ef)
    )
    g = per_example_gradients(model, None, x, y, lik)
    torch.testing.assert_close(fisher_diagonal(model, None, x, y, lik, "empirical"), (g**2).mean(0))
    v = torch.randn(dense_ef.shape[0], generator=torch.Generator().manual_seed(0), dtype=D)
    torch.testing.assert_close(
        ggn_vector_product(model, None, x, y, lik, v), ggn_matrix(model, None, x, y, lik) @ v
    )
    torch.testing.assert_close(
        hessian_vector_product(model, None, x, y, lik, v),
        hessian_matrix(model, None, x, y, lik) @ v,
    )


@pytest.mark.parametrize("structure", ["dense", "diagonal", "blocks", "layers"])
def test_chunking_does_not_change_results(structure: str) -> None:
    model, x, y, lik = problem("categorical", n=9)
    a = curvature_matrix(model, None, x, y, lik, "mc", structure=structure, mc_samples=2)
    b = curvature_matrix(
        model, None, x, y, lik, "mc", structure=structure, mc_samples=2, chunk_size=4
    )
    if isinstance(a, dict):
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-12, atol=1e-14)
    else:
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    g1 = per_example_gradients(model, None, x, y, lik)
    g2 = per_example_gradients(model, None, x, y, lik, chunk_size=2)
    torch.testing.assert_close(g1, g2)


def test_parameter_subsets_give_the_sub_block() -> None:
    model, x, y, lik = problem("categorical")
    params = model_params(model)
    sub = {"2.weight": params["2.weight"], "2.bias": params["2.bias"]}
    dense = fisher_matrix(model, None, x, y, lik)
    s = slice(param_slices(params)["2.weight"].start, param_slices(params)["2.bias"].stop)
    torch.testing.assert_close(
        fisher_matrix(model, sub, x, y, lik), dense[s, s], rtol=1e-12, atol=1e-13
    )
    torch.testing.assert_close(
        hessian_matrix(model, sub, x, y, lik), hessian_matrix(model, None, x, y, lik)[s, s]
    )


def test_curvature_is_taken_at_the_given_params_not_the_module_state() -> None:
    model, x, y, lik = problem("categorical")
    params = {k: v + 0.3 for k, v in model_params(model).items()}
    moved = mlp(3, 4, seed=0)
    with torch.no_grad():
        for (_, p), v in zip(moved.named_parameters(), params.values()):
            p.copy_(v)
    torch.testing.assert_close(
        fisher_matrix(model, params, x, y, lik), fisher_matrix(moved, None, x, y, lik)
    )


# --------------------------------------------------------------------------- reduction convention
@pytest.mark.parametrize("ftype", ["exact", "empirical", "ggn", "hessian"])
def test_mean_reduction_convention(ftype: str) -> None:
    """Matrices are means: the sum-reduced loss has N times the curvature; duplicating data changes nothing."""
    kind = "categorical"
    model, x, y, lik = problem(kind)
    n = x.shape[0]
    mean = fisher_matrix(model, None, x, y, lik, ftype)
    f, theta = flat_fn(model)
    yy = lik.check_targets(y, model(x))
    # independent references of the SUM loss (the convention of torch's reduction="sum")
    if ftype == "hessian":
        sum_curv = hessian(lambda t: lik.nll(f(t, x), yy).sum())(theta)
    elif ftype == "ggn":
        j = jacrev(f)(theta, x)
        sum_curv = torch.einsum("ncp,ncd,ndq->pq", j, lik.output_hessian(f(theta, x), yy), j)
    elif ftype == "exact":
        # categorical: output-space Fisher diag(p) - p p^T of the softmax, per data point
        j = jacrev(f)(theta, x)
        prob = torch.softmax(f(theta, x), -1)
        h = torch.diag_embed(prob) - prob[:, :, None] * prob[:, None, :]
        sum_curv = torch.einsum("ncp,ncd,ndq->pq", j, h, j)
    else:
        # empirical: sum of outer products of the per-example gradients of the observed-label loss
        per = torch.stack(
            [
                jacrev(lambda t, i=i: lik.nll(f(t, x[i : i + 1]), yy[i : i + 1]).sum())(theta)
                for i in range(n)
            ]
        )
        sum_curv = per.T @ per
    torch.testing.assert_close(sum_curv / n, mean, rtol=1e-10, atol=1e-12)
    doubled = fisher_matrix(model, None, torch.cat([x, x]), torch.cat([y, y]), lik, ftype)
    torch.testing.assert_close(doubled, mean, rtol=1e-12, atol=1e-13)


def test_gaussian_variance_scales_the_fisher() -> None:
    model, x, y, _ = problem("gaussian")
    f1 = fisher_matrix(model, None, x, y, GaussianLikelihood(1.0))
    f4 = fisher_matrix(model, None, x, y, GaussianLikelihood(4.0))
    torch.testing.assert_close(f4, f1 / 4)


def test_multi_output_bernoulli_is_independent_outputs() -> None:
    """C independent Bernoulli outputs: the Fisher is the sum of the C one-output Fishers."""
    torch.manual_seed(3)
    lin = nn.Linear(3, 2).to(D)
    x = torch.randn(6, 3, dtype=D)
    total = fisher_matrix(lin, None, x, None, "bernoulli")
    ref = torch.zeros_like(total)
    w, b = lin.weight.detach(), lin.bias.detach()
    for c in range(2):
        p = torch.sigmoid(x @ w[c] + b[c])
        lam = p * (1 - p)
        # rows of J for output c: d f_c / d(W, b) = (e_c x^T, e_c), row-major [W, b]
        J = torch.zeros(6, 8, dtype=D)
        J[:, 3 * c : 3 * c + 3] = x
        J[:, 6 + c] = 1.0
        ref += (J.T * lam) @ J / 6
    torch.testing.assert_close(total, ref, rtol=1e-12, atol=1e-14)
    # soft targets (intensities) are allowed for the empirical Fisher and the GGN
    y = torch.rand(6, 2, dtype=D, generator=torch.Generator().manual_seed(0))
    ggn = fisher_matrix(lin, None, x, y, "bernoulli", "ggn")
    torch.testing.assert_close(ggn, total, rtol=1e-12, atol=1e-14)


def test_two_class_categorical_equals_bernoulli() -> None:
    """Logits (0, z) under softmax are a Bernoulli with logit z: the same Fisher."""
    torch.manual_seed(3)
    x = torch.randn(8, 3, dtype=D)
    lin = nn.Linear(3, 1).to(D)

    class TwoLogits(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = lin

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            out = self.lin(z)
            return torch.cat([torch.zeros_like(out), out], dim=1)

    torch.testing.assert_close(
        fisher_matrix(TwoLogits(), None, x, None, "categorical"),
        fisher_matrix(lin, None, x, None, "bernoulli"),
    )


def test_float32_models_keep_their_dtype() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 3)).float()
    x, y = torch.randn(4, 3, dtype=torch.float32), torch.tensor([0, 1, 2, 1])
    fm = fisher_matrix(model, None, x, y, "categorical")
    assert fm.dtype == torch.float32
    ref = fisher_matrix(model.double(), None, x.double(), y, "categorical")
    torch.testing.assert_close(fm.double(), ref, rtol=1e-4, atol=1e-6)


@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 5),
    kind=st.sampled_from(KINDS),
    ftype=st.sampled_from(["exact", "mc", "empirical", "ggn"]),
)
def test_property_symmetric_psd_and_consistent(seed: int, n: int, kind: str, ftype: str) -> None:
    model, x, y, lik = problem(kind, n=n, seed=seed)
    m = curvature_matrix(model, None, x, y, lik, ftype, mc_samples=2, seed=seed)
    torch.testing.assert_close(m, m.T)
    assert float(torch.linalg.eigvalsh(m).min()) > -1e-10 * max(1.0, float(m.abs().max()))
    # the rank is at most N * C (a sum of N pull-backs of C x C matrices)
    c = {"categorical": 4, "gaussian": 2}.get(kind, 1)
    assert int(torch.linalg.matrix_rank(m, hermitian=True)) <= n * c
    v = torch.randn(m.shape[0], generator=torch.Generator().manual_seed(seed), dtype=D)
    assert (
        float(v @ (CurvatureOperator(model, None, x, y, lik, ftype, mc_samples=2, seed=seed) @ v))
        >= -1e-10
    )


# --------------------------------------------------------------------------- bad input
def test_bad_inputs_raise_clear_errors() -> None:
    model, x, y, lik = problem("categorical")
    P = sum(p.numel() for p in model.parameters())
    with pytest.raises(ValueError, match="likelihood must be one of"):
        fisher_matrix(model, None, x, y, "poisson")
    with pytest.raises(TypeError, match="likelihood must be a Likelihood"):
        fisher_matrix(model, None, x, y, 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fisher_type must be one of"):
        fisher_matrix(model, None, x, y, lik, "true")
    with pytest.raises(TypeError, match="fisher_type"):
        fisher_matrix(model, None, x, y, lik, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="structure must be one of"):
        fisher_matrix(model, None, x, y, lik, structure="kron")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"torch.nn.Module"):
        fisher_matrix(lambda z: z, None, x, y, lik)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"y .* is required"):
        fisher_matrix(model, None, x, None, lik, "empirical")
    with pytest.raises(ValueError, match=r"y .* is required"):
        hessian_matrix(model, None, x, None, lik)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"y must have shape \(6,\)"):
        fisher_matrix(model, None, x, y[:4], lik, "empirical")
    with pytest.raises(ValueError, match=r"labels in 0..3"):
        fisher_matrix(model, None, x, y + 4, lik, "empirical")
    with pytest.raises(TypeError, match="integer class labels"):
        fisher_matrix(model, None, x, y.double(), lik, "empirical")
    with pytest.raises(ValueError, match="must be finite"):
        fisher_matrix(
            model, {k: v * float("nan") for k, v in model_params(model).items()}, x, y, lik
        )
    with pytest.raises(ValueError, match="must be finite"):
        fisher_matrix(
            model, {k: v + float("inf") for k, v in model_params(model).items()}, x, y, lik
        )
    with pytest.raises(ValueError, match="not a parameter of the model"):
        fisher_matrix(model, {"9.weight": torch.zeros(2, dtype=D)}, x, y, lik)
    with pytest.raises(ValueError, match="parameter's shape"):
        fisher_matrix(model, {"0.weight": torch.zeros(2, dtype=D)}, x, y, lik)
    with pytest.raises(ValueError, match="non-empty dict"):
        fisher_matrix(model, {}, x, y, lik)
    with pytest.raises(ValueError, match="x must be finite"):
        fisher_matrix(model, None, x * float("nan"), y, lik)
    with pytest.raises(ValueError, match="at least one data point"):
        fisher_matrix(model, None, x[:0], y[:0], lik)
    with pytest.raises(TypeError, match="x must be a tensor"):
        fisher_matrix(model, None, x.tolist(), y, lik)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"x of shape \(6, 5\) does not fit the model"):
        fisher_matrix(
            model, None, torch.randn(6, 5, dtype=D), y, lik
        )  # the model itself rejects 5 features
    with pytest.raises(ValueError, match="mc_samples must be an int >= 1"):
        fisher_matrix(model, None, x, y, lik, "mc", mc_samples=0)
    with pytest.raises(TypeError, match="seed must be an int"):
        fisher_matrix(model, None, x, y, lik, "mc", seed=0.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="chunk_size"):
        fisher_matrix(model, None, x, y, lik, chunk_size=0)
    with pytest.raises(ValueError, match="no output-space matrix"):
        output_curvature(model, None, x, y, lik, "hessian")
    op = CurvatureOperator(model, None, x, y, lik)
    with pytest.raises(ValueError, match=rf"shape \({P},\)"):
        op @ torch.zeros(P + 1, dtype=D)
    with pytest.raises(ValueError, match="v must be finite"):
        op @ torch.full((P,), float("nan"), dtype=D)
    with pytest.raises(ValueError, match="keys of params"):
        op @ {"0.weight": torch.zeros(4, 3, dtype=D)}
    with pytest.raises(TypeError, match="tensor or a dict"):
        op @ [0.0] * P  # type: ignore[operator]
    with pytest.raises(ValueError, match="needs the targets"):
        CurvatureOperator(model, None, x, None, lik).gradient()
    with pytest.raises(ValueError, match="vector must have last axis"):
        unflatten_params(torch.zeros(3, dtype=D), model_params(model))


def test_bad_likelihood_inputs_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="variance must be finite and > 0"):
        GaussianLikelihood(0.0)
    with pytest.raises(ValueError, match="variance must be finite"):
        GaussianLikelihood(float("inf"))
    with pytest.raises(TypeError, match="variance must be a real number"):
        GaussianLikelihood("1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="link must be"):
        BernoulliLikelihood("cloglog")
    x = torch.randn(5, 3, dtype=D)
    with pytest.raises(ValueError, match="C >= 2"):
        fisher_matrix(nn.Linear(3, 1).to(D), None, x, None, "categorical")
    with pytest.raises(ValueError, match="shape of the model output"):
        fisher_matrix(
            nn.Linear(3, 2).to(D), None, x, torch.zeros(5, dtype=D), "bernoulli", "empirical"
        )
    with pytest.raises(ValueError, match=r"labels in \{0, 1\}"):
        fisher_matrix(
            nn.Linear(3, 1).to(D),
            None,
            x,
            torch.full((5, 1), 1.5, dtype=D),
            "bernoulli",
            "empirical",
        )
    with pytest.raises(ValueError, match="shape of the model output"):
        fisher_matrix(
            nn.Linear(3, 2).to(D), None, x, torch.zeros(5, 3, dtype=D), "gaussian", "empirical"
        )
    with pytest.raises(ValueError, match="y must be finite"):
        fisher_matrix(
            nn.Linear(3, 2).to(D),
            None,
            x,
            torch.full((5, 2), float("nan"), dtype=D),
            "gaussian",
            "empirical",
        )

    class Bad(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 2).to(D)

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return torch.log(self.lin(z) * 0)

    with pytest.raises(ValueError, match="model output is not finite"):
        fisher_matrix(Bad(), None, x, None, "categorical")

    class Scalar(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 2).to(D)

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return self.lin(z).sum()

    with pytest.raises(ValueError, match="first axis"):
        fisher_matrix(Scalar(), None, x, None, "gaussian")


# --------------------------------------------------------------------------- Adam's second moment
@pytest.mark.parametrize("replacement", [True, False])
def test_minibatch_second_moment_by_enumeration(replacement: bool) -> None:
    import itertools

    from igbook.fisher import minibatch_gradient_second_moment

    model, x, y, lik = problem("categorical", n=5)
    g = per_example_gradients(model, None, x, y, lik)
    b = 2
    batches = (
        list(itertools.product(range(5), repeat=b))
        if replacement
        else list(itertools.combinations(range(5), b))
    )
    brute = torch.stack([g[list(idx)].mean(0) ** 2 for idx in batches]).mean(0)
    got = minibatch_gradient_second_moment(model, None, x, y, lik, b, replacement=replacement)
    torch.testing.assert_close(got, brute, rtol=1e-12, atol=1e-15)
    # B = 1 with replacement is the diagonal of the empirical Fisher; B = N without is the squared gradient
    torch.testing.assert_close(
        minibatch_gradient_second_moment(model, None, x, y, lik, 1),
        fisher_diagonal(model, None, x, y, lik, "empirical"),
    )
    torch.testing.assert_close(
        minibatch_gradient_second_moment(model, None, x, y, lik, 5, replacement=False),
        g.mean(0) ** 2,
    )
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        minibatch_gradient_second_moment(model, None, x, y, lik, 0)
    with pytest.raises(ValueError, match="without replacement"):
        minibatch_gradient_second_moment(model, None, x, y, lik, 6, replacement=False)


# --------------------------------------------------------------------------- extensibility
class HeteroscedasticGaussian(Likelihood):
    """y ~ N(mu, exp(s)) with output f = (mu, s): not canonical, loss Hessian indefinite for large residuals."""

    name = "heteroscedastic"
    canonical = False

    def flatten_output(self, output):
        assert output.ndim == 2 and output.shape[1] == 2
        return output

    def check_targets(self, y, output):
        return y.to(output.dtype).reshape(-1, 1)

    def nll(self, f, y):
        mu, s = f[..., 0], f[..., 1]
        return 0.5 * s + 0.5 * (y[..., 0] - mu) ** 2 * torch.exp(-s) + 0.5 * math.log(2 * math.pi)

    def output_fisher(self, f):
        s = f[..., 1]
        return torch.diag_embed(torch.stack([torch.exp(-s), torch.full_like(s, 0.5)], -1))

    def sample(self, f, num_samples, generator):
        eps = torch.randn((num_samples, f.shape[0], 1), generator=generator, dtype=f.dtype)
        return f[:, :1] + torch.exp(0.5 * f[:, 1:]) * eps


def test_user_defined_likelihood_and_indefinite_ggn() -> None:
    """A non-canonical likelihood with an indefinite loss Hessian uses the J^T M J fallback."""
    lik = HeteroscedasticGaussian()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(D)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, generator=g, dtype=D)
    y = 4 * torch.randn(
        6, generator=g, dtype=D
    )  # large residuals make the output Hessian indefinite
    f = model(x).detach()
    h_out = lik.output_hessian(f, lik.check_targets(y, f))
    assert float(torch.linalg.eigvalsh(h_out).min()) < -1e-3
    # output Fisher = E[Hessian] (Gauss-Hermite quadrature over y) and the default eigh factor
    nodes, weights = np.polynomial.hermite_e.hermegauss(20)
    ys = (
        f[:, :1].T + torch.exp(0.5 * f[:, 1:]).T * torch.as_tensor(nodes, dtype=D)[:, None]
    )  # (20, N)
    exp_h = sum(w * lik.output_hessian(f, yk[:, None]) for w, yk in zip(weights, ys)) / math.sqrt(
        2 * math.pi
    )
    torch.testing.assert_close(exp_h, lik.output_fisher(f), rtol=1e-10, atol=1e-12)
    fac = lik.output_fisher_factor(f)
    torch.testing.assert_close(
        fac @ fac.transpose(-1, -2), lik.output_fisher(f), rtol=1e-12, atol=1e-14
    )
    # dense / diagonal / blocks / products of the (indefinite) GGN and of the Fisher vs jacrev references
    fn, theta = flat_fn(model)
    j = jacrev(fn)(theta, x)
    ref_ggn = torch.einsum("ncp,ncd,ndq->pq", j, h_out, j) / 6
    ref_f = torch.einsum("ncp,ncd,ndq->pq", j, lik.output_fisher(f), j) / 6
    ggn = ggn_matrix(model, None, x, y, lik)
    torch.testing.assert_close(ggn, ref_ggn, rtol=1e-10, atol=1e-12)
    assert float(torch.linalg.eigvalsh(ggn).min()) < 0  # not a metric
    torch.testing.assert_close(
        fisher_matrix(model, None, x, None, lik), ref_f, rtol=1e-10, atol=1e-12
    )
    torch.testing.assert_close(
        curvature_matrix(model, None, x, y, lik, "ggn", structure="diagonal"),
        torch.diagonal(ref_ggn),
        rtol=1e-10,
        atol=1e-12,
    )
    blocks = curvature_matrix(model, None, x, y, lik, "ggn", structure="blocks")
    sl = param_slices(model_params(model))
    for name, s in sl.items():
        torch.testing.assert_close(blocks[name], ref_ggn[s, s], rtol=1e-10, atol=1e-12)
    v = torch.randn(theta.numel(), generator=g, dtype=D)
    torch.testing.assert_close(
        ggn_vector_product(model, None, x, y, lik, v), ref_ggn @ v, rtol=1e-10, atol=1e-12
    )
    # MC Fisher with many samples approaches the exact Fisher for this likelihood too
    mc = fisher_matrix(model, None, x, None, lik, "mc", mc_samples=20000, seed=0)
    assert rel_err(mc, ref_f) < 0.03


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("kind", KINDS)
def test_output_fisher_factors(kind: str) -> None:
    _, _, _, lik = problem(kind)
    c = {"categorical": 4, "gaussian": 2}.get(kind, 1)
    f = 3 * torch.randn(7, c, generator=torch.Generator().manual_seed(0), dtype=D)
    s = lik.output_fisher_factor(f)
    torch.testing.assert_close(
        s @ s.transpose(-1, -2), lik.output_fisher(f), rtol=1e-12, atol=1e-14
    )
