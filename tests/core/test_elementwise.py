"""The elementwise wiring: a bijector that is one transformer applied to every element."""

from __future__ import annotations

import pytest
import torch

from flowtorch.core.elementwise import ElementwiseBijector
from flowtorch.parameters import Tensor
from flowtorch.transformers import AffineTransformer, SplineTransformer


class _Wired(ElementwiseBijector):
    def __init__(
        self, transformer: object = None, *, shape: torch.Size, context_shape: torch.Size | None = None
    ):
        self.transformer = transformer if transformer is not None else AffineTransformer()  # type: ignore[assignment]
        super().__init__(Tensor(), shape=shape, context_shape=context_shape)


@pytest.mark.parametrize(
    "transformer", [AffineTransformer(-1.0, 1.0), SplineTransformer(4)], ids=["affine", "spline"]
)
def test_everything_comes_from_the_transformer(transformer: object) -> None:
    b = _Wired(transformer, shape=torch.Size([3]))
    assert b.param_shapes() == b.transformer.param_shapes(torch.Size([3]))
    with torch.no_grad():
        for p in b.parameters():
            p.normal_()
    x = torch.randn(5, 3, dtype=torch.float64)
    b = b.double()
    params = b._params(x, None)
    y, ladj = b.forward_and_ladj(x)
    ty, tladj = b.transformer.forward(x, params)
    torch.testing.assert_close(y, ty)
    torch.testing.assert_close(ladj, tladj.expand_as(x).sum(-1))
    torch.testing.assert_close(b.inverse(y), x)
    torch.testing.assert_close(b.log_abs_det_jacobian(x, y), ladj)
    assert b.transformer.extra_repr() in repr(b)


def test_the_conditioner_may_read_a_context() -> None:
    b = _Wired(shape=torch.Size([2]), context_shape=torch.Size([4]))
    x, c = torch.randn(6, 2), torch.randn(6, 4)
    torch.testing.assert_close(b.inverse(b.forward(x, c), c), x, atol=1e-5, rtol=1e-5)
