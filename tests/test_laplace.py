"""igbook.laplace: exact cases, GGN vs Hessian, laplace-torch agreement, EWC and online Laplace."""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar
from torch import nn
from torch.func import functional_call, hessian, jacrev
from torch.utils.data import DataLoader, TensorDataset

from igbook.continual import diagonal_fisher, ewc_penalty
from igbook.fisher import flatten_params, model_params
from igbook.laplace import (
    effective_parameters,
    evidence_terms,
    fit_laplace,
    functional_variance,
    laplace_penalty,
    last_linear_layer,
    log_marginal_likelihood,
    next_task_prior,
    optimize_prior_precision,
    predictive,
)

DT = torch.float64


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(DT)
    yield
    torch.set_default_dtype(old)


# -- Bayesian linear regression: Laplace is exact -------------------------------------------------
def _blr_data(n: int = 30, d: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=DT)
    w = torch.randn(d, 1, generator=g, dtype=DT)
    y = x @ w + 0.3 + 0.5 * torch.randn(n, 1, generator=g, dtype=DT)
    return x, y


def _linear_at_map(x, y, delta, sigma, bias=True):
    """nn.Linear set to the exact MAP (closed form); returns the model and the design matrix."""
    phi = torch.cat([x, torch.ones(x.shape[0], 1)], 1) if bias else x
    prec = phi.T @ phi / sigma**2 + delta * torch.eye(phi.shape[1])
    theta = torch.linalg.solve(prec, phi.T @ y / sigma**2).squeeze(1)
    model = nn.Linear(x.shape[1], 1, bias=bias).to(DT)
    with torch.no_grad():
        model.weight.copy_(theta[: x.shape[1]].reshape(1, -1))
        if bias:
            model.bias.copy_(theta[-1:])
    return model, phi, prec


def _exact_log_evidence(phi, y, delta, sigma):
    n = phi.shape[0]
    cov = sigma**2 * torch.eye(n) + phi @ phi.T / delta
    return float(torch.distributions.MultivariateNormal(torch.zeros(n), cov).log_prob(y[:, 0]))


@pytest.mark.parametrize(("structure", "bias"), [("full", True), ("kron", False), ("full", False)])
def test_blr_laplace_is_exact(structure, bias):
    x, y = _blr_data()
    delta, sigma = 0.8, 0.6
    model, phi, prec = _linear_at_map(x, y, delta, sigma, bias)
    post = fit_laplace(
        model, x, y, "gaussian", structure=structure, prior_precision=delta, sigma_noise=sigma
    )
    torch.testing.assert_close(post.precision().to_dense(), prec, rtol=0, atol=1e-10)
    exact = _exact_log_evidence(phi, y, delta, sigma)
    assert abs(float(log_marginal_likelihood(post)) - exact) < 1e-10
    terms = evidence_terms(post)
    assert abs(terms["log_evidence"] - exact) < 1e-10
    assert abs(terms["log_likelihood"] + terms["log_occam"] - exact) < 1e-10
    # predictive: N(x*^T theta, x*^T Sigma x* + sigma^2), closed form
    xs = torch.linspace(-2, 2, 7).unsqueeze(1).expand(7, x.shape[1]).clone()
    ps = torch.cat([xs, torch.ones(7, 1)], 1) if bias else xs
    mean, var = predictive(post, xs)
    cov = torch.linalg.inv(prec)
    torch.testing.assert_close(var[:, 0], (ps @ cov * ps).sum(1) + sigma**2, rtol=0, atol=1e-10)
    torch.testing.assert_close(mean, model(xs).detach(), rtol=0, atol=1e-12)


def test_blr_diagonal_is_not_exact_but_lower_logdet():
    """The diagonal of P has log det >= log det P (Hadamard), so its evidence is lower."""
    x, y = _blr_data()
    model, _, _ = _linear_at_map(x, y, 0.8, 0.6)
    full = fit_laplace(model, x, y, "gaussian", prior_precision=0.8, sigma_noise=0.6)
    diag = fit_laplace(
        model, x, y, "gaussian", structure="diagonal", prior_precision=0.8, sigma_noise=0.6
    )
    torch.testing.assert_close(diag.precision().diagonal(), full.precision().diagonal())
    assert float(log_marginal_likelihood(diag)) < float(log_marginal_likelihood(full)) - 1e-3


