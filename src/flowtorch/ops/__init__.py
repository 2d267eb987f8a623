"""Pure tensor operations used by flowtorch's bijectors."""

from flowtorch.ops.spline import (
    circular_rational_quadratic_spline,
    identity_derivative,
    linear_rational_spline,
    rational_quadratic_spline,
)

__all__ = [
    "circular_rational_quadratic_spline",
    "identity_derivative",
    "linear_rational_spline",
    "rational_quadratic_spline",
]
