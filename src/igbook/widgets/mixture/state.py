r"""The Gaussian-mixture manifold explorer.

Three layers (see :mod:`igbook.widgets`):

1. :func:`mixture_state` turns a :class:`MixtureControls` (the two component means, the
   shared :math:`\sigma`, the probe, grid density, ellipse scale, flow on/off) into a
   :class:`MixtureState`: the Fisher field over the parameter plane and its ellipses, the
   eigenvalues and condition number at the handles, the Euclidean and natural gradients at the
   probe with the angle between them, the mixture density, and optionally particle flows. Pure:
   the tests call it without a front end.
2. :func:`draw_mixture` renders a state into a three-panel figure (data space, parameter plane,
   spectrum) and returns a :class:`MixtureFigure` whose :meth:`MixtureFigure.update` redraws a
   new state by mutating the existing artists (what keeps dragging live).
3. :class:`MixtureExplorer` wires ipywidgets to 1 and 2. With the ``ipympl`` backend
   (``%matplotlib widget``) the handles are dragged on the figure and a click places the probe;
   otherwise sliders drive everything and the figure is shown as an image.
   :func:`animate_singularity` and :func:`animate_sigma` pre-render scrubbable JavaScript
   animations for the static website.

The *handles* are the component means :math:`(\mu_1^*,\mu_2^*)` of a target mixture. In the
parameter plane they are one point :math:`\theta^*` (drawn with its mirror image
:math:`(\mu_2^*,\mu_1^*)`, the same distribution); the loss whose gradients the probe and the
flows follow is :math:`L(\theta)=\mathrm{KL}(p_{\theta^*}\|p_\theta)`
(:class:`igbook.mixtures.KLToTarget`). The Fisher field itself depends only on :math:`\sigma`.
"""

from __future__ import annotations

import functools
import io
import math
from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import Any

import numpy as np
import torch

from igbook import mixtures as mx
from igbook.plotting import PALETTE, book_style

__all__ = [
    "MixtureControls",
    "MixtureState",
    "mixture_state",
    "spectrum_curve",
    "Redraw",
    "MixtureFigure",
    "draw_mixture",
    "MixtureExplorer",
    "MixtureAnimation",
    "animate_states",
    "animate_singularity",
    "animate_sigma",
]

EUCLID_COLOR = PALETTE[1]  # vermillion: the Euclidean gradient ("red arrow")
NATURAL_COLOR = PALETTE[5]  # sky blue: the natural gradient ("cyan arrow")
NATURAL_FLOW_COLOR = PALETTE[0]
ELLIPSE_COLOR = "#7a8a99"
CLIPPED_COLOR = PALETTE[3]
HANDLE_COLOR = PALETTE[2]


