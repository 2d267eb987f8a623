"""The conditioner (hypernetwork) base class."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from flowtorch.lazy import LazyModule

__all__ = ["Parameters"]


class Parameters(LazyModule):
    """Maps a bijector's input (and context) to the bijector's unconstrained parameters.

    A conditioner is built by its bijector, which passes ``param_shapes`` (the shape of each
    parameter for one event), ``input_shape`` (the bijector's event shape) and
    ``context_shape``; called without ``param_shapes``, the class returns a plan. It emits
    unconstrained numbers; the bijector constrains them.

    ``forward(input, context)`` returns one tensor per parameter, of shape
    ``batch + param_shape`` where ``batch`` broadcasts the batch dims of ``input`` and
    ``context`` (a parameter that does not depend on either may omit them).
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

    def extra_repr(self) -> str:
        s = f"input_shape={tuple(self.input_shape)}"
        if self.context_shape is not None:
            s += f", context_shape={tuple(self.context_shape)}"
        return s
