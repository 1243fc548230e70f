"""Live figures on the built website, in headless Chromium (no kernel, no network).

For every chapter page: every live figure registers, draws and responds. Each slider and
switch is moved and each drag handle dragged through the DevTools protocol: what the figure
draws must change, no NaN or Infinity may be printed, and no error logged. Ported figures show
igbook's numbers at their initial state; precomputed figures show, frame by frame, exactly the
values igbook wrote (compared with the JSON igbook put beside the figure). The port itself is
proved equal to igbook at random states in tests/test_live.py.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import pytest

from test_live import drag
from test_site import NOTEBOOK_PAGES, browser, server, site  # noqa: F401  (fixtures)

pytestmark = pytest.mark.browser

CHAPTERS_WITHOUT_LIVE: set[str] = set()

DRAWN = """(() => { const out = [];
  for (const d of Bokeh.documents) for (const m of d.all_models) if (m.type === 'ColumnDataSource')
    out.push(JSON.stringify(m.data, (k, v) => (v instanceof Float32Array || v instanceof Float64Array) ? Array.from(v) : v).length + ':' +
             JSON.stringify(m.data, (k, v) => (v instanceof Float32Array || v instanceof Float64Array) ? Array.from(v).slice(0, 8) : v).slice(0, 400));
  return out.join('|'); })()"""


def _wait_live(browser: Any, n: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if browser.js(
            "!!window.igbookLive && [...document.querySelectorAll('[data-igbook-live]')]"
            ".every(e => igbookLive.figures.some(f => f.name === e.dataset.igbookLive))"
        ):
            return
        time.sleep(0.1)
    raise AssertionError(
        f"only {browser.js('window.igbookLive ? igbookLive.figures.length : 0')} of {n} live figures registered"
    )


def _no_nan(browser: Any) -> None:
    text = browser.js(
        "Bokeh.documents.map(d => [...d.all_models].filter(m => m.type === 'Div').map(m => m.text).join(' '))"
        ".join(' ') + ' ' + [...document.querySelectorAll('.igbook-live')].map(e => e.innerText).join(' ')"
    )
    assert "NaN" not in text and "Infinity" not in text, text[:500]


def _figure_shot(browser: Any, name: str) -> str:
    """A screenshot (base64 PNG) of one live figure's box, as the reader sees it."""
    box = browser.js(f"""(() => {{ const el = document.querySelector('[data-igbook-live={json.dumps(name)}] .igbook-live-panels');
        const b = el.getBoundingClientRect(); return {{x: b.left + scrollX, y: b.top + scrollY, width: b.width, height: Math.min(b.height, 3000)}}; }})()""")
    return browser.send(
        "Page.captureScreenshot", format="png", clip={**box, "scale": 1}, captureBeyondViewport=True
    )["data"]


def _settle(browser: Any) -> None:
    """Wait until the page has painted what the last event changed (two animation frames)."""
    browser.js("new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(() => r(1))))")


