r"""The optimizer-geometry chapter's set-ups: a small network with an exact Fisher, and a race.

Three seeded problems, shared by ``book/optimizer_geometry.ipynb``, its tests and
``benchmarks/bench_optimizer_race.py``:

* :func:`geometry_problem`: a 64-8-10 tanh classifier (610 parameters) on 300 digits, in
  float64, small enough for the exact Fisher (:func:`igbook.fisher.curvature`); the chapter
  compares each optimizer's first step (:func:`first_step`) with the natural gradient there;
* :func:`race_problem` ``("autoencoder")``: the K-FAC chapter's digits autoencoder
  (:mod:`igbook.experiments.kfac_autoencoder`: images, widths, Bernoulli likelihood, entropy floor);
* :func:`race_problem` ``("classifier")``: a 64-64-64-10 ReLU classifier on the digits training
  set, categorical likelihood.

:func:`make_optimizer` builds each of :data:`OPTIMIZERS` (SGD with momentum, Adam, K-FAC, Shampoo,
SOAP, Muon, IVON) with the fixed settings :data:`FIXED`; only the learning rate is tuned, over
:data:`LR_GRIDS`, the same number of points for every optimizer (an equal tuning budget).
:func:`race` trains one of them and records the full-training-set loss against iterations and
optimizer time (:class:`~igbook.experiments.kfac_autoencoder.TrainingRun`). The constants here are
chosen before any benchmark runs and never read back from its results.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any

import torch
from torch import Tensor, nn

from igbook._validation import check_choice, check_count, check_positive_real
from igbook.experiments.kfac_autoencoder import (
    AUTOENCODER_WIDTHS,
    KFAC_FIXED,
    TrainingRun,
    digits_images,
    entropy_floor,
)
from igbook.experiments.models import mlp
from igbook.kfac import KFAC, negative_log_likelihood
from igbook.optim import IVON, SOAP, Muon, Shampoo, muon_param_groups

__all__ = [
    "OPTIMIZERS",
    "PROBLEMS",
    "GEOMETRY_WIDTHS",
    "GEOMETRY_SIZE",
    "CLASSIFIER_WIDTHS",
    "RACE_BATCH_SIZE",
    "TARGETS",
    "FIXED",
    "LR_GRIDS",
    "LIVE_LRS",
    "GEOMETRY_LRS",
    "RaceProblem",
    "geometry_problem",
    "race_problem",
    "make_optimizer",
    "training_step",
    "first_step",
    "input_chart",
    "pull_back",
    "output_change",
    "race",
]

#: The optimizers of the race, in the order of the chapter's tables.
OPTIMIZERS = ("sgd", "adam", "kfac", "shampoo", "soap", "muon", "ivon")
#: The race problems.
PROBLEMS = ("autoencoder", "classifier")
#: The small classifier of the "how far from the Fisher" table (610 parameters).
GEOMETRY_WIDTHS = (64, 8, 10)
#: Targets of the time-to-target table: an excess loss above the floor of each race problem that
#: Adam, the reference of the table, reaches within the steps of the benchmark.
TARGETS: dict[str, float] = {"autoencoder": 8.0, "classifier": 0.05}
#: Number of digits (training images, first ones) of that table.
GEOMETRY_SIZE = 300
#: The race's classifier.
CLASSIFIER_WIDTHS = (64, 64, 64, 10)
#: Minibatch size of both race problems.
RACE_BATCH_SIZE = 128

#: Settings each optimizer keeps fixed (keyword arguments of its constructor): no weight decay
#: anywhere; momentum 0.9 for SGD and K-FAC; K-FAC with the K-FAC chapter's KL clipping and
#: periods and damping 0.1; Shampoo as in its paper (sums of the statistics, beta2 = 1) with AdaGrad
#: grafting and roots every 10 steps; SOAP with its authors' betas and an eigenbasis refresh every 10 steps; Muon with
#: ``adjust_lr_fn="match_rms_adamw"`` so that one learning rate serves its Muon and AdamW groups;
#: IVON with the Bayesian-learning-rule chapter's digits settings (weight decay as its prior).
FIXED: dict[str, dict[str, Any]] = {
    "sgd": {"momentum": 0.9},
    "adam": {},
    "kfac": {"damping": 0.1, **KFAC_FIXED},
    "shampoo": {
        "momentum": 0.9,
        "beta2": 1.0,
        "eps": 1e-8,
        "grafting": "adagrad",
        "precondition_frequency": 10,
    },
    "soap": {"betas": (0.95, 0.95), "precondition_frequency": 10},
    "muon": {"weight_decay": 0.0, "adjust_lr_fn": "match_rms_adamw"},
    "ivon": {"hess_init": 5.0, "beta2": 0.999, "weight_decay": 1e-3},
}

#: Learning-rate grids: four points (half-decades) for every optimizer.
LR_GRIDS: dict[str, tuple[float, ...]] = {
    "sgd": (0.01, 0.03, 0.1, 0.3),
    "adam": (1e-3, 3e-3, 1e-2, 3e-2),
    "kfac": (0.01, 0.03, 0.1, 0.3),
    "shampoo": (1e-3, 3e-3, 1e-2, 3e-2),
    "soap": (1e-3, 3e-3, 1e-2, 3e-2),
    "muon": (1e-3, 3e-3, 1e-2, 3e-2),
    "ivon": (0.03, 0.1, 0.3, 1.0),
}

#: The learning rates of the chapter's small live race (one point of each grid, fixed in advance).
LIVE_LRS: dict[str, float] = {
    "sgd": 0.1,
    "adam": 3e-3,
    "kfac": 0.1,
    "shampoo": 3e-3,
    "soap": 1e-2,
    "muon": 1e-2,
    "ivon": 0.3,
}

#: Learning rates of the first steps compared with the natural gradient (the angle does not
#: depend on them; the KL spent is compared at an equal first-order decrease).
GEOMETRY_LRS: dict[str, float] = {name: LIVE_LRS[name] for name in OPTIMIZERS}


class RaceProblem:
    """A race problem: its data, its network builder, its likelihood and its loss floor.

    ``targets`` is ``None`` for the autoencoder (the images are their own targets); ``floor`` is
    the entropy floor of the autoencoder and 0 for the classifier.
    """

    def __init__(
        self,
        name: str,
        inputs: Tensor,
        targets: Tensor | None,
        widths: tuple[int, ...],
        activation: str,
        likelihood: str,
        floor: float,
    ) -> None:
        self.name = name
        self.inputs = inputs
        self.targets = targets
        self.widths = widths
        self.activation = activation
        self.likelihood = likelihood
        self.floor = floor

    def model(self, seed: int = 0) -> nn.Sequential:
        """The seeded network (:func:`igbook.experiments.models.mlp`)."""
        return mlp(self.widths, activation=self.activation, seed=seed, dtype=self.inputs.dtype)

    def batch_targets(self, xb: Tensor, idx: Tensor) -> Tensor:
        return xb if self.targets is None else self.targets[idx]

    def loss(self, out: Tensor, target: Tensor) -> Tensor:
        return negative_log_likelihood(out, target, likelihood=self.likelihood)

    def full_loss(self, model: nn.Module) -> float:
        """The mean loss over the whole training set."""
        with torch.no_grad():
            y = self.inputs if self.targets is None else self.targets
            return float(self.loss(model(self.inputs), y))


def geometry_problem(seed: int = 0) -> tuple[nn.Sequential, Tensor, Tensor]:
    """The float64 64-8-10 tanh classifier and the first :data:`GEOMETRY_SIZE` digits ``(model, x, y)``."""
    from igbook.data import load

    ds = load("digits", dtype=torch.float64, seed=0)
    x, y = ds.x_train[:GEOMETRY_SIZE], ds.y_train[:GEOMETRY_SIZE]
    return mlp(GEOMETRY_WIDTHS, activation="tanh", seed=seed, dtype=torch.float64), x, y


def race_problem(name: str, *, dtype: torch.dtype = torch.float32) -> RaceProblem:
    """``"autoencoder"`` (the K-FAC chapter's) or ``"classifier"`` (64-64-64-10 ReLU on digits)."""
    check_choice(name, "name", PROBLEMS)
    if name == "autoencoder":
        images = digits_images(dtype=dtype)
        return RaceProblem(
            name,
            images,
            None,
            AUTOENCODER_WIDTHS,
            "tanh",
            "bernoulli",
            entropy_floor(images),
        )
    from igbook.data import load

    ds = load("digits", dtype=dtype, seed=0)
    return RaceProblem(name, ds.x_train, ds.y_train, CLASSIFIER_WIDTHS, "relu", "categorical", 0.0)


def make_optimizer(
    name: str,
    model: nn.Module,
    lr: float,
    *,
    likelihood: str,
    data_size: int,
    seed: int = 0,
    **kwargs: Any,
) -> torch.optim.Optimizer:
    """One of :data:`OPTIMIZERS` for ``model`` with learning rate ``lr`` and :data:`FIXED` settings.

    ``kwargs`` override the fixed settings (e.g. ``fisher_type="exact"`` for K-FAC);
    ``likelihood`` is K-FAC's, ``data_size`` IVON's effective sample size.
    """
    check_choice(name, "name", OPTIMIZERS)
    lr = check_positive_real(lr, "lr")
    cfg = {**FIXED[name], **kwargs}
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, **cfg)
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, **cfg)
    if name == "kfac":
        return KFAC(model, likelihood=likelihood, lr=lr, seed=seed, **cfg)
    if name == "shampoo":
        return Shampoo(model.parameters(), lr=lr, **cfg)
    if name == "soap":
        return SOAP(model.parameters(), lr=lr, **cfg)
    if name == "muon":
        return Muon(muon_param_groups(model), lr=lr, **cfg)
    return IVON(model.parameters(), lr=lr, ess=float(data_size), seed=seed, **cfg)


