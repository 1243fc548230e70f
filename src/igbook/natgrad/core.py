r"""Natural-gradient directions and steps.

The natural gradient of a loss :math:`L` at :math:`\theta` is
:math:`\widetilde\nabla L = F(\theta)^{-1}\nabla L` :cite:`amari1998natural`: the steepest
descent direction when distance is measured by the KL divergence rather than the Euclidean norm.
This module solves for it with a dense (optionally damped) solve or, matrix-free, with
conjugate gradient on Fisher-vector products, and sizes steps to a KL trust region.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from igbook._validation import (
    as_tensor,
    check_callable,
    check_count,
    check_finite,
    check_positive_semidefinite,
    check_square,
)

__all__ = [
    "natural_gradient",
    "CGResult",
    "conjugate_gradient",
    "natural_gradient_cg",
    "trust_region_step_size",
]


def _damping(damping: float) -> float:
    if not isinstance(damping, (int, float)) or isinstance(damping, bool):
        raise TypeError(f"damping must be a real number, got {type(damping).__name__}")
    if not damping >= 0 or damping != damping or damping == float("inf"):
        raise ValueError(f"damping must be finite and >= 0, got {damping}")
    return float(damping)


def natural_gradient(fisher: Tensor, grad: Tensor, damping: float = 0.0) -> Tensor:
    r"""Dense natural-gradient direction :math:`(F + \lambda I)^{-1} g`.

    Parameters
    ----------
    fisher
        Fisher matrix :math:`F`, shape ``(d, d)``, symmetric positive semi-definite.
    grad
        Euclidean gradient :math:`g`, shape ``(d,)`` (or ``(d, k)`` for several right-hand sides).
    damping
        :math:`\lambda \ge 0`. With ``damping=0`` a singular :math:`F` raises
        :class:`ValueError` instead of returning ``inf``/``nan``.

    Raises
    ------
    ValueError
        If shapes do not match, an input is not finite, ``damping < 0``, ``fisher`` is not
        symmetric positive semi-definite, or the (damped) Fisher is singular to working
        precision: the condition number of :math:`D^{-1/2}(F+\lambda I)D^{-1/2}`,
        :math:`D = \operatorname{diag}(F+\lambda I)`, above :math:`1/(d\,\varepsilon_{\text{mach}})`,
        where the solve would return a step dominated by rounding (a badly scaled but
        well-determined Fisher, e.g. a diagonal one, is solved).
    """
    fisher = check_square(as_tensor(fisher, "fisher"), "fisher")
    if fisher.ndim != 2:
        raise ValueError(f"fisher must be a (d, d) matrix, got shape {tuple(fisher.shape)}")
    d = fisher.shape[0]
    if d == 0:
        raise ValueError("fisher must not be empty (d >= 1)")
    grad = check_finite(as_tensor(grad, "grad", dtype=fisher.dtype), "grad")
    lam = _damping(damping)
    if grad.ndim == 0 or grad.shape[0] != d or grad.ndim > 2:
        raise ValueError(
            f"grad must have shape ({d},) or ({d}, k) to match fisher, got {tuple(grad.shape)}"
        )
    evals = torch.linalg.eigvalsh(check_square(check_finite(fisher, "fisher"), "fisher"))
    check_positive_semidefinite(fisher, "fisher", eigenvalues=evals)
    hint = "pass damping > 0" if lam == 0 else "increase damping"
    a = fisher + lam * torch.eye(d, dtype=fisher.dtype)
    a = 0.5 * (a + a.T)
    # Singular to working precision, judged after symmetric diagonal scaling (van der Sluis):
    # Cholesky's accuracy depends on the condition number of D^-1/2 A D^-1/2, D = diag(A), so a
    # badly scaled but well-determined system (a diagonal Fisher whose entries span 1e-170 to 1)
    # is solved, while a system whose smallest eigenvalue is rounding noise is refused.
    diag = torch.diagonal(a)
    if not bool((diag > 0).all()):
        raise ValueError(f"fisher + damping * I is singular (a zero diagonal entry); {hint}")
    scale = diag.rsqrt()
    scaled_evals = torch.linalg.eigvalsh(a * scale[:, None] * scale[None, :])
    if not float(scaled_evals[0]) > d * torch.finfo(fisher.dtype).eps * float(scaled_evals[-1]):
        raise ValueError(
            f"fisher + damping * I is singular to working precision (singular Fisher); {hint}"
        )
    chol, info = torch.linalg.cholesky_ex(a)
    if int(info) != 0:
        raise ValueError(
            f"fisher + damping * I is not positive definite (singular or indefinite Fisher); {hint}"
        )
    rhs = grad.unsqueeze(-1) if grad.ndim == 1 else grad
    out = torch.cholesky_solve(rhs, chol)
    return out.squeeze(-1) if grad.ndim == 1 else out


@dataclass(frozen=True)
class CGResult:
    """Outcome of :func:`conjugate_gradient`."""

    x: Tensor
    iterations: int
    residual_norm: float
    converged: bool


def conjugate_gradient(
    matvec: Callable[[Tensor], Tensor],
    b: Tensor,
    *,
    damping: float = 0.0,
    x0: Tensor | None = None,
    rtol: float = 1e-10,
    max_iter: int | None = None,
) -> CGResult:
    r"""Solve :math:`(A + \lambda I)x = b` by conjugate gradient, touching :math:`A` only through ``matvec``.

    :math:`A` must be symmetric positive semi-definite (a Fisher or Gauss-Newton matrix), and
    :math:`A + \lambda I` positive definite. Stops when
    :math:`\|r\| \le \mathrm{rtol}\,\|b\|` or after ``max_iter`` iterations (default
    :math:`2d`). A direction of non-positive curvature raises :class:`ValueError`.
    """
    check_callable(matvec, "matvec")
    b = check_finite(as_tensor(b, "b"), "b")
    if b.ndim != 1:
        raise ValueError(f"b must be a flat vector, got shape {tuple(b.shape)}")
    lam = _damping(damping)
    if isinstance(rtol, bool) or not isinstance(rtol, (int, float)):
        raise TypeError(f"rtol must be a real number, got {type(rtol).__name__}")
    if not rtol > 0 or rtol == float("inf"):
        raise ValueError(f"rtol must be finite and > 0, got {rtol}")
    n = b.shape[0]
    max_iter = 2 * n if max_iter is None else check_count(max_iter, "max_iter")
    if max_iter < 1:
        raise ValueError(f"max_iter must be an int >= 1, got {max_iter!r} (b is empty)")

    def op(v: Tensor) -> Tensor:
        out = matvec(v)
        if not isinstance(out, Tensor) or out.shape != v.shape:
            raise ValueError(
                f"matvec must return a tensor of shape {tuple(v.shape)}, "
                f"got {getattr(out, 'shape', type(out).__name__)}"
            )
        check_finite(out, "matvec(v)")
        return out + lam * v if lam else out

    if x0 is not None:
        x0 = check_finite(as_tensor(x0, "x0", dtype=b.dtype), "x0")
        if x0.shape != b.shape:
            raise ValueError(f"x0 must have the shape of b {tuple(b.shape)}, got {tuple(x0.shape)}")
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - op(x) if x0 is not None else b.clone()
    p = r.clone()
    rs = r @ r
    b_norm = float(torch.linalg.vector_norm(b))
    tol = rtol * b_norm
    it = 0
    if b_norm == 0.0:
        return CGResult(x, 0, 0.0, True)
    while it < max_iter and float(rs.sqrt()) > tol:
        ap = op(p)
        curv = p @ ap
        if not float(curv) > 0:
            raise ValueError(
                "conjugate gradient met a direction of non-positive curvature: the operator is "
                "not positive definite; pass damping > 0"
            )
        alpha = rs / curv
        x = x + alpha * p
        r = r - alpha * ap
        rs_new = r @ r
        p = r + (rs_new / rs) * p
        rs = rs_new
        it += 1
    res = float(rs.sqrt())
    return CGResult(x, it, res, res <= tol)


def natural_gradient_cg(
    fvp: Callable[[Tensor], Tensor],
    grad: Tensor,
    damping: float,
    *,
    rtol: float = 1e-10,
    max_iter: int | None = None,
) -> Tensor:
    r"""Matrix-free natural gradient :math:`(F+\lambda I)^{-1} g` from Fisher-vector products ``fvp``.

    Raises :class:`ValueError` if ``damping <= 0`` (a Fisher of a network is singular) or if
    conjugate gradient has not converged within ``max_iter`` iterations.
    """
    lam = _damping(damping)
    if lam <= 0:
        raise ValueError(f"damping must be > 0 for a matrix-free natural gradient, got {damping}")
    res = conjugate_gradient(fvp, grad, damping=lam, rtol=rtol, max_iter=max_iter)
    if not res.converged:
        raise ValueError(
            f"conjugate gradient did not reach rtol={rtol} in {res.iterations} iterations "
            f"(residual {res.residual_norm:.3g}); raise max_iter or damping"
        )
    return res.x


def trust_region_step_size(
    fisher: Tensor | Callable[[Tensor], Tensor], direction: Tensor, radius: float
) -> Tensor:
    r"""Step length :math:`\alpha` with :math:`\tfrac12\alpha^2\, d^\top F d = \epsilon`.

    The largest step along ``direction`` whose quadratic KL estimate equals the trust radius
    :math:`\epsilon` (``radius``), as in TRPO :cite:`schulman2015trust`. ``fisher`` is a matrix
    or a Fisher-vector product.
    """
    direction = check_finite(as_tensor(direction, "direction"), "direction")
    if direction.ndim != 1:
        raise ValueError(f"direction must be a flat vector, got shape {tuple(direction.shape)}")
    if isinstance(radius, bool) or not isinstance(radius, (int, float)):
        raise TypeError(f"radius must be a real number, got {type(radius).__name__}")
    if not radius > 0 or radius == float("inf"):
        raise ValueError(f"radius must be a finite number > 0, got {radius}")
    if callable(fisher):
        fd = fisher(direction)
        if not isinstance(fd, Tensor) or fd.shape != direction.shape:
            raise ValueError(
                "fisher (a Fisher-vector product) must return a tensor shaped like direction"
            )
        check_finite(fd, "fisher(direction)")
    else:
        f = check_square(as_tensor(fisher, "fisher", dtype=direction.dtype), "fisher")
        if f.ndim != 2:
            raise ValueError(f"fisher must be a (d, d) matrix, got shape {tuple(f.shape)}")
        check_positive_semidefinite(f, "fisher")
        if f.shape[0] != direction.shape[0]:
            raise ValueError(
                f"direction must have length {f.shape[0]} to match fisher, got {direction.shape[0]}"
            )
        fd = f @ direction
    quad = direction @ fd
    if not float(quad) > 0:
        raise ValueError(
            "direction has zero Fisher norm (d^T F d <= 0): no finite step meets the radius"
        )
    return torch.sqrt(2 * radius / quad)
