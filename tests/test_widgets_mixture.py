"""Tests of the mixture-manifold explorer: pure state, drawing, controls, events, animations."""

from __future__ import annotations

import math
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from igbook import mixtures as mx
from igbook.widgets.mixture import (
    MixtureControls,
    MixtureExplorer,
    MixtureState,
    Redraw,
    animate_sigma,
    animate_singularity,
    animate_states,
    draw_mixture,
    mixture_state,
    spectrum_curve,
)

D = torch.float64


@pytest.fixture(autouse=True)
def _close_figures():  # type: ignore[no-untyped-def]
    yield
    plt.close("all")


def test_default_state_is_consistent_with_the_package() -> None:
    s = mixture_state()
    c = s.controls
    n = c.grid_n
    assert s.grid.shape == (n, n, 2) and s.fisher.shape == (n, n, 2, 2)
    assert s.outlines.shape == (n * n, 32, 2) and s.clipped.shape == (n * n,)
    np.testing.assert_allclose(
        s.fisher, mx.fisher(torch.from_numpy(s.grid), c.sigma).numpy(), rtol=0, atol=0
    )
    f = mx.fisher(torch.tensor([c.mu1, c.mu2], dtype=D), c.sigma)
    np.testing.assert_allclose(s.handle_fisher, f.numpy(), rtol=1e-14)
    np.testing.assert_allclose(s.handle_eigenvalues, torch.linalg.eigvalsh(f).numpy(), rtol=1e-12)
    assert abs(s.handle_condition - float(mx.condition_number(f))) < 1e-12
    assert s.separation == pytest.approx(abs(c.mu1 - c.mu2) / c.sigma)
    # the density integrates to one and is the sum of its components
    assert abs(np.trapezoid(s.density, s.x) - 1) < 1e-6
    np.testing.assert_allclose(s.components.sum(0), s.density, rtol=1e-14)
    # probe gradients agree with the package
    loss = mx.KLToTarget(torch.tensor([c.mu1, c.mu2], dtype=D), c.sigma)
    g, ngr = mx.natural_gradient_field(torch.tensor(c.probe, dtype=D), loss)
    np.testing.assert_allclose(s.probe_grad, g.numpy(), rtol=1e-12)
    np.testing.assert_allclose(s.probe_natgrad, ngr.numpy(), rtol=1e-12)
    assert s.probe_angle == pytest.approx(float(mx.gradient_angle(g, ngr)), abs=1e-10)
    assert s.flows is None and s.messages == ()
    assert "kappa" in s.summary()


def test_changes_and_singular_handles() -> None:
    s = mixture_state(MixtureControls(), mu1=0.3, mu2=0.3, sigma=0.7)
    assert s.controls.mu1 == 0.3 and s.controls.sigma == 0.7
    assert math.isinf(s.handle_condition) and s.handle_eigenvalues[0] == 0.0
    assert "inf" in s.summary()
    near = mixture_state(mu1=0.3, mu2=0.35)
    assert near.handle_condition == pytest.approx(
        2 * 1.0 / 0.05**2, rel=0.01
    )  # kappa ~ 2 sigma^2 / Delta^2
    far = mixture_state(mu1=-2.5, mu2=2.5, sigma=0.5)
    assert far.handle_condition < 1 + 1e-4  # 10 sigma apart: F ~ I / (2 sigma^2)
    # ellipse field depends on sigma only, not on the handles
    np.testing.assert_array_equal(mixture_state(mu1=-2.0).outlines, mixture_state(mu1=1.0).outlines)


