"""The ``Bijector`` base class: its defaults (no parameters, the inverse and log-det derived from
the three required methods, ``NotImplementedError`` without them), and the log-det of a pair
whose input has the larger batch."""

from __future__ import annotations

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
