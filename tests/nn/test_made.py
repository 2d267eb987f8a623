"""MADE and its masked layer: wrong shapes, a missing input, skip connections, an explicit order,
and the abstract conditioner."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import flowtorch.parameters as params
from flowtorch.nn import MaskedLinear

S = torch.Size
F64 = torch.float64


def test_a_mask_of_the_wrong_shape_is_named() -> None:
    with pytest.raises(ValueError, match=r"MaskedLinear: mask has shape \(3, 2\), expected \(2, 3\)"):
        MaskedLinear(3, 2, torch.ones(3, 2))


def test_a_parameter_shape_not_starting_with_the_input_shape_is_named() -> None:
    with pytest.raises(ValueError, match=r"parameter shape \(4, 2\) must start with the input shape \(3,\)"):
        params.DenseAutoregressive(hidden_dims=(4,))(param_shapes=[S([4, 2])], input_shape=S([3]))


def test_a_missing_input_is_named() -> None:
    made = params.DenseAutoregressive(hidden_dims=(4,))(param_shapes=[S([3])], input_shape=S([3]))
    with pytest.raises(ValueError, match="DenseAutoregressive needs the bijector's input"):
        made(None)


def test_skip_connections_in_an_explicit_order() -> None:
    order = [2, 0, 1]  # dim 2 first, then 0, then 1
    torch.manual_seed(0)
    made = params.DenseAutoregressive(hidden_dims=(4,), permutation=order, skip_connections=True)(
        param_shapes=[S([3])], input_shape=S([3])
    ).to(F64)
    assert made.permutation.tolist() == order
    with torch.no_grad():  # only the skip connection is left
        made.output.weight.zero_()
        made.output.bias.zero_()
        made.skip.weight.normal_()
    rank = {dim: i for i, dim in enumerate(order)}
    allowed = torch.tensor([[float(rank[j] < rank[i]) for j in range(3)] for i in range(3)], dtype=F64)
    x = torch.randn(5, 3, dtype=F64)
    (out,) = made(x)
    torch.testing.assert_close(out, F.linear(x, made.skip.weight * allowed))
    assert bool((out[:, 2] == 0).all())  # the first in the order sees no input


def test_the_abstract_conditioner_has_no_forward() -> None:
    class Unfinished(params.Parameters):
        pass

    cond = Unfinished()(param_shapes=[S([2])], input_shape=S([2]))
    assert cond.extra_repr() == "input_shape=(2,)"
    with pytest.raises(NotImplementedError):
        cond(torch.zeros(2))
