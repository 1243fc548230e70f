"""Train a small classifier with an igbook optimizer under DistributedDataParallel (CPU, gloo).

Run on 2 processes of this machine::

    torchrun --standalone --nproc_per_node=2 examples/ddp_training.py --optimizer kfac

Every rank builds the same model (same seed), takes its shard of each batch, and wraps the model
in ``DistributedDataParallel``, which averages the gradients. igbook's optimizers average the
curvature statistics they compute themselves (K-FAC's A and G, NGD's Fisher-vector products,
VOGN's gradient and curvature); IVON and BGD draw the same weight sample on every rank (same
seed). ``tests/test_distributed.py`` runs :func:`train` on 2 ranks and checks it against one
process with the whole batch.
"""

from __future__ import annotations

import argparse

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from igbook.kfac import KFAC
from igbook.natgrad.networks import NaturalGradientDescent
from igbook.optim import IVON

OPTIMIZERS = ("kfac", "ngd", "ivon")


def make_problem(n: int = 64, seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The same model and data on every rank (seeded)."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3)).double()
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(n, 8, generator=g, dtype=torch.float64)
    y = (x[:, :3].argmax(1) + (x[:, 3] > 1).long()) % 3
    return model, x, y


def train(optimizer: str = "kfac", steps: int = 10, batch: int = 16) -> list[float]:
    """Train with ``optimizer`` on this rank's shard of each global batch; returns the losses."""
    world = dist.get_world_size() if dist.is_initialized() else 1
    rank = dist.get_rank() if dist.is_initialized() else 0
    model, x, y = make_problem()
    net = DDP(model) if world > 1 else model
    if optimizer == "kfac":
        opt = KFAC(model, likelihood="categorical", fisher_type="exact", lr=0.3, damping=1e-2)
    elif optimizer == "ngd":
        opt = NaturalGradientDescent(
            model.parameters(), model, "categorical", lr=0.5, damping=0.1, cg_rtol=1e-12
        )
    elif optimizer == "ivon":
        opt = IVON(model.parameters(), lr=0.05, ess=len(x), seed=0)  # same seed on every rank
    else:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    losses = []
    for step in range(steps):
        start = (step * batch) % len(x)
        per_rank = batch // world
        lo = start + rank * per_rank
        xb, yb = x[lo : lo + per_rank], y[lo : lo + per_rank]
        if optimizer == "kfac":
            out = net(xb)
            loss = F.cross_entropy(out, yb)
            opt.zero_grad()
            opt.update_factors(out)  # A, G averaged over the ranks
            loss.backward()  # DDP averages the gradients
            opt.step()
        elif optimizer == "ngd":
            opt.zero_grad()
            loss = F.cross_entropy(net(xb), yb)
            loss.backward()
            opt.step(inputs=xb)  # Fisher-vector products averaged over the ranks
        else:
            with opt.sampled_params(train=True):  # the same sample on every rank
                opt.zero_grad()
                loss = F.cross_entropy(net(xb), yb)
                loss.backward()
            opt.step()
        losses.append(float(loss.detach()))
    return losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="kfac")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    dist.init_process_group("gloo")  # torchrun sets RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT
    try:
        losses = train(args.optimizer, args.steps)
        if dist.get_rank() == 0:
            print(f"{args.optimizer}: loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
