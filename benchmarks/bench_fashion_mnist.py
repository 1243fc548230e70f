"""Fashion-MNIST benchmarks: the deep autoencoder, IVON on a CNN, permuted Fashion-MNIST.

Run:  nice .venv/bin/python benchmarks/bench_fashion_mnist.py autoencoder [--size run]
      nice .venv/bin/python benchmarks/bench_fashion_mnist.py ivon_cnn    [--size run]
      nice .venv/bin/python benchmarks/bench_fashion_mnist.py permuted    [--size run]

Needs the Fashion-MNIST IDX files (Debian's ``dataset-fashion-mnist``, or ``IGBOOK_FASHION_MNIST``
pointing at a directory holding them). Each sub-command writes
benchmarks/results/fashion_mnist_<name>.json and prints a table. The set-ups and their sizes are
the constants of :mod:`igbook.experiments.fashion_mnist`: ``--size run`` (default) is what the
committed results used (subsets sized for a few minutes on two cores), ``--size full`` the whole
training set (up to about 30 minutes each on two cores; not run for the committed results),
``--size smoke`` a few seconds (prints, writes nothing unless ``--out`` is given). Two torch
threads.

autoencoder  784-1000-500-250-30-250-500-1000-784 (tanh, Bernoulli likelihood), SGD with
             momentum 0.9, Adam and K-FAC, each tuned over three learning rates (loss after
             ``tune_steps`` steps, seed 0), then timed to the target loss (entropy floor +
             ``target_excess`` nats per image): iterations, wall and CPU seconds of optimizer
             steps; the K-FAC/Adam ratios are put next to the digits ones of results/kfac.json.
ivon_cnn     IVON against AdamW on a 2-conv CNN: test accuracy, NLL, Brier and ECE (10 bins)
             of AdamW, IVON's mean network and IVON's posterior predictive, over seeds.
permuted     10 permuted tasks, every method of igbook.continual with the digits protocol and
             hyperparameters (igbook.experiments.continual): average and newest-task accuracy
             and forgetting over seeds, next to the permuted-digits numbers (results/continual.json).
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

from igbook.continual import make_learner, mean_std, run_stream
from igbook.experiments import fashion_mnist as fm
from igbook.experiments.blr import evaluate_classifier
from igbook.experiments.continual import CONFIG, LABELS, PROTOCOL
from igbook.experiments.kfac_autoencoder import entropy_floor, time_to_target, train_autoencoder
from igbook.experiments.models import mlp

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
    }


def _digits(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(str(c).rjust(w) for c, w in zip(r, widths, strict=True)))


# --------------------------------------------------------------------------------------------
# autoencoder
# --------------------------------------------------------------------------------------------


def autoencoder(size: str) -> dict[str, Any]:
    s = fm.AUTOENCODER[size]
    x, _, _, _ = fm.images_subset(s["train_images"])
    floor = entropy_floor(x)
    target = floor + s["target_excess"]
    common = {"widths": fm.MG_WIDTHS, "batch_size": s["batch_size"]}
    tuning, tuned = [], {}
    for method, grid in fm.AUTOENCODER_GRIDS.items():
        best = None
        for cfg in grid:
            r = train_autoencoder(
                method,
                x,
                steps=s["tune_steps"],
                eval_every=s["tune_steps"],
                seed=0,
                **common,
                **cfg,
            )
            loss = float("inf") if r.diverged else r.losses[-1]
            knob = "kl_clip" if method == "kfac" else "lr"
            tuning.append({"method": method, knob: cfg[knob], "excess_loss": loss - floor})
            print(
                f"  tune {method:5s} {knob} {cfg[knob]:<7g} excess {loss - floor:10.2f}", flush=True
            )
            if best is None or loss < best[0]:
                best = (loss, cfg)
        tuned[method] = best[1]  # type: ignore[index]
    runs = []
    for seed in s["seeds"]:
        for method in ("kfac", "adam", "sgd"):
            r = train_autoencoder(
                method,
                x,
                steps=s["max_steps"][method],
                eval_every=s["eval_every"],
                seed=seed,
                target=target,
                time_budget=s["time_budget"],
                **common,
                **tuned[method],
            )
            hit = time_to_target(r, target)
            print(f"  run {method:5s} seed {seed}: {hit or 'target not reached'}", flush=True)
            runs.append((method, r, hit))
    summary: dict[str, dict[str, Any]] = {}
    for method in ("sgd", "adam", "kfac"):
        mine = [(r, h) for m, r, h in runs if m == method]
        reached = all(h is not None for _, h in mine)
        pick = (
            [h for _, h in mine]
            if reached
            else [(r.iterations[-1], r.seconds[-1], r.cpu_seconds[-1]) for r, _ in mine]
        )
        summary[method] = {
            "lr": tuned[method]["lr"],
            "kl_clip": tuned[method].get("kl_clip"),
            "reached": reached,
            "iterations": statistics.median(p[0] for p in pick),
            "wall_seconds": round(statistics.median(p[1] for p in pick), 2),
            "cpu_seconds": round(statistics.median(p[2] for p in pick), 2),
            "final_excess_loss": round(statistics.median(r.losses[-1] for r, _ in mine) - floor, 2),
            "ms_per_step": round(
                1e3 * statistics.median(r.seconds[-1] / max(r.iterations[-1], 1) for r, _ in mine),
                1,
            ),
        }
    comparison: dict[str, dict[str, Any]] = {}
    k, a = summary["kfac"], summary["adam"]
    if (
        k["reached"]
        and a["reached"]
        and min(a["iterations"], a["wall_seconds"], a["cpu_seconds"]) > 0
    ):
        comparison["Fashion-MNIST (this run)"] = {
            "kfac_over_adam_iterations": round(k["iterations"] / a["iterations"], 3),
            "kfac_over_adam_wall": round(k["wall_seconds"] / a["wall_seconds"], 3),
            "kfac_over_adam_cpu": round(k["cpu_seconds"] / a["cpu_seconds"], 3),
        }
    digits = _digits("kfac")
    if digits is not None:
        dk, da = digits["summary"]["kfac"], digits["summary"]["adam"]
        comparison["digits (results/kfac.json)"] = {
            "kfac_over_adam_iterations": round(dk["iterations"] / da["iterations"], 3),
            "kfac_over_adam_wall": round(dk["seconds"] / da["seconds"], 3),
            "kfac_over_adam_cpu": round(dk["cpu_seconds"] / da["cpu_seconds"], 3),
        }
    print(f"\nAutoencoder {fm.MG_WIDTHS}, target = floor {floor:.1f} + {s['target_excess']}")
    cols = ["lr", "reached", "iterations", "wall_seconds", "cpu_seconds", "final_excess_loss"]
    _table(["method", *cols], [[m, *(str(v[c]) for c in cols)] for m, v in summary.items()])
    for name, c in comparison.items():
        print(f"  K-FAC/Adam {name}: {c}")
    return {
        "benchmark": "Martens-Grosse deep autoencoder on Fashion-MNIST: K-FAC, Adam, SGD",
        "machine": machine(),
        "settings": {
            "size": size,
            **{k: v for k, v in s.items() if k != "max_steps"},
            "max_steps": s["max_steps"],
            "widths": list(fm.MG_WIDTHS),
            "activation": "tanh",
            "likelihood": "Bernoulli (sigmoid cross-entropy summed over 784 pixels)",
            "entropy_floor": round(floor, 3),
            "target_loss": round(target, 3),
            "grids": {
                m: [c["kl_clip"] if m == "kfac" else c["lr"] for c in g]
                for m, g in fm.AUTOENCODER_GRIDS.items()
            },
            "grid_knob": {"sgd": "lr", "adam": "lr", "kfac": "kl_clip (lr 0.1, damping 0.1)"},
        },
        "tuning": tuning,
        "summary": summary,
        "kfac_over_adam": comparison,
        "curves": {
            f"{m} seed {r.config['seed']}": {
                "iterations": r.iterations,
                "wall_seconds": [round(v, 2) for v in r.seconds],
                "excess_loss": [round(v - floor, 2) for v in r.losses],
            }
            for m, r, _ in runs
        },
    }


# --------------------------------------------------------------------------------------------
# IVON on a CNN
# --------------------------------------------------------------------------------------------


def ivon_cnn(size: str) -> dict[str, Any]:
    s = fm.IVON_CNN[size]
    x, y, xt, yt = fm.images_subset(s["train_images"], s["test_images"], flatten=False)
    per_seed = []
    for seed in s["seeds"]:
        for name in ("AdamW", "IVON"):
            trained = fm.train_cnn(
                name, x, y, epochs=s["epochs"], batch_size=s["batch_size"], seed=seed
            )
            for label, (m, _) in evaluate_classifier(
                trained, xt, yt, num_samples=s["num_samples"]
            ).items():
                row = {"seed": seed, "method": label, **m._asdict()}
                row["train_seconds"] = round(trained.seconds, 2)
                per_seed.append(row)
                print(
                    f"  {label:9s} seed {seed}: "
                    + ", ".join(f"{k} {v:.4f}" for k, v in m._asdict().items()),
                    flush=True,
                )
    summary: dict[str, dict[str, Any]] = {}
    for label in ("AdamW", "IVON@mean", "IVON"):
        rows = [r for r in per_seed if r["method"] == label]
        ms = mean_std([{k: float(r[k]) for k in ("accuracy", "nll", "brier", "ece")} for r in rows])
        summary[label] = {f"{k}_mean": round(v[0], 4) for k, v in ms.items()}
        summary[label].update({f"{k}_sd": round(v[1], 4) for k, v in ms.items()})
        summary[label]["train_seconds_median"] = statistics.median(r["train_seconds"] for r in rows)
    digits = _digits("ivon")
    comparison = {}
    if digits is not None:
        for label, v in digits["digits"]["summary"].items():
            comparison[f"digits MLP: {label}"] = {
                k: round(v[k]["mean"], 4) for k in ("accuracy", "nll", "ece")
            }
    for label, v in summary.items():
        comparison[f"Fashion-MNIST CNN: {label}"] = {
            k: v[f"{k}_mean"] for k in ("accuracy", "nll", "ece")
        }
    print(f"\nIVON vs AdamW, CNN on Fashion-MNIST, seeds {s['seeds']}")
    cols = ["accuracy", "nll", "ece"]
    _table(
        ["method", *cols],
        [
            [m, *(f"{v[c + '_mean']:.4f} +- {v[c + '_sd']:.4f}" for c in cols)]
            for m, v in summary.items()
        ],
    )
    return {
        "benchmark": "IVON against AdamW on a small CNN, Fashion-MNIST",
        "machine": machine(),
        "settings": {
            "size": size,
            **s,
            "network": "conv3x3(8)-ReLU-maxpool-conv3x3(16)-ReLU-maxpool-linear(784->10)",
            "IVON": {**fm.IVON_FASHION, "ess": s["train_images"]},
            "AdamW": fm.ADAMW_FASHION,
            "ece_bins": 10,
            "selection": "not tuned on Fashion-MNIST",
        },
        "summary": summary,
        "comparison_with_digits": comparison,
        "per_seed": per_seed,
    }


# --------------------------------------------------------------------------------------------
# permuted Fashion-MNIST
# --------------------------------------------------------------------------------------------

PUBLISHED = (
    "Permuted MNIST, published: EWC (Kirkpatrick et al. 2017) and SI (Zenke et al. 2017) keep "
    "old tasks far better than plain SGD, with SI close to EWC; online EWC (Schwarz et al. 2018) "
    "keeps one running penalty instead of one per task. In a 200-task stream (one pass, batch 1) "
    "MESU (Bonnet et al. 2025) has the best newest-task accuracy (94.7%), ahead of stream EWC, "
    "SGD, online EWC and SI (93.3 to 91.1%) and of FOO-VB, the diagonal form of BGD (Zeno et al. "
    "2018; 68.8%), while forgetting tasks older than its window by design. FOPNG (Garg et al. "
    "2026): no published permuted-MNIST numbers are compared here."
)


def permuted(size: str) -> dict[str, Any]:
    s = fm.PERMUTED[size]
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in LABELS}
    for seed in s["seeds"]:
        stream = fm.permuted_fashion_mnist(
            s["tasks"], train_images=s["train_images"], test_images=s["test_images"], seed=seed
        )
        for method in LABELS:
            model = mlp((784, *PROTOCOL["hidden"], 10), activation="relu", seed=seed)
            learner = make_learner(method, model, seed=seed, **CONFIG["permuted"][method])
            res = run_stream(
                learner, stream, epochs=s["epochs"], batch_size=PROTOCOL["batch_size"], seed=seed
            )
            out = res.summary()
            out["accuracy_matrix"] = [[round(float(v), 4) for v in row] for row in res.accuracy]
            runs[method].append(out)
            print(
                f"  {LABELS[method]:10s} seed {seed}: average {out['average_accuracy']:.3f}, "
                f"newest {out['newest_accuracy']:.3f}, forgetting {out['forgetting']:.3f}, "
                f"{out['seconds_per_task']:.2f} s/task",
                flush=True,
            )
    keys = ("average_accuracy", "newest_accuracy", "forgetting", "seconds_per_task")
    table: dict[str, dict[str, Any]] = {}
    for method, rs in runs.items():
        ms = mean_std([{k: r[k] for k in keys} for r in rs])
        row: dict[str, Any] = {}
        for k in keys:
            row[f"{k}_mean"] = round(ms[k][0], 4)
            row[f"{k}_sd"] = round(ms[k][1], 4)
        table[LABELS[method]] = row
    digits = _digits("continual")
    ranking = sorted(table, key=lambda m: -table[m]["average_accuracy_mean"])
    comparison: dict[str, dict[str, Any]] = {}
    if digits is not None:
        dt = digits["table"]["permuted"]
        for method in LABELS:
            comparison[LABELS[method]] = {
                "fashion_average": table[LABELS[method]]["average_accuracy_mean"],
                "digits_average": round(dt[method]["average_accuracy"][0], 4),
                "fashion_forgetting": table[LABELS[method]]["forgetting_mean"],
                "digits_forgetting": round(dt[method]["forgetting"][0], 4),
            }
    print(f"\nPermuted Fashion-MNIST, {s['tasks']} tasks, seeds {s['seeds']}")
    cols = ["average_accuracy", "newest_accuracy", "forgetting", "seconds_per_task"]
    _table(
        ["method", *cols],
        [
            [m, *(f"{v[c + '_mean']:.3f} +- {v[c + '_sd']:.3f}" for c in cols)]
            for m, v in table.items()
        ],
    )
    print("  ranking by average accuracy:", " > ".join(ranking))
    return {
        "benchmark": "Permuted Fashion-MNIST: every continual-learning method of igbook",
        "machine": machine(),
        "settings": {
            "size": size,
            **s,
            "network": f"MLP 784-{PROTOCOL['hidden'][0]}-10 (ReLU), float32",
            "batch_size": PROTOCOL["batch_size"],
            "hyperparameters": (
                "igbook.experiments.continual.CONFIG['permuted'] (tuned on permuted digits, "
                "not re-tuned)"
            ),
        },
        "table": table,
        "ranking_by_average_accuracy": " > ".join(ranking),
        "note": PUBLISHED,
        "comparison_with_permuted_digits": comparison,
        "runs": {LABELS[m]: rs for m, rs in runs.items()},
    }


BENCHMARKS = {"autoencoder": autoencoder, "ivon_cnn": ivon_cnn, "permuted": permuted}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("name", choices=sorted(BENCHMARKS))
    parser.add_argument("--size", choices=fm.SIZES, default="run")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    data = BENCHMARKS[args.name](args.size)
    data["total_seconds"] = round(time.perf_counter() - t0, 1)
    print(f"total {data['total_seconds']} s")
    out = args.out
    if out is None and args.size != "smoke":
        out = RESULTS / f"fashion_mnist_{args.name}.json"
    if out is not None:
        out.write_text(json.dumps(data, indent=1) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
