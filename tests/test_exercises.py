"""Every self-check in ``igbook.exercises`` survives whatever a student passes, and teaches.

The checks are enumerated from the package itself (every module of ``igbook.exercises``, every
public callable in its ``__all__``), so a new check is covered the day it is added: the test
fails until ``CASES`` below holds its correct answer and its typical mistakes.

For each check:

* the correct answer passes (the expected values are written here in closed form, independently
  of the module's reference implementation);
* every answer argument in turn is replaced by typical unfinished or broken answers (None, ``...``,
  a string, NaN, infinity, a wrong shape, a complex number; for a function: a function that
  raises, returns None, text, NaN or the wrong shape, or takes the wrong arguments): no exception
  escapes, ``Feedback.ok`` is False, and the message is non-empty;
* a raising student function is reported by its exception type and message, not a traceback;
* each named mistake gets its intended hint;
* no wrong-answer message contains the expected answer (rendered as a reader would see it:
  ``{:.2f}``, ``{:.3g}``, ``{:.4g}``, ... at word boundaries; integers below 10 are only checked
  in their decimal renderings such as ``1.000``, since the digit itself appears in formulas).
"""

from __future__ import annotations

import importlib
import inspect
import math
import pkgutil
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

import igbook.exercises
from igbook.exercises import Feedback

D = torch.float64
NAN = float("nan")


def _raises(*_: object) -> object:
    return 1 / 0


@dataclass
class Case:
    """A check's correct call, which of its arguments the student supplies, and typical mistakes."""

    right: dict[str, Any]
    answers: tuple[str, ...]
    expected: tuple[float, ...] = ()
    mistakes: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    forbidden: tuple[str, ...] = ()  # further strings no wrong-answer message may contain


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def _phi(f: torch.Tensor) -> torch.Tensor:
    return torch.exp(-0.5 * f**2) / math.sqrt(2 * math.pi)


def _cdf(f: torch.Tensor) -> torch.Tensor:
    return 0.5 * torch.erfc(-f / math.sqrt(2))


# ------------------------------------------------------------------------------- fisher_metric
def _gauss_log_sigma(
    mu: float, s: float, b: Callable[[float], float] = lambda sig2: 2.0
) -> torch.Tensor:
    return torch.diag(torch.tensor([math.exp(-2 * s), b(math.exp(2 * s))], dtype=D))


CASES: dict[str, Case] = {
    "fisher_metric.check_bernoulli_fisher": Case(
        {"fisher": lambda p: 1 / (p * (1 - p))},
        ("fisher",),
        (1 / (0.05 * 0.95), 1 / 0.21, 6.25),
        [
            ({"fisher": lambda p: p * (1 - p)}, "natural parameter"),
            ({"fisher": lambda p: 2 / (p * (1 - p))}, "factor of 2"),
            ({"fisher": lambda p: -1 / (p * (1 - p))}, "sign"),
            ({"fisher": lambda p: 1 / p**2 + 1 / (1 - p) ** 2}, "expectation"),
            ({"fisher": lambda p: 1 / math.sqrt(p * (1 - p))}, "square root"),
            ({"fisher": lambda p: (1 + 1e-4) / (p * (1 - p))}, "Nearly right"),
            ({"fisher": lambda p: 1 / p}, "x = 0"),
        ],
    ),
    "fisher_metric.check_bernoulli_natural_gradient": Case(
        {"step": lambda p, g: p * (1 - p) * g},
        ("step",),
        (0.0475, 0.21, -0.625),
        [
            ({"step": lambda p, g: g / (p * (1 - p))}, "F(p)^{-1}"),
            ({"step": lambda p, g: g}, "Euclidean gradient"),
            ({"step": lambda p, g: -p * (1 - p) * g}, "sign"),
        ],
    ),
    "fisher_metric.check_poisson_natural_fisher": Case(
        {"fisher": math.exp},
        ("fisher",),
        (math.exp(-1), math.exp(1.5)),
        [
            ({"fisher": lambda e: math.exp(-e)}, "mean parameter"),
            ({"fisher": lambda e: e}, "twice"),
            ({"fisher": lambda e: 2 * math.exp(e)}, "factor of 2"),
        ],
    ),
    "fisher_metric.check_gaussian_log_sigma_fisher": Case(
        {"fisher": _gauss_log_sigma},
        ("fisher",),
        (1 / 0.09,),
        [
            (
                {"fisher": lambda mu, s: _gauss_log_sigma(mu, s, lambda v: 2 / v)},
                "(d sigma / d s)^2",
            ),
            (
                {"fisher": lambda mu, s: _gauss_log_sigma(mu, s, lambda v: 2 / v**2)},
                "wrong way round",
            ),
            ({"fisher": lambda mu, s: _gauss_log_sigma(mu, s, lambda v: 1.0)}, "factor of 2"),
            ({"fisher": lambda mu, s: torch.eye(3)}, "shape"),
        ],
    ),
    "fisher_metric.check_scale_distance": Case(
        {"distance": lambda s: math.sqrt(2) * abs(math.log(s))},
        ("distance",),
        (math.sqrt(2) * math.log(2), math.sqrt(2) * math.log(3)),
        [
            ({"distance": lambda s: abs(math.log(s))}, "sqrt(2)"),
            ({"distance": lambda s: math.sqrt(2) * math.log(s)}, "never negative"),
            (
                {"distance": lambda s: math.sqrt(2 * (math.log(s) + 1 / (2 * s**2) - 0.5))},
                "sqrt(2 KL)",
            ),
        ],
    ),
    "fisher_metric.check_ellipse_semi_axes": Case(
        {
            "semi_mu": 0.5 * math.sqrt(0.2),
            "semi_sigma": 0.5 * math.sqrt(0.1),
            "sigma": 0.5,
            "eps": 0.1,
        },
        ("semi_mu", "semi_sigma"),
        (0.5 * math.sqrt(0.2), 0.5 * math.sqrt(0.1)),
        [
            ({"semi_mu": 0.5 * math.sqrt(0.1), "semi_sigma": 0.5 * math.sqrt(0.2)}, "Swapped"),
            ({"semi_mu": 0.5 * math.sqrt(0.1), "semi_sigma": 0.5 * math.sqrt(0.05)}, "sqrt(2)"),
            ({"semi_mu": math.sqrt(0.2), "semi_sigma": math.sqrt(0.1)}, "scale with sigma"),
        ],
    ),
}

