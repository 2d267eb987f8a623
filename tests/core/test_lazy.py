"""Lazy plans: explicit, printable, built once the shape is known; nothing built at import."""

from __future__ import annotations

import copy
import pickle
import subprocess
import sys

import torch

import flowtorch
import flowtorch.bijectors as bij
import flowtorch.distributions as dist
import flowtorch.parameters as params
from flowtorch.core.lazy import Lazy, Plan


def test_class_without_shape_is_a_plan() -> None:
    plan = bij.AffineAutoregressive(params.DenseAutoregressive(hidden_dims=(8,)), log_scale_max_clip=2.0)
    assert isinstance(plan, Plan) and isinstance(plan, flowtorch.Lazy)
    assert "AffineAutoregressive" in repr(plan)
    b = plan(shape=torch.Size([3]))
    assert isinstance(b, bij.AffineAutoregressive)
    assert b.log_scale_max_clip == 2.0
    assert b.params_fn.hidden_dims == (8,)  # type: ignore[union-attr]
    # a plan builds a fresh bijector each time
    assert plan(shape=torch.Size([3])) is not b


def test_class_with_shape_builds_directly() -> None:
    b = bij.Exp(shape=(2,))
    assert isinstance(b, bij.Exp) and b.shape == (2,)


def test_plan_arguments_take_precedence_unless_none() -> None:
    b = bij.Affine(context_shape=torch.Size([4]))(shape=torch.Size([2]), context_shape=None)
    assert b.context_shape == (4,)
    b = bij.Affine()(shape=torch.Size([2]), context_shape=torch.Size([5]))
    assert b.context_shape == (5,)


def test_compose_and_invert_of_built_bijectors() -> None:
    a, b = bij.Exp(shape=(2,)), bij.Affine(shape=(2,))
    c = bij.Compose([b, a])
    assert isinstance(c, bij.Compose) and c.shape == (2,)
    inv = bij.Invert(c)
    assert isinstance(inv, bij.Invert)
    x = torch.randn(3, 2)
    torch.testing.assert_close(inv.inverse(x), a.forward(b.forward(x)))


def test_pickle_and_deepcopy_rebuild_instances_not_plans() -> None:
    b = bij.Compose([bij.AffineAutoregressive(), bij.Permute()])(shape=torch.Size([3]))
    for clone in (copy.deepcopy(b), pickle.loads(pickle.dumps(b))):
        assert type(clone) is bij.Compose
        x = torch.randn(2, 3)
        torch.testing.assert_close(clone.forward(x), b.forward(x))


def test_import_builds_nothing() -> None:
    code = (
        "import torch, torch.nn as nn\n"
        "built = []\n"
        "orig = nn.Module.__init__\n"
        "def spy(self, *a, **k):\n"
        "    built.append(type(self).__name__); orig(self, *a, **k)\n"
        "nn.Module.__init__ = spy\n"
        "import flowtorch, flowtorch.bijectors, flowtorch.distributions, flowtorch.parameters\n"
        "print(len(built))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0"


def test_plan_repr_keyword_precedence_and_the_08_alias() -> None:
    plan = Plan(bij.Spline, count_bins=4, bound=None)
    assert repr(plan) == "Plan(Spline, count_bins=4, bound=None)"
    b = plan(shape=torch.Size([2]), bound=2.0)  # a plan's None does not override a build argument
    assert b.count_bins == 4 and b.bound == 2.0
    assert Lazy is Plan
    b2 = copy.deepcopy(b)
    assert type(b2) is bij.Spline and b2.shape == (2,)


def _same_plan(a: object, b: object) -> None:
    """Plans (and the plans, lists and values in their arguments) that record the same call."""
    if isinstance(a, Plan):
        assert type(a) is type(b) is Plan and isinstance(b, Plan)
        assert a.cls is b.cls and repr(a) == repr(b) and a.kwargs.keys() == b.kwargs.keys()
        _same_plan(list(a.args), list(b.args))
        _same_plan(list(a.kwargs.values()), list(b.kwargs.values()))
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and isinstance(b, (list, tuple)) and len(a) == len(b)
        for x, y in zip(a, b):
            _same_plan(x, y)
    else:
        assert a is b or a == b


def test_the_plan_classmethod_makes_the_plan_the_class_makes() -> None:
    made = (8,)
    pairs = [
        (
            bij.AffineAutoregressive.plan(
                params.DenseAutoregressive.plan(hidden_dims=made), log_scale_max_clip=2.0
            ),
            bij.AffineAutoregressive(params.DenseAutoregressive(hidden_dims=made), log_scale_max_clip=2.0),
        ),
        (bij.Exp.plan(), bij.Exp()),
        (bij.Affine.plan(context_shape=torch.Size([4])), bij.Affine(context_shape=torch.Size([4]))),
        (
            bij.Compose.plan([bij.Exp.plan(), bij.Permute.plan()]),
            bij.Compose([bij.Exp(), bij.Permute()]),
        ),
        (bij.Invert.plan(bij.Exp.plan()), bij.Invert(bij.Exp())),
        (params.Tensor.plan(init_scale=0.5), params.Tensor(init_scale=0.5)),
    ]
    for typed, old in pairs:
        _same_plan(typed, old)
        # and they build the same thing
        torch.manual_seed(0)
        shape = torch.Size([2])
        if typed.cls is params.Tensor:
            built_typed = typed(param_shapes=[shape], input_shape=shape)
            torch.manual_seed(0)
            built_old = old(param_shapes=[shape], input_shape=shape)
        else:
            built_typed = typed(shape=shape)
            torch.manual_seed(0)
            built_old = old(shape=shape)
        assert type(built_typed) is type(built_old)
        assert repr(built_typed) == repr(built_old)
        for p, q in zip(built_typed.state_dict().values(), built_old.state_dict().values()):
            torch.testing.assert_close(p, q)


def test_the_plan_classmethod_is_a_plan_even_with_the_shape() -> None:
    plan = bij.Exp.plan(shape=torch.Size([3]))
    assert isinstance(plan, Plan) and plan.cls is bij.Exp
    b = plan()  # the recorded shape builds it
    assert isinstance(b, bij.Exp) and b.shape == (3,)
    # of built bijectors too: Compose.plan records them, where Compose([...]) builds at once
    built = [bij.Exp(shape=(2,)), bij.Affine(shape=(2,))]
    assert isinstance(bij.Compose(built), bij.Compose)
    composed = bij.Compose.plan(built)
    assert isinstance(composed, Plan)
    c = composed(shape=torch.Size([2]))
    assert list(c.bijectors) == built
    cond = params.DenseAutoregressive.plan()(param_shapes=[torch.Size([2])], input_shape=torch.Size([2]))
    assert isinstance(cond, params.DenseAutoregressive)


def test_a_flow_of_a_typed_plan_is_a_flow_of_the_class() -> None:
    base = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(2), torch.ones(2)), 1)
    flow = dist.Flow(base, bij.AffineAutoregressive.plan())
    assert isinstance(flow.bijector, bij.AffineAutoregressive)
    assert dist.Flow[bij.AffineAutoregressive] is not None  # generic at run time as well
    view = flow.condition if flow.context_shape is not None else flow.expand
    assert type(view(torch.Size([3]))) is dist.Flow
