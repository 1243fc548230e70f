"""igbook.fisher against the shared reference cases of tests/reference.py (float64).

Every deterministic curvature matrix (exact Fisher, GGN, empirical Fisher, Hessian), in every
structure, every matrix-free product and the per-example gradients must equal the
torch.func references to 1e-10 relative (Frobenius norm). The Monte Carlo Fisher, which has no
deterministic reference, is checked against its expectation entry by entry within 6 standard
errors computed exactly (Isserlis for the Gaussian, enumeration of the labels otherwise).

The references themselves are cross-checked first by second, independent paths (closed form
against autograd, the Gauss-Newton decomposition of the Hessian), so that a wrong reference
cannot pass unnoticed.
"""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call, hessian

import reference
from igbook.fisher import (
    CurvatureOperator,
    FisherType,
    curvature_matrix,
    fisher_diagonal,
    fisher_vector_product,
    flatten_params,
    ggn_matrix,
    hessian_matrix,
    per_example_gradients,
)
from reference import Case, rel_err

RTOL = 1e-10
CASES = reference.cases()
IDS = [c.name for c in CASES]
DETERMINISTIC = [FisherType.EXACT, FisherType.GGN, FisherType.EMPIRICAL, FisherType.HESSIAN]
STRUCTURES = ["dense", "diagonal", "blocks", "layers"]


def assert_close(got: torch.Tensor, want: torch.Tensor, what: str, rtol: float = RTOL) -> None:
    assert got.dtype == torch.float64, f"{what}: dtype {got.dtype}"
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    err = rel_err(got, want)
    assert err <= rtol, f"{what}: relative error {err:.3e} > {rtol:g}"


def igbook_matrix(c: Case, kind: FisherType, structure: str = "dense", **kw):
    return curvature_matrix(
        c.model, c.params, c.x, c.y, c.likelihood(), kind, structure=structure, **kw
    )


# --------------------------------------------------------------------------- the references
def test_cases_cover_models_and_likelihoods() -> None:
    names = set(IDS)
    assert len(names) == len(CASES) == 8
    for m in ("mlp", "cnn"):
        for lik in ("gaussian1", "gaussian0.3", "categorical", "bernoulli"):
            assert f"{m}-{lik}" in names
    assert all(c.x.dtype == torch.float64 and c.num_params > 30 for c in CASES)


def test_cases_are_seeded() -> None:
    a, b = reference.case("cnn", "categorical"), reference.case("cnn", "categorical")
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert torch.equal(flatten_params(a.params), flatten_params(b.params))
    c = reference.case("cnn", "categorical", seed=1)
    assert not torch.equal(a.x, c.x)


@pytest.mark.parametrize("c", CASES, ids=IDS)
def test_reference_closed_forms_match_autograd(c: Case) -> None:
    """Closed-form output Fisher = torch.func.hessian of the written-out loss (canonical links),
    and the empirical Fisher from jacrev of the losses = J^T r r^T J with r by hand."""
    assert_close(
        reference.output_fisher(c), reference.output_hessian(c), "Lambda vs Hessian of loss", 1e-12
    )
    assert_close(
        reference.dense_curvature(c, "exact"),
        reference.dense_curvature(c, "ggn"),
        "F vs GGN",
        1e-12,
    )
    f, y, j = reference.outputs(c), c.y, reference.jacobians(c)
    if c.likelihood_name == "gaussian":
        r = (f - y) / c.variance
    elif c.likelihood_name == "categorical":
        r = torch.softmax(f, -1) - torch.nn.functional.one_hot(y, f.shape[1]).to(f.dtype)
    else:
        r = torch.sigmoid(f) - y
    assert_close(
        reference.per_example_gradients(c),
        torch.einsum("ncp,nc->np", j, r),
        "g_n = J_n^T r_n",
        1e-12,
    )
    # the reference's flattening is igbook's (row-major, named_parameters order)
    assert torch.equal(reference.flatten(c.params), flatten_params(c.params))