def test_mackay_fixed_point_equals_gradient_optimum():
    x, y = _blr_data()
    model, _, _ = _linear_at_map(x, y, 0.8, 0.6)
    post = fit_laplace(model, x, y, "gaussian", prior_precision=0.8, sigma_noise=0.6)
    a = optimize_prior_precision(post, method="mackay", optimize_noise=True, max_iter=2000)
    b = optimize_prior_precision(post, method="marglik", optimize_noise=True)
    assert abs(math.log(a.prior_precision) - math.log(b.prior_precision)) < 1e-6
    assert abs(math.log(a.sigma_noise) - math.log(b.sigma_noise)) < 1e-6
    # stationarity by central finite differences of the evidence in log delta and log sigma
    h = 1e-5
    for kw in ("prior_precision", "sigma_noise"):
        v = getattr(a, kw)
        up = float(log_marginal_likelihood(a, **{kw: v * math.exp(h)}))
        dn = float(log_marginal_likelihood(a, **{kw: v * math.exp(-h)}))
        assert abs(up - dn) / (2 * h) < 1e-5
    # gamma at the fixed point: delta * ||theta||^2 = gamma
    gamma = effective_parameters(a)
    assert abs(a.prior_precision * float((a.mean**2).sum()) - gamma) < 1e-8
    assert 0 < gamma < a.size


def test_evidence_framework_reaches_type2_maximum():
    """MacKay's loop (refit the MAP, update delta) maximizes the exact evidence of BLR."""
    x, y = _blr_data()
    sigma, delta = 0.6, 1.0
    for _ in range(200):
        model, phi, _ = _linear_at_map(x, y, delta, sigma)
        post = fit_laplace(model, x, y, "gaussian", prior_precision=delta, sigma_noise=sigma)
        delta = optimize_prior_precision(post, method="mackay", max_iter=1).prior_precision
    res = minimize_scalar(
        lambda t: -_exact_log_evidence(phi, y, math.exp(t), sigma),
        bounds=(-8, 5),
        method="bounded",
        options={"xatol": 1e-10},
    )
    assert abs(math.log(delta) - res.x) < 1e-5


# -- GGN versus Hessian -------------------------------------------------------------------------
def _net(seed=0, out=1):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, out)).to(DT)


def test_ggn_is_hessian_of_linearized_model_and_hessian_of_linear_model():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(20, 2, generator=g)
    y = torch.randn(20, 1, generator=g)
    model = _net()
    post = fit_laplace(model, x, y, "gaussian", sigma_noise=0.5, prior_precision=1.0)
    params = model_params(model)
    theta0 = flatten_params(params)
    names = list(params)

    def f(theta):
        ps = {}
        i = 0
        for n in names:
            ps[n] = theta[i : i + params[n].numel()].reshape(params[n].shape)
            i += params[n].numel()
        return functional_call(model, ps, (x,))

    f0, jac = f(theta0).detach(), jacrev(f)(theta0).detach()

    def lin_loss(theta):
        flin = f0 + torch.einsum("nop,p->no", jac, theta - theta0)
        return ((y - flin) ** 2).sum() / (2 * 0.25)

    h_lin = hessian(lin_loss)(theta0)
    ggn = post.precision().to_dense() - torch.eye(post.size)
    torch.testing.assert_close(ggn, h_lin, rtol=0, atol=1e-10)
    # the network's own Hessian differs (residual term), the Hessian Laplace keeps it
    hess = fit_laplace(
        model, x, y, "gaussian", sigma_noise=0.5, prior_precision=1.0, fisher_type="hessian"
    )

    def loss(theta):
        return ((y - f(theta)) ** 2).sum() / (2 * 0.25)

    h = hessian(loss)(theta0)
    torch.testing.assert_close(
        hess.precision().to_dense() - torch.eye(post.size), h, atol=1e-9, rtol=0
    )
    assert float((h - h_lin).abs().max()) > 1e-2
    assert float(torch.linalg.eigvalsh(ggn).min()) > -1e-10  # the GGN is PSD


# -- against laplace-torch ------------------------------------------------------------------------
def _clf_setup(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 3)).to(DT)
    return model, x, y


def _reg_setup(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g)
    y = torch.sin(x[:, :1]) + 0.1 * torch.randn(n, 1, generator=g)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(2, 6), nn.Tanh(), nn.Linear(6, 1)).to(DT)
    return model, x, y


def _dense(la, hs):
    if hs == "full":
        return la.posterior_precision
    if hs == "diag":
        return torch.diag(la.posterior_precision)
    return la.posterior_precision.to_matrix()


HS = {"full": "full", "diagonal": "diag", "kron": "kron"}


