"""Serialisation, dtypes and devices of whole flows, over every bijector case of the generic suite
(``tests.conftest.CASES``: every bijector class in ``flowtorch.bijectors`` plus each family's
``cases_*.py``) and every recipe on vectors in ``flowtorch.recipes``.

* ``state_dict`` into a freshly built flow, and ``torch.save``/``torch.load`` of the whole flow,
  give the same samples, log-densities and (where an inverse exists) ``log_prob``;
* ``.double()`` and ``.to(device)`` move everything, the base distribution's tensors included,
  and the results follow (float64 end to end; the ``--device`` option, see ``tests/_device.py``).
"""

from __future__ import annotations

import inspect
import io
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch.distributions import (
    AffineTransform,
    Categorical,
    Distribution,
    Independent,
    LowRankMultivariateNormal,
    MixtureSameFamily,
    MultivariateNormal,
    Normal,
    Transform,
    TransformedDistribution,
    constraints,
    transform_to,
)

import flowtorch.bijectors as bij
import flowtorch.distributions as dist
from flowtorch.core.bijector import Bijector
from flowtorch.recipes import flows
from tests._device import device  # noqa: F401  (fixture; conftest may also load the plugin)
from tests.conftest import CASES, CONTEXT_SHAPE, Case

F64 = torch.float64


def base_tensors(obj: Any, seen: set[int] | None = None) -> Iterator[torch.Tensor]:
    """Every tensor a distribution holds (its parameters, cached properties, nested parts)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (Distribution, Transform, constraints.Constraint)):
        for value in vars(obj).values():
            yield from base_tensors(value, seen)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from base_tensors(value, seen)
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from base_tensors(value, seen)


def all_tensors(flow: dist.Flow) -> list[torch.Tensor]:
    return [*flow.parameters(), *flow.buffers(), *base_tensors(flow.base_dist)]


def base_for(b: Bijector, dtype: torch.dtype) -> Distribution:
    """A standard normal on the bijector's event, pushed into its domain if that is not all reals."""
    shape = b.shape
    normal = Independent(Normal(torch.zeros(shape, dtype=dtype), torch.ones(shape, dtype=dtype)), len(shape))
    if _is_real(b.domain):
        return normal
    return TransformedDistribution(normal, [transform_to(b.domain)])


def _is_real(c: constraints.Constraint) -> bool:
    while isinstance(c, constraints.independent):
        c = c.base_constraint
    return c is constraints.real


def build(case: Case, dtype: torch.dtype = F64, seed: int = 0) -> tuple[dist.Flow, torch.Tensor | None]:
    torch.manual_seed(seed)
    b = case.make()(shape=torch.Size(case.shape), context_shape=CONTEXT_SHAPE if case.context else None)
    b = b.to(dtype)
    with torch.no_grad():
        for p in b.parameters():
            p.normal_(0.0, 0.4 / (p.shape[-1] if p.dim() > 1 else 1) ** 0.5)
    try:
        base = base_for(b, dtype)
    except NotImplementedError:
        pytest.skip(f"no torch transform_to for the domain {b.domain} to build a base distribution")
    context = torch.randn(CONTEXT_SHAPE, dtype=dtype) if case.context else None
    return dist.Flow(base, b), context


