"""Coupling layers: a conditioner class instead of a plan, and a context batch wider than the input."""

from __future__ import annotations

import pytest
import torch

from flowtorch.bijectors.coupling import AffineCoupling, SplineCoupling
from flowtorch.parameters.coupling import DenseCoupling
from tests.case import check_a_context_batch_wider_than_the_input, perturb

S = torch.Size
F64 = torch.float64


def test_a_conditioner_class_is_built_with_the_layers_mask() -> None:
    b = AffineCoupling(DenseCoupling, mask="half")(shape=S([4]))
    assert isinstance(b.params_fn, DenseCoupling)
    assert b.params_fn.identity_index.tolist() == [0, 1]
    assert b.params_fn.param_shapes == (S([2]), S([2]))
    b = b.to(F64)
    perturb(b, by_fan_in=False)
    x = torch.randn(5, 4, dtype=F64)
    y = b.forward(x)
    torch.testing.assert_close(y[:, :2], x[:, :2])
    torch.testing.assert_close(b.inverse(y), x)


@pytest.mark.parametrize("make", [AffineCoupling, SplineCoupling], ids=["affine", "spline"])
@pytest.mark.parametrize(
    "mask", ["alternate", torch.tensor([True, False, False, True])], ids=["regular", "irregular"]
)
def test_a_context_batch_wider_than_the_input(make: type, mask: object) -> None:
    b = make(mask=mask)(shape=S([4]), context_shape=S([2])).to(F64)
    perturb(b, by_fan_in=False)
    x = torch.randn(4, dtype=F64)  # one event
    c = torch.randn(3, 2, dtype=F64)  # three contexts
    y, ladj = check_a_context_batch_wider_than_the_input(b, x, c)
    identity = b.mask
    torch.testing.assert_close(y[:, identity], x[identity].expand(3, -1))
    x_back, ladj_back = b.inverse_and_ladj(y, c)
    torch.testing.assert_close(x_back, x.expand(3, 4))
    torch.testing.assert_close(ladj_back, ladj)
