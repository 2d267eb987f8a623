"""Pure tensor operations used by flowtorch's bijectors: splines, quadrature, root finding, ODEs,
the soft clamp of affine log-scales."""

from flowtorch.ops.clamp import soft_clamp
from flowtorch.ops.numerical import (
    attach_root_gradient,
    bisect_monotone,
    clenshaw_curtis,
    find_bracket,
    gauss_legendre,
    newton_monotone,
    quadrature,
    quadrature_rule,
)
from flowtorch.ops.ode import dopri5, odeint, odeint_adjoint, rk4
from flowtorch.ops.spline import (
    circular_rational_quadratic_spline,
    identity_derivative,
    linear_rational_spline,
    rational_quadratic_spline,
    rational_quadratic_spline_deferred,
)

__all__ = [
    "attach_root_gradient",
    "bisect_monotone",
    "circular_rational_quadratic_spline",
    "clenshaw_curtis",
    "dopri5",
    "find_bracket",
    "gauss_legendre",
    "identity_derivative",
    "linear_rational_spline",
    "newton_monotone",
    "odeint",
    "odeint_adjoint",
    "quadrature",
    "quadrature_rule",
    "rational_quadratic_spline",
    "rational_quadratic_spline_deferred",
    "rk4",
    "soft_clamp",
]
