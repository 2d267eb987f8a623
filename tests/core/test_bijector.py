"""Paths of the core (``bijectors/base.py``, ``bijectors/mode.py``, ``bijectors/compose.py``,
``lazy.py``) that the rest of the suite does not reach: defaults of the base class, broadcasting
contexts in log-dets, entries of several modes on one tensor, ``out=`` tuples, and ``Invert`` of a
shape-changing plan. Each test states the behaviour; the coverage report is why it exists."""

from __future__ import annotations

import copy
import pickle
import warnings

import pytest
import torch

import flowtorch
import flowtorch.bijectors as bij
import flowtorch.parameters as params
from flowtorch.core.bijector import Bijector, Params
from flowtorch.core.lazy import Lazy, Plan
from flowtorch.core.mode import entry_of, has_entry


class Doubling(Bijector):
    """:math:`y = 2x`, written with the three required methods only (no fused ones)."""

    def _forward(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        return 2 * x

    def _inverse(self, y: torch.Tensor, params: Params) -> torch.Tensor:
        return y / 2

    def _log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor, params: Params) -> torch.Tensor:
        return torch.full_like(x, 0.6931471805599453)


class Unfinished(Bijector):
    """A subclass that forgot its maths."""


def test_base_defaults() -> None:
    b = Doubling()(shape=torch.Size([3]))
    assert b.param_shapes() == () and b.params_fn is None and b.context_shape is None
    x = torch.randn(4, 3)
    x2, ladj = b.inverse_and_ladj(2 * x)  # the default: inverse, then the log-det from the pair
    torch.testing.assert_close(x2, x)
    torch.testing.assert_close(ladj, torch.full((4,), 3 * 0.6931471805599453))
    u = Unfinished()(shape=torch.Size([3]))
    for call in (lambda: u.forward(x), lambda: u.log_abs_det_jacobian(x, x), lambda: u.forward_and_ladj(x)):
        with pytest.raises(NotImplementedError):
            call()


def test_log_det_of_a_pair_whose_input_has_the_larger_batch() -> None:
    """``inverse`` of one event with a batch of contexts gives a batch of ``x``; the log-det of
    the pair ``(x, y)`` then has the batch of ``x``."""
    torch.manual_seed(0)
    b = bij.Affine(params.Tensor(hidden_dims=(4,)))(shape=torch.Size([3]), context_shape=torch.Size([2]))
    with torch.no_grad():
        for p in b.parameters():
            p.normal_(0.0, 0.5)
    y, c = torch.randn(3), torch.randn(5, 2)
    x = b.inverse(y, c)
    assert x.shape == (5, 3)
    ladj = b.log_abs_det_jacobian(x, y, c)
    assert ladj.shape == (5,)
    torch.testing.assert_close(ladj, b.forward_and_ladj(x, c)[1])


# ---------------------------------------------------------------------- mode bookkeeping
class Fixed(Bijector):
    """A degenerate 'bijector' that always returns the same tensor objects: it lets two calls in
    two modes record entries on one tensor."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor, *, shape: torch.Size) -> None:
        super().__init__(None, shape=shape)
        self.a, self.b = a, b

    def _forward(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        return self.b

    def _inverse(self, y: torch.Tensor, params: Params) -> torch.Tensor:
        return self.a

    def _log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor, params: Params) -> torch.Tensor:
        return torch.zeros_like(x)


def test_entries_of_several_modes_on_one_tensor() -> None:
    """Leaving the inner mode removes its entries and keeps the outer mode's, in their order."""
    a, a2, b = torch.randn(3), torch.randn(3), torch.randn(3)
    f = Fixed(a, b, shape=torch.Size([3]))
    g = Fixed(a2, b, shape=torch.Size([3]))
    h = Fixed(a, b, shape=torch.Size([3]))
    with flowtorch.BijectiveMode():
        assert f.forward(a) is b  # entry 1 (outer) on b
        with flowtorch.BijectiveMode():
            assert g.forward(a2) is b  # entry 2 (inner) on b
            assert f.inverse(b) is a and g.inverse(b) is a2  # both served
        assert h.forward(a) is b  # entry 3 (outer), recorded after the inner mode left
        with flowtorch.BijectiveMode():
            assert g.forward(a2) is b  # entry 4 (inner), on top of two outer ones
        assert f.inverse(b) is a and h.inverse(b) is a  # the outer entries survive
        entry, n = entry_of(b), 0
        while entry is not None:
            n, entry = n + 1, entry.previous
        assert n == 2
    assert not has_entry(b)


def _maf(context: bool = False) -> Bijector:
    torch.manual_seed(0)
    return bij.AffineAutoregressive(params.DenseAutoregressive(hidden_dims=(8,)))(
        shape=torch.Size([3]), context_shape=torch.Size([2]) if context else None
    )


