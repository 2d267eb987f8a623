"""``flowtorch.interop``: bijectors as ``torch.distributions.Transform``, flows as
``TransformedDistribution``; checked against torch's own machinery. Equality and hashing of the
transforms, repr, torch's cache on a flattened Compose, and a context that is not a tensor."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.distributions import (
    ComposeTransform,
    Independent,
    Normal,
    Transform,
    TransformedDistribution,
    constraints,
    transform_to,
)

import flowtorch
import flowtorch.bijectors as bij
import flowtorch.distributions as dist
import flowtorch.parameters as params
from flowtorch.bijectors.coupling import AffineCoupling
from flowtorch.bijectors.reshape import Reshape
from flowtorch.core.bijector import Bijector
from flowtorch.interop import BijectorTransform, to_transform, to_transformed_distribution
from flowtorch.ops import soft_clamp
from tests._device import device  # noqa: F401  (fixture; conftest may also load the plugin)
from tests.case import perturb

D = 3
S = torch.Size
F64 = torch.float64


def made() -> Any:
    return params.DenseAutoregressive(hidden_dims=(16,))


#: name -> (plan, event shape, conditional)
PLANS: dict[str, tuple[Callable[[], Any], tuple[int, ...], bool]] = {
    "Exp": (lambda: bij.Exp(), (D,), False),
    "Sigmoid": (lambda: bij.Sigmoid(), (D,), False),
    "Affine": (lambda: bij.Affine(), (D,), False),
    "AffineFixed[-2]": (lambda: bij.AffineFixed(loc=0.5, scale=-2.0), (D,), False),
    "Spline": (lambda: bij.Spline(count_bins=4), (D,), False),
    "Permute": (lambda: bij.Permute(), (D,), False),
    "AffineAutoregressive": (lambda: bij.AffineAutoregressive(made()), (D,), False),
    "SplineAutoregressive[context]": (lambda: bij.SplineAutoregressive(made(), count_bins=4), (D,), True),
    "Invert(AffineAutoregressive)": (lambda: bij.Invert(bij.AffineAutoregressive(made())), (D,), False),
    "AffineCoupling[context]": (lambda: AffineCoupling(), (D,), True),
    "Spline[2x2]": (lambda: bij.Spline(count_bins=4), (2, 2), False),
    "Compose(Affine, Reshape)": (lambda: bij.Compose([bij.Affine(), Reshape((2, 2))]), (4,), False),
    "Compose(MAF, Permute, Spline)": (
        lambda: bij.Compose([bij.AffineAutoregressive(made()), bij.Permute(), bij.Spline(count_bins=4)]),
        (D,),
        False,
    ),
}
NAMES = list(PLANS)


def build(name: str, dtype: torch.dtype = F64) -> tuple[Bijector, torch.Tensor | None]:
    make, shape, conditional = PLANS[name]
    torch.manual_seed(0)
    b = make()(shape=torch.Size(shape), context_shape=(2,) if conditional else None).to(dtype)
    perturb(b, 0.4)
    context = torch.randn(4, 2, dtype=dtype) if conditional else None
    return b, context


def domain_points(b: Bijector, batch: tuple[int, ...], dtype: torch.dtype = F64) -> torch.Tensor:
    return transform_to(b.domain)(torch.randn(*batch, *b.shape, dtype=dtype))


def base_for(shape: torch.Size, dtype: torch.dtype = F64) -> torch.distributions.Distribution:
    return Independent(Normal(torch.zeros(shape, dtype=dtype), torch.ones(shape, dtype=dtype)), len(shape))


@pytest.mark.parametrize("name", NAMES)
def test_transform_computes_with_the_bijector(name: str) -> None:
    b, c = build(name)
    t = to_transform(b, c)
    assert isinstance(t, Transform) and isinstance(t, BijectorTransform)
    assert t.bijective and t._cache_size == 0
    assert t.domain.event_dim == len(b.shape) and t.codomain.event_dim == len(b.out_shape)
    x = domain_points(b, (5, 4))
    y = t(x)
    torch.testing.assert_close(y, b.forward(x, c), rtol=0, atol=0)
    torch.testing.assert_close(t.inv(y), b.inverse(y, c), rtol=0, atol=0)
    torch.testing.assert_close(t.inv(y), x, atol=1e-8, rtol=1e-8)
    ladj = t.log_abs_det_jacobian(x, y)
    assert ladj.shape == (5, 4)
    torch.testing.assert_close(ladj, b.log_abs_det_jacobian(x, y, c), rtol=0, atol=0)
    torch.testing.assert_close(t.inv.log_abs_det_jacobian(y, x), -ladj, rtol=0, atol=0)
    # shapes with batch dims, as TransformedDistribution asks for them
    assert t.forward_shape(torch.Size([5, 4, *b.shape])) == y.shape
    assert t.inverse_shape(y.shape) == x.shape
    assert t.inv.forward_shape(y.shape) == x.shape
    # torch's identity semantics of the inverse
    assert t.inv.inv is t
    assert t.inv is t.inv
    assert t.inv.inv.inv is t.inv
    assert t.inv.domain is t.codomain and t.inv.codomain is t.domain
    # the codomain's constraint holds for the outputs
    assert bool(t.codomain.check(y).all())


def test_transform_sign_matches_the_derivative() -> None:
    x = torch.linspace(-2.0, 2.0, 9, dtype=F64)[:, None]
    for name in ["Exp", "Sigmoid", "Affine", "AffineFixed[-2]", "Spline"]:
        b = PLANS[name][0]()(shape=torch.Size([1])).to(F64)
        perturb(b, 0.4)
        t = to_transform(b)
        dy = torch.autograd.functional.jacobian(lambda v, t=t: t(v).sum(0), x)  # (1, 9, 1)
        assert torch.all(torch.sign(dy.squeeze()) == t.sign), name
        assert t.inv.sign == t.sign
    compose = bij.Compose([bij.Exp(), bij.AffineFixed(scale=-1.0), bij.Invert(bij.AffineFixed(scale=-3.0))])
    assert to_transform(compose(shape=torch.Size([1]))).sign == 1
    for name in ["Permute", "AffineAutoregressive"]:
        with pytest.raises(NotImplementedError, match="no sign"):
            _ = to_transform(build(name)[0]).sign


@pytest.mark.parametrize("name", NAMES)
def test_flow_log_prob_equals_transformed_distribution(name: str) -> None:
    b, c = build(name)
    base = base_for(b.shape)
    flow = dist.Flow(base, b)
    y = flow.sample((6,), context=c)
    expected = flow.log_prob(y, context=c)
    batch = flow.batch_shape if c is None else c.shape[:-1]
    for flatten in (False, True):
        td = to_transformed_distribution(flow, c, flatten=flatten)
        assert td.event_shape == flow.event_shape and td.batch_shape == batch
        torch.testing.assert_close(td.log_prob(y), expected, atol=1e-10, rtol=1e-10)
        # built by hand from the exported transform, as torch users write it
        hand = TransformedDistribution(td.base_dist, to_transform(b, c, flatten=flatten))
        torch.testing.assert_close(hand.log_prob(y), expected, atol=1e-10, rtol=1e-10)
        assert td.rsample((2,)).shape == (2, *y.shape[1:])


def test_three_layer_flow_one_transform_or_torch_compose_of_layers() -> None:
    torch.manual_seed(1)
    plan = bij.Compose(
        [
            bij.AffineAutoregressive(made()),
            bij.Invert(bij.SplineAutoregressive(made(), count_bins=4)),
            bij.Spline(),
        ]
    )
    flow = dist.Flow(base_for(torch.Size([D])), plan).double()
    perturb(flow, 0.4, 3)
    y = torch.randn(7, D, dtype=F64)
    expected = flow.log_prob(y)
    layers = list(flow.bijector.layers())
    assert len(layers) == 3
    one = TransformedDistribution(flow.base_dist, to_transform(flow.bijector))
    ours = to_transformed_distribution(flow, flatten=True)
    assert isinstance(ours.transforms[0], ComposeTransform) and len(ours.transforms[0].parts) == 3
    # torch's own ComposeTransform (its log-det re-runs the layers forward from x)
    torchs = TransformedDistribution(flow.base_dist, ComposeTransform([to_transform(b) for b in layers]))
    # and the layers as a plain list of transforms
    listed = TransformedDistribution(flow.base_dist, [to_transform(b) for b in layers])
    for td in (one, ours, torchs, listed):
        torch.testing.assert_close(td.log_prob(y), expected, atol=1e-10, rtol=1e-10)
    # the inverse layer was exported flattened as torch's ``.inv`` of the inner transform
    inv_export = to_transform(layers[1], flatten=True)
    assert inv_export.inv.bijector is layers[1].bijector  # type: ignore[attr-defined]
    # gradients reach every parameter through torch's TransformedDistribution
    (-ours.log_prob(y).mean()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in flow.parameters())


def test_inside_bijective_mode_the_bijector_cache_serves_the_transform() -> None:
    b, _ = build("Compose(MAF, Permute, Spline)")
    flow = dist.Flow(base_for(b.shape), b)
    for flatten in (False, True):
        td = to_transformed_distribution(flow, flatten=flatten)
        t = td.transforms[0]
        with flowtorch.BijectiveMode():  # CacheMissWarning is an error in this suite
            x = td.base_dist.sample((5,))
            y = t(x)
            assert t.inv(y) is x
            s = td.rsample((4,))
            lp = td.log_prob(s)
        torch.testing.assert_close(lp, flow.log_prob(s), atol=1e-10, rtol=1e-10)
        assert type(s) is torch.Tensor and not hasattr(s, "_flowtorch_entry")


def test_conditioned_view_and_context_broadcast() -> None:
    b, c = build("SplineAutoregressive[context]")
    flow = dist.Flow(base_for(b.shape), b)
    assert c is not None
    view = flow.condition(c)
    td = to_transformed_distribution(view)
    assert td.batch_shape == view.batch_shape == (4,)
    y = view.sample((3,))
    torch.testing.assert_close(td.log_prob(y), view.log_prob(y), atol=1e-10, rtol=1e-10)
    # one context for all: batch dims of the inputs broadcast against it
    t = to_transform(b, c[0])
    x = torch.randn(6, D, dtype=F64)
    torch.testing.assert_close(t(x), b.forward(x, c[0]))


def test_with_cache_and_errors() -> None:
    b, _ = build("Affine")
    t = to_transform(b)
    assert t.with_cache(0) is t
    cached = t.with_cache(1)
    assert isinstance(cached, BijectorTransform) and cached._cache_size == 1 and cached == t
    x = torch.randn(2, D, dtype=F64)
    y = cached(x)
    assert cached(x) is y and cached.inv(y) is x
    with pytest.raises(TypeError, match="built flowtorch bijector"):
        to_transform(bij.Affine())  # a plan
    conditional, c = build("AffineCoupling[context]")
    with pytest.raises(ValueError, match="conditional"):
        to_transform(conditional)
    with pytest.raises(ValueError, match="trailing dims"):
        to_transform(conditional, torch.randn(3))
    with pytest.raises(ValueError, match="takes no context"):
        to_transform(b, c)
    with pytest.raises(TypeError, match="flowtorch Flow"):
        to_transformed_distribution(base_for(torch.Size([2])))  # type: ignore[arg-type]


def test_transformed_distribution_validates_against_the_codomain() -> None:
    # explicit: torch.compile turns torch's default validation off for the whole process
    flow = dist.Flow(base_for(torch.Size([2])), bij.Sigmoid(), validate_args=True).double()
    td = to_transformed_distribution(flow)
    assert td.support.event_dim == 1
    with pytest.raises(ValueError, match="support"):
        td.log_prob(torch.full((2,), 2.0, dtype=F64))  # outside (0, 1)
    assert isinstance(td.support, constraints.Constraint)


def test_export_on_device(device: torch.device) -> None:  # noqa: F811
    b, _ = build("Compose(MAF, Permute, Spline)")
    flow = dist.Flow(base_for(b.shape), b).to(device)
    td = to_transformed_distribution(flow)
    y = torch.randn(5, D, dtype=F64, device=device)
    lp = td.log_prob(y)
    assert lp.device.type == torch.device(device).type
    torch.testing.assert_close(lp, flow.log_prob(y), atol=1e-10, rtol=1e-10)


def _conditioner_calls(flow: dist.Flow) -> list[int]:
    """A counter of the flow's conditioner calls (one list cell, reset by the caller)."""
    calls = [0]
    for m in flow.modules():
        if isinstance(m, params.DenseAutoregressive):
            m.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.parametrize("flatten", [False, True], ids=["one-transform", "flattened"])
