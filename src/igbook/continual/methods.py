r"""Continual-learning methods behind one interface.

Every method is a :class:`ContinualLearner` wrapping a :class:`torch.nn.Module` classifier:

* :meth:`~ContinualLearner.observe` takes one minibatch ``(x, y)`` and makes one update;
* :meth:`~ContinualLearner.begin_task` / :meth:`~ContinualLearner.end_task` are called at task
  boundaries in the boundary-aware mode (methods with ``requires_task_boundaries = True``
  consolidate there; the others ignore them, and run unchanged in the streaming mode);
* :meth:`~ContinualLearner.sample_proba` returns class probabilities under ``S`` posterior
  samples, shape ``(S, n, C)`` (``S = 1`` for point estimates), and
  :meth:`~ContinualLearner.predict` the predicted labels.

The methods and the geometry each one uses:

=====================  ===================================================================================
:class:`FineTuning`    plain SGD on the current minibatch: the Euclidean baseline that forgets
:class:`EWC`           a quadratic penalty per old task, :math:`\tfrac\lambda2\sum_i F_{ii}(\theta_i-\theta^*_i)^2`, the diagonal quadratic approximation of the KL between predictive distributions :cite:`kirkpatrick2017overcoming`
:class:`OnlineEWC`     one running Fisher :math:`F^*\leftarrow\gamma F^*+F_t` and one anchor :cite:`schwarz2018progress`
:class:`SI`            importance from the path integral of the loss decrease :cite:`zenke2017continual`
:class:`BGDLearner`    Gaussian weights, Bayesian gradient descent, no forgetting :cite:`zeno2018task`
:class:`MESULearner`   Gaussian weights, MESU: variance-scaled steps and forgetting over a window of :math:`N` minibatches :cite:`bonnet2025bayesian`
:class:`FOPNG`         natural-gradient steps projected to be Fisher-orthogonal to stored old-task gradients :cite:`garg2026fisher`
=====================  ===================================================================================

Point-estimate methods minimize the minibatch-*mean* cross-entropy; the penalties of EWC, online
EWC and SI are added through their closed-form gradients (so the path integral of SI uses
the gradient of the task loss alone, as in the original code). MESU and BGD minimize the
expected cross-entropy under their Gaussian posterior, *summed* over the minibatch by default
(MESU's memory window ``N`` counts minibatches), with weight samples evaluated in one
vectorized call.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from igbook._validation import check_seed
from igbook.continual.importance import _restrict_logits, diagonal_fisher, local_targets, named_params
from igbook.continual.streams import Task
from igbook.optim.bgd import BGD
from igbook.optim.mesu import MESU

__all__ = [
    "mlp",
    "BinaryLogits",
    "ContinualLearner",
    "FineTuning",
    "EWC",
    "OnlineEWC",
    "SI",
    "BGDLearner",
    "MESULearner",
    "FOPNG",
    "fopng_direction",
    "fan_in_sigma_groups",
    "METHODS",
    "make_learner",
]

Active = Sequence[int] | None


def mlp(
    in_features: int = 64,
    hidden: Sequence[int] = (100,),
    out_features: int = 10,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> nn.Sequential:
    """A ReLU multilayer perceptron with seeded PyTorch default initialization."""
    for name, v in (("in_features", in_features), ("out_features", out_features), *((f"hidden[{i}]", h) for i, h in enumerate(hidden))):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    seed = check_seed(seed)
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, out_features))
        model = nn.Sequential(*layers).to(dtype)
    finally:
        torch.random.set_rng_state(gen_state)
    return model


class BinaryLogits(nn.Module):
    r"""Turn one score :math:`s` per example into the two logits :math:`(0, s)` (logistic regression).

    ``nn.Sequential(nn.Linear(d, 1, bias=False), BinaryLogits())`` is a two-class classifier
    whose parameters are a single vector :math:`w\in\R^d`, convenient for drawing loss
    landscapes in the plane.
    """

    def forward(self, s: Tensor) -> Tensor:
        return torch.cat([torch.zeros_like(s), s], dim=-1)


def _check_number(value: Any, name: str, *, low: float = 0.0, strict: bool = False, allow_inf: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
    ok = ok and (value > low if strict else value >= low) and (allow_inf or math.isfinite(value))
    if not ok:
        raise ValueError(f"{name} must be a {'finite ' if not allow_inf else ''}number {'>' if strict else '>='} {low}, got {value!r}")
    return float(value)


def _check_int(value: Any, name: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


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
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        self.model = model
        self.seed = seed
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
    def sample_proba(self, x: Tensor, active: Active = None, num_samples: int | None = None) -> Tensor:
        """Class probabilities over the ``active`` classes, shape ``(S, n, C_active)``."""
        return torch.softmax(_restrict_logits(self.model(x), active), -1).unsqueeze(0)

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


# ---------------------------------------------------------------------------------------------
# Point estimates: fine-tuning and the regularization methods
# ---------------------------------------------------------------------------------------------
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

    def __init__(self, model: nn.Module, *, lr: float = 0.05, optimizer: str = "sgd", momentum: float = 0.0, seed: int = 0) -> None:
        super().__init__(model, seed=seed)
        self.lr = _check_number(lr, "lr", strict=True)
        if optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
        self.optimizer_name = optimizer
        self.momentum = _check_number(momentum, "momentum")
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
        return nn.functional.cross_entropy(_restrict_logits(logits, active), self._targets(logits, y, active))

    def observe(self, x: Tensor, y: Tensor, active: Active = None) -> float:
        self.opt.zero_grad(set_to_none=True)
        loss = self.task_loss(x, y, active)
        loss.backward()
        task_grads = [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in self.params]
        pen = self.penalty_gradient()
        if pen is not None:
            for p, g in zip(self.params, pen):
                if p.grad is None:
                    p.grad = g.clone()
                else:
                    p.grad.add_(g)
        before = [p.detach().clone() for p in self.params]
        self.opt.step()
        if not all(bool(torch.isfinite(p).all()) for p in self.params):
            raise RuntimeError(
                f"{self.name} diverged (a parameter became non-finite at step {self.steps}): the penalty "
                "is too stiff for the learning rate (SGD needs lr * curvature of the penalty < 2); lower lr or the strength"
            )
        self._after_step(task_grads, before)
        self.steps += 1
        return float(loss.detach())


class EWC(FineTuning):
    r"""Elastic weight consolidation :cite:`kirkpatrick2017overcoming`: one penalty per old task.

    .. math::

        \mathcal L(\theta) = L_t(\theta) + \frac{\lambda}{2}\sum_{s<t}\sum_i F^{(s)}_{ii}\big(\theta_i-\theta^{*(s)}_i\big)^2,

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
        Fisher estimate: ``"exact"``, ``"sample"``, ``"empirical"`` or ``"batched"``.
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
        self.lam = _check_number(lam, "lam")
        from igbook.continual.importance import FISHER_KINDS

        if fisher not in FISHER_KINDS:
            raise ValueError(f"fisher must be one of {FISHER_KINDS}, got {fisher!r}")
        self.fisher_kind = fisher
        self.fisher_samples = None if fisher_samples is None else _check_int(fisher_samples, "fisher_samples")
        self.fisher_batch_size = _check_int(fisher_batch_size, "fisher_batch_size")
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
        f = diagonal_fisher(
            self.model, x, y, kind=self.fisher_kind, active=task.active_classes,
            batch_size=self.fisher_batch_size, generator=self.generator,
        )
        return [f[k] for k in self.names]

    def end_task(self, task: Task) -> None:
        self.anchors.append((self.task_fisher(task), [p.detach().clone() for p in self.params]))

    def penalty(self) -> Tensor:
        total = torch.zeros((), dtype=self.params[0].dtype)
        for fisher, anchor in self.anchors:
            for p, f, a in zip(self.params, fisher, anchor):
                total = total + (f * (p - a) ** 2).sum()
        return 0.5 * self.lam * total

    def penalty_gradient(self) -> list[Tensor] | None:
        if not self.anchors or self.lam == 0:
            return None
        out = [torch.zeros_like(p) for p in self.params]
        with torch.no_grad():
            for fisher, anchor in self.anchors:
                for o, p, f, a in zip(out, self.params, fisher, anchor):
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

    def __init__(self, model: nn.Module, *, gamma: float = 1.0, gamma_in_penalty: bool = True, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.gamma = _check_number(gamma, "gamma")
        if self.gamma > 1:
            raise ValueError(f"gamma must lie in [0, 1], got {gamma!r}")
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
            self.fisher_star = [self.gamma * fs + ft for fs, ft in zip(self.fisher_star, f)]
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
        self.c = _check_number(c, "c")
        self.xi = _check_number(xi, "xi", strict=True)
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
            for w, g, p, b in zip(self.omega, task_grads, self.params, before):
                w.add_(-g * (p - b))

    def end_task(self, task: Task) -> None:
        with torch.no_grad():
            for imp, w, p, s in zip(self.importance, self.omega, self.params, self.task_start):
                imp.add_(w / ((p - s) ** 2 + self.xi))
                w.zero_()
            self.anchor = [p.detach().clone() for p in self.params]
            self.task_start = [p.detach().clone() for p in self.params]

    def penalty(self) -> Tensor:
        total = torch.zeros((), dtype=self.params[0].dtype)
        for p, imp, a in zip(self.params, self.importance, self.anchor):
            total = total + (imp * (p - a) ** 2).sum()
        return self.c * total

    def penalty_gradient(self) -> list[Tensor] | None:
        if self.c == 0:
            return None
        with torch.no_grad():
            return [2 * self.c * imp * (p - a) for p, imp, a in zip(self.params, self.importance, self.anchor)]


# ---------------------------------------------------------------------------------------------
# Gaussian weights: BGD and MESU
# ---------------------------------------------------------------------------------------------
def fan_in_sigma_groups(model: nn.Module, scale: float) -> list[dict[str, Any]]:
    r"""Param groups with :math:`\sigma_0 = \text{scale}/\sqrt{\text{fan-in}}` per layer.

    The fan-in of a module is that of its weight (``weight[0].numel()``); its bias gets the
    same :math:`\sigma_0`. The MESU authors' JAX code uses ``scale = 2``
    (:math:`0.5\cdot 4/\sqrt{\text{fan-in}}`).
    """
    _check_number(scale, "scale", strict=True)
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

    def __init__(self, model: nn.Module, *, reduction: str, num_test_samples: int, seed: int) -> None:
        super().__init__(model, seed=seed)
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
        self.reduction = reduction
        self.num_test_samples = _check_int(num_test_samples, "num_test_samples")
        self.eval_generator = torch.Generator().manual_seed(seed + 7919)
        self.opt: BGD | MESU

    def _sigma_groups(self, sigma_init: float | str, scale: float) -> list[dict[str, Any]] | list[Tensor]:
        if sigma_init == "fan_in":
            return fan_in_sigma_groups(self.model, scale)
        _check_number(sigma_init, "sigma_init", strict=True)
        return [{"params": self.params, "sigma_init": float(sigma_init)}]

    def _batched_logits(self, weights: list[Tensor], x: Tensor) -> Tensor:
        names = self.names

        def f(*ws: Tensor) -> Tensor:
            return functional_call(self.model, dict(zip(names, ws)), (x,))

        return vmap(f)(*weights)

    def observe(self, x: Tensor, y: Tensor, active: Active = None) -> float:
        weights, noise = self.opt.draw_samples()
        weights = [w.requires_grad_() for w in weights]
        logits = self._batched_logits(weights, x)  # (S, n, C)
        yl = self._targets(logits, y, active)
        logp = torch.log_softmax(_restrict_logits(logits, active), -1)
        nll = -logp.gather(-1, yl.expand(logp.shape[0], -1).unsqueeze(-1)).squeeze(-1)  # (S, n)
        per_sample = nll.sum(1) if self.reduction == "sum" else nll.mean(1)
        loss = per_sample.mean()
        grads = torch.autograd.grad(loss, weights)
        g_mu = [g.sum(0) for g in grads]
        g_sigma = [(e * g).sum(0) for e, g in zip(noise, grads)]
        self.opt.apply_gradients(g_mu, g_sigma)
        self.steps += 1
        return float(loss.detach())

    @torch.no_grad()
    def sample_proba(self, x: Tensor, active: Active = None, num_samples: int | None = None) -> Tensor:
        s = self.num_test_samples if num_samples is None else _check_int(num_samples, "num_samples")
        weights, _ = self.opt.draw_samples(s, generator=self.eval_generator)
        return torch.softmax(_restrict_logits(self._batched_logits(weights, x), active), -1)

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
            self._sigma_groups(sigma_init, sigma_scale), eta=eta, num_samples=num_samples, ratio_max=ratio_max, seed=seed
        )

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "eta": self.eta, "sigma_init": self.sigma_init, "num_samples": self.opt.num_samples,
            "reduction": self.reduction, "ratio_max": self.ratio_max,
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
            self._sigma_groups(sigma_init, sigma_scale), sigma_prior=sigma_prior, N=N,
            num_samples=num_samples, seed=seed, **mesu_kwargs,
        )

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "N": self.N, "sigma_prior": self.sigma_prior, "sigma_init": self.sigma_init,
            "num_samples": self.opt.num_samples, "reduction": self.reduction, **self.mesu_kwargs,
        }


