"""The curvature core: the Curvature protocol, kfac_factors, the parameter orders.

Every check compares with an independent path: a dense matrix built with torch.linalg
(solves, inverses, matrix powers), the dense Fisher of igbook.fisher.curvature_matrix (which is
itself checked against torch.func in test_fisher_models.py), or an explicit permutation.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from igbook.fisher import (
    BlockDiagonalCurvature,
    CategoricalLikelihood,
    CurvatureOperator,
    DenseCurvature,
    DiagonalCurvature,
    GaussianLikelihood,
    KroneckerCurvature,
    curvature,
    curvature_matrix,
    kfac_factors,
    parameter_layout,
    reorder,
)

D = torch.float64


def _spd(n: int, seed: int, rank: int | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    b = torch.randn(n, rank or n, generator=g, dtype=D)
    return b @ b.T / n


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 3)).to(D)


def _operators() -> list:
    a, g = _spd(3, 1), _spd(2, 2)
    dense = DenseCurvature(_spd(6, 3), blocks={"first": slice(0, 2), "rest": slice(2, 6)})
    return [
        dense,
        DiagonalCurvature(torch.rand(6, dtype=D, generator=torch.Generator().manual_seed(4)) + 0.1),
        KroneckerCurvature(a, g, bias=True),
        KroneckerCurvature(a, g, bias=False),
        BlockDiagonalCurvature({"k": KroneckerCurvature(a, g, bias=True), "d": dense}),
    ]


@pytest.mark.parametrize("op", _operators(), ids=lambda o: type(o).__name__)
def test_protocol_against_the_dense_matrix(op) -> None:
    """matvec ((P,) and (P, K)), diagonal, solve, inverse and blocks equal their dense versions."""
    m = op.to_dense()
    p = op.size
    torch.testing.assert_close(m, m.T, rtol=0, atol=1e-14)
    g = torch.Generator().manual_seed(5)
    v, V = torch.randn(p, generator=g, dtype=D), torch.randn(p, 3, generator=g, dtype=D)
    torch.testing.assert_close(op.matvec(v), m @ v, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(op @ V, m @ V, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(op.diagonal(), m.diagonal(), rtol=1e-12, atol=1e-13)
    for d in (0.3, 2.0):
        ref = torch.linalg.solve(m + d * torch.eye(p, dtype=D), V)
        torch.testing.assert_close(op.solve(V, d), ref, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(
            op.inverse(d).to_dense(),
            torch.linalg.inv(m + d * torch.eye(p, dtype=D)),
            rtol=1e-10,
            atol=1e-12,
        )
    for name, sl in op.blocks.items():
        torch.testing.assert_close(op.block(name).to_dense(), m[sl, sl], rtol=1e-12, atol=1e-14)


def test_kronecker_block_is_a_permuted_kron_and_powers_are_matrix_powers() -> None:
    """KroneckerCurvature in the flat order [W row-major, b] = P^T (A kron G) P for the explicit permutation P."""
    out, k = 2, 3
    a, g = _spd(k + 1, 6), _spd(out, 7)
    op = KroneckerCurvature(a, g, bias=True)
    # column-major [vec(W), b] index of each flat entry: W[i, j] -> j*out + i, b[i] -> k*out + i
    perm = [j * out + i for i in range(out) for j in range(k)] + [k * out + i for i in range(out)]
    kron = torch.kron(a, g)
    torch.testing.assert_close(op.to_dense(), kron[perm][:, perm], rtol=1e-12, atol=1e-14)
    # phi(x) = (x + s)^p through eigendecompositions = the matrix function of the dense matrix
    w, q = torch.linalg.eigh(kron)
    for power, shift in ((-0.5, 0.1), (-1.0, 0.2), (0.25, 0.0)):
        ref = (q * (w.clamp_min(0) + shift) ** power) @ q.T
        got = KroneckerCurvature(a, g, bias=True, power=power, shift=shift).to_dense()
        torch.testing.assert_close(got, ref[perm][:, perm], rtol=1e-9, atol=1e-11)


def test_kfac_factors_equal_the_exact_layer_blocks_on_one_data_point() -> None:
    """With N = 1, E[a a^T kron g g^T] = A kron G exactly: K-FAC's blocks are the Fisher's layer blocks."""
    model = _mlp(1)
    x = torch.randn(1, 4, dtype=D, generator=torch.Generator().manual_seed(8))
    for lik in (CategoricalLikelihood(), GaussianLikelihood(variance=0.3)):
        kron = curvature(model, None, x, None, lik, "exact", structure="kron")
        layers = curvature_matrix(model, None, x, None, lik, "exact", structure="layers")
        assert isinstance(layers, dict)
        for name, block in layers.items():
            torch.testing.assert_close(kron.block(name).to_dense(), block, rtol=1e-10, atol=1e-13)


def test_kfac_factors_conventions() -> None:
    """Variance scales G by 1/variance; reduction='sum' by N; separate bias blocks; no hooks left on the model."""
    model = _mlp(2)
    g = torch.Generator().manual_seed(9)
    x = torch.randn(7, 4, dtype=D, generator=g)
    y = torch.randn(7, 3, dtype=D, generator=g)
    f1 = kfac_factors(model, x, likelihood=GaussianLikelihood(1.0))
    f3 = kfac_factors(model, x, likelihood=GaussianLikelihood(0.25))
    fs = kfac_factors(model, x, likelihood="gaussian", reduction="sum")
    for name in f1:
        torch.testing.assert_close(f3[name].G, 4.0 * f1[name].G, rtol=1e-12, atol=0)
        torch.testing.assert_close(f3[name].A, f1[name].A, rtol=0, atol=0)
        torch.testing.assert_close(fs[name].G, 7.0 * f1[name].G, rtol=1e-12, atol=0)
    sep = kfac_factors(model, x, likelihood="gaussian", bias="separate")
    w, b = sep["0"]
    torch.testing.assert_close(w.A, f1["0"].A[:4, :4], rtol=1e-12, atol=0)
    torch.testing.assert_close(b.A, torch.ones(1, 1, dtype=D))
    # empirical: the mean of g g^T over data, with the observed targets
    emp = kfac_factors(model, x, y, likelihood="gaussian", fisher_type="empirical")
    out = model(x).detach()
    r = out - y
    w2 = model[2].weight.detach()
    torch.testing.assert_close(emp["2"].G, r.T @ r / 7, rtol=1e-12, atol=1e-14)
    assert w2.shape == (3, 3)
    assert all(not m._forward_hooks for m in model.modules())
    with pytest.raises(ValueError, match=r"y .* is required"):
        kfac_factors(model, x, likelihood="gaussian", fisher_type="empirical")
    assert all(not m._forward_hooks for m in model.modules())
    with pytest.raises(ValueError, match="fisher_type must be one of"):
        kfac_factors(model, x, likelihood="gaussian", fisher_type="hessian")


def test_mc_kfac_factors_are_unbiased() -> None:
    """The Monte Carlo G averages to the exact G: mean over 400 seeds within 5 standard errors."""
    model = _mlp(3)
    x = torch.randn(5, 4, dtype=D, generator=torch.Generator().manual_seed(10))
    exact = kfac_factors(model, x, likelihood="categorical")["2"].G
    draws = torch.stack(
        [
            kfac_factors(model, x, likelihood="categorical", fisher_type="mc", seed=s)["2"].G
            for s in range(400)
        ]
    )
    se = draws.std(0) / 400**0.5
    assert bool(((draws.mean(0) - exact).abs() <= 5 * se + 1e-12).all())


def test_reorder_maps_between_flat_and_kronecker_orders() -> None:
    """reorder = explicit column-major vectorization of each layer's weight; round trip is the identity."""
    model = nn.Sequential(nn.Conv2d(2, 3, 2), nn.Flatten(), nn.Linear(12, 2)).to(D)
    named = dict(model.named_parameters())
    flat = torch.cat([t.reshape(-1) for t in named.values()])
    kron = torch.cat(
        [
            named["0.weight"].reshape(3, -1).T.reshape(-1),
            named["0.bias"],
            named["2.weight"].T.reshape(-1),
            named["2.bias"],
        ]
    )
    torch.testing.assert_close(reorder(flat, model), kron, rtol=0, atol=0)
    torch.testing.assert_close(
        reorder(kron, model, source="kronecker", target="flat"), flat, rtol=0, atol=0
    )
    m = torch.outer(flat, flat)
    torch.testing.assert_close(
        reorder(m, model, matrix=True), torch.outer(kron, kron), rtol=0, atol=0
    )
    lay = parameter_layout(model)
    assert list(lay.layers) == ["0", "2"] and lay.size == flat.numel()
    with pytest.raises(ValueError, match="t must have shape"):
        reorder(flat[:-1], model)


