"""Reshape, Squeeze, Unsqueeze and Reverse: shapes, numbers; with Cat, Stack and FactorOut, shape
errors and caching."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch

import flowtorch
import flowtorch.bijectors as bij
import flowtorch.distributions as dist
import flowtorch.parameters as params
from flowtorch.bijectors.reshape import Reshape, Squeeze, Unsqueeze
from flowtorch.bijectors.reverse import Reverse
from flowtorch.core.combinators import Cat, FactorOut, Stack
from flowtorch.core.lazy import Plan

S = torch.Size


def _made() -> Plan[params.DenseAutoregressive]:
    return params.DenseAutoregressive(hidden_dims=(8,))  # type: ignore[no-any-return]


# ----------------------------------------------------------------------------- shape errors
@pytest.mark.parametrize(
    ("make", "shape", "match"),
    [
        (lambda: Reshape((4,)), (3,), "has 4 elements, but the event shape"),
        (lambda: Reshape((-1, -1)), (4,), "at most one -1"),
        (lambda: Reshape((5, -1)), (4,), "cannot infer the -1"),
        (lambda: Squeeze(), (1, 3, 4), "divisible by factor=2"),
        (lambda: Squeeze(), (1, 4, 6, 3), "divisible by factor=2"),
        (lambda: Squeeze(), (4, 4), "at least 3 dims"),
        (lambda: Squeeze(0), (1, 4, 4), "positive integer"),
        (lambda: Unsqueeze(), (2, 2, 2), "divisible by factor\\*\\*2=4"),
        (lambda: Reverse(2), (3,), "out of range"),
        (lambda: Cat([bij.Exp(), bij.Exp()], lengths=[1, 1]), (3,), "sum to 3"),
        (lambda: Cat([bij.Exp(), bij.Exp()], lengths=[3]), (3,), "2 bijectors but 1 lengths"),
        (lambda: Cat([bij.Exp()], dim=1, lengths=[3]), (3,), "out of range"),
        (lambda: Cat([None, None], lengths=[1, 2]), (3,), "at least one bijector"),
        (lambda: Cat([Reshape((3,)), None], lengths=[1, 1]), (2, 3), "keep the number of event dims"),
        (lambda: Cat([Reshape((3, 1)), None], lengths=[1, 1]), (2, 3), "cannot be concatenated"),
        (lambda: Stack([bij.Exp(), bij.Exp()]), (3,), "2 bijectors for event dim 0 of size 3"),
        (lambda: Stack([Reshape((1, 3)), None], dim=0), (2, 3, 1), "cannot be stacked"),
        (lambda: FactorOut(bij.Exp(), keep=3), (3,), "keep must be an integer in \\[1, 2\\]"),
        (lambda: FactorOut(bij.Exp()), (1, 4, 4), "keep must be an integer in \\[1, 0\\]"),
        (lambda: FactorOut(bij.Exp(shape=S([2])), keep=1), (3,), "acts on shape \\(2,\\), but its slice"),
    ],
)
def test_bad_hyperparameters_are_named(make, shape, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=match):
        make()(shape=S(shape))


def test_bad_inputs_are_named() -> None:
    r = Reshape((3, 1))(shape=S([3]))
    with pytest.raises(ValueError, match="trailing dims must be the event shape \\(3,\\)"):
        r.forward(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="trailing dims must be the event shape \\(3, 1\\)"):
        r.inverse(torch.zeros(2, 3))
    c = Cat([bij.Affine(), bij.Exp()], lengths=[2, 1])(shape=S([3]), context_shape=S([2]))
    with pytest.raises(ValueError, match="is conditional"):
        c.forward(torch.zeros(3))
    with pytest.raises(ValueError, match="context has shape"):
        c.forward(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match="takes no context"):
        Cat([bij.Exp(), bij.Exp(), bij.Exp()])(shape=S([3])).forward(torch.zeros(3), torch.zeros(2))
    with pytest.raises(ValueError, match="does not end with the event shape"):
        r.forward_shape(S([4]))


def test_forward_and_inverse_shapes_with_batch_dims() -> None:
    r = Reshape((2, 2))(shape=S([4]))
    assert r.forward_shape(S([5, 4])) == (5, 2, 2) and r.inverse_shape(S([5, 2, 2])) == (5, 4)
    s = Squeeze()(shape=S([3, 4, 6]))
    assert s.out_shape == (12, 2, 3)
    assert s.forward_shape(S([7, 1, 8, 2])) == (7, 4, 4, 1)
    assert s.inverse_shape(S([12, 2, 3])) == (3, 4, 6)
    u = Unsqueeze()(shape=S([12, 2, 3]))
    assert u.out_shape == (3, 4, 6) and u.inverse_shape(S([3, 4, 6])) == (12, 2, 3)
    c = Cat([Squeeze(), Squeeze()], dim=0, lengths=[1, 2])(shape=S([3, 4, 4]))
    assert c.out_shape == (12, 2, 2) and c.out_lengths == (4, 8)
    assert c.forward_shape(S([5, 3, 4, 4])) == (5, 12, 2, 2)
    assert c.inverse(c.forward(torch.randn(5, 3, 4, 4))).shape == (5, 3, 4, 4)
    st = Stack([Reshape((1, 3)), Reshape((1, 3))], dim=-1)(shape=S([3, 1, 2]))
    assert st.out_shape == (1, 3, 2)


# ----------------------------------------------------------------------------- numbers
def _squeeze_reference(x: torch.Tensor, f: int) -> torch.Tensor:
    *batch, c, h, w = x.shape
    x = x.reshape(*batch, c, h // f, f, w // f, f)
    n = len(batch)
    x = x.permute(*range(n), n, n + 2, n + 4, n + 1, n + 3)  # (c, i, j, h', w')
    return x.reshape(*batch, c * f * f, h // f, w // f)


@pytest.mark.parametrize(("shape", "factor"), [((1, 4, 4), 2), ((3, 6, 4), 2), ((2, 6, 3), 3)])
def test_squeeze_matches_a_reshape_permute_reference(shape: tuple[int, ...], factor: int) -> None:
    x = torch.randn(2, 5, *shape)
    s = Squeeze(factor)(shape=S(shape))
    y, ladj = s.forward_and_ladj(x)
    assert torch.equal(y, _squeeze_reference(x, factor))
    assert torch.equal(ladj, torch.zeros(2, 5))
    u = Unsqueeze(factor)(shape=s.out_shape)
    assert torch.equal(u.forward(y), x) and torch.equal(s.inverse(y), x)
    assert torch.equal(u.inverse(x), y)


def test_squeeze_matches_nflows() -> None:
    nflows_reshape = pytest.importorskip("nflows.transforms.reshape")
    x = torch.randn(4, 3, 8, 6)
    theirs, _ = nflows_reshape.SqueezeTransform(factor=2)(x)
    ours = Squeeze()(shape=S([3, 8, 6])).forward(x)
    assert (ours - theirs).abs().max().item() == 0.0


def test_reshape_and_reverse_numbers() -> None:
    x = torch.randn(5, 2, 3)
    r = Reshape((3, 2))(shape=S([2, 3]))
    assert torch.equal(r.forward(x), x.reshape(5, 3, 2))
    assert torch.equal(r.inverse(r.forward(x)), x)
    assert torch.equal(Reverse()(shape=S([2, 3])).forward(x), x.flip(-1))
    assert torch.equal(Reverse(0)(shape=S([2, 3])).forward(x), x.flip(-2))
    assert torch.equal(Reverse(-2)(shape=S([2, 3])).inverse(x), x.flip(-2))


# ----------------------------------------------------------------------------- caching
def _counted(b: torch.nn.Module) -> list[int]:
    calls = [0]

    def hook(*args: object) -> None:
        calls[0] += 1

    for m in b.modules():
        if isinstance(m, params.Parameters):
            m.register_forward_hook(hook)
    return calls


def _wrappers() -> list[bij.Bijector]:
    torch.manual_seed(0)
    cat = Cat([bij.Invert(bij.AffineAutoregressive(_made())), bij.Spline()], lengths=[2, 2])
    stack = Stack([bij.Invert(bij.AffineAutoregressive(_made())), bij.Affine()], dim=-1)
    coarse = bij.Compose([Squeeze(), bij.Affine(), Unsqueeze()])
    scale = bij.Compose([Squeeze(), bij.Affine(), FactorOut(coarse), Unsqueeze()])
    return [
        cat(shape=S([4]), context_shape=S([2])),
        stack(shape=S([3, 2]), context_shape=S([2])),
        FactorOut(scale, keep=1)(shape=S([2, 4, 4])),
    ]


@pytest.mark.parametrize("b", _wrappers(), ids=["Cat", "Stack", "multiscale"])
def test_inverse_of_a_joined_output_is_the_input(b: bij.Bijector) -> None:
    calls = _counted(b)
    c = torch.randn(5, 2) if b.context_shape is not None else None
    x = torch.randn(5, *b.shape)
    with flowtorch.BijectiveMode():
        y, ladj = b.forward_and_ladj(x, c)
        n = calls[0]
        assert b.inverse(y, c) is x
        assert b.log_abs_det_jacobian(x, y, c) is ladj or torch.equal(b.log_abs_det_jacobian(x, y, c), ladj)
        y2 = y.detach().clone()
        x2 = b.inverse(y2, c)  # a fresh tensor: a miss, recomputed
        assert calls[0] > n
        n = calls[0]
        assert b.forward(x2, c) is y2 and calls[0] == n
    torch.testing.assert_close(x2, x, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("b", _wrappers(), ids=["Cat", "Stack", "multiscale"])
def test_requires_ladj_false_sums_the_parts_entries_without_conditioner_calls(b: bij.Bijector) -> None:
    calls = _counted(b)
    c = torch.randn(5, 2) if b.context_shape is not None else None
    x = torch.randn(5, *b.shape)
    expected = b.forward_and_ladj(x, c)[1]
    with flowtorch.BijectiveMode(requires_ladj=False), warnings.catch_warnings():
        warnings.simplefilter("error")  # no cache miss anywhere
        y = b.forward(x, c)
        n = calls[0]
        ladj = b.log_abs_det_jacobian(x, y, c)
        assert calls[0] == n
        y2 = y.detach().clone()
        x2 = b.inverse(y2, c)  # the inverse direction records the parts' pairs too
        n = calls[0]
        ladj2 = b.log_abs_det_jacobian(x2, y2, c)
        assert calls[0] == n
    torch.testing.assert_close(ladj, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ladj2, expected, atol=1e-4, rtol=1e-4)


def test_flow_with_factor_out_scores_its_samples_from_the_cache() -> None:
    torch.manual_seed(0)
    base = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(2, 4, 4), 1.0), 3)
    plan = bij.Compose(
        [Squeeze(), bij.Affine(), FactorOut(bij.Compose([Squeeze(), bij.Affine(), Unsqueeze()])), Unsqueeze()]
    )
    flow = dist.Flow(base, plan)
    calls = _counted(flow)
    with flowtorch.BijectiveMode():
        y = flow.rsample((3,))
        n = calls[0]
        lp = flow.log_prob(y)
        assert calls[0] == n
    assert lp.shape == (3,)
    torch.testing.assert_close(lp, flow.log_prob(y))


VALUE_ERRORS: list[tuple[str, Callable[[], Any], str]] = [
    (
        "Squeeze.forward_shape",
        lambda: Squeeze()(shape=S([1, 4, 4])).forward_shape(S([4, 4])),
        r"Squeeze: needs a \(C, H, W\) event, got shape \(4, 4\)",
    ),
    (
        "Squeeze.inverse_shape",
        lambda: Squeeze()(shape=S([1, 4, 4])).inverse_shape(S([4, 2])),
        r"Squeeze: needs a \(C, H, W\) event, got shape \(4, 2\)",
    ),
    (
        "Unsqueeze.forward_shape",
        lambda: Unsqueeze()(shape=S([4, 2, 2])).forward_shape(S([2])),
        r"Unsqueeze: needs a \(C, H, W\) event, got shape \(2,\)",
    ),
]


@pytest.mark.parametrize(("make", "match"), [c[1:] for c in VALUE_ERRORS], ids=[c[0] for c in VALUE_ERRORS])
def test_bad_values_are_named(make: Callable[[], Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


REPRS: list[tuple[str, Callable[[], Any], str]] = [
    (
        "Reshape",
        lambda: Reshape((3, -1))(shape=S([2, 3])),
        "shape=(2, 3), target_shape=(3, 2)",
    ),
]


@pytest.mark.parametrize(("make", "expected"), [c[1:] for c in REPRS], ids=[c[0] for c in REPRS])
def test_extra_repr_shows_the_hyperparameters(make: Callable[[], Any], expected: str) -> None:
    module = make()
    assert module.extra_repr() == expected
    text = repr(module)
    assert text.startswith(f"{type(module).__name__}(") and expected in text


def test_the_squeeze_shapes_with_batch_dims() -> None:
    s = Squeeze()(shape=S([1, 4, 4]))
    assert s.forward_shape(S([7, 1, 4, 4])) == (7, 4, 2, 2)
    assert s.inverse_shape(S([7, 4, 2, 2])) == (7, 1, 4, 4)
