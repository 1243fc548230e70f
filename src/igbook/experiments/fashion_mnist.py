r"""Fashion-MNIST set-ups of ``benchmarks/bench_fashion_mnist.py`` :cite:`xiao2017fashion`.

Three experiments on the real 28 x 28 images (:func:`igbook.data.load_fashion_mnist`, Debian's
``dataset-fashion-mnist``), each the image-sized version of a digits experiment of the book:

``autoencoder``
    The deep autoencoder 784-1000-500-250-30-250-500-1000-784 of :cite:t:`hinton2006reducing`
    and :cite:t:`martens2015optimizing` (tanh units here, Bernoulli likelihood on pixels in
    :math:`[0, 1]`), trained with :func:`igbook.experiments.kfac_autoencoder.train_autoencoder`
    by SGD with momentum, Adam and K-FAC, each tuned on a grid of three learning rates, then
    timed to a target training loss (entropy floor plus :data:`AUTOENCODER` ``target_excess``
    per image).
``ivon_cnn``
    IVON :cite:`shen2024variational` against AdamW :cite:`loshchilov2019decoupled` on the small
    CNN :func:`cnn`, judged by test accuracy, NLL and ECE :cite:`guo2017calibration`
    (:func:`igbook.experiments.blr.evaluate_classifier`).
``permuted``
    Permuted Fashion-MNIST (:func:`permuted_fashion_mnist`, ten tasks) for every method of
    :mod:`igbook.continual` with the protocol and hyperparameters of
    :mod:`igbook.experiments.continual` (chosen on permuted digits, not re-tuned here).

Each experiment has three sizes: ``"smoke"`` (seconds, for the tests), ``"run"`` (what the
committed results used: subsets sized for a few minutes on two cores) and ``"full"`` (the
whole training set and the issue's budget; ``--size full`` in the benchmark, not run for the
committed results). The sizes are the dictionaries :data:`AUTOENCODER`, :data:`IVON_CNN` and
:data:`PERMUTED`, keyed by size.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import torch
from torch import Tensor, nn

from igbook._validation import check_choice, check_count, check_seed
from igbook.continual import Task, TaskStream
from igbook.experiments.blr import ADAMW_DIGITS, TrainedClassifier
from igbook.experiments.kfac_autoencoder import KFAC_FIXED
from igbook.optim import IVON

__all__ = [
    "SIZES",
    "MG_WIDTHS",
    "AUTOENCODER",
    "AUTOENCODER_GRIDS",
    "IVON_CNN",
    "IVON_FASHION",
    "ADAMW_FASHION",
    "PERMUTED",
    "images_subset",
    "cnn",
    "train_cnn",
    "permuted_fashion_mnist",
]

#: The three sizes of every experiment.
SIZES = ("smoke", "run", "full")

#: Layer widths of the deep autoencoder of :cite:t:`hinton2006reducing` (about 2.8 million
#: parameters).
MG_WIDTHS = (784, 1000, 500, 250, 30, 250, 500, 1000, 784)

#: Autoencoder sizes: training images (the first ``train_images`` of the training set),
#: minibatch, tuning horizon (loss after ``tune_steps`` steps on seed 0 picks the learning rate),
#: timed seeds, step cap per method, the target (entropy floor + ``target_excess`` nats per
#: image), the evaluation period and a cap on each timed run's optimizer wall seconds.
AUTOENCODER: dict[str, dict[str, Any]] = {
    "smoke": {
        "train_images": 64,
        "batch_size": 16,
        "tune_steps": 2,
        "seeds": (0,),
        "max_steps": {"sgd": 4, "adam": 4, "kfac": 4},
        "target_excess": 1e9,
        "eval_every": 2,
        "time_budget": None,
    },
    "run": {
        "train_images": 2000,
        "batch_size": 100,
        "tune_steps": 100,
        "seeds": (0,),
        "max_steps": {"sgd": 2000, "adam": 2000, "kfac": 2000},
        "target_excess": 70.0,
        "eval_every": 25,
        "time_budget": 60.0,
    },
    "full": {
        "train_images": 60000,
        "batch_size": 250,
        "tune_steps": 500,
        "seeds": (0, 1),
        "max_steps": {"sgd": 20000, "adam": 20000, "kfac": 5000},
        "target_excess": 10.0,
        "eval_every": 100,
        "time_budget": None,
    },
}

#: The step-size grids (three values per method). K-FAC keeps the digits chapter's periods and
#: momentum (:data:`igbook.experiments.kfac_autoencoder.KFAC_FIXED`), damping 0.1 and
#: learning rate 0.1, and varies the KL clip :math:`\kappa`: a clipped step is rescaled to
#: :math:`\eta^2 v^\top \hat F v = \kappa`, so on this network (where the clip binds from the
#: first step) :math:`\kappa`, not the learning rate, sets the step length.
AUTOENCODER_GRIDS: dict[str, list[dict[str, Any]]] = {
    "sgd": [{"lr": lr, "momentum": 0.9} for lr in (1e-3, 3e-3, 1e-2)],
    "adam": [{"lr": lr} for lr in (3e-4, 1e-3, 3e-3)],
    "kfac": [{**KFAC_FIXED, "lr": 0.1, "damping": 0.1, "kl_clip": kl} for kl in (1e-3, 1e-2, 1e-1)],
}

#: IVON-against-AdamW sizes: training images, test images, epochs, minibatch, seeds and the
#: number of posterior samples of IVON's predictive.
IVON_CNN: dict[str, dict[str, Any]] = {
    "smoke": {
        "train_images": 128,
        "test_images": 64,
        "epochs": 1,
        "batch_size": 32,
        "seeds": (0,),
        "num_samples": 2,
    },
    "run": {
        "train_images": 10000,
        "test_images": 10000,
        "epochs": 5,
        "batch_size": 64,
        "seeds": (0, 1, 2),
        "num_samples": 16,
    },
    "full": {
        "train_images": 60000,
        "test_images": 10000,
        "epochs": 20,
        "batch_size": 128,
        "seeds": (0, 1, 2),
        "num_samples": 32,
    },
}
#: IVON on the CNN (``ess`` = number of training images; prior :math:`N(0, 1/(\mathrm{ess}\,
#: \delta))` with :math:`\delta` the weight decay); not tuned on Fashion-MNIST.
IVON_FASHION: dict[str, float] = {
    "lr": 0.2,
    "hess_init": 0.5,
    "beta1": 0.9,
    "beta2": 0.99999,
    "weight_decay": 1e-4,
}
#: AdamW on the CNN: the digits chapter's setting (:data:`igbook.experiments.blr.ADAMW_DIGITS`)
#: with a smaller learning rate for the larger network.
ADAMW_FASHION: dict[str, float] = {**ADAMW_DIGITS, "lr": 3e-3}

#: Permuted Fashion-MNIST sizes: tasks, training and test images per task (the first ones of
#: each split, the same images permuted differently per task), passes per task and seeds. The
#: network (784-100-10), minibatch and hyperparameters are those of
#: :mod:`igbook.experiments.continual`.
PERMUTED: dict[str, dict[str, Any]] = {
    "smoke": {"tasks": 2, "train_images": 32, "test_images": 32, "epochs": 1, "seeds": (0,)},
    "run": {
        "tasks": 10,
        "train_images": 500,
        "test_images": 500,
        "epochs": 1,
        "seeds": (0, 1, 2),
    },
    "full": {
        "tasks": 10,
        "train_images": 60000,
        "test_images": 10000,
        "epochs": 3,
        "seeds": (0, 1, 2),
    },
}


@functools.lru_cache(maxsize=2)
def _load(flatten: bool) -> Any:
    from igbook.data import load_fashion_mnist

    return load_fashion_mnist(flatten=flatten)


def images_subset(
    n_train: int, n_test: int = 0, *, flatten: bool = True
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The first ``n_train`` training and ``n_test`` test images (in ``[0, 1]``) and labels.

    Raises :class:`igbook.data.FashionMNISTNotFoundError` when the files are absent. The data
    set is read once per process (and per ``flatten``); the returned tensors are copies.
    """
    n_train = check_count(n_train, "n_train")
    if isinstance(n_test, bool) or not isinstance(n_test, int) or not 0 <= n_test <= 10000:
        raise ValueError(f"n_test must be an integer in [0, 10000], got {n_test!r}")
    if n_train > 60000:
        raise ValueError(f"n_train must be at most 60000, got {n_train}")
    ds = _load(flatten)
    return (
        ds.x_train[:n_train].clone(),
        ds.y_train[:n_train].clone(),
        ds.x_test[:n_test].clone(),
        ds.y_test[:n_test].clone(),
    )


