r"""VON and VOGN :cite:`khan2018fast,osawa2019practical`: the diagonal BLR with a Newton-like update.

Both keep :math:`s` (the curvature of the *average* loss) and take
:math:`s \leftarrow \beta s + (1-\beta)\hat h`,
:math:`m \leftarrow m - \alpha(\hat g + \tilde\lambda m)/(s + \tilde\lambda)`. VON's
:math:`\hat h` is the diagonal Hessian of whatever loss its closure returns; VOGN's is a
Gauss-Newton/Fisher diagonal of a likelihood (:class:`~igbook.optim.blr.closures.PerExampleClosure`,
computed by :mod:`igbook.fisher`), chosen by ``fisher_type``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from igbook._validation import (
    check_choice,
    check_count,
    check_nonnegative_real,
    check_positive_real,
)
from igbook.fisher import FisherType, as_fisher_type
from igbook.optim.blr.base import Closure, VariationalOptimizer, check_beta
from igbook.optim.blr.closures import PerExampleClosure

__all__ = ["VON", "VOGN", "VOGN_FISHER_TYPES"]

#: the curvatures VOGN accepts (each a positive semidefinite diagonal; the Hessian is VON's)
VOGN_FISHER_TYPES = (FisherType.EMPIRICAL, FisherType.MC, FisherType.EXACT, FisherType.GGN)

#: VOGN's old ``fisher=`` spellings (deprecated) and the FisherType they mean
_OLD_FISHER = {"empirical": FisherType.EMPIRICAL, "sampled": FisherType.MC}


class _NewtonBase(VariationalOptimizer):
    """VON/VOGN: s <- beta s + (1-beta) hhat; m <- m - lr (g + lt m)/(s + lt)."""

    _manual_sampling = False
    _precision_keys = ("data_size", "prior_precision")

    def _validate_common(self, group: dict[str, Any]) -> None:
        group["lr"] = check_nonnegative_real(group["lr"], "lr")
        group["data_size"] = check_count(group["data_size"], "data_size")
        group["beta"] = check_beta(group["beta"], "beta")
        group["prior_precision"] = check_positive_real(group["prior_precision"], "prior_precision")
        group["hess_init"] = check_nonnegative_real(group["hess_init"], "hess_init")

    _local_statistics = True  # gradient and curvature come from the closure, not DDP

    def _init_state(self, group: dict[str, Any], p: Tensor) -> None:
        st = self.state[p]
        st["step"] = 0
        st["hess"] = torch.full_like(p, group["hess_init"], memory_format=torch.preserve_format)

    def _precision(self, group: dict[str, Any], p: Tensor) -> Tensor:
        return group["data_size"] * self.state[p]["hess"] + group["prior_precision"]

    def _accumulate(self, stats: dict[str, list[Tensor]]) -> None:
        self._count += 1
        if self._acc is None:
            self._acc = {k: [t.detach().clone() for t in v] for k, v in stats.items()}
            return
        for k, v in stats.items():
            avg = self._acc[k]
            delta = torch._foreach_sub([t.detach() for t in v], avg)
            torch._foreach_div_(delta, float(self._count))
            torch._foreach_add_(avg, delta)

    def _newton_update(self, loss: Any = None) -> None:
        acc = self._take_samples()
        self._check_finite(acc, loss)
        moving = self._moving
        new_hess: list[list[Tensor]] = []
        for group, sl in self._split():
            b = group["beta"]
            hs = [self.state[p]["hess"] for p in group["params"]]
            nh = [b * h + (1.0 - b) * e for h, e in zip(hs, acc["hess"][sl], strict=False)]
            tl = group["prior_precision"] / group["data_size"]
            for h in nh:
                if not bool(torch.isfinite(h).all()) or not bool((h + tl > 0).all()):
                    raise RuntimeError(
                        f"{type(self).__name__}: the posterior precision N*s + prior_precision became "
                        "non-positive or non-finite (negative curvature of the loss); increase "
                        "prior_precision or beta, lower lr, or use a Gauss-Newton curvature (VOGN) or "
                        "IVON's corrected update"
                    )
            new_hess.append(nh)
        for (group, sl), nh in zip(self._split(), new_hess, strict=False):
            tl = group["prior_precision"] / group["data_size"]
            for p, h_new, g, mv in zip(
                group["params"], nh, acc["grad"][sl], moving[sl], strict=False
            ):
                if not mv:
                    continue
                st = self.state[p]
                st["step"] += 1
                st["hess"].copy_(h_new)
                p.sub_(group["lr"] * (g + tl * p) / (h_new + tl))


class VON(_NewtonBase):
    r"""Variational Online Newton :cite:`khan2018fast`: the diagonal BLR with sampled Hessians.

    At :math:`\theta \sim \mathcal{N}(m, 1/(N(s + \tilde\lambda)))`, :math:`\tilde\lambda = \lambda/N`:

    .. math::

        s \leftarrow \beta\,s + (1-\beta)\,\operatorname{diag}\nabla^2\hat f(\theta), \qquad
        m \leftarrow m - \alpha\,\frac{\nabla\hat f(\theta) + \tilde\lambda m}{s + \tilde\lambda}.

    (The paper writes the average as :math:`(1-\beta)s + \beta\,\hat h`; here ``beta`` is the
    weight of the *old* value, as in Adam's :math:`\beta_2`.) With ``lr = 1 - beta`` this is
    exactly one diagonal BLR step (:func:`igbook.vi.blr.blr_step`) on
    :math:`\bar\ell = N\hat f + \tfrac\lambda2\|\theta\|^2` with one Monte Carlo sample.

    The closure must return the average minibatch loss **without** calling ``backward()``:
    VON differentiates it twice. ``hessian="exact"`` computes the diagonal with one
    Hessian-vector product per parameter entry (batched; for small models, e.g. in tests);
    ``hessian="hutchinson"`` uses :math:`\operatorname{diag}H \approx \frac1K\sum_k v_k\odot Hv_k`
    with ``hutchinson_samples`` Rademacher probes (unbiased). A negative curvature that makes
    the precision non-positive raises :class:`RuntimeError` rather than producing ``nan``.

    Parameters
    ----------
    params
        Parameters or param groups.
    lr
        :math:`\alpha \ge 0`.
    data_size
        :math:`N \ge 1`.
    beta
        Weight of the old curvature, in :math:`[0, 1)`.
    prior_precision
        :math:`\lambda > 0`.
    hess_init
        Initial :math:`s \ge 0`.
    mc_samples
        Weight samples per step.
    hessian
        ``"exact"`` or ``"hutchinson"``.
    hutchinson_samples
        Probes per weight sample for ``"hutchinson"``.
    seed, generator
        Randomness of the weight samples and probes.
    nonfinite, move_without_grad
        See :class:`IVON` (a parameter the loss does not depend on has no gradient).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float,
        data_size: int,
        beta: float = 0.999,
        prior_precision: float = 1.0,
        hess_init: float = 1.0,
        mc_samples: int = 1,
        hessian: str = "exact",
        hutchinson_samples: int = 1,
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        nonfinite: str = "raise",
        move_without_grad: bool = False,
    ) -> None:
        self.hessian = check_choice(hessian, "hessian", ("exact", "hutchinson"))
        self.hutchinson_samples = check_count(hutchinson_samples, "hutchinson_samples")
        defaults = dict(
            lr=lr,
            data_size=data_size,
            beta=beta,
            prior_precision=prior_precision,
            hess_init=hess_init,
        )
        self._validate_group(defaults)
        super().__init__(
            params,
            defaults,
            mc_samples=mc_samples,
            seed=seed,
            generator=generator,
            nonfinite=nonfinite,
            move_without_grad=move_without_grad,
        )

    def _validate_group(self, group: dict[str, Any]) -> None:
        self._validate_common(group)

    def _hessian_diagonal(self, grads: Sequence[Tensor], params: list[Tensor]) -> list[Tensor]:
        if self.hessian == "exact":
            out = []
            for gi, p in zip(grads, params, strict=False):
                n = p.numel()
                if not gi.requires_grad:  # the loss is linear in p
                    out.append(torch.zeros_like(p))
                    continue
                basis = torch.eye(n, dtype=p.dtype, device=p.device).view(n, *p.shape)
                (hv,) = torch.autograd.grad(
                    gi,
                    p,
                    grad_outputs=basis,
                    is_grads_batched=True,
                    retain_graph=True,
                    allow_unused=True,
                )
                if hv is None:
                    out.append(torch.zeros_like(p))
                else:
                    out.append(torch.diagonal(hv.reshape(n, n)).reshape(p.shape))
            return out
        k = self.hutchinson_samples
        probes = [
            torch.randint(0, 2, (k, *p.shape), generator=self._generator, device=p.device).to(
                p.dtype
            )
            * 2
            - 1
            for p in params
        ]
        live = [i for i, gi in enumerate(grads) if gi.requires_grad]
        out = [torch.zeros_like(p) for p in params]
        if live:
            hvs = torch.autograd.grad(
                [grads[i] for i in live],
                params,
                grad_outputs=[probes[i] for i in live],
                is_grads_batched=True,
                allow_unused=True,
            )
            for j, (hv, v) in enumerate(zip(hvs, probes, strict=False)):
                if hv is not None:
                    out[j] = (v * hv).mean(0)
        return out

    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> Tensor:  # type: ignore[override]
        """One VON step. ``closure()`` returns the average minibatch loss, no ``backward()``."""
        if closure is None:
            raise TypeError(
                "VON.step needs a closure that returns the loss (without calling backward())"
            )
        if self._sampling:
            raise RuntimeError("step() cannot be called inside sampled_params()")
        return self._guarded(lambda: self._step(closure))

    def _step(self, closure: Closure) -> Tensor:
        params = self._params()
        losses = []
        for _ in range(self.mc_samples):
            with self.sampled_params():
                for p in params:
                    p.grad = None
                with torch.enable_grad():
                    loss = closure()
                    if not isinstance(loss, Tensor) or loss.ndim != 0:
                        raise TypeError(
                            "VON's closure must return a scalar tensor (the average loss)"
                        )
                    if any(p.grad is not None for p in params):
                        raise RuntimeError(
                            "VON's closure must return the loss without calling backward(): "
                            "VON differentiates it twice itself"
                        )
                    if not loss.requires_grad:
                        raise RuntimeError(
                            "the loss returned by the closure does not depend on the parameters"
                        )
                    live = [p.requires_grad for p in params]
                    got = torch.autograd.grad(
                        loss,
                        [p for p, lv in zip(params, live, strict=False) if lv],
                        create_graph=True,
                        allow_unused=True,
                    )
                    it = iter(got)
                    grads = [next(it) if lv else None for lv in live]
                    self._note_grads([g is not None for g in grads])
                    grads = [
                        torch.zeros_like(p) if g is None else g
                        for g, p in zip(grads, params, strict=False)
                    ]
                    hdiag = self._hessian_diagonal(grads, params)
                self._accumulate({"grad": [g.detach() for g in grads], "hess": hdiag})
                losses.append(loss.detach())
        mean_loss = torch.stack(losses).mean()
        self._newton_update(mean_loss)
        return mean_loss


