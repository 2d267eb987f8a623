"""Masked layers for autoregressive networks (MADE, Germain et al. 2015)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from flowtorch.core.compat import is_compiling as _is_compiling  # (a module global: tests patch it)

__all__ = ["MaskedLinear", "made_degrees", "made_masks"]


class MaskedLinear(nn.Linear):
    r"""A linear layer whose weight is multiplied by a fixed binary mask: :math:`y = (W \odot M) x + b`.

    Args:
        in_features: size of each input.
        out_features: size of each output.
        mask: ``(out_features, in_features)`` tensor of zeros and ones, stored as a buffer.
        bias: whether to learn an additive bias.

    Shapes: ``input`` is ``batch + (in_features,)``, the output ``batch + (out_features,)``.

    Reference: Germain et al., "MADE: Masked Autoencoder for Distribution Estimation", 2015.

    Example:
        >>> import torch
        >>> from flowtorch.nn import MaskedLinear
        >>> layer = MaskedLinear(2, 2, mask=torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
        >>> x = torch.randn(5, 2, requires_grad=True)
        >>> layer(x)[:, 0].sum().backward()
        >>> bool((x.grad[:, 1] == 0).all())  # output 0 does not see input 1
        True
    """

    mask: torch.Tensor
    #: (thread, grad mode, weight * mask) while a :func:`fixed_masked_weights` scope is open
    _fixed: tuple[int, bool, torch.Tensor] | None = None

    def __init__(self, in_features: int, out_features: int, mask: torch.Tensor, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias)
        if mask.shape != (out_features, in_features):
            raise ValueError(
                f"MaskedLinear: mask has shape {tuple(mask.shape)}, expected {(out_features, in_features)}"
            )
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        fixed = self._fixed
        if fixed is not None and fixed[0] == threading.get_ident() and fixed[1] == torch.is_grad_enabled():
            return F.linear(input, fixed[2], self.bias)
        return F.linear(input, self.weight * self.mask, self.bias)


@contextlib.contextmanager
def fixed_masked_weights(layers: Sequence[MaskedLinear]) -> Iterator[None]:
    r"""Computes each layer's :math:`W \odot M` once for the calls inside the ``with`` block.

    For the :math:`D` conditioner passes of a sequential autoregressive map, whose weights do not
    change in between: one product per layer instead of one per pass (and one backward node).
    The product serves only calls from the thread, and in the grad mode, that opened the scope;
    other calls compute their own. Under ``torch.compile`` it does nothing.

    Reference: Germain et al., "MADE: Masked Autoencoder for Distribution Estimation", 2015.

    Args:
        layers: the masked layers whose products to fix.

    Example:
        >>> import torch
        >>> from flowtorch.nn import MaskedLinear
        >>> from flowtorch.nn.made import fixed_masked_weights
        >>> layer = MaskedLinear(2, 2, mask=torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
        >>> x = torch.randn(5, 2)
        >>> with fixed_masked_weights([layer]):
        ...     y = layer(x)
        >>> torch.equal(y, layer(x))
        True
    """
    if _is_compiling() or any(layer._fixed is not None for layer in layers):  # (nested: keep the outer)
        yield
        return
    key, grad = threading.get_ident(), torch.is_grad_enabled()
    for layer in layers:
        layer._fixed = (key, grad, layer.weight * layer.mask)
    try:
        yield
    finally:
        for layer in layers:
            layer._fixed = None


def made_degrees(input_degrees: torch.Tensor, hidden_dims: list[int] | tuple[int, ...]) -> list[torch.Tensor]:
    r"""Degrees of the input and hidden units of a MADE.

    Input unit ``i`` has degree ``input_degrees[i]`` in ``1..D``; hidden units cycle through
    ``1..D-1`` (all 0 when ``D == 1``), so every hidden layer of at least ``D - 1`` units reaches
    every input a later output may depend on:

    .. math:: m^{(l)}_k = 1 + (k \bmod (D - 1)), \qquad k = 0, \dots, H_l - 1.

    Reference: Germain et al., "MADE: Masked Autoencoder for Distribution Estimation", 2015.

    Args:
        input_degrees: ``(D,)`` long tensor, the degree of each input (a permutation of ``1..D``).
        hidden_dims: sizes :math:`H_l` of the hidden layers.

    Returns:
        ``[input_degrees, hidden_1, ..., hidden_L]``, one ``(H_l,)`` long tensor per layer.

    Example:
        >>> import torch
        >>> from flowtorch.nn import made_degrees
        >>> [d.tolist() for d in made_degrees(torch.tensor([1, 2, 3]), [4])]
        [[1, 2, 3], [1, 2, 1, 2]]
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
    r"""Masks so that output unit ``o`` depends only on inputs of degree ``< output_degrees[o]``.

    .. math::
        M^{(l)}_{kj} = [\,m^{(l)}_k \ge m^{(l-1)}_j\,] \text{ (hidden layers)}, \qquad
        M^{\text{out}}_{oj} = [\,d_o > m^{(L)}_j\,].

    Reference: Germain et al., "MADE: Masked Autoencoder for Distribution Estimation", 2015.

    Args:
        degrees: the degrees of the input and hidden units, from :func:`made_degrees`.
        output_degrees: ``(O,)`` long tensor, the degree of each output unit.

    Returns:
        One float mask per layer, shaped ``(out_units, in_units)``, as :class:`MaskedLinear` takes.

    Example:
        >>> import torch
        >>> from flowtorch.nn import made_degrees, made_masks
        >>> degrees = made_degrees(torch.tensor([1, 2]), [2])
        >>> [m.tolist() for m in made_masks(degrees, torch.tensor([1, 2]))]
        [[[1.0, 0.0], [1.0, 0.0]], [[0.0, 0.0], [1.0, 1.0]]]
    """
    masks = [(d_out[:, None] >= d_in[None, :]).float() for d_in, d_out in zip(degrees[:-1], degrees[1:])]
    masks.append((output_degrees[:, None] > degrees[-1][None, :]).float())
    return masks
