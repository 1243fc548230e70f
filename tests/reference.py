r"""Shared curvature test cases with independent references (float64, seeded).

Every curvature object of igbook (``fisher``, ``kfac``, ``natgrad``, ``continual``, the BLR
optimizers) is tested on the same small problems: a network :math:`f(x;\theta)` and a
likelihood :math:`p(y\mid f)`, with the mean loss :math:`L = \frac1N\sum_n\ell_n`,
:math:`\ell_n = -\log p(y_n\mid f(x_n;\theta))`.

    models       ``mlp`` (Linear-Tanh-Linear-Tanh-Linear) and ``cnn`` (Conv2d-Tanh-Flatten-Linear,
                 no batch norm);
    likelihoods  ``gaussian`` (variance 1 and 0.3), ``categorical`` (logits), ``bernoulli`` (logit).

The references use :mod:`torch.func` and the formulas written out below only; they never call
igbook (the likelihood classes of :mod:`igbook.fisher.likelihoods` are only *constructed* by
:meth:`Case.likelihood`, to be passed to the code under test). With :math:`J_n = \partial
f(x_n)/\partial\theta` (``jacrev`` of the batch output, one row block per data point):

========================  =====================================================================
kind                      reference
========================  =====================================================================
``"exact"``               :math:`\frac1N\sum_n J_n^\top\Lambda(f_n)J_n` with the output Fisher in
                          closed form: :math:`I/\sigma^2` (Gaussian),
                          :math:`\operatorname{diag}p - pp^\top` (categorical, :math:`p=\operatorname{softmax}f`),
                          :math:`\sigma(f)(1-\sigma(f))` (Bernoulli, logit)
``"ggn"``                 :math:`\frac1N\sum_n J_n^\top\nabla^2_f\ell_n J_n`, the output Hessian by
                          :func:`torch.func.hessian` of the written-out loss
``"empirical"``           :math:`\frac1N\sum_n g_ng_n^\top`, :math:`g_n` by ``jacrev`` of the vector of
                          per-example losses
``"hessian"``             :func:`torch.func.hessian` of :math:`L` in the flat parameter vector
========================  =====================================================================

Flat vectors and matrix rows follow :func:`igbook.fisher.flatten_params`: the tensors in
``named_parameters()`` order, each flattened row-major.

Usage::

    import reference
    for case in reference.cases():
        F = reference.dense_curvature(case, "exact")      # (P, P)
        mine = curvature_matrix(case.model, case.params, case.x, case.y, case.likelihood(), "exact")
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as tnf
from torch import Tensor, nn
from torch.func import functional_call, hessian, jacrev, vmap

__all__ = [
    "Case",
    "KINDS",
    "MODELS",
    "LIKELIHOODS",
    "cases",
    "case",
    "flatten",
    "param_slices",
    "layer_groups",
    "jacobians",
    "outputs",
    "per_example_losses",
    "per_example_gradients",
    "gradient",
    "loss",
    "output_fisher",
    "output_hessian",
    "dense_curvature",
    "structured",
    "mc_standard_error",
    "mc_expectation",
    "rel_err",
]

DTYPE = torch.float64
#: the reference kinds (``FisherType`` values; ``"mc"`` has no deterministic reference)
KINDS = ("exact", "ggn", "empirical", "hessian")
MODELS = ("mlp", "cnn")
#: (likelihood name, Gaussian variance or None, number of outputs C)
LIKELIHOODS: tuple[tuple[str, float | None, int], ...] = (
    ("gaussian", 1.0, 2),
    ("gaussian", 0.3, 2),
    ("categorical", None, 3),
    ("bernoulli", None, 1),
)
N_POINTS = 7


@dataclass(eq=False)
class Case:
    """One problem: a model, inputs, targets and a likelihood, with cached references.

    Attributes
    ----------
    name : str
        ``"<model>-<likelihood>"``, e.g. ``"cnn-gaussian0.3"``; use it as a pytest id.
    model_name : str
        ``"mlp"`` or ``"cnn"``.
    likelihood_name : str
        ``"gaussian"``, ``"categorical"`` or ``"bernoulli"``.
    variance : float or None
        The Gaussian noise variance :math:`\\sigma^2` (``None`` otherwise).
    model, x, y
        The float64 model, inputs (data points first) and targets (Gaussian: float ``(N, C)``;
        categorical: int64 ``(N,)``; Bernoulli: float ``(N, 1)`` in {0, 1}).
    """

    name: str
    model_name: str
    likelihood_name: str
    variance: float | None
    model: nn.Module
    x: Tensor
    y: Tensor
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def params(self) -> dict[str, Tensor]:
        """Detached copies of the parameters, in ``named_parameters()`` order."""
        return {n: p.detach().clone() for n, p in self.model.named_parameters()}

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def num_outputs(self) -> int:
        return outputs(self).shape[1]

    def likelihood(self) -> Any:
        """The igbook likelihood object for this case (to pass to the code under test)."""
        from igbook.fisher.likelihoods import (
            BernoulliLikelihood,
            CategoricalLikelihood,
            GaussianLikelihood,
        )

        if self.likelihood_name == "gaussian":
            assert self.variance is not None
            return GaussianLikelihood(variance=self.variance)
        if self.likelihood_name == "categorical":
            return CategoricalLikelihood()
        return BernoulliLikelihood(link="logit")


# --------------------------------------------------------------------------- construction
def _mlp(d_in: int, c: int) -> nn.Module:
    return nn.Sequential(nn.Linear(d_in, 5), nn.Tanh(), nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, c))


def _cnn(c: int) -> nn.Module:
    # 1x5x5 images -> 2 channels of 3x3 -> 18 features
    return nn.Sequential(nn.Conv2d(1, 2, kernel_size=3), nn.Tanh(), nn.Flatten(), nn.Linear(18, c))


def case(
    model_name: str, likelihood_name: str, variance: float | None = None, *, seed: int = 0
) -> Case:
    """One seeded case; every random number comes from a generator seeded by ``seed``."""
    spec = {(lik, var): c for lik, var, c in LIKELIHOODS}
    if (likelihood_name, variance) not in spec:
        raise ValueError(f"no case for likelihood {likelihood_name!r} with variance {variance!r}")
    c = spec[(likelihood_name, variance)]
    gen = torch.Generator().manual_seed(seed)
    if model_name == "mlp":
        model = _mlp(3, c)
        x = torch.randn(N_POINTS, 3, generator=gen, dtype=DTYPE)
    elif model_name == "cnn":
        model = _cnn(c)
        x = torch.randn(N_POINTS, 1, 5, 5, generator=gen, dtype=DTYPE)
    else:
        raise ValueError(f"model_name must be one of {MODELS}, got {model_name!r}")
    model = model.to(DTYPE)
    with torch.no_grad():  # deterministic initialization, independent of the global RNG
        for p in model.parameters():
            fan_in = p[0].numel() if p.ndim > 1 else p.numel()
            p.copy_(torch.randn(p.shape, generator=gen, dtype=DTYPE) * (1.5 / math.sqrt(fan_in)))
    if likelihood_name == "gaussian":
        y = torch.randn(N_POINTS, c, generator=gen, dtype=DTYPE)
    elif likelihood_name == "categorical":
        y = torch.randint(0, c, (N_POINTS,), generator=gen)
    else:
        y = torch.randint(0, 2, (N_POINTS, 1), generator=gen).to(DTYPE)
    lik = likelihood_name if variance is None else f"{likelihood_name}{variance:g}"
    return Case(f"{model_name}-{lik}", model_name, likelihood_name, variance, model, x, y)


def cases(
    models: Iterable[str] = MODELS, likelihoods: Iterable[str] | None = None, *, seed: int = 0
) -> list[Case]:
    """All cases (fresh objects), optionally restricted to some models or likelihood names."""
    models = (models,) if isinstance(models, str) else tuple(models)
    likelihoods = (likelihoods,) if isinstance(likelihoods, str) else likelihoods
    names = None if likelihoods is None else set(likelihoods)
    return [
        case(m, lik, var, seed=seed)
        for m in models
        for lik, var, _ in LIKELIHOODS
        if names is None or lik in names
    ]


# --------------------------------------------------------------------------- parameters
def flatten(params: dict[str, Tensor]) -> Tensor:
    """The tensors of ``params`` flattened row-major and concatenated in dict order."""
    return torch.cat([t.reshape(-1) for t in params.values()])


def param_slices(c: Case) -> dict[str, slice]:
    out, i = {}, 0
    for name, p in c.model.named_parameters():
        out[name] = slice(i, i + p.numel())
        i += p.numel()
    return out


def layer_groups(c: Case) -> dict[str, list[str]]:
    """Module name -> its own parameters (weight and bias together), from ``named_modules``."""
    groups = {}
    for mname, module in c.model.named_modules():
        own = [
            f"{mname}.{pname}" if mname else pname
            for pname, _ in module.named_parameters(recurse=False)
        ]
        if own:
            groups[mname] = own
    return groups


def _unflatten(c: Case, theta: Tensor) -> dict[str, Tensor]:
    return {
        n: theta[s].reshape(p.shape)
        for (n, p), s in zip(c.model.named_parameters(), param_slices(c).values())
    }


def _f(c: Case, theta: Tensor) -> Tensor:
    """Outputs ``(N, C)`` as a function of the flat parameters."""
    out = functional_call(c.model, _unflatten(c, theta), (c.x,))
    return out.reshape(out.shape[0], -1)


def _theta(c: Case) -> Tensor:
    return flatten(c.params)


# --------------------------------------------------------------------------- the likelihoods, written out
def _nll(c: Case, f: Tensor, y: Tensor) -> Tensor:
    r"""Per-example :math:`\ell(f_n, y_n)`, shape ``(N,)``, from the formulas."""
    if c.likelihood_name == "gaussian":
        var = c.variance
        assert var is not None
        return ((y - f) ** 2).sum(-1) / (2 * var) + 0.5 * f.shape[-1] * math.log(2 * math.pi * var)
    if c.likelihood_name == "categorical":
        return torch.logsumexp(f, dim=-1) - f.gather(-1, y.unsqueeze(-1)).squeeze(-1)
    return (tnf.softplus(f) - y * f).sum(-1)


def _output_fisher_closed_form(c: Case, f: Tensor) -> Tensor:
    r""":math:`\Lambda(f_n)`, ``(N, C, C)``."""
    n, k = f.shape
    if c.likelihood_name == "gaussian":
        assert c.variance is not None
        return torch.eye(k, dtype=f.dtype).expand(n, k, k) / c.variance
    if c.likelihood_name == "categorical":
        p = torch.softmax(f, dim=-1)
        return torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)
    s = torch.sigmoid(f)
    return (s * (1 - s)).unsqueeze(-1)


def _cached(c: Case, key: str, compute: Any) -> Any:
    """Cache per case, invalidated when the model's parameters change."""
    theta = _theta(c)
    hit = c._cache.get(key)
    if hit is not None and torch.equal(hit[0], theta):
        return hit[1]
    value = compute()
    c._cache[key] = (theta, value)
    return value


