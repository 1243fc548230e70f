r"""Seeded rollouts in `gymnasium` environments, returns-to-go and generalized advantage estimation.

A batch of :math:`T` steps from one environment holds the observations, actions, their
log-probabilities under the acting policy, rewards, and two flags per step: ``terminated``
(a true end: no value after it) and ``episode_end`` (terminated or cut by a time limit). Then

.. math::

    G_t = r_t + \gamma(1-e_t)G_{t+1},\qquad
    \delta_t = r_t + \gamma(1-\tau_t)V(s_{t+1}) - V(s_t),\qquad
    \hat A_t = \delta_t + \gamma\lambda(1-e_t)\hat A_{t+1}

with :math:`e_t` = ``episode_end`` and :math:`\tau_t` = ``terminated``
:cite:`schulman2016high,sutton2018reinforcement`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from igbook._validation import as_tensor, check_finite, check_integer, check_scalar, check_seed
from igbook.rl.policies import CategoricalPolicy

__all__ = ["Rollout", "collect_rollout", "returns_to_go", "gae"]


@dataclass(frozen=True)
class Rollout:
    """A batch of transitions and the returns of the episodes that finished in it."""

    obs: Tensor
    actions: Tensor
    log_probs: Tensor
    rewards: Tensor
    next_obs: Tensor
    terminated: Tensor
    episode_end: Tensor
    episode_returns: list[float]


def collect_rollout(
    env: Any,
    policy: CategoricalPolicy,
    steps: int,
    *,
    generator: torch.Generator,
    seed: int | None = None,
    state: dict | None = None,
) -> Rollout:
    r"""Run ``policy`` in a `gymnasium` environment for ``steps`` steps (episodes reset as they end).

    ``seed`` resets the environment with that seed first (the start of a run); ``state`` (a dict
    this function fills) carries the current observation and the running episode return from one
    call to the next, so consecutive batches continue one stream of episodes. Actions are drawn
    with ``generator``; everything is reproducible from the seeds.
    """
    if not isinstance(policy, CategoricalPolicy):
        raise TypeError(f"policy must be a CategoricalPolicy, got {type(policy).__name__}")
    steps = check_integer(steps, "steps", minimum=1)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    state = {} if state is None else state
    if seed is not None or "obs" not in state:
        obs, _ = env.reset(seed=check_seed(seed if seed is not None else 0))
        state["obs"], state["ret"] = obs, 0.0
    rows: dict[str, list] = {k: [] for k in ("o", "a", "lp", "r", "no", "term", "end")}
    finished: list[float] = []
    dtype = policy.dtype
    for _ in range(steps):
        o = torch.as_tensor(state["obs"], dtype=dtype)[None]
        with torch.no_grad():  # policy.act without its per-call checks (o is built here)
            logp = torch.log_softmax(policy.net(o), -1)
            a = torch.multinomial(logp.exp(), 1, generator=generator)[:, 0]
            lp = logp.gather(1, a[:, None])[:, 0]
        nxt, r, term, trunc, _ = env.step(int(a[0]))
        rows["o"].append(o[0])
        rows["a"].append(a[0])
        rows["lp"].append(lp[0])
        rows["r"].append(float(r))
        rows["no"].append(torch.as_tensor(nxt, dtype=dtype))
        rows["term"].append(bool(term))
        rows["end"].append(bool(term or trunc))
        state["ret"] += float(r)
        if term or trunc:
            finished.append(state["ret"])
            nxt, _ = env.reset()
            state["ret"] = 0.0
        state["obs"] = nxt
    return Rollout(
        torch.stack(rows["o"]),
        torch.stack(rows["a"]),
        torch.stack(rows["lp"]),
        torch.tensor(rows["r"], dtype=dtype),
        torch.stack(rows["no"]),
        torch.tensor(rows["term"]),
        torch.tensor(rows["end"]),
        finished,
    )


def _flags(x: Any, name: str, n: int) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a bool tensor, got {type(x).__name__}")
    t = x
    if t.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {tuple(t.shape)}")
    if t.dtype != torch.bool:
        raise TypeError(f"{name} must be a bool tensor, got {t.dtype}")
    return t


def returns_to_go(rewards: Tensor, episode_end: Tensor, gamma: float = 0.99) -> Tensor:
    r"""Discounted returns-to-go :math:`G_t = r_t + \gamma(1-e_t)G_{t+1}` within each episode (batch end cuts)."""
    r = check_finite(as_tensor(rewards, "rewards"), "rewards")
    if r.ndim != 1 or r.shape[0] < 1:
        raise ValueError(f"rewards must be a non-empty flat tensor, got {tuple(r.shape)}")
    end = _flags(episode_end, "episode_end", r.shape[0])
    g = check_scalar(gamma, "gamma", low=0.0, high=1.0)
    out = torch.empty_like(r)
    acc = 0.0
    for t in range(r.shape[0] - 1, -1, -1):
        acc = float(r[t]) + (0.0 if bool(end[t]) else g * acc)
        out[t] = acc
    return out


def gae(
    rewards: Tensor,
    values: Tensor,
    next_values: Tensor,
    terminated: Tensor,
    episode_end: Tensor,
    gamma: float = 0.99,
    lam: float = 0.95,
) -> Tensor:
    r"""Generalized advantage estimates (module docstring) :cite:`schulman2016high`.

    ``lam = 1`` gives :math:`G_t - V(s_t)` with bootstrapping only at cuts; ``lam = 0`` the
    one-step TD errors. ``next_values`` are :math:`V(s_{t+1})` of the observed next states.
    """
    r = check_finite(as_tensor(rewards, "rewards"), "rewards")
    if r.ndim != 1 or r.shape[0] < 1:
        raise ValueError(f"rewards must be a non-empty flat tensor, got {tuple(r.shape)}")
    n = r.shape[0]
    v = check_finite(as_tensor(values, "values", dtype=r.dtype), "values")
    nv = check_finite(as_tensor(next_values, "next_values", dtype=r.dtype), "next_values")
    if v.shape != (n,) or nv.shape != (n,):
        raise ValueError(f"values and next_values must have shape ({n},)")
    term = _flags(terminated, "terminated", n)
    end = _flags(episode_end, "episode_end", n)
    g = check_scalar(gamma, "gamma", low=0.0, high=1.0)
    lm = check_scalar(lam, "lam", low=0.0, high=1.0)
    delta = r + g * (~term).to(r.dtype) * nv - v
    out = torch.empty_like(r)
    acc = 0.0
    for t in range(n - 1, -1, -1):
        acc = float(delta[t]) + (0.0 if bool(end[t]) else g * lm * acc)
        out[t] = acc
    return out
