"""Tests of the Bayesian-learning-rule optimizers (igbook.optim.blr) and predictives.

Convergence is checked on Bayesian linear regression, whose exact mean-field Gaussian
posterior is known in closed form: mean = exact posterior mean, variances = 1 / diag(P).
Because the four optimizers are diagonal (every update is element-wise), a parameter of shape
(R, D) whose loss is a *sum* of R copies of the D-dimensional problem holds R independent
chains of the same optimizer; averaging over them and over the second half of the run gives
the Monte Carlo precision the tolerances need at the cost of one chain.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from igbook.fisher import CategoricalLikelihood, FisherType, GaussianLikelihood
from igbook.optim import (
    IVON,
    VOGN,
    VON,
    PerExampleClosure,
    Vadam,
    classification_metrics,
    expected_calibration_error,
    predictive,
    reliability_curve,
    sampled_params,
)
from igbook.vi.blr import gaussian_expectations

DT = torch.float64
N, D, SIGMA, PRIOR = 200, 3, 0.5, 1.0


@pytest.fixture(scope="module")
def linreg():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, generator=g, dtype=DT) * torch.tensor([1.0, 0.5, 2.0], dtype=DT)
    x[:, 1] += 0.5 * x[:, 0]  # correlated features: mean field differs from the full posterior
    y = x @ torch.tensor([1.0, -1.0, 0.5], dtype=DT) + SIGMA * torch.randn(N, generator=g, dtype=DT)
    prec = x.T @ x / SIGMA**2 + PRIOR * torch.eye(D, dtype=DT)
    mean = torch.linalg.solve(prec, x.T @ y / SIGMA**2)
    mf_var = 1.0 / torch.diagonal(prec)
    assert float((torch.diagonal(torch.linalg.inv(prec)) / mf_var).max()) > 1.1  # MF is not exact
    return x, y, mean, mf_var


def _avg_loss(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Sum over replicas (rows of w) of the average negative log-likelihood (constants dropped)."""
    r = y[:, None] - x @ w.T
    return (0.5 * r * r / SIGMA**2).mean(0).sum()


def _check_posterior(
    means: list[torch.Tensor], variances: list[torch.Tensor], mean, mf_var, *, var_rtol=0.02
):
    m = torch.stack(means).mean(0)  # (D,) averaged over replicas and time
    v = torch.stack(variances).mean(0)
    sd = mf_var.sqrt()
    err = ((m - mean) / sd).abs()
    assert float(err.max()) < 0.05, f"mean error {err} posterior sds"
    ratio = v / mf_var
    assert float((ratio - 1).abs().max()) < var_rtol, f"variance ratios {ratio}"


# ----------------------------------------------------------------------------------------------
# convergence to the exact mean-field posterior
# ----------------------------------------------------------------------------------------------


def test_ivon_converges_to_mean_field_posterior(linreg) -> None:
    x, y, mean, mf_var = linreg
    w = torch.zeros(64, D, dtype=DT, requires_grad=True)
    opt = IVON([w], lr=0.05, ess=N, hess_init=1.0, beta2=0.99, weight_decay=PRIOR / N, seed=0)

    def closure() -> torch.Tensor:
        loss = _avg_loss(x, y, w)
        loss.backward()
        return loss

    means, variances = [], []
    for k in range(2000):
        if k == 500:  # burn-in with a short Hessian memory, then a long one
            opt.param_groups[0]["beta2"] = 0.999
        opt.step(closure)
        if k >= 1000:
            means.append(w.detach().mean(0))
            variances.append((1 / opt.posterior_precision()[0]).mean(0))
    _check_posterior(means, variances, mean, mf_var)


@pytest.mark.parametrize("hessian", ["exact", "hutchinson"])
def test_von_converges_to_mean_field_posterior(linreg, hessian: str) -> None:
    x, y, mean, mf_var = linreg
    r = 4 if hessian == "exact" else 16  # the exact Hessian has no Monte Carlo error to average
    w = torch.zeros(r, D, dtype=DT, requires_grad=True)
    opt = VON([w], lr=0.1, data_size=N, beta=0.99, prior_precision=PRIOR, hessian=hessian, seed=1)
    means, variances = [], []
    for k in range(1200):
        opt.step(lambda: _avg_loss(x, y, w))
        if k >= 600:
            means.append(w.detach().mean(0))
            variances.append((1 / opt.posterior_precision()[0]).mean(0))
    _check_posterior(means, variances, mean, mf_var)
    if hessian == "exact":  # a constant Hessian is estimated exactly: no Monte Carlo error at all,
        # only the initial value decays, as beta**1200 = 6e-6
        torch.testing.assert_close(
            1 / opt.posterior_precision()[0], mf_var.expand(r, D), rtol=2e-5, atol=0
        )


class _Replicas(nn.Module):
    """R copies of a linear model: outputs (M, R)."""

    def __init__(self, r: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(r, D, dtype=DT))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.T


