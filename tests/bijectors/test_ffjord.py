"""FFJORD: the trace computations (the Jacobian of its network, ODEMLP, is checked in
``tests/nn/test_ode.py``), Hutchinson's estimator, adjoint gradients, and the flow as a whole.

Stated tolerances: the mean of 4000 Hutchinson log-dets is within 4 standard errors (each below
0.03 nats) of the exact log-det; adjoint gradients match backpropagation through dopri5 at
``rtol = atol = 1e-9`` to 1e-6 (relative to each gradient's size).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

import flowtorch
import flowtorch.distributions as dist
from flowtorch.bijectors.ffjord import FFJORD

S = torch.Size

F64 = torch.float64


def perturb(module: torch.nn.Module, scale: float = 0.5, seed: int = 0) -> None:
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, scale / (p.shape[-1] if p.dim() > 1 else 1) ** 0.5)


def _pair(**kwargs: object) -> tuple[FFJORD, FFJORD]:
    exact: FFJORD = FFJORD(hidden_dims=(16,), solver="rk4", steps=8, **kwargs)(shape=(4,)).double()
    perturb(exact, 1.5)
    estimated: FFJORD = FFJORD(hidden_dims=(16,), solver="rk4", steps=8, trace="hutchinson", **kwargs)(
        shape=(4,)
    ).double()
    estimated.load_state_dict(exact.state_dict())
    return exact, estimated


def test_hutchinson_log_det_is_unbiased() -> None:
    exact, estimated = _pair()
    torch.manual_seed(0)
    x = torch.randn(3, 4, dtype=F64)
    with torch.no_grad():
        y, ladj = exact.forward_and_ladj(x)
        y_h, samples = estimated.forward_and_ladj(x.expand(4000, 3, 4))
    torch.testing.assert_close(y_h, y.expand(4000, 3, 4), atol=1e-12, rtol=1e-12)  # same trajectory
    mean, std = samples.mean(0), samples.std(0)
    assert (std > 1e-3).all()  # the estimate is random ...
    assert ((mean - ladj).abs() < 4 * std / 4000**0.5).all(), (mean, ladj, std)  # ... and unbiased
    assert (std / 4000**0.5 < 0.03).all()  # a meaningful test: standard errors below 0.03 nats


@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_adjoint_gradients_match_backpropagation(direction: str) -> None:
    models = []
    for adjoint in (False, True):
        b = FFJORD(hidden_dims=(8,), rtol=1e-9, atol=1e-9, adjoint=adjoint, context_features=3)(
            shape=(3,), context_shape=(2,)
        ).double()
        perturb(b, 1.0)
        models.append(b)
    grads = []
    for b in models:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(6, 3, dtype=F64, generator=gen).requires_grad_()
        c = torch.randn(6, 2, dtype=F64, generator=gen).requires_grad_()
        out, ladj = b.forward_and_ladj(x, c) if direction == "forward" else b.inverse_and_ladj(x, c)
        (out.square().sum() + out.sum() + 2.0 * ladj.sum()).backward()
        grads.append([x.grad, c.grad, *(p.grad for p in b.parameters())])
    for g_bp, g_adj in zip(*grads):
        assert g_bp is not None and g_adj is not None
        assert float((g_bp - g_adj).abs().max()) < 1e-6 * max(float(g_bp.abs().max()), 1.0)


def test_starts_at_the_identity() -> None:
    b = FFJORD(hidden_dims=(8,))(shape=(2, 3))
    x = torch.randn(4, 2, 3)
    y, ladj = b.forward_and_ladj(x)
    assert torch.equal(y, x) and torch.equal(ladj, torch.zeros(4))


def test_flow_samples_and_scores_consistently() -> None:
    torch.manual_seed(0)
    base = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(2), torch.ones(2)), 1)
    flow = dist.Flow(base, FFJORD(hidden_dims=(16,), rtol=1e-6, atol=1e-6))
    perturb(flow, 1.0)
    y, log_prob = flow.rsample_and_log_prob((64,))
    torch.testing.assert_close(flow.log_prob(y.detach()), log_prob.detach(), atol=1e-4, rtol=1e-4)
    with flowtorch.BijectiveMode():  # scores its own samples without a backward solve
        y = flow.rsample((8,))
        assert flow.log_prob(y).shape == (8,)
    # the round trip at these tolerances
    x = torch.randn(64, 2)
    bij = flow.bijector
    torch.testing.assert_close(bij.inverse(bij.forward(x)), x, atol=1e-4, rtol=1e-4)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="solver"):
        FFJORD(solver="euler")(shape=(2,))
    with pytest.raises(ValueError, match="trace"):
        FFJORD(trace="skilling")(shape=(2,))
    with pytest.raises(ValueError, match="time"):
        FFJORD(time=0.0)(shape=(2,))
    with pytest.raises(ValueError, match="hidden_dims"):
        FFJORD(hidden_dims=())(shape=(2,))
    with pytest.raises(ValueError, match="activation"):
        FFJORD(activation="relu")(shape=(2,))
    with pytest.raises(ValueError, match="steps"):
        FFJORD(solver="rk4", steps=0)(shape=(2,))
    with pytest.raises(ValueError, match="rtol"):
        FFJORD(rtol=-1.0)(shape=(2,))
    with pytest.raises(ValueError, match="takes no context"):
        FFJORD()(shape=(2,)).forward(torch.zeros(2), torch.zeros(3))


VALUE_ERRORS: list[tuple[str, Callable[[], Any], str]] = [
    (
        "FFJORD scalar",
        lambda: FFJORD()(shape=S([])),
        "FFJORD needs an event of at least one dim",
    ),
    (
        "FFJORD context_features=0",
        lambda: FFJORD(context_features=0)(shape=S([2]), context_shape=S([3])),
        "FFJORD: context_features must be a positive integer, got 0",
    ),
    (
        "FFJORD context_features=True",
        lambda: FFJORD(context_features=True)(shape=S([2])),
        "FFJORD: context_features must be a positive integer, got True",
    ),
]


@pytest.mark.parametrize(("make", "match"), [c[1:] for c in VALUE_ERRORS], ids=[c[0] for c in VALUE_ERRORS])
def test_bad_values_are_named(make: Callable[[], Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


REPRS: list[tuple[str, Callable[[], Any], str]] = [
    (
        "FFJORD",
        lambda: FFJORD(hidden_dims=(4,))(shape=S([2])),
        "shape=(2,), time=1.0, solver='dopri5', trace='exact'",
    ),
    (
        "FFJORD[adjoint]",
        lambda: FFJORD(hidden_dims=(4,), time=0.5, solver="rk4", trace="hutchinson", adjoint=True)(
            shape=S([2])
        ),
        "shape=(2,), time=0.5, solver='rk4', trace='hutchinson', adjoint=True",
    ),
]


@pytest.mark.parametrize(("make", "expected"), [c[1:] for c in REPRS], ids=[c[0] for c in REPRS])
def test_extra_repr_shows_the_hyperparameters(make: Callable[[], Any], expected: str) -> None:
    module = make()
    assert module.extra_repr() == expected
    text = repr(module)
    assert text.startswith(f"{type(module).__name__}(") and expected in text
