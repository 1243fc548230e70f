"""Steepest-descent directions (igbook.optim.steepest) against brute-force maximization.

For every norm the returned ``d`` must (1) have norm 1, measured by an independent formula of
that norm; (2) reach the returned value ``<g, d>``; (3) reach the dual norm computed
independently (l2, l1, nuclear norm from ``torch.linalg.svdvals``, ``g^T M^{-1} g`` from an
explicit inverse); and (4) not be beaten by a brute-force search: many random points scaled
onto the norm's unit sphere, and a numerical maximization (SLSQP from SciPy with the norm as
constraint, or projected gradient ascent on the spectral ball).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linprog, minimize

from igbook.fisher import DenseCurvature, DiagonalCurvature, KroneckerCurvature
from igbook.optim.steepest import (
    NORMS,
    euclidean_direction,
    kronecker_direction,
    linf_direction,
    quadratic_direction,
    spectral_direction,
    steepest_direction,
)

F64 = torch.float64


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def spd(n: int, seed: int) -> torch.Tensor:
    x = torch.randn(n, n, generator=gen(seed), dtype=F64)
    return x @ x.T / n + 0.3 * torch.eye(n, dtype=F64)


def random_search(g: torch.Tensor, norm_fn, n: int = 20000, seed: int = 1) -> float:
    """The best <g, d> over n random directions scaled to norm 1 (a lower bound on the max)."""
    d = torch.randn(n, *g.shape, generator=gen(seed), dtype=F64)
    d = d / torch.stack([norm_fn(x) for x in d]).reshape(-1, *([1] * g.ndim))
    return float((d * g).flatten(1).sum(1).max())


def slsqp_max(g: torch.Tensor, norm_np, seed: int = 2) -> float:
    """Maximize <g, d> s.t. norm(d) <= 1 with SciPy's SLSQP from a random start."""
    gv = g.reshape(-1).numpy()
    x0 = np.random.default_rng(seed).standard_normal(gv.size) * 0.1
    res = minimize(
        lambda x: -gv @ x,
        x0,
        jac=lambda x: -gv,
        constraints=[{"type": "ineq", "fun": lambda x: 1.0 - norm_np(x)}],
        method="SLSQP",
        options={"ftol": 1e-12, "maxiter": 500},
    )
    return float(gv @ res.x)


# -- Euclidean ------------------------------------------------------------------------------
def test_euclidean_direction_is_the_maximizer() -> None:
    g = torch.randn(7, generator=gen(), dtype=F64)
    d, value = euclidean_direction(g)
    assert abs(float(torch.linalg.vector_norm(d)) - 1) < 1e-14  # rounding of one division
    assert abs(float(g @ d) - float(value)) < 1e-13
    assert abs(float(value) - float(np.linalg.norm(g.numpy()))) < 1e-13
    # brute force: no random unit vector does better; SLSQP reaches it (to its ftol-level 1e-6)
    assert random_search(g, torch.linalg.vector_norm) <= float(value) + 1e-12
    assert abs(slsqp_max(g, np.linalg.norm) - float(value)) < 1e-6


def test_linf_direction_is_sign_and_dual_is_l1() -> None:
    g = torch.randn(6, generator=gen(3), dtype=F64)
    d, value = linf_direction(g)
    assert float(d.abs().max()) == 1.0
    assert abs(float(g @ d) - float(value)) < 1e-13
    assert abs(float(value) - float(np.abs(g.numpy()).sum())) < 1e-13  # the l1 norm
    assert random_search(g, lambda x: x.abs().max()) <= float(value) + 1e-12
    # the l-inf ball is a box: a linear program (HiGHS) finds the max to its 1e-9 tolerances
    res = linprog(-g.numpy(), bounds=[(-1.0, 1.0)] * g.numel(), method="highs")
    assert res.status == 0 and abs(-res.fun - float(value)) < 1e-9


# -- spectral -------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(5, 3), (3, 6), (4, 4)])
def test_spectral_direction_reaches_the_nuclear_norm(shape: tuple[int, int]) -> None:
    G = torch.randn(*shape, generator=gen(4), dtype=F64)
    D, value = spectral_direction(G)
    # unit spectral norm; every singular value of D is 1 (full rank G)
    assert torch.allclose(torch.linalg.svdvals(D), torch.ones(min(shape), dtype=F64), atol=1e-13)
    nuclear = float(torch.linalg.svdvals(G).sum())
    assert abs(float((G * D).sum()) - nuclear) < 1e-12  # the dual norm (nuclear), reached
    assert abs(float(value) - nuclear) < 1e-12
    # random feasible points (random matrices scaled to spectral norm 1, random orthogonal
    # ones) never beat it
    assert random_search(G, lambda x: torch.linalg.matrix_norm(x, ord=2), n=5000) <= nuclear
    q, _ = torch.linalg.qr(torch.randn(2000, max(shape), max(shape), generator=gen(5), dtype=F64))
    Q = q[:, : shape[0], : shape[1]]
    assert float((Q * G).sum((1, 2)).max()) <= nuclear + 1e-12
    # projected (super)gradient ascent on the spectral ball: the projection clips the
    # singular values at 1; the iterate converges to the maximizer from zero
    X = torch.zeros_like(G)
    for _ in range(200):
        u, s, vh = torch.linalg.svd(X + 0.5 * G, full_matrices=False)
        X = u @ torch.diag(s.clamp(max=1.0)) @ vh
    assert abs(float((G * X).sum()) - nuclear) < 1e-10
    assert torch.allclose(X, D, atol=1e-10)


