"""A convolutional conditioner for channel-wise coupling layers on images."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from flowtorch.core.shapes import broadcast_shapes
from flowtorch.parameters.base import Parameters

__all__ = ["ConvCoupling"]


class ConvCoupling(Parameters):
    r"""Small CNN from the identity channels of an image (and the context) to the parameters of
    the transformed channels.

    A channel-wise coupling layer (e.g. :class:`~flowtorch.bijectors.ChannelAffineCoupling`)
    splits a ``(C, H, W)`` event into identity channels :math:`x_a` of shape ``(C_a, H, W)``
    (this conditioner's ``input_shape``) and transformed channels. This conditioner computes

    .. math::
        \theta = \mathrm{conv}_{k}\Big(\sigma\big(\mathrm{conv}_{1}\,
                 \sigma(\mathrm{conv}_{k}([x_a; c]))\big)\Big),

    Glow's three-layer network (a :math:`k \times k` convolution, a :math:`1 \times 1` one,
    and a :math:`k \times k` one, with "same" padding). A context :math:`c` is appended as extra
    channels: a context of shape ``(K, H, W)`` as it is, any other context flattened to ``K``
    numbers and broadcast over the pixels. Each ``param_shape`` is ``(c_i, H, W)``: the last
    convolution emits :math:`\sum_i c_i` channels, cut in that order. Its weights start scaled
    by ``init_scale`` (zero gives Glow's zero initialisation) and its bias at zero, so a coupling
    layer starts near its zero-parameter map (the identity, for an affine coupling).

    Reference: Kingma and Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions",
    2018.

    Args:
        hidden_channels: channels of the two hidden layers.
        kernel_size: odd size of the first and last convolutions.
        nonlinearity: activation module class.
        init_scale: factor applied to the last layer's initial weights.

    Shapes: ``input`` is ``batch + (C_a, H, W)``, ``context`` is ``context_batch +
    context_shape``; each output is ``broadcast(batch, context_batch) + param_shape``.

    Example:
        >>> import torch
        >>> from flowtorch.parameters.conv_coupling import ConvCoupling
        >>> net = ConvCoupling(hidden_channels=8)(
        ...     param_shapes=[torch.Size([2, 4, 4])] * 2, input_shape=torch.Size([2, 4, 4]),
        ...     context_shape=torch.Size([3]))
        >>> shift, log_scale = net(torch.randn(5, 2, 4, 4), torch.randn(5, 3))
        >>> shift.shape
        torch.Size([5, 2, 4, 4])
    """

    def __init__(
        self,
        param_shapes: Sequence[torch.Size],
        input_shape: torch.Size,
        context_shape: torch.Size | None = None,
        *,
        hidden_channels: int = 64,
        kernel_size: int = 3,
        nonlinearity: Callable[[], nn.Module] = nn.ReLU,
        init_scale: float = 1e-2,
    ) -> None:
        super().__init__(param_shapes, input_shape, context_shape)
        if len(self.input_shape) != 3:
            raise ValueError(
                f"ConvCoupling: the input must be a (C, H, W) image, got shape {tuple(self.input_shape)}"
            )
        c_a, h, w = self.input_shape
        for s in self.param_shapes:
            if len(s) != 3 or s[1:] != (h, w) or s[0] < 1:
                raise ValueError(
                    f"ConvCoupling: parameter shape {tuple(s)} must be (channels, {h}, {w}), with the "
                    "input's height and width"
                )
        if int(hidden_channels) < 1:
            raise ValueError(f"ConvCoupling: hidden_channels must be positive, got {hidden_channels}")
        if int(kernel_size) < 1 or kernel_size % 2 == 0:
            raise ValueError(f"ConvCoupling: kernel_size must be a positive odd integer, got {kernel_size}")
        cs = self.context_shape
        # an image context with the input's height and width is used as channels as it is
        self._image_context = cs is not None and len(cs) == 3 and cs[1:] == (h, w)
        k_c = 0 if cs is None else (cs[0] if self._image_context else cs.numel())
        if c_a + k_c < 1:
            raise ValueError("ConvCoupling: there are no identity channels and no context to read")
        self._context_channels = k_c
        self._sizes = [s[0] for s in self.param_shapes]
        hidden, pad = int(hidden_channels), kernel_size // 2
        self.hidden_channels = hidden
        last = nn.Conv2d(hidden, sum(self._sizes), kernel_size, padding=pad)
        assert last.bias is not None
        with torch.no_grad():
            last.weight.mul_(init_scale)
            last.bias.zero_()
        self.net = nn.Sequential(
            nn.Conv2d(c_a + k_c, hidden, kernel_size, padding=pad),
            nonlinearity(),
            nn.Conv2d(hidden, hidden, 1),
            nonlinearity(),
            last,
        )

    def forward(
        self, input: torch.Tensor | None = None, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, ...]:
        if input is None:
            raise ValueError("ConvCoupling needs the identity channels of the bijector's input")
        image = self.input_shape
        batch = input.shape[: input.dim() - 3]
        h = input
        cs = self.context_shape
        if cs is not None:
            if context is None:
                raise ValueError("ConvCoupling is conditional, but no context was given")
            c_batch = context.shape[: context.dim() - len(cs)]
            batch = broadcast_shapes(batch, c_batch)
            if not self._image_context:
                context = context.reshape(*c_batch, self._context_channels, 1, 1)
            context = context.expand(*batch, self._context_channels, *image[1:])
            h = torch.cat([input.expand(*batch, *image), context], dim=-3)
        out = self.net(h.reshape(-1, *h.shape[-3:]))
        out = out.reshape(*batch, *out.shape[-3:])
        return tuple(out.split(self._sizes, dim=-3))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, hidden_channels={self.hidden_channels}"