# ------------------------------------------------------------------------ exponential_families
_EG_X, _EG_G = [0.2, 0.5, 0.3], [1.0, -0.5, 0.3]
_EG_W = [x * math.exp(-0.7 * g) for x, g in zip(_EG_X, _EG_G, strict=True)]


def _gauss_hess(e1: float, e2: float) -> torch.Tensor:
    s2, m = -0.5 / e2, -e1 / (2 * e2)
    return torch.tensor([[s2, 2 * m * s2], [2 * m * s2, 4 * m**2 * s2 + 2 * s2**2]], dtype=D)


def _trigamma(a: float) -> float:
    return float(torch.polygamma(1, torch.tensor(a, dtype=D)))


CASES |= {
    "exponential_families.check_bernoulli_natural_gradient_step": Case(
        {"step": lambda p, g, rho: sig(logit(p) - rho * g)},
        ("step",),
        (sig(logit(0.05) - 0.5), sig(logit(0.3) + 0.5)),
        [
            ({"step": lambda p, g, rho: p - rho * p * (1 - p) * g}, "coordinate p"),
            (
                {"step": lambda p, g, rho: sig(logit(p) - rho * p * (1 - p) * g)},
                "Euclidean gradient",
            ),
            ({"step": lambda p, g, rho: sig(logit(p) + rho * g)}, "sign"),
            ({"step": lambda p, g, rho: logit(p) - rho * g}, "sigmoid"),
            ({"step": lambda p, g, rho: p - rho * g}, "Euclidean step in p"),
            (
                {
                    "step": lambda p, g, rho: torch.sigmoid(
                        torch.tensor(logit(p) - rho * g, dtype=torch.float32)
                    )
                },
                "float32",
            ),
        ],
    ),
    "exponential_families.check_gaussian_hessian_of_log_partition": Case(
        {"fisher": _gauss_hess},
        ("fisher",),
        (0.75, 2.375, 306.0),
        [
            (
                {"fisher": lambda e1, e2: torch.diag(torch.tensor([-2 * e2, 2 * e2**2], dtype=D))},
                "(mu, sigma^2)",
            ),
            ({"fisher": lambda e1, e2: -_gauss_hess(e1, e2)}, "sign"),
            (
                {
                    "fisher": lambda e1, e2: (
                        _gauss_hess(e1, e2) * torch.tensor([[1.0, 1.0], [0.0, 1.0]], dtype=D)
                    )
                },
                "symmetric",
            ),
        ],
    ),
    "exponential_families.check_gamma_fisher_natural": Case(
        {"fisher": lambda a, b: [[_trigamma(a), 1 / b], [1 / b, a / b**2]]},
        ("fisher",),
        (_trigamma(0.5), 1 / 0.3, 10 / 0.09),
        [
            ({"fisher": lambda a, b: [[_trigamma(a), -1 / b], [-1 / b, a / b**2]]}, "sign"),
            (
                {
                    "fisher": lambda a, b: [
                        [float(torch.digamma(torch.tensor(a))), 1 / b],
                        [1 / b, a / b**2],
                    ]
                },
                "trigamma",
            ),
            ({"fisher": lambda a, b: [[_trigamma(a), 1 / b], [1 / b, a / b]]}, "power of beta"),
        ],
    ),
    "exponential_families.check_poisson_bregman": Case(
        {"bregman": lambda p, q: p * math.log(p / q) - p + q},
        ("bregman",),
        (math.log(0.5) + 1, 3.5 * math.log(5) - 2.8),
        [
            ({"bregman": lambda p, q: q * math.log(q / p) - q + p}, "KL(q || p)"),
            ({"bregman": lambda p, q: p * math.log(p / q)}, "linear terms"),
            ({"bregman": lambda p, q: -(p * math.log(p / q) - p + q)}, "sign"),
        ],
    ),
    "exponential_families.check_exponentiated_gradient_step": Case(
        {"step": lambda x, g, lr: torch.softmax(torch.log(x) - lr * g, -1)},
        ("step",),
        tuple(w / sum(_EG_W) for w in _EG_W),
        [
            ({"step": lambda x, g, lr: x * torch.exp(-lr * g)}, "sum to 1"),
            ({"step": lambda x, g, lr: torch.softmax(torch.log(x) + lr * g, -1)}, "sign"),
            ({"step": lambda x, g, lr: x * (1 - lr * g)}, "linearized"),
            ({"step": lambda x, g, lr: torch.softmax(-lr * g, -1)}, "forgets x"),
        ],
    ),
}


# ----------------------------------------------------------------------------- natural_gradient
def _step_logit(p: float, q: float, rho: float) -> float:
    return sig(logit(p) - rho * (p - q) / (p * (1 - p)))


def _trust(F: torch.Tensor, g: torch.Tensor, eps: float) -> torch.Tensor:
    v = torch.linalg.solve(F, g)
    return -math.sqrt(2 * eps / float(g @ v)) * v


CASES |= {
    "natural_gradient.check_bernoulli_fit_steps": Case(
        {"step_p": lambda p, q, r: p - r * (p - q), "step_logit": _step_logit},
        ("step_p", "step_logit"),
        (0.275, _step_logit(0.05, 0.5, 0.5)),
        [
            ({"step_p": lambda p, q, r: p - r * (p - q) / (p * (1 - p))}, "Precondition"),
            ({"step_p": lambda p, q, r: p + r * (p - q)}, "sign"),
            (
                {"step_logit": lambda p, q, r: sig(logit(p) - r * (p - q))},
                "without preconditioning",
            ),
            ({"step_logit": lambda p, q, r: logit(p) - r * (p - q) / (p * (1 - p))}, "sigmoid"),
        ],
    ),
    "natural_gradient.check_log_sigma_natural_gradient": Case(
        {"natgrad": lambda mu, s, m, t: [mu - m, 0.5 * (1 - (t**2 + (mu - m) ** 2) / s**2)]},
        ("natgrad",),
        (-15.125,),
        [
            (
                {
                    "natgrad": lambda mu, s, m, t: [
                        (mu - m) / s**2,
                        1 - (t**2 + (mu - m) ** 2) / s**2,
                    ]
                },
                "Euclidean",
            ),
            (
                {
                    "natgrad": lambda mu, s, m, t: [
                        mu - m,
                        0.5 * s * (1 - (t**2 + (mu - m) ** 2) / s**2),
                    ]
                },
                "(mu, sigma)",
            ),
            ({"natgrad": lambda mu, s, m, t: [mu - m, 1 - (t**2 + (mu - m) ** 2) / s**2]}, "1/2"),
        ],
    ),
    "natural_gradient.check_trust_region_step": Case(
        {"step": _trust},
        ("step",),
        (),
        [
            ({"step": lambda F, g, e: -_trust(F, g, e)}, "sign"),
            ({"step": lambda F, g, e: _trust(F, g, e) / math.sqrt(2)}, "sqrt(2)"),
            ({"step": lambda F, g, e: -math.sqrt(2 * e / float(g @ g)) * g}, "along g"),
            ({"step": lambda F, g, e: -e * torch.linalg.solve(F, g)}, "scale it"),
        ],
    ),
    "natural_gradient.check_euclidean_discrepancy": Case(
        {"answer": 4.0},
        ("answer",),
        (4.0,),
        [
            ({"answer": 0.25}, "Inverted"),
            ({"answer": 2.0}, "enters twice"),
            ({"answer": 1.0}, "chart"),
            ({"answer": -4.0}, "sign"),
        ],
    ),
}


