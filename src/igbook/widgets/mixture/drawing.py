r"""Drawing the mixture explorer: :func:`draw_mixture` renders a :class:`~igbook.widgets.mixture.state.MixtureState`
into three panels (data space, parameter plane, spectrum); :class:`MixtureFigure` redraws new
states by mutating its artists, at the :class:`Redraw` level a change needs."""

from __future__ import annotations

import math
from enum import IntEnum
from typing import Any

import numpy as np

from igbook.plotting import PALETTE, book_style
from igbook.widgets.mixture.state import MixtureState, spectrum_curve

__all__ = [
    "Redraw",
    "MixtureFigure",
    "draw_mixture",
    "new_figure",
    "EUCLID_COLOR",
    "NATURAL_COLOR",
    "NATURAL_FLOW_COLOR",
    "ELLIPSE_COLOR",
    "CLIPPED_COLOR",
    "HANDLE_COLOR",
]

EUCLID_COLOR = PALETTE[1]  # vermillion: the Euclidean gradient ("red arrow")
NATURAL_COLOR = PALETTE[5]  # sky blue: the natural gradient ("cyan arrow")
NATURAL_FLOW_COLOR = PALETTE[0]
ELLIPSE_COLOR = "#7a8a99"
CLIPPED_COLOR = PALETTE[3]
HANDLE_COLOR = PALETTE[2]


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
        (self.h_pts,) = ad.plot(
            [],
            [],
            "o",
            ms=11,
            color=HANDLE_COLOR,
            mec="white",
            mew=1.5,
            zorder=5,
            clip_on=False,
            label="handles μ1*, μ2*",
        )
        # plain (unicode) text for everything that changes per frame: mathtext parsing is cached
        # for 50 strings only, and re-parsing dominated the redraw time
        self.h_text = [
            ad.text(0, 0, t, ha="center", va="bottom", fontsize=10, color=HANDLE_COLOR)
            for t in ("μ1*", "μ2*")
        ]
        from matplotlib.ticker import FormatStrFormatter

        ad.yaxis.set_major_formatter(
            FormatStrFormatter("%.2f")
        )  # fixed width: the layout is frozen
        ad.set_xlabel("x")
        ad.set_ylabel("density")
        ad.set_title("data space")
        ad.legend(loc="upper right", fontsize=8)

        # parameter plane
        self.ellipses = LineCollection([], colors=ELLIPSE_COLOR, linewidths=0.8)
        self.ellipses_clipped = LineCollection(
            [], colors=CLIPPED_COLOR, linewidths=0.7, linestyles="--", alpha=0.6
        )
        ap.add_collection(self.ellipses)
        ap.add_collection(self.ellipses_clipped)
        (self.diag,) = ap.plot(
            [], [], color=CLIPPED_COLOR, lw=1.2, ls=":", label="singular line μ1 = μ2"
        )
        (self.h_ell,) = ap.plot([], [], color=HANDLE_COLOR, lw=2.2)
        (self.target_pt,) = ap.plot(
            [], [], "*", ms=16, color=HANDLE_COLOR, mec="white", zorder=6, label="θ* = (μ1*, μ2*)"
        )
        (self.mirror_pt,) = ap.plot(
            [], [], "*", ms=14, mfc="none", mec=HANDLE_COLOR, zorder=6, label="mirror (same p)"
        )
        self.flow_nat = LineCollection([], colors=NATURAL_FLOW_COLOR, linewidths=1.1, alpha=0.85)
        self.flow_euc = LineCollection([], colors=EUCLID_COLOR, linewidths=1.1, alpha=0.85)
        ap.add_collection(self.flow_nat)
        ap.add_collection(self.flow_euc)
        (self.flow_end_nat,) = ap.plot([], [], "o", ms=3, color=NATURAL_FLOW_COLOR)
        (self.flow_end_euc,) = ap.plot([], [], "o", ms=3, color=EUCLID_COLOR)
        self.arrows = ap.quiver(
            [0, 0],
            [0, 0],
            [0, 0],
            [0, 0],
            color=[EUCLID_COLOR, NATURAL_COLOR],
            angles="xy",
            scale_units="xy",
            scale=1,
            width=0.012,
            zorder=7,
        )
        (self.probe_pt,) = ap.plot([], [], "o", ms=7, color="#222222", zorder=8)
        self.angle_text = ap.text(
            0,
            0,
            "",
            fontsize=10,
            ha="center",
            va="bottom",
            zorder=9,
            bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="none", alpha=0.85),
        )
        ap.set_xlabel("μ1")
        ap.set_ylabel("μ2")
        ap.set_aspect("equal", adjustable="box")
        ap.set_title("parameter plane: Fisher ellipses")
        from matplotlib.lines import Line2D

        extra = [
            Line2D([], [], color=EUCLID_COLOR, lw=2, label="−∇L (Euclidean)"),
            Line2D([], [], color=NATURAL_COLOR, lw=2, label="−F⁻¹∇L (natural)"),
        ]
        self.par_legend = ap.legend(
            handles=[self.diag, self.target_pt, self.mirror_pt, *extra],
            loc="lower right",
            fontsize=7,
            framealpha=0.85,
            frameon=True,
        )

        # spectrum
        delta, lmin, lmax = spectrum_curve()
        asp.loglog(delta, lmin, color=PALETTE[0], lw=1.8, label="2σ²λmin")
        asp.loglog(delta, lmax, color=PALETTE[4], lw=1.8, label="2σ²λmax")
        asp.loglog(delta, lmax / lmin, color=PALETTE[3], lw=1.8, label="κ = λmax/λmin")
        asp.loglog(delta, 2 / delta**2, color=PALETTE[3], lw=0.8, ls=":", label="κ ≈ 2σ²/Δ²")
        self.spec_line = asp.axvline(1, color=HANDLE_COLOR, lw=1.2)
        (self.spec_pts,) = asp.plot([], [], "o", color=HANDLE_COLOR, ms=6, zorder=5)
        self.spec_text = asp.text(
            0.03,
            0.03,
            "",
            transform=asp.transAxes,
            fontsize=9,
            va="bottom",
            bbox=dict(boxstyle="round,pad=0.3", fc="white", ec="#999999", alpha=0.9),
        )
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
            self.l_dens,
            self.l_c1,
            self.l_c2,
            *self.h_lines,
            self.h_pts,
            *self.h_text,
            self.h_ell,
            self.target_pt,
            self.mirror_pt,
            self.flow_nat,
            self.flow_euc,
            self.flow_end_nat,
            self.flow_end_euc,
            self.arrows,
            self.probe_pt,
            self.angle_text,
            self.spec_line,
            self.spec_pts,
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
    @property
    def blitting(self) -> bool:
        """Whether :meth:`enable_blit` has been called (redraws touch only the dynamic artists)."""
        return self._blit

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
        if (
            not self._blit
            or level is Redraw.FULL
            or self._background is None
            or self._bg_axes is None
        ):
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
        for ln, m in zip(self.h_lines, (c.mu1, c.mu2), strict=False):
            ln.set_xdata([m, m])
        self.h_pts.set_data([c.mu1, c.mu2], [0.0, 0.0])
        for t, m, h in zip(
            self.h_text, (c.mu1, c.mu2), (0.04, 0.11), strict=False
        ):  # staggered: readable when close
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


