r"""Parameter importance for a classifier: the diagonal Fisher, its variants, and the EWC penalty.

For a classifier :math:`p(y\mid x,\theta)=\mathrm{softmax}(f(x;\theta))_y` and inputs
:math:`x_1,\dots,x_n`, the diagonal of the Fisher information is

.. math::
    :label: eq-diag-fisher

    F_{ii} = \frac1n\sum_{k=1}^n \sum_{y} p(y\mid x_k,\theta)
    \Big(\frac{\partial\log p(y\mid x_k,\theta)}{\partial\theta_i}\Big)^2
    :cite:`kirkpatrick2017overcoming,martens2020new`.

It is computed by the curvature core, :func:`igbook.fisher.models.fisher_diagonal`, with the
core's vocabulary: a likelihood (:mod:`igbook.fisher.likelihoods`, the categorical by
default) and a :class:`~igbook.fisher.types.FisherType`. Implementations of EWC differ in the
estimate :cite:`vandeven2022three`:

``fisher_type="exact"`` (default)
    the expectation over the label computed exactly, as in :eq:`eq-diag-fisher`
    (van de Ven's ``'all'``).
``fisher_type="mc"``
    ``mc_samples`` labels :math:`\tilde y_k\sim p(\cdot\mid x_k,\theta)` per example (seeded):
    an unbiased Monte Carlo estimate of :eq:`eq-diag-fisher`.
``fisher_type="empirical"``
    the observed label :math:`y_k` instead of the expectation, the *empirical Fisher*; it is
    not the Fisher in general and differs most where the model is wrong
    :cite:`kunstner2019limitations`.
:func:`batched_gradient_diagonal`
    squared gradients of the *minibatch-mean* loss, averaged over minibatches (Avalanche).
    For a minibatch of :math:`B` examples, :math:`\E[(\bar g)^2] = (\E g)^2 + \mathrm{Var}(g)/B`:
    near a minimum, where the mean gradient vanishes, it is about :math:`1/B` times the
    empirical Fisher, so the EWC strength it needs is about :math:`B` times larger.

The old spellings ``kind="exact"|"sample"|"empirical"|"batched"`` still work and emit a
:class:`DeprecationWarning`. Task-incremental heads (``active``) restrict the likelihood to
the active classes by wrapping the model's output (:func:`restrict_logits`). Parameters are
handled as dicts ``name -> tensor`` in ``model.named_parameters()`` order.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp

from igbook._validation import as_tensor, check_count, check_finite, check_nonempty
from igbook.fisher.likelihoods import CategoricalLikelihood, Likelihood, get_likelihood
from igbook.fisher.models import fisher_diagonal, output_curvature
from igbook.fisher.types import FisherType, as_fisher_type

__all__ = [
    "FISHER_KINDS",
    "named_params",
    "restrict_logits",
    "local_targets",
    "diagonal_fisher",
    "batched_gradient_diagonal",
    "fisher_quadratic_form",
    "predictive_kl",
    "ewc_penalty",
]

#: the estimates of the diagonal Fisher that :class:`~igbook.continual.regularization.EWC` accepts:
#: three :class:`~igbook.fisher.types.FisherType` values and ``"batched"``
#: (:func:`batched_gradient_diagonal`)
FISHER_KINDS = ("exact", "mc", "empirical", "batched")
#: the old ``kind=`` spellings of :func:`diagonal_fisher` -> ``fisher_type`` (deprecated)
_KIND_ALIASES = {
    "exact": FisherType.EXACT,
    "sample": FisherType.MC,
    "empirical": FisherType.EMPIRICAL,
}
Params = dict[str, Tensor]


def named_params(model: nn.Module) -> Params:
    """Detached copies of the trainable parameters of ``model`` (a dict in registration order)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    out = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}
    if not out:
        raise ValueError("model has no trainable parameters")
    return out


