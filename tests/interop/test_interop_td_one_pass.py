"""``to_transformed_distribution(flow).log_prob(y)`` runs one inverse pass, as ``flow.log_prob``
does: ``TransformedDistribution`` asks for ``t.inv(y)`` and then ``t.log_abs_det_jacobian(x, y)``,
and the exported transform computes the log-det with the inverse and hands it over to that call
(matched by identity, guarded by version counters, used once)."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable
from typing import Any

import pytest
import torch

import flowtorch.bijectors as bij
import flowtorch.distributions as dist
import flowtorch.parameters as params
from flowtorch.interop import BijectorTransform, to_transformed_distribution

D = 4


def layer(kind: str) -> Any:
    made = params.DenseAutoregressive(hidden_dims=(8,))
    return bij.AffineAutoregressive(made) if kind == "MAF" else bij.Invert(bij.AffineAutoregressive(made))


def flow_of(kind: str) -> dist.Flow:
    torch.manual_seed(0)
    normal = torch.distributions.Normal(torch.zeros(D), torch.ones(D))
    flow = dist.Flow(torch.distributions.Independent(normal, 1), bij.Compose([layer(kind), layer(kind)]))
    with torch.no_grad():
        for p in flow.parameters():
            p.normal_(0.0, 0.2)
    return flow


def counting(flow: dist.Flow) -> list[int]:
    calls: list[int] = []
    for m in flow.modules():
        if isinstance(m, params.DenseAutoregressive):
            m.register_forward_hook(lambda *a: calls.append(1))
    return calls


@pytest.mark.parametrize("kind", ["MAF", "IAF"])
def test_log_prob_runs_the_inverse_once_and_agrees_with_the_flow(kind: str) -> None:
    flow = flow_of(kind)
    calls = counting(flow)
    y = torch.randn(5, D)
    flow.log_prob(y)
    n_flow = len(calls)
    calls.clear()
    td = to_transformed_distribution(flow)
    log_p = td.log_prob(y)
    assert len(calls) == n_flow  # (before: twice as many, the inverse pass run a second time)
    expected = flow.log_prob(y)
    torch.testing.assert_close(log_p, expected)
    grads = torch.autograd.grad(log_p.sum(), list(flow.parameters()))
    for g, e in zip(grads, torch.autograd.grad(expected.sum(), list(flow.parameters()))):
        torch.testing.assert_close(g, e)


def step(flow: dist.Flow) -> None:
    with torch.no_grad():  # as an optimizer's step
        next(flow.parameters()).add_(0.5)


def replace(flow: dist.Flow) -> None:
    made = next(m for m in flow.modules() if isinstance(m, params.DenseAutoregressive))
    name, p = next(iter(made.named_parameters()))
    module = made.get_submodule(name.rpartition(".")[0]) if "." in name else made
    setattr(module, name.rpartition(".")[2], torch.nn.Parameter(p.detach() + 0.5))


CHANGES: dict[str, Callable[[torch.Tensor, torch.Tensor, dist.Flow], Any]] = {
    "y written in place": lambda x, y, flow: y.add_(1.0),
    "x written in place": lambda x, y, flow: x.mul_(2.0),
    "a parameter stepped": lambda x, y, flow: step(flow),
    "a parameter replaced": lambda x, y, flow: replace(flow),
    "grad mode turned off": lambda x, y, flow: torch.set_grad_enabled(False),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_change_between_the_two_calls_recomputes(change: str) -> None:
    flow = flow_of("MAF")
    t = BijectorTransform(flow.bijector, ladj_with_inverse=True)
    y = torch.randn(3, D)
    with torch.enable_grad():
        x = t.inv(y)
        CHANGES[change](x, y, flow)
        try:
            got = t.log_abs_det_jacobian(x, y)
            expected = flow.bijector.log_abs_det_jacobian(x, y)
        finally:
            torch.set_grad_enabled(True)
    torch.testing.assert_close(got, expected)


def test_the_log_det_serves_once_and_only_its_own_pair() -> None:
    flow = flow_of("MAF")
    t = BijectorTransform(flow.bijector, ladj_with_inverse=True)
    y = torch.randn(3, D)
    x = t.inv(y)
    other = x.clone()
    assert t.log_abs_det_jacobian(other, y) is not None  # another x: computed, and the entry dropped
    assert t._pending is None
    x = t.inv(y)
    first = t.log_abs_det_jacobian(x, y)
    second = t.log_abs_det_jacobian(x, y)
    assert first is not second  # used once: the second call computes
    torch.testing.assert_close(first, second)


def test_a_transform_with_a_pending_log_det_pickles_and_copies() -> None:
    flow = flow_of("MAF")
    td = to_transformed_distribution(flow)
    t = td.transforms[0]
    x = t.inv(torch.randn(2, D))
    assert t._pending is not None and x.shape == (2, D)
    pickle.loads(pickle.dumps(t))
    copied = copy.deepcopy(t)
    assert copied._pending is None
    assert not BijectorTransform(flow.bijector).ladj_with_inverse  # to_transform's: one call per method
    assert t.with_cache(1).ladj_with_inverse


def test_inside_the_mode_its_own_samples_are_scored_from_the_cache() -> None:
    import warnings

    import flowtorch

    flow = flow_of("IAF")
    td = to_transformed_distribution(flow)
    calls = counting(flow)
    with warnings.catch_warnings(), flowtorch.BijectiveMode():
        warnings.simplefilter("error")
        y = td.rsample((3,))
        n_sample = len(calls)
        log_p = td.log_prob(y)
    assert len(calls) == n_sample  # no conditioner call: the IAF's sequential inverse is skipped
    torch.testing.assert_close(log_p, flow.log_prob(y))
