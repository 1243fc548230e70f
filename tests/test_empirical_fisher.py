"""Tests of igbook.fisher.empirical_fisher and of the data of Kunstner, Hennig & Balles (2019)
in igbook.experiments.kunstner."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from igbook.experiments.kunstner import linear_data, logistic_data, vector_field_data
from igbook.fisher import BernoulliLikelihood, GaussianLikelihood, fisher_matrix, hessian_matrix
from igbook.fisher.empirical_fisher import (
    GLMProblem,
    euler_flow,
    linear_regression_flows,
    preconditioned_field,
)

D = torch.float64


def test_data_reproduce_the_papers_generators() -> None:
    """Same draws as np.random.seed(0) followed by the global NumPy calls of their toydata.py.

    ``np.random.RandomState(0)`` produces exactly the stream of the seeded global generator.
    """
    rs = np.random.RandomState(0)
    n = 1000
    x_ref = np.hstack([np.ones((n, 1)), rs.lognormal(0, 0.75, (n, 1))])
    y_ref = x_ref @ np.array([[2], [2]]) + rs.randn(n, 1)
    x, y = vector_field_data()
    np.testing.assert_array_equal(x.numpy(), x_ref)
    np.testing.assert_array_equal(y.numpy(), y_ref[:, 0])
    rs = np.random.RandomState(0)
    cov1 = np.array([[1, -0.6], [-0.6, 1]]) * 1.5
    cov2 = np.array([[1, 0.6], [0.6, 1]]) * 1.5
    x1 = np.array([[1, 1]]) + np.matmul(rs.randn(500, 2), cov1)
    x2 = np.array([[-1, -1]]) + np.matmul(rs.randn(500, 2), cov2)
    xm, ym = logistic_data("misspecified-model")
    np.testing.assert_array_equal(xm.numpy(), np.vstack([x1, x2]))
    assert float(ym[:500].sum()) == 0 and float(ym[500:].sum()) == 500
    # the other two set-ups (their "well-specified" and "misspecified (A)"): class means +-(m, m)
    # and class covariances S S^T within sampling error (500 points per class, 5 standard errors)
    for kind, m, s0, s1 in (
        ("well-specified", 1.0, 2.0, 2.0),
        ("misspecified-noise", 1.5, 3.0, 1.0),
    ):
        xk, yk = logistic_data(kind)
        assert xk.shape == (1000, 2) and yk.shape == (1000,)
        assert float(yk[:500].sum()) == 0 and float(yk[500:].sum()) == 500
        for cls, sign, sd in ((0, 1.0, s0), (1, -1.0, s1)):
            xc = xk[yk == cls].numpy()
            np.testing.assert_allclose(xc.mean(0), [sign * m] * 2, atol=5 * sd / math.sqrt(500))
            np.testing.assert_allclose(
                np.cov(xc.T), sd**2 * np.eye(2), atol=5 * sd**2 * math.sqrt(2 / 500)
            )
    xl, _yl = linear_data("misspecified-model")
    assert xl.shape == (1000, 2) and bool((xl[:, 1] == 1).all())


@pytest.mark.parametrize("kind", ["linear", "logistic"])
def test_closed_forms_match_the_general_machinery(kind: str) -> None:
    if kind == "linear":
        x, y = vector_field_data(n=200)
        prob = GLMProblem(x, y, "linear", prior_var=0.1)
        lik, yy = GaussianLikelihood(1.0), y.unsqueeze(1)
    else:
        x, y = logistic_data("misspecified-noise", n=200)
        prob = GLMProblem(x, y, "logistic", prior_var=math.inf)
        lik, yy = BernoulliLikelihood(), y.unsqueeze(1)
    theta = torch.tensor([0.3, -0.7], dtype=D)
    model = nn.Linear(2, 1, bias=False).to(D)
    with torch.no_grad():
        model.weight.copy_(theta.reshape(1, 2))
    prior = 0.0 if kind == "logistic" else 1 / (0.1 * 200)
    eye = torch.eye(2, dtype=D)
    torch.testing.assert_close(
        prob.fisher(theta), fisher_matrix(model, None, x, yy, lik) + prior * eye
    )
    torch.testing.assert_close(
        prob.hessian(theta), hessian_matrix(model, None, x, yy, lik) + prior * eye
    )
    torch.testing.assert_close(
        prob.empirical_fisher(theta), fisher_matrix(model, None, x, yy, lik, "empirical")
    )
    g = torch.func.grad(prob.loss)(theta)
    torch.testing.assert_close(prob.gradient(theta), g)
    torch.testing.assert_close(prob.hessian(theta), torch.func.hessian(prob.loss)(theta))
    # batched over many thetas
    thetas = torch.randn(3, 4, 2, dtype=D)
    assert prob.empirical_fisher(thetas).shape == (3, 4, 2, 2)
    torch.testing.assert_close(prob.gradient(thetas)[1, 2], prob.gradient(thetas[1, 2]))
    star = prob.minimizer()
    assert float(prob.gradient(star).norm()) < 1e-12


def test_fast_flows_equal_plain_euler() -> None:
    x, y = vector_field_data()
    prob = GLMProblem(x, y, "linear", 0.1)
    starts = torch.tensor([[2, 4.5], [1, 0], [4.5, 3], [-0.5, 3]], dtype=D)
    fast = linear_regression_flows(prob, starts, num_steps=1001, record_every=50)
    for name, c in (("gd", 1 / 3), ("ngd", 1.0), ("ef", 3.0)):
        ref = euler_flow(
            preconditioned_field(prob, name, c), starts, num_steps=1001, record_every=50
        )
        torch.testing.assert_close(fast[name], ref, rtol=1e-10, atol=1e-11)
    with pytest.raises(ValueError, match="two-parameter linear"):
        linear_regression_flows(
            GLMProblem(*logistic_data("well-specified", n=10), "logistic", math.inf), starts
        )


def test_bad_inputs() -> None:
    x, y = vector_field_data(n=10)
    with pytest.raises(ValueError, match="kind must be one of"):
        logistic_data("correct")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kind must be one of"):
        linear_data("correct")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n must be an int >= 2"):
        vector_field_data(n=1)
    with pytest.raises(ValueError, match="kind must be 'linear' or 'logistic'"):
        GLMProblem(x, y, "poisson")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="labels in"):
        GLMProblem(x, y, "logistic")
    with pytest.raises(ValueError, match="shape"):
        GLMProblem(x, y[:5])
    with pytest.raises(ValueError, match="prior_var must be > 0"):
        GLMProblem(x, y, prior_var=0.0)
    with pytest.raises(ValueError, match="must be finite"):
        GLMProblem(x * float("nan"), y)
    prob = GLMProblem(x, y)
    with pytest.raises(ValueError, match="theta must have last axis"):
        prob.loss(torch.zeros(3, dtype=D))
    with pytest.raises(ValueError, match="preconditioner must be"):
        preconditioned_field(prob, "adam")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="step must be > 0"):
        euler_flow(preconditioned_field(prob, "gd"), torch.zeros(2, dtype=D), step=0.0)
    with pytest.raises(ValueError, match="diverged"):
        euler_flow(
            preconditioned_field(prob, "gd"), torch.zeros(2, dtype=D), step=1e3, num_steps=2000
        )
