"""Sphinx extension for the igbook website (loaded from ``_config.yml``, ``local_extensions``).

What it does, for every page present and future:

* **Offline MathJax.** Copies MathJax 3 (from the PyPI package ``django-static-mathjax``, which
  ships the official ``es5`` build) into ``_static/mathjax`` and points ``mathjax_path`` at it,
  so that formulas typeset without a CDN (and the browser tests can check them).
* **Site assets.** Adds ``book/_static`` (``igbook.css``, ``igbook.js``) to every page: dark-mode
  fixes, and a ``download`` attribute on the notebook download links so that the browser saves
  an ``.ipynb`` file instead of showing its JSON.
* **Widgets on the static site.** ipywidgets need a kernel. Instead of loading the widget
  manager from a CDN (which shows dead sliders, or nothing), each widget output gets a visible
  note with a Binder link for that page; the chapter's static figure and pre-rendered animation
  are what the reader sees.
* **Live figures.** Outputs of :mod:`igbook.live` carry BokehJS inline (for JupyterLab); on the
  site that inline copy is dropped and the page loads BokehJS from ``_static/bokeh`` (copied from
  the installed ``bokeh``), once per page and only on pages with a live figure.
* **Generated appendix content.** Directives used by ``book/performance.md`` and
  ``book/instructors.md``:

  - ``{igbook-benchmark} <topic>``: the tables of ``benchmarks/results/<topic>.json``, or
    "not yet measured";
  - ``{igbook-other-benchmarks} <topic> <topic> ...``: every other results file;
  - ``{igbook-chapter-table}``: per chapter its prerequisites, size, exercises, execution time;
  - ``{igbook-chapter-graph}``: the chapter dependency graph (inline SVG drawn with matplotlib);
  - ``{igbook-exercise-table}``: every exercise, whether it has a self-check and what it suits.

  Chapters, prerequisites (``{doc}`` links to earlier chapters) and exercises are read from the
  notebooks in ``_toc.yml`` order, so new chapters appear without editing these pages.
"""

from __future__ import annotations

import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from docutils import nodes
from docutils.parsers.rst import Directive, directives
from sphinx import addnodes
from sphinx.util import logging
from sphinx.util.fileutil import copy_asset

LOG = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
STATIC = ROOT / "book" / "_static"
RESULTS = ROOT / "benchmarks" / "results"

MATHJAX_DEFAULT_PREFIX = "https://cdn.jsdelivr.net/npm/mathjax@3"
MATHJAX_LOCAL = "mathjax/tex-chtml.js"
# parts of MathJax's es5 build that tex-chtml.js loads on demand (the rest is other combined builds)
MATHJAX_PARTS = (
    "tex-chtml.js",
    "a11y",
    "ui",
    "input",
    "output/chtml.js",
    "output/chtml",
    "sre",
    "adaptors",
)
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"

__all__ = ["setup", "mathjax_es5_dir", "chapters", "render_result", "Chapter", "Exercise"]


# --------------------------------------------------------------------------------------------
# MathJax, static assets, widgets
# --------------------------------------------------------------------------------------------


def mathjax_es5_dir() -> Path | None:
    """The ``es5`` folder of the installed MathJax 3 (package ``django-static-mathjax``), if any."""
    try:
        import mathjax  # the module of django-static-mathjax
    except ImportError:
        return None
    d = Path(mathjax.__file__).resolve().parent / "static" / "mathjax" / "es5"
    return d if (d / "tex-chtml.js").is_file() else None


def _config_inited(app: Any, config: Any) -> None:
    if str(STATIC) not in [str(Path(app.confdir, p)) for p in config.html_static_path]:
        config.html_static_path.append(str(STATIC))
    # no CDN scripts for ipywidgets: the widget outputs get a static note instead (below)
    config.nb_ipywidgets_js = {}
    # an icon, so that browsers do not ask the host for a missing /favicon.ico
    if not config.html_favicon:
        config.html_favicon = str(STATIC / "favicon.svg")
    # pydata-sphinx-theme reads the initial light/dark mode from the template variable
    # `default_mode`; left empty, a reader's first visit logs "Got invalid theme mode" (an error)
    config.html_context.setdefault("default_mode", "auto")
    if str(config.mathjax_path).startswith(MATHJAX_DEFAULT_PREFIX):
        config.mathjax_path = MATHJAX_LOCAL


