"""igbook's optimizers on 1 and 2 processes (DDP, gloo, CPU): time per step and communication.

Run:  .venv/bin/python benchmarks/bench_distributed.py           (a few minutes on 2 cores)
      .venv/bin/python benchmarks/bench_distributed.py --quick   (a smoke run)

The model, data and loss are those of igbook.experiments.kfac_autoencoder (the 64-256-128-64-16-
64-128-256-64 tanh autoencoder of the digits, Bernoulli likelihood, global minibatches of 256).
One process takes the whole batch; two processes (torch.multiprocessing, gloo on localhost, one
thread each) take 128 each, wrapped in DistributedDataParallel, which averages the gradients.
Per optimizer: the median time of a training step (forward, K-FAC factor update where due,
backward, step) on rank 0, and the median time per step spent in igbook's own reductions
(igbook._distributed: K-FAC's A and G, NGD's Fisher-vector products; IVON with a shared sample
reduces nothing itself). On a 2-core machine the point is correctness and overhead, not speed-up:
the two ranks share the cores that one process had to itself.

Writes benchmarks/results/distributed.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP

from igbook._distributed import communication_seconds
from igbook.experiments.kfac_autoencoder import (
    AUTOENCODER_WIDTHS,
    BATCH_SIZE,
    KFAC_FIXED,
    digits_images,
)
from igbook.experiments.models import mlp
from igbook.kfac import KFAC, negative_log_likelihood
from igbook.natgrad.networks import NaturalGradientDescent
from igbook.optim import IVON

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "distributed.json"
OPTIMIZERS = ("adam", "kfac", "ivon", "ngd")


def make(name: str, model: torch.nn.Module) -> Any:
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=1e-3)
    if name == "kfac":
        kw = {k: v for k, v in KFAC_FIXED.items() if k != "momentum"}
        return KFAC(model, likelihood="bernoulli", lr=0.1, damping=0.1, **kw)
    if name == "ivon":
        return IVON(model.parameters(), lr=0.1, ess=1347.0, seed=0)
    return NaturalGradientDescent(
        model.parameters(), model, "bernoulli", lr=0.1, damping=0.1, cg_max_iter=10
    )


def run(name: str, rank: int, world: int, steps: int) -> dict[str, float]:
    images = digits_images()
    model = mlp(AUTOENCODER_WIDTHS, activation="tanh", seed=0, dtype=images.dtype)
    net = DDP(model) if world > 1 else model
    opt = make(name, model)
    per_rank = BATCH_SIZE // world
    gen = torch.Generator().manual_seed(0)
    times, comms = [], []
    for _ in range(steps):
        idx = torch.randint(0, len(images), (BATCH_SIZE,), generator=gen)
        xb = images[idx[rank * per_rank : (rank + 1) * per_rank]]
        if world > 1:
            dist.barrier()
        c0 = communication_seconds()[0]
        t0 = time.perf_counter()
        if name == "ivon":
            with opt.sampled_params(train=True):
                opt.zero_grad()
                negative_log_likelihood(net(xb), xb, likelihood="bernoulli").backward()
            opt.step()
        else:
            out = net(xb)
            loss = negative_log_likelihood(out, xb, likelihood="bernoulli")
            opt.zero_grad()
            if name == "kfac":
                opt.update_factors(out)
            loss.backward()
            if name == "ngd":
                opt.step(inputs=xb)
            else:
                opt.step()
        times.append(time.perf_counter() - t0)
        comms.append(communication_seconds()[0] - c0)
    skip = max(1, steps // 5)  # warm-up: the first inverses, allocator, gloo connections
    return {
        "step_ms": 1e3 * statistics.median(times[skip:]),
        "igbook_comm_ms": 1e3 * statistics.median(comms[skip:]),
        "igbook_comm_ms_mean": 1e3 * statistics.fmean(comms[skip:]),
    }


def worker(rank: int, world: int, port: int, steps: int, out: str) -> None:
    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
        )
    try:
        res = {name: run(name, rank, world, steps) for name in OPTIMIZERS}
        if rank == 0:
            Path(out).write_text(json.dumps(res))
    finally:
        if world > 1:
            dist.destroy_process_group()


def launch(world: int, steps: int, tmp: Path) -> dict[str, dict[str, float]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp / f"world{world}.json"
    mp.start_processes(
        worker, args=(world, port, steps, str(out)), nprocs=world, start_method="spawn"
    )
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (not written)")
    args = parser.parse_args()
    steps = 10 if args.quick else 60
    tmp = OUT.parent / ".distributed_tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    one = launch(1, steps, tmp)
    two = launch(2, steps, tmp)
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()
    rows = {}
    print(f"{'optimizer':10s} {'1 proc ms':>10s} {'2 procs ms':>11s} {'ratio':>6s} {'comm ms':>8s}")
    for name in OPTIMIZERS:
        a, b = one[name], two[name]
        rows[name] = {
            "1 process: step ms": a["step_ms"],
            "2 processes: step ms": b["step_ms"],
            "2 / 1": b["step_ms"] / a["step_ms"],
            "igbook reductions ms/step (median)": b["igbook_comm_ms"],
            "igbook reductions ms/step (mean)": b["igbook_comm_ms_mean"],
        }
        print(
            f"{name:10s} {a['step_ms']:10.2f} {b['step_ms']:11.2f} "
            f"{b['step_ms'] / a['step_ms']:6.2f} {b['igbook_comm_ms_mean']:8.2f}"
        )
    result = {
        "description": (
            "1 against 2 processes (DDP, gloo, one thread each) on the digits autoencoder of "
            "igbook.experiments.kfac_autoencoder, global batch 256: median time per step on "
            "rank 0, and time per step in igbook's own all_reduce calls (K-FAC: A and G every "
            f"{KFAC_FIXED['factor_period']} steps; NGD: every CG product, at most 10 per step)."
        ),
        "quick": args.quick,
        "steps": steps,
        "per_optimizer": rows,
        "machine": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average_1min": os.getloadavg()[0],
        },
    }
    if not args.quick:
        OUT.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
