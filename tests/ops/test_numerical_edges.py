"""``flowtorch.ops.numerical``: Python-number limits, an iteration budget that runs out, and a
negative expansion budget."""

from __future__ import annotations

import math

import pytest
import torch

from flowtorch.ops.numerical import bisect_monotone, find_bracket, newton_monotone, quadrature

F64 = torch.float64


def test_quadrature_with_python_number_limits_uses_the_default_dtype() -> None:
    result = quadrature(torch.exp, 0.0, 1.0, n=8)
    assert result.dtype == torch.get_default_dtype() and result.shape == ()
    assert abs(float(result) - (math.e - 1.0)) < 1e-6
    # one tensor limit sets the dtype
    result64 = quadrature(torch.exp, 0.0, torch.tensor(1.0, dtype=F64), n=16)
    assert result64.dtype == F64
    assert abs(float(result64) - (math.e - 1.0)) < 1e-14


def test_newton_stops_after_max_iter_with_the_iterate_so_far() -> None:
    # f(x) = x^3 + x = 0.5 on the bracket [-1, 1]: the start is the midpoint 0, where f' = 1, so
    # the one Newton step allowed lands on 0.5, short of the root 0.4238...
    def f(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x**3 + x, 3 * x**2 + 1

    target = torch.tensor([0.5], dtype=F64)
    x = newton_monotone(f, target, max_iter=1)
    torch.testing.assert_close(x, torch.tensor([0.5], dtype=F64))
    root = newton_monotone(f, target)
    assert abs(float(root**3 + root) - 0.5) < 1e-14 and abs(float(x - root)) > 0.05


def test_a_negative_expansion_budget_is_named() -> None:
    with pytest.raises(ValueError, match="max_expand"):
        find_bracket(torch.sinh, torch.tensor([0.5, 30.0]), max_expand=-1)


def test_a_zero_expansion_budget_brackets_only_inside_the_start() -> None:
    lo, hi = find_bracket(torch.sinh, torch.tensor([0.5, -1.0]), max_expand=0)
    torch.testing.assert_close(lo, torch.tensor([-1.0, -1.0]))
    torch.testing.assert_close(hi, torch.tensor([1.0, 1.0]))
    x = bisect_monotone(torch.sinh, torch.tensor([0.5, 30.0]), max_expand=0, strict=False)
    assert abs(float(x[0]) - math.asinh(0.5)) < 1e-6 and math.isnan(float(x[1]))