def _builder_inited(app: Any) -> None:
    if app.builder.format != "html":
        return
    app.add_css_file("igbook.css")
    app.add_js_file("igbook.js", defer="defer")
    if str(app.config.mathjax_path).startswith("mathjax/") and mathjax_es5_dir() is None:
        LOG.warning(
            "MathJax 3 is not installed (pip install django-static-mathjax): formulas will not render offline",
            type="igbook",
            subtype="mathjax",
        )


_BOKEH_INLINE = re.compile(r"<!--igbook-bokehjs-->.*?<!--/igbook-bokehjs-->", re.S)


def _live_figures(app: Any, doctree: nodes.document, docname: str) -> None:
    """Drop the inline BokehJS of live-figure outputs; remember the page needs the served copy."""
    if app.builder.format != "html":
        return
    for raw in list(doctree.findall(nodes.raw)):
        text = raw.astext()
        if "<!--igbook-bokehjs-->" in text and "html" in raw.get("format", ""):
            raw.parent.replace(
                raw,
                nodes.raw(
                    "",
                    _BOKEH_INLINE.sub("", text),
                    format=raw["format"],
                    classes=raw.get("classes", []),
                ),
            )
            pages = getattr(app.env, "igbook_live_pages", set())
            pages.add(docname)
            app.env.igbook_live_pages = pages


def _live_scripts(
    app: Any, pagename: str, templatename: str, context: dict[str, Any], doctree: Any
) -> None:
    if pagename in getattr(app.env, "igbook_live_pages", set()) or "igbook-live" in context.get(
        "body", ""
    ):
        from igbook.live import bokeh_js_files

        for f in bokeh_js_files():
            app.add_js_file(f"bokeh/{f.name}", priority=400)


def _copy_bokeh(app: Any, exc: Exception | None) -> None:
    if exc is not None or app.builder.format != "html":
        return
    try:
        from igbook.live import bokeh_js_files

        files = bokeh_js_files()
    except (ImportError, FileNotFoundError) as e:
        LOG.warning(
            f"live figures need bokeh (pip install bokeh): {e}", type="igbook", subtype="bokeh"
        )
        return
    dest = Path(app.outdir) / "_static" / "bokeh"
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        copy_asset(str(f), str(dest))


def _copy_mathjax(app: Any, exc: Exception | None) -> None:
    if exc is not None or app.builder.format != "html":
        return
    src = mathjax_es5_dir()
    if src is None or not str(app.config.mathjax_path).startswith("mathjax/"):
        return
    dest = Path(app.outdir) / "_static" / "mathjax"
    for part in MATHJAX_PARTS:
        s = src / part
        if s.is_dir():
            copy_asset(str(s), str(dest / part))
        elif s.is_file():
            (dest / part).parent.mkdir(parents=True, exist_ok=True)
            copy_asset(str(s), str((dest / part).parent))


def _dedupe_scripts(
    app: Any, pagename: str, templatename: str, context: dict[str, Any], doctree: Any
) -> None:
    """Drop repeated ``<script>`` entries.

    sphinx-thebe adds its inline configuration (``const THEBE_JS_URL = ...``) after the builder
    started, so Sphinx 7 records it twice (once with filename ``None``, once with ``""``), and
    the second ``const`` declaration is a JavaScript error on every page.
    """
    scripts = context.get("script_files")
    if not scripts:
        return
    seen: set[tuple[str, str]] = set()
    unique = []
    for js in scripts:
        key = (
            str(getattr(js, "filename", js) or ""),
            repr(sorted(getattr(js, "attributes", {}).items())),
        )
        if key not in seen:
            seen.add(key)
            unique.append(js)
    scripts[:] = unique


