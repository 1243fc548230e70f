r"""The loss whose curvature K-FAC approximates, and the output vectors it back-propagates.

Both are thin views of :mod:`igbook.fisher.likelihoods`, the one likelihood vocabulary of
igbook: the loss is :meth:`~igbook.fisher.likelihoods.Likelihood.nll` without its constant, the
vectors are :meth:`~igbook.fisher.likelihoods.Likelihood.output_gradient_samples`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from igbook._validation import check_choice
from igbook.fisher.kronecker import REDUCTIONS
from igbook.fisher.likelihoods import Likelihood, get_likelihood
from igbook.fisher.types import FisherType
from igbook.kfac.blocks import check_fisher_type

__all__ = ["negative_log_likelihood", "output_gradient_samples"]


def _outputs(outputs: object, lik: Likelihood) -> Tensor:
    if not isinstance(outputs, Tensor):
        raise TypeError(
            f"outputs must be a tensor (the network output), got {type(outputs).__name__}"
        )
    return lik.flatten_output(outputs)


def negative_log_likelihood(
    outputs: Tensor, targets: Tensor, *, likelihood: Likelihood | str, reduction: str = "mean"
) -> Tensor:
    r"""The loss whose curvature K-FAC approximates: :math:`\sum_n` or :math:`\tfrac1N\sum_n` of
    :math:`-\log p(y_n\mid f_n)`.

    .. math::

        \ell_n = \begin{cases}
        -\log\operatorname{softmax}(f_n)_{y_n} & \text{categorical},\\
        \sum_d -y_{nd}\log\sigma(f_{nd}) - (1-y_{nd})\log(1-\sigma(f_{nd})) & \text{bernoulli},\\
        \tfrac1{2\sigma^2}\lVert y_n - f_n\rVert^2 & \text{gaussian (constant dropped)}.
        \end{cases}

    The constant :meth:`~igbook.fisher.likelihoods.Likelihood.nll_constant` of the Gaussian is
    dropped (it changes neither gradients nor curvature). Note that ``F.mse_loss(f, y)`` is *not*
    the unit-variance Gaussian loss: it divides by the number of outputs and drops the
    :math:`\tfrac12`, which rescales the curvature by :math:`2/\mathrm{numel}(y_n)` (a classic
    K-FAC scale bug).

    Parameters
    ----------
    outputs
        Network outputs (logits for categorical and bernoulli), shape ``(N, ...)``.
    targets
        Class labels ``(N,)`` (categorical) or targets shaped like ``outputs`` (values in
        :math:`[0, 1]` for bernoulli).
    likelihood
        A :class:`~igbook.fisher.likelihoods.Likelihood` or its name.
    reduction
        ``"mean"`` over the ``N`` data points or ``"sum"``.
    """
    lik = get_likelihood(likelihood)
    reduction = check_choice(reduction, "reduction", REDUCTIONS)
    f = _outputs(outputs, lik)
    if not isinstance(targets, Tensor):
        raise TypeError(f"targets must be a tensor, got {type(targets).__name__}")
    y = lik.check_targets(targets, outputs, "targets")
    per = lik.nll(f, y) - lik.nll_constant(f.shape[1])
    return per.mean() if reduction == "mean" else per.sum()


def output_gradient_samples(
    outputs: Tensor,
    *,
    likelihood: Likelihood | str,
    fisher_type: FisherType | str = FisherType.MC,
    targets: Tensor | None = None,
    mc_samples: int = 1,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Vectors :math:`v_{kn}` to backpropagate from the output so that :math:`\sum_k v_{kn}v_{kn}^\top`
    estimates the output Fisher.

    :meth:`igbook.fisher.likelihoods.Likelihood.output_gradient_samples` on validated network
    outputs: ``"exact"`` gives the columns of a square root of the output Fisher, ``"mc"``
    gradients at labels sampled from the model (scaled by :math:`1/\sqrt K`), ``"empirical"``
    the gradient at the observed ``targets``. Returns ``(K, N, C)`` (outputs flattened to
    ``(N, C)``), detached; ``generator`` defaults to one seeded with 0.
    """
    lik = get_likelihood(likelihood)
    ftype = check_fisher_type(fisher_type, lik)
    f = _outputs(outputs, lik).detach()
    y = None
    if ftype is FisherType.EMPIRICAL:
        if targets is None:
            raise ValueError(
                "targets are required for fisher_type='empirical' (the observed labels)"
            )
        y = lik.check_targets(targets, outputs.detach(), "targets")
    return lik.output_gradient_samples(f, ftype, y=y, mc_samples=mc_samples, generator=generator)