def training_step(
    name: str,
    opt: torch.optim.Optimizer,
    model: nn.Module,
    loss_fn: Any,
    x: Tensor,
    y: Tensor,
) -> float:
    """One step of optimizer ``name`` on the batch ``(x, y)``; returns the batch loss.

    K-FAC records its factors from the forward pass before the backward pass; IVON evaluates the
    loss at its sampled weights through a closure; the others take a plain step.
    """
    if name == "ivon":

        def closure() -> Tensor:
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            return loss

        return float(opt.step(closure))  # type: ignore[arg-type]
    out = model(x)
    loss = loss_fn(out, y)
    opt.zero_grad()
    if name == "kfac":
        opt.update_factors(out)  # type: ignore[operator]
    loss.backward()
    opt.step()
    return float(loss.detach())


def first_step(
    name: str,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    likelihood: str = "categorical",
    lr: float | None = None,
    seed: int = 0,
    **kwargs: Any,
) -> Tensor:
    r"""The first move :math:`\theta_1-\theta_0` of optimizer ``name`` on the full batch, as a flat vector.

    Runs on a copy of ``model`` (left unchanged). SOAP's first call only computes its eigenbasis
    and moves nothing, so the first *moving* step is returned (at most two calls on the same batch).
    The order of the entries is that of ``model.parameters()`` (igbook's ``"flat"`` order).
    """
    net = copy.deepcopy(model)
    lr = GEOMETRY_LRS[check_choice(name, "name", OPTIMIZERS)] if lr is None else lr
    opt = make_optimizer(
        name, net, lr, likelihood=likelihood, data_size=x.shape[0], seed=seed, **kwargs
    )

    def loss_fn(out: Tensor, t: Tensor) -> Tensor:
        return negative_log_likelihood(out, t, likelihood=likelihood)

    theta0 = nn.utils.parameters_to_vector(net.parameters()).detach().clone()
    for _ in range(2):
        training_step(name, opt, net, loss_fn, x, y)
        move = nn.utils.parameters_to_vector(net.parameters()).detach() - theta0
        if bool((move != 0).any()):
            return move
    raise RuntimeError(f"{name} did not move the parameters in two steps")


