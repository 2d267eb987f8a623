"""Tests for :mod:`flowtorch.ops.ode`: RK4 and Dormand-Prince against analytic solutions, adjoint
gradients against backpropagation through the solver; argument checks, empty state entries, a given
first step, and adjoint dynamics that do not depend on the state.

Stated tolerances (float64): dopri5's global error on the linear test problems stays within
``20 * tol`` of the analytic solution for ``rtol = atol = tol``; RK4's error falls by 16 (+-25%)
when the step halves; adjoint gradients match backpropagation through dopri5 at ``rtol = atol =
1e-10`` to ``1e-7`` (relative to the gradient's size), and through RK4 with the same steps to
``1e-5`` (the two differ by RK4's own error).
"""

from __future__ import annotations

import math

import pytest
import torch

from flowtorch.ops.ode import State, dopri5, odeint, odeint_adjoint, rk4

F64 = torch.float64
A = torch.tensor([[-0.5, 2.0, 0.0], [-2.0, -0.5, 0.3], [0.1, 0.0, -0.2]], dtype=F64)
Y0 = torch.tensor([[1.0, 0.0, -1.0], [0.3, 2.0, 0.5]], dtype=F64)


def linear(t: float, y: State) -> State:
    return (y[0] @ A.T,)


def exact(t0: float, t1: float) -> torch.Tensor:
    return Y0 @ torch.linalg.matrix_exp(A * (t1 - t0)).T


@pytest.mark.parametrize("tol", [1e-5, 1e-8, 1e-11])
@pytest.mark.parametrize("t0,t1", [(0.0, 2.0), (1.5, -0.5)], ids=["forward", "backward"])
def test_dopri5_matches_the_matrix_exponential(tol: float, t0: float, t1: float) -> None:
    stats: dict[str, int] = {}
    (y,) = dopri5(linear, (Y0,), t0, t1, rtol=tol, atol=tol, stats=stats)
    err = float((y - exact(t0, t1)).abs().max())
    assert err < 20 * tol, err
    assert stats["steps"] >= 1 and stats["nfe"] >= 6 * stats["steps"]


def test_dopri5_takes_more_steps_for_tighter_tolerances() -> None:
    steps = []
    for tol in (1e-4, 1e-7, 1e-10):
        stats: dict[str, int] = {}
        dopri5(linear, (Y0,), 0.0, 2.0, rtol=tol, atol=tol, stats=stats)
        steps.append(stats["steps"])
    # a fifth-order method: about 10**(3/5) = 4x more steps per 1000x tighter tolerance
    assert steps[0] < steps[1] < steps[2]
    assert 2.5 < steps[2] / steps[1] < 6.5, steps


def test_rk4_is_fourth_order() -> None:
    errors = [
        float((rk4(linear, (Y0,), 0.0, 2.0, steps=n)[0] - exact(0.0, 2.0)).abs().max()) for n in (20, 40, 80)
    ]
    for e1, e2 in zip(errors, errors[1:]):
        assert 12 < e1 / e2 < 20, errors


