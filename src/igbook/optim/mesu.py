r"""MESU: Metaplasticity from Synaptic Uncertainty :cite:`bonnet2025bayesian`.

Each synapse is a Gaussian :math:`\omega_i\sim\Normal(\mu_i,\sigma_i^2)` (mean-field, as in
:mod:`igbook.optim.bgd`). MESU fits, by variational inference, the *truncated* posterior
:math:`p(\omega\mid D_{t-N+1},\dots,D_t)` over the last :math:`N` minibatches: the evidence
of older minibatches is forgotten and replaced by the prior
:math:`\Normal(\mu_{\mathrm{prior}},\sigma_{\mathrm{prior}}^2)`. With
:math:`C_t = \E_q[-\log p(D_t\mid\omega)]` the expected negative log-likelihood of minibatch
:math:`t` (summed over its examples) and :math:`g_\mu=\partial C_t/\partial\mu`,
:math:`g_\sigma=\partial C_t/\partial\sigma` taken at :math:`(\mu_{t-1},\sigma_{t-1})`, one step is

.. math::
    :label: eq-mesu-update

    \Delta\mu &= \eta_\mu\Big[-\sigma^2 g_\mu
        + \frac{\sigma^2(\mu_{\mathrm{prior}}-\mu)}{N\sigma_{\mathrm{prior}}^2}\Big],\\
    \Delta\sigma &= \frac{\eta_\sigma}{2}\Big[-\sigma^2 g_\sigma
        + \frac{\sigma(\sigma_{\mathrm{prior}}^2-\sigma^2)}{N\sigma_{\mathrm{prior}}^2}\Big].

* **Metaplasticity.** Each synapse's learning rate is its own variance :math:`\sigma^2`:
  uncertain synapses move, confident ones hold.
* **Forgetting.** The second terms pull :math:`\mu` towards :math:`\mu_{\mathrm{prior}}` and
  :math:`\sigma` towards :math:`\sigma_{\mathrm{prior}}` at relative rate :math:`1/N`; synapses
  the data stop constraining regain their uncertainty, hence their plasticity.
* **Long-time limit.** On a loss with diagonal curvature :math:`H` per minibatch,
  :math:`g_\sigma = H\sigma` and :math:`\Delta\sigma=0` give
  :math:`\sigma_\infty^2 = 1/(NH + \sigma_{\mathrm{prior}}^{-2})` (:func:`mesu_stationary_variance`):
  the variance is the inverse of the diagonal Hessian of the loss summed over the memory
  window, and :math:`\Delta\mu\approx -g_\mu/(NH+\sigma_{\mathrm{prior}}^{-2})` is a diagonal
  Newton step.
* **N to infinity.** The forgetting terms vanish and MESU becomes the first-order expansion of
  BGD (:class:`igbook.optim.BGD`): precision then grows without bound, the variances collapse
  and plasticity and epistemic uncertainty vanish ("catastrophic remembering").

The equations above are those of the paper and of the authors' JAX code (``lr_mu`` =
:math:`\eta_\mu`, ``lr_sigma`` = :math:`\eta_\sigma`, both 1 in every published run). The
authors' PyTorch code has no :math:`\tfrac12` in :math:`\Delta\sigma` (its ``c_sigma`` equals
``lr_sigma / 2`` here) and offers further knobs, all exposed here and off by default:
``clamp_grad`` (JAX: clip both gradients to :math:`\pm` ``clamp_grad`` :math:`/\sigma`),
``momentum_mu`` / ``momentum_sigma`` (exponential moving averages of the gradients),
``second_order`` (divide both changes by :math:`1+\sigma|g_\sigma|`), ``ratio_max`` (clamp both
changes to :math:`\pm` ``ratio_max`` :math:`\cdot\sigma`) and ``sigma_bounds`` (clamp
:math:`\sigma` after the step). The knobs are applied in that order.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from igbook._validation import (
    as_tensor,
    check_finite,
    check_nonnegative_real,
    check_positive,
    check_positive_real,
    check_scalar,
)
from igbook.optim.bgd import GaussianMeanFieldOptimizer
from igbook.optim.mean_field import (
    SigmaInit,
    check_mean_field,
    check_ratio_max,
    check_sigma_bounds,
    check_sigma_init,
    clamp_and_bound,
)

__all__ = ["MESU", "mesu_delta", "mesu_stationary_variance"]


def check_memory_window(N: Any) -> float:
    """MESU's memory window N in minibatches: a number >= 1, or ``math.inf`` (no forgetting)."""
    try:
        return check_scalar(N, "N", low=1.0, allow_inf=True)
    except (TypeError, ValueError):
        raise ValueError(
            f"N (the memory window, in minibatches) must be a number >= 1 or math.inf, got {N!r}"
        ) from None


