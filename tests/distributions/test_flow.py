"""``Flow``: sampling, scoring, conditioning, serialisation; expanding to a bad batch shape, empty
batches and wrong shapes outside the reals, normalize, score_parts without rsample, moving bases
that hold caches and dicts, and the validation's shape check."""

from __future__ import annotations

import io
import math
from typing import ClassVar

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.distributions import (
    AffineTransform,
    Distribution,
    Independent,
    MultivariateNormal,
    Normal,
    TransformedDistribution,
    constraints,
)

import flowtorch
import flowtorch.bijectors as bij
import flowtorch.distributions as dist
import flowtorch.parameters as params
from flowtorch.distributions.flow import _shape_fits
from flowtorch.ops import soft_clamp

S = torch.Size
F64 = torch.float64


def normal(d: int, dtype: torch.dtype = torch.float32) -> torch.distributions.Distribution:
    return torch.distributions.Independent(
        torch.distributions.Normal(torch.zeros(d, dtype=dtype), torch.ones(d, dtype=dtype)), 1
    )


def perturb(module: torch.nn.Module, scale: float = 0.3) -> None:
    torch.manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, scale / (p.shape[-1] if p.dim() > 1 else 1) ** 0.5)


def test_density_integrates_to_one_in_1d() -> None:
    flow = dist.Flow(
        normal(1, torch.float64), bij.Compose([bij.Spline(), bij.Affine(), bij.Spline(count_bins=5)])
    )
    flow = flow.double()
    perturb(flow, 1.0)
    grid = torch.linspace(-25, 25, 200001, dtype=torch.float64)[:, None]
    density = flow.log_prob(grid).exp().detach()
    mass = torch.trapezoid(density, grid[:, 0])
    assert abs(mass.item() - 1.0) < 1e-6


def test_log_prob_matches_change_of_variables_by_hand() -> None:
    flow = dist.Flow(normal(3), bij.AffineAutoregressive(params.DenseAutoregressive(hidden_dims=(8,))))
    perturb(flow)
    y = torch.randn(10, 3)
    z = flow.bijector.inverse(y)
    ladj = flow.bijector.log_abs_det_jacobian(z, y)
    torch.testing.assert_close(flow.log_prob(y), normal(3).log_prob(z) - ladj)


def test_sample_shapes_and_gradients() -> None:
    flow = dist.Flow(normal(2), bij.AffineAutoregressive())
    assert flow.sample().shape == (2,)
    assert flow.sample((4, 5)).shape == (4, 5, 2)
    assert not flow.sample((3,)).requires_grad
    y = flow.rsample((3,))
    assert y.requires_grad
    y, lp = flow.rsample_and_log_prob((6,))
    assert y.shape == (6, 2) and lp.shape == (6,)
    torch.testing.assert_close(lp, flow.log_prob(y), atol=1e-5, rtol=1e-5)
    assert flow.event_shape == (2,) and flow.batch_shape == ()


def test_batched_base_distribution() -> None:
    base = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(4, 2), torch.ones(4, 2)), 1)
    flow = dist.Flow(base, bij.Affine())
    assert flow.batch_shape == (4,)
    y = flow.rsample((3,))
    assert y.shape == (3, 4, 2)
    assert flow.log_prob(y).shape == (3, 4)


class TestConditional:
    def make(self) -> dist.Flow:
        plan = bij.Compose([bij.AffineAutoregressive(), bij.Permute(), bij.SplineAutoregressive()])
        flow = dist.Flow(normal(3), plan, context_shape=(2,))
        perturb(flow)
        return flow

    def test_context_broadcasts_against_samples(self) -> None:
        flow = self.make()
        c = torch.randn(5, 2)
        y = flow.rsample((4,), context=c)
        assert y.shape == (4, 5, 3)
        assert flow.log_prob(y, context=c).shape == (4, 5)
        y1 = flow.rsample(context=c[0])
        assert y1.shape == (3,)
        y, lp = flow.rsample_and_log_prob((7,), context=c)
        assert y.shape == (7, 5, 3) and lp.shape == (7, 5)
        torch.testing.assert_close(lp, flow.log_prob(y, context=c), atol=1e-4, rtol=1e-4)

    def test_context_matters(self) -> None:
        flow = self.make()
        y = torch.randn(3)
        a = flow.log_prob(y, context=torch.zeros(2))
        b = flow.log_prob(y, context=torch.ones(2))
        assert not torch.allclose(a, b)

    def test_condition_returns_a_view_sharing_parameters(self) -> None:
        flow = self.make()
        c = torch.randn(5, 2)
        view = flow.condition(c)
        assert view.batch_shape == (5,)
        assert flow.batch_shape == ()
        assert view.sample((2,)).shape == (2, 5, 3)
        y = torch.randn(5, 3)
        torch.testing.assert_close(view.log_prob(y), flow.log_prob(y, context=c))
        assert next(iter(view.parameters())) is next(iter(flow.parameters()))
        with pytest.raises(ValueError, match="pass context="):
            flow.log_prob(y)  # the original stays unconditioned

    def test_context_errors(self) -> None:
        flow = self.make()
        with pytest.raises(ValueError, match="conditional"):
            flow.sample((2,))
        with pytest.raises(ValueError, match="trailing dims must be"):
            flow.sample((2,), context=torch.randn(4, 3))
        plain = dist.Flow(normal(3), bij.AffineAutoregressive())
        with pytest.raises(ValueError, match="not conditional"):
            plain.log_prob(torch.randn(3), context=torch.randn(2))


