r"""The interface of every continual-learning method, and fine-tuning (the Euclidean baseline).

Every method is a :class:`ContinualLearner` wrapping a :class:`torch.nn.Module` classifier
(the methods and the geometry each one uses are listed in :mod:`igbook.continual.methods`):

* :meth:`~ContinualLearner.observe` takes one minibatch ``(x, y)`` and makes one update;
* :meth:`~ContinualLearner.begin_task` / :meth:`~ContinualLearner.end_task` are called at task
  boundaries in the boundary-aware mode (methods with ``requires_task_boundaries = True``
  consolidate there; the others ignore them, and run unchanged in the streaming mode);
* :meth:`~ContinualLearner.sample_proba` returns class probabilities under ``S`` posterior
  samples, shape ``(S, n, C)`` (``S = 1`` for point estimates), and
  :meth:`~ContinualLearner.predict` the predicted labels.

:class:`FineTuning` minimizes the minibatch-*mean* cross-entropy with SGD (or Adam); the
regularization methods of :mod:`igbook.continual.regularization` add their penalties to it
through closed-form gradients (:meth:`FineTuning.penalty_gradient`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from igbook._validation import check_choice, check_nonnegative_real, check_positive_real, check_seed
from igbook.continual.importance import local_targets, restrict_logits
from igbook.continual.streams import Task

__all__ = ["Active", "ContinualLearner", "FineTuning"]

#: the classes a prediction is restricted to (task-incremental heads), or ``None`` for all
Active = Sequence[int] | None


class ContinualLearner:
    """Common interface of every continual-learning method (see the module docstring).

    Parameters
    ----------
    model
        A classifier mapping inputs ``(n, ...)`` to logits ``(n, C)``; its parameters are
        trained in place (for Bayesian methods they are the posterior means).
    seed
        Seed of every random draw the method makes.
    """

    name = "base"
    requires_task_boundaries = False
    bayesian = False

    def __init__(self, model: nn.Module, *, seed: int = 0) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.seed = check_seed(seed)
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("model has no trainable parameters")
        self.names = [k for k, p in model.named_parameters() if p.requires_grad]
        self.num_classes: int | None = None
        self.steps = 0

    # -- hooks -----------------------------------------------------------------------------
    def begin_task(self, task: Task) -> None:
        """Called before the first minibatch of ``task`` in the boundary-aware mode."""

    def end_task(self, task: Task) -> None:
        """Called after the last minibatch of ``task`` in the boundary-aware mode."""

    def observe(self, x: Tensor, y: Tensor, active: Active = None) -> float:
        """One update on the minibatch ``(x, y)``; returns the minibatch loss."""
        raise NotImplementedError

    # -- prediction ------------------------------------------------------------------------
    def _targets(self, logits: Tensor, y: Tensor, active: Active) -> Tensor:
        if self.num_classes is None:
            self.num_classes = int(logits.shape[-1])
        return local_targets(y, active, self.num_classes)

    @torch.no_grad()
    def sample_proba(
        self, x: Tensor, active: Active = None, num_samples: int | None = None
    ) -> Tensor:
        """Class probabilities over the ``active`` classes, shape ``(S, n, C_active)``."""
        return torch.softmax(restrict_logits(self.model(x), active), -1).unsqueeze(0)

    @torch.no_grad()
    def predict_proba(self, x: Tensor, active: Active = None) -> Tensor:
        """Posterior-predictive probabilities (mean over samples), shape ``(n, C_active)``."""
        return self.sample_proba(x, active).mean(0)

    @torch.no_grad()
    def predict(self, x: Tensor, active: Active = None) -> Tensor:
        """Predicted global class labels."""
        k = self.predict_proba(x, active).argmax(-1)
        if active is None:
            return k
        return torch.as_tensor(active, dtype=torch.long)[k]

    def hyperparameters(self) -> dict[str, Any]:
        """The settings of this learner (recorded by :func:`igbook.continual.runner.run_stream`)."""
        return {}

    def __repr__(self) -> str:
        hp = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({hp})"


class FineTuning(ContinualLearner):
    r"""Fine-tuning: SGD (or Adam) on the minibatch-mean cross-entropy, nothing else.

    Parameters
    ----------
    model
        The classifier.
    lr
        Learning rate.
    optimizer
        ``"sgd"`` or ``"adam"``.
    momentum
        SGD momentum.
    seed
        Unused by this method (kept for a uniform interface).
    """

    name = "SGD"

    def __init__(
        self,
        model: nn.Module,
        *,
        lr: float = 0.05,
        optimizer: str = "sgd",
        momentum: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__(model, seed=seed)
        self.lr = check_positive_real(lr, "lr")
        self.optimizer_name = check_choice(optimizer, "optimizer", ("sgd", "adam"))
        self.momentum = check_nonnegative_real(momentum, "momentum")
        if optimizer == "sgd":
            self.opt: torch.optim.Optimizer = torch.optim.SGD(self.params, lr=lr, momentum=momentum)
        else:
            self.opt = torch.optim.Adam(self.params, lr=lr)

    def hyperparameters(self) -> dict[str, Any]:
        return {"lr": self.lr, "optimizer": self.optimizer_name, "momentum": self.momentum}

    # penalty interface (zero here) ---------------------------------------------------------
    def penalty(self) -> Tensor:
        """The regularization term added to the task loss (differentiable in the parameters)."""
        return torch.zeros((), dtype=self.params[0].dtype)

    def penalty_gradient(self) -> list[Tensor] | None:
        """Closed-form gradient of :meth:`penalty`, one tensor per parameter (``None`` if zero)."""
        return None

    def _after_step(self, task_grads: list[Tensor], before: list[Tensor]) -> None:
        pass

    def task_loss(self, x: Tensor, y: Tensor, active: Active = None) -> Tensor:
        """Minibatch-mean cross-entropy over the ``active`` classes."""
        logits = self.model(x)
        return nn.functional.cross_entropy(
            restrict_logits(logits, active), self._targets(logits, y, active)
        )

    def observe(self, x: Tensor, y: Tensor, active: Active = None) -> float:
        self.opt.zero_grad(set_to_none=True)
        loss = self.task_loss(x, y, active)
        loss.backward()
        task_grads = [
            torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in self.params
        ]
        pen = self.penalty_gradient()
        if pen is not None:
            for p, g in zip(self.params, pen, strict=True):
                if p.grad is None:
                    p.grad = g.clone()
                else:
                    p.grad.add_(g)
        before = [p.detach().clone() for p in self.params]
        self.opt.step()
        if not all(bool(torch.isfinite(p).all()) for p in self.params):
            raise RuntimeError(
                f"{self.name} diverged (a parameter became non-finite at step {self.steps}): the penalty "
                "is too stiff for the learning rate (SGD needs lr * curvature of the penalty < 2); "
                "lower lr or the strength"
            )
        self._after_step(task_grads, before)
        self.steps += 1
        return float(loss.detach())
