"""Live figures (igbook.live): the browser ports equal igbook, and the figures respond.

The ported formulas of ``igbook/live/static/igbook_live.js`` are evaluated in headless
Chromium (float64, as in any browser) at seeded random states and compared with igbook's own
functions to 1e-9 relative. The standalone figures are opened in the browser and moved through
their controls and drag handles: they must redraw, register their state, show no NaN and log
no error. Without Chromium these tests skip locally and fail in CI (as tests/test_site.py).
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from igbook import mixtures as mx
from igbook.families import Gaussian
from igbook.geometry import ellipse_points, fisher_rao_gaussian, gaussian_geodesic
from igbook.live import (
    Control,
    LiveFigure,
    Readout,
    Series,
    frames_figure,
    gaussian_half_plane,
    live_js,
    mixture_explorer,
)
from igbook.live._core import BOKEH_MARK_END, BOKEH_MARK_START

RTOL = 1e-9


def T(a: Any) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float64)


N_STATES = 24


# --------------------------------------------------------------------------------------------
# Python side
# --------------------------------------------------------------------------------------------


def test_live_figure_html_carries_bokeh_between_markers() -> None:
    fig = gaussian_half_plane()
    html = fig.html()
    assert html.count(BOKEH_MARK_START) == 1 and html.count(BOKEH_MARK_END) == 1
    assert 'data-igbook-live="fisher-metric"' in html and 'data-mechanism="ported"' in html
    site = fig.html(inline_bokeh=False)
    assert (
        "https://" not in site and "http://" not in site
    )  # no asset from a CDN (BokehJS's own code aside)
    assert BOKEH_MARK_START not in site and len(site) < len(html) / 10
    bundle = fig._repr_mimebundle_()
    assert set(bundle) == {"text/html", "text/plain"}


def test_bad_input_names_the_argument() -> None:
    with pytest.raises(ValueError, match=r"\bP\b"):
        gaussian_half_plane(P=(0.0, -1.0))
    with pytest.raises(ValueError, match=r"\beps\b"):
        gaussian_half_plane(eps=2.0)
    with pytest.raises(ValueError, match=r"\bmu1\b"):
        mixture_explorer(mu1=9.0)
    with pytest.raises(ValueError, match=r"\bmechanism\b"):
        LiveFigure(None, "x", "guessed")
    with pytest.raises(ValueError, match=r"\binitial\b"):
        Control("lr", [0.1, 0.2], initial=5)
    with pytest.raises(ValueError, match=r"\bvalues\b"):
        Control("lr", [])
    x = np.arange(3.0)
    with pytest.raises(ValueError, match="frame"):
        frames_figure(
            [Control("lr", [0.1, 0.2])],
            [Series("s", x=x, y=[x])],
            title="t",
            x_label="x",
            y_label="y",
            name="n",
        )
    with pytest.raises(ValueError, match="NaN"):
        frames_figure(
            [Control("lr", [0.1])],
            [Series("s", x=x, y=[x * np.nan])],
            title="t",
            x_label="x",
            y_label="y",
            name="n",
        )
    with pytest.raises(ValueError, match="one per frame"):
        frames_figure(
            [Control("lr", [0.1, 0.2])],
            [Series("s", x=x, y=[x, x])],
            readouts=[Readout("r", [1.0])],
            title="t",
            x_label="x",
            y_label="y",
            name="n",
        )


def test_frames_store_float32_values_igbook_wrote() -> None:
    x = np.linspace(0, 1, 7)
    ys = [np.exp(-k * x) for k in (1.0, 2.0)]
    fig = frames_figure(
        [Control("k", [1.0, 2.0])],
        [Series("curve", x=x, y=ys)],
        readouts=[Readout("end", [y[-1] for y in ys])],
        title="t",
        x_label="x",
        y_label="y",
        name="demo",
    )
    assert fig.mechanism == "precomputed"
    np.testing.assert_array_equal(fig.data["curve"]["y"][1], ys[1].astype(np.float32))
    assert len(fig.data["curve"]["x"]) == 1  # the shared x is stored once
    with pytest.raises(ValueError, match=r"\blabels\b"):
        Control("k", [1.0, 2.0], labels=["one"])
    assert Control("N", [0.0, 0.5], labels=["∞", "2"]).labels == ["∞", "2"]
    assert fig.data["readout:end"] == [float(np.float32(y[-1])) for y in ys]
    assert fig.data["series"] == ["curve"]
    assert 'data-igbook-live-data="demo"' in fig.html(inline_bokeh=False)
    assert fig.data["frames"] == [[1.0], [2.0]]


# --------------------------------------------------------------------------------------------
# the browser
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():  # type: ignore[no-untyped-def]
    from test_site import chromium_session

    yield from chromium_session("the live figures are not tested in a browser", "igbook-live-")


@pytest.fixture(scope="module")
def pages():  # type: ignore[no-untyped-def]
    from test_site import Server

    root = Path(tempfile.mkdtemp(prefix="igbook-live-pages-"))
    (root / "lib.html").write_text(
        f"<!DOCTYPE html><html><body><script>{live_js()}</script></body></html>"
    )
    gaussian_half_plane().save(root / "gaussian.html")
    mixture_explorer(grid_n=25).save(root / "mixture.html")
    x = np.linspace(0, 5, 30)
    ys = [np.exp(-a * x) * (1 + d) for a in (0.5, 1.0, 2.0) for d in (0.0, 0.5)]
    frames_figure(
        [Control("rate", [0.5, 1.0, 2.0]), Control("offset", [0.0, 0.5])],
        [Series("curve", x=x, y=ys)],
        readouts=[Readout("end value", [float(y[-1]) for y in ys], key="end")],
        title="demo",
        x_label="x",
        y_label="y",
        name="frames-demo",
    ).save(root / "frames.html")
    srv = Server(root)
    yield srv
    srv.close()
    shutil.rmtree(root, ignore_errors=True)


def _open(browser: Any, pages: Any, name: str) -> None:
    start = browser.goto(pages.base + name)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if browser.js(
            "!!(window.igbookLive && (igbookLive.figures.length > 0 || location.pathname.endsWith('lib.html')))"
        ):
            break
        time.sleep(0.1)
    errors = [
        e
        for e in browser.events[start:]
        if e["method"] == "Runtime.exceptionThrown"
        or (e["method"] == "Runtime.consoleAPICalled" and e["params"]["type"] == "error")
    ]
    assert not errors, json.dumps(errors)[:2000]


def _call(browser: Any, expr: str) -> Any:
    return browser.js(
        f"JSON.stringify((() => {{ const L = window.igbookLive; return {expr}; }})())"
    )


def _js(browser: Any, expr: str) -> Any:
    return json.loads(_call(browser, expr))


def _states(seed: int, n: int = N_STATES) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_gaussian_port_equals_igbook(browser: Any, pages: Any) -> None:
    _open(browser, pages, "lib.html")
    rng = _states(0)
    for _ in range(N_STATES):
        m1, m2 = rng.uniform(-3, 3, 2)
        s1, s2 = rng.uniform(0.1, 3, 2)
        eps = float(rng.uniform(0.01, 0.5))
        fr, kl, ell, geo, circ, ball = _js(
            browser,
            f"[L.gaussian.fisherRao({m1},{s1},{m2},{s2}), L.gaussian.kl({m1},{s1},{m2},{s2}),"
            f" L.gaussian.ellipse({m1},{s1},{eps},50), L.gaussian.geodesic({m1},{s1},{m2},{s2},41),"
            f" L.gaussian.fisherRaoCircle({m1},{s1},{math.sqrt(2 * eps)},40), L.gaussian.klBall({m1},{s1},{eps},40)]",
        )
        assert math.isclose(fr, float(fisher_rao_gaussian(m1, s1, m2, s2)), rel_tol=RTOL)
        assert math.isclose(kl, float(Gaussian(m1, s1).kl(Gaussian(m2, s2))), rel_tol=RTOL)
        # the ellipse: igbook's ellipse_points with 1/2 d^T F d = eps, as a set of points
        f = Gaussian(m1, s1).fisher()
        pts = T([ell["x"], ell["y"]]).T - T([m1, s1])
        torch.testing.assert_close(
            0.5 * torch.einsum("ni,ij,nj->n", pts, f, pts),
            torch.full((50,), eps, dtype=torch.float64),
            rtol=RTOL,
            atol=0,
        )
        ref = ellipse_points(T([m1, s1]), f, eps=2 * eps, num=400)
        assert math.isclose(
            float(pts[:, 0].abs().max()), float((ref[:, 0] - m1).abs().max()), rel_tol=1e-3
        )
        # the geodesic: igbook's points, spaced uniformly in arc length
        torch.testing.assert_close(
            T([geo["x"], geo["y"]]).T,
            gaussian_geodesic(m1, s1, m2, s2, num=41),
            rtol=RTOL,
            atol=RTOL * max(1.0, abs(m1), abs(m2)),
        )
        # the Fisher-Rao ball: every point at igbook's distance sqrt(2 eps) from the centre
        d = fisher_rao_gaussian(m1, s1, T(circ["x"]), T(circ["y"]))
        torch.testing.assert_close(
            d, torch.full((40,), math.sqrt(2 * eps), dtype=torch.float64), rtol=RTOL, atol=0
        )
        # the KL ball: every point at KL = eps from the centre (igbook's Gaussian KL)
        kls = torch.stack(
            [Gaussian(m1, s1).kl(Gaussian(x, y)) for x, y in zip(ball["x"], ball["y"])]
        )
        torch.testing.assert_close(
            kls, torch.full((40,), eps, dtype=torch.float64), rtol=1e-9, atol=0
        )


def test_mixture_port_equals_igbook(browser: Any, pages: Any) -> None:
    _open(browser, pages, "lib.html")
    rng = _states(1)
    for k in range(N_STATES):
        m1, m2 = rng.uniform(-3, 3, 2)
        if k == 0:
            m2 = m1  # the singular line
        s = float(rng.uniform(0.3, 2.0))
        t1, t2 = rng.uniform(-3, 3, 2)
        p1, p2 = rng.uniform(-3, 3, 2)
        out = _js(
            browser,
            f"(() => {{ const F = L.mixture.fisher({m1},{m2},{s}); return {{F: F, e: L.mixture.eigen(F),"
            f" k: L.mixture.condition(F), pr: L.mixture.probe([{t1},{t2}],{s},[{p1},{p2}],0),"
            f" el: L.mixture.ellipse(0, 0, F[0][0], F[0][1], F[1][1], 0.05, 16, 0.4)}} }})()",
        )
        theta = T([m1, m2])
        F = mx.fisher(theta, s)
        torch.testing.assert_close(T(out["F"]), F, rtol=RTOL, atol=RTOL * float(F.abs().max()))
        ev, _ = mx.fisher_eigen(F)
        lam_max = float(ev[1])
        torch.testing.assert_close(T(out["e"]["values"]), ev, rtol=RTOL, atol=1e-12 * lam_max)
        kappa = float(mx.condition_number(F))
        if (
            math.isinf(kappa) or float(ev[0]) < 1e-6 * lam_max
        ):  # near the singular line kappa has few digits
            assert out["k"] is None or out["k"] > 1e5  # JSON writes Infinity as null
        else:
            assert math.isclose(out["k"], kappa, rel_tol=1e-7)
        _, clipped = mx.ellipse_outlines(torch.zeros(2), F, 0.05, num=16, max_semi_axis=0.4)
        assert out["el"]["clipped"] == bool(clipped)
        loss = mx.KLToTarget(T([t1, t2]), s)
        p = T([p1, p2])
        pr = out["pr"]
        value = float(loss.value(p))
        assert math.isclose(pr["loss"], value, rel_tol=1e-8, abs_tol=1e-13)
        torch.testing.assert_close(T(pr["gradient"]), loss.gradient(p), rtol=1e-8, atol=1e-13)
        try:
            g, ng = mx.natural_gradient_field(p, loss)
        except ValueError:
            assert pr["singular"]
            continue
        torch.testing.assert_close(T(pr["natural"]), ng, rtol=1e-7, atol=1e-12)
        assert math.isclose(
            pr["angle"], float(mx.gradient_angle(g, ng)), rel_tol=1e-6, abs_tol=1e-9
        )


def test_mixture_flows_equal_igbook(browser: Any, pages: Any) -> None:
    _open(browser, pages, "lib.html")
    from igbook.widgets.mixture import flow_seeds

    seeds = flow_seeds(-3.0, 3.0)
    target, s, steps, dt = [-1.2, 0.8], 0.9, 20, 0.15
    lam_far = 0.5 / s**2
    out = _js(
        browser,
        f"L.mixture.flowPair({json.dumps(seeds.tolist())}, {target}, {s}, {steps}, {dt}, {dt * 2 * s * s},"
        f" {1e-3 * lam_far}, {0.5 * 6 / 14})",
    )
    nat, euc = mx.flow_pair(
        seeds,
        mx.KLToTarget(T(target), s),
        steps=steps,
        dt_natural=dt,
        dt_euclidean=dt * 2 * s * s,
        damping=1e-3 * lam_far,
        max_step=0.5 * 6 / 14,
    )
    torch.testing.assert_close(T(out["natural"]), nat, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(T(out["euclidean"]), euc, rtol=1e-8, atol=1e-10)


def _frame(browser: Any) -> dict[str, Any]:
    """Where the first plot's frame is on the page (CSS pixels) and its data ranges."""
    return _js(
        browser,
        """(() => { function* walk(v){ yield v; for (const c of (v.child_views||[])) yield* walk(c); }
      const out = [];
      for (const root of [...Bokeh.index]) for (const v of walk(root)) if (v.frame) {
        const r = v.el.getBoundingClientRect(), f = v.frame.bbox, m = v.model;
        out.push({left: r.left + f.left, top: r.top + f.top, w: f.width, h: f.height,
                  title: m.title ? m.title.text : "",
                  x0: m.x_range.start, x1: m.x_range.end, y0: m.y_range.start, y1: m.y_range.end}); }
      return out; })()""",
    )


