"""CartPole: igbook's PG, NPG, TRPO and PPO against sb3-contrib's TRPO and stable-baselines3's PPO.

Run:  nice .venv/bin/python benchmarks/bench_policy_gradient.py           (about 10 min on 2 cores)
      nice .venv/bin/python benchmarks/bench_policy_gradient.py --quick   (a smoke run)

Protocol (igbook.experiments.policy_gradient): CartPole-v1, the same budget of environment steps
and the same seeds for every method, one update per batch of 1024 steps, GAE (gamma 0.99,
lambda 0.95), a 32-unit tanh policy and a 64-unit critic. igbook: PG and NPG with fixed rates,
TRPO (CG on the curvature core's Fisher-vector products, exact-KL line search), PPO (clipped
surrogate, 10 epochs of minibatch Adam). References: sb3-contrib TRPO and stable-baselines3 PPO
with the matching settings (everything else their defaults). Reported per method: the greedy
return of the final policy over 10 seeded evaluation episodes (mean and standard deviation over
seeds, and each seed), and environment steps per second of training (one thread, everything
included: acting, critic fitting, updates). Writes benchmarks/results/policy_gradient.json.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from igbook.experiments.policy_gradient import (
    CARTPOLE,
    CARTPOLE_CONFIG,
    CARTPOLE_SEEDS,
    CARTPOLE_STEPS,
    sb3_kwargs,
)
from igbook.rl import evaluate_policy, train_policy

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "policy_gradient.json"
EVAL_EPISODES = 10
EVAL_SEED = 1000


def run_igbook(method: str, steps: int, seed: int) -> tuple[float, float]:
    res = train_policy(method, CARTPOLE, steps, seed=seed, config=CARTPOLE_CONFIG)
    assert res.policy is not None
    ret = evaluate_policy(res.policy, CARTPOLE, EVAL_EPISODES, seed=EVAL_SEED)
    return ret, res.steps_per_second


def run_sb3(name: str, steps: int, seed: int) -> tuple[float, float]:
    import gymnasium as gym
    from sb3_contrib import TRPO
    from stable_baselines3 import PPO

    cfg = CARTPOLE_CONFIG
    kw = sb3_kwargs(seed)
    env = gym.make(CARTPOLE)
    if name == "sb3-contrib TRPO":
        model = TRPO(
            "MlpPolicy",
            env,
            target_kl=cfg.max_kl,
            cg_damping=cfg.damping,
            cg_max_steps=cfg.cg_iters,
            **kw,
        )
    else:
        model = PPO(
            "MlpPolicy",
            env,
            clip_range=cfg.ppo_clip,
            n_epochs=cfg.ppo_epochs,
            batch_size=cfg.ppo_minibatch,
            learning_rate=cfg.ppo_lr,
            **kw,
        )
    t0 = time.perf_counter()
    model.learn(steps)
    sps = steps / (time.perf_counter() - t0)
    total = 0.0
    ev = gym.make(CARTPOLE)
    for e in range(EVAL_EPISODES):
        obs, _ = ev.reset(seed=EVAL_SEED + e)
        end = False
        while not end:
            a, _ = model.predict(obs, deterministic=True)
            obs, r, term, trunc, _ = ev.step(int(a))
            total += float(r)
            end = term or trunc
    return total / EVAL_EPISODES, sps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one seed, 2048 steps (smoke run)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    steps = 2048 if args.quick else CARTPOLE_STEPS
    seeds = CARTPOLE_SEEDS[:1] if args.quick else CARTPOLE_SEEDS
    methods = [
        "igbook PG",
        "igbook NPG",
        "igbook TRPO",
        "igbook PPO",
        "sb3-contrib TRPO",
        "stable-baselines3 PPO",
    ]
    rows: dict[str, dict[str, Any]] = {}
    for m in methods:
        rets, sps = [], []
        for seed in seeds:
            if m.startswith("igbook"):
                r, s = run_igbook(m.split()[1].lower(), steps, seed)
            else:
                r, s = run_sb3(m, steps, seed)
            rets.append(r)
            sps.append(s)
            print(f"{m:24s} seed {seed}: return {r:6.1f}  {s:6.0f} steps/s", flush=True)
        rows[m] = {
            "final greedy return (mean)": statistics.fmean(rets),
            "final greedy return (std over seeds)": statistics.stdev(rets)
            if len(rets) > 1
            else 0.0,
            "returns per seed": " / ".join(f"{r:.0f}" for r in rets),
            "environment steps per second (median)": statistics.median(sps),
        }
    comparison = {}
    n = len(seeds)
    for ours, ref in (("igbook TRPO", "sb3-contrib TRPO"), ("igbook PPO", "stable-baselines3 PPO")):
        a, b = rows[ours], rows[ref]
        diff = a["final greedy return (mean)"] - b["final greedy return (mean)"]
        se = math.sqrt(
            (
                a["final greedy return (std over seeds)"] ** 2
                + b["final greedy return (std over seeds)"] ** 2
            )
            / n
        )
        comparison[f"{ours} - {ref}"] = {
            "return difference": diff,
            "standard error": se,
            "within 2 standard errors or both at least 475": abs(diff) <= 2 * se
            or min(a["final greedy return (mean)"], b["final greedy return (mean)"]) >= 475,
            "throughput ratio (igbook / reference)": a["environment steps per second (median)"]
            / b["environment steps per second (median)"],
        }
    data = {
        "description": (
            f"CartPole-v1, {steps} environment steps per run, seeds {list(seeds)}: greedy return of "
            f"the final policy over {EVAL_EPISODES} evaluation episodes (500 is the maximum), and "
            "training throughput, one thread."
        ),
        "quick": args.quick,
        "settings": {
            "batch_steps": CARTPOLE_CONFIG.batch_steps,
            "gamma": CARTPOLE_CONFIG.gamma,
            "gae_lambda": CARTPOLE_CONFIG.lam,
            "policy_hidden": list(CARTPOLE_CONFIG.hidden),
            "pg_lr": CARTPOLE_CONFIG.pg_lr,
            "npg_lr": CARTPOLE_CONFIG.npg_lr,
            "max_kl": CARTPOLE_CONFIG.max_kl,
            "cg_damping": CARTPOLE_CONFIG.damping,
            "cg_iters": CARTPOLE_CONFIG.cg_iters,
            "ppo_lr": CARTPOLE_CONFIG.ppo_lr,
            "ppo_epochs": CARTPOLE_CONFIG.ppo_epochs,
            "ppo_minibatch": CARTPOLE_CONFIG.ppo_minibatch,
        },
        "machine": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "platform": platform.platform(),
            "threads": 1,
        },
        "methods": rows,
        "igbook against the references": comparison,
    }
    if not args.quick:
        OUT.write_text(json.dumps(data, indent=1) + "\n")
    print()
    print(f"{'method':24s} {'return mean':>12s} {'std':>6s} {'steps/s':>8s}")
    for m, r in rows.items():
        print(
            f"{m:24s} {r['final greedy return (mean)']:12.1f} "
            f"{r['final greedy return (std over seeds)']:6.1f} "
            f"{r['environment steps per second (median)']:8.0f}"
        )
    for k, c in comparison.items():
        print(
            f"{k}: {c['return difference']:+.1f} +- {c['standard error']:.1f}, "
            f"comparable: {c['within 2 standard errors or both at least 475']}, "
            f"throughput ratio {c['throughput ratio (igbook / reference)']:.2f}"
        )


if __name__ == "__main__":
    main()
