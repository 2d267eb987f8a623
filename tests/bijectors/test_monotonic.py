"""Monotone transformers (SOS polynomial, Bernstein, UMNN): what the generic suite cannot see.

Stated tolerances: the SOS polynomial's analytic integral equals a quadrature of its slope to
1e-12; Bernstein is the identity at zero parameters and C1 at the bounds; UMNN's quadrature
(32 Gauss-Legendre nodes) is within 1e-6 of a 256-node reference on standard-normal inputs, and
its log-det (log of the integrand) within 1e-5 of the log-derivative of the map actually computed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from flowtorch.bijectors.monotonic import UMNN, Bernstein, SOSPolynomial
from flowtorch.core.lazy import Plan
from flowtorch.ops.numerical import quadrature
from flowtorch.parameters import DenseAutoregressive, Parameters
from tests.case import perturb

S = torch.Size

F64 = torch.float64
GEN = torch.Generator().manual_seed(0)


def value_and_slope(
    b: torch.nn.Module, y: torch.Tensor, p: tuple[torch.Tensor, ...]
) -> tuple[torch.Tensor, ...]:
    y = y.detach().requires_grad_()
    value, log_slope = b.transformer.transform(y, p)
    (grad,) = torch.autograd.grad(value.sum(), y)
    return value.detach(), log_slope.detach(), grad


# --------------------------------------------------------------------------- SOS


def test_sos_analytic_integral_and_slope() -> None:
    b = SOSPolynomial(count=3, degree=3)(shape=(2,)).double()
    a = torch.randn(40, 2, 3, 4, dtype=F64, generator=GEN) * 0.7
    beta = torch.randn(40, 2, dtype=F64, generator=GEN)
    y = torch.randn(40, 2, dtype=F64, generator=GEN) * 2
    value, log_slope, grad = value_and_slope(b, y, (a, beta))
    torch.testing.assert_close(log_slope, grad.log(), atol=1e-12, rtol=1e-12)

    def slope(t: torch.Tensor) -> torch.Tensor:  # t: (40, 2, n)
        coeffs = torch.cat([a[..., :1] + 1, a[..., 1:]], -1)  # (40, 2, K, r + 1)
        q = (coeffs[..., None, :, :] * t[..., None, None] ** torch.arange(4, dtype=F64)).sum(-1)
        return q.square().mean(-1) + b.min_slope

    torch.testing.assert_close(value - beta, quadrature(slope, 0.0, y, n=8), atol=1e-12, rtol=1e-12)
    zeros = (torch.zeros_like(a), torch.zeros_like(beta))
    torch.testing.assert_close(
        b.transformer.transform(y, zeros)[0], (1 + b.min_slope) * y, atol=1e-14, rtol=1e-14
    )


def test_sos_agrees_with_zuko() -> None:
    """Peer check: zuko's SOSPolynomialTransform integrates the same polynomial by quadrature, in
    the rescaled variable x / B; ours takes coefficients a_l / B^l and integrates analytically."""
    transforms = pytest.importorskip("zuko.transforms")
    k, degree, bound = 3, 2, 5.0
    a = torch.randn(k, degree + 1, dtype=F64, generator=GEN)
    theirs = transforms.SOSPolynomialTransform(a, slope=1e-3, bound=bound)
    ours = SOSPolynomial(count=k, degree=degree, min_slope=1e-3)(shape=(1,)).double()
    x = torch.linspace(-4, 4, 33, dtype=F64)
    y_theirs, ladj_theirs = theirs.call_and_ladj(x)
    scaled = a / bound ** torch.arange(degree + 1, dtype=F64)
    y_ours, ladj_ours = ours.transformer.transform(
        x[:, None], (scaled.expand(33, 1, k, degree + 1), torch.zeros(33, 1, dtype=F64))
    )
    value_diff = float((y_ours[:, 0] - y_theirs).abs().max())
    ladj_diff = float((ladj_ours[:, 0] - ladj_theirs).abs().max())
    print(f"max |ours - zuko| SOS: values {value_diff:.2e}, log-slopes {ladj_diff:.2e}")
    assert value_diff < 1e-10 and ladj_diff < 1e-12


def test_sos_bad_arguments() -> None:
    with pytest.raises(ValueError, match="count"):
        SOSPolynomial(count=0)(shape=(2,))
    with pytest.raises(ValueError, match="degree"):
        SOSPolynomial(degree=-1)(shape=(2,))
    with pytest.raises(ValueError, match="min_slope"):
        SOSPolynomial(min_slope=0.0)(shape=(2,))
    with pytest.raises(ValueError, match="at least one dim"):
        SOSPolynomial()(shape=())


def test_sos_solvers_agree() -> None:
    b = SOSPolynomial(DenseAutoregressive(hidden_dims=(8,)))(shape=(3,)).double()
    perturb(b)
    b2 = SOSPolynomial(DenseAutoregressive(hidden_dims=(8,)), solver="bisection")(shape=(3,)).double()
    b2.load_state_dict(b.state_dict())
    x = torch.randn(20, 3, dtype=F64, generator=GEN) * 3
    torch.testing.assert_close(b.forward(x), b2.forward(x), atol=1e-12, rtol=1e-12)


def test_solver_settings_can_be_changed_after_construction() -> None:
    """As plain attributes could in earlier releases: the setters reach the transformer, which
    solves with them, and refuse bad values by name."""
    b = SOSPolynomial(DenseAutoregressive(hidden_dims=(8,)))(shape=(3,)).double()
    perturb(b)
    x = torch.randn(20, 3, dtype=F64, generator=GEN) * 3
    reference = b.forward(x)
    b.solver, b.tol, b.max_iter = "bisection", 1e-13, 400
    assert (b.transformer.solver, b.transformer.tol, b.transformer.max_iter) == ("bisection", 1e-13, 400)
    torch.testing.assert_close(b.forward(x), reference, atol=1e-10, rtol=1e-10)
    b.max_iter = 1  # one bisection step does not reach the root: the setting is the one used
    assert (b.forward(x) - reference).abs().max() > 1e-3
    with pytest.raises(ValueError, match="SOSPolynomial: solver must be one of"):
        b.solver = "secant"
    with pytest.raises(ValueError, match="SOSPolynomial: tol must be positive"):
        b.tol = 0.0
    with pytest.raises(ValueError, match="SOSPolynomial: max_iter"):
        b.max_iter = 0
    assert b.solver == "bisection" and b.max_iter == 1


class _Gate(Parameters):
    """Degree-0 SOS coefficients: dim 0 the identity, dim 1 of slope (1 + a)^2 = y_0^2 (a = y_0 - 1),
    flat (slope min_slope) at y_0 = 0, where the first pass of the sequential forward starts."""

    def forward(self, input=None, context=None):  # type: ignore[no-untyped-def]
        assert input is not None
        a = torch.stack([torch.zeros_like(input[..., 0]), input[..., 0] - 1.0], -1)
        return a[..., None, None], torch.zeros_like(input)


def test_sequential_forward_tolerates_unsolvable_intermediate_passes() -> None:
    """The first pass solves dim 1 with a conditioner fed y_0 = 0 (not yet exact): its map is flat
    (slope 1e-30) and its root beyond any bracket. That pass's value is discarded, so forward
    succeeds; only the final pass must find every root."""
    b = SOSPolynomial(Plan(_Gate), count=1, degree=0, min_slope=1e-30)(shape=(2,)).double()
    x = torch.tensor([[2.0, 3.0], [1.5, -1.0]], dtype=F64, requires_grad=True)
    y = b.forward(x)
    torch.testing.assert_close(b.inverse(y), x.detach(), atol=1e-12, rtol=1e-12)
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    # a target that the final map cannot reach still fails loudly
    with pytest.raises(ValueError, match="not bracketed"):
        b.forward(torch.tensor([[0.0, 1.0]], dtype=F64))  # y_0 = 0: dim 1 flat in the final pass


# --------------------------------------------------------------------------- Bernstein


def test_bernstein_is_the_identity_at_zero_parameters() -> None:
    b = Bernstein(degree=7, bound=3.0)(shape=(1,)).double()
    y = torch.linspace(-10, 10, 81, dtype=F64)[:, None]
    x, log_slope = b.transformer.transform(y, (torch.zeros(8, dtype=F64),))
    torch.testing.assert_close(x, y, atol=1e-13, rtol=1e-13)
    torch.testing.assert_close(log_slope, torch.zeros_like(y), atol=1e-13, rtol=0)


def test_bernstein_is_increasing_and_c1_at_the_bounds() -> None:
    b = Bernstein(degree=9, bound=2.0)(shape=(1,)).double()
    raw = (torch.randn(10, dtype=F64, generator=GEN) * 1.5,)
    y = torch.linspace(-4, 4, 801, dtype=F64)[:, None]
    value, log_slope, grad = value_and_slope(b, y, raw)
    assert bool((value[1:] > value[:-1]).all())
    torch.testing.assert_close(log_slope, grad.log(), atol=1e-12, rtol=1e-12)
    for edge in (-2.0, 2.0):
        near = torch.tensor([[edge - 1e-7], [edge + 1e-7]], dtype=F64)
        v, s, _ = value_and_slope(b, near, raw)
        assert abs(float(v[1] - v[0])) < 1e-6  # continuous value
        assert abs(float(s[1] - s[0])) < 1e-5  # continuous slope


def test_bernstein_agrees_with_zuko() -> None:
    """Peer check: zuko's BernsteinTransform with the same (constrained) coefficients, inside the
    bounds (zuko extrapolates from 1e-6 inside them)."""
    transforms = pytest.importorskip("zuko.transforms")
    bound = 3.0
    theirs = transforms.BernsteinTransform(torch.randn(8, dtype=F64, generator=GEN), bound=bound)
    theta = theirs.theta.detach()
    m = theta.numel() - 1
    ours = Bernstein(degree=m, bound=bound)(shape=(1,)).double()
    # our parametrisation of those coefficients: theta_0 + B, then inverse-softplus increments
    increments = theta.diff()
    raw = torch.cat([theta[:1] + bound, torch.log(torch.expm1(increments)) - ours.transformer._shift])
    x = torch.linspace(-2.99, 2.99, 61, dtype=F64)
    with torch.no_grad():
        y_ours, ladj_ours = ours.transformer.transform(x[:, None], (raw,))
    y_theirs, ladj_theirs = (t.detach() for t in theirs.call_and_ladj(x))
    value_diff = float((y_ours[:, 0] - y_theirs).abs().max())
    ladj_diff = float((ladj_ours[:, 0] - ladj_theirs).abs().max())
    print(f"max |ours - zuko| Bernstein: values {value_diff:.2e}, log-slopes {ladj_diff:.2e}")
    assert value_diff < 1e-10 and ladj_diff < 1e-8


def test_bernstein_bad_arguments() -> None:
    with pytest.raises(ValueError, match="degree"):
        Bernstein(degree=0)(shape=(2,))
    with pytest.raises(ValueError, match="bound"):
        Bernstein(bound=-1.0)(shape=(2,))


# --------------------------------------------------------------------------- UMNN


def _umnn(scale: float = 1.0, **kwargs: object) -> UMNN:
    made = DenseAutoregressive(hidden_dims=(16,), permutation="identity")
    b: UMNN = UMNN(made, **kwargs)(shape=(3,)).double()
    perturb(b, scale)
    return b


def test_umnn_quadrature_converges_and_log_det_is_the_integrand() -> None:
    # weights of twice the usual scale: outputs up to about 20, a visibly curved integrand
    b = _umnn(2.0)
    reference = _umnn(2.0, nodes=256)
    cc = _umnn(2.0, nodes=33, rule="clenshaw-curtis")
    y = torch.randn(200, 3, dtype=F64, generator=GEN)
    with torch.no_grad():
        x = b.inverse(y)
        assert float((x - reference.inverse(y)).abs().max()) < 1e-6  # measured: 1e-8
        assert float((x - cc.inverse(y)).abs().max()) < 1e-6  # measured: 2e-8
    # the declared log-det (log of the integrand) against the derivative of the computed map
    p = b._params(y, None)
    _, log_g, grad = value_and_slope(b, y, p)
    assert float((log_g - grad.log()).abs().max()) < 1e-5  # measured: 1e-7


def test_umnn_integrand_is_positive_and_its_log_is_stable() -> None:
    b = _umnn(embedding_dim=2)
    y = torch.tensor([[-40.0, 0.0, 40.0]], dtype=F64)
    with torch.no_grad():
        for w in b.integrand.parameters():
            w.mul_(30)  # large pre-activations of both signs
    x, ladj = b.inverse_and_ladj(y)
    assert torch.isfinite(x).all() and torch.isfinite(ladj).all()
    z = torch.linspace(-50, 50, 101, dtype=F64)
    log_g = torch.where(z > 0, torch.log1p(z.clamp_min(0)), z.clamp_max(0))  # as UMNN computes it
    naive = torch.log(torch.nn.functional.elu(z) + 1)  # cancels for z << 0, -inf below z = -37
    finite = z > -5
    torch.testing.assert_close(log_g[finite], naive[finite], atol=1e-12, rtol=1e-12)
    assert torch.equal(log_g[~finite], z[~finite])


def test_umnn_starts_at_the_identity() -> None:
    b = UMNN(DenseAutoregressive(hidden_dims=(8,)))(shape=(3,))
    with torch.no_grad():
        b.params_fn.output.weight.zero_()  # type: ignore[union-attr]
    y = torch.randn(10, 3)
    x, ladj = b.inverse_and_ladj(y)
    torch.testing.assert_close(x, y, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(ladj, torch.zeros(10), atol=1e-6, rtol=0)


def test_umnn_quadrature_can_be_refined_after_construction() -> None:
    """More nodes after training (as the paper evaluates): the setters reach the transformer,
    the log-density moves towards the exact integral's, and bad values are refused."""
    b = UMNN(DenseAutoregressive(hidden_dims=(8,)), nodes=4)(shape=(3,)).double()
    perturb(b)
    y = torch.randn(10, 3, dtype=F64, generator=GEN) * 3
    coarse = b.inverse(y)
    b.nodes, b.rule = 64, "clenshaw-curtis"
    assert (b.transformer.nodes, b.transformer.rule) == (64, "clenshaw-curtis")
    fine = b.inverse(y)
    b.nodes = 128
    finer = b.inverse(y)
    assert (finer - fine).abs().max() < 1e-3 * (finer - coarse).abs().max()
    with pytest.raises(ValueError, match="number of nodes"):
        b.nodes = 0
    with pytest.raises(ValueError, match="unknown rule"):
        b.rule = "trapezoid"
    assert (b.nodes, b.rule) == (128, "clenshaw-curtis")