def test_probe_states() -> None:
    on_line = mixture_state(probe=(0.5, 0.5))
    assert on_line.probe_natgrad is None and on_line.probe_angle is None
    assert any("singular" in m for m in on_line.messages)
    damped = mixture_state(probe=(0.5, 0.5), damping=1e-3)
    assert damped.probe_natgrad is not None and damped.messages == ()
    at_min = mixture_state(probe=(-1.5, 1.5))
    assert at_min.probe_angle is None and any("minimum" in m for m in at_min.messages)
    assert mixture_state(probe=(-2.0, 2.8)).probe_angle < 2.0  # far apart: the two gradients agree
    assert mixture_state(probe=(1.0, 1.3)).probe_angle > 45.0  # near the singular line
    none = mixture_state(probe=None)
    assert none.probe_grad is None and none.probe_loss is None


def test_flow_state() -> None:
    s = mixture_state(flow=True, flow_steps=20)
    nat, euc = s.flows["natural"], s.flows["euclidean"]  # type: ignore[index]
    assert nat.shape == euc.shape == (21, 36, 2)
    loss = mx.KLToTarget(torch.tensor([-1.5, 1.5], dtype=D), 1.0)
    assert float(loss.value(torch.from_numpy(nat[-1])).mean()) < float(
        loss.value(torch.from_numpy(nat[0])).mean()
    )


@pytest.mark.parametrize(
    ("kw", "exc", "match"),
    [
        ({"mu1": 5.0}, ValueError, "inside extent"),
        ({"sigma": 0.0}, ValueError, "sigma"),
        ({"sigma": float("nan")}, ValueError, "finite"),
        ({"mu2": "1"}, TypeError, "mu2"),
        ({"grid_n": 2}, ValueError, "grid_n"),
        ({"grid_n": 10.0}, TypeError, "grid_n"),
        ({"ellipse_scale": 0.0}, ValueError, "ellipse_scale"),
        ({"probe": (1.0,)}, ValueError, "probe"),
        ({"extent": (1.0, -1.0)}, ValueError, "extent"),
        ({"damping": -1.0}, ValueError, "damping"),
        ({"flow": 1}, TypeError, "flow"),
        ({"flow_steps": 0}, ValueError, "flow_steps"),
        ({"flow_dt": -0.1}, ValueError, "flow_dt"),
    ],
)
def test_bad_controls(kw, exc, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(exc, match=match):
        MixtureControls(**kw)


def test_bad_state_calls() -> None:
    with pytest.raises(TypeError, match="unknown control"):
        mixture_state(colour="red")
    with pytest.raises(TypeError, match="MixtureControls"):
        mixture_state({"mu1": 0.0})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="MixtureState"):
        draw_mixture("state")  # type: ignore[arg-type]
    fig = plt.figure()
    fig.add_subplot()
    with pytest.raises(ValueError, match="empty"):
        draw_mixture(mixture_state(), fig)
    with pytest.raises(ValueError, match="non-empty"):
        animate_states([])
    with pytest.raises(ValueError, match="frames"):
        animate_singularity(frames=1)
    with pytest.raises(ValueError, match="sigmas"):
        animate_sigma(sigmas=(1.0, 0.5), frames=3)


def test_spectrum_curve() -> None:
    delta, lmin, lmax = spectrum_curve()
    assert np.all(lmin <= lmax)
    np.testing.assert_allclose(
        lmin[0], delta[0] ** 2 / 2, rtol=1e-3
    )  # 2 sigma^2 * Delta^2 / (4 sigma^4)
    np.testing.assert_allclose(lmax[-1], 1.0, atol=1e-6)


def test_draw_and_update_flags_static_changes() -> None:
    s = mixture_state()
    mf = draw_mixture(s)
    assert len(mf.fig.axes) == 3
    assert (
        mf.update(mixture_state(mu1=0.0)) is Redraw.DYNAMIC
    )  # handles moved: dynamic artists only
    assert (
        mf.update(mixture_state(mu1=0.0, sigma=0.5)) is Redraw.FULL
    )  # sigma: the ellipses and (static figure) the height
    assert mf.update(mixture_state(mu1=0.0, sigma=0.5, grid_n=9)) is Redraw.FIELD
    assert (
        mf.update(
            mixture_state(mu1=0.0, sigma=0.5, grid_n=9, probe=(0.2, 0.1), flow=True, flow_steps=5)
        )
        is Redraw.DYNAMIC
    )
    assert len(mf.flow_nat.get_segments()) == 36
    mf.fig.canvas.draw()


