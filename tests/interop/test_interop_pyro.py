"""A ``Flow`` in Pyro: as a guide trained by SVI, and as a prior and likelihood inside a model;
the wrapper's support, sampling, repr and context, and what ``to_pyro`` refuses."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Independent, Normal

import flowtorch
import flowtorch.bijectors as bij
import flowtorch.distributions as dist
import flowtorch.parameters as params
from flowtorch.interop import to_pyro
from flowtorch.ops import soft_clamp
from tests.case import perturb

pyro = pytest.importorskip("pyro")
pd = pytest.importorskip("pyro.distributions")
poutine = pytest.importorskip("pyro.poutine")
infer = pytest.importorskip("pyro.infer")

SIGMA = 0.5  # likelihood scale
N = 20  # observations
S = torch.Size
F64 = torch.float64


def normal(d: int) -> torch.distributions.Distribution:
    return torch.distributions.Independent(torch.distributions.Normal(torch.zeros(d), torch.ones(d)), 1)


def guide_flow() -> dist.Flow:
    """An IAF layer then an elementwise affine layer: sampling and scoring its samples are parallel."""
    made = params.DenseAutoregressive(hidden_dims=(8,))
    return dist.Flow(normal(2), bij.Compose([bij.Invert(bij.AffineAutoregressive(made)), bij.Affine()]))


def model(x: torch.Tensor) -> None:
    """z ~ N(0, I_2), x_i | z ~ N(z, SIGMA^2 I_2): the posterior is Gaussian and known exactly."""
    z = pyro.sample("z", pd.Normal(torch.zeros(2), 1.0).to_event(1))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("x", pd.Normal(z, SIGMA).to_event(1), obs=x)


def posterior(x: torch.Tensor) -> tuple[torch.Tensor, float]:
    precision = 1.0 + x.shape[0] / SIGMA**2
    return x.sum(0) / SIGMA**2 / precision, precision**-0.5


def data(seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.tensor([0.7, -1.2]) + SIGMA * torch.randn(N, 2)


def fit(guide_dist: object, flow: dist.Flow, x: torch.Tensor, steps: int, **elbo: object) -> list[float]:
    def guide(x: torch.Tensor) -> None:
        pyro.module("q", flow)
        pyro.sample("z", guide_dist)

    svi = infer.SVI(model, guide, pyro.optim.ClippedAdam({"lr": 0.1, "lrd": 0.99}), infer.Trace_ELBO(**elbo))
    return [svi.step(x) for _ in range(steps)]


def check_posterior(flow: dist.Flow, x: torch.Tensor) -> None:
    """Tolerances: the posterior std is 1/9; the mean within 0.05 (0.45 posterior stds), the std
    within [0.75, 1.3] times the truth (300 noisy steps; 20000 samples add < 1% error)."""
    mean, std = posterior(x)
    s = flow.sample((20000,))
    assert (s.mean(0) - mean).abs().max() < 0.05, (s.mean(0), mean)
    ratio = s.std(0) / std
    assert torch.all((ratio > 0.75) & (ratio < 1.3)), ratio


def test_svi_with_a_flow_guide_recovers_the_conjugate_posterior() -> None:
    torch.manual_seed(0)
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    x = data(0)
    flow = guide_flow()
    losses = fit(flow, flow, x, steps=300)  # the Flow itself is the site's distribution
    assert sum(losses[-30:]) / 30 < sum(losses[:30]) / 30 - 10.0
    check_posterior(flow, x)
    # pyro.module registered the flow's parameters (the same tensors) in the param store
    store = pyro.get_param_store()
    names = {f"q$$${n}" for n, _ in flow.named_parameters()}
    assert names <= set(store.keys())
    assert all(store[f"q$$${n}"] is p for n, p in flow.named_parameters())


def test_svi_with_to_pyro_under_vectorized_particles() -> None:
    """``to_pyro`` lets ``pyro.plate`` broadcast the flow (here Pyro's plate over 8 particles)."""
    torch.manual_seed(1)
    pyro.set_rng_seed(1)
    pyro.clear_param_store()
    x = data(1)
    flow = guide_flow()
    losses = fit(to_pyro(flow), flow, x, steps=150, num_particles=8, vectorize_particles=True)
    assert sum(losses[-20:]) / 20 < sum(losses[:20]) / 20 - 10.0
    check_posterior(flow, x)


def test_elbo_inside_bijective_mode_equals_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    """Scoring the guide's own samples inside the mode is served from the cache (an IAF's inverse
    is sequential otherwise) and gives the same loss."""
    x = data(2)
    flow = guide_flow()
    torch.manual_seed(5)
    with torch.no_grad():
        for p in flow.parameters():
            p.normal_(0.0, 0.2)

    def guide(x: torch.Tensor) -> None:
        pyro.module("q", flow)
        pyro.sample("z", flow)

    # count the IAF's sequential inverse passes (its inner MAF layer's forward)
    maf = flow.bijector.bijectors[0].bijector
    calls: list[int] = []
    sequential = maf._sequential_forward

    def counted(*args: object) -> object:
        calls.append(1)
        return sequential(*args)

    monkeypatch.setattr(maf, "_sequential_forward", counted)
    elbo = infer.Trace_ELBO(num_particles=3)
    pyro.set_rng_seed(3)
    outside = elbo.loss(model, guide, x)
    assert len(calls) == 3
    pyro.set_rng_seed(3)
    with flowtorch.BijectiveMode():  # a CacheMissWarning would be an error in this suite
        inside = elbo.loss(model, guide, x)
    assert len(calls) == 3, "scoring the guide's samples inside the mode ran the inverse"
    assert abs(outside - inside) < 1e-4 * abs(outside)


def test_flow_as_prior_and_likelihood_in_a_model() -> None:
    torch.manual_seed(0)
    prior = dist.Flow(
        normal(2),
        bij.Compose([bij.AffineAutoregressive(params.DenseAutoregressive(hidden_dims=(8,))), bij.Spline()]),
    )
    likelihood = dist.Flow(
        normal(2), bij.SplineAutoregressive(params.DenseAutoregressive(hidden_dims=(8,))), context_shape=(2,)
    )
    for p in [*prior.parameters(), *likelihood.parameters()]:
        with torch.no_grad():
            p.normal_(0.0, 0.2)
    x = torch.randn(7, 2)

    def joint(x: torch.Tensor) -> torch.Tensor:
        z = pyro.sample("z", prior)
        w = pyro.sample("w", prior.expand((3,)))  # batch of three, an explicit expand
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", likelihood, obs=x, context=z.expand(x.shape[0], 2))
        return w

    trace = poutine.trace(joint).get_trace(x)
    trace.compute_log_prob()
    z = trace.nodes["z"]["value"]
    w = trace.nodes["w"]["value"]
    assert z.shape == (2,) and w.shape == (3, 2) and type(z) is torch.Tensor
    torch.testing.assert_close(trace.nodes["z"]["log_prob"], prior.log_prob(z))
    torch.testing.assert_close(trace.nodes["w"]["log_prob"], prior.log_prob(w))
    expected = likelihood.log_prob(x, context=z.expand(7, 2))
    torch.testing.assert_close(trace.nodes["x"]["log_prob"], expected)
    assert trace.nodes["x"]["log_prob"].shape == (7,)
    total = prior.log_prob(z) + prior.log_prob(w).sum() + expected.sum()
    torch.testing.assert_close(trace.log_prob_sum(), total)
    # conditioning by a view, and pyro.condition / replay reuse the value
    view = likelihood.condition(z.expand(7, 2))
    replayed = poutine.trace(poutine.replay(joint, trace=trace)).get_trace(x)
    torch.testing.assert_close(replayed.nodes["z"]["value"], z)
    torch.testing.assert_close(view.log_prob(x), expected)


def test_flow_is_a_callable_distribution_with_pyro_shapes() -> None:
    flow = guide_flow()
    torch.manual_seed(0)
    y = flow()
    assert y.shape == (2,) and y.requires_grad
    assert flow((4, 5)).shape == (4, 5, 2)
    assert flow.event_dim == 1
    parts = flow.score_parts(y)
    torch.testing.assert_close(parts.log_prob, flow.log_prob(y))
    assert parts.score_function == 0
    wrapped = to_pyro(flow)
    assert isinstance(wrapped, pd.TorchDistribution)
    assert wrapped.event_shape == (2,) and wrapped.batch_shape == ()
    assert wrapped.to_event(0) is wrapped
    with pyro.plate("p", 6):
        assert pyro.sample("s", wrapped).shape == (6, 2)
    masked = wrapped.expand((3,)).mask(torch.tensor([True, False, True]))
    torch.testing.assert_close(masked.log_prob(torch.zeros(3, 2))[1], torch.tensor(0.0))
    e = wrapped.expand_by((4,)).to_event(1)
    assert e.event_shape == (4, 2) and e.rsample().shape == (4, 2)


def test_bare_flow_under_vectorized_particles_says_to_wrap_it_with_to_pyro() -> None:
    """Pyro broadcasts only its own classes over plates: a bare flow under the particle plate of
    ``vectorize_particles=True`` is refused with an error naming ``to_pyro``, which works."""
    pyro.clear_param_store()
    x = data(3)
    flow = guide_flow()
    with pytest.raises(ValueError, match=r"to_pyro") as info:
        fit(flow, flow, x, steps=1, num_particles=8, vectorize_particles=True)
    text = "".join(str(e) for e in (info.value, info.value.__cause__) if e is not None)
    assert "pyro.plate('num_particles_vectorized', 8) at dim -2" in text
    assert "the plates need (8, 1)" in text
    losses = fit(to_pyro(flow), flow, x, steps=2, num_particles=8, vectorize_particles=True)
    assert all(torch.isfinite(torch.tensor(losses)))


def test_bare_flow_inside_a_plate_it_fills_samples_as_before() -> None:
    """A plate that the sample's batch dims fill (here by a batch of contexts, or by an explicit
    sample shape) is no error."""
    torch.manual_seed(0)
    likelihood = dist.Flow(normal(2), bij.Affine(params.DenseAutoregressive()), context_shape=(2,))
    flow = guide_flow()

    def sampled() -> tuple[torch.Tensor, torch.Tensor]:
        with pyro.plate("data", 7):
            a = pyro.sample("a", likelihood, context=torch.randn(7, 2))
            b = pyro.sample("b", flow, sample_shape=(7,))
        return a, b

    trace = poutine.trace(sampled).get_trace()
    assert trace.nodes["a"]["value"].shape == (7, 2) and trace.nodes["b"]["value"].shape == (7, 2)
    with pyro.plate("p", 3), pytest.raises(ValueError, match=r"to_pyro\(flow\)"):
        flow()


def test_calling_a_flow_with_a_context_tensor_names_condition() -> None:
    """zuko's ``flow(c)`` returns a distribution; calling a flowtorch flow samples (Pyro's
    contract), so a context tensor in the sample_shape slot is refused with our equivalent."""
    flow = dist.Flow(normal(2), bij.Affine(params.DenseAutoregressive()), context_shape=(1,))
    c = torch.randn(5, 1)
    with pytest.raises(TypeError, match=r"use flow\.condition\(c\), e\.g\. flow\.condition\(c\)\.log_prob"):
        flow(c)
    assert flow.condition(c).log_prob(torch.randn(5, 2)).shape == (5,)
    assert flow.condition(c).rsample((3,)).shape == (3, 5, 2)


def normal_f64(d: int) -> torch.distributions.Distribution:
    return Independent(Normal(torch.zeros(d, dtype=F64), torch.ones(d, dtype=F64)), 1)


def _sigmoid_flow() -> dist.Flow:
    torch.manual_seed(0)
    flow = dist.Flow(normal_f64(2), bij.Compose([bij.Affine(), bij.Sigmoid()])).to(F64)
    perturb(flow, 0.3, by_fan_in=False)
    return flow


def test_to_pyro_takes_only_a_flow() -> None:
    with pytest.raises(TypeError, match="to_pyro takes a flowtorch Flow, got Independent"):
        to_pyro(normal_f64(2))  # type: ignore[arg-type]


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
    flow = dist.Flow(normal_f64(2), bij.Affine(params.Tensor()), context_shape=S([3])).to(F64)
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
