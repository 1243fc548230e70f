"""Input validation shared by every public function of :mod:`igbook`.

Each helper raises :class:`ValueError` or :class:`TypeError` with a message that names the
argument and the constraint it broke, so that a reader sees *what* was wrong rather than a
``nan`` three cells later.

This is the one validation layer of the package: modules do not keep private ``_check_*``
copies. Scalars go through :func:`check_scalar` (and its two shorthands), integers through
:func:`check_integer`, string options through :func:`check_choice`, random generators through
:func:`resolve_generator`.

**The meaning of** ``seed=None``. Every function that draws random numbers takes
``seed`` and/or ``generator``. ``generator=g`` draws from ``g`` (and advances it); ``seed=s``
draws from a fresh generator seeded with ``s``; passing both is an error. ``seed=None`` with
no generator means *no seed was chosen*: a function whose signature defaults to ``seed=None``
draws from torch's global generator (reproducible under :func:`torch.manual_seed`); a
function that must be reproducible by default says ``seed: int = 0`` in its signature instead.
:func:`resolve_generator` implements exactly this.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "as_tensor",
    "check_finite",
    "check_positive",
    "check_in_open_interval",
    "check_in_interval",
    "check_simplex",
    "check_square",
    "check_symmetric_positive_definite",
    "check_shape",
    "check_probability",
    "check_symmetric",
    "check_positive_semidefinite",
    "check_nonempty",
    "check_count",
    "check_seed",
    "check_real",
    "check_callable",
    "check_draws",
    "make_generator",
    "check_scalar",
    "check_positive_real",
    "check_nonnegative_real",
    "check_integer",
    "check_choice",
    "check_generator",
    "resolve_generator",
]


def as_tensor(value: Any, name: str, *, dtype: torch.dtype | None = None) -> Tensor:
    """Convert ``value`` to a floating-point tensor, or raise :class:`TypeError` naming ``name``.

    Python numbers, sequences and NumPy arrays become float64 tensors (igbook computes in
    float64 unless it is handed float32 tensors). Integer and boolean tensors are promoted to
    float64; floating tensors keep their dtype unless ``dtype`` is given.
    """
    if isinstance(value, Tensor):
        t = value
    else:
        try:
            t = torch.as_tensor(value, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(
                f"{name} must be a tensor, a number or a sequence of numbers, "
                f"got {type(value).__name__}"
            ) from exc
    if t.is_complex():
        raise TypeError(f"{name} must be real, got a complex tensor")
    if dtype is not None:
        t = t.to(dtype)
    elif not t.is_floating_point():
        t = t.to(torch.float64)
    return t


def check_finite(t: Tensor, name: str) -> Tensor:
    """Raise :class:`ValueError` if ``t`` holds a NaN or an infinity."""
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite, got a value that is NaN or infinite")
    return t


def check_positive(t: Tensor, name: str) -> Tensor:
    """Raise :class:`ValueError` unless every entry of ``t`` is finite and strictly positive."""
    check_finite(t, name)
    if not bool((t > 0).all()):
        raise ValueError(f"{name} must be > 0, got min {float(t.min()):.6g}")
    return t


def check_in_open_interval(t: Tensor, name: str, low: float, high: float) -> Tensor:
    """Raise :class:`ValueError` unless ``low < t < high`` entrywise."""
    check_finite(t, name)
    if not bool(((t > low) & (t < high)).all()):
        raise ValueError(
            f"{name} must lie in the open interval ({low}, {high}), "
            f"got values in [{float(t.min()):.6g}, {float(t.max()):.6g}]"
        )
    return t


def check_in_interval(
    t: Tensor,
    name: str,
    low: float,
    high: float,
    *,
    closed_low: bool = True,
    closed_high: bool = True,
) -> Tensor:
    """Raise :class:`ValueError` unless ``t`` lies in the interval with the given closedness."""
    check_finite(t, name)
    ok_low = (t >= low) if closed_low else (t > low)
    ok_high = (t <= high) if closed_high else (t < high)
    if not bool((ok_low & ok_high).all()):
        lb = "[" if closed_low else "("
        rb = "]" if closed_high else ")"
        raise ValueError(
            f"{name} must lie in {lb}{low}, {high}{rb}, "
            f"got values in [{float(t.min()):.6g}, {float(t.max()):.6g}]"
        )
    return t


def check_probability(t: Tensor, name: str) -> Tensor:
    """Raise :class:`ValueError` unless ``0 < t < 1`` entrywise (an interior probability)."""
    return check_in_open_interval(t, name, 0.0, 1.0)


def check_simplex(t: Tensor, name: str, *, atol: float = 1e-6, interior: bool = True) -> Tensor:
    """Raise :class:`ValueError` unless the last axis of ``t`` is a probability vector.

    ``interior=True`` (the default) also requires every entry to be strictly positive, which is
    where the Fisher metric of the categorical family is defined.
    """
    check_finite(t, name)
    if t.ndim == 0:
        raise ValueError(f"{name} must have at least one axis (a probability vector), got a scalar")
    if t.shape[-1] < 2:
        raise ValueError(f"{name} must have at least 2 categories, got {t.shape[-1]}")
    if interior and not bool((t > 0).all()):
        raise ValueError(
            f"{name} must have strictly positive entries, got min {float(t.min()):.6g}"
        )
    if not interior and not bool((t >= 0).all()):
        raise ValueError(f"{name} must have non-negative entries, got min {float(t.min()):.6g}")
    s = t.sum(-1)
    if not bool(torch.allclose(s, torch.ones_like(s), atol=atol, rtol=0)):
        raise ValueError(
            f"{name} must sum to 1 along its last axis (a point of the simplex), "
            f"got sums in [{float(s.min()):.6g}, {float(s.max()):.6g}]"
        )
    return t


def check_shape(t: Tensor, name: str, shape: tuple[int | None, ...]) -> Tensor:
    """Raise :class:`ValueError` unless ``t.shape`` matches ``shape`` (``None`` matches any size)."""
    if t.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, t.shape)):
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name} must have shape {want}, got {tuple(t.shape)}")
    return t


def check_square(t: Tensor, name: str) -> Tensor:
    """Raise :class:`ValueError` unless ``t`` is a square matrix (last two axes equal)."""
    if t.ndim < 2 or t.shape[-1] != t.shape[-2]:
        raise ValueError(f"{name} must be a square matrix, got shape {tuple(t.shape)}")
    return t


def check_symmetric_positive_definite(t: Tensor, name: str, *, rtol: float = 1e-8) -> Tensor:
    """Raise :class:`ValueError` unless ``t`` is a symmetric positive-definite matrix.

    Symmetry is checked to a relative tolerance ``rtol`` of the largest entry; positive
    definiteness by a Cholesky factorization.
    """
    check_square(t, name)
    check_finite(t, name)
    scale = t.abs().max().clamp_min(1.0)
    if not bool(((t - t.transpose(-1, -2)).abs() <= rtol * scale).all()):
        raise ValueError(f"{name} must be symmetric")
    _, info = torch.linalg.cholesky_ex(t)
    if bool((info != 0).any()):
        raise ValueError(f"{name} must be positive definite (its Cholesky factorization failed)")
    return t


def check_symmetric(t: Tensor, name: str, *, rtol: float = 1e-8) -> Tensor:
    """Raise :class:`ValueError` unless ``t`` is a finite symmetric matrix (or a batch of them).

    Symmetry is checked to ``rtol`` times the largest entry (at least 1) of each matrix.
    """
    check_square(t, name)
    check_finite(t, name)
    scale = t.abs().amax(dim=(-2, -1), keepdim=True).clamp_min(1.0)
    if not bool(((t - t.transpose(-1, -2)).abs() <= rtol * scale).all()):
        raise ValueError(f"{name} must be symmetric (a metric or Fisher matrix)")
    return t


def check_positive_semidefinite(
    t: Tensor,
    name: str,
    *,
    eigenvalues: Tensor | None = None,
    rtol: float | None = None,
    symmetric_checked: bool = False,
) -> Tensor:
    r"""Raise :class:`ValueError` unless ``t`` is a finite, symmetric, positive semi-definite matrix.

    The smallest eigenvalue may be negative by rounding only: :math:`\lambda_{\min} \ge
    -\text{rtol}\,\max(1, |\lambda|_{\max})` with ``rtol`` the square root of float32's machine
    epsilon (about 3.5e-4) by default, whatever the dtype: Fisher matrices accumulated in
    float32 and promoted to float64 carry float32 rounding. Pass ``eigenvalues`` (ascending, from
    :func:`torch.linalg.eigvalsh`) when the caller computes them anyway, to avoid a second decomposition, and
    ``symmetric_checked=True`` when the caller has already checked finiteness and symmetry (the
    fast path of vectorized callers). Works on batches.
    """
    if not symmetric_checked:
        check_symmetric(t, name)
    if t.numel() == 0:
        return t
    ev = torch.linalg.eigvalsh(t) if eigenvalues is None else eigenvalues
    tol = (torch.finfo(torch.float32).eps ** 0.5) if rtol is None else rtol
    scale = ev.abs().amax(-1).clamp_min(1.0)
    if not bool((ev[..., 0] >= -tol * scale).all()):
        raise ValueError(
            f"{name} must be positive semi-definite (a Fisher matrix or metric), got the eigenvalue "
            f"{float(ev[..., 0].min()):.6g}"
        )
    return t


def check_nonempty(t: Tensor, name: str, *, axis: int = 0) -> Tensor:
    """Raise :class:`ValueError` if ``t`` has no entries along ``axis`` (an empty batch)."""
    if t.ndim == 0 or t.shape[axis] == 0:
        raise ValueError(f"{name} must not be empty along axis {axis}, got shape {tuple(t.shape)}")
    return t


def check_count(value: Any, name: str, *, minimum: int = 1) -> int:
    """An ``int`` (not a bool, not a float) that is at least ``minimum``, or raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    return int(value)


