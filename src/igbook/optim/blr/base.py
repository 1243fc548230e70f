r"""Bayesian-learning-rule optimizers: VON, VOGN, Vadam and IVON.

Each optimizer keeps a *diagonal Gaussian posterior* :math:`q(\theta) = \mathcal{N}(m,
\operatorname{diag}(\sigma^2))` over the parameters it is given. The mean :math:`m` lives in
the parameters themselves (so ``model(x)`` evaluates the network at the posterior mean); the
curvature that sets :math:`\sigma^2` lives in the optimizer state. All four are the diagonal
Gaussian Bayesian learning rule (:mod:`igbook.vi.blr`, :cite:`khan2023bayesian`) applied to

.. math::

    \bar\ell(\theta) = N\,\hat f(\theta) + \tfrac{\lambda}{2}\|\theta\|^2,

with :math:`\hat f` the *average* negative log-likelihood of a minibatch (what the closure
returns), :math:`N` the training-set size and :math:`\lambda` the prior precision. They differ
in how they estimate the expected Hessian and in what extra approximations they make:

- :class:`VON` :cite:`khan2018fast`: the diagonal of :math:`\nabla^2\hat f(\theta)` at the sampled
  weights (exact or Hutchinson);
- :class:`VOGN` :cite:`khan2018fast,osawa2019practical`: :math:`\frac1M\sum_i g_i(\theta)^2`, per-example
  gradients through :mod:`torch.func` (empirical or sampled-target Fisher);
- :class:`Vadam` :cite:`khan2018fast`: :math:`\hat g(\theta)^2` of the minibatch gradient, with Adam's
  square root and momentum;
- :class:`IVON` :cite:`shen2024variational`: :math:`\hat g\odot(\theta - m)/\sigma^2` (the
  reparameterization/Price estimator), with momentum and a positivity correction.

Parameterizations follow the papers. VON, VOGN and Vadam take ``data_size`` :math:`N` and
``prior_precision`` :math:`\lambda` and keep :math:`s` (the curvature of the *average* loss):
:math:`\sigma^2 = 1/(N s + \lambda)`. IVON takes the effective sample size ``ess``
:math:`\approx N` and ``weight_decay`` :math:`\delta`: :math:`\sigma^2 = 1/(\text{ess}\,(h +
\delta))`, so its prior precision is :math:`\text{ess}\cdot\delta`.

How to train
------------
*IVON and Vadam* accept either a closure (``optimizer.step(closure)``, where the closure zeroes
nothing special, evaluates the loss, calls ``backward()`` and returns the loss; the optimizer
samples the weights before each of its ``mc_samples`` calls) or gradients collected by hand
inside :meth:`VariationalOptimizer.sampled_params` (``train=True``), one block per Monte Carlo sample, followed by
``optimizer.step()``. *VON* needs second derivatives: its closure returns the loss **without**
calling ``backward()``. *VOGN* needs per-example gradients: its closure is a
:class:`PerExampleClosure`.

Sampling
--------
:meth:`VariationalOptimizer.sampled_params` (also :func:`igbook.optim.sampling.sampled_params`) replaces every
parameter by a posterior sample for the duration of a ``with`` block and **always** restores
the means on exit, also when the block raises (the reference IVON code leaves the sampled
weights in the model in that case). Every optimizer takes ``seed`` or ``generator`` and saves
its generator state in ``state_dict()``, so seeded runs and resumed runs are reproducible.

Failures
--------
A step never poisons the model (``igbook._safety``): a gradient or a Monte Carlo
statistic that is not finite raises :class:`FloatingPointError` naming the parameter before
anything is written (``nonfinite="skip"`` skips such steps instead, counting them in
``skipped_steps``), and a closure that raises on any of its samples leaves the parameters, the
optimizer state and the generator exactly as before the call. Parameters that receive no
gradient (``.grad is None`` in every sample; for VON a loss that does not depend on them, for
VOGN ``requires_grad=False``) are not moved, as in ``torch.optim``; ``move_without_grad=True``
updates them as with a zero gradient (the prior then pulls their means towards 0 and their
curvature decays towards the prior's, the reading of the reference ``ivon-opt`` code).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, vmap
from torch.optim import Optimizer

from igbook._validation import make_generator
from igbook._safety import Snapshot, check_nonfinite_mode, first_nonfinite, nonfinite_error

__all__ = ["VariationalOptimizer", "VON", "VOGN", "Vadam", "IVON", "PerExampleClosure", "LIKELIHOODS"]

#: likelihoods understood by :class:`PerExampleClosure`
LIKELIHOODS = ("categorical", "gaussian")

Closure = Callable[[], Tensor]


# --------------------------------------------------------------------------------------------
# hyperparameter checks (torch style: ValueError naming the argument)
# --------------------------------------------------------------------------------------------


def _real(value: Any, name: str) -> float:
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{name} must not be NaN")
    return value


def _check_nonneg(value: Any, name: str) -> float:
    v = _real(value, name)
    if not (0.0 <= v < math.inf):
        raise ValueError(f"{name} must be finite and >= 0, got {v}")
    return v


def _check_pos(value: Any, name: str, *, allow_inf: bool = False) -> float:
    v = _real(value, name)
    if not (v > 0.0) or (v == math.inf and not allow_inf):
        raise ValueError(f"{name} must be {'> 0' if allow_inf else 'finite and > 0'}, got {v}")
    return v


def _check_beta(value: Any, name: str) -> float:
    v = _real(value, name)
    if not (0.0 <= v < 1.0):
        raise ValueError(f"{name} must lie in [0, 1), got {v}")
    return v


def _check_count(value: Any, name: str) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def _make_generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator | None:
    return make_generator(seed, generator)


# --------------------------------------------------------------------------------------------
# the shared machinery: a diagonal Gaussian over the parameters
# --------------------------------------------------------------------------------------------


class _SkipStep(Exception):
    """Internal: a step skipped under ``nonfinite="skip"`` (carries the closure's loss)."""

    def __init__(self, loss: Any = None) -> None:
        super().__init__("step skipped")
        self.loss = loss


def _buckets(states: list[dict[str, Any]], moving: list[bool]) -> list[list[int]]:
    """Indices of the moving parameters, grouped by step count (one debiasing per bucket)."""
    out: dict[int, list[int]] = {}
    for i, (st, mv) in enumerate(zip(states, moving)):
        if mv:
            out.setdefault(int(st["step"]), []).append(i)
    return list(out.values())


class VariationalOptimizer(Optimizer):
    r"""Base class of the optimizers here: a diagonal Gaussian posterior over the parameters.

    The means are the parameters; the posterior precision of each parameter is
    :meth:`posterior_precision`. The class provides the sampling context
    :meth:`sampled_params`, the Monte Carlo averaging of gradient statistics over samples, and a
    ``state_dict`` that also holds the state of the private random generator (``seed`` or
    ``generator``), so that a resumed run repeats an uninterrupted one exactly. Subclasses
    implement the curvature estimate and the update.

    Memory: besides its state (two parameter-sized tensors for IVON and Vadam, one for VON and
    VOGN) an optimizer keeps a copy of the means while sampling, the posterior standard
    deviations, and a few work buffers reused at every step (about eight parameter-sized
    tensors in all for IVON), so that a step allocates no new large tensors.
    """

    #: whether gradients collected inside ``sampled_params(train=True)`` can drive ``step()``
    _manual_sampling = True
    #: the group hyperparameters the posterior precision depends on
    _precision_keys: tuple[str, ...] = ()

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        defaults: dict[str, Any],
        *,
        mc_samples: int,
        seed: int | None,
        generator: torch.Generator | None,
        nonfinite: str = "raise",
        move_without_grad: bool = False,
    ) -> None:
        self.mc_samples = _check_count(mc_samples, "mc_samples")
        self._generator = _make_generator(seed, generator)
        self.nonfinite = check_nonfinite_mode(nonfinite)
        if not isinstance(move_without_grad, bool):
            raise TypeError(f"move_without_grad must be a bool, got {type(move_without_grad).__name__}")
        self.move_without_grad = move_without_grad
        #: number of steps skipped under ``nonfinite="skip"``
        self.skipped_steps = 0
        self._has_grad: list[bool] | None = None  # per parameter: a gradient in some sample
        self._sampling = False
        self._acc: dict[str, list[Tensor]] | None = None  # Monte Carlo averages, per group order
        self._count = 0
        self._std_cache: dict[Tensor, tuple[tuple, Tensor]] = {}
        self._bufs: dict[tuple[str, Tensor], Tensor] = {}  # persistent work buffers
        super().__init__(params, defaults)

    # ----- groups and state -------------------------------------------------------------------
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if getattr(self, "_sampling", False):
            raise RuntimeError("cannot add a parameter group inside sampled_params()")
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            self._validate_group(group)
            params = group["params"]
            if len({(p.dtype, p.device) for p in params}) > 1:
                raise ValueError(
                    "all parameters of one group must share one dtype and one device "
                    "(put the others in another param group)"
                )
            for p in params:
                if not p.is_floating_point():
                    raise TypeError(f"parameters must be floating point, got {p.dtype}")
        except (ValueError, TypeError):
            self.param_groups.pop()
            raise
        for p in group["params"]:
            self._init_state(group, p)
        self._acc = None
        self._count = 0
        self._has_grad = None

    def _validate_group(self, group: dict[str, Any]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _init_state(self, group: dict[str, Any], p: Tensor) -> None:  # pragma: no cover
        raise NotImplementedError

    def _precision(self, group: dict[str, Any], p: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def _params(self) -> list[Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    def posterior_precision(self) -> list[Tensor]:
        r"""The posterior precision :math:`1/\sigma^2` of every parameter, in parameter order."""
        return [self._precision(g, p).clone() for g in self.param_groups for p in g["params"]]

    def posterior_std(self) -> list[Tensor]:
        r"""The posterior standard deviation :math:`\sigma` of every parameter, in parameter order."""
        return [self._precision(g, p).rsqrt() for g in self.param_groups for p in g["params"]]

    # ----- sampling -------------------------------------------------------------------------
    def _std(self, group: dict[str, Any], p: Tensor) -> Tensor:
        """Posterior standard deviation of ``p``, cached until the next update.

        The cache key holds the state tensors' identities, the step count and the group's
        hyperparameters, so a changed hyperparameter or a loaded state dict recomputes it.
        """
        st = self.state[p]
        key = (st.get("step"), tuple(id(v) for v in st.values() if isinstance(v, Tensor)), self._hyper_key(group))
        hit = self._std_cache.get(p)
        if hit is not None and hit[0] == key:
            return hit[1]
        std = self._precision(group, p).rsqrt()
        self._std_cache[p] = (key, std)
        return std

    def _set_std(self, group: dict[str, Any], p: Tensor, std: Tensor) -> None:
        """Store a standard deviation computed during the update (saves recomputing it)."""
        st = self.state[p]
        key = (st.get("step"), tuple(id(v) for v in st.values() if isinstance(v, Tensor)), self._hyper_key(group))
        self._std_cache[p] = (key, std)

    def _hyper_key(self, group: dict[str, Any]) -> tuple:
        return tuple(group[k] for k in self._precision_keys)

    @torch.no_grad()
    def _draw(self) -> tuple[list[Tensor], list[Tensor]]:
        r"""Draw one posterior sample into the parameters; returns (params, standard normals).

        One flat standard-normal vector per param group (in group order) is split across the
        group's parameters; :math:`\theta = m + \sigma\odot z`. The means are kept in
        persistent buffers (restored by :meth:`_restore`).
        """
        params, zs, stds, bufs = [], [], [], []
        for group in self.param_groups:
            ps = group["params"]
            if not ps:
                continue
            numel = sum(p.numel() for p in ps)
            z = torch.randn(numel, generator=self._generator, dtype=ps[0].dtype, device=ps[0].device)
            offset = 0
            for p in ps:
                n = p.numel()
                zs.append(z[offset : offset + n].view_as(p))
                offset += n
                params.append(p)
                stds.append(self._std(group, p))
                bufs.append(self._buf("mean", p))
        torch._foreach_copy_(bufs, params)
        torch._foreach_addcmul_(params, zs, stds)
        return params, zs

    @torch.no_grad()
    def _restore(self, params: list[Tensor]) -> None:
        torch._foreach_copy_(params, [self._bufs[("mean", p)] for p in params])

    @contextmanager
    def sampled_params(self, train: bool = False) -> Iterator[None]:
        r"""Context manager: the parameters hold a sample :math:`\theta \sim q` inside the block.

        On exit the means are restored, **also when the block raises** (then no gradient is
        recorded and the exception propagates). With ``train=True`` the gradients are reset on
        entry, and on a normal exit the gradient of the sample (``p.grad``; ``None`` counts as
        zero) is recorded for the next ``step()``; use one block per Monte Carlo sample.

        Blocks cannot be nested.
        """
        if self._sampling:
            raise RuntimeError("sampled_params() blocks cannot be nested")
        if train and not self._manual_sampling:
            raise RuntimeError(
                f"{type(self).__name__} computes its own curvature and cannot learn from gradients "
                "collected in sampled_params(train=True); call step(closure) instead"
            )
        params, zs = self._draw()
        self._sampling = True
        if train:
            for p in params:
                p.grad = None
        try:
            yield
        except BaseException:
            self._restore(params)
            raise
        else:
            self._restore(params)
            if train:
                has = [p.grad is not None for p in params]
                grads = [p.grad.detach() if p.grad is not None else torch.zeros_like(p) for p in params]
                self._record(params, grads, zs)
                self._note_grads(has)
        finally:
            self._sampling = False

    def _buf(self, name: str, p: Tensor) -> Tensor:
        """A persistent work buffer shaped like ``p`` (on the CPU, fresh allocations of large
        tensors cost page faults: reusing buffers keeps the step allocation-free)."""
        key = (name, p)
        buf = self._bufs.get(key)
        if buf is None or buf.shape != p.shape or buf.dtype != p.dtype or buf.device != p.device:
            buf = self._bufs[key] = torch.empty_like(p, memory_format=torch.contiguous_format)
        return buf

    #: names of the per-sample statistics that :meth:`_fill_statistics` writes
    _stat_names: tuple[str, ...] = ()

    def _fill_statistics(self, out: dict[str, list[Tensor]], grads: list[Tensor], zs: list[Tensor]) -> None:
        raise NotImplementedError  # pragma: no cover

    @torch.no_grad()
    def _record(self, params: list[Tensor], grads: list[Tensor], zs: list[Tensor]) -> None:
        """Running (Welford) means of the per-sample statistics, in persistent buffers."""
        if self._acc is None:
            self._acc = {k: [self._buf("acc_" + k, p) for p in params] for k in self._stat_names}
            self._fill_statistics(self._acc, grads, zs)
            self._count = 1
            return
        self._count += 1
        tmp = {k: [self._buf("tmp_" + k, p) for p in params] for k in self._stat_names}
        self._fill_statistics(tmp, grads, zs)
        for k in self._stat_names:
            torch._foreach_sub_(tmp[k], self._acc[k])
            torch._foreach_div_(tmp[k], float(self._count))
            torch._foreach_add_(self._acc[k], tmp[k])

    def _note_grads(self, has: Sequence[bool]) -> None:
        """Record which parameters received a gradient in this sample (OR over samples)."""
        if self._has_grad is None or len(self._has_grad) != len(has):
            self._has_grad = list(has)
        else:
            self._has_grad = [a or b for a, b in zip(self._has_grad, has)]

    def _moves(self, n: int) -> list[bool]:
        """Which of the ``n`` parameters the update may move (see ``move_without_grad``)."""
        if self.move_without_grad or self._has_grad is None or len(self._has_grad) != n:
            return [True] * n
        return list(self._has_grad)

    def _guarded(self, body: Callable[[], Any], closure_loss: Callable[[], Any] | None = None) -> Any:
        """Run a step so that a failure leaves no trace.

        ``body`` samples (through a closure) and updates. If it raises, the Monte Carlo
        accumulators are dropped and the generator is put back to its state at the call (the
        sampling context has already restored the means); the update itself writes only after
        :meth:`_check_finite` passed. A :class:`_SkipStep` (``nonfinite="skip"``) is swallowed.
        """
        snap = Snapshot([], generators=[self._generator])
        try:
            return body()
        except _SkipStep as skip:
            self._acc, self._count, self._has_grad = None, 0, None
            snap.restore()
            self.skipped_steps += 1
            return skip.loss
        except BaseException:
            self._acc, self._count, self._has_grad = None, 0, None
            snap.restore()
            raise

    def _check_finite(self, stats: dict[str, list[Tensor]], loss: Any = None) -> None:
        """Raise (``nonfinite="raise"``) or skip (``"skip"``) when a statistic is not finite."""
        params = self._params()
        for key, values in stats.items():
            bad = first_nonfinite(values)
            if bad is not None:
                if self.nonfinite == "skip":
                    raise _SkipStep(loss)
                what = "gradient" if key == "grad" else f"Monte Carlo statistic {key!r} (gradient-based)"
                raise nonfinite_error(type(self).__name__, what, self._param_name(params, bad))

    def _param_name(self, params: list[Tensor], i: int) -> str:
        j = 0
        for gi, group in enumerate(self.param_groups):
            for k, _ in enumerate(group["params"]):
                if j == i:
                    return f"#{i} (param group {gi}, index {k}, shape {tuple(params[i].shape)})"
                j += 1
        return f"#{i}"  # pragma: no cover

    def _run_closure(self, closure: Closure) -> Tensor | None:
        """Call the closure once per Monte Carlo sample inside ``sampled_params(train=True)``."""
        if self._count:
            raise RuntimeError(
                "gradient samples were already collected with sampled_params(train=True); "
                "call step() without a closure, or do not collect samples by hand"
            )
        losses = []
        for _ in range(self.mc_samples):
            with self.sampled_params(train=True), torch.enable_grad():
                loss = closure()
            if loss is not None:
                losses.append(torch.as_tensor(loss).detach())
        return torch.stack(losses).mean() if losses else None

    def _take_samples(self) -> dict[str, list[Tensor]]:
        if self._sampling:
            raise RuntimeError("step() cannot be called inside sampled_params()")
        if self._count == 0 or self._acc is None:
            raise RuntimeError(
                f"{type(self).__name__}.step() needs gradients at posterior samples: pass a "
                "closure, or compute the loss and call backward() inside "
                "`with optimizer.sampled_params(train=True):` before step()"
            )
        acc, self._acc, self._count = self._acc, None, 0
        self._moving = self._moves(len(self._params()))
        self._has_grad = None
        return acc

    def _split(self) -> Iterator[tuple[dict[str, Any], slice]]:
        """Each group with the slice of its parameters in the flat parameter order."""
        offset = 0
        for group in self.param_groups:
            n = len(group["params"])
            yield group, slice(offset, offset + n)
            offset += n

    # ----- serialization --------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The torch state dict plus, with a private generator, its state (``"rng_state"``)."""
        sd = super().state_dict()
        if self._generator is not None:
            sd["rng_state"] = self._generator.get_state()
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict; restores the private generator's state when both have one."""
        state_dict = dict(state_dict)
        rng = state_dict.pop("rng_state", None)
        super().load_state_dict(state_dict)
        if rng is not None and self._generator is not None:
            self._generator.set_state(rng)
        self._acc, self._count, self._has_grad = None, 0, None
        self._std_cache.clear()


# --------------------------------------------------------------------------------------------
# IVON
# --------------------------------------------------------------------------------------------


class IVON(VariationalOptimizer):
    r"""Improved Variational Online Newton :cite:`shen2024variational`.

    One step with gradients :math:`\hat g_k` of the average minibatch loss at
    :math:`\theta_k = m + \sigma\odot\varepsilon_k`, :math:`k = 1..K` (``mc_samples``),
    :math:`\sigma^2 = 1/(\text{ess}\,(h + \delta))`:

    .. math::

        \hat g &= \tfrac1K\textstyle\sum_k \hat g_k, \qquad
        \hat h = \tfrac1K\textstyle\sum_k \hat g_k\odot(\theta_k - m)/\sigma^2, \\
        g &\leftarrow \beta_1 g + (1-\beta_1)\,\hat g, \\
        h &\leftarrow \beta_2 h + (1-\beta_2)\,\hat h
            + \tfrac12(1-\beta_2)^2\,(h - \hat h)^2/(h + \delta), \\
        m &\leftarrow m - \alpha\,\big(g/(1-\beta_1^t) + \delta m\big)/(h + \delta).

    :math:`\hat h` is the reparameterization (Price/Stein) estimator of the diagonal Hessian:
    unbiased and free (no second backward pass, no per-example gradients). The last term of
    the :math:`h` update is the Riemannian correction of :cite:`lin2020handling`: with
    :math:`a = h + \delta > 0` and :math:`x = (1-\beta_2)(\hat h - h)` it makes
    :math:`h_{\text{new}} + \delta = (a^2 + (a + x)^2)/(2a) > 0` whatever :math:`\hat h`.
    With ``rescale_lr`` (the reference default) :math:`\alpha = \text{lr}\,(h_0 + \delta)`.

    Parameters
    ----------
    params
        Parameters or param groups (every hyperparameter below can be set per group).
        Parameters of one group share one dtype and device.
    lr
        Learning rate, :math:`\ge 0`. IVON's learning rates are larger than Adam's (0.1-1 is
        typical for small networks with ``rescale_lr``).
    ess
        Effective sample size :math:`> 0`; the training-set size :math:`N` gives the Bayesian
        posterior, larger values a colder one.
    hess_init
        :math:`h_0 > 0`, the initial Hessian estimate (sets the initial noise).
    beta1, beta2
        Decay of the gradient momentum and of the Hessian average, in :math:`[0, 1)`.
    weight_decay
        :math:`\delta \ge 0`; the prior is :math:`\mathcal{N}(0, 1/(\text{ess}\,\delta))`.
    mc_samples
        Samples per step when a closure is given.
    clip_radius
        Element-wise clipping of the preconditioned step (``inf``: none).
    debias
        Divide the momentum by :math:`1-\beta_1^t`.
    rescale_lr
        Multiply the learning rate by :math:`h_0 + \delta`.
    seed, generator
        Randomness of the weight samples (neither: the global generator, as ``ivon-opt``
        does: then with the same ``torch.manual_seed`` both draw the same samples).
    nonfinite
        ``"raise"`` (default): a non-finite gradient raises :class:`FloatingPointError` before
        anything is written; ``"skip"``: the step is skipped (``skipped_steps`` counts them).
    move_without_grad
        Update parameters that received no gradient as with a zero gradient (default
        ``False``: they are not moved, as in ``torch.optim``).

    Notes
    -----
    Against the reference implementation ``ivon-opt`` 0.1.3: the same update equations and
    the same order of random draws (one ``randn`` per param group), so from the same global
    seed the two produce the same iterates up to rounding (checked in the tests). Differences:
    state is kept per parameter (standard ``state_dict``), a closure is sampled by the
    optimizer itself, the sampling context restores the means on exceptions, parameters
    without a gradient are not moved (``move_without_grad=True``: the reference behaviour, a
    zero gradient), non-finite gradients raise or skip the step, and the ``"gradsq"`` Hessian option
    is not offered.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float,
        ess: float,
        hess_init: float = 1.0,
        beta1: float = 0.9,
        beta2: float = 0.99999,
        weight_decay: float = 1e-4,
        mc_samples: int = 1,
        clip_radius: float = math.inf,
        debias: bool = True,
        rescale_lr: bool = True,
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        nonfinite: str = "raise",
        move_without_grad: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            ess=ess,
            hess_init=hess_init,
            beta1=beta1,
            beta2=beta2,
            weight_decay=weight_decay,
            clip_radius=clip_radius,
        )
        self._validate_group(defaults)
        if not isinstance(debias, bool) or not isinstance(rescale_lr, bool):
            raise TypeError("debias and rescale_lr must be bools")
        self.debias = debias
        self.rescale_lr = rescale_lr
        super().__init__(
            params, defaults, mc_samples=mc_samples, seed=seed, generator=generator,
            nonfinite=nonfinite, move_without_grad=move_without_grad,
        )

    _precision_keys = ("ess", "weight_decay")

    def _validate_group(self, group: dict[str, Any]) -> None:
        group["lr"] = _check_nonneg(group["lr"], "lr")
        group["ess"] = _check_pos(group["ess"], "ess")
        group["hess_init"] = _check_pos(group["hess_init"], "hess_init")
        group["beta1"] = _check_beta(group["beta1"], "beta1")
        group["beta2"] = _check_beta(group["beta2"], "beta2")
        group["weight_decay"] = _check_nonneg(group["weight_decay"], "weight_decay")
        group["clip_radius"] = _check_pos(group["clip_radius"], "clip_radius", allow_inf=True)

    def _init_state(self, group: dict[str, Any], p: Tensor) -> None:
        st = self.state[p]
        st["step"] = 0
        st["momentum"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        st["hess"] = torch.full_like(p, group["hess_init"], memory_format=torch.preserve_format)

    def _precision(self, group: dict[str, Any], p: Tensor) -> Tensor:
        return group["ess"] * (self.state[p]["hess"] + group["weight_decay"])

    _stat_names = ("grad", "zg")

    def _fill_statistics(self, out: dict[str, list[Tensor]], grads: list[Tensor], zs: list[Tensor]) -> None:
        torch._foreach_copy_(out["grad"], grads)
        torch._foreach_copy_(out["zg"], zs)
        torch._foreach_mul_(out["zg"], grads)

    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> Tensor | None:  # type: ignore[override]
        """One IVON step; with a closure, ``mc_samples`` sampled evaluations first.

        Returns the closure's loss averaged over the samples (``None`` without a closure).
        """
        return self._guarded(lambda: self._step(closure))

    def _step(self, closure: Closure | None) -> Tensor | None:
        loss = self._run_closure(closure) if closure is not None else None
        acc = self._take_samples()
        self._check_finite(acc, loss)
        moving = self._moving
        for group, sl in self._split():
            params = group["params"]
            if not params:
                continue
            states = [self.state[p] for p in params]
            for idx in _buckets(states, moving[sl]):
                pick = (lambda xs, idx=idx: [xs[i] for i in idx]) if len(idx) != len(params) else (lambda xs: list(xs))
                self._update(group, pick(params), pick(acc["grad"][sl]), pick(acc["zg"][sl]))
        return loss

    def _update(self, group: dict[str, Any], params: list[Tensor], g: list[Tensor], zg: list[Tensor]) -> None:
        """The IVON update of ``params`` (one param group, one step count)."""
        b1, b2, wd, ess = group["beta1"], group["beta2"], group["weight_decay"], group["ess"]
        states = [self.state[p] for p in params]
        stds = [self._std(group, p) for p in params]  # sigma at the sampled (old) h
        moms = [s["momentum"] for s in states]
        hess = [s["hess"] for s in states]
        w1 = [self._buf("w1", p) for p in params]
        w2 = [self._buf("w2", p) for p in params]
        # momentum: g <- b1 g + (1 - b1) ghat
        torch._foreach_lerp_(moms, g, 1.0 - b1)
        # Hessian: hhat = mean(noise * ghat) / sigma^2 = mean(z * ghat) / sigma (in place), then
        # h <- b2 h + (1 - b2) hhat + (1 - b2)^2 / 2 (h - hhat)^2 / (h + wd)
        hhat = zg
        torch._foreach_div_(hhat, stds)
        torch._foreach_copy_(w1, hess)
        torch._foreach_sub_(w1, hhat)
        torch._foreach_mul_(w1, w1)  # (h - hhat)^2
        torch._foreach_copy_(w2, hess)
        torch._foreach_add_(w2, wd)  # h + wd (old h)
        torch._foreach_lerp_(hess, hhat, 1.0 - b2)
        torch._foreach_addcdiv_(hess, w1, w2, value=0.5 * (1.0 - b2) ** 2)
        # mean: m <- m - alpha (g / (1 - b1^t) + wd m) / (h + wd), computed as
        # m - (alpha / (1 - b1^t)) (g + (1 - b1^t) wd m) / (h + wd)
        for s in states:
            s["step"] += 1
        t = states[0]["step"]
        debias = 1.0 - b1**t if self.debias else 1.0
        lr = group["lr"] * (group["hess_init"] + wd) if self.rescale_lr else group["lr"]
        num, den = w1, w2
        torch._foreach_copy_(num, moms)
        if wd != 0.0:
            torch._foreach_add_(num, params, alpha=wd * debias)
        torch._foreach_copy_(den, hess)
        torch._foreach_add_(den, wd)
        if group["clip_radius"] != math.inf:
            torch._foreach_div_(num, den)
            torch._foreach_div_(num, debias)
            torch._foreach_clamp_min_(num, -group["clip_radius"])
            torch._foreach_clamp_max_(num, group["clip_radius"])
            torch._foreach_add_(params, num, alpha=-lr)
        else:
            torch._foreach_addcdiv_(params, num, den, value=-lr / debias)
        # the next samples' sigma = 1 / sqrt(ess (h + wd)): computed in the buffer `den`,
        # which becomes the sigma; the old sigma's memory becomes the next work buffer
        torch._foreach_mul_(den, ess)
        torch._foreach_rsqrt_(den)
        for p, sd, old in zip(params, den, stds):
            self._set_std(group, p, sd)
            self._bufs[("w2", p)] = old


# --------------------------------------------------------------------------------------------
# Vadam
# --------------------------------------------------------------------------------------------


class Vadam(VariationalOptimizer):
    r"""Variational Adam :cite:`khan2018fast`: Adam with weight perturbation.

    At :math:`\theta = m + \varepsilon/\sqrt{N s + \lambda}` (:math:`\tilde\lambda = \lambda/N`):

    .. math::

        u &\leftarrow \beta_1 u + (1-\beta_1)(\hat g + \tilde\lambda m), \qquad
        s \leftarrow \beta_2 s + (1-\beta_2)\,\hat g^2, \\
        m &\leftarrow m - \alpha\,\frac{u/(1-\beta_1^t)}{\sqrt{s/(1-\beta_2^t)} + \tilde\lambda}.

    This is the diagonal BLR with three further approximations: the Hessian is replaced by the
    squared minibatch gradient ("gradient magnitude"), the mean update takes Adam's square
    root, and momentum is added. The posterior variance :math:`1/(Ns + \lambda)` is therefore
    only as good as :math:`\hat g^2` is as a curvature estimate (the squared gradient of a
    minibatch of size :math:`M` estimates a mixture of the empirical Fisher and the squared
    mean gradient, exact only for :math:`M=1`).

    Parameters
    ----------
    params
        Parameters or param groups.
    lr
        :math:`\alpha \ge 0`.
    data_size
        :math:`N \ge 1`, the number of training points.
    betas
        :math:`(\beta_1, \beta_2)`, each in :math:`[0, 1)`.
    prior_precision
        :math:`\lambda > 0`.
    hess_init
        Initial :math:`s \ge 0` (the reference code's ``prec_init`` is
        :math:`N\,s_0 + \lambda`; its default corresponds to ``hess_init=0``).
    mc_samples, seed, generator
        Samples per step with a closure; randomness of the samples.
    nonfinite, move_without_grad
        See :class:`IVON`.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        data_size: int = 1,
        betas: tuple[float, float] = (0.9, 0.999),
        prior_precision: float = 1.0,
        hess_init: float = 0.0,
        mc_samples: int = 1,
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        nonfinite: str = "raise",
        move_without_grad: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr, data_size=data_size, betas=betas, prior_precision=prior_precision, hess_init=hess_init
        )
        self._validate_group(defaults)
        super().__init__(
            params, defaults, mc_samples=mc_samples, seed=seed, generator=generator,
            nonfinite=nonfinite, move_without_grad=move_without_grad,
        )

    _precision_keys = ("data_size", "prior_precision")

    def _validate_group(self, group: dict[str, Any]) -> None:
        group["lr"] = _check_nonneg(group["lr"], "lr")
        group["data_size"] = _check_count(group["data_size"], "data_size")
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        group["betas"] = (_check_beta(betas[0], "betas[0]"), _check_beta(betas[1], "betas[1]"))
        group["prior_precision"] = _check_pos(group["prior_precision"], "prior_precision")
        group["hess_init"] = _check_nonneg(group["hess_init"], "hess_init")

    def _init_state(self, group: dict[str, Any], p: Tensor) -> None:
        st = self.state[p]
        st["step"] = 0
        st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        st["exp_avg_sq"] = torch.full_like(p, group["hess_init"], memory_format=torch.preserve_format)

    def _precision(self, group: dict[str, Any], p: Tensor) -> Tensor:
        return group["data_size"] * self.state[p]["exp_avg_sq"] + group["prior_precision"]

    _stat_names = ("grad", "gsq")

    def _fill_statistics(self, out: dict[str, list[Tensor]], grads: list[Tensor], zs: list[Tensor]) -> None:
        torch._foreach_copy_(out["grad"], grads)
        torch._foreach_copy_(out["gsq"], grads)
        torch._foreach_mul_(out["gsq"], grads)

    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> Tensor | None:  # type: ignore[override]
        """One Vadam step; with a closure, ``mc_samples`` sampled evaluations first."""
        return self._guarded(lambda: self._step(closure))

    def _step(self, closure: Closure | None) -> Tensor | None:
        loss = self._run_closure(closure) if closure is not None else None
        acc = self._take_samples()
        self._check_finite(acc, loss)
        moving = self._moving
        for group, sl in self._split():
            all_params = group["params"]
            if not all_params:
                continue
            all_states = [self.state[p] for p in all_params]
            for idx in _buckets(all_states, moving[sl]):
                params = [all_params[i] for i in idx]
                g = [acc["grad"][sl][i] for i in idx]
                gsq = [acc["gsq"][sl][i] for i in idx]
                self._update(group, params, g, gsq)
        return loss

    def _update(self, group: dict[str, Any], params: list[Tensor], g: list[Tensor], gsq: list[Tensor]) -> None:
        """The Vadam update of ``params`` (one param group, one step count)."""
        b1, b2 = group["betas"]
        tl = group["prior_precision"] / group["data_size"]
        states = [self.state[p] for p in params]
        for s in states:
            s["step"] += 1
        t = states[0]["step"]
        u = [s["exp_avg"] for s in states]
        sq = [s["exp_avg_sq"] for s in states]
        gp = torch._foreach_add(g, params, alpha=tl)
        torch._foreach_mul_(u, b1)
        torch._foreach_add_(u, gp, alpha=1.0 - b1)
        torch._foreach_mul_(sq, b2)
        torch._foreach_add_(sq, gsq, alpha=1.0 - b2)
        den = torch._foreach_div(sq, 1.0 - b2**t)
        torch._foreach_sqrt_(den)
        torch._foreach_add_(den, tl)
        num = torch._foreach_div(u, 1.0 - b1**t)
        torch._foreach_div_(num, den)
        torch._foreach_add_(params, num, alpha=-group["lr"])


# --------------------------------------------------------------------------------------------
# VON
# --------------------------------------------------------------------------------------------


class _NewtonBase(VariationalOptimizer):
    """VON/VOGN: s <- beta s + (1-beta) hhat; m <- m - lr (g + lt m)/(s + lt)."""

    _manual_sampling = False
    _precision_keys = ("data_size", "prior_precision")

    def _validate_common(self, group: dict[str, Any]) -> None:
        group["lr"] = _check_nonneg(group["lr"], "lr")
        group["data_size"] = _check_count(group["data_size"], "data_size")
        group["beta"] = _check_beta(group["beta"], "beta")
        group["prior_precision"] = _check_pos(group["prior_precision"], "prior_precision")
        group["hess_init"] = _check_nonneg(group["hess_init"], "hess_init")

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
            nh = [b * h + (1.0 - b) * e for h, e in zip(hs, acc["hess"][sl])]
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
        for (group, sl), nh in zip(self._split(), new_hess):
            tl = group["prior_precision"] / group["data_size"]
            for p, h_new, g, mv in zip(group["params"], nh, acc["grad"][sl], moving[sl]):
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
        if hessian not in ("exact", "hutchinson"):
            raise ValueError(f"hessian must be 'exact' or 'hutchinson', got {hessian!r}")
        self.hessian = hessian
        self.hutchinson_samples = _check_count(hutchinson_samples, "hutchinson_samples")
        defaults = dict(
            lr=lr, data_size=data_size, beta=beta, prior_precision=prior_precision, hess_init=hess_init
        )
        self._validate_group(defaults)
        super().__init__(
            params, defaults, mc_samples=mc_samples, seed=seed, generator=generator,
            nonfinite=nonfinite, move_without_grad=move_without_grad,
        )

    def _validate_group(self, group: dict[str, Any]) -> None:
        self._validate_common(group)

    def _hessian_diagonal(self, grads: Sequence[Tensor], params: list[Tensor]) -> list[Tensor]:
        if self.hessian == "exact":
            out = []
            for gi, p in zip(grads, params):
                n = p.numel()
                if not gi.requires_grad:  # the loss is linear in p
                    out.append(torch.zeros_like(p))
                    continue
                basis = torch.eye(n, dtype=p.dtype, device=p.device).view(n, *p.shape)
                (hv,) = torch.autograd.grad(
                    gi, p, grad_outputs=basis, is_grads_batched=True, retain_graph=True, allow_unused=True
                )
                if hv is None:
                    out.append(torch.zeros_like(p))
                else:
                    out.append(torch.diagonal(hv.reshape(n, n)).reshape(p.shape))
            return out
        k = self.hutchinson_samples
        probes = [
            torch.randint(0, 2, (k, *p.shape), generator=self._generator, device=p.device).to(p.dtype) * 2 - 1
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
            for j, (hv, v) in enumerate(zip(hvs, probes)):
                if hv is not None:
                    out[j] = (v * hv).mean(0)
        return out

    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> Tensor:  # type: ignore[override]
        """One VON step. ``closure()`` returns the average minibatch loss, no ``backward()``."""
        if closure is None:
            raise TypeError("VON.step needs a closure that returns the loss (without calling backward())")
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
                        raise TypeError("VON's closure must return a scalar tensor (the average loss)")
                    if any(p.grad is not None for p in params):
                        raise RuntimeError(
                            "VON's closure must return the loss without calling backward(): "
                            "VON differentiates it twice itself"
                        )
                    if not loss.requires_grad:
                        raise RuntimeError("the loss returned by the closure does not depend on the parameters")
                    live = [p.requires_grad for p in params]
                    got = torch.autograd.grad(
                        loss, [p for p, lv in zip(params, live) if lv], create_graph=True, allow_unused=True
                    )
                    it = iter(got)
                    grads = [next(it) if lv else None for lv in live]
                    self._note_grads([g is not None for g in grads])
                    grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)]
                    hdiag = self._hessian_diagonal(grads, params)
                self._accumulate({"grad": [g.detach() for g in grads], "hess": hdiag})
                losses.append(loss.detach())
        mean_loss = torch.stack(losses).mean()
        self._newton_update(mean_loss)
        return mean_loss


# --------------------------------------------------------------------------------------------
# VOGN and its closure
# --------------------------------------------------------------------------------------------


class PerExampleClosure:
    r"""A minibatch closure that can also return per-example gradients (via :mod:`torch.func`).

    ``closure()`` behaves like an ordinary training closure for any optimizer: it zeroes the
    model's gradients, evaluates the average negative log-likelihood
    :math:`\hat f = \frac1M\sum_i -\log p(y_i\mid x_i,\theta)`, calls ``backward()`` and returns
    the loss. :meth:`per_example_gradients` returns the :math:`M` losses and gradients
    :math:`g_i = -\nabla\log p(y_i\mid x_i, \theta)` at the current parameter values, computed
    with ``vmap(grad(...))`` over examples and :func:`torch.func.functional_call`;
    :meth:`sample_targets` draws :math:`\tilde y_i \sim p(y\mid x_i, \theta)` (used by
    :class:`VOGN` with ``fisher="sampled"``).

    Parameters
    ----------
    model
        An ``nn.Module`` mapping a batch ``(M, ...)`` to outputs ``(M, ...)``. It must treat
        examples independently (no batch norm in training mode; dropout off).
    inputs, targets
        The minibatch.
    likelihood
        ``"categorical"`` (outputs are logits, targets class indices) or ``"gaussian"``
        (outputs are means, targets of the same shape; ``(M,)`` targets are accepted for
        ``(M, 1)`` outputs).
    noise_std
        :math:`\sigma > 0` of the Gaussian likelihood.
    """

    def __init__(
        self,
        model: nn.Module,
        inputs: Tensor,
        targets: Tensor,
        likelihood: str = "categorical",
        noise_std: float = 1.0,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
        if not isinstance(inputs, Tensor) or not isinstance(targets, Tensor):
            raise TypeError("inputs and targets must be tensors")
        if inputs.ndim == 0 or targets.ndim == 0 or inputs.shape[0] != targets.shape[0] or inputs.shape[0] == 0:
            raise ValueError(
                f"inputs and targets must share a non-empty batch axis, got {tuple(inputs.shape)} "
                f"and {tuple(targets.shape)}"
            )
        if likelihood == "categorical" and (targets.dtype != torch.long or targets.ndim != 1):
            raise TypeError("categorical targets must be a (M,) tensor of class indices (torch.long)")
        self.model = model
        self.inputs = inputs
        self.targets = targets
        self.likelihood = likelihood
        self.noise_std = _check_pos(noise_std, "noise_std")

    def _nll(self, out: Tensor, y: Tensor) -> Tensor:
        """Per-example negative log-likelihoods, shape ``(M,)``."""
        if self.likelihood == "categorical":
            return torch.nn.functional.cross_entropy(out, y, reduction="none")
        y = y.reshape(out.shape)
        z = (out - y) / self.noise_std
        per = 0.5 * z * z + math.log(self.noise_std) + 0.5 * math.log(2 * math.pi)
        return per.reshape(out.shape[0], -1).sum(1)

    def __call__(self) -> Tensor:
        self.model.zero_grad(set_to_none=True)
        loss = self._nll(self.model(self.inputs), self.targets).mean()
        loss.backward()
        return loss.detach()

    def loss(self) -> Tensor:
        """The average negative log-likelihood at the current parameters (differentiable)."""
        return self._nll(self.model(self.inputs), self.targets).mean()

    @torch.no_grad()
    def sample_targets(self, generator: torch.Generator | None = None) -> Tensor:
        r"""Targets drawn from the model's own predictive :math:`p(y\mid x_i, \theta)`."""
        out = self.model(self.inputs)
        if self.likelihood == "categorical":
            return torch.multinomial(out.softmax(-1), 1, generator=generator).squeeze(-1)
        noise = torch.randn(out.shape, generator=generator, dtype=out.dtype, device=out.device)
        return (out + self.noise_std * noise).reshape(self.targets.shape)

    def per_example_gradients(
        self, params: Sequence[Tensor], targets: Tensor | None = None
    ) -> tuple[Tensor, list[Tensor]]:
        """Per-example losses ``(M,)`` and gradients ``[(M, *p.shape) for p in params]``.

        ``params`` must be parameters of the model; the others are held fixed. ``targets``
        replaces the stored targets (e.g. by :meth:`sample_targets`).
        """
        names = {id(p): n for n, p in self.model.named_parameters()}
        missing = [i for i, p in enumerate(params) if id(p) not in names]
        if missing:
            raise ValueError(f"params {missing} are not parameters of the closure's model")
        wanted = {names[id(p)]: p.detach() for p in params}
        fixed = {n: p.detach() for n, p in self.model.named_parameters() if n not in wanted}
        fixed.update(dict(self.model.named_buffers()))
        y_all = self.targets if targets is None else targets

        def single(w: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
            out = functional_call(self.model, {**w, **fixed}, (x.unsqueeze(0),))
            return self._nll(out, y.unsqueeze(0)).sum()

        grads, losses = vmap(grad_and_value(single), in_dims=(None, 0, 0))(wanted, self.inputs, y_all)
        return losses, [grads[names[id(p)]] for p in params]


class VOGN(_NewtonBase):
    r"""Variational Online Gauss-Newton :cite:`khan2018fast,osawa2019practical`.

    VON with the Hessian of the average loss replaced by the mean of squared per-example
    gradients at the sampled weights:

    .. math::

        s \leftarrow \beta\,s + (1-\beta)\,\frac1M\sum_{i=1}^M g_i(\theta)^2, \qquad
        m \leftarrow m - \alpha\,\frac{\hat g(\theta) + \tilde\lambda m}{s + \tilde\lambda}.

    Squares are never negative, so the precision stays positive. Per-example gradients come
    from :meth:`PerExampleClosure.per_example_gradients` (``vmap`` over examples, one
    backward pass's worth of work). ``fisher`` chooses the targets in :math:`g_i`:

    - ``"empirical"`` (the paper): the observed :math:`y_i`; :math:`\frac1M\sum g_i^2` is the
      diagonal *empirical Fisher*, which differs from the Hessian/GGN unless residuals match the
      model's noise :cite:`kunstner2019limitations`, so the variances are biased;
    - ``"sampled"``: :math:`\tilde y_i \sim p(y\mid x_i, \theta)`; then
      :math:`\mathbb{E}[g_i^2]` is the diagonal of the Fisher = GGN of example :math:`i`, an
      unbiased estimate (for linear regression: the exact Hessian). The mean gradient still
      uses the observed targets.

    Parameters are those of :class:`VON` (``hessian`` aside) plus ``fisher``. The closure
    must be a :class:`PerExampleClosure` (or provide the same methods).
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
        fisher: str = "empirical",
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        nonfinite: str = "raise",
        move_without_grad: bool = False,
    ) -> None:
        if fisher not in ("empirical", "sampled"):
            raise ValueError(f"fisher must be 'empirical' or 'sampled', got {fisher!r}")
        self.fisher = fisher
        defaults = dict(
            lr=lr, data_size=data_size, beta=beta, prior_precision=prior_precision, hess_init=hess_init
        )
        self._validate_group(defaults)
        super().__init__(
            params, defaults, mc_samples=mc_samples, seed=seed, generator=generator,
            nonfinite=nonfinite, move_without_grad=move_without_grad,
        )

    def _validate_group(self, group: dict[str, Any]) -> None:
        self._validate_common(group)

    @torch.no_grad()
    def step(self, closure: PerExampleClosure | None = None) -> Tensor:  # type: ignore[override]
        """One VOGN step on the minibatch of ``closure`` (a :class:`PerExampleClosure`)."""
        if closure is None or not hasattr(closure, "per_example_gradients"):
            raise TypeError(
                "VOGN.step needs a PerExampleClosure(model, inputs, targets, likelihood) "
                "(per-example gradients come from torch.func)"
            )
        if self._sampling:
            raise RuntimeError("step() cannot be called inside sampled_params()")
        return self._guarded(lambda: self._step(closure))

    def _step(self, closure: PerExampleClosure) -> Tensor:
        params = self._params()
        losses = []
        for _ in range(self.mc_samples):
            with self.sampled_params():
                self._note_grads([p.requires_grad for p in params])
                per_loss, per_grads = closure.per_example_gradients(params)
                mean_grads = [g.mean(0) for g in per_grads]
                if self.fisher == "sampled":
                    y_tilde = closure.sample_targets(self._generator)
                    _, per_grads = closure.per_example_gradients(params, targets=y_tilde)
                hess = [(g * g).mean(0) for g in per_grads]
                self._accumulate({"grad": mean_grads, "hess": hess})
                losses.append(per_loss.mean())
        mean_loss = torch.stack(losses).mean()
        self._newton_update(mean_loss)
        return mean_loss
