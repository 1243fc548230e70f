r"""Gradient fields and particle flows on the mixture manifold: natural vs Euclidean.

The natural gradient :math:`F^{-1}\nabla L` (closed-form 2x2 solves over whole batches), the
angle it makes with the Euclidean gradient, and the two flows from the same particles
:cite:`amari1998natural`. See :mod:`igbook.mixtures`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from igbook._validation import (
    as_tensor,
    check_finite,
    check_integer,
    check_nonnegative_real,
    check_positive_real,
)
from igbook.mixtures.model import MixtureLoss, QuadratureRule, check_theta, fisher
from igbook.mixtures.spectrum import fisher_eigen

__all__ = ["natural_gradient_field", "gradient_angle", "flow", "flow_pair"]


# ------------------------------------------------------------------------------------------
# natural gradient field, angles, flows
def _solve2(f: Tensor, g: Tensor) -> Tensor:
    a, b, c = f[..., 0, 0], f[..., 0, 1], f[..., 1, 1]
    det = a * c - b * b
    return torch.stack(
        [(c * g[..., 0] - b * g[..., 1]) / det, (a * g[..., 1] - b * g[..., 0]) / det], -1
    )


def natural_gradient_field(
    theta: object, loss: MixtureLoss, *, damping: float = 0.0, rule: QuadratureRule | None = None
) -> tuple[Tensor, Tensor]:
    r"""Euclidean gradient :math:`g` and natural gradient :math:`(F+\lambda I)^{-1}g` at every ``theta``.

    The 2x2 systems are solved in closed form for the whole batch. With ``damping = 0`` a
    point on (or numerically at) the singular line :math:`\mu_1=\mu_2`, where
    :math:`\lambda_{\min}\le 10^{-12}\lambda_{\max}`, raises :class:`ValueError`; pass
    ``damping > 0`` there.
    """
    if not isinstance(loss, MixtureLoss):
        raise TypeError(
            f"loss must be a MixtureLoss (KLToTarget or NegativeLogLikelihood), got {type(loss).__name__}"
        )
    lam = check_nonnegative_real(damping, "damping")
    theta = check_theta(theta)
    g = loss.gradient(theta)
    f = fisher(theta, loss.sigma, rule=rule)
    if lam == 0.0:
        evals, _ = fisher_eigen(f)
        bad = evals[..., 0] <= 1e-12 * evals[..., 1]
        if bool(bad.any()):
            raise ValueError(
                f"the Fisher matrix is singular at {int(bad.sum())} point(s) (mu1 == mu2: the information "
                "singularity); pass damping > 0"
            )
    f = f + lam * torch.eye(2, dtype=f.dtype)
    return g, _solve2(f, g)


def gradient_angle(u: object, v: object) -> Tensor:
    r"""Angle in degrees between vectors ``u`` and ``v`` along their last axis (shape ``batch``)."""
    u = check_finite(as_tensor(u, "u"), "u")
    v = check_finite(as_tensor(v, "v", dtype=u.dtype), "v")
    nu, nv = torch.linalg.vector_norm(u, dim=-1), torch.linalg.vector_norm(v, dim=-1)
    if bool((nu == 0).any()) or bool((nv == 0).any()):
        raise ValueError(
            "u and v must be non-zero vectors (the angle of a zero vector is undefined)"
        )
    if u.shape[-1] == 2 and v.shape[-1] == 2:
        # atan2 form: accurate for tiny angles, where arccos loses half the digits
        cross = u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]
        return torch.rad2deg(torch.atan2(cross.abs(), (u * v).sum(-1)))
    cos = ((u * v).sum(-1) / (nu * nv)).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.arccos(cos))


def flow_pair(
    particles: object,
    loss: MixtureLoss,
    *,
    steps: int = 100,
    dt_natural: float = 0.05,
    dt_euclidean: float = 0.05,
    damping: float = 1e-3,
    max_step: float | None = None,
) -> tuple[Tensor, Tensor]:
    r"""The natural and the Euclidean flow of :func:`flow` from the same particles, integrated together.

    Each Euler step evaluates the loss gradient once for both particle sets (one batched
    quadrature) and the Fisher only for the natural set, which costs about half of two
    :func:`flow` calls. Returns ``(natural_paths, euclidean_paths)``, each of shape
    ``(steps + 1,) + particles.shape``; they agree with ``flow(..., method=...)`` up to the
    quadrature error.
    """
    if not isinstance(loss, MixtureLoss):
        raise TypeError(f"loss must be a MixtureLoss, got {type(loss).__name__}")
    steps = check_integer(steps, "steps", minimum=1)
    dt_n, dt_e = (
        check_positive_real(dt_natural, "dt_natural"),
        check_positive_real(dt_euclidean, "dt_euclidean"),
    )
    lam = check_positive_real(damping, "damping")
    cap = 0.25 * loss.sigma if max_step is None else check_positive_real(max_step, "max_step")
    th0 = check_theta(particles, "particles")
    shape = th0.shape
    nat, euc = th0.reshape(-1, 2).clone(), th0.reshape(-1, 2).clone()
    k = nat.shape[0]
    eye = lam * torch.eye(2, dtype=nat.dtype)
    out_n, out_e = [nat], [euc]
    for _ in range(steps):
        g = loss.gradient(torch.cat([nat, euc]))
        f = fisher(nat, loss.sigma) + eye
        step = torch.cat([-dt_n * _solve2(f, g[:k]), -dt_e * g[k:]])
        n = torch.linalg.vector_norm(step, dim=-1, keepdim=True)
        step = step * torch.clamp(cap / n.clamp_min(1e-300), max=1.0)
        nat, euc = nat + step[:k], euc + step[k:]
        out_n.append(nat)
        out_e.append(euc)
    return torch.stack(out_n).reshape(steps + 1, *shape), torch.stack(out_e).reshape(
        steps + 1, *shape
    )


def flow(
    particles: object,
    loss: MixtureLoss,
    *,
    method: str = "natural",
    steps: int = 100,
    dt: float = 0.05,
    damping: float = 1e-3,
    max_step: float | None = None,
) -> Tensor:
    r"""Particles following the negative natural or Euclidean gradient field, by explicit Euler steps.

    .. math:: \theta_{t+1} = \theta_t - \Delta t\,(F(\theta_t)+\lambda I)^{-1}\nabla L(\theta_t)
       \quad\text{or}\quad \theta_{t+1} = \theta_t - \Delta t\,\nabla L(\theta_t).

    Near the singular line the undamped natural field diverges (the exchange component of
    :math:`\nabla L` vanishes like :math:`|\mu_1-\mu_2|` while :math:`\lambda_{\min}` vanishes
    like :math:`|\mu_1-\mu_2|^2`), so the flow uses damping :math:`\lambda>0` (required) and
    clips each displacement to ``max_step`` (default :math:`0.25\sigma`).

    Returns the paths, shape ``(steps + 1,) + particles.shape``.
    """
    if method not in ("natural", "euclidean"):
        raise ValueError(f"method must be 'natural' or 'euclidean', got {method!r}")
    if not isinstance(loss, MixtureLoss):
        raise TypeError(f"loss must be a MixtureLoss, got {type(loss).__name__}")
    steps = check_integer(steps, "steps", minimum=1)
    dt = check_positive_real(dt, "dt")
    lam = (
        check_positive_real(damping, "damping")
        if method == "natural"
        else check_nonnegative_real(damping, "damping")
    )
    cap = 0.25 * loss.sigma if max_step is None else check_positive_real(max_step, "max_step")
    th = check_theta(particles, "particles").clone()
    out = [th]
    for _ in range(steps):
        if method == "natural":
            _, d = natural_gradient_field(th, loss, damping=lam)
        else:
            d = loss.gradient(th)
        step = -dt * d
        n = torch.linalg.vector_norm(step, dim=-1, keepdim=True)
        step = step * torch.clamp(cap / n.clamp_min(1e-300), max=1.0)
        th = th + step
        out.append(th)
    return torch.stack(out)
