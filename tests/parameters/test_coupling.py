"""DenseCoupling: a mask without an identity part, missing inputs, irregular masks, repr."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from flowtorch.parameters.coupling import DenseCoupling

S = torch.Size
F64 = torch.float64


def _build(mask: list[bool], param_shapes: list[tuple[int, ...]], context_shape=None, hidden=(3, 4)):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    net = DenseCoupling(mask=torch.tensor(mask), hidden_dims=hidden)(
        param_shapes=[S(s) for s in param_shapes],
        input_shape=S([len(mask)]),
        context_shape=None if context_shape is None else S(context_shape),
    )
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.7)
    return net.to(F64)


def _mlp(net: DenseCoupling, h: torch.Tensor) -> torch.Tensor:
    """The hidden and output layers, by hand, after the first layer's pre-activation ``h``."""
    h = F.relu(h)
    for layer in net.hidden:
        h = F.relu(F.linear(h, layer.weight, layer.bias))
    return F.linear(h, net.output.weight, net.output.bias)


def test_no_identity_part_and_no_context_is_named() -> None:
    with pytest.raises(ValueError, match="the mask has no identity part and there is no context"):
        _build([False, False], [(2,)])


def test_no_identity_part_reads_only_the_context() -> None:
    net = _build([False, False, False], [(3,), (3, 2)], context_shape=(2, 2))
    assert net.input_layer is None and net.context_layer.bias is not None
    x = torch.randn(5, 3, dtype=F64)
    c = torch.randn(5, 2, 2, dtype=F64)
    first, second = net(x, c)
    out = _mlp(net, F.linear(c.reshape(5, 4), net.context_layer.weight, net.context_layer.bias))
    torch.testing.assert_close(first, out[:, :3])
    torch.testing.assert_close(second, out[:, 3:].reshape(5, 3, 2))
    # the input does not matter at all
    torch.testing.assert_close(net(torch.randn(5, 3, dtype=F64), c)[0], first)


def test_missing_input_or_context_is_named() -> None:
    net = _build([True, False], [(1,)], context_shape=(2,))
    with pytest.raises(ValueError, match="DenseCoupling needs the bijector's input"):
        net(None, torch.zeros(2, dtype=F64))
    with pytest.raises(ValueError, match="DenseCoupling is conditional, but no context was given"):
        net(torch.zeros(2, dtype=F64))


def test_an_irregular_mask_gathers_the_identity_part() -> None:
    net = _build([True, True, False, True], [(1,)], context_shape=(2,))
    assert net._identity_slice is None
    x = torch.randn(6, 4, dtype=F64)
    c = torch.randn(6, 2, dtype=F64)
    (out,) = net(x, c)
    pre = F.linear(x[:, [0, 1, 3]], net.input_layer.weight, net.input_layer.bias)
    pre = pre + F.linear(c, net.context_layer.weight)  # no second bias with an input layer
    torch.testing.assert_close(out, _mlp(net, pre))


def test_extra_repr_names_the_shapes_and_the_widths() -> None:
    net = DenseCoupling(mask=torch.tensor([True, False]), hidden_dims=[5, 6])(
        param_shapes=[S([1])], input_shape=S([2]), context_shape=S([3])
    )
    assert net.extra_repr() == "input_shape=(2,), context_shape=(3,), hidden_dims=(5, 6)"
    assert "hidden_dims=(5, 6)" in repr(net)