def exercise_live_figures(browser: Any) -> tuple[dict[str, list[str]], dict[str, list[float]]]:
    """Move every control and drag every handle of every live figure on the open page.

    Returns ``(problems, drag_ms)``: problems by kind (empty when every control and handle
    changed what is drawn, its pixels included, with no NaN shown), and per figure the time from
    each mouse-move event of a drag to the painted frame, in milliseconds.
    """
    problems: dict[str, list[str]] = {}
    drag_ms: dict[str, list[float]] = {}

    def add(kind: str, what: str) -> None:
        problems.setdefault(kind, []).append(what)

    names = browser.js(
        "[...document.querySelectorAll('[data-igbook-live]')].map(e => e.dataset.igbookLive)"
    )
    if not names:
        return problems, drag_ms
    _wait_live(browser, len(names))
    registered = browser.js("igbookLive.figures.map(f => f.name)")
    if set(names) - set(registered):
        add("registry", f"figures on the page {names}, registered {registered}")
    for name in names:
        fig = f"igbookLive.get({json.dumps(name)})"
        browser.js(
            f"document.querySelector('[data-igbook-live={json.dumps(name)}]').scrollIntoView({{block: 'start'}})"
        )
        n_widgets = browser.js(f"""(() => {{ const doc = Bokeh.documents.find(d => [...d.all_models].some(m => m.__igbook === {fig}));
            window.__doc = doc; window.__widgets = doc ? [...doc.all_models].filter(m => m.type === 'Slider' || m.type === 'Switch') : [];
            return window.__widgets.length; }})()""")
        if n_widgets < 1:
            add("controls", f"{name}: no control")
        for i in range(n_widgets):
            before, shot = browser.js(DRAWN), _figure_shot(browser, name)
            kind = browser.js(f"""(() => {{ const w = __widgets[{i}];
                if (w.type === 'Switch') {{ w.active = !w.active; return 'switch'; }}
                const v = w.value, mid = w.start + 0.5 * (w.end - w.start), step = w.step || 0;
                let nv = Math.abs(v - w.end) > Math.abs(v - w.start) ? w.end : w.start;
                if (step && Math.abs(nv - v) < step) nv = mid;
                w.value = nv; return w.title; }})()""")
            deadline = time.monotonic() + 10  # some figures draw part of a frame from a worker
            after = browser.js(DRAWN)
            while after == before and time.monotonic() < deadline:
                time.sleep(0.05)
                after = browser.js(DRAWN)
            _settle(browser)
            time.sleep(0.1)
            if after == before:
                add("controls", f"{name}: moving control {kind!r} changed nothing drawn")
            elif _figure_shot(browser, name) == shot:
                add("controls", f"{name}: moving control {kind!r} changed no pixel")
            if not _no_nan_ok(browser):
                add("NaN", f"{name}: NaN or Infinity shown after moving {kind!r}")
        n_drag = browser.js("""(() => { function* walk(v){ yield v; for (const c of (v.child_views||[])) yield* walk(c); }
            window.__dragViews = [];
            for (const root of [...Bokeh.index]) for (const v of walk(root))
              if (v.frame && v.model.document === __doc && v.model.toolbar.tools.some(t => t.type === 'PointDrawTool')) __dragViews.push(v);
            return __dragViews.length; })()""")
        for i in range(n_drag):
            h = browser.js(f"""(() => {{ const v = __dragViews[{i}]; v.el.scrollIntoView({{block: 'center'}});
                const tool = v.model.toolbar.tools.find(t => t.type === 'PointDrawTool');
                const src = tool.renderers[0].data_source, r = v.el.getBoundingClientRect(), f = v.frame.bbox, m = v.model;
                return {{left: r.left + f.left, top: r.top + f.top, w: f.width, h: f.height, x0: m.x_range.start, x1: m.x_range.end,
                        y0: m.y_range.start, y1: m.y_range.end, title: m.title.text, px: Array.from(src.data.x), py: Array.from(src.data.y)}}; }})()""")
            time.sleep(0.2)
            x, y = h["px"][-1], h["py"][-1]
            tx = (
                x + 0.2 * (h["x1"] - h["x0"])
                if x < 0.5 * (h["x0"] + h["x1"])
                else x - 0.2 * (h["x1"] - h["x0"])
            )
            before = browser.js(f"JSON.stringify({fig}.state())")
            drag_ms.setdefault(name, []).extend(
                drag(browser, h, (x, y), (tx, y), settle=lambda: _settle(browser))
            )
            after = browser.js(f"JSON.stringify({fig}.state())")
            if after == before:
                add("drag", f"{name}: dragging a handle in {h['title']!r} changed nothing")
            if not _no_nan_ok(browser):
                add("NaN", f"{name}: NaN or Infinity shown after a drag in {h['title']!r}")
    return problems, drag_ms


def _no_nan_ok(browser: Any) -> bool:
    try:
        _no_nan(browser)
    except AssertionError:
        return False
    return True


