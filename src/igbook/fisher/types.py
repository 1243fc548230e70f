r"""The one vocabulary for *which* curvature matrix: :class:`FisherType`.

Every module of igbook that computes or consumes curvature (``fisher``, ``natgrad``, ``kfac``,
``continual``, ``optim``, ``vi``) spells the choice with :class:`FisherType` (or its string
value) and resolves user input with :func:`as_fisher_type`.

Older spellings are accepted for one release as **deprecated aliases** (a
:class:`DeprecationWarning` names the new spelling):

==================  =====================  ====================================================
old spelling        where it was used      now
==================  =====================  ====================================================
``"type2"``         ``kfac``               ``"exact"`` (Martens and Grosse's "type-2" Fisher:
                                           the closed-form output Fisher)
``"sample"``        ``continual``          ``"mc"`` (labels sampled from the model)
==================  =====================  ====================================================
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from enum import Enum

__all__ = ["FisherType", "as_fisher_type", "FISHER_TYPE_ALIASES"]


class FisherType(str, Enum):
    """Which curvature matrix to compute (see the table in :mod:`igbook.fisher.models`).

    Members compare equal to their string values, so ``fisher_type="mc"`` works too.
    """

    #: Fisher information :math:`\frac1N\sum_n J_n^\top\Lambda(f_n)J_n`, output Fisher in closed form
    EXACT = "exact"
    #: Monte Carlo Fisher: labels sampled from the model (``mc_samples`` per point, seeded)
    MC = "mc"
    #: empirical Fisher :math:`\frac1N\sum_n g_n g_n^\top` with observed labels
    EMPIRICAL = "empirical"
    #: generalized Gauss-Newton :math:`\frac1N\sum_n J_n^\top\nabla^2_f\ell_n J_n`
    GGN = "ggn"
    #: Hessian :math:`\nabla^2_\theta L` of the mean loss
    HESSIAN = "hessian"


#: deprecated spellings -> the member they mean (accepted with a DeprecationWarning)
FISHER_TYPE_ALIASES: dict[str, FisherType] = {
    "type2": FisherType.EXACT,
    "sample": FisherType.MC,
}


def as_fisher_type(
    value: object, *, allowed: Iterable[FisherType] | None = None, name: str = "fisher_type"
) -> FisherType:
    """Resolve ``value`` (a :class:`FisherType` or its string, case-insensitive) to a member.

    ``allowed`` restricts the members a caller supports (e.g. K-FAC has no Hessian factors);
    anything else raises :class:`ValueError` naming ``name`` and listing the choices. A
    deprecated alias (:data:`FISHER_TYPE_ALIASES`) resolves with a :class:`DeprecationWarning`.
    """
    allowed_t = tuple(FisherType) if allowed is None else tuple(allowed)
    choices = [t.value for t in allowed_t]
    if isinstance(value, FisherType):
        member = value
    elif isinstance(value, str):
        key = value.lower()
        if key in FISHER_TYPE_ALIASES:
            member = FISHER_TYPE_ALIASES[key]
            warnings.warn(
                f"{name}={value!r} is deprecated; use {name}={member.value!r} (FisherType.{member.name})",
                DeprecationWarning,
                stacklevel=3,
            )
        else:
            try:
                member = FisherType(key)
            except ValueError:
                raise ValueError(f"{name} must be one of {choices}, got {value!r}") from None
    else:
        raise TypeError(f"{name} must be a FisherType or a string, got {type(value).__name__}")
    if member not in allowed_t:
        raise ValueError(f"{name} must be one of {choices} here, got {member.value!r}")
    return member
