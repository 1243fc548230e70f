"""The curvature core's consumers on tests/reference.py's shared cases.

continual's diagonal Fisher (EWC's importance) and the BLR optimizers' per-example curvature
(PerExampleClosure, what VOGN uses) against the torch.func references, for every model and
likelihood of the shared cases: they must be the same numbers as the core's, not a copy's.
"""

from __future__ import annotations

import pytest
import torch

import reference
from igbook.continual import diagonal_fisher
from igbook.optim import PerExampleClosure

CASES = reference.cases()


@pytest.mark.parametrize("c", CASES, ids=lambda c: c.name)
def test_continual_diagonal_fisher_equals_the_reference(c: reference.Case) -> None:
    """EWC's importance = diag of the reference exact / empirical Fisher (1e-10 relative), any likelihood."""
    for kind in ("exact", "empirical"):
        got = diagonal_fisher(c.model, c.x, c.y, fisher_type=kind, likelihood=c.likelihood())
        flat = torch.cat([got[n].reshape(-1) for n in c.params])
        assert reference.rel_err(flat, reference.dense_curvature(c, kind).diagonal()) < 1e-10


@pytest.mark.parametrize("c", CASES, ids=lambda c: c.name)
def test_blr_closure_curvature_equals_the_reference(c: reference.Case) -> None:
    """VOGN's per-example gradients and curvature diagonals = the reference's (1e-10 relative)."""
    closure = PerExampleClosure(c.model, c.x, c.y, likelihood=c.likelihood())
    params = list(c.model.parameters())
    losses, grads = closure.per_example_gradients(params)
    g = torch.cat([t.reshape(t.shape[0], -1) for t in grads], dim=1)
    assert reference.rel_err(g, reference.per_example_gradients(c)) < 1e-10
    assert (
        reference.rel_err(
            losses.mean().reshape(1), torch.tensor([reference.loss(c)], dtype=losses.dtype)
        )
        < 1e-10
    )
    for kind in ("exact", "ggn", "empirical"):
        diag = torch.cat([t.reshape(-1) for t in closure.curvature_diagonal(params, kind)])
        assert reference.rel_err(diag, reference.dense_curvature(c, kind).diagonal()) < 1e-10
