"""Execute every chapter notebook from a clean kernel and record how long it takes.

Writes ``benchmarks/results/chapters.json`` (read by ``book/performance.md`` and
``book/instructors.md``) and prints a table::

    python tools/time_chapters.py                     # every chapter in _toc.yml
    python tools/time_chapters.py book/kfac.ipynb     # some chapters (merged into the file)

Each notebook runs as the website build and the notebook tests run it: the ``python3``
kernel of this environment, working directory ``book/``, no cell timeout below 600 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "chapters.json"


def toc_notebooks() -> list[Path]:
    sys.path.insert(0, str(ROOT / "tools"))
    from igbook_site import _toc_files

    return [
        (ROOT / f).with_suffix(".ipynb")
        for f in _toc_files()
        if (ROOT / f).with_suffix(".ipynb").exists()
    ]


def time_notebook(path: Path, timeout: int = 600) -> dict[str, object]:
    """Execute one notebook; return its wall time, per-cell maximum and cell count."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    cells: list[float] = []
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    start = time.perf_counter()
    with client.setup_kernel():
        started = time.perf_counter()
        for i, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            t0 = time.perf_counter()
            client.execute_cell(cell, i)
            cells.append(time.perf_counter() - t0)
    total = time.perf_counter() - start
    return {
        "chapter": path.stem,
        "seconds": round(total, 2),
        "kernel_start_seconds": round(started - start, 2),
        "code_cells": len(cells),
        "slowest_cell_seconds": round(max(cells, default=0.0), 2),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "notebooks", nargs="*", type=Path, help="notebooks to time (default: every chapter)"
    )
    args = ap.parse_args(argv)
    # the kernels draw their figures inline, as for the website (ipykernel chooses the inline
    # backend only when MPLBACKEND is unset)
    os.environ.pop("MPLBACKEND", None)
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    paths = [p.resolve() for p in args.notebooks] or toc_notebooks()
    old = {}
    if args.notebooks and OUT.exists():
        old = {r["chapter"]: r for r in json.loads(OUT.read_text()).get("chapters", [])}
    rows = dict(old)
    load_start = round(os.getloadavg()[0], 2)
    print(f"{'chapter':32s} {'seconds':>8s} {'cells':>6s} {'slowest cell':>13s}")
    for p in paths:
        r = time_notebook(p)
        rows[str(r["chapter"])] = r
        print(
            f"{r['chapter']:32s} {r['seconds']:8.1f} {r['code_cells']:6d} {r['slowest_cell_seconds']:13.1f}",
            flush=True,
        )
    order = [p.stem for p in toc_notebooks()]
    ordered = sorted(
        rows.values(),
        key=lambda r: order.index(r["chapter"]) if r["chapter"] in order else len(order),
    )
    import torch

    data = {
        "title": "Chapter execution times",
        "machine": {
            "platform": platform.platform(terse=True),
            "processor": platform.machine(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset"),
            "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        },
        "settings": {
            "kernel": "python3 (this environment)",
            "working_directory": "book/",
            "repeats": 1,
            "load_average_1min_at_start": load_start,
        },
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "chapters": ordered,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
