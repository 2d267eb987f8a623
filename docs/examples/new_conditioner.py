"""A new conditioner in one file: a linear autoregressive one (the how-to guide's worked example).

Parameter :math:`k` of dimension :math:`i` is an affine function of the dimensions before it and of
the context :math:`c`:

.. math::
    \\theta_{k,i}(x, c) = b_{k,i} + \\sum_{j < i} W_{k,ij}\\, x_j + (V_k c)_i,

so it can drive any autoregressive bijector (``AffineAutoregressive``, ``SplineAutoregressive``):
a linear MADE without hidden layers. Run it: ``python docs/examples/new_conditioner.py``;
``tests/test_docs.py`` imports it and checks the autoregressive property and a flow built with it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

import flowtorch.bijectors as bij
import flowtorch.distributions as dist
from flowtorch.parameters import Parameters

__all__ = ["LinearAutoregressive"]


class LinearAutoregressive(Parameters):
    r"""Parameters of dim :math:`i` from the dims before it: :math:`b + W_{<i} x + V c`.

    Args:
        init_scale: standard deviation of the initial weights (the biases start at zero).

    Example:
        >>> import torch
        >>> cond = LinearAutoregressive.plan()(param_shapes=[torch.Size([3])], input_shape=torch.Size([3]))
        >>> (loc,) = cond(torch.randn(5, 3))
        >>> loc.shape
        torch.Size([5, 3])
    """

    mask: torch.Tensor  # a buffer (register_buffer below); declared for type checkers

    def __init__(
        self,
        param_shapes: Sequence[torch.Size],
        input_shape: torch.Size,
        context_shape: torch.Size | None = None,
        *,
        init_scale: float = 1e-2,
    ) -> None:
        # The bijector passes param_shapes, input_shape and context_shape when it builds us.
        super().__init__(param_shapes, input_shape, context_shape)
        d = self.input_shape.numel()
        n = len(self.input_shape)
        for s in self.param_shapes:
            if s[:n] != self.input_shape:
                raise ValueError(
                    f"LinearAutoregressive: parameter shape {tuple(s)} must start with the input "
                    f"shape {tuple(self.input_shape)}"
                )
        # values per input dim of each parameter (a spline has several per dim)
        self._per_dim = [max(s[n:].numel(), 1) for s in self.param_shapes]
        rows = d * sum(self._per_dim)
        self.weight = nn.Parameter(torch.randn(rows, d) * init_scale)
        self.bias = nn.Parameter(torch.zeros(rows))
        # row r of parameter block k belongs to dim r // per_dim[k]; it may read dims j < that dim
        dims = torch.cat([torch.arange(d).repeat_interleave(e) for e in self._per_dim])
        self.register_buffer("mask", (torch.arange(d)[None, :] < dims[:, None]).to(torch.float32))
        self.context_net: nn.Linear | None = None
        if self.context_shape is not None:
            self.context_net = nn.Linear(self.context_shape.numel(), rows)
            nn.init.zeros_(self.context_net.weight)  # start where the unconditional one would
            nn.init.zeros_(self.context_net.bias)

    def forward(
        self, input: torch.Tensor | None = None, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, ...]:
        # ``input`` is ``batch + input_shape``, ``context`` is ``context_batch + context_shape``;
        # return one tensor per parameter, shaped ``batch + param_shape`` (batches broadcast).
        assert input is not None, "an autoregressive conditioner reads its bijector's input"
        n = len(self.input_shape)
        batch = input.shape[: input.dim() - n]
        out = nn.functional.linear(input.reshape(*batch, -1), self.weight * self.mask, self.bias)
        if self.context_net is not None and context is not None:
            assert self.context_shape is not None
            cbatch = context.shape[: context.dim() - len(self.context_shape)]
            out = out + self.context_net(context.reshape(*cbatch, -1))
            batch = out.shape[:-1]
        blocks = out.split([self.input_shape.numel() * e for e in self._per_dim], dim=-1)
        return tuple(b.reshape(*batch, *s) for b, s in zip(blocks, self.param_shapes))


def demo(steps: int = 150, seed: int = 0) -> tuple[float, float]:
    """Fits a conditional MAF layer driven by :class:`LinearAutoregressive` to correlated data
    whose mean depends on a context. Returns the negative log-likelihood before and after."""
    torch.manual_seed(seed)
    c = torch.randn(1024, 1)
    x0 = torch.randn(1024, 1)
    data = torch.cat([x0 + c, 0.8 * x0 + 0.3 * torch.randn(1024, 1)], dim=-1)
    base = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(2), torch.ones(2)), 1)
    flow = dist.Flow(base, bij.AffineAutoregressive.plan(LinearAutoregressive.plan()), context_shape=(1,))
    opt = torch.optim.Adam(flow.parameters(), lr=5e-2)
    with torch.no_grad():
        before = -flow.log_prob(data, context=c).mean().item()
    for _ in range(steps):
        opt.zero_grad()
        loss = -flow.log_prob(data, context=c).mean()
        loss.backward()
        opt.step()
    return before, loss.item()


if __name__ == "__main__":
    before, after = demo()
    print(f"negative log-likelihood: {before:.3f} before, {after:.3f} after training")
