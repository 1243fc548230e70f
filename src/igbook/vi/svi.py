r"""Stochastic variational inference: NGVI with minibatches and Robbins-Monro steps.

For a model with global natural parameter :math:`\lambda` (prior :math:`\eta_0`) and data
points whose contributions to the global natural gradient are messages :math:`g_i(\lambda)`
(after optimizing each point's local variables, a step with :math:`\rho = 1`), SVI
:cite:`hoffman2013stochastic` replaces the sum over the :math:`N` points by a rescaled
minibatch sum,

.. math::

    \hat\lambda_t = \eta_0 + \frac{N}{|B_t|}\sum_{i\in B_t} g_i(\lambda_t), \qquad
    \lambda_{t+1} = (1-\rho_t)\lambda_t + \rho_t\hat\lambda_t,

an unbiased estimate of the NGVI step, with Robbins-Monro steps
:math:`\rho_t = (t+\tau)^{-\kappa}`, :math:`\kappa\in(\tfrac12, 1]`, so that
:math:`\sum\rho_t = \infty` and :math:`\sum\rho_t^2 < \infty` :cite:`robbins1951stochastic`.
With :math:`|B| = N` and :math:`\rho = 1` it is coordinate-ascent VI.

:func:`svi` runs the loop for any message function; :func:`conjugate_svi` feeds it a
:class:`~igbook.vi.conjugate.ConjugateModel` (no local variables; the full-batch answer is the
exact posterior); :class:`GaussianMixture` is the classic model *with* local variables
:cite:`blei2017variational`: :math:`K` component means :math:`\mu_k\sim\mathcal N(0, s_0^2 I)`,
assignments :math:`c_i` uniform, :math:`x_i\mid c_i\sim\mathcal N(\mu_{c_i}, \sigma^2 I)`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from igbook._validation import as_tensor, check_finite, check_positive, check_shape
from igbook.families import ExponentialFamily
from igbook.vi.conjugate import ConjugateModel, check_step_size

__all__ = [
    "robbins_monro",
    "SVIResult",
    "svi",
    "conjugate_svi",
    "GaussianMixture",
]

_LOG_2PI = math.log(2.0 * math.pi)


def robbins_monro(kappa: float = 0.7, tau: float = 1.0) -> Callable[[int], float]:
    r"""Step-size schedule :math:`\rho_t = (t + \tau)^{-\kappa}` for steps :math:`t = 1, 2, \dots`.

    Raises :class:`ValueError` unless :math:`\kappa\in(\tfrac12, 1]` (the Robbins-Monro
    conditions) and :math:`\tau \ge 0`; steps are capped at 1.
    """
    for name, v in (("kappa", kappa), ("tau", tau)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise TypeError(f"{name} must be a finite real number, got {v!r}")
    if not 0.5 < kappa <= 1.0:
        raise ValueError(f"kappa must lie in (0.5, 1] (Robbins-Monro conditions), got {kappa}")
    if tau < 0:
        raise ValueError(f"tau must be >= 0, got {tau}")

    def schedule(t: int) -> float:
        if t < 1:
            raise ValueError(f"steps are counted from 1, got {t}")
        return min(1.0, (t + tau) ** (-kappa))

    return schedule


@dataclass(frozen=True)
class SVIResult:
    """Outcome of :func:`svi`: ``natural`` holds :math:`\\lambda_t` for ``t = 0..steps`` and ``rho`` the steps used."""

    natural: Tensor
    rho: Tensor

    @property
    def final(self) -> Tensor:
        return self.natural[-1]


def svi(
    messages: Callable[[Tensor, Tensor], Tensor],
    prior_natural: Tensor,
    num_data: int,
    init: Tensor,
    *,
    batch_size: int,
    steps: int,
    rho: float | Callable[[int], float],
    seed: int = 0,
    family: type[ExponentialFamily] | None = None,
) -> SVIResult:
    r"""Stochastic VI on global natural parameters.

    Parameters
    ----------
    messages
        ``messages(lam, idx)`` returns :math:`\sum_{i\in\text{idx}} g_i(\lambda)` (shape of
        ``lam``) for a long tensor of data indices, after any local optimization.
    prior_natural
        :math:`\eta_0`.
    num_data
        :math:`N`.
    init
        :math:`\lambda_0`, same shape as ``prior_natural``.
    batch_size
        :math:`|B|` in :math:`[1, N]`; minibatches are drawn without replacement, afresh each step.
    steps
        Number of steps.
    rho
        A constant step in :math:`(0, 1]` or a schedule ``t -> rho_t`` (see :func:`robbins_monro`).
    seed
        Seed of the minibatch draws.
    family
        Optional exponential family of :mod:`igbook.families` of the global parameter; when
        given, ``prior_natural``, ``init`` and every iterate must be valid natural parameters
        of it (a :class:`ValueError` names the first one that is not). Without it, natural
        parameters are unconstrained vectors and only their shapes and finiteness are checked.
    """
    if family is not None and not (
        isinstance(family, type) and issubclass(family, ExponentialFamily)
    ):
        raise TypeError(f"family must be an ExponentialFamily class, got {family!r}")

    def valid(name: str, value: Tensor) -> None:
        if family is None:
            return
        try:
            family.check_natural(value)
        except ValueError as exc:
            raise ValueError(
                f"{name} is not a valid natural parameter of {family.__name__}: {exc}"
            ) from exc

    eta0 = check_finite(as_tensor(prior_natural, "prior_natural"), "prior_natural")
    lam = check_finite(as_tensor(init, "init", dtype=eta0.dtype), "init")
    if lam.shape != eta0.shape:
        raise ValueError(
            f"init must have the shape of prior_natural {tuple(eta0.shape)}, got {tuple(lam.shape)}"
        )
    for name, v in (("num_data", num_data), ("batch_size", batch_size), ("steps", steps)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if num_data < 1:
        raise ValueError(f"num_data must be >= 1, got {num_data}")
    if not 1 <= batch_size <= num_data:
        raise ValueError(f"batch_size must lie in [1, num_data={num_data}], got {batch_size}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    valid("prior_natural", eta0)
    valid("init", lam)
    if callable(rho):
        schedule = rho
    else:
        const = check_step_size(rho)
        schedule = lambda t: const  # noqa: E731
    g = torch.Generator().manual_seed(seed)
    scale = num_data / batch_size
    out, rhos = [lam], []
    for t in range(1, steps + 1):
        r = check_step_size(schedule(t), f"rho at step {t}")
        idx = (
            torch.arange(num_data)
            if batch_size == num_data
            else torch.randperm(num_data, generator=g)[:batch_size]
        )
        m = messages(lam, idx)
        if m.shape != lam.shape:
            raise ValueError(f"messages must return shape {tuple(lam.shape)}, got {tuple(m.shape)}")
        lam = (1.0 - r) * lam + r * (eta0 + scale * m)
        valid(f"the natural parameter after step {t}", lam)
        out.append(lam)
        rhos.append(r)
    return SVIResult(torch.stack(out), torch.tensor(rhos, dtype=eta0.dtype))


def _index(data: Any, idx: Tensor) -> Any:
    if isinstance(data, (tuple, list)):
        return type(data)(d[idx] for d in data)
    return data[idx]


def _length(data: Any) -> int:
    if isinstance(data, (tuple, list)):
        return int(as_tensor(data[0], "data[0]").shape[0])
    return int(as_tensor(data, "data").shape[0])


def conjugate_svi(
    model: ConjugateModel,
    data: Any,
    *,
    batch_size: int,
    steps: int,
    rho: float | Callable[[int], float],
    init: Tensor | None = None,
    seed: int = 0,
) -> SVIResult:
    r"""SVI for a conjugate model: messages are the likelihood natural parameters :math:`\lambda_i`.

    Every minibatch step moves towards an unbiased estimate :math:`\eta_0 + \tfrac{N}{|B|}\sum_{B}\lambda_i`
    of the exact posterior natural parameter, so with Robbins-Monro steps the iterates
    converge to the exact (full-batch) posterior.
    """
    if not isinstance(model, ConjugateModel):
        raise TypeError(f"model must be a ConjugateModel, got {type(model).__name__}")
    all_msgs = model.messages(data)
    lam0 = model.prior_natural if init is None else model._check_lam(init, "init")
    return svi(
        lambda lam, idx: all_msgs[idx].sum(0),
        model.prior_natural,
        all_msgs.shape[0],
        lam0,
        batch_size=batch_size,
        steps=steps,
        rho=rho,
        seed=seed,
    )


# =============================================================================================
class GaussianMixture:
    r"""Bayesian mixture of :math:`K` isotropic Gaussians with known variance and uniform weights.

    Mean-field family :math:`q(\mu_k) = \mathcal N(m_k, s_k^2 I)`, :math:`q(c_i) = \mathrm{Cat}(\varphi_i)`.
    The global natural parameters are stacked as a ``(K, D + 1)`` tensor
    :math:`\lambda_k = (m_k/s_k^2,\; -1/(2s_k^2))` for :math:`T(\mu) = (\mu, \|\mu\|^2)`; the prior
    is :math:`\eta_0 = (0, -1/(2s_0^2))`. The local step (:math:`\rho = 1`) sets
    :math:`\varphi_{ik} \propto \exp\big(x_i^\top\mathbb E[\mu_k]/\sigma^2 - \mathbb E\|\mu_k\|^2/(2\sigma^2)\big)`,
    and point :math:`i` then sends :math:`(\varphi_{ik}x_i/\sigma^2,\; -\varphi_{ik}/(2\sigma^2))`
    to component :math:`k` :cite:`blei2017variational,hoffman2013stochastic`.

    Parameters
    ----------
    num_components
        :math:`K \ge 1`.
    dim
        :math:`D \ge 1`.
    prior_variance
        :math:`s_0^2 > 0`.
    noise_variance
        :math:`\sigma^2 > 0`.
    """

    def __init__(
        self,
        num_components: int,
        dim: int,
        prior_variance: float = 10.0,
        noise_variance: float = 1.0,
    ) -> None:
        for name, v in (("num_components", num_components), ("dim", dim)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        self.num_components, self.dim = num_components, dim
        self.prior_variance = float(
            check_positive(as_tensor(prior_variance, "prior_variance"), "prior_variance")
        )
        self.noise_variance = float(
            check_positive(as_tensor(noise_variance, "noise_variance"), "noise_variance")
        )

    @property
    def prior_natural(self) -> Tensor:
        eta = torch.zeros(self.num_components, self.dim + 1, dtype=torch.float64)
        eta[:, -1] = -0.5 / self.prior_variance
        return eta

    # ----- coordinates -----------------------------------------------------------------------
    def check_natural(self, lam: Tensor, name: str = "lam") -> Tensor:
        lam = check_finite(as_tensor(lam, name), name)
        check_shape(lam, name, (self.num_components, self.dim + 1))
        if not bool((lam[:, -1] < 0).all()):
            raise ValueError(f"{name}[:, -1] = -1/(2 s_k^2) must be < 0")
        return lam

    def check_data(self, x: Tensor, name: str = "x") -> Tensor:
        x = check_finite(as_tensor(x, name), name)
        check_shape(x, name, (None, self.dim))
        return x

    @staticmethod
    def moments(lam: Tensor) -> tuple[Tensor, Tensor]:
        r"""Means :math:`m_k` (``(K, D)``) and variances :math:`s_k^2` (``(K,)``) from :math:`\lambda`."""
        var = -0.5 / lam[:, -1]
        return lam[:, :-1] * var.unsqueeze(-1), var

    def natural_from_moments(self, means: Tensor, variances: Tensor) -> Tensor:
        """Inverse of :meth:`moments`."""
        return torch.cat([means / variances.unsqueeze(-1), (-0.5 / variances).unsqueeze(-1)], -1)

    def init_natural(self, x: Tensor, *, seed: int = 0, variance: float = 1.0) -> Tensor:
        """Start with means at ``K`` data points chosen by farthest-point traversal, variances ``variance``.

        The first point is drawn with ``seed``; each next one is the point farthest from those
        already chosen (a deterministic k-means++), which avoids starting two components in one
        cluster.
        """
        x = self.check_data(x)
        if x.shape[0] < self.num_components:
            raise ValueError(f"x must hold at least num_components={self.num_components} points")
        g = torch.Generator().manual_seed(seed)
        chosen = [int(torch.randint(x.shape[0], (1,), generator=g))]
        dist = ((x - x[chosen[0]]) ** 2).sum(-1)
        for _ in range(1, self.num_components):
            nxt = int(dist.argmax())
            chosen.append(nxt)
            dist = torch.minimum(dist, ((x - x[nxt]) ** 2).sum(-1))
        var = torch.full((self.num_components,), float(variance), dtype=x.dtype)
        return self.natural_from_moments(x[chosen].clone(), var)

    # ----- local step and messages -----------------------------------------------------------
    def responsibilities(self, lam: Tensor, x: Tensor) -> Tensor:
        r"""Optimal local factors :math:`\varphi` (``(N, K)``) given the global :math:`q(\mu)`."""
        m, v = self.moments(lam)
        e_sq = (m**2).sum(-1) + self.dim * v
        logits = (x @ m.T - 0.5 * e_sq) / self.noise_variance
        return torch.softmax(logits, -1)

    def messages(self, lam: Tensor, x: Tensor) -> Tensor:
        r"""Summed messages :math:`\sum_i(\varphi_{ik}x_i/\sigma^2, -\varphi_{ik}/(2\sigma^2))`,
        shape ``(K, D + 1)``."""
        phi = self.responsibilities(lam, x)
        return torch.cat([phi.T @ x, -0.5 * phi.sum(0).unsqueeze(-1)], -1) / self.noise_variance

    def elbo(self, lam: Tensor, x: Tensor) -> Tensor:
        r"""ELBO with the local factors at their optimum :math:`\varphi(\lambda)`.

        .. math::

            \sum_k\big(\mathbb E\log p(\mu_k) + \mathrm H[q(\mu_k)]\big)
            + \sum_{i,k}\varphi_{ik}\big(-\log K + \mathbb E\log\mathcal N(x_i\mid\mu_k,\sigma^2I)
            - \log\varphi_{ik}\big).
        """
        lam = self.check_natural(lam)
        x = self.check_data(x)
        d, s0, s2 = self.dim, self.prior_variance, self.noise_variance
        m, v = self.moments(lam)
        e_sq = (m**2).sum(-1) + d * v
        prior_term = (-0.5 * d * math.log(2 * math.pi * s0) - 0.5 * e_sq / s0).sum()
        entropy = (0.5 * d * (torch.log(2 * math.pi * math.e * v))).sum()
        phi = self.responsibilities(lam, x)
        e_loglik = -0.5 * d * math.log(2 * math.pi * s2) - (
            (x**2).sum(-1, keepdim=True) - 2 * x @ m.T + e_sq
        ) / (2 * s2)
        local = (
            phi * (e_loglik - math.log(self.num_components) - torch.log(phi.clamp_min(1e-300)))
        ).sum()
        return prior_term + entropy + local

    # ----- algorithms ------------------------------------------------------------------------
    def cavi(self, x: Tensor, init: Tensor, sweeps: int) -> Tensor:
        r"""Full-batch coordinate-ascent VI (local step, then global step with :math:`\rho = 1`).

        Returns the global natural parameters after each sweep, shape ``(sweeps + 1, K, D + 1)``.
        It is :func:`svi` with ``batch_size = N`` and ``rho = 1``.
        """
        x = self.check_data(x)
        lam = self.check_natural(init, "init")
        if isinstance(sweeps, bool) or not isinstance(sweeps, int) or sweeps < 0:
            raise ValueError(f"sweeps must be an int >= 0, got {sweeps!r}")
        out = [lam]
        for _ in range(sweeps):
            lam = self.prior_natural.to(x.dtype) + self.messages(lam, x)
            out.append(lam)
        return torch.stack(out)

    def svi(
        self,
        x: Tensor,
        init: Tensor,
        *,
        batch_size: int,
        steps: int,
        rho: float | Callable[[int], float],
        seed: int = 0,
    ) -> SVIResult:
        """Stochastic VI (:func:`svi`) with this model's local step and messages."""
        x = self.check_data(x)
        lam = self.check_natural(init, "init")
        return svi(
            lambda l_, idx: self.messages(l_, x[idx]),
            self.prior_natural.to(x.dtype),
            x.shape[0],
            lam,
            batch_size=batch_size,
            steps=steps,
            rho=rho,
            seed=seed,
        )

    def sample(self, n: int, means: Tensor, *, seed: int = 0) -> tuple[Tensor, Tensor]:
        """Draw ``n`` points from the mixture with component ``means`` (``(K, D)``); returns ``(x, labels)``."""
        means = check_finite(as_tensor(means, "means"), "means")
        check_shape(means, "means", (self.num_components, self.dim))
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be an int >= 1, got {n!r}")
        g = torch.Generator().manual_seed(seed)
        labels = torch.randint(self.num_components, (n,), generator=g)
        noise = torch.randn(n, self.dim, generator=g, dtype=means.dtype) * math.sqrt(
            self.noise_variance
        )
        return means[labels] + noise, labels
