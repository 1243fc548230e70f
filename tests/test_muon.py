"""Muon and the Newton-Schulz iteration (igbook.optim.muon).

Independent paths: the SVD (``torch.linalg.svd``) for the polar factor and for the action of the
iteration on singular values; ``torch.optim.Muon`` and ``torch.optim.AdamW`` step for step.
"""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from igbook._safety import NonFiniteStepError
from igbook.optim import spectral_direction
from igbook.optim.muon import (
    QUINTIC_COEFFICIENTS,
    Muon,
    muon_lr_scale,
    muon_param_groups,
    newton_schulz,
    polar_factor,
)

F64 = torch.float64
CUBIC = (1.5, -0.5, 0.0)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def with_singular_values(s: torch.Tensor, m: int, n: int, seed: int) -> torch.Tensor:
    """U diag(s) V^T with random orthonormal U (m x k), V (n x k), k = len(s)."""
    k = s.numel()
    u, _ = torch.linalg.qr(torch.randn(m, k, generator=gen(seed), dtype=F64))
    v, _ = torch.linalg.qr(torch.randn(n, k, generator=gen(seed + 1), dtype=F64))
    return u @ torch.diag(s) @ v.T


def quintic(x: torch.Tensor, steps: int, coef=QUINTIC_COEFFICIENTS) -> torch.Tensor:
    a, b, c = coef
    for _ in range(steps):
        x = a * x + b * x**3 + c * x**5
    return x


# -- the iteration ---------------------------------------------------------------------------
def test_polar_factor_is_the_nearest_orthogonal_matrix() -> None:
    G = torch.randn(6, 4, generator=gen(1), dtype=F64)
    Q = polar_factor(G)
    assert torch.allclose(Q.T @ Q, torch.eye(4, dtype=F64), atol=1e-13)
    # G = Q H with H = (G^T G)^{1/2} symmetric positive definite (eigh, not the SVD)
    w, V = torch.linalg.eigh(G.T @ G)
    H = V @ torch.diag(w.sqrt()) @ V.T
    assert torch.allclose(Q @ H, G, atol=1e-12)
    # nearer to G in Frobenius than random orthonormal matrices
    qs, _ = torch.linalg.qr(torch.randn(500, 6, 4, generator=gen(2), dtype=F64))
    assert float(torch.linalg.matrix_norm(G - Q)) <= float(torch.linalg.matrix_norm(G - qs).min())


@pytest.mark.parametrize("shape", [(8, 5), (5, 8), (6, 6)])
def test_classic_cubic_newton_schulz_converges_to_the_polar_factor(shape) -> None:
    G = torch.randn(*shape, generator=gen(3), dtype=F64)
    # 1e-10 in float64: quadratic convergence; with sigma_min/||G||_F about 0.05 here the
    # cubic needs ~10 steps to reach 1 and then doubles its digits each step
    X = newton_schulz(G, steps=40, coefficients=CUBIC)
    assert float((X - polar_factor(G)).abs().max()) < 1e-10


def test_cubic_newton_schulz_is_the_spectral_steepest_direction() -> None:
    """Muon's target is steepest descent under the spectral norm (igbook.optim.steepest)."""
    G = torch.randn(7, 4, generator=gen(30), dtype=F64)
    D, nuclear = spectral_direction(G)
    X = newton_schulz(G, steps=40, coefficients=CUBIC)
    assert float((X - D).abs().max()) < 1e-10
    assert abs(float((G * X).sum()) - float(nuclear)) < 1e-10


def test_iteration_acts_on_singular_values_as_the_scalar_polynomial() -> None:
    s = torch.tensor([3.0, 1.0, 0.2, 0.01], dtype=F64)
    G = with_singular_values(s, 7, 5, seed=4)
    X = newton_schulz(G, steps=5)
    # X = U p^5(s / ||G||_F) V^T with the SVD's U, V (float64: 1e-12 after 5 products)
    u, _, vh = torch.linalg.svd(G, full_matrices=False)
    expect = u[:, :4] @ torch.diag(quintic(s / s.norm(), 5)) @ vh[:4]
    assert float((X - expect).abs().max()) < 1e-12


