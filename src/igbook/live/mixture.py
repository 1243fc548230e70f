r"""Live explorer of the Gaussian-mixture chapter: the whole interactive page, in the browser.

Three panels: the data space with the mixture :math:`p(x\mid\theta^*)` and its two draggable
means :math:`\mu_1^*, \mu_2^*`; the parameter plane :math:`(\mu_1,\mu_2)` with the tiling of
Fisher ellipses :math:`\delta^\top F\delta=\varepsilon`, the draggable star :math:`\theta^*`,
a probe placed by a click with its Euclidean and natural descent directions of
:math:`L(\theta)=\mathrm{KL}(p_{\theta^*}\|p_\theta)`, and the particle flows along both fields;
and the spectrum panel, the dimensionless eigenvalues :math:`2\sigma^2\lambda` against the
separation :math:`\delta=|\mu_1-\mu_2|/\sigma`. Sliders: :math:`\sigma`, grid density and
ellipse scale; a switch for the flows.

Everything is a port of :mod:`igbook.mixtures` (trapezoid quadrature of the Fisher, the
adaptive rule of the KL loss and its gradient, the closed-form 2x2 eigen-decomposition and
solve, ``flow_pair``), with the constants of :func:`igbook.widgets.mixture.mixture_state`;
``tests/test_live.py`` proves the port equal to igbook at random states. The spectrum curves
are precomputed by :func:`igbook.widgets.mixture.spectrum_curve`.
"""

from __future__ import annotations

from igbook.live._core import LiveFigure, figure_theme
from igbook.live._js import controller
from igbook.plotting import PALETTE

__all__ = ["mixture_explorer", "FLOW_STEPS", "FLOW_DT"]

#: Euler steps and natural-flow time step of the live flows (as in igbook.widgets.mixture)
FLOW_STEPS = 60
FLOW_DT = 0.15


