r"""Dense references for K-FAC: the true Fisher of a small network, its layer blocks, exact NGD, costs.

Everything here materializes :math:`d\times d` matrices, so it is for networks with a few
thousand parameters at most: it is what K-FAC is compared *against*. The Fisher of a network
:math:`f(x;\theta)` with likelihood :math:`p(y\mid f)` is the pull-back of the output Fisher
:math:`H_n` (see :meth:`igbook.fisher.likelihoods.Likelihood.output_gradient_samples`) through the Jacobian
:math:`J_n = \partial f(x_n)/\partial\theta`,

.. math::

    F = \frac1N\sum_n J_n^\top H_n J_n

(the generalized Gauss-Newton matrix, :cite:`martens2020new`), computed with
:func:`torch.func.jacrev` and :func:`torch.func.vmap` over :func:`torch.func.functional_call`.
Parameters of ``nn.Linear``/``nn.Conv2d`` layers are ordered as in
:func:`igbook.fisher.layer_vector` (``[vec(W), b]``, column-major: the ``"kronecker"`` order of
:func:`igbook.fisher.reorder`), so the layer blocks of :func:`network_fisher` line up with
:meth:`igbook.kfac.KFACPreconditioner.dense_block`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from igbook._safety import check_nonfinite_mode, first_nonfinite, nonfinite_error
from igbook._validation import (
    check_choice,
    check_count,
    check_positive_real,
    check_scalar,
    check_seed,
)
from igbook.fisher.kronecker import REDUCTIONS
from igbook.fisher.layout import ParameterLayout, parameter_layout, reorder
from igbook.fisher.likelihoods import Likelihood, get_likelihood
from igbook.fisher.models import curvature_matrix
from igbook.fisher.types import FisherType
from igbook.kfac.blocks import check_factor_decay, check_fisher_type
from igbook.natgrad.core import natural_gradient

__all__ = [
    "ParameterLayout",
    "network_fisher",
    "layer_fisher_blocks",
    "DenseNaturalGradient",
    "CurvatureCosts",
    "curvature_costs",
]


def network_fisher(
    model: nn.Module,
    inputs: Tensor,
    *,
    likelihood: Likelihood | str,
    fisher_type: FisherType | str = FisherType.EXACT,
    targets: Tensor | None = None,
    mc_samples: int = 1,
    seed: int = 0,
    reduction: str = "mean",
) -> tuple[Tensor, ParameterLayout]:
    r"""The dense Fisher (exact = GGN, Monte Carlo or empirical) of a network, in K-FAC's parameter order.

    .. math::

        F = \frac{1}{N}\sum_{n=1}^N\sum_k J_n^\top v_{kn} v_{kn}^\top J_n

    with :math:`v_{kn}` from :meth:`igbook.fisher.likelihoods.Likelihood.output_gradient_samples`
    (``reduction="sum"`` drops the :math:`1/N`): :func:`igbook.fisher.curvature_matrix`
    reordered by :func:`igbook.fisher.reorder` into the ``"kronecker"`` layout, so that its layer
    blocks line up with :meth:`igbook.kfac.KFACPreconditioner.dense_block`. Returns
    ``(F, layout)``; ``F`` has the dtype of the parameters.

    Parameters
    ----------
    model
        The network.
    inputs
        A batch, shape ``(N, ...)``.
    likelihood, fisher_type, targets, mc_samples
        As in :class:`igbook.kfac.KFACPreconditioner`; ``seed`` seeds the sampled labels.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    lik = get_likelihood(likelihood)
    ftype = check_fisher_type(fisher_type, lik)
    reduction = check_choice(reduction, "reduction", REDUCTIONS)
    if not isinstance(inputs, Tensor) or inputs.ndim < 1 or inputs.shape[0] < 1:
        raise ValueError("inputs must be a tensor with a non-empty batch axis")
    fm = curvature_matrix(
        model, None, inputs, targets, lik, ftype, mc_samples=mc_samples, seed=check_seed(seed)
    )
    assert isinstance(fm, Tensor)
    fm = reorder(fm, model, matrix=True)
    if reduction == "sum":
        fm = fm * inputs.shape[0]
    return fm, parameter_layout(model, "kronecker")