def test_context_handed_to_numpy_makes_its_entries_stale() -> None:
    b = _maf(context=True)
    x, c = torch.randn(4, 3), torch.randn(4, 2)
    with flowtorch.BijectiveMode():
        y = b.forward(x, c)
        torch.randn(2).numpy()  # unrelated storage
        assert b.inverse(y, c) is x
        c.numpy()  # the context's storage can now change unseen
        x2 = b.inverse(y, c)
        assert x2 is not x
        torch.testing.assert_close(x2, x, atol=1e-5, rtol=1e-5)


def test_out_tuple_writing_through_a_data_alias_makes_entries_stale() -> None:
    b = _maf()
    x = torch.randn(4, 3)
    with flowtorch.BijectiveMode():
        y = b.forward(x)
        alias = x.data  # shares x's memory, not its version counter
        idx = torch.empty(4, 3, dtype=torch.long)
        torch.max(torch.randn(2, 4, 3), dim=0, out=[torch.empty(4, 3), idx])  # unrelated targets
        assert b.inverse(y) is x
        torch.max(torch.randn(2, 4, 3), dim=0, out=(alias, idx))  # writes x unseen by its version
        x2 = b.inverse(y)
        assert x2 is not x
        torch.testing.assert_close(b.forward(x2), y, atol=1e-5, rtol=1e-5)


def test_unrelated_writes_while_an_alias_exists_keep_entries() -> None:
    b = _maf()
    x, other = torch.randn(4, 3), torch.randn(4, 3)
    with flowtorch.BijectiveMode():
        y = b.forward(x)
        _ = other.data  # an alias exists: in-place ops are now inspected
        other.add_(1.0)
        torch.add(other, 1.0, out=other)
        torch.add(other, 1.0, out=None)  # an out= that is not a tensor
        assert b.inverse(y) is x
        x.data.mul_(1.0)  # a write through an alias of x: stale
        assert b.inverse(y) is not x


def test_pickle_and_deepcopy_of_tensors_without_entries_inside_the_mode() -> None:
    with flowtorch.BijectiveMode(), torch.no_grad():
        t = torch.randn(3)
        for clone in (pickle.loads(pickle.dumps(t)), copy.deepcopy(t)):
            assert type(clone) is torch.Tensor and torch.equal(clone, t)
        assert not has_entry(t)


def test_mode_as_a_decorator_and_cache_miss_warning_once() -> None:
    b = _maf()

    @flowtorch.BijectiveMode(requires_ladj=False)
    def score(x: torch.Tensor) -> tuple[bool, torch.Tensor]:
        y = b.forward(x)
        return b.inverse(y) is x, b.log_abs_det_jacobian(x, y)

    x = torch.randn(4, 3)
    hit, ladj = score(x)
    assert hit
    torch.testing.assert_close(ladj, b.forward_and_ladj(x)[1])
    with flowtorch.BijectiveMode(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y = b.forward(x)
        for _ in range(3):  # a pair the cache does not know: computed, warned about once
            b.log_abs_det_jacobian(x.clone(), y.clone())
    assert [w.category for w in caught] == [flowtorch.CacheMissWarning]


# ---------------------------------------------------------------------- compose.py, lazy.py
def test_invert_of_a_shape_changing_plan_is_built_for_its_output_shape() -> None:
    b = bij.Invert(bij.Squeeze())(shape=torch.Size([4, 2, 2]))
    assert b.shape == (4, 2, 2) and b.out_shape == (1, 4, 4) and b.bijector.shape == (1, 4, 4)
    x = torch.randn(5, 4, 2, 2)
    y = b.forward(x)
    assert y.shape == (5, 1, 4, 4)
    torch.testing.assert_close(b.inverse(y), x)
    assert "Squeeze" in repr(b) and b.extra_repr() == ""


def test_invert_of_a_built_bijector_for_another_shape() -> None:
    with pytest.raises(ValueError, match=r"Invert: the inner bijector maps \(3,\) to \(3,\), so its inverse"):
        bij.Invert(bij.Exp()(shape=torch.Size([3])), shape=torch.Size([2]))


def test_plan_repr_keyword_precedence_and_the_08_alias() -> None:
    plan = Plan(bij.Spline, count_bins=4, bound=None)
    assert repr(plan) == "Plan(Spline, count_bins=4, bound=None)"
    b = plan(shape=torch.Size([2]), bound=2.0)  # a plan's None does not override a build argument
    assert b.count_bins == 4 and b.bound == 2.0
    assert Lazy is Plan
    b2 = copy.deepcopy(b)
    assert type(b2) is bij.Spline and b2.shape == (2,)
