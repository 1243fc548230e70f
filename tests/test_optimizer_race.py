"""The optimizer-geometry set-ups (``igbook.experiments.optimizer_race``)."""

from __future__ import annotations

import math

import torch

from igbook.experiments.optimizer_race import (
    FIXED,
    LIVE_LRS,
    LR_GRIDS,
    OPTIMIZERS,
    first_step,
    geometry_problem,
    race,
    race_problem,
)
from igbook.kfac import negative_log_likelihood


def test_equal_tuning_budget_and_live_rates_on_the_grids() -> None:
    assert set(LR_GRIDS) == set(OPTIMIZERS) == set(FIXED) == set(LIVE_LRS)
    assert len({len(g) for g in LR_GRIDS.values()}) == 1
    for name, grid in LR_GRIDS.items():
        assert list(grid) == sorted(grid) and LIVE_LRS[name] in grid


def _gradient(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    loss = negative_log_likelihood(model(x), y, likelihood="categorical")
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(model.parameters()))])


def test_first_steps_leave_the_model_and_match_sgd_and_adam_by_hand() -> None:
    model, x, y = geometry_problem()
    theta = torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone()
    g = _gradient(model, x, y)
    # SGD with momentum, first step: -lr g; Adam's first step: -lr g / (|g| + eps) (bias-corrected)
    torch.testing.assert_close(
        first_step("sgd", model, x, y, lr=0.1), -0.1 * g, rtol=1e-12, atol=1e-15
    )
    torch.testing.assert_close(
        first_step("adam", model, x, y, lr=1e-3),
        -1e-3 * g / (g.abs() + 1e-8),
        rtol=1e-9,
        atol=1e-15,
    )
    for name in OPTIMIZERS:
        d = first_step(name, model, x, y)
        assert d.shape == theta.shape and bool(torch.isfinite(d).all()) and float(d.norm()) > 0
        assert float(d @ g) < 0, name  # every first step descends
    assert torch.equal(torch.nn.utils.parameters_to_vector(model.parameters()), theta)


def test_race_is_seeded_and_every_optimizer_descends_on_both_problems() -> None:
    for pname in ("classifier", "autoencoder"):
        problem = race_problem(pname)
        for name in OPTIMIZERS:
            # the live rates are the classifier's; the autoencoder takes the grids' second point
            lr = LIVE_LRS[name] if pname == "classifier" else LR_GRIDS[name][1]
            a = race(name, problem, lr=lr, steps=20, eval_every=10)
            assert not a.diverged and all(math.isfinite(v) for v in a.losses)
            assert a.losses[-1] < a.losses[0], (pname, name, a.losses)
            if name in ("sgd", "soap", "ivon"):
                b = race(name, problem, lr=lr, steps=20, eval_every=10)
                assert a.losses == b.losses


def test_input_chart_is_the_same_function_and_pull_back_maps_steps_back() -> None:
    from igbook.experiments.optimizer_race import input_chart, output_change, pull_back

    model, x, y = geometry_problem()
    g = torch.Generator().manual_seed(0)
    rot = torch.linalg.qr(torch.randn(64, 64, dtype=torch.float64, generator=g))[0]
    scale = torch.diag(torch.exp(torch.randn(64, dtype=torch.float64, generator=g)))
    for M in (rot, scale):
        m1, x1 = input_chart(model, x, M)
        torch.testing.assert_close(m1(x1), model(x), rtol=1e-10, atol=1e-10)
        # W = V M: the pulled-back weights of the chart are the original ones
        w1 = torch.nn.utils.parameters_to_vector(m1.parameters()).detach()
        w0 = torch.nn.utils.parameters_to_vector(model.parameters()).detach()
        torch.testing.assert_close(pull_back(w1, model, M), w0, rtol=1e-10, atol=1e-12)
    # SGD is invariant under rotations of the inputs (g_V = g_W M^T, Delta W = Delta V M = -lr g_W),
    # not under rescalings; the output change of a step is the same quantity seen from both charts
    d0 = first_step("sgd", model, x, y, lr=0.1)
    for M, invariant in ((rot, True), (scale, False)):
        m1, x1 = input_chart(model, x, M)
        d1 = first_step("sgd", m1, x1, y, lr=0.1)
        close = torch.allclose(pull_back(d1, model, M), d0, rtol=1e-9, atol=1e-12)
        assert close == invariant
        same_out = torch.allclose(
            output_change(m1, x1, d1), output_change(model, x, d0), rtol=1e-8, atol=1e-10
        )
        assert same_out == invariant