def test_operator_stacks_and_structures_agree() -> None:
    """CurvatureOperator takes (P, K); every structure's diagonal equals the dense diagonal."""
    model = _mlp(4)
    g = torch.Generator().manual_seed(11)
    x, y = torch.randn(6, 4, dtype=D, generator=g), torch.randint(0, 3, (6,), generator=g)
    dense = curvature(model, None, x, y, "categorical", "ggn").to_dense()
    op = curvature(model, None, x, y, "categorical", "ggn", structure="operator")
    assert isinstance(op, CurvatureOperator)
    V = torch.randn(dense.shape[0], 2, dtype=D, generator=g)
    torch.testing.assert_close(op @ V, dense @ V, rtol=1e-10, atol=1e-12)
    for s in ("diagonal", "blocks", "layers", "operator"):
        torch.testing.assert_close(
            curvature(model, None, x, y, "categorical", "ggn", structure=s).diagonal(),
            dense.diagonal(),
            rtol=1e-10,
            atol=1e-13,
        )
    with pytest.raises(ValueError, match="structure must be one of"):
        curvature(model, None, x, y, "categorical", structure="sparse")
    with pytest.raises(ValueError, match="not positive definite"):
        DenseCurvature(torch.zeros(2, 2, dtype=D)).solve(torch.ones(2, dtype=D))
    with pytest.raises(ValueError, match="v must have shape"):
        DenseCurvature(torch.eye(2, dtype=D)).matvec(torch.ones(3, dtype=D))


