"""The integrand network of integral (UMNN) transformers."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

__all__ = ["IntegrandNet"]


class IntegrandNet(nn.Module):
    r"""The pre-activation :math:`z(t, h)` of an integral transformer's integrand: an MLP on ``[t, h]``.

    .. math:: z(t, h) = W_L\,\phi(\dots \phi(w_t t + W_h h + b_1) \dots) + b_L,

    shared by every dimension, with the embedding :math:`h` carrying the dimension's context;
    ``UMNN`` integrates :math:`\mathrm{ELU}(z) + 1 > 0` over :math:`t`. The last layer starts at
    zero, so the integrand starts at 1 (the identity transformer).

    Reference: Wehenkel & Louppe, "Unconstrained Monotonic Neural Networks", 2019.

    Args:
        embedding_dim: size of :math:`h`.
        hidden_dims: hidden layer sizes (at least one).
        nonlinearity: a factory of the activation module :math:`\phi`, e.g. ``torch.nn.ELU``.

    Shapes: ``t`` is ``S + (n,)`` (``n`` points per element), ``h`` is ``S + (E,)``; the output is
    ``S + (n,)``.

    Example:
        >>> import torch
        >>> from flowtorch.nn import IntegrandNet
        >>> net = IntegrandNet(4, (8, 8), torch.nn.ELU)
        >>> net(torch.rand(5, 3, 7), torch.randn(5, 3, 4)).shape
        torch.Size([5, 3, 7])
    """

    def __init__(self, embedding_dim: int, hidden_dims: Sequence[int], nonlinearity: Callable[[], nn.Module]):
        super().__init__()
        width = hidden_dims[0]
        self.time = nn.Linear(1, width)
        self.embedding = nn.Linear(embedding_dim, width, bias=False)
        self.hidden = nn.ModuleList(nn.Linear(i, o) for i, o in zip(hidden_dims[:-1], hidden_dims[1:]))
        self.output = nn.Linear(hidden_dims[-1], 1)
        nn.init.zeros_(self.output.weight)  # the integrand starts at ELU(0) + 1 = 1: the identity
        nn.init.zeros_(self.output.bias)
        self.activation = nonlinearity()

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Pre-activations ``S + (n,)`` at points ``t`` (``S + (n,)``), embeddings ``h`` (``S + (E,)``)."""
        a = self.time(t[..., None]) + self.embedding(h)[..., None, :]
        a = self.activation(a)
        for layer in self.hidden:
            a = self.activation(layer(a))
        out: torch.Tensor = self.output(a)[..., 0]
        return out
