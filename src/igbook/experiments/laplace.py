r"""Seeded set-ups of the Laplace chapter, its tests and its benchmark.

The MAP networks that the Laplace approximation is fitted at: the 1-D regression with a gap of
:mod:`igbook.experiments.blr` and small classifiers on scikit-learn's bundled data sets. Every
network is trained full-batch in float64 on the negative log joint
:math:`\sum_n\ell(f_\theta(x_n), y_n) + \frac\delta2\lVert\theta\rVert^2` (the objective whose
minimizer Laplace expands around).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call

from igbook.data import load
from igbook.experiments.blr import gap_regression_data
from igbook.experiments.models import mlp
from igbook.fisher import get_likelihood

__all__ = [
    "GAP",
    "CLASSIFIERS",
    "PRIOR_GRID",
    "train_map",
    "gap_map",
    "classifier_map",
    "POLY_DEGREE",
    "polynomial_features",
    "linear_map",
    "LOGISTIC",
    "logistic_data",
    "logistic_map",
    "logistic_exact_posterior",
]

#: degree of the polynomial features of the evidence-vs-cross-validation comparison
POLY_DEGREE = 7

#: the gap regression: data size, noise, hidden widths, prior precision, Adam steps
GAP: dict[str, object] = {
    "n": 60,
    "noise_std": 0.1,
    "hidden": (16, 16),
    "prior_precision": 1.0,
    "steps": 1500,
    "lr": 1e-2,
}
#: the classifiers: data set -> hidden widths, prior precision, Adam steps
CLASSIFIERS: dict[str, dict[str, object]] = {
    "breast_cancer": {"hidden": (16,), "prior_precision": 1.0, "steps": 600, "lr": 1e-2},
    "digits": {"hidden": (32,), "prior_precision": 1.0, "steps": 600, "lr": 1e-2},
}
#: prior precisions of the live figure and the evidence-vs-cross-validation comparison
PRIOR_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)


def train_map(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    likelihood: str,
    *,
    prior_precision: float,
    steps: int,
    lr: float,
    noise_std: float = 1.0,
) -> nn.Module:
    r"""Adam on :math:`\sum_n\ell_n + \frac\delta2\lVert\theta\rVert^2` (full batch), in place; returns ``model``.

    The Gaussian likelihood uses variance ``noise_std**2``.
    """
    lik = get_likelihood("gaussian" if likelihood == "gaussian" else likelihood)
    if likelihood == "gaussian":
        from igbook.fisher import GaussianLikelihood

        lik = GaussianLikelihood(noise_std**2)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        out = model(x)
        f = lik.flatten_output(out)
        loss = lik.nll(f, lik.check_targets(y, out)).sum()
        loss = loss + 0.5 * prior_precision * sum((p**2).sum() for p in model.parameters())
        loss.backward()
        opt.step()
    return model


def gap_map(seed: int = 0) -> tuple[nn.Module, Tensor, Tensor]:
    """The MAP network of the gap regression (``GAP``) and its data ``(x, y)``, float64."""
    x, y = gap_regression_data(GAP["n"], GAP["noise_std"], seed=seed)  # type: ignore[arg-type]
    x, y = x.double(), y.double()
    model = mlp((1, *GAP["hidden"], 1), activation="tanh", seed=seed, dtype=torch.float64)  # type: ignore[misc]
    train_map(
        model,
        x,
        y,
        "gaussian",
        prior_precision=GAP["prior_precision"],  # type: ignore[arg-type]
        steps=GAP["steps"],  # type: ignore[arg-type]
        lr=GAP["lr"],  # type: ignore[arg-type]
        noise_std=GAP["noise_std"],  # type: ignore[arg-type]
    )
    return model, x, y


def classifier_map(name: str, seed: int = 0) -> tuple[nn.Module, object]:
    """The MAP classifier on the bundled data set ``name`` (``CLASSIFIERS``) and its split."""
    cfg = CLASSIFIERS[name]
    data = load(name, seed=seed)
    d = data.x_train.shape[1]
    model = mlp(
        (d, *cfg["hidden"], data.num_classes),  # type: ignore[misc]
        activation="tanh",
        seed=seed,
        dtype=torch.float64,
    )
    train_map(
        model,
        data.x_train,
        data.y_train,
        "categorical",
        prior_precision=cfg["prior_precision"],  # type: ignore[arg-type]
        steps=cfg["steps"],  # type: ignore[arg-type]
        lr=cfg["lr"],  # type: ignore[arg-type]
    )
    return model, data


def outputs(model: nn.Module, params: dict[str, Tensor], x: Tensor) -> Tensor:
    """``model`` evaluated with ``params`` (a functional call)."""
    return functional_call(model, params, (x,))


def polynomial_features(x: Tensor, degree: int = POLY_DEGREE) -> Tensor:
    """Features :math:`(x^1, \\dots, x^d)` of a ``(n, 1)`` input, shape ``(n, d)`` (the bias is the layer's)."""
    return torch.cat([x**k for k in range(1, degree + 1)], dim=1)


def linear_map(phi: Tensor, y: Tensor, prior_precision: float, noise_std: float) -> nn.Linear:
    r"""``nn.Linear`` at the exact MAP of Bayesian linear regression on features ``phi``.

    :math:`\theta_* = (\Phi^\top\Phi/\sigma^2 + \delta I)^{-1}\Phi^\top y/\sigma^2` with
    :math:`\Phi` the features plus a ones column (the bias).
    """
    design = torch.cat([phi, torch.ones(phi.shape[0], 1, dtype=phi.dtype)], dim=1)
    prec = design.T @ design / noise_std**2 + prior_precision * torch.eye(
        design.shape[1], dtype=phi.dtype
    )
    theta = torch.linalg.solve(prec, design.T @ y / noise_std**2).squeeze(1)
    model = nn.Linear(phi.shape[1], 1).to(phi.dtype)
    with torch.no_grad():
        model.weight.copy_(theta[:-1].reshape(1, -1))
        model.bias.copy_(theta[-1:])
    return model


#: the 2-D Bayesian logistic regression: data size, prior precision, seed
LOGISTIC: dict[str, float] = {"n": 20, "prior_precision": 1.0, "seed": 3}


def logistic_data(n: int = 20, seed: int = 3) -> tuple[Tensor, Tensor]:
    """Two overlapping classes in 2-D (no bias), labels 0/1, float64."""
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(n, generator=g, dtype=torch.float64) < 0.5).to(torch.float64)
    x = torch.randn(n, 2, generator=g, dtype=torch.float64) + torch.stack([y, y], 1) - 0.5
    return x, y


