"""Shampoo and SOAP: the cost of one step on the digits autoencoder, in SGD steps and Adam steps.

Run:  .venv/bin/python benchmarks/bench_shampoo_soap.py           (about a minute on 2 idle cores)
      .venv/bin/python benchmarks/bench_shampoo_soap.py --quick   (a smoke run, a few seconds)

The model, data and loss are those of igbook.experiments.kfac_autoencoder (the 64-256-128-64-16-
64-128-256-64 tanh autoencoder of the digits, Bernoulli likelihood, minibatches of 256). One
"step" is what a training loop pays per iteration: zero_grad, forward, backward, optimizer.step.
Optimizers: SGD with momentum 0.9, Adam, igbook.optim.Shampoo and igbook.optim.SOAP (skipped if
it cannot be imported) with the preconditioner (inverse roots, eigenbases) recomputed every k
steps, k in (1, 10); SOAP at k = 10 with one-sided preconditioning of the dimensions above 128
(max_precondition_dim=128: the 256-wide dimensions keep the identity basis); and igbook.optim.Muon
(Newton-Schulz in bfloat16, AdamW for the output layer and the biases). Steps are timed in
interleaved rounds after a warm-up (so every optimizer has recomputed its preconditioner at least
once), one thread; medians.

Writes benchmarks/results/shampoo_soap.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from igbook.experiments.kfac_autoencoder import AUTOENCODER_WIDTHS, BATCH_SIZE, digits_images
from igbook.experiments.models import mlp
from igbook.kfac import negative_log_likelihood
from igbook.optim import Muon, Shampoo, muon_param_groups

try:
    from igbook.optim import SOAP
except ImportError:  # pragma: no cover - written by another change
    SOAP = None

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "shampoo_soap.json"
FREQUENCIES = (1, 10)


def make_optimizer(name: str, params: Any, k: int, model: Any = None) -> torch.optim.Optimizer:
    if name == "muon":
        return Muon(muon_param_groups(model), lr=0.02, weight_decay=0.0)
    if name == "soap one-sided":  # dimensions above 128 keep the identity basis
        assert SOAP is not None
        return SOAP(params, lr=3e-3, precondition_frequency=k, max_precondition_dim=128)
    if name == "sgd":
        return torch.optim.SGD(params, lr=0.01, momentum=0.9)
    if name == "adam":
        return torch.optim.Adam(params, lr=1e-3)
    if name == "shampoo":
        return Shampoo(params, lr=1e-3, eps=1e-6, momentum=0.9, precondition_frequency=k)
    assert SOAP is not None
    return SOAP(params, lr=3e-3, precondition_frequency=k)


def stepper(name: str, k: int, images: torch.Tensor) -> Callable[[], None]:
    model = mlp(AUTOENCODER_WIDTHS, activation="tanh", seed=0, dtype=images.dtype)
    opt = make_optimizer(name, model.parameters(), k, model)
    gen = torch.Generator().manual_seed(0)
    n = images.shape[0]

    def step() -> None:
        idx = torch.randint(0, n, (BATCH_SIZE,), generator=gen)
        x = images[idx]
        opt.zero_grad()
        negative_log_likelihood(model(x), x, likelihood="bernoulli").backward()
        opt.step()

    return step


def interleaved(steppers: dict[str, Callable[[], None]], rounds: int, per_round: int, warmup: int):
    for st in steppers.values():
        for _ in range(warmup):
            st()
    times: dict[str, list[float]] = {k: [] for k in steppers}
    keys = list(steppers)
    for r in range(rounds):
        order = keys[r % len(keys) :] + keys[: r % len(keys)]
        for key in order:
            t0 = time.perf_counter()
            for _ in range(per_round):
                steppers[key]()
            times[key].append((time.perf_counter() - t0) / per_round)
    return {k: statistics.median(v) for k, v in times.items()}, times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few rounds: checks that the script runs")
    args = ap.parse_args()
    torch.set_num_threads(1)
    images = digits_images()
    rounds, per_round = (2, 10) if args.quick else (10, 20)
    names = ["shampoo"] + (["soap"] if SOAP is not None else [])
    steppers = {"sgd": stepper("sgd", 1, images), "adam": stepper("adam", 1, images)}
    for name in names:
        for k in FREQUENCIES:
            steppers[f"{name} k={k}"] = stepper(name, k, images)
    if SOAP is not None:
        steppers["soap one-sided k=10"] = stepper("soap one-sided", 10, images)
    steppers["muon"] = stepper("muon", 1, images)
    med, raw = interleaved(steppers, rounds, per_round, warmup=2 * max(FREQUENCIES) + 1)
    sgd, adam = med["sgd"], med["adam"]
    print(f"{'optimizer':20s} {'ms/step':>9s} {'x SGD':>7s} {'x Adam':>7s}")
    rows = {}
    for key, t in med.items():
        rows[key] = {"seconds": t, "in_sgd_steps": t / sgd, "in_adam_steps": t / adam}
        print(f"{key:20s} {1e3 * t:9.3f} {t / sgd:7.2f} {t / adam:7.2f}")
    if SOAP is None:
        print("SOAP: igbook.optim.SOAP not importable, skipped")
    result = {
        "description": __doc__.splitlines()[0],
        "quick": args.quick,
        "widths": list(AUTOENCODER_WIDTHS),
        "batch_size": BATCH_SIZE,
        "frequencies": list(FREQUENCIES),
        "rounds": rounds,
        "steps_per_round": per_round,
        "threads": torch.get_num_threads(),
        "soap_included": SOAP is not None,
        "median": rows,
        "per_round_seconds": raw,
        "machine": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "platform": platform.platform(),
        },
    }
    if not args.quick:
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