def test_state_dict_and_save_load_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(3)
    plan = bij.Compose([bij.AffineAutoregressive(), bij.Permute(), bij.Spline()])
    flow = dist.Flow(normal(4), plan)
    perturb(flow)
    y = torch.randn(6, 4)
    expected = flow.log_prob(y)
    torch.manual_seed(99)  # a different random permutation and MADE ordering
    other = dist.Flow(normal(4), bij.Compose([bij.AffineAutoregressive(), bij.Permute(), bij.Spline()]))
    assert not torch.allclose(other.log_prob(y), expected)
    other.load_state_dict(flow.state_dict())
    torch.testing.assert_close(other.log_prob(y), expected)
    buffer = io.BytesIO()
    torch.save(flow, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    torch.testing.assert_close(loaded.log_prob(y), expected)
    assert "bijector.bijectors.1.permutation" in flow.state_dict()


def test_float64_end_to_end() -> None:
    flow = dist.Flow(normal(3, torch.float64), bij.AffineAutoregressive()).double()
    y = flow.rsample((4,))
    assert y.dtype == torch.float64
    assert flow.log_prob(y).dtype == torch.float64


def test_flow_validates_its_arguments() -> None:
    with pytest.raises(TypeError, match="torch Distribution"):
        dist.Flow("normal", bij.Affine())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"event.shape"):
        dist.Flow(normal(3), bij.Affine(shape=torch.Size([2])))
    flow = dist.Flow(normal(3), bij.Affine())
    with pytest.raises(ValueError, match=r"event.shape"):
        flow.log_prob(torch.randn(5, 2))


def test_neals_funnel() -> None:
    target = dist.NealsFunnel()
    torch.manual_seed(0)
    s = target.sample((200000,))
    assert s.shape == (200000, 2)
    assert abs(s[:, 1].std().item() - 3.0) < 0.05
    v = torch.tensor([0.5, -1.0])
    x = torch.tensor([0.3, 0.1])
    expected = (
        -0.5 * (v / 3) ** 2
        - math.log(3 * math.sqrt(2 * math.pi))
        - 0.5 * x**2 / v.exp()
        - 0.5 * v
        - 0.5 * math.log(2 * math.pi)
    )
    torch.testing.assert_close(target.log_prob(torch.stack([x, v], -1)), expected)


def test_mode_inside_training_loop_matches_plain_loop() -> None:
    """A VI loop run inside BijectiveMode takes the same steps as one run outside it."""

    def train(use_mode: bool) -> torch.Tensor:
        torch.manual_seed(0)
        plan = bij.Compose(
            [bij.Invert(bij.AffineAutoregressive(params.DenseAutoregressive(hidden_dims=(8,))))] * 2
        )
        flow = dist.Flow(normal(2), plan)
        opt = torch.optim.Adam(flow.parameters(), lr=1e-2)
        target = dist.NealsFunnel()
        for _ in range(5):
            opt.zero_grad()
            if use_mode:
                with flowtorch.BijectiveMode():
                    z = flow.rsample((16,))
                    loss = (flow.log_prob(z) - target.log_prob(z)).mean()
            else:
                z, lp = flow.rsample_and_log_prob((16,))
                loss = (lp - target.log_prob(z)).mean()
            loss.backward()
            opt.step()
        return torch.cat([p.detach().flatten() for p in flow.parameters()])

    torch.testing.assert_close(train(True), train(False), atol=1e-5, rtol=1e-5)


def _normal(d: int, *batch: int) -> Distribution:
    return Independent(Normal(torch.zeros(*batch, d), torch.ones(*batch, d)), 1)


def _perturb(module: torch.nn.Module) -> None:
    torch.manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, 0.5)