def test_umnn_bad_arguments() -> None:
    with pytest.raises(ValueError, match="number of nodes"):
        UMNN(nodes=0)(shape=(2,))
    with pytest.raises(ValueError, match="unknown rule"):
        UMNN(rule="trapezoid")(shape=(2,))
    with pytest.raises(ValueError, match="hidden_dims"):
        UMNN(hidden_dims=())(shape=(2,))
    with pytest.raises(ValueError, match="embedding_dim"):
        UMNN(embedding_dim=0)(shape=(2,))


VALUE_ERRORS: list[tuple[str, Callable[[], Any], str]] = [
    (
        "UMNN scalar",
        lambda: UMNN()(shape=S([])),
        "UMNN needs an event of at least one dim",
    ),
]


@pytest.mark.parametrize(("make", "match"), [c[1:] for c in VALUE_ERRORS], ids=[c[0] for c in VALUE_ERRORS])
def test_bad_values_are_named(make: Callable[[], Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


REPRS: list[tuple[str, Callable[[], Any], str]] = [
    (
        "SOSPolynomial",
        lambda: SOSPolynomial(count=2, degree=3, solver="bisection")(shape=S([2])),
        "shape=(2,), solver='bisection', count=2, degree=3",
    ),
    (
        "Bernstein",
        lambda: Bernstein(degree=5, bound=2.0)(shape=S([2])),
        "shape=(2,), solver='newton', degree=5, bound=2.0",
    ),
    (
        "UMNN",
        lambda: UMNN(nodes=16, rule="clenshaw-curtis", hidden_dims=(8,))(shape=S([2])),
        "shape=(2,), solver='newton', nodes=16, rule='clenshaw-curtis'",
    ),
]


@pytest.mark.parametrize(("make", "expected"), [c[1:] for c in REPRS], ids=[c[0] for c in REPRS])
def test_extra_repr_shows_the_hyperparameters(make: Callable[[], Any], expected: str) -> None:
    module = make()
    assert module.extra_repr() == expected
    text = repr(module)
    assert text.startswith(f"{type(module).__name__}(") and expected in text