@pytest.mark.parametrize("recipe", ["MAF", "IAF"])
def test_transformed_distribution_scores_in_one_inverse_pass(recipe: str, flatten: bool) -> None:
    """``to_transformed_distribution(flow).log_prob`` calls the conditioners as often as
    ``flow.log_prob`` (a MAF: once a layer; an IAF: once a layer and dimension), with the same
    values and gradients, and leaves no entry behind."""
    from flowtorch.recipes import IAF, MAF

    torch.manual_seed(0)
    plan = (MAF if recipe == "MAF" else IAF)(layers=2, hidden_dims=(8,))
    flow = dist.Flow(base_for(torch.Size([4])), plan)
    perturb(flow, 0.4)
    calls = _conditioner_calls(flow)
    td = to_transformed_distribution(flow, flatten=flatten)
    y = torch.randn(5, 4, dtype=F64)
    lp = td.log_prob(y)
    td_calls, calls[0] = calls[0], 0
    ref = flow.log_prob(y)
    assert td_calls == calls[0] == (2 if recipe == "MAF" else 8)
    torch.testing.assert_close(lp, ref)
    weights = [p for p in flow.parameters() if p.requires_grad]
    torch.testing.assert_close(
        torch.autograd.grad(lp.sum(), weights), torch.autograd.grad(flow.log_prob(y).sum(), weights)
    )
    assert type(lp) is torch.Tensor
    # a second call after a parameter change sees the change: nothing is kept between calls
    with torch.no_grad():
        next(iter(weights)).add_(0.5)
    torch.testing.assert_close(td.log_prob(y), flow.log_prob(y))
    # torch's own classes keep working on it
    assert td.expand(torch.Size([3])).log_prob(y[:3]).shape == (3,)


