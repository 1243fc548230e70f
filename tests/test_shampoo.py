"""Shampoo (igbook.optim.shampoo): the paper's bound, the cases where it is full-matrix AdaGrad,
its relation to K-FAC's empirical factors, pytorch-optimizer step for step, and the standards."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from igbook._safety import NonFiniteStepError
from igbook.fisher.kronecker import kfac_factors
from igbook.optim import Shampoo

DTYPES = [torch.float32, torch.float64]


def inv_root_scipy(m: Tensor, eps: float, p: float) -> Tensor:
    """(M + eps I)^(-1/p) by scipy's fractional_matrix_power (an independent path)."""
    a = m.double().numpy() + eps * np.eye(m.shape[0])
    return torch.from_numpy(np.real(scipy.linalg.fractional_matrix_power(a, -1.0 / p)))


def psd_sqrt_numpy(m: Tensor) -> Tensor:
    """Square root of a PSD matrix by numpy's eigh (eigenvalues clipped at 0)."""
    evals, evecs = np.linalg.eigh(m.double().numpy())
    return torch.from_numpy((evecs * np.sqrt(np.clip(evals, 0.0, None))) @ evecs.T)


def run_on_gradients(grads: list[Tensor], **kw: Any) -> tuple[nn.Parameter, Shampoo, list[Tensor]]:
    """Feed the given gradients to Shampoo on one parameter; return the parameter's moves."""
    w = nn.Parameter(torch.zeros(grads[0].shape, dtype=grads[0].dtype))
    opt = Shampoo([w], lr=1.0, **kw)
    moves = []
    for g in grads:
        before = w.detach().clone()
        w.grad = g.clone()
        opt.step()
        moves.append(before - w.detach())
    return w, opt, moves