@pytest.mark.parametrize("c", CASES, ids=IDS)
def test_reference_hessian_is_ggn_plus_residual(c: Case) -> None:
    r"""H = GGN + (1/N) sum_{n,c} d_{f_nc} l_n  nabla^2_theta f_nc (Hessians of the outputs)."""
    theta = reference.flatten(c.params)
    names = [n for n, _ in c.model.named_parameters()]
    slices = reference.param_slices(c)

    def out_flat(t: torch.Tensor) -> torch.Tensor:
        p = {n: t[slices[n]].reshape(c.params[n].shape) for n in names}
        o = functional_call(c.model, p, (c.x,))
        return o.reshape(o.shape[0], -1)

    f = reference.outputs(c)
    dl = torch.func.vmap(torch.func.grad(lambda fn, yn: reference._nll(c, fn[None], yn[None])[0]))(
        f, c.y
    )
    weights = dl / f.shape[0]  # (N, C)
    residual = hessian(lambda t: (out_flat(t) * weights).sum())(theta)
    h = reference.dense_curvature(c, "hessian")
    assert_close(
        h, reference.dense_curvature(c, "ggn") + residual, "Gauss-Newton decomposition", 1e-10
    )
    assert rel_err(h, reference.dense_curvature(c, "ggn")) > 1e-3, (
        "a test case where H = GGN cannot tell them apart"
    )


def test_kinds_differ_on_every_case() -> None:
    """The cases discriminate: the empirical Fisher and the Hessian differ from the Fisher."""
    for c in CASES:
        f = reference.dense_curvature(c, "exact")
        assert rel_err(reference.dense_curvature(c, "empirical"), f) > 1e-2, c.name
        assert rel_err(reference.dense_curvature(c, "hessian"), f) > 1e-3, c.name


# --------------------------------------------------------------------------- igbook.fisher
@pytest.mark.parametrize("structure", STRUCTURES)
@pytest.mark.parametrize("kind", DETERMINISTIC, ids=[k.value for k in DETERMINISTIC])
@pytest.mark.parametrize("c", CASES, ids=IDS)
def test_curvature_matrix_matches_reference(c: Case, kind: FisherType, structure: str) -> None:
    want = reference.structured(c, reference.dense_curvature(c, kind), structure)
    got = igbook_matrix(c, kind, structure)
    what = f"{c.name} {kind.value} {structure}"
    if isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), (
            f"{what}: keys {sorted(got)} != {sorted(want)}"
        )
        for k in want:
            assert_close(got[k], want[k], f"{what}[{k}]")
    else:
        assert_close(got, want, what)


@pytest.mark.parametrize("c", CASES, ids=IDS)
def test_chunking_and_string_spelling(c: Case) -> None:
    want = reference.dense_curvature(c, "exact")
    assert_close(igbook_matrix(c, FisherType.EXACT, chunk_size=2), want, f"{c.name} chunk_size=2")
    assert_close(igbook_matrix(c, "exact"), want, f"{c.name} 'exact'")  # type: ignore[arg-type]


@pytest.mark.parametrize("c", CASES, ids=IDS)
def test_wrappers_match_reference(c: Case) -> None:
    lik = c.likelihood()
    assert_close(
        fisher_diagonal(c.model, c.params, c.x, c.y, lik),
        torch.diagonal(reference.dense_curvature(c, "exact")),
        "fisher_diagonal",
    )
    assert_close(
        ggn_matrix(c.model, c.params, c.x, c.y, lik),
        reference.dense_curvature(c, "ggn"),
        "ggn_matrix",
    )
    assert_close(
        hessian_matrix(c.model, c.params, c.x, c.y, lik),
        reference.dense_curvature(c, "hessian"),
        "hessian_matrix",
    )


@pytest.mark.parametrize("c", CASES, ids=IDS)
def test_per_example_gradients_match_reference(c: Case) -> None:
    got = per_example_gradients(c.model, c.params, c.x, c.y, c.likelihood())
    assert_close(got, reference.per_example_gradients(c), f"{c.name} per-example gradients")


