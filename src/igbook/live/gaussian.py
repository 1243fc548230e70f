r"""Live figure of the Fisher-metric chapter: the Gaussian half-plane :math:`(\mu, \sigma)`.

Drag the point P and see its Fisher ellipse :math:`\tfrac12\delta^\top F\delta=\varepsilon`,
its KL ball :math:`\mathrm{KL}(P\|q)=\varepsilon` and its Fisher-Rao ball
:math:`d(P,q)=\sqrt{2\varepsilon}`; drag Q and read the Fisher-Rao distance (the length of the
drawn geodesic), :math:`\sqrt{2\,\mathrm{KL}(P\|Q)}` and the Euclidean distance. Every number
is a port of :mod:`igbook.geometry` (``fisher_rao_gaussian``, ``gaussian_geodesic``,
``ellipse_points``) and of the closed-form Gaussian KL, tested equal in ``tests/test_live.py``.
"""

from __future__ import annotations

from igbook.live._core import LiveFigure, figure_theme
from igbook.live._js import controller
from igbook.plotting import PALETTE

__all__ = ["gaussian_half_plane"]


def gaussian_half_plane(
    P: tuple[float, float] = (0.0, 1.0),
    Q: tuple[float, float] = (1.5, 0.6),
    eps: float = 0.1,
    *,
    name: str = "fisher-metric",
) -> LiveFigure:
    """The live Gaussian half-plane with draggable points ``P`` and ``Q`` (each ``(mu, sigma)``).

    Raises :class:`ValueError` for points outside the drawn region (``|mu| <= 3``,
    ``0.1 <= sigma <= 3``) or ``eps`` outside ``[0.01, 0.5]``.
    """
    from bokeh.layouts import column
    from bokeh.models import ColumnDataSource, CustomJS, Div, HoverTool, PointDrawTool, Slider
    from bokeh.plotting import figure

    from igbook._validation import as_tensor, check_in_interval

    def check_in_range(v: float, name: str, lo: float, hi: float) -> None:
        check_in_interval(as_tensor(v, name), name, lo, hi)

    bounds = (-3.0, 3.0, 0.1, 3.0)
    for label, pt in (("P", P), ("Q", Q)):
        if len(pt) != 2:
            raise ValueError(f"{label} must be (mu, sigma), got {pt!r}")
        check_in_range(pt[0], label, bounds[0], bounds[1])
        check_in_range(pt[1], label, bounds[2], bounds[3])
    check_in_range(eps, "eps", 0.01, 0.5)

    pts = ColumnDataSource(
        {
            "x": [float(P[0]), float(Q[0])],
            "y": [float(P[1]), float(Q[1])],
            "label": ["P", "Q"],
            "color": ["#8a8a8a", PALETTE[4]],
        }
    )
    empty = {"x": [], "y": []}
    ell, klb, frb, geo, seg = (ColumnDataSource(dict(empty)) for _ in range(5))
    dens = ColumnDataSource({"x": [], "p": [], "q": []})

    tools = "reset,save"
    plane = figure(
        title="Drag P and Q on the half-plane of Gaussians",
        x_range=(-3, 3),
        y_range=(0, 3),
        x_axis_label="μ",
        y_axis_label="σ",
        tools=tools,
        height=400,
        sizing_mode="stretch_width",
        min_width=260,
    )
    ell_r = plane.line(
        "x",
        "y",
        source=ell,
        color=PALETTE[0],
        line_width=2.5,
        legend_label="Fisher ellipse ½δᵀFδ = ε",
    )
    plane.line(
        "x", "y", source=klb, color=PALETTE[1], line_width=2, legend_label="KL ball KL(P‖q) = ε"
    )
    plane.line(
        "x",
        "y",
        source=frb,
        color=PALETTE[2],
        line_width=2,
        line_dash="dashed",
        legend_label="Fisher–Rao ball d = √(2ε)",
    )
    plane.line(
        "x", "y", source=geo, color=PALETTE[3], line_width=2.5, legend_label="geodesic P → Q"
    )
    plane.line("x", "y", source=seg, color=PALETTE[3], line_width=1, line_dash="dotted")
    handles = plane.scatter(
        "x", "y", source=pts, size=14, color="color", line_color="white", line_width=1.5
    )
    plane.text(
        "x",
        "y",
        text="label",
        source=pts,
        x_offset=9,
        y_offset=-6,
        text_font_size="13px",
        text_color="color",
    )
    # hover the ellipse to read its points (the widget exercise measures its semi-axes)
    plane.add_tools(
        HoverTool(
            renderers=[ell_r],
            tooltips=[("μ", "@x{0.000}"), ("σ", "@y{0.000}")],
            mode="mouse",
            description="Read points of the Fisher ellipse",
        )
    )
    drag = PointDrawTool(renderers=[handles], add=False, drag=True, description="Drag P and Q")
    plane.add_tools(drag)
    plane.toolbar.active_drag = drag
    plane.legend.location = "top_left"
    plane.legend.label_text_font_size = "11px"
    plane.legend.spacing = 0
    figure_theme(plane)

    dfig = figure(
        title="densities p(x | μ, σ)",
        x_range=(-6, 6),
        x_axis_label="x",
        tools="",
        height=300,
        sizing_mode="stretch_width",
        min_width=260,
    )
    dfig.line("x", "p", source=dens, color="#8a8a8a", line_width=2, legend_label="P")
    dfig.line("x", "q", source=dens, color=PALETTE[4], line_width=2, legend_label="Q")
    dfig.legend.location = "top_right"
    figure_theme(dfig)

    eps_slider = Slider(
        title="ε (ball size)",
        start=0.01,
        end=0.5,
        step=0.01,
        value=float(eps),
        sizing_mode="stretch_width",
    )
    readout = Div(text="", sizing_mode="stretch_width", styles={"color": "inherit"})
    args = dict(
        pts=pts,
        ell=ell,
        klb=klb,
        frb=frb,
        geo=geo,
        seg=seg,
        dens=dens,
        eps=eps_slider,
        readout=readout,
        bounds=list(bounds),
        name=name,
    )
    redraw = CustomJS(args=dict(pts=pts), code="pts.__igbook && pts.__igbook.update();")
    plane.js_on_event("pan", redraw)
    plane.js_on_event("panend", redraw)
    eps_slider.js_on_change("value", redraw)

    layout = [plane, dfig, (column(eps_slider, readout, sizing_mode="stretch_width"), "full")]
    controller(layout, "gaussian.js", args)
    return LiveFigure(
        layout,
        name,
        "ported",
        "Drag P or Q; move ε. The geodesic's length is the Fisher–Rao distance.",
    )