def layer_fisher_blocks(model: nn.Module, inputs: Tensor, **kwargs: Any) -> dict[str, Tensor]:
    r"""The diagonal blocks of :func:`network_fisher` for each ``Linear``/``Conv2d`` layer.

    Keys are module names; each block is in the ``[vec(W), b]`` ordering of
    :meth:`igbook.kfac.core.KFACPreconditioner.dense_block`, so the two can be compared entrywise.
    Keyword arguments go to :func:`network_fisher`.
    """
    Fm, layout = network_fisher(model, inputs, **kwargs)
    return {name: Fm[sl, sl].clone() for name, sl in layout.layers.items()}


class DenseNaturalGradient(torch.optim.Optimizer):
    r"""Exact (dense, damped) natural-gradient descent for *small* networks.

    .. math:: \theta \leftarrow \theta - \eta\,(F + \lambda I)^{-1}\nabla L,

    with :math:`F` from :func:`network_fisher` on the current batch (refreshed by
    :meth:`update_curvature`), averaged over batches like K-FAC's factors
    (:math:`F_k = \varepsilon_k F_{k-1} + (1-\varepsilon_k)\hat F_k`,
    :math:`\varepsilon_k = \min(1 - 1/k, \varepsilon)`, ``curvature_decay`` :math:`=\varepsilon`; 1e-9 keeps only
    the current batch), and the solve by :func:`igbook.natgrad.core.natural_gradient`; ``kl_clip``
    scales the step as in :class:`igbook.kfac.KFACPreconditioner`
    :cite:`amari1998natural`. Costs :math:`O(NCd^2 + d^3)` per step: the reference against
    which K-FAC is judged, not a practical optimizer.

    Usage::

        opt = DenseNaturalGradient(model, likelihood="bernoulli", lr=1.0, damping=1e-3)
        opt.zero_grad(); opt.update_curvature(x); loss.backward(); opt.step()

    A non-finite gradient or Fisher raises :class:`~igbook.optim.NonFiniteStepError`
    before anything is written (``nonfinite="skip"``: the step is skipped, ``skipped_steps``
    counts them); the curvature is then put back to its value before this step's
    :meth:`update_curvature`. :meth:`state_dict` holds the running Fisher and the call
    counter (which seeds the sampled labels), so a resumed run continues bit for bit.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        likelihood: Likelihood | str,
        lr: float = 1.0,
        damping: float = 1e-3,
        momentum: float = 0.0,
        fisher_type: FisherType | str = FisherType.EXACT,
        mc_samples: int = 1,
        curvature_decay: float = 0.95,
        kl_clip: float | None = None,
        seed: int = 0,
        nonfinite: str = "raise",
    ) -> None:
        """See the class docstring; ``nonfinite`` is ``"raise"`` (default) or ``"skip"``."""
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        lr = check_positive_real(lr, "lr")
        self.curvature_decay = check_factor_decay(curvature_decay)
        self.kl_clip = None if kl_clip is None else check_positive_real(kl_clip, "kl_clip")
        damping = check_positive_real(damping, "damping")
        momentum = check_scalar(momentum, "momentum", low=0.0, high=1.0, closed_high=False)
        params = [p for p in model.parameters() if p.requires_grad]
        super().__init__(params, {"lr": lr, "damping": damping, "momentum": float(momentum)})
        self.model = model
        self.likelihood = get_likelihood(likelihood)
        self.fisher_type = check_fisher_type(fisher_type, self.likelihood)
        self.mc_samples = check_count(mc_samples, "mc_samples")
        self._seed = check_seed(seed)
        self._calls = 0
        self.fisher: Tensor | None = None
        self.layout = parameter_layout(model, "kronecker")
        named = dict(model.named_parameters())
        self._named = {e[0]: named[e[0]] for e in self.layout.entries}
        self.nonfinite = check_nonfinite_mode(nonfinite)
        #: number of steps skipped under ``nonfinite="skip"``
        self.skipped_steps = 0
        self._before: tuple[Tensor | None, int] | None = None  # curvature before update_curvature
        self._skip_pending = False

    def update_curvature(self, inputs: Tensor, targets: Tensor | None = None) -> Tensor:
        """Fold the dense Fisher at the current parameters on ``inputs`` into the running average.

        Returns the average."""
        fhat, _ = network_fisher(
            self.model,
            inputs,
            likelihood=self.likelihood,
            fisher_type=self.fisher_type,
            targets=targets,
            mc_samples=self.mc_samples,
            seed=self._seed + self._calls,
        )
        if first_nonfinite([fhat]) is not None:
            if self.nonfinite != "skip":
                raise nonfinite_error(
                    type(self).__name__, "curvature statistic (dense Fisher)", "<all>"
                )
            self._before = (self.fisher, self._calls)
            self._calls += 1
            self._skip_pending = True
            return self.fisher if self.fisher is not None else fhat
        self._before = (self.fisher, self._calls)
        self._calls += 1
        eps = min(1.0 - 1.0 / self._calls, self.curvature_decay)
        self.fisher = fhat if self.fisher is None else eps * self.fisher + (1.0 - eps) * fhat
        return self.fisher

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        """The torch state plus the running Fisher and the call counter (key ``"curvature"``)."""
        sd = super().state_dict()
        sd["curvature"] = {
            "fisher": None if self.fisher is None else self.fisher.clone(),
            "calls": self._calls,
        }
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # type: ignore[override]
        """Restore a :meth:`state_dict` (the running Fisher and the call counter too)."""
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        sd = dict(state_dict)
        cur = sd.pop("curvature", None)
        super().load_state_dict(sd)
        if cur is not None:
            self.fisher = None if cur["fisher"] is None else cur["fisher"].clone()
            self._calls = int(cur["calls"])
        self._before, self._skip_pending = None, False

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:  # type: ignore[override]
        """One damped natural-gradient step on the current ``.grad``."""
        loss = None
        if closure is not None:
            try:
                with torch.enable_grad():
                    loss = closure()
            except BaseException:
                if self._before is not None:  # the curvature as before this step's update_curvature
                    self.fisher, self._calls = self._before
                self._before, self._skip_pending = None, False
                raise
        bad = first_nonfinite([p.grad for p in self._named.values()])
        if bad is not None or self._skip_pending:
            if self._before is not None:
                self.fisher, self._calls = self._before
            self._before, self._skip_pending = None, False
            if self.nonfinite == "skip":
                self.skipped_steps += 1
                return loss
            raise nonfinite_error(type(self).__name__, "gradient", list(self._named)[bad or 0])
        self._before = None
        if self.fisher is None:
            raise RuntimeError("call update_curvature(inputs) before step()")
        grads = {
            k: (p.grad if p.grad is not None else torch.zeros_like(p))
            for k, p in self._named.items()
        }
        g = self.layout.flatten(grads)
        group = self.param_groups[0]
        g64 = g.to(torch.float64)
        active = {k: p.grad is not None for k, p in self._named.items()}
        if all(active.values()):
            v = natural_gradient(self.fisher.to(torch.float64), g64, damping=group["damping"])
        else:  # parameters without a gradient are held fixed (torch.optim): solve on the others
            keep = torch.cat(
                [
                    torch.full((sl.stop - sl.start,), active[pn])
                    for pn, _, sl, _ in self.layout.entries
                ]
            )
            idx = keep.nonzero().squeeze(-1)
            f64 = self.fisher.to(torch.float64)
            v = torch.zeros_like(g64)
            if idx.numel():
                v[idx] = natural_gradient(f64[idx][:, idx], g64[idx], damping=group["damping"])
        if self.kl_clip is not None:  # the same rule as KFACPreconditioner's kl_clip
            kl = 0.5 * group["lr"] ** 2 * max(float(v @ g64), 0.0)
            if kl > self.kl_clip:
                v = v * (self.kl_clip / kl) ** 0.5
        upd = self.layout.unflatten(v.to(g.dtype), grads)
        mu = group["momentum"]
        for k, p in self._named.items():
            if not active[k]:
                continue
            d = upd[k]
            if mu:
                st = self.state[p]
                buf = st.get("momentum_buffer")
                if buf is None:
                    buf = st["momentum_buffer"] = d.clone()
                else:
                    buf.mul_(mu).add_(d)
                d = buf
            p.add_(d, alpha=-group["lr"])
        return loss


@dataclass(frozen=True)
class CurvatureCosts:
    """Storage and arithmetic of the exact Fisher block of one layer against K-FAC's two factors."""

    n_in: int
    n_out: int
    parameters: int
    dense_entries: int
    dense_bytes: int
    dense_inverse_flops: float
    kfac_entries: int
    kfac_bytes: int
    kfac_inverse_flops: float
    dense_solve_flops: float
    kfac_solve_flops: float

    def rows(self) -> list[tuple[str, str, str]]:
        """Table rows ``(quantity, exact block, K-FAC)`` with human-readable numbers."""

        def b(x: float) -> str:
            for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
                if x < 1000:
                    return f"{x:.3g} {unit}"
                x /= 1000
            return f"{x:.3g} EB"

        return [
            ("parameters", f"{self.parameters:,}", f"{self.parameters:,}"),
            ("matrix entries", f"{self.dense_entries:.3g}", f"{self.kfac_entries:.3g}"),
            ("memory (float64)", b(self.dense_bytes), b(self.kfac_bytes)),
            (
                "inverse (flops)",
                f"{self.dense_inverse_flops:.3g}",
                f"{self.kfac_inverse_flops:.3g}",
            ),
            (
                "preconditioning a gradient (flops)",
                f"{self.dense_solve_flops:.3g}",
                f"{self.kfac_solve_flops:.3g}",
            ),
        ]