@pytest.mark.parametrize("kind", DETERMINISTIC, ids=[k.value for k in DETERMINISTIC])
@pytest.mark.parametrize("c", CASES, ids=IDS)
def test_curvature_operator_matches_reference(c: Case, kind: FisherType) -> None:
    dense = reference.dense_curvature(c, kind)
    op = CurvatureOperator(c.model, c.params, c.x, c.y, c.likelihood(), kind)
    assert op.shape == dense.shape
    gen = torch.Generator().manual_seed(7)
    v = torch.randn(c.num_params, 3, generator=gen, dtype=torch.float64)
    for i in range(3):
        assert_close(op @ v[:, i], dense @ v[:, i], f"{c.name} {kind.value} op @ v")
    vd = {n: v[s, 0].reshape(c.params[n].shape) for n, s in reference.param_slices(c).items()}
    out = op.matvec(vd)
    assert isinstance(out, dict) and list(out) == list(vd)
    assert_close(flatten_params(out), dense @ v[:, 0], f"{c.name} {kind.value} op.matvec(dict)")
    if c.model_name == "mlp":  # one product per column: P products, kept to the small models
        assert_close(op.to_dense(), dense, f"{c.name} {kind.value} op.to_dense()")
    assert_close(op.gradient(), reference.gradient(c), f"{c.name} op.gradient()")
    assert abs(op.loss() - reference.loss(c)) <= RTOL * abs(reference.loss(c))
    fvp = fisher_vector_product(c.model, c.params, c.x, c.y, c.likelihood(), v[:, 1], kind)
    assert_close(fvp, dense @ v[:, 1], f"{c.name} {kind.value} fisher_vector_product")


# --------------------------------------------------------------------------- Monte Carlo Fisher
MC_SAMPLES = 4000


@pytest.mark.parametrize("c", CASES, ids=IDS)
def test_mc_fisher_within_its_standard_errors(c: Case) -> None:
    """Entrywise |F_mc - F| <= 6 SE; quadratic forms u^T F_mc u within 4 SE (SEs exact, not estimated)."""
    exact = reference.dense_curvature(c, "exact")
    assert_close(
        reference.mc_expectation(c), exact, "E[MC] by enumeration/Isserlis = exact Fisher", 1e-12
    )
    se = reference.mc_standard_error(c, MC_SAMPLES)
    floor = 1e-12 * float(exact.abs().max())
    got = igbook_matrix(c, FisherType.MC, mc_samples=MC_SAMPLES, seed=3)
    z = ((got - exact).abs() - floor).clamp_min(0) / se.clamp_min(floor)
    assert float(z.max()) <= 6.0, f"{c.name}: an entry is {float(z.max()):.1f} standard errors off"
    assert not torch.allclose(got, exact, rtol=1e-8, atol=0), (
        "the MC Fisher equals the exact Fisher"
    )
    op = CurvatureOperator(
        c.model, c.params, c.x, None, c.likelihood(), "mc", mc_samples=MC_SAMPLES, seed=4
    )
    gen = torch.Generator().manual_seed(5)
    us = [
        torch.ones(c.num_params, dtype=torch.float64),
        *torch.randn(2, c.num_params, generator=gen, dtype=torch.float64),
    ]
    for label, quad in (
        ("curvature_matrix", lambda u: u @ got @ u),
        ("CurvatureOperator", lambda u: u @ (op @ u)),
    ):
        for u in us:
            zq = abs(float(quad(u) - u @ exact @ u)) / float(
                reference.mc_standard_error(c, MC_SAMPLES, u)
            )
            assert zq <= 4.0, f"{c.name} {label}: u^T F u is {zq:.1f} standard errors off"


@pytest.mark.parametrize("c", CASES[:4], ids=IDS[:4])
def test_mc_structures_agree_with_dense_mc(c: Case) -> None:
    """Same seed, same labels: the diagonal and blocks are those of the dense MC matrix."""
    for k in (1, 50):
        dense = igbook_matrix(c, FisherType.MC, mc_samples=k, seed=11)
        for structure in ("diagonal", "blocks", "layers"):
            want = reference.structured(c, dense, structure)
            got = igbook_matrix(c, FisherType.MC, structure, mc_samples=k, seed=11)
            if isinstance(want, dict):
                for name in want:
                    assert_close(got[name], want[name], f"MC k={k} {structure}[{name}]", 1e-12)
            else:
                assert_close(got, want, f"MC k={k} {structure}", 1e-12)
