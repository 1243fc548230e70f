r"""Regularization methods: a quadratic penalty that anchors the parameters important for old tasks.

* :class:`EWC`: a quadratic penalty per old task, :math:`\tfrac\lambda2\sum_i F_{ii}(\theta_i-\theta^*_i)^2`,
  the diagonal quadratic approximation of the KL between predictive distributions
  :cite:`kirkpatrick2017overcoming`
* :class:`OnlineEWC`: one running Fisher :math:`F^*\leftarrow\gamma F^*+F_t` and one anchor
  :cite:`schwarz2018progress`
* :class:`SI`: importance from the path integral of the loss decrease :cite:`zenke2017continual`

All three minimize the minibatch-*mean* cross-entropy (:class:`~igbook.continual.learner.FineTuning`)
and add the penalty through its closed-form gradient, so the path integral of SI uses the
gradient of the task loss alone, as in the original code. The diagonal Fisher of EWC comes
from the curvature core (:func:`igbook.continual.importance.diagonal_fisher`, which calls
:func:`igbook.fisher.models.fisher_diagonal`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from igbook._validation import (
    check_count,
    check_nonnegative_real,
    check_positive_real,
    check_scalar,
)
from igbook.continual.importance import FISHER_KINDS, batched_gradient_diagonal, diagonal_fisher
from igbook.continual.learner import FineTuning
from igbook.continual.streams import Task
from igbook.fisher.types import FisherType, as_fisher_type

__all__ = ["EWC", "OnlineEWC", "SI"]


class EWC(FineTuning):
    r"""Elastic weight consolidation :cite:`kirkpatrick2017overcoming`: one penalty per old task.

    .. math::

        \mathcal L(\theta) = L_t(\theta)
        + \frac{\lambda}{2}\sum_{s<t}\sum_i F^{(s)}_{ii}\big(\theta_i-\theta^{*(s)}_i\big)^2,

    with :math:`\theta^{*(s)}` the parameters at the end of task :math:`s` and
    :math:`F^{(s)}` the diagonal Fisher there (:func:`igbook.continual.importance.diagonal_fisher`, the
    exact expectation over labels by default). Since the task loss is a *mean* over examples
    and the Fisher a mean too, :math:`\lambda = n_{\mathrm{old}}/n_{\mathrm{new}}` (about 1 for
    equal tasks) is the value the Laplace approximation of Bayes' rule prescribes; larger
    values are common in practice. Keeping one penalty per task counts the old data several
    times :cite:`huszar2018note`; :class:`OnlineEWC` keeps one.

    Parameters
    ----------
    lam
        Penalty strength :math:`\lambda\geq 0`.
    fisher
        Fisher estimate, one of :data:`~igbook.continual.importance.FISHER_KINDS`: ``"exact"``,
        ``"mc"`` (one sampled label per example; ``"sample"`` is a deprecated alias),
        ``"empirical"`` (:class:`~igbook.fisher.types.FisherType` values) or ``"batched"``
        (:func:`~igbook.continual.importance.batched_gradient_diagonal`).
    fisher_samples
        Use at most this many training examples of the task for the Fisher (all by default).
    fisher_batch_size
        Minibatch size of ``fisher="batched"``.
    lr, optimizer, momentum, seed
        As in :class:`FineTuning`.
    """

    name = "EWC"
    requires_task_boundaries = True

    def __init__(
        self,
        model: nn.Module,
        *,
        lam: float = 100.0,
        fisher: str = "exact",
        fisher_samples: int | None = None,
        fisher_batch_size: int = 16,
        lr: float = 0.05,
        optimizer: str = "sgd",
        momentum: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__(model, lr=lr, optimizer=optimizer, momentum=momentum, seed=seed)
        self.lam = check_nonnegative_real(lam, "lam")
        if isinstance(fisher, str) and fisher == "batched":
            self.fisher_kind = "batched"
        else:
            allowed = (FisherType.EXACT, FisherType.MC, FisherType.EMPIRICAL)
            try:
                self.fisher_kind = as_fisher_type(fisher, allowed=allowed, name="fisher").value
            except ValueError:
                raise ValueError(f"fisher must be one of {FISHER_KINDS}, got {fisher!r}") from None
        self.fisher_samples = (
            None if fisher_samples is None else check_count(fisher_samples, "fisher_samples")
        )
        self.fisher_batch_size = check_count(fisher_batch_size, "fisher_batch_size")
        self.generator = torch.Generator().manual_seed(seed)
        self.anchors: list[tuple[list[Tensor], list[Tensor]]] = []  # (fisher, theta*) per task

    def hyperparameters(self) -> dict[str, Any]:
        return {"lam": self.lam, "fisher": self.fisher_kind, **super().hyperparameters()}

    def task_fisher(self, task: Task) -> list[Tensor]:
        """The diagonal Fisher on ``task``'s training data at the current parameters."""
        x, y = task.x_train, task.y_train
        if self.fisher_samples is not None and self.fisher_samples < x.shape[0]:
            idx = torch.randperm(x.shape[0], generator=self.generator)[: self.fisher_samples]
            x, y = x[idx], y[idx]
        if self.fisher_kind == "batched":
            f = batched_gradient_diagonal(
                self.model, x, y, batch_size=self.fisher_batch_size, active=task.active_classes
            )
        else:
            f = diagonal_fisher(
                self.model,
                x,
                y,
                fisher_type=self.fisher_kind,
                active=task.active_classes,
                generator=self.generator,
            )
        return [f[k] for k in self.names]

    def end_task(self, task: Task) -> None:
        self.anchors.append((self.task_fisher(task), [p.detach().clone() for p in self.params]))

    def penalty(self) -> Tensor:
        total = torch.zeros((), dtype=self.params[0].dtype)
        for fisher, anchor in self.anchors:
            for p, f, a in zip(self.params, fisher, anchor, strict=True):
                total = total + (f * (p - a) ** 2).sum()
        return 0.5 * self.lam * total

    def penalty_gradient(self) -> list[Tensor] | None:
        if not self.anchors or self.lam == 0:
            return None
        out = [torch.zeros_like(p) for p in self.params]
        with torch.no_grad():
            for fisher, anchor in self.anchors:
                for o, p, f, a in zip(out, self.params, fisher, anchor, strict=True):
                    o.add_(self.lam * f * (p - a))
        return out


