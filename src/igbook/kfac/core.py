r"""K-FAC: Kronecker-factored approximate curvature for ``nn.Linear`` and ``nn.Conv2d`` layers.

For a layer :math:`s = W\bar a` with input :math:`\bar a = (a, 1)` (the bias as a column of ones)
the gradient of the per-example loss with respect to :math:`W` is :math:`g\,\bar a^\top`, where
:math:`g = \partial \ell/\partial s`. With the column-major vectorization
:math:`\operatorname{vec}(g\bar a^\top) = \bar a\otimes g`, the layer's block of the Fisher is

.. math::

    F_\ell = \E\big[\bar a\bar a^\top\otimes g g^\top\big]
    \approx \E\big[\bar a\bar a^\top\big]\otimes\E\big[g g^\top\big] = A\otimes G

:cite:`martens2015optimizing`, and, since :math:`(A\otimes G)^{-1} = A^{-1}\otimes G^{-1}`, the
preconditioned gradient of a layer with gradient matrix :math:`V` is :math:`G^{-1} V A^{-1}`.

Conventions (all of them explicit arguments):

* **Fisher type** (``fisher_type``, a :class:`~igbook.fisher.FisherType`): ``"mc"`` (the
  default) backpropagates labels *sampled from the model's predictive distribution*,
  ``"exact"`` backpropagates the columns of a square root of the output Fisher (Martens and
  Grosse's "type-2" statistics; the exact Fisher = GGN of :cite:`botev2017practical`; the old
  spelling ``"type2"`` is a deprecated alias), ``"empirical"`` backpropagates the *observed*
  labels (the empirical Fisher, which is *not* the Fisher :cite:`kunstner2019limitations`; only
  on request). The vectors come from
  :meth:`igbook.fisher.likelihoods.Likelihood.output_gradient_samples`, the same as for every
  other curvature in igbook.
* **Likelihood** (``likelihood``): any :class:`igbook.fisher.likelihoods.Likelihood` or its
  name: ``"categorical"`` (``F.cross_entropy`` on logits), ``"bernoulli"`` (independent
  Bernoulli outputs, ``F.binary_cross_entropy_with_logits`` summed over outputs),
  ``"gaussian"`` (``GaussianLikelihood(variance=...)``; the default variance 1 gives
  :math:`\tfrac12\lVert y - f\rVert^2` summed over outputs). The per-example loss must be the
  negative log-likelihood :math:`\ell_n = -\log p(y_n\mid f(x_n))`, see
  :func:`igbook.kfac.negative_log_likelihood`.
* **Reduction** (``reduction``): with ``"mean"`` (the default) the factors approximate the
  curvature of :math:`\tfrac1N\sum_n\ell_n`, the Fisher as a mean over data points; with
  ``"sum"`` that of :math:`\sum_n\ell_n`, which is :math:`N` times larger (``G`` carries the
  factor :math:`N`). Use the reduction of the loss whose gradient you precondition.
* **Bias** (``bias``): ``"joint"`` (the default, as in :cite:`martens2015optimizing`) appends a
  ones column to the inputs, so ``[W | b]`` forms one block with an
  :math:`(d_\text{in}+1)\times(d_\text{in}+1)` factor ``A``; ``"separate"`` gives ``W`` the block
  :math:`A\otimes G` and ``b`` its own block :math:`1\otimes G` (no weight-bias coupling).
* **Ordering**: a layer's parameters are vectorized column-major, ``[vec(W), b]`` with
  :math:`\operatorname{vec}(W)` stacking the columns of the ``(out, in)`` weight matrix
  (``W.T.reshape(-1)``); :meth:`KFACPreconditioner.dense_block` uses this ordering and
  :func:`~igbook.fisher.layout.layer_vector` produces it.
* **Weight sharing** (``nn.Conv2d``, ``nn.Linear`` on inputs with extra leading axes): the
  "expand" convention of :cite:`grosse2016kronecker`: :math:`A` averages
  :math:`\bar a\bar a^\top` over data points *and* positions, :math:`G` sums
  :math:`gg^\top` over positions and averages over data points.

Numerical safety: the moving averages of the factors are kept in the parameters' dtype (float64 for every verified
result); inverses are computed in float64, by Cholesky (factored damping) with a fallback to a symmetric
eigendecomposition whose negative eigenvalues (rounding noise of a positive semi-definite factor) are clipped to zero,
or by the eigendecomposition directly (exact damping). The one exception: a float32 factor whose damped condition number
is provably at most ``FLOAT32_INVERSE_MAX_CONDITION`` (:math:`10^3`, bounded by :math:`(\operatorname{tr} M + c)/c`) is
inverted in float32, which loses at most about :math:`10^{-4}` relative accuracy and halves the cost of the inverses.
Damping must be strictly positive, so every damped matrix is positive definite and no step is ever ``inf`` or ``nan``.

Distributed (``torch.distributed`` with ``DistributedDataParallel``): the per-rank batch statistics of :math:`A` and
:math:`G` are averaged over the process group before they enter the moving averages (``igbook._distributed``), so with
equal per-rank batches every rank holds the factors of the global batch; each rank computes the same inverses itself
(deterministic, no broadcast). Sampled labels use ``seed + rank``.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import Tensor, nn

from igbook._distributed import (
    active_group,
    any_rank,
    check_process_group,
    rank_seed,
)
from igbook._safety import first_nonfinite, nonfinite_error
from igbook._validation import (
    check_choice,
    check_integer,
    check_positive_real,
)
from igbook.fisher.kronecker import (
    BIAS_MODES,
    REDUCTIONS,
    KroneckerFactors,
    backpropagate_output_vectors,
    kronecker_layers,
    layer_input_rows,
    layer_output_rows,
)
from igbook.fisher.likelihoods import Likelihood, get_likelihood
from igbook.fisher.types import FisherType
from igbook.kfac.blocks import (
    DAMPING_MODES,
    FISHER_TYPES,
    LayerBlock,
    check_factor_decay,
    check_fisher_type,
    make_kfac_generator,
)
from igbook.kfac.distributed import update_factors_distributed
from igbook.kfac.inverses import damped_inverse, psd_eigh

__all__ = ["FISHER_TYPES", "DAMPING_MODES", "KFACPreconditioner"]


class KFACPreconditioner:
    r"""K-FAC preconditioner: rewrites the gradients of supported layers in place.

    For every ``nn.Linear`` and ``nn.Conv2d`` layer of ``model`` it keeps exponential moving
    averages of the Kronecker factors :math:`A` and :math:`G` and replaces the layer's gradient
    matrix :math:`V` (``[grad W | grad b]``) by the damped natural gradient

    .. math::

        \text{factored (π-heuristic):}\quad
        (G + \tfrac{\sqrt\lambda}{\pi} I)^{-1}\, V\, (A + \pi\sqrt\lambda I)^{-1},\qquad
        \pi = \sqrt{\frac{\operatorname{tr}(A)/\dim A}{\operatorname{tr}(G)/\dim G}},

        \text{exact:}\quad
        Q_G\Big[\frac{Q_G^\top V Q_A}{d_G d_A^\top + \lambda}\Big]Q_A^\top
        = \operatorname{mat}\big((A\otimes G + \lambda I)^{-1}\operatorname{vec}V\big),

    with :math:`A = Q_A\diag(d_A)Q_A^\top`, :math:`G = Q_G\diag(d_G)Q_G^\top`
    :cite:`martens2015optimizing`. Because it only rewrites ``.grad``, it composes with any
    ``torch.optim`` optimizer. Layers of other types keep their plain gradients; they are named
    in one warning when the preconditioner is built.

    The training loop, with the factors updated every ``factor_period`` steps and the inverses
    every ``inverse_period`` steps::

        out = model(x)
        loss = negative_log_likelihood(out, y, likelihood="categorical")
        optimizer.zero_grad()
        pre.update_factors(out)      # before loss.backward(); a no-op when not due
        loss.backward()
        pre.step()                   # rewrites .grad
        optimizer.step()

    Parameters
    ----------
    model
        The network. Its forward pass is hooked to record each supported layer's input and output.
    likelihood
        A :class:`~igbook.fisher.likelihoods.Likelihood` or its name (``"categorical"``,
        ``"bernoulli"``, ``"gaussian"``; see :func:`igbook.kfac.negative_log_likelihood`).
    fisher_type
        ``"mc"`` (default), ``"exact"`` (deprecated alias ``"type2"``) or ``"empirical"``.
    damping
        :math:`\lambda > 0`. It can be changed between steps (``pre.damping = ...``).
    damping_mode
        ``"factored"`` (π-heuristic, Cholesky inverses of the two damped factors) or ``"exact"``
        (eigendecompositions, damping added to the Kronecker product's eigenvalues).
    factor_decay
        :math:`\varepsilon\in(0, 1]`, the weight of the old statistics in the moving average
        :math:`A_k = \varepsilon_k A_{k-1} + (1-\varepsilon_k)\hat A_k` with
        :math:`\varepsilon_k = \min(1 - 1/k, \varepsilon)` (:math:`k` counts factor updates), so
        that early averages are not biased towards an initial guess and ``factor_decay=1`` gives
        the exact average over all updates.
    factor_period, inverse_period
        Update the factors every ``factor_period`` steps and recompute the inverses every
        ``inverse_period`` steps (both ints >= 1; step 0 does both).
    mc_samples
        Sampled labels per data point for ``fisher_type="mc"``.
    reduction
        ``"mean"`` or ``"sum"``: the reduction over data points of the loss you differentiate.
    bias
        ``"joint"`` (ones column, one block per layer) or ``"separate"``.
    kl_clip
        If given, scale all preconditioned gradients :math:`v` by
        :math:`\nu = \min\big(1, \sqrt{\kappa / (\tfrac12\eta^2\textstyle\sum_\ell v_\ell^\top g_\ell)}\big)`
        so that the quadratic estimate of the KL divergence of the step :math:`-\eta v` is at most
        :math:`\kappa`; requires ``lr`` (:math:`\eta`), here or in :meth:`step`. Convention: this
        :math:`\kappa` bounds :math:`\tfrac12\eta^2 v^\top g`, with the :math:`\tfrac12` of the quadratic
        KL. :cite:`ba2017distributed` and common K-FAC libraries bound :math:`\eta^2 v^\top g` (no
        :math:`\tfrac12`), so their threshold :math:`c` is ``kl_clip = c / 2`` here.
    lr
        The learning rate used by KL clipping.
    seed, generator
        Source of the sampled labels (``generator`` wins; its state is in :meth:`state_dict`).
        Under ``torch.distributed`` the generator made from ``seed`` is seeded with
        ``seed + rank`` (distinct labels per rank; rank 0 draws what one process draws).
    process_group
        Under ``torch.distributed`` (DDP averages the gradients): the group over which the
        batch statistics of :math:`A` and :math:`G` are averaged before the moving averages
        (``None``: the world group when initialized, else no communication). Every rank then
        holds the same factors and computes the same inverses itself (no broadcast). Use
        ``reduction="mean"``, as DDP averages the gradients.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        likelihood: Likelihood | str,
        fisher_type: FisherType | str = FisherType.MC,
        damping: float = 1e-3,
        damping_mode: str = "factored",
        factor_decay: float = 0.95,
        factor_period: int = 1,
        inverse_period: int = 10,
        mc_samples: int = 1,
        reduction: str = "mean",
        bias: str = "joint",
        kl_clip: float | None = None,
        lr: float | None = None,
        seed: int | None = 0,
        generator: torch.Generator | None = None,
        process_group: Any = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.likelihood = get_likelihood(likelihood)
        self.fisher_type = check_fisher_type(fisher_type, self.likelihood)
        self.damping = damping
        self.damping_mode = check_choice(damping_mode, "damping_mode", DAMPING_MODES)
        self.factor_decay = check_factor_decay(factor_decay)
        self.factor_period = check_integer(factor_period, "factor_period", minimum=1)
        self.inverse_period = check_integer(inverse_period, "inverse_period", minimum=1)
        self.mc_samples = check_integer(mc_samples, "mc_samples", minimum=1)
        self.reduction = check_choice(reduction, "reduction", REDUCTIONS)
        self.bias = check_choice(bias, "bias", BIAS_MODES)
        self.kl_clip = None if kl_clip is None else check_positive_real(kl_clip, "kl_clip")
        self.lr = None if lr is None else check_positive_real(lr, "lr")
        self.generator = make_kfac_generator(seed, generator)
        self.process_group = check_process_group(process_group)
        if generator is None and active_group(self.process_group) is not False:
            # distinct, reproducible sampled labels per rank (module docstring, "Distributed")
            self.generator.manual_seed(rank_seed(0 if seed is None else seed, self.process_group))

        self.blocks: list[LayerBlock] = []
        self._layers: dict[nn.Module, str] = {}
        layers, unsupported = kronecker_layers(model)
        for lname, m in layers.items():
            self._layers[m] = lname
            if self.bias == "joint" or m.bias is None or not m.bias.requires_grad:
                self.blocks.append(LayerBlock(lname, m, "joint"))
            else:
                self.blocks.append(LayerBlock(lname, m, "weight"))
                self.blocks.append(LayerBlock(lname, m, "bias"))
        if not self.blocks:
            raise ValueError(
                "model has no supported layer (nn.Linear or nn.Conv2d with trainable weights): "
                "nothing for K-FAC to precondition"
            )
        self.unsupported = unsupported
        if unsupported:
            warnings.warn(
                "K-FAC leaves these layers unpreconditioned (their gradients pass through unchanged): "
                + ", ".join(unsupported),
                UserWarning,
                stacklevel=2,
            )
        self.steps = 0
        self.factor_updates = 0
        self._factors_dirty = False
        self._inverse_damping: float | None = None
        self._updated_this_step = False
        self._records: dict[nn.Module, tuple[Tensor, Tensor]] = {}
        self._calls: dict[nn.Module, int] = {}
        self._handles = [model.register_forward_pre_hook(self._model_pre_hook)]
        for m in self._layers:
            self._handles.append(m.register_forward_hook(self._layer_hook))

    # -- hyperparameters ------------------------------------------------------------------

    @property
    def damping(self) -> float:
        r"""The damping :math:`\lambda > 0`; settable between steps."""
        return self._damping

    @damping.setter
    def damping(self, value: float) -> None:
        self._damping = check_positive_real(value, "damping")

    # -- hooks ----------------------------------------------------------------------------

    def _model_pre_hook(self, module: nn.Module, args: Any) -> None:
        self._calls.clear()

    def _layer_hook(self, module: nn.Module, args: tuple[Any, ...], output: Tensor) -> None:
        if (
            not torch.is_grad_enabled()
            or not isinstance(output, Tensor)
            or not output.requires_grad
        ):
            return
        self._calls[module] = self._calls.get(module, 0) + 1
        self._records[module] = (args[0].detach(), output)

    def remove_hooks(self) -> None:
        """Detach the preconditioner from the model's forward pass."""
        for h in self._handles:
            h.remove()
        self._handles = []

    # -- factors --------------------------------------------------------------------------

    @property
    def factors_due(self) -> bool:
        """Whether :meth:`update_factors` must run at the current step."""
        return self.steps % self.factor_period == 0

    def update_factors(self, outputs: Tensor, targets: Tensor | None = None) -> bool:
        r"""Update the moving averages of :math:`A` and :math:`G` from the last forward pass.

        Call it after ``outputs = model(x)`` and *before* ``loss.backward()`` (it backpropagates
        through the same graph, keeping it). It backpropagates the vectors of
        :meth:`~igbook.fisher.likelihoods.Likelihood.output_gradient_samples` (sampled labels by
        default) to every supported layer's output, without computing any weight gradient.
        Returns ``False`` (and does nothing) when the factors are not due at this step.

        Parameters
        ----------
        outputs
            The output of the model's last forward pass (logits for categorical/bernoulli).
        targets
            The observed labels; required only for ``fisher_type="empirical"``.
        """
        if not self.factors_due:
            return False
        if not isinstance(outputs, Tensor):
            raise TypeError(
                f"outputs must be a tensor (the network output), got {type(outputs).__name__}"
            )
        f = self.likelihood.flatten_output(outputs)
        if not outputs.requires_grad:
            raise ValueError("outputs must be the output of a forward pass with gradients enabled")
        n = f.shape[0]
        missing = [self._layers[m] for m in self._layers if m not in self._records]
        if missing:
            raise RuntimeError(
                "no forward pass recorded for layers "
                + ", ".join(missing)
                + ": call the model with "
                "gradients enabled before update_factors"
            )
        twice = [self._layers[m] for m, c in self._calls.items() if c > 1]
        if twice:
            raise RuntimeError(
                "layers " + ", ".join(twice) + " were called more than once in one forward pass; "
                "K-FAC does not support parameter reuse"
            )
        group = active_group(self.process_group)
        bad_outputs = first_nonfinite([f.detach()]) is not None
        if any_rank(bad_outputs, self.process_group) if group is not False else bad_outputs:
            raise nonfinite_error(
                type(self).__name__, "curvature statistic (model outputs)", "<outputs>"
            )
        rng = self.generator.get_state()
        yf = None
        if self.fisher_type is FisherType.EMPIRICAL:
            if targets is None:
                raise ValueError(
                    "targets are required for fisher_type='empirical' (the observed labels)"
                )
            yf = self.likelihood.check_targets(targets, outputs.detach(), "targets")
        vs = self.likelihood.output_gradient_samples(
            f.detach(), self.fisher_type, y=yf, mc_samples=self.mc_samples, generator=self.generator
        )
        layers = list(self._layers)
        grads = backpropagate_output_vectors(outputs, [self._records[m][1] for m in layers], vs)
        rows = dict(zip(layers, grads))
        scale_g = 1.0 if self.reduction == "sum" else 1.0 / n
        stats: dict[nn.Module, tuple[Tensor, Tensor]] = {}
        for m in layers:
            a = layer_input_rows(m, self._records[m][0])
            if a.shape[0] % n != 0:
                raise RuntimeError(
                    f"layer {self._layers[m]} saw {a.shape[0]} input rows, not a multiple of the batch size {n} "
                    "of outputs: pass the outputs of the same forward pass"
                )
            stats[m] = (a, layer_output_rows(m, rows[m].detach()))
        if group is not False:
            update_factors_distributed(self, stats, scale_g, rng, group)
            return True
        # nothing is written before every statistic is known to be finite (igbook._safety)
        flat = [t for ag in stats.values() for t in ag]
        bad = first_nonfinite(flat)
        if bad is not None:
            self.generator.set_state(rng)
            m = list(stats)[bad // 2]
            what = "layer inputs (activations)" if bad % 2 == 0 else "sampled output gradients"
            raise nonfinite_error(
                type(self).__name__, f"curvature statistic ({what})", self._layers[m]
            )
        self.factor_updates += 1
        eps = min(1.0 - 1.0 / self.factor_updates, self.factor_decay)
        by_module: dict[nn.Module, list[LayerBlock]] = {}
        for blk in self.blocks:
            by_module.setdefault(blk.module, []).append(blk)
        for m in layers:
            a, g = stats[m]
            wa = (1.0 - eps) / a.shape[0]
            first = by_module[m][0]
            if first.A is None:  # eps == 0 here: addmm_ with beta=0 ignores the zeros
                for blk in by_module[m]:
                    blk.A = torch.zeros(blk.din, blk.din, dtype=a.dtype)
                    blk.G = torch.zeros(blk.out, blk.out, dtype=a.dtype)
            for blk in by_module[m]:
                if blk.kind == "bias":
                    blk.A.fill_(1.0)  # type: ignore[union-attr]
                    blk.G = first.G  # one G per layer, shared by its weight and bias blocks
                    continue
                # G <- eps G + (1 - eps) scale * g^T g ;  A <- eps A + (1 - eps) a^T a / rows (fused)
                blk.G.addmm_(g.T, g, beta=eps, alpha=(1.0 - eps) * scale_g)  # type: ignore[union-attr]
                if blk.has_bias:
                    d = blk.din - 1
                    blk.A[:d, :d].addmm_(a.T, a, beta=eps, alpha=wa)  # type: ignore[index]
                    mean = a.sum(0) * wa
                    blk.A[:d, d].mul_(eps).add_(mean)  # type: ignore[index]
                    blk.A[d, :d].mul_(eps).add_(mean)  # type: ignore[index]
                    blk.A[d, d] = 1.0  # type: ignore[index]
                else:
                    blk.A.addmm_(a.T, a, beta=eps, alpha=wa)  # type: ignore[union-attr]
        self._records.clear()
        self._factors_dirty = True
        self._updated_this_step = True
        return True

    def _block_of(self, layer: nn.Module | str) -> list[LayerBlock]:
        if isinstance(layer, str):
            by_name = self.named_layers()
            if layer not in by_name:
                raise ValueError(
                    f"layer must be one of the preconditioned layers {list(by_name)}, got {layer!r}"
                )
            layer = by_name[layer]
        if layer not in self._layers:
            raise ValueError("layer is not a layer preconditioned by this K-FAC preconditioner")
        blks = [b for b in self.blocks if b.module is layer]
        if blks[0].A is None:
            raise RuntimeError("no factors yet: call update_factors first")
        return blks

    def factors(
        self, layer: nn.Module | str
    ) -> KroneckerFactors | tuple[KroneckerFactors, KroneckerFactors]:
        """The current (moving-average) factors of a layer (the module or its name): one pair, or
        (weight, bias) pairs with ``bias="separate"``."""
        blks = self._block_of(layer)
        out = [
            KroneckerFactors(b.A.clone(), b.G.clone(), bias=b.kind == "bias" or b.has_bias)
            for b in blks
        ]  # type: ignore[union-attr]
        return out[0] if len(out) == 1 else (out[0], out[1])

    def all_factors(
        self,
    ) -> dict[str, KroneckerFactors | tuple[KroneckerFactors, KroneckerFactors]]:
        """:meth:`factors` of every layer by name, the format of :func:`igbook.fisher.kfac_factors`."""
        return {name: self.factors(m) for name, m in self.named_layers().items()}

    def dense_block(self, layer: nn.Module | str) -> Tensor:
        r"""The dense K-FAC block of a layer in the ``"kronecker"`` order (``[vec(W), b]``).

        :math:`A\otimes G` for ``bias="joint"``; the block diagonal of :math:`A\otimes G`
        (weight) and :math:`1\otimes G` (bias) for ``bias="separate"``. Meant for tests and
        figures: it has :math:`(d_\text{in}d_\text{out})^2` entries.
        """
        blks = self._block_of(layer)
        return torch.block_diag(*[torch.kron(b.A, b.G) for b in blks])  # type: ignore[arg-type]

    def named_layers(self) -> dict[str, nn.Module]:
        """The preconditioned layers by name (``"<model>"`` when the model is itself a layer)."""
        return {name: m for m, name in self._layers.items()}

    # -- inverses and the step ------------------------------------------------------------

    def update_inverses(self) -> None:
        """Recompute the inverses (or eigendecompositions) of the damped factors now, in float64
        (a float32 factor whose damped condition number is provably at most
        ``FLOAT32_INVERSE_MAX_CONDITION``: in float32).

        The results are stored in the parameters' dtype for the preconditioning products.
        Raises :class:`ValueError` if a factor is not finite (the activations or the sampled
        output gradients overflowed).
        """
        lam = self.damping
        for blk in self.blocks:
            if blk.A is None or blk.G is None:
                raise RuntimeError(
                    "no factors yet: call update_factors(outputs) before the first step"
                )
            for name, f in (("A", blk.A), ("G", blk.G)):
                if not math.isfinite(
                    float(f.sum())
                ):  # a NaN or an infinity anywhere makes the sum non-finite
                    raise ValueError(
                        f"the Kronecker factor {name} of layer {blk.name} is not finite: the activations "
                        "or the outputs overflowed (lower the learning rate or raise the damping)"
                    )
            dt = blk.A.dtype
            if self.damping_mode == "exact":
                A, G = blk.A.double(), blk.G.double()
                da, qa = psd_eigh(A, "A")
                dg, qg = psd_eigh(G, "G")
                blk.eig_A, blk.eig_G = (da.to(dt), qa.to(dt)), (dg.to(dt), qg.to(dt))
                blk.inv_A = blk.inv_G = None
                blk.denom = None
            else:
                ta = float(blk.A.double().diagonal().mean())
                tg = float(blk.G.double().diagonal().mean())
                blk.pi = math.sqrt(ta / tg) if ta > 0 and tg > 0 else 1.0
                gamma = math.sqrt(lam)
                blk.inv_A = damped_inverse(blk.A, blk.pi * gamma)
                blk.inv_G = damped_inverse(blk.G, gamma / blk.pi)
                blk.eig_A = blk.eig_G = None
        self._inverse_damping = lam
        self._factors_dirty = False

    def _precondition(self, blk: LayerBlock, v: Tensor) -> Tensor:
        if self.damping_mode == "exact":
            da, qa = blk.eig_A  # type: ignore[misc]
            dg, qg = blk.eig_G  # type: ignore[misc]
            if blk.denom is None or blk.denom_damping != self.damping:
                blk.denom = 1.0 / (torch.outer(dg.double(), da.double()) + self.damping)
                blk.denom_damping = self.damping
            inner = (qg.T @ v @ qa) * blk.denom.to(v.dtype)
            return qg @ inner @ qa.T
        return blk.inv_G @ v @ blk.inv_A  # type: ignore[operator]

    @torch.no_grad()
    def step(self, lr: float | None = None) -> None:
        """Rewrite the gradients of the supported layers in place by their K-FAC preconditioned versions.

        Recomputes the inverses when due (every ``inverse_period`` steps, and whenever the damping
        changed under ``damping_mode="factored"``), applies KL clipping if configured, and
        advances the step counter.
        """
        if self.factor_updates == 0:
            raise RuntimeError(
                "no factors yet: call update_factors(outputs) before loss.backward() and step()"
            )
        if self.factors_due and not self._updated_this_step:
            raise RuntimeError(
                f"the factors are due at step {self.steps} (factor_period={self.factor_period}): call "
                "update_factors(outputs) after the forward pass and before loss.backward()"
            )
        grads = [(blk, blk.grad_matrix()) for blk in self.blocks]
        bad = first_nonfinite([v for _, v in grads])
        if bad is not None:  # checked before the inverses, the counters or any .grad change
            raise nonfinite_error(type(self).__name__, "gradient", grads[bad][0].name)
        stale = self._inverse_damping is None or (
            self._factors_dirty and self.steps % self.inverse_period == 0
        )
        if self.damping_mode == "factored" and self._inverse_damping != self.damping:
            stale = True
        if stale:
            self.update_inverses()
        results: list[tuple[LayerBlock, Tensor, Tensor]] = []
        for blk, v in grads:
            if v is None:
                continue
            results.append((blk, v, self._precondition(blk, v)))
        if self.kl_clip is not None and results:
            eta = self.lr if lr is None else check_positive_real(lr, "lr")
            if eta is None:
                raise ValueError(
                    "kl_clip needs the learning rate: pass lr to the constructor or to step()"
                )
            vg = sum(float((u * v).sum()) for _, v, u in results)
            kl = 0.5 * eta**2 * max(vg, 0.0)
            nu = 1.0 if kl <= self.kl_clip else math.sqrt(self.kl_clip / kl)
            self.last_kl = kl * nu**2
            if nu < 1.0:
                results = [(b, v, u * nu) for b, v, u in results]
        for blk, _, u in results:
            blk.write_grad(u)
        self.steps += 1
        self._updated_this_step = False

    # -- state ----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: counters, hyperparameters, factors, inverses, RNG state."""
        blocks = {}
        for blk in self.blocks:
            key = f"{blk.name}:{blk.kind}"
            blocks[key] = {
                "A": None if blk.A is None else blk.A.clone(),
                "G": None if blk.G is None else blk.G.clone(),
                "inv_A": None if blk.inv_A is None else blk.inv_A.clone(),
                "inv_G": None if blk.inv_G is None else blk.inv_G.clone(),
                "eig_A": None if blk.eig_A is None else tuple(t.clone() for t in blk.eig_A),
                "eig_G": None if blk.eig_G is None else tuple(t.clone() for t in blk.eig_G),
                "pi": blk.pi,
            }
        return {
            "steps": self.steps,
            "factor_updates": self.factor_updates,
            "factors_dirty": self._factors_dirty,
            "inverse_damping": self._inverse_damping,
            "hyperparameters": {
                "likelihood": self.likelihood,
                "fisher_type": self.fisher_type.value,
                "damping": self.damping,
                "damping_mode": self.damping_mode,
                "factor_decay": self.factor_decay,
                "factor_period": self.factor_period,
                "inverse_period": self.inverse_period,
                "mc_samples": self.mc_samples,
                "reduction": self.reduction,
                "bias": self.bias,
                "kl_clip": self.kl_clip,
                "lr": self.lr,
            },
            "generator": self.generator.get_state(),
            "blocks": blocks,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` taken from a preconditioner of the same model structure."""
        if not isinstance(state, dict) or "blocks" not in state:
            raise TypeError("state must be a dict produced by KFACPreconditioner.state_dict()")
        keys = {f"{b.name}:{b.kind}" for b in self.blocks}
        if set(state["blocks"]) != keys:
            raise ValueError(
                f"state holds blocks {sorted(state['blocks'])}, but this preconditioner has {sorted(keys)}"
            )
        hp = state["hyperparameters"]
        self.likelihood = get_likelihood(hp["likelihood"])
        self.fisher_type = check_fisher_type(hp["fisher_type"], self.likelihood)
        self.damping = hp["damping"]
        self.damping_mode = check_choice(hp["damping_mode"], "damping_mode", DAMPING_MODES)
        self.factor_decay = check_factor_decay(hp["factor_decay"])
        self.factor_period = check_integer(hp["factor_period"], "factor_period", minimum=1)
        self.inverse_period = check_integer(hp["inverse_period"], "inverse_period", minimum=1)
        self.mc_samples = hp["mc_samples"]
        self.reduction = check_choice(hp["reduction"], "reduction", REDUCTIONS)
        if hp["bias"] != self.bias:
            raise ValueError(
                f"state has bias={hp['bias']!r} but this preconditioner has bias={self.bias!r}"
            )
        self.kl_clip = hp["kl_clip"]
        self.lr = hp["lr"]
        self.steps = int(state["steps"])
        self.factor_updates = int(state["factor_updates"])
        self._factors_dirty = bool(state["factors_dirty"])
        self._inverse_damping = state["inverse_damping"]
        self._updated_this_step = False
        self.generator.set_state(state["generator"])

        def cl(t: Any) -> Any:
            if t is None:
                return None
            if isinstance(t, tuple):
                return tuple(x.clone() for x in t)
            return t.clone()

        for blk in self.blocks:
            s = state["blocks"][f"{blk.name}:{blk.kind}"]
            blk.A, blk.G = cl(s["A"]), cl(s["G"])
            blk.inv_A, blk.inv_G = cl(s["inv_A"]), cl(s["inv_G"])
            blk.eig_A, blk.eig_G = cl(s["eig_A"]), cl(s["eig_G"])
            blk.pi = float(s["pi"])
            blk.denom = None


_MOVED = {
    "KFAC": ("igbook.kfac.optimizer", "KFAC"),
    "negative_log_likelihood": ("igbook.kfac.losses", "negative_log_likelihood"),
    "output_gradient_samples": ("igbook.kfac.losses", "output_gradient_samples"),
    "layer_vector": ("igbook.fisher.layout", "layer_vector"),
    "KroneckerFactors": ("igbook.fisher.kronecker", "KroneckerFactors"),
}


def __getattr__(name: str) -> Any:
    """Names that lived here before the curvature core: importable for one release, with a warning."""
    if name in _MOVED:
        import importlib

        module, attr = _MOVED[name]
        warnings.warn(
            f"igbook.kfac.core.{name} moved: import it from igbook.kfac (or {module})",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
