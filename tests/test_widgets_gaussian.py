"""The Gaussian-manifold explorer: pure state, drawing, controls, and the self-checks of its chapter."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import pytest
import torch

from igbook.exercises import fisher_metric as ex
from igbook.geometry import fisher_rao_gaussian
from igbook.widgets.gaussian import (
    GaussianManifoldExplorer,
    animate_gaussian_manifold,
    draw_gaussian_manifold,
    gaussian_manifold_state,
)


def test_state_fields_are_the_closed_forms() -> None:
    st = gaussian_manifold_state(0.5, 0.8, eps=0.05, resolution=41)
    torch.testing.assert_close(
        st.fisher, torch.diag(torch.tensor([1 / 0.64, 2 / 0.64], dtype=torch.float64))
    )
    assert st.kl.shape == (41, 41) and st.fisher_rao.shape == (41, 41)
    i, j = 17, 29
    mu, sig = float(st.mu_grid[j]), float(st.sigma_grid[i])
    kl = math.log(sig / 0.8) + (0.64 + (0.5 - mu) ** 2) / (2 * sig**2) - 0.5
    assert abs(float(st.kl[i, j]) - kl) < 1e-12
    assert abs(float(st.fisher_rao[i, j]) - float(fisher_rao_gaussian(0.5, 0.8, mu, sig))) < 1e-12
    d = st.ellipse - torch.tensor([0.5, 0.8], dtype=torch.float64)
    torch.testing.assert_close(
        0.5 * torch.einsum("ni,ij,nj->n", d, st.fisher, d),
        torch.full((200,), 0.05, dtype=torch.float64),
    )
    assert abs(float(torch.trapezoid(st.density, st.x)) - 1) < 1e-6


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"mu": 0.0, "sigma": -1.0}, "sigma"),
        ({"mu": 0.0, "sigma": 1.0, "eps": 0.0}, "eps"),
        ({"mu": 0.0, "sigma": 1.0, "mu_range": (1.0, -1.0)}, "mu_range"),
        ({"mu": 0.0, "sigma": 1.0, "sigma_range": (0.0, 1.0)}, "sigma_range"),
        ({"mu": 0.0, "sigma": 1.0, "resolution": 3}, "resolution"),
    ],
)
def test_state_rejects_bad_controls(kwargs, name) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=name):
        gaussian_manifold_state(**kwargs)


def test_draw_and_animate() -> None:
    import matplotlib.pyplot as plt

    axes = draw_gaussian_manifold(gaussian_manifold_state(0.0, 1.0, resolution=21))
    assert len(axes[0].lines) >= 2
    plt.close("all")
    anim = animate_gaussian_manifold([(0.0, 1.0), (0.0, 0.5)])
    html = anim.to_jshtml()
    assert "<script" in html and "anim" in html.lower()
    with pytest.raises(ValueError, match="path"):
        animate_gaussian_manifold([(0.0, 1.0)])


def test_explorer_updates_when_a_slider_moves() -> None:
    import matplotlib.pyplot as plt

    before_figs = plt.get_fignums()
    app = GaussianManifoldExplorer()
    # drawn on construction, whatever the backend: the first Run All shows a figure
    first = app.image.value
    assert first[:8] == b"\x89PNG\r\n\x1a\n" and len(first) > 10_000
    assert plt.get_fignums() == before_figs  # no pyplot figure: nothing for a backend to redraw
    app.sigma.value = 0.5
    st = app.state()
    assert st.sigma == 0.5
    torch.testing.assert_close(st.fisher[0, 0], torch.tensor(4.0, dtype=torch.float64))
    assert app.image.value != first  # the slider redrew the image


def test_self_checks_accept_right_answers_and_explain_wrong_ones() -> None:
    assert ex.check_bernoulli_fisher(lambda p: 1 / (p * (1 - p)))
    fb = ex.check_bernoulli_fisher(lambda p: p * (1 - p))
    assert not fb and "natural parameter" in fb.message
    assert not ex.check_bernoulli_fisher(lambda p: 2 / (p * (1 - p)))
    assert "factor of 2" in ex.check_bernoulli_fisher(lambda p: 2 / (p * (1 - p))).message
    assert not ex.check_bernoulli_fisher(lambda p: 1 / 0)
    assert not ex.check_bernoulli_fisher(3.0)  # type: ignore[arg-type]
    assert ex.check_bernoulli_natural_gradient(lambda p, g: p * (1 - p) * g)
    assert not ex.check_bernoulli_natural_gradient(lambda p, g: g / (p * (1 - p)))
    assert ex.check_poisson_natural_fisher(math.exp)
    assert not ex.check_poisson_natural_fisher(lambda e: math.exp(-e))
    ok = ex.check_gaussian_log_sigma_fisher(
        lambda mu, s: torch.diag(torch.tensor([math.exp(-2 * s), 2.0]))
    )
    assert ok
    wrong = ex.check_gaussian_log_sigma_fisher(
        lambda mu, s: torch.diag(torch.tensor([math.exp(-2 * s), 2 * math.exp(-2 * s)]))
    )
    assert not wrong and "sigma^2" in wrong.message
    assert not ex.check_gaussian_log_sigma_fisher(lambda mu, s: torch.eye(3))
    assert ex.check_scale_distance(lambda s: math.sqrt(2) * abs(math.log(s)))
    assert not ex.check_scale_distance(lambda s: abs(math.log(s)))
    # the explorer exercise: semi-axes sigma sqrt(2 eps) along mu, sigma sqrt(eps) along sigma
    a, b = 0.5 * math.sqrt(0.2), 0.5 * math.sqrt(0.1)
    assert ex.check_ellipse_semi_axes(a, b, sigma=0.5, eps=0.1)
    assert "Swapped" in ex.check_ellipse_semi_axes(b, a, sigma=0.5, eps=0.1).message
    assert (
        "sqrt(2)"
        in ex.check_ellipse_semi_axes(
            a / math.sqrt(2), b / math.sqrt(2), sigma=0.5, eps=0.1
        ).message
    )
    assert not ex.check_ellipse_semi_axes(a, float("inf"), sigma=0.5, eps=0.1)
    assert "Correct" in str(ok) and "✅" in ok._repr_markdown_()


def test_animation_player_needs_no_cdn() -> None:
    from igbook.plotting import offline_jshtml

    anim = animate_gaussian_manifold([(0.0, 1.0), (0.0, 0.8)], eps=0.1)
    html = offline_jshtml(anim)
    assert "http://" not in html and "https://" not in html and 'class="fa ' not in html
    assert html.count('aria-hidden="true"') >= 9  # every button kept a visible symbol
    with pytest.raises(TypeError, match=r"\banim\b"):
        offline_jshtml("not an animation")
