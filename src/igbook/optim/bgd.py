r"""Bayesian Gradient Descent (BGD, the diagonal FOO-VB) and the mean-field Gaussian machinery it shares with MESU.

Every weight :math:`\omega_i` of the network is a Gaussian synapse
:math:`\omega_i\sim\Normal(\mu_i,\sigma_i^2)`. The *means* are the model's ordinary
parameters (so the model predicts with its means and can be saved as usual); the standard
deviations :math:`\sigma_i` live in the optimizer state (``optimizer.state[p]["sigma"]``).

**Gradients by the reparameterization.** With :math:`\omega = \mu + \sigma\odot\varepsilon`,
:math:`\varepsilon\sim\Normal(0, I)`, the gradients of the expected loss
:math:`\E_q[L(\omega)]` are

.. math::

    \bar g = \frac{\partial\,\E_q[L]}{\partial\mu} = \E_\varepsilon\Big[\frac{\partial L}{\partial\omega}\Big],
    \qquad
    \hat g = \frac{\partial\,\E_q[L]}{\partial\sigma}
    = \E_\varepsilon\Big[\varepsilon\odot\frac{\partial L}{\partial\omega}\Big],

estimated with ``num_samples`` weight draws, each draw shared by the whole minibatch
:cite:`zeno2018task,bonnet2025bayesian`. Two ways to obtain them:

* :meth:`GaussianMeanFieldOptimizer.step` with a closure: the optimizer writes each sampled
  :math:`\omega` into the parameters, calls the closure (forward + ``backward``), accumulates
  :math:`\bar g,\hat g`, and restores the means. Works with any model.
* :meth:`GaussianMeanFieldOptimizer.draw_samples` + :meth:`GaussianMeanFieldOptimizer.apply_gradients`:
  draw all samples at once (tensors of shape ``(S, *p.shape)``), evaluate them in one batched
  call (e.g. :func:`torch.func.vmap` over :func:`torch.func.functional_call`), and hand the
  two gradients back. Faster for small networks; :mod:`igbook.continual` uses it.

**BGD** :cite:`zeno2018task,zeno2021task` is the fixed-point solution of the online variational
Bayes update with the previous posterior as the prior (no forgetting):

.. math::

    \mu \leftarrow \mu - \eta\,\sigma^2\odot\bar g,
    \qquad
    \sigma \leftarrow \sigma\odot\sqrt{1 + \big(\tfrac12\sigma\odot\hat g\big)^2} - \tfrac12\sigma^2\odot\hat g .

The :math:`\sigma` update is the positive root of a quadratic, so :math:`\sigma` stays
strictly positive whatever the gradient. To first order in :math:`\sigma\hat g` it is
:math:`\Delta\sigma = -\tfrac12\sigma^2\hat g`, the MESU update with an infinite memory window
(:mod:`igbook.optim.mesu`).

**Failures.** A step never poisons the model (``igbook._safety``): non-finite
gradients raise :class:`FloatingPointError` naming the parameter before anything is written
(``nonfinite="skip"``: the step is skipped and counted in ``skipped_steps``); a closure that
raises on any sample leaves the means, the standard deviations and the generator as before
the call; an update that would make a standard deviation non-positive or a value non-finite
is undone before the error is raised. ``state_dict()`` holds the generator's state, so a
resumed run repeats an uninterrupted one bit for bit. (The JAX re-implementation in the MESU authors' pMNIST code flips
the sign of the square-root term; that is a second-order difference, and this module follows
the paper.)
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
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
from igbook._validation import check_choice, check_count, check_nonnegative_real, check_seed
from igbook.optim.mean_field import (
    SigmaInit,
    check_mean_field,
    check_ratio_max,
    check_sigma_bounds,
    check_sigma_init,
    clamp_and_bound,
)

__all__ = ["GaussianMeanFieldOptimizer", "BGD", "bgd_update"]


def bgd_update(
    mu: Tensor, sigma: Tensor, grad_mu: Tensor, grad_sigma: Tensor, *, eta: float = 1.0
) -> tuple[Tensor, Tensor]:
    r"""One BGD step :cite:`zeno2018task` on tensors (checked; the optimizers call the unchecked twin).

    .. math::

        \mu' = \mu - \eta\,\sigma^2\bar g,\qquad
        \sigma' = \sigma\sqrt{1 + (\sigma\hat g/2)^2} - \sigma^2\hat g/2 .

    Parameters
    ----------
    mu, sigma
        Current means and standard deviations (same shape).
    grad_mu, grad_sigma
        :math:`\bar g = \partial\E_q[L]/\partial\mu` and :math:`\hat g = \partial\E_q[L]/\partial\sigma`.
    eta
        Step size of the mean (1 in the paper).

    Returns
    -------
    tuple of Tensor
        The new ``(mu, sigma)``; ``sigma`` is strictly positive whenever the input is (the
        difference :math:`\sqrt{1+a^2}-a` is evaluated as :math:`1/(\sqrt{1+a^2}+a)` for
        :math:`a>0`, so that it does not cancel to 0 in floating point).

    Raises
    ------
    ValueError, TypeError
        If an input is not a finite real tensor, ``sigma`` is not > 0, the shapes differ, or
        ``eta`` is not a finite number >= 0.
    """
    mu, sigma, grad_mu, grad_sigma = check_mean_field(mu, sigma, grad_mu, grad_sigma)
    check_nonnegative_real(eta, "eta")
    return _bgd_update(mu, sigma, grad_mu, grad_sigma, eta=eta)


def _bgd_update(
    mu: Tensor, sigma: Tensor, grad_mu: Tensor, grad_sigma: Tensor, *, eta: float = 1.0
) -> tuple[Tensor, Tensor]:
    """:func:`bgd_update` without checks (the optimizer checked its inputs once per step)."""
    half = 0.5 * sigma * grad_sigma
    root = torch.sqrt(1.0 + half * half)
    # sqrt(1 + a^2) - a = 1 / (sqrt(1 + a^2) + a): no cancellation for large positive a
    factor = torch.where(half > 0, 1.0 / (root + half.clamp_min(0)), root - half)
    return mu - eta * sigma * sigma * grad_mu, sigma * factor


class GaussianMeanFieldOptimizer(Optimizer):
    r"""Base class of optimizers over diagonal Gaussian weights :math:`\Normal(\mu,\sigma^2)`.

    The parameters passed in are the means :math:`\mu`. Each parameter's standard deviation is
    created at construction as ``state[p]["sigma"]`` from the group's ``sigma_init`` (a number,
    or a callable ``param -> Tensor | float`` for layer-dependent initializations) and saved
    with ``state_dict()``.

    Subclasses implement ``_update`` (one parameter tensor, given :math:`\bar g`,
    :math:`\hat g`); everything else (sampling, the Monte Carlo loop, bookkeeping) is here.

    Parameters
    ----------
    params
        Iterable of tensors or of param-group dicts (the means).
    defaults
        Group defaults; must contain ``sigma_init``.
    num_samples
        Monte Carlo weight samples per step (each shared by the whole minibatch).
    seed, generator
        Source of the Gaussian noise: a :class:`torch.Generator` or a seed for a new one.
    nonfinite
        ``"raise"`` (default) or ``"skip"``: what a step does with a non-finite gradient.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        defaults: dict[str, Any],
        *,
        num_samples: int = 10,
        seed: int = 0,
        generator: torch.Generator | None = None,
        nonfinite: str = "raise",
    ) -> None:
        self.num_samples = check_count(num_samples, "num_samples")
        self.nonfinite = check_nonfinite_mode(nonfinite)
        #: number of steps skipped under ``nonfinite="skip"``
        self.skipped_steps = 0
        super().__init__(params, defaults)
        first = self.param_groups[0]["params"][0]
        if generator is None:
            seed = check_seed(seed)
            generator = torch.Generator(device=first.device).manual_seed(seed)
        elif not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        self.generator = generator
        self._dist_noise = "shared"
        self._process_group: Any = None
        for group in self.param_groups:
            for p in group["params"]:
                self._state(p, group)

    def distribute(
        self, *, noise: str = "shared", seed: int | None = None, process_group: Any = None
    ) -> GaussianMeanFieldOptimizer:
        r"""Choose how the weight samples are drawn and reduced under ``torch.distributed``.

        ``"shared"`` (default, also without calling this): the same ``seed`` on every rank
        gives the same samples, DDP averages each sample's gradient, and :math:`\bar g`,
        :math:`\hat g = \overline{\varepsilon\odot g}` are those of the global batch (a run on
        :math:`R` ranks with batch :math:`b` is the one-process run with batch :math:`Rb`).
        ``"per_rank"``: rank :math:`r` reseeds the generator with ``seed + r`` and
        :math:`\bar g`, :math:`\hat g` are averaged over the group at :meth:`step` (the ranks
        act as :math:`R\cdot` ``num_samples`` Monte Carlo samples); the gradients must then be
        the rank's own (``with ddp.no_sync():`` or no DDP), see
        :meth:`igbook.optim.VariationalOptimizer.distribute`. Returns ``self``.
        """
        self._dist_noise = check_choice(noise, "noise", ("shared", "per_rank"))
        self._process_group = check_process_group(process_group)
        if noise == "per_rank":
            if seed is None:
                raise ValueError("seed is required for noise='per_rank' (rank r uses seed + r)")
            self.generator.manual_seed(rank_seed(check_seed(seed), self._process_group))
        return self

    # -- state ---------------------------------------------------------------------------
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        self._validate_group(group)
        if hasattr(self, "generator"):
            for p in group["params"]:
                self._state(p, group)

    def _validate_group(self, group: dict[str, Any]) -> None:
        check_sigma_init(group["sigma_init"])

    def _state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        state = self.state[p]
        if "sigma" not in state:
            init = group["sigma_init"]
            value = init(p) if callable(init) else init
            sigma = torch.as_tensor(value, dtype=p.dtype, device=p.device)
            sigma = torch.broadcast_to(sigma, p.shape).clone()
            if not bool(torch.isfinite(sigma).all()) or not bool((sigma > 0).all()):
                raise ValueError(
                    "sigma_init must give finite standard deviations > 0 for every parameter"
                )
            state["sigma"] = sigma
            state["step"] = 0
        return state

    def _params(self) -> list[tuple[Tensor, dict[str, Any]]]:
        return [(p, g) for g in self.param_groups for p in g["params"]]

    def sigmas(self) -> list[Tensor]:
        """The current standard deviations, one tensor per parameter (in param-group order)."""
        return [self._state(p, g)["sigma"] for p, g in self._params()]

    # -- sampling ------------------------------------------------------------------------
    def _noise(
        self, shape: Sequence[int], like: Tensor, generator: torch.Generator | None
    ) -> Tensor:
        return torch.randn(
            tuple(shape),
            generator=generator or self.generator,
            dtype=like.dtype,
            device=like.device,
        )

    @torch.no_grad()
    def draw_samples(
        self, num_samples: int | None = None, *, generator: torch.Generator | None = None
    ) -> tuple[list[Tensor], list[Tensor]]:
        r"""Draw weight samples :math:`\omega_s=\mu+\sigma\odot\varepsilon_s` for every parameter.

        Returns ``(weights, noise)``: two lists (param-group order) of tensors of shape
        ``(S, *p.shape)``. ``weights`` are detached; call ``requires_grad_()`` on them to
        differentiate a loss evaluated at the samples.
        """
        s = self.num_samples if num_samples is None else check_count(num_samples, "num_samples")
        weights, noise = [], []
        for p, g in self._params():
            sigma = self._state(p, g)["sigma"]
            eps = self._noise((s, *p.shape), p, generator)
            noise.append(eps)
            weights.append(p.detach().unsqueeze(0) + sigma.unsqueeze(0) * eps)
        return weights, noise

    @contextlib.contextmanager
    def sampled_params(
        self, train: bool = False, *, generator: torch.Generator | None = None
    ) -> Iterator[list[Tensor]]:
        """Context manager: write one weight sample into the parameters, restore the means on exit.

        Yields the noise tensors :math:`\\varepsilon` used. ``train=True`` is not supported
        (these optimizers learn from :meth:`step` or :meth:`apply_gradients`); the argument
        exists so that :func:`igbook.optim.sampled_params` works with every optimizer.
        """
        if not isinstance(train, bool):
            raise TypeError(f"train must be a bool, got {type(train).__name__}")
        if train:
            raise ValueError(
                f"{type(self).__name__}.sampled_params(train=True) is not supported: pass a closure to "
                "step(), or use draw_samples() and apply_gradients()"
            )
        params = [p for p, _ in self._params()]
        means = [p.detach().clone() for p in params]
        noise = []
        with torch.no_grad():
            for p, g in self._params():
                eps = self._noise(p.shape, p, generator)
                noise.append(eps)
                p.add_(self._state(p, g)["sigma"] * eps)
        try:
            yield noise
        finally:
            with torch.no_grad():
                for p, m in zip(params, means):
                    p.copy_(m)

    # -- the step ------------------------------------------------------------------------
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor:  # type: ignore[override]
        r"""Estimate :math:`\bar g,\hat g` with ``num_samples`` weight samples, then update.

        ``closure`` must compute the loss at the current parameter values, call ``backward()``
        and return the loss (the parameters' ``.grad`` are cleared before each call). After
        the step the parameters hold the new means and their ``.grad`` hold :math:`\bar g`.

        Returns
        -------
        Tensor
            The Monte Carlo mean of the loss over the samples (before the update).
        """
        if closure is None:
            raise ValueError(
                f"{type(self).__name__}.step needs a closure: the loss must be evaluated at sampled "
                "weights (or draw the samples yourself with draw_samples() and call apply_gradients())"
            )
        items = self._params()
        params = [p for p, _ in items]
        means = [p.detach().clone() for p in params]
        sigmas = [self._state(p, g)["sigma"] for p, g in items]
        g_mu: list[Tensor | None] = [None] * len(params)
        g_sigma: list[Tensor | None] = [None] * len(params)
        total = 0.0
        s_count = self.num_samples
        rng = self.generator.get_state()
        try:
            for _ in range(s_count):
                with torch.no_grad():
                    noise = [self._noise(p.shape, p, None) for p in params]
                    for p, m, sg, e in zip(params, means, sigmas, noise):
                        p.copy_(m + sg * e)
                for p in params:
                    p.grad = None
                with torch.enable_grad():
                    loss = closure()
                total += float(loss.detach())
                for i, (p, e) in enumerate(zip(params, noise)):
                    if p.grad is None:
                        continue
                    gr = p.grad.detach()
                    g_mu[i] = gr.clone() if g_mu[i] is None else g_mu[i] + gr
                    g_sigma[i] = e * gr if g_sigma[i] is None else g_sigma[i] + e * gr
        except BaseException:
            self.generator.set_state(rng)
            raise
        finally:
            with torch.no_grad():
                for p, m in zip(params, means):
                    p.copy_(m)
        gm = [None if g is None else g / s_count for g in g_mu]
        gs = [None if g is None else g / s_count for g in g_sigma]
        if self._dist_noise == "per_rank":
            group = active_group(self._process_group)
            if group is not False:  # before the finite check: a NaN on one rank fails all ranks
                all_reduce_mean_([g for g in gm + gs if g is not None], group)
        for p, g in zip(params, gm):
            p.grad = g
        mean_loss = torch.tensor(total / s_count)
        try:
            if not self._apply(gm, gs):
                self.generator.set_state(rng)  # a skipped step leaves no trace
        except BaseException:
            self.generator.set_state(rng)
            raise
        return mean_loss

    @torch.no_grad()
    def apply_gradients(
        self, grads_mu: Sequence[Tensor | None], grads_sigma: Sequence[Tensor | None]
    ) -> None:
        r"""Apply the update given :math:`\bar g` and :math:`\hat g` for every parameter.

        Both lists follow param-group order (as ``sigmas()``); a ``None`` entry leaves that
        parameter unchanged (like a parameter without a gradient in ``torch.optim``). Every
        gradient is checked before anything is written: a non-finite one raises
        :class:`FloatingPointError` (or, with ``nonfinite="skip"``, the update is skipped), and
        an update that would make a standard deviation non-positive or a value non-finite is
        undone before :class:`RuntimeError` is raised.
        """
        self._apply(grads_mu, grads_sigma)

    @torch.no_grad()
    def _apply(
        self, grads_mu: Sequence[Tensor | None], grads_sigma: Sequence[Tensor | None]
    ) -> bool:
        """:meth:`apply_gradients`; returns ``False`` when the step was skipped."""
        items = self._params()
        if len(grads_mu) != len(items) or len(grads_sigma) != len(items):
            raise ValueError(
                f"grads_mu and grads_sigma must hold one entry per parameter ({len(items)}), "
                f"got {len(grads_mu)} and {len(grads_sigma)}"
            )
        live = []
        for i, ((p, _group), gm, gs) in enumerate(zip(items, grads_mu, grads_sigma)):
            if gm is None or gs is None:
                continue
            for nm, t in (("grads_mu", gm), ("grads_sigma", gs)):
                if not isinstance(t, Tensor):
                    raise TypeError(f"{nm}[{i}] must be a tensor or None, got {type(t).__name__}")
            if gm.shape != p.shape or gs.shape != p.shape:
                raise ValueError(
                    f"gradients must have the parameter's shape {tuple(p.shape)}, got "
                    f"{tuple(gm.shape)} and {tuple(gs.shape)}"
                )
            live.append(i)
        for nm, gl in (("gradient", grads_mu), ("sigma gradient", grads_sigma)):
            bad = first_nonfinite([gl[i] for i in live])
            if bad is not None:
                if self.nonfinite == "skip":
                    self.skipped_steps += 1
                    return False
                i = live[bad]
                raise nonfinite_error(
                    type(self).__name__, nm, f"#{i} (shape {tuple(items[i][0].shape)})"
                )
        snap = Snapshot([items[i][0] for i in live], self.state)
        try:
            self._apply_checked(
                [items[i] for i in live],
                [grads_mu[i] for i in live],
                [grads_sigma[i] for i in live],
            )
        except BaseException:
            snap.restore()
            raise
        return True

    def _apply_checked(
        self,
        items: list[tuple[Tensor, dict[str, Any]]],
        grads_mu: list[Tensor],
        grads_sigma: list[Tensor],
    ) -> None:
        for (p, group), gm, gs in zip(items, grads_mu, grads_sigma):
            state = self._state(p, group)
            self._update(p, state, group, gm.to(p.dtype), gs.to(p.dtype))
            state["step"] += 1
            sigma = state["sigma"]
            lo, hi, pmax = torch.stack(
                [sigma.min(), sigma.max(), p.detach().abs().max()]
            ).tolist()  # one sync
            if not (lo > 0 and math.isfinite(hi) and math.isfinite(pmax)):
                raise RuntimeError(
                    f"{type(self).__name__}: a standard deviation became <= 0 or a value became non-finite "
                    f"(min sigma {lo:.3g}); the step was too large for sigma * |grad|: "
                    "lower the learning rates or the batch size, or set ratio_max / sigma_bounds"
                )

    def _update(
        self, p: Tensor, state: dict[str, Any], group: dict[str, Any], g_mu: Tensor, g_sigma: Tensor
    ) -> None:
        raise NotImplementedError

    # -- serialization -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The torch state dict plus the generator's state (``"rng_state"``): resuming is exact."""
        sd = super().state_dict()
        sd["rng_state"] = self.generator.get_state()
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a :meth:`state_dict`; restores the generator's state when it holds one."""
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        state_dict = dict(state_dict)
        rng = state_dict.pop("rng_state", None)
        super().load_state_dict(state_dict)
        if rng is not None:
            self.generator.set_state(rng)


