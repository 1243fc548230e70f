"""Self-checks for the exercises of the chapter "Duality, projections and efficiency"."""

from __future__ import annotations

from collections.abc import Callable

import torch

from igbook.connections import fisher_metric, levi_civita, metric_function, raise_index
from igbook.efficiency import sgd_asymptotic_covariance
from igbook.exercises._core import Feedback, call_reader, compare
from igbook.families import Gaussian
from igbook.projections import MixtureParams, alpha_divergence, em_m_step

__all__ = [
    "check_alpha_divergence",
    "check_em_m_step",
    "check_gaussian_christoffel",
    "check_sgd_asymptotic_variance",
]

D = torch.float64


def _need_function(fn: object, signature: str) -> Feedback | None:
    if callable(fn):
        return None
    return Feedback(
        False, f"Pass a function {signature} (write it first, then pass it without calling it)."
    )


def _raised(out: object, where: str) -> Feedback | None:
    if isinstance(out, Exception):
        return Feedback(
            False,
            f"Your function raised {type(out).__name__}: {out} {where}. Fix it and run the check again.",
        )
    return None


def check_gaussian_christoffel(christoffel: Callable[[float, float], object]) -> Feedback:
    r"""Check ``christoffel(mu, sigma)``: the Levi-Civita symbols :math:`\Gamma^k_{ij}` of
    :math:`\mathrm{diag}(1,2)/\sigma^2`, as a ``(2, 2, 2)`` array indexed ``[k, i, j]`` (coordinates ``0 = mu``,
    ``1 = sigma``)."""
    fb = _need_function(christoffel, "(mu, sigma) -> (2, 2, 2) array [k, i, j]")
    if fb is not None:
        return fb
    for mu, sigma in ((0.0, 1.0), (1.5, 0.4), (-2.0, 3.0)):
        th = torch.tensor([mu, sigma], dtype=D)
        want = raise_index(levi_civita(metric_function(Gaussian), th), fisher_metric(Gaussian, th))
        out = call_reader(christoffel, mu, sigma)
        where = f"at (mu, sigma) = ({mu}, {sigma})"
        if (bad := _raised(out, where)) is not None:
            return bad
        lowered = torch.einsum("kl,lij->kij", fisher_metric(Gaussian, th), want)
        fb = compare(
            out,
            want,
            what="Gamma^k_ij",
            where=where,
            rtol=1e-8,
            mistakes=[
                (
                    lowered,
                    "These are the symbols of the first kind Gamma_{ij,k}: raise the index with g^{kl}.",
                ),
                (
                    want.permute(1, 0, 2),
                    "The index order is off: return [k, i, j] with k the upper index.",
                ),
            ],
        )
        if not fb:
            return fb
    return Feedback(
        True,
        "Gamma^mu_{mu sigma} = -1/sigma, Gamma^sigma_{mu mu} = 1/(2 sigma), Gamma^sigma_{sigma sigma} = -1/sigma: "
        "the half-plane's symbols, rescaled by the factor 2 of the sigma direction.",
    )


def check_alpha_divergence(divergence: Callable[[object, object, float], object]) -> Feedback:
    r"""Check ``divergence(p, q, alpha)`` for :math:`\alpha\ne\pm1` against Amari's alpha-divergence, in the
    convention where :math:`\alpha\to-1` gives :math:`\mathrm{KL}(p\|q)`."""
    fb = _need_function(divergence, "(p, q, alpha) -> number")
    if fb is not None:
        return fb
    p = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=D)
    q = torch.tensor([0.25, 0.25, 0.4, 0.1], dtype=D)
    for alpha in (0.0, 0.5, -0.3, 2.0):
        out = call_reader(divergence, p.clone(), q.clone(), alpha)
        where = f"at alpha = {alpha}"
        if (bad := _raised(out, where)) is not None:
            return bad
        fb = compare(
            out,
            alpha_divergence(p, q, alpha),
            what="D_alpha(p || q)",
            where=where,
            rtol=1e-8,
            mistakes=[
                (
                    alpha_divergence(p, q, -alpha),
                    (
                        "You have D_{-alpha}(p||q) = D_alpha(q||p): swap the exponents "
                        "(p carries (1 - alpha)/2)."
                    ),
                ),
                (
                    alpha_divergence(p, q, alpha) * (1 - alpha**2) / 4,
                    "The prefactor 4/(1 - alpha^2) is missing.",
                ),
            ],
        )
        if not fb:
            return fb
    return Feedback(
        True,
        "D_alpha = 4/(1 - alpha^2) (1 - sum p^((1-alpha)/2) q^((1+alpha)/2)) for probability vectors.",
    )


