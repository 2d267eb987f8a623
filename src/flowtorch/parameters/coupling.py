"""A dense conditioner for coupling layers: parameters of one part from the other part."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from flowtorch.core.shapes import as_slice, take_last
from flowtorch.core.validation import positive_ints
from flowtorch.parameters.base import Parameters

__all__ = ["DenseCoupling"]


class DenseCoupling(Parameters):
    r"""Dense network from the identity part of the input (and the context) to the parameters of
    the transformed part.

    A coupling layer splits its event :math:`x` with a boolean ``mask`` into the identity part
    :math:`x_a` (``mask`` true, copied to the output) and the transformed part :math:`x_b`. This
    conditioner computes

    .. math::
        \theta = W_L\,\sigma(\cdots\sigma(W_1 x_a + V c + b_1)\cdots) + b_L,

    an MLP of :math:`x_a` and the (flattened) context :math:`c`, and emits parameters for the
    :math:`n_b` transformed elements only: each ``param_shape`` must be ``(n_b, *extra)``, with
    the transformed elements in the row-major order of the event (``mask.flatten()``). No outputs
    exist for the identity part. The last layer starts small (weights scaled by ``init_scale``,
    bias zero), so a coupling layer starts near its zero-parameter map.

    The bijector builds it and passes ``mask`` (a boolean tensor of the event shape); a plan
    ``DenseCoupling(hidden_dims=...)`` leaves it out.

    Reference: Dinh et al., "Density estimation using Real NVP", 2017.

    Args:
        mask: boolean tensor of ``input_shape``; true marks the identity (conditioning) part.
        hidden_dims: sizes of the hidden layers (at least one).
        nonlinearity: activation module class.
        init_scale: factor applied to the last layer's initial weights.

    Shapes: ``input`` is ``batch + input_shape``, ``context`` is ``context_batch +
    context_shape``; each output is ``broadcast(batch, context_batch) + param_shape``.

    Example:
        >>> import torch
        >>> import flowtorch.parameters as params
        >>> mask = torch.tensor([True, False, True])
        >>> net = params.DenseCoupling(hidden_dims=(8,))(
        ...     param_shapes=[torch.Size([1]), torch.Size([1])], input_shape=torch.Size([3]), mask=mask)
        >>> shift, log_scale = net(torch.randn(5, 3))
        >>> shift.shape
        torch.Size([5, 1])
    """

    identity_index: torch.Tensor

    def __init__(
        self,
        param_shapes: Sequence[torch.Size],
        input_shape: torch.Size,
        context_shape: torch.Size | None = None,
        *,
        mask: torch.Tensor | None = None,
        hidden_dims: Sequence[int] = (64, 64),
        nonlinearity: Callable[[], nn.Module] = nn.ReLU,
        init_scale: float = 1e-2,
    ) -> None:
        super().__init__(param_shapes, input_shape, context_shape)
        if mask is None:
            raise ValueError(
                "DenseCoupling needs the coupling mask; it is built by a coupling bijector "
                "(e.g. flowtorch.bijectors.AffineCoupling), which passes mask="
            )
        mask = torch.as_tensor(mask)
        if mask.dtype != torch.bool or mask.shape != self.input_shape:
            raise ValueError(
                f"DenseCoupling: mask must be a boolean tensor of the input shape "
                f"{tuple(self.input_shape)}, got {mask.dtype} of shape {tuple(mask.shape)}"
            )
        flat = mask.flatten()
        n_a = int(flat.sum())
        n_b = flat.numel() - n_a
        for s in self.param_shapes:
            if len(s) < 1 or s[0] != n_b:
                raise ValueError(
                    f"DenseCoupling: parameter shape {tuple(s)} must start with the number of "
                    f"transformed elements ({n_b})"
                )
        hidden = self.hidden_dims = positive_ints(hidden_dims, "DenseCoupling: hidden_dims")
        self.register_buffer("identity_index", flat.nonzero().squeeze(-1), persistent=False)
        # Regular masks ("alternate", "half") select a strided slice: a view, not a gather.
        self._identity_slice = as_slice(self.identity_index.tolist())
        self._sizes = [s.numel() for s in self.param_shapes]
        self.input_layer = nn.Linear(n_a, hidden[0]) if n_a > 0 else None
        self.context_layer = (
            nn.Linear(self.context_shape.numel(), hidden[0], bias=n_a == 0)
            if self.context_shape is not None
            else None
        )
        if self.input_layer is None and self.context_layer is None:
            raise ValueError("DenseCoupling: the mask has no identity part and there is no context")
        self.hidden = nn.ModuleList(nn.Linear(i, o) for i, o in zip(hidden[:-1], hidden[1:]))
        self.output = nn.Linear(hidden[-1], sum(self._sizes))
        with torch.no_grad():
            self.output.weight.mul_(init_scale)
            self.output.bias.zero_()
        self.activation = nonlinearity()

    def forward(
        self, input: torch.Tensor | None = None, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, ...]:
        if input is None:
            raise ValueError("DenseCoupling needs the bijector's input")
        n_in = len(self.input_shape)
        batch = input.shape[: input.dim() - n_in]
        h: torch.Tensor | None = None
        if self.input_layer is not None:
            flat = input if n_in == 1 else input.reshape(*batch, -1)
            identity = take_last(flat, self._identity_slice, self.identity_index)
            h = self.input_layer(identity)
        if self.context_layer is not None:
            if context is None:
                raise ValueError("DenseCoupling is conditional, but no context was given")
            assert self.context_shape is not None
            c = context.reshape(*context.shape[: context.dim() - len(self.context_shape)], -1)
            hc = self.context_layer(c)
            h = hc if h is None else h + hc
        assert h is not None
        h = self.activation(h)
        for layer in self.hidden:
            h = self.activation(layer(h))
        out = self.output(h)
        out_batch = out.shape[:-1]
        return tuple(
            chunk if len(s) == 1 else chunk.reshape(*out_batch, *s)
            for chunk, s in zip(out.split(self._sizes, dim=-1), self.param_shapes)
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, hidden_dims={self.hidden_dims}"
