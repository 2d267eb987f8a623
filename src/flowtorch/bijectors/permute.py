"""Permutations of the last event dim."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.distributions import constraints

from flowtorch.core.bijector import Bijector, Conditioner, Costs, Params

__all__ = ["Permute"]


class Permute(Bijector):
    r"""Reorders the last event dim: :math:`y = x_{[\pi]}`, volume preserving (:math:`\log|\det J| = 0`).

    That is :math:`y_i = x_{\pi(i)}` and :math:`x_j = y_{\pi^{-1}(j)}`; placed between
    autoregressive or coupling layers, it lets each layer condition on different variables.

    Reference: Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions", 2018
    (a fixed random permutation of the channels between steps, compared with reversing them).

    Args:
        permutation: a permutation of ``0..n-1`` for a last event dim of size ``n``; default a
            random one, drawn when the bijector is built and saved in its ``state_dict``.

    Example:
        >>> import torch
        >>> import flowtorch.bijectors as bij
        >>> p = bij.Permute(permutation=[2, 0, 1])(shape=torch.Size([3]))
        >>> p.forward(torch.tensor([10., 11., 12.]))
        tensor([12., 10., 11.])
    """

    costs = Costs("analytic", "O(D) gather", "O(D) gather", "0 (volume preserving)")

    domain = constraints.real_vector
    codomain = constraints.real_vector
    permutation: torch.Tensor
    inv_permutation: torch.Tensor

    def __init__(
        self,
        params_fn: Conditioner | None = None,
        *,
        shape: torch.Size | tuple[int, ...],
        context_shape: torch.Size | tuple[int, ...] | None = None,
        permutation: torch.Tensor | Sequence[int] | None = None,
    ) -> None:
        super().__init__(params_fn, shape=shape, context_shape=context_shape)
        n = self.shape[-1]
        perm = torch.randperm(n) if permutation is None else torch.as_tensor(permutation, dtype=torch.long)
        if perm.dim() != 1 or perm.numel() != n or not torch.equal(perm.sort().values, torch.arange(n)):
            raise ValueError(
                f"Permute: {perm.tolist()} is not a permutation of 0..{n - 1} (last event dim is {n})"
            )
        self.register_buffer("permutation", perm)
        self.register_buffer("inv_permutation", torch.argsort(perm))

    def _forward_and_ladj(self, x: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        return x[..., self.permutation], x.new_zeros(())

    def _inverse_and_ladj(self, y: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        return y[..., self.inv_permutation], y.new_zeros(())