def test_quintic_band() -> None:
    """The quintic targets a band, not 1: measured here on matrices, checked on a fine grid."""
    lo, hi = 0.6818, 1.1344  # p maps [lo, hi] into itself (grid below)
    grid = torch.linspace(lo, hi, 200001, dtype=F64)
    img = quintic(grid, 1)
    assert float(img.min()) >= lo - 1e-4 and float(img.max()) <= hi + 1e-4
    # a matrix of Frobenius norm 1 (so the iteration starts from these singular values) with
    # singular values spread over [1e-3, 0.93]: after 5 steps they lie in [0.47, 1.21]
    # (3.4445^5 x 1e-3 = 0.49: five steps are just enough for 1e-3), after 7 in the band;
    # they are not 1 (a band, not the polar factor)
    s = torch.tensor([1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.2, 0.3], dtype=F64)
    s = torch.cat([(1 - s.square().sum()).sqrt().reshape(1), s])
    G = with_singular_values(s, 20, 8, seed=5)
    assert abs(float(torch.linalg.matrix_norm(G)) - 1) < 1e-14
    sv5 = torch.linalg.svdvals(newton_schulz(G, steps=5))
    # the matrix iteration against the scalar polynomial on the SVD's singular values
    ref5 = quintic(s, 5).sort(descending=True).values
    assert torch.allclose(sv5.sort(descending=True).values, ref5, atol=1e-12)
    assert float(sv5.min()) >= 0.47 and float(sv5.max()) <= 1.21
    sv7 = torch.linalg.svdvals(newton_schulz(G, steps=7))
    assert float(sv7.min()) >= lo - 1e-4 and float(sv7.max()) <= hi + 1e-4
    assert float((sv7 - 1).abs().max()) > 0.1
    # the error of 5 quintic steps against the polar factor is the distance to the band
    err = float(torch.linalg.matrix_norm(newton_schulz(G) - polar_factor(G), ord=2))
    assert 0.1 < err <= 0.53


def test_newton_schulz_bfloat16_is_close_and_zero_input_is_zero() -> None:
    G = torch.randn(16, 8, generator=gen(6), dtype=F64)
    hi = newton_schulz(G)
    lo = newton_schulz(G, dtype=torch.bfloat16)
    assert lo.dtype == torch.bfloat16
    # bfloat16 has 8 significant bits (relative rounding 2^-8 = 0.004); after 5 steps the
    # difference stays below 0.1 in every entry
    assert float((lo.double() - hi).abs().max()) < 0.1
    assert float(newton_schulz(torch.zeros(3, 2, dtype=F64)).abs().max()) == 0.0


def test_newton_schulz_bad_input() -> None:
    G = torch.randn(3, 2, dtype=F64)
    with pytest.raises(ValueError, match="G must be a non-empty matrix"):
        newton_schulz(torch.ones(3, dtype=F64))
    with pytest.raises(ValueError, match="G must be finite"):
        newton_schulz(torch.full((2, 2), math.nan))
    with pytest.raises(TypeError, match="steps"):
        newton_schulz(G, steps=2.5)
    with pytest.raises(ValueError, match="coefficients"):
        newton_schulz(G, coefficients=(1.0, 2.0))
    with pytest.raises(ValueError, match="coefficients"):
        newton_schulz(G, coefficients=(1.0, math.nan, 0.0))
    with pytest.raises(ValueError, match="eps"):
        newton_schulz(G, eps=0.0)
    with pytest.raises(TypeError, match="dtype"):
        newton_schulz(G, dtype=torch.int64)


def test_muon_lr_scale() -> None:
    assert muon_lr_scale((8, 2)) == 2.0 and muon_lr_scale((2, 8)) == 1.0
    assert muon_lr_scale((8, 2), "original") == 2.0
    assert muon_lr_scale((25, 4), "match_rms_adamw") == pytest.approx(1.0, abs=1e-15)
    with pytest.raises(ValueError, match="adjust_lr_fn"):
        muon_lr_scale((2, 2), "other")
    with pytest.raises(TypeError, match="shape"):
        muon_lr_scale((2,))


# -- Muon against torch.optim.Muon -------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=["f32", "f64"])
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"nesterov": False},
        {"adjust_lr_fn": "match_rms_adamw"},
        {"adjust_lr_fn": "original", "weight_decay": 0.0, "momentum": 0.9, "ns_steps": 3},
        {"ns_coefficients": CUBIC, "lr": 0.1, "eps": 1e-5},
    ],
)
def test_muon_equals_torch_muon_bitwise_for_20_steps(dtype, options) -> None:
    g = gen(7)
    shapes = [(6, 3), (3, 7), (4, 4)]
    init = [torch.randn(*s, generator=g, dtype=dtype) for s in shapes]
    ours = [p.clone().requires_grad_() for p in init]
    ref = [p.clone().requires_grad_() for p in init]
    opt = Muon(ours, lr=options.pop("lr", 0.02), **options)
    tref = torch.optim.Muon(ref, lr=opt.defaults["lr"], **options)
    for _ in range(20):
        for a, b in zip(ours, ref):
            grad = torch.randn(a.shape, generator=g, dtype=dtype)
            a.grad, b.grad = grad.clone(), grad.clone()
        opt.step()
        tref.step()
        # the same operations in the same order (bfloat16 iteration included): bitwise
        for a, b in zip(ours, ref):
            assert torch.equal(a, b)
    for a, b in zip(ours, ref):
        assert torch.equal(opt.state[a]["momentum_buffer"], tref.state[b]["momentum_buffer"])


