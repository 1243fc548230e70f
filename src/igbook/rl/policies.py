r"""Policy networks and the Fisher of a policy through the curvature core.

A categorical policy is a network whose outputs are logits, so its Fisher
:math:`F = \mathbb E_{s}\mathbb E_{a\sim\pi_s}[\nabla\log\pi\nabla\log\pi^\top]` is exactly the
Fisher of a classifier with a categorical likelihood evaluated on the visited states: the
curvature core's :class:`igbook.fisher.CurvatureOperator` with ``"categorical"`` and
``fisher_type="exact"`` (no labels needed) :cite:`kakade2001natural,martens2020new`. A Gaussian
policy :math:`\mathcal N(\mu_\theta(s), \operatorname{diag}\sigma^2)` with a state-independent
:math:`\log\sigma` has the block-diagonal Fisher
:math:`\mathbb E_s[J_\mu^\top\operatorname{diag}(\sigma^{-2})J_\mu] \oplus 2I`; the mean block is
the Gaussian-likelihood Fisher of the scaled mean :math:`\mu_\theta(s)/\sigma`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from igbook._validation import as_tensor, check_finite, check_integer, check_scalar
from igbook.fisher import CurvatureOperator, GaussianLikelihood, flatten_params

__all__ = [
    "CategoricalPolicy",
    "GaussianPolicy",
    "policy_fisher",
    "categorical_kl",
    "policy_parameters",
]


def _mlp(sizes: list[int], generator: torch.Generator) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        lin = nn.Linear(sizes[i], sizes[i + 1])
        bound = 1.0 / sizes[i] ** 0.5
        with torch.no_grad():
            lin.weight.uniform_(-bound, bound, generator=generator)
            lin.bias.uniform_(-bound, bound, generator=generator)
        layers.append(lin)
        if i < len(sizes) - 2:
            layers.append(nn.Tanh())
    with torch.no_grad():  # small last layer: a near-uniform initial policy
        layers[-1].weight.mul_(0.01)
        layers[-1].bias.zero_()
    return nn.Sequential(*layers)


def _obs(obs: Tensor, dim: int) -> Tensor:
    x = check_finite(as_tensor(obs, "obs"), "obs")
    if x.ndim != 2 or x.shape[1] != dim or x.shape[0] < 1:
        raise ValueError(f"obs must have shape (N, {dim}), got {tuple(x.shape)}")
    return x


class CategoricalPolicy(nn.Module):
    r"""A tanh MLP from observations to the logits of :math:`\pi_\theta(a\mid s)`.

    Parameters
    ----------
    obs_dim, num_actions : int
        Sizes of the observation and of the action set.
    hidden : tuple of int
        Hidden widths (``()`` for a log-linear policy).
    seed : int
        Seed of the initialization (last layer scaled by 0.01: near-uniform start).
    dtype : torch.dtype
        Parameter dtype.
    """

    def __init__(
        self,
        obs_dim: int,
        num_actions: int,
        hidden: tuple[int, ...] = (32,),
        *,
        seed: int = 0,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__()
        self.obs_dim = check_integer(obs_dim, "obs_dim", minimum=1)
        self.num_actions = check_integer(num_actions, "num_actions", minimum=2)
        widths = [check_integer(h, "hidden", minimum=1) for h in hidden]
        gen = torch.Generator().manual_seed(check_integer(seed, "seed", minimum=0))
        self.net = _mlp([self.obs_dim, *widths, self.num_actions], gen).to(dtype)

    def forward(self, obs: Tensor) -> Tensor:
        """Logits, shape ``(N, A)``."""
        return self.net(obs)

    def log_prob(self, obs: Tensor, actions: Tensor) -> Tensor:
        r""":math:`\log\pi_\theta(a_n\mid s_n)`, shape ``(N,)``."""
        x = _obs(obs, self.obs_dim)
        a = torch.as_tensor(actions)
        if a.shape != (x.shape[0],) or a.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"actions must be an integer tensor of shape ({x.shape[0]},)")
        return torch.log_softmax(self.net(x.to(self.dtype)), -1).gather(1, a.long()[:, None])[:, 0]

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def act(self, obs: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Sampled actions and their log-probabilities for a batch of observations."""
        x = _obs(obs, self.obs_dim).to(self.dtype)
        with torch.no_grad():
            logp = torch.log_softmax(self.net(x), -1)
            a = torch.multinomial(logp.exp(), 1, generator=generator)[:, 0]
        return a, logp.gather(1, a[:, None])[:, 0]


