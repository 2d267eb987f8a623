"""Generic checks run over every bijector that ``flowtorch.bijectors`` exports.

A new bijector is picked up automatically by ``conftest.CASES``; ``test_registry_is_complete``
fails if one could escape these tests.
"""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

import flowtorch
import flowtorch.bijectors as bij
from flowtorch.core.bijector import Bijector
from tests.conftest import CASES, WRAPPERS, Case, bijector_classes, context_for, domain_sample

TOL = {torch.float32: dict(atol=1e-4, rtol=1e-4), torch.float64: dict(atol=1e-9, rtol=1e-9)}


def test_registry_is_complete() -> None:
    covered = {c.name.split("[")[0] for c in CASES}
    for cls in bijector_classes():
        assert cls.__name__ in bij.__all__, f"{cls.__name__} is not exported by flowtorch.bijectors"
        if cls not in WRAPPERS:
            assert cls.__name__ in covered, f"{cls.__name__} is not covered by the generic tests"


def test_round_trip(case: Case, dtype: torch.dtype) -> None:
    b = case.build(dtype)
    x = domain_sample(b, (5,), dtype)
    c = context_for(case, (5,), dtype)
    y = b.forward(x, c)
    assert y.dtype == dtype and y.shape == (5, *b.forward_shape(b.shape))
    tol = TOL[dtype]
    if case.name.startswith("Compose") and dtype == torch.float32:
        # float32 rounding is amplified by each layer's inverse Lipschitz constant
        tol = dict(atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(b.inverse(y, c), x, **tol)
    # and the other way round, from points of the codomain reached by the forward map
    y2 = b.forward(domain_sample(b, (5,), dtype), c).detach()
    torch.testing.assert_close(b.forward(b.inverse(y2, c), c), y2, **tol)


def _jacobian_ladj(b: Bijector, x: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
    """log|det J| of one event from the autograd Jacobian."""
    n = x.numel()

    def f(flat: torch.Tensor) -> torch.Tensor:
        return b.forward(flat.reshape(x.shape), c).reshape(n)  # bijective: as many outputs as inputs

    jac = torch.autograd.functional.jacobian(f, x.reshape(n))
    return torch.linalg.slogdet(jac)[1]


def test_log_abs_det_jacobian_matches_autograd(case: Case) -> None:
    dtype = torch.float64
    b = case.build(dtype)
    for i in range(3):
        x = domain_sample(b, (), dtype, scale=1.5)
        c = context_for(case, (), dtype)
        y = b.forward(x, c)
        expected = _jacobian_ladj(b, x, c)
        torch.testing.assert_close(
            b.log_abs_det_jacobian(x, y, c), expected, atol=1e-8, rtol=1e-8, msg=f"point {i}"
        )
        _, ladj = b.forward_and_ladj(x, c)
        torch.testing.assert_close(ladj, expected, atol=1e-8, rtol=1e-8)
        x2, ladj_inv = b.inverse_and_ladj(y.detach(), c)
        torch.testing.assert_close(ladj_inv, expected, atol=1e-7, rtol=1e-7)
        torch.testing.assert_close(x2, x, atol=1e-8, rtol=1e-8)


def test_shapes_sample_batch_and_context_broadcast(case: Case) -> None:
    dtype = torch.float32
    b = case.build(dtype)
    x = domain_sample(b, (4, 3), dtype)
    # the context has only the batch dim; it broadcasts against the sample dim
    c = context_for(case, (3,), dtype)
    y, ladj = b.forward_and_ladj(x, c)
    assert y.shape == (4, 3, *b.forward_shape(b.shape))
    assert ladj.shape == (4, 3)
    assert b.log_abs_det_jacobian(x, y, c).shape == (4, 3)
    x2, ladj2 = b.inverse_and_ladj(y, c)
    assert x2.shape == x.shape and ladj2.shape == (4, 3)
    # a single event, no batch at all
    x0 = domain_sample(b, (), dtype)
    c0 = context_for(case, (), dtype)
    y0, l0 = b.forward_and_ladj(x0, c0)
    assert y0.shape == b.forward_shape(b.shape) and l0.shape == ()
    # batch elements are independent: the batched result equals the per-element results
    for i in range(3):
        ci = None if c is None else c[i]
        torch.testing.assert_close(b.forward(x[1, i], ci), y[1, i], atol=1e-5, rtol=1e-5)


def test_gradients_reach_every_parameter(case: Case) -> None:
    b = case.build(torch.float64)
    x = domain_sample(b, (8,), torch.float64).requires_grad_()
    c = context_for(case, (8,), torch.float64)
    if c is not None:
        c.requires_grad_()
    y, ladj = b.forward_and_ladj(x, c)
    # a random linear term too: some maps leave y.square().sum() unchanged (orthogonal ones)
    weights = torch.randn(y.shape, dtype=y.dtype, generator=torch.Generator().manual_seed(1))
    (y.square().sum() + (weights * y).sum() + ladj.sum()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for name, p in b.named_parameters():
        assert p.grad is not None, f"no gradient reaches {name}"
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"zero gradient for {name}"
    if c is not None:
        assert c.grad is not None and c.grad.abs().sum() > 0, "the context does not influence the output"


def test_dtype_follows_input(case: Case, dtype: torch.dtype) -> None:
    b = case.build(dtype)
    x = domain_sample(b, (2,), dtype)
    c = context_for(case, (2,), dtype)
    y, ladj = b.forward_and_ladj(x, c)
    assert y.dtype == dtype and ladj.dtype == dtype
    assert type(y) is torch.Tensor and type(ladj) is torch.Tensor


@pytest.mark.parametrize("case", [c for c in CASES if c.context], ids=lambda c: c.name)
def test_context_changes_the_map(case: Case) -> None:
    b = case.build(torch.float64)
    x = domain_sample(b, (1,), torch.float64).expand(2, *b.shape)
    c = torch.randn(2, *b.context_shape, dtype=torch.float64)  # type: ignore[misc]
    y = b.forward(x, c)
    assert not torch.allclose(y[0], y[1])


def test_cached_calls_leave_no_reference_cycles(case: Case) -> None:
    """Entries never hold a graph that keeps their own tensor alive (memory stays flat)."""
    b = case.build(torch.float32)
    gc.disable()
    try:
        with flowtorch.BijectiveMode():
            x = domain_sample(b, (4,), torch.float32).requires_grad_()
            c = context_for(case, (4,), torch.float32)
            y = b.forward(x, c)
            y2 = b.forward(domain_sample(b, (4,), torch.float32), c).detach()
            x2 = b.inverse(y2, c)
            _, ladj = b.inverse_and_ladj(y2 + 0, c)
            refs = [weakref.ref(t) for t in (y, x2)]
            del x, y, y2, x2, ladj
            assert all(r() is None for r in refs), "a cache entry keeps its own tensor alive"
    finally:
        gc.enable()


def test_plan_pickle_and_deepcopy(case: Case, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import copy

    b = case.build(torch.float32)
    x = domain_sample(b, (3,), torch.float32)
    c = context_for(case, (3,), torch.float32)
    expected = b.forward(x, c)
    b2 = copy.deepcopy(b)
    torch.testing.assert_close(b2.forward(x, c), expected)
    torch.save(b, tmp_path / "b.pt")
    b3 = torch.load(tmp_path / "b.pt", weights_only=False)
    torch.testing.assert_close(b3.forward(x, c), expected)
    fresh = case.make()(shape=case.shape, context_shape=b.context_shape)
    fresh.load_state_dict(b.state_dict())
    torch.testing.assert_close(fresh.forward(x, c), expected)
