"""SOAP (igbook.optim.soap): the EKFAC argument, the reduction to Adam, the reference, the standards.

Independent paths: closed forms for an exactly Kronecker covariance (expectations computed
exactly over an orthonormal basis of the noise, not by Monte Carlo), dense matrix functions of
the Kronecker product, ``torch.optim.Adam``/``AdamW``, and ``pytorch_optimizer.SOAP`` (the
authors' algorithm).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from igbook._safety import NonFiniteStepError
from igbook.optim.soap import SOAP, eigenbasis, mode_gram, refresh_eigenbasis, soap_rotate

DT = torch.float64


def spd(n: int, seed: int, spread: float = 5.0) -> Tensor:
    """An SPD matrix with well separated eigenvalues in [1, spread]."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=DT))
    lam = torch.linspace(1.0, spread, n, dtype=DT)
    return (q * lam) @ q.T


def sqrtm(a: Tensor, power: float = 0.5) -> Tensor:
    lam, q = torch.linalg.eigh(a)
    return (q * lam**power) @ q.T


def exact_samples(b: Tensor, c: Tensor) -> list[Tensor]:
    """G_k = B^1/2 Z_k C^1/2 with Z_k = sqrt(mn) E_k over the standard basis E_k of m x n
    matrices: the average of any quadratic function of G over these mn samples equals its
    expectation under Z with iid unit-variance entries (sum_k z_k z_k^T / mn = I)."""
    m, n = b.shape[0], c.shape[0]
    bh, ch = sqrtm(b), sqrtm(c)
    out = []
    for i in range(m):
        for j in range(n):
            z = torch.zeros(m, n, dtype=DT)
            z[i, j] = (m * n) ** 0.5
            out.append(bh @ z @ ch)
    return out


def vec(x: Tensor) -> Tensor:
    """Column-stacking vec, so that vec(A X B) = (B^T kron A) vec(X)."""
    return x.T.reshape(-1)


# --------------------------------------------------------------------------- the EKFAC argument