def drag(
    browser: Any,
    frame: dict[str, Any],
    start: tuple[float, float],
    end: tuple[float, float],
    steps: int = 8,
    settle: Any = None,
) -> list[float]:
    """Drag with the mouse from data point ``start`` to ``end`` inside ``frame``.

    With ``settle`` (a function that returns once the page has painted), returns the time of
    each move from the event to the painted frame, in milliseconds.
    """

    def px(x: float, y: float) -> tuple[float, float]:
        return (
            frame["left"] + (x - frame["x0"]) / (frame["x1"] - frame["x0"]) * frame["w"],
            frame["top"] + (frame["y1"] - y) / (frame["y1"] - frame["y0"]) * frame["h"],
        )

    def mouse(kind: str, x: float, y: float, buttons: int) -> None:
        browser.send(
            "Input.dispatchMouseEvent",
            type=kind,
            x=x,
            y=y,
            button="left" if buttons or kind != "mouseMoved" else "none",
            buttons=buttons,
            clickCount=1,
        )

    times = []
    x, y = px(*start)
    mouse("mouseMoved", x, y, 0)
    mouse("mousePressed", x, y, 1)
    for i in range(1, steps + 1):
        t = i / steps
        x, y = px(start[0] + t * (end[0] - start[0]), start[1] + t * (end[1] - start[1]))
        t0 = time.perf_counter()
        mouse("mouseMoved", x, y, 1)
        if settle is not None:
            settle()
            times.append(1e3 * (time.perf_counter() - t0))
        else:
            time.sleep(0.02)
    mouse("mouseReleased", x, y, 0)
    time.sleep(0.2)
    return times