# -------------------------------------------------------------------- natural_gradient_networks
def _probit(f: torch.Tensor) -> torch.Tensor:
    return _phi(f) ** 2 / (_cdf(f) * (1 - _cdf(f)))


def _moment(gb: torch.Tensor, ef: torch.Tensor, b: int) -> torch.Tensor:
    return gb**2 + (ef - gb**2) / b


CASES |= {
    "natural_gradient_networks.check_probit_output_fisher": Case(
        {"answer": _probit},
        ("answer",),
        (2 / math.pi,),
        [
            ({"answer": lambda f: torch.sigmoid(f) * (1 - torch.sigmoid(f))}, "canonical"),
            ({"answer": lambda f: _phi(f) / (_cdf(f) * (1 - _cdf(f)))}, "Square the density"),
            ({"answer": lambda f: _cdf(f) * (1 - _cdf(f))}, "chain it"),
        ],
    ),
    "natural_gradient_networks.check_linear_regression_ggn": Case(
        {"answer": lambda x, v: x.T @ x / (x.shape[0] * v)},
        ("answer",),
        (),
        [
            ({"answer": lambda x, v: x.T @ x / v}, "N times"),
            ({"answer": lambda x, v: x.T @ x / x.shape[0]}, "noise variance"),
            ({"answer": lambda x, v: x @ x.T / (x.shape[0] * v)}, "shape"),
            ({"answer": lambda x, v: x.T @ x / (2 * x.shape[0] * v)}, "factor of 2"),
        ],
    ),
    "natural_gradient_networks.check_softmax_fisher_rank": Case(
        {"answer": 16, "num_points": 8, "num_classes": 3},
        ("answer",),
        (16,),
        [
            ({"answer": 24}, "annihilates"),
            ({"answer": 8}, "empirical"),
            ({"answer": 2}, "one input point"),
            ({"answer": 16.5}, "whole number"),
        ],
    ),
    "natural_gradient_networks.check_minibatch_second_moment": Case(
        {"answer": _moment},
        ("answer",),
        (),
        [
            ({"answer": lambda gb, ef, b: ef / b}, "squared mean"),
            ({"answer": lambda gb, ef, b: gb**2 + ef / b}, "not diag(EF)"),
            ({"answer": lambda gb, ef, b: (ef - gb**2) / b}, "add its squared mean"),
            ({"answer": lambda gb, ef, b: gb**2 + (ef - gb**2) / b**2}, "/ B^2"),
        ],
    ),
    "natural_gradient_networks.check_gd_limit_learning_rate": Case(
        {"answer": lambda eta, lam: eta * lam},
        ("answer",),
        (100.0, 5e5, 20.0),
        [
            ({"answer": lambda eta, lam: eta / lam}, "multiply"),
            ({"answer": lambda eta, lam: eta}, "make up"),
            ({"answer": lambda eta, lam: lam}, "carry eta"),
        ],
    ),
}

# ------------------------------------------------------------------------------------------ ngvi
_DATA = [1, 0, 0, 1, 1, 0, 1, 1]


def _cvi(a: float, b: float, g: float, h: float, nu: float, rho: float) -> tuple[float, float]:
    return (1 - rho) * a + rho * (g - h * nu), (1 - rho) * b - rho * h


CASES |= {
    "ngvi.check_beta_bernoulli_posterior": Case(
        {"answer": (7.0, 4.0), "alpha0": 2.0, "beta0": 1.0, "data": _DATA},
        ("answer",),
        (),
        [
            ({"answer": (6.0, 3.0)}, "natural parameter"),
            ({"answer": (4.0, 7.0)}, "Swapped"),
            ({"answer": (5.0, 3.0)}, "prior"),
            ({"answer": (7.0, 6.0)}, "zeros"),
            ({"answer": (2.625, 1.375)}, "don't average"),
        ],
    ),
    "ngvi.check_ngvi_steps_needed": Case(
        {"answer": 13, "rho": 0.3, "factor": 1e-2},
        ("answer",),
        (13,),
        [
            ({"answer": 12}, "One short"),
            ({"answer": 2.5}, "whole number"),
            ({"answer": 4}, "not rho"),
            ({"answer": 100}, "more than needed"),
        ],
    ),
    "ngvi.check_poisson_message": Case(
        {"message": lambda y: (y, -1.0)},
        ("message",),
        (),
        [
            ({"message": lambda y: (y, 1.0)}, "-1"),
            ({"message": lambda y: (-1.0, y)}, "Swapped"),
            ({"message": lambda y: (y - 1, -1.0)}, "no -1"),
        ],
    ),
    "ngvi.check_vmp_precision_shape": Case(
        {"answer": 6.5, "alpha0": 1.0, "n": 10},
        ("answer",),
        (6.5,),
        [
            ({"answer": 6.0}, "exact"),
            ({"answer": 12.0}, "not 1"),
            ({"answer": 5.5}, "alpha0"),
            ({"answer": 13.0}, "factor of 2"),
        ],
    ),
    "ngvi.check_cvi_site_update": Case(
        {"update": _cvi},
        ("update",),
        (),
        [
            (
                {
                    "update": lambda a, b, g, h, nu, rho: (
                        (1 - rho) * a + rho * g,
                        (1 - rho) * b - rho * h,
                    )
                },
                "-h nu",
            ),
            (
                {
                    "update": lambda a, b, g, h, nu, rho: (
                        (1 - rho) * a + rho * (g + h * nu),
                        (1 - rho) * b + rho * h,
                    )
                },
                "Sign of h",
            ),
            (
                {"update": lambda a, b, g, h, nu, rho: (a + rho * (g - h * nu), b - rho * h)},
                "moving average",
            ),
        ],
    ),
}