def outputs(c: Case) -> Tensor:
    """Model outputs :math:`f_n`, ``(N, C)``."""
    return _cached(c, "f", lambda: _f(c, _theta(c)).detach())


def jacobians(c: Case) -> Tensor:
    r"""Per-example Jacobians :math:`J_n`, ``(N, C, P)`` (``jacrev`` of the batch output)."""
    return _cached(c, "J", lambda: jacrev(lambda t: _f(c, t))(_theta(c)))


def per_example_losses(c: Case) -> Tensor:
    return _nll(c, outputs(c), c.y)


def loss(c: Case) -> float:
    """The mean loss :math:`L`."""
    return float(per_example_losses(c).mean())


def per_example_gradients(c: Case) -> Tensor:
    r""":math:`g_n = \nabla_\theta\ell_n`, ``(N, P)`` (``jacrev`` of the vector of losses)."""
    return _cached(c, "g", lambda: jacrev(lambda t: _nll(c, _f(c, t), c.y))(_theta(c)))


def gradient(c: Case) -> Tensor:
    r""":math:`\nabla_\theta L`, ``(P,)``."""
    return per_example_gradients(c).mean(0)


def output_fisher(c: Case) -> Tensor:
    r"""Output Fisher :math:`\Lambda(f_n)` in closed form, ``(N, C, C)``."""
    return _output_fisher_closed_form(c, outputs(c))