def cnn(seed: int = 0) -> nn.Sequential:
    """The small CNN: conv 3x3 (8) - ReLU - max-pool - conv 3x3 (16) - ReLU - max-pool - linear.

    Input ``(N, 1, 28, 28)``, output ten logits; 9,098 parameters, drawn from torch's default
    initialization under ``seed`` (the global generator is left as it was).
    """
    seed = check_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(16 * 7 * 7, 10),
        )


def train_cnn(
    name: str,
    x: Tensor,
    y: Tensor,
    *,
    epochs: int,
    batch_size: int,
    seed: int = 0,
    hyper: dict[str, float] | None = None,
) -> TrainedClassifier:
    """Train :func:`cnn` with ``"IVON"`` (one weight sample per step, ``ess`` = ``len(x)``) or
    ``"AdamW"`` on the minibatch-mean cross-entropy; minibatches from a seeded permutation per
    epoch. The result goes to :func:`igbook.experiments.blr.evaluate_classifier`.
    """
    check_choice(name, "name", ("IVON", "AdamW"))
    epochs = check_count(epochs, "epochs")
    batch_size = check_count(batch_size, "batch_size")
    n = x.shape[0]
    model = cnn(seed)
    opt: torch.optim.Optimizer
    if name == "IVON":
        opt = IVON(model.parameters(), ess=n, seed=seed, **(hyper or IVON_FASHION))
    else:
        opt = torch.optim.AdamW(model.parameters(), **(hyper or ADAMW_FASHION))
    g = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    t0 = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size]
            xb, yb = x[idx], y[idx]

            def closure(xb: Tensor = xb, yb: Tensor = yb) -> Tensor:
                opt.zero_grad()
                loss = nn.functional.cross_entropy(model(xb), yb)
                loss.backward()
                return loss

            losses.append(float(opt.step(closure).detach()))  # type: ignore[union-attr,arg-type]
    return TrainedClassifier(name, model, opt, losses, time.perf_counter() - t0)


