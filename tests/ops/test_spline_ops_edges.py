"""Spline ops: a negative minimal derivative, and splines without bins."""

from __future__ import annotations

import pytest
import torch

from flowtorch.ops.spline import (
    circular_rational_quadratic_spline,
    linear_rational_spline,
    rational_quadratic_spline,
)

X = torch.zeros(2)
W = torch.zeros(2, 3)


@pytest.mark.parametrize(
    ("spline", "params"),
    [
        (rational_quadratic_spline, (W, W, torch.zeros(2, 2))),
        (linear_rational_spline, (W, W, torch.zeros(2, 2), W)),
        (circular_rational_quadratic_spline, (W, W, W)),
    ],
    ids=["quadratic", "linear", "circular"],
)
def test_a_negative_min_derivative_is_named(spline, params) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=r"min_derivative must be >= 0, got -0\.5"):
        spline(X, *params, min_derivative=-0.5)
    y, logdet = spline(X, *params, min_derivative=0.0)  # zero is allowed
    assert y.shape == logdet.shape == (2,)


def test_a_circular_spline_without_bins_is_named() -> None:
    empty = torch.zeros(2, 0)
    with pytest.raises(ValueError, match="splines need at least one bin"):
        circular_rational_quadratic_spline(X, empty, empty, empty)


@pytest.mark.parametrize("linear", [False, True], ids=["quadratic", "linear"])
def test_a_spline_without_bins_is_named(linear: bool) -> None:
    empty = torch.zeros(2, 0)
    with pytest.raises(ValueError, match="at least one bin"):
        if linear:
            linear_rational_spline(X, empty, empty, empty, empty)
        else:
            rational_quadratic_spline(X, empty, empty, empty)