# ---------------------------------------------------------------------------------------------
# FOPNG
# ---------------------------------------------------------------------------------------------
def fopng_direction(
    grad: Tensor,
    directions: Tensor,
    fisher_old: Tensor,
    fisher_new: Tensor,
    *,
    damping: float = 0.0,
    variant: str = "exact",
    rcond: float = 1e-10,
) -> Tensor:
    r"""The FOPNG natural direction :math:`F_{\mathrm{new}}^{-1}Pg` (diagonal Fishers, flat vectors).

    FOPNG :cite:`garg2026fisher` solves

    .. math::

        \min_v\ g^\top v\quad\text{s.t.}\quad \tfrac12 v^\top F_{\mathrm{new}}v\le\epsilon,\qquad
        G^\top F_{\mathrm{old}}\,v = 0,

    i.e. the steepest descent in the Fisher metric of the current task among the updates
    that are Fisher-orthogonal (in the old tasks' metric) to the stored old-task gradients
    :math:`G` (columns). The Lagrangian gives :math:`v\propto -F_{\mathrm{new}}^{-1}Pg` with

    .. math::

        Pg = g - F_{\mathrm{old}}G\,A^{+}\,G^\top F_{\mathrm{old}}F_{\mathrm{new}}^{-1}g,
        \qquad A = G^\top F_{\mathrm{old}}F_{\mathrm{new}}^{-1}F_{\mathrm{old}}G

    (``variant="exact"``, computed stably as an orthogonal projection in whitened coordinates;
    the constraint holds to rounding error, and :math:`g^\top F_{\mathrm{new}}^{-1}Pg\ge 0`, so the
    step always descends). The authors' code (``FOPNGMethod``) writes
    :math:`G^\top F_{\mathrm{old}}g` in place of :math:`G^\top F_{\mathrm{old}}F_{\mathrm{new}}^{-1}g` and adds
    ``damping`` to :math:`A` (``variant="reference_code"``: only that code is known to use this
    formula, so the variant is named after it; the former name ``"paper"`` still works and emits a
    :class:`DeprecationWarning`). The two agree when :math:`F_{\mathrm{new}} = I`. Otherwise that direction
    violates the constraint, changes under a rescaling :math:`F_{\mathrm{new}}\to cF_{\mathrm{new}}`
    (which leaves the constrained problem unchanged), and need not be a descent direction.

    Parameters
    ----------
    grad
        Gradient :math:`g`, shape ``(P,)``.
    directions
        :math:`G`, shape ``(P, k)`` (``k = 0`` allowed: plain natural gradient).
    fisher_old, fisher_new
        Diagonal Fishers, shape ``(P,)``, :math:`\geq 0`.
    damping
        :math:`\lambda\geq 0` added to :math:`F_{\mathrm{new}}` (and, for ``"reference_code"``, to :math:`A`).
    variant
        ``"exact"`` or ``"reference_code"`` (``"paper"``: deprecated alias of ``"reference_code"``).
    rcond
        Relative cut-off of the pseudo-inverse.
    """
    variant = _fopng_variant(variant)
    if grad.ndim != 1:
        raise ValueError(f"grad must be a flat vector, got shape {tuple(grad.shape)}")
    p = grad.shape[0]
    if directions.ndim != 2 or directions.shape[0] != p:
        raise ValueError(f"directions must have shape ({p}, k), got {tuple(directions.shape)}")
    for name, f in (("fisher_old", fisher_old), ("fisher_new", fisher_new)):
        if f.shape != grad.shape:
            raise ValueError(f"{name} must have shape {tuple(grad.shape)}, got {tuple(f.shape)}")
        if not bool((f >= 0).all()) or not bool(torch.isfinite(f).all()):
            raise ValueError(f"{name} must be finite and >= 0 (a diagonal Fisher)")
    _check_number(damping, "damping")
    fn = fisher_new + damping
    if not bool((fn > 0).all()):
        raise ValueError("fisher_new + damping must be > 0 everywhere: add damping")
    if directions.shape[1] == 0:
        return grad / fn
    b = fisher_old.unsqueeze(1) * directions  # F_old G
    if variant == "exact":
        m = b / fn.sqrt().unsqueeze(1)  # F_new^{-1/2} F_old G
        u = grad / fn.sqrt()
        q = _orthonormal_basis(m, rcond)
        u_perp = u - q @ (q.T @ u)
        return u_perp / fn.sqrt()
    a = b.T @ (b / fn.unsqueeze(1)) + damping * torch.eye(b.shape[1], dtype=b.dtype)
    pg = grad - b @ (torch.linalg.pinv(a, rtol=rcond) @ (b.T @ grad))
    return pg / fn


