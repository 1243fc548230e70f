"""IVON benchmark: step cost against AdamW and ivon-opt, and IVON vs AdamW on digits over seeds.

Run:  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_ivon.py [--seeds 10] [--quick] [--tune]

Writes benchmarks/results/ivon.json (machine, settings, numbers) and prints two tables.

1. Step cost. One full training step (``zero_grad``, forward, backward, optimizer step; for
   IVON the forward/backward runs inside ``sampled_params(train=True)``, one MC sample) on the
   same network, float32, one thread. The three optimizers (torch AdamW, igbook IVON, ivon-opt
   0.1.3 IVON) are timed side by side, interleaved in rounds (in a random order per round), and
   the median over rounds of the mean time per step is reported, with the ratios to AdamW. On a
   shared machine these ratios move by about +-0.15 between runs. The time of one
   ``torch.randn`` of the parameter count is reported too: on a CPU, drawing the weight noise
   is IVON's main extra cost (a Mersenne-Twister normal costs as much as ~100 additions).
2. Digits. An MLP 64-64-10 trained for 20 epochs (batches of 64) with IVON and with AdamW
   (hyperparameters ``IVON_DIGITS`` / ``ADAMW_DIGITS`` of :mod:`igbook.experiments.blr`,
   the ones the chapter uses), seeds 0..S-1 on the split of seed 0; test accuracy, NLL, Brier
   and ECE (10 bins) of AdamW, of IVON's mean network and of IVON's posterior predictive
   (32 samples). ``--tune`` reruns the small grids that chose those hyperparameters, on a
   different split (seed 99) and seeds 100-102, selecting by mean validation NLL.
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
from typing import Any

import torch
from torch import nn

from igbook import data
from igbook.experiments.blr import ADAMW_DIGITS, IVON_DIGITS, evaluate_classifier, train_classifier
from igbook.experiments.models import mlp
from igbook.optim import IVON

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "ivon.json"


# --------------------------------------------------------------------------------------------
# step cost
# --------------------------------------------------------------------------------------------


def _cnn() -> nn.Module:
    return nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)),
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 4 * 4, 10),
    )


def _mlp(*sizes: int) -> nn.Module:
    return mlp(sizes, activation="relu", seed=0)


NETWORKS = {
    "MLP 64-64-10 (chapter), batch 64": (lambda: _mlp(64, 64, 10), 64),
    "MLP 64-256-256-10, batch 128": (lambda: _mlp(64, 256, 256, 10), 128),
    "MLP 64-1024-1024-10, batch 128": (lambda: _mlp(64, 1024, 1024, 10), 128),
    "MLP 64-1024-1024-10, batch 512": (lambda: _mlp(64, 1024, 1024, 10), 512),
    "CNN 2 conv + linear on 8x8, batch 128": (_cnn, 128),
}


def time_steps(make: Any, batch: int, *, rounds: int, steps: int) -> dict[str, Any]:
    try:
        import ivon as ivon_ref  # the authors' reference implementation
    except ImportError:  # pragma: no cover - optional
        ivon_ref = None
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 64, generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)
    models, opts = {}, {}
    for name in ("AdamW", "IVON (igbook)", "IVON (ivon-opt)"):
        if name == "IVON (ivon-opt)" and ivon_ref is None:
            continue
        torch.manual_seed(0)
        m = make()
        models[name] = m
        if name == "AdamW":
            opts[name] = torch.optim.AdamW(m.parameters(), lr=1e-3)
        elif name == "IVON (igbook)":
            opts[name] = IVON(m.parameters(), lr=0.1, ess=1000, seed=0)
        else:
            opts[name] = ivon_ref.IVON(m.parameters(), lr=0.1, ess=1000)

    def step(name: str) -> None:
        m, o = models[name], opts[name]
        o.zero_grad()
        if name == "AdamW":
            nn.functional.cross_entropy(m(x), y).backward()
        else:
            with o.sampled_params(train=True):
                nn.functional.cross_entropy(m(x), y).backward()
        o.step()

    for name in models:  # warm-up
        for _ in range(3):
            step(name)
    times: dict[str, list[float]] = {k: [] for k in models}
    order = list(models)
    rng = torch.Generator().manual_seed(1)
    for _ in range(rounds):
        perm = torch.randperm(len(order), generator=rng).tolist()  # no fixed order within a round
        for name in (order[i] for i in perm):
            t0 = time.perf_counter()
            for _ in range(steps):
                step(name)
            times[name].append((time.perf_counter() - t0) / steps)
    numel = sum(p.numel() for p in models["AdamW"].parameters())
    rt = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        torch.randn(numel)
        rt.append(time.perf_counter() - t0)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    return {
        "parameters": numel,
        "batch": batch,
        "ms_per_step": med,
        "ratio_to_adamw": {k: med[k] / med["AdamW"] for k in med},
        "ms_randn_of_all_parameters": statistics.median(rt) * 1e3,
    }


# --------------------------------------------------------------------------------------------
# digits over seeds
# --------------------------------------------------------------------------------------------

TUNE_GRIDS = {
    "IVON": [
        {"lr": lr, "hess_init": h0, "beta1": 0.9, "beta2": 0.999, "weight_decay": wd}
        for lr in (0.2, 0.5, 1.0)
        for h0 in (0.1, 0.5, 1.0, 5.0, 10.0)
        for wd in (1e-4, 1e-3)
    ],
    "AdamW": [
        {"lr": lr, "weight_decay": wd} for lr in (1e-3, 3e-3, 1e-2, 3e-2) for wd in (1e-2, 1e-1)
    ],
}


def digits_runs(
    seeds: list[int], *, split_seed: int, hypers: dict[str, dict[str, float]]
) -> dict[str, Any]:
    ds = data.load("digits", seed=split_seed, dtype=torch.float32)
    rows: dict[str, list[dict[str, float]]] = {"AdamW": [], "IVON@mean": [], "IVON": []}
    seconds: dict[str, list[float]] = {"AdamW": [], "IVON": []}
    for seed in seeds:
        for name in ("AdamW", "IVON"):
            tr = train_classifier(
                name,
                ds.x_train,
                ds.y_train,
                num_classes=ds.num_classes,
                seed=seed,
                hyper=hypers[name],
            )
            seconds[name].append(tr.seconds)
            for key, (metrics, _) in evaluate_classifier(
                tr, ds.x_test, ds.y_test, num_samples=32
            ).items():
                rows[key].append(metrics._asdict())
    summary = {
        key: {
            f: {
                "mean": statistics.mean(r[f] for r in rs),
                "sd": statistics.stdev(r[f] for r in rs) if len(rs) > 1 else 0.0,
            }
            for f in ("accuracy", "nll", "brier", "ece")
        }
        for key, rs in rows.items()
    }
    return {
        "per_seed": rows,
        "summary": summary,
        "train_seconds_median": {k: statistics.median(v) for k, v in seconds.items()},
    }


def tune() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, grid in TUNE_GRIDS.items():
        scores = []
        for hyper in grid:
            other = "AdamW" if name == "IVON" else "IVON"
            res = digits_runs(
                [100, 101, 102],
                split_seed=99,
                hypers={name: hyper, other: ADAMW_DIGITS if other == "AdamW" else IVON_DIGITS},
            )
            key = "IVON" if name == "IVON" else "AdamW"
            scores.append(
                {
                    "hyper": hyper,
                    "val_nll": res["summary"][key]["nll"]["mean"],
                    "val_accuracy": res["summary"][key]["accuracy"]["mean"],
                }
            )
            print(
                name,
                hyper,
                f"val NLL {scores[-1]['val_nll']:.4f} acc {scores[-1]['val_accuracy']:.4f}",
                flush=True,
            )
        out[name] = {"grid": scores, "best": min(scores, key=lambda s: s["val_nll"])}
    return out


# --------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="fewer rounds and seeds (a smoke test)")
    ap.add_argument(
        "--tune", action="store_true", help="rerun the hyperparameter grids (split seed 99)"
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    rounds, steps = (3, 3) if args.quick else (15, 5)
    seeds = list(range(2 if args.quick else args.seeds))

    result: dict[str, Any] = {
        "machine": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "load_average_at_start": list(os.getloadavg()),
        },
        "settings": {
            "step_cost": {
                "dtype": "float32",
                "mc_samples": 1,
                "rounds": rounds,
                "steps_per_round": steps,
            },
            "digits": {
                "network": "MLP 64-64-10 (ReLU), float32",
                "epochs": 20,
                "batch_size": 64,
                "split_seed": 0,
                "seeds": seeds,
                "predictive_samples": 32,
                "ece_bins": 10,
                "IVON": {**IVON_DIGITS, "ess": "number of training points (1347)"},
                "AdamW": ADAMW_DIGITS,
            },
        },
    }
    try:
        import ivon

        result["machine"]["ivon-opt"] = getattr(ivon, "__version__", "0.1.3")
    except ImportError:  # pragma: no cover
        pass

    t_start = time.perf_counter()
    step_cost = {}
    print(
        f"{'network':42s} {'params':>9s} {'AdamW ms':>9s} {'IVON ms':>9s} {'ref ms':>9s} "
        f"{'IVON/AdamW':>10s} {'ref/AdamW':>10s} {'randn ms':>9s}"
    )
    for name, (make, batch) in NETWORKS.items():
        r = time_steps(make, batch, rounds=rounds, steps=steps)
        step_cost[name] = r
        ms, ratio = r["ms_per_step"], r["ratio_to_adamw"]
        print(
            f"{name:42s} {r['parameters']:9d} {ms['AdamW']:9.2f} {ms['IVON (igbook)']:9.2f} "
            f"{ms.get('IVON (ivon-opt)', float('nan')):9.2f} {ratio['IVON (igbook)']:10.3f} "
            f"{ratio.get('IVON (ivon-opt)', float('nan')):10.3f} {r['ms_randn_of_all_parameters']:9.2f}",
            flush=True,
        )
    result["step_cost"] = step_cost

    if args.tune:
        result["tuning"] = tune()

    dig = digits_runs(seeds, split_seed=0, hypers={"IVON": IVON_DIGITS, "AdamW": ADAMW_DIGITS})
    result["digits"] = dig
    print(f"\nDigits, {len(seeds)} seeds (mean +- sd)")
    print(f"{'':10s} {'accuracy':>17s} {'NLL':>17s} {'Brier':>17s} {'ECE':>17s}")
    for key, s in dig["summary"].items():
        cells = " ".join(
            f"{s[f]['mean']:8.4f} +- {s[f]['sd']:.4f}" for f in ("accuracy", "nll", "brier", "ece")
        )
        print(f"{key:10s} {cells}")
    print(
        "train seconds per run (median):",
        {k: round(v, 2) for k, v in dig["train_seconds_median"].items()},
    )
    result["seconds_total"] = time.perf_counter() - t_start
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1))
    print(f"wrote {OUT.relative_to(ROOT)} in {result['seconds_total']:.0f} s")


if __name__ == "__main__":
    main()
