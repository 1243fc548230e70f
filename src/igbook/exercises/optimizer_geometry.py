r"""Self-checks for the exercises of the chapter "Which geometry does your optimizer use?"."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from igbook.exercises._core import Feedback, compare, need_function, run_reader
from igbook.optim import linf_direction
from igbook.optim.muon import QUINTIC_COEFFICIENTS

__all__ = [
    "check_kronecker_bound",
    "check_newton_schulz_fixed_points",
    "check_sign_descent",
]

D = torch.float64


def check_sign_descent(direction: Callable[[Tensor], Tensor]) -> Feedback:
    r"""Check ``direction(g)``: the maximizer of :math:`\langle g, d\rangle` over :math:`\|d\|_\infty\le1`.

    Expected: :math:`d^\star = \operatorname{sign}(g)` (here every :math:`g_i\ne0`), with value
    :math:`\|g\|_1`, the dual norm (:func:`igbook.optim.linf_direction`).
    """
    if (bad := need_function(direction, "(g) -> d, a tensor shaped like g")) is not None:
        return bad
    gen = torch.Generator().manual_seed(11)
    for shape in ((4,), (3, 5), (7,)):
        g = torch.randn(*shape, dtype=D, generator=gen)
        g = torch.where(g.abs() < 0.05, torch.full_like(g, 0.3), g)
        want = linf_direction(g).direction
        where = f"for a gradient of shape {shape}"
        got = run_reader(direction, g.clone(), name="direction", where=where)
        if isinstance(got, Feedback):
            return got
        fb = compare(
            got,
            want,
            what="the direction",
            where=where,
            rtol=1e-9,
            atol=1e-12,
            mistakes=[
                (
                    g / g.norm(),
                    (
                        "That is the Euclidean steepest direction g/||g||_2; the l-infinity ball is a box, "
                        "and a linear function is maximized at a corner of it."
                    ),
                ),
                (
                    g / g.abs().max(),
                    (
                        "g/max|g_i| lies in the box but only one coordinate reaches its bound: push every "
                        "coordinate to +-1."
                    ),
                ),
                (-want, "That direction decreases <g, d>: the exercise asks for the maximizer."),
            ],
            hint="Maximize each term g_i d_i separately over -1 <= d_i <= 1.",
        )
        if not fb:
            return fb
    return Feedback(True, "d* = sign(g), and the maximum is ||g||_1: the dual of l-infinity is l1.")


def _quintic_fixed_points() -> tuple[list[float], list[float]]:
    a, b, c = QUINTIC_COEFFICIENTS
    disc = math.sqrt(b * b - 4 * c * (a - 1))
    s = sorted(((-b - disc) / (2 * c), (-b + disc) / (2 * c)))
    pts = [math.sqrt(v) for v in s]
    slopes = [a + 3 * b * p**2 + 5 * c * p**4 for p in pts]
    return pts, slopes


def check_newton_schulz_fixed_points(points: object, slopes: object) -> Feedback:
    r"""Check the positive fixed points of Muon's quintic :math:`\varphi(\sigma)=a\sigma+b\sigma^3+c\sigma^5`
    and the slopes :math:`\varphi'` there, with :math:`(a, b, c) = (3.4445, -4.7750, 2.0315)`.

    ``points`` and ``slopes``: two numbers each, the points in increasing order. Expected: the
    roots of :math:`c s^2 + b s + (a - 1) = 0` in :math:`s=\sigma^2`, and
    :math:`\varphi'(\sigma) = a + 3b\sigma^2 + 5c\sigma^4` at them.
    """
    pts, sl = _quintic_fixed_points()
    _a, b, c = QUINTIC_COEFFICIENTS
    fb = compare(
        points,
        torch.tensor(pts, dtype=D),
        what="the fixed points",
        rtol=1e-4,
        atol=1e-6,
        mistakes=[
            (
                [p**2 for p in pts],
                "Those are the roots in s = sigma^2: take their square roots.",
            ),
            (
                [1.0, 1.0],
                (
                    "sigma = 1 is the fixed point of the cubic (3 sigma - sigma^3)/2, not of Muon's quintic: "
                    "phi(1) = a + b + c is not 1."
                ),
            ),
            ([pts[1], pts[0]], "List the points in increasing order."),
        ],
        hint="Divide phi(sigma) = sigma by sigma and solve the quadratic in s = sigma^2.",
    )
    if not fb:
        return fb
    fs = compare(
        slopes,
        torch.tensor(sl, dtype=D),
        what="the slopes",
        rtol=1e-3,
        atol=1e-5,
        mistakes=[
            (
                [b + 2 * c * p**2 for p in pts],
                "That is the derivative in s; differentiate phi in sigma: a + 3 b sigma^2 + 5 c sigma^4.",
            ),
        ],
        hint="phi'(sigma) = a + 3 b sigma^2 + 5 c sigma^4 at each fixed point.",
    )
    if not fs:
        return fs
    return Feedback(
        True,
        "Both fixed points repel (|phi'| > 1): the iteration does not converge to 1 but keeps the "
        "singular values oscillating in a band around it, which is all Muon needs.",
    )


def check_kronecker_bound(c_full_rank: object, c_rank_one: object) -> Feedback:
    r"""Check the smallest :math:`c` with :math:`H \preceq c\,L^{1/2}\otimes R^{1/2}` for one 2x2 gradient.

    For one gradient :math:`G` (:math:`H = \operatorname{vec}G\operatorname{vec}G^\top`,
    :math:`L = GG^\top`, :math:`R = G^\top G`) the smallest :math:`c` is
    :math:`\operatorname{vec}G^\top(L^{1/2}\otimes R^{1/2})^{+}\operatorname{vec}G =
    \operatorname{rank}G`: 2 for :math:`G = \operatorname{diag}(3, 1)` and 1 for the rank-one
    :math:`G = \begin{pmatrix}1&2\\2&4\end{pmatrix}`. Shampoo's Lemma 8 bound :math:`1/r` is tight.
    """
    fb = compare(
        c_full_rank,
        torch.tensor(2.0, dtype=D),
        what="c for G = diag(3, 1)",
        rtol=1e-6,
        atol=1e-9,
        mistakes=[
            (
                1.0,
                "c = 1 would make H <= L^{1/2} kron R^{1/2}; for a rank-2 gradient the bound is 1/r.",
            ),
            (4.0, "Use the square roots L^{1/2} and R^{1/2}, not L and R."),
            (
                10.0 / 3.0,
                "The bound does not depend on the singular values 3 and 1, only on their number.",
            ),
        ],
        hint="Write G = U S V^T: then L^{1/2} = U S U^T, R^{1/2} = V S V^T, and compute "
        "vec(G)^T (L^{1/2} kron R^{1/2})^{-1} vec(G).",
    )
    if not fb:
        return fb
    fr = compare(
        c_rank_one,
        torch.tensor(1.0, dtype=D),
        what="c for the rank-one G",
        rtol=1e-6,
        atol=1e-9,
        mistakes=[
            (
                2.0,
                "This G has rank one (the second row is twice the first): use the pseudo-inverse.",
            ),
            (
                25.0,
                "Use the square roots L^{1/2} and R^{1/2}: for rank one they are sigma u u^T and sigma v v^T.",
            ),
        ],
        hint="A rank-one G = sigma u v^T has L^{1/2} = sigma u u^T and R^{1/2} = sigma v v^T.",
    )
    if not fr:
        return fr
    return Feedback(
        True, "c = rank(G): for one gradient Shampoo's Kronecker bound holds with equality."
    )