def _backends():
    from laplace.curvature import AsdlGGN, BackPackGGN, CurvlinopsGGN

    return {"curvlinops": CurvlinopsGGN, "backpack": BackPackGGN, "asdl": AsdlGGN}


# backend x structure combinations laplace-torch supports for these models
CASES = [
    (b, s, sub)
    for b in ("curvlinops", "backpack", "asdl")
    for s in ("full", "diagonal", "kron")
    for sub in ("all", "last_layer")
]


# BackPACK and ASDL register module hooks that torch 2.13 warns about, and laplace-torch warns
# that ASDL falls back to torch.func Jacobians: their messages, not ours
@pytest.mark.filterwarnings("ignore:.*backward hook:UserWarning")
@pytest.mark.filterwarnings("ignore:.*backward hook:FutureWarning")
@pytest.mark.filterwarnings("ignore:ASDL backend:UserWarning")
@pytest.mark.parametrize(("backend", "structure", "subset"), CASES)
@pytest.mark.parametrize("task", ["classification", "regression"])
def test_agrees_with_laplace_torch(backend, structure, subset, task):
    laplace = pytest.importorskip("laplace")
    if task == "classification":
        model, x, y = _clf_setup()
        kw: dict = {}
        lik = "categorical"
    else:
        model, x, y = _reg_setup()
        kw = {"sigma_noise": 0.4}
        lik = "gaussian"
    prior = 0.7
    post = fit_laplace(
        model, x, y, lik, structure=structure, subset=subset, prior_precision=prior, **kw
    )
    la = laplace.Laplace(
        copy.deepcopy(model),  # BackPACK extends the model it is given in place
        task,
        subset_of_weights=subset,
        hessian_structure=HS[structure],
        prior_precision=prior,
        backend=_backends()[backend],
        **kw,
    )
    la.fit(DataLoader(TensorDataset(x, y), batch_size=len(x)))
    tol = 1e-10
    torch.testing.assert_close(
        post.precision().to_dense(), _dense(la, HS[structure]).detach(), rtol=0, atol=tol
    )
    assert abs(float(log_marginal_likelihood(post)) - float(la.log_marginal_likelihood())) < 1e-9
    xs = x[:6]
    if task == "classification":
        ours = predictive(post, xs, method="glm", link="probit")
        theirs = la(xs, pred_type="glm", link_approx="probit")
        torch.testing.assert_close(ours, theirs.detach(), rtol=0, atol=1e-10)
    else:
        mean, var = predictive(post, xs)
        f_mu, f_var = la(xs, pred_type="glm")
        torch.testing.assert_close(mean, f_mu.detach(), rtol=0, atol=1e-10)
        torch.testing.assert_close(var, f_var.detach()[:, :, 0] + 0.4**2, rtol=0, atol=1e-10)


def test_optimized_prior_agrees_with_laplace_torch():
    laplace = pytest.importorskip("laplace")
    model, x, y = _reg_setup()
    post = fit_laplace(model, x, y, "gaussian", prior_precision=1.0, sigma_noise=0.4)
    la = laplace.Laplace(
        model, "regression", subset_of_weights="all", hessian_structure="full", sigma_noise=0.4
    )
    la.fit(DataLoader(TensorDataset(x, y), batch_size=len(x)))
    ours = optimize_prior_precision(post, method="marglik")
    # laplace-torch's marglik optimization (Adam on log delta) converges to the same stationary point
    la.optimize_prior_precision(method="marglik", n_steps=2000, lr=0.05)
    assert abs(math.log(ours.prior_precision) - math.log(float(la.prior_precision))) < 1e-3


def test_mc_predictives_agree_with_laplace_torch_within_standard_errors():
    laplace = pytest.importorskip("laplace")
    model, x, y = _clf_setup()
    post = fit_laplace(model, x, y, "categorical", prior_precision=0.7)
    la = laplace.Laplace(
        model,
        "classification",
        subset_of_weights="all",
        hessian_structure="full",
        prior_precision=0.7,
    )
    la.fit(DataLoader(TensorDataset(x, y), batch_size=len(x)))
    xs, k = x[:6], 4000
    for method, kw in (("glm", {"link": "mc"}), ("nn", {})):
        ours = predictive(post, xs, method=method, n_samples=k, seed=1, **kw)
        g = torch.Generator().manual_seed(2)
        if method == "glm":
            theirs = la(xs, pred_type="glm", link_approx="mc", n_samples=k, generator=g)
        else:
            theirs = la(xs, pred_type="nn", link_approx="mc", n_samples=k, generator=g)
        # each is a mean of k draws in [0, 1]: standard error <= 0.5 / sqrt(k); 5 SE of the difference
        assert float((ours - theirs.detach()).abs().max()) < 5 * math.sqrt(2) * 0.5 / math.sqrt(k)