# -- the paper ---------------------------------------------------------------------------
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_kronecker_bound_lemma(rank: int) -> None:
    """Gupta et al. Lemma 8: eps I + H/r <= (eps I + sum GG^T)^(1/2) kron (eps I + sum G^TG)^(1/2)
    for gradients of rank <= r, with the optimizer's own statistics L, R (row-major vec)."""
    gen = torch.Generator().manual_seed(rank)
    m, n, eps = 4, 3, 1e-3
    grads = [
        torch.randn(m, rank, generator=gen, dtype=torch.float64)
        @ torch.randn(rank, n, generator=gen, dtype=torch.float64)
        for _ in range(6)
    ]
    _, opt, _ = run_on_gradients(grads, eps=eps)
    st = next(iter(opt.state.values()))
    # the statistics are the sums (beta2 = 1), checked independently
    torch.testing.assert_close(st["L"], sum(g @ g.T for g in grads), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(st["R"], sum(g.T @ g for g in grads), rtol=1e-12, atol=1e-12)
    # the stored roots are (L + eps I)^(-1/4), (R + eps I)^(-1/4) (scipy, independent path)
    torch.testing.assert_close(st["L_root"], inv_root_scipy(st["L"], eps, 4), rtol=1e-8, atol=1e-9)
    torch.testing.assert_close(st["R_root"], inv_root_scipy(st["R"], eps, 4), rtol=1e-8, atol=1e-9)
    h = sum(torch.outer(g.reshape(-1), g.reshape(-1)) for g in grads)
    lh = torch.linalg.inv(st["L_root"]) @ torch.linalg.inv(st["L_root"])  # (L + eps)^(1/2)
    rh = torch.linalg.inv(st["R_root"]) @ torch.linalg.inv(st["R_root"])
    diff = torch.kron(lh, rh) - eps * torch.eye(m * n, dtype=torch.float64) - h / rank
    evals = torch.linalg.eigvalsh(0.5 * (diff + diff.T))
    scale = float(torch.linalg.eigvalsh(h).max())
    assert float(evals.min()) >= -1e-9 * scale
    # the constant is tight: for one gradient U V^T (orthonormal columns, rank r) the bound
    # fails once H/r is enlarged by 1%, so the check above is not a loose one
    u, _ = torch.linalg.qr(torch.randn(m, rank, generator=gen, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(n, rank, generator=gen, dtype=torch.float64))
    g = u @ v.T
    _, opt, _ = run_on_gradients([g], eps=1e-12)
    st = next(iter(opt.state.values()))
    sq = [psd_sqrt_numpy(st[k]) for k in ("L", "R")]
    tight = torch.kron(*sq) - 1.01 * torch.outer(g.reshape(-1), g.reshape(-1)) / rank
    assert float(torch.linalg.eigvalsh(0.5 * (tight + tight.T)).min()) < -1e-3


def full_adagrad_moves(grads: list[Tensor], eps: float) -> list[Tensor]:
    """Full-matrix AdaGrad (eps I + sum_s vec G_s vec G_s^T)^(-1/2) vec G_t, by scipy."""
    h = torch.zeros(grads[0].numel(), grads[0].numel(), dtype=torch.float64)
    out = []
    for g in grads:
        v = g.reshape(-1)
        h = h + torch.outer(v, v)
        out.append((inv_root_scipy(h, eps, 2) @ v).reshape(g.shape))
    return out


def test_equals_full_matrix_adagrad_for_aligned_gradients() -> None:
    """G_t = a_t u_i v_i^T, i = t mod 3, with fixed orthonormal u_1..u_3 (in R^4), v_1..v_3
    (in R^3): L, R and H = sum vec G vec G^T share the eigenvectors u_i, v_i, u_i kron v_i with
    the one eigenvalue l_i = sum of a_t^2 over the steps of component i, and
    (l_i+eps)^(-1/4) (l_i+eps)^(-1/4) = (l_i+eps)^(-1/2): here Shampoo IS full-matrix AdaGrad
    (eps included). It includes the rank-one case G_t = a_t u v^T of the paper's discussion."""
    gen = torch.Generator().manual_seed(3)
    u, _ = torch.linalg.qr(torch.randn(4, 3, generator=gen, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(3, 3, generator=gen, dtype=torch.float64))
    a = torch.randn(7, generator=gen, dtype=torch.float64)
    grads = [a[t] * torch.outer(u[:, t % 3], v[:, t % 3]) for t in range(7)]
    eps = 1e-4
    _, _, moves = run_on_gradients(grads, eps=eps)
    for got, want in zip(moves, full_adagrad_moves(grads, eps), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11)
    # generic gradients: the two differ (so the check above can fail)
    generic = [torch.randn(4, 3, generator=gen, dtype=torch.float64) for _ in range(5)]
    _, _, moves = run_on_gradients(generic, eps=eps)
    last = full_adagrad_moves(generic, eps)[-1]
    assert float((moves[-1] - last).norm()) > 1e-2 * float(last.norm())


def test_vector_full_is_full_matrix_adagrad() -> None:
    """An order-1 tensor gets exponent -1/2 (the paper's -1/(2k), k = 1): full-matrix AdaGrad."""
    gen = torch.Generator().manual_seed(4)
    grads = [torch.randn(5, generator=gen, dtype=torch.float64) for _ in range(6)]
    _, _, moves = run_on_gradients(grads, eps=1e-3, vector_preconditioner="full")
    for got, want in zip(moves, full_adagrad_moves(grads, 1e-3), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("bias_correction", [True, False])
def test_vector_diagonal_is_diagonal_adagrad(bias_correction: bool) -> None:
    gen = torch.Generator().manual_seed(5)
    grads = [torch.randn(5, generator=gen, dtype=torch.float64) for _ in range(4)]
    _, _, moves = run_on_gradients(grads, eps=1e-3, beta2=0.9, bias_correction=bias_correction)
    h = torch.zeros(5, dtype=torch.float64)
    for t, (g, got) in enumerate(zip(grads, moves, strict=True), start=1):
        h = 0.9 * h + 0.1 * g * g
        c = 1.0 - 0.9**t if bias_correction else 1.0
        torch.testing.assert_close(got, g / torch.sqrt(h / c + 1e-3), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("grafting", ["none", "adagrad"])
def test_bias_correction_makes_the_first_step_independent_of_beta2(grafting: str) -> None:
    """With beta2 < 1 the zero-started statistics hold the weight 1 - beta2^t; corrected, the first
    step equals the summed (beta2 = 1) first step for the Kronecker roots, the diagonal fallback and
    AdaGrad grafting; uncorrected, it is (1 - beta2)^(-1/2) (about 32x) longer where eps is small."""
    gen = torch.Generator().manual_seed(6)
    model_grads = [
        torch.randn(4, 3, generator=gen, dtype=torch.float64),
        torch.randn(4, generator=gen, dtype=torch.float64),
    ]
    eps = 1e-12

    def first_moves(**kw: Any) -> list[Tensor]:
        ps = [nn.Parameter(torch.zeros_like(g)) for g in model_grads]
        opt = Shampoo(ps, lr=1.0, eps=eps, grafting=grafting, **kw)
        for p, g in zip(ps, model_grads, strict=True):
            p.grad = g.clone()
        opt.step()
        return [-p.detach() for p in ps]

    summed = first_moves(beta2=1.0)
    for got, want in zip(first_moves(beta2=0.999), summed, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-12)
    for got, want in zip(first_moves(beta2=0.999, bias_correction=False), summed, strict=True):
        ratio = got.norm() / want.norm()
        assert abs(ratio - 0.001**-0.5) < 1e-3 * 0.001**-0.5, float(ratio)
    # the second step: the corrected statistic is the weighted mean of both outer products
    g1, g2 = model_grads[0], 2.0 * model_grads[0].flip(0)
    _, _, moves = run_on_gradients([g1, g2], eps=eps, beta2=0.9)
    left = (0.9 * 0.1 * g1 @ g1.T + 0.1 * g2 @ g2.T) / (1 - 0.9**2)
    right = (0.9 * 0.1 * g1.T @ g1 + 0.1 * g2.T @ g2) / (1 - 0.9**2)

    def inv4(m: Tensor) -> Tensor:
        e, v = torch.linalg.eigh(m)
        return (v * (e.clamp_min(0) + eps).pow(-0.25)) @ v.T

    torch.testing.assert_close(moves[1], inv4(left) @ g2 @ inv4(right), rtol=1e-6, atol=1e-9)


def test_statistics_are_kfac_empirical_factors_times_scalars() -> None:
    """One example through a linear layer y = W a: G = g a^T, so G G^T = |a|^2 g g^T and
    G^T G = |g|^2 a a^T, K-FAC's empirical-Fisher factors (igbook.fisher) up to scalars."""
    torch.manual_seed(0)
    layer = nn.Linear(3, 2, bias=False).double()
    x = torch.randn(1, 3, dtype=torch.float64)
    y = torch.randn(1, 2, dtype=torch.float64)
    (factors,) = kfac_factors(
        layer, x, y, likelihood="gaussian", fisher_type="empirical", reduction="sum"
    ).values()
    opt = Shampoo(layer.parameters(), lr=0.1, eps=1e-3)
    out = layer(x)
    loss = 0.5 * ((out - y) ** 2).sum()  # the unit-variance Gaussian nll, up to a constant
    loss.backward()
    g = (out - y).detach()[0]  # output gradient, closed form
    a = x[0]
    opt.step()
    st = opt.state[layer.weight]
    torch.testing.assert_close(st["L"], (a @ a) * factors.G, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(st["R"], (g @ g) * factors.A, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(factors.G, torch.outer(g, g), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(factors.A, torch.outer(a, a), rtol=1e-12, atol=1e-14)


# -- pytorch-optimizer ---------------------------------------------------------------------
class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.l1 = nn.Linear(4, 5)
        self.l2 = nn.Linear(5, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.l2(torch.tanh(self.l1(x)))


def data(dtype: torch.dtype = torch.float64, n: int = 16) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(7)
    return torch.randn(n, 4, generator=gen, dtype=dtype), torch.randint(0, 3, (n,), generator=gen)


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_matches_pytorch_optimizer_step_for_step(weight_decay: float) -> None:
    """pytorch-optimizer's Shampoo where both coincide: momentum 0, roots every step, beta2 = 1
    (sums, eps I as the initial statistic = eps before the root), full-matrix AdaGrad for the
    biases (its order-1 rule), coupled weight decay. It uses an SVD, we use eigh: float64
    round-off, tolerance 1e-10."""
    pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
    torch.manual_seed(0)
    ours = MLP().double()
    ref = copy.deepcopy(ours)
    start = copy.deepcopy(ours)
    x, y = data()
    kw = {"lr": 0.05, "weight_decay": weight_decay}
    o1 = Shampoo(ours.parameters(), eps=1e-4, vector_preconditioner="full", **kw)
    o2 = pytorch_optimizer.Shampoo(
        ref.parameters(), matrix_eps=1e-4, momentum=0.0, preconditioning_compute_steps=1, **kw
    )
    for _ in range(8):
        for model, opt in ((ours, o1), (ref, o2)):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        for p1, p2 in zip(ours.parameters(), ref.parameters(), strict=True):
            torch.testing.assert_close(p1, p2, rtol=1e-10, atol=1e-10)
    moved = sum(
        float((p - q).detach().abs().sum())
        for p, q in zip(ours.parameters(), start.parameters(), strict=True)
    )
    assert moved > 1e-2


# -- the options ---------------------------------------------------------------------------
def test_precondition_frequency_uses_stale_roots() -> None:
    """k = 3: roots from steps 1 and 4; steps 2, 3 apply the step-1 roots to the new gradient."""
    gen = torch.Generator().manual_seed(8)
    grads = [torch.randn(3, 2, generator=gen, dtype=torch.float64) for _ in range(5)]
    eps = 1e-3
    _, _, moves = run_on_gradients(grads, eps=eps, precondition_frequency=3)
    for t, g in enumerate(grads):
        at = 0 if t < 3 else 3  # the step whose statistics the roots were computed from
        L = sum(h @ h.T for h in grads[: at + 1])
        R = sum(h.T @ h for h in grads[: at + 1])
        want = inv_root_scipy(L, eps, 4) @ g @ inv_root_scipy(R, eps, 4)
        torch.testing.assert_close(moves[t], want, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("grafting", ["sgd", "adagrad"])
def test_grafting_takes_norm_of_graft_and_direction_of_shampoo(grafting: str) -> None:
    gen = torch.Generator().manual_seed(9)
    grads = [torch.randn(3, 4, generator=gen, dtype=torch.float64) for _ in range(3)]
    eps = 1e-3
    _, _, moves = run_on_gradients(grads, eps=eps, grafting=grafting)
    _, _, plain = run_on_gradients(grads, eps=eps)
    h = torch.zeros(3, 4, dtype=torch.float64)
    for g, got, p in zip(grads, moves, plain, strict=True):
        h = h + g * g
        target = g if grafting == "sgd" else g / torch.sqrt(h + eps)
        torch.testing.assert_close(got.norm(), target.norm(), rtol=1e-12, atol=0)
        torch.testing.assert_close(got / got.norm(), p / p.norm(), rtol=1e-12, atol=1e-14)


def test_momentum_and_decoupled_weight_decay() -> None:
    gen = torch.Generator().manual_seed(10)
    grads = [torch.randn(3, 2, generator=gen, dtype=torch.float64) for _ in range(3)]
    w = nn.Parameter(torch.ones(3, 2, dtype=torch.float64))
    opt = Shampoo([w], lr=0.1, momentum=0.9, weight_decay=0.5, decoupled_weight_decay=True)
    _, _, plain = run_on_gradients(grads)  # the momentum-free directions (lr 1, same statistics)
    want, buf = torch.ones(3, 2, dtype=torch.float64), torch.zeros(3, 2, dtype=torch.float64)
    for g, d in zip(grads, plain, strict=True):
        w.grad = g.clone()
        opt.step()
        buf = 0.9 * buf + d
        want = want * (1 - 0.1 * 0.5) - 0.1 * buf
        torch.testing.assert_close(w.detach(), want, rtol=1e-12, atol=1e-14)


def test_higher_order_tensor_is_reshaped_to_a_matrix() -> None:
    gen = torch.Generator().manual_seed(11)
    grads = [torch.randn(2, 3, 2, generator=gen, dtype=torch.float64) for _ in range(2)]
    _, _, moves = run_on_gradients(grads, eps=1e-3)
    _, _, flat = run_on_gradients([g.reshape(2, 6) for g in grads], eps=1e-3)
    for a, b in zip(moves, flat, strict=True):
        torch.testing.assert_close(a.reshape(2, 6), b, rtol=0, atol=0)


# -- the standards -------------------------------------------------------------------------
def train(model: nn.Module, opt: Shampoo, steps: int, x: Tensor, y: Tensor) -> None:
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()


@pytest.mark.parametrize("dtype", DTYPES)
def test_param_groups_equal_separate_optimizers(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    model = MLP().to(dtype)
    twin = copy.deepcopy(model)
    x, y = data(dtype)
    opt = Shampoo(
        [{"params": model.l1.parameters(), "lr": 0.01}, {"params": model.l2.parameters()}],
        lr=0.05,
        momentum=0.5,
    )
    o1 = Shampoo(twin.l1.parameters(), lr=0.01, momentum=0.5)
    o2 = Shampoo(twin.l2.parameters(), lr=0.05, momentum=0.5)
    for _ in range(4):
        for m, opts in ((model, [opt]), (twin, [o1, o2])):
            for o in opts:
                o.zero_grad()
            F.cross_entropy(m(x), y).backward()
            for o in opts:
                o.step()
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        assert p.dtype == dtype
        torch.testing.assert_close(p, q, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_state_dict_resumes_bit_for_bit(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    model = MLP().to(dtype)
    x, y = data(dtype)
    kw: dict[str, Any] = {
        "lr": 0.05,
        "momentum": 0.9,
        "precondition_frequency": 2,
        "grafting": "adagrad",
    }
    opt = Shampoo(model.parameters(), **kw)
    train(model, opt, 3, x, y)
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    train(model, opt, 3, x, y)
    resumed = MLP().to(dtype)
    resumed.load_state_dict(saved_model)
    opt2 = Shampoo(resumed.parameters(), **kw)
    opt2.load_state_dict(saved_opt)
    train(resumed, opt2, 3, x, y)
    for p, q in zip(model.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q)


def test_float32_follows_float64() -> None:
    torch.manual_seed(0)
    m64 = MLP().double()
    m32 = copy.deepcopy(m64).float()
    x, y = data()
    train(m64, Shampoo(m64.parameters(), lr=0.05, eps=1e-3), 5, x, y)
    train(m32, Shampoo(m32.parameters(), lr=0.05, eps=1e-3), 5, x.float(), y)
    for p, q in zip(m32.parameters(), m64.parameters(), strict=True):
        assert p.dtype == torch.float32
        torch.testing.assert_close(p.double(), q, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("kw", "exc", "name"),
    [
        ({"lr": 0.0}, ValueError, "lr"),
        ({"lr": "a"}, TypeError, "lr"),
        ({"beta2": 0.0}, ValueError, "beta2"),
        ({"beta2": 1.5}, ValueError, "beta2"),
        ({"bias_correction": 1}, TypeError, "bias_correction"),
        ({"eps": 0.0}, ValueError, "eps"),
        ({"eps": float("nan")}, ValueError, "eps"),
        ({"momentum": 1.0}, ValueError, "momentum"),
        ({"weight_decay": -1.0}, ValueError, "weight_decay"),
        ({"decoupled_weight_decay": 1}, TypeError, "decoupled_weight_decay"),
        ({"precondition_frequency": 0}, ValueError, "precondition_frequency"),
        ({"precondition_frequency": 1.5}, TypeError, "precondition_frequency"),
        ({"grafting": "adam"}, ValueError, "grafting"),
        ({"vector_preconditioner": None}, TypeError, "vector_preconditioner"),
        ({"nonfinite": "ignore"}, ValueError, "nonfinite"),
    ],
)
def test_bad_hyperparameters_name_the_argument(kw: dict[str, Any], exc: type, name: str) -> None:
    w = nn.Parameter(torch.zeros(2, 2))
    with pytest.raises(exc, match=name):
        Shampoo([w], **kw)
    if name != "nonfinite":  # a bad per-group value is caught too
        with pytest.raises(exc, match=name):
            Shampoo([{"params": [w], **kw}])


def test_integer_parameters_are_rejected() -> None:
    with pytest.raises(TypeError, match="floating-point"):
        Shampoo([torch.zeros(2, 2, dtype=torch.int64)])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_gradient_raise_and_skip(dtype: torch.dtype, bad: float) -> None:
    torch.manual_seed(0)
    x, y = data(dtype)
    base = MLP().to(dtype)
    models = {k: copy.deepcopy(base) for k in ("raise", "skip", "clean")}
    opts = {
        k: Shampoo(
            m.parameters(),
            lr=0.05,
            momentum=0.9,
            grafting="adagrad",
            nonfinite="skip" if k == "skip" else "raise",
        )
        for k, m in models.items()
    }
    for k in models:
        train(models[k], opts[k], 2, x, y)
    for k in ("raise", "skip"):
        params = [p.detach().clone() for p in models[k].parameters()]
        state = copy.deepcopy(opts[k].state_dict())
        opts[k].zero_grad()
        F.cross_entropy(models[k](x), y).backward()
        models[k].l2.weight.grad[0, 1] = bad
        if k == "raise":
            with pytest.raises(NonFiniteStepError, match="gradient of parameter #2"):
                opts[k].step()
        else:
            opts[k].step()
            assert opts[k].skipped_steps == 1
        for p, q in zip(models[k].parameters(), params, strict=True):
            assert torch.equal(p, q)
        after = opts[k].state_dict()
        for i, st in state["state"].items():
            for key, val in st.items():
                assert torch.equal(torch.as_tensor(after["state"][i][key]), torch.as_tensor(val))
    for k in models:
        train(models[k], opts[k], 2, x, y)
    for k in ("raise", "skip"):
        for p, q in zip(models[k].parameters(), models["clean"].parameters(), strict=True):
            assert torch.equal(p, q)


def test_closure_that_raises_leaves_no_trace() -> None:
    torch.manual_seed(0)
    model = MLP().double()
    x, y = data()
    opt = Shampoo(model.parameters(), lr=0.05, momentum=0.9)
    train(model, opt, 2, x, y)
    params = [p.detach().clone() for p in model.parameters()]
    state = copy.deepcopy(opt.state_dict())

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        opt.step(closure)
    for p, q in zip(model.parameters(), params, strict=True):
        assert torch.equal(p, q)
    assert repr(opt.state_dict()) == repr(state)

    def good() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    assert torch.isfinite(opt.step(good))


def test_failing_update_is_undone(monkeypatch: pytest.MonkeyPatch) -> None:
    """An exception inside the update (here: the eigendecomposition) restores everything."""
    torch.manual_seed(0)
    model = MLP().double()
    x, y = data()
    opt = Shampoo(model.parameters(), lr=0.05, momentum=0.9)
    train(model, opt, 1, x, y)
    params = [p.detach().clone() for p in model.parameters()]
    state = copy.deepcopy(opt.state_dict())
    calls = {"n": 0}
    real = torch.linalg.eigh

    def flaky(m: Tensor) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise torch.linalg.LinAlgError("no convergence")
        return real(m)

    monkeypatch.setattr(torch.linalg, "eigh", flaky)
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    with pytest.raises(torch.linalg.LinAlgError):
        opt.step()
    for p, q in zip(model.parameters(), params, strict=True):
        assert torch.equal(p, q)
    assert repr(opt.state_dict()) == repr(state)


def test_parameters_without_gradient_do_not_move() -> None:
    torch.manual_seed(0)
    model = MLP().double()
    frozen = nn.Parameter(torch.ones(3, 3, dtype=torch.float64))
    x, y = data()
    opt = Shampoo([*model.parameters(), frozen], lr=0.05)
    train(model, opt, 2, x, y)
    assert torch.equal(frozen, torch.ones(3, 3, dtype=torch.float64))
    assert frozen not in opt.state or not opt.state[frozen]