# --------------------------------------------------------------------------- continual_learning
_R = [[0.9, 0.0, 0.0], [0.95, 0.8, 0.0], [0.7, 0.6, 0.9]]  # task 1 peaks after task 2
_EWC = {
    "fisher": [2.0, 0.5],
    "w": [1.0, -1.0],
    "w_star": [0.0, 1.0],
    "lam": 3.0,
}  # 0.5 * 3 * (2 * 1 + 0.5 * 4)
_OMEGA = 2 * (1 - 0.8**10) / 1.8

CASES |= {
    "continual_learning.check_ewc_penalty": Case(
        {"answer": 6.0, **_EWC},
        ("answer",),
        (6.0,),
        [
            ({"answer": 12.0}, "factor of 2"),
            ({"answer": 2.0}, "lambda"),
            ({"answer": 7.5}, "Fisher entry"),
            ({"answer": 1.5}, "Square the change"),
            ({"answer": 3.0}, "don't average"),
        ],
    ),
    "continual_learning.check_stationary_variance": Case(
        {"answer": 1 / 104, "hessian": 0.02, "N": 5000, "sigma_prior": 0.5},
        ("answer",),
        (1 / 104,),
        [
            ({"answer": math.sqrt(1 / 104)}, "standard deviation"),
            ({"answer": 1 / 100}, "prior"),
            ({"answer": 104.0}, "precision"),
            ({"answer": 1 / 4.02}, "window N"),
        ],
    ),
    "continual_learning.check_si_path_integral": Case(
        {"answer": _OMEGA, "h": 2, "lr": 0.1, "d0": 1, "steps": 5},
        ("answer",),
        (_OMEGA,),
        [
            ({"answer": 1 - 0.8**10}, "continuous path integral"),
            ({"answer": _OMEGA / 0.1}, "learning rate"),
            ({"answer": 2 * (1 - 0.8**12) / 1.8}, "One step too many"),
        ],
    ),
    "continual_learning.check_forgetting": Case(
        {"answer": 0.225, "R": _R},
        ("answer",),
        (0.225,),
        [
            ({"answer": 0.2}, "best"),
            ({"answer": -0.225}, "drop"),
            ({"answer": 0.15}, "old tasks only"),
        ],
    ),
    "continual_learning.check_backward_transfer": Case(
        {"answer": -0.2, "R": _R},
        ("answer",),
        (-0.2,),
        [
            ({"answer": -0.4 / 3}, "T - 1"),
            ({"answer": -0.225}, "right after"),
            ({"answer": 0.2}, "sign"),
        ],
    ),
    "continual_learning.check_halving_time": Case(
        {"answer": 10_200, "N": 5000, "hessian": 0.02, "sigma_prior": 0.5},
        ("answer",),
        (10_200,),
        [
            ({"answer": 5000}, "twice that precision"),
            ({"answer": 20_000}, "not four times"),
            ({"answer": 2500}, "larger"),
        ],
    ),
    "continual_learning.check_batched_lambda": Case(
        {"answer": 5000 / 64, "lam_batched": 5000, "batch_size": 64},
        ("answer",),
        (5000 / 64,),
        [
            ({"answer": 5000 * 64}, "other way round"),
            ({"answer": 5000}, "factor B"),
            ({"answer": 625}, "1/sqrt(B)"),
        ],
    ),
}


