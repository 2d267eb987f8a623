"""MADE: a dense autoregressive conditioner (Germain et al. 2015)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
from torch import nn

from flowtorch.core.validation import positive_ints
from flowtorch.nn.made import MaskedLinear, fixed_masked_weights, made_degrees, made_masks
from flowtorch.parameters.base import Parameters

__all__ = ["DenseAutoregressive"]


class DenseAutoregressive(Parameters):
    r"""Masked dense network whose outputs for dimension :math:`i` depend only on :math:`x_{<i}`.

    With inputs flattened to :math:`D` dims in the order ``permutation``, the parameters of
    dimension ``permutation[j]`` depend only on the dims ``permutation[:j]`` (and the context,
    which feeds the first hidden layer unmasked). Each parameter is one contiguous block of the
    output layer, so the bijector's elementwise maths reads contiguous memory.

    Reference: Germain et al., "MADE: Masked Autoencoder for Distribution Estimation", 2015.

    Args:
        hidden_dims: sizes of the hidden layers; each must be at least ``D - 1`` so that every
            ordering constraint can be represented. Default: ``(max(256, D),) * 2``.
        nonlinearity: activation module class.
        permutation: order of the input dims, a permutation of ``0..D-1``; ``None`` draws a random
            one (stored in the ``state_dict``), ``"identity"`` and ``"reverse"`` are shortcuts.
        skip_connections: add a masked linear map from the input straight to the output.

    Example:
        >>> import torch
        >>> import flowtorch.parameters as params
        >>> made = params.DenseAutoregressive(hidden_dims=(8,), permutation="identity")(
        ...     param_shapes=[torch.Size([3]), torch.Size([3])], input_shape=torch.Size([3]))
        >>> loc, log_scale = made(torch.randn(5, 3))
        >>> loc.shape
        torch.Size([5, 3])
    """

    autoregressive = True
    permutation: torch.Tensor

    def __init__(
        self,
        param_shapes: Sequence[torch.Size],
        input_shape: torch.Size,
        context_shape: torch.Size | None = None,
        *,
        hidden_dims: Sequence[int] | None = None,
        nonlinearity: Callable[[], nn.Module] = nn.ReLU,
        permutation: torch.Tensor | Sequence[int] | str | None = None,
        skip_connections: bool = False,
    ) -> None:
        super().__init__(param_shapes, input_shape, context_shape)
        n_in = len(self.input_shape)
        d = max(self.input_shape.numel(), 1)
        for s in self.param_shapes:
            if s[:n_in] != self.input_shape:
                raise ValueError(
                    f"DenseAutoregressive: parameter shape {tuple(s)} must start with the input "
                    f"shape {tuple(self.input_shape)}"
                )
        hidden = (
            positive_ints(hidden_dims, "DenseAutoregressive: hidden_dims")
            if hidden_dims is not None
            else (max(256, d),) * 2
        )
        for h in hidden:
            if h < d - 1:
                raise ValueError(
                    f"DenseAutoregressive: hidden layer of size {h} is too small for an input of "
                    f"{d} dims; each hidden layer needs at least {d - 1} units (D - 1)"
                )
        self.hidden_dims = hidden
        self.register_buffer("permutation", _permutation(permutation, d))
        degrees_in = torch.empty(d, dtype=torch.long)
        degrees_in[self.permutation] = torch.arange(1, d + 1)
        self._extra = [max(s[n_in:].numel(), 1) for s in self.param_shapes]
        self._sizes = [d * e for e in self._extra]
        # A parameter of the input's (flat) shape is its chunk of the output as is; others are
        # viewed to their shape.
        self._shaped = any(s != (d,) for s in self.param_shapes)
        out_degrees = torch.cat([degrees_in.repeat_interleave(e) for e in self._extra])

        degrees = made_degrees(degrees_in, hidden)
        masks = made_masks(degrees, out_degrees)
        sizes = [d, *hidden]
        self.hidden = nn.ModuleList(
            MaskedLinear(i, o, m) for i, o, m in zip(sizes[:-1], sizes[1:], masks[:-1])
        )
        self.output = MaskedLinear(hidden[-1], sum(self._sizes), masks[-1])
        with torch.no_grad():
            self.output.weight.mul_(1e-2)
            self.output.bias.zero_()
        self.skip = (
            MaskedLinear(
                d, sum(self._sizes), (out_degrees[:, None] > degrees_in[None, :]).float(), bias=False
            )
            if skip_connections
            else None
        )
        self.context_layer: nn.Linear | None = None
        self.context_output: nn.Linear | None = None
        if self.context_shape is not None:
            n_context = self.context_shape.numel()
            self.context_layer = nn.Linear(n_context, hidden[0], bias=False)
            # Unmasked, straight to the outputs: the first dim in the order has no hidden unit of
            # a lower degree, so without it its parameters could not depend on the context.
            self.context_output = nn.Linear(n_context, sum(self._sizes), bias=False)
            with torch.no_grad():
                self.context_output.weight.mul_(1e-2)
        self.activation = nonlinearity()

    def repeated(self) -> contextlib.AbstractContextManager[None]:
        """Each masked layer's :math:`W \\odot M` computed once for the calls in the scope."""
        layers = [*self.hidden, self.output] + ([self.skip] if self.skip is not None else [])
        return fixed_masked_weights(layers)  # type: ignore[arg-type]

    def forward(
        self, input: torch.Tensor | None = None, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, ...]:
        if input is None:
            raise ValueError("DenseAutoregressive needs the bijector's input")
        n_in = len(self.input_shape)
        x = input if n_in == 1 else input.reshape(*input.shape[: input.dim() - n_in], -1)
        hidden = iter(self.hidden)  # (slicing a ModuleList would build a new module per call)
        h = next(hidden)(x)
        c: torch.Tensor | None = None
        if self.context_layer is not None and context is not None:
            assert self.context_shape is not None
            nc = len(self.context_shape)
            c = context if nc == 1 else context.reshape(*context.shape[: context.dim() - nc], -1)
            h = h + self.context_layer(c)
        activation = self.activation
        h = activation(h)
        for layer in hidden:
            h = activation(layer(h))
        out = self.output(h)
        if c is not None and self.context_output is not None:
            out = out + self.context_output(c)
        if self.skip is not None:
            out = out + self.skip(x)
        chunks: tuple[torch.Tensor, ...] = out.split_with_sizes(self._sizes, -1)
        if not self._shaped:
            return chunks
        batch = out.shape[:-1]
        return tuple(chunk.view(batch + s) for chunk, s in zip(chunks, self.param_shapes))


def _permutation(permutation: torch.Tensor | Sequence[int] | str | None, d: int) -> torch.Tensor:
    if permutation is None:
        return torch.randperm(d)
    if isinstance(permutation, str):
        if permutation == "identity":
            return torch.arange(d)
        if permutation == "reverse":
            return torch.arange(d - 1, -1, -1)
        raise ValueError(
            f"DenseAutoregressive: unknown permutation {permutation!r}; use 'identity' or 'reverse'"
        )
    perm = torch.as_tensor(permutation, dtype=torch.long).flatten()
    if perm.numel() != d or not torch.equal(perm.sort().values, torch.arange(d)):
        raise ValueError(
            f"DenseAutoregressive: permutation {perm.tolist()} is not a permutation of 0..{d - 1}"
        )
    return perm
