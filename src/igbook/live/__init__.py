"""Live figures for the static website and the notebooks (Bokeh, no kernel needed).

See :mod:`igbook.live._core` for how a live figure reaches a page, :mod:`igbook.live.gaussian`,
:mod:`igbook.live.mixture` (ported figures) and :mod:`igbook.live.frames` (precomputed ones).
"""

from igbook.live._core import MECHANISMS, LiveFigure, bokeh_js_files, live_js
from igbook.live.frames import Control, Readout, Series, frames_figure
from igbook.live.gaussian import gaussian_half_plane
from igbook.live.mixture import mixture_explorer

__all__ = [
    "LiveFigure",
    "MECHANISMS",
    "bokeh_js_files",
    "live_js",
    "gaussian_half_plane",
    "mixture_explorer",
    "Control",
    "Series",
    "Readout",
    "frames_figure",
]
