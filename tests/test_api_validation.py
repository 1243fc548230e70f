"""Property-based bad-input test over the whole public API (every name of every ``__all__``).

The test enumerates the API itself, so a function added tomorrow is covered tomorrow:

1. every public callable of every igbook module (``__all__``) is collected; presentation
   modules (``igbook.widgets``, ``igbook.exercises``, ``igbook.plotting``, ``igbook.live``) and
   the long-running experiment drivers are left out (listed in ``SKIP_MODULES``);
2. for each, an in-domain *base call* is built from its signature (values chosen by the
   parameter's name and annotation; ``BASE`` overrides the guesses where a name needs more),
   and the call must return finite results;
3. hypothesis then replaces one argument at a time by a value from just outside any numeric
   domain (NaN, a string, a list of strings, ``None`` where a value is required) or from its
   edge (inf, negative, zero, empty, wrong shape): a value that is outside whatever the
   domain is must raise :class:`ValueError`/:class:`TypeError` whose message names the
   parameter; an edge value must either raise such an error or return finite results;
4. callables whose base call cannot be guessed are listed (``NO_AUTOMATIC_CALL`` must equal the
   set found), so a new one fails the test until it gets a ``BASE`` entry or is listed.
   ``KNOWN_GAPS`` lists the cases found in modules outside this change; each is a strict xfail,
   so fixing one fails the test until the list is updated (it is empty now);
5. ``UNCHECKED_BY_DESIGN`` lists helpers left unchecked so that ``torch.func.vmap`` can trace
   them: each must say so in its docstring and name a checked public twin that passes step 3
   and agrees with it.
"""

from __future__ import annotations

import importlib
import inspect
import math
import pkgutil
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import igbook

SKIP_MODULES = (
    "igbook.widgets",  # interactive presentation (ipywidgets)
    "igbook.exercises",  # self-checks of the chapters (return Feedback, never raise by design)
    "igbook.plotting",  # matplotlib styling
    "igbook.live",  # Bokeh live figures
    "igbook.book",  # the chapters' preamble and tables (tested in test_book.py)
    "igbook.experiments",  # experiment set-ups and minutes-long drivers (tested in test_experiments.py)
    "igbook.continual.runner",
    "igbook.data",  # loads bundled datasets (covered by test_continual)
    "igbook._validation",  # the checks themselves (tested through every caller)
    "igbook._safety",
    "igbook._distributed",  # torch.distributed helpers (tested in test_distributed.py)
    "igbook.kfac.distributed",  # K-FAC's factor update on several ranks (test_distributed.py)
)


def _is_record(cls: type) -> bool:
    """A plain result record (NamedTuple, or dataclass without ``__post_init__``, or an Enum):
    it holds what a checked function computed and validates nothing by design."""
    import dataclasses
    import enum

    if issubclass(cls, tuple) and hasattr(cls, "_fields"):
        return True
    if issubclass(cls, enum.Enum):
        return True
    return dataclasses.is_dataclass(cls) and not hasattr(cls, "__post_init__")


def _public() -> dict[str, Callable[..., Any]]:
    out: dict[str, Callable[..., Any]] = {}
    seen: set[int] = set()
    for info in sorted(pkgutil.walk_packages(igbook.__path__, "igbook."), key=lambda m: m.name):
        if info.name.startswith(SKIP_MODULES):
            continue
        mod = importlib.import_module(info.name)
        for name in getattr(mod, "__all__", ()):
            obj = getattr(mod, name)
            if not callable(obj) or id(obj) in seen:
                continue
            if inspect.isclass(obj) and (issubclass(obj, BaseException) or _is_record(obj)):
                continue
            seen.add(id(obj))
            out[f"{getattr(obj, '__module__', info.name)}.{name}"] = obj
    return out


PUBLIC = _public()

F64 = torch.float64


def _spd() -> torch.Tensor:
    return torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=F64)