def check_seed(seed: Any, name: str = "seed") -> int:
    """A seed that :func:`torch.manual_seed` accepts: an ``int`` in ``[0, 2**64)``, or raise."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(seed).__name__}")
    if not 0 <= seed < 2**64:
        raise ValueError(f"{name} must lie in [0, 2**64), got {seed}")
    return int(seed)


def check_real(value: Any, name: str) -> float:
    """A finite real scalar (a Python number or a one-element real tensor) as a ``float``, or raise.

    Booleans, strings, sequences and complex numbers raise :class:`TypeError`; NaN and the
    infinities raise :class:`ValueError`. Both messages name ``name``.
    """
    if isinstance(value, Tensor):
        if value.numel() != 1 or value.is_complex():
            raise TypeError(
                f"{name} must be a real number, got a tensor of shape {tuple(value.shape)} ({value.dtype})"
            )
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def check_callable(fn: Any, name: str) -> Any:
    """Raise :class:`TypeError` unless ``fn`` is callable."""
    if not callable(fn):
        raise TypeError(f"{name} must be callable, got {type(fn).__name__}")
    return fn


def check_draws(x: Any, name: str, n: int) -> Tensor:
    """What a user-supplied sampler returned: a finite tensor with ``n`` draws along axis 0."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must return a tensor, got {type(x).__name__}")
    if x.ndim == 0 or x.shape[0] != n:
        raise ValueError(f"{name} must return {n} draws along axis 0, got shape {tuple(x.shape)}")
    return check_finite(x, f"the draws of {name}")


