"""Matplotlib helpers with one style for the whole book.

Figures are drawn on an opaque light "card" (white face, dark ink, a palette that stays
distinguishable for colour-blind readers), so that they read the same on the light and the
dark theme of the website. Use :func:`book_style` as a context manager or call
:func:`use_book_style` once per notebook.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np

__all__ = [
    "offline_jshtml",
    "PALETTE",
    "BOOK_RC",
    "use_book_style",
    "book_style",
    "draw_ellipses",
    "draw_vector_field",
    "draw_trajectories",
    "to_numpy",
]

#: Okabe-Ito palette: distinguishable with the common colour-vision deficiencies.
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]

BOOK_RC: dict[str, object] = {
    "figure.facecolor": "white",
    "axes.facecolor": "white",
    "savefig.facecolor": "white",
    "savefig.transparent": False,
    "text.color": "#222222",
    "axes.labelcolor": "#222222",
    "axes.edgecolor": "#444444",
    "xtick.color": "#333333",
    "ytick.color": "#333333",
    "axes.prop_cycle": None,  # filled in below
    "axes.grid": True,
    "grid.alpha": 0.25,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "font.size": 11,
    "axes.titlesize": 12,
    "legend.frameon": False,
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "figure.constrained_layout.use": True,
    "animation.html": "jshtml",
    "animation.embed_limit": 40.0,
}


def _rc() -> dict[str, object]:
    from cycler import cycler

    rc = dict(BOOK_RC)
    rc["axes.prop_cycle"] = cycler(color=PALETTE)
    return rc


def use_book_style() -> None:
    """Set the book's matplotlib style globally (for a notebook)."""
    import matplotlib as mpl

    mpl.rcParams.update(_rc())


@contextlib.contextmanager
def book_style() -> Iterator[None]:
    """Context manager applying the book's style temporarily."""
    import matplotlib as mpl

    with mpl.rc_context(_rc()):
        yield


def to_numpy(x: object) -> np.ndarray:
    """Tensor, array or sequence to a NumPy array (detached, on the CPU)."""
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()  # type: ignore[no-any-return,union-attr]
    return np.asarray(x)


def draw_ellipses(
    ax, outlines, *, color: str = PALETTE[0], lw: float = 1.0, alpha: float = 0.9, **kw
):  # type: ignore[no-untyped-def]
    """Draw closed outlines of shape ``(..., num, 2)`` (e.g. from :func:`igbook.geometry.ellipse_points`)."""
    from matplotlib.collections import LineCollection

    pts = to_numpy(outlines).reshape(-1, *to_numpy(outlines).shape[-2:])
    lc = LineCollection(list(pts), colors=color, linewidths=lw, alpha=alpha, **kw)
    ax.add_collection(lc)
    ax.autoscale_view()
    return lc


def draw_vector_field(
    ax,
    points,
    vectors,
    *,
    normalize: bool = True,
    color: str = PALETTE[1],
    scale: float | None = None,
    **kw,
):  # type: ignore[no-untyped-def]
    """Quiver plot of ``vectors`` (``(n, 2)``) at ``points`` (``(n, 2)``); unit length if ``normalize``."""
    p, v = to_numpy(points), to_numpy(vectors).astype(float)
    if normalize:
        n = np.linalg.norm(v, axis=-1, keepdims=True)
        v = np.divide(v, n, out=np.zeros_like(v), where=n > 0)
    return ax.quiver(
        p[:, 0],
        p[:, 1],
        v[:, 0],
        v[:, 1],
        color=color,
        angles="xy",
        scale_units="xy",
        scale=scale,
        **kw,
    )


def draw_trajectories(
    ax,
    paths: Sequence[object],
    *,
    color: str = PALETTE[0],
    label: str | None = None,
    marker_end: bool = True,
    **kw,
):  # type: ignore[no-untyped-def]
    """Draw several ``(steps, 2)`` paths with one legend entry."""
    lines = []
    for i, path in enumerate(paths):
        a = to_numpy(path)
        (ln,) = ax.plot(a[:, 0], a[:, 1], color=color, label=label if i == 0 else None, **kw)
        lines.append(ln)
        if marker_end:
            ax.plot(a[-1, 0], a[-1, 1], "o", color=color, ms=3)
    return lines


_FA_SYMBOLS = {
    "fa-fast-backward": "\u23ee",
    "fa-step-backward": "\u23f4\u23f4",
    "fa-play fa-flip-horizontal": "\u25c0",
    "fa-pause": "\u23f8",
    "fa-play": "\u25b6",
    "fa-step-forward": "\u23f5\u23f5",
    "fa-fast-forward": "\u23ed",
    "fa-minus": "\u2212",
    "fa-plus": "+",
}


def offline_jshtml(anim: object) -> str:
    """``anim.to_jshtml()`` without its Font Awesome stylesheet from a CDN: the player's buttons
    get Unicode symbols instead of icon-font glyphs, so they show offline (a classroom without
    internet, JupyterLab, the static site) exactly as online.
    """
    import re

    to_jshtml = getattr(anim, "to_jshtml", None)
    if not callable(to_jshtml):
        raise TypeError(
            f"anim must be a matplotlib animation (with to_jshtml), got {type(anim).__name__}"
        )
    html = to_jshtml()
    html = re.sub(r"<link[^>]+font-awesome[^>]*>\s*", "", html)

    def icon(m: re.Match[str]) -> str:
        classes = m.group(1).replace("fa ", "", 1).strip()
        return f'<span aria-hidden="true">{_FA_SYMBOLS.get(classes, "")}</span>'

    return re.sub(r'<i class="(fa [^"]*)"></i>', icon, html)