def check_em_m_step(m_step: Callable[[object, object], object]) -> Feedback:
    r"""Check ``m_step(x, resp) -> (weights, means, sigmas)``: the M-step of EM for a 1-D Gaussian mixture
    (the m-projection of the completed data onto the model)."""
    fb = _need_function(m_step, "(x, resp) -> (weights, means, sigmas)")
    if fb is not None:
        return fb
    g = torch.Generator().manual_seed(0)
    x = torch.cat(
        [
            torch.randn(30, generator=g, dtype=D) - 1.5,
            0.5 * torch.randn(20, generator=g, dtype=D) + 1.0,
        ]
    )
    resp = torch.softmax(torch.randn(50, 2, generator=g, dtype=D) + torch.stack([-x, x], 1), -1)
    want = em_m_step(x, resp)
    out = call_reader(m_step, x.clone(), resp.clone())
    if (bad := _raised(out, "")) is not None:
        return bad
    if not isinstance(out, (tuple, list)) or len(out) != 3:
        return Feedback(
            False, "Return a tuple (weights, means, sigmas), each with one entry per component."
        )
    unweighted = MixtureParams(
        torch.full((2,), 0.5, dtype=D),
        torch.full((2,), float(x.mean()), dtype=D),
        torch.full((2,), float(x.std(correction=0)), dtype=D),
    )
    for name, got, exp, alt in (
        ("weights", out[0], want.weights, unweighted.weights),
        ("means", out[1], want.means, unweighted.means),
        ("sigmas", out[2], want.sigmas, unweighted.sigmas),
    ):
        mistakes = [(alt, "This ignores the responsibilities: weight each point by r_ik.")]
        if name == "sigmas":
            mistakes.append(
                (
                    want.sigmas**2,
                    "These are variances: the mixture is parametrized by standard deviations.",
                )
            )
        if name == "weights":
            mistakes.append((resp.sum(0), "These are the effective counts N_k: divide by n."))
        fb = compare(got, exp, what=name, rtol=1e-8, mistakes=mistakes)
        if not fb:
            return fb
    return Feedback(
        True,
        "Weighted maximum likelihood: N_k = sum_i r_ik, w = N/n, m = sum r x / N, s^2 = sum r (x - m)^2 / N.",
    )


def check_sgd_asymptotic_variance(variance: Callable[[float, float], object]) -> Feedback:
    r"""Check ``variance(c, fisher)``: the limit of :math:`n\,\mathrm{Var}(\theta_n)` for online SGD with step
    :math:`c/t` on a one-parameter model with Fisher information ``fisher`` (assume :math:`2cF > 1`)."""
    fb = _need_function(variance, "(c, fisher) -> number")
    if fb is not None:
        return fb
    for c, f in ((1.0, 1.0), (0.8, 2.0), (3.0, 0.5)):
        want = sgd_asymptotic_covariance(torch.tensor([[f]], dtype=D), c)[0, 0]
        out = call_reader(variance, c, f)
        where = f"at c = {c}, F = {f}"
        if (bad := _raised(out, where)) is not None:
            return bad
        fb = compare(
            out,
            want,
            what="the asymptotic n Var",
            where=where,
            rtol=1e-8,
            mistakes=[
                (
                    torch.tensor(1 / f, dtype=D),
                    "1/F is the Cramer-Rao value, reached only when c = 1/F.",
                )
            ],
        )
        if not fb:
            return fb
    return Feedback(
        True, "c^2 F / (2 c F - 1), minimal (= 1/F) at c = 1/F: the natural-gradient step."
    )