def _resolve_reexports(
    app: Any, env: Any, node: Any, contnode: nodes.Element
) -> nodes.Element | None:
    """Link ``igbook.kfac.KFAC`` to where autodoc documented it (``igbook.kfac.core.KFAC``).

    Docstrings name objects by their public, re-exported path, while ``book/api.md`` documents
    each submodule; Sphinx then cannot resolve the public path. When exactly one documented
    object lies under the same package with the same trailing name, link to it.
    """
    if node.get("refdomain") != "py":
        return None
    target = str(node.get("reftarget", "")).lstrip("~.")
    if not target.startswith("igbook."):
        return None
    from sphinx.util.nodes import make_refnode

    objects = env.get_domain("py").objects
    parts = target.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        prefix, rest = ".".join(parts[:cut]) + ".", "." + ".".join(parts[cut:])
        found = [
            n
            for n in objects
            if n.startswith(prefix) and n.endswith(rest) and not objects[n].aliased
        ]
        if len(found) == 1:
            obj = objects[found[0]]
            return make_refnode(
                app.builder,
                node.get("refdoc", env.docname),
                obj.docname,
                obj.node_id,
                contnode,
                found[0],
            )
        if found:
            return None
    return None


def _binder_url(app: Any, docname: str) -> str | None:
    opts = app.config.html_theme_options or {}
    hub = (opts.get("launch_buttons") or {}).get("binderhub_url")
    repo = opts.get("repository_url", "")
    m = re.match(r"https?://github.com/([^/]+/[^/]+?)(?:\.git)?/?$", repo)
    if not hub or not m:
        return None
    branch = opts.get("repository_branch", "main")
    path = (opts.get("path_to_docs") or "").strip("/")
    nb = f"{path}/{docname}.ipynb" if path else f"{docname}.ipynb"
    ui = (
        "lab/tree"
        if (opts.get("launch_buttons") or {}).get("notebook_interface") == "jupyterlab"
        else "tree"
    )
    return f"{hub.rstrip('/')}/v2/gh/{m.group(1)}/{branch}?urlpath={ui}/{nb}"


_CDN_LINK = re.compile(r'<link[^>]+href="https?://[^"]*font-awesome[^"]*"[^>]*>\s*')


def _static_outputs(app: Any, doctree: nodes.document, docname: str) -> None:
    """Make notebook outputs work on a static, offline page.

    * matplotlib's ``to_jshtml`` animations link Font Awesome 4 from a CDN for their button icons;
      the theme already ships Font Awesome (which knows those icon names), so the link is dropped.
    * After every ipywidgets output, add a visible note that says how to get the live widget.
    """
    if app.builder.format != "html":
        return
    for raw in list(doctree.findall(nodes.raw)):
        if "font-awesome" in raw.astext() and "html" in raw.get("format", ""):
            raw.parent.replace(
                raw,
                nodes.raw(
                    "",
                    _CDN_LINK.sub("", raw.astext()),
                    format=raw["format"],
                    classes=raw.get("classes", []),
                ),
            )
    binder = _binder_url(app, docname)
    for raw in list(doctree.findall(nodes.raw)):
        if WIDGET_VIEW not in raw.astext() or "html" not in raw.get("format", ""):
            continue
        link = (
            f' <a class="reference external" href="{binder}" target="_blank" rel="noopener">Launch it on Binder</a>'
            if binder
            else ""
        )
        note = (
            '<div class="igbook-widget-fallback" role="note">'
            '<p class="igbook-widget-fallback-title">Interactive explorer: needs a running Python kernel</p>'
            "<p>The sliders of this explorer redraw the figure with Python, so they cannot run on this"
            f" static page.{link}{' or run' if link else ' Run'} the chapter in your own JupyterLab"
            " (<code>make lab</code>). The figure and the"
            " animation on this page show what it draws.</p></div>"
        )
        raw.parent.insert(raw.parent.index(raw) + 1, nodes.raw("", note, format="html"))


# --------------------------------------------------------------------------------------------
# Chapters: read from the notebooks in _toc.yml order
# --------------------------------------------------------------------------------------------