def test_spectral_direction_of_a_rank_deficient_matrix_lives_on_its_range() -> None:
    a = torch.randn(6, 2, generator=gen(6), dtype=F64)
    b = torch.randn(2, 4, generator=gen(7), dtype=F64)
    G = a @ b  # rank 2
    D, _ = spectral_direction(G)
    s = torch.linalg.svdvals(D)
    assert torch.allclose(s[:2], torch.ones(2, dtype=F64), atol=1e-12)
    assert float(s[2:].max()) < 1e-12  # zero off the range of G
    assert abs(float((G * D).sum()) - float(torch.linalg.svdvals(G).sum())) < 1e-12
    # D maps onto the column space of G: the projection onto range(G) leaves it unchanged
    P = a @ torch.linalg.pinv(a)
    assert torch.allclose(P @ D, D, atol=1e-12)


# -- quadratic ------------------------------------------------------------------------------
def test_quadratic_direction_is_the_normalized_natural_gradient() -> None:
    n = 5
    M = spd(n, 8)
    g = torch.randn(n, generator=gen(9), dtype=F64)
    d, value = quadratic_direction(g, M)
    assert abs(float(d @ M @ d) - 1) < 1e-13
    Minv = torch.linalg.inv(M)
    dual = float(g @ Minv @ g) ** 0.5
    assert abs(float(value) - dual) < 1e-12 and abs(float(g @ d) - dual) < 1e-12
    assert torch.allclose(d, Minv @ g / dual, atol=1e-12)
    Mn = M.numpy()
    assert random_search(g, lambda x: (x @ M @ x).sqrt()) <= dual + 1e-12
    assert abs(slsqp_max(g, lambda x: np.sqrt(x @ Mn @ x)) - dual) < 1e-6


def test_quadratic_direction_accepts_curvature_objects_and_damping() -> None:
    n = 4
    M = spd(n, 10)
    g = torch.randn(n, generator=gen(11), dtype=F64)
    for damping in (0.0, 0.7):
        ref = quadratic_direction(g, M + damping * torch.eye(n, dtype=F64))
        got = quadratic_direction(g, DenseCurvature(M), damping)
        plain = quadratic_direction(g, M, damping)
        for out in (got, plain):  # Cholesky solve vs the curvature's solve: 1e-12
            assert torch.allclose(out.direction, ref.direction, atol=1e-12)
            assert abs(float(out.dual_norm - ref.dual_norm)) < 1e-12
    diag = torch.tensor([0.5, 2.0, 1.0, 4.0], dtype=F64)
    d, _ = quadratic_direction(g, DiagonalCurvature(diag))
    assert torch.allclose(d, (g / diag) / (g @ (g / diag)).sqrt(), atol=1e-14)
    # a PSD (singular) metric needs damping
    sing = torch.zeros(n, n, dtype=F64)
    sing[0, 0] = 1.0
    with pytest.raises(ValueError, match="metric"):
        quadratic_direction(g, sing)
    assert torch.isfinite(quadratic_direction(g, sing, 0.1).direction).all()


# -- Kronecker ------------------------------------------------------------------------------
def test_kronecker_direction_matches_the_dense_quadratic_norm() -> None:
    out, din = 3, 4
    A, G = spd(din, 12), spd(out, 13)
    grad = torch.randn(out, din, generator=gen(14), dtype=F64)
    for damping in (0.0, 0.3):
        D, value = kronecker_direction(grad, A, G, damping)
        # row-major vec: vec(G D A) = (G kron A) vec(D) (A symmetric)
        M = torch.kron(G, A) + damping * torch.eye(out * din, dtype=F64)
        ref = quadratic_direction(grad.reshape(-1), M)
        assert torch.allclose(D.reshape(-1), ref.direction, atol=1e-12)
        assert abs(float(value - ref.dual_norm)) < 1e-12
        v = D.reshape(-1)
        assert abs(float(v @ M @ v) - 1) < 1e-12
    # brute force on the sphere of the trace form sqrt(tr(D^T G D A)) (no kron, no vec)
    D, value = kronecker_direction(grad, A, G)
    assert abs(float(torch.trace(D.T @ G @ D @ A)) - 1) < 1e-12
    best = random_search(grad, lambda x: torch.trace(x.T @ G @ x @ A).sqrt(), n=5000)
    assert best <= float(value) + 1e-12
    # without damping: G^{-1} grad A^{-1} normalized (explicit solves)
    x = torch.linalg.solve(G, grad) @ torch.linalg.inv(A)
    D, value = kronecker_direction(grad, A, G)
    assert torch.allclose(D, x / (grad * x).sum().sqrt(), atol=1e-12)
    # and through a KroneckerCurvature handed to the quadratic norm
    q = quadratic_direction(grad.reshape(-1), KroneckerCurvature(A, G))
    assert torch.allclose(q.direction.reshape(out, din), D, atol=1e-12)