@pytest.mark.parametrize("page", NOTEBOOK_PAGES)
def test_live_figures_respond(page: str, server: Any, browser: Any) -> None:
    start = browser.goto(server.base + page)
    names = browser.js(
        "[...document.querySelectorAll('[data-igbook-live]')].map(e => e.dataset.igbookLive)"
    )
    chapter = page.rsplit("/", 1)[-1].removesuffix(".html")
    if not names:
        if chapter in CHAPTERS_WITHOUT_LIVE:
            pytest.skip(f"{chapter} has no live figure yet")
        pytest.fail(
            f"{page}: no live figure (every chapter has at least one that moves on the static site)"
        )
    problems, _ = exercise_live_figures(browser)
    assert not problems, json.dumps(problems, ensure_ascii=False, indent=1)[:3000]
    errors = [
        e
        for e in browser.events[start:]
        if e["method"] == "Runtime.exceptionThrown"
        or (e["method"] == "Runtime.consoleAPICalled" and e["params"]["type"] == "error")
    ]
    assert not errors, json.dumps(errors)[:2000]


@pytest.mark.parametrize("page", NOTEBOOK_PAGES)
def test_precomputed_figures_show_what_igbook_wrote(page: str, server: Any, browser: Any) -> None:
    browser.goto(server.base + page)
    written = browser.js(
        "Object.fromEntries([...document.querySelectorAll('script[data-igbook-live-data]')]"
        ".map(s => [s.dataset.igbookLiveData, JSON.parse(s.textContent)]))"
    )
    if not written:
        pytest.skip("no precomputed live figure on this page")
    _wait_live(browser, len(written))
    for name, data in written.items():
        fig = f"igbookLive.get({json.dumps(name)})"
        sizes = browser.js(f"{fig}.controls().map(c => c.end - c.start + 1)")
        n_frames = math.prod(sizes) if sizes else 1
        assert len(data["frames"]) == n_frames
        for k in range(min(n_frames, 60)):
            index, r = [], k
            for size in reversed(sizes):
                index.append(r % size)
                r //= size
            st = browser.js(f"{fig}.set({{index: {json.dumps(index[::-1])}}})")
            assert st["frame"] == k
            for i, label in enumerate(data["series"]):
                for axis in ("x", "y"):
                    frames = data[label][axis]  # one array when it is the same in every frame
                    want = frames[0] if len(frames) == 1 else frames[k]
                    assert st["series"][f"s{i}"][axis] == want, (
                        f"{name}: series {label!r} {axis}, frame {k}"
                    )
            for key, values in data.items():
                if key.startswith("readout:"):
                    assert st["readouts"][key.removeprefix("readout:")] == values[k], (
                        f"{name}: {key}, frame {k}"
                    )


def test_ported_figures_start_at_igbook_numbers(server: Any, browser: Any) -> None:
    from igbook.geometry import fisher_rao_gaussian
    from igbook.widgets.mixture import mixture_state

    pages = {p.rsplit("/", 1)[-1]: p for p in NOTEBOOK_PAGES}
    browser.goto(server.base + pages["fisher_metric.html"])
    _wait_live(browser, 1)
    st = browser.js("igbookLive.get('fisher-metric').state()")
    assert math.isclose(
        st["fisherRao"], float(fisher_rao_gaussian(*st["P"], *st["Q"])), rel_tol=1e-9
    )
    browser.goto(server.base + pages["gaussian_mixture.html"])
    _wait_live(browser, 1)
    st = browser.js("igbookLive.get('mixture').state()")
    ref = mixture_state(mu1=st["mu1"], mu2=st["mu2"], sigma=st["sigma"], grid_n=st["gridN"])
    assert math.isclose(st["condition"], ref.handle_condition, rel_tol=1e-9)
    assert all(
        math.isclose(a, b, rel_tol=1e-9) for a, b in zip(st["eigenvalues"], ref.handle_eigenvalues)
    )
