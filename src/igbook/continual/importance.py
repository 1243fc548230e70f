r"""Parameter importance for a classifier: the diagonal Fisher, its variants, and the EWC penalty.

For a classifier :math:`p(y\mid x,\theta)=\mathrm{softmax}(f(x;\theta))_y` and inputs
:math:`x_1,\dots,x_n`, the diagonal of the Fisher information is

.. math::
    :label: eq-diag-fisher

    F_{ii} = \frac1n\sum_{k=1}^n \sum_{y} p(y\mid x_k,\theta)
    \Big(\frac{\partial\log p(y\mid x_k,\theta)}{\partial\theta_i}\Big)^2
    :cite:`kirkpatrick2017overcoming,martens2020new`.

Implementations of EWC differ in how they estimate it :cite:`vandeven2022three`:

``"exact"`` (default)
    the expectation over the label computed exactly, as in :eq:`eq-diag-fisher`
    (van de Ven's ``'all'``). Costs one Jacobian of the :math:`C` log-probabilities per example.
``"sample"``
    one label :math:`\tilde y_k\sim p(\cdot\mid x_k,\theta)` per example: an unbiased
    Monte Carlo estimate of :eq:`eq-diag-fisher`.
``"empirical"``
    the observed label :math:`y_k` instead of the expectation, the *empirical Fisher*; it is
    not the Fisher in general and differs most where the model is wrong
    :cite:`kunstner2019limitations`.
``"batched"``
    squared gradients of the *minibatch-mean* loss, averaged over minibatches (Avalanche).
    For a minibatch of :math:`B` examples, :math:`\E[(\bar g)^2] = (\E g)^2 + \mathrm{Var}(g)/B`:
    near a minimum, where the mean gradient vanishes, it is about :math:`1/B` times the
    empirical Fisher, so the EWC strength it needs is about :math:`B` times larger.

All per-example derivatives are vectorized with :func:`torch.func.vmap` over examples.
Parameters are handled as dicts ``name -> tensor`` in ``model.named_parameters()`` order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, jacrev, jvp, vmap

from igbook._validation import check_finite

__all__ = [
    "FISHER_KINDS",
    "named_params",
    "restrict_logits",
    "local_targets",
    "diagonal_fisher",
    "fisher_quadratic_form",
    "predictive_kl",
    "ewc_penalty",
]

FISHER_KINDS = ("exact", "sample", "empirical", "batched")
Params = dict[str, Tensor]


def named_params(model: nn.Module) -> Params:
    """Detached copies of the trainable parameters of ``model`` (a dict in registration order)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    out = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}
    if not out:
        raise ValueError("model has no trainable parameters")
    return out


