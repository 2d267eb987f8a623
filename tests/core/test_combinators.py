"""Cat and Stack: bad arguments, each error with its type and the problem named."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

import flowtorch.bijectors as bij
import flowtorch.parameters as params
from flowtorch.core.combinators import Cat, Stack

S = torch.Size


def _conditional_affine(shape: int, context: int) -> Any:
    return bij.Affine(params.Tensor())(shape=S([shape]), context_shape=S([context]))


VALUE_ERRORS: list[tuple[str, Callable[[], Any], str]] = [
    (
        "Cat parts with different contexts",
        lambda: Cat([_conditional_affine(1, 2), _conditional_affine(1, 3)]),
        r"Cat: the parts take different context shapes \[\(2,\), \(3,\)\]",
    ),
    (
        "Cat of nothing",
        lambda: Cat([])(shape=S([2])),
        "Cat needs at least one bijector",
    ),
    (
        "Stack of nothing",
        lambda: Stack([])(shape=S([2])),
        "Stack needs at least one bijector",
    ),
]


@pytest.mark.parametrize(("make", "match"), [c[1:] for c in VALUE_ERRORS], ids=[c[0] for c in VALUE_ERRORS])
def test_bad_values_are_named(make: Callable[[], Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


TYPE_ERRORS: list[tuple[str, Callable[[], Any], str]] = [
    (
        "Cat dim float",
        lambda: Cat([bij.Exp(), bij.Exp()], dim=1.0)(shape=S([2])),
        "Cat: dim must be an int, got 1.0",
    ),
    (
        "Stack dim bool",
        lambda: Stack([bij.Exp(), bij.Exp()], dim=True)(shape=S([2])),
        "Stack: dim must be an int, got True",
    ),
    (
        "Cat part not a bijector",
        lambda: Cat([torch.nn.Linear(1, 1), bij.Exp()], lengths=[1, 1])(shape=S([2])),
        "Cat takes bijectors or their plans, got Linear",
    ),
]


@pytest.mark.parametrize(("make", "match"), [c[1:] for c in TYPE_ERRORS], ids=[c[0] for c in TYPE_ERRORS])
def test_bad_types_are_named(make: Callable[[], Any], match: str) -> None:
    with pytest.raises(TypeError, match=match):
        make()