# ------------------------------------------------------------ against the shared reference cases
import dataclasses  # noqa: E402

import reference  # noqa: E402

CASES = reference.cases()


def _one_point(c: reference.Case) -> reference.Case:
    return dataclasses.replace(c, x=c.x[:1], y=c.y[:1], _cache={})


@pytest.mark.parametrize("c", CASES, ids=lambda c: c.name)
def test_every_structure_equals_the_torch_func_reference(c: reference.Case) -> None:
    """curvature(...) in every structure = the torch.func reference of tests/reference.py (1e-10 relative)."""
    lik = c.likelihood()
    for kind in ("exact", "ggn", "empirical"):
        ref = reference.dense_curvature(c, kind)
        dense = curvature(c.model, None, c.x, c.y, lik, kind)
        assert reference.rel_err(dense.to_dense(), ref) < 1e-10
        layers = curvature(c.model, None, c.x, c.y, lik, kind, structure="layers")
        ref_layers = reference.structured(c, ref, "layers")
        for name, sl in layers.blocks.items():
            assert reference.rel_err(layers.block(name).to_dense(), ref_layers[name]) < 1e-10
            assert reference.rel_err(dense.block(name).to_dense(), ref[sl, sl]) < 1e-10
        diag = curvature(c.model, None, c.x, c.y, lik, kind, structure="diagonal")
        assert reference.rel_err(diag.diagonal(), ref.diagonal()) < 1e-10
    hess = curvature(c.model, None, c.x, c.y, lik, "hessian", structure="operator")
    v = torch.randn(c.num_params, 2, dtype=D, generator=torch.Generator().manual_seed(1))
    assert reference.rel_err(hess @ v, reference.dense_curvature(c, "hessian") @ v) < 1e-10


@pytest.mark.parametrize("c", reference.cases("mlp"), ids=lambda c: c.name)
def test_kron_blocks_equal_the_reference_layer_blocks_on_one_point(c: reference.Case) -> None:
    """For one data point K-FAC is exact: its blocks (flat order, no reordering) = the reference's layer blocks."""
    one = _one_point(c)
    kron = curvature(one.model, None, one.x, one.y, one.likelihood(), "exact", structure="kron")
    ref = reference.structured(one, reference.dense_curvature(one, "exact"), "layers")
    assert set(kron.blocks) == set(ref)
    for name in ref:
        assert reference.rel_err(kron.block(name).to_dense(), ref[name]) < 1e-10
    # the empirical-Fisher factors too (one point: g g^T is one Kronecker product)
    kron_e = curvature(
        one.model, None, one.x, one.y, one.likelihood(), "empirical", structure="kron"
    )
    ref_e = reference.structured(one, reference.dense_curvature(one, "empirical"), "layers")
    for name in ref_e:
        assert reference.rel_err(kron_e.block(name).to_dense(), ref_e[name]) < 1e-10
