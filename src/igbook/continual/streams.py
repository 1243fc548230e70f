r"""Task streams built from the scikit-learn digits (offline stand-ins for permuted and split MNIST).

Two classic continual-learning benchmarks :cite:`kirkpatrick2017overcoming,zenke2017continual,vandeven2022three`,
rebuilt on the 8x8 digits that ship with scikit-learn (1,797 images; 1,347 for training and
450 for testing with the default split), so nothing is downloaded:

* :func:`permuted_digits` (domain-incremental): every task is the whole ten-class problem
  under its own fixed permutation of the 64 pixels; one output head of ten classes.
* :func:`split_digits`: five two-class tasks (0/1, 2/3, 4/5, 6/7, 8/9). In the
  *task-incremental* scenario the task identity is given and the prediction is restricted to
  the task's two classes (a shared ten-output layer with the other outputs masked, i.e. a
  multi-headed model); in the *class-incremental* scenario it must be chosen among all ten.

A stream is consumed either **boundary-aware** (the learner is told when a task starts and
ends: EWC, SI and FOPNG consolidate there) or **streaming** (only minibatches arrive; MESU and
BGD need nothing else). :func:`stream_batches` yields the minibatches of both modes in the
same seeded order. No published continual-learning numbers exist for these digit streams, so
the numbers of :mod:`igbook.continual` are this book's own baselines.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from igbook._validation import check_count, check_finite, check_real, check_seed
from igbook.data import load

__all__ = [
    "Task",
    "TaskStream",
    "permuted_digits",
    "split_digits",
    "ood_digits",
    "minibatches",
    "stream_batches",
]

SCENARIOS = ("domain", "task", "class")


@dataclass(frozen=True)
class Task:
    """One task of a stream: a train/test split and the output classes it uses.

    ``active_classes`` lists the outputs among which the learner predicts on this task (task-
    incremental scenario); ``None`` means all outputs (domain- and class-incremental).
    """

    index: int
    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    classes: tuple[int, ...]
    active_classes: tuple[int, ...] | None = None

    @property
    def num_train(self) -> int:
        return int(self.x_train.shape[0])


@dataclass(frozen=True)
class TaskStream:
    """An ordered, non-empty sequence of :class:`Task` sharing one input and output space."""

    name: str
    scenario: str
    tasks: tuple[Task, ...]
    num_inputs: int
    num_classes: int

    def __post_init__(self) -> None:
        if not isinstance(self.tasks, tuple):
            object.__setattr__(self, "tasks", tuple(self.tasks))
        if len(self.tasks) == 0:
            raise ValueError("tasks must hold at least one task (the task stream is empty)")
        if self.scenario not in SCENARIOS:
            raise ValueError(f"scenario must be one of {SCENARIOS}, got {self.scenario!r}")
        for t in self.tasks:
            if not isinstance(t, Task):
                raise TypeError(f"tasks must hold Task objects, got {type(t).__name__}")
            if t.x_train.shape[0] == 0:
                raise ValueError(f"task {t.name!r} has no training examples")

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self) -> Iterator[Task]:
        return iter(self.tasks)

    def __getitem__(self, i: int) -> Task:
        return self.tasks[i]


def permuted_digits(
    num_tasks: int = 10,
    *,
    seed: int = 0,
    split_seed: int = 0,
    test_fraction: float = 0.25,
    identity_first: bool = True,
    dtype: torch.dtype = torch.float32,
) -> TaskStream:
    """Permuted digits: each task applies its own fixed pixel permutation to all ten classes.

    Parameters
    ----------
    num_tasks
        Number of tasks (>= 1; the book uses 10).
    seed
        Seed of the permutations.
    split_seed, test_fraction
        The train/test split of :func:`igbook.data.load` (shared by all tasks).
    identity_first
        Leave the first task unpermuted (the usual convention).
    dtype
        Floating dtype of the inputs.
    """
    check_count(num_tasks, "num_tasks")
    seed = check_seed(seed)
    data = load(
        "digits",
        seed=check_seed(split_seed, "split_seed"),
        test_fraction=check_real(test_fraction, "test_fraction"),
        dtype=dtype,
    )
    gen = torch.Generator().manual_seed(seed)
    d = data.num_features
    tasks = []
    for t in range(num_tasks):
        perm = torch.arange(d) if (t == 0 and identity_first) else torch.randperm(d, generator=gen)
        tasks.append(
            Task(
                index=t,
                name=f"perm-{t}",
                x_train=data.x_train[:, perm].contiguous(),
                y_train=data.y_train,
                x_test=data.x_test[:, perm].contiguous(),
                y_test=data.y_test,
                classes=tuple(range(10)),
                active_classes=None,
            )
        )
    return TaskStream(
        name="permuted-digits", scenario="domain", tasks=tuple(tasks), num_inputs=d, num_classes=10
    )


def split_digits(
    scenario: str = "task",
    *,
    class_order: Sequence[int] | None = None,
    split_seed: int = 0,
    test_fraction: float = 0.25,
    dtype: torch.dtype = torch.float32,
) -> TaskStream:
    """Split digits: five two-class tasks, task- or class-incremental.

    Parameters
    ----------
    scenario
        ``"task"`` (the task's two outputs only; labels keep their global values) or
        ``"class"`` (predict among all ten classes).
    class_order
        A permutation of 0..9; consecutive pairs form the tasks (default 0/1, 2/3, ...).
    """
    if scenario not in ("task", "class"):
        raise ValueError(f"scenario must be 'task' or 'class', got {scenario!r}")
    order = list(range(10)) if class_order is None else [int(c) for c in class_order]
    if sorted(order) != list(range(10)):
        raise ValueError(
            f"class_order must be a permutation of 0..9, got {list(class_order or [])}"
        )
    data = load(
        "digits",
        seed=check_seed(split_seed, "split_seed"),
        test_fraction=check_real(test_fraction, "test_fraction"),
        dtype=dtype,
    )
    tasks = []
    for t in range(5):
        cls = (order[2 * t], order[2 * t + 1])
        tr = (data.y_train == cls[0]) | (data.y_train == cls[1])
        te = (data.y_test == cls[0]) | (data.y_test == cls[1])
        tasks.append(
            Task(
                index=t,
                name=f"{cls[0]}/{cls[1]}",
                x_train=data.x_train[tr],
                y_train=data.y_train[tr],
                x_test=data.x_test[te],
                y_test=data.y_test[te],
                classes=cls,
                active_classes=cls if scenario == "task" else None,
            )
        )
    return TaskStream(
        name=f"split-digits-{scenario}",
        scenario=scenario,
        tasks=tuple(tasks),
        num_inputs=data.num_features,
        num_classes=10,
    )


def ood_digits(
    *, seed: int = 10_000, split_seed: int = 0, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Out-of-distribution inputs: the digits test images under a fresh pixel permutation.

    The MESU paper uses permuted MNIST as the OOD set of a network trained on MNIST; this is
    the digits analogue. Use a ``seed`` that no stream uses (the default is far from the
    stream seeds of the book).
    """
    seed = check_seed(seed)
    data = load("digits", seed=check_seed(split_seed, "split_seed"), dtype=dtype)
    perm = torch.randperm(data.num_features, generator=torch.Generator().manual_seed(seed))
    return data.x_test[:, perm].contiguous()


def minibatches(
    x: Tensor,
    y: Tensor,
    batch_size: int,
    *,
    generator: torch.Generator | None = None,
    shuffle: bool = True,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield ``(x, y)`` minibatches of one pass (the last one may be smaller), shuffled with ``generator``.

    The arguments are checked when the function is called, not when the first batch is drawn.
    """
    check_count(batch_size, "batch_size")
    for name, t in (("x", x), ("y", y)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")
        if t.ndim == 0:
            raise ValueError(f"{name} must have a batch axis, got a scalar")
        if t.is_floating_point() or t.is_complex():
            check_finite(t, name)
    n = int(x.shape[0])
    if int(y.shape[0]) != n:
        raise ValueError(
            f"x and y must have the same number of rows, got {n} and {int(y.shape[0])}"
        )
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    idx = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    return _batches(x, y, idx, batch_size)


def _batches(x: Tensor, y: Tensor, idx: Tensor, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    for start in range(0, len(idx), batch_size):
        j = idx[start : start + batch_size]
        yield x[j], y[j]


def stream_batches(
    stream: TaskStream, *, batch_size: int = 16, epochs: int = 1, seed: int = 0
) -> Iterator[tuple[int, Tensor, Tensor]]:
    """The stream as a learner sees it in streaming mode: ``(task_index, x, y)`` minibatches.

    Tasks arrive in order; each is passed ``epochs`` times in a seeded random order. The
    task index is returned for bookkeeping (evaluation), not for the learner.
    """
    if not isinstance(stream, TaskStream):
        raise TypeError(f"stream must be a TaskStream, got {type(stream).__name__}")
    check_count(epochs, "epochs")
    gen = torch.Generator().manual_seed(check_seed(seed))
    for task in stream:
        for _ in range(epochs):
            for xb, yb in minibatches(task.x_train, task.y_train, batch_size, generator=gen):
                yield task.index, xb, yb