# ----------------------------------------------------------------------------------------- kfac
def _kron_solve(A: torch.Tensor, G: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    return torch.linalg.solve(G, V) @ torch.linalg.inv(A)


def _g_first(later: list[torch.Tensor]) -> torch.Tensor:
    b = later[0]
    for w in later[1:]:
        b = w @ b
    return b.T @ b


_D_LAYER = 785 * 1000

CASES |= {
    "kfac.check_block_memory": Case(
        {
            "dense_bytes": _D_LAYER**2 * 4,
            "kfac_bytes": (785**2 + 1000**2) * 4,
            "n_in": 784,
            "n_out": 1000,
        },
        ("dense_bytes", "kfac_bytes"),
        (_D_LAYER**2 * 4, (785**2 + 1000**2) * 4),
        [
            ({"dense_bytes": (784 * 1000) ** 2 * 4}, "bias"),
            ({"dense_bytes": _D_LAYER * 4}, "d^2 entries"),
            ({"dense_bytes": _D_LAYER**2}, "bytes per entry"),
            ({"kfac_bytes": (784**2 + 1000**2) * 4}, "covers the bias"),
            ({"kfac_bytes": 785**2 + 1000**2}, "bytes per entry"),
        ],
    ),
    "kfac.check_kronecker_solve": Case(
        {"solve": _kron_solve},
        ("solve",),
        (),
        [
            ({"solve": lambda A, G, V: torch.linalg.solve(G, V) @ A}, "instead of A^{-1}"),
            ({"solve": lambda A, G, V: G @ V @ A}, "the product"),
            ({"solve": lambda A, G, V: _kron_solve(A, G, V).T}, "transposed"),
            ({"solve": lambda A, G, V: torch.linalg.solve(G, V)}, "input factor"),
            ({"solve": lambda A, G, V: V @ torch.linalg.inv(A)}, "output-gradient factor"),
        ],
    ),
    "kfac.check_deep_linear_G": Case(
        {"g_first": _g_first},
        ("g_first",),
        (),
        [
            ({"g_first": lambda ws: ws[-1].T @ ws[-1]}, "all the later layers"),
            ({"g_first": lambda ws: 2 * _g_first(ws)}, "1/2"),
        ],
    ),
    "kfac.check_sum_reduction": Case(
        {"damping": 0.128, "lr_factor": 1.0, "n": 128, "mean_damping": 1e-3},
        ("damping", "lr_factor"),
        (0.128, 1.0),
        [
            ({"damping": 1e-3 / 128}, "grow"),
            ({"damping": 1e-3}, "scale with it"),
            ({"lr_factor": 128.0}, "so is the damped curvature"),
            ({"lr_factor": 1 / 128}, "so is the gradient"),
        ],
    ),
}


# ------------------------------------------------------------------------------ policy_gradient
def _softmax_fisher(p: torch.Tensor) -> torch.Tensor:
    return torch.diag(p) - torch.outer(p, p)


# the bandit: pi = (0.4, 0.6), rewards (1, 0), lr 0.5: pi+ = (0.4 e^0.5, 0.6) / (0.4 e^0.5 + 0.6)
_B_NEW = [0.4 * math.exp(0.5) / (0.4 * math.exp(0.5) + 0.6), 0.6 / (0.4 * math.exp(0.5) + 0.6)]
# TRPO on F = diag(2, 0.5), g = (1, 1), delta = 0.01: F^{-1} g = (0.5, 2), g^T F^{-1} g = 2.5
_T_G, _T_F = torch.tensor([1.0, 1.0], dtype=D), torch.diag(torch.tensor([2.0, 0.5], dtype=D))
_T_BETA = math.sqrt(2 * 0.01 / 2.5)

CASES |= {
    "policy_gradient.check_softmax_fisher": Case(
        {"fisher": _softmax_fisher},
        ("fisher",),
        (),
        [
            ({"fisher": torch.diag}, "- p p^T"),
            ({"fisher": lambda p: torch.diag(1 / p)}, "probabilities themselves"),
            ({"fisher": lambda p: torch.outer(p, p)}, "outer product"),
        ],
    ),
    "policy_gradient.check_bandit_npg_step": Case(
        {"new_probs": _B_NEW, "probs": (0.4, 0.6), "rewards": (1.0, 0.0), "lr": 0.5},
        ("new_probs",),
        tuple(_B_NEW),
        [
            ({"new_probs": [0.4 + 0.5 * 0.6, 0.6 - 0.5 * 0.4]}, "added lr * A"),
            ({"new_probs": [0.4 * math.exp(0.5), 0.6]}, "Renormalize"),
        ],
    ),
    "policy_gradient.check_trpo_step": Case(
        {"step": [_T_BETA * 0.5, _T_BETA * 2.0], "grad": _T_G, "fisher": _T_F, "max_kl": 0.01},
        ("step",),
        (_T_BETA * 0.5, _T_BETA * 2.0),
        [
            ({"step": [math.sqrt(0.01 / 2.5) * 0.5, math.sqrt(0.01 / 2.5) * 2.0]}, "one half"),
            ({"step": [0.02 / 2.5 * 0.5, 0.02 / 2.5 * 2.0]}, "square root"),
            ({"step": [math.sqrt(0.02 / 2.5), math.sqrt(0.02 / 2.5)]}, "natural direction"),
        ],
    ),
}


# -------------------------------------------------------------------------- optimizer_geometry
_QS = sorted(
    (4.775 + sgn * math.sqrt(4.775**2 - 4 * 2.0315 * 2.4445)) / (2 * 2.0315) for sgn in (-1, 1)
)
_QP = [math.sqrt(v) for v in _QS]  # fixed points of 3.4445 s - 4.775 s^3 + 2.0315 s^5 = s
_QSL = [3.4445 - 3 * 4.775 * p**2 + 5 * 2.0315 * p**4 for p in _QP]

CASES |= {
    "optimizer_geometry.check_sign_descent": Case(
        {"direction": torch.sign},
        ("direction",),
        (),
        [
            ({"direction": lambda g: g / g.norm()}, "Euclidean"),
            ({"direction": lambda g: g / g.abs().max()}, "every coordinate"),
            ({"direction": lambda g: -torch.sign(g)}, "maximizer"),
        ],
    ),
    "optimizer_geometry.check_newton_schulz_fixed_points": Case(
        {"points": _QP, "slopes": _QSL},
        ("points", "slopes"),
        (*_QP, *_QSL),
        [
            ({"points": _QS}, "square roots"),
            ({"points": [1.0, 1.0]}, "cubic"),
            ({"points": _QP[::-1]}, "increasing order"),
            ({"slopes": [-4.775 + 2 * 2.0315 * p**2 for p in _QP]}, "derivative in s"),
        ],
    ),
    "optimizer_geometry.check_kronecker_bound": Case(
        {"c_full_rank": 2.0, "c_rank_one": 1.0},
        ("c_full_rank", "c_rank_one"),
        (2.0, 1.0),
        [
            ({"c_full_rank": 1.0}, "1/r"),
            ({"c_full_rank": 4.0}, "square roots"),
            ({"c_rank_one": 2.0}, "rank one"),
            ({"c_rank_one": 25.0}, "square roots"),
        ],
    ),
}


# ----------------------------------------------------------------------------- gaussian_mixture
def _mix_score(x: float, m1: float, m2: float, s: float, swap: bool = False) -> list[float]:
    r1 = 1 / (1 + math.exp(0.5 * ((x - m1) / s) ** 2 - 0.5 * ((x - m2) / s) ** 2))
    w1, w2 = (1 - r1, r1) if swap else (r1, 1 - r1)
    return [w1 * (x - m1) / s**2, w2 * (x - m2) / s**2]


def _exchange(x: float, m: float, e: float, s: float) -> float:
    z = (x - m) / s
    return (z * math.tanh(e * z / s) - e / s) / s


def _mean_shift(x: float, m: float, e: float, s: float) -> float:
    return sum(_mix_score(x, m + e, m - e, s))


def _explorer_separation() -> float:
    from igbook.exercises.gaussian_mixture import condition_separation

    return condition_separation(50.0)


CASES |= {
    "gaussian_mixture.check_mixture_score": Case(
        {"score": _mix_score},
        ("score",),
        (),
        [
            ({"score": lambda x, m1, m2, s: [(x - m1) / s**2, (x - m2) / s**2]}, "responsibility"),
            ({"score": lambda x, m1, m2, s: _mix_score(x, m1, m2, s, swap=True)}, "swapped"),
            (
                {"score": lambda x, m1, m2, s: [s**3 * v for v in _mix_score(x, m1, m2, s)]},
                "sigma^2",
            ),
        ],
    ),
    "gaussian_mixture.check_exchange_score": Case(
        {"score": _exchange},
        ("score",),
        (),
        [
            ({"score": _mean_shift}, "d/dm"),
            (
                {"score": lambda x, m, e, s: (x - m) / s * math.tanh(e * (x - m) / s**2) / s},
                "-eps/sigma^2",
            ),
            ({"score": lambda x, m, e, s: -_exchange(x, m, e, s)}, "sign"),
        ],
    ),
    "gaussian_mixture.check_singularity_constants": Case(
        {"c_min": 0.25, "c_kappa": 2.0},
        ("c_min", "c_kappa"),
        (0.25, 2.0),
        [
            ({"c_min": 0.5}, "normalization"),
            ({"c_min": 1.0}, "Delta = mu1 - mu2"),
            ({"c_kappa": 4.0}, "1/(2 sigma^2)"),
            ({"c_kappa": 1.0}, "factor of 2"),
        ],
    ),
    "gaussian_mixture.check_isotropic_separation": Case(
        {"delta": 1.6363},
        ("delta",),
        (1.6363,),
        [
            ({"delta": 1.5}, "too small"),
            ({"delta": 2.0}, "too large"),
            ({"delta": -1.0}, "positive"),
        ],
    ),
    "gaussian_mixture.check_singular_speed_exponent": Case(
        {"p": 1},
        ("p",),
        (1,),
        [
            ({"p": 2}, "vanishes like"),
            ({"p": -1}, "grows"),
            ({"p": 0}, "not bounded"),
        ],
        forbidden=("slope is",),
    ),
    "gaussian_mixture.check_explorer_condition_separation": Case(
        {"delta": 0.2},
        ("delta",),
        (_explorer_separation(),),
        [
            ({"delta": 0.1}, "half the separation"),
            ({"delta": 0.04}, "square root"),
        ],
    ),
}

# ----------------------------------------------------------------------- bayesian_learning_rule
_G = torch.Generator().manual_seed(3)
_X = torch.randn(50, 3, generator=_G, dtype=D)
_Y = _X @ torch.linspace(-1, 1, 3, dtype=D) + 0.3 * torch.randn(50, generator=_G, dtype=D)
_P = _X.T @ _X / 0.09 + 2.0 * torch.eye(3, dtype=D)
_M = torch.linalg.solve(_P, _X.T @ _Y / 0.09)
_NEWTON = {"mean": _M, "precision": _P, "x": _X, "y": _Y, "noise_std": 0.3, "prior_precision": 2.0}
_VADAM_S = (-1.0 + math.sqrt(1.0 + 4 * 100 * 4.0)) / 200  # s (N s + lambda) = H^2


def _ivon(
    h: torch.Tensor, hh: torch.Tensor, d: float, b2: float, c: float = 0.5, p: int = 2
) -> torch.Tensor:
    return b2 * h + (1 - b2) * hh + c * (1 - b2) ** p * (h - hh) ** 2 / (h + d)


CASES |= {
    "bayesian_learning_rule.check_gd_from_blr": Case(
        {"step": lambda m, g, rho: m - rho * g},
        ("step",),
        (),
        [
            ({"step": lambda m, g, rho: m + rho * g}, "uphill"),
            ({"step": lambda m, g, rho: (1 - rho) * m - rho * g}, "shrinkage"),
            ({"step": lambda m, g, rho: -rho * g}, "change of the mean"),
            ({"step": lambda m, g, rho: m - g}, "step size"),
        ],
    ),
    "bayesian_learning_rule.check_ivon_hessian_update": Case(
        {"update": _ivon},
        ("update",),
        (),
        [
            ({"update": lambda h, hh, d, b2: b2 * h + (1 - b2) * hh}, "correction"),
            ({"update": lambda h, hh, d, b2: _ivon(h, hh, d, b2, c=1.0)}, "1/2"),
            ({"update": lambda h, hh, d, b2: _ivon(h, hh, d, b2, p=1)}, "second order"),
            ({"update": lambda h, hh, d, b2: _ivon(h, hh, d, b2, c=-0.5)}, "added"),
        ],
    ),
    "bayesian_learning_rule.check_vadam_stationary_variance": Case(
        {"answer": 1 / (100 * _VADAM_S + 1.0), "n": 100, "hess": 2.0, "prior_precision": 1.0},
        ("answer",),
        (1 / (100 * _VADAM_S + 1.0),),
        [
            ({"answer": 1 / 201}, "exact posterior variance"),
            ({"answer": 1 / (100 * _VADAM_S)}, "prior precision"),
            ({"answer": 100 * _VADAM_S + 1.0}, "reciprocal"),
            ({"answer": 1 / 401}, "s is not H^2"),
        ],
    ),
    "bayesian_learning_rule.check_newton_fixed_point": Case(
        _NEWTON,
        ("mean", "precision"),
        (),
        [
            ({"precision": _P - 2.0 * torch.eye(3, dtype=D)}, "prior"),
            ({"precision": _X.T @ _X + 2.0 * torch.eye(3, dtype=D)}, "noise variance"),
            (
                {"precision": _X.T @ _X / 0.3 + 2.0 * torch.eye(3, dtype=D)},
                "not the standard deviation",
            ),
            ({"mean": torch.linalg.solve(_X.T @ _X, _X.T @ _Y)}, "least-squares"),
            ({"mean": _P @ _X.T @ _Y / 0.09}, "inverse"),
        ],
    ),
}


# ------------------------------------------------------------------------------------- duality
def _christoffel(
    mu: float, s: float, lower: bool = False, order: tuple[int, int, int] = (0, 1, 2)
) -> torch.Tensor:
    """Levi-Civita symbols [k, i, j] of diag(1, 2)/sigma^2 in (mu, sigma), in closed form."""
    g = torch.zeros(2, 2, 2, dtype=D)
    g[0, 0, 1] = g[0, 1, 0] = -1 / s
    g[1, 0, 0] = 1 / (2 * s)
    g[1, 1, 1] = -1 / s
    if lower:  # first kind: g_kl Gamma^l_ij
        g = torch.stack([g[0] / s**2, 2 * g[1] / s**2])
    return g.permute(*order)


def _alpha_div(
    p: torch.Tensor, q: torch.Tensor, a: float, swap: bool = False, prefactor: bool = True
) -> torch.Tensor:
    ea, eb = ((1 + a) / 2, (1 - a) / 2) if swap else ((1 - a) / 2, (1 + a) / 2)
    d = 1 - (p**ea * q**eb).sum()
    return 4 / (1 - a**2) * d if prefactor else d


def _m_step(
    x: torch.Tensor, r: torch.Tensor, counts: bool = False, variances: bool = False
) -> tuple[torch.Tensor, ...]:
    n = r.sum(0)
    m = (r * x[:, None]).sum(0) / n
    v = (r * (x[:, None] - m) ** 2).sum(0) / n
    return (n if counts else n / len(x)), m, (v if variances else v.sqrt())


_PQ = (torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=D), torch.tensor([0.25, 0.25, 0.4, 0.1], dtype=D))

