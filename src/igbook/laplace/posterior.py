r"""The Laplace posterior of a trained network: :func:`fit_laplace` and :class:`LaplacePosterior`.

At a MAP estimate :math:`\theta_*` of the negative log joint
:math:`L(\theta) = -\sum_{n=1}^N\log p(y_n\mid f_\theta(x_n)) + \tfrac12(\theta-\mu_0)^\top P_0(\theta-\mu_0)`
the Laplace approximation is the Gaussian :math:`q(\theta) = \mathcal N(\theta_*, P^{-1})` with

.. math::
    :label: eq-laplace-precision

    P = \frac{N}{\tau}\,\bar C(\theta_*) + P_0,\qquad
    \bar C = \frac1N\sum_n J_n^\top\Lambda_n J_n \;(\text{GGN}),

:math:`P_0` the prior precision (a scalar times the identity or a diagonal), :math:`\tau` a
temperature, and for Gaussian regression :math:`\Lambda_n = \sigma^{-2}I` so that :math:`\bar C`
is stored at unit noise and scaled by :math:`\sigma^{-2}` :cite:`mackay1992practical,daxberger2021laplace`.
The curvature :math:`\bar C` comes from :func:`igbook.fisher.curvature` (a *mean* over data
points, the core's convention) in one of the structures

* ``"full"``: :class:`~igbook.fisher.DenseCurvature`;
* ``"diagonal"``: :class:`~igbook.fisher.DiagonalCurvature`;
* ``"kron"``: K-FAC blocks :math:`A\otimes G` with separate weight and bias blocks
  (:func:`igbook.fisher.kfac_factors`, ``bias="separate"``) :cite:`ritter2018scalable`; the prior
  adds to the eigenvalues exactly, :math:`\lambda_i(G)\lambda_j(A) N/\tau + \delta`.

``subset="last_layer"`` keeps the other parameters at :math:`\theta_*` and approximates only the
last ``nn.Linear`` layer's. The posterior precision is handed out as an
:class:`igbook.fisher.Curvature` (:meth:`LaplacePosterior.precision`), so ``solve``/``inverse``/
``diagonal`` work as everywhere in the curvature core.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from igbook._validation import (
    check_choice,
    check_finite,
    check_integer,
    check_positive_real,
    resolve_generator,
)
from igbook.fisher import (
    BlockDiagonalCurvature,
    Curvature,
    DenseCurvature,
    DiagonalCurvature,
    GaussianLikelihood,
    KroneckerCurvature,
    Likelihood,
    curvature,
    flatten_params,
    get_likelihood,
    kfac_factors,
    model_params,
)

__all__ = [
    "STRUCTURES",
    "SUBSETS",
    "FISHER_TYPES",
    "LaplacePosterior",
    "fit_laplace",
    "last_linear_layer",
]

#: posterior structures
STRUCTURES = ("full", "diagonal", "kron")
#: which parameters the posterior covers
SUBSETS = ("all", "last_layer")
#: curvature types accepted for the likelihood term
FISHER_TYPES = ("ggn", "exact", "empirical", "hessian")


def last_linear_layer(model: nn.Module) -> str:
    """The name of the last ``nn.Linear`` module of ``model`` (registration order)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ValueError("model has no nn.Linear layer: subset='last_layer' needs one")
    return names[-1]


def _prior_vector(prior_precision: float | Tensor, size: int, dtype: torch.dtype) -> Tensor:
    """The prior precision as a ``(size,)`` tensor (scalar broadcast), checked > 0."""
    if isinstance(prior_precision, Tensor) and prior_precision.numel() > 1:
        if prior_precision.shape != (size,):
            raise ValueError(
                f"prior_precision must be a positive scalar or a tensor of shape ({size},), "
                f"got shape {tuple(prior_precision.shape)}"
            )
        check_finite(prior_precision, "prior_precision")
        if not bool((prior_precision > 0).all()):
            raise ValueError("prior_precision must be > 0 everywhere")
        return prior_precision.to(dtype)
    if isinstance(prior_precision, Tensor) and prior_precision.requires_grad:
        if not bool(prior_precision.detach().reshape(()) > 0):
            raise ValueError(f"prior_precision must be > 0, got {prior_precision.item()}")
        return prior_precision.reshape(()).to(dtype) * torch.ones(size, dtype=dtype)
    return torch.full((size,), check_positive_real(prior_precision, "prior_precision"), dtype=dtype)