def _no_nan(browser: Any) -> None:
    text = browser.js(
        "Bokeh.documents.map(d => [...d.all_models].filter(m => m.type === 'Div').map(m => m.text).join(' '))"
        ".join(' ') + document.body.innerText"
    )
    assert "NaN" not in text and "Infinity" not in text


def test_gaussian_figure_moves(browser: Any, pages: Any) -> None:
    _open(browser, pages, "gaussian.html")
    fig = "L.get('fisher-metric')"
    before = _js(browser, f"{fig}.state()")
    plane = next(f for f in _frame(browser) if "half-plane" in f["title"])
    drag(browser, plane, tuple(before["Q"]), (-1.0, 2.0))
    after = _js(browser, f"{fig}.state()")
    assert (
        after["Q"] != before["Q"]
        and abs(after["Q"][0] + 1.0) < 0.1
        and abs(after["Q"][1] - 2.0) < 0.1
    )
    assert math.isclose(
        after["fisherRao"], float(fisher_rao_gaussian(*after["P"], *after["Q"])), rel_tol=RTOL
    )
    # P at the lower bound of sigma and P = Q: defined values, no NaN
    st = _js(browser, f"{fig}.set({{P: [0, 0.1], Q: [0, 0.1], eps: 0.5}})")
    assert st["fisherRao"] == 0 and st["euclidean"] == 0
    st = _js(browser, f"{fig}.set({{P: [0, -5]}})")  # clamped into the drawn half-plane
    assert st["P"][1] == 0.1
    _no_nan(browser)
    shown = browser.js("document.querySelector('[data-igbook-live]') !== null")
    assert shown


