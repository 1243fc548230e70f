r"""Descent loops on exponential families: natural-gradient and gradient descent in any chart.

:func:`descend` runs either method (optionally inside a KL trust region,
:func:`igbook.natgrad.trust_region.trust_region_step`) and records a :class:`Trajectory`;
:func:`best_learning_rate` tunes gradient descent's step size fairly, so that comparisons with
natural-gradient descent :cite:`amari1998natural,martens2020new` are not won by a bad baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from igbook._validation import (
    as_tensor,
    check_choice,
    check_finite,
    check_integer,
    check_positive_real,
)
from igbook.families import ExponentialFamily
from igbook.natgrad.core import natural_gradient
from igbook.natgrad.families import (
    Chart,
    Loss,
    checked_distribution,
    kl_between,
    local_model,
    loss_and_gradient,
    start_point,
)
from igbook.natgrad.trust_region import trust_region_step

__all__ = ["Trajectory", "descend", "iterations_to_tolerance", "best_learning_rate"]


@dataclass(frozen=True)
class Trajectory:
    r"""A descent run: coordinates in its chart, usual parameters, losses and per-step KL.

    ``step_kl[t]`` is :math:`\mathrm{KL}(q_t\|q_{t+1})` (exact); ``backtracks[t]`` the number of
    trust-region reductions (0 without a trust region).
    """

    family: type[ExponentialFamily]
    chart: str
    method: str
    lr: float
    coords: Tensor
    params: Tensor
    losses: Tensor
    step_kl: Tensor
    backtracks: Tensor

    @property
    def steps(self) -> int:
        return int(self.losses.shape[0]) - 1

    def distributions(self) -> list[ExponentialFamily]:
        """Every iterate as a distribution."""
        return [self.family.from_params(p) for p in self.params]


def descend(
    start: ExponentialFamily,
    loss: Loss,
    which: str | Chart = "params",
    *,
    method: str = "natural",
    lr: float = 0.1,
    steps: int = 100,
    damping: float = 0.0,
    trust_radius: float | None = None,
    stop_below: float | None = None,
    max_loss: float | None = None,
) -> Trajectory:
    r"""Run natural-gradient (``method="natural"``) or gradient (``"euclidean"``) descent in a chart.

    .. math:: \phi_{t+1} = \phi_t - \rho\,P_t\nabla_\phi L(\phi_t),\qquad
        P_t = (F_\phi(\phi_t)+\lambda I)^{-1}\ \text{or}\ I.

    With ``trust_radius`` (natural only) each step is :func:`trust_region_step` with the step
    length capped by ``lr``. Stops early once the loss is at most ``stop_below``; raises
    :class:`ValueError` if the loss exceeds ``max_loss`` (divergence). A step that
    leaves the parameter space (e.g. :math:`\sigma\le0` after a large Euclidean step) raises
    :class:`ValueError` saying which step and suggesting a smaller ``lr``.
    """
    check_choice(method, "method", ("natural", "euclidean"))
    lr = check_positive_real(lr, "lr")
    steps = check_integer(steps, "steps", minimum=0)
    if trust_radius is not None:
        trust_radius = check_positive_real(trust_radius, "trust_radius")
        if method != "natural":
            raise ValueError("trust_radius applies to method='natural' only")
    cls, ch, phi = start_point(start, which)
    natural = method == "natural"
    dist = start
    val, g, theta, f = local_model(cls, ch, phi, loss, fisher=natural and trust_radius is None)
    coords, params, losses, kls, backs = [phi], [theta], [val], [], []
    for t in range(steps):
        if stop_below is not None and float(losses[-1]) <= stop_below:
            break
        if trust_radius is not None:
            res = trust_region_step(dist, loss, ch, trust_radius, lr=lr, damping=damping)
            if not res.accepted:  # no step inside the ball decreases the loss: converged
                break
            dist, nb = res.dist, res.backtracks
            new_theta = dist.params
            new_phi = ch.from_params(new_theta).detach()
            new_val = torch.as_tensor(res.loss_after, dtype=phi.dtype)
        else:
            direction = natural_gradient(f, g, damping) if natural else g  # type: ignore[arg-type]
            new_phi = phi - lr * direction
            try:
                new_val, g, new_theta, f = local_model(cls, ch, new_phi, loss, fisher=natural)
                checked_distribution(cls, new_theta, "the step")
            except ValueError as exc:
                raise ValueError(
                    f"step {t + 1} of {method} descent in the {ch.name!r} chart with lr={lr:g}: {exc}; "
                    "use a smaller lr or a trust region"
                ) from exc
            nb = 0
        if max_loss is not None and not float(new_val) <= max_loss:
            raise ValueError(
                f"step {t + 1} of {method} descent in the {ch.name!r} chart with lr={lr:g}: the loss "
                f"{float(new_val):.4g} exceeds max_loss={max_loss:g} (diverging); use a smaller lr"
            )
        kls.append(kl_between(cls, theta, new_theta).detach())
        phi, theta = new_phi, new_theta
        coords.append(phi)
        params.append(theta)
        losses.append(new_val)
        backs.append(nb)
    dt = phi.dtype
    return Trajectory(
        cls,
        ch.name,
        method,
        lr,
        torch.stack(coords),
        torch.stack(params),
        torch.stack(losses),
        torch.stack(kls) if kls else torch.zeros(0, dtype=dt),
        torch.tensor(backs, dtype=torch.int64),
    )


def iterations_to_tolerance(losses: Tensor | Trajectory, tol: float) -> int | None:
    """First iteration at which the loss is at most ``tol`` (``None`` if never)."""
    tol = check_positive_real(tol, "tol")
    values = (
        losses.losses
        if isinstance(losses, Trajectory)
        else check_finite(as_tensor(losses, "losses"), "losses")
    )
    hit = torch.nonzero(values <= tol)
    return int(hit[0]) if hit.numel() else None


def best_learning_rate(
    start: ExponentialFamily,
    loss: Loss,
    which: str | Chart = "params",
    *,
    method: str = "euclidean",
    lrs: Sequence[float] = (2.0, 1.0, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001),
    steps: int = 1000,
    tol: float = 1e-8,
) -> tuple[float | None, int | None]:
    """The learning rate from ``lrs`` that reaches ``loss <= tol`` in the fewest iterations, and that number.

    ``lrs`` are tried from the largest down. Runs that leave the parameter space, diverge (loss
    above 100 times its start) or do not reach ``tol`` within ``steps`` are skipped; the scan
    stops at the first successful rate whose successor needs more iterations (smaller steps
    only slow gradient descent down once it is stable). ``(None, None)`` if no rate succeeds.
    This makes a fair, tuned baseline for gradient descent, whose best step size depends on the
    chart and on the starting point.
    """
    tol = check_positive_real(tol, "tol")
    if not lrs:
        raise ValueError("lrs must hold at least one learning rate")
    rates = sorted((check_positive_real(lr, "lrs entry") for lr in lrs), reverse=True)
    _cls, ch, phi = start_point(start, which)
    loss0 = float(loss_and_gradient(loss, ch, phi)[0])
    best: tuple[float | None, int | None] = (None, None)
    for lr in rates:
        try:
            tr = descend(
                start,
                loss,
                ch,
                method=method,
                lr=lr,
                steps=steps,
                stop_below=tol,
                max_loss=100.0 * abs(loss0) + 1.0,
            )
        except ValueError:
            continue
        it = iterations_to_tolerance(tr, tol)
        if it is None:
            continue
        if best[1] is not None and it >= best[1]:
            break
        best = (lr, it)
    return best