def _guess(name: str, ann: str) -> list[Any]:
    """In-domain candidates for a parameter, from its name and annotation (first is tried first)."""
    n = name.lower()
    tensorish = "Tensor" in ann or "float" in ann or ann in ("", "object", "Any")
    if n in ("seed",):
        return [0]
    if n.startswith(("num", "n_")) or n in (
        "n",
        "k",
        "steps",
        "iters",
        "max_iter",
        "order",
        "size",
        "m",
        "dimension",
    ):
        return [3]
    if n in ("dim", "axis"):
        return [-1]
    if (
        any(
            s in n
            for s in (
                "fisher",
                "metric",
                "matrix",
                "cov",
                "hessian",
                "precision_matrix",
                "scale_tril",
            )
        )
        and tensorish
    ):
        return [_spd(), torch.tensor([1.0, 2.0], dtype=F64)]
    if n in ("p", "q", "probs", "probabilities", "pi", "weights") or "prob" in n:
        return [torch.tensor([0.3, 0.7], dtype=F64), torch.tensor(0.3, dtype=F64), 0.3]
    if any(
        s in n
        for s in (
            "sigma",
            "std",
            "rate",
            "scale",
            "var",
            "alpha",
            "beta",
            "concentration",
            "shape",
            "tau",
            "lam",
            "precision",
            "radius",
            "eps",
            "lr",
            "damping",
            "tol",
            "temperature",
            "kappa",
        )
    ):
        return [0.7, torch.tensor([0.7, 1.3], dtype=F64), torch.tensor(0.7, dtype=F64)]
    if tensorish:
        return [torch.tensor([0.3, -0.2], dtype=F64), 0.3, torch.tensor(0.3, dtype=F64), _spd()]
    if "int" in ann:
        return [3]
    return []


#: explicit in-domain arguments where the name-based guess is not enough
BASE: dict[str, dict[str, Any]] = {
    # the 1/n rate needs 2 lr lambda_min(F) > 1 (the guessed lr sits on that edge)
    "igbook.efficiency.sgd_asymptotic_covariance": {"fisher": _spd(), "lr": 2.0},
    # a trace, a level and a tolerance (the guess would try a tensor target)
    "igbook.vi.cvi.steps_to_reach": {
        "elbo": torch.tensor([0.3, -0.2], dtype=F64),
        "target": 0.3,
        "tol": 0.7,
    },
    "igbook.vi.cvi.steps_to_settle": {
        "elbo": torch.tensor([0.3, -0.2], dtype=F64),
        "target": 0.3,
        "tol": 0.7,
    },
    # class indices (an integer tensor), not real numbers
    "igbook.continual.importance.restrict_logits": {
        "logits": torch.tensor([[0.3, -0.2, 0.5]], dtype=F64),
        "active": torch.tensor([0, 2]),
    },
}


def _finite(out: Any) -> bool:
    if isinstance(out, torch.Tensor):
        return not out.is_floating_point() or bool(torch.isfinite(out).all()) or out.numel() == 0
    if isinstance(out, float):
        return math.isfinite(out)
    if isinstance(out, (tuple, list)):
        return all(_finite(o) for o in out)
    if hasattr(out, "__dataclass_fields__"):
        return all(_finite(getattr(out, f)) for f in out.__dataclass_fields__)
    return True


def _required(fn: Callable[..., Any]) -> list[inspect.Parameter] | None:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    return [
        p
        for p in sig.parameters.values()
        if p.default is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]


def _numeric_defaults(fn: Callable[..., Any]) -> list[str]:
    sig = inspect.signature(fn)
    return [
        p.name
        for p in sig.parameters.values()
        if isinstance(p.default, (int, float))
        and not isinstance(p.default, bool)
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]


