r"""Run a learner through a task stream and record the accuracy matrix.

:func:`run_stream` feeds the minibatches of :func:`igbook.continual.streams.stream_batches` to a
:class:`igbook.continual.methods.ContinualLearner`. In the boundary-aware mode
(``task_boundaries=True``) it calls ``begin_task`` / ``end_task`` around each task; in the
streaming mode it never does, and refuses methods that need boundaries (EWC, online EWC, SI,
FOPNG). After each task it evaluates the learner on the test split of *every* task, filling
row :math:`i` of the accuracy matrix :math:`R` (:mod:`igbook.continual.metrics`); the entries
above the diagonal (tasks not yet seen) are recorded too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from igbook.continual.methods import ContinualLearner
from igbook.continual.metrics import summarize
from igbook.continual.streams import Task, TaskStream, minibatches

__all__ = ["StreamResult", "evaluate", "run_stream"]


@dataclass
class StreamResult:
    """What :func:`run_stream` records.

    ``accuracy`` is the ``(T, T)`` float64 matrix with ``accuracy[i, j]`` the test accuracy on
    task ``j`` after training on tasks ``0..i``; ``train_seconds`` the ``(T,)`` wall-clock seconds
    of training on each task (evaluation excluded); ``steps`` the minibatch updates per task;
    ``curve_steps`` and ``curve`` (if ``eval_every`` was given) the global step of each extra
    evaluation and the ``(K, T)`` accuracies on every task there; ``logs`` what
    ``on_task_end`` returned after each task.
    """

    method: str
    stream: str
    hyperparameters: dict[str, Any]
    accuracy: Tensor
    train_seconds: Tensor
    steps: list[int]
    curve_steps: list[int] = field(default_factory=list)
    curve: Tensor | None = None
    logs: list[Any] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        """The scalar metrics of :func:`igbook.continual.metrics.summarize` plus seconds per task."""
        out = summarize(self.accuracy)
        out["seconds_per_task"] = float(self.train_seconds.mean())
        return out


@torch.no_grad()
def evaluate(learner: ContinualLearner, task: Task) -> float:
    """Test accuracy of ``learner`` on ``task`` (restricted to the task's active classes)."""
    pred = learner.predict(task.x_test, task.active_classes)
    return float((pred == task.y_test).double().mean())


def run_stream(
    learner: ContinualLearner,
    stream: TaskStream,
    *,
    epochs: int = 1,
    batch_size: int = 16,
    seed: int = 0,
    task_boundaries: bool = True,
    eval_every: int | None = None,
    on_task_end: Callable[[int, ContinualLearner], Any] | None = None,
) -> StreamResult:
    """Train ``learner`` on the tasks of ``stream`` in order and evaluate after each task.

    Parameters
    ----------
    learner
        Any :class:`igbook.continual.methods.ContinualLearner`.
    stream
        A non-empty :class:`igbook.continual.streams.TaskStream`.
    epochs
        Passes over each task's training set.
    batch_size
        Minibatch size.
    seed
        Seed of the minibatch order (the learner's own randomness has its own seed).
    task_boundaries
        Boundary-aware (``True``) or streaming (``False``) mode.
    eval_every
        If set, also evaluate on all tasks every ``eval_every`` minibatches (learning curves).
    on_task_end
        Optional ``f(task_index, learner)`` called after each task's evaluation; its return
        values are stored in ``logs``.
    """
    if not isinstance(learner, ContinualLearner):
        raise TypeError(f"learner must be a ContinualLearner, got {type(learner).__name__}")
    if not isinstance(stream, TaskStream):
        raise TypeError(f"stream must be a TaskStream, got {type(stream).__name__}")
    for name, v in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    if eval_every is not None and (
        isinstance(eval_every, bool) or not isinstance(eval_every, int) or eval_every < 1
    ):
        raise ValueError(f"eval_every must be None or an integer >= 1, got {eval_every!r}")
    if not task_boundaries and learner.requires_task_boundaries:
        raise ValueError(
            f"{learner.name} consolidates at task boundaries and cannot run in the streaming mode; "
            "use task_boundaries=True"
        )
    T = len(stream)
    acc = torch.zeros(T, T, dtype=torch.float64)
    seconds = torch.zeros(T, dtype=torch.float64)
    steps: list[int] = []
    curve_steps: list[int] = []
    curve_rows: list[list[float]] = []
    logs: list[Any] = []
    gen = torch.Generator().manual_seed(seed)
    step = 0
    for task in stream:
        t0 = time.perf_counter()
        if task_boundaries:
            learner.begin_task(task)
        n_steps = 0
        for _ in range(epochs):
            for xb, yb in minibatches(task.x_train, task.y_train, batch_size, generator=gen):
                learner.observe(xb, yb, task.active_classes)
                n_steps += 1
                step += 1
                if eval_every is not None and step % eval_every == 0:
                    seconds[task.index] += time.perf_counter() - t0
                    curve_steps.append(step)
                    curve_rows.append([evaluate(learner, u) for u in stream])
                    t0 = time.perf_counter()
        if task_boundaries:
            learner.end_task(task)
        seconds[task.index] += time.perf_counter() - t0
        steps.append(n_steps)
        acc[task.index] = torch.tensor([evaluate(learner, u) for u in stream], dtype=torch.float64)
        if on_task_end is not None:
            logs.append(on_task_end(task.index, learner))
    return StreamResult(
        method=learner.name,
        stream=stream.name,
        hyperparameters=learner.hyperparameters(),
        accuracy=acc,
        train_seconds=seconds,
        steps=steps,
        curve_steps=curve_steps,
        curve=torch.tensor(curve_rows, dtype=torch.float64) if curve_rows else None,
        logs=logs,
    )