def test_vogn_sampled_fisher_converges_to_mean_field_posterior(linreg) -> None:
    x, y, mean, mf_var = linreg
    model = _Replicas(32)
    opt = VOGN(
        model.parameters(),
        lr=0.1,
        data_size=N,
        beta=0.98,
        prior_precision=PRIOR,
        fisher_type="mc",
        seed=2,
    )
    closure = PerExampleClosure(
        model, x, y[:, None].expand(N, 32), likelihood="gaussian", noise_std=SIGMA
    )
    means, variances = [], []
    for k in range(800):
        if k == 400:  # burn-in with a short memory (0.98**400 = 3e-4 of the initial value left)
            opt.param_groups[0]["beta"] = 0.999
        opt.step(closure)
        if k >= 400:
            means.append(model.weight.detach().mean(0))
            variances.append((1 / opt.posterior_precision()[0]).mean(0))
    _check_posterior(means, variances, mean, mf_var)


def test_vogn_empirical_fisher_converges_to_its_own_biased_fixed_point(linreg) -> None:
    """With observed targets VOGN's curvature is the empirical Fisher: its fixed point solves
    s_j = (1/N) sum_i x_ij^2 E_q[r_i^2] / sigma^4, which is not the mean-field posterior."""
    x, y, mean, mf_var = linreg
    v = mf_var.clone()
    r2 = (y - x @ mean) ** 2
    for _ in range(200):  # self-consistent fixed point (mean = exact posterior mean)
        s = ((x**2) * (r2 + (x**2) @ v)[:, None]).mean(0) / SIGMA**4
        v = 1 / (N * s + PRIOR)
    assert float((v / mf_var - 1).abs().max()) > 0.04  # biased by the empirical Fisher
    model = _Replicas(32)
    opt = VOGN(model.parameters(), lr=0.1, data_size=N, beta=0.98, prior_precision=PRIOR, seed=3)
    closure = PerExampleClosure(
        model, x, y[:, None].expand(N, 32), likelihood="gaussian", noise_std=SIGMA
    )
    means, variances = [], []
    for k in range(700):
        if k == 400:
            opt.param_groups[0]["beta"] = 0.999
        opt.step(closure)
        if k >= 400:
            means.append(model.weight.detach().mean(0))
            variances.append((1 / opt.posterior_precision()[0]).mean(0))
    _check_posterior(means, variances, mean, v)


@pytest.mark.parametrize("fisher_type", [FisherType.EXACT, FisherType.GGN])
def test_vogn_exact_fisher_follows_the_closed_form_curvature(
    linreg, fisher_type: FisherType
) -> None:
    """For linear regression the Fisher = GGN diagonal is the constant mean(x_ij^2) / sigma^2:
    VOGN's curvature then follows s_k = beta^k s_0 + (1 - beta^k) h exactly (no Monte Carlo
    error, whatever the weight samples), and the means still converge to the posterior mean."""
    x, y, mean, mf_var = linreg
    model = _Replicas(8)
    beta, steps = 0.98, 300
    opt = VOGN(
        model.parameters(),
        lr=0.1,
        data_size=N,
        beta=beta,
        prior_precision=PRIOR,
        fisher_type=fisher_type,
        seed=4,
    )
    closure = PerExampleClosure(
        model, x, y[:, None].expand(N, 8), likelihood=GaussianLikelihood(variance=SIGMA**2)
    )
    means = []
    for k in range(steps):
        opt.step(closure)
        if k >= 200:
            means.append(model.weight.detach().mean(0))
    h = (x**2).mean(0) / SIGMA**2  # closed form, independent of igbook.fisher
    s = beta**steps * 1.0 + (1 - beta**steps) * h
    torch.testing.assert_close(
        opt.posterior_precision()[0], (N * s + PRIOR).expand(8, D), rtol=1e-10, atol=0
    )
    err = ((torch.stack(means).mean(0) - mean) / mf_var.sqrt()).abs()
    assert float(err.max()) < 0.1, err


def test_vogn_fisher_keyword_is_a_deprecated_alias() -> None:
    p = [nn.Parameter(torch.zeros(2, dtype=DT))]
    with pytest.warns(DeprecationWarning, match="fisher_type=FisherType.MC"):
        opt = VOGN(p, lr=0.1, data_size=10, fisher="sampled")
    assert opt.fisher_type is FisherType.MC
    with pytest.warns(DeprecationWarning, match="fisher_type=FisherType.EMPIRICAL"):
        assert VOGN(p, lr=0.1, data_size=10, fisher="empirical").fisher_type is FisherType.EMPIRICAL
    with pytest.warns(
        DeprecationWarning, match="FisherType.MC"
    ):  # the old value, passed by position
        assert VOGN(p, 0.1, 10, 0.999, 1.0, 1.0, 1, "sampled").fisher_type is FisherType.MC
    assert VOGN(p, lr=0.1, data_size=10).fisher_type is FisherType.EMPIRICAL
    with pytest.raises(ValueError, match="fisher_type only"):
        VOGN(p, lr=0.1, data_size=10, fisher="sampled", fisher_type="mc")
    with pytest.raises(ValueError, match="fisher_type"):  # a possibly negative curvature is VON's
        VOGN(p, lr=0.1, data_size=10, fisher_type=FisherType.HESSIAN)


