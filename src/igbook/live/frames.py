r"""Precomputed live figures: igbook evaluates every frame when the page is built.

A *frame* is what a panel shows for one setting of the controls. :func:`frames_figure` takes
the controls (each a label and the values it can take) and, for every combination of control
values, the curves igbook computed; the page only looks them up when a reader moves a slider.
This is the honest mechanism for training runs (K-FAC, MESU, the Bayesian learning rule): the
browser does not re-train anything.

Values are stored as float32 (the page shows exactly the numbers igbook wrote, rounded once to
float32 here); ``LiveFigure.data`` keeps them for the browser tests to compare.

Example
-------
>>> import numpy as np
>>> from igbook.live.frames import Control, Series, frames_figure
>>> lrs = [0.01, 0.1]
>>> x = np.arange(5.0)
>>> fig = frames_figure([Control("learning rate", lrs)],
...                     [Series("loss", x=x, y=[np.exp(-lr * x) for lr in lrs])],
...                     title="loss", x_label="step", y_label="loss", name="demo")
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from igbook.live._core import LiveFigure, figure_theme
from igbook.live._js import controller
from igbook.plotting import PALETTE

__all__ = ["Control", "Series", "Readout", "frames_figure"]


def _finite_values(values: Sequence[float], name: str) -> list[float]:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise TypeError(f"{name} must be a sequence of numbers, got {type(values).__name__}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise TypeError(f"{name} must hold numbers, got {type(v).__name__}")
        if not math.isfinite(float(v)):
            raise ValueError(f"{name} must be finite, got {v}")
        out.append(float(v))
    if not out:
        raise ValueError(f"{name} must not be empty")
    return out


@dataclass(frozen=True)
class Control:
    """A slider over the values a control can take (shown with their values, in order)."""

    label: str
    values: Sequence[float]
    initial: int = 0
    fmt: str = "{:.3g}"
    #: optional text shown for each value instead of ``fmt`` (e.g. "Fisher", "diagonal", "∞")
    labels: Sequence[str] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.label, str) or not self.label:
            raise ValueError(f"label must be a non-empty string, got {self.label!r}")
        vals = _finite_values(self.values, "values")
        object.__setattr__(self, "values", vals)
        if self.labels is not None:
            if len(self.labels) != len(vals) or not all(isinstance(t, str) for t in self.labels):
                raise ValueError(
                    f"labels must be {len(vals)} strings (one per value), got {self.labels!r}"
                )
            object.__setattr__(self, "labels", list(self.labels))
        if (
            isinstance(self.initial, bool)
            or not isinstance(self.initial, int)
            or not 0 <= self.initial < len(vals)
        ):
            raise ValueError(
                f"initial must be an index into values (0 to {len(vals) - 1}), got {self.initial!r}"
            )


@dataclass(frozen=True)
class Series:
    """One curve of the panel: ``y[k]`` for frame ``k`` (frames in row-major order of the controls).

    ``x`` is one array shared by every frame or a list with one array per frame. ``kind`` is
    ``"line"`` or ``"scatter"``.
    """

    label: str
    x: Any
    y: Any
    color: str | None = None
    dash: str = "solid"
    width: float = 2.0
    kind: str = "line"

    def __post_init__(self) -> None:
        if self.kind not in ("line", "scatter"):
            raise ValueError(f"kind must be 'line' or 'scatter', got {self.kind!r}")


@dataclass(frozen=True)
class Readout:
    """A number shown under the panel, one value per frame."""

    label: str
    values: Sequence[float]
    fmt: str = "{:.4g}"
    key: str = field(default="")


def _frames_of(arr: Any, n_frames: int, name: str) -> list[np.ndarray]:
    if (
        isinstance(arr, (list, tuple))
        and len(arr) == n_frames
        and all(np.ndim(a) == 1 for a in arr)
    ):
        frames = [np.asarray(a, dtype=np.float64) for a in arr]
    else:
        a = np.asarray(arr, dtype=np.float64)
        if a.ndim == 1:
            frames = [a] * n_frames
        elif a.ndim == 2 and a.shape[0] == n_frames:
            frames = list(a)
        else:
            raise ValueError(
                f"{name} must be one 1-D array or one per frame ({n_frames} frames), got shape {a.shape}"
            )
    for k, f in enumerate(frames):
        if not np.isfinite(f).all():
            raise ValueError(f"{name} of frame {k} holds NaN or infinity")
    return frames


def frames_figure(
    controls: Sequence[Control],
    series: Sequence[Series],
    *,
    title: str,
    x_label: str,
    y_label: str,
    name: str,
    readouts: Sequence[Readout] = (),
    x_axis_type: str = "linear",
    y_axis_type: str = "linear",
    x_range: tuple[float, float] | None = None,
    y_range: tuple[float, float] | None = None,
    caption: str = "",
    height: int = 360,
    legend_location: str = "top_right",
) -> LiveFigure:
    """A panel whose curves switch between precomputed frames as the reader moves the sliders.

    There is one frame per combination of control values, in row-major order
    (``itertools.product`` of the controls' values). Raises :class:`ValueError` when a series
    or readout has the wrong number of frames or holds a non-finite value.
    """
    from bokeh.layouts import column
    from bokeh.models import ColumnDataSource, CustomJS, Div, Slider
    from bokeh.plotting import figure

    controls = list(controls)
    if not controls:
        raise ValueError("controls must hold at least one Control")
    for c in controls:
        if not isinstance(c, Control):
            raise TypeError(f"controls must hold Control objects, got {type(c).__name__}")
    series = list(series)
    if not series:
        raise ValueError("series must hold at least one Series")
    n_frames = int(np.prod([len(c.values) for c in controls]))
    fig = figure(
        title=title,
        x_axis_label=x_label,
        y_axis_label=y_label,
        x_axis_type=x_axis_type,
        y_axis_type=y_axis_type,
        tools="pan,wheel_zoom,reset,save",
        height=height,
        sizing_mode="stretch_width",
        min_width=280,
    )
    if x_range is not None:
        fig.x_range.start, fig.x_range.end = x_range
    if y_range is not None:
        fig.y_range.start, fig.y_range.end = y_range
    store: dict[str, Any] = {}
    written: dict[str, Any] = {}
    sources = {}
    initial = 0
    for c in controls:
        initial = initial * len(c.values) + c.initial
    for i, s in enumerate(series):
        if not isinstance(s, Series):
            raise TypeError(f"series must hold Series objects, got {type(s).__name__}")
        xs = [f.astype(np.float32) for f in _frames_of(s.x, n_frames, f"series {s.label!r} x")]
        ys = [f.astype(np.float32) for f in _frames_of(s.y, n_frames, f"series {s.label!r} y")]
        for k in range(n_frames):
            if xs[k].shape != ys[k].shape:
                raise ValueError(
                    f"series {s.label!r}: x and y of frame {k} differ in length ({xs[k].shape} vs {ys[k].shape})"
                )
        key = f"s{i}"
        # an array equal in every frame is stored once (the page uses frame 0's)
        same_x = all(np.array_equal(xs[0], a) for a in xs[1:])
        same_y = all(np.array_equal(ys[0], a) for a in ys[1:])
        store[key] = {"x": xs[:1] if same_x else xs, "y": ys[:1] if same_y else ys}
        written[s.label] = {
            "x": [a.tolist() for a in store[key]["x"]],
            "y": [a.tolist() for a in store[key]["y"]],
        }
        src = ColumnDataSource({"x": xs[initial], "y": ys[initial]})
        sources[key] = src
        color = s.color or PALETTE[i % len(PALETTE)]
        if s.kind == "line":
            fig.line(
                "x",
                "y",
                source=src,
                color=color,
                line_width=s.width,
                line_dash=s.dash,
                legend_label=s.label,
            )
        else:
            fig.scatter("x", "y", source=src, color=color, size=6 + s.width, legend_label=s.label)
    fig.legend.location = legend_location
    fig.legend.label_text_font_size = "11px"
    fig.legend.click_policy = "hide"
    figure_theme(fig)

    reads = []
    for r in readouts:
        vals = _finite_values(r.values, f"readout {r.label!r}")
        if len(vals) != n_frames:
            raise ValueError(
                f"readout {r.label!r} needs {n_frames} values (one per frame), got {len(vals)}"
            )
        v32 = np.asarray(vals, dtype=np.float32)
        reads.append(
            {
                "label": r.label,
                "values": [float(v) for v in v32],
                "fmt": r.fmt,
                "key": r.key or r.label,
                "text": [r.fmt.format(float(v)) for v in v32],
            }
        )
        written[f"readout:{r.key or r.label}"] = [float(v) for v in v32]
    sliders = []
    for c in controls:
        texts = list(c.labels) if c.labels is not None else [c.fmt.format(v) for v in c.values]
        sl = Slider(
            title=f"{c.label}",
            start=0,
            end=max(len(c.values) - 1, 1),
            step=1,
            value=c.initial,
            show_value=False,
            sizing_mode="stretch_width",
            disabled=len(c.values) < 2,
        )
        sl.tags = [{"values": c.values, "texts": texts}]
        sliders.append(sl)
    readout = Div(text="", sizing_mode="stretch_width", styles={"color": "inherit"})
    args = dict(
        sources=sources,
        store=store,
        sliders=sliders,
        labels=[c.label for c in controls],
        sizes=[len(c.values) for c in controls],
        reads=reads,
        readout=readout,
        name=name,
    )
    redraw = CustomJS(args=dict(s=sliders[0]), code="s.__igbook && s.__igbook.update();")
    for sl in sliders:
        sl.js_on_change("value", redraw)
    layout = column(fig, *sliders, readout, sizing_mode="stretch_width")
    controller(layout, "frames.js", args)
    combos = [list(p) for p in itertools.product(*[c.values for c in controls])]
    written["frames"] = combos
    written["series"] = [s.label for s in series]
    return LiveFigure(layout, name, "precomputed", caption, data=written)
