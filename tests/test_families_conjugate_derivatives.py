"""Second (and third) derivatives through the inverse mean maps :math:`\\mu\\mapsto\\eta = \\nabla A^*(\\mu)`.

The Beta, Gamma and Normal-Gamma inverse mean maps are Newton solves. Their derivatives are
checked against paths that never touch the solve: the Hessian of the log-partition :math:`A`
at :math:`\\eta(\\mu)` (closed form by autograd), the implicit-function-theorem formula for the
second derivative, and the Gaussian curvature of the Fisher metric, a scalar invariant that must
be the same in mean coordinates (through the solve) and in the usual coordinates (no solve).
"""

from __future__ import annotations

import pytest
import torch
from torch.func import hessian, jacfwd, jacrev

from igbook.connections import gaussian_curvature, metric_function
from igbook.families import (
    Bernoulli,
    Beta,
    Categorical,
    Exponential,
    ExponentialFamily,
    Gamma,
    Gaussian,
    MultivariateGaussian,
    NormalGamma,
    Poisson,
)

D = torch.float64

#: one point of every family with a convex conjugate (every family here), including points far
#: from where the Newton solves start (small shapes, skewed Beta, large Gamma shape)
POINTS = [
    Bernoulli(torch.tensor(0.3, dtype=D)),
    Categorical(torch.tensor([0.2, 0.5, 0.3], dtype=D)),
    Gaussian(0.4, 1.7),
    MultivariateGaussian(
        torch.tensor([0.3, -0.2], dtype=D), torch.tensor([[1.5, 0.3], [0.3, 0.8]], dtype=D)
    ),
    Poisson(2.5),
    Exponential(1.3),
    Beta(2.5, 0.7),
    Beta(0.3, 0.4),
    Beta(40.0, 3.0),
    Gamma(3.2, 1.7),
    Gamma(0.25, 4.0),
    Gamma(60.0, 0.5),
    NormalGamma(0.3, 2.0, 3.0, 1.5),
    NormalGamma(-1.0, 0.4, 0.7, 3.0),
]
IDS = [f"{type(p).__name__}{tuple(round(float(v), 2) for v in p.params)}" for p in POINTS]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("p", POINTS, ids=IDS)
def test_hessian_of_the_conjugate_is_the_inverse_fisher(p: ExponentialFamily) -> None:
    """:math:`\\nabla^2 A^*(\\mu) = [\\nabla^2 A(\\eta(\\mu))]^{-1}` to 1e-8 relative, by forward and reverse mode."""
    cls = type(p)
    mu = p.mean
    inv_fisher = torch.linalg.inv(hessian(cls.log_partition)(p.natural))
    assert _rel(hessian(cls.convex_conjugate)(mu), inv_fisher) < 1e-8
    assert _rel(jacrev(jacrev(cls.convex_conjugate))(mu), inv_fisher) < 1e-8
    assert _rel(jacrev(cls.natural_from_mean)(mu), inv_fisher) < 1e-8


@pytest.mark.parametrize("p", POINTS, ids=IDS)
def test_second_derivative_of_the_inverse_mean_map(p: ExponentialFamily) -> None:
    """:math:`\\partial_a\\partial_b\\eta = -F^{-1}\\,(\\partial_c F)\\,(F^{-1})_{ca}(F^{-1})_{\\cdot b}`
    (implicit function theorem), with :math:`F = \\nabla^2 A` differentiated at :math:`\\eta`.

    A Newton solve differentiated through one detached step only gets this wrong (zero).
    """
    cls = type(p)
    eta = p.natural
    finv = torch.linalg.inv(hessian(cls.log_partition)(eta))
    d_finv = jacfwd(lambda e: torch.linalg.inv(hessian(cls.log_partition)(e)))(eta)  # [i, j, c]
    want = d_finv @ finv  # d/dmu_b (F^{-1})_{ia} = sum_c d(F^{-1})_{ia}/d eta_c * (F^{-1})_{cb}
    for got in (
        jacfwd(jacrev(cls.natural_from_mean))(p.mean),
        jacrev(jacrev(cls.natural_from_mean))(p.mean),
        jacfwd(hessian(cls.convex_conjugate))(p.mean),
    ):
        assert _rel(got, want) < 1e-8


@pytest.mark.parametrize(
    "p", [q for q in POINTS if isinstance(q, (Beta, Gamma))], ids=lambda q: repr(q.params.tolist())
)
def test_curvature_is_the_same_in_mean_and_usual_coordinates(p: ExponentialFamily) -> None:
    """Gaussian curvature (Brioschi, second derivatives of the metric, so third derivatives of
    :math:`\\eta(\\mu)`) is a scalar: the mean chart (through the Newton solve) must agree with
    the usual chart (closed-form :math:`\\eta(\\theta)`)."""
    k_params = gaussian_curvature(metric_function(type(p), "params"), p.params)
    k_mean = gaussian_curvature(metric_function(type(p), "mean"), p.mean)
    assert float(k_params) < 0  # both families are negatively curved in the Fisher metric
    assert abs(float(k_mean - k_params)) <= 1e-7 * abs(float(k_params))
