"""Tests for the pure spline functions in :mod:`flowtorch.ops.spline`, bad arguments (a negative
minimal derivative, no bins) included."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from flowtorch.ops import (
    circular_rational_quadratic_spline,
    identity_derivative,
    linear_rational_spline,
    rational_quadratic_spline,
)
from flowtorch.ops import spline as spline_mod

MIN = 1e-3  # the default min_bin_width / min_bin_height / min_derivative
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
X = torch.zeros(2)  # an input and empty knot parameters, for the argument checks
W = torch.zeros(2, 3)
HYP = settings(max_examples=25, deadline=None, derandomize=True)


@dataclasses.dataclass(frozen=True)
class Kind:
    name: str
    fn: Callable[..., tuple[torch.Tensor, torch.Tensor]]
    bound: float
    extra_derivative: int  # number of derivative entries is K - 1 + extra
    lambdas: bool = False
    tails: bool = True

    def params(
        self,
        batch: tuple[int, ...],
        bins: int,
        dtype: torch.dtype,
        seed: int = 0,
        scale: float = 1.0,
    ) -> tuple[torch.Tensor, ...]:
        gen = torch.Generator().manual_seed(seed)
        sizes = [bins, bins, bins - 1 + self.extra_derivative] + ([bins] if self.lambdas else [])
        return tuple((2 * torch.rand(*batch, n, generator=gen, dtype=dtype) - 1) * scale for n in sizes)

    def __call__(
        self, x: torch.Tensor, params: tuple[torch.Tensor, ...], inverse: bool = False, **kw: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.fn(x, *params, bound=self.bound, inverse=inverse, **kw)


RQS = Kind("rqs", rational_quadratic_spline, 3.0, 0)
LRS = Kind("lrs", linear_rational_spline, 3.0, 0, lambdas=True)
CIRC = Kind("circular", circular_rational_quadratic_spline, math.pi, 1, tails=False)
KINDS = [RQS, LRS, CIRC]
kinds = pytest.mark.parametrize("kind", KINDS, ids=[k.name for k in KINDS])
dtypes = pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
dtype_st = st.sampled_from([torch.float32, torch.float64])
batch_st = st.lists(st.integers(1, 3), min_size=0, max_size=2).map(tuple)


def _lead(t: torch.Tensor, batch: tuple[int, ...]) -> torch.Tensor:
    """Broadcast a 1-D tensor of points to shape ``(N,) + batch``."""
    return t.reshape(-1, *([1] * len(batch))).expand(-1, *batch)


def special_points(kind: Kind, params: tuple[torch.Tensor, ...], batch: tuple[int, ...]) -> torch.Tensor:
    """Grid incl. exactly +-bound, every x- and y-knot, LRS splits and tails: ``(N,) + batch``."""
    w, h = params[0], params[1]
    dtype, bound = w.dtype, kind.bound
    xk = spline_mod._knots(w, MIN, bound)
    yk = spline_mod._knots(h, MIN, bound)
    pts = [
        _lead(torch.linspace(-bound, bound, 41, dtype=dtype), batch),
        xk.movedim(-1, 0),
        yk.movedim(-1, 0),
    ]
    if kind.lambdas:
        lam = 0.025 + 0.95 * torch.sigmoid(params[3])
        pts.append((xk[..., :-1] + lam * (xk[..., 1:] - xk[..., :-1])).movedim(-1, 0))
    tails = torch.tensor([-3.0, -1.5, -1.0 - 1e-3, 1.0 + 1e-3, 1.5, 3.0], dtype=dtype) * bound
    pts.append(_lead(tails, batch))
    return torch.cat(pts)


# ---------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------


def _assert_within(actual: torch.Tensor, expected: torch.Tensor, atol: torch.Tensor) -> None:
    err = (actual - expected).abs()
    worst = (err / atol).argmax()
    assert (err <= atol).all(), (
        f"error {err.flatten()[worst]} > {atol.flatten()[worst]} at {expected.flatten()[worst]}"
    )


def _check_round_trip(kind: Kind, params: tuple[torch.Tensor, ...], x: torch.Tensor) -> None:
    """Round trips to TOL, scaled pointwise by the local conditioning where the slope is far from 1."""
    tol = TOL[x.dtype]
    # x -> y -> x: the inverse is backward stable, so the error in x is the
    # rounding error in y divided by the local slope dy/dx = exp(lad).
    y, lad = kind(x, params)
    x2, _ = kind(y, params, inverse=True)
    _assert_within(x2, x.expand_as(x2), tol * (1 + torch.exp(-lad)))
    # y -> x -> y: the error in y is the slope dy/dx = exp(-lad_inv) times the rounding of x.
    x3, lad3 = kind(x, params, inverse=True)
    y3, _ = kind(x3, params)
    _assert_within(y3, x.expand_as(y3), tol * (1 + torch.exp(-lad3)))


@kinds
@HYP
@given(dtype=dtype_st, batch=batch_st, bins=st.integers(1, 10), seed=st.integers(0, 2**31 - 1))
def test_round_trip_well_conditioned(
    kind: Kind, dtype: torch.dtype, batch: tuple[int, ...], bins: int, seed: int
) -> None:
    """Moderate parameters (|u| <= 0.5): round trip to 1e-5 (f32) / 1e-10 (f64) at knots, +-bound, tails."""
    params = kind.params(batch, bins, dtype, seed, scale=0.5)
    x = special_points(kind, params, batch)
    tol = TOL[dtype]
    y, _ = kind(x, params)
    x2, _ = kind(y, params, inverse=True)
    torch.testing.assert_close(x2, x, rtol=0, atol=tol)
    x3, _ = kind(x, params, inverse=True)
    y3, _ = kind(x3, params)
    torch.testing.assert_close(y3, x, rtol=0, atol=tol)


@kinds
@HYP
@given(
    dtype=dtype_st,
    batch=batch_st,
    bins=st.integers(1, 12),
    seed=st.integers(0, 2**31 - 1),
    scale=st.floats(0.0, 4.0),
)
def test_round_trip_any_parameters(
    kind: Kind, dtype: torch.dtype, batch: tuple[int, ...], bins: int, seed: int, scale: float
) -> None:
    """Wide parameters: round trip within the tolerance scaled by the local conditioning."""
    params = kind.params(batch, bins, dtype, seed, scale)
    _check_round_trip(kind, params, special_points(kind, params, batch))


@kinds
@dtypes
def test_endpoints_are_exact(kind: Kind, dtype: torch.dtype) -> None:
    params = kind.params((4,), 6, dtype, seed=3, scale=3.0)
    b = kind.bound
    ends = torch.tensor([[-b], [b]], dtype=dtype)
    for inverse in (False, True):
        out, _ = kind(ends, params, inverse=inverse)
        assert torch.equal(out, ends.expand(2, 4))


# ---------------------------------------------------------------------------
# Log-determinants
# ---------------------------------------------------------------------------


def _autograd_logabsdet(
    kind: Kind, x: torch.Tensor, params: tuple[torch.Tensor, ...], inverse: bool
) -> torch.Tensor:
    x = x.detach().clone().requires_grad_(True)
    out, _ = kind(x, params, inverse=inverse)
    (grad,) = torch.autograd.grad(out.sum(), x)
    return grad.abs().log()


@kinds
@dtypes
@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
@pytest.mark.parametrize("seed", range(4))
def test_logabsdet_matches_autograd(kind: Kind, dtype: torch.dtype, inverse: bool, seed: int) -> None:
    batch = (3, 2)
    params = kind.params(batch, 7, dtype, seed, scale=1.5)
    x = special_points(kind, params, batch)
    x = x.expand(x.shape[0], *batch).contiguous()  # one output per input element
    _, lad = kind(x, params, inverse=inverse)
    expected = _autograd_logabsdet(kind, x, params, inverse)
    tol = 1e-4 if dtype == torch.float32 else 1e-9
    torch.testing.assert_close(lad, expected, rtol=tol, atol=tol)


@kinds
@dtypes
@pytest.mark.parametrize("seed", range(4))
def test_inverse_logabsdet_is_minus_forward(kind: Kind, dtype: torch.dtype, seed: int) -> None:
    batch = (5,)
    params = kind.params(batch, 8, dtype, seed, scale=1.5)
    x = special_points(kind, params, batch)
    y, lad = kind(x, params)
    _, lad_inv = kind(y, params, inverse=True)
    tol = 1e-4 if dtype == torch.float32 else 1e-9
    torch.testing.assert_close(lad_inv, -lad, rtol=tol, atol=tol)


@kinds
@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_derivative_is_continuous(kind: Kind, inverse: bool) -> None:
    """C1: the log-derivative agrees on both sides of every knot (and split / tail join)."""
    dtype = torch.float64
    params = kind.params((3,), 6, dtype, seed=11, scale=2.0)
    knots = spline_mod._knots(params[1 if inverse else 0], MIN, kind.bound)
    if kind.lambdas and not inverse:
        lam = 0.025 + 0.95 * torch.sigmoid(params[3])
        knots = torch.cat([knots, knots[..., :-1] + lam * (knots[..., 1:] - knots[..., :-1])], -1)
    at = knots.movedim(-1, 0)

    def jump(delta: float) -> torch.Tensor:
        _, below = kind(at - delta, params, inverse=inverse)
        _, above = kind(at + delta, params, inverse=inverse)
        if not kind.tails:  # on the circle, -B - delta is the point B - delta
            _, below_wrapped = kind(at - delta + 2 * kind.bound, params, inverse=inverse)
            torch.testing.assert_close(below, below_wrapped, rtol=0, atol=1e-6)
        return (above - below).abs()

    # A smooth log-derivative changes by O(delta) across the knot, a jump would not shrink.
    coarse, fine = jump(1e-6), jump(1e-9)
    assert (fine <= 0.01 * coarse + 1e-7).all()


# ---------------------------------------------------------------------------
# Identity initialisation
# ---------------------------------------------------------------------------


@kinds
@dtypes
@pytest.mark.parametrize("min_derivative", [1e-3, 0.0, 0.5])
def test_identity_initialisation(kind: Kind, dtype: torch.dtype, min_derivative: float) -> None:
    bins, batch = 5, (2, 3)
    params = [torch.zeros(*batch, n, dtype=dtype) for n in (bins, bins)]
    params.append(
        torch.full(
            (*batch, bins - 1 + kind.extra_derivative), identity_derivative(min_derivative), dtype=dtype
        )
    )
    if kind.lambdas:
        params.append(torch.randn(*batch, bins, dtype=dtype))  # any split is still the identity
    x = special_points(kind, tuple(params), batch)
    atol = 1e-6 if dtype == torch.float32 else 1e-12
    for inverse in (False, True):
        out, lad = kind(x, tuple(params), inverse=inverse, min_derivative=min_derivative)
        torch.testing.assert_close(out, x.expand_as(out), rtol=0, atol=atol)
        torch.testing.assert_close(lad, torch.zeros_like(lad), rtol=0, atol=atol)


def test_identity_derivative_value() -> None:
    for m in (0.0, 1e-3, 0.5, 0.9):
        assert m + F.softplus(
            torch.tensor(identity_derivative(m), dtype=torch.float64)
        ).item() == pytest.approx(1.0, abs=1e-15)
    with pytest.raises(ValueError):
        identity_derivative(1.0)


# ---------------------------------------------------------------------------
# Monotonicity, range, gradients
# ---------------------------------------------------------------------------


@kinds
@dtypes
@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_monotone_and_in_range(kind: Kind, dtype: torch.dtype, inverse: bool) -> None:
    batch = (8,)
    params = kind.params(batch, 9, dtype, seed=5, scale=4.0)  # steep, stressed splines
    b = kind.bound
    grid = torch.linspace(-1.5 * b, 1.5 * b, 3001, dtype=dtype)
    x = torch.cat([_lead(grid, batch), special_points(kind, params, batch)]).sort(dim=0).values
    out, _ = kind(x, params, inverse=inverse)
    # Non-decreasing up to rounding (points one ulp apart are included) ...
    assert (out.diff(dim=0) >= -8 * torch.finfo(dtype).eps * b).all()
    # ... and strictly increasing on a separated grid (float32 may round tiny steps to 0).
    out_grid, _ = kind(_lead(grid, batch), params, inverse=inverse)
    assert (out_grid.diff(dim=0) > 0).all() if dtype == torch.float64 else (out_grid.diff(dim=0) >= 0).all()
    inside = (x >= -b) & (x <= b)
    assert (out[inside].abs() <= b).all()
    if kind.tails:
        assert torch.equal(out[~inside], x[~inside])


@kinds
@dtypes
@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_gradients_finite_at_knots_and_tails(kind: Kind, dtype: torch.dtype, inverse: bool) -> None:
    batch = (4,)
    params = tuple(p.requires_grad_(True) for p in kind.params(batch, 6, dtype, seed=2, scale=2.0))
    x = special_points(kind, params, batch).detach().requires_grad_(True)
    out, lad = kind(x, params, inverse=inverse)
    grads = torch.autograd.grad(out.sum() + lad.sum(), (x, *params))
    for g in grads:
        assert torch.isfinite(g).all()
    assert all(g.abs().sum() > 0 for g in grads[1:])  # every parameter gets a gradient


@pytest.mark.parametrize("kind", [RQS, LRS], ids=["rqs", "lrs"])
@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_tails_are_identity_with_zero_parameter_gradient(kind: Kind, inverse: bool) -> None:
    params = tuple(p.requires_grad_(True) for p in kind.params((3,), 5, torch.float32, seed=4, scale=2.0))
    x = torch.tensor([-1e30, -10.0, -3.0001, 3.0001, 7.0, 1e30, float("inf"), -float("inf")])[:, None]
    x = x.expand(-1, 3).clone().requires_grad_(True)
    out, lad = kind(x, params, inverse=inverse)
    assert torch.equal(out, x) and torch.equal(lad, torch.zeros_like(lad))
    grads = torch.autograd.grad(out.sum() + lad.sum(), (x, *params))
    assert torch.equal(grads[0], torch.ones_like(x))
    for g in grads[1:]:
        assert torch.equal(g, torch.zeros_like(g))


@kinds
def test_gradcheck(kind: Kind) -> None:
    params = kind.params((2,), 4, torch.float64, seed=9, scale=1.0)
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(5, 2, generator=gen, dtype=torch.float64) * 1.8 - 0.9) * kind.bound
    leaves = tuple(t.clone().requires_grad_(True) for t in (x, *params))
    for inverse in (False, True):
        fn = functools.partial(lambda x, *p, inverse: kind(x, p, inverse=inverse), inverse=inverse)
        assert torch.autograd.gradcheck(fn, leaves)


# ---------------------------------------------------------------------------
# Shapes and argument checks
# ---------------------------------------------------------------------------


@kinds
def test_broadcasting(kind: Kind) -> None:
    dtype = torch.float64
    params = kind.params((3,), 5, dtype, seed=1)
    x = torch.randn(4, 3, dtype=dtype)
    expanded = tuple(p.expand(4, 3, -1) for p in params)
    for inverse in (False, True):
        ref = kind(x, expanded, inverse=inverse)
        got = kind(x, params, inverse=inverse)  # parameters broadcast over a leading input dim
        assert got[0].shape == (4, 3)
        torch.testing.assert_close(got, ref, rtol=0, atol=0)
        got = kind(x[0], expanded, inverse=inverse)  # inputs broadcast over leading param dims
        assert got[0].shape == (4, 3)
        torch.testing.assert_close(got, kind(x[0].expand(4, 3), expanded, inverse=inverse), rtol=0, atol=0)
    scalar = kind(torch.tensor(0.3, dtype=dtype), tuple(p[0] for p in params))
    assert scalar[0].shape == () and scalar[1].shape == ()
    assert scalar[0].dtype == dtype


@kinds
def test_argument_checks(kind: Kind) -> None:
    params = kind.params((), 4, torch.float32)
    x = torch.zeros(3)
    with pytest.raises(ValueError, match="unnormalized_derivatives"):
        kind(x, (params[0], params[1], params[2][..., :-1], *params[3:]))
    with pytest.raises(ValueError, match="unnormalized_heights"):
        kind(x, (params[0], params[1][..., :-1], *params[2:]))
    with pytest.raises(ValueError, match="minimal bin size"):
        kind(x, params, min_bin_width=0.3)
    with pytest.raises(ValueError, match="bound"):
        kind.fn(x, *params, bound=0.0)


# ---------------------------------------------------------------------------
# Circular spline specifics
# ---------------------------------------------------------------------------


@dtypes
def test_circular_boundary_derivative_is_shared(dtype: torch.dtype) -> None:
    params = CIRC.params((4,), 6, dtype, seed=8, scale=2.0)
    b = CIRC.bound
    _, lad = CIRC(torch.tensor([[-b], [b]], dtype=dtype), params)
    expected = torch.log(MIN + F.softplus(params[2][..., -1]))
    torch.testing.assert_close(lad, expected.expand(2, 4))


@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_circular_periodic_lift(inverse: bool) -> None:
    dtype = torch.float64
    params = CIRC.params((3,), 7, dtype, seed=6, scale=2.0)
    x = _lead(torch.linspace(-math.pi, math.pi, 50, dtype=dtype), (3,))
    y, lad = CIRC(x, params, inverse=inverse)
    for turns in (-2, -1, 1, 3):
        shift = 2 * math.pi * turns
        y2, lad2 = CIRC(x + shift, params, inverse=inverse)
        torch.testing.assert_close(y2, y + shift, rtol=0, atol=1e-12)
        torch.testing.assert_close(lad2, lad, rtol=0, atol=1e-9)


# ---------------------------------------------------------------------------
# Independent peers: Pyro and zuko
# ---------------------------------------------------------------------------


def _constrained(params: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Our normalised widths, heights (fractions summing to 1) and interior derivatives."""
    w, h, d = params[:3]
    k = w.shape[-1]
    return (
        MIN + (1 - MIN * k) * torch.softmax(w, -1),
        MIN + (1 - MIN * k) * torch.softmax(h, -1),
        MIN + F.softplus(d),
    )