def logistic_map(x: Tensor, y: Tensor, prior_precision: float) -> nn.Linear:
    r"""``nn.Linear(2, 1, bias=False)`` at the MAP of Bayesian logistic regression (L-BFGS)."""
    model = nn.Linear(x.shape[1], 1, bias=False).to(torch.float64)
    with torch.no_grad():
        model.weight.zero_()
    opt = torch.optim.LBFGS(
        model.parameters(), max_iter=200, tolerance_grad=1e-14, line_search_fn="strong_wolfe"
    )

    def closure() -> Tensor:
        opt.zero_grad()
        f = model(x)[:, 0]
        loss = nn.functional.binary_cross_entropy_with_logits(f, y, reduction="sum")
        loss = loss + 0.5 * prior_precision * (model.weight**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return model


def logistic_exact_posterior(
    x: Tensor, y: Tensor, prior_precision: float, *, half_width: float = 6.0, points: int = 401
) -> tuple[Tensor, Tensor]:
    """Mean and covariance of the exact 2-D posterior by quadrature on a square grid."""
    t = torch.linspace(-half_width, half_width, points, dtype=torch.float64)
    w1, w2 = torch.meshgrid(t, t, indexing="ij")
    w = torch.stack([w1.reshape(-1), w2.reshape(-1)], 1)
    f = w @ x.T
    loglik = -nn.functional.binary_cross_entropy_with_logits(
        f, y.expand_as(f), reduction="none"
    ).sum(1)
    logp = loglik - 0.5 * prior_precision * (w**2).sum(1)
    p = torch.softmax(logp, 0)
    mean = p @ w
    d = w - mean
    return mean, (d * p.unsqueeze(1)).T @ d
