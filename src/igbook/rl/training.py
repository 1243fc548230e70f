r"""Actor-critic training loops for PG, NPG, TRPO and PPO on a discrete-action `gymnasium` task.

One loop for the four methods, so that they differ only in the policy update
(:mod:`igbook.rl.updates`): collect ``batch_steps`` transitions with the current policy, fit a
value network to the :math:`\lambda`-returns, compute normalized GAE advantages, update the policy
:cite:`schulman2016high,schulman2015trust,schulman2017proximal`. Every draw is seeded (the
environment's reset, the actions, the initializations, PPO's minibatches).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn

from igbook._validation import check_choice, check_integer, check_positive_real, check_seed
from igbook.rl.policies import CategoricalPolicy
from igbook.rl.rollouts import collect_rollout, gae
from igbook.rl.updates import npg_step_network, pg_step, ppo_clip_loss, trpo_step

__all__ = ["METHODS", "TrainConfig", "TrainResult", "train_policy", "evaluate_policy"]

METHODS = ("pg", "npg", "trpo", "ppo")


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of :func:`train_policy` (one set per method; defaults for CartPole)."""

    batch_steps: int = 1024
    hidden: tuple[int, ...] = (32,)
    gamma: float = 0.99
    lam: float = 0.95
    pg_lr: float = 2.0
    npg_lr: float = 1.0
    max_kl: float = 0.01
    damping: float = 0.1
    cg_iters: int = 10
    ppo_lr: float = 3e-3
    ppo_epochs: int = 10
    ppo_minibatch: int = 256
    ppo_clip: float = 0.2
    value_lr: float = 1e-2
    value_epochs: int = 10


@dataclass
class TrainResult:
    """Per-batch mean return of the episodes finished in the batch, steps done, wall time."""

    method: str
    steps: list[int] = field(default_factory=list)
    mean_returns: list[float] = field(default_factory=list)
    seconds: float = 0.0
    env_steps: int = 0
    policy: CategoricalPolicy | None = None

    @property
    def steps_per_second(self) -> float:
        return self.env_steps / self.seconds if self.seconds > 0 else float("nan")


def _fit_value(
    value: nn.Module, opt: torch.optim.Optimizer, obs, targets, epochs: int, gen
) -> None:
    n = obs.shape[0]
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, 256):
            idx = perm[i : i + 256]
            opt.zero_grad()
            loss = ((value(obs[idx])[:, 0] - targets[idx]) ** 2).mean()
            loss.backward()
            opt.step()


def train_policy(
    method: str,
    env_id: str = "CartPole-v1",
    total_steps: int = 20_000,
    *,
    seed: int = 0,
    config: TrainConfig | None = None,
) -> TrainResult:
    """Train a categorical policy with ``method`` (``pg``, ``npg``, ``trpo``, ``ppo``) for ``total_steps`` steps.

    PG and NPG step with a fixed rate (NPG through conjugate gradient on the policy Fisher); TRPO
    solves the KL trust region with the exact-KL line search; PPO runs minibatch Adam epochs on
    the clipped surrogate. Advantages are GAE, normalized per batch. The critic (one hidden layer
    of 64) is fitted by Adam on the :math:`\\lambda`-returns.
    """
    import gymnasium as gym

    method = check_choice(method, "method", METHODS)
    total = check_integer(total_steps, "total_steps", minimum=1)
    seed = check_seed(seed)
    cfg = TrainConfig() if config is None else config
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(cfg).__name__}")
    check_positive_real(cfg.gamma, "config.gamma")
    env = gym.make(env_id)
    n_obs = int(env.observation_space.shape[0])
    n_act = int(env.action_space.n)
    torch.manual_seed(seed)
    policy = CategoricalPolicy(n_obs, n_act, cfg.hidden, seed=seed)
    gval = torch.Generator().manual_seed(seed + 1)
    value = nn.Sequential(nn.Linear(n_obs, 64), nn.Tanh(), nn.Linear(64, 1)).double()
    vopt = torch.optim.Adam(value.parameters(), lr=cfg.value_lr)
    popt = torch.optim.Adam(policy.parameters(), lr=cfg.ppo_lr) if method == "ppo" else None
    gen = torch.Generator().manual_seed(seed + 2)
    state: dict = {}
    out = TrainResult(method)
    done = 0
    t0 = time.perf_counter()
    first = True
    while done < total:
        n = min(cfg.batch_steps, total - done)
        ro = collect_rollout(
            env, policy, n, generator=gen, seed=seed if first else None, state=state
        )
        first = False
        done += n
        with torch.no_grad():
            v, nv = value(ro.obs)[:, 0], value(ro.next_obs)[:, 0]
        adv = gae(ro.rewards, v, nv, ro.terminated, ro.episode_end, cfg.gamma, cfg.lam)
        targets = adv + v
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        if method == "pg":
            pg_step(policy, ro.obs, ro.actions, adv, cfg.pg_lr)
        elif method == "npg":
            npg_step_network(
                policy,
                ro.obs,
                ro.actions,
                adv,
                cfg.npg_lr,
                damping=cfg.damping,
                cg_iters=cfg.cg_iters,
            )
        elif method == "trpo":
            trpo_step(
                policy,
                ro.obs,
                ro.actions,
                adv,
                max_kl=cfg.max_kl,
                damping=cfg.damping,
                cg_iters=cfg.cg_iters,
            )
        else:
            assert popt is not None
            for _ in range(cfg.ppo_epochs):
                perm = torch.randperm(n, generator=gval)
                for i in range(0, n, cfg.ppo_minibatch):
                    idx = perm[i : i + cfg.ppo_minibatch]
                    popt.zero_grad()
                    lp = policy.log_prob(ro.obs[idx], ro.actions[idx])
                    ppo_clip_loss(lp, ro.log_probs[idx], adv[idx], cfg.ppo_clip).backward()
                    popt.step()
        _fit_value(value, vopt, ro.obs, targets, cfg.value_epochs, gval)
        out.steps.append(done)
        out.mean_returns.append(
            sum(ro.episode_returns) / len(ro.episode_returns)
            if ro.episode_returns
            else float("nan")
        )
    out.seconds = time.perf_counter() - t0
    out.env_steps = done
    out.policy = policy
    env.close()
    return out


def evaluate_policy(
    policy: CategoricalPolicy, env_id: str = "CartPole-v1", episodes: int = 10, *, seed: int = 1000
) -> float:
    """Mean undiscounted return of the greedy (most probable) action over ``episodes`` seeded episodes."""
    import gymnasium as gym

    if not isinstance(policy, CategoricalPolicy):
        raise TypeError(f"policy must be a CategoricalPolicy, got {type(policy).__name__}")
    episodes = check_integer(episodes, "episodes", minimum=1)
    seed = check_seed(seed)
    env = gym.make(env_id)
    total = 0.0
    for e in range(episodes):
        obs, _ = env.reset(seed=seed + e)
        end = False
        while not end:
            with torch.no_grad():
                a = int(policy(torch.as_tensor(obs, dtype=policy.dtype)[None]).argmax())
            obs, r, term, trunc, _ = env.step(a)
            total += float(r)
            end = term or trunc
    env.close()
    return total / episodes
