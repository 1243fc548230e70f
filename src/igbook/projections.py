r"""Divergences and projections of dually flat geometry; EM as alternating projections; Chentsov; Jeffreys.

On a finite sample space (the simplex :math:`\Delta_{m-1}`), with a feature matrix
:math:`F\in\R^{m\times d}`:

- the *exponential family* through a base point :math:`b`, :math:`q_\theta\propto b\,e^{F\theta}`, is
  e-flat; the *linear family* :math:`\{q: F^\top q = c\}` is m-flat;
- the **m-projection** of :math:`p` onto an e-flat family minimizes :math:`\KL{p}{q}` over it and is the
  member with the moments of :math:`p` (:func:`m_projection`); the **e-projection** of :math:`r` onto a
  linear family minimizes :math:`\KL{q}{r}` over it and is the exponential tilt of :math:`r`
  (:func:`e_projection`) :cite:`csiszar1975divergence,amari2000methods`;
- both satisfy the generalized Pythagorean theorem, checked by :func:`pythagorean_defect`.

The EM algorithm for a Gaussian mixture (:func:`em_gaussian_mixture`) alternates an e-projection onto
the data manifold (the E-step) and an m-projection onto the model manifold (the M-step), each
decreasing the same divergence :func:`em_free_energy`
:cite:`dempster1977maximum,csiszar1984information,amari1995information`.

:func:`alpha_divergence` is Amari's alpha-family, :func:`markov_embedding` builds the maps under
which Chentsov's theorem says the Fisher metric is the only invariant one
:cite:`chentsov1982statistical`, and :func:`jeffreys_density` is the Riemannian volume element
:math:`\sqrt{\det g}` :cite:`jeffreys1946invariant`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.func import vmap

from igbook._validation import (
    as_tensor,
    check_finite,
    check_positive,
    check_shape,
    check_simplex,
)
from igbook.connections import Chart, fisher_metric
from igbook.families import Gaussian

__all__ = [
    "EMTrace",
    "MixtureParams",
    "Projection",
    "alpha_divergence",
    "e_projection",
    "em_e_step",
    "em_free_energy",
    "em_gaussian_mixture",
    "em_m_step",
    "exponential_tilt",
    "jeffreys_density",
    "kl_divergence",
    "m_projection",
    "markov_embedding",
    "pythagorean_defect",
]


# ---------------------------------------------------------------------------------- divergences
def _pair(p: object, q: object, *, interior: bool = True) -> tuple[Tensor, Tensor]:
    p_t = check_simplex(as_tensor(p, "p"), "p", interior=interior)
    q_t = check_simplex(as_tensor(q, "q", dtype=p_t.dtype), "q", interior=True)
    if p_t.shape[-1] != q_t.shape[-1]:
        raise ValueError(
            f"p and q must have the same number of categories, got {p_t.shape[-1]} and {q_t.shape[-1]}"
        )
    return p_t, q_t


def kl_divergence(p: object, q: object) -> Tensor:
    r""":math:`\KL{p}{q} = \sum_i p_i\log(p_i/q_i)` along the last axis (``0 log 0 = 0``)
    :cite:`kullback1951information`."""
    p_t, q_t = _pair(p, q, interior=False)
    return torch.where(p_t > 0, p_t * (torch.log(p_t) - torch.log(q_t)), torch.zeros_like(p_t)).sum(
        -1
    )


def alpha_divergence(p: object, q: object, alpha: float) -> Tensor:
    r"""Amari's alpha-divergence of positive vectors (last axis), in the convention :math:`D_{-1} = \mathrm{KL}(p\|q)`.

    .. math::

        D_\alpha(p\|q) = \frac4{1-\alpha^2}\sum_i\Big(\frac{1-\alpha}2p_i + \frac{1+\alpha}2q_i
        - p_i^{\frac{1-\alpha}2}q_i^{\frac{1+\alpha}2}\Big),\qquad \alpha\ne\pm1,

    with the limits :math:`D_{-1}(p\|q) = \sum p\log\frac pq - p + q` and :math:`D_{1}(p\|q) = D_{-1}(q\|p)`.
    :math:`D_0 = 2\sum(\sqrt p-\sqrt q)^2` (twice the squared Hellinger distance);
    :math:`D_\alpha(p\|q) = D_{-\alpha}(q\|p)`;
    every :math:`D_\alpha` is :math:`\tfrac12\,\delta^\top g\,\delta + O(\delta^3)` with the Fisher metric
    :cite:`amari2000methods,amari2016information`. Entries must be positive (not necessarily normalized).
    """
    p_t = check_positive(as_tensor(p, "p"), "p")
    q_t = check_positive(as_tensor(q, "q", dtype=p_t.dtype), "q")
    if p_t.shape[-1] != q_t.shape[-1]:
        raise ValueError(
            f"p and q must have the same last dimension, got {p_t.shape[-1]} and {q_t.shape[-1]}"
        )
    a = float(check_finite(as_tensor(alpha, "alpha"), "alpha"))
    if abs(a + 1) < 1e-12:
        return (p_t * torch.log(p_t / q_t) - p_t + q_t).sum(-1)
    if abs(a - 1) < 1e-12:
        return (q_t * torch.log(q_t / p_t) - q_t + p_t).sum(-1)
    u, w = (1 - a) / 2, (1 + a) / 2
    return 4 / (1 - a * a) * (u * p_t + w * q_t - p_t**u * q_t**w).sum(-1)


# ---------------------------------------------------------------------------------- projections
@dataclass(frozen=True)
class Projection:
    """A projection: the point ``q`` and its coordinate ``theta`` in the exponential family that contains it."""

    q: Tensor
    theta: Tensor
    iterations: int


def exponential_tilt(
    base: object, features: object, target: object, *, tol: float = 1e-12, max_iter: int = 100
) -> Projection:
    r"""The member :math:`q_\theta\propto b\,e^{F\theta}` with moments :math:`F^\top q_\theta = c`.

    Newton's method on the convex dual :math:`\psi(\theta) = \log\sum_i b_ie^{(F\theta)_i} - \theta^\top c`,
    whose gradient is :math:`F^\top q_\theta - c` and Hessian the covariance of the features under
    :math:`q_\theta` (the Fisher matrix). ``target`` must lie in the interior of the convex hull of
    the rows of ``features`` (else no solution exists and :class:`ValueError` is raised)
    :cite:`csiszar1975divergence,wainwright2008graphical`.
    """
    b = check_simplex(as_tensor(base, "base"), "base")
    check_shape(b, "base", (None,))
    f = check_finite(as_tensor(features, "features", dtype=b.dtype), "features")
    if f.ndim == 1:
        f = f.unsqueeze(-1)
    check_shape(f, "features", (b.shape[0], None))
    c = check_finite(as_tensor(target, "target", dtype=b.dtype), "target").reshape(-1)
    check_shape(c, "target", (f.shape[1],))
    theta = torch.zeros(f.shape[1], dtype=b.dtype)
    logb = torch.log(b)
    for it in range(1, max_iter + 1):
        q = torch.softmax(logb + f @ theta, 0)
        grad = f.T @ q - c
        if float(grad.abs().max()) < tol * max(1.0, float(f.abs().max())):
            return Projection(q, theta, it)
        mean = f.T @ q
        cov = (f * q.unsqueeze(-1)).T @ f - torch.outer(mean, mean)
        step = torch.linalg.lstsq(cov, grad.unsqueeze(-1)).solution.squeeze(-1)

        def gnorm(th: Tensor) -> float:
            return float((f.T @ torch.softmax(logb + f @ th, 0) - c).abs().max())

        t, g0 = 1.0, float(grad.abs().max())
        while t > 1e-10 and not gnorm(theta - t * step) < g0:
            t /= 2
        if t <= 1e-10:
            break
        theta = theta - t * step
    raise ValueError(
        "target moments are not attained by the exponential family (outside the interior of the "
        "convex hull of the feature rows?)"
    )


def m_projection(p: object, features: object, base: object | None = None) -> Projection:
    r"""m-projection of ``p`` onto the exponential family :math:`\{q\propto b\,e^{F\theta}\}`:
    :math:`\argmin_q\KL{p}{q}`.

    Setting the gradient of :math:`\KL{p}{q_\theta} = \mathrm{const} - \theta^\top F^\top p + \log Z(\theta)` to zero
    gives moment matching, :math:`F^\top q = F^\top p`; ``base`` defaults to the uniform distribution
    :cite:`amari2000methods`.
    """
    p_t = check_simplex(as_tensor(p, "p"), "p", interior=False)
    check_shape(p_t, "p", (None,))
    f = as_tensor(features, "features", dtype=p_t.dtype)
    if f.ndim == 1:
        f = f.unsqueeze(-1)
    check_shape(f, "features", (p_t.shape[0], None))
    b = torch.full_like(p_t, 1.0 / p_t.shape[0]) if base is None else base
    return exponential_tilt(b, f, f.T @ p_t)


def e_projection(r: object, features: object, target: object) -> Projection:
    r"""e-projection of ``r`` onto the linear family :math:`\{q: F^\top q = c\}`: :math:`\argmin_q\KL{q}{r}`.

    The Lagrangian gives :math:`q\propto r\,e^{F\lambda}`: the exponential tilt of ``r`` with the
    required moments (minimum discrimination information) :cite:`csiszar1975divergence,kullback1951information`.
    """
    return exponential_tilt(r, features, target)


def pythagorean_defect(p: object, q: object, r: object) -> Tensor:
    r""":math:`\KL{p}{r} - \KL{p}{q} - \KL{q}{r} = \sum_i (p_i - q_i)(\log q_i - \log r_i)`.

    It vanishes when the m-geodesic from ``p`` to ``q`` and the e-geodesic from ``q`` to ``r`` meet
    orthogonally at ``q``: the generalized Pythagorean theorem :cite:`amari2000methods,csiszar1975divergence`.
    """
    return kl_divergence(p, r) - kl_divergence(p, q) - kl_divergence(q, r)


# -------------------------------------------------------------------- EM for a Gaussian mixture
@dataclass(frozen=True)
class MixtureParams:
    """A one-dimensional Gaussian mixture: ``weights``, ``means``, ``sigmas``, each of shape ``(K,)``."""

    weights: Tensor
    means: Tensor
    sigmas: Tensor

    def __post_init__(self) -> None:
        w = check_simplex(as_tensor(self.weights, "weights"), "weights")
        check_shape(w, "weights", (None,))
        m = check_finite(as_tensor(self.means, "means", dtype=w.dtype), "means")
        s = check_positive(as_tensor(self.sigmas, "sigmas", dtype=w.dtype), "sigmas")
        check_shape(m, "means", (w.shape[0],))
        check_shape(s, "sigmas", (w.shape[0],))
        object.__setattr__(self, "weights", w)
        object.__setattr__(self, "means", m)
        object.__setattr__(self, "sigmas", s)


def _joint_log(x: Tensor, params: MixtureParams) -> Tensor:
    """:math:`\\log p_\\theta(x_i, z=k) = \\log w_k + \\log\\mathcal N(x_i; m_k, s_k^2)`, shape ``(n, K)``."""
    comp = vmap(Gaussian.log_prob_params, in_dims=(0, None))(
        torch.stack([params.means, params.sigmas], -1), x
    )
    return (torch.log(params.weights).unsqueeze(-1) + comp).T


def _data(x: object) -> Tensor:
    t = check_finite(as_tensor(x, "x"), "x")
    check_shape(t, "x", (None,))
    if t.shape[0] < 2:
        raise ValueError(f"x must hold at least 2 points, got {t.shape[0]}")
    return t


def em_e_step(x: object, params: MixtureParams) -> Tensor:
    r"""E-step: responsibilities :math:`r_{ik} = p_\theta(z=k\mid x_i)`, shape ``(n, K)``.

    It is the e-projection of the model :math:`p_\theta(x, z)` onto the data manifold
    :math:`\{q(x,z) = \hat p(x)\,q(z\mid x)\}`: among all such :math:`q`, the posterior minimizes
    :math:`\KL{q}{p_\theta}` :cite:`csiszar1984information,amari1995information`.
    """
    return torch.softmax(_joint_log(_data(x), params), -1)


def em_m_step(x: object, resp: object) -> MixtureParams:
    r"""M-step: :math:`N_k = \sum_ir_{ik}`, :math:`w_k = N_k/n`, :math:`m_k = \sum_ir_{ik}x_i/N_k`,
    :math:`s_k^2 = \sum_ir_{ik}(x_i-m_k)^2/N_k`.

    It is the m-projection of the completed data :math:`q(x,z)` onto the mixture model, i.e. the
    maximum-likelihood fit to the weighted complete data :cite:`dempster1977maximum,amari1995information`.
    """
    xt = _data(x)
    r = check_simplex(as_tensor(resp, "resp", dtype=xt.dtype), "resp", interior=False)
    check_shape(r, "resp", (xt.shape[0], None))
    nk = r.sum(0)
    if not bool((nk > 0).all()):
        raise ValueError("resp gives a component no weight: every column must have a positive sum")
    means = (r * xt.unsqueeze(-1)).sum(0) / nk
    var = (r * (xt.unsqueeze(-1) - means) ** 2).sum(0) / nk
    return MixtureParams(nk / xt.shape[0], means, torch.sqrt(var))


def em_free_energy(x: object, resp: object, params: MixtureParams) -> Tensor:
    r"""The divergence EM decreases: :math:`\frac1n\sum_{i,k}r_{ik}\big(\log r_{ik} - \log p_\theta(x_i, z=k)\big)`.

    It is :math:`\KL{q}{p_\theta}` between the completed data :math:`q = \hat p(x)\,r(z\mid x)` and the
    model, up to the constant entropy of the empirical :math:`\hat p`; at the E-step's responsibilities
    it equals minus the mean log-likelihood :cite:`neal1998view,csiszar1984information`.
    """
    xt = _data(x)
    r = as_tensor(resp, "resp", dtype=xt.dtype)
    check_shape(r, "resp", (xt.shape[0], params.weights.shape[0]))
    ent = torch.where(r > 0, r * torch.log(r), torch.zeros_like(r))
    return (ent - r * _joint_log(xt, params)).sum() / xt.shape[0]


@dataclass(frozen=True)
class EMTrace:
    """Every iterate of EM: ``params[t]``, ``resp[t]`` (the E-step from ``params[t]``), ``free_energy``
    after each half-step (``[F(r_0, θ_0), F(r_0, θ_1), F(r_1, θ_1), ...]`` interleaved as E, M, E, ...),
    and the mean ``log_likelihood`` at each ``params[t]``."""

    params: list[MixtureParams]
    resp: list[Tensor]
    free_energy: Tensor
    log_likelihood: Tensor


def em_gaussian_mixture(x: object, init: MixtureParams, steps: int) -> EMTrace:
    r"""Run ``steps`` EM iterations for a one-dimensional Gaussian mixture from ``init``.

    Each iteration is an E-step (:func:`em_e_step`, an e-projection) followed by an M-step
    (:func:`em_m_step`, an m-projection); the free energy :func:`em_free_energy` decreases at every
    half-step, so the log-likelihood increases :cite:`dempster1977maximum,csiszar1984information`.
    """
    xt = _data(x)
    if not isinstance(init, MixtureParams):
        raise TypeError(f"init must be a MixtureParams, got {type(init).__name__}")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    params, resps, fe, ll = [init], [], [], []
    for _ in range(steps):
        p = params[-1]
        ll.append(torch.logsumexp(_joint_log(xt, p), -1).mean())
        r = em_e_step(xt, p)
        fe.append(em_free_energy(xt, r, p))
        p_new = em_m_step(xt, r)
        fe.append(em_free_energy(xt, r, p_new))
        resps.append(r)
        params.append(p_new)
    ll.append(torch.logsumexp(_joint_log(xt, params[-1]), -1).mean())
    return EMTrace(params, resps, torch.stack(fe), torch.stack(ll))


# ------------------------------------------------------------------------- Chentsov and Jeffreys
def markov_embedding(weights: Sequence[object]) -> Tensor:
    r"""The matrix :math:`M\in\R^{m\times n}` of a Markov embedding :math:`\Delta_{n-1}\to\Delta_{m-1}`.

    Outcome :math:`i` is split into the cells of block :math:`i` with the probabilities
    ``weights[i]`` (a point of a simplex): :math:`(Mp)_j = w_{ij}\,p_i` for the cells :math:`j` of block
    :math:`i`. Chentsov's theorem: a metric on the simplices that every such embedding preserves is a
    constant multiple of the Fisher metric :cite:`chentsov1982statistical,campbell1986extended`.
    """
    if not isinstance(weights, (list, tuple)) or len(weights) < 2:
        raise ValueError(
            "weights must be a list of at least 2 probability vectors (one block per outcome)"
        )
    blocks = []
    for i, w in enumerate(weights):
        wt = as_tensor(w, f"weights[{i}]").reshape(-1)
        if wt.shape[0] == 1:
            if not abs(float(wt[0]) - 1.0) < 1e-12:
                raise ValueError(f"weights[{i}] must sum to 1, got {float(wt[0]):.6g}")
        else:
            check_simplex(wt, f"weights[{i}]")
        blocks.append(wt)
    m = sum(b.shape[0] for b in blocks)
    out = torch.zeros(m, len(blocks), dtype=blocks[0].dtype)
    row = 0
    for i, b in enumerate(blocks):
        out[row : row + b.shape[0], i] = b
        row += b.shape[0]
    return out


def jeffreys_density(family: object, theta: object, chart: Chart = "params") -> Tensor:
    r"""Jeffreys' prior, unnormalized: the Riemannian volume element :math:`\sqrt{\det g(\theta)}` of the Fisher metric.

    Under a change of chart :math:`\theta = \theta(\phi)` it picks up :math:`|\det\partial\theta/\partial\phi|`,
    exactly like a density, so it defines the same prior in every parametrization
    :cite:`jeffreys1946invariant,amari2016information`. For the Bernoulli it is
    :math:`1/\sqrt{p(1-p)}` with total mass :math:`\pi`, the Fisher-Rao length of the family.
    """
    g = fisher_metric(family, theta, chart)
    return torch.sqrt(torch.linalg.det(g))