@dataclass
class Exercise:
    """One ``{exercise}`` block of a chapter."""

    title: str
    label: str | None
    body: str
    self_check: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        """What the exercise suits, from its text (a heuristic, stated as such on the page)."""
        if re.search(r"explorer|widget|slider", self.body, re.I):
            return "lab session (explore with the widget)"
        if self.self_check:
            return "homework, self-checked"
        if re.search(r"\b(show|prove|derive|verify that)\b", self.body, re.I):
            return "written homework (proof)"
        return "homework or discussion"


@dataclass
class Chapter:
    """A chapter notebook and what the instructors' page shows about it."""

    name: str
    title: str
    number: int
    words: int
    code_cells: int
    exercises: list[Exercise]
    links: set[str]
    prerequisites: list[str] = field(default_factory=list)


def _toc_files() -> list[str]:
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    out = [toc["root"]]

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "file" in node:
                out.append(str(node["file"]))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(toc.get("parts", toc.get("chapters", [])))
    return out


_FENCE = re.compile(
    r"^(?P<fence>```+|:::+)\{exercise\}[ \t]*(?P<title>[^\n]*)\n(?P<body>.*?)^(?P=fence)[ \t]*$",
    re.M | re.S,
)


def _parse_exercises(text: str) -> list[Exercise]:
    out = []
    for m in _FENCE.finditer(text):
        body = m.group("body")
        label = re.search(r"^:label:\s*(\S+)", body, re.M)
        body_text = re.sub(r"^:\w[\w-]*:.*$", "", body, flags=re.M).strip()
        checks = sorted(set(re.findall(r"\b(check_\w+)\b", body_text)))
        out.append(
            Exercise(
                m.group("title").strip() or "Exercise",
                label.group(1) if label else None,
                body_text,
                checks,
            )
        )
    return out


def chapters(root: Path = ROOT) -> list[Chapter]:
    """The chapter notebooks in table-of-contents order, with prerequisites and exercises."""
    files = [f for f in _toc_files() if (root / f).with_suffix(".ipynb").exists()]
    names = [Path(f).name for f in files]
    out: list[Chapter] = []
    for i, f in enumerate(files):
        nb = json.loads((root / f).with_suffix(".ipynb").read_text())
        md = "\n".join(
            "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
            for c in nb["cells"]
            if c["cell_type"] == "markdown"
        )
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        title = re.search(r"^# (.+)$", md, re.M)
        links = set()
        for m in re.finditer(r"\{doc\}`(?:[^`<]*<)?([^`>]+)>?`", md):
            links.add(Path(m.group(1).strip()).name)
        ch = Chapter(
            name=names[i],
            title=title.group(1).strip() if title else names[i],
            number=i + 1,
            words=len(re.findall(r"[A-Za-z]{2,}", re.sub(r"\$[^$]*\$", " ", md))),
            code_cells=len(code),
            exercises=_parse_exercises(md),
            links=links,
        )
        ch.prerequisites = [n for n in names[:i] if n in links]
        out.append(ch)
    return out


def _chapter_times() -> dict[str, float]:
    p = RESULTS / "chapters.json"
    if not p.exists():
        return {}
    try:
        data = json.loads(p.read_text())
        return {
            str(r["chapter"]): float(r["seconds"])
            for r in data.get("chapters", [])
            if r.get("seconds") is not None
        }
    except (ValueError, KeyError, TypeError, AttributeError):
        return {}


# --------------------------------------------------------------------------------------------
# docutils helpers
# --------------------------------------------------------------------------------------------


def _table(
    header: list[str], rows: list[list[Any]], classes: tuple[str, ...] = ()
) -> nodes.container:
    """A docutils table in a horizontally scrollable box."""
    wrap = nodes.container(classes=["igbook-table-wrap"])
    table = nodes.table(classes=["igbook-table", *classes])
    wrap += table
    group = nodes.tgroup(cols=len(header))
    table += group
    for _ in header:
        group += nodes.colspec(colwidth=1)
    thead = nodes.thead()
    group += thead
    row = nodes.row()
    for h in header:
        row += nodes.entry("", nodes.paragraph(text=str(h)))
    thead += row
    tbody = nodes.tbody()
    group += tbody
    for r in rows:
        row = nodes.row()
        for cell in r:
            entry = nodes.entry()
            if isinstance(cell, nodes.Node):
                entry += (
                    cell if isinstance(cell, nodes.paragraph) else nodes.paragraph("", "", cell)
                )
            else:
                entry += nodes.paragraph(text=str(cell))
            row += entry
        tbody += row
    return wrap