class VOGN(_NewtonBase):
    r"""Variational Online Gauss-Newton :cite:`khan2018fast,osawa2019practical`.

    VON with the Hessian of the average loss replaced by a positive semidefinite
    Gauss-Newton/Fisher diagonal :math:`\hat h(\theta)` at the sampled weights:

    .. math::

        s \leftarrow \beta\,s + (1-\beta)\,\hat h(\theta), \qquad
        m \leftarrow m - \alpha\,\frac{\hat g(\theta) + \tilde\lambda m}{s + \tilde\lambda}.

    :math:`\hat h \ge 0`, so the precision stays positive. The closure is a
    :class:`PerExampleClosure` (or an object with the same methods); the curvature comes from
    :mod:`igbook.fisher` through it, for the closure's likelihood. ``fisher_type``
    (:class:`igbook.fisher.FisherType`) chooses :math:`\hat h`:

    - ``EMPIRICAL`` (the paper's choice, the default): :math:`\frac1M\sum_i g_i^2` with the
      observed :math:`y_i`, the diagonal *empirical Fisher*; it differs from the Hessian/GGN
      unless residuals match the model's noise :cite:`kunstner2019limitations`, so the
      variances are biased;
    - ``MC``: the same with :math:`\tilde y_i \sim p(y\mid x_i, \theta)`, one draw per example
      and weight sample; :math:`\mathbb{E}[g_i^2]` is the diagonal of the Fisher (= GGN for
      the canonical likelihoods) of example :math:`i`: an unbiased estimate (for linear
      regression, of the exact Hessian);
    - ``EXACT``: the diagonal of the Fisher :math:`\frac1M\sum_i J_i^\top\Lambda(f_i)J_i` in
      closed form (:func:`igbook.fisher.curvature_matrix`, ``structure="diagonal"``): the
      expectation of the ``MC`` estimate, without its noise, at :math:`C` vector-Jacobian
      products per example for :math:`C` outputs;
    - ``GGN``: the diagonal of the generalized Gauss-Newton matrix (equal to ``EXACT`` for the
      canonical likelihoods; for ``BernoulliLikelihood(link="probit")`` its loss Hessian may
      be indefinite).

    ``HESSIAN`` is not accepted: the diagonal Hessian can be negative, which is :class:`VON`.
    The mean gradient :math:`\hat g` always uses the observed targets.

    Parameters are those of :class:`VON` (``hessian`` aside) plus ``fisher_type``;
    ``fisher="empirical"|"sampled"`` is the deprecated spelling (one release; a
    :class:`DeprecationWarning`) of ``fisher_type=FisherType.EMPIRICAL|FisherType.MC``.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float,
        data_size: int,
        beta: float = 0.999,
        prior_precision: float = 1.0,
        hess_init: float = 1.0,
        mc_samples: int = 1,
        fisher_type: FisherType | str | None = None,
        *,
        fisher: str | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        nonfinite: str = "raise",
        move_without_grad: bool = False,
    ) -> None:
        if fisher is not None:
            if fisher_type is not None:
                raise ValueError("pass fisher_type only (fisher is its deprecated spelling)")
            fisher_type = self._deprecated(
                check_choice(fisher, "fisher", tuple(_OLD_FISHER)), "fisher"
            )
        elif isinstance(fisher_type, str) and fisher_type == "sampled":  # the old positional value
            fisher_type = self._deprecated(fisher_type, "fisher_type")
        #: the curvature :math:`\hat h` (a member of :data:`VOGN_FISHER_TYPES`)
        self.fisher_type = as_fisher_type(
            FisherType.EMPIRICAL if fisher_type is None else fisher_type, allowed=VOGN_FISHER_TYPES
        )
        defaults = dict(
            lr=lr,
            data_size=data_size,
            beta=beta,
            prior_precision=prior_precision,
            hess_init=hess_init,
        )
        self._validate_group(defaults)
        super().__init__(
            params,
            defaults,
            mc_samples=mc_samples,
            seed=seed,
            generator=generator,
            nonfinite=nonfinite,
            move_without_grad=move_without_grad,
        )

    @staticmethod
    def _deprecated(value: str, name: str) -> FisherType:
        new = _OLD_FISHER[value]
        warnings.warn(
            f"VOGN({name}={value!r}) is deprecated; use fisher_type=FisherType.{new.name} ({new.value!r})",
            DeprecationWarning,
            stacklevel=3,
        )
        return new

    def _validate_group(self, group: dict[str, Any]) -> None:
        self._validate_common(group)

    @torch.no_grad()
    def step(self, closure: PerExampleClosure | None = None) -> Tensor:  # type: ignore[override]
        """One VOGN step on the minibatch of ``closure`` (a :class:`PerExampleClosure`)."""
        if closure is None or not hasattr(closure, "per_example_gradients"):
            raise TypeError(
                "VOGN.step needs a PerExampleClosure(model, inputs, targets, likelihood) "
                "(per-example gradients and curvature come from igbook.fisher)"
            )
        if self.fisher_type in (FisherType.EXACT, FisherType.GGN) and not hasattr(
            closure, "curvature_diagonal"
        ):
            raise TypeError(
                f"VOGN with fisher_type={self.fisher_type.value!r} needs a closure with curvature_diagonal()"
            )
        if self._sampling:
            raise RuntimeError("step() cannot be called inside sampled_params()")
        return self._guarded(lambda: self._step(closure))

    def _step(self, closure: PerExampleClosure) -> Tensor:
        params = self._params()
        ftype = self.fisher_type
        losses = []
        for _ in range(self.mc_samples):
            with self.sampled_params():
                self._note_grads([p.requires_grad for p in params])
                per_loss, per_grads = closure.per_example_gradients(params)
                mean_grads = [g.mean(0) for g in per_grads]
                hess: Sequence[Tensor]
                if ftype is FisherType.MC:
                    y_tilde = closure.sample_targets(self._generator)
                    _, per_grads = closure.per_example_gradients(params, targets=y_tilde)
                if ftype in (FisherType.EMPIRICAL, FisherType.MC):
                    hess = [(g * g).mean(0) for g in per_grads]
                else:
                    hess = closure.curvature_diagonal(params, ftype)
                self._accumulate({"grad": mean_grads, "hess": list(hess)})
                losses.append(per_loss.mean())
        mean_loss = torch.stack(losses).mean()
        self._newton_update(mean_loss)
        return mean_loss
