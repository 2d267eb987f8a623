"""CircularSpline is a diffeomorphism of the circle."""

from __future__ import annotations

import math

import torch

import flowtorch.bijectors as bij


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
