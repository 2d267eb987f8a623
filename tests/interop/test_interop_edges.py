"""``flowtorch.interop``: equality and hashing, repr, torch's cache on a flattened Compose, the
Pyro wrapper's support, sampling, repr and context, and the errors not checked elsewhere."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import ComposeTransform, Independent, Normal

import flowtorch.bijectors as bij
import flowtorch.distributions as dist
import flowtorch.parameters as params
from flowtorch.interop import to_pyro, to_transform
from flowtorch.ops import soft_clamp
from tests.case import perturb

S = torch.Size
F64 = torch.float64


def _normal(d: int) -> torch.distributions.Distribution:
    return Independent(Normal(torch.zeros(d, dtype=F64), torch.ones(d, dtype=F64)), 1)


def test_a_context_that_is_not_a_tensor_is_named() -> None:
    b = bij.Affine(params.Tensor())(shape=S([2]), context_shape=S([3]))
    with pytest.raises(TypeError, match=r"to_transform: the context must be a torch\.Tensor, got list"):
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


pyro = pytest.importorskip("pyro")


def _sigmoid_flow() -> dist.Flow:
    torch.manual_seed(0)
    flow = dist.Flow(_normal(2), bij.Compose([bij.Affine(), bij.Sigmoid()])).to(F64)
    perturb(flow, 0.3, by_fan_in=False)
    return flow


def test_to_pyro_takes_only_a_flow() -> None:
    with pytest.raises(TypeError, match="to_pyro takes a flowtorch Flow, got Independent"):
        to_pyro(_normal(2))  # type: ignore[arg-type]


def test_pyro_wrapper_support_sample_and_repr() -> None:
    flow = _sigmoid_flow()
    wrapped = to_pyro(flow)
    assert wrapped.support is flow.support
    assert bool(wrapped.support.check(torch.tensor([0.2, 0.9], dtype=F64)))
    assert not bool(wrapped.support.check(torch.tensor([0.2, 1.5], dtype=F64)))
    torch.manual_seed(1)
    y = wrapped.sample((3,))
    assert y.shape == (3, 2) and not y.requires_grad
    assert bool(((y > 0) & (y < 1)).all())
    torch.manual_seed(1)
    torch.testing.assert_close(y, flow.sample((3,)))  # the same draws as the flow
    assert repr(wrapped) == "PyroFlow(batch_shape=(), event_shape=(2,))"
    assert repr(wrapped.expand((4,))) == "PyroFlow(batch_shape=(4,), event_shape=(2,))"


def test_to_pyro_binds_a_context() -> None:
    torch.manual_seed(0)
    flow = dist.Flow(_normal(2), bij.Affine(params.Tensor()), context_shape=S([3])).to(F64)
    perturb(flow, 0.3, by_fan_in=False)
    c = torch.randn(5, 3, dtype=F64)
    wrapped = to_pyro(flow, c)
    assert wrapped.batch_shape == (5,) and wrapped.event_shape == (2,)
    y = wrapped.rsample()
    assert y.shape == (5, 2) and y.requires_grad
    torch.testing.assert_close(wrapped.log_prob(y), flow.log_prob(y, c))
    # by hand: y = z exp(s) + a with (a, s) affine in the context
    a, raw = flow.bijector.params_fn(None, c)
    s = soft_clamp(raw, -5.0, 3.0)  # Affine's log-scale, within its default bounds
    z = (y - a) * torch.exp(-s)
    expected = Normal(0.0, 1.0).log_prob(z).sum(-1) - s.sum(-1)
    torch.testing.assert_close(wrapped.log_prob(y), expected)
    with pytest.raises(ValueError, match="context has shape \\(5, 2\\)"):
        to_pyro(flow, torch.randn(5, 2, dtype=F64))