CASES |= {
    "duality.check_gaussian_christoffel": Case(
        {"christoffel": _christoffel},
        ("christoffel",),
        (-2.5, 1.25, 1 / 6, -1 / 3),
        [
            ({"christoffel": lambda mu, s: _christoffel(mu, s, lower=True)}, "first kind"),
            ({"christoffel": lambda mu, s: _christoffel(mu, s, order=(1, 0, 2))}, "index order"),
        ],
    ),
    "duality.check_alpha_divergence": Case(
        {"divergence": _alpha_div},
        ("divergence",),
        (float(_alpha_div(*_PQ, 0.0)), float(_alpha_div(*_PQ, 0.5))),
        [
            ({"divergence": lambda p, q, a: _alpha_div(p, q, a, swap=True)}, "swap the exponents"),
            ({"divergence": lambda p, q, a: _alpha_div(p, q, a, prefactor=False)}, "prefactor"),
        ],
    ),
    "duality.check_em_m_step": Case(
        {"m_step": _m_step},
        ("m_step",),
        (),
        [
            ({"m_step": lambda x, r: _m_step(x, r, variances=True)}, "variances"),
            ({"m_step": lambda x, r: _m_step(x, r, counts=True)}, "divide by n"),
            ({"m_step": lambda x, r: _m_step(x, torch.full_like(r, 0.5))}, "responsibilities"),
        ],
    ),
    "duality.check_sgd_asymptotic_variance": Case(
        {"variance": lambda c, f: c**2 * f / (2 * c * f - 1)},
        ("variance",),
        (1.28 / 2.2, 2.25),
        [
            ({"variance": lambda c, f: 1 / f}, "Cramer-Rao"),
            ({"variance": lambda c, f: 2 * c**2 * f / (2 * c * f - 1)}, "factor of 2"),
            ({"variance": lambda c, f: -(c**2) * f / (2 * c * f - 1)}, "sign"),
        ],
    ),
}


