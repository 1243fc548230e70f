r"""The one network builder of the book's experiments.

Every chapter, test and benchmark that trains a small fully connected network builds it here,
so that "an MLP 64-100-10" means the same initialization everywhere: PyTorch's default
initialization of :class:`torch.nn.Linear` (weights and biases uniform on
:math:`\pm1/\sqrt{\text{fan-in}}`), drawn under a fixed seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from igbook._validation import check_choice, check_integer, check_seed

__all__ = ["ACTIVATIONS", "mlp"]

#: hidden-unit nonlinearities :func:`mlp` knows
ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU}


def mlp(
    sizes: Sequence[int],
    *,
    activation: str = "tanh",
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> nn.Sequential:
    r"""A fully connected network :math:`x\mapsto W_L\,\phi(\cdots\phi(W_1x+b_1)\cdots)+b_L`.

    Parameters
    ----------
    sizes
        Layer widths, input first and output last: ``(64, 100, 10)`` is one hidden layer of
        100 units. At least two entries, each an ``int >= 1``.
    activation
        The hidden nonlinearity :math:`\phi`, ``"tanh"`` or ``"relu"``; the last layer is
        linear (it returns logits or means).
    seed
        The initialization: the layers are drawn, in order, from torch's global generator
        seeded with ``seed`` inside :func:`torch.random.fork_rng`, so the same seed gives the
        same network and the global generator is left as it was.
    dtype
        The parameters are drawn in the current default dtype and then cast to ``dtype``
        (so a float32 and a float64 network with the same seed hold the same numbers up to
        rounding whenever the default dtype is float32).

    Returns
    -------
    torch.nn.Sequential
        ``Linear, act, Linear, act, ..., Linear``.
    """
    sizes = tuple(sizes)
    if len(sizes) < 2:
        raise ValueError(f"sizes needs at least an input and an output size, got {sizes}")
    for i, w in enumerate(sizes):
        check_integer(w, f"sizes[{i}]", minimum=1)
    check_choice(activation, "activation", tuple(ACTIVATIONS))
    seed = check_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers).to(dtype)