def test_muon_full_precision_iteration_is_steepest_spectral_descent() -> None:
    """ns_dtype=None, momentum 0, many cubic steps: the update is -lr U V^T of the gradient."""
    W = torch.randn(5, 3, generator=gen(8), dtype=F64).requires_grad_()
    W0 = W.detach().clone()
    grad = torch.randn(5, 3, generator=gen(9), dtype=F64)
    W.grad = grad
    opt = Muon(
        [W], lr=0.1, momentum=0.0, weight_decay=0.0, ns_dtype=None,
        ns_coefficients=CUBIC, ns_steps=40,
    )  # fmt: skip
    opt.step()
    scale = math.sqrt(5 / 3)
    assert torch.allclose(W.detach(), W0 - 0.1 * scale * polar_factor(grad), atol=1e-12)


def test_momentum_form_is_proportional_to_the_blog_sum() -> None:
    """EMA buffer = (1 - mu) x the sum mu B + g; nesterov likewise (float64, ns_dtype=None)."""
    mu = 0.9
    W = torch.randn(4, 3, generator=gen(10), dtype=F64).requires_grad_()
    opt = Muon([W], lr=0.01, momentum=mu, ns_dtype=None)
    total = torch.zeros(4, 3, dtype=F64)
    for t in range(5):
        grad = torch.randn(4, 3, generator=gen(20 + t), dtype=F64)
        total = mu * total + grad
        W.grad = grad
        opt.step()
    assert torch.allclose(opt.state[W]["momentum_buffer"], (1 - mu) * total, atol=1e-14)


# -- the AdamW groups ------------------------------------------------------------------------
class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.l1 = nn.Linear(4, 8)
        self.l2 = nn.Linear(8, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        h = self.emb(idx)
        return self.head(torch.tanh(self.l2(torch.tanh(self.l1(h)))))


def test_muon_param_groups_splits_hidden_matrices_from_the_rest() -> None:
    model = MLP()
    groups = muon_param_groups(model)
    assert [g["use_muon"] for g in groups] == [True, False]
    muon_ids = {id(p) for p in groups[0]["params"]}
    assert muon_ids == {id(model.l1.weight), id(model.l2.weight)}
    rest = {id(p) for p in groups[1]["params"]}
    assert rest == {id(p) for p in model.parameters()} - muon_ids
    no_head = muon_param_groups(model, head=False, exclude=["l2"])
    assert {id(p) for p in no_head[0]["params"]} == {id(model.l1.weight), id(model.head.weight)}
    with pytest.raises(TypeError, match="model"):
        muon_param_groups([model.l1.weight])


@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=["f32", "f64"])
def test_muon_with_adamw_groups_matches_torch_muon_plus_adamw(dtype) -> None:
    torch.manual_seed(0)
    model = MLP().to(dtype)
    twin = copy.deepcopy(model)
    ours = muon_param_groups(model)
    ours[1].update(lr=3e-3, weight_decay=0.01)
    opt = Muon(ours, lr=0.02, betas=(0.9, 0.95), adam_eps=1e-8)
    ref_groups = muon_param_groups(twin)
    t_muon = torch.optim.Muon(ref_groups[0]["params"], lr=0.02)
    t_adam = torch.optim.AdamW(
        ref_groups[1]["params"], lr=3e-3, weight_decay=0.01, betas=(0.9, 0.95), eps=1e-8
    )
    g = gen(11)
    for _ in range(20):
        idx = torch.randint(0, 10, (16,), generator=g)
        y = torch.randint(0, 3, (16,), generator=g)
        for m in (model, twin):
            for p in m.parameters():
                p.grad = None
            F.cross_entropy(m(idx), y).backward()
        opt.step()
        t_muon.step()
        t_adam.step()
    # Muon groups bitwise; AdamW groups: the same equations, measured bitwise too on torch 2.13
    # CPU, but torch's (foreach/fused) kernels may order the arithmetic differently: float
    # rounding compounding over 20 steps stays below 1e-5 in float32 and 1e-12 in float64
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    for (name, a), b in zip(model.named_parameters(), twin.parameters()):
        if name in ("l1.weight", "l2.weight"):
            assert torch.equal(a, b), name
        else:
            assert float((a - b).detach().abs().max()) < tol, name


