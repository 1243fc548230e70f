r"""The machinery shared by the Bayesian-learning-rule optimizers: a diagonal Gaussian over the parameters.

:class:`VariationalOptimizer` keeps the means in the parameters and the curvature in the
optimizer state; it provides the sampling context, the Monte Carlo averaging of gradient
statistics, the failure policy of ``igbook._safety`` and a ``state_dict`` that holds the state
of the private generator. The optimizers themselves live in ``igbook.optim.blr.ivon``,
``igbook.optim.blr.vadam`` and ``igbook.optim.blr.newton`` (see :mod:`igbook.optim.blr`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from igbook._distributed import (
    active_group,
    all_reduce_mean_,
    check_process_group,
    rank_seed,
)
from igbook._safety import Snapshot, check_nonfinite_mode, first_nonfinite, nonfinite_error
from igbook._validation import (
    check_choice,
    check_count,
    check_scalar,
    check_seed,
    resolve_generator,
)

__all__ = ["VariationalOptimizer"]

#: a training closure: evaluates the loss (and, for most optimizers, calls ``backward()``)
Closure = Callable[[], Tensor]


def check_beta(value: Any, name: str) -> float:
    """A decay rate in :math:`[0, 1)` as a ``float``, or raise naming ``name`` (via ``igbook._validation``)."""
    return check_scalar(value, name, low=0.0, high=1.0, closed_high=False)


class SkipStep(Exception):
    """Raised inside a step to skip it under ``nonfinite="skip"`` (carries the closure's loss).

    :meth:`VariationalOptimizer._guarded` swallows it, restores the generator and counts the
    step in ``skipped_steps``; it never reaches the caller.
    """

    def __init__(self, loss: Any = None) -> None:
        super().__init__("step skipped")
        self.loss = loss


def group_by_step(states: list[dict[str, Any]], moving: list[bool]) -> list[list[int]]:
    """Indices of the moving parameters, grouped by their step count (one debiasing per group).

    ``states[i]["step"]`` is parameter ``i``'s step count; parameters with ``moving[i]`` false
    are left out.
    """
    out: dict[int, list[int]] = {}
    for i, (st, mv) in enumerate(zip(states, moving, strict=False)):
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
        self.mc_samples = check_count(mc_samples, "mc_samples")
        self._generator = resolve_generator(seed, generator)
        self.nonfinite = check_nonfinite_mode(nonfinite)
        if not isinstance(move_without_grad, bool):
            raise TypeError(
                f"move_without_grad must be a bool, got {type(move_without_grad).__name__}"
            )
        self.move_without_grad = move_without_grad
        #: number of steps skipped under ``nonfinite="skip"``
        self.skipped_steps = 0
        self._has_grad: list[bool] | None = None  # per parameter: a gradient in some sample
        self._sampling = False
        self._acc: dict[str, list[Tensor]] | None = None  # Monte Carlo averages, per group order
        self._count = 0
        self._std_cache: dict[Tensor, tuple[tuple, Tensor]] = {}
        self._bufs: dict[tuple[str, Tensor], Tensor] = {}  # persistent work buffers
        self._noise = "shared"
        self._process_group: Any = None
        super().__init__(params, defaults)

    #: whether the per-sample statistics are computed by the optimizer itself (VON, VOGN: never
    #: averaged by DDP, so always averaged over the process group)
    _local_statistics = False

    def distribute(
        self, *, noise: str = "shared", seed: int | None = None, process_group: Any = None
    ) -> VariationalOptimizer:
        r"""Choose how this optimizer samples and reduces under ``torch.distributed``.

        ``noise="shared"`` (the default, also without calling this method): every rank draws
        the *same* weight sample (build the optimizer with the same ``seed`` on every rank), so
        DDP's averaged gradient is the gradient of the global batch at that sample and a run on
        :math:`R` ranks with per-rank batch :math:`b` is the one-process run with batch
        :math:`Rb`. VON and VOGN compute their gradient and curvature themselves (not through
        ``backward()``), so those statistics are averaged over the group.

        ``noise="per_rank"``: rank :math:`r` reseeds its private generator with
        ``seed + r`` (distinct, reproducible samples) and *every* per-sample statistic
        (:math:`\hat g`, and :math:`z\odot\hat g` or :math:`\hat h`) is averaged over the group
        at ``step``, as ``ivon-opt`` does with ``sync=True`` :cite:`shen2024variational`:
        :math:`R` ranks act as :math:`R` Monte Carlo samples. The gradients must then be the
        rank's own: do not let DDP average them (``with ddp.no_sync():`` or no DDP, after
        broadcasting the initial weights); with averaged gradients the estimate
        :math:`z_r\odot\bar g` of the curvature would be :math:`R` times too small.

        Parameters
        ----------
        noise
            ``"shared"`` or ``"per_rank"``.
        seed
            Required for ``"per_rank"``: the base seed (rank ``r`` uses ``seed + r``).
        process_group
            The group (``None``: the world group when initialized, else nothing happens).

        Returns
        -------
        VariationalOptimizer
            ``self``.
        """
        self._noise = check_choice(noise, "noise", ("shared", "per_rank"))
        self._process_group = check_process_group(process_group)
        if noise == "per_rank":
            if seed is None:
                raise ValueError("seed is required for noise='per_rank' (rank r uses seed + r)")
            if self._generator is None:
                raise ValueError(
                    "noise='per_rank' needs a private generator: build the optimizer with seed="
                )
            self._generator.manual_seed(rank_seed(check_seed(seed), self._process_group))
        return self

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
        key = (
            st.get("step"),
            tuple(id(v) for v in st.values() if isinstance(v, Tensor)),
            self._hyper_key(group),
        )
        hit = self._std_cache.get(p)
        if hit is not None and hit[0] == key:
            return hit[1]
        std = self._precision(group, p).rsqrt()
        self._std_cache[p] = (key, std)
        return std

    def _set_std(self, group: dict[str, Any], p: Tensor, std: Tensor) -> None:
        """Store a standard deviation computed during the update (saves recomputing it)."""
        st = self.state[p]
        key = (
            st.get("step"),
            tuple(id(v) for v in st.values() if isinstance(v, Tensor)),
            self._hyper_key(group),
        )
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
            z = torch.randn(
                numel, generator=self._generator, dtype=ps[0].dtype, device=ps[0].device
            )
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
                grads = [
                    p.grad.detach() if p.grad is not None else torch.zeros_like(p) for p in params
                ]
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

    def _fill_statistics(
        self, out: dict[str, list[Tensor]], grads: list[Tensor], zs: list[Tensor]
    ) -> None:
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
            self._has_grad = [a or b for a, b in zip(self._has_grad, has, strict=False)]

    def _moves(self, n: int) -> list[bool]:
        """Which of the ``n`` parameters the update may move (see ``move_without_grad``)."""
        if self.move_without_grad or self._has_grad is None or len(self._has_grad) != n:
            return [True] * n
        return list(self._has_grad)

    def _guarded(
        self, body: Callable[[], Any], closure_loss: Callable[[], Any] | None = None
    ) -> Any:
        """Run a step so that a failure leaves no trace.

        ``body`` samples (through a closure) and updates. If it raises, the Monte Carlo
        accumulators are dropped and the generator is put back to its state at the call (the
        sampling context has already restored the means); the update itself writes only after
        :meth:`_check_finite` passed. A :class:`SkipStep` (``nonfinite="skip"``) is swallowed.
        """
        snap = Snapshot([], generators=[self._generator])
        try:
            return body()
        except SkipStep as skip:
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
                    raise SkipStep(loss)
                what = (
                    "gradient"
                    if key == "grad"
                    else f"Monte Carlo statistic {key!r} (gradient-based)"
                )
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
        if self._local_statistics or self._noise == "per_rank":
            group = active_group(self._process_group)
            if group is not False:  # before the finite check: a NaN on one rank fails all ranks
                all_reduce_mean_([t for k in sorted(acc) for t in acc[k]], group)
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