def test_blitted_updates_match_a_full_draw() -> None:
    """The fast paths (field redraw, dynamic blit) give the same pixels as drawing everything."""
    mf = draw_mixture(mixture_state(mu1=-1.0, mu2=1.0, sigma=0.5))
    mf.enable_blit()
    mf.fig.canvas.draw()

    def pixels() -> np.ndarray:
        return np.asarray(mf.fig.canvas.buffer_rgba()).copy()

    steps = [
        (dict(mu1=-0.5, mu2=1.0, sigma=0.5), Redraw.DYNAMIC),
        (dict(mu1=-0.5, mu2=1.0, sigma=0.6), Redraw.FIELD),  # peak 0.83 of the panel: height kept
        (dict(mu1=-0.5, mu2=1.0, sigma=0.6, grid_n=11, probe=(0.3, -0.2)), Redraw.FIELD),
        (dict(mu1=-0.5, mu2=1.0, sigma=1.0, grid_n=11), Redraw.FULL),  # peak 0.5 of it: rescaled
        (dict(mu1=-0.5, mu2=1.0, sigma=0.9, grid_n=11), Redraw.FULL),  # taller than the panel
    ]
    for controls, expected in steps:
        level = mf.update(mixture_state(**controls))
        assert level is expected, controls
        mf.refresh(level)
        fast = pixels()
        mf.fig.canvas.draw()
        np.testing.assert_array_equal(fast, pixels(), err_msg=str(controls))
    # a static figure takes the exact height for every state (no history)
    st = draw_mixture(mixture_state(sigma=0.5))
    st.update(mixture_state(sigma=0.6))
    np.testing.assert_allclose(
        st.ax_data.get_ylim()[1], 1.15 / (0.6 * np.sqrt(2 * np.pi)), rtol=1e-12
    )


@pytest.mark.parametrize("interactive", [False, True])
def test_explorer_controls_and_events(interactive: bool) -> None:
    ex = MixtureExplorer(interactive=interactive)
    assert isinstance(ex.state, MixtureState) and ex.interactive is interactive
    if not interactive:
        assert ex._view.value[:8] == b"\x89PNG\r\n\x1a\n"
    # sliders drive the state
    ex.sliders["mu1"].value = 0.5
    assert ex.controls.mu1 == 0.5 and ex.state.controls.mu1 == 0.5
    ex.sliders["sigma"].value = 0.6
    assert ex.state.controls.sigma == 0.6
    ex.sliders["grid_n"].value = 9
    assert ex.state.grid.shape == (9, 9, 2)
    ex.sliders["probe_x"].value = 1.0
    assert ex.state.controls.probe[0] == 1.0  # type: ignore[index]
    ex.flow_button.value = True
    assert ex.state.flows is not None
    ex.flow_button.value = False
    # programmatic changes update the sliders
    ex.set(mu2=-1.0)
    assert ex.sliders["mu2"].value == -1.0
    # mouse: drag handle mu2 in data space, then the star in the plane, then click for the probe
    ad, ap = ex.figure.ax_data, ex.figure.ax_par
    ex.on_press(SimpleNamespace(inaxes=ad, xdata=-1.01, ydata=0.0))
    ex.on_motion(SimpleNamespace(inaxes=ad, xdata=-2.0, ydata=0.0))
    ex.on_release(SimpleNamespace(inaxes=ad, xdata=-2.0, ydata=0.0))
    assert ex.controls.mu2 == -2.0 and ex.controls.mu1 == 0.5
    ex.on_motion(SimpleNamespace(inaxes=ad, xdata=1.0, ydata=0.0))  # released: no effect
    assert ex.controls.mu2 == -2.0
    ex.on_press(SimpleNamespace(inaxes=ap, xdata=0.52, ydata=-2.01))
    ex.on_motion(SimpleNamespace(inaxes=ap, xdata=0.2, ydata=0.25))
    ex.on_release(None)
    assert (ex.controls.mu1, ex.controls.mu2) == (0.2, 0.25)
    assert ex.state.separation == pytest.approx(0.05 / 0.6)
    ex.on_press(SimpleNamespace(inaxes=ap, xdata=2.0, ydata=-1.0))
    assert ex.controls.probe == (2.0, -1.0) and ex._drag is None
    ex.on_motion(SimpleNamespace(inaxes=ap, xdata=9.0, ydata=9.0))  # not dragging
    ex.set(mu1=-1.0, mu2=2.0)
    ex.on_press(SimpleNamespace(inaxes=ap, xdata=2.02, ydata=-1.0))  # the mirror star
    ex.on_motion(SimpleNamespace(inaxes=ap, xdata=9.0, ydata=-9.0))  # clipped to the extent
    assert (ex.controls.mu1, ex.controls.mu2) == (-3.0, 3.0)
    ex.on_press(SimpleNamespace(inaxes=None, xdata=None, ydata=None))  # outside: ignored
    with pytest.raises(ValueError, match="inside extent"):
        ex.set(mu1=10.0)
    with pytest.raises(TypeError, match="MixtureControls"):
        MixtureExplorer(controls="default")  # type: ignore[arg-type]