def permuted_fashion_mnist(
    num_tasks: int = 10,
    *,
    train_images: int = 1000,
    test_images: int = 1000,
    seed: int = 0,
) -> TaskStream:
    """Permuted Fashion-MNIST: task ``t`` applies its own fixed pixel permutation to the images.

    The first task is unpermuted; the others' permutations are drawn from a generator seeded
    with ``seed``. Every task uses the first ``train_images`` training and ``test_images`` test
    images (all ten classes, domain-incremental), flattened to 784 inputs in ``[0, 1]``.
    """
    num_tasks = check_count(num_tasks, "num_tasks")
    seed = check_seed(seed)
    x, y, xt, yt = images_subset(train_images, check_count(test_images, "test_images"))
    gen = torch.Generator().manual_seed(seed)
    tasks = []
    for t in range(num_tasks):
        perm = torch.arange(784) if t == 0 else torch.randperm(784, generator=gen)
        tasks.append(
            Task(
                index=t,
                name=f"perm-{t}",
                x_train=x[:, perm].contiguous(),
                y_train=y,
                x_test=xt[:, perm].contiguous(),
                y_test=yt,
                classes=tuple(range(10)),
                active_classes=None,
            )
        )
    return TaskStream(
        name="permuted-fashion-mnist",
        scenario="domain",
        tasks=tuple(tasks),
        num_inputs=784,
        num_classes=10,
    )
