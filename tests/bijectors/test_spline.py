"""Spline and SplineAutoregressive: bad arguments and repr."""

from __future__ import annotations

import pytest
import torch

import flowtorch.bijectors as bij

S = torch.Size


@pytest.mark.parametrize("cls", [bij.Spline, bij.SplineAutoregressive])
@pytest.mark.parametrize("order", ["cubic", "Linear", None])
def test_an_unknown_order_is_named(cls: type, order: object) -> None:
    with pytest.raises(
        ValueError, match=f"{cls.__name__}: order must be 'linear' or 'quadratic', got {order!r}"
    ):
        cls(order=order)(shape=S([2]))


def test_an_autoregressive_spline_needs_an_event_dim() -> None:
    with pytest.raises(ValueError, match="SplineAutoregressive needs an event of at least one dim"):
        bij.SplineAutoregressive()(shape=S([]))
    assert bij.Spline()(shape=S([])).shape == ()  # the elementwise spline takes a scalar event


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (
            lambda: bij.Spline(count_bins=4, bound=2)(shape=S([3])),
            "count_bins=4, bound=2.0, order='quadratic'",
        ),
        (lambda: bij.Spline(order="linear")(shape=S([3])), "count_bins=8, bound=3.0, order='linear'"),
        (
            lambda: bij.SplineAutoregressive(count_bins=5)(shape=S([3]), context_shape=S([2])),
            "count_bins=5, bound=3.0, order='quadratic'",
        ),
    ],
)
def test_extra_repr_names_the_hyperparameters(make: object, expected: str) -> None:
    b = make()  # type: ignore[operator]
    context = "" if b.context_shape is None else ", context_shape=(2,)"
    assert b.extra_repr() == f"shape=(3,){context}, {expected}"
    k = b.count_bins
    linear = (S([3, k]),) if b.order == "linear" else ()
    assert b.param_shapes() == (S([3, k]), S([3, k]), S([3, k - 1]), *linear)