def curvature_costs(
    n_in: int, n_out: int, *, bias: bool = True, bytes_per_entry: int = 8
) -> CurvatureCosts:
    r"""Costs of the exact Fisher block of an ``n_in -> n_out`` layer against its K-FAC factors.

    With :math:`d = (n_\text{in}+1)\,n_\text{out}` parameters (bias as a ones column), the exact
    block has :math:`d^2` entries and a Cholesky-based inverse costs about :math:`d^3` flops
    (:math:`d^3/3` for the factorization, :math:`2d^3/3` to invert); K-FAC stores
    :math:`(n_\text{in}+1)^2 + n_\text{out}^2` entries and inverts them in
    :math:`(n_\text{in}+1)^3 + n_\text{out}^3` flops. Preconditioning one gradient costs
    :math:`2d^2` flops densely and :math:`2 n_\text{out} (n_\text{in}+1)(n_\text{in}+1+n_\text{out})`
    flops as :math:`G^{-1} V A^{-1}`.
    """
    for v, name in ((n_in, "n_in"), (n_out, "n_out"), (bytes_per_entry, "bytes_per_entry")):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    a = n_in + (1 if bias else 0)
    d = a * n_out
    dense_entries = d * d
    kfac_entries = a * a + n_out * n_out
    return CurvatureCosts(
        n_in=n_in,
        n_out=n_out,
        parameters=d,
        dense_entries=dense_entries,
        dense_bytes=dense_entries * bytes_per_entry,
        dense_inverse_flops=float(d) ** 3,
        kfac_entries=kfac_entries,
        kfac_bytes=kfac_entries * bytes_per_entry,
        kfac_inverse_flops=float(a) ** 3 + float(n_out) ** 3,
        dense_solve_flops=2.0 * float(d) ** 2,
        kfac_solve_flops=2.0 * n_out * a * (a + n_out),
    )
