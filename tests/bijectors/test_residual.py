"""ResidualFlow: the Lipschitz bound, the log-det estimators against the exact log-det, the
fixed-point inverse and its gradients (and without them), a context batch wider than the input,
and what ``BijectiveMode`` saves. SpectralNormLinear is tested in ``tests/nn/test_spectral.py``.

The generic suite (``tests/bijectors/cases_planar.py``) covers the exact estimator (the default
for ``D <= 4``) with round trips, autograd Jacobians, shapes, gradients, contexts and caching.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch

import flowtorch
from flowtorch.bijectors.residual import FixedPointWarning, ResidualFlow, SpectralNormLinear
from flowtorch.core.compose import Compose
from flowtorch.distributions import Flow
from tests.case import check_a_context_batch_wider_than_the_input

DT = torch.float64
S = torch.Size


def residual(d: int = 3, seed: int = 0, dtype: torch.dtype = DT, **kwargs: object) -> ResidualFlow:
    torch.manual_seed(seed)
    kwargs.setdefault("hidden_dims", (16, 16))
    b: ResidualFlow = ResidualFlow(**kwargs)(shape=torch.Size([d]))  # type: ignore[arg-type]
    b = b.to(dtype)
    with torch.no_grad():  # weights large enough that every layer is normalised down to c
        for layer in b.layers:
            layer.weight.normal_(0.0, 2.0 / layer.in_features**0.5)
            layer.bias.normal_(0.0, 0.5)
    return b


def jacobian_logdet(b: ResidualFlow, x: torch.Tensor) -> torch.Tensor:
    jac = torch.autograd.functional.jacobian(lambda v: b.forward(v), x)
    return torch.linalg.slogdet(jac)[1]


def test_lipschitz_bound_is_below_one() -> None:
    b = residual(d=4, coefficient=0.9, hidden_dims=(16, 16))
    assert b.lipschitz_bound() <= 0.9**3 * (1 + 1e-9)


# ----------------------------------------------------------------------------- the estimators
def _replicated(b: ResidualFlow, n: int, seed: int = 5) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.randn(1, b.shape[0], dtype=DT).expand(n, -1)


def test_series_estimator_matches_the_exact_log_det() -> None:
    """Mean over 4000 Hutchinson draws within 4 standard errors plus the truncation bound."""
    b = residual(d=3, coefficient=0.7, estimator="series", n_terms=12)
    x = _replicated(b, 4000)
    exact = jacobian_logdet(b, x[0])
    with torch.no_grad():
        estimates = b.forward_and_ladj(x)[1]
    lip = b.lipschitz_bound()
    truncation = 3 * sum(lip**k / k for k in range(13, 200))
    error = (estimates.mean() - exact).abs().item()
    stderr = (estimates.std() / math.sqrt(len(estimates))).item()
    assert stderr < 0.01
    assert error < 4 * stderr + truncation, (error, stderr, truncation)


def test_roulette_estimator_is_unbiased() -> None:
    """One number of terms per call: the mean over 300 calls of 40 draws each, within 4 standard
    errors (between-call spread included)."""
    b = residual(d=3, coefficient=0.8, estimator="roulette", n_exact_terms=1, p_stop=0.4)
    x = _replicated(b, 40)
    exact = jacobian_logdet(b, x[0])
    torch.manual_seed(6)
    with torch.no_grad():
        per_call = torch.stack([b.forward_and_ladj(x)[1].mean() for _ in range(300)])
    error = (per_call.mean() - exact).abs().item()
    stderr = (per_call.std() / math.sqrt(len(per_call))).item()
    assert stderr < 0.02
    assert error < 4 * stderr, (error, stderr)


def test_more_hutchinson_samples_lower_the_variance() -> None:
    one = residual(d=3, estimator="series", n_samples=1)
    four = residual(d=3, estimator="series", n_samples=4)
    x = _replicated(one, 2000)
    with torch.no_grad():
        v1 = one.forward_and_ladj(x)[1].var()
        v4 = four.forward_and_ladj(x)[1].var()
    assert v4 < 0.5 * v1


def test_series_gradient_matches_the_exact_gradient() -> None:
    exact_b = residual(d=3, coefficient=0.6, estimator="exact")
    series_b = residual(d=3, coefficient=0.6, estimator="series", n_terms=12)
    x = _replicated(exact_b, 3000)
    exact_b.forward_and_ladj(x[:1])[1].sum().backward()
    series_b.forward_and_ladj(x)[1].mean().backward()
    for (name, p_exact), p_series in zip(exact_b.named_parameters(), series_b.parameters()):
        if name == "layers.2.bias":  # the last bias shifts g: no part of the log-det
            assert p_exact.grad is None and p_series.grad is None
            continue
        assert p_exact.grad is not None and p_series.grad is not None
        scale = p_exact.grad.abs().max().item()
        assert (p_series.grad - p_exact.grad).abs().max().item() < 0.1 * scale + 1e-3, name


def test_estimators_build_no_graph_without_gradients() -> None:
    for estimator in ("exact", "series", "roulette"):
        b = residual(d=3, estimator=estimator)
        with torch.no_grad():
            y, ladj = b.forward_and_ladj(torch.randn(4, 3, dtype=DT))
        assert not y.requires_grad and not ladj.requires_grad
        with torch.inference_mode():
            y2, ladj2 = b.forward_and_ladj(torch.randn(4, 3, dtype=DT))
        assert y2.shape == (4, 3) and ladj2.shape == (4,)


def test_auto_estimator_is_exact_for_small_events_only() -> None:
    assert ResidualFlow()(shape=torch.Size([4])).estimator == "exact"
    assert ResidualFlow()(shape=torch.Size([5])).estimator == "roulette"


# ----------------------------------------------------------------------------- the inverse
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_fixed_point_inverse_round_trips(dtype: torch.dtype, tol: float) -> None:
    """Three blocks on D = 16, batch 256, with a context that broadcasts over samples."""
    torch.manual_seed(7)
    flow = Compose([ResidualFlow(hidden_dims=(32,), coefficient=0.9) for _ in range(3)])(
        shape=torch.Size([16]), context_shape=torch.Size([2])
    ).to(dtype)
    with torch.no_grad():
        for p in flow.parameters():
            p.normal_(0.0, 0.3)
    x = torch.randn(8, 32, 16, dtype=dtype)
    c = torch.randn(32, 2, dtype=dtype)
    y = flow.forward(x, c)
    error = (flow.inverse(y, c) - x).abs().max().item()
    assert error < tol, error


def test_non_convergence_warns_and_points_to_the_mode() -> None:
    b = residual(d=3, coefficient=0.95, max_iter=2)
    y = b.forward(torch.randn(5, 3, dtype=DT) * 3)
    with pytest.warns(FixedPointWarning, match="BijectiveMode"):
        b.inverse(y)


def test_inverse_gradients_are_the_implicit_ones() -> None:
    """Finite differences of the fixed-point inverse, in ``y`` and in every weight and bias."""
    b = residual(d=3, hidden_dims=(5,), tol=1e-14)
    y = torch.randn(2, 3, dtype=DT, requires_grad=True)
    params = tuple(p.detach().clone().requires_grad_() for p in b._params(None, None))

    def inverse(y: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        return b._inverse(y, params)

    def ladj(y: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        return b._inverse_and_ladj(y, params)[1]

    assert torch.autograd.gradcheck(inverse, (y, *params), atol=1e-6)
    assert torch.autograd.gradcheck(ladj, (y, *params), atol=1e-6)


# ----------------------------------------------------------------------------- the mode
def test_requires_ladj_false_defers_the_log_det_to_the_recorded_weights(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    b = residual(d=4)
    counts = {"logdet": 0, "normalise": 0}
    logdet, normalise = ResidualFlow._logdet, SpectralNormLinear.normalized_weight

    def counted_logdet(self: ResidualFlow, *args: object) -> torch.Tensor:
        counts["logdet"] += 1
        return logdet(self, *args)  # type: ignore[arg-type]

    def counted_normalise(self: SpectralNormLinear) -> torch.Tensor:
        counts["normalise"] += 1
        return normalise(self)

    monkeypatch.setattr(ResidualFlow, "_logdet", counted_logdet)
    monkeypatch.setattr(SpectralNormLinear, "normalized_weight", counted_normalise)
    x = torch.randn(6, 4, dtype=DT)
    _, expected = b.forward_and_ladj(x)
    counts.update(logdet=0, normalise=0)
    with flowtorch.BijectiveMode(requires_ladj=False):
        y = b.forward(x)
        assert counts == {"logdet": 0, "normalise": 3}  # the forward skipped the log-det
        ladj = b.log_abs_det_jacobian(x, y)
        assert counts == {"logdet": 1, "normalise": 3}  # computed later, from the recorded weights
        assert b.inverse(y) is x
    torch.testing.assert_close(ladj, expected)
    counts.update(logdet=0, normalise=0)
    with flowtorch.BijectiveMode():
        y = b.forward(x)
        assert b.log_abs_det_jacobian(x, y) is b.log_abs_det_jacobian(x, y)  # recorded once
        assert counts["logdet"] == 1


def test_flow_scores_its_own_samples_without_a_fixed_point(monkeypatch: pytest.MonkeyPatch) -> None:
    base = torch.distributions.Independent(
        torch.distributions.Normal(torch.zeros(3, dtype=DT), torch.ones(3, dtype=DT)), 1
    )
    torch.manual_seed(8)
    flow = Flow(base, Compose([ResidualFlow(hidden_dims=(16,)) for _ in range(3)])).to(DT)
    solves = [0]
    real = ResidualFlow._fixed_point

    def counted(self: ResidualFlow, *args: object) -> torch.Tensor:
        solves[0] += 1
        return real(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(ResidualFlow, "_fixed_point", counted)
    torch.manual_seed(9)
    y_ref, lp_ref = flow.rsample_and_log_prob((32,))
    # (log q alone does not depend on the last biases: y too, as a VI loss would)
    grads_ref = torch.autograd.grad(lp_ref.sum() + y_ref.sum(), list(flow.parameters()))
    for requires_ladj in (True, False):
        with flowtorch.BijectiveMode(requires_ladj=requires_ladj):
            torch.manual_seed(9)
            y = flow.rsample((32,))
            lp = flow.log_prob(y)
        grads = torch.autograd.grad(lp.sum() + y.sum(), list(flow.parameters()))
        assert solves[0] == 0
        torch.testing.assert_close(y, y_ref)
        torch.testing.assert_close(lp, lp_ref)
        for g, g_ref in zip(grads, grads_ref):
            torch.testing.assert_close(g, g_ref)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lp_outside = flow.log_prob(y_ref.detach())  # the fixed-point inverse, layer by layer
    assert solves[0] == 3
    torch.testing.assert_close(lp_outside, lp_ref.detach(), atol=1e-9, rtol=1e-9)


# ----------------------------------------------------------------------------- arguments
@pytest.mark.parametrize(
    ("kwargs", "shape", "message"),
    [
        ({"coefficient": 1.0}, (3,), "coefficient"),
        ({"estimator": "hutchinson"}, (3,), "estimator"),
        ({"hidden_dims": ()}, (3,), "hidden_dims"),
        ({"activation": "relu"}, (3,), "activation"),
        ({"n_terms": 0}, (3,), "n_terms"),
        ({"p_stop": 1.0}, (3,), "p_stop"),
        ({"spectral": "svd"}, (3,), "spectral"),
        ({}, (2, 2), "vector event"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, object], shape: tuple[int, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ResidualFlow(**kwargs)(shape=torch.Size(shape))  # type: ignore[arg-type]


def test_takes_no_conditioner() -> None:
    import flowtorch.parameters as params

    with pytest.raises(TypeError, match="no conditioner"):
        ResidualFlow(params.Tensor())(shape=torch.Size([3]))


def _flow() -> ResidualFlow:
    torch.manual_seed(0)
    b = ResidualFlow(hidden_dims=(8,), estimator="exact")(shape=S([2]), context_shape=S([3])).to(DT)
    with torch.no_grad():
        b.context_layer.weight.normal_()
    return b


def test_a_context_batch_wider_than_the_input() -> None:
    b = _flow()
    x = torch.randn(2, dtype=DT)  # one event
    c = torch.randn(4, 3, dtype=DT)  # four contexts
    y, _ = check_a_context_batch_wider_than_the_input(b, x, c)
    torch.testing.assert_close(b.inverse(y, c), x.expand(4, 2))


def test_the_inverse_without_gradients_is_the_fixed_point_alone() -> None:
    b = _flow()
    x = torch.randn(5, 2, dtype=DT)
    c = torch.randn(5, 3, dtype=DT)
    y = b.forward(x, c).detach()
    with torch.no_grad():
        x_back = b.inverse(y, c)
    assert not x_back.requires_grad and x_back.grad_fn is None
    torch.testing.assert_close(x_back, x)
    # with gradients on, the same point, now differentiable in the parameters
    x_grad = b.inverse(y, c)
    assert x_grad.requires_grad
    torch.testing.assert_close(x_grad.detach(), x_back)


VALUE_ERRORS: list[tuple[str, Callable[[], Any], str]] = [
    (
        "ResidualFlow max_terms < n_exact_terms",
        lambda: ResidualFlow(max_terms=1, n_exact_terms=2)(shape=S([2])),
        r"ResidualFlow: max_terms must be an integer >= max\(n_exact_terms, 1\), got 1",
    ),
    (
        "ResidualFlow max_terms=True",
        lambda: ResidualFlow(max_terms=True)(shape=S([2])),
        "max_terms must be an integer .* got True",
    ),
    (
        "ResidualFlow tol",
        lambda: ResidualFlow(tol=0.0)(shape=S([2])),
        "ResidualFlow: tol must be positive",
    ),
]


@pytest.mark.parametrize(("make", "match"), [c[1:] for c in VALUE_ERRORS], ids=[c[0] for c in VALUE_ERRORS])
def test_bad_values_are_named(make: Callable[[], Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


REPRS: list[tuple[str, Callable[[], Any], str]] = [
    (
        "ResidualFlow",
        lambda: ResidualFlow(hidden_dims=(8,), activation="elu", coefficient=0.7, estimator="exact")(
            shape=S([2])
        ),
        "shape=(2,), hidden_dims=(8,), activation='elu', coefficient=0.7, estimator='exact'",
    ),
]


@pytest.mark.parametrize(("make", "expected"), [c[1:] for c in REPRS], ids=[c[0] for c in REPRS])
def test_extra_repr_shows_the_hyperparameters(make: Callable[[], Any], expected: str) -> None:
    module = make()
    assert module.extra_repr() == expected
    text = repr(module)
    assert text.startswith(f"{type(module).__name__}(") and expected in text