def test_rotated_second_moment_is_kronecker_spectrum() -> None:
    m, n = 4, 3
    b, c = spd(m, 1, 6.0), spd(n, 2, 3.0)
    gs = exact_samples(b, c)
    # the factor statistics are the closed forms E[GG^T] = tr(C) B, E[G^T G] = tr(B) C
    left = sum(mode_gram(g, 0) for g in gs) / len(gs)
    right = sum(mode_gram(g, 1) for g in gs) / len(gs)
    torch.testing.assert_close(left, torch.trace(c) * b, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(right, torch.trace(b) * c, rtol=1e-12, atol=1e-12)
    # the rotated second moment is lambda_i(B) lambda_j(C), in decreasing order
    ql, qr = eigenbasis(left), eigenbasis(right)
    d = sum(soap_rotate(g, [ql, qr]) ** 2 for g in gs) / len(gs)
    lb = torch.linalg.eigvalsh(b).flip(0)
    lc = torch.linalg.eigvalsh(c).flip(0)
    torch.testing.assert_close(d, torch.outer(lb, lc), rtol=1e-11, atol=1e-12)
    # so Adam's step in that basis (with M = G, V = d) is the exact F^{-1/2} G, F = C kron B
    f = torch.kron(c, b)
    torch.testing.assert_close(
        torch.eye(m * n, dtype=DT),
        sum(torch.outer(vec(g), vec(g)) for g in gs) / len(gs) @ torch.linalg.inv(f),
        rtol=0,
        atol=1e-11,
    )
    g = torch.randn(m, n, generator=torch.Generator().manual_seed(3), dtype=DT)
    soap_dir = soap_rotate(soap_rotate(g, [ql, qr]) / d.sqrt(), [ql, qr], inverse=True)
    torch.testing.assert_close(vec(soap_dir), sqrtm(f, -0.5) @ vec(g), rtol=1e-10, atol=1e-11)
    # and in the wrong basis (the identity: plain Adam) the diagonal is diag(F), not the spectrum
    d_id = sum(g**2 for g in gs) / len(gs)
    torch.testing.assert_close(vec(d_id), torch.diagonal(f), rtol=1e-11, atol=1e-12)
    assert (d_id.flatten().sort().values - d.flatten().sort().values).abs().max() > 0.1


def test_ekfac_diagonal_is_best_when_not_kronecker() -> None:
    """F = C1 kron B1 + C2 kron B2 (a mixture): in the factors' eigenbasis Q = Q_R kron Q_L,
    the rotated second moment is diag(Q^T F Q), the Frobenius-best diagonal in that basis, so
    it beats K-FAC's eigenvalue products (even with their best scale)."""
    m, n = 3, 4
    gs = exact_samples(spd(m, 5, 8.0), spd(n, 6, 2.0)) + exact_samples(spd(m, 7), spd(n, 8, 9.0))
    f = sum(torch.outer(vec(g), vec(g)) for g in gs) / len(gs)
    left = sum(mode_gram(g, 0) for g in gs) / len(gs)
    right = sum(mode_gram(g, 1) for g in gs) / len(gs)
    ql, qr = eigenbasis(left), eigenbasis(right)
    d = sum(soap_rotate(g, [ql, qr]) ** 2 for g in gs) / len(gs)
    q = torch.kron(qr, ql)
    rot = q.T @ f @ q
    torch.testing.assert_close(vec(d), torch.diagonal(rot), rtol=1e-11, atol=1e-12)
    kfac = vec(
        torch.outer(torch.linalg.eigvalsh(left).flip(0), torch.linalg.eigvalsh(right).flip(0))
    )
    scale = (kfac @ vec(d)) / (kfac @ kfac)  # best scalar multiple of K-FAC's diagonal
    err_ekfac = torch.linalg.norm(rot - torch.diag(vec(d)))
    err_kfac = torch.linalg.norm(rot - torch.diag(scale * kfac))
    assert err_ekfac < err_kfac - 1e-3


def test_refresh_converges_to_eigenbasis() -> None:
    """Repeated power iteration + QR (subspace iteration) converges to eigh's basis."""
    a = spd(5, 9, 10.0)
    q = torch.linalg.qr(torch.randn(5, 5, generator=torch.Generator().manual_seed(1), dtype=DT))[0]
    for _ in range(200):
        q, order = refresh_eigenbasis(a, q)
        assert sorted(order.tolist()) == list(range(5))
    torch.testing.assert_close(q.T @ q, torch.eye(5, dtype=DT), rtol=0, atol=1e-13)
    ref = eigenbasis(a)
    torch.testing.assert_close((q.T @ ref).abs(), torch.eye(5, dtype=DT), rtol=0, atol=1e-8)


# --------------------------------------------------------------------------- reduction to Adam


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.l1 = nn.Linear(5, 7)
        self.l2 = nn.Linear(7, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.l2(torch.tanh(self.l1(x)))


def data(steps: int, dtype: torch.dtype = DT) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(11)
    return (
        torch.randn(steps, 64, 5, generator=g, dtype=DT).to(dtype),
        torch.randn(steps, 64, 3, generator=g, dtype=DT).to(dtype),
    )


def mlp(dtype: torch.dtype = DT) -> MLP:
    torch.manual_seed(0)
    return MLP().to(dtype)


def train(model: nn.Module, opt: Any, xs: Tensor, ys: Tensor) -> list[list[Tensor]]:
    traj = []
    for x, y in zip(xs, ys, strict=True):
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()
        traj.append([p.detach().clone() for p in model.parameters()])
    return traj


def test_identity_basis_is_adamw() -> None:
    """max_precondition_dim=1: every dimension keeps the identity, so SOAP is AdamW
    (torch.optim.AdamW, foreach=False, same eps placement and decoupled decay). SOAP's first
    step only initializes, so SOAP on batches 0..T equals AdamW on batches 1..T."""
    xs, ys = data(8)
    kw = dict(lr=0.02, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    a, b = mlp(), mlp()
    sa = train(a, SOAP(a.parameters(), max_precondition_dim=1, **kw), xs, ys)
    sb = train(b, torch.optim.AdamW(b.parameters(), foreach=False, **kw), xs[1:], ys[1:])
    assert all(
        torch.equal(p, q)
        for p, q in zip(sa[0], [p.detach() for p in mlp().parameters()], strict=True)
    )
    for pa, pb in zip(sa[1:], sb, strict=True):
        for p, q in zip(pa, pb, strict=True):
            torch.testing.assert_close(p, q, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize(("freq", "eps", "atol"), [(1000, 1e-8, 1e-14), (2, 1e-3, 1e-10)])
def test_diagonal_factors_is_adam(freq: int, eps: float, atol: float) -> None:
    """A loss of the diagonal of W only: G, GG^T and G^TG are diagonal, the eigenbases are
    signed permutations, and SOAP is Adam (torch.optim.Adam, same betas and eps) entry for entry.

    Without refreshes (freq=1000) eigh's basis is an exact permutation and the two agree to
    rounding. The QR of a refresh leaves entries of ~2e-16 off the permutation; on the entries
    where Adam has M = V = 0 this roundoff in Q^T M Q is divided by eps, so with refreshes
    (freq=2) eps=1e-3 bounds that leak to ~lr * 2e-16 * |M| / eps ~ 1e-12 per step (atol 1e-10
    over 9 steps)."""
    n = 4
    c = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=DT)
    a_coef = torch.tensor([1.0, 3.0, 0.3, 2.0], dtype=DT)

    def loss(w: Tensor, t: int) -> Tensor:
        return (a_coef * (torch.diagonal(w) - c * (1 + 0.1 * t)) ** 2).sum()

    w0 = torch.randn(n, n, generator=torch.Generator().manual_seed(4), dtype=DT)
    w1, w2 = w0.clone().requires_grad_(), w0.clone().requires_grad_()
    o1 = SOAP([w1], lr=0.05, betas=(0.8, 0.9), eps=eps, precondition_frequency=freq)
    o2 = torch.optim.Adam([w2], lr=0.05, betas=(0.8, 0.9), eps=eps, foreach=False)
    o1.zero_grad()
    loss(w1, 0).backward()
    o1.step()  # initialization
    for t in range(1, 10):
        for w, o in ((w1, o1), (w2, o2)):
            o.zero_grad()
            loss(w, t).backward()
            o.step()
        torch.testing.assert_close(w1, w2, rtol=0, atol=atol)
    assert not torch.equal(w2, w0)
    q = o1.state[w1]["bases"][0]
    torch.testing.assert_close(q.abs().sum(0), torch.ones(n, dtype=DT), rtol=0, atol=1e-15)
    assert int((q.abs() > 0.5).sum()) == n  # a signed permutation (to rounding)


# --------------------------------------------------------------------------- reference


@pytest.mark.parametrize("precondition_1d", [False, True])
def test_matches_pytorch_optimizer_before_refresh(precondition_1d: bool) -> None:
    """Configuration where both coincide: eps=0 (the eps placements differ otherwise), no weight
    decay (decay before vs after the update), the same frequency, float64; with
    precondition_frequency=100 only the first (eigh) basis is used in these 10 steps, and the
    two agree to rounding (1e-12)."""
    pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
    xs, ys = data(10)
    kw = dict(lr=0.01, betas=(0.9, 0.95), shampoo_beta=0.9, eps=0.0, weight_decay=0.0)
    kw.update(precondition_frequency=100, precondition_1d=precondition_1d)
    a, b = mlp(), mlp()
    sa = train(a, SOAP(a.parameters(), **kw), xs, ys)
    sb = train(b, pytorch_optimizer.SOAP(b.parameters(), **kw), xs, ys)
    for pa, pb in zip(sa, sb, strict=True):
        for p, q in zip(pa, pb, strict=True):
            torch.testing.assert_close(p, q, rtol=0, atol=1e-12)
    moved = max((p - q).abs().max().item() for p, q in zip(sa[-1], sa[0], strict=True))
    assert moved > 1e-2


def test_matches_pytorch_optimizer_with_refresh() -> None:
    """With power-iteration refreshes every 3 steps: identical to 1e-12 until the first refresh;
    after it, float32-level agreement (2e-6 on parameters moved by ~0.1), because
    pytorch_optimizer computes the QR in float32 while igbook computes it in float64."""
    pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
    xs, ys = data(12)
    kw = dict(lr=0.01, betas=(0.9, 0.95), shampoo_beta=0.9, eps=0.0, weight_decay=0.0)
    kw.update(precondition_frequency=3)
    a, b = mlp(), mlp()
    sa = train(a, SOAP(a.parameters(), **kw), xs, ys)
    sb = train(b, pytorch_optimizer.SOAP(b.parameters(), **kw), xs, ys)
    for t, (pa, pb) in enumerate(zip(sa, sb, strict=True)):
        # the first refresh follows the 3rd moment update, i.e. the 4th call (t = 3)
        atol = 1e-12 if t <= 3 else 2e-6
        for p, q in zip(pa, pb, strict=True):
            torch.testing.assert_close(p, q, rtol=0, atol=atol)
    assert (
        max((p - q).abs().max().item() for p, q in zip(sa[4], sb[4], strict=True)) > 0
    )  # the QR differs


def test_matches_pytorch_optimizer_on_a_3d_tensor() -> None:
    """A 3-way parameter (3 x 4 x 5) gets one factor per dimension and the rotation
    W x_1 Q_1^T x_2 Q_2^T x_3 Q_3^T, like pytorch_optimizer.SOAP with merge_dims=False (eps=0,
    no decay, no refresh in these 8 steps, float64): agreement to rounding (1e-12)."""
    pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
    g = torch.Generator().manual_seed(21)
    w0 = torch.randn(3, 4, 5, generator=g, dtype=DT)
    xs = torch.randn(8, 32, 4, 5, generator=g, dtype=DT)
    ys = torch.randn(8, 32, 3, generator=g, dtype=DT)
    kw = dict(lr=0.02, betas=(0.9, 0.95), eps=0.0, weight_decay=0.0, precondition_frequency=100)
    ws = [w0.clone().requires_grad_(), w0.clone().requires_grad_()]
    opts = [SOAP([ws[0]], **kw), pytorch_optimizer.SOAP([ws[1]], **kw)]
    for x, y in zip(xs, ys, strict=True):
        for w, o in zip(ws, opts, strict=True):
            o.zero_grad()
            ((torch.einsum("ijk,bjk->bi", w, x) - y) ** 2).mean().backward()
            o.step()
        torch.testing.assert_close(ws[0], ws[1], rtol=0, atol=1e-12)
    assert all(
        q is not None and q.shape == (n, n)
        for q, n in zip(opts[0].state[ws[0]]["bases"], (3, 4, 5), strict=True)
    )
    assert (ws[0] - w0).abs().max() > 0.05


# --------------------------------------------------------------------------- the standards


def test_param_groups_equal_separate_optimizers() -> None:
    xs, ys = data(6)
    a, b = mlp(), mlp()
    oa = SOAP(
        [
            {"params": a.l1.parameters(), "lr": 0.03, "precondition_frequency": 2},
            {"params": a.l2.parameters(), "betas": (0.5, 0.8)},
        ],
        lr=0.01,
    )
    o1 = SOAP(b.l1.parameters(), lr=0.03, precondition_frequency=2)
    o2 = SOAP(b.l2.parameters(), lr=0.01, betas=(0.5, 0.8))
    for x, y in zip(xs, ys, strict=True):
        for model, opts in ((a, [oa]), (b, [o1, o2])):
            for o in opts:
                o.zero_grad()
            ((model(x) - y) ** 2).mean().backward()
            for o in opts:
                o.step()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)


def test_state_dict_resumes_bitwise() -> None:
    xs, ys = data(9)
    kw = dict(lr=0.01, precondition_frequency=2, weight_decay=0.01, precondition_1d=True)
    a = mlp()
    full = train(a, SOAP(a.parameters(), **kw), xs, ys)
    b = mlp()
    ob = SOAP(b.parameters(), **kw)
    train(b, ob, xs[:5], ys[:5])
    sd = copy.deepcopy(ob.state_dict())
    c = copy.deepcopy(b)
    oc = SOAP(c.parameters(), **kw)
    oc.load_state_dict(sd)
    rest = train(c, oc, xs[5:], ys[5:])
    for p, q in zip(full[-1], rest[-1], strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize(
    ("kw", "name", "err"),
    [
        ({"lr": -1.0}, "lr", ValueError),
        ({"lr": "a"}, "lr", TypeError),
        ({"betas": (1.0, 0.9)}, "betas", ValueError),
        ({"betas": (0.9, float("nan"))}, "betas", ValueError),
        ({"betas": 0.9}, "betas", TypeError),
        ({"shampoo_beta": 1.5}, "shampoo_beta", ValueError),
        ({"eps": -1e-8}, "eps", ValueError),
        ({"weight_decay": float("inf")}, "weight_decay", ValueError),
        ({"precondition_frequency": 0}, "precondition_frequency", ValueError),
        ({"precondition_frequency": 2.0}, "precondition_frequency", TypeError),
        ({"max_precondition_dim": 0}, "max_precondition_dim", ValueError),
        ({"precondition_1d": 1}, "precondition_1d", TypeError),
        ({"nonfinite": "ignore"}, "nonfinite", ValueError),
    ],
)
def test_bad_hyperparameters_name_the_argument(kw: dict, name: str, err: type) -> None:
    with pytest.raises(err, match=name):
        SOAP(mlp().parameters(), **kw)
    if name != "nonfinite":  # a param group is checked too
        opt = SOAP(mlp().l1.parameters())
        with pytest.raises(err, match=name):
            opt.add_param_group({"params": mlp().l2.parameters(), **kw})


def test_bad_helper_input_names_the_argument() -> None:
    with pytest.raises(ValueError, match="factor"):
        eigenbasis(torch.ones(2, 3, dtype=DT))
    with pytest.raises(ValueError, match="grad"):
        mode_gram(torch.tensor([1.0, float("nan")]), 0)
    with pytest.raises(ValueError, match="dim"):
        mode_gram(torch.ones(2, 3), 2)
    with pytest.raises(ValueError, match="bases"):
        soap_rotate(torch.ones(2, 3), [None])
    with pytest.raises(ValueError, match="basis"):
        refresh_eigenbasis(torch.eye(2), torch.eye(3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtypes(dtype: torch.dtype) -> None:
    """Both dtypes run and keep their dtype; on a square layer (5 x 5, batch 64: both factors
    full rank with distinct eigenvalues, so the eigenbasis is unique up to signs, which the
    update does not see) the float32 run follows the float64 one to float32 accuracy (1e-6 on
    parameters moved by ~0.1). On non-square layers the factors are rank deficient after the
    first step, their null-space basis is arbitrary, and the two dtypes legitimately differ."""
    g = torch.Generator().manual_seed(12)
    xs, ys = (
        torch.randn(8, 64, 5, generator=g, dtype=DT),
        torch.randn(8, 64, 5, generator=g, dtype=DT),
    )
    runs = {}
    for dt in (dtype, DT):
        torch.manual_seed(0)
        model = nn.Linear(5, 5).to(dt)
        opt = SOAP(model.parameters(), lr=0.01, precondition_frequency=2)
        runs[dt] = train(model, opt, xs.to(dt), ys.to(dt))
        for p in model.parameters():
            st = opt.state[p]
            assert p.dtype == dt and st["exp_avg_sq"].dtype == dt and st["exp_avg"].dtype == dt
            assert all(q is None or q.dtype == dt for q in st["bases"] + st["factors"])
            assert torch.isfinite(p).all()
    assert (
        max((p - q).abs().max().item() for p, q in zip(runs[DT][-1], runs[DT][0], strict=True))
        > 0.05
    )
    for pa, pb in zip(runs[dtype], runs[DT], strict=True):
        for p, q in zip(pa, pb, strict=True):
            torch.testing.assert_close(
                p.double(), q, rtol=0, atol=1e-6 if dtype == torch.float32 else 0
            )


def snapshot(model: nn.Module, opt: SOAP) -> Any:
    return copy.deepcopy(([p.detach().clone() for p in model.parameters()], opt.state_dict()))


def same(a: Any, b: Any) -> bool:
    if isinstance(a, Tensor):
        return isinstance(b, Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("at", [0, 3])  # the failing step is the initializing one, or a later one
@pytest.mark.parametrize("mode", ["raise", "skip", "closure"])
def test_failed_step_leaves_no_trace(dtype: torch.dtype, at: int, mode: str) -> None:
    """A NaN gradient (raise/skip) or a closure that raises writes nothing, and the run then
    continues bitwise as a run in which that step never happened (independent path: a second
    run that skips that batch)."""
    xs, ys = data(7, dtype)
    nonfinite = "skip" if mode == "skip" else "raise"
    kw = dict(lr=0.01, precondition_frequency=2, precondition_1d=True, weight_decay=0.01)
    a, b = mlp(dtype), mlp(dtype)
    oa = SOAP(a.parameters(), nonfinite=nonfinite, **kw)
    ob = SOAP(b.parameters(), nonfinite=nonfinite, **kw)
    for t in range(len(xs)):
        x, y = xs[t], ys[t]
        if t == at:
            before = snapshot(a, oa)

            def closure(x: Tensor = x, y: Tensor = y) -> Tensor:
                oa.zero_grad()
                loss = ((a(x) - y) ** 2).mean()
                loss.backward()
                if mode == "closure":
                    raise RuntimeError("boom")
                a.l2.weight.grad[0, 1] = float("nan")
                return loss

            if mode == "raise":
                with pytest.raises(NonFiniteStepError, match="gradient"):
                    oa.step(closure)
            elif mode == "closure":
                with pytest.raises(RuntimeError, match="boom"):
                    oa.step(closure)
            else:
                oa.step(closure)
                assert oa.skipped_steps == 1
            assert same(snapshot(a, oa), before)
            continue
        for model, opt in ((a, oa), (b, ob)):
            opt.zero_grad()
            ((model(x) - y) ** 2).mean().backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)


def test_error_inside_the_update_is_undone(monkeypatch: pytest.MonkeyPatch) -> None:
    """An exception in the middle of the update (here, in the basis refresh of the last
    parameter) restores parameters and state already written for the others."""
    import igbook.optim.soap as soap_mod

    xs, ys = data(4)
    a = mlp()
    opt = SOAP(a.parameters(), lr=0.01, precondition_frequency=2)
    train(a, opt, xs[:2], ys[:2])
    opt.zero_grad()
    ((a(xs[2]) - ys[2]) ** 2).mean().backward()
    before = snapshot(a, opt)

    calls = {"n": 0}

    def failing(factor: Tensor, basis: Tensor) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise torch.linalg.LinAlgError("qr failed")
        return refresh_eigenbasis(factor, basis)

    monkeypatch.setattr(soap_mod, "refresh_eigenbasis", failing)
    with pytest.raises(torch.linalg.LinAlgError):
        opt.step()
    assert calls["n"] == 3
    assert same(snapshot(a, opt), before)


def test_parameter_without_grad_is_not_moved() -> None:
    xs, ys = data(3)
    a = mlp()
    extra = nn.Parameter(torch.ones(3, 2, dtype=DT))
    opt = SOAP([*a.parameters(), extra], lr=0.1)
    train(a, opt, xs, ys)
    assert torch.equal(extra, torch.ones(3, 2, dtype=DT)) and extra not in opt.state