@dataclass(frozen=True)
class LaplacePosterior:
    r"""A fitted Laplace approximation :math:`\mathcal N(\theta_*, P^{-1})` (module docstring).

    Built by :func:`fit_laplace`; the hyperparameters (prior precision, observation noise,
    temperature) change through :meth:`with_hyperparameters` without recomputing the curvature.

    Attributes
    ----------
    model, likelihood, structure, subset
        As passed to :func:`fit_laplace`.
    names
        The parameter names the posterior covers (flat order of :func:`igbook.fisher.flatten_params`).
    mean
        :math:`\theta_*` restricted to ``names``, shape ``(P,)``.
    data_curvature
        :math:`\bar C`, the mean curvature of the per-point negative log-likelihood (Gaussian
        likelihoods at unit noise), as a :class:`~igbook.fisher.Curvature`.
    n_data, n_outputs
        :math:`N` and the number of outputs :math:`C` per data point.
    data_fit
        :math:`\sum_n\lVert y_n - f_n\rVert^2` for a Gaussian likelihood, else
        :math:`\sum_n -\log p(y_n\mid f_n)`, at :math:`\theta_*`.
    prior_precision, prior_mean, sigma_noise, temperature
        :math:`P_0` (scalar or ``(P,)``), :math:`\mu_0` (``(P,)``), :math:`\sigma` (Gaussian only), :math:`\tau`.
    """

    model: nn.Module
    likelihood: Likelihood
    structure: str
    subset: str
    names: tuple[str, ...]
    mean: Tensor
    data_curvature: Curvature
    n_data: int
    n_outputs: int
    data_fit: Tensor
    prior_precision: float | Tensor
    prior_mean: Tensor
    sigma_noise: float | Tensor = 1.0
    temperature: float = 1.0

    @property
    def size(self) -> int:
        """The number of parameters :math:`P` the posterior covers."""
        return int(self.mean.shape[0])

    @property
    def is_regression(self) -> bool:
        return isinstance(self.likelihood, GaussianLikelihood)

    @property
    def curvature_scale(self) -> Tensor:
        r"""The factor :math:`N/(\sigma^2\tau)` (:math:`N/\tau` for classification) of :math:`\bar C`."""
        s = torch.as_tensor(self.sigma_noise, dtype=self.mean.dtype) if self.is_regression else 1.0
        return self.n_data / (torch.as_tensor(s, dtype=self.mean.dtype) ** 2 * self.temperature)

    def prior_precision_vector(self) -> Tensor:
        """The prior precision as a ``(P,)`` tensor."""
        return _prior_vector(self.prior_precision, self.size, self.mean.dtype)

    def with_hyperparameters(
        self,
        *,
        prior_precision: float | Tensor | None = None,
        sigma_noise: float | Tensor | None = None,
        temperature: float | None = None,
    ) -> LaplacePosterior:
        """The same posterior with new hyperparameters (the curvature is reused)."""
        kw: dict[str, object] = {}
        if prior_precision is not None:
            _prior_vector(prior_precision, self.size, self.mean.dtype)
            if (
                self.structure == "kron"
                and isinstance(prior_precision, Tensor)
                and prior_precision.numel() > 1
            ):
                raise ValueError(
                    "prior_precision must be a scalar for structure='kron' (it shifts the "
                    "Kronecker eigenvalues)"
                )
            kw["prior_precision"] = prior_precision
        if sigma_noise is not None:
            if not self.is_regression:
                raise ValueError("sigma_noise applies to a Gaussian likelihood only")
            if isinstance(sigma_noise, Tensor) and sigma_noise.requires_grad:
                if not bool(sigma_noise.detach().reshape(()) > 0):
                    raise ValueError(f"sigma_noise must be > 0, got {sigma_noise.item()}")
            else:
                check_positive_real(sigma_noise, "sigma_noise")
            kw["sigma_noise"] = sigma_noise
        if temperature is not None:
            kw["temperature"] = check_positive_real(temperature, "temperature")
        return replace(self, **kw)

    # -- the posterior precision -----------------------------------------------------------
    def precision(self) -> Curvature:
        r"""The posterior precision :math:`P` of :eq:`eq-laplace-precision` as a :class:`~igbook.fisher.Curvature`."""
        s = float(self.curvature_scale)
        c = self.data_curvature
        if self.structure == "kron":
            assert isinstance(c, BlockDiagonalCurvature)
            d = float(self.prior_precision_vector()[0])
            return BlockDiagonalCurvature(
                {
                    n: KroneckerCurvature(b.A, s * b.G, bias=b.bias, power=1.0, shift=d)
                    for n, b in c.parts.items()
                    if isinstance(b, KroneckerCurvature)
                }
            )
        p0 = self.prior_precision_vector().detach()
        if self.structure == "diagonal":
            return DiagonalCurvature(s * c.diagonal() + p0, blocks=c.blocks)
        return DenseCurvature(s * c.to_dense() + torch.diag(p0), blocks=c.blocks)

    def covariance(self) -> Curvature:
        r"""The posterior covariance :math:`P^{-1}` (same structure)."""
        return self.precision().inverse(0.0)

    def log_det_precision(self) -> Tensor:
        r""":math:`\log\det P`, differentiable in tensor-valued ``prior_precision``/``sigma_noise``."""
        s = self.curvature_scale
        p0 = self.prior_precision_vector()
        c = self.data_curvature
        if self.structure == "diagonal":
            return torch.log(s * c.diagonal() + p0).sum()
        if self.structure == "full":
            return torch.linalg.slogdet(s * c.to_dense() + torch.diag(p0))[1]
        assert isinstance(c, BlockDiagonalCurvature)
        total = torch.zeros((), dtype=self.mean.dtype)
        for b in c.parts.values():
            assert isinstance(b, KroneckerCurvature)
            ga = torch.outer(
                torch.linalg.eigvalsh(b.G).clamp_min(0), torch.linalg.eigvalsh(b.A).clamp_min(0)
            )
            total = total + torch.log(s * ga + p0[0]).sum()
        return total

    def data_eigenvalues(self) -> Tensor:
        r"""The eigenvalues of :math:`N\bar C` (of its K-FAC or diagonal form), shape ``(P,)``."""
        c = self.data_curvature
        if self.structure == "diagonal":
            ev = c.diagonal()
        elif self.structure == "full":
            ev = torch.linalg.eigvalsh(c.to_dense())
        else:
            assert isinstance(c, BlockDiagonalCurvature)
            parts = []
            for b in c.parts.values():
                assert isinstance(b, KroneckerCurvature)
                parts.append(
                    torch.outer(torch.linalg.eigvalsh(b.G), torch.linalg.eigvalsh(b.A)).reshape(-1)
                )
            ev = torch.cat(parts)
        return self.n_data * ev.clamp_min(0)

    # -- density and samples ---------------------------------------------------------------
    def log_prob(self, theta: Tensor) -> Tensor:
        r"""The log density of the posterior at ``theta``.

        :math:`\log q(\theta) = -\tfrac12(\theta-\theta_*)^\top P(\theta-\theta_*)
        + \tfrac12\log\det P - \tfrac P2\log 2\pi`; ``theta`` of shape ``(P,)`` or ``(K, P)`` (one value per row).
        """
        if not isinstance(theta, Tensor) or theta.shape[-1:] != (self.size,) or theta.ndim > 2:
            raise ValueError(
                f"theta must be a tensor of shape ({self.size},) or (K, {self.size}), "
                f"got {getattr(theta, 'shape', type(theta).__name__)}"
            )
        check_finite(theta, "theta")
        d = (theta.to(self.mean.dtype) - self.mean).reshape(-1, self.size)
        quad = (d * self.precision().matvec(d.T).T).sum(-1)
        lp = -0.5 * quad + 0.5 * self.log_det_precision() - 0.5 * self.size * math.log(2 * math.pi)
        return lp if theta.ndim == 2 else lp[0]

    def sample(
        self, n_samples: int, *, seed: int | None = 0, generator: torch.Generator | None = None
    ) -> Tensor:
        r"""``n_samples`` draws :math:`\theta_* + P^{-1/2}z`, :math:`z\sim\mathcal N(0, I)`, shape ``(K, P)``.

        Full: :math:`P = LL^\top`, :math:`\theta = \theta_* + L^{-\top}z`; diagonal:
        :math:`z/\sqrt{p}`; K-FAC: :math:`(\phi(A\otimes G))^{-1/2}z` per block through the factors'
        eigendecompositions. Seeded: ``seed`` (default 0) or ``generator``.
        """
        k = check_integer(n_samples, "n_samples", minimum=1)
        gen = resolve_generator(None if generator is not None else seed, generator)
        z = torch.randn(self.size, k, generator=gen, dtype=torch.float64).to(self.mean.dtype)
        prec = self.precision()
        if isinstance(prec, DiagonalCurvature):
            eps = z / prec.values.sqrt().unsqueeze(1)
        elif isinstance(prec, DenseCurvature):
            chol = torch.linalg.cholesky(prec.matrix)
            eps = torch.linalg.solve_triangular(chol.T, z, upper=True)
        else:
            assert isinstance(prec, BlockDiagonalCurvature)
            parts = []
            for n, b in prec.parts.items():
                assert isinstance(b, KroneckerCurvature)
                half = KroneckerCurvature(b.A, b.G, bias=b.bias, power=-0.5, shift=b.shift)
                parts.append(half.matvec(z[prec.blocks[n]]))
            eps = torch.cat(parts, dim=0)
        return self.mean.unsqueeze(0) + eps.T

    def params_dict(self, theta: Tensor | None = None) -> dict[str, Tensor]:
        """The model's parameters with the covered ones set from the flat ``theta`` (default the mean)."""
        theta = self.mean if theta is None else theta
        full = model_params(self.model)
        out, i = {}, 0
        for n, t in full.items():
            if n in self.names:
                out[n] = theta[i : i + t.numel()].reshape(t.shape)
                i += t.numel()
            else:
                out[n] = t
        return out


