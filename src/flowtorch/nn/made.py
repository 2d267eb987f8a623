"""Masked layers for autoregressive networks (MADE, Germain et al. 2015)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MaskedLinear", "made_degrees", "made_masks"]


class MaskedLinear(nn.Linear):
    r"""A linear layer whose weight is multiplied by a fixed binary mask: :math:`y = (W \odot M) x + b`.

    Args:
        in_features: size of each input.
        out_features: size of each output.
        mask: ``(out_features, in_features)`` tensor of zeros and ones, stored as a buffer.
        bias: whether to learn an additive bias.
    """

    mask: torch.Tensor

    def __init__(self, in_features: int, out_features: int, mask: torch.Tensor, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias)
        if mask.shape != (out_features, in_features):
            raise ValueError(
                f"MaskedLinear: mask has shape {tuple(mask.shape)}, expected {(out_features, in_features)}"
            )
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.linear(input, self.weight * self.mask, self.bias)


def made_degrees(input_degrees: torch.Tensor, hidden_dims: list[int] | tuple[int, ...]) -> list[torch.Tensor]:
    """Degrees of the input and hidden units of a MADE.

    Input unit ``i`` has degree ``input_degrees[i]`` in ``1..D``; hidden units cycle through
    ``1..D-1`` (all 0 when ``D == 1``), so every hidden layer of at least ``D - 1`` units reaches
    every input a later output may depend on.
    """
    d = int(input_degrees.numel())
    degrees = [input_degrees]
    for h in hidden_dims:
        if d > 1:
            degrees.append(torch.arange(h) % (d - 1) + 1)
        else:
            degrees.append(torch.zeros(h, dtype=torch.long))
    return degrees


def made_masks(degrees: list[torch.Tensor], output_degrees: torch.Tensor) -> list[torch.Tensor]:
    """Masks so that output unit ``o`` depends only on inputs of degree ``< output_degrees[o]``."""
    masks = [(d_out[:, None] >= d_in[None, :]).float() for d_in, d_out in zip(degrees[:-1], degrees[1:])]
    masks.append((output_degrees[:, None] > degrees[-1][None, :]).float())
    return masks
