r"""Matrix-free curvature: :class:`CurvatureOperator` and one-off curvature-vector products.

A :class:`CurvatureOperator` is a :class:`~igbook.fisher.operators.Curvature` whose products
cost about two gradients and never form the :math:`P\times P` matrix (see
:mod:`igbook.fisher.models` for the matrices and their conventions).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import grad, jvp

from igbook.fisher.layout import Params, flatten_params, unflatten_params
from igbook.fisher.likelihoods import Likelihood
from igbook.fisher.operators import Curvature
from igbook.fisher.problem import ModelProblem, needs_targets, output_matrices
from igbook.fisher.types import FisherType, as_fisher_type

__all__ = [
    "CurvatureOperator",
    "fisher_vector_product",
    "ggn_vector_product",
    "hessian_vector_product",
]


class CurvatureOperator(Curvature):
    r"""Matrix-free curvature matrix: ``op @ v`` without forming the :math:`P\times P` matrix.

    At construction it runs one forward pass, keeps the reverse-mode pull-back
    (:func:`torch.func.vjp`) and the output-space matrices :math:`M_n`; each product is then

    .. math::

        G v = \frac1N\sum_n J_n^\top\big(M_n\,(J_n v)\big):

    one forward-mode product :math:`u = Jv` for the whole batch (:func:`torch.func.jvp`), a
    batched :math:`C\times C` multiplication, and one vector-Jacobian product. For
    ``FisherType.HESSIAN`` it is a forward-over-reverse Hessian-vector product
    :cite:`pascanu2014revisiting`. The Monte Carlo labels are drawn once, at construction, so
    the operator is a fixed symmetric matrix (as conjugate gradient requires).

    Vectors may be flat tensors of shape ``(P,)`` (returned flat), stacks ``(P, K)`` (one
    product per column) or dicts shaped like ``params`` (returned as dicts). It is a
    :class:`~igbook.fisher.operators.Curvature`: ``solve``/``inverse`` go through the dense
    matrix (for large models run :func:`igbook.natgrad.conjugate_gradient` on :meth:`matvec`).

    Attributes
    ----------
    dim : int
        Number of parameters :math:`P`.
    params : dict
        The parameters the curvature is taken at.
    fisher_type : FisherType
        Which matrix this is.
    """

    def __init__(
        self,
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
    ) -> None:
        self.fisher_type = as_fisher_type(fisher_type)
        self._prob = prob = ModelProblem(
            model,
            params,
            x,
            y,
            likelihood,
            need_y=needs_targets(self.fisher_type),
            what=f"fisher_type={self.fisher_type.value!r}",
            keep_vjp=self.fisher_type is not FisherType.HESSIAN,
        )
        self.params = prob.params
        self.dim = prob.num_params
        #: model outputs :math:`f_n` at ``params``, shape ``(N, C)``
        self.outputs = prob.f
        if self.fisher_type is FisherType.HESSIAN:
            self._grad_fn = grad(prob.loss)
        else:
            #: output-space matrices :math:`M_n`, shape ``(N, C, C)``
            self.output_matrices = output_matrices(
                prob, self.fisher_type, mc_samples, seed, generator
            )

        self.size = self.dim
        self.dtype = prob.f.dtype
        self._blocks = {}
        self._settings = {"mc_samples": mc_samples, "seed": seed, "generator": generator}
        self._model, self._x, self._y, self._likelihood = model, x, y, likelihood

    def _apply(self, v: Tensor) -> Tensor:
        return torch.stack([self._matvec_flat(v[:, k]) for k in range(v.shape[1])], dim=1)

    def diagonal(self) -> Tensor:
        """The diagonal, computed directly (:func:`igbook.fisher.fisher_diagonal`, same labels' seed)."""
        from igbook.fisher.models import curvature_matrix  # models re-exports this module

        if self.fisher_type is FisherType.HESSIAN or self._settings["generator"] is not None:
            return self.to_dense().diagonal().clone()
        d = curvature_matrix(
            self._model,
            self.params,
            self._x,
            self._y,
            self._likelihood,
            self.fisher_type,
            structure="diagonal",
            mc_samples=self._settings["mc_samples"],
            seed=self._settings["seed"],
        )
        assert isinstance(d, Tensor)
        return d

    def _matvec_flat(self, v: Tensor) -> Tensor:
        prob = self._prob
        vd = unflatten_params(v, prob.params)
        if self.fisher_type is FisherType.HESSIAN:
            _, hv = jvp(self._grad_fn, (prob.params,), (vd,))
            return flatten_params(hv)
        _, jv = jvp(prob.f_batch, (prob.params,), (vd,))  # (N, C)
        w = (self.output_matrices @ jv.unsqueeze(-1)).squeeze(-1) / prob.n
        return self._pullback(w)

    def flat_matvec(self, v: Tensor) -> Tensor:
        """The product with a flat ``(P,)`` vector, without checks: for the inner loop of a solver
        (conjugate gradient) that checked its right-hand side once with :meth:`check_vector`."""
        return self._matvec_flat(v)

    def check_vector(self, v: Tensor | Params, name: str = "v") -> tuple[Tensor, bool]:
        """``v`` (flat ``(P,)`` or a dict shaped like ``params``) as a checked flat vector, and
        whether it was a dict."""
        return self._prob.check_vector(v, name)

    def _pullback(self, w: Tensor) -> Tensor:
        r""":math:`\sum_n J_n^\top w_n` for ``w`` of shape ``(N, C)``, flat."""
        assert self._prob.vjp_fn is not None
        (g,) = self._prob.vjp_fn(w.reshape(self._prob.out_shape))
        return flatten_params(g)

    def matvec(self, v: Tensor | Params) -> Tensor | dict[str, Tensor]:  # type: ignore[override]
        """The product with a flat vector ``(P,)``, a stack ``(P, K)`` or a dict shaped like ``params``."""
        if isinstance(v, Tensor) and v.ndim == 2:
            return super().matvec(v)
        flat, as_dict = self._prob.check_vector(v)
        out = self._matvec_flat(flat)
        return unflatten_params(out, self.params) if as_dict else out

    __call__ = matvec

    def __matmul__(self, v: Tensor | Params) -> Tensor | dict[str, Tensor]:
        return self.matvec(v)

    def gradient(self) -> Tensor:
        r"""Gradient :math:`\nabla_\theta L` of the mean loss (flat), from the cached forward pass."""
        prob = self._prob
        if prob.y is None:
            raise ValueError("the gradient needs the targets y; pass y when building the operator")
        if self.fisher_type is FisherType.HESSIAN:
            return flatten_params(self._grad_fn(prob.params))
        r = prob.lik.output_grad(self.outputs, prob.y) / prob.n
        return self._pullback(r)

    def loss(self) -> float:
        """Value of the mean loss :eq:`eq-mean-loss` at ``params`` (needs ``y``)."""
        prob = self._prob
        if prob.y is None:
            raise ValueError("the loss needs the targets y; pass y when building the operator")
        return float(prob.lik.nll(prob.f, prob.y).mean())

    def to_dense(self) -> Tensor:
        """The :math:`P\\times P` matrix, one product per column (for checks on small models)."""
        eye = torch.eye(self.dim, dtype=next(iter(self.params.values())).dtype)
        cols = torch.stack([self._matvec_flat(e) for e in eye], dim=1)
        return 0.5 * (cols + cols.T)


def fisher_vector_product(
    model: nn.Module,
    params: Params | None,
    x: Tensor,
    y: Tensor | None,
    likelihood: Likelihood | str,
    v: Tensor | Params,
    fisher_type: FisherType | str = FisherType.EXACT,
    *,
    mc_samples: int = 1,
    seed: int | None = 0,
    generator: torch.Generator | None = None,
) -> Tensor | dict[str, Tensor]:
    r"""One product :math:`F v` (or ``G v``/``H v`` for ``fisher_type="ggn"``/``"hessian"``).

    Builds a :class:`CurvatureOperator` and applies it once; for many products at the same
    parameters (conjugate gradient) build the operator once instead.
    """
    op = CurvatureOperator(
        model,
        params,
        x,
        y,
        likelihood,
        fisher_type,
        mc_samples=mc_samples,
        seed=seed,
        generator=generator,
    )
    return op.matvec(v)


def ggn_vector_product(
    model: nn.Module,
    params: Params | None,
    x: Tensor,
    y: Tensor,
    likelihood: Likelihood | str,
    v: Tensor | Params,
) -> Tensor | dict[str, Tensor]:
    r"""One generalized Gauss-Newton-vector product :math:`\frac1N\sum_n J_n^\top\nabla^2_f\ell_n J_n v`."""
    return fisher_vector_product(model, params, x, y, likelihood, v, FisherType.GGN)


def hessian_vector_product(
    model: nn.Module,
    params: Params | None,
    x: Tensor,
    y: Tensor,
    likelihood: Likelihood | str,
    v: Tensor | Params,
) -> Tensor | dict[str, Tensor]:
    r"""One Hessian-vector product :math:`\nabla^2_\theta L\,v` (forward-over-reverse)."""
    return fisher_vector_product(model, params, x, y, likelihood, v, FisherType.HESSIAN)
