"""Benchmark: the two strategies of the diagonal Fisher on the continual-learning MLP.

``igbook.fisher.fisher_diagonal`` computes :math:`\\operatorname{diag}F` either from per-example
Jacobian rows vectorized with ``torch.func.vmap`` (``strategy="vmap"``) or, for networks of
``nn.Linear`` layers, from the closed form of per-example gradients of a linear layer, one
batched backward pass per output direction (``strategy="linear"``, :mod:`igbook.fisher.diagonal`).
``strategy="auto"`` (the default) picks the linear one when it applies; this benchmark checks
that it is the faster one where it applies.

Set-up: the network of the continual-learning chapter (64-100-10, ReLU), at its
initialization and the categorical likelihood, on the training set of one permuted-digits
task (1,347 examples, what EWC uses at the end of a task), in float32 (the protocol of
``bench_continual.py``) and float64 (the chapter's checks); exact, Monte Carlo (one label per
example) and empirical Fisher. Timings are medians over repeats, the strategies measured
alternately, with a fixed number of threads (``--threads``, default 1). The two strategies'
results are compared in the same run (largest relative difference). Prints a table and writes
``benchmarks/results/diagonal_fisher.json``.

Run: ``.venv/bin/python benchmarks/bench_diagonal_fisher.py`` (under a minute).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from igbook.continual import permuted_digits
from igbook.experiments.models import mlp
from igbook.fisher import CategoricalLikelihood, fisher_diagonal

RESULTS = Path(__file__).resolve().parent / "results" / "diagonal_fisher.json"
STRATEGIES = ("linear", "vmap")
TYPES = ("exact", "mc", "empirical")


def one(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, ftype: str, strategy: str
) -> tuple[float, torch.Tensor]:
    t0 = time.perf_counter()
    out = fisher_diagonal(
        model, None, x, y, CategoricalLikelihood(), ftype, seed=0, strategy=strategy
    )
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows: list[dict[str, Any]] = []
    for dtype in (torch.float32, torch.float64):
        task = permuted_digits(1, seed=0, dtype=dtype)[0]
        x, y = task.x_train, task.y_train
        model = mlp((64, 100, 10), activation="relu", seed=0, dtype=dtype)
        for ftype in TYPES:
            times: dict[str, list[float]] = {s: [] for s in STRATEGIES}
            outs: dict[str, torch.Tensor] = {}
            for s in STRATEGIES:  # warm-up
                one(model, x, y, ftype, s)
            for _ in range(args.repeats):
                for s in STRATEGIES:
                    dt, outs[s] = one(model, x, y, ftype, s)
                    times[s].append(dt)
            med = {s: statistics.median(v) for s, v in times.items()}
            diff = float((outs["linear"] - outs["vmap"]).abs().max() / outs["vmap"].abs().max())
            rows.append(
                {
                    "dtype": str(dtype).replace("torch.", ""),
                    "fisher_type": ftype,
                    "linear_s": round(med["linear"], 5),
                    "vmap_s": round(med["vmap"], 5),
                    "speedup": round(med["vmap"] / med["linear"], 2),
                    "max_rel_diff": diff,
                }
            )
    cols = ("dtype", "fisher_type", "linear (s)", "vmap (s)", "speed-up", "max rel. diff")
    widths = (8, 11, 11, 10, 9, 14)
    n, th, rep = int(x.shape[0]), args.threads, args.repeats
    print(f"diagonal Fisher, MLP 64-100-10 (ReLU), N = {n}, {th} thread(s), median of {rep}")
    print(
        " ".join(
            f"{c:>{w}s}" if i > 1 else f"{c:{w}s}"
            for i, (c, w) in enumerate(zip(cols, widths, strict=True))
        )
    )
    for r in rows:
        cells = (
            f"{r['dtype']:8s}",
            f"{r['fisher_type']:11s}",
            f"{r['linear_s']:11.4f}",
            f"{r['vmap_s']:10.4f}",
            f"{r['speedup']:8.1f}x",
            f"{r['max_rel_diff']:14.2e}",
        )
        print(" ".join(cells))
    faster = all(r["speedup"] > 1 for r in rows)
    print(f"linear strategy faster in every case: {faster} (so strategy='auto' defaults to it)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "diagonal Fisher: linear-layer closed form vs torch.func.vmap "
                "(igbook.fisher.fisher_diagonal)",
                "settings": {
                    "model": "mlp((64, 100, 10), activation='relu', seed=0)",
                    "likelihood": "categorical",
                    "data": "permuted_digits(1, seed=0)[0].x_train",
                    "num_examples": int(x.shape[0]),
                    "threads": args.threads,
                    "repeats": args.repeats,
                    "mc_samples": 1,
                    "chunk_size": None,
                },
                "machine": {
                    "python": platform.python_version(),
                    "torch": torch.__version__,
                    "processor": platform.processor() or platform.machine(),
                },
                "rows": rows,
                "linear_faster_everywhere": faster,
            },
            indent=1,
        )
        + "\n"
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
