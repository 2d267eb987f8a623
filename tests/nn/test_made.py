"""The masked layer of MADE: a mask of the wrong shape is named, and a sequential pass computes
each masked layer's ``W * M`` once; nothing else changes."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import torch

import flowtorch.bijectors as bij
import flowtorch.distributions as dist
import flowtorch.parameters as params
from flowtorch.nn import MaskedLinear
from flowtorch.nn import made as made_module
from flowtorch.nn.made import fixed_masked_weights


def _layer() -> MaskedLinear:
    torch.manual_seed(0)
    return MaskedLinear(3, 4, mask=(torch.rand(4, 3) > 0.5).float())


def _flow(skip: bool = False) -> dist.Flow:
    torch.manual_seed(1)
    base = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(5), torch.ones(5)), 1)
    made = params.DenseAutoregressive(hidden_dims=(8, 8), skip_connections=skip)
    flow = dist.Flow(base, bij.Compose([bij.AffineAutoregressive(made), bij.AffineAutoregressive(made)]))
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))  # every layer does real work
    return flow


def _without_the_scope(monkeypatch: pytest.MonkeyPatch) -> None:
    """Makes every scope a no-op, as the code before it computed ``W * M`` per call."""
    monkeypatch.setattr(made_module, "_is_compiling", lambda: True)


@pytest.mark.parametrize("skip", [False, True])
def test_sequential_sampling_gives_the_same_values_and_gradients(
    skip: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = []
    for fixed in (True, False):
        with monkeypatch.context() as m:
            if not fixed:
                _without_the_scope(m)
            flow = _flow(skip)
            torch.manual_seed(2)
            y, lp = flow.rsample_and_log_prob((7,))
            (y.sum() + lp.sum()).backward()
            results.append((y.detach(), lp.detach(), [p.grad.clone() for p in flow.parameters()]))
    (y1, lp1, g1), (y2, lp2, g2) = results
    torch.testing.assert_close(y1, y2)
    torch.testing.assert_close(lp1, lp2)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)


def test_the_product_is_computed_once_per_scope(monkeypatch: pytest.MonkeyPatch) -> None:
    layer, x = _layer(), torch.randn(2, 3)
    calls = []
    original = torch.Tensor.__mul__

    def counting(self: torch.Tensor, other: Any) -> Any:
        if self is layer.weight:
            calls.append(1)
        return original(self, other)

    monkeypatch.setattr(torch.Tensor, "__mul__", counting)
    with fixed_masked_weights([layer]):
        outs = [layer(x) for _ in range(5)]
    assert len(calls) == 1
    assert layer._fixed is None  # the scope leaves nothing behind
    for out in outs:
        torch.testing.assert_close(out, torch.nn.functional.linear(x, layer.weight * layer.mask, layer.bias))


def test_a_call_in_another_grad_mode_computes_its_own_product() -> None:
    layer, x = _layer(), torch.randn(2, 3)
    with torch.no_grad(), fixed_masked_weights([layer]), torch.enable_grad():
        out = layer(x)  # the fixed product has no graph: this call must not use it
    out.sum().backward()
    assert layer.weight.grad is not None
    torch.testing.assert_close(layer.weight.grad, layer.mask * torch.ones(4, 1) * x.sum(0))


def test_another_thread_computes_its_own_product(monkeypatch: pytest.MonkeyPatch) -> None:
    layer, x = _layer(), torch.randn(2, 3)
    products: list[int] = []
    original = torch.Tensor.__mul__

    def counting(self: torch.Tensor, other: Any) -> Any:
        if self is layer.weight:
            products.append(threading.get_ident())
        return original(self, other)

    monkeypatch.setattr(torch.Tensor, "__mul__", counting)
    out: list[torch.Tensor] = []
    with fixed_masked_weights([layer]):
        t = threading.Thread(target=lambda: out.append(layer(x)))
        t.start()
        t.join()
        layer(x)  # served from the scope
    assert products == [threading.get_ident(), t.ident]  # the scope's product, then the thread's own
    torch.testing.assert_close(out[0], torch.nn.functional.linear(x, layer.weight * layer.mask, layer.bias))


def test_the_scope_is_left_clean_after_an_error_and_nested_scopes_keep_the_outer() -> None:
    layer = _layer()
    with pytest.raises(RuntimeError, match="boom"), fixed_masked_weights([layer]):
        raise RuntimeError("boom")
    assert layer._fixed is None
    with fixed_masked_weights([layer]):
        outer = layer._fixed
        with fixed_masked_weights([layer]):
            assert layer._fixed is outer
        assert layer._fixed is outer  # the inner scope did not clear the outer one
    assert layer._fixed is None


def test_a_mask_of_the_wrong_shape_is_named() -> None:
    with pytest.raises(ValueError, match=r"MaskedLinear: mask has shape \(3, 2\), expected \(2, 3\)"):
        MaskedLinear(3, 2, torch.ones(3, 2))