def _doc_ref(env: Any, target: str, text: str) -> addnodes.pending_xref:
    ref = addnodes.pending_xref(
        "",
        refdomain="std",
        reftype="doc",
        reftarget="/" + target,
        refexplicit=True,
        refdoc=env.docname,
    )
    ref += nodes.inline(text=text)
    return ref


def _label_ref(env: Any, label: str, text: str) -> addnodes.pending_xref:
    ref = addnodes.pending_xref(
        "",
        refdomain="std",
        reftype="ref",
        reftarget=label,
        refexplicit=True,
        refdoc=env.docname,
        refwarn=True,
    )
    ref += nodes.inline(text=text)
    return ref


def fmt(value: Any) -> str:
    """A compact, human string for a JSON value."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10000 else str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if value == 0:
            return "0"
        if abs(value) >= 1e5 or abs(value) < 1e-3:
            return f"{value:.3e}"
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        scalars = all(not isinstance(v, (dict, list, tuple)) for v in value)
        if scalars and (
            len(value) <= 4 or (len(value) <= 12 and all(isinstance(v, int) for v in value))
        ):
            return ", ".join(fmt(v) for v in value)
        if scalars and value:  # a series (losses, times): its ends and its length
            return f"{fmt(value[0])} → {fmt(value[-1])} ({len(value)} values)"
        s = json.dumps(value)
        return s if len(s) <= 80 else s[:77] + "..."
    if isinstance(value, dict):
        s = ", ".join(f"{k}={fmt(v)}" for k, v in value.items())
        return s if len(s) <= 120 else s[:117] + "..."
    return str(value)


def _flatten(d: dict[str, Any], prefix: str = "", depth: int = 2) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and depth > 0 and v:
            out.update(_flatten(v, key + ".", depth - 1))
        else:
            out[key] = v
    return out


_META_KEYS = ("machine", "machine_info", "environment", "env", "system", "platform", "hardware")
_SETTINGS_KEYS = (
    "settings",
    "config",
    "configuration",
    "params",
    "parameters",
    "setup",
    "hyperparameters",
)
_TEXT_KEYS = (
    "title",
    "name",
    "benchmark",
    "description",
    "summary",
    "note",
    "notes",
    "command",
    "script",
    "date",
    "timestamp",
)


def _records_table(records: list[dict[str, Any]]) -> nodes.container:
    flat = [_flatten(r) for r in records]
    cols: list[str] = []
    for r in flat:
        for k in r:
            if k not in cols:
                cols.append(k)
    return _table(cols, [[fmt(r.get(c)) for c in cols] for r in flat])


def render_result(data: Any, *, depth: int = 0) -> list[nodes.Node]:
    """Generic, robust rendering of one benchmark's JSON as paragraphs and tables.

    Machine information and settings become one line each; lists of records and dicts of records
    become tables; dicts of numbers become two-column tables; anything else a line of text.
    """
    out: list[nodes.Node] = []
    if not isinstance(data, dict):
        if isinstance(data, list) and data and all(isinstance(r, dict) for r in data):
            return [_records_table(data)]
        return [nodes.paragraph(text=fmt(data))]
    scalars: dict[str, Any] = {}
    for key, value in data.items():
        lk = str(key).lower()
        if depth == 0 and lk in ("title", "name", "benchmark") and isinstance(value, str):
            continue  # the page's heading names the benchmark
        if depth == 0 and lk in _TEXT_KEYS and isinstance(value, str):
            out.append(nodes.paragraph("", "", nodes.strong(text=f"{key}: "), nodes.Text(value)))
        elif depth == 0 and lk in _META_KEYS + _SETTINGS_KEYS and isinstance(value, dict):
            label = "Measured on" if lk in _META_KEYS else "Settings"
            line = ", ".join(f"{k}={fmt(v)}" for k, v in _flatten(value).items())
            out.append(nodes.paragraph("", "", nodes.strong(text=f"{label}: "), nodes.Text(line)))
        elif isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
            out.append(nodes.rubric(text=str(key)))
            out.append(_records_table(value))
        elif isinstance(value, dict) and value and all(isinstance(r, dict) for r in value.values()):
            out.append(nodes.rubric(text=str(key)))
            flat = {k: _flatten(v) for k, v in value.items()}
            cols: list[str] = []
            for r in flat.values():
                cols += [c for c in r if c not in cols]
            out.append(
                _table(["", *cols], [[k, *(fmt(r.get(c)) for c in cols)] for k, r in flat.items()])
            )
        elif isinstance(value, dict) and depth < 2:
            sub = render_result(value, depth=depth + 1)
            if sub:
                out.append(nodes.rubric(text=str(key)))
                out.extend(sub)
        else:
            scalars[str(key)] = value
    if scalars:
        out.insert(
            0 if depth else len(out),
            _table(["quantity", "value"], [[k, fmt(v)] for k, v in scalars.items()]),
        )
    return out


# --------------------------------------------------------------------------------------------
# directives
# --------------------------------------------------------------------------------------------


class BenchmarkDirective(Directive):
    """``{igbook-benchmark} topic``: the tables of ``benchmarks/results/<topic>.json``."""

    required_arguments = 1
    has_content = False
    option_spec: ClassVar[dict[str, Any]] = {"script": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        env = self.state.document.settings.env
        topic = self.arguments[0]
        path = RESULTS / f"{topic}.json"
        env.note_dependency(str(path))
        script = self.options.get("script", f"benchmarks/bench_{topic}.py")
        container = nodes.container(classes=["igbook-benchmark"])
        if not path.exists():
            container["classes"].append("igbook-not-measured")
            container += nodes.paragraph(
                "",
                "",
                nodes.strong(text="Not yet measured. "),
                nodes.Text("Run "),
                nodes.literal(text=f"python {script}"),
                nodes.Text(f" (it writes benchmarks/results/{topic}.json) and rebuild the book."),
            )
            return [container]
        try:
            data = json.loads(path.read_text())
        except ValueError as e:
            container += nodes.paragraph(
                text=f"benchmarks/results/{topic}.json could not be read ({e})."
            )
            return [container]
        container += render_result(data)
        container += nodes.paragraph(
            "",
            "",
            nodes.emphasis(text="Source: "),
            nodes.literal(text=f"benchmarks/results/{topic}.json"),
            nodes.Text(", written by "),
            nodes.literal(text=script),
            nodes.Text("."),
        )
        return [container]


class OtherBenchmarksDirective(Directive):
    """``{igbook-other-benchmarks} known ...``: every results file whose topic is not listed."""

    optional_arguments = 100
    has_content = False

    def run(self) -> list[nodes.Node]:
        env = self.state.document.settings.env
        known = set(self.arguments)
        out: list[nodes.Node] = []
        env.note_dependency(str(RESULTS))
        for path in sorted(RESULTS.glob("*.json")) if RESULTS.is_dir() else []:
            if path.stem in known:
                continue
            env.note_dependency(str(path))
            out.append(nodes.rubric(text=path.stem))
            try:
                out.extend(render_result(json.loads(path.read_text())))
            except ValueError as e:
                out.append(nodes.paragraph(text=f"{path.name} could not be read ({e})."))
        if not out:
            out.append(nodes.paragraph(text="No other results yet."))
        return out


def _minutes(ch: Chapter) -> int:
    """Rough class time: reading mathematical prose at ~60 words/min, 2 min per code cell, 10 per exercise."""
    m = ch.words / 60 + 2 * ch.code_cells + 10 * len(ch.exercises)
    return int(15 * max(1, round(m / 15)))


class ChapterTableDirective(Directive):
    """``{igbook-chapter-table}``: chapters with prerequisites, size, exercises and run time."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        env = self.state.document.settings.env
        env.note_dependency(str(ROOT / "_toc.yml"))
        env.note_dependency(str(RESULTS / "chapters.json"))
        chs = chapters()
        for ch in chs:
            env.note_dependency(str((ROOT / "book" / ch.name).with_suffix(".ipynb")))
        times = _chapter_times()
        by_name = {c.name: c for c in chs}
        rows = []
        for ch in chs:
            pre = nodes.inline()
            for j, p in enumerate(ch.prerequisites):
                if j:
                    pre += nodes.Text(", ")
                pre += _doc_ref(env, f"book/{p}", str(by_name[p].number))
            if not ch.prerequisites:
                pre += nodes.Text("none")
            n_checked = sum(bool(e.self_check) for e in ch.exercises)
            t = times.get(ch.name)
            rows.append(
                [
                    nodes.inline(
                        "",
                        "",
                        nodes.Text(f"{ch.number}. "),
                        _doc_ref(env, f"book/{ch.name}", ch.title),
                    ),
                    pre,
                    f"{ch.words:,}",
                    str(ch.code_cells),
                    f"{len(ch.exercises)} ({n_checked} self-checked)",
                    f"{_minutes(ch)} min",
                    f"{t:.0f} s" if t is not None else "not yet measured",
                ]
            )
        if not rows:
            return [nodes.paragraph(text="No chapters yet.")]
        return [
            _table(
                [
                    "Chapter",
                    "Builds on",
                    "Words",
                    "Code cells",
                    "Exercises",
                    "Class time (rough)",
                    "Execution",
                ],
                rows,
                ("igbook-chapters",),
            )
        ]


