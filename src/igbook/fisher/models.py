r"""Fisher information and curvature of conditional models :math:`p(y\mid f(x;\theta))`.

A network :math:`f(x;\theta)` (any :class:`torch.nn.Module`, called functionally through
:func:`torch.func.functional_call`) and a likelihood :math:`p(y\mid f)` from
:mod:`igbook.fisher.likelihoods` define the per-example loss
:math:`\ell_n(\theta) = -\log p(y_n\mid f(x_n;\theta))` and the training loss

.. math::
    :label: eq-mean-loss

    L(\theta) = \frac1N\sum_{n=1}^N \ell_n(\theta).

**Reduction convention.** Every matrix in this module is a *mean* over the :math:`N` data
points, consistent with :eq:`eq-mean-loss`: the Hessian returned is :math:`\nabla^2 L`, not
:math:`\nabla^2 \sum_n\ell_n`. A loss summed over the data has curvature :math:`N` times
larger; duplicating every data point leaves every matrix here unchanged.

**The curvature matrices** (:class:`FisherType`). With the per-example Jacobian
:math:`J_n = \partial f(x_n;\theta)/\partial\theta\in\mathbb R^{C\times P}`, four of the five
matrices are pull-backs of an output-space matrix :math:`M_n\in\mathbb R^{C\times C}`,

.. math::

    G = \frac1N\sum_{n=1}^N J_n^\top M_n J_n,

and differ only in :math:`M_n`:

========================  ======================================================================
``FisherType``            output-space matrix :math:`M_n`
========================  ======================================================================
``EXACT``                 :math:`\Lambda(f_n) = \mathbb E_{y\sim p(\cdot\mid f_n)}[\nabla_f\ell\nabla_f\ell^\top]`,
                          in closed form
``MC``                    :math:`\frac1k\sum_{s=1}^k
                          \nabla_f\ell(f_n,\tilde y_{ns})\nabla_f\ell(f_n,\tilde y_{ns})^\top`,
                          :math:`\tilde y_{ns}\sim p(\cdot\mid f_n)`
``EMPIRICAL``             :math:`\nabla_f\ell(f_n,y_n)\,\nabla_f\ell(f_n,y_n)^\top` with the observed labels
``GGN``                   :math:`\nabla^2_f\ell(f_n, y_n)` (generalized Gauss-Newton)
``HESSIAN``               not a pull-back:
                          :math:`\nabla^2_\theta L = G_{\mathrm{GGN}}
                          + \frac1N\sum_{n,c}\partial_{f_c}\ell_n\,\nabla^2_\theta f_{nc}`
========================  ======================================================================

``EXACT`` is the Fisher information of the conditional model :math:`p(y\mid x,\theta)` with
inputs fixed at the data :cite:`amari1998natural,martens2020new`; ``MC`` is its unbiased
Monte Carlo estimate with labels sampled from the model; ``EMPIRICAL`` is the empirical Fisher,
which is *not* a Fisher in general :cite:`kunstner2019limitations`; ``GGN`` equals ``EXACT``
whenever the likelihood has a canonical link :cite:`schraudolph2002fast,martens2020new`.

**Representations.** Each matrix can be returned dense (``structure="dense"``, :math:`P\times P`),
as its diagonal (``"diagonal"``, :math:`P`), as the diagonal blocks of each parameter tensor
(``"blocks"``, a dict name :math:`\to` matrix) or of each module, weight and bias together
(``"layers"``), or applied to vectors without ever being formed
(:class:`~igbook.fisher.products.CurvatureOperator`, :func:`~igbook.fisher.products.fisher_vector_product`):
a forward-mode Jacobian-vector product, a multiplication by :math:`M_n`, and a reverse-mode
vector-Jacobian product, about twice the cost of one gradient.

**Parameters and ordering.** ``params`` is a dict name :math:`\to` tensor (a subset of
``model.named_parameters()``; the other parameters and buffers are held fixed) or ``None`` for
all trainable parameters. Flat vectors and matrix rows follow the dict order, each tensor
flattened row-major (:meth:`torch.Tensor.flatten`), as in :func:`~igbook.fisher.layout.flatten_params`.

**Per-example derivatives** use :func:`torch.func.vmap` over data points (never a Python loop),
which requires the model to treat data points independently (no batch statistics).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from torch.func import grad, hessian, jacrev, vmap

from igbook.fisher.layout import (
    Params,
    flatten_params,
    model_params,  # noqa: F401 (re-exported, see below)
    param_slices,
    unflatten_params,
)
from igbook.fisher.likelihoods import Likelihood
from igbook.fisher.problem import (
    ModelProblem,
    check_mc_samples,
    mc_generator,
    needs_targets,
    output_factors,
    output_matrices,
)
from igbook.fisher.products import (  # re-exported, see below
    CurvatureOperator,  # noqa: F401
    fisher_vector_product,  # noqa: F401
    ggn_vector_product,  # noqa: F401
    hessian_vector_product,  # noqa: F401
)
from igbook.fisher.types import FisherType, as_fisher_type

# Also importable from here, for code written before the split (documented in their modules):
# FisherType (fisher.types), model_params, flatten_params, unflatten_params, param_slices
# (fisher.layout), CurvatureOperator and the *_vector_product functions (fisher.products).
__all__ = [
    "Structure",
    "per_example_gradients",
    "minibatch_gradient_second_moment",
    "output_curvature",
    "curvature_matrix",
    "fisher_matrix",
    "fisher_diagonal",
    "ggn_matrix",
    "hessian_matrix",
]

Structure = Literal["dense", "diagonal", "blocks", "layers"]
_STRUCTURES = ("dense", "diagonal", "blocks", "layers")


def _structure(structure: str) -> str:
    if structure not in _STRUCTURES:
        raise ValueError(f"structure must be one of {_STRUCTURES}, got {structure!r}")
    return structure


def _layer_groups(params: Params) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for name in params:
        groups.setdefault(name.rpartition(".")[0], []).append(name)
    return groups


def _chunk(chunk_size: int | None, n: int) -> int:
    if chunk_size is None:
        return n
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be None or an int >= 1, got {chunk_size!r}")
    return min(chunk_size, n)


# ------------------------------------------------------------------------- public API
def per_example_gradients(
    model: nn.Module,
    params: Params | None,
    x: Tensor,
    y: Tensor,
    likelihood: Likelihood | str,
    *,
    chunk_size: int | None = None,
) -> Tensor:
    r"""Per-example gradients :math:`g_n = \nabla_\theta\,\ell(f(x_n;\theta), y_n)`, shape ``(N, P)``.

    Computed with :func:`torch.func.vmap` over :func:`torch.func.grad` (one vectorized pass,
    no Python loop over data points). The rows follow :func:`~igbook.fisher.layout.flatten_params` order; their mean
    is the gradient of :eq:`eq-mean-loss` and :math:`\frac1N G^\top G` is the empirical Fisher.
    ``chunk_size`` bounds the number of data points vmapped at once (memory).
    """
    prob = ModelProblem(model, params, x, y, likelihood, need_y=True, what="per-example gradients")
    lik = prob.lik

    def loss_single(p: Params, xn: Tensor, yn: Tensor) -> Tensor:
        return lik._nll_single(prob.f_single(p, xn), yn)

    g = vmap(grad(loss_single), in_dims=(None, 0, 0), chunk_size=_chunk(chunk_size, prob.n))(
        prob.params, prob.x, prob.y
    )
    return torch.cat([g[name].reshape(prob.n, -1) for name in prob.params], dim=1)


def minibatch_gradient_second_moment(
    model: nn.Module,
    params: Params | None,
    x: Tensor,
    y: Tensor,
    likelihood: Likelihood | str,
    batch_size: int,
    *,
    replacement: bool = True,
) -> Tensor:
    r"""Entrywise :math:`\mathbb E_B[\hat g_B^2]` of a minibatch-mean gradient: what Adam's :math:`v` tracks.

    With :math:`B` points drawn uniformly from the :math:`N` data points,
    :math:`\hat g_B = \frac1B\sum_{n\in B} g_n` has

    .. math::

        \mathbb E_B\big[\hat g_B^{\,2}\big]
        = \bar g^{\,2} + \kappa\,\big(\operatorname{diag}\widetilde F - \bar g^{\,2}\big),
        \qquad \kappa = \begin{cases} 1/B & \text{with replacement}\\
        \frac{N-B}{B(N-1)} & \text{without replacement,}\end{cases}

    where :math:`\bar g = \frac1N\sum_n g_n` is the full gradient and
    :math:`\operatorname{diag}\widetilde F = \frac1N\sum_n g_n^2` the diagonal of the empirical
    Fisher. The exponential moving average :math:`v` of Adam :cite:`kingma2015adam` estimates
    this quantity when the parameters move slowly: a diagonal of the *empirical* Fisher, scaled
    by :math:`1/B`, plus the squared mean gradient, and not the diagonal of the Fisher.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    g = per_example_gradients(model, params, x, y, likelihood)
    n = g.shape[0]
    if not replacement and batch_size > n:
        raise ValueError(f"batch_size must be <= N = {n} without replacement, got {batch_size}")
    gbar2 = g.mean(0) ** 2
    var = (g**2).mean(0) - gbar2
    kappa = (
        1.0 / batch_size
        if replacement
        else (0.0 if n == 1 else (n - batch_size) / (batch_size * (n - 1)))
    )
    return gbar2 + kappa * var