def test_per_example_closure_curvature_matches_independent_paths(toy) -> None:
    """The closure's curvature diagonals (igbook.fisher) against autograd: the empirical one
    against squared per-example gradients of a loop, the exact Fisher against
    diag(J^T (diag p - p p^T) J) with J from torch.func.jacrev, one example at a time."""
    x, y = toy
    model = _mlp(7)
    closure = PerExampleClosure(model, x, y, likelihood=CategoricalLikelihood())
    params = list(model.parameters())
    loop = [
        torch.autograd.grad(nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1]), params)
        for i in range(len(y))
    ]
    emp = closure.curvature_diagonal(params, FisherType.EMPIRICAL)
    for j, e in enumerate(emp):
        torch.testing.assert_close(
            e, torch.stack([g[j] ** 2 for g in loop]).mean(0), rtol=1e-10, atol=1e-14
        )
    names = [n for n, _ in model.named_parameters()]
    exact = [torch.zeros_like(p) for p in params]
    for i in range(len(y)):
        jac = torch.func.jacrev(
            lambda *ps, i=i: torch.func.functional_call(
                model, dict(zip(names, ps)), (x[i : i + 1],)
            )[0],
            argnums=tuple(range(len(params))),
        )(*[p.detach() for p in params])
        prob = model(x[i : i + 1])[0].softmax(-1).detach()
        lam = torch.diag(prob) - torch.outer(prob, prob)
        for j, jj in enumerate(jac):
            jf = jj.reshape(prob.shape[0], -1)
            exact[j] += ((lam @ jf) * jf).sum(0).reshape(params[j].shape) / len(y)
    for a, b in zip(closure.curvature_diagonal(params, "exact"), exact):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-14)


def test_per_example_closure_noise_std_is_the_gaussian_likelihood(linreg) -> None:
    x, y, _, _ = linreg
    model = _Replicas(2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.5, -0.2, 0.1], [1.0, 0.0, -1.0]], dtype=DT))
    a = PerExampleClosure(model, x, y[:, None].expand(N, 2), likelihood="gaussian", noise_std=SIGMA)
    b = PerExampleClosure(
        model, x, y[:, None].expand(N, 2), likelihood=GaussianLikelihood(variance=SIGMA**2)
    )
    assert a.noise_std == pytest.approx(SIGMA, rel=1e-15) and a.likelihood.variance == SIGMA**2
    la, ga = a.per_example_gradients([model.weight])
    lb, gb = b.per_example_gradients([model.weight])
    torch.testing.assert_close(la, lb, rtol=0, atol=0)
    torch.testing.assert_close(ga[0], gb[0], rtol=0, atol=0)
    # the gradient of a Gaussian NLL, by hand: (f - y) x / sigma^2 for each example and replica
    r = x @ model.weight.detach().T - y[:, None]
    torch.testing.assert_close(
        ga[0], r[:, :, None] * x[:, None, :] / SIGMA**2, rtol=1e-12, atol=1e-14
    )
    with pytest.raises(ValueError, match="noise_std"):
        PerExampleClosure(
            model, x, y[:, None].expand(N, 2), likelihood=GaussianLikelihood(), noise_std=0.5
        )


def test_vadam_fixed_point_is_not_the_posterior_with_full_batches(linreg) -> None:
    """The squared full-batch gradient is no curvature estimate: Vadam's variance is far off."""
    x, y, mean, mf_var = linreg
    w = torch.zeros(8, D, dtype=DT, requires_grad=True)
    opt = Vadam([w], lr=0.02, data_size=N, prior_precision=PRIOR, seed=4)

    def closure() -> torch.Tensor:
        loss = _avg_loss(x, y, w)
        loss.backward()
        return loss

    ms = []
    for k in range(1500):
        opt.step(closure)
        if k >= 750:
            ms.append(w.detach().mean(0))
    m = torch.stack(ms).mean(0)
    assert float(((m - mean) / mf_var.sqrt()).abs().max()) < 0.3  # the mean is right
    assert (
        float((1 / opt.posterior_precision()[0]).mean(0).div(mf_var).min()) > 3
    )  # the variance is not


# ----------------------------------------------------------------------------------------------
# agreement with the equations and with the reference implementation
# ----------------------------------------------------------------------------------------------


