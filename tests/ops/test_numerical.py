"""Tests for :mod:`flowtorch.ops.numerical`: quadrature rules and vectorised monotone root finding;
Python-number limits, an iteration budget that runs out, and expansion budgets.

Stated tolerances: quadrature nodes and weights agree with numpy's Gauss-Legendre to 1e-14 and the
rules are exact (to 1e-13) up to their polynomial degree; both root finders return roots with
residual ``|f(x) - y| <= 1e-12 * (1 + |y|)`` in float64 and ``<= 1e-5 * (1 + |y|)`` in float32 with
their default tolerances.
"""

from __future__ import annotations

import math

import pytest
import torch

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

F64 = torch.float64

# --------------------------------------------------------------------------- quadrature


@pytest.mark.parametrize("n", [1, 2, 3, 8, 33, 64])
def test_gauss_legendre_matches_numpy(n: int) -> None:
    np = pytest.importorskip("numpy")
    nodes, weights = gauss_legendre(n, dtype=F64)
    ref_nodes, ref_weights = np.polynomial.legendre.leggauss(n)
    assert nodes.dtype == F64 and nodes.shape == (n,)
    assert float((nodes - torch.from_numpy(ref_nodes)).abs().max()) < 1e-14
    assert float((weights - torch.from_numpy(ref_weights)).abs().max()) < 1e-14


@pytest.mark.parametrize(
    "rule,n,degree", [("gauss-legendre", 5, 9), ("clenshaw-curtis", 6, 5), ("clenshaw-curtis", 7, 7)]
)
def test_rules_are_exact_up_to_their_degree(rule: str, n: int, degree: int) -> None:
    nodes, weights = quadrature_rule(rule, n, dtype=F64)
    assert bool((nodes[1:] > nodes[:-1]).all())
    for k in range(degree + 1):
        exact = 0.0 if k % 2 else 2.0 / (k + 1)
        assert abs(float((weights * nodes**k).sum()) - exact) < 1e-13, k
    # one degree more is not exact for an even power (CC with odd n integrates t^n exactly by symmetry)
    k = degree + 1 if (degree + 1) % 2 == 0 else degree + 2
    assert abs(float((weights * nodes**k).sum()) - 2.0 / (k + 1)) > 1e-6


def test_clenshaw_curtis_endpoints_and_dtype() -> None:
    nodes, weights = clenshaw_curtis(9, dtype=torch.float32)
    assert nodes.dtype == torch.float32
    assert nodes[0] == -1 and nodes[-1] == 1
    assert abs(float(weights.sum()) - 2.0) < 1e-6


@pytest.mark.parametrize("rule", ["gauss-legendre", "clenshaw-curtis"])
def test_quadrature_of_smooth_functions_elementwise(rule: str) -> None:
    a = torch.tensor([0.0, -1.0, 2.0, 0.5], dtype=F64)
    b = torch.tensor([1.0, 2.0, -1.0, 0.5], dtype=F64)  # reversed and empty intervals too
    got = quadrature(torch.exp, a, b, n=24, rule=rule)
    torch.testing.assert_close(got, b.exp() - a.exp(), atol=1e-13, rtol=1e-13)
    # per-element parameters broadcast against the nodes: int_0^b cos(w t) dt = sin(w b) / w
    w = torch.tensor([0.5, 1.0, 2.0, 3.0], dtype=F64)
    got = quadrature(lambda t: torch.cos(w[:, None] * t), 0.0, b, n=32, rule=rule)
    torch.testing.assert_close(got, torch.sin(w * b) / w, atol=1e-12, rtol=1e-12)


def test_quadrature_converges_spectrally() -> None:
    errors = [
        abs(
            float(quadrature(lambda t: 1.0 / (1.0 + t * t), torch.tensor(0.0, dtype=F64), 3.0, n=n))
            - math.atan(3.0)
        )
        for n in (4, 8, 16, 32)
    ]
    assert errors[-1] < 1e-10
    assert all(e2 < e1 / 10 for e1, e2 in zip(errors[:2], errors[1:3]))


def test_quadrature_gradients() -> None:
    b = torch.tensor([0.3, 1.7], dtype=F64, requires_grad=True)
    s = torch.tensor(2.0, dtype=F64, requires_grad=True)
    quadrature(lambda t: torch.sin(s * t), 0.0, b, n=20).sum().backward()
    # d/db int_0^b sin(st) dt = sin(sb); d/ds = int_0^b t cos(st) dt = b sin(sb)/s + (cos(sb) - 1)/s^2
    bd = b.detach()
    torch.testing.assert_close(b.grad, torch.sin(2.0 * bd), atol=1e-12, rtol=1e-12)
    expected = (bd * torch.sin(2 * bd) / 2 + (torch.cos(2 * bd) - 1) / 4).sum()
    assert s.grad is not None
    torch.testing.assert_close(s.grad, expected, atol=1e-12, rtol=1e-12)


def test_quadrature_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown rule"):
        quadrature_rule("simpson", 5)
    with pytest.raises(ValueError, match="number of nodes"):
        gauss_legendre(0)
    with pytest.raises(ValueError, match="number of nodes"):
        clenshaw_curtis(1)
    with pytest.raises(TypeError, match="floating point"):
        quadrature(torch.exp, torch.tensor(0), torch.tensor(1))


# --------------------------------------------------------------------------- root finding


def cubic(x: torch.Tensor) -> torch.Tensor:
    return x**3 + x


