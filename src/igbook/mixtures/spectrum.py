r"""The spectrum of the mixture's Fisher matrix: grids, eigen-decomposition, ellipses, asymptotics.

The eigenvectors are always the mean-shift and exchange directions; the exchange eigenvalue
vanishes on the singular line :math:`\mu_1 = \mu_2` (:func:`small_separation_eigenvalues`) and the
matrix tends to :math:`I/(2\sigma^2)` far from it (:func:`large_separation_fisher`)
:cite:`amari1998natural`. See :mod:`igbook.mixtures`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from igbook._validation import (
    as_tensor,
    check_finite,
    check_integer,
    check_positive_real,
    check_positive_semidefinite,
    check_real,
)
from igbook.mixtures.model import check_sigma, check_theta

__all__ = [
    "parameter_grid",
    "fisher_eigen",
    "condition_number",
    "ellipse_outlines",
    "small_separation_eigenvalues",
    "large_separation_fisher",
    "ISOTROPIC_SEPARATION",
]

#: Separation :math:`|\mu_1-\mu_2|/\sigma` at which the Fisher matrix is a multiple of the
#: identity (its off-diagonal entry changes sign there): below it the exchange direction is the
#: flat one, above it the mean-shift direction is (slightly) flatter.
ISOTROPIC_SEPARATION = 1.6362557214809716


def parameter_grid(low: float = -3.0, high: float = 3.0, n: int = 25) -> Tensor:
    r"""An ``n x n`` grid of :math:`(\mu_1,\mu_2)` on :math:`[\text{low},\text{high}]^2`, shape ``(n, n, 2)``
    (``[i, j] = (x_j, y_i)``)."""
    n = check_integer(n, "n", minimum=2)
    low, high = check_real(low, "low"), check_real(high, "high")
    if not (math.isfinite(low) and math.isfinite(high) and high > low):
        raise ValueError(f"need finite low < high, got low={low}, high={high}")
    g = torch.linspace(low, high, n, dtype=torch.float64)
    yy, xx = torch.meshgrid(g, g, indexing="ij")
    return torch.stack([xx, yy], -1)


def _sym2(f: Tensor, name: str = "fisher") -> Tensor:
    f = check_finite(as_tensor(f, name), name)
    if f.ndim < 2 or f.shape[-2:] != (2, 2):
        raise ValueError(f"{name} must have shape (..., 2, 2), got {tuple(f.shape)}")
    # symmetric to rounding (quadrature gives off-diagonals that agree to a few ulps)
    off, scale = (f[..., 0, 1] - f[..., 1, 0]).abs(), f.abs().amax(dim=(-2, -1)).clamp_min(1.0)
    if not bool((off <= 1e-8 * scale).all()):
        raise ValueError(f"{name} must be symmetric (a Fisher matrix)")
    return 0.5 * (f + f.transpose(-1, -2))


def fisher_eigen(fisher_matrix: object) -> tuple[Tensor, Tensor]:
    r"""Eigenvalues (ascending, clamped at 0) and unit eigenvectors (columns) of a batch of 2x2 Fisher matrices.

    Rounding can make the smallest eigenvalue of a singular Fisher a tiny negative number; it is
    clamped to 0, the exact value at the singularity.
    """
    f = _sym2(fisher_matrix, "fisher_matrix")
    evals, evecs = torch.linalg.eigh(f)
    check_positive_semidefinite(f, "fisher_matrix", eigenvalues=evals, symmetric_checked=True)
    return evals.clamp_min(0.0), evecs


def condition_number(fisher_matrix: object) -> Tensor:
    r""":math:`\kappa = \lambda_{\max}/\lambda_{\min}`; ``inf`` where :math:`\lambda_{\min}=0` (on the singular
    line :math:`\mu_1=\mu_2`)."""
    evals, _ = fisher_eigen(fisher_matrix)
    lo, hi = evals[..., 0], evals[..., 1]
    if bool((hi <= 0).any()):
        raise ValueError("fisher_matrix must not be the zero matrix (condition number undefined)")
    return torch.where(
        lo > 0, hi / lo.clamp_min(torch.finfo(lo.dtype).tiny), torch.full_like(lo, math.inf)
    )


def ellipse_outlines(
    centers: object,
    fisher_matrix: object,
    eps: float = 1.0,
    *,
    num: int = 40,
    max_semi_axis: float | None = None,
) -> tuple[Tensor, Tensor]:
    r"""Fisher ellipses :math:`\{\theta: (\theta-c)^\top F (\theta-c) = \varepsilon\}` for a whole field.

    Semi-axes are :math:`\sqrt{\varepsilon/\lambda_i}` along the eigenvectors of :math:`F`. The level is
    the squared Fisher length, as in :func:`igbook.geometry.ellipse_points`; the quadratic KL ball
    :math:`\tfrac12\delta^\top F\delta = \varepsilon` is ``eps=2 * epsilon``.
    Near the singularity they grow without bound; with ``max_semi_axis`` they are clipped for
    display, and the second output flags the clipped ellipses (so a figure can mark them).

    Returns
    -------
    outlines
        shape ``batch + (num, 2)``.
    clipped
        boolean, shape ``batch``.
    """
    eps = check_positive_real(eps, "eps")
    num = check_integer(num, "num", minimum=3)
    evals, evecs = fisher_eigen(fisher_matrix)
    centers = check_theta(centers, "centers").to(evals.dtype)
    if centers.shape[:-1] != evals.shape[:-1]:
        raise ValueError(
            f"centers batch {tuple(centers.shape[:-1])} must match fisher batch {tuple(evals.shape[:-1])}"
        )
    tiny = torch.finfo(evals.dtype).tiny
    semi = torch.sqrt(eps / evals.clamp_min(tiny))
    clipped = torch.zeros(evals.shape[:-1], dtype=torch.bool)
    if max_semi_axis is not None:
        cap = check_positive_real(max_semi_axis, "max_semi_axis")
        clipped = (semi > cap).any(-1)
        semi = semi.clamp_max(cap)
    t = torch.linspace(0, 2 * math.pi, num, dtype=evals.dtype)
    circle = torch.stack([torch.cos(t), torch.sin(t)], -1)
    pts = (circle * semi.unsqueeze(-2)) @ evecs.transpose(-1, -2)
    return centers.unsqueeze(-2) + pts, clipped


# ------------------------------------------------------------------------------------------
# asymptotics
def small_separation_eigenvalues(theta: object, sigma: object = 1.0) -> tuple[Tensor, Tensor]:
    r"""Leading-order eigenvalues near the singularity :math:`\mu_1\to\mu_2`.

    In the coordinates :math:`m=(\mu_1+\mu_2)/2`, :math:`\epsilon=(\mu_1-\mu_2)/2` the density is
    :math:`\mathcal N(x\mid m,\sigma^2)\,e^{-\epsilon^2/(2\sigma^2)}\cosh(\epsilon z/\sigma)`
    with :math:`z=(x-m)/\sigma`, so the exchange score is
    :math:`\big(z\tanh(\epsilon z/\sigma)-\epsilon/\sigma\big)/\sigma =
    \epsilon(z^2-1)/\sigma^2 + O(\epsilon^3)`. Hence

    .. math::

        \lambda_{\min} = \frac{(\mu_1-\mu_2)^2}{4\sigma^4}\,(1+O(\delta^2)), \qquad
        \lambda_{\max} = \frac{1}{2\sigma^2}\,(1+O(\delta^2)), \qquad
        \kappa = \frac{2\sigma^2}{(\mu_1-\mu_2)^2}\,(1+O(\delta^2)).

    Returns ``(lambda_min, lambda_max)`` of the leading terms.
    """
    theta = check_theta(theta)
    s = check_sigma(sigma, theta)
    d = theta[..., 0] - theta[..., 1]
    return d**2 / (4 * s**4), (0.5 / s**2).expand_as(d).clone()


def large_separation_fisher(theta: object, sigma: object = 1.0) -> Tensor:
    r"""Leading-order Fisher matrix for well-separated components, :math:`\delta = |\mu_1-\mu_2|/\sigma\gg1`.

    .. math::

        F \approx \frac{I}{2\sigma^2} - c(\delta)\begin{pmatrix}1&1\\1&1\end{pmatrix},\qquad
        c(\delta) = \frac{\delta}{8\sigma^2}\sqrt{\frac{\pi}{2}}\,e^{-\delta^2/8},

    from :math:`F = I/(2\sigma^2) - \mathbb E_p[r_1r_2(\cdot)]/\sigma^2` and
    :math:`p\,r_1r_2 = \tfrac12 e^{-\delta^2/8}\varphi(u)/(2\cosh(\delta u/2))` in the
    midpoint coordinate :math:`u`. The relative error of the correction is :math:`O(\delta^{-2})`.
    """
    theta = check_theta(theta)
    s = check_sigma(sigma, theta)
    d = (theta[..., 0] - theta[..., 1]).abs() / s
    c = d / (8 * s**2) * math.sqrt(math.pi / 2) * torch.exp(-(d**2) / 8)
    eye = torch.eye(2, dtype=theta.dtype)
    ones = torch.ones(2, 2, dtype=theta.dtype)
    return eye * (0.5 / s**2)[..., None, None] - c[..., None, None] * ones