def _peer_points(kind: Kind, params: tuple[torch.Tensor, ...], batch: tuple[int, ...]) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    b = kind.bound
    rand = (torch.rand(200, *batch, generator=gen, dtype=torch.float64) * 2.4 - 1.2) * b
    return torch.cat([rand, special_points(kind, params, batch)])


@pytest.mark.parametrize("kind", [RQS, LRS], ids=["rqs", "lrs"])
@pytest.mark.parametrize("seed", range(3))
def test_matches_pyro(kind: Kind, seed: int) -> None:
    """Pyro's ``_monotonic_rational_spline`` on the same knots.

    Mapping: Pyro takes normalised widths/heights and *softplus-ed*
    derivatives and applies its own ``min_*`` mixing, then pads the boundary
    derivatives with ``1 - min_derivative``. Passing our normalised values
    with Pyro's ``min_bin_width = min_bin_height = min_derivative = 0``
    makes its knots ours and its boundary derivatives exactly 1. For the
    linear order, Pyro maps ``lambdas`` by ``0.95 * l + 0.025``, so we pass
    ``sigmoid(u)``. Pyro's inverse ``logabsdet`` is also that of the inverse map.
    """
    spline = pytest.importorskip("pyro.distributions.transforms.spline")
    batch = (4,)
    params = kind.params(batch, 6, torch.float64, seed, scale=1.5)
    widths, heights, derivs = _constrained(params)
    lambdas = torch.sigmoid(params[3]) if kind.lambdas else None
    x = _peer_points(kind, params, batch)
    for inverse in (False, True):
        ours = kind(x, params, inverse=inverse)
        theirs = spline._monotonic_rational_spline(
            x,
            widths,
            heights,
            derivs,
            lambdas,
            inverse=inverse,
            bound=kind.bound,
            min_bin_width=0.0,
            min_bin_height=0.0,
            min_derivative=0.0,
        )
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("seed", range(3))
def test_rational_quadratic_matches_zuko(seed: int) -> None:
    """zuko's ``MonotonicRQSTransform`` on the same knots.

    Mapping: zuko soft-clips its unconstrained inputs,
    ``v -> v / (1 + |2 v / log(slope)|)`` for widths/heights (then softmax,
    no minimum) and ``v -> v / (1 + |v / log(slope)|)`` for derivatives
    (then exp), with boundary derivatives exp(0) = 1. We want
    ``softmax(clip(v)) = our normalised widths``, so take
    ``clip(v) = log(widths) - mean`` and invert the clip,
    ``v = c / (1 - 2|c| / L)`` with ``L = -log(slope)``; likewise
    ``v = g / (1 - |g| / L)`` with ``g = log(derivatives)``. A tiny
    ``slope = 1e-30`` keeps the clip far from its asymptote.
    """
    transforms = pytest.importorskip("zuko.transforms")
    batch = (4,)
    params = RQS.params(batch, 6, torch.float64, seed, scale=1.5)
    widths, heights, derivs = _constrained(params)
    slope = 1e-30
    big_l = -math.log(slope)

    def unclip_bins(p: torch.Tensor) -> torch.Tensor:
        c = p.log() - p.log().mean(-1, keepdim=True)
        return c / (1 - 2 * c.abs() / big_l)

    def unclip_derivs(p: torch.Tensor) -> torch.Tensor:
        g = p.log()
        return g / (1 - g.abs() / big_l)

    t = transforms.MonotonicRQSTransform(
        unclip_bins(widths), unclip_bins(heights), unclip_derivs(derivs), bound=RQS.bound, slope=slope
    )
    x = _peer_points(RQS, params, batch)
    y, lad = RQS(x, params)
    y_z, lad_z = t.call_and_ladj(x)
    torch.testing.assert_close((y, lad), (y_z, lad_z), rtol=1e-10, atol=1e-10)
    x_inv, lad_inv = RQS(x, params, inverse=True)
    x_z = t.inv(x)
    torch.testing.assert_close(x_inv, x_z, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(lad_inv, -t.call_and_ladj(x_z)[1], rtol=1e-9, atol=1e-9)


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