def mesu_delta(
    mu: Tensor,
    sigma: Tensor,
    grad_mu: Tensor,
    grad_sigma: Tensor,
    *,
    N: float,
    sigma_prior: float | Tensor,
    mu_prior: float | Tensor = 0.0,
    lr_mu: float = 1.0,
    lr_sigma: float = 1.0,
) -> tuple[Tensor, Tensor]:
    r"""The MESU changes :math:`(\Delta\mu, \Delta\sigma)` of :eq:`eq-mesu-update` (pure function).

    Parameters
    ----------
    mu, sigma
        Current means and standard deviations.
    grad_mu, grad_sigma
        :math:`g_\mu=\partial C_t/\partial\mu`, :math:`g_\sigma=\partial C_t/\partial\sigma`.
    N
        Memory window in minibatches (:math:`\geq 1`; ``math.inf`` removes the forgetting terms).
    sigma_prior, mu_prior
        Prior standard deviation (:math:`>0`) and mean.
    lr_mu, lr_sigma
        Multipliers :math:`\eta_\mu,\eta_\sigma` (1 in the paper).

    Returns
    -------
    tuple of Tensor
        ``(delta_mu, delta_sigma)`` with the shapes of ``mu``.
    """
    mu, sigma, grad_mu, grad_sigma = check_mean_field(mu, sigma, grad_mu, grad_sigma)
    check_memory_window(N)
    check_positive(as_tensor(sigma_prior, "sigma_prior", dtype=mu.dtype), "sigma_prior")
    check_finite(as_tensor(mu_prior, "mu_prior", dtype=mu.dtype), "mu_prior")
    check_nonnegative_real(lr_mu, "lr_mu")
    check_nonnegative_real(lr_sigma, "lr_sigma")
    return _mesu_delta(mu, sigma, grad_mu, grad_sigma, N, sigma_prior, mu_prior, lr_mu, lr_sigma)


def _mesu_delta(
    mu: Tensor,
    sigma: Tensor,
    grad_mu: Tensor,
    grad_sigma: Tensor,
    N: float,
    sigma_prior: float | Tensor,
    mu_prior: float | Tensor,
    lr_mu: float,
    lr_sigma: float,
) -> tuple[Tensor, Tensor]:
    """:func:`mesu_delta` without argument checks (the optimizer validated them once)."""
    sp2 = sigma_prior * sigma_prior
    var = sigma * sigma
    if math.isinf(N):
        forget_mu = torch.zeros_like(mu)
        forget_sigma = torch.zeros_like(sigma)
    else:
        forget_mu = var * (mu_prior - mu) / (N * sp2)
        forget_sigma = sigma * (sp2 - var) / (N * sp2)
    d_mu = lr_mu * (-var * grad_mu + forget_mu)
    d_sigma = 0.5 * lr_sigma * (-var * grad_sigma + forget_sigma)
    return d_mu, d_sigma


