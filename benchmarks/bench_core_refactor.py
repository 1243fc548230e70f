"""Benchmark: the curvature core before and after unifying it (issue "One curvature core").

Times the operations of ``bench_fisher.py`` and ``bench_kfac.py`` that the refactor touched,
with the current ``src/`` ("after") and a checkout of an earlier commit ("before"), side by side
in one run: every round runs each workload once in a fresh subprocess for each version, in
alternating order, and the table reports medians over rounds and the median of the per-round
ratios after/before (below 1: faster now).

Workloads (float32, 1 thread, the settings of the two benchmarks):

* ``fisher product``: one exact-Fisher product of a ``CurvatureOperator`` on the MLP
  784-256-128-10, batch 512 (``bench_fisher.py``'s main number);
* ``fisher build+product``: building that operator and one product;
* ``exact diagonal``: ``fisher_diagonal`` (exact) of the 64-32-10 digits MLP, batch 512;
* ``per-example grads``: ``per_example_gradients`` of the same MLP;
* ``kfac step``: one K-FAC step (forward, factors, backward, preconditioned step) on the digits
  autoencoder 64-256-128-64-16-64-128-256-64, batch 256, factors every step, inverses every 10
  (``bench_kfac.py``'s step cost);
* ``dense fisher``: ``network_fisher`` (exact) of the tiny autoencoder 64-8-4-8-64, batch 128.

Run: ``.venv/bin/python benchmarks/bench_core_refactor.py --before <commit>`` (needs git; a
worktree of ``<commit>`` is made under a temporary directory). Writes
``benchmarks/results/core_refactor.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "core_refactor.json"

WORKLOAD = r"""
import json, sys, time
import torch
from torch import nn
torch.set_num_threads(1)
torch.manual_seed(0)
name, reps = sys.argv[1], int(sys.argv[2])
from igbook.fisher import CategoricalLikelihood, CurvatureOperator, fisher_diagonal, per_example_gradients
from igbook.kfac import KFAC, negative_log_likelihood, network_fisher

def mlp(sizes, act=nn.ReLU):
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), act()]
    return nn.Sequential(*layers[:-1])

def timed(fn, reps):
    fn()  # warm-up
    ts = []
    for _ in range(reps):
        t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
    ts.sort()
    return 1000 * ts[len(ts) // 2]

lik = CategoricalLikelihood()
if name.startswith("fisher"):
    net = mlp((784, 256, 128, 10)); x = torch.randn(512, 784); y = torch.randint(0, 10, (512,))
    op = CurvatureOperator(net, None, x, y, lik, "exact")
    v = torch.randn(op.dim)
    if name == "fisher product":
        ms = timed(lambda: op.matvec(v), reps)
    else:
        ms = timed(lambda: CurvatureOperator(net, None, x, y, lik, "exact").matvec(v), reps)
elif name in ("exact diagonal", "per-example grads"):
    net = mlp((64, 32, 10)); x = torch.randn(512, 64); y = torch.randint(0, 10, (512,))
    if name == "exact diagonal":
        ms = timed(lambda: fisher_diagonal(net, None, x, y, lik, "exact"), reps)
    else:
        ms = timed(lambda: per_example_gradients(net, None, x, y, lik), reps)
elif name == "kfac step":
    net = mlp((64, 256, 128, 64, 16, 64, 128, 256, 64), act=nn.Tanh)
    x = torch.rand(256, 64)
    opt = KFAC(net, likelihood="bernoulli", lr=0.1, damping=0.1, factor_period=1, inverse_period=10)
    def step():
        out = net(x)
        loss = negative_log_likelihood(out, x, likelihood="bernoulli")
        opt.zero_grad(); opt.update_factors(out); loss.backward(); opt.step()
    for _ in range(10):
        step()
    ms = timed(step, reps)
else:
    net = mlp((64, 8, 4, 8, 64), act=nn.Tanh); x = torch.rand(128, 64)
    ms = timed(lambda: network_fisher(net, x, likelihood="bernoulli"), reps)
print(json.dumps({"ms": ms}))
"""

NAMES = [
    "fisher product",
    "fisher build+product",
    "exact diagonal",
    "per-example grads",
    "kfac step",
    "dense fisher",
]
REPS = {
    "fisher product": 15,
    "fisher build+product": 8,
    "exact diagonal": 10,
    "per-example grads": 10,
    "kfac step": 30,
    "dense fisher": 5,
}


def run(src: Path, name: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    for attempt in range(2):  # one retry: a transient failure of a subprocess is not a timing
        out = subprocess.run(
            [sys.executable, "-W", "ignore", "-c", WORKLOAD, name, str(REPS[name])],
            env=env,
            capture_output=True,
            text=True,
        )
        if out.returncode == 0:
            break
        if attempt:
            raise RuntimeError(f"{name} with {src} failed:\n{out.stderr[-3000:]}")
    return float(json.loads(out.stdout.strip().splitlines()[-1])["ms"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True, help="commit of the 'before' version")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "before"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "-f", "-q", str(old), args.before],
            check=True,
        )
        try:
            rows = []
            for name in NAMES:
                before, after, ratios = [], [], []
                for r in range(args.rounds):
                    order = [(old / "src", before), (ROOT / "src", after)]
                    if r % 2:
                        order.reverse()
                    for src, acc in order:
                        acc.append(run(src, name))
                    ratios.append(after[-1] / before[-1])
                row = {
                    "workload": name,
                    "before_ms": statistics.median(before),
                    "after_ms": statistics.median(after),
                    "after_over_before": statistics.median(ratios),
                }
                rows.append(row)
                print(
                    f"{name:22s} before {row['before_ms']:9.2f} ms   after {row['after_ms']:9.2f} ms   "
                    f"after/before {row['after_over_before']:.2f}",
                    flush=True,
                )
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], check=False
            )
    OUT.write_text(
        json.dumps(
            {
                "benchmark": "bench_core_refactor",
                "settings": {
                    "before": args.before,
                    "rounds": args.rounds,
                    "threads": 1,
                    "dtype": "float32",
                    "note": "medians over rounds; ratio = median of per-round after/before, alternating order",
                },
                "rows": rows,
            },
            indent=1,
        )
        + "\n"
    )
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
