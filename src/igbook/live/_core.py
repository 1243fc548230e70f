r"""Live figures: Bokeh documents whose numbers come from igbook, shown without a kernel.

A live figure is a Bokeh layout plus a little JavaScript. Its numbers come from igbook in
one of two ways, named on the page:

* **ported**: the browser evaluates a closed form or a quadrature of igbook that was ported
  to ``static/igbook_live.js``; ``tests/test_live.py`` proves the port equal to igbook at
  random states (1e-9 relative, float64 in the browser);
* **precomputed**: igbook evaluates the figure on a grid of control values when the chapter
  runs, and the page only looks the values up.

The same output works in JupyterLab, Notebook 7 and on the static website:
``LiveFigure._repr_mimebundle_`` returns HTML that loads BokehJS inline when the page has
none (JupyterLab, Notebook), between markers that the site build strips, because the site
serves BokehJS itself (``tools/igbook_site.py`` copies it from the installed ``bokeh``). No
asset is fetched from a CDN; no kernel round trip happens while a reader drags.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = [
    "LiveFigure",
    "MECHANISMS",
    "live_js",
    "bokeh_js_files",
    "BOKEH_MARK_START",
    "BOKEH_MARK_END",
    "figure_theme",
]

#: how the numbers of a live figure are obtained (shown on the page)
MECHANISMS = {
    "ported": "computed in your browser by a port of igbook's formulas, tested equal to igbook",
    "precomputed": "precomputed by igbook when this page was built; the controls look them up",
}
#: the inline BokehJS of a notebook output lies between these markers; the site build drops it
BOKEH_MARK_START = "<!--igbook-bokehjs-->"
BOKEH_MARK_END = "<!--/igbook-bokehjs-->"
#: the BokehJS bundles a live figure needs (no GL, tables or MathJax bundle)
_BOKEH_BUNDLES = ("bokeh.min.js", "bokeh-widgets.min.js")


@lru_cache(maxsize=1)
def live_js() -> str:
    """The browser side of igbook's live figures (``igbook/live/static/igbook_live.js``)."""
    return (
        resources.files("igbook.live").joinpath("static/igbook_live.js").read_text(encoding="utf-8")
    )


def bokeh_js_files() -> list[Path]:
    """Paths of the installed BokehJS bundles that a page with live figures loads, in order."""
    import bokeh

    root = Path(bokeh.__file__).resolve().parent / "server" / "static" / "js"
    files = [root / name for name in _BOKEH_BUNDLES]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"BokehJS bundles not found in the installed bokeh: {missing}")
    return files


@lru_cache(maxsize=1)
def _inline_bokeh() -> str:
    """A script that defines BokehJS once per page from the installed bundles (for notebooks)."""
    import bokeh

    body = "\n".join(f.read_text(encoding="utf-8") for f in bokeh_js_files())
    body = body.replace("</script", "<\\/script")
    version = json.dumps(bokeh.__version__)
    return (
        f'{BOKEH_MARK_START}<script type="text/javascript">\n'
        f"if (!(window.Bokeh && window.Bokeh.version === {version} && window.Bokeh.Widgets)) {{\n{body}\n}}\n"
        f"</script>{BOKEH_MARK_END}"
    )


def _inline_live_css() -> str:
    css = (
        resources.files("igbook.live")
        .joinpath("static/igbook_live.css")
        .read_text(encoding="utf-8")
    )
    return f"<style>{css}</style>"


def _inline_live_js() -> str:
    body = live_js().replace("</script", "<\\/script")
    return f'<script type="text/javascript">\n{body}\n</script>'


def figure_theme(fig: Any) -> Any:
    """Neutral styling for a Bokeh figure; colours follow the page theme at run time (igbook_live.js)."""
    fig.background_fill_alpha = 0.0
    fig.border_fill_alpha = 0.0
    fig.toolbar.logo = None
    fig.title.text_font_size = "13px"
    fig.title.text_font_style = "normal"
    for ax in (*fig.xaxis, *fig.yaxis):
        ax.axis_label_text_font_size = "13px"
        ax.axis_label_text_font_style = "normal"
        ax.major_label_text_font_size = "11px"
    return fig