class GaussianPolicy(nn.Module):
    r"""A Gaussian policy :math:`\mathcal N(\mu_\theta(s), \operatorname{diag} e^{2\log\sigma})`.

    The mean is a tanh MLP (``hidden=()``: linear); :math:`\log\sigma` is a state-independent
    parameter (first in the order of ``named_parameters()``: a module's own parameters come
    before its children's).
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden: tuple[int, ...] = (32,),
        *,
        log_std: float = 0.0,
        seed: int = 0,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__()
        self.obs_dim = check_integer(obs_dim, "obs_dim", minimum=1)
        self.action_dim = check_integer(action_dim, "action_dim", minimum=1)
        widths = [check_integer(h, "hidden", minimum=1) for h in hidden]
        gen = torch.Generator().manual_seed(check_integer(seed, "seed", minimum=0))
        self.mean = _mlp([self.obs_dim, *widths, self.action_dim], gen).to(dtype)
        ls = check_scalar(log_std, "log_std")
        self.log_std = nn.Parameter(torch.full((self.action_dim,), ls, dtype=dtype))

    def forward(self, obs: Tensor) -> Tensor:
        """Mean actions, shape ``(N, action_dim)``."""
        return self.mean(obs)

    def log_prob(self, obs: Tensor, actions: Tensor) -> Tensor:
        r""":math:`\log\pi_\theta(a_n\mid s_n)` (sum over action dimensions), shape ``(N,)``."""
        x = _obs(obs, self.obs_dim).to(self.log_std.dtype)
        a = check_finite(as_tensor(actions, "actions", dtype=self.log_std.dtype), "actions")
        if a.shape != (x.shape[0], self.action_dim):
            raise ValueError(f"actions must have shape ({x.shape[0]}, {self.action_dim})")
        z = (a - self.mean(x)) * torch.exp(-self.log_std)
        return (-0.5 * z**2 - self.log_std - 0.5 * torch.log(torch.tensor(2 * torch.pi))).sum(-1)


class _ScaledMean(nn.Module):
    def __init__(self, mean: nn.Module, inv_std: Tensor) -> None:
        super().__init__()
        self.mean = mean
        self.register_buffer("inv_std", inv_std)

    def forward(self, obs: Tensor) -> Tensor:
        return self.mean(obs) * self.inv_std


def policy_parameters(policy: nn.Module) -> Tensor:
    """The policy's parameters as one flat vector, in the order of ``named_parameters()``."""
    if not isinstance(policy, (CategoricalPolicy, GaussianPolicy)):
        raise TypeError(
            f"policy must be a CategoricalPolicy or GaussianPolicy, got {type(policy).__name__}"
        )
    return flatten_params(dict(policy.named_parameters())).detach()


def policy_fisher(policy: nn.Module, obs: Tensor) -> Callable[[Tensor], Tensor]:
    r"""Fisher-vector products :math:`v\mapsto Fv` of a policy on the states ``obs`` (a batch of visited states).

    .. math:: F = \frac1N\sum_n \mathbb E_{a\sim\pi(\cdot\mid s_n)}
        \big[\nabla_\theta\log\pi(a\mid s_n)\,\nabla_\theta\log\pi(a\mid s_n)^\top\big]

    Categorical: :class:`igbook.fisher.CurvatureOperator` of the logit network with the
    categorical likelihood (exact expectation over actions). Gaussian: the same operator for the
    scaled mean :math:`\mu/\sigma` with a unit-variance Gaussian likelihood, and :math:`2I` on
    :math:`\log\sigma` (first) :cite:`kakade2001natural,schulman2015trust`. Vectors are flat, in the
    order of :func:`policy_parameters`.
    """
    if isinstance(policy, CategoricalPolicy):
        x = _obs(obs, policy.obs_dim).to(policy.dtype)
        op = CurvatureOperator(policy, None, x, None, "categorical", "exact")
        return op.flat_matvec
    if isinstance(policy, GaussianPolicy):
        x = _obs(obs, policy.obs_dim).to(policy.log_std.dtype)
        scaled = _ScaledMean(policy.mean, torch.exp(-policy.log_std.detach()))
        op = CurvatureOperator(scaled, None, x, None, GaussianLikelihood(1.0), "exact")
        k = policy.action_dim  # named_parameters(): the module's own log_std comes first

        def fvp(v: Tensor) -> Tensor:
            return torch.cat([2.0 * v[:k], op.flat_matvec(v[k:])])

        return fvp
    raise TypeError(
        f"policy must be a CategoricalPolicy or GaussianPolicy, got {type(policy).__name__}"
    )


def categorical_kl(old_logits: Tensor, new_logits: Tensor) -> Tensor:
    r"""Mean over states of :math:`\mathrm{KL}(\pi_\text{old}(\cdot\mid s)\,\|\,\pi_\text{new}(\cdot\mid s))`.

    Exact sum over actions :cite:`schulman2015trust`.
    """
    p = check_finite(as_tensor(old_logits, "old_logits"), "old_logits")
    q = check_finite(as_tensor(new_logits, "new_logits", dtype=p.dtype), "new_logits")
    if p.ndim != 2 or p.shape != q.shape or p.shape[0] < 1:
        raise ValueError(
            f"old_logits and new_logits must share a shape (N, A), got {tuple(p.shape)}, {tuple(q.shape)}"
        )
    lp, lq = torch.log_softmax(p, -1), torch.log_softmax(q, -1)
    return (lp.exp() * (lp - lq)).sum(-1).mean()