def output_hessian(c: Case) -> Tensor:
    r""":math:`\nabla^2_f\ell(f_n, y_n)` by :func:`torch.func.hessian` of the written-out loss."""

    def single(fn: Tensor, yn: Tensor) -> Tensor:
        return _nll(c, fn.unsqueeze(0), yn.unsqueeze(0)).squeeze(0)

    return vmap(hessian(single))(outputs(c), c.y)


def _pullback(c: Case, m: Tensor) -> Tensor:
    j = jacobians(c)
    g = torch.einsum("ncp,ncd,ndq->pq", j, m, j) / j.shape[0]
    return 0.5 * (g + g.T)


def dense_curvature(c: Case, kind: Any) -> Tensor:
    """The dense ``(P, P)`` reference of ``kind`` (a ``FisherType`` or its value; see the table)."""
    kind = str(getattr(kind, "value", kind))
    if kind == "exact":
        return _cached(c, kind, lambda: _pullback(c, output_fisher(c)))
    if kind == "ggn":
        return _cached(c, kind, lambda: _pullback(c, output_hessian(c)))
    if kind == "empirical":

        def emp() -> Tensor:
            g = per_example_gradients(c)
            return g.T @ g / g.shape[0]

        return _cached(c, kind, emp)
    if kind == "hessian":

        def hess() -> Tensor:
            h = hessian(lambda t: _nll(c, _f(c, t), c.y).mean())(_theta(c))
            return 0.5 * (h + h.T)

        return _cached(c, kind, hess)
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def structured(c: Case, dense: Tensor, structure: str) -> Tensor | dict[str, Tensor]:
    """A dense matrix as igbook's ``structure``: dense, diagonal, per-tensor or per-module blocks."""
    if structure == "dense":
        return dense
    if structure == "diagonal":
        return torch.diagonal(dense).clone()
    slices = param_slices(c)
    if structure == "blocks":
        return {n: dense[s, s] for n, s in slices.items()}
    if structure == "layers":
        out = {}
        for g, members in layer_groups(c).items():
            idx = torch.cat([torch.arange(dense.shape[0])[slices[n]] for n in members])
            out[g] = dense[idx][:, idx]
        return out
    raise ValueError(f"unknown structure {structure!r}")