@dataclass
class LiveFigure:
    """A live figure ready to display: a Bokeh layout with its JavaScript, and what it shows.

    Parameters
    ----------
    layout
        the Bokeh model, or a list of panels: models, or ``(model, kind)`` pairs with kind
        ``"square"`` (at most 460 px wide) or ``"full"`` (a whole row). Panels are laid out by
        the page (CSS flex-wrap): side by side in a wide column, stacked on a phone.
    name
        identifier, unique on a page: ``window.igbookLive.figures`` holds an object with this
        ``name`` whose ``state()`` returns the numbers shown and ``set(...)`` moves it.
    mechanism
        ``"ported"`` or ``"precomputed"`` (see :data:`MECHANISMS`).
    caption
        one sentence under the figure: what to do with it.
    data
        for precomputed figures, the values igbook wrote (for the tests to compare).
    """

    layout: Any
    name: str
    mechanism: str
    caption: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mechanism not in MECHANISMS:
            raise ValueError(
                f"mechanism must be one of {sorted(MECHANISMS)}, got {self.mechanism!r}"
            )
        if (
            not isinstance(self.name, str)
            or not self.name.replace("-", "").replace("_", "").isalnum()
        ):
            raise ValueError(
                f"name must be a non-empty identifier (letters, digits, - and _), got {self.name!r}"
            )

    def panels(self) -> list[tuple[Any, str]]:
        """The panels as ``(model, kind)`` pairs."""
        items = self.layout if isinstance(self.layout, (list, tuple)) else [self.layout]
        return [it if isinstance(it, tuple) else (it, "") for it in items]

    def components(self) -> tuple[str, str]:
        """Bokeh's script and the HTML of the panels."""
        from bokeh.embed import components

        panels = self.panels()
        script, divs = components([m for m, _ in panels])
        inner = "".join(
            f'<div class="igbook-live-panel{" igbook-live-" + kind if kind else ""}">{d}</div>'
            for d, (_, kind) in zip(divs, panels)
        )
        return script, f'<div class="igbook-live-panels">{inner}</div>'

    def html(self, *, inline_bokeh: bool = True) -> str:
        """The HTML of the figure; ``inline_bokeh=False`` for pages that load BokehJS themselves."""
        script, div = self.components()
        how = MECHANISMS[self.mechanism]
        caption = f" {html.escape(self.caption)}" if self.caption else ""
        parts = [
            f'<div class="igbook-live" data-igbook-live="{self.name}" data-mechanism="{self.mechanism}">',
            _inline_live_css(),
            _inline_bokeh() if inline_bokeh else "",
            _inline_live_js(),
            div,
            script,
            self._data_script(),
            (
                f'<p class="igbook-live-caption"><span class="igbook-live-badge">live</span>{caption}'
                f" <em>Numbers {html.escape(how)}.</em></p>"
            ),
            (
                '<noscript><p class="igbook-live-noscript">This live figure needs JavaScript; the static '
                "figure next to it shows the same.</p></noscript>"
            ),
            "</div>",
        ]
        return "\n".join(p for p in parts if p)

    def _data_script(self) -> str:
        """The values igbook wrote for a precomputed figure, as JSON beside the figure.

        The browser tests compare what the figure shows (through Bokeh's own encoding) with
        these numbers (through Python's JSON), frame by frame.
        """
        if self.mechanism != "precomputed" or not self.data:
            return ""
        text = json.dumps(self.data, separators=(",", ":"), default=lambda a: a.tolist()).replace(
            "</", "<\\/"
        )
        return (
            f'<script type="application/json" data-igbook-live-data="{self.name}">{text}</script>'
        )

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {
            "text/html": self.html(),
            "text/plain": f"<igbook live figure {self.name!r} ({self.mechanism})>",
        }

    def save(self, path: str | Path) -> Path:
        """A standalone HTML file with everything inline (opens offline in any browser)."""
        path = Path(path)
        page = (
            '<!DOCTYPE html><html><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1"><title>'
            f"{html.escape(self.name)}</title></head><body>{self.html()}</body></html>"
        )
        path.write_text(page, encoding="utf-8")
        return path