def _class_index(active: Sequence[int] | Tensor, c: int) -> Tensor:
    """``active`` as a checked 1-D long tensor of class indices in ``[0, c)``."""
    if isinstance(active, Tensor):
        if active.is_floating_point() or active.is_complex() or active.dtype == torch.bool:
            raise TypeError(f"active must hold integer class indices, got a {active.dtype} tensor")
        idx = active.to(torch.long)
    else:
        try:
            items = list(active)
        except TypeError as exc:
            raise TypeError(
                f"active must be None or a sequence of class indices, got {type(active).__name__}"
            ) from exc
        if isinstance(active, str) or any(
            isinstance(a, bool) or not isinstance(a, (int, Tensor)) for a in items
        ):
            raise TypeError(f"active must hold integer class indices, got {active!r}")
        idx = torch.as_tensor([int(a) for a in items], dtype=torch.long)
    if idx.ndim != 1 or idx.numel() == 0:
        raise ValueError(
            f"active must be a non-empty 1-D sequence of class indices, got shape {tuple(idx.shape)}"
        )
    if bool(((idx < 0) | (idx >= c)).any()):
        raise ValueError(
            f"active must hold class indices in [0, {c}) (the last axis of logits), got {idx.tolist()}"
        )
    return idx


def restrict_logits(logits: Tensor, active: Sequence[int] | Tensor | None) -> Tensor:
    """The logits of the ``active`` classes only (all of them when ``active`` is ``None``).

    ``logits`` is a finite floating tensor whose last axis holds the classes; ``active`` is
    ``None`` or a non-empty 1-D sequence (or integer tensor) of class indices in
    ``[0, logits.shape[-1])``. Both are checked, so the function cannot run inside
    :func:`torch.func.vmap`; code traced by :mod:`torch.func` (and the curvature core) sees
    the restriction as part of the model instead (:func:`diagonal_fisher` wraps the model).
    """
    if not isinstance(logits, Tensor):
        raise TypeError(f"logits must be a tensor, got {type(logits).__name__}")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be a floating tensor, got {logits.dtype}")
    if logits.ndim == 0:
        raise ValueError("logits must have a class axis, got a scalar")
    check_finite(logits, "logits")
    c = logits.shape[-1]
    if c == 0:
        raise ValueError(
            f"logits must have at least one class along its last axis, got shape {tuple(logits.shape)}"
        )
    if active is None:
        return logits
    return logits.index_select(-1, _class_index(active, c).to(logits.device))


class _ActiveOutputs(nn.Module):
    """``model`` followed by the selection of the ``active`` outputs (no parameters of its own)."""

    def __init__(self, model: nn.Module, index: Tensor) -> None:
        super().__init__()
        self.model = model
        self.index = index

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x).index_select(-1, self.index)


def local_targets(y: Tensor, active: Sequence[int] | Tensor | None, num_classes: int) -> Tensor:
    """Map global labels ``y`` to positions within ``active`` (identity when ``active`` is ``None``)."""
    if active is None:
        return y
    num_classes = check_count(num_classes, "num_classes")
    idx = _class_index(active, num_classes)
    if (
        not isinstance(y, Tensor)
        or y.is_floating_point()
        or y.is_complex()
        or y.dtype == torch.bool
    ):
        raise TypeError(
            f"y must be a tensor of integer class labels, got {getattr(y, 'dtype', type(y).__name__)}"
        )
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(
            f"y must hold labels in [0, {num_classes}), got values in [{int(y.min())}, {int(y.max())}]"
        )
    lookup = torch.full((num_classes,), -1, dtype=torch.long)
    lookup[idx] = torch.arange(len(idx))
    out = lookup[y.cpu().long()].to(y.device)
    if bool((out < 0).any()):
        raise ValueError(f"y holds labels outside the active classes {idx.tolist()}")
    return out


def _inputs(x: Tensor) -> Tensor:
    x = as_tensor(x, "x")
    if x.ndim < 2:
        raise ValueError(
            f"x must be a batch of inputs (examples along axis 0), got shape {tuple(x.shape)}"
        )
    return check_finite(check_nonempty(x, "x"), "x")


