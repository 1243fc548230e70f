r"""The Laplace evidence: :func:`log_marginal_likelihood`, its Occam factor, and hyperparameter tuning.

Expanding the log joint to second order at :math:`\theta_*` and integrating the Gaussian gives
:cite:`mackay1992practical,daxberger2021laplace`

.. math::
    :label: eq-api-laplace-evidence

    \log p(\mathcal D) \approx \underbrace{\log p(\mathcal D\mid\theta_*)}_{\text{data fit}}
    \;\underbrace{-\tfrac12\log\frac{\det P}{\det P_0}
    - \tfrac12(\theta_*-\mu_0)^\top P_0(\theta_*-\mu_0)}_{\text{log Occam factor}},

exact for a linear-Gaussian model. Maximizing it over the prior precision :math:`\delta`
(:math:`P_0 = \delta I`) and the noise :math:`\sigma` is type-II maximum likelihood. With
:math:`\lambda_i` the eigenvalues of the data curvature :math:`N\bar C` and
:math:`\gamma = \sum_i \frac{\lambda_i/\sigma^2}{\lambda_i/\sigma^2+\delta}` the effective number of
parameters, its stationarity conditions at a fixed :math:`\theta_*` are MacKay's fixed-point
updates

.. math::

    \delta \leftarrow \frac{\gamma}{\lVert\theta_*-\mu_0\rVert^2},\qquad
    \sigma^2 \leftarrow \frac{\sum_n\lVert y_n - f_n\rVert^2}{NC - \gamma}.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from igbook._validation import check_choice, check_integer, check_positive_real
from igbook.laplace.posterior import LaplacePosterior

__all__ = [
    "log_likelihood",
    "log_marginal_likelihood",
    "evidence_terms",
    "effective_parameters",
    "optimize_prior_precision",
    "OPTIMIZERS",
]

#: hyperparameter optimizers of :func:`optimize_prior_precision`
OPTIMIZERS = ("marglik", "mackay")


def _check_posterior(posterior: object) -> LaplacePosterior:
    if not isinstance(posterior, LaplacePosterior):
        raise TypeError(
            f"posterior must be a LaplacePosterior (from fit_laplace), got {type(posterior).__name__}"
        )
    return posterior


def log_likelihood(posterior: LaplacePosterior) -> Tensor:
    r""":math:`\log p(\mathcal D\mid\theta_*)` (tempered: the data term divided by :math:`\tau`).

    Gaussian: :math:`-\frac{1}{2\sigma^2\tau}\sum_n\lVert y_n-f_n\rVert^2 - \frac{NC}{2}\log(2\pi\sigma^2)`;
    otherwise :math:`-\frac1\tau\sum_n\ell(f_n, y_n)`. Differentiable in a tensor ``sigma_noise``.
    """
    post = _check_posterior(posterior)
    if post.is_regression:
        s2 = torch.as_tensor(post.sigma_noise, dtype=post.mean.dtype) ** 2
        nc = post.n_data * post.n_outputs
        return -post.data_fit / (2 * s2 * post.temperature) - 0.5 * nc * torch.log(2 * math.pi * s2)
    return -post.data_fit / post.temperature


def log_marginal_likelihood(
    posterior: LaplacePosterior,
    prior_precision: float | Tensor | None = None,
    sigma_noise: float | Tensor | None = None,
) -> Tensor:
    r"""The Laplace log evidence :eq:`eq-api-laplace-evidence` at the given (or the posterior's) hyperparameters.

    Differentiable in tensor-valued ``prior_precision`` and ``sigma_noise`` (for gradient-based
    tuning). Same terms as laplace-torch's ``log_marginal_likelihood`` :cite:`daxberger2021laplace`.
    """
    post = _check_posterior(posterior).with_hyperparameters(
        prior_precision=prior_precision, sigma_noise=sigma_noise
    )
    p0 = post.prior_precision_vector()
    delta = post.mean - post.prior_mean
    log_det_ratio = post.log_det_precision() - torch.log(p0).sum()
    scatter = (delta * p0 * delta).sum()
    return log_likelihood(post) - 0.5 * (log_det_ratio + scatter)


def evidence_terms(posterior: LaplacePosterior) -> dict[str, float]:
    r"""The terms of :eq:`eq-api-laplace-evidence` as floats.

    ``log_likelihood``, ``log_det_ratio`` (:math:`\log\det P - \log\det P_0`), ``scatter``
    (:math:`(\theta_*-\mu_0)^\top P_0(\theta_*-\mu_0)`), ``log_occam``
    (:math:`-\frac12(\text{log\_det\_ratio} + \text{scatter})`) and ``log_evidence`` (their sum).
    """
    post = _check_posterior(posterior)
    with torch.no_grad():
        p0 = post.prior_precision_vector()
        delta = post.mean - post.prior_mean
        ll = float(log_likelihood(post))
        ldr = float(post.log_det_precision() - torch.log(p0).sum())
        sc = float((delta * p0 * delta).sum())
    return {
        "log_likelihood": ll,
        "log_det_ratio": ldr,
        "scatter": sc,
        "log_occam": -0.5 * (ldr + sc),
        "log_evidence": ll - 0.5 * (ldr + sc),
    }


def effective_parameters(posterior: LaplacePosterior) -> float:
    r"""MacKay's :math:`\gamma = \sum_i \frac{s\lambda_i}{s\lambda_i+\delta}`, :math:`s = 1/(\sigma^2\tau)`.

    The number of parameter directions that the data determine (scalar prior precision only)
    :cite:`mackay1992practical`.
    """
    post = _check_posterior(posterior)
    p0 = post.prior_precision_vector()
    if not bool((p0 == p0[0]).all()):
        raise ValueError("effective_parameters needs a scalar prior_precision")
    s = float(post.curvature_scale) / post.n_data
    lam = s * post.data_eigenvalues()
    return float((lam / (lam + p0[0])).sum())


def optimize_prior_precision(
    posterior: LaplacePosterior,
    *,
    method: str = "marglik",
    optimize_noise: bool = False,
    max_iter: int = 200,
    tol: float = 1e-10,
) -> LaplacePosterior:
    r"""The posterior with a scalar prior precision (and, if asked, the noise) maximizing the evidence.

    ``method="marglik"``: L-BFGS on :math:`(\log\delta, \log\sigma)` of
    :func:`log_marginal_likelihood`; ``method="mackay"``: the fixed-point updates of the module
    docstring until the relative change is below ``tol``. Both keep :math:`\theta_*` fixed (the
    Laplace evidence at the given MAP), so they reach the same stationary point.
    """
    post = _check_posterior(posterior)
    method = check_choice(method, "method", OPTIMIZERS)
    if not isinstance(optimize_noise, bool):
        raise TypeError(f"optimize_noise must be a bool, got {type(optimize_noise).__name__}")
    if optimize_noise and not post.is_regression:
        raise ValueError("optimize_noise=True needs a Gaussian likelihood")
    max_iter = check_integer(max_iter, "max_iter", minimum=1)
    tol = check_positive_real(tol, "tol")
    p0 = post.prior_precision_vector()
    delta = float(p0.mean())
    sigma = float(post.sigma_noise)
    if method == "mackay":
        norm2 = float(((post.mean - post.prior_mean) ** 2).sum())
        if norm2 == 0.0:
            raise ValueError("the MAP equals the prior mean: MacKay's update divides by 0")
        lam_unit = post.data_eigenvalues() / post.temperature
        nc = post.n_data * post.n_outputs
        for _ in range(max_iter):
            lam = lam_unit / sigma**2
            gamma = float((lam / (lam + delta)).sum())
            new_delta = gamma / norm2
            new_sigma = math.sqrt(float(post.data_fit) / (nc - gamma)) if optimize_noise else sigma
            change = abs(new_delta - delta) / delta + abs(new_sigma - sigma) / sigma
            delta, sigma = new_delta, new_sigma
            if change < tol:
                break
        return post.with_hyperparameters(
            prior_precision=delta, sigma_noise=sigma if post.is_regression else None
        )
    log_d = torch.tensor(math.log(delta), dtype=torch.float64, requires_grad=True)
    log_s = torch.tensor(math.log(sigma), dtype=torch.float64, requires_grad=optimize_noise)
    # log_d, log_s are leaves; .item() below reads their values without a graph
    variables = [log_d, log_s] if optimize_noise else [log_d]
    opt = torch.optim.LBFGS(
        variables,
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=tol,
        tolerance_change=tol * 1e-3,
        line_search_fn="strong_wolfe",
    )
    base = post.with_hyperparameters(prior_precision=1.0)

    def closure() -> Tensor:
        opt.zero_grad()
        sig = log_s.exp() if post.is_regression else None
        loss = -log_marginal_likelihood(base, prior_precision=log_d.exp(), sigma_noise=sig)
        loss.backward()
        return loss

    opt.step(closure)
    return post.with_hyperparameters(
        prior_precision=math.exp(log_d.item()),
        sigma_noise=math.exp(log_s.item()) if post.is_regression else None,
    )