def _num(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    return v


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
        lo, hi = (_num(v, "extent") for v in self.extent) if len(self.extent) == 2 else (None, None)  # type: ignore[misc]
        if lo is None or not hi > lo:  # type: ignore[operator]
            raise ValueError(f"extent must be (low, high) with low < high, got {self.extent!r}")
        object.__setattr__(self, "extent", (lo, hi))
        for name in ("mu1", "mu2"):
            v = _num(getattr(self, name), name)
            if not lo <= v <= hi:  # type: ignore[operator]
                raise ValueError(f"{name} must lie inside extent [{lo}, {hi}], got {v}")
            object.__setattr__(self, name, v)
        s = _num(self.sigma, "sigma")
        if not s > 0:
            raise ValueError(f"sigma must be > 0, got {s}")
        object.__setattr__(self, "sigma", s)
        if self.probe is not None:
            if len(self.probe) != 2:
                raise ValueError(f"probe must be (mu1, mu2) or None, got {self.probe!r}")
            p = (_num(self.probe[0], "probe[0]"), _num(self.probe[1], "probe[1]"))
            object.__setattr__(self, "probe", p)
        if isinstance(self.grid_n, bool) or not isinstance(self.grid_n, (int, np.integer)):
            raise TypeError(f"grid_n must be an int, got {type(self.grid_n).__name__}")
        if not 3 <= int(self.grid_n) <= 60:
            raise ValueError(f"grid_n must lie in [3, 60], got {self.grid_n}")
        object.__setattr__(self, "grid_n", int(self.grid_n))
        sc = _num(self.ellipse_scale, "ellipse_scale")
        if not 0 < sc <= 5:
            raise ValueError(f"ellipse_scale must lie in (0, 5], got {sc}")
        object.__setattr__(self, "ellipse_scale", sc)
        dmp = _num(self.damping, "damping")
        if dmp < 0:
            raise ValueError(f"damping must be >= 0, got {dmp}")
        object.__setattr__(self, "damping", dmp)
        if not isinstance(self.flow, bool):
            raise TypeError(f"flow must be a bool, got {type(self.flow).__name__}")
        if isinstance(self.flow_steps, bool) or not isinstance(self.flow_steps, int) or self.flow_steps < 1:
            raise ValueError(f"flow_steps must be an int >= 1, got {self.flow_steps!r}")
        fdt = _num(self.flow_dt, "flow_dt")
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
        out = (f"|mu1-mu2|/sigma = {self.separation:.3g}   lambda = ({lam[0]:.3g}, {lam[1]:.3g})   "
               f"kappa = {kappa}")
        if self.probe_angle is not None:
            out += f"   angle(grad, natural grad) = {self.probe_angle:.1f} deg"
        for m in self.messages:
            out += f"   [{m}]"
        return out


@functools.lru_cache(maxsize=1)
def spectrum_curve(num: int = 160) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Dimensionless eigenvalues :math:`2\sigma^2\lambda_{\min}`, :math:`2\sigma^2\lambda_{\max}` against :math:`\delta=|\mu_1-\mu_2|/\sigma`.

    By translation and scale invariance they depend on :math:`\delta` only, so one curve
    serves every :math:`\sigma`. Returns ``(delta, lam_min, lam_max)``.
    """
    delta = torch.logspace(-2, math.log10(12.0), num, dtype=torch.float64)
    theta = torch.stack([delta / 2, -delta / 2], -1)
    ev, _ = mx.fisher_eigen(mx.fisher(theta, 1.0))
    return delta.numpy(), 2 * ev[:, 0].numpy(), 2 * ev[:, 1].numpy()


def _flow_seeds(lo: float, hi: float, k: int = 6) -> torch.Tensor:
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
    outlines, clipped = mx.ellipse_outlines(grid.reshape(-1, 2), f.reshape(-1, 2, 2), eps, num=32, max_semi_axis=cap)

    target = torch.tensor([c.mu1, c.mu2], dtype=torch.float64)
    fh = mx.fisher(target, s)
    ev, evec = mx.fisher_eigen(fh)
    kappa = float(mx.condition_number(fh))
    h_outline, _ = mx.ellipse_outlines(target, fh, eps * 4, num=64, max_semi_axis=4 * cap)

    pad = 3.5 * s
    x = torch.linspace(min(lo, c.mu1, c.mu2) - pad, max(hi, c.mu1, c.mu2) + pad, 300, dtype=torch.float64)
    comps = torch.stack([0.5 * torch.exp(mx._log_normal(x, torch.tensor(m), torch.tensor(s))) for m in (c.mu1, c.mu2)])
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
            messages.append("probe on the singular line mu1 = mu2: natural gradient undefined without damping")

    flows = None
    if c.flow:
        seeds = _flow_seeds(lo, hi)
        nat, euc = mx.flow_pair(seeds, loss, steps=c.flow_steps, dt_natural=c.flow_dt, dt_euclidean=c.flow_dt * 2 * s**2,
                                damping=1e-3 * lam_far, max_step=0.5 * spacing)
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


# ------------------------------------------------------------------------------------------
# drawing
class Redraw(IntEnum):
    """How much of a :class:`MixtureFigure` a state change invalidates (see :meth:`MixtureFigure.update`)."""

    #: only the handles, probe, flows and texts moved: blit them over the cached background
    DYNAMIC = 0
    #: the Fisher-ellipse field changed too (``sigma``, grid density, ellipse scale), axes did not
    FIELD = 1
    #: axes limits changed (``extent``, or the data panel's height): draw the whole figure
    FULL = 2


class MixtureFigure:
    """A three-panel figure of a :class:`MixtureState` whose artists are updated in place."""

    def __init__(self, fig: Any, state: MixtureState) -> None:
        from matplotlib.collections import LineCollection

        self.fig = fig
        self.ax_data, self.ax_par, self.ax_spec = fig.axes[:3]
        ad, ap, asp = self.ax_data, self.ax_par, self.ax_spec

        # data space
        (self.l_dens,) = ad.plot([], [], color="#222222", lw=2, label="p(x | θ*)")
        (self.l_c1,) = ad.plot([], [], color=PALETTE[0], lw=1, ls="--", label="components")
        (self.l_c2,) = ad.plot([], [], color=PALETTE[0], lw=1, ls="--")
        self.h_lines = [ad.axvline(0, color=HANDLE_COLOR, lw=1.5, alpha=0.6) for _ in range(2)]
        (self.h_pts,) = ad.plot([], [], "o", ms=11, color=HANDLE_COLOR, mec="white", mew=1.5, zorder=5,
                                clip_on=False, label="handles μ1*, μ2*")
        # plain (unicode) text for everything that changes per frame: mathtext parsing is cached
        # for 50 strings only, and re-parsing dominated the redraw time
        self.h_text = [ad.text(0, 0, t, ha="center", va="bottom", fontsize=10, color=HANDLE_COLOR)
                       for t in ("μ1*", "μ2*")]
        from matplotlib.ticker import FormatStrFormatter

        ad.yaxis.set_major_formatter(FormatStrFormatter("%.2f"))  # fixed width: the layout is frozen
        ad.set_xlabel("x")
        ad.set_ylabel("density")
        ad.set_title("data space")
        ad.legend(loc="upper right", fontsize=8)

        # parameter plane
        self.ellipses = LineCollection([], colors=ELLIPSE_COLOR, linewidths=0.8)
        self.ellipses_clipped = LineCollection([], colors=CLIPPED_COLOR, linewidths=0.7, linestyles="--", alpha=0.6)
        ap.add_collection(self.ellipses)
        ap.add_collection(self.ellipses_clipped)
        (self.diag,) = ap.plot([], [], color=CLIPPED_COLOR, lw=1.2, ls=":", label="singular line μ1 = μ2")
        (self.h_ell,) = ap.plot([], [], color=HANDLE_COLOR, lw=2.2)
        (self.target_pt,) = ap.plot([], [], "*", ms=16, color=HANDLE_COLOR, mec="white", zorder=6,
                                    label="θ* = (μ1*, μ2*)")
        (self.mirror_pt,) = ap.plot([], [], "*", ms=14, mfc="none", mec=HANDLE_COLOR, zorder=6, label="mirror (same p)")
        self.flow_nat = LineCollection([], colors=NATURAL_FLOW_COLOR, linewidths=1.1, alpha=0.85)
        self.flow_euc = LineCollection([], colors=EUCLID_COLOR, linewidths=1.1, alpha=0.85)
        ap.add_collection(self.flow_nat)
        ap.add_collection(self.flow_euc)
        (self.flow_end_nat,) = ap.plot([], [], "o", ms=3, color=NATURAL_FLOW_COLOR)
        (self.flow_end_euc,) = ap.plot([], [], "o", ms=3, color=EUCLID_COLOR)
        self.arrows = ap.quiver([0, 0], [0, 0], [0, 0], [0, 0], color=[EUCLID_COLOR, NATURAL_COLOR], angles="xy",
                                scale_units="xy", scale=1, width=0.012, zorder=7)
        (self.probe_pt,) = ap.plot([], [], "o", ms=7, color="#222222", zorder=8)
        self.angle_text = ap.text(0, 0, "", fontsize=10, ha="center", va="bottom", zorder=9,
                                  bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="none", alpha=0.85))
        ap.set_xlabel("μ1")
        ap.set_ylabel("μ2")
        ap.set_aspect("equal", adjustable="box")
        ap.set_title("parameter plane: Fisher ellipses")
        from matplotlib.lines import Line2D

        extra = [Line2D([], [], color=EUCLID_COLOR, lw=2, label="−∇L (Euclidean)"),
                 Line2D([], [], color=NATURAL_COLOR, lw=2, label="−F⁻¹∇L (natural)")]
        self.par_legend = ap.legend(handles=[self.diag, self.target_pt, self.mirror_pt, *extra], loc="lower right",
                                    fontsize=7, framealpha=0.85, frameon=True)

        # spectrum
        delta, lmin, lmax = spectrum_curve()
        asp.loglog(delta, lmin, color=PALETTE[0], lw=1.8, label="2σ²λmin")
        asp.loglog(delta, lmax, color=PALETTE[4], lw=1.8, label="2σ²λmax")
        asp.loglog(delta, lmax / lmin, color=PALETTE[3], lw=1.8, label="κ = λmax/λmin")
        asp.loglog(delta, 2 / delta**2, color=PALETTE[3], lw=0.8, ls=":", label="κ ≈ 2σ²/Δ²")
        self.spec_line = asp.axvline(1, color=HANDLE_COLOR, lw=1.2)
        (self.spec_pts,) = asp.plot([], [], "o", color=HANDLE_COLOR, ms=6, zorder=5)
        self.spec_text = asp.text(0.03, 0.03, "", transform=asp.transAxes, fontsize=9, va="bottom",
                                  bbox=dict(boxstyle="round,pad=0.3", fc="white", ec="#999999", alpha=0.9))
        asp.set_xlabel("|μ1* − μ2*| / σ")
        asp.set_ylim(1e-4, 1e5)
        from matplotlib.ticker import FuncFormatter, LogLocator

        plain_log = FuncFormatter(lambda v, _: f"1e{round(math.log10(v))}" if v > 0 else "")
        asp.xaxis.set_major_locator(LogLocator(numticks=6))
        asp.yaxis.set_major_locator(LogLocator(numticks=6))
        asp.xaxis.set_major_formatter(plain_log)
        asp.yaxis.set_major_formatter(plain_log)
        asp.set_title("spectrum at the handles")
        asp.legend(loc="upper right", fontsize=7)
        asp.minorticks_off()

        #: artists that change when a handle or the probe moves (redrawn over a cached background)
        self.dynamic: list[Any] = [
            self.l_dens, self.l_c1, self.l_c2, *self.h_lines, self.h_pts, *self.h_text,
            self.h_ell, self.target_pt, self.mirror_pt, self.flow_nat, self.flow_euc, self.flow_end_nat,
            self.flow_end_euc, self.arrows, self.probe_pt, self.angle_text, self.spec_line, self.spec_pts,
            self.spec_text,
        ]
        #: artists that change with the ellipse field (redrawn over a second cached background, the
        #: one without them; the legend is drawn after the ellipses so that it stays on top)
        self.field: list[Any] = [self.ellipses, self.ellipses_clipped, self.par_legend]
        self._limits_key: tuple[Any, ...] | None = None
        self._field_key: tuple[Any, ...] | None = None
        self._ymax: float | None = None
        self._bg_axes: Any = None  # everything but the field and the dynamic artists
        self._background: Any = None  # ... plus the field
        self._blit = False
        self.update(state)

    # -- blitting ---------------------------------------------------------------------------
    def enable_blit(self) -> None:
        """Redraw only the ``dynamic`` artists over a cached background (matplotlib's blitting recipe).

        Used by the explorer; static figures do not need it (``savefig`` draws everything).
        """
        for a in (*self.field, *self.dynamic):
            a.set_animated(True)
        self._blit = True
        self.fig.canvas.mpl_connect("draw_event", self._on_draw)

    def _on_draw(self, event: Any) -> None:
        self._bg_axes = self.fig.canvas.copy_from_bbox(self.fig.bbox)
        self._draw_field()
        self._draw_dynamic()

    def _draw_field(self) -> None:
        for a in self.field:
            self.fig.draw_artist(a)
        self._background = self.fig.canvas.copy_from_bbox(self.fig.bbox)

    def _draw_dynamic(self) -> None:
        for a in self.dynamic:
            self.fig.draw_artist(a)

    def refresh(self, level: Redraw | bool) -> None:
        """Show the current artists after :meth:`update` returned ``level``.

        Without blitting, or at :attr:`Redraw.FULL` (``True``), or before the first draw, the whole
        figure is drawn. At :attr:`Redraw.FIELD` the ellipse field is redrawn over the cached axes
        and the dynamic artists over that; at :attr:`Redraw.DYNAMIC` (``False``) only the dynamic
        artists are redrawn over the cached field.
        """
        cv = self.fig.canvas
        level = Redraw(int(level))
        if not self._blit or level is Redraw.FULL or self._background is None or self._bg_axes is None:
            cv.draw()
            return
        if level is Redraw.FIELD:
            cv.restore_region(self._bg_axes)
            self._draw_field()
        else:
            cv.restore_region(self._background)
        self._draw_dynamic()
        cv.blit(self.fig.bbox)

    def update(self, state: MixtureState) -> Redraw:
        r"""Show ``state`` by mutating the existing artists (no drawing; see :meth:`refresh`).

        Returns what must be redrawn: :attr:`Redraw.FULL` when axes limits changed (``extent``, or
        the data panel's height), :attr:`Redraw.FIELD` when only the ellipse field changed
        (``sigma``, grid density, ellipse scale), else :attr:`Redraw.DYNAMIC`.

        The data panel's height is :math:`1.15/(\sigma\sqrt{2\pi})` (the density peaks at most at
        :math:`1/(\sigma\sqrt{2\pi})`, when the components coincide). When blitting (an explorer
        or an animation), it changes only when the peak would leave the panel or fill less than
        60% of it, so that moving the ``sigma`` slider mostly costs a field redraw, not a full one;
        a static figure always uses the exact height.
        """
        if not isinstance(state, MixtureState):
            raise TypeError(f"state must be a MixtureState, got {type(state).__name__}")
        c = state.controls
        lo, hi = c.extent
        pad = 0.04 * (hi - lo)
        need = 1.15 / (c.sigma * math.sqrt(2 * math.pi))
        ymax = self._ymax
        if ymax is None or not self._blit or need > ymax or need < 0.6 * ymax:
            ymax = need
        limits_key = (c.extent, ymax)
        field_key = (c.sigma, c.extent, c.grid_n, c.ellipse_scale)
        level = Redraw.DYNAMIC
        if limits_key != self._limits_key:
            self.ax_data.set_xlim(float(state.x[0]), float(state.x[-1]))
            self.ax_data.set_ylim(0, ymax)
            self.diag.set_data([lo - pad, hi + pad], [lo - pad, hi + pad])
            self.ax_par.set_xlim(lo - pad, hi + pad)
            self.ax_par.set_ylim(lo - pad, hi + pad)
            self._limits_key, self._ymax = limits_key, ymax
            level = Redraw.FULL
        if field_key != self._field_key:
            keep = ~state.clipped
            self.ellipses.set_segments(list(state.outlines[keep]))
            self.ellipses_clipped.set_segments(list(state.outlines[state.clipped]))
            self._field_key = field_key
            level = max(level, Redraw.FIELD)
        # data space
        self.l_dens.set_data(state.x, state.density)
        self.l_c1.set_data(state.x, state.components[0])
        self.l_c2.set_data(state.x, state.components[1])
        for ln, m in zip(self.h_lines, (c.mu1, c.mu2)):
            ln.set_xdata([m, m])
        self.h_pts.set_data([c.mu1, c.mu2], [0.0, 0.0])
        for t, m, h in zip(self.h_text, (c.mu1, c.mu2), (0.04, 0.11)):  # staggered: readable when close
            t.set_position((m, h * ymax))
        # parameter plane
        self.h_ell.set_data(state.handle_outline[:, 0], state.handle_outline[:, 1])
        self.target_pt.set_data([c.mu1], [c.mu2])
        self.mirror_pt.set_data([c.mu2], [c.mu1])
        # flows
        if state.flows is not None:
            nat, euc = state.flows["natural"], state.flows["euclidean"]
            self.flow_nat.set_segments([nat[:, i] for i in range(nat.shape[1])])
            self.flow_euc.set_segments([euc[:, i] for i in range(euc.shape[1])])
            self.flow_end_nat.set_data(nat[-1, :, 0], nat[-1, :, 1])
            self.flow_end_euc.set_data(euc[-1, :, 0], euc[-1, :, 1])
        else:
            for coll in (self.flow_nat, self.flow_euc):
                coll.set_segments([])
            self.flow_end_nat.set_data([], [])
            self.flow_end_euc.set_data([], [])
        # probe and arrows (both normalized to the same display length)
        length = 0.14 * (hi - lo)
        if c.probe is not None and state.probe_grad is not None:
            px, py = c.probe
            vecs = []
            for v in (state.probe_grad, state.probe_natgrad):
                n = float(np.linalg.norm(v)) if v is not None else 0.0
                vecs.append(-np.asarray(v) / n * length if n > 0 else np.zeros(2))
            u = np.array([vecs[0][0], vecs[1][0]])
            w = np.array([vecs[0][1], vecs[1][1]])
            self.arrows.set_offsets(np.array([[px, py], [px, py]]))
            self.arrows.set_UVC(u, w)
            self.probe_pt.set_data([px], [py])
            txt = "" if state.probe_angle is None else f"Δθ = {state.probe_angle:.1f}°"
            if state.probe_angle is None and state.messages:
                txt = "undefined"
            self.angle_text.set_text(txt)
            self.angle_text.set_position((px, py + 0.05 * (hi - lo)))
        else:
            self.arrows.set_offsets(np.zeros((2, 2)))
            self.arrows.set_UVC(np.zeros(2), np.zeros(2))
            self.probe_pt.set_data([], [])
            self.angle_text.set_text("")
        # spectrum
        d = max(state.separation, 1e-2)
        lam = state.handle_eigenvalues * 2 * c.sigma**2
        self.spec_line.set_xdata([d, d])
        self.spec_pts.set_data([d, d], [max(lam[0], 1e-4), lam[1]])
        kappa = "∞" if math.isinf(state.handle_condition) else f"{state.handle_condition:.3g}"
        self.spec_text.set_text(
            f"σ = {c.sigma:.2g},  |μ1* − μ2*|/σ = {state.separation:.2f}\n"
            f"2σ²λ = ({lam[0]:.2e}, {lam[1]:.3f})\n"
            f"κ = {kappa}"
        )
        return level


def _new_figure(figsize: tuple[float, float], dpi: float | None, *, pyplot: bool = True) -> Any:
    """A figure *without* a layout engine: a layout engine makes every ``savefig`` draw twice."""
    import matplotlib as mpl

    with book_style(), mpl.rc_context({"figure.constrained_layout.use": False, "figure.autolayout": False}):
        if pyplot:
            import matplotlib.pyplot as plt

            return plt.figure(figsize=figsize, dpi=dpi)
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=figsize, dpi=dpi)
        FigureCanvasAgg(fig)
        return fig


def draw_mixture(state: MixtureState, fig: Any = None, *, figsize: tuple[float, float] = (13.0, 4.4),
                 dpi: float | None = None, title: str | None = None) -> MixtureFigure:
    """Draw ``state`` into a new (or the given, empty) figure; returns a :class:`MixtureFigure`.

    Without ``fig`` a pyplot figure is created (so that ``plt.show()`` shows it
    in a notebook) with a fixed layout; ``title`` adds a title above the three panels.
    """
    if not isinstance(state, MixtureState):
        raise TypeError(f"state must be a MixtureState, got {type(state).__name__}")
    if fig is None:
        fig = _new_figure(figsize, dpi)
    if fig.axes:
        raise ValueError("fig must be empty (draw_mixture adds its own three axes)")
    with book_style():
        fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.0, 1.05, 0.95]})
        mf = MixtureFigure(fig, state)
    top = 0.84 if title else 0.92
    if title:
        fig.suptitle(title, fontsize=11)
    if fig.get_layout_engine() is None:
        fig.subplots_adjust(left=0.06, right=0.99, bottom=0.13, top=top, wspace=0.24)
    else:
        # a caller's figure with a layout engine: lay out once, then freeze the positions
        fig.canvas.draw()
        fig.set_layout_engine("none")
    return mf


# ------------------------------------------------------------------------------------------
# the explorer
def _ipympl_active() -> bool:
    import matplotlib

    b = matplotlib.get_backend().lower()
    return "ipympl" in b or b == "widget"


class MixtureExplorer:
    r"""Interactive explorer of the mixture manifold (ipywidgets).

    Controls: the two handles (drag them on the figure with the ``ipympl`` backend, or use the
    sliders), a click on the parameter plane to place the probe (probe sliders otherwise),
    sliders for :math:`\sigma`, grid density and ellipse scale, and a *flow* toggle. Every
    change calls :func:`mixture_state` and :meth:`MixtureFigure.update`; the current state is
    ``state``.

    The explorer chooses its drawing path itself, whatever backend the kernel runs: by default
    (``interactive=False``) it renders with its own Agg figure into an
    :class:`ipywidgets.Image`, so the first Run All shows the figure, every slider redraws it,
    nothing is drawn outside the cell and nothing runs while idle. ``interactive=True`` puts
    the figure on an ``ipympl`` canvas for dragging on the figure (requires
    ``%matplotlib widget``); to drag the handles in JupyterLab or on the website without a
    kernel, use :func:`igbook.live.mixture_explorer`.
    """

    def __init__(self, controls: MixtureControls | None = None, *, interactive: bool = False) -> None:
        import ipywidgets as w

        self.controls = controls if controls is not None else MixtureControls()
        if not isinstance(self.controls, MixtureControls):
            raise TypeError(f"controls must be a MixtureControls, got {type(self.controls).__name__}")
        if not isinstance(interactive, bool):
            raise TypeError(f"interactive must be a bool, got {type(interactive).__name__}")
        self.interactive = interactive
        self.state = mixture_state(self.controls)
        self._drag: str | None = None
        self._syncing = False

        if self.interactive:
            import matplotlib.pyplot as plt

            with plt.ioff():
                self.figure = draw_mixture(self.state)
            canvas = self.figure.fig.canvas
            canvas.mpl_connect("button_press_event", self.on_press)
            canvas.mpl_connect("motion_notify_event", self.on_motion)
            canvas.mpl_connect("button_release_event", self.on_release)
            # the ipympl canvas is itself a widget; any other canvas (tests, Agg) gets a placeholder
            self._view: Any = canvas if isinstance(canvas, w.DOMWidget) else w.Output()
        else:
            self.figure = draw_mixture(self.state, _new_figure((13.0, 4.4), 80, pyplot=False))
            self._view = w.Image(format="png", layout=w.Layout(width="100%", max_width="1040px"))
        self.figure.enable_blit()

        lo, hi = self.controls.extent
        c = self.controls
        slider = functools.partial(w.FloatSlider, continuous_update=True, readout_format=".2f",
                                   layout=w.Layout(width="320px"))
        self.sliders: dict[str, Any] = {
            "mu1": slider(value=c.mu1, min=lo, max=hi, step=0.05, description="μ1*"),
            "mu2": slider(value=c.mu2, min=lo, max=hi, step=0.05, description="μ2*"),
            "sigma": slider(value=c.sigma, min=0.3, max=2.0, step=0.05, description="σ"),
            "grid_n": w.IntSlider(value=c.grid_n, min=5, max=40, step=1, description="grid",
                                  layout=w.Layout(width="320px")),
            "ellipse_scale": slider(value=c.ellipse_scale, min=0.1, max=2.0, step=0.05, description="ellipse scale"),
            "probe_x": slider(value=(c.probe or (0.0, 0.0))[0], min=lo, max=hi, step=0.05, description="probe μ1"),
            "probe_y": slider(value=(c.probe or (0.0, 0.0))[1], min=lo, max=hi, step=0.05, description="probe μ2"),
        }
        self.flow_button = w.ToggleButton(value=c.flow, description="Flow", icon="play",
                                          tooltip="particles along -natural (blue) and -Euclidean (orange) gradients")
        self.status = w.HTML()
        for name, sl in self.sliders.items():
            sl.observe(functools.partial(self._on_slider, name), names="value")
        self.flow_button.observe(lambda ch: self.set(flow=bool(ch["new"])), names="value")
        hint = ("drag the green handles or the star; click the plane to place the probe" if self.interactive
                else "to drag the handles on the figure, use <code>igbook.live.mixture_explorer()</code>")
        left = w.VBox([self.sliders[k] for k in ("mu1", "mu2", "sigma", "probe_x")])
        right = w.VBox([self.sliders[k] for k in ("grid_n", "ellipse_scale", "probe_y")] + [self.flow_button])
        self.widget = w.VBox([w.HBox([left, right]), w.HTML(f"<small>{hint}</small>"), self._view, self.status])
        self._render()

    # -- state changes ------------------------------------------------------------------------
    def set(self, **changes: Any) -> MixtureState:
        """Apply control changes (any :class:`MixtureControls` field), recompute and redraw."""
        new = replace(self.controls, **changes)
        self.controls = new
        self.state = mixture_state(new)
        self._sync_sliders()
        self._render()
        return self.state

    def _on_slider(self, name: str, change: dict[str, Any]) -> None:
        if self._syncing:
            return
        v = change["new"]
        lo, hi = self.controls.extent
        if name in ("probe_x", "probe_y"):
            px, py = self.controls.probe or (0.0, 0.0)
            self.set(probe=(v, py) if name == "probe_x" else (px, v))
        elif name == "grid_n":
            self.set(grid_n=int(v))
        elif name in ("mu1", "mu2"):
            self.set(**{name: min(max(float(v), lo), hi)})
        else:
            self.set(**{name: float(v)})

    def _sync_sliders(self) -> None:
        c = self.controls
        self._syncing = True
        try:
            vals = {"mu1": c.mu1, "mu2": c.mu2, "sigma": c.sigma, "grid_n": c.grid_n,
                    "ellipse_scale": c.ellipse_scale}
            if c.probe is not None:
                vals["probe_x"], vals["probe_y"] = c.probe
            for k, v in vals.items():
                sl = self.sliders[k]
                if sl.value != v:
                    sl.value = min(max(v, sl.min), sl.max)
            if self.flow_button.value != c.flow:
                self.flow_button.value = c.flow
        finally:
            self._syncing = False

    def _render(self) -> None:
        level = self.figure.update(self.state)
        self.status.value = f"<code>{self.state.summary()}</code>"
        self.figure.refresh(level)
        if not self.interactive:
            from PIL import Image  # a dependency of matplotlib

            buf = io.BytesIO()
            # fast, light compression: this runs on every slider move
            Image.fromarray(np.asarray(self.figure.fig.canvas.buffer_rgba())).save(buf, format="PNG", compress_level=1)
            self._view.value = buf.getvalue()

    # -- mouse (ipympl) -----------------------------------------------------------------------
    def _clip(self, v: float) -> float:
        lo, hi = self.controls.extent
        return min(max(float(v), lo), hi)

    def on_press(self, event: Any) -> None:
        """Start dragging a handle (data panel) or the target star (parameter plane), or place the probe."""
        if event.inaxes is None or event.xdata is None:
            return
        c = self.controls
        if event.inaxes is self.figure.ax_data:
            x0, x1 = self.figure.ax_data.get_xlim()
            tol = 0.04 * (x1 - x0)
            d1, d2 = abs(event.xdata - c.mu1), abs(event.xdata - c.mu2)
            if min(d1, d2) <= tol:
                self._drag = "mu1" if d1 <= d2 else "mu2"
        elif event.inaxes is self.figure.ax_par:
            lo, hi = c.extent
            tol = 0.05 * (hi - lo)
            if math.hypot(event.xdata - c.mu1, event.ydata - c.mu2) <= tol:
                self._drag = "target"
            elif math.hypot(event.xdata - c.mu2, event.ydata - c.mu1) <= tol:
                self._drag = "mirror"
            else:
                self.set(probe=(float(event.xdata), float(event.ydata)))

    def on_motion(self, event: Any) -> None:
        """Move the dragged handle."""
        if self._drag is None or event.inaxes is None or event.xdata is None:
            return
        if self._drag in ("mu1", "mu2") and event.inaxes is self.figure.ax_data:
            self.set(**{self._drag: self._clip(event.xdata)})
        elif self._drag == "target" and event.inaxes is self.figure.ax_par:
            self.set(mu1=self._clip(event.xdata), mu2=self._clip(event.ydata))
        elif self._drag == "mirror" and event.inaxes is self.figure.ax_par:
            self.set(mu1=self._clip(event.ydata), mu2=self._clip(event.xdata))

    def on_release(self, event: Any) -> None:
        """Stop dragging."""
        self._drag = None

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


# ------------------------------------------------------------------------------------------
# animations for the website
class MixtureAnimation:
    """Pre-rendered frames of the explorer with a small scrubbable JavaScript player.

    Every frame is rendered once into the figure's pixel buffer by the same blitting path as
    the explorer (static background drawn once, dynamic artists redrawn per frame), encoded as
    PNG and embedded in a self-contained HTML snippet: an image, a slider to scrub, and
    play/pause buttons. No kernel is needed to use it, so it works on the static website.
    """

    def __init__(self, figure: MixtureFigure, states: list[MixtureState], *, interval: int) -> None:
        self.figure, self.states, self.interval = figure, states, interval
        self._frames: list[str] | None = None

    def __len__(self) -> int:
        return len(self.states)

    def frames(self) -> list[str]:
        """The frames as ``data:image/png;base64,...`` URIs (rendered on first use, then cached)."""
        if self._frames is None:
            import base64

            from PIL import Image  # a dependency of matplotlib

            mf = self.figure
            if not mf._blit:
                mf.enable_blit()
            out = []
            for st in self.states:
                mf.refresh(mf.update(st))
                buf = io.BytesIO()
                # a 64-colour palette PNG is ~4x smaller than RGBA and looks the same for line art
                rgb = Image.fromarray(np.asarray(mf.fig.canvas.buffer_rgba())).convert("RGB")
                rgb.quantize(colors=64, method=Image.Quantize.FASTOCTREE).save(buf, format="PNG", optimize=True)
                out.append("data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii"))
            self._frames = out
        return self._frames

    def to_jshtml(self) -> str:
        """A self-contained HTML/JavaScript player (image, slider, play/pause)."""
        import json
        import uuid

        frames = self.frames()
        uid = "igbook-anim-" + uuid.uuid4().hex[:10]
        n = len(frames)
        return f"""<div id="{uid}" class="igbook-animation" style="max-width:100%">
<img id="{uid}-img" src="{frames[0]}" style="max-width:100%;height:auto" alt="animation frame">
<div style="display:flex;align-items:center;gap:0.5em;margin-top:0.3em">
<button id="{uid}-play" type="button" title="play / pause">&#9654;</button>
<input id="{uid}-slider" type="range" min="0" max="{n - 1}" value="0" step="1" style="flex:1" aria-label="frame">
<span id="{uid}-label" style="font-family:monospace">1/{n}</span>
</div>
<script>
(function() {{
  var frames = {json.dumps(frames)};
  var img = document.getElementById("{uid}-img"), slider = document.getElementById("{uid}-slider");
  var label = document.getElementById("{uid}-label"), play = document.getElementById("{uid}-play");
  var timer = null;
  function show(i) {{ img.src = frames[i]; slider.value = i; label.textContent = (i + 1) + "/" + frames.length; }}
  function stop() {{ if (timer) {{ clearInterval(timer); timer = null; play.innerHTML = "&#9654;"; }} }}
  slider.addEventListener("input", function() {{ stop(); show(parseInt(slider.value, 10)); }});
  play.addEventListener("click", function() {{
    if (timer) {{ stop(); return; }}
    play.innerHTML = "&#10074;&#10074;";
    if (parseInt(slider.value, 10) === frames.length - 1) show(0);
    timer = setInterval(function() {{
      var i = parseInt(slider.value, 10) + 1;
      if (i >= frames.length) {{ stop(); return; }}
      show(i);
    }}, {self.interval});
  }});
}})();
</script>
</div>"""

    def _repr_html_(self) -> str:
        return self.to_jshtml()


def animate_states(states: list[MixtureState], *, dpi: float = 55, interval: int = 250,
                   figsize: tuple[float, float] = (13.0, 4.4)) -> MixtureAnimation:
    """A :class:`MixtureAnimation` stepping through ``states`` (display it, or call ``.to_jshtml()``).

    ``dpi`` sets the pixel size of the frames (keep it low: every frame is embedded in the page).
    """
    if not states or not all(isinstance(s, MixtureState) for s in states):
        raise ValueError("states must be a non-empty list of MixtureState")
    if len(states) > 60:
        raise ValueError(f"at most 60 frames keep the page small, got {len(states)}")
    if isinstance(interval, bool) or not isinstance(interval, int) or interval < 10:
        raise ValueError(f"interval must be an int >= 10 (milliseconds), got {interval!r}")

    mf = draw_mixture(states[0], _new_figure(figsize, dpi, pyplot=False))  # an Agg figure outside pyplot
    return MixtureAnimation(mf, states, interval=interval)


def animate_singularity(controls: MixtureControls | None = None, *, frames: int = 24, **kw: Any) -> Any:
    """Scrubbable animation: the handles move together at constant midpoint until they coincide (the singularity)."""
    c = controls if controls is not None else MixtureControls()
    if isinstance(frames, bool) or not isinstance(frames, int) or not 2 <= frames <= 60:
        raise ValueError(f"frames must be an int in [2, 60], got {frames!r}")
    mid, half = 0.5 * (c.mu1 + c.mu2), 0.5 * (c.mu2 - c.mu1)
    # geometric approach, then the exact coincidence as the last frame
    ts = np.concatenate([np.geomspace(1.0, 0.01, frames - 1), [0.0]])
    states = [mixture_state(c, mu1=mid - t * half, mu2=mid + t * half) for t in ts]
    return animate_states(states, **kw)


def animate_sigma(controls: MixtureControls | None = None, *, sigmas: tuple[float, float] = (0.4, 1.6),
                  frames: int = 24, **kw: Any) -> Any:
    """Scrubbable animation of the shared :math:`\\sigma` sweeping ``sigmas`` with the handles fixed."""
    c = controls if controls is not None else MixtureControls()
    if isinstance(frames, bool) or not isinstance(frames, int) or not 2 <= frames <= 60:
        raise ValueError(f"frames must be an int in [2, 60], got {frames!r}")
    lo, hi = (_num(v, "sigmas") for v in sigmas)
    if not 0 < lo < hi:
        raise ValueError(f"sigmas must be (low, high) with 0 < low < high, got {sigmas!r}")
    states = [mixture_state(c, sigma=float(s)) for s in np.geomspace(lo, hi, frames)]
    return animate_states(states, **kw)