def test_von_step_is_a_diagonal_blr_step() -> None:
    """VON with lr = rho and beta = 1 - rho is one diagonal BLR step with one MC sample
    (the same sample: both draw it from a generator seeded alike)."""
    g = torch.Generator().manual_seed(0)
    xx = torch.randn(30, 4, generator=g, dtype=DT)
    yy = (torch.rand(30, generator=g, dtype=DT) < 0.5).to(DT)
    n, lam, rho, s0 = 30, 2.0, 0.3, 0.7

    def avg_nll(t: torch.Tensor) -> torch.Tensor:
        z = xx @ t
        return (nn.functional.softplus(z) - yy * z).mean()

    m0 = torch.tensor([0.1, -0.2, 0.3, 0.0], dtype=DT)
    w = m0.clone().requires_grad_(True)
    opt = VON([w], lr=rho, data_size=n, beta=1 - rho, prior_precision=lam, hess_init=s0, seed=5)
    opt.step(lambda: avg_nll(w))
    # the BLR step on N f + lam |t|^2 / 2 with one Monte Carlo sample for the likelihood part
    # (the prior's expectations are exact: E[lam t] = lam m, E[lam I] = lam I)
    s_0 = torch.full((4,), n * s0 + lam, dtype=DT)
    g, h = gaussian_expectations(
        lambda t: n * avg_nll(t), m0, s_0, method="mc", num_samples=1, seed=5
    )
    ref_prec = (1 - rho) * s_0 + rho * (h + lam)
    ref_mean = m0 - rho * (g + lam * m0) / ref_prec
    torch.testing.assert_close(w.detach(), ref_mean, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(opt.posterior_precision()[0], ref_prec, rtol=1e-12, atol=1e-12)


def test_vadam_and_ivon_steps_follow_their_equations() -> None:
    torch.manual_seed(0)
    w0 = torch.randn(5, dtype=DT)
    a = torch.randn(5, dtype=DT)

    def f(t: torch.Tensor) -> torch.Tensor:
        return (torch.cos(a * t) + t**2).sum()

    # Vadam: sample, then m <- m - lr * mhat / (sqrt(vhat) + lt)
    w = w0.clone().requires_grad_(True)
    opt = Vadam(
        [w], lr=0.1, data_size=10, betas=(0.8, 0.9), prior_precision=3.0, hess_init=0.5, seed=1
    )
    eps = torch.randn(5, generator=torch.Generator().manual_seed(1), dtype=DT) / math.sqrt(
        10 * 0.5 + 3.0
    )
    theta = (w0 + eps).requires_grad_(True)
    (gr,) = torch.autograd.grad(f(theta), theta)
    u = 0.2 * (gr + 0.3 * w0)
    s = 0.9 * 0.5 + 0.1 * gr**2
    expected = w0 - 0.1 * (u / 0.2) / ((s / 0.1).sqrt() + 0.3)
    opt.step(lambda: (f(w).backward(), f(w))[1])
    torch.testing.assert_close(w.detach(), expected, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(opt.posterior_precision()[0], 10 * s + 3.0)

    # IVON: Price estimator, corrected Hessian, debiased momentum (no rescaling)
    w = w0.clone().requires_grad_(True)
    ess, wd, h0, b1, b2 = 20.0, 0.1, 0.4, 0.5, 0.7
    opt = IVON(
        [w],
        lr=0.3,
        ess=ess,
        hess_init=h0,
        beta1=b1,
        beta2=b2,
        weight_decay=wd,
        rescale_lr=False,
        seed=2,
    )
    var = 1 / (ess * (h0 + wd))
    eps = torch.randn(5, generator=torch.Generator().manual_seed(2), dtype=DT) * math.sqrt(var)
    theta = (w0 + eps).requires_grad_(True)
    (gr,) = torch.autograd.grad(f(theta), theta)
    hhat = gr * eps / var
    h = b2 * h0 + (1 - b2) * hhat + 0.5 * (1 - b2) ** 2 * (h0 - hhat) ** 2 / (h0 + wd)
    mom = (1 - b1) * gr
    expected = w0 - 0.3 * (mom / (1 - b1) + wd * w0) / (h + wd)
    opt.step(lambda: (f(w).backward(), f(w))[1])
    torch.testing.assert_close(w.detach(), expected, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(opt.state[w]["hess"], h, rtol=1e-12, atol=1e-14)


def test_ivon_positivity_correction_keeps_precision_positive() -> None:
    """Adversarial (very negative) curvature estimates cannot make h + delta <= 0."""
    w = torch.zeros(3, dtype=DT, requires_grad=True)
    opt = IVON([w], lr=0.1, ess=10.0, hess_init=0.01, beta2=0.5, weight_decay=1e-3, seed=0)
    for _ in range(30):
        with opt.sampled_params(train=True):
            (-1e6 * (w * w).sum()).backward()  # a huge negative curvature
        opt.step()
        assert bool((opt.state[w]["hess"] + 1e-3 > 0).all())
        assert bool(torch.isfinite(w).all())


def _mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).to(DT)


@pytest.mark.parametrize(
    ("use_closure", "extra"),
    [
        (False, {}),
        (True, {}),
        (False, {"clip_radius": 0.02, "debias": False, "rescale_lr": False, "beta1": 0.5}),
    ],
)
def test_ivon_matches_reference_implementation(use_closure: bool, extra: dict) -> None:
    """Same global seed, same hyperparameters, two param groups, 2 MC samples: the iterates of
    igbook's IVON and of ivon-opt 0.1.3 agree to rounding (same equations, same draws); also
    with clipping, without debiasing and without learning-rate rescaling."""
    ivon = pytest.importorskip("ivon")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 5, generator=g, dtype=DT)
    y = torch.randint(0, 3, (64,), generator=g)
    models = [_mlp(0), _mlp(0)]
    kw = dict(ess=64, hess_init=0.5, beta2=0.999, weight_decay=1e-2, mc_samples=2, **extra)

    def groups(m: nn.Module) -> list[dict]:
        return [
            {"params": list(m[0].parameters()), "lr": 0.1},
            {"params": list(m[2].parameters()), "lr": 0.05},
        ]

    ours = IVON(groups(models[0]), lr=0.1, **kw)
    ref = ivon.IVON(groups(models[1]), lr=0.1, **kw)
    for t in range(40):
        for model, opt in zip(models, (ours, ref)):
            torch.manual_seed(1000 + t)

            def closure(model=model, opt=opt) -> torch.Tensor:
                opt.zero_grad()
                loss = nn.functional.cross_entropy(model(x), y)
                loss.backward()
                return loss

            if use_closure and opt is ours:
                opt.step(closure)
            else:
                for _ in range(2):
                    with opt.sampled_params(train=True):
                        closure()
                opt.step()
    for p, q in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12)
    ours_h = torch.cat([ours.state[p]["hess"].flatten() for p in models[0].parameters()])
    ref_h = torch.cat([grp["hess"] for grp in ref.param_groups])
    torch.testing.assert_close(ours_h, ref_h, rtol=1e-10, atol=1e-12)