def _call(fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """Call ``fn``; a context manager is entered and left (its checks run on entry)."""
    out = fn(**kwargs)
    if hasattr(out, "__enter__") and hasattr(out, "__exit__") and not isinstance(out, torch.Tensor):
        with out as value:
            return value
    return out


def base_call(qual: str, fn: Callable[..., Any]) -> dict[str, Any] | None:
    """Keyword arguments of a successful in-domain call with finite results, or ``None``."""
    req = _required(fn)
    if req is None:
        return None
    fixed = BASE.get(qual, {})
    cands: list[list[Any]] = []
    for p in req:
        if p.name in fixed:
            cands.append([fixed[p.name]])
            continue
        c = _guess(p.name, str(p.annotation))
        if not c:
            return None
        cands.append(c)
    if not req:
        trials = [{}]
    else:
        trials = []
        depth = max(len(c) for c in cands)
        for j in range(depth):  # the j-th candidate of every parameter, then mixed
            trials.append({p.name: c[min(j, len(c) - 1)] for p, c in zip(req, cands)})
    for kw in trials:
        kw = {**kw, **{k: v for k, v in fixed.items() if k not in kw}}
        try:
            out = _call(fn, kw)
        except Exception:
            continue
        if _finite(out):
            return kw
    return None


BASES: dict[str, dict[str, Any]] = {}
NO_CALL: set[str] = set()
for _q, _f in PUBLIC.items():
    _b = base_call(_q, _f)
    if _b is None:
        NO_CALL.add(_q)
    else:
        BASES[_q] = _b

#: outside every numeric domain
OUTSIDE: dict[str, Any] = {"nan": math.nan, "string": "abc", "strings": ["a", "b"]}
#: at the edge of many domains: raise naming the parameter, or return finite results
EDGE: dict[str, Callable[[Any], Any]] = {
    "inf": lambda v: (
        math.inf if not isinstance(v, torch.Tensor) else torch.full(v.shape, math.inf, dtype=F64)
    ),
    "negative": lambda v: -abs(v) - 1 if not isinstance(v, torch.Tensor) else -v.abs() - 1,
    "zero": lambda v: 0 * v,
    "empty": lambda v: torch.empty(0, dtype=F64) if isinstance(v, torch.Tensor) else v,
    "wrong_shape": lambda v: torch.ones(5, 3, 1, dtype=F64) if isinstance(v, torch.Tensor) else v,
    "wrong_dtype": lambda v: v.to(torch.complex128) if isinstance(v, torch.Tensor) else v,
}


def _bad(kind: str, value: Any) -> Any:
    if kind in OUTSIDE:
        if kind == "nan" and isinstance(value, torch.Tensor):
            return torch.full(value.shape, math.nan, dtype=F64)  # an integer tensor cannot hold NaN
        return OUTSIDE[kind]
    return EDGE[kind](value)


def _mentions(exc: BaseException, name: str) -> bool:
    msg = str(exc).lower()
    return name.lower() in msg or name.lower().replace("_", " ") in msg


def check_one(qual: str, param: str, kind: str) -> str | None:
    """``None`` if the call behaves; otherwise a description of the failure."""
    fn = PUBLIC[qual]
    kw = dict(BASES[qual])
    value = kw.get(param, inspect.signature(fn).parameters[param].default)
    if kind == "nan" and isinstance(value, int) and not isinstance(value, bool):
        kind = "string"  # an int parameter: NaN is a float, the wrong type is the test
    bad = _bad(kind, value)
    kw[param] = bad
    try:
        out = _call(fn, kw)
    except (ValueError, TypeError) as exc:
        if _mentions(exc, param):
            return None
        return f"{type(exc).__name__} without the name {param!r}: {exc}"[:300]
    except Exception as exc:
        return f"{type(exc).__name__} (not ValueError/TypeError): {exc}"[:300]
    if kind in OUTSIDE:
        return "accepted a value outside the domain"
    if not _finite(out):
        return "returned a non-finite result"
    return None


def _params_of(qual: str) -> list[str]:
    fn = PUBLIC[qual]
    names = list(BASES[qual]) + [n for n in _numeric_defaults(fn) if n not in BASES[qual]]
    return [n for n in names if n not in ("self",)]


KINDS = list(OUTSIDE) + list(EDGE)

#: cases found in modules outside this change (strict xfails: fixing one fails the test)
KNOWN_GAPS: dict[str, str] = {}

#: deliberately unchecked helpers (``torch.func.vmap`` cannot trace a check that reads values,
#: and they run on every node of quadrature grids), each with its checked public twin: the
#: docstring must say so and name the twin, and the two must agree on in-domain input
UNCHECKED_BY_DESIGN: dict[str, str] = {
    "igbook.mixtures.model.log_prob_single": "igbook.mixtures.model.log_prob",
}

#: callables whose in-domain call cannot be guessed from the signature (need a model, a
#: closure, an optimizer or a family instance); they are covered by their own test modules
NO_AUTOMATIC_CALL: set[str] = {
    # igbook.rl: need a policy network, a batch or a gymnasium environment; bad input in test_rl.py
    "igbook.rl.tabular.TabularMDP",
    "igbook.rl.policies.policy_fisher",
    "igbook.rl.policies.policy_parameters",
    "igbook.rl.rollouts.collect_rollout",
    "igbook.rl.training.evaluate_policy",
    "igbook.rl.training.train_policy",
    "igbook.rl.updates.npg_step_network",
    "igbook.rl.updates.pg_step",
    "igbook.rl.updates.surrogate_gradient",
    "igbook.rl.updates.trpo_step",
    # igbook.rl functions of a TabularMDP / ScalarLQR or of bool episode flags: every argument
    # is checked against NaN, wrong types and shapes in test_rl.py::test_bad_input_is_named
    "igbook.rl.lqr.lqr_fisher",
    "igbook.rl.lqr.lqr_gain_value",
    "igbook.rl.lqr.lqr_gradient",
    "igbook.rl.lqr.lqr_natural_gradient",
    "igbook.rl.lqr.lqr_optimal_gain",
    "igbook.rl.lqr.lqr_return",
    "igbook.rl.lqr.lqr_second_moment",
    "igbook.rl.lqr.riccati_iteration",
    "igbook.rl.rollouts.gae",
    "igbook.rl.rollouts.returns_to_go",
    "igbook.rl.tabular.advantages",
    "igbook.rl.tabular.discounted_occupancy",
    "igbook.rl.tabular.expected_return",
    "igbook.rl.tabular.natural_policy_gradient",
    "igbook.rl.tabular.npg_step",
    "igbook.rl.tabular.policy_evaluation",
    "igbook.rl.tabular.policy_iterates",
    "igbook.rl.tabular.q_values",
    "igbook.rl.tabular.softmax_policy_fisher",
    "igbook.rl.tabular.softmax_policy_gradient",
    "igbook.rl.tabular.value_iteration",
    # the Laplace approximation: need a trained model, a batch, a fitted posterior; bad input in test_laplace.py
    "igbook.laplace.evidence.effective_parameters",
    "igbook.laplace.evidence.evidence_terms",
    "igbook.laplace.evidence.log_likelihood",
    "igbook.laplace.evidence.log_marginal_likelihood",
    "igbook.laplace.evidence.optimize_prior_precision",
    "igbook.laplace.online.laplace_penalty",
    "igbook.laplace.online.next_task_prior",
    "igbook.laplace.posterior.fit_laplace",
    "igbook.laplace.posterior.last_linear_layer",
    "igbook.laplace.predictive.functional_variance",
    "igbook.laplace.predictive.jacobians",
    "igbook.laplace.predictive.predictive",
    # the curvature core (igbook.fisher): need a model and a batch; bad input in test_curvature_core.py
    "igbook.fisher.curvature.curvature",
    "igbook.fisher.curvature.layer_blocks",
    "igbook.fisher.kronecker.backpropagate_output_vectors",
    "igbook.fisher.kronecker.kfac_factors",
    "igbook.fisher.kronecker.kronecker_curvature",
    "igbook.fisher.kronecker.kronecker_layers",
    "igbook.fisher.kronecker.layer_input_rows",
    "igbook.fisher.kronecker.layer_output_rows",
    "igbook.fisher.kronecker.unsupported_layer_reason",
    "igbook.fisher.layout.parameter_layout",
    "igbook.fisher.layout.reorder",
    "igbook.fisher.operators.BlockDiagonalCurvature",
    "igbook.fisher.operators.Curvature",
    "igbook.fisher.problem.ModelProblem",
    "igbook.fisher.problem.mc_generator",
    "igbook.fisher.problem.needs_targets",
    "igbook.fisher.problem.output_factors",
    "igbook.fisher.problem.output_matrices",
    "igbook.fisher.types.as_fisher_type",
    "igbook.kfac.inverses.damped_inverse",
    "igbook.kfac.blocks.LayerBlock",
    "igbook.kfac.blocks.check_fisher_type",
    "igbook.kfac.blocks.make_kfac_generator",
    "igbook.kfac.inverses.psd_eigh",
    "igbook.connections.alpha_connection",
    "igbook.connections.batched_acceleration",
    "igbook.connections.cubic_tensor",
    "igbook.connections.duality_defect",
    "igbook.connections.e_connection",
    "igbook.connections.e_geodesic",
    "igbook.connections.fisher_metric",
    "igbook.connections.gaussian_curvature",
    "igbook.connections.geodesic_acceleration",
    "igbook.connections.integrate_geodesic",
    "igbook.connections.levi_civita",
    "igbook.connections.m_connection",
    "igbook.connections.m_geodesic",
    "igbook.connections.metric_function",
    "igbook.connections.natural_map",
    "igbook.connections.raise_index",
    "igbook.connections.metric_at",
    "igbook.connections.rk4_geodesic",
    "igbook.continual.bayesian.BGDLearner",
    "igbook.continual.bayesian.MESULearner",
    "igbook.continual.bayesian.fan_in_sigma_groups",
    "igbook.continual.importance.batched_gradient_diagonal",
    "igbook.continual.importance.diagonal_fisher",
    "igbook.continual.importance.ewc_penalty",
    "igbook.continual.importance.fisher_quadratic_form",
    "igbook.continual.importance.local_targets",
    "igbook.continual.importance.named_params",
    "igbook.continual.importance.predictive_kl",
    "igbook.continual.learner.ContinualLearner",
    "igbook.continual.learner.FineTuning",
    "igbook.continual.methods.make_learner",
    "igbook.continual.projection.FOPNG",
    "igbook.continual.projection.fopng_direction",
    "igbook.continual.regularization.EWC",
    "igbook.continual.regularization.OnlineEWC",
    "igbook.continual.regularization.SI",
    "igbook.continual.metrics.average_accuracy",
    "igbook.continual.metrics.backward_transfer",
    "igbook.continual.metrics.check_accuracy_matrix",
    "igbook.continual.metrics.forgetting",
    "igbook.continual.metrics.markdown_table",
    "igbook.continual.metrics.mean_std",
    "igbook.continual.metrics.newest_task_accuracy",
    "igbook.continual.metrics.summarize",
    "igbook.continual.runner.evaluate",
    "igbook.continual.runner.run_stream",
    "igbook.continual.streams.TaskStream",
    "igbook.continual.streams.stream_batches",
    "igbook.continual.uncertainty.ood_auc",
    "igbook.continual.uncertainty.uncertainty_decomposition",
    "igbook.distances.geodesic_energy",
    "igbook.distances.geodesic_shooting",
    "igbook.efficiency.family_score",
    "igbook.efficiency.online_natural_gradient",
    "igbook.efficiency.online_sgd",
    "igbook.efficiency.scaled_covariance",
    "igbook.families.base.ExponentialFamily",
    "igbook.families.base.family_class",
    "igbook.fisher.density.expected_negative_hessian",
    "igbook.fisher.density.fisher_monte_carlo",
    "igbook.fisher.density.pullback_metric",
    "igbook.fisher.density.reparameterized_fisher",
    "igbook.fisher.density.score",
    "igbook.fisher.density.score_covariance",
    "igbook.fisher.empirical_fisher.GLMProblem",
    "igbook.fisher.empirical_fisher.euler_flow",
    "igbook.fisher.empirical_fisher.linear_regression_flows",
    "igbook.fisher.empirical_fisher.preconditioned_field",
    "igbook.fisher.likelihoods.Likelihood",
    "igbook.fisher.likelihoods.get_likelihood",
    "igbook.fisher.products.CurvatureOperator",
    "igbook.fisher.models.curvature_matrix",
    "igbook.fisher.diagonal.linear_curvature_diagonal",
    "igbook.fisher.models.fisher_diagonal",
    "igbook.fisher.models.fisher_matrix",
    "igbook.fisher.products.fisher_vector_product",
    "igbook.fisher.layout.flatten_params",
    "igbook.fisher.models.ggn_matrix",
    "igbook.fisher.products.ggn_vector_product",
    "igbook.fisher.models.hessian_matrix",
    "igbook.fisher.products.hessian_vector_product",
    "igbook.fisher.models.minibatch_gradient_second_moment",
    "igbook.fisher.layout.model_params",
    "igbook.fisher.models.output_curvature",
    "igbook.fisher.layout.param_slices",
    "igbook.fisher.models.per_example_gradients",
    "igbook.fisher.layout.unflatten_params",
    "igbook.geometry.curve_length",
    "igbook.geometry.fisher_rao_distance",
    "igbook.geometry.fisher_rao_gaussian",
    "igbook.kfac.optimizer.KFAC",
    "igbook.kfac.core.KFACPreconditioner",
    "igbook.kfac.losses.negative_log_likelihood",
    "igbook.kfac.losses.output_gradient_samples",
    "igbook.kfac.dense.DenseNaturalGradient",
    "igbook.kfac.dense.layer_fisher_blocks",
    "igbook.kfac.dense.network_fisher",
    "igbook.mirror.ExponentialFamilyMap",
    "igbook.mirror.MirrorMap",
    "igbook.mirror.bregman_divergence",
    "igbook.mirror.exponentiated_gradient",
    "igbook.mirror.exponentiated_gradient_step",
    "igbook.mirror.mirror_descent",
    "igbook.mirror.mirror_step",
    "igbook.mirror.natural_gradient_descent_natural",
    "igbook.mirror.projected_gradient_descent",
    "igbook.mirror.proximal_objective",
    "igbook.mixtures.flows.flow",
    "igbook.mixtures.flows.flow_pair",
    "igbook.mixtures.flows.natural_gradient_field",
    "igbook.mixtures.model.expectation",
    "igbook.natgrad.core.conjugate_gradient",
    "igbook.natgrad.core.natural_gradient_cg",
    "igbook.natgrad.families.approximate_step",
    "igbook.natgrad.families.chart",
    "igbook.natgrad.families.chart_names",
    "igbook.natgrad.families.euclidean_step",
    "igbook.natgrad.families.fisher_in_chart",
    "igbook.natgrad.families.fisher_vector_product",
    "igbook.natgrad.families.kl_between",
    "igbook.natgrad.families.kl_loss",
    "igbook.natgrad.families.natural_gradient_at",
    "igbook.natgrad.families.natural_step",
    "igbook.natgrad.families.submanifold_chart",
    "igbook.natgrad.families.start_point",
    "igbook.natgrad.families.checked_distribution",
    "igbook.natgrad.families.local_model",
    "igbook.natgrad.families.loss_and_gradient",
    "igbook.natgrad.loops.best_learning_rate",
    "igbook.natgrad.loops.descend",
    "igbook.natgrad.trust_region.kl_ball_steepest_descent",
    "igbook.natgrad.trust_region.kl_proximal_step",
    "igbook.natgrad.trust_region.trust_region_step",
    "igbook.natgrad.networks.NaturalGradientDescent",
    "igbook.natgrad.networks.natural_gradient_direction",
    "igbook.natgrad.networks.ngd_step",
    "igbook.optim.bgd.BGD",
    "igbook.optim.bgd.GaussianMeanFieldOptimizer",
    "igbook.optim.blr.IVON",
    "igbook.optim.blr.PerExampleClosure",
    "igbook.optim.blr.VOGN",
    "igbook.optim.blr.VON",
    "igbook.optim.blr.Vadam",
    "igbook.optim.blr.VariationalOptimizer",
    "igbook.optim.mesu.MESU",
    # SOAP, and two helpers whose arguments (a tensor and one of its dimensions; one basis per
    # dimension of x) cannot be guessed from the signature: bad input in tests/test_soap.py
    "igbook.optim.soap.SOAP",
    "igbook.optim.soap.mode_gram",
    "igbook.optim.soap.soap_rotate",
    "igbook.optim.shampoo.Shampoo",  # an optimizer: bad input in tests/test_shampoo.py
    # Muon (an optimizer), its param-group splitter (needs a model) and the lr factor (a shape
    # pair): bad input in tests/test_muon.py
    "igbook.optim.muon.Muon",
    "igbook.optim.muon.muon_lr_scale",
    "igbook.optim.muon.muon_param_groups",
    "igbook.optim.sampling.classification_metrics",
    "igbook.optim.sampling.expected_calibration_error",
    "igbook.optim.sampling.predictive",
    "igbook.optim.sampling.reliability_curve",
    "igbook.optim.sampling.sampled_params",
    "igbook.projections.MixtureParams",
    "igbook.projections.e_projection",
    "igbook.projections.em_e_step",
    "igbook.projections.em_free_energy",
    "igbook.projections.em_gaussian_mixture",
    "igbook.projections.em_m_step",
    "igbook.projections.exponential_tilt",
    "igbook.projections.jeffreys_density",
    "igbook.projections.markov_embedding",
    "igbook.projections.pythagorean_defect",
    "igbook.vi.blr.blr_natural_step",
    "igbook.vi.blr.blr_step",
    "igbook.vi.blr.blr_surrogate_objective",
    "igbook.vi.blr.from_natural_parameters",
    "igbook.vi.blr.gaussian_expectations",
    "igbook.vi.blr.gaussian_kl",
    "igbook.vi.blr.natural_parameters",
    "igbook.vi.blr.run_blr",
    "igbook.vi.blr.sample_gaussian",
    "igbook.vi.conjugate.BayesianLinearRegression",
    "igbook.vi.conjugate.ConjugateModel",
    "igbook.vi.conjugate.gaussian_information_posterior",
    "igbook.vi.conjugate.ngvi_step",
    "igbook.vi.cvi.BayesianLogisticRegression",
    "igbook.vi.cvi.cvi",
    "igbook.vi.cvi.euclidean_vi",
    "igbook.vi.svi.GaussianMixture",
    "igbook.vi.svi.conjugate_svi",
    "igbook.vi.svi.svi",
    "igbook.vi.vmp.mean_field_elbo",
    "igbook.vi.vmp.mean_field_kl",
    "igbook.vi.vmp.normal_gamma_messages",
    "igbook.vi.vmp.vmp_normal_gamma",
    "typing.Chart",
    "typing.Structure",
}


def test_every_public_callable_is_enumerated() -> None:
    assert len(PUBLIC) > 150, len(PUBLIC)
    assert len(BASES) > 60, f"only {len(BASES)} automatic base calls"
    new = sorted(NO_CALL - NO_AUTOMATIC_CALL)
    assert not new, (
        f"new public callables without an in-domain call (add a BASE entry or list them): {new}"
    )


@pytest.mark.parametrize(
    "qual",
    [
        pytest.param(q, marks=pytest.mark.xfail(strict=True, reason=KNOWN_GAPS[q]))
        if q in KNOWN_GAPS
        else q
        for q in sorted(BASES)
        if q not in UNCHECKED_BY_DESIGN
    ],
)
def test_bad_input_raises_naming_the_parameter(qual: str) -> None:
    """Every (parameter, bad value) pair: outside raises naming the parameter; edge raises or is finite."""
    failures = [
        f"{param}={kind}: {f}"
        for param in _params_of(qual)
        for kind in KINDS
        if (f := check_one(qual, param, kind)) is not None
    ]
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(("qual", "twin"), sorted(UNCHECKED_BY_DESIGN.items()))
def test_unchecked_helpers_are_documented_and_have_a_checked_twin(qual: str, twin: str) -> None:
    """A deliberately unchecked helper says so, names its checked twin, and agrees with it."""
    doc = inspect.getdoc(PUBLIC[qual]) or ""
    assert "unchecked" in doc.lower(), f"{qual}: the docstring must say that it is unchecked"
    assert twin.rsplit(".", 1)[1] in doc, f"{qual}: the docstring must name its checked twin {twin}"
    assert twin in BASES and twin not in KNOWN_GAPS and twin not in UNCHECKED_BY_DESIGN
    assert not [
        (p, k) for p in _params_of(twin) for k in KINDS if check_one(twin, p, k) is not None
    ]
    # the same number by both paths, at an in-domain point (theta of shape (2,), one x)
    theta, x = torch.tensor([0.4, -1.1], dtype=F64), torch.tensor(0.3, dtype=F64)
    torch.testing.assert_close(
        PUBLIC[qual](theta, x, 0.8).reshape(-1),
        PUBLIC[twin](x, theta, 0.8).reshape(-1),
        rtol=1e-13,
        atol=0,
    )


@pytest.mark.parametrize("qual", sorted(BASES))
def test_inside_the_domain_results_are_finite(qual: str) -> None:
    """Property: scalar arguments moved by up to 10% stay in the domain, and the results stay finite."""
    base = BASES[qual]
    scalars = [k for k, v in base.items() if isinstance(v, float)]
    if not scalars:
        pytest.skip("no real-valued scalar argument")
    fn = PUBLIC[qual]

    @settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(st.floats(0.9, 1.1), min_size=len(scalars), max_size=len(scalars)))
    def prop(factors: list[float]) -> None:
        kw = dict(base)
        for k, f in zip(scalars, factors):
            kw[k] = base[k] * f
        assert _finite(_call(fn, kw)), f"{qual}: non-finite result at {kw}"

    prop()


