"""``Flow``: sampling, scoring, conditioning, serialisation."""

from __future__ import annotations

import io
import math

import pytest
import torch

import flowtorch
import flowtorch.bijectors as bij
import flowtorch.distributions as dist
import flowtorch.parameters as params


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