# -- dispatcher, zero gradient, bad input -------------------------------------------------
def test_dispatcher_routes_every_norm() -> None:
    g = torch.randn(3, 2, generator=gen(15), dtype=F64)
    A, G = spd(2, 16), spd(3, 17)
    M = spd(6, 18)
    expected = {
        "euclidean": euclidean_direction(g),
        "linf": linf_direction(g),
        "spectral": spectral_direction(g),
        "quadratic": quadratic_direction(g.reshape(-1), M),
        "kronecker": kronecker_direction(g, A, G),
    }
    assert set(expected) == set(NORMS)
    for norm, ref in expected.items():
        kw = (
            {"metric": M}
            if norm == "quadratic"
            else {"A": A, "G": G}
            if norm == "kronecker"
            else {}
        )
        arg = g.reshape(-1) if norm == "quadratic" else g
        out = steepest_direction(arg, norm, **kw)
        assert torch.equal(out.direction, ref.direction) and torch.equal(
            out.dual_norm, ref.dual_norm
        )
    with pytest.raises(ValueError, match="metric"):
        steepest_direction(g.reshape(-1), "quadratic")
    with pytest.raises(ValueError, match="A and G"):
        steepest_direction(g, "kronecker", A=A)
    with pytest.raises(ValueError, match="norm"):
        steepest_direction(g, "l7")
    with pytest.raises(ValueError, match="metric"):
        steepest_direction(g, "euclidean", metric=M)


def test_zero_gradient_gives_zero_direction_and_zero_dual_norm() -> None:
    z = torch.zeros(2, 3, dtype=F64)
    for out in (
        euclidean_direction(z),
        linf_direction(z),
        spectral_direction(z),
        quadratic_direction(z.reshape(-1), spd(6, 19)),
        kronecker_direction(z, spd(3, 20), spd(2, 21)),
    ):
        assert float(out.direction.abs().max()) == 0.0 and float(out.dual_norm) == 0.0


def test_float32_inputs_keep_their_dtype() -> None:
    g = torch.randn(4, 3, generator=gen(22))
    for out in (euclidean_direction(g), linf_direction(g), spectral_direction(g)):
        assert out.direction.dtype == torch.float32
    D, _ = spectral_direction(g)
    # float32 SVD: unit singular values to a few float32 ulps
    assert torch.allclose(torch.linalg.svdvals(D), torch.ones(3), atol=1e-5)


def test_bad_input_raises_naming_the_argument() -> None:
    g = torch.randn(3, generator=gen(23), dtype=F64)
    M = spd(3, 24)
    with pytest.raises(ValueError, match="g must be finite"):
        euclidean_direction(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="g must be a matrix"):
        spectral_direction(g)
    with pytest.raises(TypeError, match="g must be real"):
        linf_direction(g.to(torch.complex128))
    with pytest.raises(ValueError, match="g must not be empty"):
        euclidean_direction(torch.empty(0, dtype=F64))
    with pytest.raises(ValueError, match="metric must be positive definite"):
        quadratic_direction(g, -M)
    with pytest.raises(ValueError, match="metric must have shape"):
        quadratic_direction(g, spd(4, 25))
    with pytest.raises(ValueError, match="damping"):
        quadratic_direction(g, M, -1.0)
    grad = torch.randn(2, 3, generator=gen(26), dtype=F64)
    with pytest.raises(ValueError, match="A must have shape"):
        kronecker_direction(grad, spd(2, 27), spd(2, 28))
    with pytest.raises(ValueError, match="G must be positive definite"):
        kronecker_direction(grad, spd(3, 29), torch.zeros(2, 2, dtype=F64))
    with pytest.raises(ValueError, match="G must be positive semi-definite"):
        kronecker_direction(grad, spd(3, 29), -spd(2, 30), 0.1)
    with pytest.raises(ValueError, match="rtol"):
        spectral_direction(grad, rtol=-1.0)