# ---------------------------------------------------------------------------------------------
# the weak places named in issue 19, one by one
# ---------------------------------------------------------------------------------------------
def _issue_cases() -> list[tuple[str, Callable[[], Any], type, str]]:
    from igbook.continual import entropy, ewc_penalty
    from igbook.fisher.density import (
        fisher_from_scores,
        fisher_monte_carlo,
        kl_quadratic_form,
        pullback_metric,
    )
    from igbook.geometry import ellipse_points, fisher_ellipse
    from igbook.kfac import negative_log_likelihood
    from igbook.mixtures import condition_number, ellipse_outlines, fisher_eigen
    from igbook.natgrad.core import natural_gradient, trust_region_step_size

    neg = -_spd()
    nonsym = torch.tensor([[2.0, 1.0], [0.0, 1.0]], dtype=F64)
    nan = torch.tensor([[2.0, math.nan], [math.nan, 1.0]], dtype=F64)
    d = torch.tensor([0.3, -0.2], dtype=F64)
    c = torch.zeros(2, dtype=F64)
    cases: list[tuple[str, Callable[[], Any], type, str]] = []
    for label, bad in (("negative-definite", neg), ("non-symmetric", nonsym), ("NaN", nan)):
        cases += [
            (
                f"kl_quadratic_form {label}",
                lambda b=bad: kl_quadratic_form(b, d),
                ValueError,
                "fisher",
            ),
            (
                f"pullback_metric {label}",
                lambda b=bad: pullback_metric(b, torch.eye(2, dtype=F64)),
                ValueError,
                "metric",
            ),
            (
                f"natural_gradient {label}",
                lambda b=bad: natural_gradient(b, d, damping=10.0),
                ValueError,
                "fisher",
            ),
            (
                f"trust_region_step_size {label}",
                lambda b=bad: trust_region_step_size(b, d, 0.1),
                ValueError,
                "fisher",
            ),
            (f"fisher_eigen {label}", lambda b=bad: fisher_eigen(b), ValueError, "fisher_matrix"),
            (
                f"condition_number {label}",
                lambda b=bad: condition_number(b),
                ValueError,
                "fisher_matrix",
            ),
            (
                f"ellipse_outlines {label}",
                lambda b=bad: ellipse_outlines(c, b),
                ValueError,
                "fisher_matrix",
            ),
            (f"fisher_ellipse {label}", lambda b=bad: fisher_ellipse(c, b), ValueError, "fisher"),
            (f"ellipse_points {label}", lambda b=bad: ellipse_points(c, b), ValueError, "fisher"),
        ]
    near = torch.tensor([[1.0, 1.0], [1.0, 1.0 + 1e-16]], dtype=F64)
    cases += [
        (
            "natural_gradient singular to working precision",
            lambda: natural_gradient(near, d),
            ValueError,
            "damping",
        ),
        (
            "fisher_from_scores empty batch",
            lambda: fisher_from_scores(torch.empty(0, 2, dtype=F64)),
            ValueError,
            "scores",
        ),
        (
            "fisher_monte_carlo short sampler",
            lambda: fisher_monte_carlo(
                lambda t, x: -((x - t[0]) ** 2),
                torch.zeros(1, dtype=F64),
                lambda n, g: torch.randn(n - 1, generator=g, dtype=F64),
                10,
            ),
            ValueError,
            "sampler",
        ),
        (
            "fisher_monte_carlo float seed",
            lambda: fisher_monte_carlo(
                lambda t, x: -((x - t[0]) ** 2),
                torch.zeros(1, dtype=F64),
                lambda n, g: torch.randn(n, generator=g, dtype=F64),
                10,
                seed=1.5,
            ),
            TypeError,
            "seed",
        ),
        (
            "ewc_penalty negative fisher",
            lambda: ewc_penalty({"w": d}, {"w": c}, {"w": torch.tensor([1.0, -1.0], dtype=F64)}),
            ValueError,
            "fisher",
        ),
        ("entropy base 1", lambda: entropy(torch.tensor([0.5, 0.5]), base=1.0), ValueError, "base"),
        (
            "entropy base -2",
            lambda: entropy(torch.tensor([0.5, 0.5]), base=-2.0),
            ValueError,
            "base",
        ),
        ("entropy not normalized", lambda: entropy(torch.tensor([0.5, 0.7])), ValueError, "probs"),
        (
            "negative_log_likelihood bernoulli target 2",
            lambda: negative_log_likelihood(
                torch.zeros(3, 1), torch.tensor([[0.0], [1.0], [2.0]]), likelihood="bernoulli"
            ),
            ValueError,
            "targets",
        ),
        ("kl_quadratic_form string", lambda: kl_quadratic_form("abc", d), TypeError, "fisher"),
    ]
    return cases


