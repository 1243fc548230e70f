"""Attach a controller script (``static/<name>``) to a Bokeh layout's document."""

from __future__ import annotations

from importlib import resources
from typing import Any


def controller_source(filename: str) -> str:
    """The text of ``igbook/live/static/<filename>``."""
    return resources.files("igbook.live").joinpath("static", filename).read_text(encoding="utf-8")


def controller(layout: Any, filename: str, args: dict[str, Any]) -> Any:
    """Run the controller ``filename`` with ``args`` when the document of ``layout`` is ready.

    ``layout`` is a model or a list of panels.

    The layout gets a document of its own; the controller registers the figure in
    ``window.igbookLive.figures`` and draws the first frame.
    """
    from bokeh.document import Document
    from bokeh.models import CustomJS

    doc = Document()
    for item in layout if isinstance(layout, (list, tuple)) else [layout]:
        doc.add_root(item[0] if isinstance(item, tuple) else item)
    doc.js_on_event("document_ready", CustomJS(args=args, code=controller_source(filename)))
    return doc