# -- samples and densities ------------------------------------------------------------------------
@pytest.mark.parametrize("structure", ["full", "diagonal", "kron"])
def test_samples_have_the_posterior_covariance(structure):
    model, x, y = _clf_setup()
    post = fit_laplace(model, x, y, "categorical", structure=structure, prior_precision=2.0)
    k = 40000
    s = post.sample(k, seed=3)
    assert torch.equal(s, post.sample(k, seed=3))
    cov = post.covariance().to_dense()
    emp = torch.cov(s.T)
    # entrywise standard error of a sample covariance: sqrt((S_ii S_jj + S_ij^2) / k)
    se = torch.sqrt((torch.outer(cov.diagonal(), cov.diagonal()) + cov**2) / k)
    assert float(((emp - cov).abs() / se).max()) < 5.5
    # log density: Gaussian with that covariance (torch.distributions as the reference)
    ref = torch.distributions.MultivariateNormal(post.mean, covariance_matrix=cov)
    torch.testing.assert_close(post.log_prob(s[:5]), ref.log_prob(s[:5]), rtol=0, atol=1e-8)


def test_functional_variance_by_monte_carlo():
    model, x, y = _clf_setup()
    post = fit_laplace(model, x, y, "categorical", structure="kron", prior_precision=1.0)
    _, v = functional_variance(post, x[:3])
    # the linearized outputs f + J (theta - theta*) under samples: covariance V
    from igbook.laplace import jacobians

    _, jac = jacobians(post, x[:3])
    s = post.sample(20000, seed=4) - post.mean
    fs = torch.einsum("ncp,kp->knc", jac, s)
    emp = torch.einsum("kna,knb->nab", fs, fs) / s.shape[0]
    se = torch.sqrt(
        (v.diagonal(dim1=1, dim2=2).unsqueeze(2) * v.diagonal(dim1=1, dim2=2).unsqueeze(1) + v**2)
        / 20000
    )
    assert float(((emp - v).abs() / se).max()) < 5.5


# -- EWC and online Laplace -----------------------------------------------------------------------
def test_ewc_penalty_is_a_diagonal_laplace_log_posterior():
    model, x, y = _clf_setup()
    delta = 0.3
    post = fit_laplace(model, x, y, "categorical", structure="diagonal", prior_precision=delta)
    fisher = diagonal_fisher(model, x, fisher_type="exact", likelihood="categorical")
    anchor = model_params(model)
    g = torch.Generator().manual_seed(5)
    theta = {n: t + 0.1 * torch.randn(t.shape, generator=g, dtype=DT) for n, t in anchor.items()}
    ewc = ewc_penalty(theta, anchor, fisher, lam=len(x))
    d = flatten_params(theta) - flatten_params(anchor)
    ours = laplace_penalty(post, theta)
    assert abs(float(ours) - float(ewc) - 0.5 * delta * float(d @ d)) < 1e-10
    # and the penalty is log q(theta*) - log q(theta)
    lq = float(post.log_prob(flatten_params(anchor)) - post.log_prob(flatten_params(theta)))
    assert abs(float(ours) - lq) < 1e-10


def test_online_laplace_accumulates_precision():
    model, x, y = _clf_setup()
    post1 = fit_laplace(model, x[:20], y[:20], "categorical", structure="diagonal")
    mu0, p0 = next_task_prior(post1)
    post2 = fit_laplace(
        model,
        x[20:],
        y[20:],
        "categorical",
        structure="diagonal",
        prior_precision=p0,
        prior_mean=mu0,
    )
    d1 = 20 * post1.data_curvature.diagonal()
    d2 = 20 * post2.data_curvature.diagonal()
    torch.testing.assert_close(post2.precision().diagonal(), d1 + d2 + 1.0, rtol=0, atol=1e-12)
    # with the same parameters, the sum of the two data curvatures is that of all the data
    both = fit_laplace(model, x, y, "categorical", structure="diagonal", prior_precision=1.0)
    torch.testing.assert_close(
        post2.precision().diagonal(), both.precision().diagonal(), rtol=0, atol=1e-12
    )


