r"""The empirical Fisher on the problems of Kunstner, Hennig and Balles (2019).

:cite:t:`kunstner2019limitations` show with two-parameter linear and logistic regressions that
the empirical Fisher

.. math::

    \widetilde F(\theta) = \frac1N\sum_{n=1}^N \nabla\ell_n(\theta)\,\nabla\ell_n(\theta)^\top

is not the Fisher: preconditioning with it distorts the gradient field (their Figure 1), and
its quadratic model agrees with the Fisher's at the optimum only when the model is well
specified (their Figure 2). This module holds their loss (mean negative log-likelihood plus
:math:`\|\theta\|^2/(2\sigma_0^2 N)` with prior variance :math:`\sigma_0^2`), the closed-form
curvature of both generalized linear models, batched over many parameter vectors so that whole
vector fields and flows are single tensor programs, and the preconditioned flows. Their data
sets (same generators and seeds as their code) are experiment set-ups, in
:mod:`igbook.experiments.kunstner`.

For these canonical-link models the Fisher of the data term equals its Hessian:
:math:`F = X^\top X/N` (linear, unit noise) and :math:`F = X^\top\operatorname{diag}(\sigma(1-\sigma))X/N`
(logistic). The same matrices come out of the general machinery of
:mod:`igbook.fisher.models` for an ``nn.Linear`` model, which the chapter checks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from igbook._validation import as_tensor, check_finite

__all__ = [
    "GLMProblem",
    "preconditioned_field",
    "euler_flow",
    "linear_regression_flows",
]


@dataclass(frozen=True)
class GLMProblem:
    r"""Linear or logistic regression with the loss of :cite:t:`kunstner2019limitations`.

    .. math::

        L(\theta) = \frac1N\sum_n \ell_n(\theta) + \frac{\|\theta\|^2}{2\sigma_0^2 N},\qquad
        \ell_n = \begin{cases}\tfrac12 (x_n^\top\theta - y_n)^2 & \text{linear}\\
        \log(1 + e^{x_n^\top\theta}) - y_n x_n^\top\theta & \text{logistic}\end{cases}

    (``prior_var`` :math:`=\sigma_0^2`; ``math.inf`` removes the prior, as in their logistic
    experiments). Every method takes ``theta`` of shape ``(..., D)`` and returns results
    batched over the leading axes. The empirical Fisher uses the data term only, as in their
    code; the Fisher and the Hessian include the prior's curvature :math:`I/(\sigma_0^2N)`.
    """

    x: Tensor
    y: Tensor
    kind: Literal["linear", "logistic"] = "linear"
    prior_var: float = 0.1

    def __post_init__(self) -> None:
        x = check_finite(as_tensor(self.x, "x"), "x")
        y = check_finite(as_tensor(self.y, "y", dtype=x.dtype), "y")
        if x.ndim != 2 or y.shape != (x.shape[0],):
            raise ValueError(
                f"x must have shape (N, D) and y shape (N,), got {tuple(x.shape)} and {tuple(y.shape)}"
            )
        if self.kind not in ("linear", "logistic"):
            raise ValueError(f"kind must be 'linear' or 'logistic', got {self.kind!r}")
        if self.kind == "logistic" and not bool(((y == 0) | (y == 1)).all()):
            raise ValueError("y must hold labels in {0, 1} for logistic regression")
        if not self.prior_var > 0:
            raise ValueError(f"prior_var must be > 0 (math.inf for no prior), got {self.prior_var}")
        object.__setattr__(self, "x", x)
        object.__setattr__(self, "y", y)

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    @property
    def dim(self) -> int:
        return int(self.x.shape[1])

    def _theta(self, theta: Tensor) -> Tensor:
        theta = as_tensor(theta, "theta", dtype=self.x.dtype)
        if theta.shape[-1:] != (self.dim,):
            raise ValueError(
                f"theta must have last axis of size {self.dim}, got shape {tuple(theta.shape)}"
            )
        return theta

    def _prior_prec(self) -> float:
        return 0.0 if math.isinf(self.prior_var) else 1.0 / (self.prior_var * self.n)

    def predictions(self, theta: Tensor) -> Tensor:
        r""":math:`x_n^\top\theta` (linear) or :math:`\sigma(x_n^\top\theta)` (logistic), shape ``(..., N)``."""
        z = self._theta(theta) @ self.x.T
        return z if self.kind == "linear" else torch.sigmoid(z)

    def residuals(self, theta: Tensor) -> Tensor:
        r""":math:`\partial\ell_n/\partial(x_n^\top\theta)`: prediction minus target, shape ``(..., N)``."""
        return self.predictions(theta) - self.y

    def loss(self, theta: Tensor) -> Tensor:
        """The regularized mean loss, shape ``theta.shape[:-1]``."""
        theta = self._theta(theta)
        z = theta @ self.x.T
        if self.kind == "linear":
            data = 0.5 * ((z - self.y) ** 2).mean(-1)
        else:
            data = (torch.nn.functional.softplus(z) - self.y * z).mean(-1)
        return data + 0.5 * self._prior_prec() * (theta**2).sum(-1)

    def per_example_gradients(self, theta: Tensor) -> Tensor:
        r""":math:`\nabla\ell_n(\theta) = r_n x_n`, shape ``(..., N, D)`` (data term only)."""
        return self.residuals(theta).unsqueeze(-1) * self.x

    def gradient(self, theta: Tensor) -> Tensor:
        """Gradient of :meth:`loss`, shape ``(..., D)``."""
        theta = self._theta(theta)
        return self.residuals(theta) @ self.x / self.n + self._prior_prec() * theta

    def fisher(self, theta: Tensor) -> Tensor:
        r"""Fisher of the data term plus the prior precision: :math:`X^\top W X/N + I/(\sigma_0^2N)`, ``(..., D, D)``.

        :math:`W = I` (linear, unit noise) or :math:`\operatorname{diag}(\sigma_n(1-\sigma_n))`
        (logistic). For these models it is also the Hessian of :meth:`loss`.
        """
        theta = self._theta(theta)
        eye = torch.eye(self.dim, dtype=self.x.dtype) * self._prior_prec()
        if self.kind == "linear":
            f = self.x.T @ self.x / self.n
            return (f + eye).expand(*theta.shape[:-1], self.dim, self.dim).clone()
        p = self.predictions(theta)
        w = p * (1 - p) / self.n
        return torch.einsum("...n,ni,nj->...ij", w, self.x, self.x) + eye

    hessian = fisher

    def empirical_fisher(self, theta: Tensor) -> Tensor:
        r"""Empirical Fisher :math:`\frac1N\sum_n r_n^2 x_nx_n^\top` of the data term, ``(..., D, D)``."""
        r2 = self.residuals(theta) ** 2 / self.n
        return torch.einsum("...n,ni,nj->...ij", r2, self.x, self.x)

    def minimizer(self, *, max_iter: int = 50, tol: float = 1e-12) -> Tensor:
        """The minimizer of :meth:`loss` by Newton's method (exact in one step for linear regression)."""
        theta = torch.zeros(self.dim, dtype=self.x.dtype)
        for _ in range(max_iter):
            g = self.gradient(theta)
            if float(g.norm()) <= tol:
                break
            theta = theta - torch.linalg.solve(self.hessian(theta), g)
        else:
            raise ValueError(
                f"Newton's method did not reach |grad| <= {tol} in {max_iter} iterations"
            )
        return theta


