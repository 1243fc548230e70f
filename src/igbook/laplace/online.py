r"""Online Laplace across tasks, and the Laplace reading of EWC.

After task :math:`t` the posterior :math:`q_t = \mathcal N(\theta_t, P_t^{-1})` becomes the prior of
task :math:`t+1`; training task :math:`t+1` then minimizes
:math:`-\log p(\mathcal D_{t+1}\mid\theta) - \log q_t(\theta)`, whose second term is, up to a
constant, the quadratic penalty

.. math::
    :label: eq-laplace-penalty

    -\log q_t(\theta) + \log q_t(\theta_t) = \tfrac12(\theta-\theta_t)^\top P_t(\theta-\theta_t).

With a diagonal posterior :math:`P_t = N\,\mathrm{diag}(\bar F) + \delta I` this is EWC's penalty
:math:`\frac\lambda2\sum_i\bar F_{ii}(\theta_i-\theta_{t,i})^2` with :math:`\lambda = N`, plus the
prior's :math:`\frac\delta2\lVert\theta-\theta_t\rVert^2` :cite:`kirkpatrick2017overcoming,ritter2018online`.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from igbook.fisher import flatten_params
from igbook.laplace.posterior import LaplacePosterior

__all__ = ["laplace_penalty", "next_task_prior"]


def _check_posterior(posterior: object) -> LaplacePosterior:
    if not isinstance(posterior, LaplacePosterior):
        raise TypeError(
            f"posterior must be a LaplacePosterior (from fit_laplace), got {type(posterior).__name__}"
        )
    return posterior


def laplace_penalty(posterior: LaplacePosterior, params: Mapping[str, Tensor]) -> Tensor:
    r"""The penalty :eq:`eq-laplace-penalty` at ``params`` (a dict holding the covered tensors).

    Differentiable in ``params``: the regularizer of the next task in online Laplace.
    """
    post = _check_posterior(posterior)
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a dict of tensors, got {type(params).__name__}")
    missing = [n for n in post.names if n not in params]
    if missing:
        raise ValueError(f"params must hold the posterior's parameters; missing {missing}")
    theta = flatten_params({n: params[n] for n in post.names}).to(post.mean.dtype)
    d = theta - post.mean
    prec = post.precision()
    if post.structure == "diagonal":
        return 0.5 * (prec.diagonal() * d * d).sum()
    return 0.5 * d @ prec.matvec(d)


def next_task_prior(posterior: LaplacePosterior) -> tuple[Tensor, Tensor]:
    r"""The prior of the next task from a diagonal posterior: :math:`(\mu_0, P_0) = (\theta_t, \mathrm{diag}\,P_t)`.

    Pass them to :func:`~igbook.laplace.fit_laplace` as ``prior_mean`` and ``prior_precision``
    (and use them in the next task's objective) for online Laplace with a diagonal posterior.
    """
    post = _check_posterior(posterior)
    if post.structure != "diagonal":
        raise ValueError(
            "next_task_prior needs structure='diagonal' (a diagonal prior precision); "
            f"got {post.structure!r}"
        )
    return post.mean.clone(), post.precision().diagonal()
