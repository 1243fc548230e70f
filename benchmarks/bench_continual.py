"""Continual-learning benchmark: every method of igbook.continual on permuted and split digits.

Run:  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_continual.py [--seeds 3] [--quick] [--tune]

Writes benchmarks/results/continual.json (machine, settings, per-seed accuracy matrices, the table
of mean +- std over seeds, seconds per task, and the stability-plasticity sweeps) and prints the
tables. The chapter "Continual learning as geometry" loads that file.

Protocol (the same for every method): an MLP 64-100-10 (float32), 3 passes per task, minibatches
of 16, seeds 0, 1, 2 (network initialization, permutations and minibatch order all follow the
seed). Hyperparameters were chosen with ``--tune`` on a separate seed (99) from the small grids
in ``GRIDS``, by final average accuracy; the chosen values are ``CONFIG`` of
:mod:`igbook.experiments.continual` (shared with the chapter) and are written to the JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from igbook.book import markdown_table
from igbook.continual import (
    FineTuning,
    MESULearner,
    Task,
    TaskStream,
    evaluate,
    make_learner,
    mean_std,
    ood_auc,
    ood_digits,
    permuted_digits,
    run_stream,
    split_digits,
    uncertainty_decomposition,
)
from igbook.experiments.continual import CONFIG, LABELS, LR, MESU_COMMON, PROTOCOL
from igbook.experiments.models import mlp

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "continual.json"

# PROTOCOL, LR, MESU_COMMON, CONFIG (the tuned hyperparameters) and LABELS come from
# igbook.experiments.continual; GRIDS are the grids that chose CONFIG.
GRIDS: dict[str, list[dict[str, Any]]] = {
    "sgd": [{"lr": LR}],
    "ewc": [{"lam": v, "lr": LR} for v in (1.0, 3.0, 10.0, 30.0)],
    "online_ewc": [{"lam": v, "gamma": 1.0, "lr": LR} for v in (1.0, 3.0, 10.0, 30.0)],
    "si": [{"c": v, "lr": LR} for v in (0.1, 0.3, 1.0, 2.0)],
    "bgd": [{"num_samples": 10, "sigma_scale": s} for s in (1.0, 2.0)],
    "mesu": [{"N": v, **MESU_COMMON} for v in (2000.0, 8000.0, 32000.0)],
    "fopng": [
        {"lr": v, "damping": d, "directions_per_task": 100}
        for v in (0.01, 0.03)
        for d in (0.1, 1.0)
    ],
}

# Stability-plasticity sweeps (permuted digits): one knob per method.
# (larger EWC / SI strengths diverge with SGD at LR; two seeds per point to bound the run time)
SWEEPS: dict[str, tuple[str, list[float]]] = {
    "ewc": ("lam", [1.0, 3.0, 10.0, 30.0]),
    "si": ("c", [0.1, 0.3, 1.0]),
    "mesu": ("N", [250.0, 1000.0, 4000.0, math.inf]),
}
SWEEP_SEEDS = [0, 1]

# Catastrophic remembering: MESU with a finite window vs N = inf over a longer stream, one pass per task.
REMEMBER = {"num_tasks": 15, "epochs": 1, "N_finite": 340.0, "ood_samples": 20}


def make_stream(name: str, seed: int, dtype: torch.dtype):  # type: ignore[no-untyped-def]
    if name == "permuted":
        return permuted_digits(PROTOCOL["permuted_tasks"], seed=seed, dtype=dtype)
    if name == "split-task":
        return split_digits("task", dtype=dtype)
    if name == "split-class":
        return split_digits("class", dtype=dtype)
    raise ValueError(name)


def machine_info() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
    }


def one_run(
    stream_name: str, method: str, hyper: dict[str, Any], seed: int, epochs: int
) -> dict[str, Any]:
    dtype = torch.float32
    stream = make_stream(stream_name, seed, dtype)
    model = mlp(
        (stream.num_inputs, *PROTOCOL["hidden"], stream.num_classes),
        activation="relu",
        seed=seed,
        dtype=dtype,
    )
    learner = make_learner(method, model, seed=seed, **hyper)
    res = run_stream(learner, stream, epochs=epochs, batch_size=PROTOCOL["batch_size"], seed=seed)
    out = res.summary()
    out["accuracy_matrix"] = [[round(float(v), 4) for v in row] for row in res.accuracy]
    out["seconds_per_task_list"] = [round(float(v), 4) for v in res.train_seconds]
    return out


def joint_run(stream_name: str, seed: int, epochs: int) -> float:
    """Average accuracy of SGD trained on all tasks at once (a reference, not a continual method)."""
    stream = make_stream(stream_name, seed, torch.float32)
    x = torch.cat([t.x_train for t in stream])
    y = torch.cat([t.y_train for t in stream])
    joint = TaskStream(
        "joint",
        "domain",
        (Task(0, "all", x, y, x[:1], y[:1], tuple(range(10))),),
        stream.num_inputs,
        10,
    )
    learner = FineTuning(
        mlp((stream.num_inputs, *PROTOCOL["hidden"], 10), activation="relu", seed=seed), lr=LR
    )
    run_stream(learner, joint, epochs=epochs, batch_size=PROTOCOL["batch_size"], seed=seed)
    return sum(evaluate(learner, t) for t in stream) / len(stream)


def remembering(seeds: list[int]) -> dict[str, Any]:
    """MESU with a finite memory window and with N = inf on a long permuted-digits stream."""
    x_ood = ood_digits()
    out: dict[str, Any] = {**REMEMBER, "finite_key": f"{REMEMBER['N_finite']:g}", "runs": {}}
    for N in (REMEMBER["N_finite"], math.inf):
        per_seed = []
        for seed in seeds:
            stream = permuted_digits(REMEMBER["num_tasks"], seed=seed)

            def log(i: int, learner: Any, stream: TaskStream = stream) -> dict[str, float]:
                p_in = learner.sample_proba(stream[i].x_test, num_samples=REMEMBER["ood_samples"])
                p_out = learner.sample_proba(x_ood, num_samples=REMEMBER["ood_samples"])
                sig = learner.sigmas()
                return {
                    "sigma_layer1": float(sig[0].mean()),
                    "sigma_layer2": float(sig[2].mean()),
                    "epistemic_auc": ood_auc(p_in, p_out, score="epistemic"),
                    "aleatoric_auc": ood_auc(p_in, p_out, score="aleatoric"),
                    "epistemic_in": float(uncertainty_decomposition(p_in).epistemic.mean()),
                }

            net = mlp((64, *PROTOCOL["hidden"], 10), activation="relu", seed=seed)
            learner = MESULearner(net, N=N, seed=seed, **MESU_COMMON)
            res = run_stream(
                learner,
                stream,
                epochs=REMEMBER["epochs"],
                batch_size=PROTOCOL["batch_size"],
                seed=seed,
                on_task_end=log,
            )
            rec = {k: [d[k] for d in res.logs] for k in res.logs[0]}
            rec["newest_accuracy"] = [float(v) for v in res.accuracy.diagonal()]
            rec["final_row"] = [float(v) for v in res.accuracy[-1]]
            per_seed.append(rec)
        agg = {}
        for k in per_seed[0]:
            arr = torch.tensor([r[k] for r in per_seed], dtype=torch.float64)
            std = (
                arr.std(0) if len(per_seed) > 1 else torch.zeros(arr.shape[1], dtype=torch.float64)
            )
            agg[k] = [arr.mean(0).tolist(), std.tolist()]
        key = "inf" if math.isinf(N) else out["finite_key"]
        out["runs"][key] = agg
        print(
            f"remembering N={key}: newest {agg['newest_accuracy'][0][-1]:.3f} "
            f"epistemic AUC {agg['epistemic_auc'][0][-1]:.3f} "
            f"sigma2 {agg['sigma_layer2'][0][-1]:.4f}",
            flush=True,
        )
    return out


def timing(repeats: int = 3, tasks: int = 3) -> dict[str, Any]:
    """Seconds per task per method on permuted digits, methods interleaved, median of repeats.

    Each repeat trains every method on the same ``tasks`` permuted tasks with the benchmark's
    protocol; the first task is dropped (no penalty, no stored directions yet), so the numbers
    include each method's consolidation cost in steady state.
    """
    stream = permuted_digits(tasks, seed=0)
    per: dict[str, list[float]] = {k: [] for k in LABELS}
    for rep in range(repeats):
        for key in LABELS:
            net = mlp((64, *PROTOCOL["hidden"], 10), activation="relu", seed=rep)
            learner = make_learner(key, net, seed=rep, **CONFIG["permuted"][key])
            res = run_stream(
                learner,
                stream,
                epochs=PROTOCOL["epochs"],
                batch_size=PROTOCOL["batch_size"],
                seed=rep,
            )
            per[key] += [float(v) for v in res.train_seconds[1:]]
    steps = math.ceil(stream[0].num_train / PROTOCOL["batch_size"]) * PROTOCOL["epochs"]
    med = {LABELS[k]: statistics.median(v) for k, v in per.items()}
    out = {
        "setup": f"permuted digits, {PROTOCOL['epochs']} passes x {steps // PROTOCOL['epochs']} minibatches of "
        f"{PROTOCOL['batch_size']} per task; median over {repeats} repeats x {tasks - 1} tasks, methods interleaved",
        "records": [
            {
                "method": name,
                "seconds_per_task": round(t, 4),
                "ms_per_step": round(1000 * t / steps, 3),
                "relative_to_SGD": round(t / med["SGD"], 2),
            }
            for name, t in med.items()
        ],
    }
    for r in out["records"]:
        print(
            f"timing {r['method']:11s} {r['seconds_per_task']:.3f} s/task  "
            f"{r['ms_per_step']:.2f} ms/step  x{r['relative_to_SGD']}",
            flush=True,
        )
    return out


def _jsonable(h: dict[str, Any]) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, float) and math.isinf(v) else v) for k, v in h.items()}


def tune(epochs: int) -> dict[str, Any]:
    chosen: dict[str, Any] = {}
    for family, stream_name in (("permuted", "permuted"), ("split", "split-task")):
        chosen[family] = {}
        for method, grid in GRIDS.items():
            scores = []
            for hyper in grid:
                try:
                    r = one_run(stream_name, method, hyper, seed=99, epochs=epochs)
                except RuntimeError as exc:  # diverged: the penalty is too stiff for the step size
                    print(f"tune {family:9s} {method:11s} {hyper} -> diverged ({exc})", flush=True)
                    continue
                scores.append((r["average_accuracy"], hyper))
                print(
                    f"tune {family:9s} {method:11s} {hyper} -> "
                    f"avg {r['average_accuracy']:.3f} newest {r['mean_newest_accuracy']:.3f}",
                    flush=True,
                )
            chosen[family][method] = max(scores, key=lambda s: s[0])[1]
    return chosen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument(
        "--quick", action="store_true", help="1 pass per task, 2 seeds, no sweeps (smoke test)"
    )
    ap.add_argument(
        "--tune",
        action="store_true",
        help="run the hyperparameter grids on seed 99 and print the choice",
    )
    ap.add_argument(
        "--timing-only",
        action="store_true",
        help="re-measure only the speed section of an existing results file",
    )
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    epochs = 1 if args.quick else PROTOCOL["epochs"]
    if args.tune:
        chosen = tune(epochs)
        print(json.dumps(chosen, indent=1, default=str))
        return
    if args.timing_only:
        data = json.loads(args.out.read_text())
        data["timing"] = timing()
        data["machine"] = machine_info()
        args.out.write_text(json.dumps(data, indent=1))
        print(f"updated the timing of {args.out}")
        return
    seeds = list(range(2 if args.quick else args.seeds))
    if args.quick:
        REMEMBER["num_tasks"] = 4
    t_start = time.perf_counter()
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    table: dict[str, dict[str, Any]] = {}
    streams = [("permuted", "permuted"), ("split-task", "split"), ("split-class", "split")]
    variants = [(m, m) for m in LABELS] + [("mesu_no_forgetting", "mesu")]
    for stream_name, family in streams:
        runs[stream_name] = {}
        table[stream_name] = {}
        for key, method in variants:
            hyper = dict(CONFIG[family][method])
            if key == "mesu_no_forgetting":
                hyper["N"] = math.inf
            rs = [one_run(stream_name, method, hyper, seed, epochs) for seed in seeds]
            runs[stream_name][key] = rs
            ms = mean_std([{k: v for k, v in r.items() if isinstance(v, float)} for r in rs])
            ms["seconds_per_task_median"] = (
                statistics.median(r["seconds_per_task"] for r in rs),
                0.0,
            )
            table[stream_name][key] = {
                "hyperparameters": _jsonable(hyper),
                **{k: list(v) for k, v in ms.items()},
            }
            print(
                f"{stream_name:12s} {key:19s} avg {ms['average_accuracy'][0]:.3f}+-{ms['average_accuracy'][1]:.3f} "
                f"newest {ms['newest_accuracy'][0]:.3f} forget {ms['forgetting'][0]:.3f} "
                f"s/task {ms['seconds_per_task_median'][0]:.2f}",
                flush=True,
            )
    joint = {}
    for stream_name in ("permuted", "split-class"):
        accs = [joint_run(stream_name, seed, epochs) for seed in seeds]
        m = sum(accs) / len(accs)
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        joint[stream_name] = [m, sd]
        print(f"joint training reference {stream_name}: {m:.3f} +- {sd:.3f}", flush=True)
    rem = remembering(seeds)
    speed = timing(repeats=1 if args.quick else 3)
    sweeps: dict[str, Any] = {}
    if not args.quick:
        for method, (knob, values) in SWEEPS.items():
            sweeps[method] = {"knob": knob, "points": []}
            for v in values:
                hyper = dict(CONFIG["permuted"][method])
                hyper[knob] = v
                rs = [one_run("permuted", method, hyper, seed, epochs) for seed in SWEEP_SEEDS]
                ms = mean_std(
                    [{k: val for k, val in r.items() if isinstance(val, float)} for r in rs]
                )
                sweeps[method]["points"].append(
                    {"value": "inf" if math.isinf(v) else v, **{k: list(m) for k, m in ms.items()}}
                )
                print(
                    f"sweep {method:5s} {knob}={v:g}: avg {ms['average_accuracy'][0]:.3f} "
                    f"newest {ms['mean_newest_accuracy'][0]:.3f} forget {ms['forgetting'][0]:.3f}",
                    flush=True,
                )
    elapsed = time.perf_counter() - t_start

    result = {
        "benchmark": "continual",
        "machine": machine_info(),
        "settings": {
            "protocol": PROTOCOL,
            "seeds": seeds,
            "quick": args.quick,
            "remembering": REMEMBER,
            "sweep_seeds": SWEEP_SEEDS,
            "epochs": epochs,
            "config": {f: {m: _jsonable(h) for m, h in d.items()} for f, d in CONFIG.items()},
            "grids": {m: [_jsonable(h) for h in g] for m, g in GRIDS.items()},
            "selection": "final average accuracy on seed 99 (python benchmarks/bench_continual.py --tune)",
            "labels": LABELS,
        },
        "timing": speed,
        "table": table,
        "sweeps": sweeps,
        "joint": joint,
        "remembering": rem,
        "runs": runs,
        "total_seconds": round(elapsed, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))

    for stream_name, _ in streams:
        rows = []
        for key, _m in variants:
            r = table[stream_name][key]
            name = LABELS.get(key, "MESU (N = inf)")

            def f(k: str, r: dict[str, Any] = r) -> str:
                return f"{100 * r[k][0]:.1f} ± {100 * r[k][1]:.1f}"

            rows.append(
                [
                    name,
                    f("average_accuracy"),
                    f("newest_accuracy"),
                    f("forgetting"),
                    f"{r['seconds_per_task_median'][0]:.2f}",
                ]
            )
        print(f"\n### {stream_name} ({len(seeds)} seeds)\n")
        print(
            markdown_table(
                [
                    "method",
                    "final avg. acc. (%)",
                    "newest-task acc. (%)",
                    "forgetting (%)",
                    "s / task",
                ],
                rows,
            )
        )
    print(f"\nwrote {args.out} in {elapsed:.0f} s")


if __name__ == "__main__":
    main()