def preconditioned_field(
    problem: GLMProblem,
    preconditioner: Literal["gd", "ngd", "ef"],
    scale: float = 1.0,
    jitter: float = 1e-8,
) -> Callable[[Tensor], Tensor]:
    r"""The vector field :math:`v(\theta) = -c\,(P(\theta) + \epsilon I)^{-1}\nabla L(\theta)` of a preconditioned flow.

    ``"gd"``: :math:`P = I` and no jitter (:math:`v = -c\nabla L`); ``"ngd"``: :math:`P = F`;
    ``"ef"``: :math:`P = \widetilde F` (empirical Fisher). Figure 1 of
    :cite:t:`kunstner2019limitations` uses :math:`c = 1/3, 1, 3` respectively and
    :math:`\epsilon = 10^{-8}`. The returned function maps ``(..., D)`` to ``(..., D)``.
    """
    if preconditioner not in ("gd", "ngd", "ef"):
        raise ValueError(f"preconditioner must be 'gd', 'ngd' or 'ef', got {preconditioner!r}")
    if not jitter >= 0:
        raise ValueError(f"jitter must be >= 0, got {jitter}")
    eye = torch.eye(problem.dim, dtype=problem.x.dtype)

    def field(theta: Tensor) -> Tensor:
        g = problem.gradient(theta)
        if preconditioner == "gd":
            return -scale * g
        p = problem.fisher(theta) if preconditioner == "ngd" else problem.empirical_fisher(theta)
        return -scale * torch.linalg.solve(p + jitter * eye, g.unsqueeze(-1)).squeeze(-1)

    return field