class ExerciseTableDirective(Directive):
    """``{igbook-exercise-table}``: every exercise with its self-check and what it suits."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        env = self.state.document.settings.env
        env.note_dependency(str(ROOT / "_toc.yml"))
        out: list[nodes.Node] = []
        rows = []
        for ch in chapters():
            env.note_dependency(str((ROOT / "book" / ch.name).with_suffix(".ipynb")))
            for k, ex in enumerate(ch.exercises, 1):
                title = _label_ref(env, ex.label, ex.title) if ex.label else nodes.Text(ex.title)
                checks = nodes.inline()
                for j, c in enumerate(ex.self_check):
                    if j:
                        checks += nodes.Text(", ")
                    checks += nodes.literal(text=c)
                if not ex.self_check:
                    checks += nodes.Text("—")
                rows.append([f"{ch.number}.{k}", nodes.inline("", "", title), checks, ex.kind])
        if not rows:
            return [nodes.paragraph(text="No exercises yet.")]
        out.append(_table(["#", "Exercise", "Self-check", "Suits"], rows, ("igbook-exercises",)))
        return out


def _layers(chs: list[Chapter]) -> dict[str, int]:
    level: dict[str, int] = {}
    for ch in chs:  # toc order is a topological order (prerequisites are earlier chapters)
        level[ch.name] = 1 + max((level[p] for p in ch.prerequisites), default=-1)
    return level


def _reduced_edges(chs: list[Chapter]) -> list[tuple[str, str]]:
    """Prerequisite edges without those implied by a longer path (transitive reduction)."""
    pre = {c.name: set(c.prerequisites) for c in chs}
    reach: dict[str, set[str]] = {}
    for c in chs:
        r: set[str] = set()
        for p in pre[c.name]:
            r |= {p} | reach[p]
        reach[c.name] = r
    edges = []
    for c in chs:
        for p in pre[c.name]:
            if not any(p in reach[q] for q in pre[c.name] if q != p):
                edges.append((p, c.name))
    return edges


def dependency_svg(chs: list[Chapter]) -> str:
    """The dependency graph as an SVG string (boxes in layers, arrows from prerequisite to chapter)."""
    import textwrap

    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    level = _layers(chs)
    n_layers = max(level.values()) + 1
    rows: dict[int, list[Chapter]] = {}
    for ch in chs:
        rows.setdefault(level[ch.name], []).append(ch)
    width = max(len(v) for v in rows.values())
    w, h, dx, dy = 3.0, 0.9, 3.4, 1.6  # box size and spacing in data units (one row per level)
    fig = Figure(figsize=(max(3.2, 2.25 * width), 0.95 * n_layers + 0.2))
    ax = fig.add_axes((0, 0, 1, 1))
    pos: dict[str, tuple[float, float]] = {}
    for lev, row in rows.items():
        for k, ch in enumerate(row):
            pos[ch.name] = ((k - (len(row) - 1) / 2) * dx, -lev * dy)
    palette = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9"]
    for p, c in _reduced_edges(chs):
        (x0, y0), (x1, y1) = pos[p], pos[c]
        ax.add_patch(
            FancyArrowPatch(
                (x0, y0 - h / 2),
                (x1, y1 + h / 2),
                arrowstyle="-|>",
                mutation_scale=12,
                color="#444444",
                lw=1.1,
                shrinkA=1,
                shrinkB=1,
            )
        )
    for ch in chs:
        x, y = pos[ch.name]
        color = palette[level[ch.name] % len(palette)]
        ax.add_patch(
            FancyBboxPatch(
                (x - w / 2, y - h / 2),
                w,
                h,
                boxstyle="round,pad=0.02,rounding_size=0.15",
                fc="white",
                ec=color,
                lw=1.8,
            )
        )
        lines = textwrap.wrap(f"{ch.number}. {ch.title}", 26)
        label = "\n".join(lines[:2]) + ("…" if len(lines) > 2 else "")
        ax.text(x, y, label, ha="center", va="center", fontsize=10, color="#222222")
    xs = [p[0] for p in pos.values()]
    ys = [p[1] for p in pos.values()]
    ax.set_xlim(min(xs) - w / 2 - 0.2, max(xs) + w / 2 + 0.2)
    ax.set_ylim(min(ys) - h / 2 - 0.2, max(ys) + h / 2 + 0.2)
    ax.set_aspect("auto")
    ax.axis("off")
    fig.patch.set_facecolor("white")
    buf = io.StringIO()
    fig.savefig(buf, format="svg", facecolor="white", metadata={"Date": None})
    svg = buf.getvalue()
    return svg[svg.index("<svg") :]


class ChapterGraphDirective(Directive):
    """``{igbook-chapter-graph}``: the dependency graph of the chapters as an inline SVG figure."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        env = self.state.document.settings.env
        env.note_dependency(str(ROOT / "_toc.yml"))
        chs = chapters()
        for ch in chs:
            env.note_dependency(str((ROOT / "book" / ch.name).with_suffix(".ipynb")))
        if not chs:
            return [nodes.paragraph(text="No chapters yet.")]
        svg = dependency_svg(chs)
        svg = svg.replace("<svg ", '<svg role="img" aria-label="Chapter dependency graph" ', 1)
        fig = nodes.container(classes=["igbook-graph"])
        fig += nodes.raw("", f'<div class="igbook-graph-svg">{svg}</div>', format="html")
        fig += nodes.paragraph(
            text="An arrow from A to B: B uses A (a link from B to A in the text). "
            "Arrows implied by a longer path are left out; the table below lists every prerequisite.",
            classes=["igbook-caption"],
        )
        return [fig]


def setup(app: Any) -> dict[str, Any]:
    app.connect("config-inited", _config_inited, priority=100)
    app.connect("builder-inited", _builder_inited)
    app.connect("doctree-resolved", _static_outputs)
    app.connect("build-finished", _copy_mathjax)
    app.connect("doctree-resolved", _live_figures)
    app.connect("html-page-context", _live_scripts)
    app.connect("build-finished", _copy_bokeh)
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    app.connect("missing-reference", _resolve_reexports)
    app.add_directive("igbook-benchmark", BenchmarkDirective)
    app.add_directive("igbook-other-benchmarks", OtherBenchmarksDirective)
    app.add_directive("igbook-chapter-table", ChapterTableDirective)
    app.add_directive("igbook-chapter-graph", ChapterGraphDirective)
    app.add_directive("igbook-exercise-table", ExerciseTableDirective)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