def test_reference_ivon_leaves_samples_after_an_exception_ours_does_not() -> None:
    ivon = pytest.importorskip("ivon")
    for cls in (IVON, ivon.IVON):
        model = _mlp(0)
        before = [p.detach().clone() for p in model.parameters()]
        opt = cls(model.parameters(), lr=0.1, ess=100)
        with pytest.raises(KeyError), opt.sampled_params(train=True):
            raise KeyError("boom")
        restored = all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
        assert restored == (cls is IVON)  # the known flaw of ivon-opt 0.1.3


# ----------------------------------------------------------------------------------------------
# sampling context, predictive, state_dict, determinism
# ----------------------------------------------------------------------------------------------


def _make(name: str, params, seed: int | None = 0):
    if name == "IVON":
        return IVON(params, lr=0.1, ess=50, seed=seed)
    if name == "Vadam":
        return Vadam(params, lr=0.01, data_size=50, seed=seed)
    if name == "VON":
        return VON(params, lr=0.1, data_size=50, seed=seed)
    return VOGN(params, lr=0.1, data_size=50, seed=seed)


ALL = ["IVON", "Vadam", "VON", "VOGN"]


def _train(name: str, model: nn.Module, opt, steps: int, x, y) -> list[float]:
    losses = []
    for _ in range(steps):
        if name == "VOGN":
            losses.append(float(opt.step(PerExampleClosure(model, x, y))))
        elif name == "VON":
            losses.append(float(opt.step(lambda: nn.functional.cross_entropy(model(x), y))))
        else:

            def closure() -> torch.Tensor:
                loss = nn.functional.cross_entropy(model(x), y)
                loss.backward()
                return loss

            losses.append(float(opt.step(closure)))
    return losses


@pytest.fixture(scope="module")
def toy():
    g = torch.Generator().manual_seed(3)
    return torch.randn(20, 5, generator=g, dtype=DT), torch.randint(0, 3, (20,), generator=g)


@pytest.mark.parametrize("name", ALL)
def test_sampling_context_restores_after_exception(name: str, toy) -> None:
    model = _mlp(1)
    opt = _make(name, model.parameters())
    before = [p.detach().clone() for p in model.parameters()]

    def fail_inside_sampled_params() -> None:
        with opt.sampled_params():
            assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # sampled
            raise ZeroDivisionError("inside the sampling context")

    with pytest.raises(ZeroDivisionError):
        fail_inside_sampled_params()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    with opt.sampled_params():  # and it works again afterwards
        pass
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    if name in ("IVON", "Vadam"):  # a failed training sample is not recorded

        def fail_inside_training_sample() -> None:
            with opt.sampled_params(train=True):
                nn.functional.cross_entropy(model(toy[0]), toy[1]).backward()
                raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            fail_inside_training_sample()
        with pytest.raises(RuntimeError, match="needs gradients at posterior samples"):
            opt.step()


