r"""The validated problem behind every curvature routine of :mod:`igbook.fisher`.

:class:`ModelProblem` checks a model, its parameters, a batch and a likelihood once, runs the
forward pass, and holds what the curvature routines share; :func:`output_matrices` and
:func:`output_factors` give the output-space matrices :math:`M_n` of each :class:`FisherType`
and their square-root factors (see :mod:`igbook.fisher.models`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn
from torch.func import functional_call, vjp

from igbook.fisher.layout import Params, flatten_params
from igbook.fisher.likelihoods import Likelihood, get_likelihood
from igbook.fisher.types import FisherType

__all__ = [
    "ModelProblem",
    "check_mc_samples",
    "mc_generator",
    "output_matrices",
    "output_factors",
    "needs_targets",
]


class ModelProblem:
    """A model, a likelihood and a batch at given parameters: the validated inputs that every
    curvature routine of :mod:`igbook.fisher` shares (one forward pass, outputs ``f`` of shape
    ``(N, C)``, flat targets ``y``, and optionally the reverse-mode pull-back)."""

    """Validated model, parameters, data and likelihood, with the functional forward pass."""

    def __init__(
        self,
        model: nn.Module,
        params: Params | None,
        x: Tensor,
        y: Tensor | None,
        likelihood: Likelihood | str,
        *,
        need_y: bool,
        what: str,
        keep_vjp: bool = False,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.lik = get_likelihood(likelihood)
        named = dict(model.named_parameters())
        if params is None:
            params = {n: p.detach() for n, p in named.items() if p.requires_grad}
        if not isinstance(params, Mapping) or not params:
            raise ValueError(
                "params must be a non-empty dict name -> tensor (or None for all parameters)"
            )
        checked: dict[str, Tensor] = {}
        for name, t in params.items():
            if name not in named:
                raise ValueError(
                    f"params[{name!r}] is not a parameter of the model; its parameters are {list(named)}"
                )
            if not isinstance(t, Tensor) or not t.is_floating_point():
                raise TypeError(f"params[{name!r}] must be a floating-point tensor")
            if t.shape != named[name].shape:
                raise ValueError(
                    f"params[{name!r}] must have the parameter's shape {tuple(named[name].shape)}, got {tuple(t.shape)}"
                )
            if not bool(torch.isfinite(t).all()):
                raise ValueError(
                    f"params[{name!r}] must be finite, got a value that is NaN or infinite"
                )
            checked[name] = t.detach()
        self.params = checked
        self.frozen = {
            **{n: p.detach() for n, p in named.items() if n not in checked},
            **dict(model.named_buffers()),
        }
        self.num_params = sum(t.numel() for t in checked.values())
        if not isinstance(x, Tensor):
            raise TypeError(
                f"x must be a tensor of inputs (data points first), got {type(x).__name__}"
            )
        if x.ndim == 0 or x.shape[0] == 0:
            raise ValueError(
                f"x must hold at least one data point along its first axis, got shape {tuple(x.shape)}"
            )
        if x.is_floating_point():
            if not bool(torch.isfinite(x).all()):
                raise ValueError("x must be finite, got a value that is NaN or infinite")
            x = x.to(next(iter(checked.values())).dtype)
        self.x = x
        self.n = x.shape[0]
        self.vjp_fn: Callable[[Tensor], tuple[dict[str, Tensor]]] | None = None
        try:
            if keep_vjp:  # one forward pass that also records the reverse-mode pull-back
                out, self.vjp_fn = vjp(lambda p: self._call(p, x), self.params)
            else:
                with torch.no_grad():
                    out = self._call(self.params, x)
        except RuntimeError as exc:  # a shape the model does not accept: name the argument
            raise ValueError(
                f"x of shape {tuple(x.shape)} does not fit the model (the forward pass failed: {exc})"
            ) from exc
        if not isinstance(out, Tensor):
            raise TypeError(f"the model must return a tensor, got {type(out).__name__}")
        if out.ndim == 0 or out.shape[0] != self.n:
            raise ValueError(
                f"the model output must have the data points on its first axis ({self.n}), got shape {tuple(out.shape)}"
            )
        f = self.lik.flatten_output(out.detach())
        if not bool(torch.isfinite(f).all()):
            raise ValueError("the model output is not finite at these parameters")
        self.out_shape = tuple(out.shape)
        self.f = f
        self.c = f.shape[1]
        if y is None:
            if need_y:
                raise ValueError(f"y (the observed targets) is required for {what}")
            self.y = None
        else:
            self.y = self.lik.check_targets(y, out)

    def _call(self, p: Params, x: Tensor) -> Tensor:
        return functional_call(self.model, (dict(p), self.frozen), (x,))

    def f_batch(self, p: Params) -> Tensor:
        """All outputs, ``(N, C)``."""
        return self.lik.flatten_output(self._call(p, self.x))

    def f_single(self, p: Params, xn: Tensor) -> Tensor:
        """One data point's output, ``(C,)``."""
        return self.lik.flatten_output(self._call(p, xn.unsqueeze(0))).squeeze(0)

    def loss(self, p: Params) -> Tensor:
        assert self.y is not None
        return self.lik.nll(self.f_batch(p), self.y).mean()

    def check_vector(self, v: Tensor | Params, name: str = "v") -> tuple[Tensor, bool]:
        if isinstance(v, Mapping):
            if list(v) != list(self.params):
                raise ValueError(
                    f"{name} must have the keys of params {list(self.params)}, got {list(v)}"
                )
            for k, t in v.items():
                if t.shape != self.params[k].shape:
                    raise ValueError(
                        f"{name}[{k!r}] must have shape {tuple(self.params[k].shape)}, got {tuple(t.shape)}"
                    )
            flat, as_dict = flatten_params(v), True
        elif isinstance(v, Tensor):
            if v.shape != (self.num_params,):
                raise ValueError(
                    f"{name} must be a flat vector of shape ({self.num_params},) (the number of parameters), "
                    f"got {tuple(v.shape)}"
                )
            flat, as_dict = v, False
        else:
            raise TypeError(f"{name} must be a tensor or a dict of tensors, got {type(v).__name__}")
        dtype = next(iter(self.params.values())).dtype
        flat = flat.to(dtype)
        if not bool(torch.isfinite(flat).all()):
            raise ValueError(f"{name} must be finite, got a value that is NaN or infinite")
        return flat, as_dict


