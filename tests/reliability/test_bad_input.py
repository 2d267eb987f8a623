"""Bad input gets a clear error that names the problem, raised where the mistake is made.

Each row of ``BAD`` is one mistake: the call that makes it, the exception type and a pattern its
message must match; rows raised by flowtorch's own checks must also be raised inside flowtorch,
not by torch deep inside a computation.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

import flowtorch
import flowtorch.bijectors as bij
import flowtorch.distributions as dist
import flowtorch.parameters as params
from flowtorch.core.bijector import Bijector, Params
from flowtorch.core.lazy import Plan
from flowtorch.recipes import IAF, MAF, NSF, RealNVP

SRC = pathlib.Path(flowtorch.__file__).parent


def normal(d: int = 3, dtype: torch.dtype = torch.float32) -> torch.distributions.Distribution:
    return torch.distributions.Independent(
        torch.distributions.Normal(torch.zeros(d, dtype=dtype), torch.ones(d, dtype=dtype)), 1
    )


def maf(context: bool = False) -> Bijector:
    return bij.AffineAutoregressive(params.DenseAutoregressive(hidden_dims=(8,)))(
        shape=torch.Size([3]), context_shape=torch.Size([2]) if context else None
    )


def validating_normal() -> torch.distributions.Distribution:
    """A base that validates whatever torch's default is (a torch.compile earlier in the process
    turns the default off)."""
    normal = torch.distributions.Normal(torch.zeros(3), torch.ones(3), validate_args=True)
    return torch.distributions.Independent(normal, 1, validate_args=True)


def flow(context: bool = False, validate: bool | None = None) -> dist.Flow:
    plan = MAF(layers=2, hidden_dims=(8,), context_shape=(2,) if context else None)
    return dist.Flow(normal(), plan, validate_args=validate)


def flow_of(plan: Any, validate: bool, base: torch.distributions.Distribution | None = None) -> dist.Flow:
    return dist.Flow(normal() if base is None else base, plan, validate_args=validate)


@dataclasses.dataclass(frozen=True)
class Bad:
    call: Callable[[], Any]
    exc: type[BaseException]
    match: str
    ours: bool = True  # raised by flowtorch's own checks (not by torch.distributions)


x3 = torch.randn(4, 3)
c2 = torch.randn(4, 2)

BAD: dict[str, Any] = {
    # ------------------------------------------------------------------ event shapes
    "forward: wrong event shape": Bad(
        lambda: maf().forward(torch.randn(4, 2)),
        ValueError,
        r"AffineAutoregressive: x has shape \(4, 2\), but its trailing dims must be the event shape \(3,\)",
    ),
    "inverse: wrong event shape": Bad(
        lambda: maf().inverse(torch.randn(4, 2)), ValueError, r"y has shape \(4, 2\).*event shape \(3,\)"
    ),
    "forward: a scalar for a vector event": Bad(
        lambda: maf().forward(torch.tensor(1.0)), ValueError, r"x has shape \(\).*event shape \(3,\)"
    ),
    "log_abs_det_jacobian: wrong event shape": Bad(
        lambda: maf().log_abs_det_jacobian(torch.randn(4, 2), torch.randn(4, 2)),
        ValueError,
        r"x has shape \(4, 2\)",
    ),
    "2-D event given a vector": Bad(
        lambda: bij.Spline()(shape=(2, 2)).forward(torch.randn(4)),
        ValueError,
        r"Spline: x has shape \(4,\), but its trailing dims must be the event shape \(2, 2\)",
    ),
    "Compose: wrong event shape (first layer reports)": Bad(
        lambda: bij.Compose([bij.AffineAutoregressive(), bij.Exp()])(shape=(3,)).forward(torch.randn(5)),
        ValueError,
        r"AffineAutoregressive: x has shape \(5,\)",
    ),
    "Compose: layers of different shapes": Bad(
        lambda: bij.Compose([bij.Exp()(shape=(3,)), bij.Exp()(shape=(2,))]),
        ValueError,
        r"Compose: Exp acts on shape \(2,\), but the previous layer produces \(3,\)",
    ),
    "Flow: bijector built for another shape": Bad(
        lambda: dist.Flow(normal(3), bij.Exp()(shape=(2,))),
        ValueError,
        r"Flow: the bijector acts on shape \(2,\), but the base distribution's event shape is \(3,\)",
    ),
    "Flow.log_prob: wrong event shape (validated)": Bad(
        lambda: flow(validate=True).log_prob(torch.randn(4, 2)),
        ValueError,
        r"right-most size of value must match event_shape",
        ours=False,
    ),
    "Flow.log_prob: wrong event shape (not validated)": Bad(
        lambda: flow(validate=False).log_prob(torch.randn(4, 2)), ValueError, r"y has shape \(4, 2\)"
    ),
    "negative event shape": Bad(lambda: bij.Exp()(shape=(-1,)), ValueError, r"shape \(-1,\)"),
    # ------------------------------------------------------------------ types and dtypes
    "integer input": Bad(
        lambda: maf().forward(torch.ones(4, 3, dtype=torch.long)),
        TypeError,
        r"AffineAutoregressive: x must be floating point, got torch.int64",
    ),
    "boolean input": Bad(
        lambda: maf().inverse(torch.ones(4, 3, dtype=torch.bool)),
        TypeError,
        r"y must be floating point, got torch.bool",
    ),
    "complex input": Bad(
        lambda: bij.Exp()(shape=(3,)).forward(torch.ones(3, dtype=torch.complex64)),
        TypeError,
        r"Exp: x must be floating point, got torch.complex64",
    ),
    "a list instead of a tensor": Bad(
        lambda: maf().forward([[1.0, 2.0, 3.0]]), TypeError, r"x must be a torch.Tensor, got list"
    ),
    "a numpy array instead of a tensor": Bad(
        lambda: bij.Exp()(shape=(3,)).forward(np.ones(3)), TypeError, r"x must be a torch.Tensor, got ndarray"
    ),
    "Flow.log_prob: integer value": Bad(
        lambda: flow(validate=False).log_prob(torch.ones(4, 3, dtype=torch.long)),
        TypeError,
        r"y must be floating point, got torch.int64",
    ),
    "float64 input, float32 MAF": Bad(
        lambda: maf().forward(x3.double()), TypeError, r"float64.*float32|float32.*float64"
    ),
    "float16 input, float32 MAF (inverse)": Bad(
        lambda: maf().inverse(x3.half()), TypeError, r"float16.*float32|float32.*float16"
    ),
    "float64 input, float32 Affine (no silent promotion)": Bad(
        lambda: bij.Affine()(shape=(3,)).forward(x3.double()), TypeError, r"float64.*float32"
    ),
    "Flow.log_prob: float64 value, float32 flow": Bad(
        lambda: flow(validate=True).log_prob(x3.double()), TypeError, r"float64.*float32"
    ),
    # torch's own message names both devices; the dtype check in Bijector._check leaves
    # devices to torch
    "input on another device (meta), CPU parameters": Bad(
        lambda: maf().forward(torch.ones(4, 3, device="meta")),
        RuntimeError,
        r"Tensor on device (cpu|meta) is not on the expected device (meta|cpu)",
        ours=False,
    ),
    # ------------------------------------------------------------------ contexts
    "conditional bijector, no context": Bad(
        lambda: maf(context=True).forward(x3),
        ValueError,
        r"AffineAutoregressive is conditional \(context_shape=\(2,\)\), but no context was given",
    ),
    "conditional bijector, context of the wrong shape": Bad(
        lambda: maf(context=True).forward(x3, torch.randn(4, 5)),
        ValueError,
        r"context has shape \(4, 5\), but its trailing dims must be the context shape \(2,\)",
    ),
    "unconditional bijector given a context": Bad(
        lambda: maf().forward(x3, c2),
        ValueError,
        r"AffineAutoregressive takes no context, but a context was given",
    ),
    "Compose: conditional, no context": Bad(
        lambda: bij.Compose([bij.AffineAutoregressive(), bij.Exp()])(shape=(3,), context_shape=(2,)).inverse(
            x3
        ),
        ValueError,
        r"Compose is conditional \(context_shape=\(2,\)\), but no context was given",
    ),
    "Compose: unconditional given a context": Bad(
        lambda: bij.Compose([bij.Exp(), bij.Exp()])(shape=(3,)).forward(x3, c2),
        ValueError,
        r"Compose: no layer takes a context, but a context was given",
    ),
    "Invert: conditional, no context": Bad(
        lambda: bij.Invert(bij.AffineAutoregressive())(shape=(3,), context_shape=(2,)).forward(x3),
        ValueError,
        r"is conditional \(context_shape=\(2,\)\), but no context was given",
    ),
    "Flow: conditional, no context (log_prob)": Bad(
        lambda: flow(context=True).log_prob(x3),
        ValueError,
        r"Flow: this flow is conditional \(context_shape=\(2,\)\); pass context=",
    ),
    "Flow: conditional, no context (sample)": Bad(
        lambda: flow(context=True).sample((2,)), ValueError, r"Flow: this flow is conditional"
    ),
    "Flow: context of the wrong shape": Bad(
        lambda: flow(context=True).log_prob(x3, torch.randn(4, 3)),
        ValueError,
        r"Flow: context has shape \(4, 3\), but its trailing dims must be the context shape \(2,\)",
    ),
    "Flow.condition: context of the wrong shape": Bad(
        lambda: flow(context=True).condition(torch.randn(3)), ValueError, r"context has shape \(3,\)"
    ),
    "Flow: unconditional given a context": Bad(
        lambda: flow().log_prob(x3, c2),
        ValueError,
        r"Flow: this flow is not conditional, but a context was given",
    ),
    "Flow.condition on an unconditional flow": Bad(
        lambda: flow().condition(torch.randn(2)), ValueError, r"this flow is not conditional"
    ),
    "context batch that does not broadcast": Bad(
        lambda: maf(context=True).forward(x3, torch.randn(5, 2)),
        ValueError,
        r"context.*\(5, 2\).*\(4, 3\)|broadcast",
    ),
    "context that is not a tensor": Bad(
        lambda: maf(context=True).forward(x3, [1.0, 2.0]), TypeError, r"context must be a torch.Tensor"
    ),
    "float64 context, float32 parameters": Bad(
        lambda: maf(context=True).forward(x3, c2.double()), TypeError, r"float64.*float32"
    ),
    "integer context": Bad(
        lambda: maf(context=True).forward(x3, c2.long()), TypeError, r"context must be floating point"
    ),
    # ------------------------------------------------------------------ plan arguments
    "MADE: hidden layer smaller than D - 1": Bad(
        lambda: bij.AffineAutoregressive(params.DenseAutoregressive(hidden_dims=(8, 2)))(shape=(5,)),
        ValueError,
        r"hidden layer of size 2 is too small for an input of 5 dims; each hidden layer needs at least "
        r"4 units \(D - 1\)",
    ),
    "MADE: no hidden layer": Bad(
        lambda: bij.AffineAutoregressive(params.DenseAutoregressive(hidden_dims=()))(shape=(3,)),
        ValueError,
        r"DenseAutoregressive: hidden_dims must be one or more positive integers \(at least one hidden",
    ),
    "MADE: a non-positive hidden size (D = 1)": Bad(
        lambda: bij.AffineAutoregressive(params.DenseAutoregressive(hidden_dims=(0,)))(shape=(1,)),
        ValueError,
        r"DenseAutoregressive: hidden_dims must be one or more positive integers, got \(0,\)",
    ),
    "MADE: permutation of the wrong length": Bad(
        lambda: bij.AffineAutoregressive(params.DenseAutoregressive(permutation=[1, 0]))(shape=(3,)),
        ValueError,
        r"permutation \[1, 0\] is not a permutation of 0..2",
    ),
    "MADE: permutation with a repeat": Bad(
        lambda: bij.AffineAutoregressive(params.DenseAutoregressive(permutation=[0, 0, 1]))(shape=(3,)),
        ValueError,
        r"permutation \[0, 0, 1\] is not a permutation of 0..2",
    ),
    "MADE: unknown permutation name": Bad(
        lambda: bij.AffineAutoregressive(params.DenseAutoregressive(permutation="random"))(shape=(3,)),
        ValueError,
        r"unknown permutation 'random'; use 'identity' or 'reverse'",
    ),
    "recipe: hidden layer smaller than D - 1": Bad(
        lambda: dist.Flow(normal(5), MAF(hidden_dims=(3,))), ValueError, r"needs at least 4 units \(D - 1\)"
    ),
    "Permute: permutation of the wrong length": Bad(
        lambda: bij.Permute(permutation=[1, 0])(shape=(3,)),
        ValueError,
        r"Permute: \[1, 0\] is not a permutation of 0..2 \(last event dim is 3\)",
    ),
    "Permute: a repeated index": Bad(
        lambda: bij.Permute(permutation=[0, 2, 2])(shape=(3,)), ValueError, r"not a permutation of 0..2"
    ),
    "Permute: a scalar event": Bad(
        lambda: bij.Permute()(shape=()),
        ValueError,
        r"Permute needs an event of at least 1 dims, got shape \(\)",
    ),
    "Spline: zero bins": Bad(
        lambda: bij.Spline(count_bins=0)(shape=(3,)),
        ValueError,
        r"Spline: count_bins must be a positive integer, got 0",
    ),
    "Spline: negative bins": Bad(
        lambda: bij.SplineAutoregressive(count_bins=-2)(shape=(3,)),
        ValueError,
        r"SplineAutoregressive: count_bins must be a positive integer, got -2",
    ),
    "Spline: fractional bins": Bad(
        lambda: bij.Spline(count_bins=2.5)(shape=(3,)),
        ValueError,
        r"count_bins must be a positive integer, got 2.5",
    ),
    "Spline: non-positive bound": Bad(
        lambda: bij.Spline(bound=0.0)(shape=(3,)), ValueError, r"Spline: bound must be positive, got 0.0"
    ),
    "Spline: NaN bound": Bad(
        lambda: bij.Spline(bound=math.nan)(shape=(3,)), ValueError, r"bound must be positive, got nan"
    ),
    "SplineCoupling: one bin": Bad(
        lambda: bij.SplineCoupling(count_bins=1)(shape=(4,)),
        ValueError,
        r"SplineCoupling: count_bins must be an integer of at least 2",
    ),
    "NSF: zero bins": Bad(
        lambda: NSF(bins=0), ValueError, r"NSF: bins must be an integer of at least 2, got 0"
    ),
    "NSF: negative bound": Bad(lambda: NSF(bound=-1.0), ValueError, r"NSF: bound must be positive, got -1.0"),
    "recipe: zero layers": Bad(
        lambda: RealNVP(layers=0), ValueError, r"RealNVP: layers must be a positive integer"
    ),
    "recipe: fractional layers": Bad(
        lambda: IAF(layers=2.5), ValueError, r"IAF: layers must be a positive integer"
    ),
    "recipe: empty hidden_dims": Bad(
        lambda: MAF(hidden_dims=()), ValueError, r"MAF: hidden_dims must be one or more"
    ),
    "recipe: string layers (its repr shown)": Bad(
        lambda: MAF(layers="3"), ValueError, r"MAF: layers must be a positive integer, got '3'"
    ),
    "recipe: an int for hidden_dims": Bad(
        lambda: MAF(hidden_dims=32),
        TypeError,
        r"MAF: hidden_dims must be a sequence of hidden sizes, e.g. \(32,\) for one hidden layer of 32",
    ),
    "recipe: a fractional hidden size (not truncated)": Bad(
        lambda: MAF(hidden_dims=(16.5,)),
        ValueError,
        r"MAF: hidden_dims must be one or more positive integers, got \(16.5,\)",
    ),
    "MADE: an int for hidden_dims": Bad(
        lambda: dist.Flow(normal(), bij.AffineAutoregressive(params.DenseAutoregressive(hidden_dims=32))),
        TypeError,
        r"DenseAutoregressive: hidden_dims must be a sequence of hidden sizes",
    ),
    "coupling conditioner: a fractional hidden size": Bad(
        lambda: dist.Flow(normal(), bij.AffineCoupling(params.DenseCoupling(hidden_dims=(8, 7.5)))),
        ValueError,
        r"DenseCoupling: hidden_dims must be one or more positive integers, got \(8, 7.5\)",
    ),
    "sample: an int for sample_shape": Bad(
        lambda: flow().sample(5),
        TypeError,
        r"Flow: sample_shape must be a torch.Size or a tuple of ints, e.g. \(5,\), got the int 5",
    ),
    "sample: a string for sample_shape": Bad(
        lambda: flow().rsample("5"), TypeError, r"Flow: sample_shape must be a torch.Size or a tuple of ints"
    ),
    "plan: a float shape": Bad(
        lambda: MAF()(shape=2.5), TypeError, r"Compose: shape must be a torch.Size, a tuple of ints or an int"
    ),
    "Flow: a string context_shape": Bad(
        lambda: dist.Flow(normal(), MAF(), context_shape="5"),
        TypeError,
        r"Flow: context_shape must be a torch.Size, a tuple of ints or an int, got '5'",
    ),
    "plan used as a bijector: forward": Bad(
        lambda: bij.AffineAutoregressive().forward(x3),
        AttributeError,
        r"Plan\(AffineAutoregressive\) has no attribute 'forward': it is a plan that builds a "
        r"AffineAutoregressive once the shapes are known.*dist.Flow\(base_dist, plan\)",
    ),
    "plan used as a module: parameters": Bad(
        lambda: torch.optim.Adam(MAF().parameters()),
        AttributeError,
        r"has no attribute 'parameters': it is a plan .*flow.parameters\(\)",
    ),
    "conditioner plan used as a module": Bad(
        lambda: params.DenseAutoregressive().hidden_layers,
        AttributeError,
        r"it is a plan that builds a DenseAutoregressive .* plan\(param_shapes=...\)",
    ),
    "base distribution without Independent": Bad(
        lambda: dist.Flow(
            torch.distributions.Normal(torch.zeros(3), torch.ones(3)), bij.AffineAutoregressive()
        ),
        ValueError,
        r"event shape \(\) and batch shape \(3,\).*torch.distributions.Independent\(base_dist, 1\)",
    ),
    "coupling of a one-element event": Bad(
        lambda: dist.Flow(normal(1), RealNVP()), ValueError, r"an event of a single element cannot be coupled"
    ),
    "Power: zero exponent": Bad(
        lambda: bij.Power(exponent=0)(shape=(3,)), ValueError, r"exponent must be non-zero"
    ),
    "LeakyReLU: zero slope": Bad(
        lambda: bij.LeakyReLU(negative_slope=0.0)(shape=(3,)), ValueError, r"negative_slope must be positive"
    ),
    "AffineFixed: zero scale": Bad(
        lambda: bij.AffineFixed(scale=0.0)(shape=(3,)), ValueError, r"AffineFixed: scale must be non-zero"
    ),
    "AffineAutoregressive: clip bounds in the wrong order": Bad(
        lambda: bij.AffineAutoregressive(log_scale_min_clip=3.0, log_scale_max_clip=-5.0)(shape=(3,)),
        ValueError,
        r"AffineAutoregressive: log_scale_min_clip \(3.0\) must be below log_scale_max_clip \(-5.0\)",
    ),
    "Compose: no layers": Bad(
        lambda: bij.Compose([])(shape=(3,)), ValueError, r"Compose needs at least one bijector"
    ),
    "Compose: a module that is not a bijector": Bad(
        lambda: bij.Compose([torch.nn.Linear(3, 3)])(shape=(3,)),
        TypeError,
        r"Compose takes bijectors or their plans, got Linear",
    ),
    "Invert: a module that is not a bijector": Bad(
        lambda: bij.Invert(torch.nn.Linear(2, 2))(shape=(2,)),
        TypeError,
        r"Invert takes a bijector or its plan",
    ),
    "Flow: base that is not a distribution": Bad(
        lambda: dist.Flow(torch.zeros(3), MAF()),
        TypeError,
        r"Flow: base_dist must be a torch Distribution, got Tensor",
    ),
    "Flow: bijector that is not a bijector": Bad(
        lambda: dist.Flow(normal(), torch.nn.Linear(3, 3)),
        TypeError,
        r"Flow: bijector must be a flowtorch bijector or plan, got Linear",
    ),
    # ------------------------------------------------------------------ validate_args=True
    "validate: NaN value": Bad(
        lambda: flow(validate=True).log_prob(torch.tensor([0.0, math.nan, 0.0])),
        ValueError,
        r"^Flow.log_prob: value has 1 non-finite entry \(1 NaN\) out of 3, the first at index \(1,\)",
    ),
    "validate: infinite value": Bad(
        lambda: flow(validate=True).log_prob(torch.tensor([0.0, math.inf, 0.0])),
        ValueError,
        r"^Flow.log_prob: value has 1 non-finite entry \(1 inf\) out of 3, the first at index \(1,\)",
    ),
    "no validation: NaN value (the base still checks)": Bad(
        lambda: flow_of(MAF(layers=2, hidden_dims=(8,)), False, validating_normal()).log_prob(
            torch.tensor([[0.0, 0.0, 0.0], [0.0, math.nan, -math.inf]])
        ),
        ValueError,
        r"^Flow.log_prob: value has 2 non-finite entries \(1 NaN, 1 inf\) out of 6, the first at index \(1,",
    ),
    "no validation: NaN context": Bad(
        lambda: dist.Flow(
            validating_normal(), MAF(layers=2, hidden_dims=(8,), context_shape=(2,)), validate_args=False
        ).log_prob(torch.zeros(3), torch.tensor([0.0, math.nan])),
        ValueError,
        r"^Flow.log_prob: context has 1 non-finite entry \(1 NaN\) out of 2, the first at index \(1,\)",
    ),
    "validate: value above the support (Sigmoid)": Bad(
        lambda: flow_of(bij.Compose([bij.AffineAutoregressive(), bij.Sigmoid()]), True).log_prob(
            torch.tensor([0.5, 1.5, 0.5])
        ),
        ValueError,
        r"to be within the support \(IndependentConstraint\(Interval\(lower_bound=0.0, upper_bound=1.0\)",
        ours=False,
    ),
    "validate: negative value (Exp)": Bad(
        lambda: flow_of(bij.Exp(), True).log_prob(torch.tensor([1.0, -1.0, 1.0])),
        ValueError,
        r"to be within the support \(IndependentConstraint\(GreaterThan\(lower_bound=0.0\)",
        ours=False,
    ),
}


@pytest.mark.parametrize("bad", list(BAD.values()), ids=list(BAD))
def test_bad_input_gets_a_clear_error(bad: Bad) -> None:
    with pytest.raises(bad.exc, match=bad.match) as info:
        bad.call()
    if bad.ours:
        # raised by a check in flowtorch, not by torch deep inside a computation
        origin = pathlib.Path(info.traceback[-1].path)
        assert SRC in origin.parents, f"raised in {origin}, not by flowtorch's own checks"


# ---------------------------------------------------------------------- validate_args=False
def _outside(plan: Any, value: list[float], base: torch.distributions.Distribution | None = None) -> Any:
    return lambda: flow_of(plan, False, base).log_prob(torch.tensor(value))


def _lognormal() -> torch.distributions.Distribution:
    return torch.distributions.Independent(torch.distributions.LogNormal(torch.zeros(3), torch.ones(3)), 1)


OUTSIDE = {
    "Sigmoid, value 1.5": (
        _outside(bij.Sigmoid(), [0.5, 1.5, 0.5]),
        "finite, about -111, before the masking",
    ),
    "Sigmoid, value -0.5": (_outside(bij.Sigmoid(), [0.5, -0.5, 0.5]), "finite before the masking"),
    "MAF then Sigmoid, value 1.5": (
        _outside(bij.Compose([bij.AffineAutoregressive(), bij.Sigmoid()]), [0.5, 1.5, 0.5]),
        "finite before the masking",
    ),
    "Tanh, value 1.5": (_outside(bij.Tanh(), [0.0, 1.5, 0.0]), "finite, about -22, before the masking"),
    "Exp, value -1": (
        _outside(bij.Exp(), [1.0, -1.0, 1.0]),
        "a ValueError from the base's validation before",
    ),
    "Softplus, value -1": (_outside(bij.Softplus(), [1.0, -1.0, 1.0]), "a ValueError from the base before"),
    "ELU, value -2": (_outside(bij.ELU(), [0.0, -2.0, 0.0]), "a ValueError from the base before"),
    "Power, value -1": (
        _outside(bij.Power(), [1.0, -1.0, 1.0], _lognormal()),
        "a ValueError from the base before",
    ),
}


@pytest.mark.parametrize("name", list(OUTSIDE))
def test_log_prob_outside_the_support_is_minus_infinity(name: str) -> None:
    """With ``validate_args=False``, ``log_prob`` of a value outside the support is ``-inf``,
    never a finite number and never an error from the base distribution."""
    call, _before = OUTSIDE[name]
    log_p = call()
    assert log_p.shape == () and log_p.item() == -math.inf


@pytest.mark.parametrize(
    "plan, value",
    [
        (bij.Sigmoid(), [0.5, 1e-6, 1.0 - 1e-6]),
        (bij.Tanh(), [0.0, -0.999, 0.999]),
        (bij.Exp(), [1.0, 1e-6, 1e6]),
    ],
    ids=["Sigmoid", "Tanh", "Exp"],
)
def test_log_prob_inside_the_support_is_finite_without_validation(plan: Any, value: list[float]) -> None:
    log_p = flow_of(plan, False).log_prob(torch.tensor(value))
    assert torch.isfinite(log_p).all()


# ---------------------------------------------------------------------- no closed-form inverse
class ForwardOnly(Bijector):
    """:math:`y = x + x^3 / 3`: invertible, but written without an inverse."""

    def _forward(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        return x + x.pow(3) / 3

    def _log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor, params: Params) -> torch.Tensor:
        return torch.log1p(x * x)


def test_inverse_without_closed_form_outside_the_cache() -> None:
    b = ForwardOnly()(shape=torch.Size([3]))
    x = torch.randn(4, 3)
    y = b.forward(x)
    for call in (lambda: b.inverse(y), lambda: b.inverse_and_ladj(y)):
        with pytest.raises(
            NotImplementedError, match=r"ForwardOnly has no closed-form inverse: call inverse"
        ):
            call()
    with flowtorch.BijectiveMode():
        y = b.forward(x)
        assert b.inverse(y) is x  # its own outputs are inverted from the cache
        with pytest.raises(NotImplementedError, match=r"no closed-form inverse"):
            b.inverse(y.clone())  # a fresh tensor is not
    f = dist.Flow(normal(), b)
    with pytest.raises(NotImplementedError, match=r"no closed-form inverse"):
        f.log_prob(torch.randn(4, 3))
    sample, log_p = f.rsample_and_log_prob((4,))  # needs no inverse
    assert torch.isfinite(log_p).all() and sample.shape == (4, 3)


def test_parameters_replaced_with_another_dtype_are_seen_by_the_dtype_check() -> None:
    """``load_state_dict(..., assign=True)`` replaces parameters without ``.to()``: the bijector
    then takes inputs of the new dtype, and rejects the old one."""
    b = maf()
    x = torch.randn(4, 3)
    b.forward(x)  # the float32 dtype is now known
    state = {k: v.double() if v.is_floating_point() else v for k, v in b.state_dict().items()}
    b.load_state_dict(state, assign=True)
    y = b.forward(x.double())
    assert y.dtype == torch.float64
    with pytest.raises(
        TypeError, match=r"x has dtype torch.float32, but the parameters have dtype torch.float64"
    ):
        b.forward(x)


# ------------------------------------------------------------- what is accepted, not refused
def test_an_int_is_a_shape_where_torch_takes_one() -> None:
    """``shape`` and ``context_shape`` take an int ``n`` for ``(n,)``, as torch's sizes do."""
    b = MAF(layers=1, hidden_dims=(8,))(shape=3)
    assert b.shape == (3,)
    f = dist.Flow(normal(), MAF(layers=1, hidden_dims=(8,)), context_shape=2)
    assert f.context_shape == (2,)
    assert f.sample((), torch.randn(4, 2)).shape == (4, 3)  # one sample per context
    g = dist.Flow(normal(), bij.AffineAutoregressive(context_shape=2))
    assert g.context_shape == (2,)


