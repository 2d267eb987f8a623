"""Reversal of one event dim."""

from __future__ import annotations

import torch
from torch.distributions import constraints

from flowtorch.core.bijector import Bijector, Costs, Params

__all__ = ["Reverse"]


class Reverse(Bijector):
    r"""Reverses the order along one event dim: :math:`y_i = x_{n-1-i}`, :math:`\log|\det J| = 0`.

    The cheapest fixed permutation between coupling or autoregressive layers: with ``dim=-1``
    (the default) it flips the last event dim, so that the next layer conditions the other way
    round; ``dim=-3`` on ``(C, H, W)`` images reverses the channels (Glow's "reverse" baseline
    for its 1x1 convolution). It is its own inverse.

    Reference: Kingma and Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions",
    2018 (section 3.2).

    Args:
        dim: the event dim to reverse: negative counts from the last event dim, non-negative from
            the first.

    Example:
        >>> import torch
        >>> from flowtorch.bijectors.reverse import Reverse
        >>> Reverse()(shape=torch.Size([3])).forward(torch.tensor([1.0, 2.0, 3.0]))
        tensor([3., 2., 1.])
    """

    costs = Costs(
        "analytic", "O(D) flip", "O(D) flip", "0 (volume preserving)", reference="Kingma & Dhariwal 2018"
    )

    domain = constraints.real_vector
    codomain = constraints.real_vector

    def __init__(
        self,
        dim: int = -1,
        *,
        shape: torch.Size | tuple[int, ...],
        context_shape: torch.Size | tuple[int, ...] | None = None,
    ) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise TypeError(f"Reverse: dim must be an int, got {dim!r}")
        n = len(torch.Size(shape))
        if not -n <= dim < n:
            raise ValueError(f"Reverse: dim={dim} is out of range for an event of shape {tuple(shape)}")
        self.dim = dim if dim >= 0 else n + dim  # counted from the first event dim
        self._offset = self.dim - n  # counted from the last tensor dim
        super().__init__(None, shape=shape, context_shape=context_shape)

    def _raw_event_dim(self) -> int:
        return len(self.shape)

    def _forward_and_ladj(self, x: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        return x.flip(self._offset), x.new_zeros(())

    def _inverse_and_ladj(self, y: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        return y.flip(self._offset), y.new_zeros(())

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, dim={self.dim}"
