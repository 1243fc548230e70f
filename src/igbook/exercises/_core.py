"""The feedback object shared by every self-check, and the helpers that make checks safe to call.

A self-check is called by a student, on whatever the student has at that moment: ``None`` from a
function without ``return``, ``...`` from an unfilled cell, a string, a list of the wrong length,
NaN, a function that raises. Every check returns a :class:`Feedback` for all of these (the
student's own exception is reported by type and message, never as a traceback into igbook), and
for a wrong number it says *what kind* of mistake it looks like (a sign, a factor of 2, variance
for standard deviation, a transposed or inverted matrix, float32 rounding, or a mistake the
exercise names) without printing the expected value.
"""

from __future__ import annotations

import math
import os
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["Feedback", "compare"]

Mistake = tuple[object, str]
"""A typical mistake: the value it produces, and the hint to show when the answer equals it."""

_IGBOOK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__))


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


# ---------------------------------------------------------------------------------------- inputs
def describe(value: object) -> str:
    """A short description of what the student passed, for messages (never its full repr)."""
    if value is None:
        return "None"
    if value is Ellipsis:
        return "... (the placeholder)"
    if isinstance(value, str):
        return f"the string {value[:20]!r}" + ("..." if len(value) > 20 else "")
    if isinstance(value, Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    if callable(value):
        return f"a function ({getattr(value, '__name__', type(value).__name__)})"
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of length {len(value)}"
    return f"a {type(value).__name__}"


def describe_exception(exc: BaseException) -> str:
    """``"ZeroDivisionError: division by zero (line 2 of your code)"``: the student's error, with
    the last line of *their* code it passed through (not igbook's or torch's)."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    own = [
        fr
        for fr in traceback.extract_tb(exc.__traceback__)
        if not os.path.abspath(fr.filename).startswith((_IGBOOK_DIR, _TORCH_DIR))
    ]
    if own and own[-1].lineno is not None:
        text += f" (line {own[-1].lineno} of your code)"
    return text


def call_reader(fn: Callable[..., object], *args: object) -> object:
    """Call the reader's function; an exception it raises is returned (to be reported), not raised."""
    try:
        return fn(*args)
    except Exception as exc:
        return exc


def run_reader(
    fn: Callable[..., object], *args: object, name: str = "Your function", where: str = ""
) -> object:
    """Call the reader's function: its output, or a :class:`Feedback` reporting what it raised."""
    out = call_reader(fn, *args)
    if isinstance(out, Exception):
        loc = f" {where}" if where else ""
        return Feedback(
            False,
            f"{name} raised {describe_exception(out)}{loc}. Fix the error and run the check again.",
        )
    if out is None:
        loc = f" {where}" if where else ""
        return Feedback(False, f"{name} returned None{loc}: is its `return` missing?")
    return out


def need_function(value: object, signature: str, name: str = "") -> Feedback | None:
    """``None`` when ``value`` is callable, else the Feedback asking for a function ``signature``."""
    if callable(value):
        return None
    what = f"{name}: p" if name else "P"
    extra = (
        " (write the function first, then pass it without calling it)"
        if value is None or value is Ellipsis
        else ""
    )
    return Feedback(False, f"{what}ass a function {signature}, got {describe(value)}{extra}.")


def _cap(text: str) -> str:
    """Capitalize a sentence's first word unless it is a symbol (``step_p``, ``lr``, ``solve's``)."""
    first = text.split(" ", 1)[0]
    if len(first) <= 2 or not first.isalpha():
        return text
    return text[:1].upper() + text[1:]


def as_answer(value: object, what: str) -> Tensor | Feedback:
    """The student's numeric answer as a float64 tensor, or a :class:`Feedback` saying why it is not one."""
    what = _cap(what)
    if value is None:
        return Feedback(
            False,
            f"{what} is None: the answer is not filled in yet, or a function is missing its `return`.",
        )
    if value is Ellipsis:
        return Feedback(
            False, f"{what} is still the placeholder `...`: replace it with your answer."
        )
    if isinstance(value, bool):
        return Feedback(
            False, f"{what} should be a number, got {value}: a truth value is not an answer here."
        )
    if isinstance(value, str):
        return Feedback(
            False,
            f"{what} should be a number (or numbers), got {describe(value)}: "
            "compute the value instead of writing it as text.",
        )
    if callable(value) and not isinstance(value, Tensor):
        return Feedback(
            False,
            f"{what} should be a number (or numbers), got {describe(value)}: call it, or return its value.",
        )
    if isinstance(value, Tensor):
        t = value.detach()
    else:
        try:
            t = torch.as_tensor(value, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError, OverflowError):
            try:  # e.g. a list of 1-element tensors
                t = torch.stack(
                    [torch.as_tensor(v, dtype=torch.float64).detach().reshape(()) for v in value]
                )  # type: ignore[union-attr]
            except Exception:
                return Feedback(
                    False,
                    f"{what} should be a number or an array of numbers, got {describe(value)}.",
                )
    if t.is_complex():
        return Feedback(
            False, f"{what} is complex: the answer is real (a square root of a negative number?)."
        )
    return t.to(torch.float64)


def as_number(value: object, what: str) -> float | Feedback:
    """The student's answer as one float, or a :class:`Feedback` saying why it is not one number."""
    what = _cap(what)
    t = as_answer(value, what)
    if isinstance(t, Feedback):
        return t
    if t.numel() != 1:
        return Feedback(
            False, f"{what} should be one number, got {t.numel()} numbers (shape {tuple(t.shape)})."
        )
    v = float(t.reshape(()))
    if not math.isfinite(v):
        return Feedback(
            False, f"{what} is {v}: look for a 0/0, a log of zero or a division by zero."
        )
    return v


# ------------------------------------------------------------------------------------ diagnosis
def _close(a: Tensor, b: Tensor, rtol: float, atol: float) -> bool:
    return (
        a.shape == b.shape
        and bool(torch.isfinite(b).all())
        and torch.allclose(a, b, rtol=rtol, atol=atol)
    )


def _generic_hint(a: Tensor, e: Tensor, rtol: float, atol: float, low_precision: bool) -> str:
    """The kind of mistake that turns ``e`` into ``a``, or ``""``; never mentions ``e``'s value."""
    tol = {"rtol": max(rtol, 1e-6), "atol": atol}
    scale = float(e.abs().max())
    err = float((a - e).abs().max())
    if scale > 0 and err <= 1e-3 * scale:
        if low_precision:
            return "Nearly right, but computed in float32: build your tensors with dtype=torch.float64."
        return (
            f"Nearly right (relative error about {err / scale:.0e}, tolerance {rtol:g}): a rounded constant, "
            "a finite difference or float32 somewhere? Compute it exactly."
        )
    if scale == 0:
        return "It should be zero here: which term cancels?"
    if _close(a, -e, **tol):
        return "Wrong sign: check the minus signs."
    for c, msg in (
        (
            2.0,
            "A factor of 2 too large: a missing 1/2 (in front of a quadratic form, a variance or a log)?",
        ),
        (0.5, "A factor of 2 too small: a 1/2 too many, or a 2 lost in a derivative of a square?"),
        (
            math.sqrt(2),
            "Off by a factor sqrt(2): check where the 1/2 goes (1/2 d^T F d, or sqrt(2 x)).",
        ),
        (
            1 / math.sqrt(2),
            "Off by a factor sqrt(2): check where the 1/2 goes (1/2 d^T F d, or sqrt(2 x)).",
        ),
        (-2.0, "A sign and a factor of 2: check both the minus sign and the 1/2."),
        (-0.5, "A sign and a factor of 2: check both the minus sign and the 1/2."),
    ):
        if _close(a, c * e, **tol):
            return msg
    if (
        e.dim() == 2
        and e.shape[0] == e.shape[1]
        and not _close(e, e.T, **tol)
        and _close(a, e.T, **tol)
    ):
        return (
            "Transposed: your matrix is the transpose of the right one (which index is the row?)."
        )
    if e.dim() == 2 and e.shape[0] == e.shape[1] and e.shape[0] > 1:
        try:
            if _close(a, torch.linalg.inv(e), **tol):
                return (
                    "You have the inverse matrix: F versus F^{-1}, or precision versus covariance?"
                )
        except RuntimeError:
            pass
    if bool((e > 0).all()) and not _close(e, e**2, rtol=1e-2, atol=0.0):
        if _close(a, e.sqrt(), **tol):
            return "Your value is the square root of the right one: variance versus standard deviation?"
        if _close(a, e**2, **tol):
            return "Your value is the square of the right one: variance versus standard deviation?"
    if bool((e != 0).all()) and _close(a, 1 / e, **tol):
        return "Your value is the reciprocal of the right one: precision versus variance, or F versus F^{-1}?"
    if e.numel() > 1 and float(e.norm()) > 0:
        c = float((a * e).sum() / (e * e).sum())
        if c != 0 and _close(a, c * e, **tol):
            return (
                "Proportional to the right answer but off by a constant factor: a missing constant "
                "(a 1/2, a 1/N or a variance)?"
            )
    return ""


def _direction(a: Tensor, e: Tensor, rtol: float, atol: float) -> str:
    """Which way the answer is off (scalars) or which entries are off (arrays); never the value."""
    if e.numel() == 1:
        av, ev = float(a.reshape(())), float(e.reshape(()))
        if ev != 0 and av != 0 and (av > 0) != (ev > 0):
            return "It has the wrong sign, and not only the sign is off."
        big, small = abs(av) > abs(ev), abs(av) < abs(ev)
        r = abs(av / ev) if ev != 0 else math.inf
        if big:
            return (
                "It is "
                + ("more than 10 times " if r > 10 else "")
                + "too large"
                + (" in magnitude" if ev < 0 else "")
                + "."
            )
        if small:
            return (
                "It is "
                + (
                    "less than a tenth of what it should be"
                    if r < 0.1
                    else "too small" + (" in magnitude" if ev < 0 else "")
                )
                + "."
            )
        return ""
    bad = ~torch.isclose(a, e, rtol=rtol, atol=atol)
    idx = [tuple(int(i) for i in ix) for ix in bad.nonzero()]
    if len(idx) == e.numel():
        return "Every entry is off."
    fmt = ", ".join(str(list(i)) for i in idx[:4]) + (", ..." if len(idx) > 4 else "")
    one = len(idx) == 1
    return f"{'The entry' if one else 'The entries'} {fmt} {'is' if one else 'are'} off; the others are right."


def compare(
    answer: object,
    expected: Tensor,
    *,
    what: str,
    rtol: float = 1e-6,
    atol: float = 1e-9,
    where: str = "",
    mistakes: Sequence[Mistake] = (),
    hint: str = "",
) -> Feedback:
    """Compare a reader's numeric answer with ``expected`` and explain any difference.

    Returns a Feedback for *any* ``answer`` (None, text, wrong shape, NaN, ...). When the answer
    is wrong, the message says which typical mistake it matches: first the exercise's own
    ``mistakes`` (pairs of the value a mistake produces and its hint), then the generic ones (a
    sign, a factor of 2 or sqrt(2), square or square root, reciprocal, transposed or inverted
    matrix, float32 rounding); otherwise which way it is off and ``hint``. The expected value is
    never printed (``details`` keeps the error for programs).
    """
    loc = f" {where}" if where else ""
    what = _cap(what)
    a = as_answer(answer, f"{what}{loc}")
    if isinstance(a, Feedback):
        return a
    low_precision = isinstance(answer, Tensor) and answer.dtype in (
        torch.float32,
        torch.float16,
        torch.bfloat16,
    )
    e = torch.as_tensor(expected, dtype=torch.float64).detach()
    if a.shape != e.shape:
        if e.dim() == 2 and a.dim() == 2 and tuple(a.shape) == tuple(e.shape)[::-1]:
            return Feedback(
                False,
                f"{what}{loc} has shape {tuple(a.shape)}, expected {tuple(e.shape)}: transposed?",
            )
        if a.numel() != e.numel():
            return Feedback(
                False, f"{what}{loc} should have shape {tuple(e.shape)}, got {tuple(a.shape)}."
            )
        a = a.reshape(e.shape)
    if not bool(torch.isfinite(a).all()):
        return Feedback(
            False,
            f"{what}{loc} contains NaN or infinity: look for a 0/0, a log of zero, an overflowing exp "
            "or a square root of a negative number.",
        )
    if torch.allclose(a, e, rtol=rtol, atol=atol):
        return Feedback(True, f"{what}{loc} matches (rtol={rtol:g}).")
    err = float((a - e).abs().max())
    details: dict[str, object] = {"max_abs_error": err}
    for value, msg in mistakes:
        m = as_answer(value, "mistake")
        if isinstance(m, Feedback) or m.numel() != e.numel():
            continue
        m = m.reshape(e.shape)
        if not torch.allclose(m, e, rtol=rtol, atol=atol) and _close(
            a, m, rtol=max(rtol, 1e-6), atol=atol
        ):
            return Feedback(False, f"{what}{loc} is not right. {msg}", details)
    diag = _generic_hint(a, e, rtol, atol, low_precision) or _direction(a, e, rtol, atol)
    text = f"{what}{loc} is not right. {diag}".rstrip()
    if hint:
        text += f" {hint}"
    return Feedback(False, text, details)