@pytest.mark.parametrize("name", ALL)
def test_state_dict_round_trip_resumes_identically(name: str, toy) -> None:
    x, y = toy
    model = _mlp(2)
    opt = _make(name, model.parameters(), seed=7)
    _train(name, model, opt, 5, x, y)
    saved_model = copy.deepcopy(model.state_dict())
    saved_opt = copy.deepcopy(opt.state_dict())
    assert "rng_state" in saved_opt
    _train(name, model, opt, 5, x, y)

    model2 = _mlp(99)
    model2.load_state_dict(saved_model)
    opt2 = _make(
        name, model2.parameters(), seed=12345
    )  # a different seed: overwritten by the state
    opt2.load_state_dict(saved_opt)
    _train(name, model2, opt2, 5, x, y)
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q)
    for a, b in zip(opt.posterior_precision(), opt2.posterior_precision()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", ALL)
def test_seeded_runs_are_identical(name: str, toy) -> None:
    x, y = toy
    runs = []
    for seed in (11, 11, 12):
        model = _mlp(3)
        opt = _make(name, model.parameters(), seed=seed)
        runs.append(
            (_train(name, model, opt, 4, x, y), [p.detach().clone() for p in model.parameters()])
        )
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))
    assert not all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[2][1]))


@pytest.mark.parametrize("name", ALL)
def test_several_monte_carlo_samples(name: str, toy) -> None:
    """mc_samples > 1 averages the per-sample statistics (Welford): finite, deterministic, and
    with one sample per step the result differs."""
    x, y = toy
    out = []
    for mc in (3, 3, 1):
        model = _mlp(9)
        cls, kw = {
            "IVON": (IVON, {"lr": 0.1, "ess": 50}),
            "Vadam": (Vadam, {"lr": 0.01, "data_size": 50}),
            "VON": (VON, {"lr": 0.1, "data_size": 50}),
            "VOGN": (VOGN, {"lr": 0.1, "data_size": 50}),
        }[name]
        opt = cls(model.parameters(), mc_samples=mc, seed=0, **kw)
        _train(name, model, opt, 3, x, y)
        out.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert bool(torch.isfinite(out[0]).all())
    assert torch.equal(out[0], out[1]) and not torch.equal(out[0], out[2])


def test_mc_average_equals_the_mean_of_the_samples() -> None:
    """With beta1 = 0 and no correction-relevant terms, IVON's first step uses the mean of the K
    sampled gradients: compare with K single-sample statistics computed by hand."""
    w = torch.zeros(4, dtype=DT, requires_grad=True)
    a = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=DT)
    opt = IVON(
        [w],
        lr=0.1,
        ess=10,
        hess_init=1.0,
        beta1=0.0,
        beta2=0.0,
        weight_decay=0.0,
        rescale_lr=False,
        mc_samples=4,
        seed=3,
    )

    def closure() -> torch.Tensor:
        loss = (torch.cos(a * w) + w**2).sum()
        loss.backward()
        return loss

    gen = torch.Generator().manual_seed(3)
    sd = 1 / math.sqrt(10 * 1.0)
    zs = [torch.randn(4, generator=gen, dtype=DT) for _ in range(4)]
    grads = [-a * torch.sin(a * (z * sd)) + 2 * z * sd for z in zs]
    g_mean = torch.stack(grads).mean(0)
    h_hat = torch.stack([g * z / sd for g, z in zip(grads, zs)]).mean(0)
    h_new = (
        h_hat + 0.5 * (1 - h_hat) ** 2 / 1.0
    )  # beta2 = 0: h = hhat + (h0 - hhat)^2 / (2 (h0 + wd))
    opt.step(closure)
    torch.testing.assert_close(opt.state[w]["hess"], h_new, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(w.detach(), -0.1 * g_mean / h_new, rtol=1e-12, atol=1e-14)


def test_param_groups_have_their_own_hyperparameters(toy) -> None:
    x, y = toy
    model = _mlp(4)
    frozen = [p.detach().clone() for p in model[0].parameters()]
    opt = IVON(
        [{"params": model[0].parameters(), "lr": 0.0}, {"params": model[2].parameters()}],
        lr=0.5,
        ess=20,
        seed=0,
    )
    _train("IVON", model, opt, 3, x, y)
    assert all(
        torch.equal(a, b) for a, b in zip(frozen, model[0].parameters())
    )  # lr = 0: means fixed
    assert not torch.equal(model[2].weight, _mlp(4)[2].weight)
    assert [s.shape for s in opt.posterior_std()] == [p.shape for p in model.parameters()]


def test_per_example_gradients_match_autograd(toy) -> None:
    x, y = toy
    model = _mlp(5)
    closure = PerExampleClosure(model, x, y)
    params = list(model.parameters())
    losses, grads = closure.per_example_gradients(params)
    for i in (0, 7, 19):
        li = nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1])
        gi = torch.autograd.grad(li, params)
        torch.testing.assert_close(losses[i], li.detach())
        for a, b in zip(grads, gi):
            torch.testing.assert_close(a[i], b, rtol=1e-12, atol=1e-14)
    loss = closure()  # an ordinary closure for any optimizer
    torch.testing.assert_close(loss, losses.mean())
    torch.testing.assert_close(params[0].grad, grads[0].mean(0), rtol=1e-12, atol=1e-14)
    yt = closure.sample_targets(torch.Generator().manual_seed(0))
    assert yt.shape == y.shape and yt.dtype == torch.long


