r"""Policy updates on a batch: PG, NPG, TRPO and PPO's clipped surrogate.

All four maximize the importance-weighted surrogate of a batch collected by
:math:`\pi_\text{old}`,

.. math:: L(\theta) = \frac1N\sum_n \frac{\pi_\theta(a_n\mid s_n)}{\pi_\text{old}(a_n\mid s_n)}\hat A_n,
    \qquad \nabla L(\theta_\text{old}) = \frac1N\sum_n\nabla\log\pi(a_n\mid s_n)\hat A_n = g,

:cite:`sutton2000policy,williams1992simple`. PG steps along :math:`g`; NPG along
:math:`F^{-1}g` :cite:`kakade2001natural`; TRPO takes the largest multiple of the conjugate-
gradient direction :math:`x\approx F^{-1}g` allowed by :math:`\tfrac12 x^\top Fx = \delta` and then
backtracks until the *exact* mean KL is at most :math:`\delta` and the surrogate improves
:cite:`schulman2015trust`; PPO replaces the constraint by the clipped ratio
:cite:`schulman2017proximal`. Fisher-vector products come from :func:`igbook.rl.policies.policy_fisher`
(the curvature core), conjugate gradient and the step length from :mod:`igbook.natgrad`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from igbook._validation import (
    as_tensor,
    check_finite,
    check_integer,
    check_positive_real,
    check_scalar,
)
from igbook.fisher import unflatten_params
from igbook.natgrad import conjugate_gradient, trust_region_step_size
from igbook.rl.policies import CategoricalPolicy, categorical_kl, policy_fisher, policy_parameters

__all__ = [
    "PolicyStep",
    "surrogate_gradient",
    "pg_step",
    "npg_step_network",
    "trpo_step",
    "ppo_clip_loss",
]


@dataclass(frozen=True)
class PolicyStep:
    """What one update did: the step taken, the exact mean KL, the surrogate's change and
    (TRPO) how many halvings the line search needed (``-1``: rejected, no step)."""

    step: Tensor
    kl: float
    improvement: float
    backtracks: int


def _policy(policy: nn.Module) -> CategoricalPolicy:
    if not isinstance(policy, CategoricalPolicy):
        raise TypeError(f"policy must be a CategoricalPolicy, got {type(policy).__name__}")
    return policy


def _batch(policy: CategoricalPolicy, obs: Tensor, actions: Tensor, adv: Tensor) -> tuple:
    x = check_finite(as_tensor(obs, "obs", dtype=policy.dtype), "obs")
    if x.ndim != 2 or x.shape[1] != policy.obs_dim or x.shape[0] < 1:
        raise ValueError(f"obs must have shape (N, {policy.obs_dim}), got {tuple(x.shape)}")
    a = torch.as_tensor(actions)
    if a.shape != (x.shape[0],) or a.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"actions must be an integer tensor of shape ({x.shape[0]},)")
    if bool((a < 0).any()) or bool((a >= policy.num_actions).any()):
        raise ValueError(f"actions must lie in [0, {policy.num_actions})")
    adv = check_finite(as_tensor(adv, "advantages", dtype=policy.dtype), "advantages")
    if adv.shape != (x.shape[0],):
        raise ValueError(f"advantages must have shape ({x.shape[0]},), got {tuple(adv.shape)}")
    return x, a.long(), adv


def _surrogate(
    policy: CategoricalPolicy, params: dict, x: Tensor, a: Tensor, adv: Tensor, old_logp: Tensor
) -> Tensor:
    logits = torch.func.functional_call(policy, params, (x,))
    logp = torch.log_softmax(logits, -1).gather(1, a[:, None])[:, 0]
    return (torch.exp(logp - old_logp) * adv).mean()


def surrogate_gradient(
    policy: nn.Module, obs: Tensor, actions: Tensor, advantages: Tensor
) -> Tensor:
    r"""The policy gradient estimate :math:`g = \frac1N\sum_n\nabla\log\pi(a_n\mid s_n)\hat A_n` (flat)."""
    policy = _policy(policy)
    x, a, adv = _batch(policy, obs, actions, advantages)
    params = {k: v.detach().requires_grad_(True) for k, v in policy.named_parameters()}
    with torch.no_grad():
        old = torch.log_softmax(policy(x), -1).gather(1, a[:, None])[:, 0]
    loss = _surrogate(policy, params, x, a, adv, old)
    grads = torch.autograd.grad(loss, list(params.values()))
    return torch.cat([g.reshape(-1) for g in grads]).detach()


def _apply(policy: nn.Module, flat: Tensor) -> None:
    params = dict(policy.named_parameters())
    new = unflatten_params(flat, {k: v.detach() for k, v in params.items()})
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(new[k])


def pg_step(
    policy: nn.Module, obs: Tensor, actions: Tensor, advantages: Tensor, lr: float
) -> PolicyStep:
    r"""Vanilla policy-gradient ascent :math:`\theta\leftarrow\theta + \eta g`.

    :cite:`williams1992simple,sutton2000policy`
    """
    policy = _policy(policy)
    eta = check_positive_real(lr, "lr")
    g = surrogate_gradient(policy, obs, actions, advantages)
    return _take(policy, obs, actions, advantages, eta * g)


def _take(
    policy: CategoricalPolicy, obs: Tensor, actions: Tensor, adv: Tensor, step: Tensor
) -> PolicyStep:
    x, a, adv = _batch(policy, obs, actions, adv)
    theta = policy_parameters(policy)
    with torch.no_grad():
        old_logits = policy(x)
        old = torch.log_softmax(old_logits, -1).gather(1, a[:, None])[:, 0]
        base = float(adv.mean())
    _apply(policy, theta + step)
    with torch.no_grad():
        new_logits = policy(x)
        kl = float(categorical_kl(old_logits, new_logits))
        new = float(_surrogate(policy, dict(policy.named_parameters()), x, a, adv, old))
    return PolicyStep(step, kl, new - base, 0)


def npg_step_network(
    policy: nn.Module,
    obs: Tensor,
    actions: Tensor,
    advantages: Tensor,
    lr: float,
    *,
    damping: float = 1e-3,
    cg_iters: int = 10,
) -> PolicyStep:
    r"""Natural policy gradient :math:`\theta\leftarrow\theta + \eta(F+\lambda I)^{-1}g` (CG on Fisher-vector products).

    :math:`F` is the policy Fisher on the batch's states (:func:`~igbook.rl.policies.policy_fisher`),
    the solve is :func:`igbook.natgrad.conjugate_gradient` with ``cg_iters`` iterations
    :cite:`kakade2001natural`.
    """
    policy = _policy(policy)
    eta = check_positive_real(lr, "lr")
    lam = check_positive_real(damping, "damping")
    iters = check_integer(cg_iters, "cg_iters", minimum=1)
    x, a, adv = _batch(policy, obs, actions, advantages)
    g = surrogate_gradient(policy, x, a, adv)
    direction = conjugate_gradient(policy_fisher(policy, x), g, damping=lam, max_iter=iters).x
    return _take(policy, x, a, adv, eta * direction)


def trpo_step(
    policy: nn.Module,
    obs: Tensor,
    actions: Tensor,
    advantages: Tensor,
    *,
    max_kl: float = 0.01,
    damping: float = 0.1,
    cg_iters: int = 10,
    backtrack: float = 0.5,
    max_backtracks: int = 10,
) -> PolicyStep:
    r"""One TRPO step: CG direction, KL-radius step length, backtracking on the exact KL.

    :math:`x \approx (F+\lambda I)^{-1}g` by ``cg_iters`` conjugate-gradient iterations; the full
    step :math:`\beta x` with :math:`\beta = \sqrt{2\delta / x^\top F x}`
    (:func:`igbook.natgrad.trust_region_step_size`); then :math:`\beta x\,c^j` for
    :math:`j = 0, 1, \dots` (:math:`c` = ``backtrack``) until the exact mean KL
    :math:`\bar D_\mathrm{KL}(\pi_\text{old}\|\pi_\theta)\le\delta` and the surrogate improves
    :cite:`schulman2015trust`. If no trial passes, the parameters stay and ``backtracks = -1``.
    """
    policy = _policy(policy)
    delta = check_positive_real(max_kl, "max_kl")
    lam = check_positive_real(damping, "damping")
    iters = check_integer(cg_iters, "cg_iters", minimum=1)
    c = check_scalar(backtrack, "backtrack", low=0.0, high=1.0, closed_low=False, closed_high=False)
    nb = check_integer(max_backtracks, "max_backtracks", minimum=0)
    x, a, adv = _batch(policy, obs, actions, advantages)
    g = surrogate_gradient(policy, x, a, adv)
    fvp = policy_fisher(policy, x)
    direction = conjugate_gradient(fvp, g, damping=lam, max_iter=iters).x
    beta = trust_region_step_size(lambda v: fvp(v) + lam * v, direction, delta)
    theta = policy_parameters(policy)
    with torch.no_grad():
        old_logits = policy(x)
        old = torch.log_softmax(old_logits, -1).gather(1, a[:, None])[:, 0]
        base = float(adv.mean())
    template = {k: v.detach() for k, v in policy.named_parameters()}
    for j in range(nb + 1):
        step = beta * c**j * direction
        trial = unflatten_params(theta + step, template)
        with torch.no_grad():
            logits = torch.func.functional_call(policy, trial, (x,))
            kl = float(categorical_kl(old_logits, logits))
            sur = float(_surrogate(policy, trial, x, a, adv, old))
        if kl <= delta and sur > base:
            _apply(policy, theta + step)
            return PolicyStep(step, kl, sur - base, j)
    return PolicyStep(torch.zeros_like(theta), 0.0, 0.0, -1)


def ppo_clip_loss(
    log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, clip: float = 0.2
) -> Tensor:
    r"""PPO's clipped surrogate, as a loss to minimize :cite:`schulman2017proximal`.

    .. math:: -\frac1N\sum_n\min\big(\rho_n\hat A_n,\ \operatorname{clip}(\rho_n, 1-\epsilon, 1+\epsilon)\hat A_n\big),
        \qquad \rho_n = e^{\log\pi_\theta(a_n\mid s_n) - \log\pi_\text{old}(a_n\mid s_n)}.

    Its gradient at :math:`\theta_\text{old}` is :math:`-g`; away from it, ratios outside
    :math:`[1-\epsilon, 1+\epsilon]` on the improving side stop contributing.
    """
    lp = as_tensor(log_probs, "log_probs")
    old = check_finite(as_tensor(old_log_probs, "old_log_probs", dtype=lp.dtype), "old_log_probs")
    adv = check_finite(as_tensor(advantages, "advantages", dtype=lp.dtype), "advantages")
    if not bool(torch.isfinite(lp).all()):
        raise ValueError("log_probs must be finite")
    if lp.ndim != 1 or lp.shape[0] < 1 or old.shape != lp.shape or adv.shape != lp.shape:
        raise ValueError(
            "log_probs, old_log_probs and advantages must be flat tensors of one length, got "
            f"{tuple(lp.shape)}, {tuple(old.shape)}, {tuple(adv.shape)}"
        )
    eps = check_scalar(clip, "clip", low=0.0, high=1.0, closed_low=False, closed_high=False)
    ratio = torch.exp(lp - old)
    return -torch.minimum(ratio * adv, ratio.clamp(1 - eps, 1 + eps) * adv).mean()
