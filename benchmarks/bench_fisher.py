"""Benchmark: curvature-vector products and per-example Fisher with igbook.fisher.models.

Measures, on an MLP for MNIST-sized inputs with a batch of 512 (the set-up of the curvlinops
benchmark table, which reports 4.1-5.7 gradients per GGN/Fisher product on a GPU):

1. the cost of one curvature-matrix-vector product, in units of one gradient evaluation
   (PyTorch autograd forward + backward of the mean cross-entropy), for the exact Fisher, the
   GGN, the empirical and the Monte Carlo Fisher, and the Hessian; both per product with the
   operator already built (what each conjugate-gradient iteration costs) and for a one-shot
   product (build the operator + one product);
2. per-example quantities with ``torch.func.vmap`` against a Python loop over the examples
   (the per-example gradient matrix, the empirical Fisher diagonal, the exact Fisher diagonal),
   on a small MLP (64-32-10, the digits network of the chapter, batch 512) and on the large one.

Timings are medians over repeats, measured side by side in one run, with a fixed number of
threads (``--threads``, default 1); ratios are medians of per-repeat ratios of measurements
taken alternately. Prints a table and writes ``benchmarks/results/fisher.json``.

Run: ``.venv/bin/python benchmarks/bench_fisher.py`` (about a minute).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from igbook.fisher import (
    CategoricalLikelihood,
    CurvatureOperator,
    fisher_diagonal,
    model_params,
    per_example_gradients,
)

RESULTS = Path(__file__).resolve().parent / "results" / "fisher.json"


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def paired(fn, ref, repeats: int) -> tuple[float, float, float]:
    """Median time of ``fn``, of ``ref``, and median of the per-repeat ratios fn/ref.

    The two are timed alternately, so that load changes on a shared machine hit both alike.
    """
    fn()
    ref()
    ta, tb, ratios = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ref()
        t1 = time.perf_counter()
        fn()
        t2 = time.perf_counter()
        tb.append(t1 - t0)
        ta.append(t2 - t1)
        ratios.append((t2 - t1) / (t1 - t0))
    return statistics.median(ta), statistics.median(tb), statistics.median(ratios)


def per_example_section(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, reps: int
) -> list[dict]:
    """vmap against a Python loop over the examples, for three per-example quantities."""
    lik = CategoricalLikelihood()
    params = model_params(model)
    num_params = sum(p.numel() for p in params.values())
    m, dtype, c = x.shape[0], x.dtype, 10

    def loop_grads() -> torch.Tensor:
        out = []
        for n in range(m):
            model.zero_grad()
            nn.functional.cross_entropy(model(x[n : n + 1]), y[n : n + 1]).backward()
            out.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
        return torch.stack(out)

    def loop_ef_diag() -> torch.Tensor:
        acc = torch.zeros(num_params, dtype=dtype)
        for n in range(m):
            model.zero_grad()
            nn.functional.cross_entropy(model(x[n : n + 1]), y[n : n + 1]).backward()
            acc += torch.cat([p.grad.reshape(-1) for p in model.parameters()]) ** 2
        return acc / m

    def loop_fisher_diag() -> torch.Tensor:
        acc = torch.zeros(num_params, dtype=dtype)
        for n in range(m):
            out = model(x[n : n + 1])[0]
            p = torch.softmax(out.detach(), -1)
            rows_j = []
            for k in range(c):  # one backward pass per output: a row of the Jacobian
                grads = torch.autograd.grad(
                    out[k], list(model.parameters()), retain_graph=k < c - 1
                )
                rows_j.append(torch.cat([t.reshape(-1) for t in grads]))
            j = torch.stack(rows_j)  # (C, P)
            lam = torch.diag(p) - torch.outer(p, p)
            acc += (j * (lam @ j)).sum(0)
        return acc / m

    cases = [
        (
            "per-example gradient matrix (N x P)",
            lambda: per_example_gradients(model, params, x, y, lik),
            loop_grads,
        ),
        (
            "empirical Fisher diagonal",
            lambda: fisher_diagonal(model, params, x, y, lik, "empirical"),
            loop_ef_diag,
        ),
        (
            "exact Fisher diagonal",
            lambda: fisher_diagonal(model, params, x, None, lik),
            loop_fisher_diag,
        ),
    ]
    rows = []
    for name, vm, lp in cases:
        torch.testing.assert_close(vm(), lp(), rtol=1e-3, atol=1e-7)
        t_loop, t_vmap, ratio = paired(lp, vm, reps)
        rows.append(
            {
                "quantity": name,
                "examples": m,
                "parameters": num_params,
                "vmap_ms": 1e3 * t_vmap,
                "loop_ms": 1e3 * t_loop,
                "loop_over_vmap": ratio,
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument(
        "--loop-examples",
        type=int,
        default=64,
        help="examples in the per-example comparison on the large MLP",
    )
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)

    torch.manual_seed(0)
    widths = [784, 256, 128, 10]
    model = nn.Sequential(
        nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10)
    ).to(dtype)
    num_params = sum(p.numel() for p in model.parameters())
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 784, generator=g, dtype=dtype)
    y = torch.randint(0, 10, (args.batch,), generator=g)
    lik = CategoricalLikelihood()

    def gradient_pass() -> None:
        model.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()

    t_grad = median_time(gradient_pass, args.repeats)
    v = torch.randn(num_params, generator=g, dtype=dtype)
    rows = []
    for ftype in ("exact", "ggn", "empirical", "mc", "hessian"):
        op = CurvatureOperator(model, None, x, y, lik, ftype, mc_samples=1, seed=0)
        t_prod, _, r_prod = paired(lambda op=op: op @ v, gradient_pass, args.repeats)
        _t_once, _, r_once = paired(
            lambda ftype=ftype: (
                CurvatureOperator(model, None, x, y, lik, ftype, mc_samples=1, seed=0) @ v
            ),
            gradient_pass,
            args.repeats,
        )
        rows.append(
            {
                "curvature": ftype,
                "product_ms": 1e3 * t_prod,
                "product_in_gradients": r_prod,
                "build_and_product_in_gradients": r_once,
            }
        )

    # ---- per-example: vmap vs a Python loop ----
    reps = max(3, args.repeats // 4)
    m = args.loop_examples
    per_example = per_example_section(model, x[:m], y[:m], reps)
    torch.manual_seed(0)
    small = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10)).to(dtype)
    xs = torch.randn(args.batch, 64, generator=g, dtype=dtype)
    ys = torch.randint(0, 10, (args.batch,), generator=g)
    per_example_small = per_example_section(small, xs, ys, reps)

    print(
        f"MLP {'-'.join(map(str, widths))} (ReLU), {num_params} parameters, batch {args.batch}, {args.dtype}, "
        f"{args.threads} thread(s), torch {torch.__version__}"
    )
    print(
        f"one gradient (autograd forward + backward of the mean cross-entropy): {1e3 * t_grad:.2f} ms"
    )
    print(f"{'curvature':10s} {'product (ms)':>13s} {'x gradient':>11s} {'build+1 product':>16s}")
    for r in rows:
        print(
            f"{r['curvature']:10s} {r['product_ms']:13.2f} "
            f"{r['product_in_gradients']:11.2f} {r['build_and_product_in_gradients']:16.2f}"
        )
    print(
        f"\n{'per-example quantity':38s} {'P':>7s} {'N':>4s} {'vmap (ms)':>10s} {'loop (ms)':>10s} {'loop/vmap':>10s}"
    )
    for r in per_example_small + per_example:
        print(
            f"{r['quantity']:38s} {r['parameters']:7d} {r['examples']:4d} "
            f"{r['vmap_ms']:10.1f} {r['loop_ms']:10.1f} {r['loop_over_vmap']:10.1f}"
        )

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "bench_fisher",
                "machine": {
                    "platform": platform.platform(),
                    "processor": platform.processor(),
                    "python": platform.python_version(),
                    "torch": torch.__version__,
                    "threads": torch.get_num_threads(),
                },
                "settings": {
                    "model": f"MLP {'-'.join(map(str, widths))} ReLU",
                    "parameters": num_params,
                    "batch": args.batch,
                    "dtype": args.dtype,
                    "repeats": args.repeats,
                    "loop_examples": m,
                    "gradient_reference": "autograd forward + backward of nn.functional.cross_entropy (mean)",
                },
                "gradient_ms": 1e3 * t_grad,
                "products": rows,
                "per_example": {
                    "small_mlp_64-32-10_tanh": per_example_small,
                    "mlp_784-256-128-10_relu": per_example,
                },
                "reference": "curvlinops (RTX A6000, MNIST MLP, batch 512): "
                "GGN/EF/MC products 4.1-5.7 gradients, Hessian 5.3",
            },
            indent=2,
        )
        + "\n"
    )
    print(
        f"\nwrote {RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS}"
    )


if __name__ == "__main__":
    main()
