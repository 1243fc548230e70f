r"""The mixture explorer's state: what a reader sets (:class:`MixtureControls`) and what is drawn
(:class:`MixtureState`), computed by the pure function :func:`mixture_state` from
:mod:`igbook.mixtures` (see :mod:`igbook.widgets.mixture`)."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from igbook import mixtures as mx
from igbook._validation import check_real

__all__ = ["MixtureControls", "MixtureState", "mixture_state", "spectrum_curve", "flow_seeds"]


@dataclass(frozen=True)
class MixtureControls:
    r"""Everything a reader can set in the explorer.

    Parameters
    ----------
    mu1, mu2
        the handles: component means of the target mixture, inside ``extent``.
    sigma
        shared standard deviation, > 0.
    probe
        a point :math:`(\mu_1,\mu_2)` of the parameter plane, or ``None``.
    grid_n
        ellipses per side of the tiling, 3 to 60.
    ellipse_scale
        display size of the ellipses relative to a grid cell where :math:`F = I/(2\sigma^2)`,
        in (0, 5]; changes no eigenvalue.
    extent
        ``(low, high)`` of both axes of the parameter plane.
    damping
        :math:`\lambda\ge0` added to the Fisher at the probe.
    flow
        compute particle flows along both fields.
    flow_steps, flow_dt
        Euler steps and step size of the flows.
    """

    mu1: float = -1.5
    mu2: float = 1.5
    sigma: float = 1.0
    probe: tuple[float, float] | None = (-0.4, 0.9)
    grid_n: int = 15
    ellipse_scale: float = 0.8
    extent: tuple[float, float] = (-3.0, 3.0)
    damping: float = 0.0
    flow: bool = False
    flow_steps: int = 60
    flow_dt: float = 0.15

    def __post_init__(self) -> None:
        lo, hi = (
            (check_real(v, "extent") for v in self.extent)
            if len(self.extent) == 2
            else (None, None)
        )  # type: ignore[misc]
        if lo is None or not hi > lo:  # type: ignore[operator]
            raise ValueError(f"extent must be (low, high) with low < high, got {self.extent!r}")
        object.__setattr__(self, "extent", (lo, hi))
        for name in ("mu1", "mu2"):
            v = check_real(getattr(self, name), name)
            if not lo <= v <= hi:  # type: ignore[operator]
                raise ValueError(f"{name} must lie inside extent [{lo}, {hi}], got {v}")
            object.__setattr__(self, name, v)
        s = check_real(self.sigma, "sigma")
        if not s > 0:
            raise ValueError(f"sigma must be > 0, got {s}")
        object.__setattr__(self, "sigma", s)
        if self.probe is not None:
            if len(self.probe) != 2:
                raise ValueError(f"probe must be (mu1, mu2) or None, got {self.probe!r}")
            p = (check_real(self.probe[0], "probe[0]"), check_real(self.probe[1], "probe[1]"))
            object.__setattr__(self, "probe", p)
        if isinstance(self.grid_n, bool) or not isinstance(self.grid_n, (int, np.integer)):
            raise TypeError(f"grid_n must be an int, got {type(self.grid_n).__name__}")
        if not 3 <= int(self.grid_n) <= 60:
            raise ValueError(f"grid_n must lie in [3, 60], got {self.grid_n}")
        object.__setattr__(self, "grid_n", int(self.grid_n))
        sc = check_real(self.ellipse_scale, "ellipse_scale")
        if not 0 < sc <= 5:
            raise ValueError(f"ellipse_scale must lie in (0, 5], got {sc}")
        object.__setattr__(self, "ellipse_scale", sc)
        dmp = check_real(self.damping, "damping")
        if dmp < 0:
            raise ValueError(f"damping must be >= 0, got {dmp}")
        object.__setattr__(self, "damping", dmp)
        if not isinstance(self.flow, bool):
            raise TypeError(f"flow must be a bool, got {type(self.flow).__name__}")
        if (
            isinstance(self.flow_steps, bool)
            or not isinstance(self.flow_steps, int)
            or self.flow_steps < 1
        ):
            raise ValueError(f"flow_steps must be an int >= 1, got {self.flow_steps!r}")
        fdt = check_real(self.flow_dt, "flow_dt")
        if not fdt > 0:
            raise ValueError(f"flow_dt must be > 0, got {fdt}")
        object.__setattr__(self, "flow_dt", fdt)


@dataclass(frozen=True)
class MixtureState:
    """Everything one frame of the explorer shows (numpy arrays, ready to draw)."""

    controls: MixtureControls
    grid: np.ndarray  # (n, n, 2)
    fisher: np.ndarray  # (n, n, 2, 2)
    outlines: np.ndarray  # (n*n, num, 2)
    clipped: np.ndarray  # (n*n,)
    handle_fisher: np.ndarray  # (2, 2) at theta* = (mu1, mu2)
    handle_eigenvalues: np.ndarray  # ascending
    handle_eigenvectors: np.ndarray  # columns
    handle_condition: float  # inf on the singular line
    handle_outline: np.ndarray  # (num, 2), clipped for display
    separation: float  # |mu1 - mu2| / sigma
    x: np.ndarray  # data-space abscissae
    density: np.ndarray  # p(x | theta*)
    components: np.ndarray  # (2, len(x)): 0.5 N(x | mu_i, sigma^2)
    probe_loss: float | None = None
    probe_grad: np.ndarray | None = None
    probe_natgrad: np.ndarray | None = None
    probe_angle: float | None = None
    flows: dict[str, np.ndarray] | None = None
    messages: tuple[str, ...] = field(default_factory=tuple)

    @property
    def target(self) -> np.ndarray:
        return np.array([self.controls.mu1, self.controls.mu2])

    def summary(self) -> str:
        """One line of numbers for the status bar."""
        lam = self.handle_eigenvalues
        kappa = "inf" if math.isinf(self.handle_condition) else f"{self.handle_condition:.3g}"
        out = (
            f"|mu1-mu2|/sigma = {self.separation:.3g}   lambda = ({lam[0]:.3g}, {lam[1]:.3g})   "
            f"kappa = {kappa}"
        )
        if self.probe_angle is not None:
            out += f"   angle(grad, natural grad) = {self.probe_angle:.1f} deg"
        for m in self.messages:
            out += f"   [{m}]"
        return out


@functools.lru_cache(maxsize=1)
def spectrum_curve(num: int = 160) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Dimensionless eigenvalues :math:`2\sigma^2\lambda_{\min}`, :math:`2\sigma^2\lambda_{\max}` against
    :math:`\delta=|\mu_1-\mu_2|/\sigma`.

    By translation and scale invariance they depend on :math:`\delta` only, so one curve
    serves every :math:`\sigma`. Returns ``(delta, lam_min, lam_max)``.
    """
    delta = torch.logspace(-2, math.log10(12.0), num, dtype=torch.float64)
    theta = torch.stack([delta / 2, -delta / 2], -1)
    ev, _ = mx.fisher_eigen(mx.fisher(theta, 1.0))
    return delta.numpy(), 2 * ev[:, 0].numpy(), 2 * ev[:, 1].numpy()