class BGD(GaussianMeanFieldOptimizer):
    r"""Bayesian Gradient Descent :cite:`zeno2018task` (diagonal FOO-VB :cite:`zeno2021task`).

    .. math::

        \mu \leftarrow \mu - \eta\,\sigma^2\bar g,
        \qquad
        \sigma \leftarrow \sigma\sqrt{1 + (\sigma\hat g/2)^2} - \sigma^2\hat g/2,

    with :math:`\bar g, \hat g` the reparameterization gradients of the loss returned by the
    closure (module docstring). There is no prior and no forgetting: the previous posterior
    is the prior of the next step, so precision only accumulates.

    Parameters
    ----------
    params
        The means (model parameters) or param groups.
    eta
        Step size of the means (1 in the paper; the variance already scales each synapse).
    sigma_init
        Initial standard deviation (0.02 in the reference implementation), or a callable
        ``param -> sigma``.
    lr_sigma
        Multiplier of the :math:`\sigma` change (1 = the paper; the MESU authors' PyTorch
        ``bgd`` calls it ``c_sigma``).
    ratio_max
        If set, clamp both changes to :math:`\pm` ``ratio_max`` :math:`\cdot\sigma` (a knob of
        the MESU authors' PyTorch code; off in the paper).
    sigma_bounds
        If set, ``(low, high)``: clamp :math:`\sigma` after each step.
    num_samples, seed, generator, nonfinite
        See :class:`GaussianMeanFieldOptimizer`.

    Notes
    -----
    The loss scale matters: the reference implementation uses the minibatch *mean* of the
    negative log-likelihood, the MESU paper (batch size 1) its sum. With the sum over a
    minibatch of :math:`B` examples the precision grows :math:`B` times faster per step.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        eta: float = 1.0,
        *,
        sigma_init: SigmaInit = 0.02,
        lr_sigma: float = 1.0,
        ratio_max: float | None = None,
        sigma_bounds: tuple[float, float] | None = None,
        num_samples: int = 10,
        seed: int = 0,
        generator: torch.Generator | None = None,
        nonfinite: str = "raise",
    ) -> None:
        check_nonnegative_real(eta, "eta")
        check_nonnegative_real(lr_sigma, "lr_sigma")
        check_sigma_init(sigma_init)
        check_ratio_max(ratio_max)
        check_sigma_bounds(sigma_bounds, "sigma_bounds")
        defaults = dict(
            eta=eta,
            sigma_init=sigma_init,
            lr_sigma=lr_sigma,
            ratio_max=ratio_max,
            sigma_bounds=sigma_bounds,
        )
        super().__init__(
            params,
            defaults,
            num_samples=num_samples,
            seed=seed,
            generator=generator,
            nonfinite=nonfinite,
        )

    def _validate_group(self, group: dict[str, Any]) -> None:
        super()._validate_group(group)
        check_nonnegative_real(group["eta"], "eta")
        check_nonnegative_real(group["lr_sigma"], "lr_sigma")
        check_ratio_max(group["ratio_max"])
        check_sigma_bounds(group["sigma_bounds"], "sigma_bounds")

    def _update(
        self, p: Tensor, state: dict[str, Any], group: dict[str, Any], g_mu: Tensor, g_sigma: Tensor
    ) -> None:
        sigma = state["sigma"]
        new_mu, new_sigma = _bgd_update(p, sigma, g_mu, g_sigma, eta=group["eta"])
        clamp_and_bound(p, sigma, new_mu - p, group["lr_sigma"] * (new_sigma - sigma), group)
