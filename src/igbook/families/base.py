"""The interface shared by every exponential family of :mod:`igbook.families`.

:class:`ExponentialFamily` holds what every family has: the pure maps between usual, natural
and mean coordinates, the log-densities in each chart, the convex conjugate :math:`A^*` and the
two Bregman divergences, validated constructors, and the closed-form geometry's interface. The
families themselves live in ``igbook.families.elementary``, ``igbook.families.gaussian``
and ``igbook.families.conjugate``; the package docstring explains the conventions.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Self

import torch
from torch import Tensor
from torch.func import hessian

from igbook._validation import as_tensor, check_finite, check_shape

__all__ = ["ExponentialFamily", "family_class"]


class ExponentialFamily(ABC):
    """Common interface of the exponential families in :mod:`igbook.families`.

    Subclasses are frozen dataclasses holding the usual parameters. The class methods whose
    names end in ``_from_...`` or start with ``log_`` are pure tensor functions (no validation),
    safe inside :func:`torch.func.grad`, :func:`torch.func.hessian` and :func:`torch.func.vmap`.
    """

    #: whether the sample space is finite (then :meth:`support` enumerates it)
    discrete: ClassVar[bool] = False

    # ----- pure maps between coordinate systems (no validation) -----------------------------
    @classmethod
    @abstractmethod
    def natural_from_params(cls, theta: Tensor) -> Tensor:
        """Natural parameter :math:`\\eta` from the usual coordinates."""

    @classmethod
    @abstractmethod
    def params_from_natural(cls, eta: Tensor) -> Tensor:
        """Usual coordinates from the natural parameter."""

    @classmethod
    @abstractmethod
    def log_partition(cls, eta: Tensor) -> Tensor:
        """Log-partition function :math:`A(\\eta)` (a scalar tensor)."""

    @classmethod
    @abstractmethod
    def mean_from_natural(cls, eta: Tensor) -> Tensor:
        """Mean parameter :math:`\\mu = \\nabla A(\\eta)` in closed form."""

    @classmethod
    @abstractmethod
    def natural_from_mean(cls, mu: Tensor) -> Tensor:
        """Natural parameter from the mean parameter, :math:`\\eta = \\nabla A^*(\\mu)`."""

    @classmethod
    @abstractmethod
    def sufficient_statistic(cls, x: Tensor) -> Tensor:
        """:math:`T(x)`, with shape ``x_batch + (d,)``."""

    @classmethod
    @abstractmethod
    def log_base_measure(cls, x: Tensor) -> Tensor:
        """:math:`\\log h(x)`, with shape ``x_batch``."""

    @classmethod
    def log_prob_natural(cls, eta: Tensor, x: Tensor) -> Tensor:
        """:math:`\\log q_\\eta(x) = \\eta^\\top T(x) - A(\\eta) + \\log h(x)` (pure)."""
        return cls.sufficient_statistic(x) @ eta - cls.log_partition(eta) + cls.log_base_measure(x)

    @classmethod
    def log_prob_params(cls, theta: Tensor, x: Tensor) -> Tensor:
        """Log-density as a function of the usual coordinates (pure)."""
        return cls.log_prob_natural(cls.natural_from_params(theta), x)

    @classmethod
    def log_prob_mean(cls, mu: Tensor, x: Tensor) -> Tensor:
        """Log-density as a function of the mean parameter (pure)."""
        return cls.log_prob_natural(cls.natural_from_mean(mu), x)

    @classmethod
    def convex_conjugate(cls, mu: Tensor) -> Tensor:
        """:math:`A^*(\\mu) = \\sup_\\eta \\eta^\\top\\mu - A(\\eta) = \\eta(\\mu)^\\top\\mu - A(\\eta(\\mu))`."""
        eta = cls.natural_from_mean(mu)
        return eta @ mu - cls.log_partition(eta)

    @classmethod
    def bregman_natural(cls, eta_p: Tensor, eta_q: Tensor) -> Tensor:
        r"""Bregman divergence of the log-partition :math:`A` (pure).

        .. math::

            D_A(\eta_p\,\|\,\eta_q) = A(\eta_p) - A(\eta_q) - (\eta_p-\eta_q)^\top\nabla A(\eta_q)
            = \mathrm{KL}(q_{\eta_q}\,\|\,q_{\eta_p}).

        Note the swap: the Bregman divergence of :math:`A` from :math:`\eta_q` to
        :math:`\eta_p` is the KL divergence *from* :math:`q_{\eta_q}` *to*
        :math:`q_{\eta_p}` :cite:`amari2016information,nielsen2020elementary`.
        """
        return (
            cls.log_partition(eta_p)
            - cls.log_partition(eta_q)
            - (eta_p - eta_q) @ cls.mean_from_natural(eta_q)
        )

    @classmethod
    def bregman_mean(cls, mu_p: Tensor, mu_q: Tensor) -> Tensor:
        r"""Bregman divergence of the convex conjugate :math:`A^*` (pure).

        .. math::

            D_{A^*}(\mu_p\,\|\,\mu_q) = A^*(\mu_p) - A^*(\mu_q) - (\mu_p-\mu_q)^\top\nabla A^*(\mu_q)
            = \mathrm{KL}(q_{\mu_p}\,\|\,q_{\mu_q}),

        with :math:`\nabla A^*(\mu_q) = \eta(\mu_q)` (:meth:`natural_from_mean`). In mean
        coordinates the order of the arguments is the order of the KL divergence
        :cite:`amari2016information`; this is the proximity term of mirror descent in
        :mod:`igbook.mirror`.
        """
        return (
            cls.convex_conjugate(mu_p)
            - cls.convex_conjugate(mu_q)
            - (mu_p - mu_q) @ cls.natural_from_mean(mu_q)
        )

    @classmethod
    def fisher_from_natural(cls, eta: Tensor) -> Tensor:
        r"""Fisher information in natural coordinates as a pure function of :math:`\eta`.

        :math:`F(\eta) = \nabla^2 A(\eta)` :cite:`amari2016information`; by autograd here, in closed
        form where a family overrides it. Unchecked (no validation), so that :mod:`torch.func`
        can trace it; :meth:`fisher_natural` is the checked instance twin.
        """
        return hessian(cls.log_partition)(eta)

    # ----- constructors ---------------------------------------------------------------------
    @classmethod
    @abstractmethod
    def from_params(cls, theta: Tensor) -> Self:
        """The distribution with usual coordinates ``theta`` (validated)."""

    @classmethod
    def from_natural(cls, eta: Tensor) -> Self:
        """The distribution with natural parameter ``eta`` (validated)."""
        eta = cls._parameter_vector(eta, "eta", cls._natural_dim_or_none())
        cls.check_natural(eta)
        return cls.from_params(cls.params_from_natural(eta))

    @classmethod
    def from_mean(cls, mu: Tensor) -> Self:
        """The distribution with mean parameter ``mu`` (validated)."""
        mu = cls._parameter_vector(mu, "mu", cls._natural_dim_or_none())
        cls.check_mean(mu)
        return cls.from_natural(cls.natural_from_mean(mu))

    @classmethod
    def _natural_dim_or_none(cls) -> int | None:
        return None

    @classmethod
    def _parameter_vector(cls, t: object, name: str, size: int | None = None) -> Tensor:
        """A flat parameter vector, checked for finiteness and (optionally) length."""
        t = as_tensor(t, name)
        if t.ndim == 0:
            t = t.reshape(1)
        check_shape(t, name, (size,))
        return check_finite(t, name)

    @classmethod
    def check_natural(cls, eta: Tensor) -> Tensor:
        """Return ``eta`` if it lies in the natural parameter space of the family, else raise
        :class:`ValueError` naming ``eta`` (or the parameter its constraint is about)."""
        check_finite(eta, "eta")
        cls._check_natural(eta)
        return eta

    @classmethod
    def check_mean(cls, mu: Tensor) -> Tensor:
        """Return ``mu`` if it lies in the interior of the mean parameter space, else raise
        :class:`ValueError` naming ``mu``."""
        check_finite(mu, "mu")
        cls._check_mean(mu)
        return mu

    @classmethod
    @abstractmethod
    def _check_natural(cls, eta: Tensor) -> None:
        """Raise ValueError unless ``eta`` lies in the natural parameter space (the family's hook
        behind :meth:`check_natural`)."""

    @classmethod
    @abstractmethod
    def _check_mean(cls, mu: Tensor) -> None:
        """Raise ValueError unless ``mu`` lies in the interior of the mean parameter space (the
        family's hook behind :meth:`check_mean`)."""

    # ----- instance views -------------------------------------------------------------------
    @property
    @abstractmethod
    def params(self) -> Tensor:
        """Usual coordinates as a flat tensor."""

    @property
    def natural(self) -> Tensor:
        """Natural parameter :math:`\\eta` as a flat tensor."""
        return self.natural_from_params(self.params)

    @property
    def mean(self) -> Tensor:
        """Mean parameter :math:`\\mu = \\mathbb{E}[T(x)]` as a flat tensor."""
        return self.mean_from_natural(self.natural)

    @property
    def dim(self) -> int:
        """Dimension of the (minimal) parameter space."""
        return int(self.params.numel())

    def log_prob(self, x: Tensor) -> Tensor:
        """Log-density (or log-mass) at ``x``; ``x`` may carry any batch shape."""
        x = as_tensor(x, "x", dtype=self.params.dtype)
        self._check_x(x)
        return self.log_prob_natural(self.natural, x)

    def _check_x(self, x: Tensor) -> None:
        check_finite(x, "x")

    @abstractmethod
    def sample(
        self, n: int, *, seed: int | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Draw ``n`` samples, reproducibly from ``seed`` or ``generator``."""

    def support(self) -> Tensor:
        """Enumerate a finite sample space (only for discrete families)."""
        raise NotImplementedError(f"{type(self).__name__} has no finite support to enumerate")

    # ----- closed-form geometry -------------------------------------------------------------
    @abstractmethod
    def fisher_natural(self) -> Tensor:
        """Fisher information in natural coordinates, :math:`\\nabla^2 A(\\eta) = \\mathrm{Cov}[T(x)]`."""

    def fisher_mean(self) -> Tensor:
        """Fisher information in mean coordinates, :math:`\\nabla^2 A^*(\\mu) = [\\nabla^2 A(\\eta)]^{-1}`."""
        return torch.linalg.inv(self.fisher_natural())

    @abstractmethod
    def fisher(self) -> Tensor:
        """Fisher information in the usual coordinates (closed form)."""

    @abstractmethod
    def kl(self, other: Self) -> Tensor:
        """:math:`\\mathrm{KL}(\\text{self}\\,\\|\\,\\text{other})` by its textbook closed form."""

    def kl_bregman(self, other: Self) -> Tensor:
        r"""KL as the Bregman divergence of the log-partition,

        .. math:: \mathrm{KL}(q_{\eta_p}\|q_{\eta_q}) = A(\eta_q) - A(\eta_p) - (\eta_q-\eta_p)^\top \nabla A(\eta_p).
        """
        self._check_same_family(other)
        ep, eq = self.natural, other.natural
        return self.log_partition(eq) - self.log_partition(ep) - (eq - ep) @ self.mean

    def kl_bregman_mean(self, other: Self) -> Tensor:
        r"""KL as the Bregman divergence of the convex conjugate :math:`A^*` in mean coordinates,

        .. math:: \mathrm{KL}(q_{\mu_p}\|q_{\mu_q}) = D_{A^*}(\mu_p\|\mu_q),

        the dual form of :meth:`kl_bregman` (see :meth:`bregman_mean`).
        """
        self._check_same_family(other)
        return self.bregman_mean(self.mean, other.mean)

    def _check_same_family(self, other: object) -> None:
        if type(other) is not type(self):
            raise TypeError(f"other must be a {type(self).__name__}, got {type(other).__name__}")
        if other.params.shape != self.params.shape:  # type: ignore[attr-defined]
            raise ValueError(
                f"other must have parameters of shape {tuple(self.params.shape)}, "
                f"got {tuple(other.params.shape)}"  # type: ignore[attr-defined]
            )

    def entropy(self) -> Tensor:
        r"""Differential (or discrete) entropy, :math:`A(\eta) - \eta^\top\mu - \mathbb{E}[\log h(x)]`."""
        return self.log_partition(self.natural) - self.natural @ self.mean - self._expected_log_h()

    def _expected_log_h(self) -> Tensor:
        return torch.zeros((), dtype=self.params.dtype)


def family_class(family: object) -> type[ExponentialFamily]:
    """The :class:`ExponentialFamily` subclass of ``family``, given as a class or a distribution.

    The one check behind every function of :mod:`igbook.connections`, :mod:`igbook.efficiency`
    and :mod:`igbook.natgrad` that accepts "a family" (class or instance); raises
    :class:`TypeError` naming ``family`` otherwise (:cite:t:`amari2016information` for the families).
    """
    cls = family if isinstance(family, type) else type(family)
    if not (isinstance(cls, type) and issubclass(cls, ExponentialFamily)):
        raise TypeError(
            f"family must be an igbook.families exponential family (class or instance), got {family!r}"
        )
    return cls
