"""Frame time and page weight of the live figures (igbook.live), in headless Chromium.

Run:  .venv/bin/python benchmarks/bench_live.py [--repeats 60] [--site _build/html]

Targets (issue 12): the mixture explorer at 25 x 25 while dragging at most 16 ms per frame,
every other live figure at most 33 ms per update; no chapter page above 5 MB with its live data.

A *frame* is measured in the page, side by side in one browser: the state change a drag or a
slider causes (the controller's JavaScript: quadratures, ellipses, data sources) and then a
synchronous paint of every plot of the figure (Bokeh's ``_actual_paint``), i.e. what must
happen between two mouse events. Medians and 90th percentiles over ``--repeats`` frames after
warm-up. Page weight: a chapter page's HTML plus every local script, stylesheet and image it
loads (MathJax's on-demand parts excluded), read from a built site when ``--site`` exists.

Writes benchmarks/results/live.json and prints a table. Needs Debian's ``chromium``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "live.json"
sys.path.insert(0, str(ROOT / "tests"))

TARGETS_MS = {
    "mixture_drag_25x25": 16.0,
    "mixture_drag_25x25_flows": 33.0,
    "mixture_sigma_25x25": 33.0,
    "gaussian_drag": 33.0,
    "frames_slider": 33.0,
}

FRAME_JS = r"""(async () => {
  const fig = igbookLive.get(%(name)s), n = %(n)d, out = [];
  function* walk(v){ yield v; for (const c of (v.child_views||[])) yield* walk(c); }
  const views = [];
  for (const root of [...Bokeh.index]) for (const v of walk(root)) if (v.frame) views.push(v);
  const step = %(step)s;
  for (let i = 0; i < n + 5; i++) {
    const t0 = performance.now();
    step(fig, i);
    for (const v of views) (v._actual_paint || v.paint).call(v);
    const dt = performance.now() - t0;
    if (i >= 5) out.push(dt);
    await new Promise((r) => setTimeout(r, 0));
  }
  return out;
})()"""


LATENCY_JS = r"""(async () => {
  const fig = igbookLive.get("mixture"), out = [];
  for (let i = 0; i < %(n)d + 3; i++) {
    const t0 = performance.now();
    fig.set({mu1: -2 + 0.03 * i, mu2: 1.5});
    while (!fig.flowsCurrent()) await new Promise((r) => setTimeout(r, 1));
    if (i >= 3) out.push(performance.now() - t0);
  }
  return out;
})()"""


def stats(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    return {
        "median_ms": statistics.median(xs),
        "p90_ms": xs[int(0.9 * (len(xs) - 1))],
        "max_ms": xs[-1],
        "n": len(xs),
    }


def _transfer(data: bytes, suffix: str) -> int:
    """Bytes on the wire from a static host that compresses text (images go as they are)."""
    return len(data) if suffix in (".png", ".woff", ".woff2") else len(gzip.compress(data, 6))


def page_weight(site: Path, page: Path) -> dict[str, float]:
    html = page.read_bytes()
    text = html.decode(errors="replace")
    total, wire = len(html), _transfer(html, ".html")
    live = sum(len(m) for m in re.findall(r'<div class="igbook-live".*?</noscript>', text, re.S))
    for ref in set(re.findall(r'(?:src|href)="([^"#?]+\.(?:js|css|png|svg|woff2?))', text)):
        if ref.startswith(("http:", "https:", "data:")):
            continue
        f = (page.parent / ref).resolve()
        if f.is_file() and site in f.parents:
            data = f.read_bytes()
            total += len(data)
            wire += _transfer(data, f.suffix)
            if "/bokeh/" in ref:
                live += len(data)
    return {
        "total_mb": total / 1e6,
        "transfer_mb": wire / 1e6,
        "html_mb": len(html) / 1e6,
        "live_share_mb": live / 1e6,
        "live_figures": text.count('data-igbook-live="'),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=60)
    ap.add_argument("--site", default=str(ROOT / "_build" / "html"))
    args = ap.parse_args()

    from igbook.live import (
        Control,
        Series,
        bokeh_js_files,
        frames_figure,
        gaussian_half_plane,
        mixture_explorer,
    )
    from test_site import Browser, Server, chromium_executable

    exe = chromium_executable()
    if exe is None:
        raise SystemExit("Chromium is not installed (Debian: apt-get install chromium)")
    work = Path(tempfile.mkdtemp(prefix="igbook-bench-live-"))
    mixture_explorer(grid_n=25).save(work / "mixture.html")
    mixture_explorer(grid_n=25, flow=True).save(work / "mixture_flows.html")
    gaussian_half_plane().save(work / "gaussian.html")
    x = np.linspace(0, 100, 300)
    vals = [0.01, 0.03, 0.1, 0.3]
    ys = [np.exp(-a * x) * (1 + b) for a in vals for b in vals]
    frames_figure(
        [Control("a", vals), Control("b", vals)],
        [Series(f"s{j}", x=x, y=[y * (1 + j) for y in ys]) for j in range(3)],
        title="frames",
        x_label="x",
        y_label="y",
        name="frames",
    ).save(work / "frames.html")

    srv = Server(work)
    b = Browser(exe, work / "chromium")
    results: dict[str, dict[str, float]] = {}
    cases = {
        "mixture_drag_25x25": (
            "mixture.html",
            "mixture",
            "(f, i) => f.set({mu1: -2 + 0.02 * (i % 100), mu2: 1.5})",
        ),
        "mixture_drag_25x25_flows": (
            "mixture_flows.html",
            "mixture",
            "(f, i) => f.set({mu1: -2 + 0.02 * (i % 100), mu2: 1.5})",
        ),
        "mixture_sigma_25x25": (
            "mixture.html",
            "mixture",
            "(f, i) => f.set({sigma: 0.6 + 0.01 * (i % 100)})",
        ),
        "mixture_probe_25x25": (
            "mixture.html",
            "mixture",
            "(f, i) => f.tap(-2 + 0.03 * (i % 100), 1.0)",
        ),
        "gaussian_drag": (
            "gaussian.html",
            "fisher-metric",
            "(f, i) => f.set({P: [-1 + 0.02 * (i % 100), 1.0]})",
        ),
        "frames_slider": (
            "frames.html",
            "frames",
            "(f, i) => f.set({index: [i % 4, (i >> 2) % 4]})",
        ),
    }
    try:
        for key, (page, name, step) in cases.items():
            b.goto(srv.base + page)
            deadline = time.monotonic() + 20
            while not b.js(f"!!(window.igbookLive && igbookLive.get({json.dumps(name)}))"):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{page}: the live figure did not register")
                time.sleep(0.1)
            times = b.js(
                FRAME_JS % {"name": json.dumps(name), "n": args.repeats, "step": step}, timeout=300
            )
            results[key] = stats(times)
            if key == "mixture_drag_25x25_flows":
                # the flows follow from a worker: time from a state change until they are drawn
                lat = b.js(LATENCY_JS % {"n": max(10, args.repeats // 3)}, timeout=300)
                results["mixture_flows_latency"] = stats(lat)
    finally:
        b.close()
        srv.close()

    bundles = {
        f.name: {"mb": f.stat().st_size / 1e6, "gzip_mb": len(gzip.compress(f.read_bytes())) / 1e6}
        for f in bokeh_js_files()
    }
    weights: dict[str, dict[str, float]] = {}
    site = Path(args.site).resolve()
    if (site / "index.html").exists():
        for page in sorted((site / "book").glob("*.html")):
            if (ROOT / "book" / page.with_suffix(".ipynb").name).exists():
                weights[page.stem] = page_weight(site, page)
    out = {
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "python": sys.version.split()[0],
            "browser": "Debian chromium, headless",
            "load_average": os.getloadavg(),
        },
        "settings": {
            "repeats": args.repeats,
            "frame": "controller update + synchronous paint of every plot",
            "mixture": "grid 25 x 25, trapezoid quadrature (173 nodes), 36 flow particles x 60 steps",
        },
        "results_ms": results,
        "targets_ms": TARGETS_MS,
        "meets_targets": {
            k: results[k]["median_ms"] <= v for k, v in TARGETS_MS.items() if k in results
        },
        "bokehjs_bundles": bundles,
        "page_weight": weights,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=2))
    print(f"{'frame':<28} {'median ms':>10} {'p90 ms':>9} {'target':>10}")
    for k, r in results.items():
        t = TARGETS_MS.get(k)
        mark = "" if t is None else f"<= {t:g}" + (" ok" if r["median_ms"] <= t else " MISSED")
        print(f"{k:<28} {r['median_ms']:>10.2f} {r['p90_ms']:>9.2f} {mark:>10}")
    for name, w in bundles.items():
        print(f"BokehJS {name}: {w['mb']:.2f} MB ({w['gzip_mb']:.2f} MB gzip)")
    for name, w in weights.items():
        print(
            f"page {name}: {w['total_mb']:.2f} MB with its assets ({w['transfer_mb']:.2f} MB transferred compressed),"
            f" live figures {w['live_share_mb']:.2f} MB of it (BokehJS included), {w['live_figures']} live figure(s)"
        )
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
