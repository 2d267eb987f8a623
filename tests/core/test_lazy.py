"""Lazy plans: explicit, printable, built once the shape is known; nothing built at import."""

from __future__ import annotations

import copy
import pickle
import subprocess
import sys

import torch

import flowtorch
import flowtorch.bijectors as bij
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