def test_mixture_figure_moves(browser: Any, pages: Any) -> None:
    _open(browser, pages, "mixture.html")
    fig = "L.get('mixture')"
    frames = {f["title"].split(":")[0]: f for f in _frame(browser)}
    s0 = _js(browser, f"{fig}.state()")
    drag(browser, frames["data space"], (s0["mu1"], 0.0), (-2.5, 0.0))
    s1 = _js(browser, f"{fig}.state()")
    assert abs(s1["mu1"] + 2.5) < 0.1 and s1["mu2"] == s0["mu2"]
    drag(browser, frames["parameter plane"], (s1["mu1"], s1["mu2"]), (0.5, -1.0))
    s2 = _js(browser, f"{fig}.state()")
    assert abs(s2["mu1"] - 0.5) < 0.15 and abs(s2["mu2"] + 1.0) < 0.15
    theta = T([s2["mu1"], s2["mu2"]])
    torch.testing.assert_close(
        T(s2["eigenvalues"]),
        mx.fisher_eigen(mx.fisher(theta, s2["sigma"]))[0],
        rtol=RTOL,
        atol=1e-14,
    )
    # every slider and the flow switch changes what is drawn
    for change in (
        {"sigma": 0.5},
        {"gridN": 9},
        {"scale": 1.5},
        {"flow": True},
        {"probe": [2.0, -2.5]},
    ):
        key = "field" if "gridN" in change or "scale" in change else "other"
        before = _call(
            browser,
            "[...Bokeh.documents[0].all_models].filter(m => m.type === 'ColumnDataSource')"
            ".map(m => JSON.stringify(m.data).length).join(',')",
        )
        _js(browser, f"{fig}.set({json.dumps(change)})")
        deadline = time.monotonic() + 10
        while (
            not _js(browser, f"{fig}.flowsCurrent()") and time.monotonic() < deadline
        ):  # flows come from a worker
            time.sleep(0.02)
        after = _call(
            browser,
            "[...Bokeh.documents[0].all_models].filter(m => m.type === 'ColumnDataSource')"
            ".map(m => JSON.stringify(m.data).length).join(',')",
        )
        assert before != after, f"{change} ({key}) changed nothing"
    # the singular line: kappa is infinity, shown as a symbol, never NaN
    st = _js(browser, f"{fig}.set({{mu1: 1.0, mu2: 1.0, probe: [1.0, 1.0], flow: false}})")
    assert st["condition"] is None  # Infinity
    assert browser.js(
        "[...Bokeh.documents[0].all_models].some(m => m.type === 'Div' && m.text.includes('\u221e'))"
    )
    _no_nan(browser)


def test_frames_figure_shows_what_igbook_wrote(browser: Any, pages: Any) -> None:
    _open(browser, pages, "frames.html")
    fig = "L.get('frames-demo')"
    x = np.linspace(0, 5, 30)
    for i, a in enumerate((0.5, 1.0, 2.0)):
        for j, d in enumerate((0.0, 0.5)):
            st = _js(browser, f"{fig}.set({{index: [{i}, {j}]}})")
            y = (np.exp(-a * x) * (1 + d)).astype(np.float32)
            np.testing.assert_array_equal(np.asarray(st["series"]["s0"]["y"], dtype=np.float32), y)
            assert st["readouts"]["end"] == float(y[-1])
            assert st["controls"] == [a, d]
    _no_nan(browser)
