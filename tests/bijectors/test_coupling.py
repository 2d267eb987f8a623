"""Coupling layers: what the generic suite cannot see (the split, NICE, the start, a peer, a
conditioner class instead of a plan, a context batch wider than the input)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch

import flowtorch
from flowtorch.bijectors.coupling import AffineCoupling, SplineCoupling, coupling_mask
from flowtorch.ops import identity_derivative
from flowtorch.parameters import Tensor
from flowtorch.parameters.coupling import DenseCoupling
from tests.case import check_a_context_batch_wider_than_the_input, perturb

S = torch.Size
F64 = torch.float64
CHECKER = torch.tensor([[True, False, True], [False, True, False]])


LAYERS = {
    "affine": (lambda: AffineCoupling(), (5,)),
    "additive": (lambda: AffineCoupling(additive=True), (4,)),
    "affine-half-flip": (lambda: AffineCoupling(mask="half", flip=True), (5,)),
    "spline": (lambda: SplineCoupling(count_bins=6), (5,)),
    "spline-checker": (lambda: SplineCoupling(mask=CHECKER), (2, 3)),
    "affine-mask-2d": (lambda: AffineCoupling(mask=torch.tensor([False, True, True])), (2, 3)),
}


@pytest.mark.parametrize("context", [False, True], ids=["plain", "context"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_identity_part_is_copied_bitwise(name: str, context: bool) -> None:
    make, shape = LAYERS[name]
    b = make()(shape=shape, context_shape=(2,) if context else None)
    perturb(b)
    x = 2 * torch.randn(6, *shape)
    c = torch.randn(6, 2) if context else None
    y = b.forward(x, c)
    keep = b.mask.expand_as(x)
    assert torch.equal(y[keep], x[keep])
    assert not torch.allclose(y[~keep], x[~keep], atol=1e-3), "the transformed part moved"
    x2 = b.inverse(y, c)
    assert torch.equal(x2[keep], y[keep])
    torch.testing.assert_close(x2, x, atol=1e-5, rtol=1e-5)
    # parameters depend only on the identity part: changing x_b leaves log|det J|'s conditioner alone
    x3 = torch.where(keep, x, torch.randn_like(x))
    torch.testing.assert_close(b.params_fn(x3, c), b.params_fn(x, c))


def test_nice_log_det_is_exactly_zero() -> None:
    b = AffineCoupling(additive=True)(shape=(4,), context_shape=(2,))
    perturb(b, 2.0)
    assert b.param_shapes() == (torch.Size([2]),)
    x, c = 3 * torch.randn(10, 4), torch.randn(10, 2)
    y, ladj = b.forward_and_ladj(x, c)
    assert not torch.allclose(y, x)
    assert ladj.shape == (10,) and torch.equal(ladj, torch.zeros(10))
    assert torch.equal(b.inverse_and_ladj(y, c)[1], torch.zeros(10))
    assert torch.equal(b.log_abs_det_jacobian(x, y, c), torch.zeros(10))
    # y_b = x_b + t(x_a): the difference on the transformed part is the conditioner's shift
    torch.testing.assert_close((y - x)[:, 1::2], b.params_fn(x, c)[0])


def test_affine_maths_by_hand() -> None:
    b = AffineCoupling(mask="half", log_scale_min_clip=-2.0, log_scale_max_clip=2.0)(shape=(4,))
    perturb(b, 1.0)
    x = torch.randn(7, 4, dtype=torch.float64)
    b = b.double()
    shift, raw = b.params_fn(x)
    s = raw / (1 + raw.abs() / 2.0)  # the docstring's soft clamp, by hand
    y, ladj = b.forward_and_ladj(x)
    torch.testing.assert_close(y[:, 2:], x[:, 2:] * s.exp() + shift)
    torch.testing.assert_close(ladj, s.sum(-1))
    assert s.abs().max() <= 2.0


def test_conditioner_emits_parameters_for_the_transformed_part_only() -> None:
    b = SplineCoupling(count_bins=4, mask=CHECKER)(shape=(2, 3), context_shape=(2,))
    assert b.param_shapes() == (torch.Size([3, 4]), torch.Size([3, 4]), torch.Size([3, 3]))
    net = b.params_fn
    assert isinstance(net, DenseCoupling)
    assert net.output.out_features == 3 * (4 + 4 + 3)
    assert net.input_layer is not None and net.input_layer.in_features == 3
    widths, _, derivatives = net(torch.randn(5, 2, 3), torch.randn(5, 2))
    assert widths.shape == (5, 3, 4) and derivatives.shape == (5, 3, 3)


def test_layers_start_at_the_identity() -> None:
    x = 2 * torch.randn(20, 5)
    for make in (AffineCoupling, SplineCoupling):
        b = make()(shape=(5,))
        y, ladj = b.forward_and_ladj(x)
        assert (y - x).abs().max() < 0.05 and ladj.abs().max() < 0.05, make.__name__
        with torch.no_grad():  # zero parameters are exactly the identity map
            b.params_fn.output.weight.zero_()  # type: ignore[union-attr]
        y, ladj = b.forward_and_ladj(x)
        torch.testing.assert_close(y, x, atol=1e-6, rtol=0)
        torch.testing.assert_close(ladj, torch.zeros(20), atol=1e-6, rtol=0)


def test_masks() -> None:
    assert coupling_mask((5,)).tolist() == [True, False, True, False, True]
    assert coupling_mask((5,), flip=True).tolist() == [False, True, False, True, False]
    assert coupling_mask((5,), "half").tolist() == [True, True, True, False, False]
    assert coupling_mask((4,), "half", flip=True).tolist() == [False, False, True, True]
    assert coupling_mask((2, 2)).tolist() == [[True, False], [True, False]]
    assert torch.equal(coupling_mask((2, 3), CHECKER, flip=True), ~CHECKER)
    # a mask over the last dim broadcasts to a 2-D event
    b = AffineCoupling(mask=torch.tensor([False, True, True]))(shape=(2, 3))
    assert b.n_transformed == 2 and b.param_shapes()[0] == (2,)


@pytest.mark.parametrize(
    ("kwargs", "shape", "match"),
    [
        (dict(mask="random"), (4,), "unknown coupling mask"),
        (dict(mask=torch.tensor([1, 0, 1])), (3,), "boolean"),
        (dict(mask=torch.tensor([True, False])), (3,), "does not broadcast"),
        (dict(mask=torch.ones(2, 2, 3, dtype=torch.bool)), (2, 3), "more dims"),
        (dict(mask=torch.tensor([True, True, True])), (3,), "transformed part"),
        (dict(mask=torch.tensor([True, True, True]), flip=True), (3,), "identity part"),
        ({}, (1,), "single element"),
        ({}, (), "at least one dim"),
        (dict(log_scale_max_clip=0.0), (3,), "AffineCoupling: the log-scale is softly clamped"),
    ],
)
def test_bad_affine_arguments(kwargs: dict, shape: tuple[int, ...], match: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError, match=match):
        AffineCoupling(**kwargs)(shape=shape)


def test_bad_spline_arguments_and_conditioner() -> None:
    with pytest.raises(ValueError, match="count_bins"):
        SplineCoupling(count_bins=1)(shape=(3,))
    with pytest.raises(ValueError, match="bound"):
        SplineCoupling(bound=-1.0)(shape=(3,))
    with pytest.raises(ValueError, match="needs the coupling mask"):
        DenseCoupling()(param_shapes=[torch.Size([1])], input_shape=torch.Size([2]))
    with pytest.raises(ValueError, match="must start with the number of transformed"):
        DenseCoupling(mask=torch.tensor([True, False]))(
            param_shapes=[torch.Size([2])], input_shape=torch.Size([2])
        )
    with pytest.raises(ValueError, match="boolean tensor of the input shape"):
        DenseCoupling(mask=torch.tensor([True, False, True]))(
            param_shapes=[torch.Size([1])], input_shape=torch.Size([2])
        )
    with pytest.raises(ValueError, match="hidden_dims"):
        AffineCoupling(DenseCoupling(hidden_dims=()))(shape=(2,))


def test_other_conditioners_and_mask_from_the_bijector() -> None:
    # a conditioner plan that does not take ``mask`` is used as is: here an elementwise map of x_b
    b = AffineCoupling(Tensor())(shape=(3,))
    assert isinstance(b.params_fn, Tensor) and b.params_fn.param_shapes == (torch.Size([1]),) * 2
    # the layer's mask overrides one given to the conditioner plan
    b2 = AffineCoupling(DenseCoupling(hidden_dims=(4,), mask=torch.tensor([False, True])), flip=True)(
        shape=(2,)
    )
    assert torch.equal(b2.params_fn.identity_index, torch.tensor([1]))  # type: ignore[union-attr]


def test_inverse_is_stable_in_float32() -> None:
    """Far into the tails, on the spline's boundary knots and at large scales, the inverse is
    backward stable: ``f(f^{-1}(y))`` equals ``y`` to rounding, even where the map is so flat that
    ``x`` itself is ill-conditioned (``dy/dx`` near 1e-6); with moderate parameters it round-trips."""
    torch.manual_seed(1)
    eps = torch.finfo(torch.float32).eps
    for make in (AffineCoupling, SplineCoupling):
        b = make()(shape=(4,))
        perturb(b, 2.0)
        x = torch.cat([40 * torch.randn(50, 4), torch.full((1, 4), 3.0), torch.full((1, 4), -3.0)])
        with torch.no_grad():
            y, _ = b.forward_and_ladj(x)
            x2, ladj2 = b.inverse_and_ladj(y)
            y2, ladj_at_x2 = b.forward_and_ladj(x2)
        assert torch.isfinite(x2).all() and torch.isfinite(ladj2).all()
        assert ((y2 - y).abs() <= 8 * eps * y.abs().clamp(min=1.0)).all(), make.__name__
        torch.testing.assert_close(ladj2, ladj_at_x2, atol=1e-4, rtol=1e-4)
        perturb(b, 0.5)
        x = 3 * torch.randn(200, 4)
        torch.testing.assert_close(b.inverse(b.forward(x)), x, atol=1e-5, rtol=1e-5)


def test_bijective_mode_serves_the_inverse_from_the_cache() -> None:
    b = SplineCoupling()(shape=(3,), context_shape=(2,))
    x, c = torch.randn(4, 3), torch.randn(4, 2)
    with flowtorch.BijectiveMode():
        y = b.forward(x, c)
        assert b.inverse(y, c) is x
        torch.testing.assert_close(b.log_abs_det_jacobian(x, y, c), b.forward_and_ladj(x, c)[1])


# --------------------------------------------------------------------------- peer: zuko

MIN = 1e-3  # flowtorch.ops.rational_quadratic_spline's default minimal bin width, height, derivative
SLOPE = 1e-8  # zuko's soft-clip parameter, small enough for any knots our minimums allow


def _inverse_softclip(v: torch.Tensor, a: float) -> torch.Tensor:
    """``w`` with ``w / (1 + |w| / a) = v`` (for ``|v| < a``)."""
    assert (v.abs() < a).all()
    return v / (1 - v.abs() / a)


def _zuko_parameters(
    widths: torch.Tensor, heights: torch.Tensor, derivatives: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """zuko ``MonotonicRQSTransform`` arguments giving the knots of our raw parameters.

    Ours: bin fractions ``m + (1 - K m) softmax(u)``, interior derivatives
    ``m + softplus(u + u*)`` (``u*`` the identity offset of ``SplineCoupling``). zuko: bin fractions
    ``softmax(w / (1 + |2 w / log(slope)|))``, interior derivatives
    ``exp(d / (1 + |d / log(slope)|))``, boundary derivatives 1 as ours.
    """
    k = widths.shape[-1]
    half = abs(math.log(SLOPE)) / 2

    def bins(u: torch.Tensor) -> torch.Tensor:
        log_fraction = torch.log(MIN + (1 - k * MIN) * torch.softmax(u, -1))
        return _inverse_softclip(log_fraction - log_fraction.mean(-1, keepdim=True), half)

    delta = MIN + torch.nn.functional.softplus(derivatives + identity_derivative(MIN))
    return bins(widths), bins(heights), _inverse_softclip(delta.log(), 2 * half)


def test_spline_coupling_matches_zuko_for_the_same_knots() -> None:
    zt = pytest.importorskip("zuko.transforms")
    torch.manual_seed(0)
    bound, k = 2.5, 6
    mask = torch.tensor([True, False, False, True, False])
    b = SplineCoupling(mask=mask, count_bins=k, bound=bound)(shape=(5,), context_shape=(2,)).double()
    perturb(b, 1.5)
    x = 1.5 * torch.randn(400, 5, dtype=torch.float64)  # about 10% in the identity tails
    c = torch.randn(400, 2, dtype=torch.float64)
    idx_a = mask.nonzero().squeeze(-1)

    def meta(x_a: torch.Tensor) -> torch.distributions.Transform:
        full = torch.zeros(*x_a.shape[:-1], 5, dtype=x_a.dtype)
        full[..., idx_a] = x_a
        w, h, d = _zuko_parameters(*b.params_fn(full, c))  # type: ignore[misc]
        return zt.DependentTransform(zt.MonotonicRQSTransform(w, h, d, bound=bound, slope=SLOPE), 1)

    peer = zt.CouplingTransform(meta, mask)
    with torch.no_grad():
        y, ladj = b.forward_and_ladj(x, c)
        y_z, ladj_z = peer.call_and_ladj(x)
        x_back, x_back_z = b.inverse(y, c), peer.inv(y)
    assert ((x.abs() > bound) & ~mask).any() and ((x.abs() < bound) & ~mask).any()
    torch.testing.assert_close(y, y_z, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(ladj, ladj_z, atol=1e-10, rtol=1e-10)
    # the inverse solves a quadratic; some bins are steep, so both round trips lose digits
    torch.testing.assert_close(x_back, x_back_z, atol=1e-8, rtol=1e-8)
    assert (x_back - x).abs().max() <= (x_back_z - x).abs().max() + 1e-12  # ours is as accurate


@pytest.mark.parametrize("cls", [AffineCoupling, SplineCoupling])
@pytest.mark.parametrize("shape", [(4,), (2, 3)])
def test_torch_jit_trace(cls: type, shape: tuple[int, ...]) -> None:
    """No tensor is registered twice (once as ``mask``, once as the flat ``_identity`` or in the
    conditioner), which ``torch.jit.trace`` refuses as parameter sharing."""
    torch.manual_seed(0)
    b = cls()(shape=torch.Size(shape))
    perturb(b, 0.5)
    buffers = [t for m in b.modules() for t in m.buffers(recurse=False)]
    assert len({id(t) for t in buffers}) == len(buffers)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks traced as constants
        traced = torch.jit.trace(b, torch.randn(3, *shape))
    x = torch.randn(5, *shape)
    torch.testing.assert_close(traced(x), b.forward(x))


def test_a_conditioner_class_is_built_with_the_layers_mask() -> None:
    b = AffineCoupling(DenseCoupling, mask="half")(shape=S([4]))
    assert isinstance(b.params_fn, DenseCoupling)
    assert b.params_fn.identity_index.tolist() == [0, 1]
    assert b.params_fn.param_shapes == (S([2]), S([2]))
    b = b.to(F64)
    perturb(b, by_fan_in=False)
    x = torch.randn(5, 4, dtype=F64)
    y = b.forward(x)
    torch.testing.assert_close(y[:, :2], x[:, :2])
    torch.testing.assert_close(b.inverse(y), x)


@pytest.mark.parametrize("make", [AffineCoupling, SplineCoupling], ids=["affine", "spline"])
@pytest.mark.parametrize(
    "mask", ["alternate", torch.tensor([True, False, False, True])], ids=["regular", "irregular"]
)
def test_a_context_batch_wider_than_the_input(make: type, mask: object) -> None:
    b = make(mask=mask)(shape=S([4]), context_shape=S([2])).to(F64)
    perturb(b, by_fan_in=False)
    x = torch.randn(4, dtype=F64)  # one event
    c = torch.randn(3, 2, dtype=F64)  # three contexts
    y, ladj = check_a_context_batch_wider_than_the_input(b, x, c)
    identity = b.mask
    torch.testing.assert_close(y[:, identity], x[identity].expand(3, -1))
    x_back, ladj_back = b.inverse_and_ladj(y, c)
    torch.testing.assert_close(x_back, x.expand(3, 4))
    torch.testing.assert_close(ladj_back, ladj)


REPRS: list[tuple[str, Callable[[], Any], str]] = [
    (
        "AffineCoupling[additive]",
        lambda: AffineCoupling(additive=True)(shape=S([4])),
        "shape=(4,), mask=[1, 0, 1, 0], additive=True",
    ),
    (
        "AffineCoupling[half,flip]",
        lambda: AffineCoupling(mask="half", flip=True)(shape=S([5])),
        "shape=(5,), mask=[0, 0, 0, 1, 1], additive=False",
    ),
    (
        "AffineCoupling[17 elements]",
        lambda: AffineCoupling()(shape=S([17])),
        "shape=(17,), mask=<9 identity of 17>, additive=False",
    ),
    (
        "AffineCoupling[(4, 5)]",
        lambda: AffineCoupling()(shape=S([4, 5])),
        "shape=(4, 5), mask=<12 identity of 20>, additive=False",
    ),
    (
        "SplineCoupling[context]",
        lambda: SplineCoupling(count_bins=4, bound=2.0)(shape=S([3]), context_shape=S([2])),
        "shape=(3,), context_shape=(2,), mask=[1, 0, 1], count_bins=4, bound=2.0",
    ),
]


@pytest.mark.parametrize(("make", "expected"), [c[1:] for c in REPRS], ids=[c[0] for c in REPRS])
def test_extra_repr_shows_the_hyperparameters(make: Callable[[], Any], expected: str) -> None:
    module = make()
    assert module.extra_repr() == expected
    text = repr(module)
    assert text.startswith(f"{type(module).__name__}(") and expected in text