ISSUE_CASES = _issue_cases()


@pytest.mark.parametrize(
    ("label", "call", "exc", "name"), ISSUE_CASES, ids=[c[0] for c in ISSUE_CASES]
)
def test_issue_19_weak_places_raise(
    label: str, call: Callable[[], Any], exc: type, name: str
) -> None:
    with pytest.raises(exc, match=name):
        call()


def test_psd_checks_accept_rounding_and_keep_valid_results() -> None:
    """In-domain twins of the cases above: singular-but-PSD Fishers with rounding noise pass."""
    from igbook.fisher.density import kl_quadratic_form
    from igbook.mixtures import fisher_eigen
    from igbook.natgrad.core import natural_gradient

    v = torch.tensor([1.0, 2.0], dtype=F64)
    singular = torch.outer(v, v)  # eigenvalues 0 and 5, the 0 computed as about -1e-16
    evals, _ = fisher_eigen(singular)
    assert float(evals[0]) == 0.0 and abs(float(evals[1]) - 5.0) < 1e-12
    d = torch.tensor([2.0, -1.0], dtype=F64)  # in the null space: the KL estimate is 0
    assert abs(float(kl_quadratic_form(singular, d))) < 1e-14
    g = torch.tensor([1.0, 0.0], dtype=F64)
    x = natural_gradient(singular, g, damping=0.5)
    assert torch.allclose((singular + 0.5 * torch.eye(2, dtype=F64)) @ x, g, atol=1e-12, rtol=0)
