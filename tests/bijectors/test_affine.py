"""Affine and AffineAutoregressive: the soft clamp of the log-scale, arguments, and repr."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

import flowtorch.bijectors as bij
import flowtorch.parameters as params
from flowtorch.bijectors import affine

S = torch.Size


VALUE_ERRORS: list[tuple[str, Callable[[], Any], str]] = [
    (
        "AffineAutoregressive scalar",
        lambda: bij.AffineAutoregressive()(shape=S([])),
        "AffineAutoregressive needs an event of at least one dim",
    ),
]


@pytest.mark.parametrize(("make", "match"), [c[1:] for c in VALUE_ERRORS], ids=[c[0] for c in VALUE_ERRORS])
def test_bad_values_are_named(make: Callable[[], Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


REPRS: list[tuple[str, Callable[[], Any], str]] = [
    (
        "AffineFixed",
        lambda: affine.AffineFixed(loc=-1.0, scale=2.5)(shape=S([2])),
        "shape=(2,), loc=-1.0, scale=2.5",
    ),
]


@pytest.mark.parametrize(("make", "expected"), [c[1:] for c in REPRS], ids=[c[0] for c in REPRS])
def test_extra_repr_shows_the_hyperparameters(make: Callable[[], Any], expected: str) -> None:
    module = make()
    assert module.extra_repr() == expected
    text = repr(module)
    assert text.startswith(f"{type(module).__name__}(") and expected in text


def test_affine_log_scale_clip_values_and_gradients() -> None:
    """The log-scale is softly clamped into (min, max): s / (1 + s / max) above 0, s / (1 + s / min)
    below, and its gradient 1 / (1 + s / bound)^2 is positive everywhere, past the bounds too."""
    b = bij.Affine(params.Tensor(), log_scale_min_clip=-1.0, log_scale_max_clip=0.5)(shape=S([5]))
    raw = torch.tensor([-3.0, -0.9, 0.0, 0.4, 2.0])
    with torch.no_grad():
        b.params_fn.params[0].zero_()  # type: ignore[union-attr,index]
        b.params_fn.params[1].copy_(raw)  # type: ignore[union-attr,index]
    bound = torch.where(raw >= 0, torch.tensor(0.5), torch.tensor(-1.0))
    expected = raw / (1 + raw / bound)
    x = torch.ones(5)
    y = b.forward(x)
    torch.testing.assert_close(y, expected.exp())
    assert bool(((expected > -1.0) & (expected < 0.5)).all())
    ladj = b.log_abs_det_jacobian(x, y)
    torch.testing.assert_close(ladj, expected.sum())
    ladj.backward()
    grad = b.params_fn.params[1].grad  # type: ignore[union-attr,index]
    torch.testing.assert_close(grad, 1 / (1 + raw / bound) ** 2)
