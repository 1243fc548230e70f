r"""Minibatch closures that know their likelihood: what :class:`~igbook.optim.blr.VOGN` consumes.

A :class:`PerExampleClosure` holds a model, a minibatch and a likelihood of
:mod:`igbook.fisher.likelihoods`. Everything it computes beyond the ordinary training closure
goes through :mod:`igbook.fisher`: per-example gradients by
:func:`igbook.fisher.models.per_example_gradients` (``vmap`` over examples), the diagonal of the
exact Fisher, GGN or Hessian by :func:`igbook.fisher.curvature_matrix` with
``structure="diagonal"``, and targets sampled from the model by :meth:`Likelihood.sample`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from igbook._validation import check_positive_real
from igbook.fisher import (
    CategoricalLikelihood,
    FisherType,
    GaussianLikelihood,
    Likelihood,
    as_fisher_type,
    curvature_matrix,
    get_likelihood,
    per_example_gradients,
)
from igbook.fisher.likelihoods import LIKELIHOODS

__all__ = ["PerExampleClosure", "LIKELIHOODS"]


class PerExampleClosure:
    r"""A minibatch closure that also returns per-example gradients and curvature diagonals.

    ``closure()`` behaves like an ordinary training closure for any optimizer: it zeroes the
    model's gradients, evaluates the average negative log-likelihood
    :math:`\hat f = \frac1M\sum_i \ell(f(x_i;\theta), y_i)`, :math:`\ell = -\log p(y\mid f)`,
    calls ``backward()`` and returns the loss. At the current parameter values,

    - :meth:`per_example_gradients` returns the :math:`M` losses and gradients
      :math:`g_i = \nabla_\theta\ell(f(x_i;\theta), y_i)`
      (:func:`igbook.fisher.models.per_example_gradients`);
    - :meth:`sample_targets` draws :math:`\tilde y_i \sim p(y\mid f(x_i;\theta))`
      (:meth:`igbook.fisher.Likelihood.sample`; :class:`VOGN` with ``FisherType.MC``);
    - :meth:`curvature_diagonal` returns the diagonal of a curvature matrix of
      :math:`\hat f` (:func:`igbook.fisher.curvature_matrix`, ``structure="diagonal"``;
      :class:`VOGN` with ``FisherType.EXACT`` or ``FisherType.GGN``)
      :cite:`martens2020new`.

    Parameters
    ----------
    model
        An ``nn.Module`` mapping a batch ``(M, ...)`` to outputs ``(M, ...)``. It must treat
        examples independently (no batch norm in training mode; dropout off).
    inputs, targets
        The minibatch. For a Gaussian likelihood, ``(M,)`` targets are accepted for ``(M, 1)``
        outputs.
    likelihood
        A :class:`igbook.fisher.Likelihood` (e.g. ``GaussianLikelihood(variance=0.25)``) or one
        of the names of :data:`igbook.fisher.likelihoods.LIKELIHOODS` (``"categorical"``:
        outputs are logits, targets class indices; ``"gaussian"``; ``"bernoulli"``).
    noise_std
        Shorthand for ``likelihood="gaussian"``: the noise standard deviation
        :math:`\sigma > 0`, i.e. ``GaussianLikelihood(variance=noise_std**2)``.
    """

    def __init__(
        self,
        model: nn.Module,
        inputs: Tensor,
        targets: Tensor,
        likelihood: Likelihood | str = "categorical",
        noise_std: float | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        lik = get_likelihood(likelihood)
        if noise_std is not None:
            if not (isinstance(likelihood, str) and isinstance(lik, GaussianLikelihood)):
                raise ValueError(
                    "noise_std is a shorthand for likelihood='gaussian'; pass "
                    "GaussianLikelihood(variance=...) as the likelihood instead"
                )
            lik = GaussianLikelihood(variance=check_positive_real(noise_std, "noise_std") ** 2)
        if not isinstance(inputs, Tensor) or not isinstance(targets, Tensor):
            raise TypeError("inputs and targets must be tensors")
        if (
            inputs.ndim == 0
            or targets.ndim == 0
            or inputs.shape[0] != targets.shape[0]
            or inputs.shape[0] == 0
        ):
            raise ValueError(
                f"inputs and targets must share a non-empty batch axis, got {tuple(inputs.shape)} "
                f"and {tuple(targets.shape)}"
            )
        if isinstance(lik, CategoricalLikelihood) and (
            targets.dtype != torch.long or targets.ndim != 1
        ):
            raise TypeError(
                "categorical targets must be a (M,) tensor of class indices (torch.long)"
            )
        self.model = model
        self.inputs = inputs
        self.targets = targets
        #: the :class:`igbook.fisher.Likelihood` of the targets
        self.likelihood = lik

    @property
    def noise_std(self) -> float | None:
        """The noise standard deviation of a Gaussian likelihood (``None`` for the others)."""
        lik = self.likelihood
        return lik.variance**0.5 if isinstance(lik, GaussianLikelihood) else None

    # ----- helpers --------------------------------------------------------------------------
    def _targets(self, y: Tensor, out: Tensor) -> Tensor:
        """Targets shaped for the likelihood: ``(M,)`` Gaussian targets of ``(M, 1)`` outputs are reshaped."""
        if (
            isinstance(self.likelihood, GaussianLikelihood)
            and y.shape != out.shape
            and y.numel() == out.numel()
        ):
            return y.reshape(out.shape)
        return y

    def _nll(self, out: Tensor, y: Tensor) -> Tensor:
        """Per-example negative log-likelihoods of the outputs ``out``, shape ``(M,)``."""
        lik = self.likelihood
        return lik.nll(lik.flatten_output(out), lik.check_targets(self._targets(y, out), out))

    def _names(self, params: Sequence[Tensor]) -> dict[str, Tensor]:
        """The model's names of ``params`` (in order) with their detached values."""
        names = {id(p): n for n, p in self.model.named_parameters()}
        missing = [i for i, p in enumerate(params) if id(p) not in names]
        if missing:
            raise ValueError(f"params {missing} are not parameters of the closure's model")
        return {names[id(p)]: p.detach() for p in params}

    @staticmethod
    def _split(flat: Tensor, params: Sequence[Tensor]) -> list[Tensor]:
        """Split the last axis of ``flat`` (``(..., P)``) into tensors shaped like ``params``."""
        out, offset = [], 0
        lead = flat.shape[:-1]
        for p in params:
            n = p.numel()
            out.append(flat[..., offset : offset + n].reshape(*lead, *p.shape))
            offset += n
        return out

    # ----- the closure ----------------------------------------------------------------------
    def __call__(self) -> Tensor:
        self.model.zero_grad(set_to_none=True)
        loss = self.loss()
        loss.backward()
        return loss.detach()

    def loss(self) -> Tensor:
        """The average negative log-likelihood at the current parameters (differentiable)."""
        return self._nll(self.model(self.inputs), self.targets).mean()

    @torch.no_grad()
    def sample_targets(self, generator: torch.Generator | None = None) -> Tensor:
        r"""Targets drawn from the model's own predictive :math:`p(y\mid f(x_i;\theta))`, shaped like ``targets``.

        One draw per example from :meth:`igbook.fisher.Likelihood.sample` (``generator=None``:
        torch's global generator).
        """
        lik = self.likelihood
        f = lik.flatten_output(self.model(self.inputs))
        y = lik.sample(f, 1, generator)[0]  # type: ignore[arg-type]
        return y if isinstance(lik, CategoricalLikelihood) else y.reshape(self.targets.shape)

    def per_example_gradients(
        self, params: Sequence[Tensor], targets: Tensor | None = None
    ) -> tuple[Tensor, list[Tensor]]:
        """Per-example losses ``(M,)`` and gradients ``[(M, *p.shape) for p in params]``.

        The gradients are :func:`igbook.fisher.models.per_example_gradients` of the closure's model
        and likelihood. ``params`` must be parameters of the model; the others are held fixed.
        ``targets`` replaces the stored targets (e.g. by :meth:`sample_targets`). When the
        model's output is not finite the gradients are returned as NaN, so that the
        optimizer's failure policy (raise or skip) applies.
        """
        wanted = self._names(params)
        y = self.targets if targets is None else targets
        with torch.no_grad():
            out = self.model(self.inputs)
            losses = self._nll(out, y)
        if not bool(torch.isfinite(out).all()):
            return losses, [
                torch.full((losses.shape[0], *p.shape), torch.nan, dtype=p.dtype, device=p.device)
                for p in params
            ]
        with torch.enable_grad():  # optimizers call this under no_grad()
            g = per_example_gradients(
                self.model, wanted, self.inputs, self._targets(y, out), self.likelihood
            )
        return losses, self._split(g, params)

    def curvature_diagonal(
        self,
        params: Sequence[Tensor],
        fisher_type: FisherType | str = FisherType.EXACT,
        *,
        generator: torch.Generator | None = None,
    ) -> list[Tensor]:
        r"""Diagonal of a curvature matrix of the average loss, one tensor per parameter.

        :func:`igbook.fisher.curvature_matrix` with ``structure="diagonal"`` at the current
        parameter values: for ``"exact"`` and ``"ggn"``
        :math:`\operatorname{diag}\frac1M\sum_i J_i^\top M_i J_i` with the output Fisher or the
        loss Hessian :math:`M_i` (equal for the canonical likelihoods), for ``"empirical"``
        :math:`\frac1M\sum_i g_i^2`, for ``"mc"`` the same with targets sampled from the model
        (``generator=None``: torch's global generator), for ``"hessian"`` the diagonal of
        :math:`\nabla^2_\theta\hat f`.
        """
        ftype = as_fisher_type(fisher_type)
        wanted = self._names(params)
        gen = generator if generator is not None else torch.default_generator
        with torch.no_grad():
            out = self.model(self.inputs)
        if not bool(torch.isfinite(out).all()):
            return [torch.full_like(p, torch.nan) for p in params]
        with torch.enable_grad():  # optimizers call this under no_grad()
            diag = curvature_matrix(
                self.model,
                wanted,
                self.inputs,
                self._targets(self.targets, out),
                self.likelihood,
                ftype,
                structure="diagonal",
                generator=gen,
            )
        assert isinstance(diag, Tensor)
        return self._split(diag, params)
