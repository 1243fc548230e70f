r"""Gaussian weights: Bayesian gradient descent (BGD) and MESU behind the learner interface.

* :class:`BGDLearner`: Gaussian weights, Bayesian gradient descent, no forgetting :cite:`zeno2018task`
* :class:`MESULearner`: Gaussian weights, MESU: variance-scaled steps and forgetting over a window of
  :math:`N` minibatches :cite:`bonnet2025bayesian`

Both minimize the expected cross-entropy under their Gaussian posterior, *summed* over the
minibatch by default (MESU's memory window ``N`` counts minibatches), with weight samples
evaluated in one vectorized call; the optimizers themselves are :class:`igbook.optim.BGD` and
:class:`igbook.optim.MESU`. Neither uses task boundaries (streaming mode).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from igbook._validation import check_choice, check_count, check_positive_real
from igbook.continual.importance import restrict_logits
from igbook.continual.learner import Active, ContinualLearner
from igbook.optim.bgd import BGD
from igbook.optim.mesu import MESU

__all__ = ["fan_in_sigma_groups", "BGDLearner", "MESULearner"]


def fan_in_sigma_groups(model: nn.Module, scale: float) -> list[dict[str, Any]]:
    r"""Param groups with :math:`\sigma_0 = \text{scale}/\sqrt{\text{fan-in}}` per layer.

    The fan-in of a module is that of its weight (``weight[0].numel()``); its bias gets the
    same :math:`\sigma_0`. The MESU authors' JAX code uses ``scale = 2``
    (:math:`0.5\cdot 4/\sqrt{\text{fan-in}}`).
    """
    check_positive_real(scale, "scale")
    groups: list[dict[str, Any]] = []
    seen: set[int] = set()
    for module in model.modules():
        w = getattr(module, "weight", None)
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if not own:
            continue
        fan_in = int(w[0].numel()) if isinstance(w, Tensor) and w.ndim >= 2 else 1
        for p in own:
            groups.append({"params": [p], "sigma_init": scale / math.sqrt(fan_in)})
            seen.add(id(p))
    missing = [p for p in model.parameters() if p.requires_grad and id(p) not in seen]
    if missing:
        raise ValueError("every trainable parameter must belong to a module")
    return groups


class _GaussianLearner(ContinualLearner):
    """Shared code of :class:`BGDLearner` and :class:`MESULearner` (sampling, loss, prediction)."""

    bayesian = True

    def __init__(
        self, model: nn.Module, *, reduction: str, num_test_samples: int, seed: int
    ) -> None:
        super().__init__(model, seed=seed)
        self.reduction = check_choice(reduction, "reduction", ("sum", "mean"))
        self.num_test_samples = check_count(num_test_samples, "num_test_samples")
        self.eval_generator = torch.Generator().manual_seed(seed + 7919)
        self.opt: BGD | MESU

    def _sigma_groups(
        self, sigma_init: float | str, scale: float
    ) -> list[dict[str, Any]] | list[Tensor]:
        if sigma_init == "fan_in":
            return fan_in_sigma_groups(self.model, scale)
        check_positive_real(sigma_init, "sigma_init")
        return [{"params": self.params, "sigma_init": float(sigma_init)}]

    def _batched_logits(self, weights: list[Tensor], x: Tensor) -> Tensor:
        names = self.names

        def f(*ws: Tensor) -> Tensor:
            return functional_call(self.model, dict(zip(names, ws, strict=True)), (x,))

        return vmap(f)(*weights)

    def observe(self, x: Tensor, y: Tensor, active: Active = None) -> float:
        weights, noise = self.opt.draw_samples()
        weights = [w.requires_grad_() for w in weights]
        logits = self._batched_logits(weights, x)  # (S, n, C)
        yl = self._targets(logits, y, active)
        logp = torch.log_softmax(restrict_logits(logits, active), -1)
        nll = -logp.gather(-1, yl.expand(logp.shape[0], -1).unsqueeze(-1)).squeeze(-1)  # (S, n)
        per_sample = nll.sum(1) if self.reduction == "sum" else nll.mean(1)
        loss = per_sample.mean()
        grads = torch.autograd.grad(loss, weights)
        g_mu = [g.sum(0) for g in grads]
        g_sigma = [(e * g).sum(0) for e, g in zip(noise, grads, strict=True)]
        self.opt.apply_gradients(g_mu, g_sigma)
        self.steps += 1
        return float(loss.detach())

    @torch.no_grad()
    def sample_proba(
        self, x: Tensor, active: Active = None, num_samples: int | None = None
    ) -> Tensor:
        s = (
            self.num_test_samples
            if num_samples is None
            else check_count(num_samples, "num_samples")
        )
        weights, _ = self.opt.draw_samples(s, generator=self.eval_generator)
        return torch.softmax(restrict_logits(self._batched_logits(weights, x), active), -1)

    def sigmas(self) -> list[Tensor]:
        """Current posterior standard deviations, one tensor per parameter."""
        return self.opt.sigmas()


class BGDLearner(_GaussianLearner):
    r"""Bayesian gradient descent :cite:`zeno2018task` on Gaussian weights (:class:`igbook.optim.BGD`).

    Task-agnostic: it never uses task boundaries, and keeps all past evidence (no forgetting).
    The defaults (summed loss, :math:`\sigma_0 = 2/\sqrt{\text{fan-in}}`) are those of
    :class:`MESULearner`, so that the two differ only by MESU's forgetting terms and BGD's exact
    square-root :math:`\sigma` update; the reference implementation uses the minibatch mean and
    :math:`\sigma_0 = 0.02`.

    Parameters
    ----------
    eta
        Step size of the means (1 in the paper).
    sigma_init
        Initial :math:`\sigma` (number) or ``"fan_in"`` (:func:`fan_in_sigma_groups` with
        ``sigma_scale``).
    num_samples, num_test_samples
        Weight samples per training step and for prediction.
    reduction
        ``"mean"`` (reference implementation) or ``"sum"`` of the minibatch negative log-likelihood.
    sigma_scale
        The scale of ``sigma_init="fan_in"``.
    ratio_max
        Clamp each change to :math:`\pm` ``ratio_max`` :math:`\cdot\sigma` (a knob of the MESU
        authors' PyTorch ``bgd``); the default 1 bounds the mean's step by :math:`\sigma`, as
        MESU's ``clamp_grad = 1`` does, which summed minibatch losses need. ``None`` disables.
    seed
        Seed of the weight noise (training and, separately, prediction).
    """

    name = "BGD"

    def __init__(
        self,
        model: nn.Module,
        *,
        eta: float = 1.0,
        sigma_init: float | str = "fan_in",
        num_samples: int = 10,
        num_test_samples: int = 10,
        reduction: str = "sum",
        sigma_scale: float = 2.0,
        ratio_max: float | None = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__(model, reduction=reduction, num_test_samples=num_test_samples, seed=seed)
        self.eta = eta
        self.sigma_init = sigma_init
        self.ratio_max = ratio_max
        self.opt = BGD(
            self._sigma_groups(sigma_init, sigma_scale),
            eta=eta,
            num_samples=num_samples,
            ratio_max=ratio_max,
            seed=seed,
        )

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "eta": self.eta,
            "sigma_init": self.sigma_init,
            "num_samples": self.opt.num_samples,
            "reduction": self.reduction,
            "ratio_max": self.ratio_max,
        }


class MESULearner(_GaussianLearner):
    r"""MESU :cite:`bonnet2025bayesian` on Gaussian weights (:class:`igbook.optim.MESU`).

    Task-agnostic (streaming): it never uses task boundaries. The memory window ``N`` counts
    minibatches; ``N = math.inf`` is MESU without forgetting.

    Parameters
    ----------
    N
        Memory window in minibatches.
    sigma_prior
        Prior standard deviation.
    sigma_init
        Initial :math:`\sigma` (number) or ``"fan_in"`` (:math:`\text{sigma\_scale}/\sqrt{\text{fan-in}}`).
    num_samples, num_test_samples
        Weight samples per training step and for prediction (10 and 10 for permuted MNIST).
    reduction
        ``"sum"`` (the paper) or ``"mean"`` of the minibatch negative log-likelihood.
    sigma_scale
        The scale of ``sigma_init="fan_in"`` (2 in the JAX code).
    clamp_grad
        Clip both gradients to :math:`\pm` ``clamp_grad`` :math:`/\sigma` (the JAX code's knob;
        0 disables). Any value :math:`\le 2` bounds the relative decrease of :math:`\sigma` per
        step by ``clamp_grad/2``, so :math:`\sigma` stays positive with minibatches larger
        than the paper's single example; the default 1 is used throughout the book.
    seed
        Seed of the weight noise.
    **mesu_kwargs
        Further knobs of :class:`igbook.optim.MESU` (``lr_mu``, ``lr_sigma``, ``mu_prior``,
        ``clamp_grad``, ``ratio_max``, ``sigma_bounds``, ...).
    """

    name = "MESU"

    def __init__(
        self,
        model: nn.Module,
        *,
        N: float = 1e3,
        sigma_prior: float = 1.0,
        sigma_init: float | str = "fan_in",
        num_samples: int = 10,
        num_test_samples: int = 10,
        reduction: str = "sum",
        sigma_scale: float = 2.0,
        clamp_grad: float = 1.0,
        seed: int = 0,
        **mesu_kwargs: Any,
    ) -> None:
        super().__init__(model, reduction=reduction, num_test_samples=num_test_samples, seed=seed)
        mesu_kwargs["clamp_grad"] = clamp_grad
        self.N = N
        self.sigma_prior = sigma_prior
        self.sigma_init = sigma_init
        self.mesu_kwargs = dict(mesu_kwargs)
        self.opt = MESU(
            self._sigma_groups(sigma_init, sigma_scale),
            sigma_prior=sigma_prior,
            N=N,
            num_samples=num_samples,
            seed=seed,
            **mesu_kwargs,
        )

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "N": self.N,
            "sigma_prior": self.sigma_prior,
            "sigma_init": self.sigma_init,
            "num_samples": self.opt.num_samples,
            "reduction": self.reduction,
            **self.mesu_kwargs,
        }