def input_chart(model: nn.Sequential, x: Tensor, M: Tensor) -> tuple[nn.Sequential, Tensor]:
    r"""The same network in another chart: inputs :math:`x' = Mx`, first weight :math:`V = WM^{-1}`.

    :math:`Vx' = Wx`, so the copy computes the same function of the data; only the coordinates
    of the first layer's weight change (:math:`W = VM`). Returns ``(model', x')``, ``x'`` with rows
    :math:`Mx_n`.
    """
    m = copy.deepcopy(model)
    with torch.no_grad():
        m[0].weight.copy_(torch.linalg.solve(M.T, model[0].weight.T).T)
    return m, x @ M.T


def pull_back(step: Tensor, model: nn.Sequential, M: Tensor) -> Tensor:
    r"""A flat step of the chart of :func:`input_chart` in the original coordinates: :math:`\Delta W = \Delta V M`."""
    n = model[0].weight.numel()
    dv = step[:n].reshape(model[0].weight.shape)
    return torch.cat([(dv @ M).reshape(-1), step[n:]])


def output_change(model: nn.Module, x: Tensor, step: Tensor) -> Tensor:
    r""":math:`f_{\theta+d}(x) - f_\theta(x)`: what a flat step ``d`` does to the network's outputs."""
    moved = copy.deepcopy(model)
    theta = nn.utils.parameters_to_vector(moved.parameters()).detach()
    nn.utils.vector_to_parameters(theta + step, moved.parameters())
    with torch.no_grad():
        return moved(x) - model(x)


