"""Free parameters, optionally an affine (or MLP) function of a context."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from flowtorch.parameters.base import Parameters

__all__ = ["Tensor"]


class Tensor(Parameters):
    r"""Parameters that do not depend on the bijector's input.

    Without a context, each parameter is a free tensor of its ``param_shape``, initialised near
    zero. With a context :math:`c`, the parameters are :math:`\theta_0 + g(c)`, where :math:`g`
    is a linear map (or an MLP with ``hidden_dims``) whose last layer starts at zero, so the
    conditional bijector starts where the unconditional one would.

    References: Ha et al., "HyperNetworks", 2017 (a network that outputs another map's
    parameters, here from the context); Kingma & Dhariwal, "Glow: Generative Flow with
    Invertible 1x1 Convolutions", 2018 (zero initialisation of the last layer).

    Args:
        hidden_dims: hidden layer sizes of :math:`g` (context only).
        init_scale: standard deviation of the free parameters' initial values.

    Example:
        >>> import torch
        >>> import flowtorch.parameters as params
        >>> p = params.Tensor()(param_shapes=[torch.Size([2])], input_shape=torch.Size([2]))
        >>> [t.shape for t in p(None)]
        [torch.Size([2])]
    """

    def __init__(
        self,
        param_shapes: Sequence[torch.Size],
        input_shape: torch.Size,
        context_shape: torch.Size | None = None,
        *,
        hidden_dims: Sequence[int] = (),
        init_scale: float = 1e-3,
    ) -> None:
        super().__init__(param_shapes, input_shape, context_shape)
        self.params = nn.ParameterList([nn.Parameter(torch.randn(s) * init_scale) for s in self.param_shapes])
        self._sizes = [s.numel() for s in self.param_shapes]
        self.net: nn.Module | None = None
        if self.context_shape is not None:
            layers: list[nn.Module] = []
            width = self.context_shape.numel()
            for h in hidden_dims:
                layers += [nn.Linear(width, h), nn.ReLU()]
                width = h
            last = nn.Linear(width, sum(self._sizes))
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
            layers.append(last)
            self.net = nn.Sequential(*layers)

    def forward(
        self, input: torch.Tensor | None = None, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, ...]:
        if self.net is None or context is None:
            return tuple(self.params)
        assert self.context_shape is not None
        batch = context.shape[: context.dim() - len(self.context_shape)]
        out = self.net(context.reshape(*batch, -1))
        chunks = out.split(self._sizes, dim=-1)
        return tuple(p + c.reshape(batch + s) for p, c, s in zip(self.params, chunks, self.param_shapes))
