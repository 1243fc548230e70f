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

The package holds the three layers in ``igbook.widgets.mixture.state``,
``igbook.widgets.mixture.drawing`` and ``igbook.widgets.mixture.explorer``; every name
is importable from :mod:`igbook.widgets.mixture`.
"""

from __future__ import annotations

from igbook.widgets.mixture.drawing import MixtureFigure, Redraw, draw_mixture
from igbook.widgets.mixture.explorer import (
    MixtureAnimation,
    MixtureExplorer,
    animate_sigma,
    animate_singularity,
    animate_states,
)
from igbook.widgets.mixture.state import (
    MixtureControls,
    MixtureState,
    flow_seeds,
    mixture_state,
    spectrum_curve,
)

__all__ = [
    "MixtureControls",
    "MixtureState",
    "mixture_state",
    "spectrum_curve",
    "flow_seeds",
    "Redraw",
    "MixtureFigure",
    "draw_mixture",
    "MixtureExplorer",
    "MixtureAnimation",
    "animate_states",
    "animate_singularity",
    "animate_sigma",
]
