"""CircularSpline is a diffeomorphism of the circle; bad hyperparameters, a period other than
2 pi, and repr."""

from __future__ import annotations

import math

import pytest
import torch

import flowtorch.bijectors as bij

S = torch.Size
F64 = torch.float64


def make() -> bij.CircularSpline:
    torch.manual_seed(0)
    b = bij.CircularSpline(count_bins=5)(shape=torch.Size([3])).double()
    with torch.no_grad():
        for p in b.parameters():
            p.normal_(0.0, 1.0)
    return b


def test_fixes_the_ends_and_is_periodic() -> None:
    b = make()
    ends = torch.tensor([[-math.pi] * 3, [math.pi] * 3], dtype=torch.float64)
    torch.testing.assert_close(b.forward(ends), ends)
    x = torch.rand(10, 3, dtype=torch.float64) * 2 * math.pi - math.pi
    turn = 2 * math.pi
    torch.testing.assert_close(b.forward(x + turn), b.forward(x) + turn)


def test_derivative_matches_at_both_ends() -> None:
    b = make()
    eps = 1e-7
    left = torch.full((1, 3), -math.pi + eps, dtype=torch.float64)
    right = torch.full((1, 3), math.pi - eps, dtype=torch.float64)
    _, l_left = b.forward_and_ladj(left)
    _, l_right = b.forward_and_ladj(right)
    torch.testing.assert_close(l_left, l_right, atol=1e-5, rtol=1e-5)


def test_density_on_the_circle_integrates_to_one() -> None:
    b = bij.CircularSpline(count_bins=4)(shape=torch.Size([1])).double()
    with torch.no_grad():
        for p in b.parameters():
            p.normal_(0.0, 1.0)
    grid = torch.linspace(-math.pi, math.pi, 100001, dtype=torch.float64)[:, None]
    # pushforward of the uniform density on the circle: 1 / (2 pi) / |f'(f^-1(y))|
    _, ladj = b.inverse_and_ladj(grid)
    density = torch.exp(-ladj) / (2 * math.pi)
    assert abs(torch.trapezoid(density.detach(), grid[:, 0]).item() - 1.0) < 1e-6


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"count_bins": 1}, "count_bins must be an integer of at least 2, got 1"),
        ({"count_bins": 0}, "count_bins must be an integer of at least 2, got 0"),
        ({"bound": 0.0}, "bound must be positive, got 0.0"),
        ({"bound": -1.0}, "bound must be positive, got -1.0"),
        ({"bound": float("nan")}, "bound must be positive, got nan"),
    ],
)
def test_bad_hyperparameters_are_named(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=f"CircularSpline: {match}"):
        bij.CircularSpline(**kwargs)(shape=S([2]))


def test_a_non_integer_count_bins_is_rejected_like_spline() -> None:
    with pytest.raises(ValueError, match="count_bins must be"):
        bij.Spline(count_bins=2.5)(shape=S([2]))
    with pytest.raises(ValueError, match="count_bins must be"):
        bij.CircularSpline(count_bins=2.5)(shape=S([2]))


def _circle(bound: float) -> bij.CircularSpline:
    torch.manual_seed(0)
    b = bij.CircularSpline(count_bins=3, bound=bound)(shape=S([2])).to(F64)
    with torch.no_grad():
        for p in b.parameters():
            p.normal_(0.0, 1.0)
    return b


def test_a_custom_bound_sets_the_circle_and_the_period() -> None:
    bound = 0.75
    b = _circle(bound)
    assert b.bound == bound
    assert b.domain.event_dim == b.codomain.event_dim == 1
    inside = torch.tensor([[-0.7, 0.7]], dtype=F64)
    outside = torch.tensor([[-0.8, 0.0]], dtype=F64)
    assert bool(b.domain.check(inside)) and not bool(b.domain.check(outside))
    assert bool(b.codomain.check(inside)) and not bool(b.codomain.check(outside))
    ends = torch.tensor([[-bound, bound]], dtype=F64)
    torch.testing.assert_close(b.forward(ends), ends)
    x = (torch.rand(20, 2, dtype=F64) * 2 - 1) * bound
    y = b.forward(x)
    assert bool((y.abs() <= bound).all())
    torch.testing.assert_close(b.forward(x + 2 * bound), y + 2 * bound)  # period 2 * bound
    torch.testing.assert_close(b.inverse(y), x)
    # log|det J| against the autograd derivative of the elementwise map
    xg = x.clone().requires_grad_()
    (grad,) = torch.autograd.grad(b.forward(xg).sum(), xg)
    torch.testing.assert_close(b.log_abs_det_jacobian(x, y), grad.abs().log().sum(-1))


def test_extra_repr_names_the_hyperparameters() -> None:
    b = bij.CircularSpline(count_bins=4, bound=2)(shape=S([3]))
    assert b.extra_repr() == "shape=(3,), count_bins=4, bound=2.0"
    assert "count_bins=4, bound=2.0" in repr(b)
