"""flowtorch flows as density estimators of ``sbi``: NPE end to end with sbi's own training loop
and posterior, on a Gaussian linear simulator whose posterior is known in closed form.

Needs ``sbi`` (``nox -s sbi`` installs it); skipped without it.
"""

from __future__ import annotations

import io
import math

import pytest
import torch

sbi_inference = pytest.importorskip("sbi.inference")
sbi_base = pytest.importorskip("sbi.neural_nets.estimators.base")

from flowtorch.interop.sbi import (  # noqa: E402
    FlowDensityEstimator,
    build_estimator,
    likelihood_nn,
    posterior_nn,
)
from flowtorch.recipes import NSF  # noqa: E402

# x | theta ~ N(OFFSET + theta, NOISE^2 I), theta ~ N(0, PRIOR^2 I): the posterior is Gaussian with
# mean PRIOR^2 / (PRIOR^2 + NOISE^2) (x - OFFSET) and std PRIOR NOISE / sqrt(PRIOR^2 + NOISE^2).
# The offset and scale of x are far from (0, 1), so that z-scoring matters.
DIM = 2
PRIOR, NOISE, OFFSET, X_SCALE = 1.0, 0.5, 100.0, 10.0


def _prior() -> torch.distributions.Distribution:
    return torch.distributions.MultivariateNormal(torch.zeros(DIM), PRIOR**2 * torch.eye(DIM))


def _simulate(theta: torch.Tensor) -> torch.Tensor:
    return OFFSET + X_SCALE * (theta + NOISE * torch.randn_like(theta))


def _analytic(x_o: torch.Tensor) -> tuple[torch.Tensor, float]:
    shrink = PRIOR**2 / (PRIOR**2 + NOISE**2)
    return shrink * (x_o - OFFSET) / X_SCALE, PRIOR * NOISE / math.sqrt(PRIOR**2 + NOISE**2)