# -- bad input ------------------------------------------------------------------------------------
def test_bad_input_names_the_argument():
    model, x, y = _clf_setup()
    with pytest.raises(ValueError, match="structure"):
        fit_laplace(model, x, y, "categorical", structure="lowrank")
    with pytest.raises(ValueError, match="prior_precision"):
        fit_laplace(model, x, y, "categorical", prior_precision=-1.0)
    with pytest.raises(ValueError, match="prior_precision"):
        fit_laplace(model, x, y, "categorical", prior_precision=torch.ones(3))
    with pytest.raises(ValueError, match="prior_precision"):
        fit_laplace(model, x, y, "categorical", structure="kron", prior_precision=torch.ones(43))
    with pytest.raises(ValueError, match="sigma_noise"):
        fit_laplace(model, x, y, "categorical", sigma_noise=0.5)
    with pytest.raises(ValueError, match="y"):
        fit_laplace(model, x, y[:3], "categorical")
    with pytest.raises(ValueError, match="fisher_type"):
        fit_laplace(model, x, y, "categorical", structure="kron", fisher_type="hessian")
    post = fit_laplace(model, x, y, "categorical")
    with pytest.raises(ValueError, match="n_samples"):
        post.sample(0)
    with pytest.raises(ValueError, match="method"):
        predictive(post, x, method="bridge")
    with pytest.raises(ValueError, match="optimize_noise"):
        optimize_prior_precision(post, optimize_noise=True)
    with pytest.raises(TypeError, match="posterior"):
        log_marginal_likelihood("post")
    with pytest.raises(ValueError, match="theta"):
        post.log_prob(torch.zeros(3))
    with pytest.raises(ValueError, match="diagonal"):
        next_task_prior(post)
    with pytest.raises(TypeError, match="model"):
        last_linear_layer("net")
    with pytest.raises(ValueError, match=r"nn\.Linear"):
        last_linear_layer(nn.Tanh())
    with pytest.raises(ValueError, match="params"):
        laplace_penalty(post, {})
    with pytest.raises(TypeError, match="posterior"):
        effective_parameters(None)
    with pytest.raises(ValueError, match="x"):
        predictive(post, torch.tensor(1.0))
    with pytest.raises(ValueError, match="scalar"):
        effective_parameters(post.with_hyperparameters(prior_precision=torch.rand(post.size) + 1))


def test_last_layer_jacobians_closed_form_equals_autograd():
    from igbook.laplace import jacobians

    model, x, y = _clf_setup()
    post = fit_laplace(model, x, y, "categorical", subset="last_layer")
    f, jac = jacobians(post, x[:7])
    # autograd reference: the same posterior with the subset label that skips the closed form (jacrev)
    ref = jacobians(dataclasses.replace(post, subset="all_as_listed"), x[:7])
    torch.testing.assert_close(f, ref[0], rtol=0, atol=1e-14)
    torch.testing.assert_close(jac, ref[1], rtol=0, atol=1e-14)


@pytest.mark.parametrize("link", ["logit", "probit"])
def test_binary_predictive_against_quadrature(link):
    """Probit approximation (logit link), exact probit integral (probit link), MC link: against
    Gauss-Hermite quadrature of the link under N(f, v)."""
    from igbook.fisher import BernoulliLikelihood
    from igbook.laplace import functional_variance

    g = torch.Generator().manual_seed(7)
    x = torch.randn(30, 2, generator=g)
    y = (torch.rand(30, generator=g) < torch.sigmoid(x[:, 0] - x[:, 1])).to(DT).unsqueeze(1)
    model = nn.Linear(2, 1).to(DT)
    lik = BernoulliLikelihood(link)
    post = fit_laplace(model, x, y, lik, prior_precision=0.5)
    xs = 3 * torch.randn(8, 2, generator=g)
    f, v = functional_variance(post, xs)
    m, s = f[:, 0], v[:, 0, 0].sqrt()
    z, w = (torch.from_numpy(a) for a in np.polynomial.hermite_e.hermegauss(80))
    w = w / w.sum()
    fz = m.unsqueeze(1) + s.unsqueeze(1) * z
    pz = torch.sigmoid(fz) if link == "logit" else torch.special.ndtr(fz)
    exact = (pz * w).sum(1)
    closed = predictive(post, xs)[:, 0]
    if link == "probit":
        torch.testing.assert_close(closed, exact, rtol=0, atol=1e-10)  # exact for the probit link
    else:
        assert float((closed - exact).abs().max()) < 0.02  # the probit approximation's error
    k = 20000
    mc = predictive(post, xs, link="mc", n_samples=k, seed=5)[:, 0]
    assert float((mc - exact).abs().max()) < 5 * 0.5 / math.sqrt(k)