# -- standards: validation, state_dict, failure policy ------------------------------------
def test_muon_rejects_bad_hyperparameters_naming_them() -> None:
    W = [torch.zeros(3, 2, requires_grad=True)]
    for kw, err, name in [
        ({"lr": -1.0}, ValueError, "lr"),
        ({"lr": math.nan}, ValueError, "lr"),
        ({"momentum": 1.0}, ValueError, "momentum"),
        ({"weight_decay": -0.1}, ValueError, "weight_decay"),
        ({"nesterov": 1}, TypeError, "nesterov"),
        ({"ns_steps": 0}, ValueError, "ns_steps"),
        ({"ns_steps": 1.5}, TypeError, "ns_steps"),
        ({"ns_coefficients": (1.0,)}, ValueError, "coefficients"),
        ({"eps": 0.0}, ValueError, "eps"),
        ({"adjust_lr_fn": "x"}, ValueError, "adjust_lr_fn"),
        ({"ns_dtype": "bf16"}, TypeError, "ns_dtype"),
        ({"betas": (0.9, 1.0)}, ValueError, "betas"),
        ({"adam_eps": -1.0}, ValueError, "adam_eps"),
        ({"nonfinite": "ignore"}, ValueError, "nonfinite"),
    ]:
        with pytest.raises(err, match=name):
            Muon(W, **kw)
    with pytest.raises(ValueError, match="use_muon=False"):
        Muon([torch.zeros(3, requires_grad=True)])
    with pytest.raises(ValueError, match="lr"):
        Muon([{"params": W, "lr": -1.0}])
    Muon([{"params": [torch.zeros(3, requires_grad=True)], "use_muon": False}])


def make_run(dtype=F64, nonfinite="raise"):
    torch.manual_seed(1)
    model = MLP().to(dtype)
    opt = Muon(muon_param_groups(model), lr=0.02, nonfinite=nonfinite)
    return model, opt


def batch(t: int):
    g = gen(100 + t)
    return torch.randint(0, 10, (8,), generator=g), torch.randint(0, 3, (8,), generator=g)


def closure_for(model, opt, t, fail=False):
    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(model(batch(t)[0]), batch(t)[1])
        loss.backward()
        if fail:
            raise RuntimeError("boom")
        return loss

    return closure


@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=["f32", "f64"])
def test_state_dict_round_trip_resumes_bitwise(dtype) -> None:
    model, opt = make_run(dtype)
    for t in range(3):
        opt.step(closure_for(model, opt, t))
    saved_model = copy.deepcopy(model.state_dict())
    buffer = io.BytesIO()  # through torch.save / torch.load (weights_only): dtypes and tuples
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    saved_opt = torch.load(buffer)
    for t in range(3, 6):
        opt.step(closure_for(model, opt, t))
    model2, opt2 = make_run(dtype)
    model2.load_state_dict(saved_model)
    opt2.load_state_dict(saved_opt)
    for t in range(3, 6):
        opt2.step(closure_for(model2, opt2, t))
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
@pytest.mark.parametrize("target", ["l1.weight", "l1.bias"])
def test_nonfinite_gradient_raises_or_skips_leaving_everything_as_before(bad, target) -> None:
    for mode in ("raise", "skip"):
        model, opt = make_run(nonfinite=mode)
        opt.step(closure_for(model, opt, 0))
        before = copy.deepcopy((model.state_dict(), opt.state_dict()))
        closure_for(model, opt, 1)()
        dict(model.named_parameters())[target].grad[0, ...].fill_(bad)
        if mode == "raise":
            with pytest.raises(NonFiniteStepError, match="not finite"):
                opt.step()
        else:
            opt.step()
            assert opt.skipped_steps == 1
        after = (model.state_dict(), opt.state_dict())
        for k, v in before[0].items():
            assert torch.equal(v, after[0][k])
        for k, v in before[1]["state"].items():
            for name, x in v.items():
                y = after[1]["state"][k][name]
                assert torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y


def test_failed_closure_leaves_no_trace_and_the_next_step_is_as_if_it_never_happened() -> None:
    model, opt = make_run()
    opt.step(closure_for(model, opt, 0))
    with pytest.raises(RuntimeError, match="boom"):
        opt.step(closure_for(model, opt, 1, fail=True))
    opt.step(closure_for(model, opt, 2))
    ref_model, ref_opt = make_run()
    ref_opt.step(closure_for(ref_model, ref_opt, 0))
    ref_opt.step(closure_for(ref_model, ref_opt, 2))
    for a, b in zip(model.parameters(), ref_model.parameters()):
        assert torch.equal(a, b)


def test_parameter_without_gradient_is_not_moved() -> None:
    W = torch.randn(3, 3, generator=gen(12), dtype=F64).requires_grad_()
    V = torch.randn(3, 3, generator=gen(13), dtype=F64).requires_grad_()
    V0 = V.detach().clone()
    W.grad = torch.ones(3, 3, dtype=F64)
    opt = Muon([W, V])
    opt.step()
    assert torch.equal(V.detach(), V0) and V not in opt.state and W in opt.state