def race(
    name: str,
    problem: RaceProblem,
    *,
    lr: float,
    steps: int,
    seed: int = 0,
    eval_every: int = 25,
    batch_size: int = RACE_BATCH_SIZE,
) -> TrainingRun:
    """Train ``problem``'s network with optimizer ``name``; record the full-training-set loss.

    The same ``seed`` gives every optimizer the same initialization and minibatches. Times are
    optimizer time only (forward, backward and step; not the evaluations), wall and CPU. A run
    whose loss becomes non-finite (or above 1e6) stops and is marked ``diverged``.
    """
    steps = check_count(steps, "steps")
    model = problem.model(seed)
    n = problem.inputs.shape[0]
    opt = make_optimizer(name, model, lr, likelihood=problem.likelihood, data_size=n, seed=seed)
    run = TrainingRun(name, {"lr": lr, "seed": seed, "batch_size": batch_size, **FIXED[name]})
    gen = torch.Generator().manual_seed(seed)
    spent = cpu = 0.0
    run.iterations.append(0)
    run.seconds.append(0.0)
    run.cpu_seconds.append(0.0)
    run.losses.append(problem.full_loss(model))
    for t in range(1, steps + 1):
        idx = torch.randint(0, n, (batch_size,), generator=gen)
        xb = problem.inputs[idx]
        yb = problem.batch_targets(xb, idx)
        start, start_cpu = time.perf_counter(), time.process_time()
        training_step(name, opt, model, problem.loss, xb, yb)
        spent += time.perf_counter() - start
        cpu += time.process_time() - start_cpu
        if t % eval_every == 0 or t == steps:
            value = problem.full_loss(model)
            run.iterations.append(t)
            run.seconds.append(spent)
            run.cpu_seconds.append(cpu)
            run.losses.append(value)
            if not math.isfinite(value) or value > 1e6:
                run.diverged = True
                break
    return run