def test_a_transformed_distribution_built_by_hand_scores_in_one_pass_inside_the_mode() -> None:
    """``TransformedDistribution(base, [to_transform(f)])`` is torch's class: its ``log_prob``
    asks for the inverse and the log-det in two calls, so outside the mode the log-det walks the
    layers again (twice the conditioner calls); inside ``BijectiveMode`` the second call is served
    from the first's entries."""
    from flowtorch.recipes import MAF

    torch.manual_seed(0)
    flow = dist.Flow(base_for(torch.Size([4])), MAF(layers=2, hidden_dims=(8,)))
    calls = _conditioner_calls(flow)
    td = TransformedDistribution(flow.base_dist, [to_transform(flow.bijector)])
    y = torch.randn(5, 4, dtype=F64)
    outside = td.log_prob(y)
    assert calls[0] == 4
    calls[0] = 0
    with flowtorch.BijectiveMode():
        inside = td.log_prob(y)
    assert calls[0] == 2
    torch.testing.assert_close(inside, outside)


def test_a_users_elementwise_bijector_declares_its_sign_as_a_class_attribute() -> None:
    """``sign`` is an extension point on the class: a new elementwise bijector declares it and
    its exported transform has it, in compositions and inverses too; no table elsewhere."""

    class Cube(Bijector):  # y = x^3 + x, increasing
        sign = 1

        def _forward_and_ladj(self, x: torch.Tensor, params: Any) -> tuple[torch.Tensor, torch.Tensor]:
            return x**3 + x, torch.log(3 * x**2 + 1)

    b = Cube(shape=torch.Size([2]))
    assert to_transform(b).sign == 1 and to_transform(b).inv.sign == 1
    flipped = bij.Compose([Cube(), bij.AffineFixed(scale=-2.0)])(shape=torch.Size([2]))
    assert to_transform(flipped).sign == -1
    assert to_transform(bij.Invert(Cube())(shape=torch.Size([2]))).sign == 1