def mixture_explorer(
    mu1: float = -1.5,
    mu2: float = 1.5,
    sigma: float = 1.0,
    *,
    grid_n: int = 15,
    ellipse_scale: float = 0.8,
    probe: tuple[float, float] | None = (-0.4, 0.9),
    flow: bool = False,
    name: str = "mixture",
) -> LiveFigure:
    """The live mixture explorer, starting at the given controls (those of
    :class:`igbook.widgets.mixture.MixtureControls`)."""
    from bokeh.layouts import column, row
    from bokeh.models import (
        Arrow,
        ColumnDataSource,
        CustomJS,
        Div,
        LogScale,
        NormalHead,
        PointDrawTool,
        Slider,
        Span,
        Switch,
    )
    from bokeh.plotting import figure

    from igbook.widgets.mixture import MixtureControls, flow_seeds, spectrum_curve

    c = MixtureControls(
        mu1=mu1,
        mu2=mu2,
        sigma=sigma,
        probe=probe,
        grid_n=grid_n,
        ellipse_scale=ellipse_scale,
        flow=flow,
    )
    lo, hi = c.extent
    euclid_color, natural_color = PALETTE[1], PALETTE[0]

    handles = ColumnDataSource({"x": [c.mu1, c.mu2], "y": [0.0, 0.0], "label": ["μ₁*", "μ₂*"]})
    star = ColumnDataSource({"x": [c.mu1], "y": [c.mu2]})
    mirror = ColumnDataSource({"x": [c.mu2], "y": [c.mu1]})
    probe_src = ColumnDataSource({"x": [], "y": []})
    arrows = ColumnDataSource({"x_start": [], "y_start": [], "x_end": [], "y_end": [], "color": []})
    # the ellipse field as one polyline broken by NaN (one canvas path: ~10x faster to paint
    # than 625 separate lines)
    field = ColumnDataSource({"x": [], "y": []})
    field_clipped = ColumnDataSource({"x": [], "y": []})
    handle_ell = ColumnDataSource({"x": [], "y": []})
    flows_n = ColumnDataSource({"xs": [], "ys": []})
    flows_e = ColumnDataSource({"xs": [], "ys": []})
    dens = ColumnDataSource({"x": [], "p": [], "c1": [], "c2": []})
    marker = ColumnDataSource({"x": [], "y": []})

    # data space
    data_fig = figure(
        title="data space: drag the means μ₁*, μ₂*",
        x_range=(lo - 3.5, hi + 3.5),
        y_range=(-0.04, 0.45),
        x_axis_label="x",
        tools="reset",
        height=300,
        sizing_mode="stretch_width",
        min_width=260,
    )
    data_fig.line(
        "x",
        "c1",
        source=dens,
        color=PALETTE[5],
        line_width=1.5,
        line_dash="dashed",
        legend_label="½N(μ₁*, σ²)",
    )
    data_fig.line(
        "x",
        "c2",
        source=dens,
        color=PALETTE[4],
        line_width=1.5,
        line_dash="dashed",
        legend_label="½N(μ₂*, σ²)",
    )
    data_fig.line("x", "p", source=dens, color=PALETTE[3], line_width=2.5, legend_label="p(x | θ*)")
    h = data_fig.scatter(
        "x", "y", source=handles, size=15, color=PALETTE[2], line_color="white", marker="triangle"
    )
    data_fig.text(
        "x",
        "y",
        text="label",
        source=handles,
        x_offset=-8,
        y_offset=-14,
        text_font_size="12px",
        text_color=PALETTE[2],
    )
    drag_h = PointDrawTool(renderers=[h], add=False, drag=True, description="Drag the means")
    data_fig.add_tools(drag_h)
    data_fig.toolbar.active_drag = drag_h
    data_fig.legend.location = "top_right"
    data_fig.legend.label_text_font_size = "11px"
    figure_theme(data_fig)

    # parameter plane
    plane = figure(
        title="parameter plane: drag ★, click for a probe",
        x_range=(lo, hi),
        y_range=(lo, hi),
        x_axis_label="μ₁",
        y_axis_label="μ₂",
        tools="reset",
        height=520,
        width=420,
        sizing_mode="scale_width",
        min_width=260,
        max_width=460,
    )
    plane.line(
        [lo, hi],
        [lo, hi],
        color="#8a8a8a",
        line_dash="dashed",
        line_width=1.5,
        legend_label="μ₁ = μ₂ (singular)",
    )
    plane.line(
        "x", "y", source=field, color="#7a8a99", line_width=1, legend_label="Fisher ellipses"
    )
    plane.line(
        "x",
        "y",
        source=field_clipped,
        color=PALETTE[3],
        line_width=1,
        line_dash="dotted",
        legend_label="clipped",
    )
    plane.multi_line("xs", "ys", source=flows_e, color=euclid_color, line_width=1.2, line_alpha=0.8)
    plane.multi_line(
        "xs", "ys", source=flows_n, color=natural_color, line_width=1.2, line_alpha=0.8
    )
    plane.line("x", "y", source=handle_ell, color=PALETTE[2], line_width=2)
    plane.scatter(
        "x",
        "y",
        source=mirror,
        size=14,
        marker="star",
        fill_color=None,
        line_color=PALETTE[2],
        line_width=1.5,
    )
    s = plane.scatter(
        "x",
        "y",
        source=star,
        size=20,
        marker="star",
        color=PALETTE[2],
        line_color="white",
        legend_label="θ* and mirror",
    )
    plane.scatter("x", "y", source=probe_src, size=9, color="#8a8a8a", line_color="white")
    plane.add_layout(
        Arrow(
            end=NormalHead(size=9, fill_color="color", line_color="color"),
            source=arrows,
            x_start="x_start",
            y_start="y_start",
            x_end="x_end",
            y_end="y_end",
            line_color="color",
            line_width=2.5,
        )
    )
    # legend entries for the arrows and the flows (Bokeh draws no swatch for an empty source:
    # these lines lie outside the view)
    off = [hi + 100.0, hi + 101.0]
    plane.line(off, off, color=euclid_color, line_width=2.5, legend_label="−gradient, flow")
    plane.line(off, off, color=natural_color, line_width=2.5, legend_label="−natural gr., flow")
    drag_s = PointDrawTool(renderers=[s], add=False, drag=True, description="Drag θ*")
    plane.add_tools(drag_s)
    plane.toolbar.active_drag = drag_s
    leg = plane.legend[0]
    leg.label_text_font_size = "11px"
    leg.spacing = 0
    leg.padding = 2
    leg.ncols = 2
    leg.click_policy = "hide"
    leg.location = "center"
    plane.add_layout(leg, "below")
    figure_theme(plane)

    # spectrum
    delta, lam_min, lam_max = spectrum_curve()
    spec = figure(
        title="spectrum: 2σ²λ against separation δ",
        x_axis_type="log",
        x_range=(float(delta[0]), float(delta[-1])),
        y_range=(-0.05, 1.1),
        x_axis_label="δ = |μ₁ − μ₂| / σ",
        tools="",
        height=300,
        sizing_mode="stretch_width",
        min_width=260,
    )
    spec.line(
        delta.tolist(),
        lam_max.tolist(),
        color=PALETTE[0],
        line_width=2,
        legend_label="mean shift 2σ²λmax",
    )
    spec.line(
        delta.tolist(),
        lam_min.tolist(),
        color=PALETTE[1],
        line_width=2,
        legend_label="exchange 2σ²λmin",
    )
    spec.scatter("x", "y", source=marker, size=10, color=PALETTE[2], line_color="white")
    spec.add_layout(Span(location=1.0, dimension="width", line_color="#8a8a8a", line_dash="dotted"))
    spec.legend.location = "center_left"
    spec.legend.label_text_font_size = "11px"
    figure_theme(spec)
    assert isinstance(spec.x_scale, LogScale)

    sigma_s = Slider(
        title="σ (shared standard deviation)",
        start=0.3,
        end=2.0,
        step=0.01,
        value=c.sigma,
        sizing_mode="stretch_width",
    )
    grid_s = Slider(
        title="grid density (ellipses per side)",
        start=5,
        end=30,
        step=1,
        value=c.grid_n,
        sizing_mode="stretch_width",
    )
    scale_s = Slider(
        title="ellipse scale",
        start=0.2,
        end=2.0,
        step=0.05,
        value=c.ellipse_scale,
        sizing_mode="stretch_width",
    )
    flow_sw = Switch(active=c.flow, width=48)
    flow_label = Div(
        text="particle flows along both fields", styles={"color": "inherit", "margin-top": "2px"}
    )
    readout = Div(text="", sizing_mode="stretch_width", styles={"color": "inherit"})

    seeds = flow_seeds(lo, hi).tolist()
    cfg = {
        "extent": [lo, hi],
        "probe": list(c.probe) if c.probe else None,
        "flowSeeds": seeds,
        "flowSteps": FLOW_STEPS,
        "flowDt": FLOW_DT,
        "deltaMin": float(delta[0]),
        "colors": {"euclidean": euclid_color, "natural": natural_color},
    }
    args = dict(
        handles=handles,
        star=star,
        mirror=mirror,
        probe=probe_src,
        arrows=arrows,
        field=field,
        fieldClipped=field_clipped,
        handleEll=handle_ell,
        flowsN=flows_n,
        flowsE=flows_e,
        dens=dens,
        marker=marker,
        sigma=sigma_s,
        gridN=grid_s,
        scale=scale_s,
        flow=flow_sw,
        readout=readout,
        cfg=cfg,
        name=name,
    )
    from_handles = CustomJS(args=dict(h=handles), code="h.__igbook && h.__igbook.sync('handles');")
    from_star = CustomJS(args=dict(h=handles), code="h.__igbook && h.__igbook.sync('star');")
    redraw = CustomJS(args=dict(h=handles), code="h.__igbook && h.__igbook.update();")
    for ev in ("pan", "panend"):
        data_fig.js_on_event(ev, from_handles)
        plane.js_on_event(ev, from_star)
    plane.js_on_event(
        "tap",
        CustomJS(args=dict(h=handles), code="h.__igbook && h.__igbook.tap(cb_obj.x, cb_obj.y);"),
    )
    for w in (sigma_s, grid_s, scale_s):
        w.js_on_change("value", redraw)
    flow_sw.js_on_change("active", redraw)

    layout = [
        data_fig,
        (plane, "square"),
        spec,
        (
            column(
                sigma_s,
                grid_s,
                scale_s,
                row(flow_sw, flow_label),
                readout,
                sizing_mode="stretch_width",
            ),
            "full",
        ),
    ]
    controller(layout, "mixture.js", args)
    return LiveFigure(
        layout,
        name,
        "ported",
        "Drag the means (left) or the star (middle), click to place the probe, move the sliders, "
        "switch on the flows.",
        data={"spectrum": {"delta": delta, "lam_min": lam_min, "lam_max": lam_max}},
    )
