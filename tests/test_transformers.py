"""The transformers: the elementwise maths every wiring applies, checked on their own."""

from __future__ import annotations

import math

import pytest
import torch

import flowtorch.bijectors as bij
from flowtorch.ops import soft_clamp
from flowtorch.transformers import (
    AffineTransformer,
    CircularSplineTransformer,
    SplineTransformer,
    Transformer,
)

F64 = torch.float64
TRANSFORMERS = {
    "affine": lambda: AffineTransformer(-5.0, 3.0),
    "affine[additive]": lambda: AffineTransformer(additive=True),
    "spline[quadratic]": lambda: SplineTransformer(count_bins=5, bound=2.0),
    "spline[linear]": lambda: SplineTransformer(count_bins=4, bound=3.0, order="linear"),
    "circular": lambda: CircularSplineTransformer(count_bins=6, bound=math.pi),
}


def _params(t: Transformer, shape: tuple[int, ...], scale: float = 1.0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    return tuple(scale * torch.randn(*s, generator=g, dtype=F64) for s in t.param_shapes(torch.Size(shape)))


def _values(name: str, shape: tuple[int, ...]) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    if name == "circular":
        return (torch.rand(*shape, generator=g, dtype=F64) * 2 - 1) * (math.pi - 1e-3)
    return 3.0 * torch.randn(*shape, generator=g, dtype=F64)  # past the spline's bound too


@pytest.mark.parametrize("name", TRANSFORMERS)
def test_round_trip_and_log_derivative_against_autograd(name: str) -> None:
    t = TRANSFORMERS[name]()
    params = _params(t, (7, 3))
    x = _values(name, (7, 3)).requires_grad_()
    y, ladj = t.forward(x, params)
    x_back, ladj_back = t.inverse(y, params)
    torch.testing.assert_close(x_back, x)
    torch.testing.assert_close(ladj_back.expand_as(x), ladj.expand_as(x))  # both the forward's
    (dy,) = torch.autograd.grad(y.sum(), x)  # elementwise: the derivative is the gradient of the sum
    torch.testing.assert_close(ladj.expand_as(x), dy.log())
    torch.testing.assert_close(t.log_derivative(x, params).expand_as(x), ladj.expand_as(x))


@pytest.mark.parametrize("name", ["affine", "affine[additive]", "spline[quadratic]"])
def test_all_zero_parameters_give_the_identity(name: str) -> None:
    """(The linear-rational spline and the circle's, whose ends are fixed, are not the identity
    at zero parameters.)"""
    t = TRANSFORMERS[name]()
    x = _values(name, (4, 2))
    zeros = tuple(torch.zeros(4, *s, dtype=F64) for s in t.param_shapes(torch.Size([2])))
    y, ladj = t.forward(x, zeros)
    torch.testing.assert_close(y, x)
    torch.testing.assert_close(ladj.expand_as(x), torch.zeros_like(x))


def test_the_affine_log_scale_is_one_soft_clamp_for_every_affine_layer() -> None:
    """``Affine``, ``AffineAutoregressive``, ``AffineCoupling`` and ``ChannelAffineCoupling`` hold
    the same transformer class, and its log-scale is ``soft_clamp`` into the clip bounds."""
    t = AffineTransformer(-2.0, 1.0)
    raw = torch.linspace(-100.0, 100.0, 11, dtype=F64)
    torch.testing.assert_close(t.log_scale((torch.zeros(11, dtype=F64), raw)), soft_clamp(raw, -2.0, 1.0))
    layers = [
        bij.Affine()(shape=torch.Size([2])),
        bij.AffineAutoregressive()(shape=torch.Size([2])),
        bij.AffineCoupling()(shape=torch.Size([2])),
        bij.ChannelAffineCoupling()(shape=torch.Size([2, 2, 2])),
    ]
    assert all(type(b.transformer) is AffineTransformer for b in layers)
    assert [(b.transformer.log_scale_min_clip, b.transformer.log_scale_max_clip) for b in layers] == [
        (-5.0, 3.0),
        (-5.0, 3.0),
        (-5.0, 5.0),
        (-3.0, 3.0),
    ]


@pytest.mark.parametrize(
    ("low", "high", "match"),
    [
        (1.0, 0.5, r"log_scale_min_clip \(1.0\) must be below log_scale_max_clip \(0.5\)"),
        (0.5, 1.0, r"must be finite and contain 0 \(the identity map\): got \(0.5, 1.0\)"),
        (-math.inf, 1.0, r"must be finite and contain 0"),
    ],
)
def test_bad_clip_bounds_are_named(low: float, high: float, match: str) -> None:
    with pytest.raises(ValueError, match=f"Affine: .*{match}"):
        bij.Affine(log_scale_min_clip=low, log_scale_max_clip=high)(shape=torch.Size([2]))


def test_the_spline_transformer_is_the_one_the_spline_bijectors_apply() -> None:
    for b in (
        bij.Spline(count_bins=3)(shape=torch.Size([2])),
        bij.SplineAutoregressive(count_bins=3)(shape=torch.Size([2])),
        bij.SplineCoupling(count_bins=3)(shape=torch.Size([2])),
    ):
        assert isinstance(b.transformer, SplineTransformer) and b.transformer.count_bins == 3
    assert isinstance(bij.CircularSpline()(shape=torch.Size([2])).transformer, CircularSplineTransformer)


def test_the_base_transformer_names_what_to_write() -> None:
    t = Transformer()
    with pytest.raises(NotImplementedError):
        t.param_shapes(torch.Size([2]))
    with pytest.raises(NotImplementedError):
        t.forward(torch.zeros(2), ())
    with pytest.raises(NotImplementedError):
        t.inverse(torch.zeros(2), ())
    assert t.extra_repr() == ""
