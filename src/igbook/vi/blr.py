r"""The Bayesian learning rule (BLR) for Gaussian posteriors, full and diagonal.

The BLR :cite:`khan2023bayesian` minimizes the variational objective

.. math::

    \mathcal{L}(q) = \mathbb{E}_{q}[\bar\ell(\theta)] - \mathcal{H}(q),
    \qquad \bar\ell(\theta) = \sum_i \ell_i(\theta) - \log p_0(\theta),

over an exponential family :math:`q_\lambda` by natural-gradient descent. Because the Fisher
matrix of the family is :math:`\partial\mu/\partial\lambda`, the natural gradient in the
natural parameter :math:`\lambda` is the ordinary gradient in the mean parameter
:math:`\mu`, and the step reads

.. math::

    \lambda \leftarrow (1-\rho)\,\lambda - \rho\,\nabla_\mu \mathbb{E}_q[\bar\ell(\theta)].

For a Gaussian :math:`q = \mathcal{N}(m, S^{-1})` (natural parameters :math:`(Sm, -S/2)`,
mean parameters :math:`(m, S^{-1} + mm^\top)`), Bonnet's and Price's theorems
:cite:`opper2009variational` give
:math:`\nabla_{\mu_1}\mathbb{E}_q[\bar\ell] = \mathbb{E}_q[\nabla\bar\ell] - \mathbb{E}_q[\nabla^2\bar\ell]\,m`
and :math:`\nabla_{\mu_2}\mathbb{E}_q[\bar\ell] = \tfrac12\mathbb{E}_q[\nabla^2\bar\ell]`, so the
step becomes

.. math::

    S \leftarrow (1-\rho)\,S + \rho\,\mathbb{E}_q[\nabla^2\bar\ell(\theta)], \qquad
    m \leftarrow m - \rho\, S^{-1}\,\mathbb{E}_q[\nabla\bar\ell(\theta)]

(the new :math:`S` in the mean update). A diagonal Gaussian uses the diagonal of the
expected Hessian. The expectations are computed by the *delta method* (at the mean), by Monte
Carlo with exact Hessians, or by Monte Carlo with the gradient-only (Stein/Price) estimator
:math:`\mathbb{E}[\nabla^2\bar\ell] = S\,\mathbb{E}[(\theta - m)\nabla\bar\ell(\theta)^\top]`
used by IVON :cite:`shen2024variational`.

Conventions: ``precision`` is either a ``(d, d)`` symmetric positive-definite matrix (full
Gaussian) or a ``(d,)`` positive vector (diagonal Gaussian); ``loss`` maps a flat ``(d,)``
parameter vector to a scalar tensor and must be traceable by :mod:`torch.func`
(``grad``, ``hessian``, ``vmap``); ``lr`` is the BLR step size :math:`\rho`. The optimizers
built from these equations (VON, VOGN, Vadam, IVON) live in :mod:`igbook.optim.blr`.

Which curvature: here always the Hessian of :math:`\bar\ell` (``FisherType.HESSIAN`` in the
vocabulary of :class:`igbook.fisher.FisherType`), whose expectation under :math:`q` is what
the BLR needs; ``method`` only chooses how that expectation is estimated. When
:math:`\bar\ell` is a negative log-likelihood of a network, replacing the Hessian by the
generalized Gauss-Newton matrix or a Fisher (``FisherType.GGN``, ``EXACT``, ``MC``,
``EMPIRICAL``, for a likelihood of :mod:`igbook.fisher.likelihoods`) keeps the precision
positive definite: that is :class:`igbook.optim.VOGN` and its ``fisher_type``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor
from torch.func import grad as func_grad
from torch.func import hessian as func_hessian
from torch.func import vmap

from igbook._validation import (
    as_tensor,
    check_callable,
    check_choice,
    check_count,
    check_finite,
    check_nonempty,
    check_positive,
    check_positive_real,
    check_shape,
    check_symmetric_positive_definite,
    resolve_generator,
)

__all__ = [
    "GaussianState",
    "BLRTrace",
    "EXPECTATION_METHODS",
    "sample_gaussian",
    "gaussian_expectations",
    "natural_parameters",
    "from_natural_parameters",
    "mean_parameter_gradient",
    "blr_step",
    "blr_natural_step",
    "run_blr",
    "blr_surrogate_objective",
    "gaussian_kl",
    "gaussian_entropy",
]

#: The ways :func:`gaussian_expectations` computes :math:`\mathbb{E}_q[\nabla\bar\ell]` and
#: :math:`\mathbb{E}_q[\nabla^2\bar\ell]`.
EXPECTATION_METHODS = ("delta", "mc", "stein")

Loss = Callable[[Tensor], Tensor]


class GaussianState(NamedTuple):
    """A Gaussian :math:`\\mathcal{N}(m, S^{-1})` in mean/precision form.

    ``precision`` is ``(d, d)`` for a full Gaussian and ``(d,)`` for a diagonal one.
    """

    mean: Tensor
    precision: Tensor

    @property
    def diagonal(self) -> bool:
        """Whether the precision is stored as a vector (mean-field Gaussian)."""
        return self.precision.ndim == 1

    @property
    def covariance(self) -> Tensor:
        """:math:`S^{-1}` (a vector of variances for a diagonal Gaussian)."""
        if self.diagonal:
            return 1.0 / self.precision
        return torch.cholesky_inverse(torch.linalg.cholesky(self.precision))


class BLRTrace(NamedTuple):
    """Iterates of :func:`run_blr`: ``means`` is ``(T+1, d)``; ``precisions`` is
    ``(T+1, d, d)`` or ``(T+1, d)``; index 0 is the starting point."""

    means: Tensor
    precisions: Tensor


# --------------------------------------------------------------------------------------------
# validation (the generic checks are igbook._validation's; these say what a BLR state is)
# --------------------------------------------------------------------------------------------


def _check_state(mean: Tensor, precision: Tensor) -> tuple[Tensor, Tensor]:
    """Validate a Gaussian in mean/precision form; returns float tensors of one dtype.

    ``mean`` is a finite flat vector; ``precision`` a positive vector (diagonal Gaussian) or a
    symmetric positive-definite matrix (full Gaussian) of the matching size.
    """
    mean = as_tensor(mean, "mean")
    if mean.ndim != 1 or mean.numel() == 0:
        raise ValueError(
            f"mean must be a non-empty flat vector of shape (d,), got {tuple(mean.shape)}"
        )
    check_finite(mean, "mean")
    precision = as_tensor(precision, "precision", dtype=mean.dtype)
    d = mean.shape[0]
    if precision.ndim == 1:
        check_positive(check_shape(precision, "precision", (d,)), "precision (diagonal)")
    elif precision.ndim == 2:
        check_symmetric_positive_definite(check_shape(precision, "precision", (d, d)), "precision")
    else:
        raise ValueError(
            f"precision must have shape ({d},) (diagonal) or ({d}, {d}) (full), got {tuple(precision.shape)}"
        )
    return mean, precision


def _check_lr(lr: float, *, allow_above_one: bool) -> float:
    """The BLR step size: ``> 0``, and ``<= 1`` whenever the precision is updated."""
    rho = check_positive_real(lr, "lr")
    if not allow_above_one and rho > 1:
        raise ValueError(
            f"lr must lie in (0, 1] when the precision is updated (a convex combination of the old "
            f"precision and the expected Hessian), got {rho}"
        )
    return rho


def _check_loss(loss: Loss, mean: Tensor) -> None:
    """``loss`` is callable and returns a finite scalar tensor at the mean."""
    check_callable(loss, "loss")
    out = loss(mean)
    if not isinstance(out, Tensor):
        raise TypeError(f"loss must return a tensor, got {type(out).__name__}")
    if out.ndim != 0:
        raise ValueError(f"loss must return a scalar tensor, got shape {tuple(out.shape)}")
    if not bool(torch.isfinite(out)):
        raise ValueError("loss is not finite at the mean")


def _check_updated_precision(precision: Tensor, what: str) -> None:
    """An updated precision is still positive definite, or raise (no NaN from a bad step)."""
    try:
        if precision.ndim == 1:
            check_positive(precision, what)
        else:
            check_symmetric_positive_definite(precision, what)
    except ValueError:
        raise ValueError(
            f"{what} is not positive definite: the expected Hessian has too much negative "
            "curvature for this step; use a smaller lr, more Monte Carlo samples, or a "
            "Gauss-Newton/Fisher curvature (FisherType.GGN or EXACT, e.g. igbook.optim.VOGN)"
        ) from None


# --------------------------------------------------------------------------------------------
# sampling and expectations
# --------------------------------------------------------------------------------------------


def sample_gaussian(
    mean: Tensor,
    precision: Tensor,
    num_samples: int,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Draw ``num_samples`` points from :math:`\mathcal{N}(m, S^{-1})`, shape ``(n, d)``.

    With :math:`S = LL^\top` (Cholesky), :math:`\theta = m + L^{-\top}\varepsilon`,
    :math:`\varepsilon\sim\mathcal{N}(0, I)`, whose covariance is
    :math:`L^{-\top}L^{-1} = S^{-1}`; for a diagonal precision
    :math:`\theta = m + \varepsilon/\sqrt{s}`. The standard normals are drawn as one
    ``(n, d)`` tensor from ``generator`` (or a fresh one seeded with ``seed``).
    """
    mean, precision = _check_state(mean, precision)
    check_count(num_samples, "num_samples")
    gen = resolve_generator(seed, generator)
    eps = torch.randn(num_samples, mean.shape[0], generator=gen, dtype=mean.dtype)
    if precision.ndim == 1:
        return mean + eps / precision.sqrt()
    chol = torch.linalg.cholesky(precision)
    # solve L^T x = eps^T for x (upper-triangular system)
    x = torch.linalg.solve_triangular(chol.T, eps.T, upper=True).T
    return mean + x