def _simulations(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    theta = _prior().sample((n,))
    return theta, _simulate(theta)


X_O = torch.tensor([[OFFSET + 5.0, OFFSET - 8.0]])


N_TRAIN = 1000


def _train(model: str, epochs: int = 30, **kwargs) -> tuple[object, object, FlowDensityEstimator]:
    """sbi's NPE and its training loop, on a budget of seconds (a larger learning rate than
    sbi's default, few epochs)."""
    theta, x = _simulations(N_TRAIN)
    torch.manual_seed(1)
    kwargs = {"hidden_features": 16, "num_transforms": 2, **kwargs}
    inference = sbi_inference.NPE(prior=_prior(), density_estimator=posterior_nn(model=model, **kwargs))
    estimator = inference.append_simulations(theta, x).train(
        training_batch_size=100, learning_rate=5e-3, max_num_epochs=epochs, show_train_summary=False
    )
    return inference, inference.build_posterior(estimator), estimator


@pytest.fixture(scope="module")
def trained_maf():
    return _train("maf")


@pytest.mark.parametrize("model", ["maf", "nsf", "nsf_coupling"])
def test_npe_recovers_the_analytic_gaussian_posterior(model, trained_maf):
    _, posterior, estimator = trained_maf if model == "maf" else _train(model, epochs=50)
    assert isinstance(estimator, FlowDensityEstimator)
    assert isinstance(estimator, sbi_base.ConditionalDensityEstimator)
    torch.manual_seed(2)
    samples = posterior.sample((4000,), x=X_O, show_progress_bars=False)
    mean, std = _analytic(X_O[0])
    assert samples.shape == (4000, DIM)
    # the posterior std is 0.45: within a third of it, from 1,000 simulations
    assert torch.allclose(samples.mean(0), mean, atol=0.15), (samples.mean(0), mean)
    ratio = samples.std(0) / std
    assert ((ratio > 0.8) & (ratio < 1.25)).all(), ratio
    # and the density: log q at the analytic mean is close to the Gaussian's
    log_q = posterior.log_prob(mean.unsqueeze(0), x=X_O, norm_posterior=False)
    gaussian = torch.distributions.Normal(mean, std).log_prob(mean).sum()
    assert abs(float(log_q[0]) - float(gaussian)) < 0.35


def test_shapes_of_sample_log_prob_and_map(trained_maf):
    _, posterior, estimator = trained_maf
    theta = torch.randn(7, DIM)
    posterior.set_default_x(X_O)
    assert posterior.sample((5,), show_progress_bars=False).shape == (5, DIM)
    assert posterior.log_prob(theta, norm_posterior=False).shape == (7,)
    x_batch = torch.cat([X_O, X_O + 1.0, X_O - 1.0])
    assert posterior.sample_batched((4,), x=x_batch, show_progress_bars=False).shape == (4, 3, DIM)
    assert posterior.log_prob_batched(torch.randn(4, 3, DIM), x=x_batch, norm_posterior=False).shape == (4, 3)
    map_ = posterior.map(num_iter=20, num_init_samples=50, num_to_optimize=5)
    assert map_.shape == (1, DIM)
    assert torch.allclose(map_[0], _analytic(X_O[0])[0], atol=0.25)
    # the estimator's own methods, in sbi's shapes
    x_three = torch.cat([X_O] * 3)
    assert estimator.sample((5,), x_three).shape == (5, 3, DIM)
    assert estimator.log_prob(torch.randn(6, 3, DIM), x_three).shape == (6, 3)
    assert estimator.log_prob(torch.randn(3, DIM), x_three).shape == (1, 3)
    assert estimator.log_prob(torch.randn(6, 1, DIM), x_three).shape == (6, 3)  # batch 1 broadcasts
    assert estimator.log_prob(torch.randn(6, 3, DIM), x_three.expand(6, 3, DIM)).shape == (6, 3)
    assert estimator.loss(torch.randn(3, DIM), x_three).shape == (3,)
    samples, log_q = estimator.sample_and_log_prob((5,), x_three)
    assert samples.shape == (5, 3, DIM) and log_q.shape == (5, 3)
    assert torch.allclose(log_q, estimator.log_prob(samples, x_three), atol=1e-4)


def test_posterior_log_prob_is_the_flow_log_prob_of_z_scored_inputs_with_the_jacobian(trained_maf):
    inference, posterior, estimator = trained_maf
    theta, x = _simulations(N_TRAIN)
    # sbi builds the estimator from its training split (the validation split held out): the
    # z-scoring statistics are that split's
    theta, x = theta[inference.train_indices], x[inference.train_indices]
    assert len(theta) < N_TRAIN
    torch.manual_seed(3)
    points = torch.randn(11, DIM)
    mu, sigma = theta.mean(0), theta.std(0)
    m, s = x.mean(0), x.std(0)
    expected = estimator.flow.log_prob((points - mu) / sigma, context=(X_O - m) / s) - sigma.log().sum()
    got = posterior.log_prob(points, x=X_O, norm_posterior=False)
    assert torch.allclose(got, expected, atol=1e-5)
    assert torch.allclose(estimator.input_shift, mu) and torch.allclose(estimator.input_scale, sigma)


def test_z_scoring_is_applied_as_sbi_computes_it():
    theta = torch.randn(500, 3) * torch.tensor([1.0, 20.0, 0.1]) + torch.tensor([5.0, -3.0, 0.0])
    x = torch.randn(500, 4) * 50.0 + 1000.0
    x[3, 1] = float("nan")  # a row sbi would drop: left out of the statistics
    independent = build_estimator(theta, x, model="maf", num_transforms=1)
    assert torch.allclose(independent.input_shift, theta.mean(0))
    assert torch.allclose(independent.input_scale, theta.std(0))
    finite = x[torch.isfinite(x).all(1)]
    context = independent.embedding(finite)
    assert torch.allclose(context.mean(0), torch.zeros(4), atol=1e-4)
    assert torch.allclose(context.std(0), torch.ones(4), atol=1e-4)

    structured = build_estimator(
        theta, x, model="maf", num_transforms=1, z_score_input="structured", z_score_condition="structured"
    )
    assert torch.allclose(structured.input_shift, theta.mean().expand(3))
    assert torch.allclose(structured.input_scale, theta.std(dim=1).mean().expand(3))
    assert torch.allclose(structured.embedding(finite).mean(), torch.tensor(0.0), atol=1e-3)

    none = build_estimator(
        theta, x, model="maf", num_transforms=1, z_score_input="none", z_score_condition="none"
    )
    assert torch.equal(none.input_shift, torch.zeros(3)) and torch.equal(none.input_scale, torch.ones(3))
    assert torch.equal(none.embedding(finite[:5]), finite[:5])

    # the same flow weights score differently with and without z-scoring, by exactly the change of variables
    none.load_state_dict(
        {k: v for k, v in independent.state_dict().items() if k.startswith("net.")}, strict=False
    )
    points, cond = theta[:6], finite[:6]
    z = (points - theta.mean(0)) / theta.std(0)
    c = (cond - finite.mean(0)) / finite.std(0)
    with_z = independent.log_prob(points, cond)
    assert torch.allclose(with_z, none.log_prob(z, c) - theta.std(0).log().sum(), atol=1e-4)
    assert not torch.allclose(with_z, none.log_prob(points, cond))

    with pytest.raises(ValueError, match="z-scoring"):
        build_estimator(theta, x, z_score_input="transform_to_unconstrained")


def test_z_scoring_makes_training_work_on_badly_scaled_simulations():
    """The same NPE with and without z-scoring, on x of offset 100 and scale 10: only the z-scored
    one gets the posterior mean right within the small budget."""
    errors = {}
    for how in ("independent", "none"):
        _, posterior, _ = _train("maf", z_score_x=how, z_score_theta=how)
        torch.manual_seed(2)
        samples = posterior.sample((2000,), x=X_O, show_progress_bars=False)
        errors[how] = float((samples.mean(0) - _analytic(X_O[0])[0]).abs().max())
    assert errors["independent"] < 0.1 < errors["none"], errors


def test_embedding_net_is_used_and_trained():
    theta, x = _simulations(1000)
    embedding = torch.nn.Sequential(torch.nn.Linear(DIM, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    before = [p.detach().clone() for p in embedding.parameters()]
    inference = sbi_inference.NPE(
        prior=_prior(),
        density_estimator=posterior_nn(
            model="maf", hidden_features=16, num_transforms=2, embedding_net=embedding
        ),
    )
    estimator = inference.append_simulations(theta, x).train(
        training_batch_size=100, max_num_epochs=5, show_train_summary=False
    )
    assert estimator.flow.context_shape == (3,)
    assert estimator.embedding_net[1] is embedding  # z-scoring first, then the embedding
    assert any(not torch.equal(b, p) for b, p in zip(before, embedding.parameters())), "embedding not trained"
    # multi-dimensional conditions: an embedding that keeps a 2-d shape is flattened for the flow
    images = torch.randn(1000, 2, 3)
    est = build_estimator(theta, images, model="maf", num_transforms=1, embedding_net=torch.nn.Identity())
    assert est.flow.context_shape == (6,) and est.condition_shape == (2, 3)
    assert est.log_prob(theta[:4], images[:4]).shape == (1, 4)


def test_state_dict_round_trip(trained_maf):
    _, posterior, estimator = trained_maf
    theta, x = _simulations(300, seed=9)  # other statistics: loading must bring the trained ones
    fresh = posterior_nn(model="maf", hidden_features=16, num_transforms=2)(theta * 3 + 1, x * 2)
    points = torch.randn(9, DIM)
    assert not torch.allclose(fresh.log_prob(points, X_O), estimator.log_prob(points, X_O))
    buffer = io.BytesIO()
    torch.save(estimator.state_dict(), buffer)
    buffer.seek(0)
    fresh.load_state_dict(torch.load(buffer))
    assert torch.equal(fresh.log_prob(points, X_O), estimator.log_prob(points, X_O))
    torch.manual_seed(4)
    a = fresh.sample((5,), X_O)
    torch.manual_seed(4)
    assert torch.equal(a, estimator.sample((5,), X_O))
    reloaded = sbi_inference.DirectPosterior(posterior_estimator=fresh, prior=_prior())
    assert torch.equal(
        reloaded.log_prob(points, x=X_O, norm_posterior=False),
        posterior.log_prob(points, x=X_O, norm_posterior=False),
    )


def test_a_plan_as_the_model_and_one_dimensional_parameters():
    theta, x = _simulations(500)
    plan = NSF(layers=2, bins=4, autoregressive=False, hidden_dims=(16,))
    est = posterior_nn(model=plan)(theta, x)
    assert type(est.flow.bijector).__name__ == "Compose"
    assert est.log_prob(theta[:3], x[:3]).shape == (1, 3)
    for model in ("nsf", "nsf_coupling", "maf"):  # one parameter: layers on x alone
        one = posterior_nn(model=model, hidden_features=8, num_transforms=2)(theta[:, :1], x)
        assert one.sample((4,), x[:2]).shape == (4, 2, 1)
        ctx = torch.randn(2, DIM) * 10
        z = torch.zeros(1, 2, 1)
        one.zero_grad()
        one.log_prob(z, x[:2] + ctx).sum().backward()
        assert any(
            p.grad is not None and p.grad.abs().sum() > 0 for n, p in one.named_parameters() if "net" in n
        )
    with pytest.raises(ValueError, match="model"):
        posterior_nn(model="mdn")(theta, x)


def test_likelihood_nn_swaps_the_roles():
    theta, x = _simulations(500)
    est = likelihood_nn(model="maf", num_transforms=2, hidden_features=16)(theta, x)
    assert est.input_shape == (DIM,) and est.condition_shape == (DIM,)
    assert torch.allclose(est.input_shift, x.mean(0))  # x is the input: z-scored by z_score_x
    inference = sbi_inference.NLE(
        prior=_prior(), density_estimator=likelihood_nn(model="maf", num_transforms=2)
    )
    trained = inference.append_simulations(theta, x).train(max_num_epochs=2, show_train_summary=False)
    assert trained.log_prob(x[:4], theta[:4]).shape == (1, 4)


def test_errors_name_the_shapes():
    theta, x = _simulations(100)
    est = build_estimator(theta, x, model="maf", num_transforms=1)
    with pytest.raises(ValueError, match="trailing dims"):
        est.log_prob(torch.randn(3, DIM + 1), x[:3])
    with pytest.raises(ValueError, match="trailing dims"):
        est.sample((2,), torch.randn(3, DIM + 1))
    with pytest.raises(RuntimeError, match="batch sizes"):
        est.log_prob(torch.randn(4, DIM), x[:3])
    with pytest.raises(ValueError, match="batch of vectors"):
        build_estimator(torch.randn(10, 2, 2), x[:10])
    with pytest.raises(ValueError, match="conditional"):
        FlowDensityEstimator(
            est.flow.__class__(est.flow.base_dist, NSF(layers=1)),
            torch.nn.Identity(),
            (DIM,),
            (DIM,),
            torch.zeros(DIM),
            torch.ones(DIM),
        )
