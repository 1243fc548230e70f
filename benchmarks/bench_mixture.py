"""Speed of the Gaussian-mixture manifold and of its explorer.

Run:  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_mixture.py [--repeats 30]

Targets (issue 3): the Fisher field on a 25 x 25 grid in at most 10 ms, and one full update of
the explorer (compute and redraw) in at most 100 ms, so that dragging feels live.

Measured, in one process, side by side (medians and 90th percentiles over ``--repeats`` runs,
after warm-up), float64, one torch thread unless stated:

- ``fisher_field_score``: :func:`igbook.mixtures.fisher` on a 25 x 25 grid, score form (the one
  the explorer uses; 173 trapezoid nodes per component);
- ``fisher_field_hessian``: the same, expected-negative-Hessian form (general node layout);
- ``state``: :func:`igbook.widgets.mixture.mixture_state` for a 25 x 25 grid (Fisher field,
  ellipses, handle spectrum, probe gradients, density) with flows off;
- ``drag_update_blit``: one handle drag as the ipympl explorer does it: new state, artists
  updated in place, background restored and the dynamic artists blitted (Agg canvas);
- ``drag_update_png``: the same as the slider-driven explorer without ipympl does it, including
  encoding the PNG that the image widget shows;
- ``sigma_update``: a move of the sigma slider (PNG mode): new state, the Fisher-ellipse field
  redrawn over the cached axes, then the dynamic artists (the data panel's height changes only
  when the density's peak leaves it or fills less than 60% of it; then everything is drawn);
- ``state_with_flows`` / ``drag_update_blit_flows``: the same with the Flow button on (36
  particles integrated along both fields for 60 Euler steps, :func:`igbook.mixtures.flow_pair`);
- ``full_redraw``: drawing the whole figure (axes, ticks, legends, field, dynamic artists), what
  a change of the plane's extent or of the data panel's height costs, without the PNG.

Writes benchmarks/results/mixture.json (machine, settings, numbers, targets) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import torch

from igbook import mixtures as mx
from igbook.widgets.mixture import MixtureControls, MixtureExplorer, mixture_state

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "mixture.json"
TARGETS_MS = {
    "fisher_field_score": 10.0,
    "drag_update_blit": 100.0,
    "drag_update_png": 100.0,
    "sigma_update": 100.0,
}


def timed(fn, repeats: int, warmup: int = 3) -> dict[str, float]:  # type: ignore[no-untyped-def]
    for _ in range(warmup):
        fn(0)
    wall, cpu = [], []
    for i in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn(i)
        wall.append(1e3 * (time.perf_counter() - t0))
        cpu.append(1e3 * (time.process_time() - c0))
    wall.sort()
    return {
        "median_ms": statistics.median(wall),
        "p90_ms": wall[min(len(wall) - 1, int(0.9 * len(wall)))],
        "median_cpu_ms": statistics.median(cpu),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()
    torch.set_num_threads(1)

    grid = mx.parameter_grid(-3, 3, 25)
    results: dict[str, dict[str, float]] = {}
    results["fisher_field_score"] = timed(lambda i: mx.fisher(grid, 1.0 + 0.001 * i), args.repeats)
    results["fisher_field_hessian"] = timed(
        lambda i: mx.fisher(grid, 1.0 + 0.001 * i, form="hessian"), args.repeats
    )
    torch.set_num_threads(2)
    results["fisher_field_score_2threads"] = timed(
        lambda i: mx.fisher(grid, 1.0 + 0.001 * i), args.repeats
    )
    torch.set_num_threads(1)

    base = MixtureControls(grid_n=25)
    results["state"] = timed(
        lambda i: mixture_state(base, mu1=-1.5 + 0.01 * (i % 50)), args.repeats
    )

    ex_blit = MixtureExplorer(
        base, interactive=True
    )  # Agg canvas: the ipympl code path without a browser
    results["drag_update_blit"] = timed(
        lambda i: ex_blit.set(mu1=-1.5 + 0.01 * (i % 50)), args.repeats
    )
    ex_png = MixtureExplorer(base, interactive=False)
    results["drag_update_png"] = timed(
        lambda i: ex_png.set(mu1=-1.5 + 0.01 * (i % 50)), args.repeats
    )
    results["sigma_update"] = timed(lambda i: ex_png.set(sigma=0.8 + 0.01 * (i % 40)), args.repeats)
    # flow mode: 36 particles along both fields, 60 Euler steps, recomputed on every move
    results["state_with_flows"] = timed(
        lambda i: mixture_state(base, mu1=-1.5 + 0.01 * (i % 50), flow=True), args.repeats
    )
    ex_blit.set(flow=True)
    results["drag_update_blit_flows"] = timed(
        lambda i: ex_blit.set(mu1=-1.5 + 0.01 * (i % 50)), args.repeats
    )
    results["full_redraw"] = timed(
        lambda i: ex_png.figure.fig.canvas.draw(), max(5, args.repeats // 3)
    )

    out = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "matplotlib": matplotlib.__version__,
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        },
        "settings": {
            "grid": "25 x 25 on [-3, 3]^2, sigma = 1",
            "quadrature": f"trapezoid, {len(mx.trapezoid_rule())} nodes per component",
            "explorer": "MixtureControls(grid_n=25), figure 13 x 4.4 in at 80 dpi (PNG mode)",
            "repeats": args.repeats,
            "threads": "1 unless the name says otherwise",
            "dtype": "float64",
        },
        "results_ms": results,
        "targets_ms": TARGETS_MS,
        "meets_targets": {k: results[k]["median_ms"] <= v for k, v in TARGETS_MS.items()},
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=2))

    print(f"{'measurement':<28} {'median ms':>10} {'p90 ms':>9} {'cpu ms':>9} {'target':>8}")
    for k, r in results.items():
        tgt = TARGETS_MS.get(k)
        mark = (
            "" if tgt is None else f"<= {tgt:g}" + (" ok" if r["median_ms"] <= tgt else " MISSED")
        )
        print(
            f"{k:<28} {r['median_ms']:>10.2f} {r['p90_ms']:>9.2f} {r['median_cpu_ms']:>9.2f} {mark:>8}"
        )
    print(f"load average during the run: {out['machine']['load_average']}")
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
