"""The chapters' preamble and presentation helpers (not the mathematics).

Every chapter notebook starts with :func:`setup`, which does what each first code cell used to
repeat: the default dtype, the number of CPU threads, an optional global seed and the book's
figure style (:func:`igbook.plotting.use_book_style`). :func:`markdown_table` and
:func:`html_table` print result tables; the site renders both (Markdown outputs as MyST, which
has pipe tables).

This module is presentation: it may import matplotlib and IPython, and nothing in the library
imports it.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import torch

from igbook._validation import check_integer, check_seed

__all__ = ["setup", "markdown_table", "html_table"]


def setup(
    *,
    dtype: torch.dtype = torch.float64,
    threads: int | None = 1,
    seed: int | None = None,
    style: bool = True,
) -> None:
    """Prepare a chapter's kernel: dtype, threads, seed and figure style.

    Parameters
    ----------
    dtype
        :func:`torch.set_default_dtype`: ``torch.float64`` (the default) for chapters that verify
        results to tight tolerances; ``torch.float32`` for chapters that train networks in
        PyTorch's usual precision.
    threads
        :func:`torch.set_num_threads`. One thread by default: the chapters' tensors are small,
        so extra threads only add synchronization, and a chapter must run in under 60 s on two
        cores shared with other work. ``None`` leaves torch's setting alone.
    seed
        If given, :func:`torch.manual_seed` (the global generator, for cells that draw without
        an explicit generator). ``None`` leaves the generator alone.
    style
        Apply the book's matplotlib style (:func:`igbook.plotting.use_book_style`).
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    if threads is not None:
        threads = check_integer(threads, "threads", minimum=1)
    if seed is not None:
        seed = check_seed(seed)
    if not isinstance(style, bool):
        raise TypeError(f"style must be a bool, got {type(style).__name__}")
    torch.set_default_dtype(dtype)
    if threads is not None:
        torch.set_num_threads(threads)
    if seed is not None:
        torch.manual_seed(seed)
    if style:
        from igbook.plotting import use_book_style

        use_book_style()


def _check_rows(header: Sequence[object], rows: Sequence[Sequence[object]]) -> None:
    if len(header) == 0:
        raise ValueError("header must name at least one column")
    for i, r in enumerate(rows):
        if len(r) != len(header):
            raise ValueError(
                f"rows[{i}] has {len(r)} entries; every row must have one entry per header "
                f"column ({len(header)})"
            )


def markdown_table(header: Sequence[object], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub/MyST pipe table: ``| a | b |``, a ``|---|---|`` rule, one line per row.

    Entries are written with :class:`str`; display it with
    ``IPython.display.Markdown`` in a chapter, or print it from a script.
    """
    _check_rows(header, rows)

    def line(cells: Sequence[object]) -> str:
        return "| " + " | ".join(str(c) for c in cells) + " |"

    rule = "|" + "|".join("---" for _ in header) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def html_table(
    header: Sequence[object], rows: Sequence[Sequence[object]], *, caption: str | None = None
) -> str:
    """The same table as HTML, entries escaped, with an optional caption.

    The table carries the classes ``igbook-table igbook-output-table`` that the site's CSS
    styles; display it with ``IPython.display.HTML``.
    """
    _check_rows(header, rows)

    def esc(v: object) -> str:
        return html.escape(str(v))

    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return (
        f'<table class="igbook-table igbook-output-table">{cap}<thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )
