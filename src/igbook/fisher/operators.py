r"""One protocol for curvature: :class:`Curvature`, and its dense, diagonal, block and Kronecker forms.

Every curvature that igbook computes can be handed around as a :class:`Curvature`: a symmetric
positive semi-definite :math:`P\times P` matrix :math:`C` over a flat parameter vector (the
``"flat"`` order of :mod:`igbook.fisher.layout` unless said otherwise), which preconditioners,
the Laplace approximation and the chapters consume through one interface:

=====================  ==========================================================================
``op.matvec(v)``       :math:`Cv` for ``v`` of shape ``(P,)`` or ``(P, K)`` (also ``op @ v``)
``op.to_dense()``      the :math:`P\times P` matrix
``op.diagonal()``      its diagonal, shape ``(P,)``
``op.solve(v, d)``     :math:`(C + dI)^{-1}v` (``d`` the damping), ``v`` of shape ``(P,)`` or ``(P, K)``
``op.inverse(d)``      :math:`(C + dI)^{-1}` as a :class:`Curvature` of the same structure
``op.blocks``          named blocks (layers): name :math:`\to` slice of the flat vector
``op.block(name)``     that diagonal block as a :class:`Curvature`
=====================  ==========================================================================

The structures:

* :class:`DenseCurvature`: a matrix (exact Fisher, GGN, empirical Fisher, Hessian of a small model);
* :class:`DiagonalCurvature`: a vector (diagonal Fisher, EWC's importance, Adam-type statistics);
* :class:`BlockDiagonalCurvature`: named diagonal blocks, each any :class:`Curvature`
  (per-layer Fisher blocks, K-FAC);
* :class:`KroneckerCurvature`: one layer's :math:`\phi(A\otimes G)` with
  :math:`\phi(x) = (x + \delta)^p`: K-FAC's block (:math:`p = 1`), its damped inverse
  (:math:`p = -1`), Shampoo-type roots (:math:`p = -1/2`), all through the eigendecompositions
  of the two factors :cite:`martens2015optimizing`;
* :class:`igbook.fisher.CurvatureOperator`: matrix-free products with a network's curvature.

Damped solves are exact: ``solve(v, d)`` is :math:`(C + dI)^{-1}v` for every structure (for a
Kronecker block through the eigenvalues :math:`\lambda_i(G)\lambda_j(A) + d`); the π-heuristic
"factored" damping of K-FAC is an approximation that :class:`igbook.kfac.KFACPreconditioner`
offers separately. A singular system (:math:`C + dI` not positive definite) raises
:class:`ValueError` naming the damping.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping

import torch
from torch import Tensor

from igbook._validation import check_finite, check_nonnegative_real, check_real

__all__ = [
    "Curvature",
    "DenseCurvature",
    "DiagonalCurvature",
    "BlockDiagonalCurvature",
    "KroneckerCurvature",
]


class Curvature(ABC):
    """A symmetric positive semi-definite :math:`P\\times P` curvature matrix (module docstring).

    Subclasses implement ``_apply`` (``(P, K) -> (P, K)``), :meth:`to_dense`, and where they
    can do better than the dense defaults, :meth:`diagonal`, :meth:`solve` and :meth:`inverse`.
    """

    #: number of parameters P
    size: int
    dtype: torch.dtype
    _blocks: dict[str, slice]

    @property
    def shape(self) -> tuple[int, int]:
        return (self.size, self.size)

    @property
    def blocks(self) -> dict[str, slice]:
        """Named diagonal blocks (layers): name -> slice of the flat vector (may be empty)."""
        return dict(self._blocks)

    # -- products --------------------------------------------------------------------------
    @abstractmethod
    def _apply(self, v: Tensor) -> Tensor:
        """``C @ v`` for a checked ``v`` of shape ``(P, K)``."""

    def _check_vector(self, v: Tensor, name: str = "v") -> tuple[Tensor, bool]:
        if not isinstance(v, Tensor):
            raise TypeError(
                f"{name} must be a tensor of shape ({self.size},) or ({self.size}, K), got {type(v).__name__}"
            )
        if v.ndim not in (1, 2) or v.shape[0] != self.size:
            raise ValueError(
                f"{name} must have shape ({self.size},) or ({self.size}, K), got {tuple(v.shape)}"
            )
        check_finite(v, name)
        return (v.unsqueeze(1) if v.ndim == 1 else v), v.ndim == 1

    def matvec(self, v: Tensor) -> Tensor:
        """:math:`Cv` for ``v`` of shape ``(P,)`` or ``(P, K)`` (the same shape back)."""
        m, flat = self._check_vector(v)
        out = self._apply(m.to(self.dtype))
        return out.squeeze(1) if flat else out

    def __matmul__(self, v: Tensor) -> Tensor:
        return self.matvec(v)

    # -- matrices --------------------------------------------------------------------------
    @abstractmethod
    def to_dense(self) -> Tensor:
        """The :math:`P\\times P` matrix."""

    def diagonal(self) -> Tensor:
        """The diagonal, shape ``(P,)``."""
        return self.to_dense().diagonal().clone()

    def _damping(self, damping: float) -> float:
        return check_nonnegative_real(damping, "damping")

    def solve(self, v: Tensor, damping: float = 0.0) -> Tensor:
        """:math:`(C + dI)^{-1}v` for ``v`` of shape ``(P,)`` or ``(P, K)``; ``d = damping >= 0``."""
        m, flat = self._check_vector(v)
        out = self.inverse(damping)._apply(m.to(self.dtype))
        return out.squeeze(1) if flat else out

    def inverse(self, damping: float = 0.0) -> Curvature:
        """:math:`(C + dI)^{-1}` as a :class:`Curvature` (dense by default)."""
        return DenseCurvature(
            _spd_inverse(self.to_dense(), self._damping(damping)), blocks=self._blocks
        )

    def block(self, name: str) -> Curvature:
        """The diagonal block of layer ``name`` (see ``blocks``) as a dense curvature."""
        sl = self._slice(name)
        return DenseCurvature(self.to_dense()[sl, sl])

    def _slice(self, name: str) -> slice:
        if name not in self._blocks:
            raise ValueError(f"name must be one of the blocks {list(self._blocks)}, got {name!r}")
        return self._blocks[name]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, blocks={list(self._blocks)})"


def _check_blocks(blocks: Mapping[str, slice] | None, size: int) -> dict[str, slice]:
    if blocks is None:
        return {}
    out: dict[str, slice] = {}
    for name, sl in blocks.items():
        if (
            not isinstance(sl, slice)
            or sl.start is None
            or sl.stop is None
            or not 0 <= sl.start < sl.stop <= size
        ):
            raise ValueError(f"blocks[{name!r}] must be a slice within [0, {size}), got {sl!r}")
        out[str(name)] = slice(sl.start, sl.stop)
    return out


def _spd_inverse(m: Tensor, damping: float) -> Tensor:
    """``(M + d I)^{-1}`` for a symmetric PSD ``M`` by Cholesky, or raise naming the damping."""
    eye = torch.eye(m.shape[0], dtype=m.dtype)
    chol, info = torch.linalg.cholesky_ex(0.5 * (m + m.T) + damping * eye)
    if int(info) != 0:
        raise ValueError(
            f"the curvature plus damping={damping:g} times the identity is not positive definite "
            "(singular curvature): pass a damping > 0"
        )
    inv = torch.cholesky_inverse(chol)
    return 0.5 * (inv + inv.T)


class DenseCurvature(Curvature):
    """A curvature given as a dense symmetric PSD matrix ``(P, P)``, with optional named ``blocks``."""

    def __init__(self, matrix: Tensor, *, blocks: Mapping[str, slice] | None = None) -> None:
        if not isinstance(matrix, Tensor) or matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(
                f"matrix must be a square 2-D tensor, got {getattr(matrix, 'shape', type(matrix).__name__)}"
            )
        check_finite(matrix, "matrix")
        self.matrix = matrix
        self.size = int(matrix.shape[0])
        self.dtype = matrix.dtype
        self._blocks = _check_blocks(blocks, self.size)

    def _apply(self, v: Tensor) -> Tensor:
        return self.matrix @ v

    def to_dense(self) -> Tensor:
        return self.matrix.clone()

    def diagonal(self) -> Tensor:
        return self.matrix.diagonal().clone()


class DiagonalCurvature(Curvature):
    """A diagonal curvature given by its diagonal ``(P,)`` (entries >= 0), with optional named ``blocks``."""

    def __init__(self, diagonal: Tensor, *, blocks: Mapping[str, slice] | None = None) -> None:
        if not isinstance(diagonal, Tensor) or diagonal.ndim != 1:
            raise ValueError(
                f"diagonal must be a 1-D tensor, got {getattr(diagonal, 'shape', type(diagonal).__name__)}"
            )
        check_finite(diagonal, "diagonal")
        self.values = diagonal
        self.size = int(diagonal.shape[0])
        self.dtype = diagonal.dtype
        self._blocks = _check_blocks(blocks, self.size)

    def _apply(self, v: Tensor) -> Tensor:
        return self.values.unsqueeze(1) * v

    def to_dense(self) -> Tensor:
        return torch.diag(self.values)

    def diagonal(self) -> Tensor:
        return self.values.clone()

    def inverse(self, damping: float = 0.0) -> DiagonalCurvature:
        d = self.values + self._damping(damping)
        if not bool((d > 0).all()):
            raise ValueError(
                f"the diagonal plus damping={damping:g} has entries <= 0 (singular curvature): pass a damping > 0"
            )
        return DiagonalCurvature(1.0 / d, blocks=self._blocks)

    def block(self, name: str) -> DiagonalCurvature:
        return DiagonalCurvature(self.values[self._slice(name)].clone())


class BlockDiagonalCurvature(Curvature):
    """Named diagonal blocks, each a :class:`Curvature`, laid end to end in the given order.

    ``blocks`` maps a name (a layer) to its curvature; the flat vector is the concatenation of
    the blocks' vectors in that order. Products, diagonals, solves and inverses act block by block.
    """

    def __init__(self, blocks: Mapping[str, Curvature]) -> None:
        if not isinstance(blocks, Mapping) or not blocks:
            raise ValueError("blocks must be a non-empty mapping name -> Curvature")
        pos = 0
        self.parts: dict[str, Curvature] = {}
        self._blocks = {}
        dtypes = set()
        for name, op in blocks.items():
            if not isinstance(op, Curvature):
                raise TypeError(f"blocks[{name!r}] must be a Curvature, got {type(op).__name__}")
            self.parts[str(name)] = op
            self._blocks[str(name)] = slice(pos, pos + op.size)
            pos += op.size
            dtypes.add(op.dtype)
        if len(dtypes) != 1:
            raise ValueError(f"blocks must share one dtype, got {sorted(map(str, dtypes))}")
        self.size = pos
        self.dtype = dtypes.pop()

    def _apply(self, v: Tensor) -> Tensor:
        return torch.cat([op._apply(v[self._blocks[n]]) for n, op in self.parts.items()], dim=0)

    def to_dense(self) -> Tensor:
        return torch.block_diag(*[op.to_dense() for op in self.parts.values()])

    def diagonal(self) -> Tensor:
        return torch.cat([op.diagonal() for op in self.parts.values()])

    def inverse(self, damping: float = 0.0) -> BlockDiagonalCurvature:
        d = self._damping(damping)
        return BlockDiagonalCurvature({n: op.inverse(d) for n, op in self.parts.items()})

    def block(self, name: str) -> Curvature:
        self._slice(name)
        return self.parts[name]


class KroneckerCurvature(Curvature):
    r"""One layer's Kronecker-factored curvature :math:`\phi(A\otimes G)`, :math:`\phi(x) = (x+\delta)^p`.

    The layer's parameters form the matrix :math:`M = [W \mid b]` of shape ``(out, din)``
    (``din = A.shape[0]``); with ``power=1`` and ``shift=0`` the product is
    :math:`(A\otimes G)\operatorname{vec}M = \operatorname{vec}(GMA)`. Vectors are in the
    ``"flat"`` order of the layer's tensors: the weight row-major (``(out, din - 1)`` with a
    bias, ``(out, din)`` without), then the bias when ``bias=True`` (the last column of :math:`M`
    and the last coordinate of :math:`A`, a column of ones in the layer inputs). A bias-only
    block has ``A = [[1]]``. In general

    .. math::

        \phi(A\otimes G)\operatorname{vec}M = \operatorname{vec}\Big(Q_G\big[(Q_G^\top M Q_A)\odot
        \phi(d_G d_A^\top)\big]Q_A^\top\Big)

    with :math:`A = Q_A\operatorname{diag}(d_A)Q_A^\top`, :math:`G = Q_G\operatorname{diag}(d_G)Q_G^\top`
    (eigenvalues clipped at 0: the factors are PSD up to rounding).
    """

    def __init__(
        self, A: Tensor, G: Tensor, *, bias: bool = False, power: float = 1.0, shift: float = 0.0
    ) -> None:
        for name, f in (("A", A), ("G", G)):
            if not isinstance(f, Tensor) or f.ndim != 2 or f.shape[0] != f.shape[1]:
                raise ValueError(
                    f"{name} must be a square 2-D tensor, got {getattr(f, 'shape', type(f).__name__)}"
                )
            check_finite(f, name)
        if A.dtype != G.dtype:
            raise ValueError(f"A and G must share a dtype, got {A.dtype} and {G.dtype}")
        if bias and A.shape[0] < 1:
            raise ValueError("A must have the bias coordinate when bias=True")
        self.A, self.G = A, G
        self.bias = bool(bias)
        self.power = check_real(power, "power")
        self.shift = check_nonnegative_real(shift, "shift")
        self.out, self.din = int(G.shape[0]), int(A.shape[0])
        self.size = self.out * self.din
        self.dtype = A.dtype
        self._blocks = {}
        self._eig: tuple[Tensor, Tensor, Tensor, Tensor] | None = None
        if self.power <= 0 and self.shift == 0:
            lam = self._eigen_values()
            if bool((lam <= 0).any()):
                raise ValueError(
                    f"power={self.power:g} needs a positive definite A (x) G, but it is singular: pass shift > 0"
                )

    # the flat layer vector <-> M = [W | b]
    def _to_matrix(self, v: Tensor) -> Tensor:  # (P, K) -> (K, out, din)
        k = v.shape[1]
        if not self.bias:
            return v.T.reshape(k, self.out, self.din)
        nw = self.out * (self.din - 1)
        w = v[:nw].T.reshape(k, self.out, self.din - 1)
        b = v[nw:].T.reshape(k, self.out, 1)
        return torch.cat([w, b], dim=2)

    def _from_matrix(self, m: Tensor) -> Tensor:  # (K, out, din) -> (P, K)
        k = m.shape[0]
        if not self.bias:
            return m.reshape(k, -1).T
        w = m[:, :, :-1].reshape(k, -1)
        b = m[:, :, -1]
        return torch.cat([w, b], dim=1).T

    def _eigen(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        if self._eig is None:
            da, qa = torch.linalg.eigh(0.5 * (self.A + self.A.T).double())
            dg, qg = torch.linalg.eigh(0.5 * (self.G + self.G.T).double())
            self._eig = (da.clamp_min(0), qa, dg.clamp_min(0), qg)
        return self._eig

    def _eigen_values(self) -> Tensor:
        da, _, dg, _ = self._eigen()
        return torch.outer(dg, da)

    def _phi(self) -> Tensor:
        return (self._eigen_values() + self.shift) ** self.power

    def _apply(self, v: Tensor) -> Tensor:
        m = self._to_matrix(v)
        if self.power == 1.0 and self.shift == 0.0:
            r = self.G @ m @ self.A
        else:
            _, qa, _, qg = self._eigen()
            md = m.double()
            r = (qg @ ((qg.T @ md @ qa) * self._phi()) @ qa.T).to(v.dtype)
        return self._from_matrix(r)

    def to_dense(self) -> Tensor:
        return self._apply(torch.eye(self.size, dtype=self.dtype))

    def diagonal(self) -> Tensor:
        if self.power == 1.0 and self.shift == 0.0:
            d = torch.outer(self.G.diagonal(), self.A.diagonal())
        else:
            _, qa, _, qg = self._eigen()
            d = ((qg**2) @ self._phi() @ (qa**2).T).to(self.dtype)
        return self._from_matrix(d.unsqueeze(0)).squeeze(1)

    def inverse(self, damping: float = 0.0) -> KroneckerCurvature:
        r""":math:`(\phi(A\otimes G) + dI)^{-1}` exactly: defined for ``power=1`` (any damping) and
        for ``damping=0``."""
        d = self._damping(damping)
        if self.power == 1.0:
            return KroneckerCurvature(
                self.A, self.G, bias=self.bias, power=-1.0, shift=self.shift + d
            )
        if d == 0.0:
            return KroneckerCurvature(
                self.A, self.G, bias=self.bias, power=-self.power, shift=self.shift
            )
        raise ValueError(
            f"damping must be 0 for the inverse of a Kronecker block with power={self.power:g} "
            "(((x + s)^p + d)^-1 is not a power of x + s): damp the block with power=1"
        )

    def factors_dense(self) -> Tensor:
        r""":math:`A\otimes G` in the column-major ``[vec(W), b]`` order of
        :func:`igbook.fisher.reorder`'s ``"kronecker"`` layout."""
        return torch.kron(self.A, self.G)

    def __repr__(self) -> str:
        return (
            f"KroneckerCurvature(out={self.out}, din={self.din}, bias={self.bias}, "
            f"power={self.power:g}, shift={self.shift:g})"
        )
