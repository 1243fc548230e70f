r"""The mixture explorer's front ends: ipywidgets controls (:class:`MixtureExplorer`) and
pre-rendered, scrubbable animations for the static site (:class:`MixtureAnimation`,
:func:`animate_states`, :func:`animate_singularity`, :func:`animate_sigma`)."""

from __future__ import annotations

import functools
import io
import math
from dataclasses import replace
from typing import Any

import numpy as np

from igbook._validation import check_real
from igbook.widgets.mixture.drawing import MixtureFigure, draw_mixture, new_figure
from igbook.widgets.mixture.state import MixtureControls, MixtureState, mixture_state

__all__ = [
    "MixtureExplorer",
    "MixtureAnimation",
    "animate_states",
    "animate_singularity",
    "animate_sigma",
]


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

    def __init__(
        self, controls: MixtureControls | None = None, *, interactive: bool = False
    ) -> None:
        import ipywidgets as w

        self.controls = controls if controls is not None else MixtureControls()
        if not isinstance(self.controls, MixtureControls):
            raise TypeError(
                f"controls must be a MixtureControls, got {type(self.controls).__name__}"
            )
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
            self.figure = draw_mixture(self.state, new_figure((13.0, 4.4), 80, pyplot=False))
            self._view = w.Image(format="png", layout=w.Layout(width="100%", max_width="1040px"))
        self.figure.enable_blit()

        lo, hi = self.controls.extent
        c = self.controls
        slider = functools.partial(
            w.FloatSlider,
            continuous_update=True,
            readout_format=".2f",
            layout=w.Layout(width="320px"),
        )
        self.sliders: dict[str, Any] = {
            "mu1": slider(value=c.mu1, min=lo, max=hi, step=0.05, description="μ1*"),
            "mu2": slider(value=c.mu2, min=lo, max=hi, step=0.05, description="μ2*"),
            "sigma": slider(value=c.sigma, min=0.3, max=2.0, step=0.05, description="σ"),
            "grid_n": w.IntSlider(
                value=c.grid_n,
                min=5,
                max=40,
                step=1,
                description="grid",
                layout=w.Layout(width="320px"),
            ),
            "ellipse_scale": slider(
                value=c.ellipse_scale, min=0.1, max=2.0, step=0.05, description="ellipse scale"
            ),
            "probe_x": slider(
                value=(c.probe or (0.0, 0.0))[0], min=lo, max=hi, step=0.05, description="probe μ1"
            ),
            "probe_y": slider(
                value=(c.probe or (0.0, 0.0))[1], min=lo, max=hi, step=0.05, description="probe μ2"
            ),
        }
        self.flow_button = w.ToggleButton(
            value=c.flow,
            description="Flow",
            icon="play",
            tooltip="particles along -natural (blue) and -Euclidean (orange) gradients",
        )
        self.status = w.HTML()
        for name, sl in self.sliders.items():
            sl.observe(functools.partial(self._on_slider, name), names="value")
        self.flow_button.observe(lambda ch: self.set(flow=bool(ch["new"])), names="value")
        hint = (
            "drag the green handles or the star; click the plane to place the probe"
            if self.interactive
            else "to drag the handles on the figure, use <code>igbook.live.mixture_explorer()</code>"
        )
        left = w.VBox([self.sliders[k] for k in ("mu1", "mu2", "sigma", "probe_x")])
        right = w.VBox(
            [self.sliders[k] for k in ("grid_n", "ellipse_scale", "probe_y")] + [self.flow_button]
        )
        self.widget = w.VBox(
            [w.HBox([left, right]), w.HTML(f"<small>{hint}</small>"), self._view, self.status]
        )
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
            vals = {
                "mu1": c.mu1,
                "mu2": c.mu2,
                "sigma": c.sigma,
                "grid_n": c.grid_n,
                "ellipse_scale": c.ellipse_scale,
            }
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
            Image.fromarray(np.asarray(self.figure.fig.canvas.buffer_rgba())).save(
                buf, format="PNG", compress_level=1
            )
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
            if not mf.blitting:
                mf.enable_blit()
            out = []
            for st in self.states:
                mf.refresh(mf.update(st))
                buf = io.BytesIO()
                # a 64-colour palette PNG is ~4x smaller than RGBA and looks the same for line art
                rgb = Image.fromarray(np.asarray(mf.fig.canvas.buffer_rgba())).convert("RGB")
                rgb.quantize(colors=64, method=Image.Quantize.FASTOCTREE).save(
                    buf, format="PNG", optimize=True
                )
                out.append(
                    "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
                )
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


def animate_states(
    states: list[MixtureState],
    *,
    dpi: float = 55,
    interval: int = 250,
    figsize: tuple[float, float] = (13.0, 4.4),
) -> MixtureAnimation:
    """A :class:`MixtureAnimation` stepping through ``states`` (display it, or call ``.to_jshtml()``).

    ``dpi`` sets the pixel size of the frames (keep it low: every frame is embedded in the page).
    """
    if not states or not all(isinstance(s, MixtureState) for s in states):
        raise ValueError("states must be a non-empty list of MixtureState")
    if len(states) > 60:
        raise ValueError(f"at most 60 frames keep the page small, got {len(states)}")
    if isinstance(interval, bool) or not isinstance(interval, int) or interval < 10:
        raise ValueError(f"interval must be an int >= 10 (milliseconds), got {interval!r}")

    mf = draw_mixture(
        states[0], new_figure(figsize, dpi, pyplot=False)
    )  # an Agg figure outside pyplot
    return MixtureAnimation(mf, states, interval=interval)


def animate_singularity(
    controls: MixtureControls | None = None, *, frames: int = 24, **kw: Any
) -> Any:
    """Scrubbable animation: the handles move together at constant midpoint until they coincide (the singularity)."""
    c = controls if controls is not None else MixtureControls()
    if isinstance(frames, bool) or not isinstance(frames, int) or not 2 <= frames <= 60:
        raise ValueError(f"frames must be an int in [2, 60], got {frames!r}")
    mid, half = 0.5 * (c.mu1 + c.mu2), 0.5 * (c.mu2 - c.mu1)
    # geometric approach, then the exact coincidence as the last frame
    ts = np.concatenate([np.geomspace(1.0, 0.01, frames - 1), [0.0]])
    states = [mixture_state(c, mu1=mid - t * half, mu2=mid + t * half) for t in ts]
    return animate_states(states, **kw)


def animate_sigma(
    controls: MixtureControls | None = None,
    *,
    sigmas: tuple[float, float] = (0.4, 1.6),
    frames: int = 24,
    **kw: Any,
) -> Any:
    """Scrubbable animation of the shared :math:`\\sigma` sweeping ``sigmas`` with the handles fixed."""
    c = controls if controls is not None else MixtureControls()
    if isinstance(frames, bool) or not isinstance(frames, int) or not 2 <= frames <= 60:
        raise ValueError(f"frames must be an int in [2, 60], got {frames!r}")
    lo, hi = (check_real(v, "sigmas") for v in sigmas)
    if not 0 < lo < hi:
        raise ValueError(f"sigmas must be (low, high) with 0 < low < high, got {sigmas!r}")
    states = [mixture_state(c, sigma=float(s)) for s in np.geomspace(lo, hi, frames)]
    return animate_states(states, **kw)