@pytest.mark.parametrize("method", ["rk4", "dopri5"])
def test_time_dependent_tuple_state(method: str) -> None:
    # y' = cos(t) y  =>  y = y0 exp(sin t); and l' = -2 t, integrated alongside
    def f(t: float, s: State) -> State:
        return math.cos(t) * s[0], torch.full_like(s[1], -2.0 * t)

    y0 = (torch.tensor([1.0, -2.0], dtype=F64), torch.zeros((), dtype=F64))
    y, ell = odeint(f, y0, 0.0, 3.0, method=method, steps=200, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(y, y0[0] * math.exp(math.sin(3.0)), atol=1e-8, rtol=1e-8)
    torch.testing.assert_close(ell, torch.tensor(-9.0, dtype=F64), atol=1e-8, rtol=1e-8)


def test_zero_length_interval_returns_copies() -> None:
    y0 = (torch.ones(2),)
    for method in ("rk4", "dopri5"):
        (y,) = odeint(linear, y0, 1.0, 1.0, method=method)
        assert y is not y0[0] and torch.equal(y, y0[0])


def test_float32_tolerances_are_floored() -> None:
    y0 = (Y0.float(),)
    stats: dict[str, int] = {}
    (y,) = dopri5(lambda t, y: (y[0] @ A.float().T,), y0, 0.0, 2.0, rtol=1e-14, atol=1e-14, stats=stats)
    assert y.dtype == torch.float32
    assert float((y.double() - exact(0.0, 2.0)).abs().max()) < 1e-4
    assert stats["steps"] < 500


def test_bad_arguments_and_failures() -> None:
    with pytest.raises(ValueError, match="unknown method"):
        odeint(linear, (Y0,), 0.0, 1.0, method="euler")
    with pytest.raises(TypeError, match="tuple of tensors"):
        odeint(linear, Y0, 0.0, 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="steps"):
        rk4(linear, (Y0,), 0.0, 1.0, steps=0)
    with pytest.raises(ValueError, match="rtol and atol"):
        dopri5(linear, (Y0,), 0.0, 1.0, rtol=0.0)
    with pytest.raises(ValueError, match="shapes"):
        dopri5(lambda t, y: (y[0][0],), (Y0,), 0.0, 1.0)
    with pytest.raises(ValueError, match="tuple of 2"):
        dopri5(lambda t, y: (y[0],), (Y0, Y0), 0.0, 1.0)
    with pytest.raises(RuntimeError, match="max_steps"):
        dopri5(linear, (Y0,), 0.0, 1.0, rtol=1e-12, atol=1e-12, max_steps=5)
    with pytest.raises(RuntimeError, match="not finite"):
        dopri5(lambda t, y: (y[0] * float("nan"),), (Y0,), 0.0, 1.0)
    with pytest.raises(RuntimeError, match="underflow"):  # non-finite after the first steps
        dopri5(lambda t, y: (y[0] * (float("nan") if t > 0.5 else 1.0),), (Y0,), 0.0, 1.0)
    with pytest.raises(RuntimeError, match=r"max_steps|underflow"):  # blows up in finite time
        dopri5(lambda t, y: (y[0] ** 2,), (torch.ones(1, dtype=F64),), 0.0, 2.0)


# --------------------------------------------------------------------------- gradients


class MLPField(torch.nn.Module):
    def __init__(self, context: torch.Tensor) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.l1 = torch.nn.Linear(4, 16).double()
        self.l2 = torch.nn.Linear(16, 3).double()
        self.context = context

    def forward(self, t: float, s: State) -> State:
        z = s[0]
        h = torch.cat([z, z.new_full((*z.shape[:-1], 1), t)], -1)
        out = self.l2(torch.tanh(self.l1(h) + self.context))
        return out, (out * z).sum(-1)


def _gradients(adjoint: bool, method: str, t0: float, t1: float) -> list[torch.Tensor]:
    torch.manual_seed(1)
    context = torch.randn(16, dtype=F64, requires_grad=True)
    field = MLPField(context * 1.0)  # a non-leaf tensor read by the dynamics
    z0 = torch.randn(5, 3, dtype=F64, requires_grad=True)
    y0 = (z0, torch.zeros(5, dtype=F64))
    options = dict(method=method, rtol=1e-10, atol=1e-10, steps=20)
    params = [*field.parameters(), field.context]
    if adjoint:
        z1, ell = odeint_adjoint(field, y0, t0, t1, params, **options)  # type: ignore[arg-type]
    else:
        z1, ell = odeint(field, y0, t0, t1, **options)  # type: ignore[arg-type]
    w = torch.linspace(-1, 1, 15, dtype=F64).view(5, 3)
    loss = (w * z1).sum() + z1.square().sum() + 0.3 * ell.sum()
    loss.backward()
    grads = [z0.grad, context.grad, *(p.grad for p in field.parameters())]
    assert all(g is not None for g in grads)
    return grads  # type: ignore[return-value]


@pytest.mark.parametrize("t0,t1", [(0.0, 1.0), (1.0, -0.5)], ids=["forward", "backward"])
def test_adjoint_matches_backprop_dopri5(t0: float, t1: float) -> None:
    for g_adj, g_bp in zip(_gradients(True, "dopri5", t0, t1), _gradients(False, "dopri5", t0, t1)):
        scale = float(g_bp.abs().max())
        assert float((g_adj - g_bp).abs().max()) < 1e-7 * max(scale, 1.0)


def test_adjoint_matches_backprop_rk4() -> None:
    for g_adj, g_bp in zip(_gradients(True, "rk4", 0.0, 1.0), _gradients(False, "rk4", 0.0, 1.0)):
        assert float((g_adj - g_bp).abs().max()) < 1e-5 * max(float(g_bp.abs().max()), 1.0)


def test_adjoint_against_analytic_linear_gradients() -> None:
    # y(T) = exp(A T) y0: dL/dy0 = exp(A T)^T g for L = <g, y(T)>, and dL/dA by finite differences
    a = A.clone().requires_grad_()
    y0 = Y0.clone().requires_grad_()
    g = torch.randn(Y0.shape, dtype=F64, generator=torch.Generator().manual_seed(0))
    (y1,) = odeint_adjoint(lambda t, s: (s[0] @ a.T,), (y0,), 0.0, 1.5, [a], rtol=1e-11, atol=1e-11)
    (g * y1).sum().backward()
    m = torch.linalg.matrix_exp(A * 1.5)
    torch.testing.assert_close(y1.detach(), Y0 @ m.T, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(y0.grad, g @ m, atol=1e-9, rtol=1e-9)
    fn = lambda a_: (g * (Y0 @ torch.linalg.matrix_exp(a_ * 1.5).T)).sum()  # noqa: E731
    expected = torch.autograd.functional.jacobian(fn, A)
    torch.testing.assert_close(a.grad, expected, atol=1e-8, rtol=1e-8)


def test_adjoint_skips_tensors_without_gradient() -> None:
    frozen = torch.tensor(0.5, dtype=F64)
    w = torch.tensor(-1.0, dtype=F64, requires_grad=True)
    (y1,) = odeint_adjoint(
        lambda t, s: (w * frozen * s[0],), (torch.ones(3, dtype=F64),), 0.0, 1.0, [frozen, w]
    )
    y1.sum().backward()
    assert frozen.grad is None
    torch.testing.assert_close(
        w.grad, torch.tensor(3 * 0.5 * math.exp(-0.5), dtype=F64), atol=1e-6, rtol=1e-6
    )


def test_dopri5_agrees_with_zuko() -> None:
    """Peer check: zuko's adaptive Dormand-Prince on the same nonlinear field."""
    zuko_utils = pytest.importorskip("zuko.utils")
    context = torch.zeros(16, dtype=F64)
    field = MLPField(context)
    z0 = torch.randn(5, 3, dtype=F64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        (ours, _) = dopri5(field, (z0, torch.zeros(5, dtype=F64)), 0.0, 1.0, rtol=1e-10, atol=1e-10)
        theirs = zuko_utils.odeint(
            lambda t, z: field(float(t), (z, z[..., 0]))[0], z0, 0.0, 1.0, atol=1e-10, rtol=1e-10
        )
    difference = float((ours - theirs).abs().max())
    print(f"max |ours - zuko| = {difference:.2e}")
    assert difference < 1e-8


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
