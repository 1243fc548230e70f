"""igbook.fisher.diagonal: the linear-layer closed form of diagonal curvature against torch.func.

Every value of the closed form (``strategy="linear"``) is checked against two independent
routes: the ``strategy="vmap"`` diagonal (per-example Jacobian rows, square-root factors) and
the diagonal of the dense matrix (:func:`torch.func.jacrev` Jacobians, ``J^T M J``); the
empirical Fisher also against a Python loop of ``backward()`` calls.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from igbook.fisher import (
    BernoulliLikelihood,
    CategoricalLikelihood,
    GaussianLikelihood,
    curvature_matrix,
    fisher_diagonal,
)
from igbook.fisher.diagonal import DIAGONAL_STRATEGIES, linear_curvature_diagonal

D = torch.float64
TOL = {"rtol": 1e-12, "atol": 1e-15}  # float64: the two routes differ by rounding only

LIKELIHOODS = {
    "gaussian": (GaussianLikelihood(variance=0.7), 3),
    "categorical": (CategoricalLikelihood(), 4),
    "bernoulli": (BernoulliLikelihood(), 1),
    "probit": (BernoulliLikelihood(link="probit"), 1),
}
TYPES = ["exact", "mc", "empirical", "ggn"]


def mlp(d_out: int, *, inplace: bool = False, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 6), nn.ReLU(inplace=inplace), nn.Linear(6, d_out)
    ).to(D)


def data(
    kind: str, n: int = 23, seed: int = 1
) -> tuple[nn.Module, torch.Tensor, torch.Tensor, object]:
    lik, c = LIKELIHOODS[kind]
    model = mlp(c)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=gen, dtype=D)
    if kind == "gaussian":
        y = torch.randn(n, c, generator=gen, dtype=D)
    elif kind == "categorical":
        y = torch.randint(0, c, (n,), generator=gen)
    else:
        y = torch.randint(0, 2, (n, 1), generator=gen).to(D)
    return model, x, y, lik


@pytest.mark.parametrize("ftype", TYPES)
@pytest.mark.parametrize("kind", list(LIKELIHOODS))
def test_linear_strategy_equals_vmap_and_the_dense_diagonal(kind: str, ftype: str) -> None:
    model, x, y, lik = data(kind)
    kw = {"mc_samples": 2, "seed": 3}
    fast = fisher_diagonal(model, None, x, y, lik, ftype, strategy="linear", **kw)
    slow = fisher_diagonal(model, None, x, y, lik, ftype, strategy="vmap", **kw)
    dense = curvature_matrix(model, None, x, y, lik, ftype, structure="dense", **kw)
    torch.testing.assert_close(fast, slow, **TOL)
    torch.testing.assert_close(fast, torch.diagonal(dense), **TOL)
    assert fast.shape == (sum(p.numel() for p in model.parameters()),)
    assert float(fast.abs().max()) > 1e-3  # not trivially zero
    # "auto" takes the closed form here: bit for bit the same numbers
    assert torch.equal(fisher_diagonal(model, None, x, y, lik, ftype, **kw), fast)


@pytest.mark.parametrize("kind", ["gaussian", "categorical", "bernoulli"])
def test_monte_carlo_labels_are_the_same_draws(kind: str) -> None:
    """Same generator state in, same labels drawn, same generator state out (k <= C and k > C)."""
    model, x, _, lik = data(kind)
    for k in (1, 7):
        g1, g2 = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
        fast = fisher_diagonal(
            model, None, x, None, lik, "mc", mc_samples=k, generator=g1, strategy="linear"
        )
        slow = fisher_diagonal(
            model, None, x, None, lik, "mc", mc_samples=k, generator=g2, strategy="vmap"
        )
        torch.testing.assert_close(fast, slow, **TOL)
        assert torch.equal(g1.get_state(), g2.get_state())
    # another seed gives another estimate (the draws are used)
    a = fisher_diagonal(model, None, x, None, lik, "mc", seed=1)
    b = fisher_diagonal(model, None, x, None, lik, "mc", seed=2)
    assert not torch.allclose(a, b)


def test_empirical_diagonal_is_the_mean_squared_per_example_gradient() -> None:
    model, x, y, lik = data("categorical")
    ref = torch.zeros(sum(p.numel() for p in model.parameters()), dtype=D)
    for xn, yn in zip(x, y, strict=True):
        model.zero_grad()
        nn.functional.cross_entropy(model(xn[None]), yn[None]).backward()
        ref += torch.cat([p.grad.reshape(-1) for p in model.parameters()]) ** 2
    model.zero_grad()
    fast = fisher_diagonal(model, None, x, y, lik, "empirical", strategy="linear")
    torch.testing.assert_close(fast, ref / len(x), **TOL)


def test_subsets_chunks_in_place_activations_and_bias_free_layers() -> None:
    model, x, y, lik = data("categorical")
    params = {
        k: v.detach() for k, v in model.named_parameters() if k.startswith(("2.", "4.weight"))
    }
    fast = fisher_diagonal(model, params, x, y, lik, strategy="linear", chunk_size=5)
    slow = fisher_diagonal(model, params, x, y, lik, strategy="vmap")
    torch.testing.assert_close(fast, slow, **TOL)
    # ReLU(inplace=True) after a linear layer must not corrupt the captured layer output
    m2 = mlp(4, inplace=True)
    torch.testing.assert_close(
        fisher_diagonal(m2, None, x, y, lik, strategy="linear"),
        fisher_diagonal(m2, None, x, y, lik, strategy="vmap"),
        **TOL,
    )
    m3 = nn.Sequential(nn.Linear(5, 4, bias=False), nn.Softplus(), nn.Linear(4, 4)).to(D)
    torch.testing.assert_close(
        fisher_diagonal(m3, None, x, y, lik, "empirical", strategy="linear"),
        fisher_diagonal(m3, None, x, y, lik, "empirical", strategy="vmap"),
        **TOL,
    )


class _Scaled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(5, 4).to(D)
        self.scale = nn.Parameter(torch.tensor(1.5, dtype=D))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.lin(x)


class _Twice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(5, 5).to(D)
        self.out = nn.Linear(5, 4).to(D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.lin(torch.tanh(self.lin(x)))))


class _Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(5, 5).to(D)
        self.b = nn.Linear(5, 5).to(D)
        self.b.weight = self.a.weight
        self.out = nn.Linear(5, 4).to(D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.b(torch.tanh(self.a(x)))))


class _Sequence(nn.Module):
    """A linear layer on (N, T, d) inputs: per-example gradients sum over T (no closed form)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(5, 4).to(D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.reshape(x.shape[0], 1, 5).expand(-1, 2, -1)).sum(1)


