"""The optimizer race: SGD, Adam, K-FAC, Shampoo, SOAP, Muon and IVON on two digits problems.

Run:  nice .venv/bin/python benchmarks/bench_optimizer_race.py          (about 5-10 minutes, 1 thread)
      .venv/bin/python benchmarks/bench_optimizer_race.py --quick      (a smoke run, under a minute)

The problems, optimizers, fixed settings, learning-rate grids and targets are those of
igbook.experiments.optimizer_race: the digits autoencoder of the K-FAC chapter (64-256-128-64-16-
64-128-256-64, tanh, Bernoulli) and a 64-64-64-10 ReLU classifier of the digits, minibatches of 128.
Every optimizer gets the same tuning budget: its learning rate is chosen from a grid of four
points by the final training loss of seed 0; the chosen rate is then run again with seed 1. The
full-training-set loss is recorded against iterations and against optimizer time (wall-clock and
process CPU, evaluations excluded). The time-to-target table reports, for each optimizer at its
chosen rate, the first recorded iteration and time at which the excess loss is below the
problem's target, and the ratio of its CPU time to Adam's (mean over the two seeds).

Writes benchmarks/results/optimizer_race.json (the tables) and optimizer_race_curves.json (the loss
curves, drawn by the chapter) and prints the tables. With --table-only it recomputes the
time-to-target table from the recorded curves and the current targets, without training.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from igbook.experiments.kfac_autoencoder import TrainingRun
from igbook.experiments.optimizer_race import (
    LR_GRIDS,
    OPTIMIZERS,
    PROBLEMS,
    RACE_BATCH_SIZE,
    TARGETS,
    race,
    race_problem,
)

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "optimizer_race.json"
#: the loss curves (read by the chapter; kept out of the tables of the Performance page)
OUT_CURVES = ROOT / "benchmarks" / "results" / "optimizer_race_curves.json"
STEPS = {"autoencoder": 400, "classifier": 300}
EVAL_EVERY = 20
SEEDS = (0, 1)


def _score(run: TrainingRun) -> float:
    return math.inf if run.diverged or not math.isfinite(run.losses[-1]) else run.losses[-1]


def _hit(run: dict[str, Any], target: float) -> tuple[int, float, float] | None:
    for it, w, c, v in zip(
        run["iterations"], run["seconds"], run["cpu_seconds"], run["excess_losses"], strict=True
    ):
        if v <= target:
            return it, w, c
    return None


def time_to_target_table(
    curves: dict[str, dict[str, Any]], targets: dict[str, float]
) -> list[dict[str, Any]]:
    """One row per problem and optimizer (its chosen rate, all seeds) from the recorded curves."""
    table = []
    for pname, per_opt in curves.items():
        target = targets[pname]
        adam = [_hit(r, target) for r in per_opt["adam"]["runs"]]
        adam_cpu = [h[2] for h in adam if h] if all(adam) else []
        for name, entry in per_opt.items():
            runs = entry["runs"]
            hits = [_hit(r, target) for r in runs]
            ok = [h[2] for h in hits if h]
            ratio = (
                round((sum(ok) / len(ok)) / (sum(adam_cpu) / len(adam_cpu)), 3)
                if len(ok) == len(hits) and adam_cpu
                else None
            )
            table.append(
                {
                    "problem": pname,
                    "optimizer": name,
                    "lr": entry["lr"],
                    "target excess": target,
                    "final excess (seeds)": [round(r["excess_losses"][-1], 4) for r in runs],
                    "iterations to target": [h[0] if h else None for h in hits],
                    "CPU s to target": [round(h[2], 3) if h else None for h in hits],
                    "wall s to target": [round(h[1], 3) if h else None for h in hits],
                    "ms per step (CPU)": round(
                        1e3
                        * sum(r["cpu_seconds"][-1] for r in runs)
                        / sum(r["iterations"][-1] for r in runs),
                        3,
                    ),
                    "CPU time vs Adam": ratio,
                }
            )
    return table


def _print_table(table: list[dict[str, Any]]) -> None:
    cols = (
        "problem",
        "optimizer",
        "lr",
        "iterations to target",
        "CPU s to target",
        "CPU time vs Adam",
    )
    print(" | ".join(cols))
    for row in table:
        print(" | ".join(str(row[c]) for c in cols))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run (few steps, no JSON)")
    ap.add_argument(
        "--table-only",
        action="store_true",
        help="recompute the time-to-target table of the written JSON from its curves and the "
        "current TARGETS (no training)",
    )
    args = ap.parse_args()
    if args.table_only:
        result = json.loads(OUT.read_text())
        curves = (
            result.pop("curves")
            if "curves" in result
            else json.loads(OUT_CURVES.read_text())["curves"]
        )
        result["settings"]["targets (excess loss)"] = TARGETS
        result["time_to_target"] = time_to_target_table(curves, TARGETS)
        _print_table(result["time_to_target"])
        OUT.write_text(json.dumps(result, indent=1) + "\n")
        OUT_CURVES.write_text(json.dumps({"curves": curves}) + "\n")
        return
    torch.set_num_threads(1)
    steps = dict.fromkeys(PROBLEMS, 40) if args.quick else STEPS
    t_start = time.perf_counter()
    tuning: list[dict[str, Any]] = []
    curves: dict[str, dict[str, Any]] = {}
    for pname in PROBLEMS:
        problem = race_problem(pname)
        floor = problem.floor
        curves[pname] = {}
        for name in OPTIMIZERS:
            best: TrainingRun | None = None
            for lr in LR_GRIDS[name]:
                r = race(name, problem, lr=lr, steps=steps[pname], seed=0, eval_every=EVAL_EVERY)
                tuning.append(
                    {
                        "problem": pname,
                        "optimizer": name,
                        "lr": lr,
                        "final excess loss": r.losses[-1] - floor,
                        "diverged": r.diverged,
                        "cpu s": r.cpu_seconds[-1],
                    }
                )
                print(f"{pname:11s} {name:8s} lr={lr:<7g} excess {r.losses[-1] - floor:9.4f}")
                if best is None or _score(r) < _score(best):
                    best = r
            assert best is not None
            lr = best.config["lr"]
            runs = [best] + [
                race(name, problem, lr=lr, steps=steps[pname], seed=s, eval_every=EVAL_EVERY)
                for s in SEEDS[1:]
            ]
            curves[pname][name] = {
                "lr": lr,
                "runs": [
                    {
                        "seed": s,
                        "iterations": r.iterations,
                        "seconds": r.seconds,
                        "cpu_seconds": r.cpu_seconds,
                        "excess_losses": [v - floor for v in r.losses],
                        "diverged": r.diverged,
                    }
                    for s, r in zip(SEEDS, runs, strict=True)
                ],
            }
    result = {
        "description": "Seven optimizers on the digits autoencoder and a digits classifier, "
        "each with a four-point learning-rate grid: time to a target training loss.",
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "load_average": os.getloadavg(),
        },
        "settings": {
            "steps": steps,
            "eval_every": EVAL_EVERY,
            "batch_size": RACE_BATCH_SIZE,
            "seeds": list(SEEDS),
            "targets (excess loss)": TARGETS,
            "selection": "final training loss of seed 0",
            "quick": args.quick,
        },
        "time_to_target": time_to_target_table(curves, TARGETS),
        "tuning": tuning,
        "total_seconds": time.perf_counter() - t_start,
    }
    print()
    _print_table(result["time_to_target"])
    print(f"total {result['total_seconds']:.0f} s")
    if not args.quick:
        OUT.write_text(json.dumps(result, indent=1) + "\n")
        OUT_CURVES.write_text(json.dumps({"curves": curves}) + "\n")
        print(f"wrote {OUT.relative_to(ROOT)} and {OUT_CURVES.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
