"""``flowtorch.ops.ode``: argument checks, empty state entries, a given first step, and adjoint
dynamics that do not depend on the state."""

from __future__ import annotations

import math

import pytest
import torch

from flowtorch.ops.ode import State, dopri5, odeint, odeint_adjoint

F64 = torch.float64


def decay(t: float, y: State) -> State:
    return tuple(-v for v in y)


@pytest.mark.parametrize("entry", [torch.ones(2, dtype=torch.long), torch.ones(2, dtype=torch.bool), 1.0])
def test_a_state_entry_that_is_not_a_float_tensor_is_named(entry: object) -> None:
    y0 = (torch.ones(2, dtype=F64), entry)
    for method in ("dopri5", "rk4"):
        with pytest.raises(TypeError, match="every state entry must be a floating-point tensor"):
            odeint(decay, y0, 0.0, 1.0, method=method)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="odeint_adjoint: every state entry"):
        odeint_adjoint(decay, y0, 0.0, 1.0, [])  # type: ignore[arg-type]


@pytest.mark.parametrize("max_steps", [0, -3, True, 2.5])
def test_a_bad_max_steps_is_named(max_steps: object) -> None:
    with pytest.raises(ValueError, match=f"dopri5: max_steps must be a positive integer, got {max_steps!r}"):
        dopri5(decay, (torch.ones(2, dtype=F64),), 0.0, 1.0, max_steps=max_steps)  # type: ignore[arg-type]


@pytest.mark.parametrize("first_step", [0.0, -0.1, float("nan")])
def test_a_bad_first_step_is_named(first_step: float) -> None:
    with pytest.raises(ValueError, match="dopri5: first_step must be positive"):
        dopri5(decay, (torch.ones(2, dtype=F64),), 0.0, 1.0, first_step=first_step)


def test_a_given_first_step_is_taken_and_clipped_to_the_interval() -> None:
    # y' = 1 is solved exactly by any step: a first step beyond the interval is one step to t1
    stats: dict[str, int] = {}
    y0 = (torch.tensor([0.5, -1.0], dtype=F64),)
    (y,) = dopri5(lambda t, y: (torch.ones_like(y[0]),), y0, 0.0, 2.0, first_step=10.0, stats=stats)
    assert stats == {"nfe": 7, "steps": 1, "rejected": 0}  # 1 + 6 evaluations, no initial-step probe
    torch.testing.assert_close(y, y0[0] + 2.0)
    # backwards in time, and a small first step that the controller then grows
    stats = {}
    (y,) = dopri5(
        decay, (torch.ones(3, dtype=F64),), 1.0, 0.0, first_step=1e-3, rtol=1e-9, atol=1e-9, stats=stats
    )
    torch.testing.assert_close(y, torch.full((3,), math.e, dtype=F64), atol=1e-7, rtol=1e-7)
    assert stats["steps"] > 3


def test_a_zero_length_interval_reports_zero_counts() -> None:
    stats = {"nfe": 99}
    y0 = (torch.ones(2, dtype=F64),)
    (y,) = dopri5(decay, y0, 0.5, 0.5, stats=stats)
    assert stats == {"nfe": 0, "steps": 0, "rejected": 0}
    assert y is not y0[0] and torch.equal(y, y0[0])


def test_dynamics_not_finite_just_after_the_start_are_named() -> None:
    def f(t: float, y: State) -> State:
        return (y[0] * (float("nan") if t > 0.0 else 1.0),)

    with pytest.raises(RuntimeError, match=r"dopri5: the dynamics are not finite near t=0\.0"):
        dopri5(f, (torch.ones(2, dtype=F64),), 0.0, 1.0)


@pytest.mark.parametrize("method", ["dopri5", "rk4"])
def test_an_empty_state_entry_is_carried_along(method: str) -> None:
    y0 = (torch.ones(2, dtype=F64), torch.empty(0, 3, dtype=F64))
    y, empty = odeint(decay, y0, 0.0, 1.0, method=method, steps=50, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(y, torch.full((2,), math.exp(-1.0), dtype=F64), atol=1e-8, rtol=1e-8)
    assert empty.shape == (0, 3)


def test_adjoint_of_dynamics_that_ignore_the_state_and_the_parameters() -> None:
    # y' = 2: y(1) = y(0) + 2, so dL/dy(0) = dL/dy(1), and an unused parameter gets a zero gradient
    w = torch.tensor(0.3, dtype=F64, requires_grad=True)
    y0 = torch.tensor([1.0, -1.0], dtype=F64, requires_grad=True)
    (y1,) = odeint_adjoint(lambda t, s: (torch.full_like(s[0], 2.0),), (y0,), 0.0, 1.0, [w], method="rk4")
    torch.testing.assert_close(y1, y0.detach() + 2.0)
    (y1 * torch.tensor([3.0, -5.0], dtype=F64)).sum().backward()
    torch.testing.assert_close(y0.grad, torch.tensor([3.0, -5.0], dtype=F64))
    torch.testing.assert_close(w.grad, torch.zeros((), dtype=F64))


def test_adjoint_arguments_are_checked() -> None:
    y0 = (torch.ones(2, dtype=F64),)
    with pytest.raises(
        ValueError, match=r"odeint_adjoint: unknown method 'euler'; use one of \('dopri5', 'rk4'\)"
    ):
        odeint_adjoint(decay, y0, 0.0, 1.0, [], method="euler")
    with pytest.raises(TypeError, match="odeint_adjoint: params must be tensors"):
        odeint_adjoint(decay, y0, 0.0, 1.0, [torch.ones(1), 0.5])  # type: ignore[list-item]
