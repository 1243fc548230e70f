r"""Fisher information of a differentiable log-density.

For a family :math:`p(x\mid\theta)` the Fisher information is

.. math::

    F(\theta) = \mathbb{E}_{p(x\mid\theta)}\big[\nabla_\theta \log p(x\mid\theta)\,
    \nabla_\theta \log p(x\mid\theta)^\top\big]
    = -\mathbb{E}_{p(x\mid\theta)}\big[\nabla^2_\theta \log p(x\mid\theta)\big]
    :cite:`amari1998natural`.

The functions below take ``log_prob(theta, x) -> scalar`` for a *single* ``x`` (a pure
function, e.g. :meth:`igbook.families.ExponentialFamily.log_prob_params`) and evaluate the expectation
either exactly, as a weighted sum over a finite support (pass the support as ``x`` and the
probabilities as ``weights``), or as a Monte Carlo average over samples (``weights=None``).
Per-sample derivatives are vectorized with :func:`torch.func.vmap`; there are no Python loops
over samples.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.func import grad, hessian, jacrev, vmap

from igbook._validation import (
    as_tensor,
    check_callable,
    check_count,
    check_draws,
    check_finite,
    check_nonempty,
    check_positive_semidefinite,
    check_seed,
    check_shape,
)

__all__ = [
    "score",
    "fisher_from_scores",
    "score_covariance",
    "expected_negative_hessian",
    "fisher_monte_carlo",
    "pullback_metric",
    "reparameterized_fisher",
    "kl_quadratic_form",
]

LogProb = Callable[[Tensor, Tensor], Tensor]


def _theta(theta: Tensor) -> Tensor:
    theta = as_tensor(theta, "theta")
    if theta.ndim != 1:
        raise ValueError(
            f"theta must be a flat parameter vector (1-D), got shape {tuple(theta.shape)}"
        )
    return check_finite(theta, "theta")


def _weights(weights: Tensor | None, n: int, dtype: torch.dtype) -> Tensor:
    if weights is None:
        return torch.full((n,), 1.0 / n, dtype=dtype)
    w = as_tensor(weights, "weights", dtype=dtype)
    check_shape(w, "weights", (n,))
    check_finite(w, "weights")
    if not bool((w >= 0).all()):
        raise ValueError("weights must be non-negative (probabilities of the support points)")
    total = float(w.sum())
    if abs(total - 1.0) > 1e-6:
        raise ValueError(
            f"weights must sum to 1 (probabilities of the whole support), got {total:.8g}; "
            "if the support was truncated, add the missing tail or renormalize on purpose"
        )
    return w


def _samples(x: Tensor) -> Tensor:
    x = as_tensor(x, "x")
    if x.ndim == 0:
        raise ValueError("x must hold a batch of samples along its first axis, got a scalar")
    check_nonempty(x, "x")
    return check_finite(x, "x")


def score(log_prob: LogProb, theta: Tensor, x: Tensor) -> Tensor:
    r"""Per-sample scores :math:`s_n = \nabla_\theta \log p(x_n\mid\theta)`, shape ``(n, d)``."""
    check_callable(log_prob, "log_prob")
    theta, x = _theta(theta), _samples(x)
    return vmap(grad(log_prob), in_dims=(None, 0))(theta, x.to(theta.dtype))


def fisher_from_scores(scores: Tensor, weights: Tensor | None = None) -> Tensor:
    r""":math:`\sum_n w_n s_n s_n^\top` (uniform :math:`w_n = 1/n` by default)."""
    scores = as_tensor(scores, "scores")
    if scores.ndim != 2:
        raise ValueError(f"scores must have shape (n, d), got {tuple(scores.shape)}")
    check_nonempty(scores, "scores")
    check_finite(scores, "scores")
    w = _weights(weights, scores.shape[0], scores.dtype)
    return (scores * w.unsqueeze(1)).T @ scores


def score_covariance(
    log_prob: LogProb, theta: Tensor, x: Tensor, weights: Tensor | None = None
) -> Tensor:
    r"""Fisher information as the second moment of the score.

    .. math:: F = \sum_n w_n\, \nabla_\theta\log p(x_n\mid\theta)\,\nabla_\theta\log p(x_n\mid\theta)^\top

    Parameters
    ----------
    log_prob
        ``log_prob(theta, x)`` for one sample ``x``, differentiable in ``theta``.
    theta
        Flat parameter vector, shape ``(d,)``.
    x
        Support points or samples along the first axis.
    weights
        Probabilities :math:`p(x_n\mid\theta)` of the support points (exact Fisher), or ``None``
        for a Monte Carlo average over samples drawn from :math:`p(\cdot\mid\theta)`.
    """
    s = score(log_prob, theta, x)
    return fisher_from_scores(s, weights)


def expected_negative_hessian(
    log_prob: LogProb, theta: Tensor, x: Tensor, weights: Tensor | None = None
) -> Tensor:
    r"""Fisher information as :math:`-\sum_n w_n \nabla^2_\theta \log p(x_n\mid\theta)`."""
    check_callable(log_prob, "log_prob")
    theta, x = _theta(theta), _samples(x)
    h = vmap(hessian(log_prob), in_dims=(None, 0))(theta, x.to(theta.dtype))
    w = _weights(weights, x.shape[0], theta.dtype)
    return -(h * w[:, None, None]).sum(0)


def fisher_monte_carlo(
    log_prob: LogProb,
    theta: Tensor,
    sampler: Callable[[int, torch.Generator], Tensor],
    n: int,
    *,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    r"""Monte Carlo Fisher from ``n`` seeded samples, with its entrywise standard error.

    ``sampler(n, generator)`` must return ``n`` samples of :math:`p(\cdot\mid\theta)`. Returns
    ``(F_hat, se)`` where ``se`` is the standard error of each entry of ``F_hat``, so that a
    test can compare with a closed form at a stated number of standard errors.
    """
    check_callable(log_prob, "log_prob")
    check_callable(sampler, "sampler")
    n = check_count(n, "n", minimum=2)  # a standard error needs two samples
    g = torch.Generator().manual_seed(check_seed(seed))
    x = check_draws(sampler(n, g), "sampler", n)
    s = score(log_prob, theta, x)
    outer = s.unsqueeze(2) * s.unsqueeze(1)
    return outer.mean(0), outer.std(0, unbiased=True) / n**0.5


def pullback_metric(metric: Tensor, jacobian: Tensor) -> Tensor:
    r"""Pull a metric back through a change of coordinates: :math:`J^\top F J`.

    If :math:`\theta = g(\phi)` and :math:`J = \partial\theta/\partial\phi`, the Fisher
    information in :math:`\phi` is :math:`F_\phi = J^\top F_\theta J`: the metric is a
    (0, 2)-tensor.
    """
    metric = as_tensor(metric, "metric")
    jacobian = check_finite(as_tensor(jacobian, "jacobian", dtype=metric.dtype), "jacobian")
    if metric.ndim != 2:
        raise ValueError(f"metric must be a (d, d) matrix, got shape {tuple(metric.shape)}")
    check_positive_semidefinite(metric, "metric")
    if jacobian.ndim != 2 or jacobian.shape[0] != metric.shape[0]:
        raise ValueError(
            f"jacobian must have shape ({metric.shape[0]}, k) to match metric "
            f"{tuple(metric.shape)}, got {tuple(jacobian.shape)}"
        )
    return jacobian.T @ metric @ jacobian


def reparameterized_fisher(
    fisher_fn: Callable[[Tensor], Tensor], to_theta: Callable[[Tensor], Tensor], phi: Tensor
) -> Tensor:
    r"""Fisher information in new coordinates :math:`\phi`, given :math:`\theta = g(\phi)`.

    ``fisher_fn(theta)`` returns the Fisher matrix in the old coordinates; the Jacobian of
    ``to_theta`` is taken with :func:`torch.func.jacrev`.
    """
    check_callable(fisher_fn, "fisher_fn")
    check_callable(to_theta, "to_theta")
    phi = _theta(phi)
    jac = jacrev(to_theta)(phi)
    return pullback_metric(fisher_fn(to_theta(phi)), jac)


def kl_quadratic_form(fisher: Tensor, delta: Tensor) -> Tensor:
    r"""The local approximation :math:`\tfrac12\,\delta^\top F\,\delta` of
    :math:`\mathrm{KL}(p_\theta\|p_{\theta+\delta})`."""
    fisher = as_tensor(fisher, "fisher")
    if fisher.ndim != 2:
        raise ValueError(f"fisher must be a (d, d) matrix, got shape {tuple(fisher.shape)}")
    check_positive_semidefinite(fisher, "fisher")
    delta = check_finite(as_tensor(delta, "delta", dtype=fisher.dtype), "delta")
    if delta.ndim == 0 or delta.shape[-1] != fisher.shape[0]:
        raise ValueError(
            f"delta must have last axis of size {fisher.shape[0]} to match fisher, got {tuple(delta.shape)}"
        )
    return 0.5 * torch.einsum("...i,ij,...j->...", delta, fisher, delta)