def gaussian_expectations(
    loss: Loss,
    mean: Tensor,
    precision: Tensor,
    *,
    method: str = "delta",
    num_samples: int = 1,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    r"""Expected gradient and Hessian of ``loss`` under :math:`q = \mathcal{N}(m, S^{-1})`.

    Returns :math:`(\hat g, \hat H) \approx (\mathbb{E}_q[\nabla\bar\ell], \mathbb{E}_q[\nabla^2\bar\ell])`,
    with :math:`\hat H` of shape ``(d, d)`` for a full precision and its diagonal ``(d,)``
    for a diagonal one.

    Parameters
    ----------
    loss
        :math:`\bar\ell`, a ``torch.func``-traceable map from a ``(d,)`` tensor to a scalar.
    mean, precision
        :math:`m` and :math:`S` (``(d, d)`` or ``(d,)``).
    method
        ``"delta"``: the delta method, :math:`(\nabla\bar\ell(m), \nabla^2\bar\ell(m))`.
        ``"mc"``: Monte Carlo averages of :math:`\nabla\bar\ell(\theta_k)` and
        :math:`\nabla^2\bar\ell(\theta_k)` over :math:`\theta_k \sim q` (Bonnet's and Price's
        theorems, unbiased). ``"stein"``: the gradient-only estimator
        :math:`\hat H = \tfrac12(A + A^\top)`,
        :math:`A = \frac1n\sum_k \nabla\bar\ell(\theta_k)(\theta_k - m)^\top S` (diagonal:
        :math:`\hat H_j = s_j\frac1n\sum_k (\theta_{kj} - m_j)\,\partial_j\bar\ell(\theta_k)`),
        unbiased by Stein's lemma and used by IVON :cite:`shen2024variational`.
    num_samples
        Number of samples for ``"mc"`` and ``"stein"`` (ignored by ``"delta"``).
    seed, generator
        Randomness of the samples (one of them, or neither for the global generator).
    """
    mean, precision = _check_state(mean, precision)
    check_choice(method, "method", EXPECTATION_METHODS)
    check_count(num_samples, "num_samples")
    gen = resolve_generator(seed, generator)
    _check_loss(loss, mean)
    diagonal = precision.ndim == 1
    g_fn = func_grad(loss)
    if method == "delta":
        g = g_fn(mean)
        h = func_hessian(loss)(mean)
        h = torch.diagonal(h) if diagonal else 0.5 * (h + h.T)
    else:
        thetas = sample_gaussian(mean, precision, num_samples, generator=gen)
        grads = vmap(g_fn)(thetas)  # (n, d)
        g = grads.mean(0)
        if method == "mc":
            hs = vmap(func_hessian(loss))(thetas)  # (n, d, d)
            h = hs.mean(0)
            h = torch.diagonal(h) if diagonal else 0.5 * (h + h.T)
        else:  # stein
            delta = thetas - mean
            if diagonal:
                h = precision * (delta * grads).mean(0)
            else:
                a = (grads.T @ delta / num_samples) @ precision
                h = 0.5 * (a + a.T)
    if not bool(torch.isfinite(g).all()) or not bool(torch.isfinite(h).all()):
        raise ValueError(
            "the expected gradient or Hessian is not finite (the loss overflows under q)"
        )
    return g, h


# --------------------------------------------------------------------------------------------
# natural and mean parameters
# --------------------------------------------------------------------------------------------


def natural_parameters(mean: Tensor, precision: Tensor) -> tuple[Tensor, Tensor]:
    r"""Natural parameters :math:`(\lambda_1, \lambda_2) = (Sm, -\tfrac12 S)` of :math:`\mathcal{N}(m, S^{-1})`.

    The sufficient statistics are :math:`T(\theta) = (\theta, \theta\theta^\top)` (full) or
    :math:`(\theta, \theta\odot\theta)` (diagonal, then :math:`\lambda_2 = -s/2` is a vector).
    """
    mean, precision = _check_state(mean, precision)
    if precision.ndim == 1:
        return precision * mean, -0.5 * precision
    return precision @ mean, -0.5 * precision


def from_natural_parameters(eta1: Tensor, eta2: Tensor) -> GaussianState:
    r"""Mean and precision from natural parameters: :math:`S = -2\lambda_2`, :math:`m = S^{-1}\lambda_1`.

    Raises :class:`ValueError` unless :math:`-\lambda_2` is positive definite (outside that
    set the natural parameters describe no Gaussian).
    """
    eta1 = check_finite(as_tensor(eta1, "eta1"), "eta1")
    eta2 = check_finite(as_tensor(eta2, "eta2", dtype=eta1.dtype), "eta2")
    if eta1.ndim != 1:
        raise ValueError(f"eta1 must be a flat vector, got shape {tuple(eta1.shape)}")
    d = eta1.shape[0]
    if eta2.ndim == 1:
        check_shape(eta2, "eta2", (d,))
        prec = -2.0 * eta2
        if not bool((prec > 0).all()):
            raise ValueError("eta2 must be < 0 entrywise (a positive precision)")
        return GaussianState(eta1 / prec, prec)
    check_shape(eta2, "eta2", (d, d))
    prec = -2.0 * eta2
    prec = 0.5 * (prec + prec.T)
    chol, info = torch.linalg.cholesky_ex(prec)
    if int(info) != 0:
        raise ValueError("-eta2 must be positive definite (a positive-definite precision)")
    return GaussianState(torch.cholesky_solve(eta1.unsqueeze(-1), chol).squeeze(-1), prec)


def mean_parameter_gradient(grad: Tensor, hess: Tensor, mean: Tensor) -> tuple[Tensor, Tensor]:
    r"""Gradient of :math:`\mathbb{E}_q[\bar\ell]` in the mean parameters of a Gaussian.

    With :math:`\mu_1 = m` and :math:`\mu_2 = S^{-1} + mm^\top`, Bonnet's and Price's theorems
    :cite:`opper2009variational,khan2023bayesian` give

    .. math::

        \nabla_{\mu_1}\mathbb{E}_q[\bar\ell] = \mathbb{E}_q[\nabla\bar\ell] - \mathbb{E}_q[\nabla^2\bar\ell]\,m,
        \qquad
        \nabla_{\mu_2}\mathbb{E}_q[\bar\ell] = \tfrac12\,\mathbb{E}_q[\nabla^2\bar\ell].

    ``grad`` and ``hess`` are the expectations (e.g. from :func:`gaussian_expectations`);
    a ``(d,)`` ``hess`` means the diagonal family (:math:`\mu_2 = 1/s + m\odot m`).
    """
    mean = check_finite(as_tensor(mean, "mean"), "mean")
    check_shape(mean, "mean", (None,))
    check_nonempty(mean, "mean")
    grad = check_finite(as_tensor(grad, "grad", dtype=mean.dtype), "grad")
    hess = check_finite(as_tensor(hess, "hess", dtype=mean.dtype), "hess")
    d = mean.shape[0]
    check_shape(grad, "grad", (d,))
    if hess.ndim == 1:
        check_shape(hess, "hess", (d,))
        return grad - hess * mean, 0.5 * hess
    check_shape(hess, "hess", (d, d))
    return grad - hess @ mean, 0.5 * hess


# --------------------------------------------------------------------------------------------
# the BLR step
# --------------------------------------------------------------------------------------------


def blr_step(
    loss: Loss,
    mean: Tensor,
    precision: Tensor,
    lr: float,
    *,
    method: str = "delta",
    num_samples: int = 1,
    fixed_precision: bool = False,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> GaussianState:
    r"""One Bayesian-learning-rule step for a Gaussian posterior :cite:`khan2023bayesian`.

    .. math::

        S_{t+1} = (1-\rho)\,S_t + \rho\,\hat H_t, \qquad
        m_{t+1} = m_t - \rho\,S_{t+1}^{-1}\,\hat g_t,

    with :math:`(\hat g_t, \hat H_t)` from :func:`gaussian_expectations` at
    :math:`q_t = \mathcal{N}(m_t, S_t^{-1})`. Special cases (checked in the tests):

    - ``fixed_precision=True`` keeps :math:`S` fixed (the family :math:`\mathcal{N}(m, S^{-1})`
      with known :math:`S`), so :math:`m \leftarrow m - \rho S^{-1}\hat g`; with :math:`S = I` and
      the delta method this is gradient descent with step :math:`\rho`;
    - ``lr=1`` with the delta method is Newton's method,
      :math:`m \leftarrow m - \nabla^2\bar\ell(m)^{-1}\nabla\bar\ell(m)`;
    - ``lr=1`` on a conjugate (quadratic) :math:`\bar\ell` returns the exact posterior from any
      starting point.

    Parameters
    ----------
    loss
        :math:`\bar\ell(\theta)`, the negative log joint (data term plus :math:`-\log p_0`).
    mean, precision
        :math:`m_t`, and :math:`S_t` as ``(d, d)`` (full) or ``(d,)`` (diagonal).
    lr
        :math:`\rho`, in :math:`(0, 1]` (any :math:`\rho > 0` when ``fixed_precision``).
    method, num_samples, seed, generator
        How the expectations are computed; see :func:`gaussian_expectations`.

    Raises
    ------
    ValueError
        On invalid input, or when the new precision is not positive definite (negative
        expected curvature): never a silent ``nan``.
    """
    mean, precision = _check_state(mean, precision)
    rho = _check_lr(lr, allow_above_one=fixed_precision)
    g, h = gaussian_expectations(
        loss,
        mean,
        precision,
        method=method,
        num_samples=num_samples,
        seed=seed,
        generator=generator,
    )
    if fixed_precision:
        new_prec = precision
    else:
        new_prec = (1.0 - rho) * precision + rho * h
        _check_updated_precision(new_prec, "the updated precision")
    if new_prec.ndim == 1:
        new_mean = mean - rho * g / new_prec
    else:
        chol = torch.linalg.cholesky(new_prec)
        new_mean = mean - rho * torch.cholesky_solve(g.unsqueeze(-1), chol).squeeze(-1)
    return GaussianState(new_mean, new_prec)


def blr_natural_step(
    loss: Loss,
    mean: Tensor,
    precision: Tensor,
    lr: float,
    *,
    method: str = "delta",
    num_samples: int = 1,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> GaussianState:
    r"""The same step as :func:`blr_step`, computed literally in natural parameters.

    .. math::

        \lambda_{t+1} = (1-\rho)\,\lambda_t - \rho\,\nabla_\mu\mathbb{E}_{q_t}[\bar\ell(\theta)],

    with the mean-parameter gradient of :func:`mean_parameter_gradient`, then mapped back by
    :func:`from_natural_parameters`. Agreement with :func:`blr_step` (to rounding) is the
    algebra of the Gaussian BLR, checked in the tests and the chapter.
    """
    mean, precision = _check_state(mean, precision)
    rho = _check_lr(lr, allow_above_one=False)
    g, h = gaussian_expectations(
        loss,
        mean,
        precision,
        method=method,
        num_samples=num_samples,
        seed=seed,
        generator=generator,
    )
    eta1, eta2 = natural_parameters(mean, precision)
    d1, d2 = mean_parameter_gradient(g, h, mean)
    new_eta1 = (1.0 - rho) * eta1 - rho * d1
    new_eta2 = (1.0 - rho) * eta2 - rho * d2
    new_prec = -2.0 * new_eta2 if new_eta2.ndim == 1 else -(new_eta2 + new_eta2.T)
    _check_updated_precision(new_prec, "the updated precision")
    return from_natural_parameters(new_eta1, new_eta2)


def run_blr(
    loss: Loss,
    mean: Tensor,
    precision: Tensor,
    lr: float,
    num_steps: int,
    *,
    method: str = "delta",
    num_samples: int = 1,
    fixed_precision: bool = False,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> BLRTrace:
    """Iterate :func:`blr_step` ``num_steps`` times and return every iterate.

    One generator (from ``seed`` or ``generator``) feeds all steps, so a seeded run is
    reproducible.
    """
    mean, precision = _check_state(mean, precision)
    check_count(num_steps, "num_steps", minimum=0)
    gen = resolve_generator(seed, generator)
    means, precs = [mean], [precision]
    for _ in range(num_steps):
        mean, precision = blr_step(
            loss,
            mean,
            precision,
            lr,
            method=method,
            num_samples=num_samples,
            fixed_precision=fixed_precision,
            generator=gen,
        )
        means.append(mean)
        precs.append(precision)
    return BLRTrace(torch.stack(means), torch.stack(precs))


# --------------------------------------------------------------------------------------------
# the step as a surrogate minimization
# --------------------------------------------------------------------------------------------


def gaussian_entropy(precision: Tensor) -> Tensor:
    r"""Entropy :math:`\tfrac d2(1 + \log 2\pi) - \tfrac12\log\det S` of :math:`\mathcal{N}(m, S^{-1})`
    :cite:`khan2023bayesian`.

    ``precision`` is a symmetric positive-definite ``(d, d)`` matrix or the ``(d,)`` positive
    diagonal of one; anything else raises naming it. Differentiable in ``precision``;
    :func:`blr_surrogate_objective` calls an unchecked twin so that it can be traced.
    """
    p = check_finite(as_tensor(precision, "precision"), "precision")
    if p.ndim == 1:
        check_nonempty(p, "precision")
        check_positive(p, "precision")
    elif p.ndim == 2:
        check_nonempty(p, "precision")
        check_symmetric_positive_definite(p, "precision")
    else:
        raise ValueError(f"precision must have shape (d,) or (d, d), got {tuple(p.shape)}")
    return _gaussian_entropy(p)


def _gaussian_entropy(precision: Tensor) -> Tensor:
    d = precision.shape[0]
    logdet = precision.log().sum() if precision.ndim == 1 else torch.linalg.slogdet(precision)[1]
    return 0.5 * d * (1.0 + math.log(2.0 * math.pi)) - 0.5 * logdet


def gaussian_kl(mean_q: Tensor, precision_q: Tensor, mean_p: Tensor, precision_p: Tensor) -> Tensor:
    r""":math:`\mathrm{KL}(\mathcal{N}(m_q, S_q^{-1})\,\|\,\mathcal{N}(m_p, S_p^{-1}))` in precision form.

    .. math::

        \tfrac12\big[\operatorname{tr}(S_p S_q^{-1}) + (m_q - m_p)^\top S_p (m_q - m_p) - d
        + \log\det S_q - \log\det S_p\big].

    Both precisions full (``(d, d)``) or both diagonal (``(d,)``); differentiable, no validation.
    """
    d = mean_q.shape[0]
    diff = mean_q - mean_p
    if precision_q.ndim == 1:
        return 0.5 * (
            (precision_p / precision_q).sum()
            + (precision_p * diff * diff).sum()
            - d
            + precision_q.log().sum()
            - precision_p.log().sum()
        )
    cov_q = torch.linalg.inv(precision_q)
    return 0.5 * (
        torch.trace(precision_p @ cov_q)
        + diff @ precision_p @ diff
        - d
        + torch.linalg.slogdet(precision_q)[1]
        - torch.linalg.slogdet(precision_p)[1]
    )


def blr_surrogate_objective(
    mean: Tensor,
    precision: Tensor,
    *,
    grad: Tensor,
    hess: Tensor,
    mean_t: Tensor,
    precision_t: Tensor,
    lr: float,
) -> Tensor:
    r"""The objective that one BLR step minimizes exactly :cite:`khan2025information`.

    With the *expected quadratic surrogate* of :math:`\bar\ell` around :math:`m_t`,

    .. math::

        s_t(\theta) = \hat g_t^\top(\theta - m_t) + \tfrac12(\theta - m_t)^\top \hat H_t(\theta - m_t),

    the step of :func:`blr_step` is :math:`q_{t+1} = \arg\min_q F_t(q)` with

    .. math::

        F_t(q) = \mathbb{E}_q[s_t(\theta)] - \mathcal{H}(q) + \frac{1-\rho}{\rho}\,\mathrm{KL}(q\,\|\,q_t),

    evaluated here in closed form for :math:`q = \mathcal{N}(m, S^{-1})`
    (:math:`\mathbb{E}_q[s_t] = \hat g_t^\top(m - m_t) + \tfrac12(m - m_t)^\top\hat H_t(m - m_t)
    + \tfrac12\operatorname{tr}(\hat H_t S^{-1})`). The minimizer is
    :math:`q \propto q_t^{1-\rho}\,e^{-\rho s_t}`. Differentiable in ``mean`` and ``precision``
    (full or diagonal, matching ``hess``), so the optimality of the BLR step can be checked with
    autograd. ``lr`` is :math:`\rho \in (0, 1]`.
    """
    rho = _check_lr(lr, allow_above_one=False)
    diff = mean - mean_t
    if precision.ndim == 1:
        quad = (hess * diff * diff).sum() + (hess / precision).sum()
    else:
        quad = diff @ hess @ diff + torch.trace(hess @ torch.linalg.inv(precision))
    expected_surrogate = grad @ diff + 0.5 * quad
    out = expected_surrogate - _gaussian_entropy(precision)
    if rho < 1.0:
        out = out + (1.0 - rho) / rho * gaussian_kl(mean, precision, mean_t, precision_t)
    return out