@pytest.mark.parametrize("build", [_Scaled, _Twice, _Tied, _Sequence])
def test_not_applicable_falls_back_to_vmap(build: type[nn.Module]) -> None:
    torch.manual_seed(0)
    model = build()
    _, x, y, lik = data("categorical")
    assert linear_curvature_diagonal(model, None, x, y, lik) is None
    with pytest.raises(ValueError, match="strategy='linear'"):
        fisher_diagonal(model, None, x, y, lik, strategy="linear")
    auto = fisher_diagonal(model, None, x, y, lik)
    dense = curvature_matrix(model, None, x, y, lik)
    torch.testing.assert_close(auto, torch.diagonal(dense), **TOL)


def test_hessian_has_no_closed_form_and_bad_strategy_raises() -> None:
    model, x, y, lik = data("gaussian")
    assert linear_curvature_diagonal(model, None, x, y, lik, "hessian") is None
    with pytest.raises(ValueError, match="strategy='linear'"):
        fisher_diagonal(model, None, x, y, lik, "hessian", strategy="linear")
    auto = fisher_diagonal(model, None, x, y, lik, "hessian")
    torch.testing.assert_close(
        auto, torch.diagonal(curvature_matrix(model, None, x, y, lik, "hessian")), **TOL
    )
    assert DIAGONAL_STRATEGIES == ("auto", "vmap", "linear")
    with pytest.raises(ValueError, match="strategy"):
        fisher_diagonal(model, None, x, y, lik, strategy="backpack")
    with pytest.raises(TypeError, match="model"):
        linear_curvature_diagonal("net", None, x, y, lik)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="y"):
        linear_curvature_diagonal(model, None, x, None, lik, "empirical")