def flow_seeds(lo: float, hi: float, k: int = 6) -> torch.Tensor:
    r"""The ``k x k`` starting points of the explorer's particle flows on :math:`[lo, hi]^2`.

    A grid inset by 10 % of the width on each side, with points on the singular line
    :math:`\mu_1 = \mu_2` nudged off it (by 5 % of the width) so that both the Euclidean and
    the natural-gradient field are defined there :cite:`amari1998natural`. Shape ``(k*k, 2)``;
    the live figure (:mod:`igbook.live.mixture`) seeds its browser flows with the same points.
    """
    g = torch.linspace(lo + 0.1 * (hi - lo), hi - 0.1 * (hi - lo), k, dtype=torch.float64)
    yy, xx = torch.meshgrid(g, g, indexing="ij")
    pts = torch.stack([xx, yy], -1).reshape(-1, 2)
    # nudge points off the singular line so both fields are defined
    on = (pts[:, 0] - pts[:, 1]).abs() < 1e-9
    pts[on, 0] += 0.05 * (hi - lo)
    return pts


def mixture_state(controls: MixtureControls | None = None, **changes: Any) -> MixtureState:
    r"""Compute the explorer's frame for ``controls`` (with keyword ``changes`` applied).

    Ellipses: level sets :math:`\delta\theta^\top F\delta\theta=\varepsilon` with
    :math:`\varepsilon` chosen so that an ellipse of the well-separated regime
    (:math:`F=I/(2\sigma^2)`) has diameter ``ellipse_scale`` times the grid spacing; semi-axes
    longer than 1.5 grid cells are clipped for display and flagged (drawn dashed). Flows use
    :func:`igbook.mixtures.flow` with damping :math:`10^{-3}/(2\sigma^2)` for the natural field,
    and the Euclidean time step is multiplied by :math:`2\sigma^2` so that both fields move
    particles equally fast where :math:`F\approx I/(2\sigma^2)`.
    """
    if controls is None:
        controls = MixtureControls()
    if not isinstance(controls, MixtureControls):
        raise TypeError(f"controls must be a MixtureControls, got {type(controls).__name__}")
    if changes:
        unknown = set(changes) - set(MixtureControls.__dataclass_fields__)
        if unknown:
            raise TypeError(f"unknown control(s): {sorted(unknown)}")
        controls = replace(controls, **changes)
    c = controls
    s = c.sigma
    lo, hi = c.extent
    grid = mx.parameter_grid(lo, hi, c.grid_n)
    f = mx.fisher(grid, s)
    spacing = (hi - lo) / (c.grid_n - 1)
    lam_far = 0.5 / s**2
    eps = lam_far * (0.5 * c.ellipse_scale * spacing) ** 2
    cap = 1.5 * spacing
    outlines, clipped = mx.ellipse_outlines(
        grid.reshape(-1, 2), f.reshape(-1, 2, 2), eps, num=32, max_semi_axis=cap
    )

    target = torch.tensor([c.mu1, c.mu2], dtype=torch.float64)
    fh = mx.fisher(target, s)
    ev, evec = mx.fisher_eigen(fh)
    kappa = float(mx.condition_number(fh))
    h_outline, _ = mx.ellipse_outlines(target, fh, eps * 4, num=64, max_semi_axis=4 * cap)

    pad = 3.5 * s
    x = torch.linspace(
        min(lo, c.mu1, c.mu2) - pad, max(hi, c.mu1, c.mu2) + pad, 300, dtype=torch.float64
    )
    # each component is half the density of the "mixture" whose two means coincide
    comps = torch.stack(
        [0.5 * mx.density(x, torch.tensor([m, m], dtype=torch.float64), s) for m in (c.mu1, c.mu2)]
    )
    dens = comps.sum(0)

    messages: list[str] = []
    loss = mx.KLToTarget(target, s)
    probe_loss = probe_grad = probe_ng = probe_angle = None
    if c.probe is not None:
        p = torch.tensor(c.probe, dtype=torch.float64)
        probe_loss = float(loss.value(p))
        try:
            g, ngr = mx.natural_gradient_field(p, loss, damping=c.damping)
            probe_grad, probe_ng = g.numpy(), ngr.numpy()
            if float(g.norm()) > 1e-12:
                probe_angle = float(mx.gradient_angle(g, ngr))
            else:
                messages.append("probe at a minimum: gradient is zero")
        except ValueError:
            probe_grad = loss.gradient(p).numpy()
            messages.append(
                "probe on the singular line mu1 = mu2: natural gradient undefined without damping"
            )

    flows = None
    if c.flow:
        seeds = flow_seeds(lo, hi)
        nat, euc = mx.flow_pair(
            seeds,
            loss,
            steps=c.flow_steps,
            dt_natural=c.flow_dt,
            dt_euclidean=c.flow_dt * 2 * s**2,
            damping=1e-3 * lam_far,
            max_step=0.5 * spacing,
        )
        flows = {"natural": nat.numpy(), "euclidean": euc.numpy()}

    return MixtureState(
        controls=c,
        grid=grid.numpy(),
        fisher=f.numpy(),
        outlines=outlines.numpy(),
        clipped=clipped.numpy(),
        handle_fisher=fh.numpy(),
        handle_eigenvalues=ev.numpy(),
        handle_eigenvectors=evec.numpy(),
        handle_condition=kappa,
        handle_outline=h_outline.numpy(),
        separation=abs(c.mu1 - c.mu2) / s,
        x=x.numpy(),
        density=dens.numpy(),
        components=comps.numpy(),
        probe_loss=probe_loss,
        probe_grad=probe_grad,
        probe_natgrad=probe_ng,
        probe_angle=probe_angle,
        flows=flows,
        messages=tuple(messages),
    )
