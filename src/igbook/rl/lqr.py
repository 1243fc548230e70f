r"""A scalar discounted linear-quadratic regulator with a linear-Gaussian policy, in closed form.

Dynamics :math:`x_{t+1} = a x_t + b u_t + w_t` with :math:`w_t\sim\mathcal N(0, \omega^2)`,
:math:`x_0\sim\mathcal N(0, s_0^2)`, cost :math:`q x^2 + r u^2` per step, discount
:math:`\gamma`. The policy :math:`u\sim\mathcal N(-kx, \sigma^2)` has parameters
:math:`\theta = (k, \log\sigma)`. With :math:`\ell = (a-bk)^2` and :math:`\gamma\ell < 1` the
discounted second moment :math:`S = \sum_t\gamma^t\mathbb E x_t^2` solves
:math:`S = s_0^2 + \gamma\big(\ell S + (b^2\sigma^2+\omega^2)/(1-\gamma)\big)`, so

.. math::

    S = \frac{s_0^2 + \gamma(b^2\sigma^2 + \omega^2)/(1-\gamma)}{1 - \gamma\ell},\qquad
    J(k, \sigma) = -\Big[(q + rk^2)\,S + \frac{r\sigma^2}{1-\gamma}\Big].

The policy's Fisher under the normalized discounted occupancy
(:math:`\mathbb E_{d}x^2 = (1-\gamma)S`) is
:math:`F = \operatorname{diag}\big((1-\gamma)S/\sigma^2,\ 2\big)`, and the optimal gain solves the
discounted Riccati equation :cite:`fazel2018global,bertsekas2012dynamic`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from igbook._validation import check_nonnegative_real, check_positive_real, check_scalar
from igbook.fisher import GaussianLikelihood

__all__ = [
    "ScalarLQR",
    "lqr_second_moment",
    "lqr_return",
    "lqr_gradient",
    "lqr_fisher",
    "lqr_natural_gradient",
    "lqr_gain_value",
    "lqr_optimal_gain",
    "riccati_iteration",
]

D = torch.float64


@dataclass(frozen=True)
class ScalarLQR:
    r"""A scalar discounted LQR :math:`(a, b, q, r, \gamma, \omega, s_0)` (validated on construction)."""

    a: float = 1.0
    b: float = 1.0
    q: float = 1.0
    r: float = 1.0
    gamma: float = 0.9
    noise_std: float = 0.1
    initial_std: float = 1.0

    def __post_init__(self) -> None:
        check_scalar(self.a, "a")
        b = check_scalar(self.b, "b")
        if b == 0:
            raise ValueError("b must be nonzero (the control must act on the state)")
        check_positive_real(self.q, "q")
        check_positive_real(self.r, "r")
        check_scalar(self.gamma, "gamma", low=0.0, high=1.0, closed_low=False, closed_high=False)
        check_nonnegative_real(self.noise_std, "noise_std")
        check_nonnegative_real(self.initial_std, "initial_std")


def _lqr(lqr: ScalarLQR) -> ScalarLQR:
    if not isinstance(lqr, ScalarLQR):
        raise TypeError(f"lqr must be a ScalarLQR, got {type(lqr).__name__}")
    return lqr


def _gain_std(lqr: ScalarLQR, gain: float | Tensor, std: float | Tensor) -> tuple[Tensor, Tensor]:
    if isinstance(gain, Tensor):
        if gain.numel() != 1:
            raise TypeError(
                f"gain must be a real number, got a tensor of shape {tuple(gain.shape)}"
            )
        k = gain.to(D).reshape(())
    else:
        k = torch.tensor(check_scalar(gain, "gain"), dtype=D)
    if isinstance(std, Tensor):
        if std.numel() != 1:
            raise TypeError(f"std must be a real number, got a tensor of shape {tuple(std.shape)}")
        s = std.to(D).reshape(())
    else:
        s = torch.tensor(check_nonnegative_real(std, "std"), dtype=D)
    kf, sf = float(k.detach()), float(s.detach())
    if not math.isfinite(kf):
        raise ValueError(f"gain must be finite, got {kf}")
    if not math.isfinite(sf) or sf < 0:
        raise ValueError(f"std must be finite and >= 0, got {sf}")
    if lqr.gamma * (lqr.a - lqr.b * kf) ** 2 >= 1:
        raise ValueError(
            f"gain={kf:.4g} does not stabilize the discounted system "
            f"(gamma (a - b gain)^2 = {lqr.gamma * (lqr.a - lqr.b * kf) ** 2:.4g} >= 1)"
        )
    return k, s


def lqr_second_moment(lqr: ScalarLQR, gain: float | Tensor, std: float | Tensor) -> Tensor:
    r"""The discounted second moment :math:`S = \sum_t \gamma^t\,\mathbb E x_t^2` (module docstring)."""
    lqr = _lqr(lqr)
    k, s = _gain_std(lqr, gain, std)
    g = lqr.gamma
    ell = (lqr.a - lqr.b * k) ** 2
    num = lqr.initial_std**2 + g * (lqr.b**2 * s**2 + lqr.noise_std**2) / (1 - g)
    return num / (1 - g * ell)


def lqr_return(lqr: ScalarLQR, gain: float | Tensor, std: float | Tensor) -> Tensor:
    r"""The expected discounted return :math:`J(k,\sigma) = -[(q+rk^2)S + r\sigma^2/(1-\gamma)]`.

    Differentiable in ``gain`` and ``std`` when they are tensors :cite:`fazel2018global`.
    """
    lqr = _lqr(lqr)
    k, s = _gain_std(lqr, gain, std)
    sm = lqr_second_moment(lqr, k, s)
    return -((lqr.q + lqr.r * k**2) * sm + lqr.r * s**2 / (1 - lqr.gamma))


def lqr_gradient(lqr: ScalarLQR, gain: float, std: float) -> Tensor:
    r"""Closed-form :math:`\nabla_\theta J` in :math:`\theta = (k, \log\sigma)`, shape ``(2,)``.

    With :math:`\ell = (a-bk)^2`:
    :math:`\partial_k J = -\big[2rkS + (q+rk^2)\,S\,\frac{-2\gamma b(a-bk)}{1-\gamma\ell}\big]`,
    :math:`\partial_{\log\sigma}J = -\sigma\big[(q+rk^2)\frac{2\gamma b^2\sigma}{(1-\gamma)(1-\gamma\ell)}
    + \frac{2r\sigma}{1-\gamma}\big]`.
    """
    lqr = _lqr(lqr)
    k, s = _gain_std(lqr, gain, std)
    g, a, b, q, r = lqr.gamma, lqr.a, lqr.b, lqr.q, lqr.r
    ell = (a - b * k) ** 2
    sm = lqr_second_moment(lqr, k, s)
    d_sm_dk = sm * g * (-2 * b * (a - b * k)) / (1 - g * ell)
    d_k = -(2 * r * k * sm + (q + r * k**2) * d_sm_dk)
    d_sm_ds = 2 * g * b**2 * s / ((1 - g) * (1 - g * ell))
    d_s = -((q + r * k**2) * d_sm_ds + 2 * r * s / (1 - g))
    return torch.stack([d_k, s * d_s])


def lqr_fisher(lqr: ScalarLQR, gain: float, std: float) -> Tensor:
    r"""Fisher of the policy :math:`\mathcal N(-kx, \sigma^2)` in :math:`(k, \log\sigma)` under the occupancy.

    .. math:: F = \mathbb E_{x\sim d}\begin{pmatrix} x^2/\sigma^2 & 0\\ 0 & 2\end{pmatrix}
        = \begin{pmatrix}(1-\gamma)S/\sigma^2 & 0\\ 0 & 2\end{pmatrix}

    The mean block is the pull-back :math:`J^\top\Lambda J` of the Gaussian output Fisher
    :math:`\Lambda = 1/\sigma^2` (:class:`igbook.fisher.GaussianLikelihood`) through
    :math:`\partial\mu/\partial k = -x` :cite:`kakade2001natural`. Needs ``std > 0``.
    """
    lqr = _lqr(lqr)
    k, s = _gain_std(lqr, gain, std)
    if float(s) <= 0:
        raise ValueError(f"std must be > 0 for the Fisher to exist, got {float(s)}")
    lam = GaussianLikelihood(float(s) ** 2).output_fisher(torch.zeros(1, 1, dtype=D))[0, 0, 0]
    ex2 = (1 - lqr.gamma) * lqr_second_moment(lqr, k, s)
    return torch.diag(torch.stack([ex2 * lam, torch.tensor(2.0, dtype=D)]))


def lqr_natural_gradient(lqr: ScalarLQR, gain: float, std: float) -> Tensor:
    r"""Kakade's natural gradient :math:`F^{-1}\nabla_\theta J` in :math:`(k, \log\sigma)` :cite:`kakade2001natural`."""
    return torch.linalg.solve(lqr_fisher(lqr, gain, std), lqr_gradient(lqr, gain, std))


