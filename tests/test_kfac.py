"""Tests of igbook.kfac against independent torch.func references (float64).

The references below never call igbook: the GGN is J^T H J with J from torch.func.jacrev over
torch.func.functional_call and H from torch.func.hessian of the loss in the output; the Fisher of
a single data point is the score outer product summed over every label weighted by its
probability; dense solves use torch.linalg.solve on torch.kron.
"""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.func import functional_call, grad, hessian, jacrev, vmap

from igbook.kfac import (
    KFAC,
    DenseNaturalGradient,
    KFACPreconditioner,
    curvature_costs,
    layer_fisher_blocks,
    layer_vector,
    negative_log_likelihood,
    network_fisher,
    output_gradient_samples,
)

DT = torch.float64


# ----------------------------------------------------------------------------- references


def _colmajor_jacobian(jw: torch.Tensor, jb: torch.Tensor | None) -> torch.Tensor:
    """(N, C, out, *rest) weight Jacobian + (N, C, out) bias Jacobian -> (N, C, d) in [vec(W), b]."""
    n, c, out = jw.shape[:3]
    cols = [jw.reshape(n, c, out, -1).transpose(2, 3).reshape(n, c, -1)]
    if jb is not None:
        cols.append(jb)
    return torch.cat(cols, dim=2)