# Public callables in an exercises module's __all__ that are not self-checks (helpers).
NOT_CHECKS = {"gaussian_mixture.condition_separation"}


# ----------------------------------------------------------------------------------------- laplace
CASES |= {
    "laplace.check_beta_bernoulli_laplace": Case(
        {"mean": 8 / 12, "variance": (8 / 12) * (4 / 12) / 12, "a": 2, "b": 2, "k": 7, "n": 10},
        ("mean", "variance"),
        (8 / 12, (8 / 12) * (4 / 12) / 12),
        [
            ({"mean": 9 / 14}, "posterior mean"),
            ({"mean": 0.7}, "maximum-likelihood"),
            ({"variance": 9 * 5 / (14**2 * 15)}, "exact Beta"),
            ({"variance": 12 / ((8 / 12) * (4 / 12))}, "precision"),
        ],
    ),
    "laplace.check_blr_evidence": Case(
        {
            "log_evidence": -4.604770674141675,
            "x": [1.0, 2.0, -1.0],
            "y": [1.5, 2.5, -0.5],
            "delta": 1.0,
            "sigma": 1.0,
        },
        ("log_evidence",),
        (-4.604770674141675,),
        [
            ({"log_evidence": -3.131815599614018}, "Occam factor"),
            ({"log_evidence": -4.104770674141675}, "prior's penalty"),
        ],
    ),
    "laplace.check_probit": Case(
        {"prob": 0.7949723458761111, "mean": 2.0, "variance": 3.0},
        ("prob",),
        (0.7949723458761111,),
        [
            ({"prob": 1 / (1 + math.exp(-2.0))}, "ignores the variance"),
            (
                {"prob": 1 / (1 + math.exp(-2 / math.sqrt(1 + math.pi * math.sqrt(3) / 8)))},
                "standard deviation",
            ),
        ],
    ),
    "laplace.check_effective_parameters": Case(
        {"gamma": 10 / 11 + 2 / 3 + 0.1 / 1.1, "eigenvalues": [10.0, 2.0, 0.1], "delta": 1.0},
        ("gamma",),
        (10 / 11 + 2 / 3 + 0.1 / 1.1,),
        [
            ({"gamma": 1 / 11 + 1 / 3 + 1 / 1.1}, "prior-dominated"),
            ({"gamma": 3.0}, "Not every direction"),
        ],
    ),
}


# -------------------------------------------------------------------------------- enumeration
def _modules() -> list[str]:
    return sorted(
        m.name
        for m in pkgutil.iter_modules(igbook.exercises.__path__)
        if not m.name.startswith("_")
    )


def _public_callables() -> list[tuple[str, Callable[..., Feedback]]]:
    out = []
    for mod_name in _modules():
        mod = importlib.import_module(f"igbook.exercises.{mod_name}")
        for name in mod.__all__:
            obj = getattr(mod, name)
            if callable(obj) and not isinstance(obj, type):
                out.append((f"{mod_name}.{name}", obj))
    return out


CHECKS = [(key, fn) for key, fn in _public_callables() if key not in NOT_CHECKS]


def _bad_values() -> list[tuple[str, object]]:
    return [
        ("None", None),
        ("Ellipsis", ...),
        ("a string", "0.5"),
        ("NaN", NAN),
        ("infinity", math.inf),
        ("a wrong shape", torch.zeros(7, 3)),
        ("a list of the wrong length", [1.0, 2.0, 3.0, 4.0, 5.0]),
        ("a complex number", 1 + 2j),
        ("a bool", True),
        ("a function", lambda: 1.0),
        ("an object", object()),
    ]


def _bad_functions() -> list[tuple[str, object]]:
    return [
        ("None", None),
        ("Ellipsis", ...),
        ("a number", 3.0),
        ("a string", "lambda p: p"),
        ("a function returning None", lambda *a: None),
        ("a function returning text", lambda *a: "0.5"),
        ("a function returning NaN", lambda *a: NAN),
        ("a function returning a wrong shape", lambda *a: torch.zeros(7, 3)),
        ("a function returning a list of the wrong length", lambda *a: [1.0, 2.0, 3.0, 4.0, 5.0]),
        ("a function returning itself", lambda *a: _raises),
        ("a function with no arguments", lambda: 0.0),
    ]


