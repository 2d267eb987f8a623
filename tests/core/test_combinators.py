"""Cat, Stack and FactorOut: the numbers against torch's CatTransform and StackTransform, contexts
handed to the parts, constraints, plans and repr; bad arguments, each error with its type and the
problem named. Their caching is tested with the reshaping bijectors in
``tests/bijectors/test_reshape.py``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.distributions import transforms as T

import flowtorch.bijectors as bij
import flowtorch.parameters as params
from flowtorch.core.combinators import Cat, FactorOut, Stack
from flowtorch.core.lazy import Plan

S = torch.Size


def _made() -> Plan[params.DenseAutoregressive]:
    return params.DenseAutoregressive(hidden_dims=(8,))  # type: ignore[no-any-return]


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


def _torch_pair() -> tuple[list[object], list[T.Transform]]:
    ours = [bij.Exp(), bij.AffineFixed(loc=0.5, scale=-2.0), bij.Tanh(), bij.Sigmoid()]
    theirs = [T.ExpTransform(), T.AffineTransform(0.5, -2.0), T.TanhTransform(), T.SigmoidTransform()]
    return ours, theirs


def test_cat_matches_torch_cat_transform() -> None:
    ours, theirs = _torch_pair()
    lengths = [2, 1, 3, 1]
    b = Cat(ours, dim=-1, lengths=lengths)(shape=S([4, 7]), context_shape=None)
    t = T.CatTransform(theirs, dim=-1, lengths=lengths)
    x = torch.randn(6, 4, 7, dtype=torch.float64)
    y, ladj = b.forward_and_ladj(x)
    diffs = {
        "forward": (y - t(x)).abs().max().item(),
        "inverse": (b.inverse(y) - t.inv(y)).abs().max().item(),
        # torch keeps elementwise log-dets; ours are summed over the event
        "log_det": (ladj - t.log_abs_det_jacobian(x, y).sum((-2, -1))).abs().max().item(),
    }
    assert max(diffs.values()) < 1e-12, diffs


def test_stack_matches_torch_stack_transform() -> None:
    ours, theirs = _torch_pair()
    b = Stack(ours, dim=0)(shape=S([4, 3]))
    t = T.StackTransform(theirs, dim=-2)  # torch counts tensor dims: event dim 0 of (4, 3)
    x = torch.randn(6, 4, 3, dtype=torch.float64)
    y, ladj = b.forward_and_ladj(x)
    diffs = {
        "forward": (y - t(x)).abs().max().item(),
        "inverse": (b.inverse(y) - t.inv(y)).abs().max().item(),
        "log_det": (ladj - t.log_abs_det_jacobian(x, y).sum((-2, -1))).abs().max().item(),
    }
    assert max(diffs.values()) < 1e-12, diffs


def test_conditional_parts_get_the_context_and_match_the_parts_alone() -> None:
    torch.manual_seed(0)
    maf = bij.AffineAutoregressive(_made())(shape=S([2]), context_shape=S([2]))
    spline = bij.Spline()(shape=S([3]), context_shape=S([2]))
    exp = bij.Exp()(shape=S([1]))
    b = Cat([maf, exp, spline], dim=0)  # built parts: shape and lengths inferred
    assert b.shape == (6,) and b.lengths == (2, 1, 3) and b.context_shape == (2,)
    x, c = torch.randn(4, 5, 6), torch.randn(5, 2)  # the context broadcasts over the first dim
    y, ladj = b.forward_and_ladj(x, c)
    parts = [maf.forward_and_ladj(x[..., :2], c), exp.forward_and_ladj(x[..., 2:3]),
             spline.forward_and_ladj(x[..., 3:], c)]  # fmt: skip
    torch.testing.assert_close(y, torch.cat([p[0] for p in parts], -1))
    torch.testing.assert_close(ladj, sum(p[1] for p in parts))
    torch.testing.assert_close(b.inverse(y, c), x, atol=1e-5, rtol=1e-5)
    st = Stack([maf, maf], dim=0)  # the same part twice: parameters shared
    assert st.shape == (2, 2) and len(list(st.parameters())) == len(list(maf.parameters()))


def test_context_wider_than_the_input_broadcasts_every_part() -> None:
    b = Cat([bij.Affine(), bij.Exp()], lengths=[2, 1])(shape=S([3]), context_shape=S([2]))
    x, c = torch.randn(3), torch.randn(4, 2)
    y, ladj = b.forward_and_ladj(x, c)
    assert y.shape == (4, 3) and ladj.shape == (4,)
    torch.testing.assert_close(y[:, 2], x[2].exp().expand(4))


def test_factor_out_passes_the_rest_through() -> None:
    torch.manual_seed(0)
    b = FactorOut(bij.AffineAutoregressive(_made()))(shape=S([5]))
    assert b.keep == 2 and b.lengths == (2, 3)
    x = torch.randn(7, 5)
    y, ladj = b.forward_and_ladj(x)
    assert torch.equal(y[:, 2:], x[:, 2:])
    expected_y, expected_ladj = b.bijector.forward_and_ladj(x[:, :2])
    torch.testing.assert_close(y[:, :2], expected_y)
    torch.testing.assert_close(ladj, expected_ladj)


def test_constraints_follow_the_parts() -> None:
    b = Cat([bij.Exp(), None], lengths=[1, 2])(shape=S([3]))
    assert b.domain.event_dim == 1 and b.codomain.event_dim == 1
    ok = b.codomain.check(torch.tensor([[1.0, -1.0, -2.0], [-1.0, 1.0, 2.0]]))
    assert ok.tolist() == [True, False]
    s = Stack([bij.Sigmoid(), None], dim=-1)(shape=S([3, 2]))
    assert s.codomain.check(torch.tensor([[0.5, 7.0]] * 3)).item()
    assert not s.codomain.check(torch.tensor([[1.5, 7.0]] * 3)).item()
    assert Cat([bij.Affine(), None], lengths=[1, 2])(shape=S([3])).codomain.check(torch.randn(3))


def test_plans_and_repr() -> None:
    plan = Cat([bij.Exp(), bij.Affine()], lengths=[1, 2])
    assert isinstance(plan, Plan) and isinstance(FactorOut(bij.Exp()), Plan)
    b = plan(shape=S([3]))
    assert "dim=0, lengths=(1, 2)" in repr(b) and "Exp" in repr(b)
    assert isinstance(Stack([bij.Exp(), bij.Exp()]), Plan)