def mesu_stationary_variance(hessian_diag: Tensor | float, N: float, sigma_prior: float) -> Tensor:
    r"""Long-time limit of MESU's variance on a loss with diagonal curvature ``hessian_diag``.

    .. math::

        \sigma_\infty^2 = \frac{1}{N H + \sigma_{\mathrm{prior}}^{-2}}

    where :math:`H` is the diagonal of the Hessian of the *per-minibatch* loss (the sum over
    the minibatch). In precision form :math:`\lambda_t = (1-\tfrac1N)\lambda_{t-1} + H +
    \tfrac{1}{N\sigma_{\mathrm{prior}}^2}` has this fixed point. ``N = math.inf`` gives 0
    where :math:`H>0` (the variances collapse).
    """
    h = as_tensor(hessian_diag, "hessian_diag")
    if not bool(torch.isfinite(h).all()) or not bool((h >= 0).all()):
        raise ValueError("hessian_diag must be finite and >= 0 (a diagonal curvature)")
    check_memory_window(N)
    check_positive_real(sigma_prior, "sigma_prior")
    if math.isinf(N):
        return torch.where(h > 0, torch.zeros_like(h), torch.full_like(h, sigma_prior**2))
    return 1.0 / (N * h + 1.0 / sigma_prior**2)


class MESU(GaussianMeanFieldOptimizer):
    r"""Metaplasticity from Synaptic Uncertainty :cite:`bonnet2025bayesian` as a ``torch.optim.Optimizer``.

    The model's parameters are the means :math:`\mu`; the standard deviations are
    ``optimizer.state[p]["sigma"]`` (``sigmas()``). Gradients come from the
    reparameterization (:class:`igbook.optim.bgd.GaussianMeanFieldOptimizer`): call
    ``step`` with a closure that returns the minibatch loss **summed** over its examples,
    or draw the samples yourself (``draw_samples``) and call ``apply_gradients``, both inherited
    from :class:`igbook.optim.bgd.GaussianMeanFieldOptimizer`.

    Parameters
    ----------
    params
        The means (model parameters) or param groups; every hyperparameter below can differ
        per group.
    sigma_prior
        Prior standard deviation, > 0 (1.0 for permuted MNIST and CIFAR in the paper, 0.06
        for MNIST-OOD, 0.1 for Animals).
    N
        Memory window in minibatches, >= 1 (300,000 = five tasks of 60,000 examples at batch
        size 1 for permuted MNIST); ``math.inf`` switches forgetting off.
    mu_prior
        Prior mean (0 in the paper).
    sigma_init
        Initial standard deviation, or a callable ``param -> sigma`` (the JAX code uses
        :math:`2/\sqrt{\text{fan-in}}`).
    lr_mu, lr_sigma
        :math:`\eta_\mu,\eta_\sigma` of :eq:`eq-mesu-update` (1 in the paper).
    clamp_grad
        If > 0, clip :math:`g_\mu, g_\sigma` to :math:`\pm` ``clamp_grad`` :math:`/\sigma` (0.1 in
        the OOD runs); 0 disables.
    momentum_mu, momentum_sigma
        In [0, 1): exponential moving averages of the gradients (PyTorch code; 0 = off).
    second_order
        Divide both changes by :math:`1+\sigma|g_\sigma|` (PyTorch code; off).
    ratio_max
        If set, clamp both changes to :math:`\pm` ``ratio_max`` :math:`\cdot\sigma`.
    sigma_bounds
        If set, ``(low, high)``: clamp :math:`\sigma` after each step.
    num_samples
        Monte Carlo weight samples per step (10 for permuted MNIST).
    seed, generator
        Source of the Gaussian noise.
    nonfinite
        ``"raise"`` or ``"skip"`` (see :class:`igbook.optim.bgd.GaussianMeanFieldOptimizer`).

    Examples
    --------
    >>> import torch
    >>> model = torch.nn.Linear(3, 2)
    >>> opt = MESU(model.parameters(), sigma_prior=1.0, N=100, sigma_init=0.1, num_samples=4)
    >>> x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    >>> def closure():
    ...     loss = torch.nn.functional.cross_entropy(model(x), y, reduction="sum")
    ...     loss.backward()
    ...     return loss
    >>> loss = opt.step(closure)
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        *,
        sigma_prior: float = 1.0,
        N: float = 1e5,
        mu_prior: float = 0.0,
        sigma_init: SigmaInit = 0.1,
        lr_mu: float = 1.0,
        lr_sigma: float = 1.0,
        clamp_grad: float = 0.0,
        momentum_mu: float = 0.0,
        momentum_sigma: float = 0.0,
        second_order: bool = False,
        ratio_max: float | None = None,
        sigma_bounds: tuple[float, float] | None = None,
        num_samples: int = 10,
        seed: int = 0,
        generator: torch.Generator | None = None,
        nonfinite: str = "raise",
    ) -> None:
        defaults = dict(
            sigma_prior=sigma_prior,
            N=N,
            mu_prior=mu_prior,
            sigma_init=sigma_init,
            lr_mu=lr_mu,
            lr_sigma=lr_sigma,
            clamp_grad=clamp_grad,
            momentum_mu=momentum_mu,
            momentum_sigma=momentum_sigma,
            second_order=second_order,
            ratio_max=ratio_max,
            sigma_bounds=sigma_bounds,
        )
        self._validate_group(defaults)
        super().__init__(
            params,
            defaults,
            num_samples=num_samples,
            seed=seed,
            generator=generator,
            nonfinite=nonfinite,
        )

    def _validate_group(self, group: dict[str, Any]) -> None:
        check_sigma_init(group["sigma_init"])
        check_positive_real(group["sigma_prior"], "sigma_prior")
        check_memory_window(group["N"])
        check_scalar(group["mu_prior"], "mu_prior")
        check_nonnegative_real(group["lr_mu"], "lr_mu")
        check_nonnegative_real(group["lr_sigma"], "lr_sigma")
        check_nonnegative_real(group["clamp_grad"], "clamp_grad")
        check_scalar(group["momentum_mu"], "momentum_mu", low=0.0, high=1.0, closed_high=False)
        check_scalar(
            group["momentum_sigma"], "momentum_sigma", low=0.0, high=1.0, closed_high=False
        )
        if not isinstance(group["second_order"], bool):
            raise TypeError(
                f"second_order must be a bool, got {type(group['second_order']).__name__}"
            )
        check_ratio_max(group["ratio_max"])
        check_sigma_bounds(group["sigma_bounds"], "sigma_bounds")

    def _update(
        self, p: Tensor, state: dict[str, Any], group: dict[str, Any], g_mu: Tensor, g_sigma: Tensor
    ) -> None:
        sigma = state["sigma"]
        clamp = group["clamp_grad"]
        if clamp > 0:
            lim = clamp / sigma
            g_mu = torch.maximum(torch.minimum(g_mu, lim), -lim)
            g_sigma = torch.maximum(torch.minimum(g_sigma, lim), -lim)
        for key, g, beta in (
            ("avg_mu", g_mu, group["momentum_mu"]),
            ("avg_sigma", g_sigma, group["momentum_sigma"]),
        ):
            if beta > 0:
                buf = state.get(key)
                buf = (
                    g.clone() * (1 - beta)
                    if buf is None
                    else buf.mul_(beta).add_(g, alpha=1 - beta)
                )
                state[key] = buf
        if group["momentum_mu"] > 0:
            g_mu = state["avg_mu"]
        if group["momentum_sigma"] > 0:
            g_sigma = state["avg_sigma"]
        d_mu, d_sigma = _mesu_delta(
            p,
            sigma,
            g_mu,
            g_sigma,
            group["N"],
            group["sigma_prior"],
            group["mu_prior"],
            group["lr_mu"],
            group["lr_sigma"],
        )
        if group["second_order"]:
            denom = 1.0 + sigma * g_sigma.abs()
            d_mu, d_sigma = d_mu / denom, d_sigma / denom
        clamp_and_bound(p, sigma, d_mu, d_sigma, group)