@pytest.mark.parametrize(("batch", "target"), [((3,), (2,)), ((3,), (3, 2)), ((2, 3), (3,))])
def test_expand_to_an_incompatible_batch_shape_is_named(
    batch: tuple[int, ...], target: tuple[int, ...]
) -> None:
    flow = dist.Flow(_normal(2, *batch), bij.Exp())
    with pytest.raises(ValueError, match=rf"Flow.expand: cannot expand batch_shape \({batch[0]},"):
        flow.expand(target)


def _sigmoid_flow() -> dist.Flow:
    base = MultivariateNormal(torch.zeros(2), torch.eye(2), validate_args=False)
    return dist.Flow(base, bij.Sigmoid(), validate_args=False)


def test_an_empty_batch_outside_the_reals_scores_to_an_empty_result() -> None:
    flow = _sigmoid_flow()
    log_p = flow.log_prob(torch.empty(0, 2))
    assert log_p.shape == (0,)
    log_p = flow.log_prob(torch.empty(3, 0, 2))
    assert log_p.shape == (3, 0)
    # wrong event sizes in an empty batch are still named by the bijector
    with pytest.raises(ValueError, match=r"Sigmoid: y has shape \(0, 3\), but its trailing dims"):
        flow.log_prob(torch.empty(0, 3))


def test_a_value_with_too_few_dims_outside_the_reals_is_named_by_the_bijector() -> None:
    flow = _sigmoid_flow()
    with pytest.raises(
        ValueError, match=r"Sigmoid: y has shape \(\), but its trailing dims must be the event"
    ):
        flow.log_prob(torch.tensor(0.5))


def test_normalize_and_rnormalize_map_to_the_base_space() -> None:
    flow = dist.Flow(_normal(2), bij.Affine(params.Tensor()), context_shape=S([3]))
    _perturb(flow)
    c = torch.randn(4, 3)
    y = torch.randn(4, 2)
    a, raw = flow.bijector.params_fn(None, c)
    s = soft_clamp(raw, -5.0, 3.0)  # Affine's log-scale, within its default bounds
    expected = (y - a) * torch.exp(-s)  # by hand, y = z exp(s) + a
    z = flow.rnormalize(y, c)
    torch.testing.assert_close(z, expected)
    assert z.requires_grad
    z0 = flow.normalize(y, c)
    torch.testing.assert_close(z0, expected)
    assert not z0.requires_grad
    view = flow.condition(c)
    torch.testing.assert_close(view.normalize(y), expected)
    with pytest.raises(ValueError, match="this flow is conditional"):
        flow.normalize(y)


def test_score_parts_of_a_flow_without_rsample_follow_pyros_convention() -> None:
    pyro_td = pytest.importorskip("pyro.distributions.torch_distribution")

    class ScoreFunctionFlow(dist.Flow):
        has_rsample = False

    flow = ScoreFunctionFlow(_normal(2), bij.Affine())
    _perturb(flow)
    y = torch.randn(5, 2)
    parts = flow.score_parts(y)
    reference = pyro_td.TorchDistributionMixin.score_parts(flow, y)
    torch.testing.assert_close(parts.log_prob, flow.log_prob(y))
    torch.testing.assert_close(parts.score_function, reference.score_function)
    assert parts.entropy_term == reference.entropy_term == 0


def test_moving_a_base_whose_transform_caches_drops_the_cache() -> None:
    loc, scale = torch.tensor([0.5, -1.0]), torch.tensor([2.0, 0.5])
    t = AffineTransform(loc, scale, cache_size=1)
    inner = TransformedDistribution(Normal(torch.zeros(2), torch.ones(2)), [t])
    base = Independent(inner, 1)
    inner.sample()  # fills the transform's one-pair cache
    assert t._cached_x_y[0] is not None
    flow = dist.Flow(base, bij.Exp()).double()
    moved = flow.base_dist.base_dist.transforms[0]
    assert moved is not t and moved._cached_x_y == (None, None)
    assert moved.loc.dtype == moved.scale.dtype == F64
    assert t._cached_x_y[0] is not None and t.loc.dtype == torch.float32  # the original is untouched
    y = torch.rand(3, 2, dtype=F64) + 0.1
    z = (y.log() - loc.double()) / scale.double()
    expected = (Normal(0.0, 1.0).log_prob(z) - scale.double().log() - y.log()).sum(-1)
    torch.testing.assert_close(flow.log_prob(y), expected)