def output_curvature(
    model: nn.Module,
    params: Params | None,
    x: Tensor,
    y: Tensor | None,
    likelihood: Likelihood | str,
    fisher_type: FisherType | str = FisherType.EXACT,
    *,
    mc_samples: int = 1,
    seed: int | None = 0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    r"""The outputs :math:`f_n` (``(N, C)``) and output-space matrices :math:`M_n` (``(N, C, C)``).

    :math:`M_n` is the matrix pulled back by the Jacobian for ``fisher_type`` (see the table in
    :mod:`igbook.fisher.models`); the Hessian has none and raises :class:`ValueError`.
    """
    ftype = as_fisher_type(fisher_type)
    if ftype is FisherType.HESSIAN:
        raise ValueError("the Hessian is not a pull-back J^T M J and has no output-space matrix")
    prob = ModelProblem(
        model,
        params,
        x,
        y,
        likelihood,
        need_y=needs_targets(ftype),
        what=f"fisher_type={ftype.value!r}",
    )
    return prob.f, output_matrices(prob, ftype, mc_samples, seed, generator)


def curvature_matrix(
    model: nn.Module,
    params: Params | None,
    x: Tensor,
    y: Tensor | None,
    likelihood: Likelihood | str,
    fisher_type: FisherType | str = FisherType.EXACT,
    *,
    structure: Structure = "dense",
    mc_samples: int = 1,
    seed: int | None = 0,
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
    strategy: str = "auto",
) -> Tensor | dict[str, Tensor]:
    r"""A curvature matrix of the mean loss :eq:`eq-mean-loss` in the requested structure.

    For the pull-back types the per-example Jacobians :math:`J_n` come from
    :func:`torch.func.vmap` over :func:`torch.func.jacrev`, and

    .. math::

        G = \frac1N\sum_n J_n^\top M_n J_n,\qquad
        \operatorname{diag} G = \frac1N\sum_n \sum_{c}\big(J_n\big)_{c\,\cdot}\odot\big(M_n J_n\big)_{c\,\cdot}.

    The Hessian uses :func:`torch.func.hessian` (of the whole flat parameter vector for
    ``"dense"``/``"diagonal"``, of one tensor or module at a time for ``"blocks"``/``"layers"``).

    Parameters
    ----------
    model
        Any :class:`torch.nn.Module` whose output has the data points on its first axis.
    params
        Parameters to differentiate (dict name -> tensor); ``None`` for all trainable ones.
    x
        Inputs, data points first.
    y
        Observed targets; required for ``EMPIRICAL``, ``GGN`` and ``HESSIAN``, ignored otherwise.
    likelihood
        A :class:`~igbook.fisher.likelihoods.Likelihood` or its name.
    fisher_type
        A :class:`FisherType` (or its string value).
    structure
        ``"dense"`` (:math:`P\times P`), ``"diagonal"`` (:math:`P`), ``"blocks"`` (dict
        parameter name -> block) or ``"layers"`` (dict module name -> joint block of its
        parameters, in ``params`` order).
    mc_samples, seed, generator
        Number of sampled labels per data point and the randomness for ``MC``.
    chunk_size
        Number of data points whose Jacobian rows are held in memory at once (``None``: chosen
        so that about :math:`2^{21}` numbers are).
    strategy
        How ``structure="diagonal"`` is computed (ignored otherwise): ``"vmap"``, the rows above;
        ``"linear"``, the closed form of :func:`igbook.fisher.diagonal.linear_curvature_diagonal`
        for networks whose parameters all sit in ``nn.Linear`` layers (:class:`ValueError` if it
        does not apply); ``"auto"`` (default), ``"linear"`` when it applies, else ``"vmap"``.
        Both give the same numbers, the same Monte Carlo labels included.

    Returns
    -------
    Tensor or dict
        The matrix, its diagonal, or its diagonal blocks.
    """
    ftype = as_fisher_type(fisher_type)
    structure = _structure(structure)  # type: ignore[assignment]
    prob = ModelProblem(
        model,
        params,
        x,
        y,
        likelihood,
        need_y=needs_targets(ftype),
        what=f"fisher_type={ftype.value!r}",
    )
    _chunk(chunk_size, prob.n)
    if (
        structure == "diagonal"
    ):  # the linear-layer closed form when it applies (igbook.fisher.diagonal)
        from igbook._validation import check_choice
        from igbook.fisher.diagonal import DIAGONAL_STRATEGIES, linear_curvature_diagonal

        if check_choice(strategy, "strategy", DIAGONAL_STRATEGIES) != "vmap":
            fast = linear_curvature_diagonal(
                prob.model,
                prob.params,
                prob.x,
                prob.y,
                prob.lik,
                ftype,
                mc_samples=check_mc_samples(mc_samples) if ftype is FisherType.MC else 1,
                generator=mc_generator(seed, generator) if ftype is FisherType.MC else None,
                chunk_size=chunk_size,
                outputs=prob.f,
            )
            if fast is not None:
                return fast
            if strategy == "linear":
                raise ValueError(
                    "strategy='linear' needs every parameter in params to sit in an nn.Linear called once per "
                    f"forward pass on (N, d) inputs, and a fisher_type other than 'hessian' (got {ftype.value!r}); "
                    "use strategy='vmap' or 'auto'"
                )
    if ftype is FisherType.HESSIAN:
        return _hessian(prob, structure)
    names = list(prob.params)
    slices = param_slices(prob.params)
    groups: dict[str, list[str]] = (
        {n: [n] for n in names} if structure == "blocks" else _layer_groups(prob.params)
    )
    dtype = prob.f.dtype
    p = prob.num_params
    factors = output_factors(prob, ftype, mc_samples, seed, generator)
    if isinstance(factors, tuple):  # indefinite output matrices: rows J_n and M_n J_n
        m = factors[0]
        jac_fn = vmap(jacrev(prob.f_single), in_dims=(None, 0))

        def rows(lo: int, hi: int) -> tuple[Tensor, Tensor]:
            jd = jac_fn(prob.params, prob.x[lo:hi])
            j = torch.cat([jd[n].reshape(hi - lo, prob.c, -1) for n in names], dim=2)  # (b, C, P)
            return j, m[lo:hi] @ j
    else:
        # square-root rows S_n^T J_n with S_n S_n^T = M_n: the k-th row is the vector-Jacobian
        # product of the output with the k-th column of S_n (reverse mode, vmapped over points)
        fac = factors

        def rows_single(q: Params, xn: Tensor, sn: Tensor) -> dict[str, Tensor]:
            return jacrev(lambda r: prob.f_single(r, xn) @ sn)(q)

        row_fn = vmap(rows_single, in_dims=(None, 0, 0))

        def rows(lo: int, hi: int) -> tuple[Tensor, Tensor]:
            rd = row_fn(prob.params, prob.x[lo:hi], fac[lo:hi])
            r = torch.cat(
                [rd[n].reshape(hi - lo, fac.shape[2], -1) for n in names], dim=2
            )  # (b, K, P)
            return r, r

    rows_per_point = factors[0].shape[1] if isinstance(factors, tuple) else factors.shape[2]
    if chunk_size is None:  # about 2**21 numbers of Jacobian rows in memory at once
        chunk = max(1, min(prob.n, 2**21 // max(1, rows_per_point * p)))
    else:
        chunk = _chunk(chunk_size, prob.n)
    if structure == "dense":
        acc: Tensor | dict[str, Tensor] = torch.zeros(p, p, dtype=dtype)
    elif structure == "diagonal":
        acc = torch.zeros(p, dtype=dtype)
    else:
        acc = {}
    for lo in range(0, prob.n, chunk):
        hi = min(lo + chunk, prob.n)
        a, b = rows(lo, hi)
        if structure == "dense":
            acc += a.reshape(-1, p).T @ b.reshape(-1, p)  # type: ignore[operator]
        elif structure == "diagonal":
            acc += (a * b).sum((0, 1))  # type: ignore[operator]
        else:
            for g, members in groups.items():
                idx = torch.cat([torch.arange(p)[slices[n]] for n in members])
                ai, bi = (
                    a[:, :, idx].reshape(-1, idx.numel()),
                    b[:, :, idx].reshape(-1, idx.numel()),
                )
                block = ai.T @ bi
                acc[g] = acc[g] + block if g in acc else block  # type: ignore[index,operator]
    if isinstance(acc, dict):
        return {g: 0.5 * (b + b.T) / prob.n for g, b in acc.items()}
    if structure == "dense":
        return 0.5 * (acc + acc.T) / prob.n
    return acc / prob.n


def _hessian(prob: ModelProblem, structure: str) -> Tensor | dict[str, Tensor]:
    params = prob.params
    if structure in ("dense", "diagonal"):
        theta = flatten_params(params)

        def loss_flat(t: Tensor) -> Tensor:
            return prob.loss(unflatten_params(t, params))

        h = hessian(loss_flat)(theta)
        h = 0.5 * (h + h.T)
        return h if structure == "dense" else torch.diagonal(h).clone()
    groups = {n: [n] for n in params} if structure == "blocks" else _layer_groups(params)
    out = {}
    for g, members in groups.items():
        sub = {n: params[n] for n in members}
        rest = {n: t for n, t in params.items() if n not in sub}

        def loss_sub(t: Tensor, sub: Params = sub, rest: Params = rest) -> Tensor:
            return prob.loss({**rest, **unflatten_params(t, sub)})

        h = hessian(loss_sub)(flatten_params(sub))
        out[g] = 0.5 * (h + h.T)
    return out


def fisher_matrix(
    model: nn.Module,
    params: Params | None,
    x: Tensor,
    y: Tensor | None,
    likelihood: Likelihood | str,
    fisher_type: FisherType | str = FisherType.EXACT,
    *,
    structure: Structure = "dense",
    mc_samples: int = 1,
    seed: int | None = 0,
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
) -> Tensor | dict[str, Tensor]:
    r"""Fisher information of :math:`p(y\mid f(x;\theta))` at the inputs ``x`` (mean over points).

    .. math::

        F(\theta) = \frac1N\sum_{n=1}^N
        \mathbb E_{y\sim p(\cdot\mid f(x_n;\theta))}\big[\nabla_\theta\log p(y\mid x_n,\theta)\,
        \nabla_\theta\log p(y\mid x_n,\theta)^\top\big]
        = \frac1N\sum_n J_n^\top\Lambda(f_n)J_n

    :cite:`amari1998natural,martens2020new`. ``fisher_type`` chooses the exact Fisher (default),
    its Monte Carlo estimate (``"mc"``) or the empirical Fisher (``"empirical"``, which needs
    ``y``); ``"ggn"`` and ``"hessian"`` are accepted too. Same arguments and return values as
    :func:`curvature_matrix`.
    """
    return curvature_matrix(
        model,
        params,
        x,
        y,
        likelihood,
        fisher_type,
        structure=structure,
        mc_samples=mc_samples,
        seed=seed,
        generator=generator,
        chunk_size=chunk_size,
    )


def fisher_diagonal(
    model: nn.Module,
    params: Params | None,
    x: Tensor,
    y: Tensor | None,
    likelihood: Likelihood | str,
    fisher_type: FisherType | str = FisherType.EXACT,
    *,
    mc_samples: int = 1,
    seed: int | None = 0,
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
    strategy: str = "auto",
) -> Tensor:
    r"""Diagonal of a curvature matrix, shape ``(P,)``, without forming the matrix.

    :math:`\operatorname{diag}F = \frac1N\sum_n\sum_c (J_n)_{c\cdot}\odot(\Lambda_n J_n)_{c\cdot}`;
    for ``"empirical"`` this is the mean squared per-example gradient. This is the object that
    elastic weight consolidation uses :cite:`kirkpatrick2017overcoming`, and the one that
    Adam's second moment is often, wrongly, said to estimate (see the chapter).

    ``strategy`` (see :func:`curvature_matrix`): ``"auto"`` (default) uses the closed form of
    per-example gradients of linear layers (:mod:`igbook.fisher.diagonal`, one batched backward
    pass per output direction) for networks whose parameters all sit in ``nn.Linear`` modules,
    and per-example Jacobian rows by :func:`torch.func.vmap` (``"vmap"``) otherwise;
    ``"linear"`` insists on the closed form. The numbers agree to rounding.
    """
    out = curvature_matrix(
        model,
        params,
        x,
        y,
        likelihood,
        fisher_type,
        structure="diagonal",
        mc_samples=mc_samples,
        seed=seed,
        generator=generator,
        chunk_size=chunk_size,
        strategy=strategy,
    )
    assert isinstance(out, Tensor)
    return out


def ggn_matrix(
    model: nn.Module,
    params: Params | None,
    x: Tensor,
    y: Tensor,
    likelihood: Likelihood | str,
    *,
    structure: Structure = "dense",
    chunk_size: int | None = None,
) -> Tensor | dict[str, Tensor]:
    r"""Generalized Gauss-Newton matrix :math:`\frac1N\sum_n J_n^\top\nabla^2_f\ell(f_n,y_n)J_n`.

    The Hessian with the second derivatives of the network dropped
    :cite:`schraudolph2002fast,martens2020new`; equal to the Fisher for canonical links and to
    the Hessian for models linear in :math:`\theta`.
    """
    return curvature_matrix(
        model, params, x, y, likelihood, FisherType.GGN, structure=structure, chunk_size=chunk_size
    )


def hessian_matrix(
    model: nn.Module,
    params: Params | None,
    x: Tensor,
    y: Tensor,
    likelihood: Likelihood | str,
    *,
    structure: Structure = "dense",
) -> Tensor | dict[str, Tensor]:
    r"""Hessian :math:`\nabla^2_\theta L` of the mean loss :eq:`eq-mean-loss` (via :func:`torch.func.hessian`)."""
    return curvature_matrix(
        model, params, x, y, likelihood, FisherType.HESSIAN, structure=structure
    )
