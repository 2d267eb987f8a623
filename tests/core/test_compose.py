"""Compose and Invert: an inverse built for the output shape of a shape-changing plan, and a built
inner bijector of another shape."""

from __future__ import annotations

import pytest
import torch

import flowtorch.bijectors as bij


def test_invert_of_a_shape_changing_plan_is_built_for_its_output_shape() -> None:
    b = bij.Invert(bij.Squeeze())(shape=torch.Size([4, 2, 2]))
    assert b.shape == (4, 2, 2) and b.out_shape == (1, 4, 4) and b.bijector.shape == (1, 4, 4)
    x = torch.randn(5, 4, 2, 2)
    y = b.forward(x)
    assert y.shape == (5, 1, 4, 4)
    torch.testing.assert_close(b.inverse(y), x)
    assert "Squeeze" in repr(b) and b.extra_repr() == ""


def test_invert_of_a_built_bijector_for_another_shape() -> None:
    with pytest.raises(ValueError, match=r"Invert: the inner bijector maps \(3,\) to \(3,\), so its inverse"):
        bij.Invert(bij.Exp()(shape=torch.Size([3])), shape=torch.Size([2]))