def make_generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator | None:
    """The random generator for a draw: a new one seeded with ``seed``, or ``generator``, or
    ``None`` (the global generator). Passing both is an error."""
    if seed is not None and generator is not None:
        raise ValueError("pass either seed or generator, not both")
    if seed is not None:
        seed = check_seed(seed)
        g = torch.Generator()
        g.manual_seed(seed)
        return g
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return generator


def check_scalar(
    value: Any,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    closed_low: bool = True,
    closed_high: bool = True,
    allow_inf: bool = False,
) -> float:
    """A real scalar in an interval, as a ``float``, or raise naming ``name``.

    ``low``/``high`` bound the value (``None``: unbounded on that side), ``closed_low`` and
    ``closed_high`` say whether the ends are allowed. NaN is always rejected; ``+inf``/``-inf``
    only pass with ``allow_inf=True`` (and only where the interval admits them). Booleans,
    strings and tensors with more than one entry raise :class:`TypeError`.
    """
    if isinstance(value, Tensor):
        if value.numel() != 1 or value.is_complex():
            raise TypeError(
                f"{name} must be a real number, got a tensor of shape {tuple(value.shape)} ({value.dtype})"
            )
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    v = float(value)
    if math.isnan(v) or (math.isinf(v) and not allow_inf):
        raise ValueError(f"{name} must be finite, got {value}")
    ok = True
    if low is not None:
        ok = ok and (v >= low if closed_low else v > low)
    if high is not None:
        ok = ok and (v <= high if closed_high else v < high)
    if not ok:
        if low is not None and high is not None:
            lb = "[" if closed_low else "("
            rb = "]" if closed_high else ")"
            raise ValueError(f"{name} must lie in {lb}{low:g}, {high:g}{rb}, got {value}")
        fin = "" if allow_inf else "finite and "
        if low is not None:
            raise ValueError(
                f"{name} must be {fin}{'>=' if closed_low else '>'} {low:g}, got {value}"
            )
        raise ValueError(
            f"{name} must be {fin}{'<=' if closed_high else '<'} {high:g}, got {value}"
        )
    return v