def _setup(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None,
    active: Sequence[int] | Tensor | None,
    params: Mapping[str, Tensor] | None,
) -> tuple[nn.Module, dict[str, Tensor], Tensor, Tensor | None, str]:
    """The (wrapped) model, its parameters, the inputs, the local labels and the name prefix."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    x = _inputs(x)
    if params is None:
        p0 = named_params(model)
    else:
        if not isinstance(params, Mapping) or not params:
            raise ValueError(
                "params must be a non-empty dict name -> tensor (or None for the model's parameters)"
            )
        p0 = {k: v.detach() for k, v in params.items()}
    if active is None:
        return model, p0, x, y, ""
    with torch.no_grad():
        z = functional_call(model, p0, (x[:1].to(next(iter(p0.values())).dtype),))
    idx = _class_index(active, int(z.shape[-1])).to(z.device)
    y_local = None if y is None else local_targets(y, idx, int(z.shape[-1]))
    return (
        _ActiveOutputs(model, idx),
        {f"model.{k}": v for k, v in p0.items()},
        x,
        y_local,
        "model.",
    )


def _unflatten(flat: Tensor, p0: Mapping[str, Tensor], prefix: str) -> Params:
    out, i = {}, 0
    for k, v in p0.items():
        out[k[len(prefix) :]] = flat[i : i + v.numel()].reshape(v.shape)
        i += v.numel()
    return out


def diagonal_fisher(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    fisher_type: FisherType | str = FisherType.EXACT,
    likelihood: Likelihood | str | None = None,
    active: Sequence[int] | Tensor | None = None,
    params: Mapping[str, Tensor] | None = None,
    mc_samples: int = 1,
    seed: int | None = 0,
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
    strategy: str = "auto",
    kind: str | None = None,
    batch_size: int | None = None,
) -> Params:
    r"""Diagonal Fisher of a classifier, a mean over the examples in ``x``, as a dict of tensors.

    :math:`\operatorname{diag}F = \frac1n\sum_k \operatorname{diag}\big(J_k^\top M_k J_k\big)`
    with :math:`J_k` the Jacobian of the (restricted) logits and :math:`M_k` the output matrix
    of ``fisher_type`` (:eq:`eq-diag-fisher` for ``"exact"``)
    :cite:`kirkpatrick2017overcoming,martens2020new`, computed by
    :func:`igbook.fisher.models.fisher_diagonal`: for a multilayer perceptron by the closed
    form of per-example gradients of linear layers (:mod:`igbook.fisher.diagonal`,
    :cite:`dangel2020backpack`), otherwise by :func:`torch.func.vmap`.

    Parameters
    ----------
    model
        Maps a batch ``(n, ...)`` to logits ``(n, C)``; called functionally with ``params``.
    x
        Inputs, shape ``(n, ...)``.
    y
        Labels (global class indices), needed by ``fisher_type="empirical"``.
    fisher_type
        ``"exact"`` (default), ``"mc"`` or ``"empirical"`` (module docstring); ``"ggn"`` and
        ``"hessian"`` are accepted too (the GGN equals the Fisher for the categorical).
    likelihood
        A :class:`~igbook.fisher.likelihoods.Likelihood` (or its name) of the outputs; the
        categorical (softmax) by default.
    active
        Restrict the likelihood to these output classes (task-incremental heads): the model's
        output is wrapped by :func:`torch.Tensor.index_select`, and the labels mapped to
        positions within ``active`` (:func:`local_targets`).
    params
        Parameters at which to evaluate (default: the model's current trainable ones).
    mc_samples, seed, generator
        Labels per example and the randomness of ``"mc"`` (``generator``, if given, wins).
    chunk_size
        Examples per vectorized chunk (bounds memory; ``None``: the core's choice).
    strategy
        ``"auto"``, ``"vmap"`` or ``"linear"`` (:func:`igbook.fisher.models.curvature_matrix`).
    kind
        Deprecated: ``"exact"``, ``"sample"`` (now ``fisher_type="mc"``), ``"empirical"``,
        or ``"batched"`` (now :func:`batched_gradient_diagonal`, with ``batch_size``, 16 by
        default); emits a :class:`DeprecationWarning`.
    batch_size
        Only with the deprecated ``kind="batched"``.

    Returns
    -------
    dict
        ``name -> tensor`` shaped like each parameter, entries :math:`\geq 0` for the Fisher types.
    """
    if kind is not None:
        if fisher_type not in (FisherType.EXACT, "exact"):
            raise ValueError("pass either fisher_type or the deprecated kind, not both")
        if kind == "batched":
            warnings.warn(
                "diagonal_fisher(kind='batched') is deprecated; "
                "use batched_gradient_diagonal(model, x, y, batch_size=...)",
                DeprecationWarning,
                stacklevel=2,
            )
            return batched_gradient_diagonal(
                model,
                x,
                y,
                batch_size=16 if batch_size is None else batch_size,
                likelihood=likelihood,
                active=active,
                params=params,
            )
        if kind not in _KIND_ALIASES:
            choices = (*_KIND_ALIASES, "batched")
            raise ValueError(
                f"kind must be one of {choices} (deprecated: use fisher_type), got {kind!r}"
            )
        fisher_type = _KIND_ALIASES[kind]
        warnings.warn(
            f"diagonal_fisher(kind={kind!r}) is deprecated; use fisher_type={fisher_type.value!r}",
            DeprecationWarning,
            stacklevel=2,
        )
    elif batch_size is not None:
        raise ValueError(
            "batch_size belongs to batched_gradient_diagonal (or the deprecated kind='batched')"
        )
    ftype = as_fisher_type(fisher_type)
    if ftype in (FisherType.EMPIRICAL, FisherType.GGN, FisherType.HESSIAN) and y is None:
        raise ValueError(f"fisher_type={ftype.value!r} needs the labels y")
    lik = CategoricalLikelihood() if likelihood is None else get_likelihood(likelihood)
    net, p0, x, y_local, prefix = _setup(model, x, y, active, params)
    flat = fisher_diagonal(
        net,
        p0,
        x,
        y_local,
        lik,
        ftype,
        mc_samples=mc_samples,
        seed=seed,
        generator=generator,
        chunk_size=chunk_size,
        strategy=strategy,
    )
    return _unflatten(flat, p0, prefix)


def batched_gradient_diagonal(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    batch_size: int = 16,
    likelihood: Likelihood | str | None = None,
    active: Sequence[int] | Tensor | None = None,
    params: Mapping[str, Tensor] | None = None,
) -> Params:
    r"""Squared minibatch-mean gradients, averaged over consecutive minibatches (Avalanche's EWC).

    With :math:`B_1, B_2, \dots, B_m` the consecutive minibatches of ``batch_size`` examples
    of ``x`` (the last may be shorter) and :math:`\bar g_j = \nabla_\theta\frac{1}{|B_j|}
    \sum_{k\in B_j}\ell_k` the gradient of the minibatch-mean negative log-likelihood,

    .. math::

        \hat F_{ii} = \frac1m\sum_{j=1}^m \bar g_{j,i}^{\,2}.

    It is not a Fisher: :math:`\E[\bar g^2] = (\E g)^2 + \mathrm{Var}(g)/B`, about :math:`1/B`
    times the empirical Fisher near a minimum :cite:`vandeven2022three` (compare
    :func:`igbook.fisher.models.minibatch_gradient_second_moment`, its expectation over random
    minibatches). ``likelihood`` (categorical by default), ``active`` and ``params`` are as in
    :func:`diagonal_fisher`.
    """
    batch_size = check_count(batch_size, "batch_size")
    if y is None:
        raise ValueError("batched_gradient_diagonal needs the labels y")
    lik = CategoricalLikelihood() if likelihood is None else get_likelihood(likelihood)
    net, p0, x, y_local, prefix = _setup(model, x, y, active, params)
    x = x.to(next(iter(p0.values())).dtype) if x.is_floating_point() else x
    with torch.no_grad():
        yf = lik.check_targets(y_local, functional_call(net, p0, (x,)))  # type: ignore[arg-type]

    def batch_loss(p: Params, xb: Tensor, yb: Tensor) -> Tensor:
        return lik.nll(lik.flatten_output(functional_call(net, p, (xb,))), yb).mean()

    out = {k: torch.zeros_like(v) for k, v in p0.items()}
    n, m = int(x.shape[0]), 0
    for start in range(0, n, batch_size):
        g = grad(batch_loss)(p0, x[start : start + batch_size], yf[start : start + batch_size])
        for k in out:
            out[k] += g[k] ** 2
        m += 1
    return {k[len(prefix) :]: v / m for k, v in out.items()}


def fisher_quadratic_form(
    model: nn.Module,
    x: Tensor,
    delta: Params,
    *,
    active: Sequence[int] | Tensor | None = None,
    params: Params | None = None,
    likelihood: Likelihood | str | None = None,
) -> Tensor:
    r"""The full-Fisher quadratic form :math:`\delta^\top F\delta` without forming :math:`F`.

    With :math:`u_k = J_k\delta` the directional derivative of the outputs (one forward-mode
    Jacobian-vector product) and :math:`\Lambda(f_k)` the output Fisher of the likelihood
    (from :func:`igbook.fisher.models.output_curvature`; for the categorical
    :math:`\Lambda(p) = \mathrm{diag}(p)-pp^\top` in logit coordinates),

    .. math::

        \delta^\top F\delta = \frac1n\sum_k u_k^\top\Lambda(f_k)\,u_k
        = \frac1n\sum_k\Big(\sum_c p_{kc}u_{kc}^2 - \big(\sum_c p_{kc}u_{kc}\big)^2\Big).

    The EWC penalty keeps only the diagonal of :math:`F`; comparing the two shows what the
    diagonal approximation drops :cite:`martens2020new`.
    """
    lik = CategoricalLikelihood() if likelihood is None else get_likelihood(likelihood)
    net, p0, x, _, prefix = _setup(model, x, None, active, params)
    if not isinstance(delta, Mapping):
        raise TypeError(
            f"delta must be a dict of tensors (name -> tensor), got {type(delta).__name__}"
        )
    if {prefix + k for k in delta} != set(p0):
        raise ValueError(
            f"delta must have the parameter names {[k[len(prefix) :] for k in p0]}, got {list(delta)}"
        )
    tangent = {k: delta[k[len(prefix) :]].to(p0[k].dtype) for k in p0}
    x = x.to(next(iter(p0.values())).dtype) if x.is_floating_point() else x
    _, m = output_curvature(net, p0, x, None, lik, FisherType.EXACT)  # (n, C, C)
    _, u = jvp(lambda p: lik.flatten_output(functional_call(net, p, (x,))), (p0,), (tangent,))
    return torch.einsum("nc,ncd,nd->n", u, m, u).mean()


def predictive_kl(
    model: nn.Module,
    x: Tensor,
    params_a: Params,
    params_b: Params,
    *,
    active: Sequence[int] | Tensor | None = None,
) -> Tensor:
    r"""Mean over inputs of :math:`\KL{p(\cdot\mid x,\theta_a)}{p(\cdot\mid x,\theta_b)}`.

    For :math:`\theta_b=\theta_a+\delta` it equals :math:`\tfrac12\delta^\top F(\theta_a)\delta +
    O(\|\delta\|^3)`; EWC replaces :math:`F` by its diagonal.
    """
    x = _inputs(x)
    la = torch.log_softmax(restrict_logits(functional_call(model, params_a, (x,)), active), -1)
    lb = torch.log_softmax(restrict_logits(functional_call(model, params_b, (x,)), active), -1)
    return (la.exp() * (la - lb)).sum(-1).mean()


def ewc_penalty(params: Params, anchor: Params, fisher: Params, lam: float = 1.0) -> Tensor:
    r"""The EWC penalty :math:`\frac{\lambda}{2}\sum_i F_{ii}(\theta_i-\theta^*_i)^2` :cite:`kirkpatrick2017overcoming`.

    Differentiable in ``params``. (Avalanche adds :math:`\lambda\sum_i F_{ii}(\theta_i-\theta^*_i)^2`
    without the :math:`\tfrac12`, i.e. twice this for the same :math:`\lambda`.)
    """
    for nm, d in (("params", params), ("anchor", anchor), ("fisher", fisher)):
        if not isinstance(d, Mapping):
            raise TypeError(
                f"{nm} must be a dict of tensors (name -> tensor), got {type(d).__name__}"
            )
    if set(params) != set(anchor) or set(params) != set(fisher):
        raise ValueError("params, anchor and fisher must have the same parameter names")
    if isinstance(lam, bool) or not isinstance(lam, (int, float)):
        raise TypeError(f"lam must be a real number, got {type(lam).__name__}")
    if not (lam >= 0 and math.isfinite(lam)):
        raise ValueError(f"lam must be a finite number >= 0, got {lam!r}")
    for k in params:
        for nm, d in (("params", params), ("anchor", anchor), ("fisher", fisher)):
            if not isinstance(d[k], Tensor):
                raise TypeError(f"{nm}[{k!r}] must be a tensor, got {type(d[k]).__name__}")
        if not (params[k].shape == anchor[k].shape == fisher[k].shape):
            raise ValueError(f"params, anchor and fisher [{k!r}] must share one shape")
        f = fisher[k].detach()
        if not bool(torch.isfinite(f).all()) or not bool((f >= 0).all()):
            raise ValueError(f"fisher[{k!r}] must be finite and >= 0 (a diagonal Fisher)")
        if not bool(torch.isfinite(anchor[k].detach()).all()):
            raise ValueError(f"anchor[{k!r}] must be finite")
    total = sum((fisher[k] * (params[k] - anchor[k]) ** 2).sum() for k in params)
    return 0.5 * lam * total  # type: ignore[return-value]