# --------------------------------------------------------------------------- Monte Carlo
def _mc_moments(c: Case, u: Tensor | None) -> tuple[Tensor, Tensor]:
    r"""Per data point, mean and variance of one sampled term of the MC Fisher.

    With :math:`w = J_n^\top\nabla_f\ell(f_n,\tilde y)`, :math:`\tilde y\sim p(\cdot\mid f_n)`:
    entrywise :math:`w w^\top` (``u is None``, shapes ``(N, P, P)``) or :math:`(u^\top w)^2`
    (shapes ``(N,)``). Gaussian: :math:`w\sim\mathcal N(0,\Sigma_n)`,
    :math:`\Sigma_n = J_n^\top J_n/\sigma^2`, and Isserlis gives
    :math:`\operatorname{Var}(w_aw_b) = \Sigma_{aa}\Sigma_{bb}+\Sigma_{ab}^2`; categorical and
    Bernoulli: exact enumeration over the labels.
    """
    j, f = jacobians(c), outputs(c)
    if c.likelihood_name == "gaussian":
        assert c.variance is not None
        sig = torch.einsum("ncp,ncq->npq", j, j) / c.variance
        if u is None:
            d = torch.diagonal(sig, dim1=1, dim2=2)
            return sig, d.unsqueeze(-1) * d.unsqueeze(-2) + sig**2
        s2 = torch.einsum("p,npq,q->n", u, sig, u)
        return s2, 2 * s2**2
    if c.likelihood_name == "categorical":
        p = torch.softmax(f, dim=-1)  # (N, C)
        r = p.unsqueeze(1) - torch.eye(f.shape[1], dtype=f.dtype)  # r[n, y] = p_n - e_y
        probs = p
    else:
        s = torch.sigmoid(f)  # (N, 1)
        r = torch.stack([s - 0.0, s - 1.0], dim=1)  # labels 0 and 1: (N, 2, 1)
        probs = torch.cat([1 - s, s], dim=1)
    w = torch.einsum("ncp,nyc->nyp", j, r)  # (N, labels, P)
    if u is None:
        ww = w.unsqueeze(-1) * w.unsqueeze(-2)
        mean = torch.einsum("ny,nypq->npq", probs, ww)
        second = torch.einsum("ny,nypq->npq", probs, ww**2)
    else:
        z2 = (w @ u) ** 2
        mean = (probs * z2).sum(1)
        second = (probs * z2**2).sum(1)
    return mean, second - mean**2


def mc_standard_error(c: Case, mc_samples: int, u: Tensor | None = None) -> Tensor:
    r"""Standard error of the Monte Carlo Fisher with ``mc_samples`` labels per data point.

    Entrywise ``(P, P)`` if ``u`` is None, else of the quadratic form :math:`u^\top\hat F u`.
    The estimate :math:`\hat F = \frac1{Nk}\sum_{n,s} w_{ns}w_{ns}^\top` averages independent
    terms, so :math:`\operatorname{Var}\hat F = \frac1{N^2k}\sum_n \operatorname{Var}_n`.
    """
    _, var = _mc_moments(c, u)
    n = var.shape[0]
    return (var.clamp_min(0).sum(0) / (n**2 * mc_samples)).sqrt()


def mc_expectation(c: Case, u: Tensor | None = None) -> Tensor:
    """The expectation of the MC Fisher by enumeration/Isserlis (equals the exact Fisher)."""
    mean, _ = _mc_moments(c, u)
    return mean.mean(0)


def rel_err(a: Tensor, b: Tensor) -> float:
    """Relative error :math:`\\|a-b\\|/\\|b\\|` in the Frobenius norm."""
    return float(torch.linalg.norm(a - b) / torch.linalg.norm(b).clamp_min(1e-300))