def test_predictive_averages_samples_and_restores(toy) -> None:
    x, _ = toy
    model = _mlp(6)
    opt = IVON(model.parameters(), lr=0.1, ess=10, seed=0)
    means = [p.detach().clone() for p in model.parameters()]
    samples = predictive(opt, lambda: model(x).softmax(-1), 6, return_samples=True)
    assert samples.shape == (6, 20, 3)
    assert not torch.allclose(samples[0], samples[1])
    opt2 = IVON(model.parameters(), lr=0.1, ess=10, seed=0)
    avg = predictive(opt2, lambda: model(x).softmax(-1), 6)
    torch.testing.assert_close(avg, samples.mean(0), rtol=1e-12, atol=1e-14)
    assert all(torch.equal(a, b) for a, b in zip(means, model.parameters()))
    with sampled_params(opt2):
        assert not torch.equal(model[0].weight, means[0])
    assert torch.equal(model[0].weight, means[0])


def test_predictive_accepts_the_reference_ivon(toy) -> None:
    ivon = pytest.importorskip("ivon")
    model = _mlp(6)
    opt = ivon.IVON(model.parameters(), lr=0.1, ess=10)
    out = predictive(opt, lambda: model(toy[0]).softmax(-1), 3)
    torch.testing.assert_close(out.sum(-1), torch.ones(20, dtype=DT))


def test_calibration_metrics_against_hand_and_sklearn() -> None:
    sk = pytest.importorskip("sklearn.metrics")
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.45, 0.55], [0.6, 0.4]], dtype=DT)
    labels = torch.tensor([0, 1, 1, 0, 0])
    # bins of width 0.5 on confidence: (0.5, 1] holds all five: conf 0.71, acc 3/5
    ece2 = expected_calibration_error(probs, labels, num_bins=2)
    torch.testing.assert_close(
        ece2, torch.tensor(abs(0.6 - (0.9 + 0.8 + 0.7 + 0.55 + 0.6) / 5), dtype=DT)
    )
    # ten bins: (0.5,0.6]: {0.55 wrong, 0.6 right}; (0.6,0.7]: {0.7 right};
    # (0.7,0.8]: {0.8 wrong}; (0.8,0.9]: {0.9 right}
    ref10 = (2 * abs(0.5 - 0.575) + abs(1 - 0.7) + abs(0 - 0.8) + abs(1 - 0.9)) / 5
    torch.testing.assert_close(
        expected_calibration_error(probs, labels, 10), torch.tensor(ref10, dtype=DT)
    )
    curve = reliability_curve(probs, labels, 10)
    assert int(curve.count.sum()) == 5 and torch.isnan(curve.accuracy[0])
    m = classification_metrics(probs, labels, 10)
    assert m.accuracy == pytest.approx(0.6)
    assert m.nll == pytest.approx(sk.log_loss(labels.numpy(), probs.numpy()), rel=1e-12)
    onehot = nn.functional.one_hot(labels, 2).to(DT)
    assert m.brier == pytest.approx(float(((probs - onehot) ** 2).sum(1).mean()), rel=1e-12)
    assert m.ece == pytest.approx(ref10, rel=1e-12)


# ----------------------------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------------------------


def _p() -> list[torch.Tensor]:
    return [torch.zeros(3, dtype=DT, requires_grad=True)]


