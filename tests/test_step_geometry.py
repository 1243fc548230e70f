"""``igbook.optim.step_angle`` and ``kl_spent``: angles and the KL a step spends under a Fisher."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from igbook.experiments.models import mlp
from igbook.fisher import curvature
from igbook.optim import kl_spent, quadratic_direction, step_angle

D = torch.float64


def _spd(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(n, n, dtype=D, generator=g)
    return m @ m.T / n + 0.1 * torch.eye(n, dtype=D)


def test_euclidean_angle_against_numpy_atan2() -> None:
    # an independent path: the angle as atan2 of the orthogonal and parallel components
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        a, b = torch.randn(7, dtype=D, generator=g), torch.randn(7, dtype=D, generator=g)
        an, bn = a.numpy(), b.numpy()
        par = an @ bn / np.linalg.norm(bn)
        perp = np.linalg.norm(an - (an @ bn) / (bn @ bn) * bn)
        want = math.degrees(math.atan2(perp, par))
        assert abs(float(step_angle(a, b)) - want) < 1e-9
    assert float(step_angle(a, 3 * a)) < 1e-5
    assert abs(float(step_angle(a, -a)) - 180.0) < 1e-5


def test_metric_angle_is_the_euclidean_angle_after_a_cholesky_change_of_variables() -> None:
    m = _spd(6, 1)
    c = torch.linalg.cholesky(m)  # d^T M r = (C^T d) . (C^T r)
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(6, dtype=D, generator=g), torch.randn(6, dtype=D, generator=g)
    assert abs(float(step_angle(a, b, m)) - float(step_angle(c.T @ a, c.T @ b))) < 1e-9


def test_kl_spent_is_the_second_order_kl_of_a_network() -> None:
    # KL(p_theta || p_{theta + t d}) / t^2 -> d^T F d / 2, computed from the categorical outputs
    x = torch.randn(40, 5, dtype=D, generator=torch.Generator().manual_seed(3))
    model = mlp((5, 4, 3), seed=1, dtype=D)
    fisher = curvature(model, None, x, None, "categorical", "exact")
    theta = torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone()
    d = torch.randn(theta.shape[0], dtype=D, generator=torch.Generator().manual_seed(4))
    logp0 = model(x).log_softmax(-1).detach()
    t = 1e-4
    torch.nn.utils.vector_to_parameters(theta + t * d, model.parameters())
    logp1 = model(x).log_softmax(-1).detach()
    kl = float((logp0.exp() * (logp0 - logp1)).sum(-1).mean())
    spent = float(kl_spent(d, fisher))
    assert abs(kl / t**2 - spent) < 1e-3 * spent
    assert abs(spent - float(kl_spent(d, fisher.to_dense()))) < 1e-10 * spent


def test_natural_gradient_spends_least_kl_and_others_spend_one_over_cos_squared() -> None:
    f = _spd(8, 5)
    grad = torch.randn(8, dtype=D, generator=torch.Generator().manual_seed(6))
    nat = quadratic_direction(grad, f).direction
    g = torch.Generator().manual_seed(7)
    for _ in range(5):
        d = torch.randn(8, dtype=D, generator=g)
        d = d * (float(grad @ nat) / float(grad @ d))  # the same first-order decrease as nat
        ratio = float(kl_spent(d, f) / kl_spent(nat, f))
        cos = math.cos(math.radians(float(step_angle(d, nat, f))))
        assert ratio >= 1.0 - 1e-12
        assert abs(ratio - 1 / cos**2) < 1e-8 * ratio


def test_bad_input_names_the_argument() -> None:
    v = torch.ones(3, dtype=D)
    with pytest.raises(ValueError, match="step"):
        step_angle(torch.zeros(3, dtype=D), v)
    with pytest.raises(ValueError, match="reference"):
        step_angle(v, torch.ones(4, dtype=D))
    with pytest.raises(ValueError, match="metric"):
        step_angle(v, v, torch.eye(4, dtype=D))
    with pytest.raises(ValueError, match="metric"):
        kl_spent(v, torch.tensor([[1.0, 2.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    with pytest.raises(ValueError, match="step"):
        kl_spent(torch.tensor([1.0, float("nan"), 0.0]), torch.eye(3))
