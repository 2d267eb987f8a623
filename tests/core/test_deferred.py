"""Deferred log-dets: ``BijectiveMode(requires_ladj=False)``.

A forward or inverse call inside such a mode skips the part of log|det J| that has a cost of its
own and keeps what that part needs (``Bijector._forward_deferred``); a later
``log_abs_det_jacobian`` on the pair computes it from what was kept, once. These tests check,
for every bijector of the generic suite, that the deferred value and its gradients are the eager
ones; that the spline, the only transformer with a costly log-derivative, really leaves it out of
the pass and does not search its bins again; and the corner cases of a value computed after the
call (written by the caller, asked for under another grad mode, a subclass with its own maths).
"""

from __future__ import annotations

import pytest
import torch
from torch.overrides import TorchFunctionMode

import flowtorch
import flowtorch.bijectors as bij
import flowtorch.parameters as params
from flowtorch.core import mode as _mode
from flowtorch.core.elementwise import ElementwiseBijector
from tests.case import CONTEXT_SHAPE, Case
from tests.conftest import CASES, domain_sample

F64 = torch.float64


def _context(case: Case, n: int) -> torch.Tensor | None:
    return torch.randn(n, *CONTEXT_SHAPE, dtype=F64) if case.context else None


def _grads(out: torch.Tensor, wrt: list[torch.Tensor]) -> list[torch.Tensor]:
    grads = torch.autograd.grad(out.sum(), wrt, allow_unused=True)
    return [torch.zeros_like(w) if g is None else g for g, w in zip(grads, wrt)]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_deferred_log_det_equals_the_eager_one_with_its_gradients(case: Case) -> None:
    b = case.build(F64, 3)
    torch.manual_seed(4)
    x = domain_sample(b, (5,), F64).requires_grad_()
    c = _context(case, 5)
    wrt = [x, *(p for p in b.parameters() if p.requires_grad)]
    y_eager, ladj_eager = b.forward_and_ladj(x, c)
    expected = _grads(y_eager.sum() + ladj_eager.sum(), wrt)
    with flowtorch.BijectiveMode(requires_ladj=False):
        y = b.forward(x, c)
        ladj = b.log_abs_det_jacobian(x, y, c)
        again = b.log_abs_det_jacobian(x, y, c)
    torch.testing.assert_close(y, y_eager)
    torch.testing.assert_close(ladj, ladj_eager)
    torch.testing.assert_close(again, ladj_eager)
    for got, want in zip(_grads(y.sum() + ladj.sum(), wrt), expected):
        torch.testing.assert_close(got, want)