class OnlineEWC(EWC):
    r"""Online EWC :cite:`schwarz2018progress`: one running Fisher and one anchor.

    At the end of task :math:`t`: :math:`F^*\leftarrow\gamma F^* + F^{(t)}`,
    :math:`\theta^*\leftarrow\theta`. The penalty is

    .. math::

        \frac{\lambda}{2}\sum_i \gamma F^*_i(\theta_i-\theta^*_i)^2

    with :math:`\gamma` inside, as in the paper and van de Ven's code (Avalanche leaves it
    out: ``gamma_in_penalty=False``). With :math:`\gamma=1` the curvature of the penalty is
    the same as EWC's, :math:`\sum_s F^{(s)}`, but centred at the last anchor only.

    Parameters
    ----------
    gamma
        Decay :math:`\gamma\in[0, 1]` of the old Fisher.
    gamma_in_penalty
        Multiply the penalty by :math:`\gamma`.
    lam, fisher, fisher_samples, fisher_batch_size, lr, optimizer, momentum, seed
        As in :class:`EWC`.
    """

    name = "Online EWC"

    def __init__(
        self, model: nn.Module, *, gamma: float = 1.0, gamma_in_penalty: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(model, **kwargs)
        self.gamma = check_scalar(gamma, "gamma", low=0.0, high=1.0)
        self.gamma_in_penalty = bool(gamma_in_penalty)
        self.fisher_star: list[Tensor] | None = None
        self.anchor: list[Tensor] | None = None

    def hyperparameters(self) -> dict[str, Any]:
        return {"gamma": self.gamma, **super().hyperparameters()}

    def end_task(self, task: Task) -> None:
        f = self.task_fisher(task)
        if self.fisher_star is None:
            self.fisher_star = f
        else:
            self.fisher_star = [
                self.gamma * fs + ft for fs, ft in zip(self.fisher_star, f, strict=True)
            ]
        self.anchor = [p.detach().clone() for p in self.params]
        scale = self.gamma if self.gamma_in_penalty else 1.0
        self.anchors = [([scale * fs for fs in self.fisher_star], self.anchor)]


class SI(FineTuning):
    r"""Synaptic intelligence :cite:`zenke2017continual`.

    During a task every step adds to the running path integral
    :math:`\omega_i \mathrel{+}= -g_i\,\Delta\theta_i`, with :math:`g` the gradient of the *task*
    loss and :math:`\Delta\theta` the actual parameter change: the loss decrease each
    parameter is responsible for. At the end of the task, with :math:`\Delta_i` the total
    change over the task,

    .. math::

        \Omega_i \mathrel{+}= \frac{\omega_i}{\Delta_i^2 + \xi},\qquad \omega_i\leftarrow 0,
        \qquad \tilde\theta\leftarrow\theta,

    and the penalty is :math:`c\sum_i\Omega_i(\theta_i-\tilde\theta_i)^2` (no :math:`\tfrac12`).
    On a quadratic loss with curvature :math:`h_i` minimized by gradient flow,
    :math:`\omega_i = \tfrac12 h_i\Delta_i^2` exactly, so :math:`\Omega_i\to h_i/2` as
    :math:`\xi\to 0`: SI estimates the curvature from the trajectory.

    Parameters
    ----------
    c
        Penalty strength :math:`c\geq 0`.
    xi
        Damping :math:`\xi>0` (0.1 in van de Ven's code).
    lr, optimizer, momentum, seed
        As in :class:`FineTuning`.
    """

    name = "SI"
    requires_task_boundaries = True

    def __init__(self, model: nn.Module, *, c: float = 1.0, xi: float = 0.1, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.c = check_nonnegative_real(c, "c")
        self.xi = check_positive_real(xi, "xi")
        self.omega = [torch.zeros_like(p) for p in self.params]
        self.importance = [torch.zeros_like(p) for p in self.params]
        self.anchor = [p.detach().clone() for p in self.params]
        self.task_start = [p.detach().clone() for p in self.params]

    def hyperparameters(self) -> dict[str, Any]:
        return {"c": self.c, "xi": self.xi, **super().hyperparameters()}

    def begin_task(self, task: Task) -> None:
        self.task_start = [p.detach().clone() for p in self.params]

    def _after_step(self, task_grads: list[Tensor], before: list[Tensor]) -> None:
        with torch.no_grad():
            for w, g, p, b in zip(self.omega, task_grads, self.params, before, strict=True):
                w.add_(-g * (p - b))

    def end_task(self, task: Task) -> None:
        with torch.no_grad():
            for imp, w, p, s in zip(
                self.importance, self.omega, self.params, self.task_start, strict=True
            ):
                imp.add_(w / ((p - s) ** 2 + self.xi))
                w.zero_()
            self.anchor = [p.detach().clone() for p in self.params]
            self.task_start = [p.detach().clone() for p in self.params]

    def penalty(self) -> Tensor:
        total = torch.zeros((), dtype=self.params[0].dtype)
        for p, imp, a in zip(self.params, self.importance, self.anchor, strict=True):
            total = total + (imp * (p - a) ** 2).sum()
        return self.c * total

    def penalty_gradient(self) -> list[Tensor] | None:
        if self.c == 0:
            return None
        with torch.no_grad():
            return [
                2 * self.c * imp * (p - a)
                for p, imp, a in zip(self.params, self.importance, self.anchor, strict=True)
            ]
