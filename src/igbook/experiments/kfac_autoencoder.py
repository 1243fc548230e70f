r"""The K-FAC chapter's training experiment: a deep autoencoder on scikit-learn digits.

In the spirit of the MNIST autoencoder of :cite:`hinton2006reducing` and
:cite:`martens2015optimizing`: the 8x8 digit images, scaled to :math:`[0, 1]`, are encoded through
a narrow code layer and decoded back, with tanh hidden units and a Bernoulli likelihood (sigmoid
cross-entropy summed over the 64 pixels, averaged over images). Since the targets are grey levels
rather than bits, the smallest achievable loss is the entropy floor
:math:`\frac1N\sum_n\sum_d H(x_{nd})` (:func:`entropy_floor`); curves are plotted as the excess
loss above it.

:func:`train_autoencoder` runs one seeded optimizer (SGD with momentum, Adam, K-FAC, or the exact
dense natural gradient) and records the full-training-set loss against iterations and against
the wall-clock and process CPU time spent in optimizer iterations only (evaluations are not
timed). On a shared machine the CPU time is the steadier of the two.

The hyperparameters are module constants so that the chapter, the tests and
``benchmarks/bench_kfac.py`` use the same ones: :data:`TUNED` holds what the benchmark's grid
search chose (it re-runs the search and records its choice in ``benchmarks/results/kfac.json``;
``tests/test_experiments.py`` checks that the two agree), :data:`TINY_CONFIGS` the settings of
the exact-natural-gradient comparison on the small network :data:`TINY_WIDTHS`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from igbook._validation import check_choice, check_count
from igbook.experiments.models import mlp
from igbook.kfac import KFAC, negative_log_likelihood
from igbook.kfac.dense import DenseNaturalGradient

__all__ = [
    "AUTOENCODER_WIDTHS",
    "TINY_WIDTHS",
    "BATCH_SIZE",
    "TINY_BATCH_SIZE",
    "METHODS",
    "KFAC_FIXED",
    "TUNED",
    "TINY_CONFIGS",
    "digits_images",
    "entropy_floor",
    "TrainingRun",
    "train_autoencoder",
    "time_to_target",
]

#: Layer widths of the default deep autoencoder (64 pixels -> 16-dimensional code -> 64 pixels).
AUTOENCODER_WIDTHS = (64, 256, 128, 64, 16, 64, 128, 256, 64)
#: The small autoencoder (1172 parameters) on which the exact natural gradient is affordable.
TINY_WIDTHS = (64, 8, 4, 8, 64)
#: Minibatch size of the deep autoencoder's runs.
BATCH_SIZE = 256
#: Minibatch size of the small autoencoder's runs.
TINY_BATCH_SIZE = 128

#: Optimizers :func:`train_autoencoder` knows.
METHODS = ("sgd", "adam", "kfac", "ngd")

#: K-FAC settings the benchmark does not tune: KL clipping, factors every 5 steps, inverses
#: every 10, momentum 0.9.
KFAC_FIXED: dict[str, Any] = {
    "kl_clip": 1e-3,
    "factor_period": 5,
    "inverse_period": 10,
    "momentum": 0.9,
}

#: Per-method settings of the deep autoencoder chosen by the grid search of
#: ``benchmarks/bench_kfac.py`` (seed 0, loss after 400 steps): keyword arguments of
#: :func:`train_autoencoder`.
TUNED: dict[str, dict[str, Any]] = {
    "sgd": {"lr": 0.03, "momentum": 0.9, "batch_size": BATCH_SIZE},
    "adam": {"lr": 0.01, "batch_size": BATCH_SIZE},
    "kfac": {"lr": 0.1, "damping": 0.1, **KFAC_FIXED, "batch_size": BATCH_SIZE},
}

_NG: dict[str, Any] = {"lr": 0.3, "momentum": 0.9, "damping": 0.1, "kl_clip": 1e-3}
#: The small network (:data:`TINY_WIDTHS`, batches of :data:`TINY_BATCH_SIZE`): exact NGD and
#: K-FAC share the Fisher estimator (one sampled label), damping, KL clipping, learning rate and
#: momentum, so only the structure of the curvature differs.
TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "ngd": {**_NG, "fisher_type": "mc"},
    "kfac": {**_NG, "damping_mode": "exact"},
    "adam": {"lr": 3e-2},
    "sgd": {"lr": 0.1, "momentum": 0.9},
}


def digits_images(*, dtype: torch.dtype = torch.float32, seed: int = 0) -> Tensor:
    """The training images of :func:`igbook.data.load` ``("digits")`` scaled to ``[0, 1]``, shape ``(1347, 64)``."""
    from igbook.data import load

    ds = load("digits", standardize=False, dtype=dtype, seed=seed)
    return ds.x_train / 16.0


def entropy_floor(images: Tensor) -> float:
    r"""The smallest achievable Bernoulli loss, :math:`\frac1N\sum_{n,d} H(x_{nd})`.

    It is reached when every output equals its target (a pixel at 0 or 1 contributes 0).
    """
    x = images.double().clamp(1e-12, 1 - 1e-12)
    h = -(x * x.log() + (1 - x) * (1 - x).log())
    h = torch.where((images == 0) | (images == 1), torch.zeros_like(h), h)
    return float(h.sum(1).mean())


@dataclass
class TrainingRun:
    """One seeded training run: losses on the full training set at the recorded iterations."""

    method: str
    config: dict[str, Any]
    iterations: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    diverged: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "config": self.config,
            "iterations": self.iterations,
            "seconds": self.seconds,
            "cpu_seconds": self.cpu_seconds,
            "losses": self.losses,
            "diverged": self.diverged,
        }


def _full_loss(model: nn.Module, x: Tensor) -> float:
    with torch.no_grad():
        return float(negative_log_likelihood(model(x), x, likelihood="bernoulli"))


def train_autoencoder(
    method: str,
    images: Tensor,
    *,
    steps: int,
    lr: float,
    batch_size: int = BATCH_SIZE,
    momentum: float = 0.9,
    widths: tuple[int, ...] = AUTOENCODER_WIDTHS,
    seed: int = 0,
    eval_every: int = 25,
    time_budget: float | None = None,
    target: float | None = None,
    **kwargs: Any,
) -> TrainingRun:
    """Train the autoencoder with one optimizer; minibatches are drawn with a seeded generator.

    Parameters
    ----------
    method
        ``"sgd"`` (momentum), ``"adam"``, ``"kfac"`` (:class:`igbook.kfac.KFAC`, extra keyword
        arguments go to it) or ``"ngd"`` (:class:`igbook.kfac.DenseNaturalGradient`: small
        networks only).
    images
        Training images in ``[0, 1]``, shape ``(N, widths[0])``.
    steps, lr, batch_size, momentum, widths, seed
        The run. The same ``seed`` gives the same initialization and minibatches to every method.
    eval_every
        Record the full-training-set loss every that many iterations (and at iteration 0).
    time_budget, target
        Stop early once this many seconds of optimizer time are spent, or once the loss is
        below ``target``. A run whose loss becomes non-finite stops and is marked ``diverged``.
    """
    check_choice(method, "method", METHODS)
    steps = check_count(steps, "steps")
    model = mlp(widths, activation="tanh", seed=seed, dtype=images.dtype)
    config = {
        "lr": lr,
        "batch_size": batch_size,
        "momentum": momentum,
        "widths": list(widths),
        "seed": seed,
        **kwargs,
    }
    if method == "sgd":
        opt: Any = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    elif method == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=lr, **kwargs)
    elif method == "kfac":
        opt = KFAC(model, likelihood="bernoulli", lr=lr, momentum=momentum, seed=seed, **kwargs)
    else:
        opt = DenseNaturalGradient(
            model, likelihood="bernoulli", lr=lr, momentum=momentum, seed=seed, **kwargs
        )
    run = TrainingRun(method, config)
    gen = torch.Generator().manual_seed(seed)
    n = images.shape[0]
    spent = cpu = 0.0
    run.iterations.append(0)
    run.seconds.append(0.0)
    run.cpu_seconds.append(0.0)
    run.losses.append(_full_loss(model, images))
    for t in range(1, steps + 1):
        idx = torch.randint(0, n, (batch_size,), generator=gen)
        xb = images[idx]
        start, start_cpu = time.perf_counter(), time.process_time()
        out = model(xb)
        loss = negative_log_likelihood(out, xb, likelihood="bernoulli")
        opt.zero_grad()
        if method == "kfac":
            opt.update_factors(out)
        elif method == "ngd":
            opt.update_curvature(xb)
        loss.backward()
        opt.step()
        spent += time.perf_counter() - start
        cpu += time.process_time() - start_cpu
        if t % eval_every == 0 or t == steps:
            value = _full_loss(model, images)
            run.iterations.append(t)
            run.seconds.append(spent)
            run.cpu_seconds.append(cpu)
            run.losses.append(value)
            if math.isnan(value) or value == float("inf") or value > 1e6:
                run.diverged = True
                break
            if target is not None and value <= target:
                break
            if time_budget is not None and spent >= time_budget:
                break
    return run


def time_to_target(run: TrainingRun, target: float) -> tuple[int, float, float] | None:
    """First recorded ``(iteration, wall seconds, CPU seconds)`` at which the loss is ``<= target``, or ``None``."""
    for it, s, c, v in zip(run.iterations, run.seconds, run.cpu_seconds, run.losses, strict=True):
        if v <= target:
            return it, s, c
    return None
