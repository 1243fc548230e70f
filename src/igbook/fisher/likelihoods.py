r"""Likelihoods :math:`p(y\mid f)` for the outputs :math:`f = f(x;\theta)` of a network.

A likelihood turns a model's raw output into a distribution over targets. It knows the
per-example negative log-likelihood :math:`\ell(f, y) = -\log p(y\mid f)` and three
output-space matrices, all :math:`C\times C` for an output of size :math:`C`:

.. math::

    \Lambda(f) = \mathbb{E}_{y\sim p(\cdot\mid f)}\big[\nabla_f\ell\,\nabla_f\ell^\top\big]
    \quad\text{(output Fisher)},\qquad
    \nabla_f\ell(f, y)\,\nabla_f\ell(f, y)^\top \quad\text{(empirical)},\qquad
    \nabla^2_f\ell(f, y) \quad\text{(loss Hessian)}.

The Fisher, empirical Fisher and generalized Gauss-Newton matrices of a network are the
pull-backs :math:`J^\top M J` of these matrices through the network Jacobian
:math:`J = \partial f/\partial\theta` (see :mod:`igbook.fisher.models`). When :math:`f` is the
*natural parameter* of an exponential family (a canonical link), :math:`\ell = A(f) - y^\top f
+ \text{const}`, so :math:`\nabla^2_f\ell = \nabla^2 A(f) = \Lambda(f)` does not depend on
:math:`y`: the loss Hessian *is* the output Fisher :cite:`martens2020new`. This holds for
:class:`GaussianLikelihood` (fixed variance), :class:`CategoricalLikelihood` (logits) and
:class:`BernoulliLikelihood` with ``link="logit"``, and fails for ``link="probit"``, which is
included as the non-canonical counter-example.

Shapes. A model returns a batch of outputs whose first axis indexes the data points.
:meth:`Likelihood.flatten_output` turns it into ``(N, C)``; :meth:`Likelihood.check_targets`
validates the targets and returns them in the likelihood's flat form (float ``(N, C)`` for the
Gaussian, integer ``(N,)`` class labels for the categorical, float ``(N, 1)`` in
:math:`\{0, 1\}` for the Bernoulli). All other methods take the flat forms and are pure tensor
functions (no validation), so that :mod:`torch.func` transforms can trace them.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
import torch.nn.functional as tnf
from torch import Tensor
from torch.func import grad, hessian, vmap

from igbook._validation import check_integer, check_positive_real
from igbook.fisher.types import FisherType, as_fisher_type

__all__ = [
    "Likelihood",
    "GaussianLikelihood",
    "CategoricalLikelihood",
    "BernoulliLikelihood",
    "LIKELIHOODS",
    "get_likelihood",
]


class Likelihood(ABC):
    r"""A conditional distribution :math:`p(y\mid f)` of a target given a model output.

    Subclasses implement :meth:`nll`, :meth:`output_fisher`, :meth:`sample` and the shape
    checks; :meth:`output_grad` and :meth:`output_hessian` default to :mod:`torch.func`
    derivatives of :meth:`nll` and are overridden by closed forms where they are simple.
    """

    #: short name, also accepted by :func:`get_likelihood`
    name: str = ""
    #: ``True`` when :math:`f` is the natural parameter (loss Hessian = output Fisher)
    canonical: bool = True

    # ----------------------------------------------------------------- shapes and checks
    @abstractmethod
    def flatten_output(self, output: Tensor) -> Tensor:
        """Model output (first axis = data points) as a ``(N, C)`` matrix; raise on a bad shape."""

    @abstractmethod
    def check_targets(self, y: Tensor, output: Tensor, name: str = "y") -> Tensor:
        """Validate targets against the model output and return them in flat form (errors name ``name``)."""

    # ------------------------------------------------------------------ pure functions
    @abstractmethod
    def nll(self, f: Tensor, y: Tensor) -> Tensor:
        r"""Per-example :math:`\ell(f_n, y_n) = -\log p(y_n\mid f_n)`, shape ``(N,)``."""

    @abstractmethod
    def output_fisher(self, f: Tensor) -> Tensor:
        r"""Output-space Fisher :math:`\Lambda(f_n)`, shape ``(N, C, C)``, in closed form."""

    def output_fisher_factor(self, f: Tensor) -> Tensor:
        r"""A factor :math:`S_n` with :math:`S_nS_n^\top = \Lambda(f_n)`, shape ``(N, C, C)``.

        The default is the symmetric square root by eigendecomposition; subclasses give closed forms.
        """
        w, v = torch.linalg.eigh(self.output_fisher(f))
        return v * w.clamp_min(0).sqrt().unsqueeze(-2)

    @abstractmethod
    def sample(self, f: Tensor, num_samples: int, generator: torch.Generator) -> Tensor:
        """``num_samples`` targets per data point drawn from :math:`p(\\cdot\\mid f_n)`, shape ``(k, N, ...)``."""

    def nll_constant(self, c: int) -> float:
        r"""The part of :meth:`nll` that depends on neither :math:`f` nor :math:`y` (0 unless Gaussian).

        Losses that drop it (``0.5 * ||y - f||^2`` for a unit-variance Gaussian) have the same
        gradients and curvature; :func:`igbook.kfac.negative_log_likelihood` reports them that way.
        """
        return 0.0

    def output_gradient_samples(
        self,
        f: Tensor,
        fisher_type: FisherType | str = FisherType.MC,
        *,
        y: Tensor | None = None,
        mc_samples: int = 1,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        r"""Vectors :math:`v_{kn}` with :math:`\sum_k v_{kn}v_{kn}^\top` the output matrix of ``fisher_type``.

        Shape ``(K, N, C)``. What curvature code backpropagates through a network (K-FAC's
        :math:`G` factors, the rows of a Fisher, per-example curvature):

        * ``EXACT``: the columns of :meth:`output_fisher_factor`, :math:`\sum_k v_{kn}v_{kn}^\top = \Lambda(f_n)`
          (``K = C``);
        * ``MC``: :math:`v_{kn} = \nabla_f\ell(f_n,\tilde y_{kn})/\sqrt K` with
          :math:`\tilde y_{kn}\sim p(\cdot\mid f_n)` drawn from ``generator`` (``K = mc_samples``),
          unbiased for :math:`\Lambda(f_n)`;
        * ``EMPIRICAL``: :math:`v_n = \nabla_f\ell(f_n, y_n)` with the observed ``y`` (``K = 1``).

        ``GGN`` of a canonical likelihood is ``EXACT``; the Hessian and a non-canonical GGN have
        no such vectors (their output matrix can be indefinite) and raise :class:`ValueError`.
        Pure function of ``f`` (flat ``(N, C)``) except for the random draws of ``MC``.
        """
        ftype = as_fisher_type(fisher_type)
        if ftype is FisherType.GGN and self.canonical:
            ftype = FisherType.EXACT
        if ftype is FisherType.EXACT:
            return self.output_fisher_factor(f).permute(2, 0, 1)
        if ftype is FisherType.EMPIRICAL:
            if y is None:
                raise ValueError("y (the observed targets) is required for fisher_type='empirical'")
            return self.output_grad(f, y).unsqueeze(0)
        if ftype is FisherType.MC:
            k = check_integer(mc_samples, "mc_samples", minimum=1)
            gen = generator if generator is not None else torch.Generator().manual_seed(0)
            return self._mc_output_gradients(f, k, gen) / math.sqrt(k)
        raise ValueError(
            f"fisher_type={ftype.value!r} has no output-gradient vectors for {self!r} "
            "(its output matrix need not be positive semi-definite)"
        )

    def _mc_output_gradients(self, f: Tensor, k: int, generator: torch.Generator) -> Tensor:
        """``(k, N, C)`` output gradients at targets sampled from the model (unscaled)."""
        ys = self.sample(f.detach(), k, generator)
        return vmap(self.output_grad, in_dims=(None, 0))(f, ys)

    def _nll_single(self, f: Tensor, y: Tensor) -> Tensor:
        return self.nll(f.unsqueeze(0), y.unsqueeze(0)).squeeze(0)

    def output_grad(self, f: Tensor, y: Tensor) -> Tensor:
        r"""Per-example :math:`\nabla_f \ell(f_n, y_n)`, shape ``(N, C)``."""
        return vmap(grad(self._nll_single))(f, y)

    def output_hessian(self, f: Tensor, y: Tensor) -> Tensor:
        r"""Per-example loss Hessian :math:`\nabla^2_f \ell(f_n, y_n)`, shape ``(N, C, C)``."""
        return vmap(hessian(self._nll_single))(f, y)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:
        """Likelihoods are values: equal when of the same class with the same settings (variance, link)."""
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(vars(self).items()))))


def _check_float_output(output: Tensor) -> None:
    if not isinstance(output, Tensor) or not output.is_floating_point():
        raise TypeError("the model output must be a floating-point tensor")
    if output.ndim == 0:
        raise ValueError(
            "the model output must have a batch axis (data points first), got a scalar"
        )


class GaussianLikelihood(Likelihood):
    r"""Regression with Gaussian noise of fixed variance: :math:`y\mid f \sim \mathcal N(f, \sigma^2 I)`.

    .. math::

        \ell(f, y) = \frac{\|y - f\|^2}{2\sigma^2} + \frac C2\log(2\pi\sigma^2),\qquad
        \nabla^2_f\ell = \Lambda(f) = \sigma^{-2} I.

    With ``variance=1`` the loss is *half* the squared error, and the GGN is :math:`J^\top J`;
    ``torch.nn.MSELoss`` (no half, and a mean over the output entries too) corresponds to
    ``variance=0.5`` divided by :math:`C`, a factor that has confused curvature libraries
    before (f-dangel/curvlinops#82).

    Outputs may have shape ``(N,)`` (one response) or ``(N, ...)``; the targets must have the
    same shape.
    """

    name = "gaussian"
    canonical = True

    def __init__(self, variance: float = 1.0) -> None:
        self.variance = check_positive_real(variance, "variance")

    def nll_constant(self, c: int) -> float:
        return 0.5 * c * math.log(2 * math.pi * self.variance)

    def __repr__(self) -> str:
        return f"GaussianLikelihood(variance={self.variance:g})"

    def flatten_output(self, output: Tensor) -> Tensor:
        _check_float_output(output)
        return output.reshape(output.shape[0], -1)

    def check_targets(self, y: Tensor, output: Tensor, name: str = "y") -> Tensor:
        if not isinstance(y, Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(y).__name__}")
        if tuple(y.shape) != tuple(output.shape):
            raise ValueError(
                f"{name} must have the shape of the model output {tuple(output.shape)} for a Gaussian "
                f"likelihood, got {tuple(y.shape)}"
            )
        y = y.to(output.dtype)
        if not bool(torch.isfinite(y).all()):
            raise ValueError(f"{name} must be finite, got a value that is NaN or infinite")
        return y.reshape(y.shape[0], -1)

    def nll(self, f: Tensor, y: Tensor) -> Tensor:
        c = f.shape[-1]
        return ((y - f) ** 2).sum(-1) / (2 * self.variance) + 0.5 * c * math.log(
            2 * math.pi * self.variance
        )

    def output_grad(self, f: Tensor, y: Tensor) -> Tensor:
        return (f - y) / self.variance

    def output_hessian(self, f: Tensor, y: Tensor) -> Tensor:
        return self.output_fisher(f)

    def output_fisher(self, f: Tensor) -> Tensor:
        n, c = f.shape
        eye = torch.eye(c, dtype=f.dtype, device=f.device) / self.variance
        return eye.expand(n, c, c).clone()

    def output_fisher_factor(self, f: Tensor) -> Tensor:
        return self.output_fisher(f) * math.sqrt(self.variance)

    def sample(self, f: Tensor, num_samples: int, generator: torch.Generator) -> Tensor:
        return f.unsqueeze(0) + math.sqrt(self.variance) * self._noise(f, num_samples, generator)

    @staticmethod
    def _noise(f: Tensor, k: int, generator: torch.Generator) -> Tensor:
        # drawn in float64 whatever f's dtype, so float32 and float64 runs see the same draws
        return torch.randn((k, *f.shape), generator=generator, dtype=torch.float64).to(f.dtype)

    def _mc_output_gradients(self, f: Tensor, k: int, generator: torch.Generator) -> Tensor:
        # grad_f l(f, f + sigma eps) = -eps / sigma, without the rounding of (f - y)
        return -self._noise(f, k, generator) / math.sqrt(self.variance)


class CategoricalLikelihood(Likelihood):
    r"""Classification with logits :math:`f\in\mathbb R^C`: :math:`p(y=c\mid f) = \mathrm{softmax}(f)_c`.

    .. math::

        \ell(f, y) = \log\textstyle\sum_c e^{f_c} - f_y,\qquad
        \nabla_f\ell = p - e_y,\qquad
        \nabla^2_f\ell = \Lambda(f) = \operatorname{diag}(p) - p p^\top .

    The loss Hessian does not depend on :math:`y` (canonical link), so GGN = Fisher. Outputs have
    shape ``(N, C)`` with :math:`C\ge 2`; targets are integer labels of shape ``(N,)``.
    """

    name = "categorical"
    canonical = True

    def flatten_output(self, output: Tensor) -> Tensor:
        _check_float_output(output)
        if output.ndim != 2 or output.shape[1] < 2:
            raise ValueError(
                "a categorical likelihood needs logits of shape (N, C) with C >= 2, "
                f"got model output of shape {tuple(output.shape)}"
            )
        return output

    def check_targets(self, y: Tensor, output: Tensor, name: str = "y") -> Tensor:
        if not isinstance(y, Tensor):
            raise TypeError(f"{name} must be a tensor of class labels, got {type(y).__name__}")
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise TypeError(
                f"{name} must hold integer class labels for a categorical likelihood, got {y.dtype}"
            )
        if tuple(y.shape) != (output.shape[0],):
            raise ValueError(
                f"{name} must have shape ({output.shape[0]},) (one label per data point), got {tuple(y.shape)}"
            )
        c = output.shape[1]
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= c):
            raise ValueError(
                f"{name} must hold labels in 0..{c - 1}, got values in [{int(y.min())}, {int(y.max())}]"
            )
        return y.long()

    def nll(self, f: Tensor, y: Tensor) -> Tensor:
        logp = torch.log_softmax(f, dim=-1)
        return -torch.gather(logp, -1, y.unsqueeze(-1)).squeeze(-1)

    def output_grad(self, f: Tensor, y: Tensor) -> Tensor:
        return torch.softmax(f, dim=-1) - tnf.one_hot(y, f.shape[-1]).to(f.dtype)

    def output_hessian(self, f: Tensor, y: Tensor) -> Tensor:
        return self.output_fisher(f)

    def output_fisher(self, f: Tensor) -> Tensor:
        p = torch.softmax(f, dim=-1)
        return torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)

    def output_fisher_factor(self, f: Tensor) -> Tensor:
        r""":math:`S = \operatorname{diag}(\sqrt p) - p\sqrt p^{\top}`, for which
        :math:`SS^\top = \operatorname{diag}(p) - pp^\top`."""
        p = torch.softmax(f, dim=-1)
        sq = p.sqrt()
        return torch.diag_embed(sq) - p.unsqueeze(-1) * sq.unsqueeze(-2)

    def sample(self, f: Tensor, num_samples: int, generator: torch.Generator) -> Tensor:
        # probabilities in float64, so float32 and float64 runs see the same draws
        p = torch.softmax(f.detach().double(), dim=-1)
        draws = torch.multinomial(p, num_samples, replacement=True, generator=generator)  # (N, k)
        return draws.T.contiguous()

    def _mc_output_gradients(self, f: Tensor, k: int, generator: torch.Generator) -> Tensor:
        ys = self.sample(f, k, generator)  # (k, N)
        return torch.softmax(f, dim=-1).unsqueeze(0) - tnf.one_hot(ys, f.shape[-1]).to(f.dtype)


def _log_ndtr(f: Tensor) -> Tensor:
    r""":math:`\log\Phi(f)`, accurate in both tails, from ops that :func:`torch.func.vmap` batches.

    For :math:`f<0`, :math:`\log\Phi(f) = \log\tfrac12\operatorname{erfcx}(-f/\sqrt2) - f^2/2`
    (no underflow); for :math:`f\ge0`, :math:`\log\Phi(f) = \operatorname{log1p}(-\tfrac12
    \operatorname{erfc}(f/\sqrt2))`. (:func:`torch.special.log_ndtr` has no batching rule.)
    """
    neg = torch.clamp(f, max=0.0)
    pos = torch.clamp(f, min=0.0)
    low = torch.log(0.5 * torch.special.erfcx(-neg / math.sqrt(2))) - 0.5 * neg**2
    high = torch.log1p(-0.5 * torch.special.erfc(pos / math.sqrt(2)))
    return torch.where(f < 0, low, high)


class BernoulliLikelihood(Likelihood):
    r"""Binary classification :math:`y\in\{0,1\}` with :math:`p(y=1\mid f) = \psi(f)`.

    ``link="logit"`` (canonical): :math:`\psi = \sigma`, the logistic function,

    .. math::

        \ell(f, y) = \log(1 + e^{f}) - y f,\qquad
        \nabla^2_f\ell = \Lambda(f) = \sigma(f)\,(1-\sigma(f)).

    ``link="probit"`` (not canonical): :math:`\psi = \Phi`, the standard normal CDF, for which

    .. math::

        \Lambda(f) = \frac{\phi(f)^2}{\Phi(f)\,(1-\Phi(f))}
        \;\ne\; \nabla^2_f\ell(f, y),

    so the GGN differs from the Fisher (it is still positive semi-definite, since
    :math:`-\log\Phi` is convex).

    Shapes. Outputs of shape ``(N,)`` or ``(N, ...)``: every output entry is an independent
    Bernoulli (a multi-label classifier, or the pixels of an autoencoder's reconstruction), and
    :math:`\ell` sums over them; the output Fisher is diagonal. Targets have the output's shape
    (or ``(N,)`` for one output) with values in :math:`[0, 1]`: labels in :math:`\{0, 1\}`, or
    intensities (pixel values), for which :math:`\ell` is the binary cross-entropy (it is
    linear in :math:`y`, so the Fisher, which does not depend on :math:`y`, is unchanged).
    """

    name = "bernoulli"

    def __init__(self, link: str = "logit") -> None:
        if link not in ("logit", "probit"):
            raise ValueError(f"link must be 'logit' or 'probit', got {link!r}")
        self.link = link
        self.canonical = link == "logit"

    def __repr__(self) -> str:
        return f"BernoulliLikelihood(link={self.link!r})"

    def flatten_output(self, output: Tensor) -> Tensor:
        _check_float_output(output)
        return output.reshape(output.shape[0], -1)

    def check_targets(self, y: Tensor, output: Tensor, name: str = "y") -> Tensor:
        if not isinstance(y, Tensor):
            raise TypeError(f"{name} must be a tensor of 0/1 labels, got {type(y).__name__}")
        one = output.ndim == 1 or (output.ndim == 2 and output.shape[1] == 1)
        if tuple(y.shape) != tuple(output.shape) and not (
            one and tuple(y.shape) == (output.shape[0],)
        ):
            raise ValueError(
                f"{name} must have the shape of the model output {tuple(output.shape)}"
                + (f" or ({output.shape[0]},)" if one else "")
                + f", got {tuple(y.shape)}"
            )
        yf = y.to(output.dtype).reshape(output.shape[0], -1)
        if not bool(((yf >= 0) & (yf <= 1)).all()):
            raise ValueError(
                f"{name} must hold labels in {{0, 1}} (or intensities in [0, 1]) for a Bernoulli likelihood"
            )
        return yf

    def _log_psi(self, f: Tensor) -> tuple[Tensor, Tensor]:
        """``(log psi(f), log(1 - psi(f)))``, computed stably."""
        if self.link == "logit":
            return -tnf.softplus(-f), -tnf.softplus(f)
        return _log_ndtr(f), _log_ndtr(-f)

    def nll(self, f: Tensor, y: Tensor) -> Tensor:
        if self.link == "logit":
            return (tnf.softplus(f) - y * f).sum(-1)
        lp, lq = self._log_psi(f)
        return -(y * lp + (1 - y) * lq).sum(-1)

    def output_grad(self, f: Tensor, y: Tensor) -> Tensor:
        if self.link == "logit":
            return torch.sigmoid(f) - y
        return super().output_grad(f, y)

    def output_hessian(self, f: Tensor, y: Tensor) -> Tensor:
        if self.link == "logit":
            return self.output_fisher(f)
        return super().output_hessian(f, y)

    def _fisher_diagonal(self, f: Tensor) -> Tensor:
        """The diagonal of the (diagonal) output Fisher, shape of ``f``."""
        if self.link == "logit":
            p = torch.sigmoid(f)
            return p * (1 - p)
        log_phi = -0.5 * f**2 - 0.5 * math.log(2 * math.pi)
        lp, lq = self._log_psi(f)
        return torch.exp(2 * log_phi - lp - lq)

    def output_fisher(self, f: Tensor) -> Tensor:
        return torch.diag_embed(self._fisher_diagonal(f))

    def output_fisher_factor(self, f: Tensor) -> Tensor:
        return torch.diag_embed(self._fisher_diagonal(f).sqrt())

    def sample(self, f: Tensor, num_samples: int, generator: torch.Generator) -> Tensor:
        # uniforms in float64 compared with psi(f): float32 and float64 runs see the same draws
        lp, _ = self._log_psi(f.detach())
        u = torch.rand((num_samples, *f.shape), generator=generator, dtype=torch.float64)
        return (u < torch.exp(lp.double()).unsqueeze(0)).to(f.dtype)


#: the likelihoods that :func:`get_likelihood` accepts by name
LIKELIHOODS: dict[str, type[Likelihood]] = {
    "gaussian": GaussianLikelihood,
    "categorical": CategoricalLikelihood,
    "bernoulli": BernoulliLikelihood,
}


def get_likelihood(likelihood: Likelihood | str) -> Likelihood:
    """A :class:`Likelihood` instance from an instance or a name in :data:`LIKELIHOODS`.

    Names give the default instance (``"gaussian"`` has variance 1, ``"bernoulli"`` the logit
    link). Raises :class:`ValueError` for an unknown name and :class:`TypeError` for anything
    else.
    """
    if isinstance(likelihood, Likelihood):
        return likelihood
    if isinstance(likelihood, str):
        key = likelihood.lower()
        if key not in LIKELIHOODS:
            raise ValueError(
                f"likelihood must be one of {sorted(LIKELIHOODS)} or a Likelihood instance, got {likelihood!r}"
            )
        return LIKELIHOODS[key]()
    raise TypeError(f"likelihood must be a Likelihood or a name, got {type(likelihood).__name__}")