def _layer_jacobians(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-layer Jacobians of the (flattened) outputs, (N, C, d_layer), column-major layer order."""
    params = {k: v.detach() for k, v in model.named_parameters()}

    def f(p, xi):
        return functional_call(model, p, (xi.unsqueeze(0),)).reshape(-1)

    jac = vmap(jacrev(f), in_dims=(None, 0))(params, x)
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            pre = f"{name}." if name else ""
            jb = jac.get(pre + "bias")
            out[name or "<model>"] = _colmajor_jacobian(jac[pre + "weight"], jb)
    return out


def _loss_hessians(outputs: torch.Tensor, kind: str) -> torch.Tensor:
    """Hessian of the per-example negative log-likelihood w.r.t. the output, (N, C, C), by torch.func.hessian."""

    def nll(f, y):
        if kind == "categorical":
            return -(torch.log_softmax(f, 0) * y).sum()  # y one-hot
        if kind == "bernoulli":
            return F.binary_cross_entropy_with_logits(f, y, reduction="sum")
        return 0.5 * ((f - y) ** 2).sum()

    f = outputs.detach().reshape(outputs.shape[0], -1)
    # the Hessian in f does not depend on y for these likelihoods: use any label
    y = torch.zeros_like(f)
    if kind == "categorical":
        y[:, 0] = 1.0
    return vmap(hessian(nll))(f, y)


def reference_block_ggn(
    model: nn.Module, x: torch.Tensor, kind: str, reduction: str = "mean"
) -> dict[str, torch.Tensor]:
    """Diagonal blocks of (1/N) sum_n J_n^T H_n J_n per layer (sum: no 1/N)."""
    jac = _layer_jacobians(model, x)
    H = _loss_hessians(model(x), kind)
    out = {}
    for name, J in jac.items():
        blk = torch.einsum("ncd,nce,nef->df", J, H, J)
        out[name] = blk / x.shape[0] if reduction == "mean" else blk
    return out


def reference_single_datum_fisher(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Block Fisher of one data point with a categorical likelihood: sum_y p(y|x) s_y s_y^T."""
    assert x.shape[0] == 1
    params = {k: v.detach() for k, v in model.named_parameters()}

    def logp(p, y):
        return torch.log_softmax(functional_call(model, p, (x,)).reshape(-1), 0)[y]

    probs = torch.softmax(model(x).detach().reshape(-1), 0)
    out: dict[str, torch.Tensor] = {}
    for y in range(probs.shape[0]):
        s = grad(logp)(params, y)
        for name, m in model.named_modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                pre = f"{name}." if name else ""
                w = s[pre + "weight"]
                v = torch.cat([w.reshape(w.shape[0], -1).T.reshape(-1), s[pre + "bias"]])
                out[name] = out.get(name, 0) + probs[y] * torch.outer(v, v)
    return out


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def deep_linear(widths: list[int], bias: bool = True, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(*[nn.Linear(a, b, bias=bias) for a, b in zip(widths[:-1], widths[1:])]).to(
        DT
    )


def mlp(seed: int = 0, act=nn.Tanh, widths=(4, 6, 5, 3)) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(act())
    return nn.Sequential(*layers).to(DT)


def _flat_grads(model: nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters()]


# ----------------------------------------------------------------------------- exact cases


@pytest.mark.parametrize("widths", [[6, 3, 1], [4, 5, 3, 2], [3, 7, 2, 4, 3]])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("use_bias", [True, False])
def test_deep_linear_square_loss_type2_equals_block_ggn(widths, reduction, use_bias) -> None:
    model = deep_linear(widths, bias=use_bias)
    x = torch.randn(11, widths[0], dtype=DT, generator=torch.Generator().manual_seed(1))
    pre = KFACPreconditioner(model, likelihood="gaussian", fisher_type="exact", reduction=reduction)
    pre.update_factors(model(x))
    ref = reference_block_ggn(model, x, "gaussian", reduction)
    for name, m in pre.named_layers().items():
        assert rel(pre.dense_block(m), ref[name]) < 1e-10, name


def test_deep_linear_separate_bias_blocks_are_exact_subblocks() -> None:
    model = deep_linear([5, 4, 3])
    x = torch.randn(8, 5, dtype=DT, generator=torch.Generator().manual_seed(2))
    pre = KFACPreconditioner(model, likelihood="gaussian", fisher_type="exact", bias="separate")
    pre.update_factors(model(x))
    ref = reference_block_ggn(model, x, "gaussian")
    for name, m in pre.named_layers().items():
        fw, fb = pre.factors(m)
        k = m.weight.numel()
        assert rel(torch.kron(fw.A, fw.G), ref[name][:k, :k]) < 1e-10
        assert rel(torch.kron(fb.A, fb.G), ref[name][k:, k:]) < 1e-10
        # the dense block of "separate" drops exactly the weight-bias coupling
        d = pre.dense_block(m)
        assert torch.count_nonzero(d[:k, k:]) == 0


def test_deep_linear_running_average_over_batches_equals_full_batch() -> None:
    """factor_decay=1 averages the batches exactly; for a deep linear net this is the full-data GGN."""
    model = deep_linear([4, 3, 2])
    g = torch.Generator().manual_seed(3)
    xs = [torch.randn(6, 4, dtype=DT, generator=g) for _ in range(3)]
    pre = KFACPreconditioner(model, likelihood="gaussian", fisher_type="exact", factor_decay=1.0)
    for x in xs:
        out = model(x)
        assert pre.update_factors(out)
        model.zero_grad()
        negative_log_likelihood(out, torch.zeros_like(out), likelihood="gaussian").backward()
        pre.step()
    ref = reference_block_ggn(model, torch.cat(xs), "gaussian")
    for name, m in pre.named_layers().items():
        assert rel(pre.dense_block(m), ref[name]) < 1e-10


@pytest.mark.parametrize("fisher_type", ["exact", "ggn"])
def test_single_datum_cross_entropy_equals_block_fisher(fisher_type) -> None:
    model = mlp(seed=4)
    x = torch.randn(1, 4, dtype=DT, generator=torch.Generator().manual_seed(4))
    pre = KFACPreconditioner(model, likelihood="categorical", fisher_type=fisher_type)
    pre.update_factors(model(x))
    ref = reference_single_datum_fisher(model, x)
    for name, m in pre.named_layers().items():
        assert rel(pre.dense_block(m), ref[name]) < 1e-10


def test_single_datum_conv_and_bernoulli_equal_block_ggn() -> None:
    """A Conv2d whose output is 1x1 (one position) and a sigmoid likelihood: still exact for N = 1."""
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(3, 4)).to(DT)
    x = torch.randn(1, 2, 3, 3, dtype=DT)
    pre = KFACPreconditioner(model, likelihood="bernoulli", fisher_type="exact")
    pre.update_factors(model(x))
    ref = reference_block_ggn(model, x, "bernoulli")
    for name, m in pre.named_layers().items():
        assert rel(pre.dense_block(m), ref[name]) < 1e-10


def test_single_datum_empirical_is_exact_gradient_outer_product() -> None:
    model = mlp(seed=6)
    x = torch.randn(1, 4, dtype=DT)
    y = torch.tensor([2])
    pre = KFACPreconditioner(model, likelihood="categorical", fisher_type="empirical")
    out = model(x)
    pre.update_factors(out, y)
    F.cross_entropy(out, y).backward()
    for m in pre.named_layers().values():
        gvec = layer_vector(m.weight.grad, m.bias.grad)
        assert rel(pre.dense_block(m), torch.outer(gvec, gvec)) < 1e-10


def test_type2_output_vectors_square_to_the_loss_hessian() -> None:
    g = torch.Generator().manual_seed(7)
    for kind, f in (
        ("categorical", torch.randn(5, 4, dtype=DT, generator=g)),
        ("bernoulli", torch.randn(5, 3, dtype=DT, generator=g)),
        ("gaussian", torch.randn(5, 3, dtype=DT, generator=g)),
    ):
        v = output_gradient_samples(f, likelihood=kind, fisher_type="exact")
        torch.testing.assert_close(
            torch.einsum("knc,knd->ncd", v, v), _loss_hessians(f, kind), rtol=1e-12, atol=1e-14
        )


def test_monte_carlo_factors_converge_to_type2() -> None:
    model = mlp(seed=8)
    x = torch.randn(20, 4, dtype=DT, generator=torch.Generator().manual_seed(8))
    exact = KFACPreconditioner(model, likelihood="categorical", fisher_type="exact")
    exact.update_factors(model(x))
    errors = []
    for k in (4, 64, 1024):
        pre = KFACPreconditioner(
            model, likelihood="categorical", fisher_type="mc", mc_samples=k, seed=k
        )
        pre.update_factors(model(x))
        errors.append(
            max(rel(pre.factors(m).G, exact.factors(m).G) for m in pre.named_layers().values())
        )
        for m in pre.named_layers().values():  # A does not depend on the labels
            torch.testing.assert_close(pre.factors(m).A, exact.factors(m).A, rtol=1e-13, atol=1e-14)
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 0.1, errors  # ~1/sqrt(1024) relative Monte Carlo error


def test_empirical_differs_from_fisher_away_from_a_single_datum() -> None:
    """The empirical Fisher is not the Fisher: a regression test against silently using it."""
    model = mlp(seed=9)
    x = torch.randn(30, 4, dtype=DT, generator=torch.Generator().manual_seed(9))
    y = torch.randint(0, 3, (30,), generator=torch.Generator().manual_seed(9))
    a = KFACPreconditioner(model, likelihood="categorical", fisher_type="empirical")
    b = KFACPreconditioner(model, likelihood="categorical", fisher_type="exact")
    out = model(x)
    a.update_factors(out, y)
    b.update_factors(out)
    m = model[0]
    assert rel(a.factors(m).G, b.factors(m).G) > 0.1


def test_sum_and_mean_reductions_agree_after_rescaling() -> None:
    model = mlp(seed=10)
    n = 13
    x = torch.randn(n, 4, dtype=DT, generator=torch.Generator().manual_seed(10))
    y = torch.randint(0, 3, (n,), generator=torch.Generator().manual_seed(10))
    steps = {}
    for red, lam in (("mean", 1e-2), ("sum", 1e-2 * n)):
        model.zero_grad()
        pre = KFACPreconditioner(
            model,
            likelihood="categorical",
            fisher_type="exact",
            reduction=red,
            damping=lam,
            damping_mode="exact",
        )
        out = model(x)
        pre.update_factors(out)
        negative_log_likelihood(out, y, likelihood="categorical", reduction=red).backward()
        facs = {k: pre.factors(m) for k, m in pre.named_layers().items()}
        pre.step()
        steps[red] = (_flat_grads(model), facs)
        pre.remove_hooks()
    for k in steps["mean"][1]:
        torch.testing.assert_close(steps["sum"][1][k].A, steps["mean"][1][k].A, rtol=1e-13, atol=0)
        torch.testing.assert_close(
            steps["sum"][1][k].G, n * steps["mean"][1][k].G, rtol=1e-12, atol=0
        )
    for gs, gm in zip(steps["sum"][0], steps["mean"][0]):
        torch.testing.assert_close(gs, gm, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- linear algebra


def _spd(n: int, g: torch.Generator, cond: float = 10.0) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(n, n, dtype=DT, generator=g))
    d = torch.logspace(0, math.log10(cond), n, dtype=DT)
    return (q * d) @ q.T


@settings(max_examples=25, deadline=None)
@given(a=st.integers(1, 6), b=st.integers(1, 6), seed=st.integers(0, 10_000))
def test_kronecker_inverse_identity(a, b, seed) -> None:
    g = torch.Generator().manual_seed(seed)
    A, G = _spd(a, g), _spd(b, g)
    torch.testing.assert_close(
        torch.linalg.inv(torch.kron(A, G)),
        torch.kron(torch.linalg.inv(A), torch.linalg.inv(G)),
        rtol=1e-9,
        atol=1e-11,
    )
    V = torch.randn(b, a, dtype=DT, generator=g)
    vec = lambda M: M.T.reshape(-1)  # noqa: E731  column-major
    # (A kron G) vec(V) = vec(G V A) and its inverse G^{-1} V A^{-1}: how the preconditioner uses it
    torch.testing.assert_close(torch.kron(A, G) @ vec(V), vec(G @ V @ A), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(
        torch.linalg.solve(torch.kron(A, G), vec(V)),
        vec(torch.linalg.solve(G, V) @ torch.linalg.inv(A)),
        rtol=1e-8,
        atol=1e-10,
    )


@settings(max_examples=20, deadline=None)
@given(o=st.integers(1, 5), i=st.integers(1, 5), bias=st.booleans(), seed=st.integers(0, 1000))
def test_layer_vector_is_column_major(o, i, bias, seed) -> None:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(o, i, dtype=DT, generator=g)
    b = torch.randn(o, dtype=DT, generator=g) if bias else None
    v = layer_vector(w, b)
    for r in range(o):
        for c in range(i):
            assert v[c * o + r] == w[r, c]
    if bias:
        assert torch.equal(v[o * i :], b)


def _dense_solve_check(damping_mode: str, bias: str) -> None:
    model = mlp(seed=11)
    x = torch.randn(9, 4, dtype=DT, generator=torch.Generator().manual_seed(11))
    y = torch.randint(0, 3, (9,), generator=torch.Generator().manual_seed(11))
    lam = 0.03
    pre = KFACPreconditioner(
        model,
        likelihood="categorical",
        fisher_type="mc",
        mc_samples=3,
        damping=lam,
        damping_mode=damping_mode,
        bias=bias,
    )
    out = model(x)
    pre.update_factors(out)
    F.cross_entropy(out, y).backward()
    before = {n: layer_vector(m.weight.grad, m.bias.grad) for n, m in pre.named_layers().items()}
    blocks = {n: pre.factors(m) for n, m in pre.named_layers().items()}
    pre.step()
    for name, m in pre.named_layers().items():
        got = layer_vector(m.weight.grad, m.bias.grad)
        facs = blocks[name] if bias == "separate" else (blocks[name],)
        mats = []
        for f in facs:
            if damping_mode == "exact":
                mats.append(
                    torch.kron(f.A, f.G) + lam * torch.eye(f.A.shape[0] * f.G.shape[0], dtype=DT)
                )
            else:
                pi = math.sqrt(
                    (torch.trace(f.A) / f.A.shape[0]) / (torch.trace(f.G) / f.G.shape[0])
                )
                ia = f.A + pi * math.sqrt(lam) * torch.eye(f.A.shape[0], dtype=DT)
                ig = f.G + math.sqrt(lam) / pi * torch.eye(f.G.shape[0], dtype=DT)
                mats.append(torch.kron(ia, ig))
        want = torch.linalg.solve(torch.block_diag(*mats), before[name])
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("damping_mode", ["exact", "factored"])
@pytest.mark.parametrize("bias", ["joint", "separate"])
def test_preconditioned_gradient_equals_dense_block_solve(damping_mode, bias) -> None:
    _dense_solve_check(damping_mode, bias)


def test_conv2d_factors_match_their_definition() -> None:
    """A = mean over data and positions of patch outer products; G = sum over positions, mean over data."""
    torch.manual_seed(12)
    conv = nn.Conv2d(2, 3, kernel_size=2, stride=1, padding=1).to(DT)
    model = nn.Sequential(conv, nn.Tanh(), nn.Flatten(), nn.Linear(3 * 4 * 4, 2)).to(DT)
    x = torch.randn(5, 2, 3, 3, dtype=DT)
    pre = KFACPreconditioner(model, likelihood="gaussian", fisher_type="exact")
    out = model(x)
    pre.update_factors(out)
    # reference A by explicit slicing of the zero-padded input
    xp = F.pad(x, (1, 1, 1, 1))
    patches = []
    for i in range(4):
        for j in range(4):
            p = xp[:, :, i : i + 2, j : j + 2].reshape(5, -1)
            patches.append(torch.cat([p, torch.ones(5, 1, dtype=DT)], 1))
    P = torch.stack(patches, 1).reshape(-1, 9)
    A_ref = P.T @ P / P.shape[0]
    # reference G: Jacobian of the outputs w.r.t. the conv output (per position), type-2 with H = I
    s = conv(x)
    rest = nn.Sequential(*list(model)[1:])
    Js = vmap(jacrev(lambda si: rest(si.unsqueeze(0)).reshape(-1)))(s.detach())  # (N, C, 3, 4, 4)
    Jr = Js.flatten(3)  # (N, C, 3, 16)
    G_ref = torch.einsum("ncop,ncqp->oq", Jr, Jr) / 5
    f = pre.factors(conv)
    torch.testing.assert_close(f.A, A_ref, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(f.G, G_ref, rtol=1e-12, atol=1e-13)


def test_conv_covering_the_input_equals_linear() -> None:
    """A kernel as large as the image (one position) is a Linear layer on the flattened image."""
    torch.manual_seed(13)
    conv = nn.Conv2d(2, 3, kernel_size=3).to(DT)
    lin = nn.Linear(18, 3).to(DT)
    with torch.no_grad():
        lin.weight.copy_(conv.weight.reshape(3, -1))
        lin.bias.copy_(conv.bias)
    head = nn.Linear(3, 4).to(DT)
    mc = nn.Sequential(conv, nn.Flatten(), nn.Tanh(), head)
    ml = nn.Sequential(nn.Flatten(), lin, nn.Tanh(), copy.deepcopy(head))
    x = torch.randn(6, 2, 3, 3, dtype=DT)
    pc = KFACPreconditioner(mc, likelihood="categorical", fisher_type="exact")
    pl = KFACPreconditioner(ml, likelihood="categorical", fisher_type="exact")
    pc.update_factors(mc(x))
    pl.update_factors(ml(x))
    torch.testing.assert_close(pc.dense_block(conv), pl.dense_block(lin), rtol=1e-12, atol=1e-14)


def test_dense_reference_module_agrees_with_the_test_reference() -> None:
    """igbook.kfac.dense (used by the chapter) against this file's reference, on a nonlinear net."""
    model = mlp(seed=14)
    x = torch.randn(7, 4, dtype=DT, generator=torch.Generator().manual_seed(14))
    ours = layer_fisher_blocks(model, x, likelihood="categorical", fisher_type="exact")
    ref = reference_block_ggn(model, x, "categorical")
    for k in ref:
        torch.testing.assert_close(ours[k], ref[k], rtol=1e-11, atol=1e-13)
    Fm, layout = network_fisher(model, x, likelihood="categorical")
    assert Fm.shape == (layout.size, layout.size)
    assert torch.linalg.eigvalsh(Fm).min() > -1e-12  # positive semi-definite


# ----------------------------------------------------------------------------- the training machinery


def _train(model, opt_or_pre, x, y, steps, kind="categorical", sgd=None, start=0):
    out_params = []
    for t in range(start, start + steps):
        xb, yb = x[(t * 8) % 32 : (t * 8) % 32 + 8], y[(t * 8) % 32 : (t * 8) % 32 + 8]
        out = model(xb)
        loss = negative_log_likelihood(out, yb, likelihood=kind)
        opt_or_pre.zero_grad() if sgd is None else sgd.zero_grad()
        opt_or_pre.update_factors(out)
        loss.backward()
        if sgd is None:
            opt_or_pre.step()
        else:
            opt_or_pre.step()
            sgd.step()
        out_params.append([p.detach().clone() for p in model.parameters()])
    return out_params


def _data(seed=15):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(32, 4, dtype=DT, generator=g), torch.randint(0, 3, (32,), generator=g)


@pytest.mark.parametrize("damping_mode", ["factored", "exact"])
def test_state_dict_round_trip_reproduces_the_next_steps_exactly(damping_mode) -> None:
    x, y = _data()
    model = mlp(seed=16)
    opt = KFAC(
        model,
        likelihood="categorical",
        lr=0.05,
        momentum=0.9,
        damping=1e-2,
        damping_mode=damping_mode,
        factor_period=1,
        inverse_period=3,
        weight_decay=1e-4,
        kl_clip=1e-2,
    )
    _train(model, opt, x, y, 4)
    saved_model = copy.deepcopy(model.state_dict())
    saved_opt = copy.deepcopy(opt.state_dict())
    cont = _train(model, opt, x, y, 4, start=4)

    model2 = mlp(seed=99)
    model2.load_state_dict(saved_model)
    opt2 = KFAC(
        model2,
        likelihood="categorical",
        lr=0.05,
        momentum=0.9,
        damping=1e-2,
        damping_mode=damping_mode,
        factor_period=1,
        inverse_period=3,
        weight_decay=1e-4,
        kl_clip=1e-2,
        seed=123,
    )
    opt2.load_state_dict(saved_opt)
    again = _train(model2, opt2, x, y, 4, start=4)
    for a, b in zip(cont, again):
        for pa, pb in zip(a, b):
            assert torch.equal(pa, pb)


def test_preconditioner_composes_with_torch_sgd_like_the_kfac_optimizer() -> None:
    x, y = _data()
    m1, m2 = mlp(seed=17), mlp(seed=17)
    opt = KFAC(m1, likelihood="categorical", lr=0.1, momentum=0.0, damping=1e-2, seed=5)
    pre = KFACPreconditioner(m2, likelihood="categorical", damping=1e-2, seed=5)
    sgd = torch.optim.SGD(m2.parameters(), lr=0.1)
    a = _train(m1, opt, x, y, 5)
    b = _train(m2, pre, x, y, 5, sgd=sgd)
    for pa, pb in zip(a[-1], b[-1]):
        torch.testing.assert_close(pa, pb, rtol=1e-13, atol=1e-15)


def test_periods_and_ema() -> None:
    x, y = _data()
    model = mlp(seed=18)
    decay = 0.5
    pre = KFACPreconditioner(
        model,
        likelihood="categorical",
        fisher_type="exact",
        factor_period=2,
        inverse_period=4,
        factor_decay=decay,
    )
    hats, inv_ids = [], []
    for t in range(8):
        out = model(x[t * 4 : t * 4 + 4])
        did = pre.update_factors(out)
        assert did == (t % 2 == 0)
        if did:
            probe = KFACPreconditioner(model, likelihood="categorical", fisher_type="exact")
            probe.update_factors(model(x[t * 4 : t * 4 + 4]))
            hats.append(probe.factors(model[0]).G)
            probe.remove_hooks()
        model.zero_grad()
        F.cross_entropy(out, y[t * 4 : t * 4 + 4]).backward()
        pre.step()
        inv_ids.append(id(pre.blocks[0].inv_A))
    # inverses recomputed at steps 0 and 4 only
    assert inv_ids[0] == inv_ids[1] == inv_ids[2] == inv_ids[3] != inv_ids[4] == inv_ids[7]
    # EMA with the warm start eps_k = min(1 - 1/k, decay)
    want = hats[0]
    for k, h in enumerate(hats[1:], start=2):
        eps = min(1 - 1 / k, decay)
        want = eps * want + (1 - eps) * h
    torch.testing.assert_close(pre.factors(model[0]).G, want, rtol=1e-12, atol=1e-15)


def test_step_refuses_stale_factors_and_missing_forward() -> None:
    x, y = _data()
    model = mlp(seed=19)
    pre = KFACPreconditioner(model, likelihood="categorical")
    out = model(x)
    F.cross_entropy(out, y).backward()
    with pytest.raises(RuntimeError, match="no factors yet"):
        pre.step()
    out = model(x)
    pre.update_factors(out)
    F.cross_entropy(out, y).backward()
    pre.step()
    out = model(x)
    model.zero_grad()
    F.cross_entropy(out, y).backward()
    with pytest.raises(RuntimeError, match="due at step 1"):
        pre.step()
    with pytest.raises(RuntimeError, match=r"before loss.backward"):
        pre.update_factors(out)  # the graph was freed by backward


def test_no_nan_at_tiny_damping_with_rank_deficient_factors() -> None:
    torch.manual_seed(20)
    for dtype in (torch.float32, torch.float64):
        model = nn.Sequential(nn.Linear(10, 12), nn.Tanh(), nn.Linear(12, 3)).to(dtype)
        x = torch.randn(2, 10, dtype=dtype)  # batch 2 << width: A and G have rank <= 3
        for mode in ("factored", "exact"):
            pre = KFACPreconditioner(
                model, likelihood="categorical", damping=1e-14, damping_mode=mode
            )
            out = model(x)
            pre.update_factors(out)
            model.zero_grad()
            F.cross_entropy(out, torch.tensor([0, 1])).backward()
            pre.step()
            for p in model.parameters():
                assert torch.isfinite(p.grad).all(), (dtype, mode)
            pre.remove_hooks()


def test_kl_clipping_bounds_the_quadratic_kl() -> None:
    """With F v = g, the step -lr*nu*v has quadratic KL nu^2 lr^2 v.g / 2, clipped to kappa."""
    x, y = _data()
    lr, kappa = 1.0, 1e-4
    grads, steps = {}, {}
    for clip in (None, kappa):
        model = mlp(seed=21)
        pre = KFACPreconditioner(
            model, likelihood="categorical", damping=1e-3, kl_clip=clip, lr=lr, seed=3
        )
        out = model(x)
        pre.update_factors(out)
        F.cross_entropy(out, y).backward()
        grads[clip] = [p.grad.clone() for p in model.parameters()]
        pre.step()
        steps[clip] = [p.grad.clone() for p in model.parameters()]
    vg = sum(float((a * b).sum()) for a, b in zip(steps[None], grads[None]))
    kl = 0.5 * lr**2 * vg
    assert kl > kappa  # the test clips for real
    nu = math.sqrt(kappa / kl)
    for a, b in zip(steps[kappa], steps[None]):
        torch.testing.assert_close(a, nu * b, rtol=1e-12, atol=1e-15)
    assert abs(pre.last_kl - kappa) < 1e-15
    # a loose clip changes nothing
    model = mlp(seed=21)
    pre = KFACPreconditioner(
        model, likelihood="categorical", damping=1e-3, kl_clip=10 * kl, lr=lr, seed=3
    )
    out = model(x)
    pre.update_factors(out)
    F.cross_entropy(out, y).backward()
    pre.step()
    for a, b in zip(model.parameters(), steps[None]):
        assert torch.equal(a.grad, b)


def test_large_damping_gives_gradient_descent() -> None:
    """(A + pi sqrt(l))^{-1} (x) (G + sqrt(l)/pi)^{-1} -> I / l: K-FAC with lr = l * eta is SGD with eta."""
    x, y = _data()
    model = mlp(seed=22)
    lam = 1e10
    pre = KFACPreconditioner(model, likelihood="categorical", damping=lam)
    out = model(x)
    pre.update_factors(out)
    F.cross_entropy(out, y).backward()
    g = [p.grad.clone() for p in model.parameters()]
    pre.step()
    for p, gi in zip(model.parameters(), g):
        torch.testing.assert_close(lam * p.grad, gi, rtol=1e-4, atol=1e-9)


def test_unsupported_layers_named_in_one_warning_and_left_alone() -> None:
    torch.manual_seed(23)
    model = nn.Sequential(
        nn.Linear(4, 6),
        nn.LayerNorm(6),
        nn.Tanh(),
        nn.Linear(6, 6),
        nn.BatchNorm1d(6),
        nn.Identity(),
        nn.Linear(6, 3),
    ).to(DT)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        pre = KFACPreconditioner(model, likelihood="categorical")
    assert len(rec) == 1
    msg = str(rec[0].message)
    assert "1 (LayerNorm" in msg and "4 (BatchNorm1d" in msg
    assert set(pre.named_layers()) == {"0", "3", "6"}
    x, y = _data()
    out = model(x)
    pre.update_factors(out)
    F.cross_entropy(out, y).backward()
    ln = [p.grad.clone() for p in model[1].parameters()] + [
        p.grad.clone() for p in model[4].parameters()
    ]
    pre.step()
    after = list(model[1].parameters()) + list(model[4].parameters())
    for a, b in zip(after, ln):
        assert torch.equal(a.grad, b)


def test_grouped_conv_is_unsupported_and_frozen_layers_are_skipped() -> None:
    model = nn.Sequential(
        nn.Conv2d(2, 2, 1, groups=2), nn.Flatten(), nn.Linear(8, 3), nn.Linear(3, 2)
    ).to(DT)
    model[3].weight.requires_grad_(False)
    model[3].bias.requires_grad_(False)
    with pytest.warns(UserWarning, match="grouped convolution"):
        pre = KFACPreconditioner(model, likelihood="categorical")
    assert set(pre.named_layers()) == {"2"}


def test_exact_natural_gradient_optimizer_matches_a_dense_solve() -> None:
    x, y = _data()
    model = mlp(seed=24)
    opt = DenseNaturalGradient(model, likelihood="categorical", lr=0.5, damping=1e-2)
    params0 = {k: v.detach().clone() for k, v in model.named_parameters()}
    opt.zero_grad()
    Fm = opt.update_curvature(x)
    F.cross_entropy(model(x), y).backward()
    g = opt.layout.flatten({k: p.grad for k, p in model.named_parameters()})
    opt.step()
    want = -0.5 * torch.linalg.solve(Fm + 1e-2 * torch.eye(Fm.shape[0], dtype=DT), g)
    got = opt.layout.flatten({k: p.detach() - params0[k] for k, p in model.named_parameters()})
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    # dense type-2 Fisher over the whole net: its layer blocks are the reference blocks
    ref = reference_block_ggn(model, x, "categorical")
    Fm2, layout = network_fisher(model, x, likelihood="categorical")
    for name, sl in layout.layers.items():
        torch.testing.assert_close(Fm2[sl, sl], ref[name], rtol=1e-11, atol=1e-13)


def test_negative_log_likelihood_matches_torch_losses() -> None:
    g = torch.Generator().manual_seed(25)
    f = torch.randn(6, 4, dtype=DT, generator=g)
    y = torch.randint(0, 4, (6,), generator=g)
    torch.testing.assert_close(
        negative_log_likelihood(f, y, likelihood="categorical"), F.cross_entropy(f, y)
    )
    t = torch.rand(6, 4, dtype=DT, generator=g)
    torch.testing.assert_close(
        negative_log_likelihood(f, t, likelihood="bernoulli", reduction="sum"),
        F.binary_cross_entropy_with_logits(f, t, reduction="sum"),
    )
    # the Gaussian NLL is half the summed squared error: F.mse_loss is 2/numel(y_n) times it per point
    torch.testing.assert_close(
        negative_log_likelihood(f, t, likelihood="gaussian") * 2 / 4, F.mse_loss(f, t)
    )


def test_curvature_costs_of_a_1000_by_1000_layer() -> None:
    c = curvature_costs(1000, 1000)
    assert c.parameters == 1001 * 1000
    assert c.dense_bytes == 8 * (1001 * 1000) ** 2  # ~8 TB
    assert c.kfac_entries == 1001**2 + 1000**2
    assert c.dense_inverse_flops == pytest.approx(1001000.0**3)
    assert c.dense_inverse_flops / c.kfac_inverse_flops == pytest.approx(
        1001000.0**3 / (1001.0**3 + 1000.0**3)
    )


# ----------------------------------------------------------------------------- bad input

BAD_PRECONDITIONER_KWARGS = [
    ({"damping": 0.0}, ValueError, "damping"),
    ({"damping": -1e-3}, ValueError, "damping"),
    ({"damping": float("nan")}, ValueError, "damping"),
    ({"damping": float("inf")}, ValueError, "damping"),
    ({"damping": "0.1"}, TypeError, "damping"),
    ({"factor_decay": 0.0}, ValueError, "factor_decay"),
    ({"factor_decay": 1.5}, ValueError, "factor_decay"),
    ({"factor_decay": -0.2}, ValueError, "factor_decay"),
    ({"factor_period": 0}, ValueError, "factor_period"),
    ({"factor_period": 1.5}, TypeError, "factor_period"),
    ({"inverse_period": 0}, ValueError, "inverse_period"),
    ({"inverse_period": -3}, ValueError, "inverse_period"),
    ({"likelihood": "poisson"}, ValueError, "likelihood"),
    ({"fisher_type": "hessian"}, ValueError, "fisher_type"),
    ({"bias": "ones"}, ValueError, "bias"),
    ({"damping_mode": "tikhonov"}, ValueError, "damping_mode"),
    ({"mc_samples": 0}, ValueError, "mc_samples"),
    ({"reduction": "none"}, ValueError, "reduction"),
    ({"kl_clip": 0.0}, ValueError, "kl_clip"),
    ({"lr": -1.0}, ValueError, "lr"),
    ({"seed": "a"}, TypeError, "seed"),
]


@pytest.mark.parametrize(("kwargs", "exc", "match"), BAD_PRECONDITIONER_KWARGS)
def test_bad_preconditioner_arguments(kwargs, exc, match) -> None:
    base = {"likelihood": "categorical"}
    base.update(kwargs)
    with pytest.raises(exc, match=match):
        KFACPreconditioner(mlp(), **base)


@pytest.mark.parametrize(
    "model",
    [nn.Sequential(nn.ReLU()), nn.Sequential(nn.LayerNorm(3))],
    ids=["no-params", "layernorm"],
)
def test_model_without_supported_layer_raises(model) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="no supported layer"):
            KFACPreconditioner(model, likelihood="categorical")


def test_bad_inputs_at_run_time() -> None:
    with pytest.raises(TypeError, match="model"):
        KFACPreconditioner("net", likelihood="categorical")  # type: ignore[arg-type]
    model = mlp(seed=26)
    pre = KFACPreconditioner(model, likelihood="categorical", fisher_type="empirical")
    x, y = _data()
    out = model(x)
    with pytest.raises(ValueError, match="targets are required"):
        pre.update_factors(out)
    with pytest.raises(ValueError, match=r"targets must hold labels in 0\.\.2"):
        pre.update_factors(out, torch.full((32,), 7))
    with pytest.raises(TypeError, match="targets must hold integer class labels"):
        pre.update_factors(out, y.to(DT))
    with pytest.raises(ValueError, match=r"shape \(N, C\)"):
        pre.update_factors(out[:, :1])
    with pytest.raises(ValueError, match="damping"):
        pre.damping = 0.0
    with pytest.raises(ValueError, match="not a layer"):
        pre.dense_block(nn.Linear(2, 2))
    with pytest.raises(TypeError, match="state"):
        pre.load_state_dict({"steps": 0})
    other = KFACPreconditioner(mlp(widths=(4, 3)), likelihood="categorical")
    with pytest.raises(ValueError, match="blocks"):
        pre.load_state_dict(other.state_dict())
    kl = KFACPreconditioner(mlp(seed=27), likelihood="categorical", kl_clip=1e-3)
    out = kl.model(x)
    kl.update_factors(out)
    F.cross_entropy(out, y).backward()
    with pytest.raises(ValueError, match="learning rate"):
        kl.step()
    with pytest.raises(ValueError, match="must be an int >= 1"):
        curvature_costs(0, 10)
    with pytest.raises(TypeError, match="weight"):
        layer_vector([1.0, 2.0])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lr": 0.0}, "lr"),
        ({"momentum": 1.0}, "momentum"),
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"damping": 0.0}, "damping"),
    ],
)
def test_bad_kfac_optimizer_arguments(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        KFAC(mlp(), likelihood="categorical", **kwargs)


def test_kfac_load_state_dict_needs_kfac_entry() -> None:
    opt = KFAC(mlp(), likelihood="categorical")
    with pytest.raises(ValueError, match="kfac"):
        opt.load_state_dict(torch.optim.SGD(mlp().parameters(), lr=0.1).state_dict())


# ----------------------------------------------------------------------------- independent implementation


def test_factors_agree_with_asdl() -> None:
    """ASDL (asdfghjkl on PyPI, Osawa et al.) computes the same type-2 Kronecker factors."""
    asdl = pytest.importorskip("asdl")
    model = mlp(seed=28, widths=(5, 7, 6, 4))
    x = torch.randn(12, 5, dtype=DT, generator=torch.Generator().manual_seed(28))
    y = torch.randint(0, 4, (12,), generator=torch.Generator().manual_seed(28))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ASDL registers non-full backward hooks (a FutureWarning)
        cfg = asdl.FisherConfig(
            fisher_type=asdl.FISHER_EXACT,
            fisher_shapes=[asdl.SHAPE_KRON],
            loss_type=asdl.LOSS_CROSS_ENTROPY,
            data_size=12,
        )
        fm = asdl.get_fisher_maker(model, cfg)
        dummy = fm.setup_model_call(model, x)
        fm.setup_loss_call(F.cross_entropy, dummy, y)
        fm.forward_and_backward()
    pre = KFACPreconditioner(model, likelihood="categorical", fisher_type="exact", bias="separate")
    pre.update_factors(model(x))
    for m in pre.named_layers().values():
        fw, _ = pre.factors(m)
        torch.testing.assert_close(fw.A, m.fisher.kron.A, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(fw.G, m.fisher.kron.B, rtol=1e-12, atol=1e-14)


def test_network_fisher_vector_jacobian_path_is_the_empirical_fisher() -> None:
    """Few vectors per point (empirical, MC) go through per-example vector-Jacobian products."""
    model = mlp(seed=29)
    x = torch.randn(9, 4, dtype=DT, generator=torch.Generator().manual_seed(29))
    y = torch.randint(0, 3, (9,), generator=torch.Generator().manual_seed(29))
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(p, xi, yi):
        return F.cross_entropy(functional_call(model, p, (xi.unsqueeze(0),)), yi.unsqueeze(0))

    g = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
    Fm, layout = network_fisher(
        model, x, likelihood="categorical", fisher_type="empirical", targets=y
    )
    per = torch.stack([layout.flatten({k: v[i] for k, v in g.items()}) for i in range(9)])
    torch.testing.assert_close(Fm, per.T @ per / 9, rtol=1e-11, atol=1e-13)
    # Monte Carlo through the same path converges to the type-2 Fisher
    Ft, _ = network_fisher(model, x, likelihood="categorical", fisher_type="exact")
    Fmc, _ = network_fisher(
        model, x, likelihood="categorical", fisher_type="mc", mc_samples=400, seed=1
    )
    assert rel(Fmc, Ft) < 0.15


def test_exercise_self_checks_accept_right_and_reject_wrong_answers() -> None:
    from igbook.exercises import kfac as ex

    d = 785 * 1000
    assert ex.check_block_memory(d**2 * 4, (785**2 + 1000**2) * 4, n_in=784, n_out=1000)
    assert not ex.check_block_memory((784 * 1000) ** 2 * 4, 0, n_in=784, n_out=1000)
    assert ex.check_kronecker_solve(lambda A, G, V: torch.linalg.solve(G, V) @ torch.linalg.inv(A))
    assert not ex.check_kronecker_solve(lambda A, G, V: torch.linalg.solve(G, V) @ A)
    assert not ex.check_kronecker_solve(lambda A, G, V: V.T)

    def g_first(later):
        b = later[0]
        for w in later[1:]:
            b = w @ b
        return b.T @ b

    assert ex.check_deep_linear_G(g_first)
    assert not ex.check_deep_linear_G(lambda ws: ws[-1].T @ ws[-1])
    assert ex.check_sum_reduction(0.128, 1.0, n=128, mean_damping=1e-3)
    assert not ex.check_sum_reduction(1e-3 / 128, 1.0, n=128, mean_damping=1e-3)
    assert not ex.check_sum_reduction(0.128, 128.0, n=128, mean_damping=1e-3)


def test_damped_inverse_precision_follows_the_condition_bound() -> None:
    """float32 factors with a provably small damped condition number are inverted in float32
    (to ~1e-4 relative accuracy); ill-conditioned ones go through float64; the dtype is kept."""
    from igbook.kfac import FLOAT32_INVERSE_MAX_CONDITION, damped_inverse

    g = torch.Generator().manual_seed(5)
    x = torch.randn(300, 200, generator=g, dtype=torch.float64)
    m64 = x.T @ x / 300  # trace ~ 200
    m32 = m64.float()
    for shift in (1.0, 1e-1, 1e-4):  # bounds 201, 2e3 (> 1e3: float64), 2e6
        exact = torch.linalg.inv(m64 + shift * torch.eye(200, dtype=torch.float64))
        inv = damped_inverse(m32, shift)
        assert inv.dtype == torch.float32
        rel = float((inv.double() - exact).norm() / exact.norm())
        assert rel < 1e-4, (shift, rel)
        torch.testing.assert_close(damped_inverse(m64, shift), exact, rtol=1e-9, atol=0)
    assert (float(m32.diagonal().sum()) + 1.0) / 1.0 <= FLOAT32_INVERSE_MAX_CONDITION
    # a singular factor at tiny damping: float64 Cholesky or the eigen-fallback, finite, in float32
    r = torch.randn(200, 3, generator=g).float()
    inv = damped_inverse(r @ r.T, 1e-12)
    assert inv.dtype == torch.float32 and torch.isfinite(inv).all()


class _AttentionClassifier(nn.Module):
    """Self-attention over 3 tokens of 4 features, then a linear head: attention's ``out_proj`` is
    an ``nn.Linear`` that attention uses without calling it."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(4, 8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x.reshape(x.shape[0], 3, 4))
        h, _ = self.attn(h, h, h, need_weights=False)
        return self.head(h.mean(1))


def test_layers_inside_an_unsupported_layer_are_left_alone() -> None:
    torch.manual_seed(24)
    model = _AttentionClassifier().to(DT)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        pre = KFACPreconditioner(model, likelihood="categorical")
    assert len(rec) == 1
    msg = str(rec[0].message)
    assert (
        "attn (MultiheadAttention" in msg
        and "attn.out_proj" in msg
        and "inside the unsupported layer attn" in msg
    )
    assert set(pre.named_layers()) == {"embed", "head"}
    x = torch.randn(16, 12, dtype=DT)
    y = torch.randint(0, 3, (16,))
    out = model(x)
    pre.update_factors(out)
    F.cross_entropy(out, y).backward()
    attn = [p.grad.clone() for p in model.attn.parameters()]
    head = model.head.weight.grad.clone()
    pre.step()
    for p, g in zip(model.attn.parameters(), attn):
        assert torch.equal(p.grad, g)
    assert not torch.allclose(model.head.weight.grad, head)


def test_kl_clip_is_half_the_threshold_of_ba_et_al() -> None:
    """kl_clip bounds lr^2 v.g / 2; Ba et al. (2017) scale by min(1, sqrt(c / (lr^2 v.g))): kl_clip = c / 2."""
    x, y = _data()
    lr, c = 1.0, 2e-4
    steps = {}
    for clip in (None, c / 2):
        model = mlp(seed=21)
        pre = KFACPreconditioner(
            model, likelihood="categorical", damping=1e-3, kl_clip=clip, lr=lr, seed=3
        )
        out = model(x)
        pre.update_factors(out)
        F.cross_entropy(out, y).backward()
        g = [p.grad.clone() for p in model.parameters()]
        pre.step()
        steps[clip] = ([p.grad.clone() for p in model.parameters()], g)
    v, g = steps[None]
    vg = sum(float((a * b).sum()) for a, b in zip(v, g))
    nu_ba = min(1.0, math.sqrt(c / (lr**2 * vg)))  # Ba, Grosse and Martens (2017), KL clipping
    assert nu_ba < 0.5  # the clip is active
    for a, b in zip(steps[c / 2][0], v):
        torch.testing.assert_close(a, nu_ba * b, rtol=1e-12, atol=1e-15)


def test_type2_is_a_deprecated_alias_of_exact() -> None:
    """The old K-FAC spelling still works for one release, with a DeprecationWarning naming the new one."""
    model = nn.Sequential(nn.Linear(3, 2)).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    with pytest.warns(DeprecationWarning, match="fisher_type='exact'"):
        old = KFACPreconditioner(model, likelihood="categorical", fisher_type="type2")
    new = KFACPreconditioner(model, likelihood="categorical", fisher_type="exact")
    for pre in (old, new):
        pre.update_factors(model(x))
    torch.testing.assert_close(old.factors("0").G, new.factors("0").G, rtol=0, atol=0)
    old.remove_hooks()
    new.remove_hooks()


def test_preconditioner_factors_equal_the_functional_factors() -> None:
    """After one update (no averaging yet) the preconditioner holds exactly igbook.fisher.kfac_factors' A and G,
    for a Gaussian likelihood with a non-unit variance too (the likelihood objects of the core)."""
    from igbook.fisher import GaussianLikelihood, kfac_factors

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    x = torch.randn(6, 3, dtype=torch.float64)
    lik = GaussianLikelihood(variance=0.2)
    pre = KFACPreconditioner(model, likelihood=lik, fisher_type="exact")
    pre.update_factors(model(x))
    ref = kfac_factors(model, x, likelihood=lik, fisher_type="exact")
    for name, fac in pre.all_factors().items():
        torch.testing.assert_close(fac.A, ref[name].A, rtol=1e-13, atol=1e-15)
        torch.testing.assert_close(fac.G, ref[name].G, rtol=1e-13, atol=1e-15)
    # and the variance enters G as 1/variance: against the unit-variance factors
    unit = kfac_factors(model, x, likelihood="gaussian", fisher_type="exact")
    torch.testing.assert_close(ref["2"].G, unit["2"].G / 0.2, rtol=1e-12, atol=0)
    pre.remove_hooks()


@pytest.mark.parametrize("lik_name", ["gaussian", "categorical", "bernoulli"])
def test_preconditioner_blocks_equal_the_shared_reference_on_one_point(lik_name: str) -> None:
    """tests/reference.py's torch.func Fisher (flat order) reordered to K-FAC's order = dense_block, N = 1."""
    import dataclasses

    import reference
    from igbook.fisher import reorder

    c = next(iter(reference.cases("mlp", lik_name)))
    one = dataclasses.replace(c, x=c.x[:1], y=c.y[:1], _cache={})
    pre = KFACPreconditioner(one.model, likelihood=one.likelihood(), fisher_type="exact")
    pre.update_factors(one.model(one.x))
    ref = reference.structured(one, reference.dense_curvature(one, "exact"), "layers")
    for name, m in pre.named_layers().items():
        want = reorder(ref[name], m, matrix=True)
        assert reference.rel_err(pre.dense_block(name), want) < 1e-10
    pre.remove_hooks()


def test_names_moved_out_of_kfac_core_warn_for_one_release() -> None:
    """igbook.kfac.core.KFAC & co. still resolve (to the moved objects) with a DeprecationWarning."""
    import igbook.kfac.core as core

    for name, new in (("KFAC", KFAC), ("negative_log_likelihood", negative_log_likelihood)):
        with pytest.warns(DeprecationWarning, match=f"igbook.kfac.core.{name} moved"):
            assert getattr(core, name) is new
    with pytest.raises(AttributeError):
        core.no_such_name  # noqa: B018
