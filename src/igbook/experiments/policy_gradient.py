r"""The policy-gradient chapter's set-ups: tabular MDPs, the LQR, and the CartPole comparison.

Constants shared by ``book/policy_gradient.ipynb``, ``tests/test_rl.py`` and
``benchmarks/bench_policy_gradient.py``: the random MDPs of the rate experiment, the two-state
plateau MDP and its starting logits, the LQR, and the CartPole protocol (budget, seeds, the
igbook hyperparameters, the stable-baselines3 settings that match them)
:cite:`agarwal2021theory,schulman2015trust,schulman2017proximal,raffin2021stable`.
"""

from __future__ import annotations

from typing import Any

import torch

from igbook.rl import ScalarLQR, TabularMDP, TrainConfig, random_mdp, two_state_mdp

__all__ = [
    "RATE_MDP_SEEDS",
    "RATE_SHAPE",
    "rate_mdps",
    "PLATEAU_LOGITS",
    "plateau_mdp",
    "LQR",
    "CARTPOLE",
    "CARTPOLE_STEPS",
    "CARTPOLE_SEEDS",
    "CARTPOLE_CONFIG",
    "LIVE_STEPS",
    "sb3_kwargs",
]

#: the random MDPs of the convergence-rate experiment: (states, actions, gamma)
RATE_SHAPE = (10, 4, 0.9)
RATE_MDP_SEEDS = (0, 1, 2, 3)

#: the two-state MDP's starting logits: "stay in state 0" with probability 1 - 3.4e-4
PLATEAU_LOGITS = ((4.0, -4.0), (0.0, 0.0))

#: the scalar LQR of the chapter (unstable open loop: a > 1)
LQR = ScalarLQR(a=1.1, b=0.5, q=1.0, r=0.5, gamma=0.9, noise_std=0.2, initial_std=1.0)

#: the CartPole comparison: environment, budget in environment steps, seeds
CARTPOLE = "CartPole-v1"
CARTPOLE_STEPS = 20_000
CARTPOLE_SEEDS = (0, 1, 2)
#: igbook's hyperparameters (one batch of 1024 steps per update; a 32-unit tanh policy)
CARTPOLE_CONFIG = TrainConfig()
#: the chapter's live run: one short TRPO run
LIVE_STEPS = 3072


def rate_mdps() -> list[TabularMDP]:
    """The seeded random MDPs of the rate experiment."""
    s, a, g = RATE_SHAPE
    return [random_mdp(s, a, g, seed=k) for k in RATE_MDP_SEEDS]


def plateau_mdp() -> tuple[TabularMDP, torch.Tensor]:
    """The two-state MDP and the near-deterministic starting logits of the plateau figure."""
    return two_state_mdp(0.9), torch.tensor(PLATEAU_LOGITS, dtype=torch.float64)


def sb3_kwargs(seed: int) -> dict[str, Any]:
    """stable-baselines3 / sb3-contrib settings matching :data:`CARTPOLE_CONFIG`.

    The same batch of 1024 steps per update, discount, GAE lambda, a 32-unit tanh policy and a
    64-unit critic; TRPO with the same KL radius and CG damping, PPO with the same clip, epochs
    and minibatch size. Everything else is the library's default.
    """
    cfg = CARTPOLE_CONFIG
    return {
        "n_steps": cfg.batch_steps,
        "gamma": cfg.gamma,
        "gae_lambda": cfg.lam,
        "seed": seed,
        "device": "cpu",
        "policy_kwargs": {"net_arch": {"pi": list(cfg.hidden), "vf": [64]}},
    }