def check_positive_real(value: Any, name: str, *, allow_inf: bool = False) -> float:
    """A real number ``> 0`` (finite unless ``allow_inf``), as a ``float``, or raise naming ``name``."""
    return check_scalar(value, name, low=0.0, closed_low=False, allow_inf=allow_inf)


def check_nonnegative_real(value: Any, name: str, *, allow_inf: bool = False) -> float:
    """A real number ``>= 0`` (finite unless ``allow_inf``), as a ``float``, or raise naming ``name``."""
    return check_scalar(value, name, low=0.0, allow_inf=allow_inf)


def check_integer(
    value: Any, name: str, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    """An ``int`` (not a bool, not a float) in ``[minimum, maximum]``, or raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    v = int(value)
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {v}")
    if maximum is not None and v > maximum:
        raise ValueError(f"{name} must be an int <= {maximum}, got {v}")
    return v


def check_choice(value: Any, name: str, choices: Any) -> Any:
    """``value`` if it is one of ``choices`` (strings compare exactly), or raise naming ``name``.

    Non-string values against string choices raise :class:`TypeError`; unknown values raise
    :class:`ValueError` listing the choices.
    """
    choices = tuple(choices)
    if all(isinstance(c, str) for c in choices) and not isinstance(value, str):
        raise TypeError(f"{name} must be one of {choices}, got {type(value).__name__}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_generator(generator: Any, name: str = "generator") -> torch.Generator:
    """Raise :class:`TypeError` unless ``generator`` is a :class:`torch.Generator`."""
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"{name} must be a torch.Generator, got {type(generator).__name__}")
    return generator


def resolve_generator(seed: Any = None, generator: Any = None) -> torch.Generator | None:
    """The generator a random draw uses, with the one meaning of ``seed=None`` (module docstring).

    ``generator`` if given (checked), else a fresh generator seeded with ``seed``, else ``None``
    (torch's global generator; functions that must be reproducible by default declare
    ``seed: int = 0``). Passing both ``seed`` and ``generator`` raises :class:`ValueError`.
    """
    if seed is not None and generator is not None:
        raise ValueError("pass either seed or generator, not both")
    if generator is not None:
        return check_generator(generator)
    if seed is not None:
        return torch.Generator().manual_seed(check_seed(seed))
    return None