def _normal(d: int) -> torch.distributions.Distribution:
    return Independent(Normal(torch.zeros(d, dtype=F64), torch.ones(d, dtype=F64)), 1)


def test_a_context_that_is_not_a_tensor_is_named() -> None:
    b = bij.Affine(params.Tensor())(shape=S([2]), context_shape=S([3]))
    with pytest.raises(TypeError, match=r"to_transform: Affine: context must be a torch\.Tensor, got list"):
        to_transform(b, [0.0, 0.0, 0.0])  # type: ignore[arg-type]


def test_transforms_of_one_bijector_and_context_are_equal_and_hash_alike() -> None:
    b = bij.Affine(params.Tensor())(shape=S([2]), context_shape=S([3]))
    c, other = torch.randn(3), torch.randn(3)
    t1, t2, t3 = to_transform(b, c), to_transform(b, c), to_transform(b, other)
    assert t1 == t2 and hash(t1) == hash(t2) and len({t1, t2}) == 1
    assert t1 != t3 and len({t1, t2, t3}) == 2
    assert t1 != to_transform(bij.Affine(params.Tensor())(shape=S([2]), context_shape=S([3])), c)
    assert t1 != "not a transform"


def test_repr_names_the_bijector_and_its_shapes() -> None:
    t = to_transform(bij.Spline(count_bins=4)(shape=S([3])))
    assert repr(t) == "BijectorTransform(Spline(shape=(3,), count_bins=4, bound=3.0, order='quadratic'))"


