r"""Steepest-descent directions under a norm: which geometry an optimizer uses.

For a gradient :math:`g` and a norm :math:`\|\cdot\|` the steepest-ascent direction is

.. math::

    d^\star = \operatorname*{arg\,max}_{\|d\|\le 1}\ \langle g, d\rangle, \qquad
    \langle g, d^\star\rangle = \|g\|_\ast ,

the maximizer on the unit ball, and the value is the *dual norm* of :math:`g`; a descent step
is :math:`\theta \leftarrow \theta - \eta\,\|g\|_\ast\, d^\star` (or :math:`-\eta d^\star` when the
step length is set separately) :cite:`bernstein2024old`. Each norm gives a known optimizer:

* Euclidean :math:`\|d\|_2`: :math:`d^\star = g/\|g\|_2`, dual :math:`\|g\|_2`: normalized SGD;
* :math:`\ell_\infty` :math:`\max_i|d_i|`: :math:`d^\star = \operatorname{sign} g`, dual
  :math:`\|g\|_1`: sign descent (Adam without moving averages);
* spectral :math:`\sigma_{\max}(D)`: :math:`D^\star = UV^\top`, dual the nuclear norm
  :math:`\sum_i\sigma_i(G)`: Muon (Shampoo without moving averages);
* quadratic :math:`\sqrt{d^\top Md}`: :math:`d^\star = M^{-1}g/\sqrt{g^\top M^{-1}g}`, dual
  :math:`\sqrt{g^\top M^{-1}g}`: the natural gradient when :math:`M` is a Fisher;
* Kronecker :math:`M = A\otimes G`: :math:`D^\star \propto G^{-1}\nabla A^{-1}`: K-FAC;

with :math:`G = U\Sigma V^\top` the thin SVD of a matrix gradient. Every function returns a
:class:`SteepestDirection` ``(direction, dual_norm)``; a zero gradient has dual norm 0 and every
feasible :math:`d` is a maximizer: the functions return the zero direction then.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from igbook._validation import (
    as_tensor,
    check_choice,
    check_finite,
    check_nonnegative_real,
    check_symmetric,
    check_symmetric_positive_definite,
)
from igbook.fisher.operators import Curvature, KroneckerCurvature

__all__ = [
    "NORMS",
    "SteepestDirection",
    "euclidean_direction",
    "kl_spent",
    "kronecker_direction",
    "linf_direction",
    "quadratic_direction",
    "spectral_direction",
    "steepest_direction",
    "step_angle",
]

#: the norms :func:`steepest_direction` dispatches on
NORMS = ("euclidean", "linf", "spectral", "quadratic", "kronecker")


class SteepestDirection(NamedTuple):
    """The unit-norm maximizer of :math:`\\langle g, d\\rangle` and the maximum (the dual norm)."""

    #: :math:`d^\star`, of the gradient's shape, with :math:`\|d^\star\| = 1` (0 for a zero gradient)
    direction: Tensor
    #: :math:`\langle g, d^\star\rangle = \|g\|_\ast` (a 0-d tensor)
    dual_norm: Tensor


def _gradient(g: Any, name: str, *, matrix: bool = False) -> Tensor:
    t = as_tensor(g, name)
    if matrix and t.ndim != 2:
        raise ValueError(f"{name} must be a matrix (2-D tensor), got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(t.shape)}")
    return check_finite(t, name)


def euclidean_direction(g: Tensor) -> SteepestDirection:
    r"""Steepest direction under the Euclidean norm :math:`\|d\|_2` (Frobenius for matrices).

    .. math:: d^\star = g/\|g\|_2, \qquad \|g\|_\ast = \|g\|_2

    (Cauchy-Schwarz; the norm is self-dual) :cite:`bernstein2024old`.

    Parameters
    ----------
    g
        The gradient, any shape (entries taken as one vector).
    """
    g = _gradient(g, "g")
    n = torch.linalg.vector_norm(g)
    if float(n) == 0.0:
        return SteepestDirection(torch.zeros_like(g), n)
    return SteepestDirection(g / n, n)


def linf_direction(g: Tensor) -> SteepestDirection:
    r"""Steepest direction under the :math:`\ell_\infty` norm :math:`\max_i |d_i|`: sign descent.

    .. math:: d^\star = \operatorname{sign}(g), \qquad \|g\|_\ast = \|g\|_1 = \sum_i |g_i|

    (entries with :math:`g_i = 0` may take any value in :math:`[-1, 1]`; this returns 0 there).
    Adam with its moving averages switched off (:math:`\beta_1=\beta_2=0`,
    :math:`\epsilon=0`) steps along :math:`-\operatorname{sign}(g)` :cite:`bernstein2024old`.

    Parameters
    ----------
    g
        The gradient, any shape.
    """
    g = _gradient(g, "g")
    return SteepestDirection(torch.sign(g), g.abs().sum())


def spectral_direction(g: Tensor, *, rtol: float | None = None) -> SteepestDirection:
    r"""Steepest direction under the spectral norm :math:`\|D\|_{2\to 2} = \sigma_{\max}(D)`.

    With the thin SVD :math:`G = U\Sigma V^\top` restricted to the :math:`r` non-zero singular
    values,

    .. math:: D^\star = U_r V_r^\top, \qquad \|G\|_\ast = \operatorname{tr}\Sigma = \sum_i \sigma_i,

    the orthogonal polar factor of :math:`G` (all singular values 1 on the range of :math:`G`),
    and the dual of the spectral norm is the nuclear norm: von Neumann's trace inequality gives
    :math:`\langle G, D\rangle \le \sum_i \sigma_i(G)\sigma_i(D) \le \sum_i\sigma_i(G)` for
    :math:`\sigma_{\max}(D)\le 1`, with equality at :math:`D^\star`. Muon approximates
    :math:`D^\star` by a Newton-Schulz iteration (:func:`igbook.optim.newton_schulz`)
    :cite:`bernstein2024old,jordan2024muon`.

    Parameters
    ----------
    g
        The gradient, a matrix of shape ``(m, n)``.
    rtol
        Singular values below ``rtol * sigma_max`` count as zero (default: ``max(m, n)`` times
        the machine epsilon of the dtype, as :func:`torch.linalg.matrix_rank`).
    """
    g = _gradient(g, "g", matrix=True)
    if rtol is not None:
        rtol = check_nonnegative_real(rtol, "rtol")
    u, s, vh = torch.linalg.svd(g, full_matrices=False)
    if float(s[0]) == 0.0:
        return SteepestDirection(torch.zeros_like(g), s.sum())
    tol = max(g.shape) * torch.finfo(g.dtype).eps if rtol is None else rtol
    r = int((s > tol * s[0]).sum())
    return SteepestDirection(u[:, :r] @ vh[:r], s.sum())


def quadratic_direction(
    g: Tensor, metric: Tensor | Curvature, damping: float = 0.0
) -> SteepestDirection:
    r"""Steepest direction under the quadratic norm :math:`\|d\|_M = \sqrt{d^\top M d}`.

    For :math:`M` symmetric positive definite (Lagrange: :math:`g = 2\lambda M d`),

    .. math::
        d^\star = \frac{M^{-1}g}{\sqrt{g^\top M^{-1}g}}, \qquad \|g\|_\ast = \sqrt{g^\top M^{-1}g}:

    with :math:`M` the Fisher information this is the natural gradient, normalized
    :cite:`amari1998natural,bernstein2024old`. With ``damping`` :math:`\delta > 0` the norm is that
    of :math:`M + \delta I` (then a positive semi-definite :math:`M` suffices).

    Parameters
    ----------
    g
        The gradient, shape ``(P,)``.
    metric
        :math:`M`: a symmetric positive definite ``(P, P)`` tensor, or any
        :class:`igbook.fisher.Curvature` (its ``solve`` gives :math:`(M+\delta I)^{-1}g`).
    damping
        :math:`\delta \ge 0`, added to the diagonal of :math:`M`.
    """
    g = _gradient(g, "g")
    if g.ndim != 1:
        raise ValueError(f"g must be a vector of shape (P,), got shape {tuple(g.shape)}")
    damping = check_nonnegative_real(damping, "damping")
    if isinstance(metric, Curvature):
        if metric.size != g.shape[0]:
            raise ValueError(
                f"metric has size {metric.size} but g has {g.shape[0]} entries (g must have shape (P,))"
            )
        try:
            x = metric.solve(g.to(metric.dtype), damping).to(g.dtype)
        except ValueError as exc:
            raise ValueError(f"metric (+ damping) must be positive definite: {exc}") from exc
    else:
        m = as_tensor(metric, "metric")
        if m.ndim != 2 or m.shape != (g.shape[0], g.shape[0]):
            raise ValueError(
                f"metric must have shape ({g.shape[0]}, {g.shape[0]}) to match g, got {tuple(m.shape)}"
            )
        m = m.to(g.dtype)
        if damping > 0:
            check_symmetric(m, "metric")
            m = m + damping * torch.eye(m.shape[0], dtype=m.dtype)
        check_symmetric_positive_definite(m, "metric")
        x = torch.cholesky_solve(g.unsqueeze(1), torch.linalg.cholesky(m)).squeeze(1)
    value = torch.dot(g, x).clamp_min(0.0).sqrt()
    if float(value) == 0.0:
        return SteepestDirection(torch.zeros_like(g), value)
    return SteepestDirection(x / value, value)


def kronecker_direction(
    grad: Tensor, A: Tensor, G: Tensor, damping: float = 0.0
) -> SteepestDirection:
    r"""Steepest direction under the Kronecker-factored norm :math:`\|D\|_{A\otimes G}`.

    For a matrix gradient :math:`\nabla` of shape ``(out, din)`` and factors :math:`A`
    (``din x din``, input statistics) and :math:`G` (``out x out``, output-gradient statistics),
    :math:`\|D\|^2 = \operatorname{vec}(D)^\top(A\otimes G)\operatorname{vec}(D) =
    \operatorname{tr}(D^\top G D A)` and, since :math:`(A\otimes G)^{-1}\operatorname{vec}(\nabla)
    = \operatorname{vec}(G^{-1}\nabla A^{-1})`,

    .. math::
        D^\star = \frac{G^{-1}\nabla A^{-1}}{\sqrt{\langle \nabla, G^{-1}\nabla A^{-1}\rangle}},
        \qquad \|\nabla\|_\ast = \sqrt{\langle \nabla, G^{-1}\nabla A^{-1}\rangle}:

    K-FAC's natural-gradient direction for one layer :cite:`martens2015optimizing`. Computed through
    :class:`igbook.fisher.KroneckerCurvature` (eigendecompositions of the factors); ``damping``
    :math:`\delta` gives the exact norm of :math:`A\otimes G + \delta I` (not the factored
    :math:`\pi`-damping).

    Parameters
    ----------
    grad
        The gradient matrix, shape ``(out, din)``.
    A, G
        Symmetric positive definite factors of shapes ``(din, din)`` and ``(out, out)``
        (semi-definite suffices when ``damping > 0``).
    damping
        :math:`\delta \ge 0`.
    """
    grad = _gradient(grad, "grad", matrix=True)
    damping = check_nonnegative_real(damping, "damping")
    out, din = grad.shape
    factors = []
    for name, f, n in (("A", A, din), ("G", G, out)):
        t = as_tensor(f, name)
        if t.shape != (n, n):
            raise ValueError(
                f"{name} must have shape ({n}, {n}) to match grad of shape {tuple(grad.shape)}, "
                f"got {tuple(t.shape)}"
            )
        t = t.to(grad.dtype)
        if damping > 0:
            check_symmetric(t, name)
            ev = torch.linalg.eigvalsh(t)
            if float(ev[0]) < -(torch.finfo(t.dtype).eps ** 0.5) * max(1.0, float(ev.abs().max())):
                raise ValueError(
                    f"{name} must be positive semi-definite, got the eigenvalue {float(ev[0]):.6g}"
                )
        else:
            check_symmetric_positive_definite(t, name)
        factors.append(t)
    curv = KroneckerCurvature(factors[0], factors[1])
    x = curv.solve(grad.reshape(-1), damping).reshape(out, din).to(grad.dtype)
    value = (grad * x).sum().clamp_min(0.0).sqrt()
    if float(value) == 0.0:
        return SteepestDirection(torch.zeros_like(grad), value)
    return SteepestDirection(x / value, value)


def steepest_direction(
    g: Tensor,
    norm: str = "euclidean",
    *,
    metric: Tensor | Curvature | None = None,
    A: Tensor | None = None,
    G: Tensor | None = None,
    damping: float = 0.0,
) -> SteepestDirection:
    r"""The steepest direction :math:`\arg\max_{\|d\|\le1}\langle g,d\rangle` under ``norm``.

    Dispatches to :func:`euclidean_direction`, :func:`linf_direction`, :func:`spectral_direction`,
    :func:`quadratic_direction` (needs ``metric``) or :func:`kronecker_direction` (needs ``A`` and
    ``G``; ``g`` is the gradient matrix) :cite:`bernstein2024old`.

    Parameters
    ----------
    g
        The gradient.
    norm
        One of :data:`NORMS`.
    metric, A, G, damping
        The quadratic norm's matrix, the Kronecker factors and the damping (see those functions).
    """
    norm = check_choice(norm, "norm", NORMS)
    damping = check_nonnegative_real(damping, "damping")
    if norm in ("euclidean", "linf", "spectral"):
        if metric is not None or A is not None or G is not None:
            raise ValueError(
                f"metric, A and G only apply to the quadratic and kronecker norms, not {norm!r}"
            )
        fn = {
            "euclidean": euclidean_direction,
            "linf": linf_direction,
            "spectral": spectral_direction,
        }
        return fn[norm](g)
    if norm == "quadratic":
        if metric is None:
            raise ValueError("metric is required for norm='quadratic'")
        return quadratic_direction(g, metric, damping)
    if A is None or G is None:
        raise ValueError("A and G are required for norm='kronecker'")
    return kronecker_direction(g, A, G, damping)


def _metric_product(metric: Tensor | Curvature, v: Tensor, name: str = "step") -> Tensor:
    """:math:`Mv` for a ``(P, P)`` tensor or a :class:`~igbook.fisher.Curvature`."""
    if isinstance(metric, Curvature):
        if metric.size != v.shape[0]:
            raise ValueError(f"metric has size {metric.size} but {name} has {v.shape[0]} entries")
        return metric.matvec(v.to(metric.dtype)).to(v.dtype)
    m = as_tensor(metric, "metric")
    if m.ndim != 2 or m.shape != (v.shape[0], v.shape[0]):
        raise ValueError(
            f"metric must have shape ({v.shape[0]}, {v.shape[0]}) to match {name} of size "
            f"{v.shape[0]}, got {tuple(m.shape)}"
        )
    m = check_finite(m, "metric")
    check_symmetric(m.to(v.dtype), "metric")
    return m.to(v.dtype) @ v


def step_angle(step: Tensor, reference: Tensor, metric: Tensor | Curvature | None = None) -> Tensor:
    r"""The angle, in degrees, between a step and a reference direction, in the inner product of ``metric``.

    .. math::

        \angle_M(d, r) = \arccos\frac{d^\top M r}{\sqrt{d^\top M d}\,\sqrt{r^\top M r}}
        \in [0^\circ, 180^\circ],

    with :math:`M = I` (the Euclidean angle) when ``metric`` is ``None``. With :math:`M` the Fisher
    and :math:`r = F^{-1}g` the natural gradient, :math:`\cos\angle_F(d, r)` is the fraction of the
    best achievable first-order decrease per unit of KL that the step :math:`d` reaches
    (:func:`kl_spent`) :cite:`amari1998natural,martens2020new`.

    Parameters
    ----------
    step, reference
        Non-zero vectors of the same shape ``(P,)`` (other shapes are flattened).
    metric
        ``None``, a symmetric positive semi-definite ``(P, P)`` tensor, or a
        :class:`igbook.fisher.Curvature`.
    """
    d = _gradient(step, "step").reshape(-1)
    r = _gradient(reference, "reference").reshape(-1)
    if d.shape != r.shape:
        raise ValueError(
            f"step and reference must have the same size, got {d.numel()} and {r.numel()}"
        )
    dt = torch.promote_types(d.dtype, r.dtype)
    d, r = d.to(dt), r.to(dt)
    if metric is None:
        md, mr = d, r
    else:
        md, mr = _metric_product(metric, d), _metric_product(metric, r)
    dd, rr, dr = torch.dot(d, md), torch.dot(r, mr), torch.dot(d, mr)
    for name, v in (("step", dd), ("reference", rr)):
        if float(v) <= 0.0:
            raise ValueError(
                f"{name} must have a positive norm in the metric, got squared norm {float(v):.3g}"
            )
    cos = (dr / (dd.sqrt() * rr.sqrt())).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.arccos(cos))


def kl_spent(step: Tensor, metric: Tensor | Curvature) -> Tensor:
    r"""The KL divergence a step spends, to second order: :math:`\tfrac12\,d^\top F d`.

    For a model :math:`p_\theta` with Fisher :math:`F(\theta)`,
    :math:`\operatorname{KL}(p_\theta\,\|\,p_{\theta+d}) = \tfrac12 d^\top F d + O(\|d\|^3)`
    :cite:`amari1998natural`. Among the steps with the same first-order decrease
    :math:`-g^\top d = c > 0` the natural gradient spends the least,
    :math:`c^2/(2\,g^\top F^{-1}g)` (Cauchy-Schwarz in the :math:`F` inner product); any other
    spends :math:`1/\cos^2\angle_F(d, F^{-1}g)` times as much (:func:`step_angle`).

    Parameters
    ----------
    step
        The step :math:`d`, shape ``(P,)`` (other shapes are flattened).
    metric
        :math:`F`: a symmetric ``(P, P)`` tensor or a :class:`igbook.fisher.Curvature`.
    """
    d = _gradient(step, "step").reshape(-1)
    return 0.5 * torch.dot(d, _metric_product(metric, d))
