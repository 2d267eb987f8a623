"""The transformers: the elementwise maths every wiring applies, checked on their own."""

from __future__ import annotations

import copy
import gc
import math
import weakref

import pytest
import torch

import flowtorch
import flowtorch.bijectors as bij
from flowtorch.bijectors.monotonic import MonotoneBijector
from flowtorch.nn import IntegrandNet
from flowtorch.ops import soft_clamp
from flowtorch.transformers import (
    AffineTransformer,
    BernsteinTransformer,
    CircularSplineTransformer,
    DeepSigmoidTransformer,
    MonotoneTransformer,
    SOSTransformer,
    SplineTransformer,
    Transformer,
    UMNNTransformer,
)

F64 = torch.float64
TRANSFORMERS = {
    "affine": lambda: AffineTransformer(-5.0, 3.0),
    "affine[additive]": lambda: AffineTransformer(additive=True),
    "spline[quadratic]": lambda: SplineTransformer(count_bins=5, bound=2.0),
    "spline[linear]": lambda: SplineTransformer(count_bins=4, bound=3.0, order="linear"),
    "circular": lambda: CircularSplineTransformer(count_bins=6, bound=math.pi),
    "sos": lambda: SOSTransformer(count=2, degree=2),
    "bernstein": lambda: BernsteinTransformer(degree=6, bound=2.0),
    "bernstein[bisection]": lambda: BernsteinTransformer(degree=6, bound=2.0, solver="bisection"),
    "umnn": lambda: UMNNTransformer(IntegrandNet(4, (8,), torch.nn.Tanh).double(), 4, nodes=16),
    "deep-sigmoid": lambda: DeepSigmoidTransformer(hidden_units=5),
}