def check_mc_samples(mc_samples: int) -> int:
    """``mc_samples`` as an int >= 1, or raise naming it."""
    if isinstance(mc_samples, bool) or not isinstance(mc_samples, int) or mc_samples < 1:
        raise ValueError(f"mc_samples must be an int >= 1, got {mc_samples!r}")
    return mc_samples


def mc_generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator:
    """The generator of Monte Carlo labels: ``generator`` if given (it wins over ``seed``), else a
    fresh one seeded with ``seed`` (an int; the curvature functions default to ``seed=0``)."""
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        return generator
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(
            f"seed must be an int (or pass a torch.Generator), got {type(seed).__name__}"
        )
    return torch.Generator().manual_seed(seed)


def output_matrices(
    prob: ModelProblem,
    ftype: FisherType,
    mc_samples: int,
    seed: int | None,
    generator: torch.Generator | None,
    f: Tensor | None = None,
) -> Tensor:
    """The output-space matrices :math:`M_n`, shape ``(N, C, C)``."""
    lik = prob.lik
    f = prob.f if f is None else f
    if ftype is FisherType.EXACT:
        return lik.output_fisher(f)
    if ftype is FisherType.MC:
        k = check_mc_samples(mc_samples)
        r = lik.output_gradient_samples(
            f, ftype, mc_samples=k, generator=mc_generator(seed, generator)
        )
        return torch.einsum("knc,knd->ncd", r, r)  # r carries the 1/sqrt(k)
    assert prob.y is not None
    if ftype is FisherType.EMPIRICAL:
        r = lik.output_grad(f, prob.y)
        return r.unsqueeze(-1) * r.unsqueeze(-2)
    if ftype is FisherType.GGN:
        return lik.output_hessian(f, prob.y)
    raise ValueError(f"{ftype} has no output-space matrix")  # pragma: no cover


def _psd_factor(m: Tensor) -> Tensor | None:
    r""":math:`S` with :math:`SS^\top = M` for a batch of symmetric PSD matrices (eigh), or ``None`` if indefinite."""
    w, v = torch.linalg.eigh(0.5 * (m + m.transpose(-1, -2)))
    scale = w.abs().amax(-1, keepdim=True).clamp_min(torch.finfo(m.dtype).tiny)
    if bool((w < -1e-10 * scale).any()):
        return None
    return v * w.clamp_min(0).sqrt().unsqueeze(-2)


def output_factors(
    prob: ModelProblem,
    ftype: FisherType,
    mc_samples: int,
    seed: int | None,
    generator: torch.Generator | None,
) -> Tensor | tuple[Tensor]:
    r"""Square-root factors ``(N, C, K)`` of the output matrices, or ``(M,)`` if they are indefinite.

    ``K`` is ``C`` (exact Fisher, GGN), ``k`` for ``k <= C`` Monte Carlo samples (the sampled
    output gradients themselves, scaled by :math:`1/\sqrt k`) and 1 for the empirical Fisher, so
    the rows cost ``K`` vector-Jacobian products per data point.
    """
    lik, f = prob.lik, prob.f
    if ftype is FisherType.EXACT or (ftype is FisherType.GGN and lik.canonical):
        return lik.output_fisher_factor(f)
    if ftype is FisherType.MC:
        k = check_mc_samples(mc_samples)
        if k <= prob.c:
            r = lik.output_gradient_samples(
                f, ftype, mc_samples=k, generator=mc_generator(seed, generator)
            )
            return r.permute(1, 2, 0)  # (N, C, k), carries the 1/sqrt(k)
    if ftype is FisherType.EMPIRICAL:
        assert prob.y is not None
        return lik.output_grad(f, prob.y).unsqueeze(-1)
    m = output_matrices(prob, ftype, mc_samples, seed, generator)
    fac = _psd_factor(m)
    return (m,) if fac is None else fac


def needs_targets(ftype: FisherType) -> bool:
    """Whether ``ftype`` uses the observed targets (empirical Fisher, GGN, Hessian)."""
    return ftype in (FisherType.EMPIRICAL, FisherType.GGN, FisherType.HESSIAN)