def _renderings(v: float) -> set[str]:
    v = float(v)
    out = {f"{v:.3g}", f"{v:.4g}", f"{v:.6g}", repr(v)}
    if abs(v) >= 1:  # fixed-point renderings only where they keep 3 significant digits
        out |= {f"{v:.2f}", f"{v:.3f}"}
    if v == int(v) and abs(v) < 10:  # a small integer: only its decimal renderings (1.00, 1.000)
        out = {f"{v:.2f}", f"{v:.3f}"}
    return {s for s in out if s not in {"0.00", "0.000", "-0.00", "-0.000"}}


def _assert_no_answer(msg: str, case: Case, label: str) -> None:
    for v in case.expected:
        for s in _renderings(v):
            assert not re.search(rf"(?<![\d.]){re.escape(s)}(?![\d])", msg), (
                f"{label}: message reveals {s!r}: {msg}"
            )
    for s in case.forbidden:
        assert s not in msg, f"{label}: message contains {s!r}: {msg}"


def _call(fn: Callable[..., Feedback], kwargs: dict[str, Any]) -> Feedback:
    return fn(**kwargs)


def _check_wrong(fb: object, case: Case, label: str) -> Feedback:
    assert isinstance(fb, Feedback), f"{label}: returned {type(fb).__name__}, not a Feedback"
    assert fb.ok is False and not fb, f"{label}: accepted"
    assert isinstance(fb.message, str) and fb.message.strip(), f"{label}: empty message"
    assert "Traceback" not in fb.message and "igbook/" not in fb.message, f"{label}: {fb.message}"
    _assert_no_answer(fb.message, case, label)
    assert str(fb).startswith("Not yet.") and fb._repr_markdown_().startswith("❌")
    return fb


# -------------------------------------------------------------------------------------- tests
def test_every_public_callable_is_a_check_with_cases() -> None:
    """A new check fails here until CASES holds its correct answer and typical mistakes."""
    assert len(CHECKS) >= 40
    missing = [key for key, _ in CHECKS if key not in CASES]
    assert not missing, f"add cases to tests/test_exercises.py for {missing}"
    stale = set(CASES) - {key for key, _ in CHECKS}
    assert not stale, f"cases for checks that no longer exist: {stale}"
    for key, fn in CHECKS:
        params = inspect.signature(fn).parameters
        assert set(CASES[key].answers) <= set(params), key
        assert set(CASES[key].right) <= set(params), key
        assert inspect.signature(fn).return_annotation in (Feedback, "Feedback"), (
            f"{key} should return a Feedback"
        )
    for key in NOT_CHECKS:
        mod, name = key.split(".")
        assert name in importlib.import_module(f"igbook.exercises.{mod}").__all__


@pytest.mark.parametrize(("key", "fn"), CHECKS, ids=[k for k, _ in CHECKS])
def test_the_correct_answer_passes(key: str, fn: Callable[..., Feedback]) -> None:
    fb = _call(fn, CASES[key].right)
    assert isinstance(fb, Feedback) and fb.ok, f"{key}: {fb}"
    assert fb.message and str(fb).startswith("Correct.")


@pytest.mark.parametrize(("key", "fn"), CHECKS, ids=[k for k, _ in CHECKS])
def test_any_unfinished_or_broken_answer_gets_a_message(
    key: str, fn: Callable[..., Feedback]
) -> None:
    case = CASES[key]
    for arg in case.answers:
        is_function = callable(case.right[arg])
        for what, bad in _bad_functions() if is_function else _bad_values():
            label = f"{key}({arg}={what})"
            _check_wrong(_call(fn, {**case.right, arg: bad}), case, label)


@pytest.mark.parametrize(("key", "fn"), CHECKS, ids=[k for k, _ in CHECKS])
def test_a_raising_student_function_is_reported_by_its_error(
    key: str, fn: Callable[..., Feedback]
) -> None:
    case = CASES[key]
    functions = [a for a in case.answers if callable(case.right[a])]
    for arg in functions:
        fb = _check_wrong(_call(fn, {**case.right, arg: _raises}), case, f"{key}({arg} raises)")
        assert "ZeroDivisionError: division by zero" in fb.message, fb.message
        # the same for an error raised inside torch by the student's code
        fb = _check_wrong(
            _call(
                fn,
                {
                    **case.right,
                    arg: lambda *a: torch.linalg.solve(torch.zeros(2, 3), torch.zeros(2)),
                },
            ),
            case,
            f"{key}({arg} raises in torch)",
        )
        assert "RuntimeError" in fb.message, fb.message


@pytest.mark.parametrize(("key", "fn"), CHECKS, ids=[k for k, _ in CHECKS])
def test_typical_mistakes_get_their_hint_and_not_the_answer(
    key: str, fn: Callable[..., Feedback]
) -> None:
    case = CASES[key]
    assert len(case.mistakes) >= 2, f"{key}: name at least two typical mistakes"
    for override, hint in case.mistakes:
        label = f"{key}({', '.join(override)} -> {hint!r})"
        fb = _check_wrong(_call(fn, {**case.right, **override}), case, label)
        assert hint.lower() in fb.message.lower(), f"{label}: {fb.message}"


def test_no_message_is_a_bare_ratio() -> None:
    """A wrong number with no recognised mistake says which way it is off, not 'x times the expected one'."""
    from igbook.exercises.fisher_metric import check_bernoulli_fisher

    fb = check_bernoulli_fisher(lambda p: 443.2 / (p * (1 - p)))
    assert not fb and "times the expected" not in fb.message and "too large" in fb.message
    assert "443" not in fb.message
    fb = check_bernoulli_fisher(lambda p: 0.3)
    assert not fb and ("too small" in fb.message or "tenth" in fb.message), fb.message


def test_a_raising_function_is_located_in_the_students_code() -> None:
    """run_reader names the line of the student's code the error came from, not igbook's or torch's."""
    from igbook.exercises.kfac import check_kronecker_solve

    line = inspect.getsourcelines(_raises)[1] + 1
    fb = check_kronecker_solve(_raises)
    assert (
        not fb and f"ZeroDivisionError: division by zero (line {line} of your code)" in fb.message
    ), fb.message

    def solve(A: torch.Tensor, G: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
        return torch.linalg.solve(A, V)  # wrong shapes: raises inside torch

    fb = check_kronecker_solve(solve)
    line = inspect.getsourcelines(solve)[1] + 1
    assert (
        not fb and f"(line {line} of your code)" in fb.message and "RuntimeError" in fb.message
    ), fb.message