def lqr_gain_value(lqr: ScalarLQR, gain: float) -> Tensor:
    r"""Cost-to-go coefficient :math:`P_k = (q + rk^2)/(1-\gamma(a-bk)^2)` of the deterministic gain :math:`k`."""
    lqr = _lqr(lqr)
    k, _ = _gain_std(lqr, gain, 0.0)
    return (lqr.q + lqr.r * k**2) / (1 - lqr.gamma * (lqr.a - lqr.b * k) ** 2)


def lqr_optimal_gain(lqr: ScalarLQR) -> tuple[float, float]:
    r"""The optimal gain :math:`k^*` and :math:`P^*` from the discounted scalar Riccati equation.

    :math:`P = q + \gamma a^2 P - \gamma^2a^2b^2P^2/(r + \gamma b^2P)`, a quadratic
    :math:`\gamma b^2P^2 + (r - \gamma b^2 q - \gamma a^2 r)P - qr = 0` whose positive root is
    :math:`P^*`; :math:`k^* = \gamma abP^*/(r + \gamma b^2 P^*)` :cite:`bertsekas2012dynamic`.
    The noise does not change :math:`k^*`; the optimal :math:`\sigma` is 0.
    """
    lqr = _lqr(lqr)
    g, a, b, q, r = lqr.gamma, lqr.a, lqr.b, lqr.q, lqr.r
    qa, qb, qc = g * b**2, r - g * b**2 * q - g * a**2 * r, -q * r
    p = (-qb + math.sqrt(qb**2 - 4 * qa * qc)) / (2 * qa)
    return g * a * b * p / (r + g * b**2 * p), p


def riccati_iteration(lqr: ScalarLQR, steps: int = 200) -> Tensor:
    r"""Iterates :math:`P_{t+1} = q + \gamma a^2P_t - \gamma^2a^2b^2P_t^2/(r+\gamma b^2P_t)` from :math:`P_0 = 0`.

    Dynamic programming on the finite horizon; converges to :math:`P^*` of :func:`lqr_optimal_gain`
    :cite:`bertsekas2012dynamic`. Shape ``(steps + 1,)``.
    """
    lqr = _lqr(lqr)
    if isinstance(steps, bool) or not isinstance(steps, int):
        raise TypeError(f"steps must be an int, got {type(steps).__name__}")
    if steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps}")
    g, a, b, q, r = lqr.gamma, lqr.a, lqr.b, lqr.q, lqr.r
    ps = [0.0]
    for _ in range(steps):
        p = ps[-1]
        ps.append(q + g * a**2 * p - (g * a * b * p) ** 2 / (r + g * b**2 * p))
    return torch.tensor(ps, dtype=D)