def test_a_flattened_compose_with_torchs_cache() -> None:
    torch.manual_seed(0)
    f = bij.Compose([bij.Affine(), bij.Exp(), bij.AffineFixed(loc=1.0, scale=-2.0)])(shape=S([2])).to(F64)
    perturb(f, 0.3, by_fan_in=False)
    t = to_transform(f, flatten=True)
    assert isinstance(t, ComposeTransform) and len(t.parts) == 3
    assert t.with_cache(0) is t
    cached = t.with_cache(1)
    assert isinstance(cached, ComposeTransform) and type(cached) is type(t)
    assert cached._cache_size == 1 and cached.parts == t.parts
    x = torch.randn(4, 2, dtype=F64)
    y = cached(x)
    assert cached(x) is y and cached.inv(y) is x  # torch's one-pair cache
    torch.testing.assert_close(y, f.forward(x))
    torch.testing.assert_close(cached.log_abs_det_jacobian(x, y), f.log_abs_det_jacobian(x, y))
    # by hand: log|det| of each layer summed over the event
    a, raw = next(iter(f.layers())).params_fn(None, None)
    s = soft_clamp(raw, -5.0, 3.0)  # Affine's log-scale, within its default bounds
    u = x * s.exp() + a
    expected = (s + u + torch.log(torch.tensor(2.0, dtype=F64))).sum(-1)
    torch.testing.assert_close(cached.log_abs_det_jacobian(x, y), expected)
    assert cached.with_cache(1) is cached