def _fopng_variant(variant: str) -> str:
    """Check ``variant``; the deprecated name ``"paper"`` warns and becomes ``"reference_code"``."""
    if variant == "paper":
        warnings.warn(
            'FOPNG variant="paper" is deprecated, use variant="reference_code": the formula is known '
            "only from the authors' code, not verified against the paper", DeprecationWarning, stacklevel=3,
        )
        return "reference_code"
    if variant not in ("exact", "reference_code"):
        raise ValueError(f"variant must be 'exact' or 'reference_code', got {variant!r}")
    return variant


def _orthonormal_basis(m: Tensor, rcond: float) -> Tensor:
    """Orthonormal basis of the column space of ``m`` (SVD with a relative rank cut-off)."""
    if m.shape[1] == 0:
        return m
    u, s, _ = torch.linalg.svd(m, full_matrices=False)
    if s.numel() == 0 or float(s[0]) == 0.0:
        return m[:, :0]
    keep = s > rcond * s[0]
    return u[:, keep]


class FOPNG(ContinualLearner):
    r"""Fisher-orthogonal projected natural gradient descent :cite:`garg2026fisher` (diagonal Fisher).

    Each step moves a fixed distance ``lr`` in the Fisher metric of the current task,

    .. math::

        \theta\leftarrow\theta - \mathrm{lr}\;\frac{F_{\mathrm{new}}^{-1}Pg}{\sqrt{(Pg)^\top F_{\mathrm{new}}^{-1}Pg}},

    along the Fisher-orthogonal projection :math:`P` of :func:`fopng_direction`, so that the
    update keeps :math:`G^\top F_{\mathrm{old}}v=0` for the stored old-task gradients :math:`G`
    (OGD-AVE :cite:`farajtabar2020orthogonal`: the gradient of the mean logit over the task's
    classes for ``directions_per_task`` random training examples of each finished task, at most
    ``max_directions``, oldest dropped first). :math:`F_{\mathrm{new}}` is the empirical
    diagonal Fisher of the current task, re-estimated at the task start and every
    ``fisher_refresh`` steps; :math:`F_{\mathrm{old}}\leftarrow(1-w)F_{\mathrm{old}}+wF_{\mathrm{task}}`
    after each task (:math:`w` = ``fisher_mix``, 0.5 in the authors' code).

    Parameters
    ----------
    lr
        Fisher-norm length :math:`\epsilon` of each step.
    directions_per_task, max_directions
        Size of the stored gradient memory.
    fisher_mix
        :math:`w\in(0, 1]`.
    damping
        :math:`\lambda>0` added to :math:`F_{\mathrm{new}}` (and to :math:`A` for ``variant="reference_code"``).
    variant
        ``"exact"`` (constraint satisfied) or ``"reference_code"`` (the formula of the authors' code;
        ``"paper"`` is a deprecated alias).
    fisher_refresh
        Steps between re-estimates of :math:`F_{\mathrm{new}}`.
    fisher_samples
        Examples used for each Fisher estimate (at most).
    first_task_lr
        If set, the first task uses plain SGD with this learning rate (as the authors' code);
        by default it uses the same (unprojected) natural-gradient step.
    seed
        Seed of the example choices.
    """

    name = "FOPNG"
    requires_task_boundaries = True

    def __init__(
        self,
        model: nn.Module,
        *,
        lr: float = 0.05,
        directions_per_task: int = 50,
        max_directions: int = 500,
        fisher_mix: float = 0.5,
        damping: float = 1e-3,
        variant: str = "exact",
        fisher_refresh: int = 100,
        fisher_samples: int = 512,
        first_task_lr: float | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(model, seed=seed)
        self.lr = _check_number(lr, "lr", strict=True)
        self.directions_per_task = _check_int(directions_per_task, "directions_per_task")
        self.max_directions = _check_int(max_directions, "max_directions")
        self.fisher_mix = _check_number(fisher_mix, "fisher_mix", strict=True)
        if self.fisher_mix > 1:
            raise ValueError(f"fisher_mix must lie in (0, 1], got {fisher_mix!r}")
        self.damping = _check_number(damping, "damping", strict=True)
        self.variant = _fopng_variant(variant)
        self.fisher_refresh = _check_int(fisher_refresh, "fisher_refresh")
        self.fisher_samples = _check_int(fisher_samples, "fisher_samples")
        self.first_task_lr = None if first_task_lr is None else _check_number(first_task_lr, "first_task_lr", strict=True)
        self.generator = torch.Generator().manual_seed(seed)
        p = sum(q.numel() for q in self.params)
        dtype = self.params[0].dtype
        self.G = torch.zeros(p, 0, dtype=dtype)
        self.fisher_old = torch.zeros(p, dtype=dtype)
        self.fisher_new = torch.ones(p, dtype=dtype)
        self.tasks_done = 0
        self._task: Task | None = None
        self._since_refresh = 0
        self._basis: Tensor | None = None
        self._a_pinv: Tensor | None = None

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "lr": self.lr, "directions_per_task": self.directions_per_task, "max_directions": self.max_directions,
            "fisher_mix": self.fisher_mix, "damping": self.damping, "variant": self.variant,
        }

    def _flat_fisher(self, task: Task) -> Tensor:
        x, y = task.x_train, task.y_train
        if self.fisher_samples < x.shape[0]:
            idx = torch.randperm(x.shape[0], generator=self.generator)[: self.fisher_samples]
            x, y = x[idx], y[idx]
        f = diagonal_fisher(self.model, x, y, kind="empirical", active=task.active_classes)
        return torch.cat([f[k].reshape(-1) for k in self.names])

    def _refresh(self) -> None:
        """Re-estimate F_new on the current task and recompute the cached projection."""
        if self._task is not None:
            self.fisher_new = self._flat_fisher(self._task)
        self._since_refresh = 0
        fn = self.fisher_new + self.damping
        b = self.fisher_old.unsqueeze(1) * self.G
        if self.variant == "exact":
            self._basis = _orthonormal_basis(b / fn.sqrt().unsqueeze(1), 1e-10)
        else:
            a = b.T @ (b / fn.unsqueeze(1)) + self.damping * torch.eye(b.shape[1], dtype=b.dtype)
            self._a_pinv = torch.linalg.pinv(a, rtol=1e-10)

    def begin_task(self, task: Task) -> None:
        self._task = task
        self._refresh()

    def projected_direction(self, g: Tensor) -> Tensor:
        r""":math:`F_{\mathrm{new}}^{-1}Pg` with the cached factors (equals :func:`fopng_direction`)."""
        if self._basis is None and self._a_pinv is None:
            self._refresh()
        fn = self.fisher_new + self.damping
        if self.G.shape[1] == 0:
            return g / fn
        if self.variant == "exact":
            q = self._basis
            u = g / fn.sqrt()
            return (u - q @ (q.T @ u)) / fn.sqrt()  # type: ignore[union-attr]
        b = self.fisher_old.unsqueeze(1) * self.G
        return (g - b @ (self._a_pinv @ (b.T @ g))) / fn  # type: ignore[operator]

    def observe(self, x: Tensor, y: Tensor, active: Active = None) -> float:
        if self._task is not None and self._since_refresh >= self.fisher_refresh:
            self._refresh()
        for p in self.params:
            p.grad = None
        logits = self.model(x)
        loss = nn.functional.cross_entropy(_restrict_logits(logits, active), self._targets(logits, y, active))
        grads = torch.autograd.grad(loss, self.params)
        g = torch.cat([q.reshape(-1) for q in grads]).detach()
        with torch.no_grad():
            theta = parameters_to_vector(self.params)
            if self.tasks_done == 0 and self.first_task_lr is not None:
                step = -self.first_task_lr * g
            else:
                d = self.projected_direction(g)
                norm = torch.sqrt((d * (self.fisher_new + self.damping) * d).sum())
                step = torch.zeros_like(d) if float(norm) == 0.0 else -self.lr * d / norm
            if not bool(torch.isfinite(step).all()):
                raise RuntimeError(f"FOPNG produced a non-finite step at step {self.steps}; increase damping")
            vector_to_parameters(theta + step, self.params)
        self._since_refresh += 1
        self.steps += 1
        return float(loss.detach())

    def _ogd_directions(self, task: Task) -> Tensor:
        n = task.x_train.shape[0]
        k = min(self.directions_per_task, n)
        idx = torch.randperm(n, generator=self.generator)[:k]
        p0 = named_params(self.model)
        active = task.active_classes

        def mean_logit(p: dict[str, Tensor], xn: Tensor) -> Tensor:
            return _restrict_logits(functional_call(self.model, p, (xn.unsqueeze(0),))[0], active).mean()

        g = vmap(grad(mean_logit), in_dims=(None, 0))(p0, task.x_train[idx])
        return torch.cat([g[k_].reshape(k, -1) for k_ in self.names], dim=1).T  # (P, k)

    def end_task(self, task: Task) -> None:
        f_task = self._flat_fisher(task)
        self.fisher_old = f_task if self.tasks_done == 0 else (1 - self.fisher_mix) * self.fisher_old + self.fisher_mix * f_task
        self.G = torch.cat([self.G, self._ogd_directions(task).to(self.G.dtype)], dim=1)[:, -self.max_directions :]
        self.tasks_done += 1
        self._task = None
        self._refresh()


METHODS: dict[str, type[ContinualLearner]] = {
    "sgd": FineTuning,
    "ewc": EWC,
    "online_ewc": OnlineEWC,
    "si": SI,
    "bgd": BGDLearner,
    "mesu": MESULearner,
    "fopng": FOPNG,
}


def make_learner(method: str, model: nn.Module, **hyperparameters: Any) -> ContinualLearner:
    """Build a learner by name: one of ``METHODS`` (``"sgd"``, ``"ewc"``, ``"online_ewc"``, ``"si"``, ``"bgd"``, ``"mesu"``, ``"fopng"``)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    return METHODS[method](model, **hyperparameters)