BAD_HYPER = [
    (lambda: IVON(_p(), lr=-0.1, ess=10), ValueError, "lr"),
    (lambda: IVON(_p(), lr=0.1, ess=0.0), ValueError, "ess"),
    (lambda: IVON(_p(), lr=0.1, ess=-5), ValueError, "ess"),
    (lambda: IVON(_p(), lr=0.1, ess=10, hess_init=0.0), ValueError, "hess_init"),
    (lambda: IVON(_p(), lr=0.1, ess=10, beta1=1.0), ValueError, r"beta1 must lie in \[0, 1\)"),
    (lambda: IVON(_p(), lr=0.1, ess=10, beta2=-0.1), ValueError, "beta2"),
    (lambda: IVON(_p(), lr=0.1, ess=10, weight_decay=-1e-4), ValueError, "weight_decay"),
    (lambda: IVON(_p(), lr=0.1, ess=10, mc_samples=0), ValueError, "mc_samples"),
    (lambda: IVON(_p(), lr=0.1, ess=10, clip_radius=0.0), ValueError, "clip_radius"),
    (lambda: IVON(_p(), lr=float("nan"), ess=10), ValueError, "lr"),
    (lambda: IVON(_p(), lr="0.1", ess=10), TypeError, "lr"),
    (
        lambda: IVON(_p(), lr=0.1, ess=10, seed=1, generator=torch.Generator()),
        ValueError,
        "either seed",
    ),
    (lambda: IVON([{"params": _p(), "lr": -1.0}], lr=0.1, ess=10), ValueError, "lr"),
    (
        lambda: IVON(
            [torch.zeros(2, requires_grad=True), torch.zeros(2, dtype=DT, requires_grad=True)],
            lr=0.1,
            ess=10,
        ),
        ValueError,
        "dtype",
    ),
    (lambda: Vadam(_p(), lr=-1e-3, data_size=10), ValueError, "lr"),
    (lambda: Vadam(_p(), data_size=0), ValueError, "data_size"),
    (lambda: Vadam(_p(), data_size=10, betas=(1.0, 0.9)), ValueError, r"betas\[0\]"),
    (lambda: Vadam(_p(), data_size=10, betas=(0.9, 1.5)), ValueError, r"betas\[1\]"),
    (lambda: Vadam(_p(), data_size=10, prior_precision=0.0), ValueError, "prior_precision"),
    (lambda: Vadam(_p(), data_size=10, prior_precision=-1.0), ValueError, "prior_precision"),
    (lambda: Vadam(_p(), data_size=10, hess_init=-1.0), ValueError, "hess_init"),
    (lambda: Vadam(_p(), data_size=10, betas=0.9), TypeError, "betas"),
    (lambda: VON(_p(), lr=-0.1, data_size=10), ValueError, "lr"),
    (lambda: VON(_p(), lr=0.1, data_size=10, beta=1.0), ValueError, "beta"),
    (lambda: VON(_p(), lr=0.1, data_size=10, prior_precision=-2.0), ValueError, "prior_precision"),
    (lambda: VON(_p(), lr=0.1, data_size=10, hessian="fisher"), ValueError, "hessian"),
    (
        lambda: VON(_p(), lr=0.1, data_size=10, hutchinson_samples=0),
        ValueError,
        "hutchinson_samples",
    ),
    (lambda: VOGN(_p(), lr=0.1, data_size=10, fisher_type="true"), ValueError, "fisher_type"),
    (lambda: VOGN(_p(), lr=0.1, data_size=2.5), TypeError, "data_size"),
    (lambda: VOGN(_p(), lr=0.1, data_size=10, beta=-0.5), ValueError, "beta"),
]


@pytest.mark.parametrize(("make", "exc", "match"), BAD_HYPER)
def test_bad_hyperparameters_raise(make, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        make()


def test_add_param_group_validates() -> None:
    opt = IVON(_p(), lr=0.1, ess=10)
    with pytest.raises(ValueError, match="ess"):
        opt.add_param_group({"params": _p(), "ess": -1.0})
    assert len(opt.param_groups) == 1


def test_misuse_raises_clear_errors(toy) -> None:
    x, y = toy
    model = _mlp(8)
    opt = IVON(model.parameters(), lr=0.1, ess=10)
    with pytest.raises(RuntimeError, match="needs gradients at posterior samples"):
        opt.step()
    with opt.sampled_params():
        with pytest.raises(RuntimeError, match="nested"), opt.sampled_params():
            pass
        with pytest.raises(RuntimeError, match="inside sampled_params"):
            opt.step()
    von = VON(model.parameters(), lr=0.1, data_size=20)

    def backward_closure() -> torch.Tensor:
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    with pytest.raises(RuntimeError, match="without calling backward"):
        von.step(backward_closure)
    with pytest.raises(TypeError, match="closure"):
        von.step()
    with pytest.raises(RuntimeError, match="step\\(closure\\)"), von.sampled_params(train=True):
        pass
    vogn = VOGN(model.parameters(), lr=0.1, data_size=20)
    with pytest.raises(TypeError, match="PerExampleClosure"):
        vogn.step(backward_closure)
    with pytest.raises(ValueError, match="likelihood"):
        PerExampleClosure(model, x, y, likelihood="poisson")
    with pytest.raises(TypeError, match="class indices"):
        PerExampleClosure(model, x, y.to(DT))
    with pytest.raises(ValueError, match="batch"):
        PerExampleClosure(model, x, y[:5])
    with pytest.raises(ValueError, match="not parameters"):
        PerExampleClosure(model, x, y).per_example_gradients([torch.zeros(2, requires_grad=True)])
    w = torch.zeros(2, dtype=DT, requires_grad=True)
    von = VON([w], lr=0.5, data_size=10, beta=0.0, hess_init=0.0)
    with pytest.raises(RuntimeError, match="non-positive"):  # negative curvature in VON
        von.step(lambda: -(w * w).sum() * 100)
    probs = torch.full((4, 3), 1 / 3, dtype=DT)
    with pytest.raises(ValueError, match="num_samples"):
        predictive(opt, lambda: model(x), 0)
    with pytest.raises(TypeError, match="sampled_params"):
        predictive(object(), lambda: model(x), 2)
    with pytest.raises(ValueError, match="sum to 1"):
        classification_metrics(2 * probs, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="labels"):
        expected_calibration_error(probs, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="num_bins"):
        reliability_curve(probs, torch.zeros(4, dtype=torch.long), 0)
