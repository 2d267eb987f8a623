"""The ``Bijector`` base class: its defaults (no parameters, the inverse and log-det derived from
the three required methods, ``NotImplementedError`` without them), and the log-det of a pair
whose input has the larger batch."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch

import flowtorch.bijectors as bij
import flowtorch.parameters as params
from flowtorch.core.bijector import Bijector, Params

S = torch.Size


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


VALUE_ERRORS: list[tuple[str, Callable[[], Any], str]] = [
    (
        "negative context_shape",
        lambda: bij.Affine(params.Tensor())(shape=S([2]), context_shape=S([-1])),
        r"Affine: context_shape \(-1,\) has a negative size",
    ),
]


@pytest.mark.parametrize(("make", "match"), [c[1:] for c in VALUE_ERRORS], ids=[c[0] for c in VALUE_ERRORS])
def test_bad_values_are_named(make: Callable[[], Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def test_a_family_base_is_declared_and_skipped_by_the_generic_suite() -> None:
    from flowtorch.bijectors.linear import LUBijector
    from flowtorch.bijectors.monotonic import MonotoneBijector
    from flowtorch.core.elementwise import ElementwiseBijector
    from tests.conftest import bijector_classes

    found = set(bijector_classes())
    for base in (LUBijector, MonotoneBijector):
        assert base.is_base and base not in found
    for cls in (bij.LULinear, bij.Invertible1x1Conv, bij.NeuralAutoregressive, bij.Bernstein, bij.Affine):
        assert not cls.is_base and cls in found  # declared per class, never inherited
    assert ElementwiseBijector.is_base


def test_a_subclass_with_its_own_fused_maths_gets_its_value_from_it() -> None:
    """A value-only method written beside a fused one (the elementwise wiring's) belongs to that
    fused maths: a subclass that writes its own fused method is not served the parent's value."""

    class Doubled(bij.Affine):
        def _forward_and_ladj(self, x, params):  # type: ignore[no-untyped-def]
            return 2.0 * x, torch.full_like(x, math.log(2.0))

    b = Doubled(shape=torch.Size([3]))
    x = torch.randn(4, 3)
    torch.testing.assert_close(b.forward(x), 2.0 * x)
    torch.testing.assert_close(b.forward_and_ladj(x)[0], 2.0 * x)
    plain = bij.Affine(shape=torch.Size([3]))
    torch.testing.assert_close(plain.forward(x), plain.forward_and_ladj(x)[0])  # the parent keeps its own


class DeferredScale(Bijector):
    """:math:`y = e^{c} x`, written as its two deferred passes only."""

    def _forward_deferred(self, x: torch.Tensor, params: Params) -> tuple[torch.Tensor, Any]:
        self.calls.append("forward")
        return x * math.e, lambda: torch.ones_like(x)

    def _inverse_deferred(self, y: torch.Tensor, params: Params) -> tuple[torch.Tensor, Any]:
        return y / math.e, lambda: torch.ones_like(y)


def test_a_class_that_writes_only_its_deferred_passes_is_a_whole_bijector() -> None:
    import flowtorch

    b = DeferredScale(shape=S([2]))
    b.calls = []
    x = torch.randn(3, 2)
    y, ladj = b.forward_and_ladj(x)
    torch.testing.assert_close(y, math.e * x)
    torch.testing.assert_close(ladj, torch.full((3,), 2.0))
    torch.testing.assert_close(b.inverse_and_ladj(y)[1], ladj)
    torch.testing.assert_close(b.inverse(b.forward(x)), x)
    torch.testing.assert_close(b.log_abs_det_jacobian(x, y), ladj)
    b.calls.clear()
    with flowtorch.BijectiveMode(requires_ladj=False):
        y = b.forward(x)
        assert b.log_abs_det_jacobian(x, y).tolist() == [2.0, 2.0, 2.0]
    assert b.calls == ["forward"]  # one pass: the log-det came from its later()


def test_a_deferred_pass_without_a_later_is_refused_by_name() -> None:
    class NoLater(Bijector):
        def _forward_deferred(self, x: torch.Tensor, params: Params) -> tuple[torch.Tensor, Any]:
            return x, None

    with pytest.raises(
        TypeError, match=r"NoLater._forward_deferred returned no later\(\).*_forward_and_ladj"
    ):
        NoLater(shape=S([2])).forward_and_ladj(torch.zeros(2))