def _kron_data_curvature(
    model: nn.Module,
    x: Tensor,
    lik: Likelihood,
    fisher_type: str,
    names: tuple[str, ...],
    layer: str | None,
) -> BlockDiagonalCurvature:
    facs = kfac_factors(model, x, None, likelihood=lik, fisher_type=fisher_type, bias="separate")
    blocks: dict[str, Curvature] = {}
    for lname, fac in facs.items():
        mod = "" if lname == "<model>" else lname
        if layer is not None and mod != layer:
            continue
        pairs = fac if isinstance(fac, tuple) else (fac,)
        suffixes = ("weight", "bias") if isinstance(fac, tuple) else ("weight",)
        for suffix, f in zip(suffixes, pairs):
            blocks[f"{mod}.{suffix}".lstrip(".")] = KroneckerCurvature(f.A, f.G, bias=f.bias)
    if tuple(blocks) != names:
        others = [n for n in names if n not in blocks]
        raise ValueError(
            "structure='kron' needs every covered parameter in an nn.Linear/nn.Conv2d layer; "
            f"these have no Kronecker block: {others}"
        )
    return BlockDiagonalCurvature(blocks)


def fit_laplace(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    likelihood: Likelihood | str,
    *,
    structure: str = "full",
    subset: str = "all",
    prior_precision: float | Tensor = 1.0,
    prior_mean: Tensor | None = None,
    sigma_noise: float = 1.0,
    temperature: float = 1.0,
    fisher_type: str = "ggn",
) -> LaplacePosterior:
    r"""The Laplace approximation of ``model`` (at its current parameters, the MAP) on ``(x, y)``.

    The curvature of the data term is a *sum* over the :math:`N` data points, :math:`N\bar C`
    with :math:`\bar C` the mean curvature of :func:`igbook.fisher.curvature`; this is
    laplace-torch's convention too (its ``prior_precision`` is our :math:`P_0`, its
    ``sigma_noise`` our :math:`\sigma`, its ``temperature`` our :math:`\tau`) :cite:`daxberger2021laplace`.

    Parameters
    ----------
    model
        The trained network; its parameters are taken as :math:`\theta_*`.
    x, y
        The training inputs and targets, data points first.
    likelihood
        A :class:`~igbook.fisher.likelihoods.Likelihood` or its name; a Gaussian likelihood's
        variance is ignored in favour of ``sigma_noise``.
    structure
        ``"full"``, ``"diagonal"`` or ``"kron"`` (:data:`STRUCTURES`).
    subset
        ``"all"`` or ``"last_layer"`` (the last ``nn.Linear`` layer only).
    prior_precision
        :math:`P_0`: a scalar :math:`\delta > 0`, or (``"full"``/``"diagonal"``) a ``(P,)`` tensor.
    prior_mean
        :math:`\mu_0`, shape ``(P,)`` (default 0): online Laplace passes the previous task's mean.
    sigma_noise
        The observation noise standard deviation :math:`\sigma` (Gaussian likelihood only).
    temperature
        :math:`\tau > 0`, dividing the likelihood term.
    fisher_type
        ``"ggn"`` (default; = ``"exact"`` Fisher for the canonical likelihoods), ``"empirical"``, or
        ``"hessian"`` (``"full"``/``"diagonal"`` only; not positive semi-definite in general).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    structure = check_choice(structure, "structure", STRUCTURES)
    subset = check_choice(subset, "subset", SUBSETS)
    fisher_type = check_choice(fisher_type, "fisher_type", FISHER_TYPES)
    sigma = check_positive_real(sigma_noise, "sigma_noise")
    temperature = check_positive_real(temperature, "temperature")
    lik = get_likelihood(likelihood)
    if isinstance(lik, GaussianLikelihood):
        lik = GaussianLikelihood(1.0)
    elif sigma != 1.0:
        raise ValueError("sigma_noise applies to a Gaussian likelihood only (leave it at 1.0)")
    if structure == "kron" and fisher_type == "hessian":
        raise ValueError("fisher_type='hessian' has no Kronecker factors: use structure='full'")
    if not isinstance(x, Tensor) or x.ndim == 0 or x.shape[0] == 0:
        raise ValueError("x must be a tensor with a non-empty batch axis")
    if not isinstance(y, Tensor) or y.shape[:1] != x.shape[:1]:
        raise ValueError(f"y must be a tensor with {x.shape[0]} data points along axis 0")
    if x.is_floating_point():
        check_finite(x, "x")
    all_params = model_params(model)
    layer = last_linear_layer(model) if subset == "last_layer" else None
    names = tuple(n for n in all_params if layer is None or n.rpartition(".")[0] == layer)
    params = {n: all_params[n] for n in names}
    mean = flatten_params(params)
    with torch.no_grad():
        out = model(x)
    f = lik.flatten_output(out)
    yf = lik.check_targets(y, out)
    gauss = isinstance(lik, GaussianLikelihood)
    data_fit = ((yf - f) ** 2).sum() if gauss else lik.nll(f, yf).sum()
    ftype = "exact" if fisher_type == "ggn" and lik.canonical else fisher_type
    if structure == "kron":
        data_curv: Curvature = _kron_data_curvature(model, x, lik, ftype, names, layer)
    else:
        sub = None if subset == "all" else params
        fs = "dense" if structure == "full" else "diagonal"
        data_curv = curvature(model, sub, x, y, lik, ftype, structure=fs)
    dtype = mean.dtype
    if prior_mean is None:
        mu0 = torch.zeros_like(mean)
    else:
        if not isinstance(prior_mean, Tensor) or prior_mean.shape != mean.shape:
            raise ValueError(
                f"prior_mean must be a tensor of shape {tuple(mean.shape)}, "
                f"got {getattr(prior_mean, 'shape', type(prior_mean).__name__)}"
            )
        mu0 = check_finite(prior_mean, "prior_mean").to(dtype)
    post = LaplacePosterior(
        model=model,
        likelihood=lik if not isinstance(lik, GaussianLikelihood) else GaussianLikelihood(1.0),
        structure=structure,
        subset=subset,
        names=names,
        mean=mean,
        data_curvature=data_curv,
        n_data=int(x.shape[0]),
        n_outputs=int(f.shape[1]),
        data_fit=data_fit.detach(),
        prior_precision=1.0,
        prior_mean=mu0,
        sigma_noise=sigma,
        temperature=temperature,
    )
    return post.with_hyperparameters(prior_precision=prior_precision)
