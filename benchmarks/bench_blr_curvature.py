"""Step time of VOGN and IVON before and after their curvature moved to igbook.fisher.

Run:  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_blr_curvature.py [--label current] [--rounds 7]

Writes benchmarks/results/blr_curvature.json and prints a table.

VOGN's per-example gradients, sampled targets and Fisher diagonals now come from
:mod:`igbook.fisher` (``per_example_gradients``, ``Likelihood.sample``, ``curvature_matrix``
with ``structure="diagonal"``) through :class:`igbook.optim.PerExampleClosure`; before, the
closure computed them itself (one ``vmap(grad_and_value)`` over examples). IVON's update did
not change (only its argument checks moved to ``igbook._validation``); it is timed as a
control for the machine's drift between the two runs.

The set-ups are the chapter's (book/bayesian_learning_rule.ipynb), float64 unless said:

* ``linreg``: 200 points, 3 features, a bias-free linear model with 8 replicas (the chapter's
  VOGN runs), Gaussian likelihood with sigma 0.5;
* ``gap``: the 1-32-32-1 tanh network on the 60 points of the gap regression (the chapter's
  IVON network), Gaussian likelihood with sigma 0.1, float32;
* ``digits``: the 64-64-10 tanh classifier on a batch of 64 digits (the chapter's IVON
  classifier), categorical likelihood, float32.

Each timing is the median over ``--rounds`` rounds of the mean time of 20 steps (after 3
warm-up steps), one thread. To measure the code before the change, run the script with the
old package first on the path and ``--label pre-refactor`` (e.g. from ``git archive`` of the
commit before the change: ``PYTHONPATH=/tmp/old/src``); a run with another label leaves that
entry in the JSON, and the table shows every label side by side with the ratio
current / pre-refactor.
"""

from __future__ import annotations

import argparse
import inspect
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

import igbook
from igbook.optim import IVON, VOGN, PerExampleClosure

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "blr_curvature.json"
HAS_FISHER_TYPE = "fisher_type" in inspect.signature(VOGN).parameters


def setups() -> dict[str, dict[str, Any]]:
    g = torch.Generator().manual_seed(0)
    out: dict[str, dict[str, Any]] = {}
    x = torch.randn(200, 3, generator=g, dtype=torch.float64)
    y = x @ torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64) + 0.5 * torch.randn(
        200, generator=g, dtype=torch.float64
    )
    torch.manual_seed(0)
    out["linreg"] = dict(
        model=nn.Linear(3, 8, bias=False).double(), x=x, y=y[:, None].expand(200, 8), sigma=0.5
    )
    xg = torch.cat(
        [torch.rand(30, generator=g) * 1.2 - 2.0, torch.rand(30, generator=g) * 1.2 + 0.8]
    ).unsqueeze(1)
    yg = torch.sin(2 * xg) + 0.3 * xg + 0.1 * torch.randn(xg.shape, generator=g)
    torch.manual_seed(0)
    gap = nn.Sequential(nn.Linear(1, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 1))
    out["gap"] = dict(model=gap, x=xg, y=yg, sigma=0.1)
    xd = torch.randn(64, 64, generator=g)
    yd = torch.randint(0, 10, (64,), generator=g)
    torch.manual_seed(0)
    out["digits"] = dict(
        model=nn.Sequential(nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 10)), x=xd, y=yd, sigma=None
    )
    return out


def make_step(setup: dict[str, Any], method: str) -> Any:
    model, x, y, sigma = setup["model"], setup["x"], setup["y"], setup["sigma"]
    n = x.shape[0]
    if method == "IVON":
        opt = IVON(model.parameters(), lr=0.1, ess=n, hess_init=1.0, seed=0)

        def closure() -> torch.Tensor:
            out = model(x)
            loss = (
                nn.functional.cross_entropy(out, y)
                if sigma is None
                else 0.5 * ((out - y) ** 2).mean() / sigma**2
            )
            loss.backward()
            return loss

        return lambda: opt.step(closure)
    kind = method.split("-")[1]
    # s starts at the curvature scale of the likelihood (1/sigma^2): small steps from the start
    hyper = dict(
        lr=0.01,
        data_size=n,
        beta=0.99,
        prior_precision=1.0,
        hess_init=1.0 if sigma is None else sigma**-2,
        seed=0,
    )
    if HAS_FISHER_TYPE:
        opt = VOGN(model.parameters(), fisher_type=kind, **hyper)
    else:
        opt = VOGN(
            model.parameters(), fisher={"empirical": "empirical", "mc": "sampled"}[kind], **hyper
        )
    if sigma is None:
        cl = PerExampleClosure(model, x, y, likelihood="categorical")
    else:
        cl = PerExampleClosure(model, x, y, likelihood="gaussian", noise_std=sigma)
    return lambda: opt.step(cl)


def methods() -> list[str]:
    out = ["VOGN-empirical", "VOGN-mc"]
    if HAS_FISHER_TYPE:
        out.append("VOGN-exact")
    return [*out, "IVON"]


def time_step(step: Any, steps: int = 20, rounds: int = 7) -> float:
    for _ in range(3):
        step()
    per = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        per.append((time.perf_counter() - t0) / steps)
    return statistics.median(per)


def table(runs: dict[str, dict[str, float]]) -> str:
    labels = sorted(runs, key=lambda s: (s != "pre-refactor", s))
    keys = sorted({k for r in runs.values() for k in r})
    head = f"{'set-up / optimizer':30s}" + "".join(f"{lab + ' [ms]':>22s}" for lab in labels)
    if "pre-refactor" in runs and "current" in runs:
        head += f"{'current / pre-refactor':>24s}"
    lines = [head]
    for k in keys:
        row = f"{k:30s}" + "".join(
            f"{runs[lab][k] * 1e3:22.3f}" if k in runs[lab] else f"{'-':>22s}" for lab in labels
        )
        if "pre-refactor" in runs and "current" in runs:
            a, b = runs["pre-refactor"].get(k), runs["current"].get(k)
            row += f"{b / a:24.2f}" if a and b else f"{'-':>24s}"
        lines.append(row)
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--label", default="current")
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(1)
    res: dict[str, float] = {}
    for name in setups():
        for method in methods():
            setup = setups()[name]  # a fresh model for every optimizer
            res[f"{name} / {method}"] = time_step(make_step(setup, method), rounds=args.rounds)
    doc: dict[str, Any] = json.loads(OUT.read_text()) if OUT.exists() else {}
    runs = doc.get("runs", {})
    runs[args.label] = res
    doc.update(
        machine={
            "platform": platform.platform(),
            "processor": platform.processor(),
            "torch": torch.__version__,
            "threads": 1,
        },
        settings={
            "rounds": args.rounds,
            "steps_per_round": 20,
            "statistic": "median over rounds of the mean step time",
        },
        runs=runs,
    )
    doc.setdefault("sources", {})[args.label] = str(Path(igbook.__file__).resolve().parent)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(doc, indent=2) + "\n")
    print(table(runs))


if __name__ == "__main__":
    main()