def cubic_and_slope(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x**3 + x, 3 * x**2 + 1


def test_find_bracket_expands_geometrically() -> None:
    y = torch.tensor([-1e5, -2.0, 0.0, 0.3, 7.0, 1e6], dtype=F64)
    lo, hi = find_bracket(torch.sinh, y)
    assert bool((torch.sinh(lo) <= y).all() and (torch.sinh(hi) >= y).all() and (lo < hi).all())
    # per-element starting brackets, and a map whose parameters broadcast
    scale = torch.tensor([[1.0], [3.0]], dtype=F64)
    lo, hi = find_bracket(lambda x: scale * x, y, y - 1, y + 1)
    assert lo.shape == (2, 6)
    assert bool((scale * lo <= y).all() and (scale * hi >= y).all())


def test_find_bracket_fails_clearly_for_bounded_maps() -> None:
    with pytest.raises(ValueError, match="outside the range"):
        find_bracket(torch.tanh, torch.tensor([0.5, 2.0]), max_expand=8)
    # non-strict: NaN for what cannot be bracketed, the rest solved
    y = torch.tensor([0.5, 2.0, -0.3], dtype=F64)
    lo, hi = find_bracket(torch.tanh, y, max_expand=8, strict=False)
    assert torch.isnan(lo[1]) and torch.isnan(hi[1]) and bool((lo[[0, 2]] < hi[[0, 2]]).all())
    for x in (
        bisect_monotone(torch.tanh, y, max_expand=8, strict=False),
        newton_monotone(lambda v: (torch.tanh(v), 1 - torch.tanh(v) ** 2), y, max_expand=8, strict=False),
    ):
        assert torch.isnan(x[1])
        torch.testing.assert_close(x[[0, 2]], torch.atanh(y[[0, 2]]), atol=1e-12, rtol=1e-12)
    with pytest.raises(ValueError, match="larger than"):
        find_bracket(torch.tanh, torch.tensor([0.5]), 1.0, -1.0)


@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=["f32", "f64"])
@pytest.mark.parametrize("method", ["bisection", "newton"])
def test_solvers_reach_the_stated_tolerance(method: str, dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(0)
    y = torch.cat([torch.randn(200, generator=gen) * 10, torch.tensor([0.0, -1e4, 1e4])]).to(dtype)
    x = newton_monotone(cubic_and_slope, y) if method == "newton" else bisect_monotone(cubic, y)
    assert x.dtype == dtype and x.shape == y.shape and not x.requires_grad
    tol = 1e-12 if dtype == F64 else 1e-5
    residual = (cubic(x.double()) - y.double()).abs() / (1 + y.double().abs())
    assert float(residual.max()) < tol


def test_newton_needs_fewer_evaluations_than_bisection() -> None:
    y = torch.linspace(-50, 50, 101, dtype=F64)  # y = +-2 has its root +-1 on the first bracket's ends
    counts = {"newton": 0, "bisection": 0}

    def counted(name: str, fn):  # type: ignore[no-untyped-def]
        def wrapped(x: torch.Tensor):  # type: ignore[no-untyped-def]
            counts[name] += 1
            return fn(x)

        return wrapped

    x1 = newton_monotone(counted("newton", cubic_and_slope), y, initial=y.clone())
    x2 = bisect_monotone(counted("bisection", cubic), y)
    torch.testing.assert_close(x1, x2, atol=1e-13, rtol=1e-13)
    assert counts["newton"] < counts["bisection"] / 2, counts


def test_newton_safeguard_handles_divergent_newton_iterations() -> None:
    # Newton on the cube root overshoots (x -> -2x); the bisection safeguard must take over.
    def cbrt_and_slope(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = x.sign() * x.abs().pow(1 / 3)
        return c, 1 / (3 * c * c)

    y = torch.tensor([-0.9, -0.2, 0.0, 0.5, 2.0], dtype=F64)
    x = newton_monotone(cbrt_and_slope, y, initial=torch.full_like(y, 0.7))
    torch.testing.assert_close(x, y**3, atol=1e-12, rtol=1e-12)


def test_max_iter_and_bad_arguments() -> None:
    y = torch.tensor([0.3, 5.0], dtype=F64)
    x = bisect_monotone(cubic, y, max_iter=1)  # one halving: a coarse answer, no error
    assert x.shape == y.shape
    with pytest.raises(ValueError, match="max_iter"):
        newton_monotone(cubic_and_slope, y, max_iter=0)
    with pytest.raises(ValueError, match="atol and rtol"):
        bisect_monotone(cubic, y, atol=0.0, rtol=0.0)
    with pytest.raises(TypeError, match="floating-point"):
        bisect_monotone(cubic, torch.tensor([1, 2]))


def test_attach_root_gradient_gives_the_implicit_derivatives() -> None:
    # f(x; theta) = x^3 + theta x, root x(y, theta): dx/dy = 1 / f', dx/dtheta = -x / f'
    theta = torch.tensor([0.5, 1.0, 2.0], dtype=F64, requires_grad=True)
    y = torch.tensor([0.7, -3.0, 10.0], dtype=F64, requires_grad=True)
    root = newton_monotone(lambda x: (x**3 + theta * x, 3 * x**2 + theta), y)
    x = attach_root_gradient(root, root**3 + theta * root, 3 * root**2 + theta, y)
    torch.testing.assert_close(x.detach(), root, atol=1e-14, rtol=1e-14)
    x.sum().backward()
    slope = 3 * root**2 + theta.detach()
    torch.testing.assert_close(y.grad, 1 / slope, atol=1e-13, rtol=1e-13)
    torch.testing.assert_close(theta.grad, -root / slope, atol=1e-13, rtol=1e-13)


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
