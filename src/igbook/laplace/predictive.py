r"""Predictives of a Laplace posterior: linearized (GLM) and Monte Carlo over weights.

The *linearized* predictive replaces the network by its first-order expansion at
:math:`\theta_*`, :math:`f^{\rm lin}_\theta(x) = f_{\theta_*}(x) + J(x)(\theta-\theta_*)`, the model
whose Hessian the GGN is; under :math:`q = \mathcal N(\theta_*, \Sigma)` its outputs are Gaussian,

.. math::
    :label: eq-glm-predictive

    f(x)\sim\mathcal N\big(f_{\theta_*}(x),\; V(x) = J(x)\,\Sigma\,J(x)^\top\big)
    \qquad\text{:cite:`immer2021improving`}.

For a Gaussian likelihood the predictive is :math:`\mathcal N(f_{\theta_*}, V + \sigma^2 I)`.
For classification the probit approximation :math:`\int\mathrm{sigmoid}(f)\,\mathcal N(f; m, v)\,df
\approx \mathrm{sigmoid}\big(m/\sqrt{1+\pi v/8}\big)` (exact with :math:`\Phi(m/\sqrt{1+v})` for the
probit link) and its extension to the softmax, :math:`\mathrm{softmax}\big(m_c/\sqrt{1+\pi V_{cc}/8}\big)`,
avoid sampling :cite:`mackay1992practical,daxberger2021laplace`; ``link="mc"`` samples the linearized
outputs instead, as :math:`f_{\theta_*} + J(\theta_k - \theta_*)` with :math:`\theta_k\sim q`.
``method="nn"`` evaluates the network itself at :math:`\theta_k\sim q` (it under-fits when
:math:`\Sigma` comes from the GGN: the GGN is the curvature of the linearized model, not of the
network) :cite:`immer2021improving`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, vmap

from igbook._validation import check_choice, check_finite, check_integer
from igbook.fisher import BernoulliLikelihood, CategoricalLikelihood
from igbook.laplace.posterior import LaplacePosterior, last_linear_layer

__all__ = ["jacobians", "functional_variance", "predictive", "METHODS", "LINKS"]

#: predictive methods: the linearized model or the network itself
METHODS = ("glm", "nn")
#: how the classification link is integrated
LINKS = ("probit", "mc")


def _check(posterior: object, x: object) -> tuple[LaplacePosterior, Tensor]:
    if not isinstance(posterior, LaplacePosterior):
        raise TypeError(
            f"posterior must be a LaplacePosterior (from fit_laplace), got {type(posterior).__name__}"
        )
    if not isinstance(x, Tensor) or x.ndim == 0 or x.shape[0] == 0:
        raise ValueError("x must be a tensor with a non-empty batch axis")
    if x.is_floating_point():
        check_finite(x, "x")
    return posterior, x


def _outputs(post: LaplacePosterior, theta: Tensor, x: Tensor) -> Tensor:
    return post.likelihood.flatten_output(
        functional_call(post.model, post.params_dict(theta), (x,))
    )


def _last_layer_jacobians(post: LaplacePosterior, x: Tensor) -> tuple[Tensor, Tensor] | None:
    r"""Closed form for a last ``nn.Linear`` layer that produces the output: :math:`J = [I\otimes\phi(x)^\top \mid I]`.

    ``None`` when the layer's output is not the model's output (then autograd is used).
    """
    name = last_linear_layer(post.model)
    layer = dict(post.model.named_modules())[name]
    prefix = f"{name}." if name else ""
    want = (prefix + "weight", prefix + "bias") if layer.bias is not None else (prefix + "weight",)
    if post.names != want:
        return None
    rec: dict[str, Tensor] = {}

    def hook(_m: nn.Module, inp: tuple[Tensor, ...], out: Tensor) -> None:
        rec["inp"], rec["out"] = inp[0].detach(), out.detach()

    handle = layer.register_forward_hook(hook)
    try:
        with torch.no_grad():
            out = functional_call(post.model, post.params_dict(), (x,))
    finally:
        handle.remove()
    if "out" not in rec or rec["inp"].ndim != 2 or not torch.equal(rec["out"], out):
        return None
    phi = rec["inp"]
    n, c = out.shape
    eye = torch.eye(c, dtype=phi.dtype)
    parts = [torch.einsum("ab,nd->nabd", eye, phi).reshape(n, c, -1)]
    if layer.bias is not None:
        parts.append(eye.expand(n, c, c))
    return post.likelihood.flatten_output(out), torch.cat(parts, dim=2)


def jacobians(posterior: LaplacePosterior, x: Tensor) -> tuple[Tensor, Tensor]:
    r"""The outputs :math:`f_{\theta_*}(x)` ``(n, C)`` and Jacobians :math:`J(x)` ``(n, C, P)`` (covered parameters).

    For ``subset="last_layer"`` with a final ``nn.Linear`` layer the Jacobian is its closed form
    in the layer's inputs; otherwise per data point, :func:`torch.func.jacrev` of one point's
    outputs vectorized over the points by :func:`torch.func.vmap` (:math:`nC` backward passes
    through one point each, not through the whole batch). The model must treat data points
    independently (no batch statistics), as everywhere in :mod:`igbook.fisher`.
    """
    post, x = _check(posterior, x)
    if post.subset == "last_layer":
        fast = _last_layer_jacobians(post, x)
        if fast is not None:
            return fast

    def f_single(theta: Tensor, xn: Tensor) -> Tensor:
        return _outputs(post, theta, xn.unsqueeze(0))[0]

    with torch.no_grad():
        out = _outputs(post, post.mean, x)
    jac = vmap(jacrev(f_single), in_dims=(None, 0))(post.mean, x)
    return out, jac.detach().reshape(out.shape[0], -1, post.mean.shape[0])


def functional_variance(posterior: LaplacePosterior, x: Tensor) -> tuple[Tensor, Tensor]:
    r"""The linearized output mean ``(n, C)`` and covariance ``(n, C, C)`` of :eq:`eq-glm-predictive`.

    :math:`V = J\Sigma J^\top`; :math:`\Sigma J^\top` is one ``solve`` with the posterior precision.
    """
    post, x = _check(posterior, x)
    f, jac = jacobians(post, x)
    n, c, p = jac.shape
    jt = jac.reshape(n * c, p).T
    sj = post.precision().solve(jt, 0.0).T.reshape(n, c, p)  # rows of J Sigma
    return f, torch.einsum("ncp,ndp->ncd", jac, sj)


def _link_mean(post: LaplacePosterior, f: Tensor) -> Tensor:
    """The predictive probabilities of outputs ``f`` (``(..., n, C)``)."""
    lik = post.likelihood
    if isinstance(lik, CategoricalLikelihood):
        return torch.softmax(f, dim=-1)
    assert isinstance(lik, BernoulliLikelihood)
    if lik.link == "probit":
        return torch.special.ndtr(f)
    return torch.sigmoid(f)


def predictive(
    posterior: LaplacePosterior,
    x: Tensor,
    *,
    method: str = "glm",
    link: str = "probit",
    n_samples: int = 100,
    seed: int | None = 0,
    generator: torch.Generator | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""The posterior predictive at inputs ``x``.

    Parameters
    ----------
    posterior
        A :class:`~igbook.laplace.LaplacePosterior`.
    x
        Inputs, data points first.
    method
        ``"glm"``: the linearized model :eq:`eq-glm-predictive`; ``"nn"``: Monte Carlo with the
        network at :math:`\theta_k\sim q`.
    link
        Classification with ``method="glm"``: ``"probit"`` (closed form, module docstring) or
        ``"mc"`` (``n_samples`` draws of the linearized outputs). Ignored for regression.
    n_samples, seed, generator
        Monte Carlo draws and their seeded source (``generator`` wins over ``seed``).

    Returns
    -------
    Tensor or tuple
        Classification: probabilities ``(n, C)`` (softmax classes, or :math:`p(y=1)` per
        Bernoulli output). Regression: ``(mean, variance)``, each ``(n, C)``, the variance
        including :math:`\sigma^2`.
    """
    post, x = _check(posterior, x)
    method = check_choice(method, "method", METHODS)
    link = check_choice(link, "link", LINKS)
    k = check_integer(n_samples, "n_samples", minimum=1)
    need_samples = method == "nn" or (link == "mc" and not post.is_regression)
    if method == "nn":
        thetas = post.sample(k, seed=seed, generator=generator)
        with torch.no_grad():
            fs = torch.stack([_outputs(post, t, x) for t in thetas])
        if post.is_regression:
            s2 = float(post.sigma_noise) ** 2
            return fs.mean(0), fs.var(0, correction=0) + s2
        return _link_mean(post, fs).mean(0)
    f, v = functional_variance(post, x)
    var = v.diagonal(dim1=-2, dim2=-1)
    if post.is_regression:
        return f, var + float(post.sigma_noise) ** 2
    if need_samples:
        _, jac = jacobians(post, x)
        thetas = post.sample(k, seed=seed, generator=generator)
        fs = f.unsqueeze(0) + torch.einsum("ncp,kp->knc", jac, thetas - post.mean)
        return _link_mean(post, fs).mean(0)
    lik = post.likelihood
    if isinstance(lik, BernoulliLikelihood) and lik.link == "probit":
        return torch.special.ndtr(f / torch.sqrt(1.0 + var))
    return _link_mean(post, f / torch.sqrt(1.0 + math.pi * var / 8.0))