class _DictNormal(Distribution):
    """A normal distribution on vectors whose parameters live in a dict."""

    arg_constraints: dict[str, constraints.Constraint] = {}  # noqa: RUF012
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor) -> None:
        self.parts = {"loc": loc, "scale": scale, "name": "dict-normal"}
        self.meta = {"kind": "normal"}  # no tensors: shared, not copied
        super().__init__(S(), loc.shape, validate_args=False)

    def rsample(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:  # type: ignore[override]
        eps = torch.randn(S(sample_shape) + self.event_shape, dtype=self.parts["loc"].dtype)
        return self.parts["loc"] + self.parts["scale"] * eps

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return Normal(self.parts["loc"], self.parts["scale"]).log_prob(value).sum(-1)


def test_moving_a_base_that_holds_tensors_in_a_dict() -> None:
    base = _DictNormal(torch.tensor([1.0, -2.0]), torch.tensor([0.5, 3.0]))
    flow = dist.Flow(base, bij.AffineFixed(loc=1.0, scale=2.0)).double()
    moved = flow.base_dist
    assert moved is not base and moved.parts is not base.parts
    assert (
        moved.parts["loc"].dtype == moved.parts["scale"].dtype == F64 and moved.parts["name"] == "dict-normal"
    )
    assert base.parts["loc"].dtype == torch.float32  # the original is untouched
    assert moved.meta is base.meta
    assert flow.sample((4,)).dtype == F64
    y = torch.randn(4, 2, dtype=F64)
    z = (y - 1.0) / 2.0
    expected = Normal(moved.parts["loc"], moved.parts["scale"]).log_prob(z).sum(-1) - 2 * torch.log(
        torch.tensor(2.0, dtype=F64)
    )
    torch.testing.assert_close(flow.log_prob(y), expected)


class _HoldsContainers(torch.distributions.Distribution):
    """A base distribution whose tensors sit in containers of several kinds."""

    arg_constraints: ClassVar[dict] = {}
    support = torch.distributions.constraints.real_vector

    def __init__(self) -> None:
        import collections

        point = collections.namedtuple("point", "loc scale")
        self.pair = point(torch.zeros(2), torch.ones(2))
        self.by_name = collections.OrderedDict(loc=torch.zeros(2))
        self.counts = collections.defaultdict(list, {"a": torch.ones(2)})
        super().__init__(event_shape=torch.Size([2]), validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        loc, scale = self.pair
        return torch.distributions.Normal(loc, scale).log_prob(value).sum(-1)


def test_to_converts_tensors_inside_container_subclasses_of_the_base() -> None:
    import collections

    flow = dist.Flow(_HoldsContainers(), bij.Exp())
    moved = flow.double()
    base = moved.base_dist
    assert type(base.pair).__name__ == "point" and base.pair.loc.dtype == torch.float64
    assert type(base.by_name) is collections.OrderedDict and base.by_name["loc"].dtype == torch.float64
    assert type(base.counts) is collections.defaultdict and base.counts.default_factory is list
    assert base.counts["a"].dtype == torch.float64


@settings(max_examples=150, deadline=None)
@given(
    value_shape=st.lists(st.integers(1, 3), max_size=4),
    batch_shape=st.lists(st.integers(1, 3), max_size=2),
)
def test_validation_shape_check_agrees_with_torch(value_shape: list[int], batch_shape: list[int]) -> None:
    """``validate_args=True`` checks shapes in Python before its one finiteness pass; it accepts
    exactly the shapes that torch's ``_validate_sample`` accepts, and rejects the others with
    torch's message."""
    base = torch.distributions.Independent(
        torch.distributions.Normal(torch.zeros(*batch_shape, 2), torch.ones(*batch_shape, 2)), 1
    )
    flow = dist.Flow(base, bij.Exp(), validate_args=True)
    value = torch.ones(value_shape)
    try:
        torch.distributions.Distribution._validate_sample(flow, value)
        torch_accepts = True
    except ValueError:
        torch_accepts = False
    assert _shape_fits(value.shape, flow.batch_shape, flow.event_shape) == torch_accepts
    if not torch_accepts:
        with pytest.raises(ValueError, match=r"size of value must match event_shape|not broadcastable"):
            flow.log_prob(value)


def test_validation_accepts_finite_values_whose_sum_overflows() -> None:
    """The finiteness check screens with one sum; a sum that overflows takes the exact path."""
    base = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(3), torch.ones(3)), 1)
    flow = dist.Flow(base, bij.AffineFixed(scale=2.0), validate_args=True)
    big = torch.full((2, 3), 3e38)
    assert not torch.isfinite(big.sum())
    lp = flow.log_prob(big)  # no error: every entry is finite
    torch.testing.assert_close(lp, base.log_prob(big / 2.0) - 3 * math.log(2.0))
    for bad, kind in ((torch.inf, "inf"), (torch.nan, "NaN")):
        match = rf"1 non-finite entry \(1 {kind}\)"
        value = big.clone()
        value[1, 2] = bad
        with pytest.raises(ValueError, match=match):
            flow.log_prob(value)
