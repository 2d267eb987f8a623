"""The conditioner (hypernetwork) base class."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch

from flowtorch.core.lazy import LazyModule

__all__ = ["Parameters"]


class Parameters(LazyModule):
    r"""Maps a bijector's input (and context) to the bijector's unconstrained parameters.

    A conditioner is built by its bijector, which passes ``param_shapes`` (the shape of each
    parameter for one event), ``input_shape`` (the bijector's event shape) and
    ``context_shape``; called without ``param_shapes``, the class returns a plan. It emits
    unconstrained numbers; the bijector constrains them.

    ``forward(input, context)`` returns one tensor per parameter, of shape
    ``batch + param_shape`` where ``batch`` broadcasts the batch dims of ``input`` and
    ``context`` (a parameter that does not depend on either may omit them):

    .. math:: \theta = g_\phi(x_{\text{read}}, c).

    Args:
        param_shapes: the shape of each parameter for one event.
        input_shape: the event shape of ``input`` (what the bijector passes to the conditioner).
        context_shape: the event shape of the context, or ``None``.

    Reference: the hypernetworks of Ha et al., "HyperNetworks", 2017, as used by MADE-based
    flows (Papamakarios et al., "Masked Autoregressive Flow for Density Estimation", 2017).

    Example:
        >>> import torch
        >>> from flowtorch.parameters import Parameters
        >>> class Zeros(Parameters):
        ...     def forward(self, input=None, context=None):
        ...         return tuple(torch.zeros(s) for s in self.param_shapes)
        >>> cond = Zeros()(param_shapes=[torch.Size([2])], input_shape=torch.Size([2]))
        >>> cond(torch.randn(3, 2))
        (tensor([0., 0.]),)
    """

    _plan_key = "param_shapes"

    def __init__(
        self,
        param_shapes: Sequence[torch.Size],
        input_shape: torch.Size,
        context_shape: torch.Size | None = None,
    ) -> None:
        super().__init__()
        self.param_shapes = tuple(torch.Size(s) for s in param_shapes)
        self.input_shape = torch.Size(input_shape)
        self.context_shape = None if context_shape is None else torch.Size(context_shape)

    def forward(
        self, input: torch.Tensor | None = None, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def repeated(self) -> contextlib.AbstractContextManager[None]:
        """A scope of many calls with the same weights, such as the ``D`` passes of a sequential
        autoregressive map: inside it, a conditioner may compute what depends only on its weights
        once (a MADE's masked weights). The default does nothing."""
        return contextlib.nullcontext()

    def extra_repr(self) -> str:
        s = f"input_shape={tuple(self.input_shape)}"
        if self.context_shape is not None:
            s += f", context_shape={tuple(self.context_shape)}"
        return s
