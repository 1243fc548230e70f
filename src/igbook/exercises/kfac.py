r"""Self-checks for the exercises of the K-FAC chapter."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from igbook.exercises._core import Feedback, as_answer, compare, need_function, run_reader
from igbook.kfac.dense import curvature_costs

__all__ = [
    "check_block_memory",
    "check_deep_linear_G",
    "check_kronecker_solve",
    "check_sum_reduction",
]

D = torch.float64


def check_block_memory(
    dense_bytes: float, kfac_bytes: float, *, n_in: int, n_out: int, bytes_per_entry: int = 4
) -> Feedback:
    r"""Memory of the exact Fisher block of an ``n_in -> n_out`` layer (bias included) and of its two K-FAC factors.

    Expected: :math:`((n_\text{in}+1)n_\text{out})^2` and :math:`(n_\text{in}+1)^2 + n_\text{out}^2`
    entries times ``bytes_per_entry``.
    """
    c = curvature_costs(n_in, n_out, bytes_per_entry=bytes_per_entry)
    d = (n_in + 1) * n_out
    fb = compare(
        dense_bytes,
        torch.tensor(float(c.dense_bytes), dtype=D),
        what="the dense block's memory",
        rtol=1e-6,
        mistakes=[
            (
                (n_in * n_out) ** 2 * bytes_per_entry,
                "The dense block's memory leaves out the bias: the layer has (n_in + 1) * n_out parameters.",
            ),
            (
                d * bytes_per_entry,
                "The block is a d x d matrix for the layer's d parameters: d^2 entries, not d.",
            ),
            (d**2, "That is the number of entries: multiply by the bytes per entry."),
            (
                d * (d + 1) // 2 * bytes_per_entry,
                "Symmetric storage would halve it, but the exercise counts the full d x d matrix.",
            ),
        ],
        hint="Count the layer's parameters d (weights and biases); the block has d^2 entries.",
    )
    if not fb:
        return fb
    fk = compare(
        kfac_bytes,
        torch.tensor(float(c.kfac_bytes), dtype=D),
        what="the K-FAC factors' memory",
        rtol=1e-6,
        mistakes=[
            (
                (n_in**2 + n_out**2) * bytes_per_entry,
                "The input factor A also covers the bias: it is (n_in + 1) x (n_in + 1).",
            ),
            (
                (n_in + 1) ** 2 + n_out**2,
                "That is the number of entries: multiply by the bytes per entry.",
            ),
            (
                ((n_in + 1) * n_out) * bytes_per_entry,
                "The factors are two square matrices, A (inputs) and G (output gradients).",
            ),
        ],
        hint="K-FAC stores A = E[a a^T] over the inputs (with the bias's 1) and G = E[g g^T] over the outputs.",
    )
    if not fk:
        return fk
    return Feedback(
        True,
        f"Dense block {c.dense_bytes:.3g} B against K-FAC {c.kfac_bytes:.3g} B: "
        f"a factor {c.dense_bytes / c.kfac_bytes:.3g}.",
    )


def _spd(n: int, g: torch.Generator) -> Tensor:
    m = torch.randn(n, n, dtype=D, generator=g)
    return m @ m.T / n + 0.5 * torch.eye(n, dtype=D)


def check_kronecker_solve(solve: Callable[[Tensor, Tensor, Tensor], Tensor]) -> Feedback:
    r"""Check ``solve(A, G, V)``: the matrix :math:`U` with
    :math:`\operatorname{vec}U = (A\otimes G)^{-1}\operatorname{vec}V`.

    ``A`` is :math:`d_\text{in}\times d_\text{in}`, ``G`` is :math:`d_\text{out}\times d_\text{out}`,
    ``V`` is :math:`d_\text{out}\times d_\text{in}` and :math:`\operatorname{vec}` stacks columns.
    Tested on several random symmetric positive-definite factors against a dense solve.
    """
    if (bad := need_function(solve, "(A, G, V) -> U, a matrix shaped like V")) is not None:
        return bad
    g = torch.Generator().manual_seed(2015)
    for din, dout in ((3, 2), (4, 5), (1, 3)):
        A, G = _spd(din, g), _spd(dout, g)
        V = torch.randn(dout, din, dtype=D, generator=g)
        want = torch.linalg.solve(torch.kron(A, G), V.T.reshape(-1)).reshape(din, dout).T
        where = f"for d_in={din}, d_out={dout}"
        got = run_reader(solve, A.clone(), G.clone(), V.clone(), name="solve", where=where)
        if isinstance(got, Feedback):
            return got
        fb = compare(
            got,
            want,
            what="solve's U",
            where=where,
            rtol=1e-8,
            atol=1e-10,
            mistakes=[
                (
                    torch.linalg.solve(G, V) @ A,
                    "You multiplied by A instead of A^{-1} on the right.",
                ),
                (
                    G @ V @ A,
                    "That is (A kron G) vec(V), the product: the exercise asks for the solve, with the inverses.",
                ),
                (
                    torch.linalg.solve(A, V) @ torch.linalg.inv(G)
                    if din == dout
                    else V * float("nan"),
                    "Check which factor acts from which side: (A kron G) vec(V) = vec(G V A).",
                ),
                (torch.linalg.solve(G, V), "You left out the input factor: U = G^{-1} V A^{-1}."),
                (
                    V @ torch.linalg.inv(A),
                    "You left out the output-gradient factor: U = G^{-1} V A^{-1}.",
                ),
            ],
            hint="Use (A kron G) vec(V) = vec(G V A^T) with symmetric A, so the inverse is two small solves.",
        )
        if not fb:
            return fb
    return Feedback(
        True,
        "(A kron G)^{-1} vec(V) = vec(G^{-1} V A^{-1}): two small solves instead of one big one.",
    )


def check_deep_linear_G(g_first: Callable[[list[Tensor]], Tensor]) -> Feedback:
    r"""Check ``g_first(later_weights)``: the factor :math:`G_1` of the first layer of a deep linear
    network with square loss.

    For :math:`f(x) = W_L\cdots W_2 W_1 x` and :math:`\ell = \tfrac12\lVert y - f\rVert^2`, the
    output gradient of layer 1 is :math:`g = (W_L\cdots W_2)^\top (f - y)` and the type-2 factor
    (mean reduction) is :math:`G_1 = (W_L\cdots W_2)^\top (W_L\cdots W_2)`, the same for every
    input: which is why K-FAC is exact there. ``later_weights`` is ``[W_2, ..., W_L]``.
    """
    if (bad := need_function(g_first, "(later_weights) -> G_1")) is not None:
        return bad
    g = torch.Generator().manual_seed(7)
    for shapes in (((3, 4),), ((5, 4), (2, 5)), ((4, 3), (4, 4), (2, 4))):
        ws = [torch.randn(*s, dtype=D, generator=g) for s in shapes]
        b = ws[0]
        for w in ws[1:]:
            b = w @ b
        want = b.T @ b
        where = f"for later weights of shapes {shapes}"
        got = run_reader(g_first, [w.clone() for w in ws], name="g_first", where=where)
        if isinstance(got, Feedback):
            return got
        a = as_answer(got, "G_1")
        if isinstance(a, Tensor):
            for value, msg in (
                (
                    b @ b.T,
                    "You computed B B^T; the backward pass multiplies by the transpose first: B^T B.",
                ),
                (
                    ws[-1].T @ ws[-1],
                    "Use the product of all the later layers, B = W_L ... W_2, not only the last one.",
                ),
            ):
                if (
                    a.shape == value.shape
                    and (value.shape != want.shape or not torch.allclose(value, want))
                    and torch.allclose(a, value, rtol=1e-9, atol=1e-12)
                ):
                    return Feedback(False, f"G_1 {where} is not right. {msg}")
        fb = compare(
            got,
            want,
            what="G_1",
            where=where,
            rtol=1e-9,
            atol=1e-12,
            mistakes=[
                (2 * want, "The loss has a 1/2: its Hessian in f is the identity, so G_1 = B^T B."),
            ],
            hint="Back-propagate the output gradient f - y through W_L, ..., W_2: g = B^T (f - y); then G_1 = E[g g^T] "
            "for Gaussian targets (or the GGN) is B^T B.",
        )
        if not fb:
            return fb
    return Feedback(
        True,
        "G_1 = (W_L ... W_2)^T (W_L ... W_2) does not depend on the input, so E[a a^T kron G] = A kron G exactly.",
    )


def check_sum_reduction(
    damping: float, lr_factor: float, *, n: int, mean_damping: float
) -> Feedback:
    r"""Summed instead of averaged loss over ``n`` points: which damping and learning-rate factor
    reproduce the mean-reduction K-FAC step?

    With exact damping, :math:`(NF + \lambda' I)^{-1} N g = (F + \lambda I)^{-1} g` iff
    :math:`\lambda' = N\lambda`, and then the same learning rate works (factor 1).
    """
    fb = compare(
        damping,
        torch.tensor(float(n * mean_damping), dtype=D),
        what="the damping for the summed loss",
        rtol=1e-9,
        mistakes=[
            (
                mean_damping / n,
                "The curvature of a sum is N times larger, so the damping must grow, not shrink.",
            ),
            (
                mean_damping,
                "The curvature of a sum is N times larger: the damping must scale with it to act the same.",
            ),
        ],
        hint="Write the summed loss's curvature and gradient in terms of the mean loss's F and g.",
    )
    if not fb:
        return fb
    fl = compare(
        lr_factor,
        torch.tensor(1.0, dtype=D),
        what="the learning-rate factor",
        rtol=1e-9,
        mistakes=[
            (
                float(n),
                "The gradient is N times larger, but so is the damped curvature it is divided by.",
            ),
            (
                1.0 / n,
                "The damped curvature is N times larger, but so is the gradient it multiplies.",
            ),
        ],
        hint="Compare (N F + N damping I)^{-1} (N g) with (F + damping I)^{-1} g.",
    )
    if not fl:
        return fl
    return Feedback(
        True, "Scale the damping with the reduction; the natural-gradient step itself is invariant."
    )