def test_animations_are_scrubbable_html() -> None:
    anim = animate_singularity(frames=3, dpi=20)
    assert len(anim) == 3
    assert math.isinf(anim.states[-1].handle_condition)  # the last frame is the singularity itself
    frames = anim.frames()
    assert len(frames) == 3 and all(f.startswith("data:image/png;base64,") for f in frames)
    assert len(set(frames)) == 3  # every frame differs
    html = anim.to_jshtml()
    assert "<script" in html and 'type="range"' in html and 'max="2"' in html
    assert (
        html.count("data:image/png;base64") == 4
    )  # the first frame twice (img src) + three in the player
    assert anim._repr_html_().count("<script") == 1
    anim2 = animate_sigma(frames=2, dpi=20)
    assert [s.controls.sigma for s in anim2.states] == pytest.approx([0.4, 1.6])
    assert "<script" in anim2.to_jshtml()
    with pytest.raises(ValueError, match="interval"):
        animate_states(anim.states, interval=0)


def test_ellipse_scale_scales_the_outlines_and_nothing_else() -> None:
    """The ellipse-scale control multiplies every (unclipped) ellipse's radii; the Fisher field,
    the spectrum and the handles' state do not change. A far-apart ellipse has diameter
    ``ellipse_scale`` grid spacings."""
    a = mixture_state(ellipse_scale=0.5, grid_n=9)
    b = mixture_state(ellipse_scale=1.0, grid_n=9)
    np.testing.assert_array_equal(a.fisher, b.fisher)
    np.testing.assert_array_equal(a.handle_eigenvalues, b.handle_eigenvalues)
    keep = ~(a.clipped | b.clipped)
    assert keep.sum() > 40
    centers = a.grid.reshape(-1, 2)[keep][:, None, :]
    ra, rb = a.outlines[keep] - centers, b.outlines[keep] - centers
    np.testing.assert_allclose(rb, 2.0 * ra, rtol=1e-10, atol=1e-12)
    # at (3, -3), six sigmas from the singular line, F is within 2% of I / (2 sigma^2): nearly a circle
    spacing = 6.0 / 8
    corner = np.argmin(np.abs(a.grid.reshape(-1, 2) - [3.0, -3.0]).sum(1))
    radius = np.linalg.norm(b.outlines[corner] - a.grid.reshape(-1, 2)[corner], axis=1)
    np.testing.assert_allclose(radius, 0.5 * spacing, rtol=0.03)