def draw(flow: dist.Flow, context: torch.Tensor | None, seed: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    y, log_p = flow.rsample_and_log_prob((4,), context=context)
    return y.detach(), log_p.detach()


def log_prob_or_none(flow: dist.Flow, y: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor | None:
    try:
        return flow.log_prob(y, context=context).detach()
    except NotImplementedError:  # a bijector without a closed-form inverse
        return None


def assert_same_flow(a: dist.Flow, b: dist.Flow, context: torch.Tensor | None, **tol: float) -> None:
    ya, la = draw(a, context)
    yb, lb = draw(b, context)
    torch.testing.assert_close(yb, ya, **tol)
    torch.testing.assert_close(lb, la, **tol)
    pa, pb = log_prob_or_none(a, ya, context), log_prob_or_none(b, ya, context)
    if pa is not None:
        assert pb is not None
        torch.testing.assert_close(pb, pa, **tol)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_state_dict_and_save_load_of_a_whole_flow(case: Case) -> None:
    flow, c = build(case)
    other, _ = build(case, seed=1)  # other initial parameters, permutations and orders
    other.load_state_dict(flow.state_dict())
    assert_same_flow(flow, other, c, atol=0.0, rtol=0.0)
    buffer = io.BytesIO()
    torch.save(flow, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert type(loaded) is dist.Flow and loaded.event_shape == flow.event_shape
    assert_same_flow(flow, loaded, c, atol=0.0, rtol=0.0)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_double_moves_everything_and_agrees_with_float32(case: Case) -> None:
    flow32, c = build(case, torch.float32)
    torch.manual_seed(3)
    z = flow32.base_dist.sample((5,)).to(F64)
    y32 = flow32.bijector.forward(z.float(), None if c is None else c).detach()
    flow64 = flow32.double()
    assert flow64 is flow32  # nn.Module semantics: in place, returns self
    assert all(t.dtype == F64 for t in all_tensors(flow64) if t.is_floating_point())
    c64 = None if c is None else c.double()
    y64, log_p = draw(flow64, c64)
    assert y64.dtype == F64 and log_p.dtype == F64
    torch.testing.assert_close(flow64.bijector.forward(z, c64).float(), y32, atol=2e-4, rtol=2e-4)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_to_device_moves_everything(case: Case, device: torch.device) -> None:  # noqa: F811
    flow, c = build(case)
    expected = draw(flow, c)
    moved = flow.to(device)
    assert all(t.device.type == device.type for t in all_tensors(moved))
    c_dev = None if c is None else c.to(device)
    y, log_p = moved.rsample_and_log_prob((4,), context=c_dev)
    assert y.device.type == device.type and log_p.device.type == device.type
    if device.type == "cpu":
        torch.testing.assert_close(draw(moved, c_dev), expected)


def _recipe_plans() -> list[tuple[str, Any]]:
    out = []
    for name in flows.__all__:  # the recipes on vectors (Glow, on images, has tests/recipes/test_glow.py)
        fn = getattr(flows, name)
        accepted = inspect.signature(fn).parameters
        small = {"layers": 2, "hidden_dims": (8,), "bins": 4}
        kwargs = {k: v for k, v in small.items() if k in accepted}
        out.append((name, fn, kwargs, None))
        if "context_shape" in accepted:
            out.append((f"{name}[context]", fn, kwargs, CONTEXT_SHAPE))
        if "autoregressive" in accepted:
            out.append((f"{name}[coupling]", fn, {**kwargs, "autoregressive": False}, None))
        if "additive" in accepted:
            out.append((f"{name}[additive]", fn, {**kwargs, "additive": True}, None))
    return [(n, (fn, kw, cs)) for n, fn, kw, cs in out]


RECIPES = _recipe_plans()


@pytest.mark.parametrize("recipe", [r for _, r in RECIPES], ids=[n for n, _ in RECIPES])
def test_recipes_round_trip_and_move(recipe: Any, device: torch.device, tmp_path: Any) -> None:  # noqa: F811
    fn, kwargs, context_shape = recipe
    normal = Independent(Normal(torch.zeros(3), torch.ones(3)), 1)

    def make(seed: int) -> dist.Flow:
        torch.manual_seed(seed)
        flow = dist.Flow(normal, fn(context_shape=context_shape, **kwargs))
        with torch.no_grad():
            for p in flow.parameters():
                p.normal_(0.0, 0.3 / (p.shape[-1] if p.dim() > 1 else 1) ** 0.5)
        return flow

    flow = make(0)
    c = None if context_shape is None else torch.randn(context_shape)
    other = make(1)
    other.load_state_dict(flow.state_dict())
    assert_same_flow(flow, other, c, atol=0.0, rtol=0.0)
    torch.save(flow, tmp_path / "flow.pt")
    assert_same_flow(flow, torch.load(tmp_path / "flow.pt", weights_only=False), c, atol=0.0, rtol=0.0)
    expected = draw(flow, c)
    flow.to(device=device, dtype=F64)
    assert all(
        t.device.type == device.type and t.dtype == F64 for t in all_tensors(flow) if t.is_floating_point()
    )
    c64 = None if c is None else c.to(device, F64)
    y, log_p = draw(flow, c64)
    assert y.dtype == F64 and y.device.type == device.type
    torch.testing.assert_close((y.float().cpu(), log_p.float().cpu()), expected, atol=1e-4, rtol=1e-4)


def _bases() -> dict[str, Distribution]:
    loc = torch.tensor([0.5, -1.0])
    scale_tril = torch.tensor([[1.0, 0.0], [0.3, 0.7]])
    mvn = MultivariateNormal(loc, scale_tril=scale_tril)
    _ = mvn.covariance_matrix, mvn.precision_matrix  # cached lazily in the object's __dict__
    mixture = MixtureSameFamily(
        Categorical(logits=torch.tensor([0.2, -0.3, 0.1])),
        Independent(Normal(torch.randn(3, 2), torch.rand(3, 2) + 0.5), 1),
    )
    affine = AffineTransform(torch.tensor([1.0, 2.0]), torch.tensor([0.5, 3.0]), event_dim=1)
    _ = affine.inv  # the inverse transform, which refers back to the transform
    pushed = TransformedDistribution(Independent(Normal(torch.zeros(2), torch.ones(2)), 1), [affine])
    low_rank = LowRankMultivariateNormal(loc, torch.tensor([[0.3], [0.2]]), torch.tensor([0.5, 1.5]))
    return {
        "MultivariateNormal": mvn,
        "MixtureSameFamily": mixture,
        "TransformedDistribution": pushed,
        "LowRankMultivariateNormal": low_rank,
    }


@pytest.mark.parametrize("name", list(_bases()))
def test_base_distributions_follow_the_flow(name: str, device: torch.device) -> None:  # noqa: F811
    torch.manual_seed(0)
    base = _bases()[name]
    flow = dist.Flow(base, bij.Compose([bij.AffineAutoregressive(), bij.Spline(count_bins=4)]))
    y = torch.randn(6, 2, dtype=F64)
    expected = flow.log_prob(y.float()).detach()
    flow.to(device=device, dtype=F64)
    assert all(t.device.type == device.type for t in all_tensors(flow))
    assert all(t.dtype == F64 for t in all_tensors(flow) if t.is_floating_point())
    assert flow.base_dist is not base and all(t.dtype == torch.float32 for t in base_tensors(base))
    log_p = flow.log_prob(y.to(device)).detach()
    assert log_p.dtype == F64 and log_p.device.type == device.type
    torch.testing.assert_close(log_p.float().cpu(), expected, atol=1e-4, rtol=1e-4)
    assert flow.sample((3,)).dtype == F64  # (MixtureSameFamily has no rsample)
    # the moved flow still saves and loads
    buffer = io.BytesIO()
    torch.save(flow, buffer)
    buffer.seek(0)
    torch.testing.assert_close(torch.load(buffer, weights_only=False).log_prob(y.to(device)), log_p)


def test_conditioned_view_moves_its_context_and_expand_shares_parameters() -> None:
    torch.manual_seed(0)
    normal = Independent(Normal(torch.zeros(3), torch.ones(3)), 1)
    flow = dist.Flow(normal, bij.SplineAutoregressive(count_bins=4), context_shape=(2,))
    view = flow.condition(torch.randn(4, 2)).double()
    assert view._context is not None and view._context.dtype == F64
    assert view.sample((2,)).shape == (2, 4, 3)
    # the view shares the modules and the base with the flow: moving one moved both
    assert all(t.dtype == F64 for t in all_tensors(flow) if t.is_floating_point())
    assert flow.base_dist is view.base_dist
    expanded = dist.Flow(normal, bij.Affine()).expand((5, 1))
    assert expanded.batch_shape == (5, 1) and expanded.sample((2,)).shape == (2, 5, 1, 3)
    assert expanded.log_prob(torch.randn(5, 7, 3)).shape == (5, 7)
    wide = expanded.expand((2, 5, 4))
    assert wide.batch_shape == (2, 5, 4) and wide.rsample().shape == (2, 5, 4, 3)
    assert next(iter(wide.parameters())) is next(iter(expanded.parameters()))
    with pytest.raises(ValueError, match="cannot expand"):
        expanded.expand((3,))
    conditioned = flow.condition(torch.randn(4, 2, dtype=F64)).expand((6, 4))
    assert conditioned.batch_shape == (6, 4) and conditioned.sample().shape == (6, 4, 3)
    # moving the flow moves the base that its earlier expanded views use
    flow.float()
    assert conditioned.base_dist.batch_shape == (6, 4)
    assert all(t.dtype == torch.float32 for t in base_tensors(conditioned.base_dist))


def test_a_flow_as_the_base_of_a_flow_is_a_submodule_and_moves() -> None:
    torch.manual_seed(0)
    inner = dist.Flow(Independent(Normal(torch.zeros(2), torch.ones(2)), 1), bij.AffineAutoregressive())
    outer = dist.Flow(inner, bij.Spline(count_bins=4))
    assert outer.base_dist is inner
    names = dict(outer.named_parameters())
    assert any(n.startswith("base_dist.bijector.") for n in names)
    assert len(names) == len(dict(inner.named_parameters())) + len(dict(outer.bijector.named_parameters()))
    outer.double()
    assert all(t.dtype == F64 for t in all_tensors(inner) if t.is_floating_point())
    y, log_p = outer.rsample_and_log_prob((3,))
    assert y.dtype == F64
    torch.testing.assert_close(outer.log_prob(y), log_p, atol=1e-8, rtol=1e-8)


def test_a_flow_pickled_with_the_base_as_a_plain_attribute_still_loads() -> None:
    """Flows saved before the base distribution moved into a holder shared with views."""
    import pickle

    torch.manual_seed(0)
    flow = dist.Flow(Independent(Normal(torch.zeros(2), torch.ones(2)), 1), bij.Affine())
    y = torch.randn(3, 2)
    state = flow.__dict__.copy()
    old = object.__new__(dist.Flow)
    old.__dict__.update(state)
    old.__dict__["base_dist"] = old.__dict__.pop("_base").dist
    for key in ("_base_batch", "_expanded"):
        del old.__dict__[key]
    loaded = pickle.loads(pickle.dumps(old))
    torch.testing.assert_close(loaded.log_prob(y), flow.log_prob(y))
    assert loaded.double().base_dist.mean.dtype == F64