class _Count(TorchFunctionMode):
    """Counts the calls of each torch function made under it."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: dict[str, int] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        name = getattr(func, "__name__", str(func))
        self.calls[name] = self.calls.get(name, 0) + 1
        return func(*args, **(kwargs or {}))


def _spline_flow() -> flowtorch.distributions.Flow:
    torch.manual_seed(0)
    base = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(3), torch.ones(3)), 1)
    plan = bij.Compose([bij.Invert(bij.SplineAutoregressive()), bij.SplineCoupling()])
    return flowtorch.distributions.Flow(base, plan)


def test_sampling_under_requires_ladj_false_skips_the_spline_log_derivative() -> None:
    flow = _spline_flow()
    counts = {}
    for requires_ladj in (True, False):
        count = _Count()
        with flowtorch.BijectiveMode(requires_ladj=requires_ladj), count:
            flow.rsample((7,))
        counts[requires_ladj] = count.calls
    # the log-derivative is the spline's only logarithm (two per layer when computed)
    assert counts[True].get("log", 0) >= 4
    assert counts[False].get("log", 0) == 0
    # and the bins are searched as often either way: once per layer
    assert counts[False]["searchsorted"] == counts[True]["searchsorted"] == 2


def test_scoring_a_deferred_sample_neither_searches_the_bins_nor_calls_a_conditioner_again() -> None:
    flow = _spline_flow()
    with flowtorch.BijectiveMode(requires_ladj=False):
        y = flow.rsample((7,))
        count = _Count()
        with count:
            log_p = flow.log_prob(y)
    assert "searchsorted" not in count.calls
    assert "linear" not in count.calls  # no MADE or MLP layer ran
    torch.manual_seed(1)
    with flowtorch.BijectiveMode(requires_ladj=False):
        y2 = flow.rsample((7,))
        deferred = flow.log_prob(y2)
    torch.manual_seed(1)
    y1, one_pass = flow.rsample_and_log_prob((7,))
    torch.testing.assert_close(y2, y1)
    torch.testing.assert_close(deferred, one_pass)
    assert log_p.shape == (7,)


def _entry(b: bij.Bijector, y: torch.Tensor) -> _mode.Entry:
    entry = _mode.entry_of(y)
    assert entry is not None and entry.bijector is b
    return entry


def test_the_deferred_value_is_computed_once_then_guarded_as_a_stored_one() -> None:
    b = bij.Spline(shape=torch.Size([4]))
    with torch.no_grad():
        for p in b.parameters():
            p.normal_()
    x = torch.randn(3, 4)
    want = b.forward_and_ladj(x)[1]
    with flowtorch.BijectiveMode(requires_ladj=False):
        y = b.forward(x)
        entry = _entry(b, y)
        assert entry.ladj is None and entry.later is not None
        ladj = b.log_abs_det_jacobian(x, y)
        assert entry.later is None and entry.ladj is ladj
        assert b.log_abs_det_jacobian(x, y) is ladj  # served, not computed again
        torch.testing.assert_close(ladj, want)
        ladj.mul_(0.0)  # the caller writes the tensor it was given: it is not served again
        torch.testing.assert_close(b.log_abs_det_jacobian(x, y), want)


def test_a_deferred_value_asked_for_under_no_grad_keeps_the_graph_for_a_later_call() -> None:
    b = bij.Spline(shape=torch.Size([4]))
    with torch.no_grad():
        for p in b.parameters():
            p.normal_()
    x = torch.randn(3, 4, requires_grad=True)
    wrt = [x, *b.parameters()]
    expected = _grads(b.forward_and_ladj(x)[1], wrt)
    with flowtorch.BijectiveMode(requires_ladj=False):
        y = b.forward(x)
        with torch.no_grad():
            first = b.log_abs_det_jacobian(x, y)
        assert not first.requires_grad
        second = b.log_abs_det_jacobian(x, y)
    assert second.requires_grad
    torch.testing.assert_close(first, second.detach())
    for got, want in zip(_grads(second, wrt), expected):
        torch.testing.assert_close(got, want)


def test_a_stale_deferred_entry_is_recomputed_from_the_new_parameters() -> None:
    b = bij.Spline(shape=torch.Size([4]))
    x = torch.randn(3, 4)
    with flowtorch.BijectiveMode(requires_ladj=False):
        y = b.forward(x)
        with torch.no_grad():
            for p in b.parameters():
                p.add_(0.5)
        with pytest.warns(flowtorch.CacheMissWarning):
            ladj = b.log_abs_det_jacobian(x, y)
    torch.testing.assert_close(ladj, b.forward_and_ladj(x)[1])


class _DoubledAffine(ElementwiseBijector):
    """An elementwise subclass that writes its own maths: y = 2 (x + shift)."""

    def __init__(self, params_fn=None, *, shape, context_shape=None):  # type: ignore[no-untyped-def]
        from flowtorch.transformers import AffineTransformer

        self.transformer = AffineTransformer()
        super().__init__(params_fn or params.Tensor(), shape=shape, context_shape=context_shape)

    def _forward_and_ladj(self, x, params):  # type: ignore[no-untyped-def]
        y, ladj = self.transformer.forward(x, params)
        return 2.0 * y, ladj + torch.log(torch.tensor(2.0))

    def _inverse_and_ladj(self, y, params):  # type: ignore[no-untyped-def]
        x, ladj = self.transformer.inverse(y / 2.0, params)
        return x, ladj + torch.log(torch.tensor(2.0))


def test_a_subclass_with_its_own_maths_defers_its_own_maths() -> None:
    b = _DoubledAffine(shape=torch.Size([2]))
    x = torch.randn(3, 2)
    y_eager, ladj_eager = b.forward_and_ladj(x)
    with flowtorch.BijectiveMode(requires_ladj=False):
        y = b.forward(x)
        ladj = b.log_abs_det_jacobian(x, y)
        x_back = b.inverse(y.clone())
    torch.testing.assert_close(y, y_eager)
    torch.testing.assert_close(ladj, ladj_eager)
    torch.testing.assert_close(x_back, x)
