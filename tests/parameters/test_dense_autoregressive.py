"""MADE: autoregressive structure, a context that reaches every output, wrong shapes, a missing
input, and skip connections in an explicit order."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import flowtorch.parameters as params

S = torch.Size
F64 = torch.float64


@pytest.mark.parametrize("permutation", ["identity", "reverse", None])
def test_outputs_depend_only_on_earlier_inputs_and_on_the_context(permutation: str | None) -> None:
    torch.manual_seed(0)
    d = 5
    # tanh, not relu: an inactive relu could hide a connection the masks allow
    made = params.DenseAutoregressive(
        hidden_dims=(16, 16), permutation=permutation, nonlinearity=torch.nn.Tanh
    )(
        param_shapes=[torch.Size([d]), torch.Size([d, 3])],
        input_shape=torch.Size([d]),
        context_shape=torch.Size([2]),
    )
    with torch.no_grad():
        for p in made.parameters():
            p.normal_()
    x, c = torch.randn(d, dtype=torch.float32), torch.randn(2)
    order = made.permutation.tolist()
    rank = {dim: i for i, dim in enumerate(order)}
    for k in range(2):

        def out_k(x_: torch.Tensor, c_: torch.Tensor, k: int = k) -> torch.Tensor:
            return made(x_, c_)[k].reshape(d, -1)

        jx, jc = torch.autograd.functional.jacobian(out_k, (x, c))
        for i in range(d):
            for j in range(d):
                depends = bool(jx[i, :, j].abs().sum() > 0)
                assert depends == (rank[j] < rank[i]), (i, j)
            # every dim's parameters, the first in the order included, depend on the context
            assert jc[i].abs().sum() > 0, f"dim {i} ignores the context"


def test_hidden_layer_too_small() -> None:
    with pytest.raises(ValueError, match="at least 4 units"):
        params.DenseAutoregressive(hidden_dims=(3,))(
            param_shapes=[torch.Size([5])], input_shape=torch.Size([5])
        )


def test_bad_permutation() -> None:
    with pytest.raises(ValueError, match="not a permutation"):
        params.DenseAutoregressive(permutation=[0, 0, 1])(
            param_shapes=[torch.Size([3])], input_shape=torch.Size([3])
        )


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