def euler_flow(
    field: Callable[[Tensor], Tensor],
    start: Tensor,
    *,
    step: float = 1e-3,
    num_steps: int = 50_000,
    record_every: int = 1,
) -> Tensor:
    r"""Explicit Euler integration :math:`\theta_{t+1} = \theta_t + h\,v(\theta_t)` of a flow.

    ``start`` may hold many starting points (shape ``(..., D)``); they are integrated together.
    Returns the path recorded every ``record_every`` steps (always including the start and the
    last point), shape ``(T, ..., D)``. Figure 1 of :cite:t:`kunstner2019limitations` uses
    :math:`h = 10^{-3}` and 50 000 steps.
    """
    theta = check_finite(as_tensor(start, "start"), "start").clone()
    if not step > 0:
        raise ValueError(f"step must be > 0, got {step}")
    for name, v in (("num_steps", num_steps), ("record_every", record_every)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    path = [theta.clone()]
    for t in range(1, num_steps):
        theta = theta + step * field(theta)
        if t % record_every == 0 or t == num_steps - 1:
            path.append(theta.clone())
    out = torch.stack(path)
    if not bool(torch.isfinite(out).all()):
        raise ValueError("the flow diverged (non-finite values); reduce step")
    return out


def linear_regression_flows(
    problem: GLMProblem,
    start: Tensor,
    *,
    scales: tuple[float, float, float] = (1 / 3, 1.0, 3.0),
    step: float = 1e-3,
    num_steps: int = 50_000,
    record_every: int = 100,
    jitter: float = 1e-8,
) -> dict[str, Tensor]:
    r"""The Euler paths of Figure 1 of :cite:t:`kunstner2019limitations`, fast and exactly.

    Same iterates as :func:`euler_flow` applied to the three :func:`preconditioned_field`\ s
    (``"gd"``, ``"ngd"``, ``"ef"`` with the constants ``scales``), for a two-parameter
    *linear* regression, computed without 50 000 rounds of tensor-op dispatch:

    - gradient descent and natural gradient are linear maps,
      :math:`\theta_{t+1}-\theta^\star = (I - hcK)(\theta_t-\theta^\star)` with
      :math:`K = I` resp. :math:`(F+\epsilon I)^{-1}F`, so :math:`\theta_t` comes from the
      matrix powers :math:`(I-hcK)^t` for all recorded :math:`t` at once;
    - the empirical Fisher is quadratic in :math:`\theta`,
      :math:`\widetilde F(\theta)_{ij} = \sum_{kl} m_{ijkl}\theta_k\theta_l - 2\sum_k m_{ijk}\theta_k + m_{ij}`
      with data moments :math:`m` computed once in torch, so each Euler step is a few scalar
      operations (a 2x2 solve by the adjugate) on Python floats.

    Returns a dict ``{"gd", "ngd", "ef"}`` of paths of shape ``(T, S, 2)`` for ``S`` starting
    points, recorded every ``record_every`` steps (start and last point included).
    """
    if problem.kind != "linear" or problem.dim != 2:
        raise ValueError("linear_regression_flows needs a two-parameter linear regression problem")
    start = check_finite(as_tensor(start, "start", dtype=problem.x.dtype), "start")
    if start.ndim != 2 or start.shape[1] != 2:
        raise ValueError(f"start must have shape (S, 2), got {tuple(start.shape)}")
    for name, v in (("num_steps", num_steps), ("record_every", record_every)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    if not step > 0:
        raise ValueError(f"step must be > 0, got {step}")
    times = sorted(set(range(0, num_steps, record_every)) | {num_steps - 1})
    t_idx = torch.tensor(times, dtype=problem.x.dtype)
    theta_star = problem.minimizer()
    h_mat = problem.hessian(theta_star)
    eye = torch.eye(2, dtype=problem.x.dtype)
    out: dict[str, Tensor] = {}
    for name, c, k in (
        ("gd", scales[0], eye),
        ("ngd", scales[1], torch.linalg.solve(h_mat + jitter * eye, h_mat)),
    ):
        b = eye - step * c * (k @ h_mat if name == "gd" else k)
        evals, evecs = torch.linalg.eig(b)
        powers = evals.unsqueeze(0) ** t_idx.unsqueeze(1).to(evals.dtype)  # (T, 2)
        bt = (evecs.unsqueeze(0) * powers.unsqueeze(1)) @ torch.linalg.inv(evecs)  # (T, 2, 2)
        dev = (start - theta_star).to(bt.dtype)
        out[name] = (theta_star + torch.einsum("tij,sj->tsi", bt, dev).real).to(problem.x.dtype)
    # empirical Fisher: quadratic polynomial coefficients from the data moments
    x, y, n = problem.x, problem.y, problem.n
    m4 = torch.einsum("ni,nj,nk,nl->ijkl", x, x, x, x) / n
    m3 = torch.einsum("ni,nj,nk,n->ijk", x, x, x, y) / n
    m2 = torch.einsum("ni,nj,n->ij", x, x, y**2) / n
    coef = [
        [
            float(m4[i, j, 0, 0]),
            float(2 * m4[i, j, 0, 1]),
            float(m4[i, j, 1, 1]),
            float(-2 * m3[i, j, 0]),
            float(-2 * m3[i, j, 1]),
            float(m2[i, j]),
        ]
        for i, j in ((0, 0), (0, 1), (1, 1))
    ]
    hm = h_mat.tolist()
    rhs = (h_mat @ theta_star).tolist()  # gradient = H theta - H theta*
    hc, record = step * scales[2], set(times)
    paths = []
    for s0, s1 in start.tolist():
        t0, t1, path = s0, s1, [(s0, s1)]
        for t in range(1, num_steps):
            q = (t0 * t0, t0 * t1, t1 * t1, t0, t1)
            a = sum(u * v for u, v in zip(coef[0], q, strict=False)) + coef[0][5] + jitter
            bb = sum(u * v for u, v in zip(coef[1], q, strict=False)) + coef[1][5]
            cc = sum(u * v for u, v in zip(coef[2], q, strict=False)) + coef[2][5] + jitter
            g0 = hm[0][0] * t0 + hm[0][1] * t1 - rhs[0]
            g1 = hm[1][0] * t0 + hm[1][1] * t1 - rhs[1]
            det = a * cc - bb * bb
            t0, t1 = t0 - hc * (cc * g0 - bb * g1) / det, t1 - hc * (a * g1 - bb * g0) / det
            if t in record:
                path.append((t0, t1))
        paths.append(path)
    out["ef"] = torch.tensor(paths, dtype=problem.x.dtype).transpose(0, 1)
    for name, path in out.items():
        if not bool(torch.isfinite(path).all()):
            raise ValueError(f"the {name} flow diverged (non-finite values); reduce step")
    return out
