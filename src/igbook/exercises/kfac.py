r"""Self-checks for the exercises of the K-FAC chapter."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from igbook.exercises._core import Feedback, compare
from igbook.kfac.dense import curvature_costs

__all__ = [
    "check_block_memory",
    "check_kronecker_solve",
    "check_deep_linear_G",
    "check_sum_reduction",
]


def check_block_memory(dense_bytes: float, kfac_bytes: float, *, n_in: int, n_out: int, bytes_per_entry: int = 4) -> Feedback:
    r"""Memory of the exact Fisher block of an ``n_in -> n_out`` layer (bias included) and of its two K-FAC factors.

    Expected: :math:`((n_\text{in}+1)n_\text{out})^2` and :math:`(n_\text{in}+1)^2 + n_\text{out}^2`
    entries times ``bytes_per_entry``.
    """
    c = curvature_costs(n_in, n_out, bytes_per_entry=bytes_per_entry)
    fb = compare(dense_bytes, torch.tensor(float(c.dense_bytes), dtype=torch.float64), what="the dense block's memory", rtol=1e-6)
    if not fb:
        no_bias = (n_in * n_out) ** 2 * bytes_per_entry
        if abs(float(dense_bytes) - no_bias) <= 1e-6 * no_bias:
            return Feedback(False, "The dense block's memory leaves out the bias: the layer has (n_in + 1) * n_out parameters.")
        return fb
    fk = compare(kfac_bytes, torch.tensor(float(c.kfac_bytes), dtype=torch.float64), what="the K-FAC factors' memory", rtol=1e-6)
    if not fk:
        return fk
    return Feedback(True, f"Dense block {c.dense_bytes:.3g} B against K-FAC {c.kfac_bytes:.3g} B: "
                          f"a factor {c.dense_bytes / c.kfac_bytes:.3g}.")


def _spd(n: int, g: torch.Generator) -> Tensor:
    m = torch.randn(n, n, dtype=torch.float64, generator=g)
    return m @ m.T / n + 0.5 * torch.eye(n, dtype=torch.float64)


def check_kronecker_solve(solve: Callable[[Tensor, Tensor, Tensor], Tensor]) -> Feedback:
    r"""Check ``solve(A, G, V)``: the matrix :math:`U` with :math:`\operatorname{vec}U = (A\otimes G)^{-1}\operatorname{vec}V`.

    ``A`` is :math:`d_\text{in}\times d_\text{in}`, ``G`` is :math:`d_\text{out}\times d_\text{out}`,
    ``V`` is :math:`d_\text{out}\times d_\text{in}` and :math:`\operatorname{vec}` stacks columns.
    Tested on several random symmetric positive-definite factors against a dense solve.
    """
    g = torch.Generator().manual_seed(2015)
    for din, dout in ((3, 2), (4, 5), (1, 3)):
        A, G = _spd(din, g), _spd(dout, g)
        V = torch.randn(dout, din, dtype=torch.float64, generator=g)
        want = torch.linalg.solve(torch.kron(A, G), V.T.reshape(-1)).reshape(din, dout).T
        try:
            got = torch.as_tensor(solve(A.clone(), G.clone(), V.clone()), dtype=torch.float64)
        except Exception as exc:  # noqa: BLE001 - report the reader's error
            return Feedback(False, f"solve raised {type(exc).__name__}: {exc} (d_in={din}, d_out={dout}).")
        if got.shape != want.shape:
            return Feedback(False, f"solve must return a ({dout}, {din}) matrix shaped like V, got {tuple(got.shape)}.")
        if not torch.allclose(got, want, rtol=1e-8, atol=1e-10):
            swapped = torch.linalg.solve(A, V.T).T if din == dout else None
            hint = ""
            if torch.allclose(got, torch.linalg.solve(G, V) @ A, rtol=1e-8, atol=1e-10):
                hint = " You multiplied by A instead of A^{-1} on the right."
            elif swapped is not None and torch.allclose(got, swapped, rtol=1e-8, atol=1e-10):
                hint = " Check which factor acts from which side: (A kron G) vec(V) = vec(G V A)."
            err = float((got - want).abs().max())
            return Feedback(False, f"solve is off by {err:.3g} for d_in={din}, d_out={dout}.{hint}")
    return Feedback(True, "(A kron G)^{-1} vec(V) = vec(G^{-1} V A^{-1}): two small solves instead of one big one.")


def check_deep_linear_G(g_first: Callable[[list[Tensor]], Tensor]) -> Feedback:
    r"""Check ``g_first(later_weights)``: the factor :math:`G_1` of the first layer of a deep linear network with square loss.

    For :math:`f(x) = W_L\cdots W_2 W_1 x` and :math:`\ell = \tfrac12\lVert y - f\rVert^2`, the
    output gradient of layer 1 is :math:`g = (W_L\cdots W_2)^\top (f - y)` and the type-2 factor
    (mean reduction) is :math:`G_1 = (W_L\cdots W_2)^\top (W_L\cdots W_2)`, the same for every
    input: which is why K-FAC is exact there. ``later_weights`` is ``[W_2, ..., W_L]``.
    """
    g = torch.Generator().manual_seed(7)
    for shapes in (((3, 4),), ((5, 4), (2, 5)), ((4, 3), (4, 4), (2, 4))):
        ws = [torch.randn(*s, dtype=torch.float64, generator=g) for s in shapes]
        b = ws[0]
        for w in ws[1:]:
            b = w @ b
        want = b.T @ b
        try:
            got = torch.as_tensor(g_first([w.clone() for w in ws]), dtype=torch.float64)
        except Exception as exc:  # noqa: BLE001
            return Feedback(False, f"g_first raised {type(exc).__name__}: {exc}.")
        if got.shape != want.shape:
            return Feedback(False, f"G_1 must be {tuple(want.shape)} (outputs of layer 1 squared), got {tuple(got.shape)}.")
        if not torch.allclose(got, want, rtol=1e-9, atol=1e-12):
            if torch.allclose(got, b @ b.T, rtol=1e-9, atol=1e-12) if b.shape[0] == b.shape[1] else False:
                return Feedback(False, "You computed B B^T; the backward pass multiplies by the transpose first: B^T B.")
            return Feedback(False, f"G_1 is off by {float((got - want).abs().max()):.3g} for later weights of shapes {shapes}.")
    return Feedback(True, "G_1 = (W_L ... W_2)^T (W_L ... W_2) does not depend on the input, so E[a a^T kron G] = A kron G exactly.")


def check_sum_reduction(damping: float, lr_factor: float, *, n: int, mean_damping: float) -> Feedback:
    r"""Summed instead of averaged loss over ``n`` points: which damping and learning-rate factor reproduce the mean-reduction K-FAC step?

    With exact damping, :math:`(NF + \lambda' I)^{-1} N g = (F + \lambda I)^{-1} g` iff
    :math:`\lambda' = N\lambda`, and then the same learning rate works (factor 1).
    """
    fb = compare(damping, torch.tensor(float(n * mean_damping), dtype=torch.float64), what="the damping for the summed loss", rtol=1e-9)
    if not fb:
        if abs(float(damping) - mean_damping / n) <= 1e-9 * abs(mean_damping / n):
            return Feedback(False, "The curvature of a sum is N times larger, so the damping must grow, not shrink.")
        return fb
    fl = compare(lr_factor, torch.tensor(1.0, dtype=torch.float64), what="the learning-rate factor", rtol=1e-9)
    if not fl:
        return Feedback(False, "The gradient and the damped curvature are both N times larger: the step is unchanged, so the factor is 1.")
    return Feedback(True, "Scale the damping with the reduction; the natural-gradient step itself is invariant.")
