"""The feedback object shared by every self-check."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["Feedback", "compare"]


@dataclass(frozen=True)
class Feedback:
    """Result of a self-check: ``ok`` plus a message for the reader. Truthy when correct."""

    ok: bool
    message: str
    details: dict[str, object] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        return ("Correct. " if self.ok else "Not yet. ") + self.message

    def _repr_markdown_(self) -> str:  # shown in notebooks
        icon = "✅" if self.ok else "❌"
        return f"{icon} **{'Correct' if self.ok else 'Not yet'}.** {self.message}"


def compare(answer: object, expected: Tensor, *, what: str, rtol: float = 1e-6, atol: float = 1e-9, where: str = "") -> Feedback:
    """Compare a reader's numeric answer with ``expected`` and explain any difference."""
    try:
        a = torch.as_tensor(answer, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        return Feedback(False, f"{what} should be a number or an array of numbers, got {type(answer).__name__}.")
    e = torch.as_tensor(expected, dtype=torch.float64)
    loc = f" {where}" if where else ""
    if a.shape != e.shape:
        if a.numel() == e.numel():
            a = a.reshape(e.shape)
        else:
            return Feedback(False, f"{what}{loc} should have shape {tuple(e.shape)}, got {tuple(a.shape)}.")
    if not bool(torch.isfinite(a).all()):
        return Feedback(False, f"{what}{loc} contains NaN or infinity.")
    if torch.allclose(a, e, rtol=rtol, atol=atol):
        return Feedback(True, f"{what}{loc} matches (rtol={rtol:g}).")
    err = (a - e).abs().max().item()
    ratio = ""
    if e.numel() == 1 and float(e) != 0 and float(a) != 0:
        r = float(a) / float(e)
        ratio = f" Your value is {r:.4g} times the expected one."
        if abs(r + 1) < 1e-6:
            ratio += " Check the sign."
        elif abs(r - 2) < 1e-6 or abs(r - 0.5) < 1e-6:
            ratio += " Off by a factor of 2: check the 1/2 in front of a quadratic form or a variance."
    return Feedback(False, f"{what}{loc} differs from the expected value by {err:.3g}.{ratio}", {"max_abs_error": err})


def call_reader(fn: Callable[..., object], *args: object) -> object:
    """Call the reader's function; an exception it raises is returned (to be reported), not raised."""
    try:
        return fn(*args)
    except Exception as exc:  # the reader's code: report, do not crash the notebook
        return exc
