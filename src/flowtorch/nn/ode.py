"""The dynamics network of continuous normalizing flows, with forward-mode tangents."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ACTIVATIONS", "ODEMLP"]

#: the smooth activations ``ODEMLP`` offers
ACTIVATIONS = ("tanh", "softplus")


class ODEMLP(nn.Module):
    r"""The dynamics :math:`f(z, t, e)`: an MLP on :math:`[z, t, e]` with a forward-mode JVP.

    :math:`z \in \mathbb{R}^D`, :math:`t` the time and :math:`e` an optional context embedding;
    smooth activations (``tanh`` or ``softplus``) so that :math:`\operatorname{tr}
    \partial f / \partial z` is differentiable. ``jvp`` pushes tangents :math:`V` through the
    layers alongside the values (:math:`\dot h_{l} = \phi'(a_l) \odot W_l \dot h_{l-1}`), giving
    :math:`f` and :math:`(\partial f / \partial z) V` in one pass with plain operations: the exact
    trace is :math:`V = I` (cost :math:`D` times a forward pass, no backward pass), Hutchinson's
    estimator is :math:`V = \epsilon`. The last layer starts at zero (the identity flow).

    References: Grathwohl et al., "FFJORD: Free-form Continuous Dynamics for Scalable Reversible
    Generative Models", 2019 (the dynamics network and the trace estimators); Griewank & Walther,
    "Evaluating Derivatives: Principles and Techniques of Algorithmic Differentiation", 2008
    (forward-mode propagation of tangents).

    Args:
        dim: :math:`D`.
        hidden_dims: hidden layer sizes.
        context_dim: size of :math:`e` (0 for none).
        activation: ``"tanh"`` or ``"softplus"``.

    Example:
        >>> import torch
        >>> from flowtorch.nn import ODEMLP
        >>> net = ODEMLP(3, (8,))
        >>> f, jv = net.jvp(torch.randn(5, 3), torch.zeros(5, 1), None, torch.eye(3))
        >>> f.shape, jv.shape
        (torch.Size([5, 3]), torch.Size([5, 3, 3]))
    """

    def __init__(
        self, dim: int, hidden_dims: Sequence[int], context_dim: int = 0, activation: str = "tanh"
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"ODEMLP: activation must be one of {ACTIVATIONS}, got {activation!r}")
        sizes = [dim + 1 + context_dim, *hidden_dims, dim]
        self.dim = dim
        self.activation = activation
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(sizes[:-1], sizes[1:]))
        last = self._linear()[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def _linear(self) -> list[nn.Linear]:
        return cast("list[nn.Linear]", list(self.layers))

    def _act(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.activation == "tanh":
            h = torch.tanh(a)
            return h, 1.0 - h * h
        return F.softplus(a), torch.sigmoid(a)

    def _input(self, z: torch.Tensor, t: torch.Tensor, e: torch.Tensor | None) -> torch.Tensor:
        parts = [z, t] if e is None else [z, t, e]
        return torch.cat(parts, dim=-1)

    def forward(self, z: torch.Tensor, t: torch.Tensor, e: torch.Tensor | None = None) -> torch.Tensor:
        """``z``: ``batch + (D,)``, ``t``: ``batch + (1,)``, ``e``: ``batch + (E,)`` or None."""
        h = self._input(z, t, e)
        for layer in self.layers[:-1]:
            h = self._act(layer(h))[0]
        out: torch.Tensor = self.layers[-1](h)
        return out

    def jvp(
        self, z: torch.Tensor, t: torch.Tensor, e: torch.Tensor | None, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``f`` and ``(df/dz) v`` for tangents ``v`` of shape ``(D, K)`` or ``batch + (D, K)``."""
        h = self._input(z, t, e)
        first, *rest = self._linear()
        a = first(h)
        tangent = first.weight[:, : self.dim] @ v  # (H, K) or batch + (H, K)
        for layer in rest:
            h, slope = self._act(a)
            tangent = slope[..., None] * tangent
            a = layer(h)
            tangent = layer.weight @ tangent
        return a, tangent