def _params(t: Transformer, shape: tuple[int, ...], scale: float = 1.0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    return tuple(scale * torch.randn(*s, generator=g, dtype=F64) for s in t.param_shapes(torch.Size(shape)))


def _values(name: str, shape: tuple[int, ...]) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    if name == "circular":
        return (torch.rand(*shape, generator=g, dtype=F64) * 2 - 1) * (math.pi - 1e-3)
    return 3.0 * torch.randn(*shape, generator=g, dtype=F64)  # past the spline's bound too


@pytest.mark.parametrize("name", TRANSFORMERS)
def test_round_trip_and_log_derivative_against_autograd(name: str) -> None:
    t = TRANSFORMERS[name]()
    params = _params(t, (7, 3))
    x = _values(name, (7, 3)).requires_grad_()
    y, ladj = t.forward(x, params)
    x_back, ladj_back = t.inverse(y, params)
    torch.testing.assert_close(x_back, x)
    torch.testing.assert_close(ladj_back.expand_as(x), ladj.expand_as(x))  # both the forward's
    (dy,) = torch.autograd.grad(y.sum(), x)  # elementwise: the derivative is the gradient of the sum
    torch.testing.assert_close(ladj.expand_as(x), dy.log())
    torch.testing.assert_close(t.log_derivative(x, params).expand_as(x), ladj.expand_as(x))
    torch.testing.assert_close(t.log_derivative(x, params, y).expand_as(x), ladj.expand_as(x))


@pytest.mark.parametrize(
    "name", ["affine", "affine[additive]", "spline[quadratic]", "bernstein", "deep-sigmoid"]
)
def test_all_zero_parameters_give_the_identity(name: str) -> None:
    """(The linear-rational spline and the circle's, whose ends are fixed, are not the identity
    at zero parameters.)"""
    t = TRANSFORMERS[name]()
    x = _values(name, (4, 2))
    zeros = tuple(torch.zeros(4, *s, dtype=F64) for s in t.param_shapes(torch.Size([2])))
    y, ladj = t.forward(x, zeros)
    torch.testing.assert_close(y, x)
    torch.testing.assert_close(ladj.expand_as(x), torch.zeros_like(x))


def test_the_affine_log_scale_is_one_soft_clamp_for_every_affine_layer() -> None:
    """``Affine``, ``AffineAutoregressive``, ``AffineCoupling`` and ``ChannelAffineCoupling`` hold
    the same transformer class, and its log-scale is ``soft_clamp`` into the clip bounds."""
    t = AffineTransformer(-2.0, 1.0)
    raw = torch.linspace(-100.0, 100.0, 11, dtype=F64)
    torch.testing.assert_close(t.log_scale((torch.zeros(11, dtype=F64), raw)), soft_clamp(raw, -2.0, 1.0))
    layers = [
        bij.Affine()(shape=torch.Size([2])),
        bij.AffineAutoregressive()(shape=torch.Size([2])),
        bij.AffineCoupling()(shape=torch.Size([2])),
        bij.ChannelAffineCoupling()(shape=torch.Size([2, 2, 2])),
    ]
    assert all(type(b.transformer) is AffineTransformer for b in layers)
    assert [(b.transformer.log_scale_min_clip, b.transformer.log_scale_max_clip) for b in layers] == [
        (-5.0, 3.0),
        (-5.0, 3.0),
        (-5.0, 5.0),
        (-3.0, 3.0),
    ]


@pytest.mark.parametrize(
    ("low", "high", "match"),
    [
        (1.0, 0.5, r"log_scale_min_clip \(1.0\) must be below log_scale_max_clip \(0.5\)"),
        (0.5, 1.0, r"must be finite and contain 0 \(the identity map\): got \(0.5, 1.0\)"),
        (-math.inf, 1.0, r"must be finite and contain 0"),
    ],
)
def test_bad_clip_bounds_are_named(low: float, high: float, match: str) -> None:
    with pytest.raises(ValueError, match=f"Affine: .*{match}"):
        bij.Affine(log_scale_min_clip=low, log_scale_max_clip=high)(shape=torch.Size([2]))


def test_the_spline_transformer_is_the_one_the_spline_bijectors_apply() -> None:
    for b in (
        bij.Spline(count_bins=3)(shape=torch.Size([2])),
        bij.SplineAutoregressive(count_bins=3)(shape=torch.Size([2])),
        bij.SplineCoupling(count_bins=3)(shape=torch.Size([2])),
    ):
        assert isinstance(b.transformer, SplineTransformer) and b.transformer.count_bins == 3
    assert isinstance(bij.CircularSpline()(shape=torch.Size([2])).transformer, CircularSplineTransformer)


def test_the_base_transformer_names_what_to_write() -> None:
    t = Transformer()
    with pytest.raises(NotImplementedError):
        t.param_shapes(torch.Size([2]))
    with pytest.raises(NotImplementedError):
        t.forward(torch.zeros(2), ())
    with pytest.raises(NotImplementedError):
        t.inverse(torch.zeros(2), ())
    assert t.extra_repr() == ""


def test_the_monotone_transformers_are_the_ones_the_monotone_bijectors_apply() -> None:
    shape = torch.Size([2])
    b = bij.NeuralAutoregressive(hidden_units=5)(shape=shape)
    assert isinstance(b.transformer, DeepSigmoidTransformer) and b.hidden_units == 5
    b = bij.SOSPolynomial(count=2, solver="bisection")(shape=shape)
    assert isinstance(b.transformer, SOSTransformer) and (b.count, b.solver) == (2, "bisection")
    assert isinstance(bij.Bernstein(degree=4)(shape=shape).transformer, BernsteinTransformer)
    umnn = bij.UMNN(nodes=8)(shape=shape)
    assert isinstance(umnn.transformer, UMNNTransformer) and umnn.transformer.integrand is umnn.integrand
    # the integrand's parameters are the bijector's, and a copy applies its own copy
    assert any(p is q for p in umnn.parameters() for q in umnn.integrand.parameters())
    twin = copy.deepcopy(umnn)
    assert twin.transformer.integrand is twin.integrand is not umnn.integrand


class _Cubic(MonotoneTransformer):
    """T(y) = b + y + a^2 y^3 / 3: closed form one way, a root solve the other."""

    def param_shapes(self, shape: torch.Size) -> tuple[torch.Size, ...]:
        return (shape, shape)

    def transform(
        self, y: torch.Tensor, params: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = params
        return b + y + a.square() * y**3 / 3.0, torch.log1p(a.square() * y.square())


class _CubicFlow(MonotoneBijector):
    def __init__(self, params_fn=None, *, shape, context_shape=None):  # type: ignore[no-untyped-def]
        self.transformer = _Cubic()
        super().__init__(params_fn or flowtorch.parameters.Tensor(), shape=shape, context_shape=context_shape)


def test_a_new_monotone_transformer_is_a_numerically_inverted_bijector() -> None:
    """A user's map with only one closed-form direction: the root solve, its gradient, and the
    cache (which must not store a log-det whose graph holds the output) come with the base."""
    torch.manual_seed(0)
    b = _CubicFlow(shape=torch.Size([3])).double()
    for p in b.parameters():
        torch.nn.init.normal_(p)
    x = torch.randn(5, 3, dtype=F64, requires_grad=True)
    y, ladj = b.forward_and_ladj(x)
    torch.testing.assert_close(b.inverse(y), x)
    jac = torch.autograd.functional.jacobian(lambda v: b.forward(v).sum(0), x)  # (3, 5, 3)
    diag = torch.stack([jac[:, i, :] for i in range(5)])  # (5, 3, 3), diagonal
    torch.testing.assert_close(ladj, torch.linalg.slogdet(diag).logabsdet)
    gc.disable()
    try:
        with flowtorch.BijectiveMode():
            y = b.forward(x)
            torch.testing.assert_close(b.log_abs_det_jacobian(x, y), ladj)
            ref = weakref.ref(y)
            del y
            assert ref() is None, "a cache entry keeps its own output alive"
    finally:
        gc.enable()
    assert not _CubicFlow.is_base and MonotoneBijector.is_base