def new_figure(figsize: tuple[float, float], dpi: float | None, *, pyplot: bool = True) -> Any:
    """A figure in the book's style *without* a layout engine (a layout engine makes every
    ``savefig`` draw twice): a pyplot figure, or with ``pyplot=False`` a bare Agg figure."""
    import matplotlib as mpl

    with (
        book_style(),
        mpl.rc_context({"figure.constrained_layout.use": False, "figure.autolayout": False}),
    ):
        if pyplot:
            import matplotlib.pyplot as plt

            return plt.figure(figsize=figsize, dpi=dpi)
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=figsize, dpi=dpi)
        FigureCanvasAgg(fig)
        return fig


def draw_mixture(
    state: MixtureState,
    fig: Any = None,
    *,
    figsize: tuple[float, float] = (13.0, 4.4),
    dpi: float | None = None,
    title: str | None = None,
) -> MixtureFigure:
    """Draw ``state`` into a new (or the given, empty) figure; returns a :class:`MixtureFigure`.

    Without ``fig`` a pyplot figure is created (so that ``plt.show()`` shows it
    in a notebook) with a fixed layout; ``title`` adds a title above the three panels.
    """
    if not isinstance(state, MixtureState):
        raise TypeError(f"state must be a MixtureState, got {type(state).__name__}")
    if fig is None:
        fig = new_figure(figsize, dpi)
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
