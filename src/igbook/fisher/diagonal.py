r"""The diagonal of a curvature matrix for networks of linear layers, without per-example Jacobians.

The generic route to :math:`\operatorname{diag} G` (:func:`igbook.fisher.models.curvature_matrix`
with ``structure="diagonal"``) materializes, for every data point, the rows of its Jacobian
:math:`J_n\in\mathbb R^{C\times P}` (:func:`torch.func.vmap`). When every differentiated
parameter sits in a :class:`torch.nn.Linear` module that is called once per forward pass on a
batch of shape ``(N, d_in)``, the per-example gradients have a closed form
:cite:`dangel2020backpack`: for the layer :math:`h_n = W a_n + b` with input :math:`a_n` and
any output direction :math:`v_n\in\mathbb R^C`,

.. math::
    :label: eq-linear-per-example

    J_n^\top v_n\big|_W = \delta_n a_n^\top,\qquad J_n^\top v_n\big|_b = \delta_n,\qquad
    \delta_n = \frac{\partial (v_n^\top f_n)}{\partial h_n},

where :math:`\delta_n` is what one backward pass of :math:`\sum_n v_n^\top f_n` leaves at the
layer's output (the data points do not interact, so the :math:`n`-th row of that gradient is
data point :math:`n`'s). Every curvature matrix of :mod:`igbook.fisher.models` except the
Hessian is a pull-back :math:`G = \frac1N\sum_n J_n^\top M_nJ_n`; writing
:math:`M_n = \sum_k w_{nk}\,v_{nk}v_{nk}^\top` (:math:`w = 1` for a square-root factor,
the eigenvalues for an indefinite :math:`M_n`),

.. math::
    :label: eq-linear-diagonal

    (\operatorname{diag} G)_{W_{ij}} = \frac1N\sum_n \Big(\sum_k w_{nk}\,\delta_{nki}^2\Big)\,a_{nj}^2
    = \frac1N\Big[\big(\textstyle\sum_k w_k\odot\delta_k\odot\delta_k\big)^\top (a\odot a)\Big]_{ij},

one batched backward pass per direction :math:`k` and one matrix product per layer. The
directions are those of :meth:`~igbook.fisher.likelihoods.Likelihood.output_gradient_samples`:
the columns of the output Fisher's square-root factor (``EXACT``, and ``GGN`` of a canonical
likelihood), output gradients at labels sampled from the model (``MC``) or at the observed
labels (``EMPIRICAL``); a non-canonical ``GGN`` uses the eigenvectors of the loss Hessian
:math:`\nabla_f^2\ell`, with its eigenvalues as signed weights.

:func:`linear_curvature_diagonal` returns ``None`` when the network is not of this kind (a
parameter outside an ``nn.Linear``, a layer called twice or on inputs with more than two axes,
a parameter shared between modules) or for the Hessian; the callers then use the generic route.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.func import functional_call

from igbook._validation import check_generator, check_integer
from igbook.fisher.likelihoods import Likelihood, get_likelihood
from igbook.fisher.types import FisherType, as_fisher_type

__all__ = ["DIAGONAL_STRATEGIES", "linear_curvature_diagonal"]

#: the strategies of ``curvature_matrix(..., structure="diagonal")`` and ``fisher_diagonal``:
#: ``"auto"`` (the linear-layer closed form when it applies, else ``"vmap"``), ``"vmap"``
#: (per-example Jacobian rows by :func:`torch.func.vmap`), ``"linear"`` (the closed form, or an error)
DIAGONAL_STRATEGIES = ("auto", "vmap", "linear")

_Layer = tuple[nn.Linear, "str | None", "str | None"]


def _linear_layers(model: nn.Module, names: list[str]) -> list[_Layer] | None:
    """The ``nn.Linear`` modules holding the parameters ``names`` (weight name, bias name), or ``None``."""
    owners: dict[int, int] = {}
    for _, mod in model.named_modules(remove_duplicate=False):
        for _, p in mod.named_parameters(recurse=False):
            owners[id(p)] = owners.get(id(p), 0) + 1
    layers: dict[int, list] = {}
    for name in names:
        prefix, _, attr = name.rpartition(".")
        try:
            mod = model.get_submodule(prefix)
        except AttributeError:
            return None
        if not isinstance(mod, nn.Linear) or attr not in ("weight", "bias"):
            return None
        p = getattr(mod, attr)
        if not isinstance(p, Tensor) or owners.get(id(p), 0) != 1:  # tied or registered twice
            return None
        entry = layers.setdefault(id(mod), [mod, None, None])
        entry[1 if attr == "weight" else 2] = name
    return [(m, w, b) for m, w, b in layers.values()]


def _directions(
    lik: Likelihood,
    f: Tensor,
    ftype: FisherType,
    y: Tensor | None,
    mc_samples: int,
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor | None]:
    """Output directions ``(K, N, C)`` and signed weights ``(K, N)`` (``None``: all 1) with
    :math:`M_n = \\sum_k w_{nk}v_{nk}v_{nk}^\\top`."""
    f = f.detach()
    if ftype is FisherType.GGN and not lik.canonical:
        assert y is not None
        m = lik.output_hessian(f, y)
        w, v = torch.linalg.eigh(0.5 * (m + m.transpose(-1, -2)))  # (N, C), (N, C, C)
        return v.permute(2, 0, 1), w.T
    vecs = lik.output_gradient_samples(f, ftype, y=y, mc_samples=mc_samples, generator=generator)
    return vecs, None


def linear_curvature_diagonal(
    model: nn.Module,
    params: Mapping[str, Tensor] | None,
    x: Tensor,
    y: Tensor | None,
    likelihood: Likelihood | str,
    fisher_type: FisherType | str = FisherType.EXACT,
    *,
    mc_samples: int = 1,
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
    outputs: Tensor | None = None,
) -> Tensor | None:
    r"""Diagonal of :math:`G=\frac1N\sum_n J_n^\top M_nJ_n` by :eq:`eq-linear-diagonal`, or ``None``.

    The linear-layer strategy of :func:`igbook.fisher.models.curvature_matrix` (``structure=
    "diagonal"``) and :func:`igbook.fisher.models.fisher_diagonal`, which validate the inputs
    and call it; use those. Same numbers as their ``strategy="vmap"`` (to rounding), including
    the Monte Carlo labels, which are drawn once for all data points from ``generator`` exactly
    as there.

    Parameters
    ----------
    model
        The network; called functionally (:func:`torch.func.functional_call`) with ``params``.
    params
        The parameters to differentiate (dict name -> tensor, a subset of the model's), or
        ``None`` for all trainable ones; the others and the buffers are held fixed.
    x
        Inputs, data points first.
    y
        Targets in the likelihood's flat form (:meth:`~igbook.fisher.likelihoods.Likelihood.check_targets`);
        needed for ``EMPIRICAL`` and ``GGN``.
    likelihood
        A :class:`~igbook.fisher.likelihoods.Likelihood` or its name.
    fisher_type
        Any :class:`~igbook.fisher.types.FisherType` but ``HESSIAN`` (which returns ``None``).
    mc_samples, generator
        Labels per data point and their randomness for ``MC``.
    chunk_size
        Data points per forward/backward pass (``None``: all at once).
    outputs
        The flat model outputs ``(N, C)`` at ``params`` if already computed (saves a forward pass).

    Returns
    -------
    Tensor or None
        Shape ``(P,)`` in :func:`~igbook.fisher.layout.flatten_params` order, or ``None`` when
        the closed form does not apply (see the module docstring).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    ftype = as_fisher_type(fisher_type)
    lik = get_likelihood(likelihood)
    if ftype is FisherType.MC:
        mc_samples = check_integer(mc_samples, "mc_samples", minimum=1)
    if generator is not None:
        check_generator(generator)
    if chunk_size is not None:
        chunk_size = check_integer(chunk_size, "chunk_size", minimum=1)
    if ftype is FisherType.HESSIAN:
        return None
    if ftype in (FisherType.EMPIRICAL, FisherType.GGN) and y is None:
        raise ValueError(f"y (the observed targets) is required for fisher_type={ftype.value!r}")
    named = dict(model.named_parameters())
    if params is None:
        params = {n: p.detach() for n, p in named.items() if p.requires_grad}
    names = list(params)
    if not names:
        raise ValueError(
            "params must be a non-empty dict name -> tensor (or None for all parameters)"
        )
    layers = _linear_layers(model, names)
    if layers is None:
        return None
    frozen = {
        **{n: p.detach() for n, p in named.items() if n not in params},
        **dict(model.named_buffers()),
    }
    theta = {n: t.detach() for n, t in params.items()}
    if x.is_floating_point():
        x = x.to(next(iter(theta.values())).dtype)
    n_total = int(x.shape[0])
    chunk = n_total if chunk_size is None else min(chunk_size, n_total)

    seen: dict[int, list[tuple[Tensor, Tensor]]] = {}

    def hook(mod: nn.Module, inp: tuple[Tensor, ...], out: Tensor) -> Tensor:
        seen.setdefault(id(mod), []).append((inp[0].detach(), out))
        return out.clone()  # later in-place operations (ReLU(inplace=True)) must not modify `out`

    def forward(xc: Tensor) -> tuple[Tensor, list[tuple[Tensor, Tensor]]] | None:
        seen.clear()
        p_req = {n: t.requires_grad_() for n, t in ((n, t.clone()) for n, t in theta.items())}
        handles = [m.register_forward_hook(hook) for m, _, _ in layers]
        try:
            with torch.enable_grad():
                out = functional_call(model, (p_req, frozen), (xc,))
        finally:
            for h in handles:
                h.remove()
        b = int(xc.shape[0])
        caught = []
        for m, _, _ in layers:
            calls = seen.get(id(m), [])
            if len(calls) != 1:
                return None
            a, h = calls[0]
            if a.ndim != 2 or a.shape[0] != b or h.ndim != 2 or not h.requires_grad:
                return None
            caught.append((a, h))
        return lik.flatten_output(out), caught

    first = forward(x[:chunk])
    if first is None:
        return None
    if outputs is None:
        with torch.no_grad():
            outputs = torch.cat(
                [
                    lik.flatten_output(
                        functional_call(model, (theta, frozen), (x[lo : lo + chunk],))
                    )
                    for lo in range(0, n_total, chunk)
                ]
            )
    vecs, weights = _directions(lik, outputs, ftype, y, mc_samples, generator)  # (K, N, C), (K, N)
    n_dirs = vecs.shape[0]
    acc = {n: torch.zeros_like(t) for n, t in theta.items()}
    for lo in range(0, n_total, chunk):
        hi = min(lo + chunk, n_total)
        step = first if lo == 0 else forward(x[lo:hi])
        if step is None:  # pragma: no cover - the first chunk has the same structure
            raise RuntimeError("the network changed structure between chunks of x")
        f, caught = step
        outs = [h for _, h in caught]
        sq = [torch.zeros_like(h) for h in outs]
        for k in range(n_dirs):
            deltas = torch.autograd.grad(
                f, outs, grad_outputs=vecs[k, lo:hi], retain_graph=k < n_dirs - 1
            )
            for s, d in zip(sq, deltas, strict=True):
                s.add_(d * d if weights is None else weights[k, lo:hi, None] * d * d)
        for (_, wname, bname), (a, _), s in zip(layers, caught, sq, strict=True):
            if wname is not None:
                acc[wname] += s.T @ (a * a)
            if bname is not None:
                acc[bname] += s.sum(0)
        first = None
    return torch.cat([acc[n].reshape(-1) for n in names]) / n_total
