r"""Finite discounted MDPs solved exactly: evaluation, value iteration, softmax policy gradients.

A finite MDP is :math:`(\mathcal S, \mathcal A, P, r, \rho, \gamma)` with transition tensor
:math:`P(s'\mid s, a)` of shape ``(S, A, S)``, rewards :math:`r(s, a)` of shape ``(S, A)``, an
initial distribution :math:`\rho` and a discount :math:`\gamma\in[0, 1)`. A stochastic policy
is an ``(S, A)`` matrix of rows on the simplex. Everything here is closed form (linear solves),
so that policy-gradient methods can be checked to machine precision
:cite:`sutton2000policy,kakade2001natural,agarwal2021theory`:

.. math::

    V^\pi = (I - \gamma P_\pi)^{-1} r_\pi,\qquad Q^\pi = r + \gamma P V^\pi,\qquad
    A^\pi = Q^\pi - V^\pi,\qquad
    d^\pi_\rho = (1-\gamma)\,\rho^\top (I - \gamma P_\pi)^{-1}.

For the softmax policy :math:`\pi_\theta(a\mid s) \propto e^{\theta_{s,a}}` the policy-gradient
theorem gives :math:`\partial V^{\pi_\theta}(\rho)/\partial\theta_{s,a} =
\frac{1}{1-\gamma} d^\pi_\rho(s)\,\pi(a\mid s)\,A^\pi(s, a)`; the Fisher of the policy is
block-diagonal, :math:`F = \sum_s d^\pi_\rho(s)\,(\operatorname{diag}\pi_s - \pi_s\pi_s^\top)`,
and Kakade's natural gradient :math:`F^+\nabla V` is :math:`A^\pi/(1-\gamma)` up to a constant
per state, so the NPG step is the multiplicative-weights update
:math:`\pi_{t+1}(a\mid s) \propto \pi_t(a\mid s)\,e^{\eta A^{\pi_t}(s,a)/(1-\gamma)}`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from igbook._validation import (
    as_tensor,
    check_finite,
    check_integer,
    check_positive_real,
    check_scalar,
    check_seed,
)
from igbook.fisher import CategoricalLikelihood
from igbook.mirror import exponentiated_gradient_step

__all__ = [
    "TabularMDP",
    "random_mdp",
    "two_state_mdp",
    "policy_evaluation",
    "q_values",
    "advantages",
    "expected_return",
    "discounted_occupancy",
    "value_iteration",
    "softmax_policy",
    "softmax_policy_gradient",
    "softmax_policy_fisher",
    "natural_policy_gradient",
    "npg_step",
    "policy_iterates",
]

D = torch.float64


@dataclass(frozen=True)
class TabularMDP:
    r"""A finite discounted MDP (validated on construction).

    Attributes
    ----------
    transitions : Tensor
        :math:`P(s'\mid s, a)`, shape ``(S, A, S)``, rows on the simplex.
    rewards : Tensor
        :math:`r(s, a)`, shape ``(S, A)``.
    initial : Tensor
        Initial distribution :math:`\rho`, shape ``(S,)``.
    gamma : float
        Discount :math:`\gamma\in[0, 1)`.
    """

    transitions: Tensor
    rewards: Tensor
    initial: Tensor
    gamma: float

    def __post_init__(self) -> None:
        p = check_finite(as_tensor(self.transitions, "transitions", dtype=D), "transitions")
        if p.ndim != 3 or p.shape[0] != p.shape[2] or p.shape[0] < 1 or p.shape[1] < 1:
            raise ValueError(f"transitions must have shape (S, A, S), got {tuple(p.shape)}")
        if bool((p < 0).any()) or not torch.allclose(p.sum(-1), torch.ones((), dtype=D), atol=1e-9):
            raise ValueError("transitions must hold probability rows (>= 0, summing to 1 over s')")
        s, a = p.shape[0], p.shape[1]
        r = check_finite(as_tensor(self.rewards, "rewards", dtype=D), "rewards")
        if r.shape != (s, a):
            raise ValueError(f"rewards must have shape ({s}, {a}), got {tuple(r.shape)}")
        rho = check_finite(as_tensor(self.initial, "initial", dtype=D), "initial")
        if rho.shape != (s,) or bool((rho < 0).any()) or abs(float(rho.sum()) - 1) > 1e-9:
            raise ValueError(f"initial must be a probability vector of length {s}")
        g = check_scalar(self.gamma, "gamma", low=0.0, high=1.0, closed_high=False)
        object.__setattr__(self, "transitions", p)
        object.__setattr__(self, "rewards", r)
        object.__setattr__(self, "initial", rho)
        object.__setattr__(self, "gamma", g)

    @property
    def num_states(self) -> int:
        return int(self.transitions.shape[0])

    @property
    def num_actions(self) -> int:
        return int(self.transitions.shape[1])


def random_mdp(
    num_states: int, num_actions: int, gamma: float = 0.9, *, seed: int = 0, sparsity: float = 0.0
) -> TabularMDP:
    r"""A seeded random MDP: Dirichlet(1) transition rows, uniform rewards in :math:`[0, 1]`, uniform :math:`\rho`.

    ``sparsity`` is the probability that a reward is zeroed (a sparse-reward MDP, where vanilla
    policy gradient plateaus :cite:`agarwal2021theory`).
    """
    s = check_integer(num_states, "num_states", minimum=1)
    a = check_integer(num_actions, "num_actions", minimum=1)
    g = check_scalar(gamma, "gamma", low=0.0, high=1.0, closed_high=False)
    sp = check_scalar(sparsity, "sparsity", low=0.0, high=1.0, closed_high=False)
    gen = torch.Generator().manual_seed(check_seed(seed))
    e = -torch.log(torch.rand(s, a, s, generator=gen, dtype=D))  # Exp(1) draws
    p = e / e.sum(-1, keepdim=True)  # Dirichlet(1, ..., 1)
    r = torch.rand(s, a, generator=gen, dtype=D)
    r = torch.where(torch.rand(s, a, generator=gen, dtype=D) < sp, torch.zeros_like(r), r)
    return TabularMDP(p, r, torch.full((s,), 1.0 / s, dtype=D), g)


def two_state_mdp(gamma: float = 0.9) -> TabularMDP:
    r"""A two-state, two-action MDP: action 1 moves to (or stays in) the rewarding state 1.

    In state 0, action 0 gives reward 0.1 and stays; action 1 gives 0 and moves to state 1.
    In state 1, action 0 gives 1 and stays; action 1 gives 0 and returns to state 0. Start in 0.
    The optimal policy takes action 1 in state 0 and action 0 in state 1 (for
    :math:`\gamma > 0.1`); a policy that starts near "stay in 0" sits on a plateau of the
    return for vanilla policy gradient.
    """
    g = check_scalar(gamma, "gamma", low=0.0, high=1.0, closed_high=False)
    p = torch.zeros(2, 2, 2, dtype=D)
    p[0, 0, 0] = p[0, 1, 1] = p[1, 0, 1] = p[1, 1, 0] = 1.0
    r = torch.tensor([[0.1, 0.0], [1.0, 0.0]], dtype=D)
    return TabularMDP(p, r, torch.tensor([1.0, 0.0], dtype=D), g)


def _mdp(mdp: TabularMDP) -> TabularMDP:
    if not isinstance(mdp, TabularMDP):
        raise TypeError(f"mdp must be a TabularMDP, got {type(mdp).__name__}")
    return mdp


def _policy(mdp: TabularMDP, policy: Tensor, name: str = "policy") -> Tensor:
    pi = check_finite(as_tensor(policy, name, dtype=D), name)
    if pi.shape != (mdp.num_states, mdp.num_actions):
        raise ValueError(
            f"{name} must have shape ({mdp.num_states}, {mdp.num_actions}), got {tuple(pi.shape)}"
        )
    if bool((pi < 0).any()) or not torch.allclose(pi.sum(-1), torch.ones((), dtype=D), atol=1e-9):
        raise ValueError(f"{name} must hold probability rows (>= 0, summing to 1)")
    return pi


def _logits(mdp: TabularMDP, logits: Tensor, name: str = "logits") -> Tensor:
    th = check_finite(as_tensor(logits, name, dtype=D), name)
    if th.shape != (mdp.num_states, mdp.num_actions):
        raise ValueError(
            f"{name} must have shape ({mdp.num_states}, {mdp.num_actions}), got {tuple(th.shape)}"
        )
    return th


def _resolvent(mdp: TabularMDP, pi: Tensor) -> Tensor:
    p_pi = torch.einsum("sa,sat->st", pi, mdp.transitions)
    return torch.eye(mdp.num_states, dtype=D) - mdp.gamma * p_pi


def policy_evaluation(mdp: TabularMDP, policy: Tensor) -> Tensor:
    r"""Exact state values :math:`V^\pi = (I-\gamma P_\pi)^{-1} r_\pi` by one linear solve.

    :cite:`sutton2018reinforcement`
    """
    mdp = _mdp(mdp)
    pi = _policy(mdp, policy)
    r_pi = (pi * mdp.rewards).sum(-1)
    return torch.linalg.solve(_resolvent(mdp, pi), r_pi)


def q_values(mdp: TabularMDP, policy: Tensor) -> Tensor:
    r"""Action values :math:`Q^\pi(s,a) = r(s,a) + \gamma\sum_{s'}P(s'\mid s,a)V^\pi(s')`, shape ``(S, A)``."""
    v = policy_evaluation(mdp, policy)
    return mdp.rewards + mdp.gamma * mdp.transitions @ v


def advantages(mdp: TabularMDP, policy: Tensor) -> Tensor:
    r"""Advantages :math:`A^\pi = Q^\pi - V^\pi` (so :math:`\sum_a\pi(a\mid s)A^\pi(s,a) = 0`)."""
    v = policy_evaluation(mdp, policy)
    return mdp.rewards + mdp.gamma * mdp.transitions @ v - v.unsqueeze(-1)


def expected_return(mdp: TabularMDP, policy: Tensor) -> Tensor:
    r"""The objective :math:`V^\pi(\rho) = \rho^\top V^\pi` (a 0-d tensor, differentiable in ``policy``)."""
    v = policy_evaluation(_mdp(mdp), policy)
    return mdp.initial @ v


def discounted_occupancy(mdp: TabularMDP, policy: Tensor) -> Tensor:
    r"""Discounted state occupancy :math:`d^\pi_\rho = (1-\gamma)\rho^\top(I-\gamma P_\pi)^{-1}` (sums to 1)."""
    mdp = _mdp(mdp)
    pi = _policy(mdp, policy)
    return (1 - mdp.gamma) * torch.linalg.solve(_resolvent(mdp, pi).T, mdp.initial)


def value_iteration(
    mdp: TabularMDP, *, tol: float = 1e-12, max_iter: int = 100_000
) -> tuple[Tensor, Tensor]:
    r"""Optimal values :math:`V^*` and a greedy deterministic optimal policy by value iteration.

    Iterates the Bellman optimality operator :math:`V \leftarrow \max_a r + \gamma PV` (a
    :math:`\gamma`-contraction in the sup norm) until successive iterates differ by at most
    ``tol (1-\gamma)/\gamma``, so that :math:`\|V - V^*\|_\infty \le` ``tol``
    :cite:`sutton2018reinforcement`. Raises :class:`ValueError` if ``max_iter`` is reached.
    """
    mdp = _mdp(mdp)
    tol = check_positive_real(tol, "tol")
    max_iter = check_integer(max_iter, "max_iter", minimum=1)
    v = torch.zeros(mdp.num_states, dtype=D)
    stop = tol * (1 - mdp.gamma) / max(mdp.gamma, 1e-300)
    for _ in range(max_iter):
        v_new = (mdp.rewards + mdp.gamma * mdp.transitions @ v).amax(-1)
        done = float((v_new - v).abs().max()) <= stop
        v = v_new
        if done:
            q = mdp.rewards + mdp.gamma * mdp.transitions @ v
            greedy = torch.nn.functional.one_hot(q.argmax(-1), mdp.num_actions).to(D)
            return v, greedy
    raise ValueError(f"value iteration did not reach tol={tol} in max_iter={max_iter} sweeps")


def softmax_policy(logits: Tensor) -> Tensor:
    r"""The tabular softmax policy :math:`\pi_\theta(a\mid s) = e^{\theta_{s,a}}/\sum_b e^{\theta_{s,b}}`."""
    th = check_finite(as_tensor(logits, "logits", dtype=D), "logits")
    if th.ndim != 2 or th.shape[0] < 1 or th.shape[1] < 1:
        raise ValueError(f"logits must have shape (S, A), got {tuple(th.shape)}")
    return torch.softmax(th, -1)


def softmax_policy_gradient(mdp: TabularMDP, logits: Tensor) -> Tensor:
    r"""Exact :math:`\nabla_\theta V^{\pi_\theta}(\rho)` of the softmax policy (policy-gradient theorem).

    .. math:: \frac{\partial V^{\pi_\theta}(\rho)}{\partial\theta_{s,a}}
        = \frac{1}{1-\gamma}\, d^{\pi}_\rho(s)\,\pi(a\mid s)\,A^{\pi}(s,a)

    :cite:`sutton2000policy,agarwal2021theory`. Shape ``(S, A)``.
    """
    mdp = _mdp(mdp)
    pi = softmax_policy(_logits(mdp, logits))
    d = discounted_occupancy(mdp, pi)
    return d.unsqueeze(-1) * pi * advantages(mdp, pi) / (1 - mdp.gamma)


def softmax_policy_fisher(mdp: TabularMDP, logits: Tensor) -> Tensor:
    r"""Exact Fisher of the softmax policy, the state-averaged Fisher of the action distribution.

    .. math:: F(\theta) = \mathbb E_{s\sim d^\pi_\rho}\mathbb E_{a\sim\pi_s}
        \big[\nabla\log\pi(a\mid s)\nabla\log\pi(a\mid s)^\top\big]
        = \bigoplus_s d^\pi_\rho(s)\,(\operatorname{diag}\pi_s - \pi_s\pi_s^\top)

    :cite:`kakade2001natural`. The per-state blocks are the categorical output Fisher of
    :class:`igbook.fisher.CategoricalLikelihood` (the logits are the network outputs); the
    matrix is ``(S*A, S*A)`` in the row-major order of ``logits.flatten()``.
    """
    mdp = _mdp(mdp)
    th = _logits(mdp, logits)
    d = discounted_occupancy(mdp, torch.softmax(th, -1))
    blocks = CategoricalLikelihood().output_fisher(th) * d[:, None, None]
    return torch.block_diag(*blocks)


def natural_policy_gradient(mdp: TabularMDP, logits: Tensor) -> Tensor:
    r"""Kakade's natural policy gradient :math:`F^{+}\nabla_\theta V(\rho)` of the softmax policy, shape ``(S, A)``.

    The minimum-norm solution of :math:`Fw = \nabla V`, in closed form
    :math:`w_{s,a} = \big(A^\pi(s,a) - \tfrac1{|\mathcal A|}\sum_b A^\pi(s,b)\big)/(1-\gamma)`
    for states with :math:`d^\pi_\rho(s) > 0` (zero elsewhere) :cite:`kakade2001natural,agarwal2021theory`.
    """
    mdp = _mdp(mdp)
    pi = softmax_policy(_logits(mdp, logits))
    adv = advantages(mdp, pi)
    d = discounted_occupancy(mdp, pi)
    w = (adv - adv.mean(-1, keepdim=True)) / (1 - mdp.gamma)
    return torch.where(d.unsqueeze(-1) > 0, w, torch.zeros_like(w))


def npg_step(mdp: TabularMDP, policy: Tensor, lr: float) -> Tensor:
    r"""One exact NPG step as multiplicative weights (soft policy iteration).

    .. math:: \pi_{t+1}(\cdot\mid s) \propto \pi_t(\cdot\mid s)\,
        \exp\!\big(\eta\,Q^{\pi_t}(s,\cdot)/(1-\gamma)\big)

    per state, by :func:`igbook.mirror.exponentiated_gradient_step` on the gradient
    :math:`-Q^{\pi_t}(s,\cdot)/(1-\gamma)` (mirror descent with the negative entropy); equal to the
    softmax update :math:`\theta \leftarrow \theta + \eta F^+\nabla V`
    :cite:`kakade2001natural,agarwal2021theory`. ``policy`` must have positive entries.
    """
    mdp = _mdp(mdp)
    pi = _policy(mdp, policy)
    eta = check_positive_real(lr, "lr")
    q = q_values(mdp, pi)
    rows = [
        exponentiated_gradient_step(pi[s], -q[s] / (1 - mdp.gamma), eta)
        for s in range(mdp.num_states)
    ]
    return torch.stack(rows)


def policy_iterates(
    mdp: TabularMDP,
    logits: Tensor,
    lr: float | Sequence[float],
    steps: int,
    *,
    method: str = "npg",
) -> tuple[Tensor, Tensor]:
    r"""Exact policy-gradient (``"pg"``) or natural-policy-gradient (``"npg"``) ascent on :math:`V(\rho)`.

    ``"pg"``: :math:`\theta \leftarrow \theta + \eta\nabla_\theta V` with
    :func:`softmax_policy_gradient`; ``"npg"``: :math:`\theta \leftarrow \theta + \eta F^+\nabla V`
    with :func:`natural_policy_gradient` :cite:`agarwal2021theory`. ``lr`` is a constant or one
    step size per iteration (e.g. the geometrically increasing steps of :cite:`xiao2022convergence`).

    Returns
    -------
    (returns, logits)
        :math:`V^{\pi_t}(\rho)` for :math:`t = 0..T`, shape ``(T+1,)``, and the logits, ``(T+1, S, A)``.
    """
    mdp = _mdp(mdp)
    th = _logits(mdp, logits)
    steps = check_integer(steps, "steps", minimum=0)
    if method not in ("pg", "npg"):
        raise ValueError(f"method must be 'pg' or 'npg', got {method!r}")
    if isinstance(lr, (int, float, Tensor)) and not isinstance(lr, bool):
        lrs = [check_positive_real(lr, "lr")] * steps
    elif isinstance(lr, Sequence) and not isinstance(lr, str):
        lrs = [check_positive_real(v, "lr") for v in lr]
        if len(lrs) != steps:
            raise ValueError(f"lr must hold one step size per step ({steps}), got {len(lrs)}")
    else:
        raise TypeError(f"lr must be a real number or a sequence of them, got {type(lr).__name__}")
    direction = softmax_policy_gradient if method == "pg" else natural_policy_gradient
    ths = [th]
    for eta in lrs:
        th = th + eta * direction(mdp, th)
        th = th - th.amax(-1, keepdim=True)  # the same policy; keeps exp() finite
        if not math.isfinite(float(th.abs().max())):
            raise ValueError("the logits left the finite range: reduce lr")
        ths.append(th)
    stack = torch.stack(ths)
    rets = torch.stack([expected_return(mdp, torch.softmax(t, -1)) for t in stack])
    return rets, stack
