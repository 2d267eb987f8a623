"""flowtorch 0.8's README and tutorial code runs unchanged (shortened to a few hundred steps)."""

from __future__ import annotations

import warnings

import pytest
import torch

import flowtorch
import flowtorch.bijectors as bij
import flowtorch.distributions as dist
import flowtorch.parameters as params


def test_bivariate_normal_tutorial() -> None:
    torch.manual_seed(0)
    dist_x = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(2), torch.ones(2)), 1)
    bijector = bij.AffineAutoregressive(params.DenseAutoregressive(hidden_dims=(32,)))
    flow = dist.Flow(dist_x, bijector)
    dist_y = torch.distributions.Independent(
        torch.distributions.Normal(torch.zeros(2) + 5, torch.ones(2) * 0.5), 1
    )

    opt = torch.optim.Adam(flow.parameters(), lr=5e-3)
    for _ in range(3001):
        opt.zero_grad()
        y = dist_y.sample((128,))
        loss = -flow.log_prob(y).mean()
        loss.backward()
        opt.step()

    samples = flow.sample((5000,))
    torch.testing.assert_close(samples.mean(0), torch.full((2,), 5.0), atol=0.1, rtol=0)
    torch.testing.assert_close(samples.std(0), torch.full((2,), 0.5), atol=0.1, rtol=0)
    # the optimum is the target's entropy: 2 * (0.5 * log(2 pi e) + log 0.5)
    assert abs(loss.item() - 1.4515) < 0.1


def test_neals_funnel_vi_tutorial() -> None:
    torch.manual_seed(0)
    base_dist = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(2), torch.ones(2)), 1)
    target_dist = dist.NealsFunnel()
    bijectors = bij.Compose(
        bijectors=[
            bij.Invert(bij.AffineAutoregressive(params.DenseAutoregressive(hidden_dims=(32,)))),
            bij.Invert(bij.AffineAutoregressive(params.DenseAutoregressive(hidden_dims=(32,)))),
        ]
    )
    flow = dist.Flow(base_dist, bijectors)
    opt = torch.optim.Adam(flow.parameters(), lr=1e-2)
    losses = []
    for _ in range(300):
        opt.zero_grad()
        z = flow.rsample((256,))
        loss = (flow.log_prob(z) - target_dist.log_prob(z)).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # reverse KL starts well above and ends near its minimum, 0
    assert sum(losses[-20:]) / 20 < 0.3 < sum(losses[:5]) / 5
    v = flow.sample((5000,))[:, 1]
    assert 1.5 < v.std().item() < 3.5


def test_an_affine_log_scale_past_its_bound_still_gets_a_gradient_and_comes_back() -> None:
    """A log-scale that overshoots ``log_scale_max_clip`` (3) must feel the loss: a hard clip gave it
    a zero gradient, so an overshoot was permanent (0.8's tutorial ended with a std of 20 for 0.5)."""
    torch.manual_seed(0)
    base = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(1), torch.ones(1)), 1)
    flow = dist.Flow(base, bij.Affine())
    log_scale = flow.bijector.params_fn.params[1]
    with torch.no_grad():
        log_scale.fill_(8.0)  # far past the bound
    data = torch.randn(256, 1) * 0.1
    (-flow.log_prob(data).mean()).backward()
    assert log_scale.grad is not None and log_scale.grad.item() > 0.01  # a loss wanting a smaller scale

    opt = torch.optim.Adam(flow.parameters(), lr=0.2)
    for _ in range(150):
        opt.zero_grad()
        (-flow.log_prob(data).mean()).backward()
        opt.step()
    assert abs(flow.sample((20_000,)).std().item() - 0.1) < 0.01  # back to the data's scale


def test_a_bijector_written_to_the_08_protocol_gets_an_error_that_says_how_to_port_it() -> None:
    """0.8's ``_forward`` returned ``(y, log|det J|)``; here it returns ``y`` only."""

    class Cube(bij.Bijector):
        def _forward(self, x, params):  # type: ignore[no-untyped-def]
            y = x**3 + x
            return y, torch.log(3 * x**2 + 1)  # the 0.8 protocol

    base = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(2), torch.ones(2)), 1)
    flow = dist.Flow(base, Cube())
    for call in (lambda: flow.rsample((3,)), lambda: flow.rsample_and_log_prob((3,))):
        with pytest.raises(TypeError, match=r"Cube._forward returned a tuple of 2.*_log_abs_det_jacobian"):
            call()
    with flowtorch.BijectiveMode(), pytest.raises(TypeError, match="Custom bijectors"):
        flow.rsample((3,))


def test_sampling_through_a_maf_says_once_that_it_is_sequential_and_names_the_iaf(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """0.8's AffineAutoregressive ran the other way round; the first slow sample says so."""
    from flowtorch.core import bijector as _base

    monkeypatch.setattr(_base, "_WARNED_SEQUENTIAL", set())
    d = 16
    base = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(d), torch.ones(d)), 1)
    flow = dist.Flow(base, bij.AffineAutoregressive(params.DenseAutoregressive()))
    with pytest.warns(
        bij.SequentialSamplingWarning, match=r"16 sequential .*bij.Invert\(AffineAutoregressive"
    ):
        flow.rsample((2,))
    with warnings.catch_warnings():
        warnings.simplefilter("error", bij.SequentialSamplingWarning)
        flow.rsample((2,))  # once per class
        small = dist.Flow(
            torch.distributions.Independent(torch.distributions.Normal(torch.zeros(2), torch.ones(2)), 1),
            bij.Invert(bij.AffineAutoregressive(params.DenseAutoregressive())),
        )
        small.rsample((2,))  # the IAF direction: one pass


def test_sigmoid_bias_is_accepted_as_in_08_and_says_it_has_no_effect() -> None:
    """0.8's ``AffineAutoregressive`` took ``sigmoid_bias`` and ignored it: its default passes
    silently, any other value warns that it changes nothing (and it changes nothing)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bij.AffineAutoregressive(sigmoid_bias=2.0)(shape=torch.Size([3]))
    torch.manual_seed(0)
    plain = bij.AffineAutoregressive()(shape=torch.Size([3]))
    with pytest.warns(UserWarning, match="sigmoid_bias has no effect"):
        biased = bij.AffineAutoregressive(sigmoid_bias=5.0)(shape=torch.Size([3]))
    biased.load_state_dict(plain.state_dict())
    x = torch.randn(4, 3)
    torch.testing.assert_close(biased.forward(x), plain.forward(x))
