"""Bad arguments across the bijector families: each error has its type and names the problem."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

import flowtorch.bijectors as bij
import flowtorch.nn as fnn
import flowtorch.parameters as params
from flowtorch.bijectors import ffjord, linear, monotonic, naf, normalization, reshape, residual
from flowtorch.core.combinators import Cat, Stack

S = torch.Size


def _conditional_affine(shape: int, context: int) -> Any:
    return bij.Affine(params.Tensor())(shape=S([shape]), context_shape=S([context]))


VALUE_ERRORS: list[tuple[str, Callable[[], Any], str]] = [
    (
        "negative context_shape",
        lambda: bij.Affine(params.Tensor())(shape=S([2]), context_shape=S([-1])),
        r"Affine: context_shape \(-1,\) has a negative size",
    ),
    (
        "AffineAutoregressive scalar",
        lambda: bij.AffineAutoregressive()(shape=S([])),
        "AffineAutoregressive needs an event of at least one dim",
    ),
    (
        "Cat parts with different contexts",
        lambda: Cat([_conditional_affine(1, 2), _conditional_affine(1, 3)]),
        r"Cat: the parts take different context shapes \[\(2,\), \(3,\)\]",
    ),
    ("Cat of nothing", lambda: Cat([])(shape=S([2])), "Cat needs at least one bijector"),
    ("Stack of nothing", lambda: Stack([])(shape=S([2])), "Stack needs at least one bijector"),
    (
        "ODEMLP activation",
        lambda: fnn.ODEMLP(2, (4,), activation="relu6"),
        r"ODEMLP: activation must be one of \('tanh', 'softplus'\), got 'relu6'",
    ),
    ("FFJORD scalar", lambda: ffjord.FFJORD()(shape=S([])), "FFJORD needs an event of at least one dim"),
    (
        "FFJORD context_features=0",
        lambda: ffjord.FFJORD(context_features=0)(shape=S([2]), context_shape=S([3])),
        "FFJORD: context_features must be a positive integer, got 0",
    ),
    (
        "FFJORD context_features=True",
        lambda: ffjord.FFJORD(context_features=True)(shape=S([2])),
        "FFJORD: context_features must be a positive integer, got True",
    ),
    (
        "LULinear empty",
        lambda: linear.LULinear()(shape=S([0])),
        "LULinear: the mixed dim has size 0; it must be at least 1",
    ),
    ("UMNN scalar", lambda: monotonic.UMNN()(shape=S([])), "UMNN needs an event of at least one dim"),
    (
        "BNAF scalar",
        lambda: naf.BlockNeuralAutoregressive()(shape=S([])),
        "BlockNeuralAutoregressive needs an event of at least one dim",
    ),
    (
        "BNAF tol",
        lambda: naf.BlockNeuralAutoregressive(tol=0.0)(shape=S([2])),
        "BlockNeuralAutoregressive: tol must be positive, got 0.0",
    ),
    (
        "BatchNorm eps=0",
        lambda: normalization.BatchNorm(eps=0.0)(shape=S([2])),
        "eps must be a positive number",
    ),
    (
        "BatchNorm eps=inf",
        lambda: normalization.BatchNorm(eps=float("inf"))(shape=S([2])),
        "BatchNorm: eps must be a positive number, got inf",
    ),
    (
        "Squeeze.forward_shape",
        lambda: reshape.Squeeze()(shape=S([1, 4, 4])).forward_shape(S([4, 4])),
        r"Squeeze: needs a \(C, H, W\) event, got shape \(4, 4\)",
    ),
    (
        "Squeeze.inverse_shape",
        lambda: reshape.Squeeze()(shape=S([1, 4, 4])).inverse_shape(S([4, 2])),
        r"Squeeze: needs a \(C, H, W\) event, got shape \(4, 2\)",
    ),
    (
        "Unsqueeze.forward_shape",
        lambda: reshape.Unsqueeze()(shape=S([4, 2, 2])).forward_shape(S([2])),
        r"Unsqueeze: needs a \(C, H, W\) event, got shape \(2,\)",
    ),
    (
        "SpectralNormLinear coefficient",
        lambda: fnn.SpectralNormLinear(2, 2, coefficient=0.0),
        "SpectralNormLinear: coefficient must be positive, got 0.0",
    ),
    (
        "ResidualFlow max_terms < n_exact_terms",
        lambda: residual.ResidualFlow(max_terms=1, n_exact_terms=2)(shape=S([2])),
        r"ResidualFlow: max_terms must be an integer >= max\(n_exact_terms, 1\), got 1",
    ),
    (
        "ResidualFlow max_terms=True",
        lambda: residual.ResidualFlow(max_terms=True)(shape=S([2])),
        "max_terms must be an integer .* got True",
    ),
    (
        "ResidualFlow tol",
        lambda: residual.ResidualFlow(tol=0.0)(shape=S([2])),
        "ResidualFlow: tol must be positive",
    ),
]


@pytest.mark.parametrize(("make", "match"), [c[1:] for c in VALUE_ERRORS], ids=[c[0] for c in VALUE_ERRORS])
def test_bad_values_are_named(make: Callable[[], Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: Cat([bij.Exp(), bij.Exp()], dim=1.0)(shape=S([2])), "Cat: dim must be an int, got 1.0"),
        (
            lambda: Stack([bij.Exp(), bij.Exp()], dim=True)(shape=S([2])),
            "Stack: dim must be an int, got True",
        ),
        (
            lambda: Cat([torch.nn.Linear(1, 1), bij.Exp()], lengths=[1, 1])(shape=S([2])),
            "Cat takes bijectors or their plans, got Linear",
        ),
    ],
    ids=["Cat dim float", "Stack dim bool", "Cat part not a bijector"],
)
def test_bad_types_are_named(make: Callable[[], Any], match: str) -> None:
    with pytest.raises(TypeError, match=match):
        make()


def test_the_squeeze_shapes_with_batch_dims() -> None:
    s = reshape.Squeeze()(shape=S([1, 4, 4]))
    assert s.forward_shape(S([7, 1, 4, 4])) == (7, 4, 2, 2)
    assert s.inverse_shape(S([7, 4, 2, 2])) == (7, 1, 4, 4)


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
