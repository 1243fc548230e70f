r"""Explorer of the Gaussian manifold :math:`\{\mathcal N(\mu,\sigma^2)\}` in :math:`(\mu,\sigma)` coordinates.

A point of the half-plane is a distribution. Around it the explorer shows three "balls" of the
same size :math:`\varepsilon`: the Fisher ellipse :math:`\tfrac12\delta^\top F\delta=\varepsilon`
(the local quadratic model), the KL ball :math:`\mathrm{KL}(p\|q)\le\varepsilon` and the
Fisher-Rao ball :math:`d_{\mathrm{FR}}(p,q)\le\sqrt{2\varepsilon}`. For small :math:`\varepsilon` the
three agree; for large :math:`\varepsilon` they part. A second panel shows the densities.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from igbook._validation import as_tensor, check_positive
from igbook.families import Gaussian
from igbook.geometry import ellipse_points, fisher_rao_gaussian

__all__ = [
    "GaussianManifoldState",
    "gaussian_manifold_state",
    "draw_gaussian_manifold",
    "animate_gaussian_manifold",
    "GaussianManifoldExplorer",
]


@dataclass(frozen=True)
class GaussianManifoldState:
    """Everything one frame of the explorer shows (tensors, float64)."""

    mu: float
    sigma: float
    eps: float
    fisher: Tensor
    ellipse: Tensor  # (num, 2) points of 0.5 d^T F d = eps
    mu_grid: Tensor  # (m,)
    sigma_grid: Tensor  # (s,)
    kl: Tensor  # (s, m) KL(p || q(mu, sigma)) on the grid
    fisher_rao: Tensor  # (s, m) d_FR(p, q) on the grid
    x: Tensor  # sample-space grid
    density: Tensor  # density of p on x


def gaussian_manifold_state(
    mu: float,
    sigma: float,
    eps: float = 0.1,
    *,
    mu_range: tuple[float, float] = (-3.0, 3.0),
    sigma_range: tuple[float, float] = (0.15, 3.0),
    resolution: int = 121,
) -> GaussianManifoldState:
    """Compute one frame: Fisher, ellipse, KL and Fisher-Rao fields on the grid, and the density.

    Raises :class:`ValueError` for ``sigma <= 0``, ``eps <= 0``, an empty range or
    ``resolution < 10``.
    """
    p = Gaussian(mu, sigma)
    check_positive(as_tensor(eps, "eps"), "eps")
    if not mu_range[0] < mu_range[1]:
        raise ValueError(f"mu_range must be increasing, got {mu_range}")
    if not 0 < sigma_range[0] < sigma_range[1]:
        raise ValueError(f"sigma_range must be increasing and positive, got {sigma_range}")
    if not isinstance(resolution, int) or resolution < 10:
        raise ValueError(f"resolution must be an int >= 10, got {resolution!r}")
    f = p.fisher()
    ell = ellipse_points(p.params, f, eps=2 * eps, num=200)
    mg = torch.linspace(*mu_range, resolution, dtype=torch.float64)
    sg = torch.linspace(*sigma_range, resolution, dtype=torch.float64)
    S, M = torch.meshgrid(sg, mg, indexing="ij")
    kl = torch.log(S / sigma) + (sigma**2 + (mu - M) ** 2) / (2 * S**2) - 0.5
    fr = fisher_rao_gaussian(mu, sigma, M, S)
    x = torch.linspace(-6, 6, 400, dtype=torch.float64)
    dens = torch.exp(p.log_prob(x))
    return GaussianManifoldState(
        float(mu), float(sigma), float(eps), f, ell, mg, sg, kl, fr, x, dens
    )


def draw_gaussian_manifold(state: GaussianManifoldState, axes: Any = None) -> Any:
    """Draw a state into two axes (manifold, densities); creates a figure if ``axes`` is None."""
    import matplotlib.pyplot as plt

    from igbook.plotting import PALETTE, to_numpy

    if axes is None:
        _fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), gridspec_kw={"width_ratios": [1.25, 1]})
    ax, ax2 = axes
    ax.clear()
    ax2.clear()
    M, S = np.meshgrid(to_numpy(state.mu_grid), to_numpy(state.sigma_grid))
    ax.contour(M, S, to_numpy(state.kl), levels=[state.eps], colors=[PALETTE[1]], linewidths=2)
    ax.contour(
        M,
        S,
        to_numpy(state.fisher_rao),
        levels=[np.sqrt(2 * state.eps)],
        colors=[PALETTE[2]],
        linewidths=2,
        linestyles="--",
    )
    e = to_numpy(state.ellipse)
    ax.plot(e[:, 0], e[:, 1], color=PALETTE[0], lw=2)
    ax.plot([state.mu], [state.sigma], "o", color="black")
    ax.plot(
        [],
        [],
        color=PALETTE[0],
        lw=2,
        label=r"Fisher ellipse $\frac{1}{2}\delta^\top F\delta=\varepsilon$",
    )
    ax.plot([], [], color=PALETTE[1], lw=2, label=r"KL ball $\mathrm{KL}(p\|q)=\varepsilon$")
    ax.plot(
        [], [], color=PALETTE[2], lw=2, ls="--", label=r"Fisher-Rao ball $d=\sqrt{2\varepsilon}$"
    )
    ax.set_xlim(float(state.mu_grid[0]), float(state.mu_grid[-1]))
    ax.set_ylim(0, float(state.sigma_grid[-1]))
    ax.set_xlabel(r"$\mu$")
    ax.set_ylabel(r"$\sigma$")
    ax.set_title(rf"$\mu={state.mu:.2f},\ \sigma={state.sigma:.2f},\ \varepsilon={state.eps:.2f}$")
    ax.legend(loc="upper left", fontsize=8)
    ax2.plot(to_numpy(state.x), to_numpy(state.density), color=PALETTE[0])
    ax2.fill_between(to_numpy(state.x), to_numpy(state.density), alpha=0.2, color=PALETTE[0])
    ax2.set_ylim(0, 1.5)
    ax2.set_xlabel("$x$")
    ax2.set_title(r"$p(x\mid\mu,\sigma)$")
    return axes


def animate_gaussian_manifold(
    path: list[tuple[float, float]], eps: float = 0.1, *, interval: int = 200
) -> Any:
    """A :class:`matplotlib.animation.FuncAnimation` along a list of ``(mu, sigma)`` points.

    Display on a static page with ``IPython.display.HTML(anim.to_jshtml())``.
    """
    import matplotlib.pyplot as plt
    from matplotlib.animation import FuncAnimation

    if len(path) < 2:
        raise ValueError(f"path must hold at least 2 points, got {len(path)}")
    states = [gaussian_manifold_state(m, s, eps, resolution=61) for m, s in path]
    fig, axes = plt.subplots(
        1, 2, figsize=(9, 3.8), dpi=72, gridspec_kw={"width_ratios": [1.25, 1]}
    )
    draw_gaussian_manifold(states[0], axes)
    anim = FuncAnimation(
        fig,
        lambda k: draw_gaussian_manifold(states[k], axes),
        frames=len(states),
        interval=interval,
    )
    plt.close(fig)
    return anim


class GaussianManifoldExplorer:
    """ipywidgets app: sliders for ``mu``, ``sigma`` and ``eps`` redraw :func:`draw_gaussian_manifold`.

    ``GaussianManifoldExplorer().widget`` is the thing to display. The explorer draws with its
    own Agg figure into an :class:`ipywidgets.Image` (a PNG per change), whatever matplotlib
    backend the kernel runs, so it shows its first frame on the first Run All and redraws on
    every slider move in JupyterLab and Notebook 7 alike, with no idle redraw loop. It needs a
    running kernel; the live figure :func:`igbook.live.gaussian_half_plane` needs none.
    """

    def __init__(self, mu: float = 0.0, sigma: float = 1.0, eps: float = 0.1) -> None:
        import ipywidgets as w
        from matplotlib.figure import Figure

        from igbook.plotting import book_style

        self.mu = w.FloatSlider(value=mu, min=-2.5, max=2.5, step=0.05, description="μ")
        self.sigma = w.FloatSlider(value=sigma, min=0.2, max=2.5, step=0.05, description="σ")
        self.eps = w.FloatLogSlider(
            value=eps, base=10, min=-2.5, max=0.3, step=0.05, description="ε"
        )
        with book_style():
            self.fig = Figure(figsize=(10, 4.2), dpi=80, layout="constrained")
            self.axes = self.fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.25, 1]})
        self.image = w.Image(format="png", layout=w.Layout(width="100%", max_width="900px"))
        for s in (self.mu, self.sigma, self.eps):
            s.observe(lambda _change: self.update(), names="value")
        self.widget = w.VBox(
            [
                w.HBox([self.mu, self.sigma, self.eps], layout=w.Layout(flex_flow="row wrap")),
                self.image,
            ]
        )
        self.update()

    def state(self) -> GaussianManifoldState:
        return gaussian_manifold_state(self.mu.value, self.sigma.value, self.eps.value)

    def update(self) -> GaussianManifoldState:
        """Recompute the state from the sliders and redraw the image."""
        import io

        from igbook.plotting import book_style

        st = self.state()
        with book_style():
            draw_gaussian_manifold(st, self.axes)
            buf = io.BytesIO()
            self.fig.savefig(buf, format="png")
        self.image.value = buf.getvalue()
        return st

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
