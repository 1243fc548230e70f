r"""The one mechanism that keeps every igbook optimizer from poisoning a model.

Every optimizer of :mod:`igbook.optim`, :mod:`igbook.kfac` and :mod:`igbook.natgrad` uses the
helpers here, so that a failure inside a step has one behaviour everywhere:

* **Non-finite inputs are caught before anything is written.** The gradients (and curvature
  statistics: Monte Carlo averages, Kronecker factors, dense Fisher matrices) that a step is
  about to use are checked by :func:`first_nonfinite`. Under ``nonfinite="raise"`` (the
  default) a :class:`NonFiniteStepError` (a :class:`FloatingPointError` and a
  :class:`ValueError`) names the parameter and says that its gradient is not
  finite; under ``nonfinite="skip"`` the step is skipped, as the gradient scalers of automatic
  mixed precision skip ``optimizer.step()`` on an overflow, and the optimizer's counter
  ``skipped_steps`` goes up by one. Either way the parameters, the optimizer state and the
  random generator are left exactly as before the call, so the next good step behaves as if
  the failed one never happened.
* **A closure that raises leaves no trace.** :class:`Snapshot` records whatever a step may
  change (parameters, optimizer state, generator states, extra attributes) and puts it back
  when the step raises, on any Monte Carlo sample.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "NONFINITE_MODES",
    "NonFiniteStepError",
    "Snapshot",
    "check_nonfinite_mode",
    "first_nonfinite",
    "nonfinite_error",
]

#: what a step does with a gradient or curvature statistic that holds a NaN or an infinity
NONFINITE_MODES = ("raise", "skip")


def check_nonfinite_mode(value: Any) -> str:
    """Validate the ``nonfinite`` option of an optimizer (``"raise"`` or ``"skip"``)."""
    if not isinstance(value, str):
        raise TypeError(f"nonfinite must be 'raise' or 'skip', got {type(value).__name__}")
    if value not in NONFINITE_MODES:
        raise ValueError(f"nonfinite must be 'raise' or 'skip', got {value!r}")
    return value


def first_nonfinite(tensors: Iterable[Tensor | None]) -> int | None:
    """Index of the first tensor holding a NaN or an infinity (``None`` entries are skipped),
    or ``None`` when all are finite. One device synchronization for the whole list."""
    items = [(i, t) for i, t in enumerate(tensors) if t is not None]
    if not items:
        return None
    flags = torch.stack([torch.isfinite(t).all() for _, t in items])
    if bool(flags.all()):
        return None
    bad = int((~flags).nonzero()[0, 0])
    return items[bad][0]


class NonFiniteStepError(FloatingPointError, ValueError):
    """A step met a gradient or curvature statistic that is not finite (and wrote nothing).

    Both a :class:`FloatingPointError` (what it is) and a :class:`ValueError` (a bad input to
    the step, as the rest of igbook reports bad input)."""


def nonfinite_error(owner: str, what: str, name: str) -> NonFiniteStepError:
    """The error of a non-finite step: names the optimizer, the quantity and the parameter."""
    return NonFiniteStepError(
        f"{owner}: the {what} of parameter {name} is not finite (NaN or infinite); nothing was "
        "changed (parameters, optimizer state and random generator are as before the step). "
        "Pass nonfinite='skip' to skip such steps instead of raising."
    )


def _clone_tree(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: _clone_tree(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clone_tree(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_clone_tree(v) for v in obj)
    return copy.copy(obj)


def _restore_tree(live: Any, saved: Any) -> Any:
    """Write ``saved`` back into ``live`` in place where both are tensors of one shape (so that
    references held elsewhere stay valid); otherwise return ``saved``."""
    if (
        isinstance(live, Tensor)
        and isinstance(saved, Tensor)
        and live.shape == saved.shape
        and live.dtype == saved.dtype
    ):
        with torch.no_grad():
            live.copy_(saved)
        return live
    if isinstance(live, dict) and isinstance(saved, dict):
        for k in list(live):
            if k not in saved:
                del live[k]
        for k, v in saved.items():
            live[k] = _restore_tree(live[k], v) if k in live else v
        return live
    return saved


class Snapshot:
    """Everything a step may change, recorded so that a failed step can be undone exactly.

    Parameters
    ----------
    params
        Tensors whose values are recorded (the parameters).
    state
        A mapping (``optimizer.state``) whose entries for ``params`` are recorded, or ``None``.
    generators
        Generators whose states are recorded; a ``None`` entry stands for torch's global CPU
        generator (what an optimizer without a private generator draws from).
    obj, attrs
        Attributes ``attrs`` of ``obj`` recorded by value (tensors cloned).

    Use :meth:`restore` in an ``except`` block: values are copied back in place, so
    references to the parameters and state tensors stay valid.
    """

    def __init__(
        self,
        params: Sequence[Tensor],
        state: Any = None,
        generators: Sequence[torch.Generator | None] = (),
        obj: Any = None,
        attrs: Sequence[str] = (),
    ) -> None:
        self._params = list(params)
        self._values = [p.detach().clone() for p in self._params]
        self._state = state
        self._saved_state = None
        if state is not None:
            self._saved_state = {p: _clone_tree(state[p]) for p in self._params if p in state}
        self._gens = [
            (g, g.get_state() if g is not None else torch.random.get_rng_state())
            for g in generators
        ]
        self._obj = obj
        self._attrs = {a: _clone_tree(getattr(obj, a)) for a in attrs}

    def restore(self) -> None:
        """Put every recorded value back."""
        with torch.no_grad():
            for p, v in zip(self._params, self._values):
                p.copy_(v)
        if self._state is not None:
            for p in self._params:
                if p in self._saved_state:  # type: ignore[operator]
                    saved = self._saved_state[p]  # type: ignore[index]
                    if p in self._state:
                        self._state[p] = _restore_tree(self._state[p], _clone_tree(saved))
                    else:
                        self._state[p] = _clone_tree(saved)
                elif p in self._state:
                    del self._state[p]
        for g, s in self._gens:
            if g is None:
                torch.random.set_rng_state(s)
            else:
                g.set_state(s)
        for a, v in self._attrs.items():
            setattr(self._obj, a, _clone_tree(v))