@pytest.mark.parametrize(
    "build",
    [
        lambda: bij.Affine(shape=2),
        lambda: bij.AffineAutoregressive(shape=2, context_shape=3),
        lambda: bij.Spline(shape=2),
        lambda: bij.SplineCoupling(shape=2),
        lambda: bij.Permute(shape=2),
        lambda: bij.Compose([bij.Affine(), bij.Exp()], shape=2),
    ],
    ids=["Affine", "AffineAutoregressive", "Spline", "SplineCoupling", "Permute", "Compose"],
)
def test_direct_construction_takes_an_int_shape(build: Callable[[], Bijector]) -> None:
    """``bij.Affine(shape=2)`` is ``bij.Affine()(shape=2)``: the class takes the sizes its plan does."""
    b = build()
    assert b.shape == torch.Size([2]) and isinstance(b.shape, torch.Size)
    assert b.forward(torch.randn(5, 2), context=torch.randn(5, 3) if b.context_shape else None).shape == (
        5,
        2,
    )


@pytest.mark.parametrize(("shape", "shown"), [("2", "'2'"), ((2.5,), r"\(2.5,\)"), (None, None)])
def test_direct_construction_names_a_bad_shape(shape: object, shown: str | None) -> None:
    if shape is None:  # no shape at all is a plan, not an error
        assert isinstance(bij.Affine(shape=None), Plan)
        return
    with pytest.raises(
        TypeError, match=rf"Affine: shape must be a torch.Size, a tuple of ints or an int, got {shown}"
    ):
        bij.Affine(shape=shape)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_parameters_take_the_base_distributions_dtype(dtype: torch.dtype) -> None:
    f = dist.Flow(normal(3, dtype), MAF(layers=2, hidden_dims=(8,)))
    assert {p.dtype for p in f.parameters()} == {dtype}
    y = f.sample((2,))
    assert y.dtype == dtype and f.log_prob(y).dtype == dtype