def restrict_logits(logits: Tensor, active: Sequence[int] | Tensor | None) -> Tensor:
    """The logits of the ``active`` classes only (all of them when ``active`` is ``None``).

    ``logits`` is a finite floating tensor whose last axis holds the classes; ``active`` is
    ``None`` or a non-empty 1-D sequence (or integer tensor) of class indices in
    ``[0, logits.shape[-1])``. Both are checked; the losses and predictives of
    :mod:`igbook.continual`, traced by :mod:`torch.func`, call an unchecked twin.
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
        raise ValueError(f"logits must have at least one class along its last axis, got shape {tuple(logits.shape)}")
    if active is None:
        return logits
    if isinstance(active, Tensor):
        if active.is_floating_point() or active.is_complex() or active.dtype == torch.bool:
            raise TypeError(f"active must hold integer class indices, got a {active.dtype} tensor")
        idx = active.to(torch.long)
    else:
        try:
            items = list(active)
        except TypeError as exc:
            raise TypeError(f"active must be None or a sequence of class indices, got {type(active).__name__}") from exc
        if isinstance(active, str) or any(isinstance(a, bool) or not isinstance(a, (int, Tensor)) for a in items):
            raise TypeError(f"active must hold integer class indices, got {active!r}")
        idx = torch.as_tensor([int(a) for a in items], dtype=torch.long)
    if idx.ndim != 1 or idx.numel() == 0:
        raise ValueError(f"active must be a non-empty 1-D sequence of class indices, got shape {tuple(idx.shape)}")
    if bool(((idx < 0) | (idx >= c)).any()):
        raise ValueError(f"active must hold class indices in [0, {c}) (the last axis of logits), got {idx.tolist()}")
    return _restrict_logits(logits, idx)


def _restrict_logits(logits: Tensor, active: Sequence[int] | Tensor | None) -> Tensor:
    if active is None:
        return logits
    idx = torch.as_tensor(active, dtype=torch.long, device=logits.device)
    return logits.index_select(-1, idx)


def local_targets(y: Tensor, active: Sequence[int] | Tensor | None, num_classes: int) -> Tensor:
    """Map global labels ``y`` to positions within ``active`` (identity when ``active`` is ``None``)."""
    if active is None:
        return y
    idx = torch.as_tensor(active, dtype=torch.long)
    lookup = torch.full((num_classes,), -1, dtype=torch.long)
    lookup[idx] = torch.arange(len(idx))
    out = lookup[y.cpu()].to(y.device)
    if bool((out < 0).any()):
        raise ValueError(f"y holds labels outside the active classes {idx.tolist()}")
    return out


def _check_x(x: Tensor, name: str = "x") -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(x).__name__}")
    if x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty batch (examples along axis 0), got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} must be finite")
    return x


def _check_chunk(chunk_size: int) -> int:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
    return chunk_size


def diagonal_fisher(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    kind: str = "exact",
    active: Sequence[int] | None = None,
    params: Params | None = None,
    batch_size: int = 16,
    chunk_size: int = 256,
    generator: torch.Generator | None = None,
    fast: bool = True,
) -> Params:
    r"""Diagonal Fisher of a softmax classifier, a mean over the examples in ``x``.

    Parameters
    ----------
    model
        Maps a batch ``(n, ...)`` to logits ``(n, C)``; called functionally with ``params``.
    x
        Inputs, shape ``(n, ...)``.
    y
        Labels, needed by ``kind="empirical"`` and ``"batched"``.
    kind
        ``"exact"``, ``"sample"``, ``"empirical"`` or ``"batched"`` (module docstring).
    active
        Restrict the softmax to these classes (task-incremental heads).
    params
        Parameters at which to evaluate (default: the model's current ones).
    batch_size
        Minibatch size of ``kind="batched"`` (minibatches in the order of ``x``).
    chunk_size
        Examples per vectorized chunk (bounds memory: ``chunk_size * C * P`` numbers).
    generator
        Randomness of ``kind="sample"``.
    fast
        If every trainable parameter belongs to an :class:`torch.nn.Linear` used once per
        forward pass (an MLP), use the closed form of per-example gradients of a linear layer,
        :math:`\partial\ell/\partial W = \delta a^\top` with :math:`\delta` the back-propagated
        signal at the layer's output and :math:`a` its input, so that
        :math:`\sum_k (\partial\ell_k/\partial W)^2 = (\delta^2)^\top a^2` costs one batched
        backward pass per class :cite:`dangel2020backpack`. Otherwise (or with ``fast=False``)
        per-example gradients come from :func:`torch.func.vmap`. Both give the same numbers.

    Returns
    -------
    dict
        ``name -> tensor`` shaped like each parameter, entries :math:`\geq 0`.
    """
    if kind not in FISHER_KINDS:
        raise ValueError(f"kind must be one of {FISHER_KINDS}, got {kind!r}")
    x = _check_x(x)
    _check_chunk(chunk_size)
    p0 = named_params(model) if params is None else {k: v.detach() for k, v in params.items()}
    n = int(x.shape[0])
    if kind in ("empirical", "batched"):
        if y is None:
            raise ValueError(f"kind={kind!r} needs the labels y")
        if y.shape[0] != n:
            raise ValueError(f"y must have one label per row of x ({n}), got {int(y.shape[0])}")

    def log_probs(p: Params, xn: Tensor) -> Tensor:
        z = functional_call(model, p, (xn.unsqueeze(0),))[0]
        return torch.log_softmax(_restrict_logits(z, active), dim=-1)

    out = {k: torch.zeros_like(v) for k, v in p0.items()}
    y_local = None
    if y is not None and kind in ("empirical", "batched"):
        with torch.no_grad():
            num_classes = int(functional_call(model, p0, (x[:1],)).shape[-1])
        y_local = local_targets(y, active, num_classes)
    if kind == "batched":
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")

        def batch_loss(p: Params, xb: Tensor, yb: Tensor) -> Tensor:
            z = _restrict_logits(functional_call(model, p, (xb,)), active)
            return nn.functional.cross_entropy(z, yb)

        m = 0
        for start in range(0, n, batch_size):
            g = grad(batch_loss)(p0, x[start : start + batch_size], y_local[start : start + batch_size])  # type: ignore[index]
            for k in out:
                out[k] += g[k] ** 2
            m += 1
        return {k: v / m for k, v in out.items()}

    if kind == "sample":
        with torch.no_grad():
            probs = torch.softmax(_restrict_logits(functional_call(model, p0, (x,)), active), -1)
        y_local = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        kind = "empirical"
    if fast:
        out_fast = _linear_fisher(model, p0, x, active, y_local if kind == "empirical" else None)
        if out_fast is not None:
            return out_fast
    for start in range(0, n, chunk_size):
        xc = x[start : start + chunk_size]
        if kind == "exact":
            jac = vmap(jacrev(log_probs), in_dims=(None, 0))(p0, xc)  # name -> (b, C, *shape)
            with torch.no_grad():
                probs = vmap(log_probs, in_dims=(None, 0))(p0, xc).exp()  # (b, C)
            for k in out:
                w = probs.reshape(*probs.shape, *([1] * (jac[k].ndim - 2)))
                out[k] += (w * jac[k] ** 2).sum(dim=(0, 1))
            continue
        yl = y_local[start : start + chunk_size]  # type: ignore[index]

        def lp_label(p: Params, xn: Tensor, yn: Tensor) -> Tensor:
            return log_probs(p, xn).gather(0, yn.reshape(1)).squeeze(0)

        g = vmap(grad(lp_label), in_dims=(None, 0, 0))(p0, xc, yl)
        for k in out:
            out[k] += (g[k] ** 2).sum(0)
    return {k: v / n for k, v in out.items()}


def _linear_fisher(
    model: nn.Module, p0: Params, x: Tensor, active: Sequence[int] | None, y_local: Tensor | None
) -> Params | None:
    """Diagonal Fisher of an MLP from layer inputs and output signals (None if not applicable)."""
    names = {id(v): k for k, v in model.named_parameters()}
    linears: list[tuple[nn.Linear, str, str | None]] = []
    covered: set[str] = set()
    for mod in model.modules():
        own = [k for k, _ in mod.named_parameters(recurse=False)]
        if not own:
            continue
        if not isinstance(mod, nn.Linear):
            return None
        wname = names[id(mod.weight)]
        bname = names[id(mod.bias)] if mod.bias is not None else None
        linears.append((mod, wname, bname))
        covered.update(n for n in (wname, bname) if n is not None)
    if covered != set(p0):
        return None
    inputs: dict[int, list[Tensor]] = {}
    outputs: dict[int, list[Tensor]] = {}

    def hook(mod: nn.Module, inp: tuple[Tensor, ...], out: Tensor) -> None:
        inputs.setdefault(id(mod), []).append(inp[0].detach())
        outputs.setdefault(id(mod), []).append(out)

    handles = [mod.register_forward_hook(hook) for mod, _, _ in linears]
    try:
        with torch.enable_grad():
            p_req = {k: v.detach().requires_grad_() for k, v in p0.items()}
            logits = functional_call(model, p_req, (x,))
            if any(len(outputs.get(id(m), [])) != 1 for m, _, _ in linears) or logits.ndim != 2:
                return None
            if not all(o.requires_grad for m, _, _ in linears for o in outputs[id(m)]):
                return None
            logp = torch.log_softmax(_restrict_logits(logits, active), -1)
            outs = [outputs[id(m)][0] for m, _, _ in linears]
            ins = [inputs[id(m)][0] for m, _, _ in linears]
            if any(a.ndim != 2 for a in ins):
                return None
            res = {k: torch.zeros_like(v) for k, v in p0.items()}
            if y_local is not None:
                targets = [(logp.gather(1, y_local.unsqueeze(1)).sum(), None)]
            else:
                probs = logp.detach().exp()
                targets = [(logp[:, c].sum(), probs[:, c]) for c in range(logp.shape[1])]
            for i, (obj, weight) in enumerate(targets):
                deltas = torch.autograd.grad(obj, outs, retain_graph=i < len(targets) - 1)
                for (m, wname, bname), d, a in zip(linears, deltas, ins):
                    d2 = d * d if weight is None else weight.unsqueeze(1) * d * d
                    res[wname] += d2.T @ (a * a)
                    if bname is not None:
                        res[bname] += d2.sum(0)
    finally:
        for h in handles:
            h.remove()
    n = x.shape[0]
    return {k: v / n for k, v in res.items()}


def fisher_quadratic_form(
    model: nn.Module,
    x: Tensor,
    delta: Params,
    *,
    active: Sequence[int] | None = None,
    params: Params | None = None,
) -> Tensor:
    r"""The full-Fisher quadratic form :math:`\delta^\top F\delta` without forming :math:`F`.

    With :math:`u_k = J_k\delta` the directional derivative of the logits (one forward-mode
    Jacobian-vector product) and :math:`\Lambda(p) = \mathrm{diag}(p)-pp^\top` the Fisher of the
    categorical in logit coordinates,

    .. math::

        \delta^\top F\delta = \frac1n\sum_k u_k^\top\Lambda(p_k)\,u_k
        = \frac1n\sum_k\Big(\sum_c p_{kc}u_{kc}^2 - \big(\sum_c p_{kc}u_{kc}\big)^2\Big).

    The EWC penalty keeps only the diagonal of :math:`F`; comparing the two shows what the
    diagonal approximation drops.
    """
    x = _check_x(x)
    p0 = named_params(model) if params is None else {k: v.detach() for k, v in params.items()}
    if set(delta) != set(p0):
        raise ValueError(f"delta must have the parameter names {list(p0)}, got {list(delta)}")
    tangent = {k: delta[k].to(p0[k].dtype) for k in p0}

    def logits(p: Params) -> Tensor:
        return _restrict_logits(functional_call(model, p, (x,)), active)

    z, u = jvp(logits, (p0,), (tangent,))
    p = torch.softmax(z, dim=-1)
    return ((p * u * u).sum(-1) - (p * u).sum(-1) ** 2).mean()


def predictive_kl(
    model: nn.Module,
    x: Tensor,
    params_a: Params,
    params_b: Params,
    *,
    active: Sequence[int] | None = None,
) -> Tensor:
    r"""Mean over inputs of :math:`\KL{p(\cdot\mid x,\theta_a)}{p(\cdot\mid x,\theta_b)}`.

    For :math:`\theta_b=\theta_a+\delta` it equals :math:`\tfrac12\delta^\top F(\theta_a)\delta +
    O(\|\delta\|^3)`; EWC replaces :math:`F` by its diagonal.
    """
    x = _check_x(x)
    la = torch.log_softmax(_restrict_logits(functional_call(model, params_a, (x,)), active), -1)
    lb = torch.log_softmax(_restrict_logits(functional_call(model, params_b, (x,)), active), -1)
    return (la.exp() * (la - lb)).sum(-1).mean()


def ewc_penalty(params: Params, anchor: Params, fisher: Params, lam: float = 1.0) -> Tensor:
    r"""The EWC penalty :math:`\frac{\lambda}{2}\sum_i F_{ii}(\theta_i-\theta^*_i)^2` :cite:`kirkpatrick2017overcoming`.

    Differentiable in ``params``. (Avalanche adds :math:`\lambda\sum_i F_{ii}(\theta_i-\theta^*_i)^2`
    without the :math:`\tfrac12`, i.e. twice this for the same :math:`\lambda`.)
    """
    for nm, d in (("params", params), ("anchor", anchor), ("fisher", fisher)):
        if not isinstance(d, Mapping):
            raise TypeError(f"{nm} must be a dict of tensors (name -> tensor), got {type(d).__name__}")
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
