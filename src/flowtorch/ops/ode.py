r"""Small ODE solvers for continuous flows: fixed-step RK4, adaptive Dormand-Prince, adjoint.

All solvers integrate :math:`\dot y = f(t, y)` from :math:`t_0` to :math:`t_1` (either may be the
larger: :math:`t_1 < t_0` integrates backwards in time) for a state that is a *tuple of tensors*
(a flow's sample together with its log-density, say); ``f(t, y)`` takes a Python float and such a
tuple and returns a tuple of the same shapes.

* :func:`rk4`: the classical fourth-order Runge-Kutta method with ``steps`` equal steps; global
  error :math:`O(h^4)`.
* :func:`dopri5`: the Dormand-Prince 5(4) pair with local extrapolation, FSAL, an error estimate
  from the embedded fourth-order solution and step-size control

  .. math::

      \text{err} = \max_{\text{tensors}} \operatorname{RMS}\!\Big(
          \frac{\hat y_{n+1} - y_{n+1}}{\text{atol} + \text{rtol}\max(|y_n|, |y_{n+1}|)}\Big),
      \qquad h \leftarrow h \cdot \operatorname{clip}(0.9\,\text{err}^{-1/5}, 0.2, 10),

  accepting a step when :math:`\text{err} \le 1` (Hairer, Nørsett and Wanner, *Solving Ordinary
  Differential Equations I*, II.4; initial step by their algorithm of II.4 as well). Step sizes
  are plain floats computed without gradient, so backpropagating through the solver
  differentiates the steps taken, not the choice of steps.
* :func:`odeint_adjoint`: the same solution, with gradients from the adjoint method (Chen et al.,
  "Neural Ordinary Differential Equations", 2018): the backward pass integrates
  :math:`\dot a = -a^\top \partial f / \partial y`,
  :math:`\dot g = -a^\top \partial f / \partial \theta` from :math:`t_1` back to :math:`t_0`
  together with :math:`y` itself, in memory independent of the number of steps. Its gradients
  agree with backpropagation through the solver up to the solver's tolerance.

Why our own solvers: flowtorch's continuous flows need one fixed interval, tuple states, a
batch-wide step size and an adjoint whose parameters are explicit; the whole is about 200 lines,
is tested against analytic solutions, and adds no dependency.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from flowtorch.core.validation import integer_at_least

__all__ = ["Dynamics", "State", "dopri5", "odeint", "odeint_adjoint", "rk4"]

State = tuple[Tensor, ...]
Dynamics = Callable[[float, State], State]

METHODS = ("dopri5", "rk4")

# Dormand-Prince 5(4) tableau
_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0)
_A: tuple[tuple[float, ...], ...] = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
)
_B5 = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84)
_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
_E = tuple(b5 - b4 for b5, b4 in zip((*_B5, 0.0), _B4))

_SAFETY, _MIN_FACTOR, _MAX_FACTOR = 0.9, 0.2, 10.0
#: Tolerances are raised to at least this many machine epsilons of the state's dtype.
TOL_FLOOR_EPS = 10.0


def _check_state(name: str, y0: Any) -> State:
    if isinstance(y0, Tensor) or not isinstance(y0, (tuple, list)) or not y0:
        raise TypeError(f"{name}: the state must be a non-empty tuple of tensors, got {type(y0).__name__}")
    for y in y0:
        if not isinstance(y, Tensor) or not y.is_floating_point():
            raise TypeError(f"{name}: every state entry must be a floating-point tensor")
    return tuple(y0)


def _check_out(name: str, out: Any, y: State) -> State:
    if not isinstance(out, (tuple, list)) or len(out) != len(y):
        raise ValueError(f"{name}: the dynamics must return a tuple of {len(y)} tensors, like the state")
    for o, v in zip(out, y):
        if o.shape != v.shape:
            raise ValueError(
                f"{name}: the dynamics returned shapes {[tuple(o.shape) for o in out]} for a state of "
                f"shapes {[tuple(v.shape) for v in y]}"
            )
    return tuple(out)


def _combine(y: State, dt: float, coeffs: Sequence[float], ks: Sequence[State]) -> State:
    """``y + dt * sum_j coeffs[j] * ks[j]``, entry by entry."""
    out = []
    for i, yi in enumerate(y):
        acc = yi
        for c, k in zip(coeffs, ks):
            if c != 0.0:
                acc = acc + (dt * c) * k[i]
        out.append(acc)
    return tuple(out)


def _rms_ratio(values: Sequence[Tensor], scales: Sequence[Tensor]) -> float:
    """The largest RMS of ``values / scales`` over the entries; ``inf`` if any is not finite."""
    ratio = 0.0
    for v, s in zip(values, scales):
        if v.numel():
            r = float((v / s).square().mean().sqrt())
            if not math.isfinite(r):
                return math.inf
            ratio = max(ratio, r)
    return ratio


def _floor(y0: State, rtol: float, atol: float) -> tuple[float, float]:
    if not (rtol > 0 and atol > 0):
        raise ValueError(f"rtol and atol must be positive, got rtol={rtol}, atol={atol}")
    eps = max(float(torch.finfo(y.dtype).eps) for y in y0)
    floor = TOL_FLOOR_EPS * eps
    return max(float(rtol), floor), max(float(atol), floor)


def rk4(f: Dynamics, y0: State, t0: float, t1: float, *, steps: int = 10) -> State:
    r"""Integrates :math:`\dot y = f(t, y)` from ``t0`` to ``t1`` with ``steps`` classical RK4 steps.

    With :math:`h = (t_1 - t_0) / \text{steps}`,

    .. math::

        k_1 = f(t, y),\ k_2 = f(t + \tfrac h2, y + \tfrac h2 k_1),\
        k_3 = f(t + \tfrac h2, y + \tfrac h2 k_2),\ k_4 = f(t + h, y + h k_3),\quad
        y \leftarrow y + \tfrac h6 (k_1 + 2k_2 + 2k_3 + k_4).

    References: Kutta, "Beitrag zur näherungsweisen Integration totaler Differentialgleichungen",
    1901; Hairer, Nørsett & Wanner, "Solving Ordinary Differential Equations I: Nonstiff
    Problems", 2nd ed., 1993, section II.1.

    Args:
        f: the dynamics ``f(t, y) -> dy/dt`` on tuples of tensors.
        y0: the initial state, a tuple of tensors.
        t0: initial time.
        t1: final time (smaller than ``t0`` to integrate backwards).
        steps: number of equal steps.

    Returns:
        The state at ``t1``, differentiable by backpropagation through the steps.

    Example:
        >>> y = rk4(lambda t, y: (-y[0],), (torch.ones(2, dtype=torch.float64),), 0.0, 1.0, steps=20)
        >>> torch.allclose(y[0], torch.full((2,), math.exp(-1.0), dtype=torch.float64), atol=1e-7)
        True
    """
    y = _check_state("rk4", y0)
    integer_at_least(steps, "rk4: steps")
    t0, t1 = float(t0), float(t1)
    if t0 == t1:
        return tuple(v.clone() for v in y)
    h = (t1 - t0) / steps
    for i in range(steps):
        t = t0 + i * h
        k1 = _check_out("rk4", f(t, y), y) if i == 0 else f(t, y)
        k2 = f(t + h / 2, _combine(y, h / 2, (1.0,), (k1,)))
        k3 = f(t + h / 2, _combine(y, h / 2, (1.0,), (k2,)))
        k4 = f(t + h, _combine(y, h, (1.0,), (k3,)))
        y = _combine(y, h / 6, (1.0, 2.0, 2.0, 1.0), (k1, k2, k3, k4))
    return y


def _initial_step(
    f: Dynamics, t0: float, y0: State, f0: State, direction: float, rtol: float, atol: float, span: float
) -> float:
    """The starting step of Hairer, Nørsett and Wanner (II.4), for a method of order 5."""
    with torch.no_grad():
        y0 = tuple(y.detach() for y in y0)
        f0 = tuple(k.detach() for k in f0)
        scale = [atol + rtol * y.abs() for y in y0]
        d0, d1 = _rms_ratio(y0, scale), _rms_ratio(f0, scale)
        if not (math.isfinite(d0) and math.isfinite(d1)):
            raise RuntimeError(f"dopri5: the initial state or the dynamics at t={t0} are not finite")
        h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
        h0 = min(h0, span)
        f1 = f(t0 + direction * h0, _combine(y0, direction * h0, (1.0,), (f0,)))
        d2 = _rms_ratio([a.detach() - b for a, b in zip(f1, f0)], scale) / h0
        if not math.isfinite(d2):
            raise RuntimeError(f"dopri5: the dynamics are not finite near t={t0}")
        dmax = max(d1, d2)
        h1 = max(1e-6, h0 * 1e-3) if dmax <= 1e-15 else (0.01 / dmax) ** (1.0 / 5.0)
        return min(100.0 * h0, h1, span)


def dopri5(
    f: Dynamics,
    y0: State,
    t0: float,
    t1: float,
    *,
    rtol: float = 1e-6,
    atol: float = 1e-8,
    first_step: float | None = None,
    max_steps: int = 10_000,
    stats: dict[str, int] | None = None,
) -> State:
    r"""Integrates :math:`\dot y = f(t, y)` from ``t0`` to ``t1`` with adaptive Dormand-Prince 5(4).

    The step size is shared by the whole state (every batch element), chosen so that the
    estimated local error satisfies ``err <= 1`` for the norm in :mod:`flowtorch.ops.ode`.
    Tolerances below ``10 * eps`` of the state's dtype are raised to it (float32 cannot resolve
    less). Each accepted step costs 6 evaluations of ``f`` (the seventh is reused by the next).

    References: Dormand & Prince, "A family of embedded Runge-Kutta formulae", J. Comput. Appl.
    Math., 1980; Hairer, Nørsett & Wanner, "Solving Ordinary Differential Equations I: Nonstiff
    Problems", 2nd ed., 1993, section II.4 (step-size control and the initial step).

    Args:
        f: the dynamics ``f(t, y) -> dy/dt`` on tuples of tensors.
        y0: the initial state, a tuple of tensors.
        t0: initial time.
        t1: final time (smaller than ``t0`` to integrate backwards).
        rtol: relative tolerance.
        atol: absolute tolerance.
        first_step: size of the first step; default: chosen automatically.
        max_steps: the most steps (accepted and rejected) before giving up.
        stats: a dict that receives ``nfe`` (evaluations of ``f``), ``steps`` (accepted) and
            ``rejected``.

    Returns:
        The state at ``t1``, differentiable by backpropagation through the steps taken.

    Raises:
        RuntimeError: when ``max_steps`` is exceeded or the step size underflows (a stiff or
            non-finite problem).

    Example:
        >>> y = dopri5(lambda t, y: (-y[0],), (torch.ones(2, dtype=torch.float64),), 0.0, 1.0, rtol=1e-10)
        >>> torch.allclose(y[0], torch.full((2,), math.exp(-1.0), dtype=torch.float64), atol=1e-9)
        True
    """
    y = _check_state("dopri5", y0)
    rtol, atol = _floor(y, rtol, atol)
    integer_at_least(max_steps, "dopri5: max_steps")
    counts = {"nfe": 0, "steps": 0, "rejected": 0}

    def call(t: float, state: State) -> State:
        counts["nfe"] += 1
        return f(t, state)

    t0, t1 = float(t0), float(t1)
    if t0 == t1:
        if stats is not None:
            stats.update(counts)
        return tuple(v.clone() for v in y)
    direction = 1.0 if t1 > t0 else -1.0
    span = abs(t1 - t0)
    t = t0
    k1 = _check_out("dopri5", call(t, y), y)
    if first_step is not None:
        if not first_step > 0:
            raise ValueError(f"dopri5: first_step must be positive, got {first_step}")
        h = min(float(first_step), span)
    else:
        h = _initial_step(call, t0, y, k1, direction, rtol, atol, span)
    while True:
        if counts["steps"] + counts["rejected"] >= max_steps:
            raise RuntimeError(
                f"dopri5: more than max_steps={max_steps} steps between t={t0} and t={t1} (reached "
                f"t={t}); loosen rtol/atol or raise max_steps"
            )
        remaining = direction * (t1 - t)
        last = h >= remaining
        if last:
            h = remaining
        dt = direction * h
        ks = [k1]
        for i in range(1, 6):
            ks.append(call(t + _C[i] * dt, _combine(y, dt, _A[i], ks)))
        y_new = _combine(y, dt, _B5, ks)
        k7 = call(t + dt, y_new)
        ks.append(k7)
        with torch.no_grad():
            err = [sum((dt * e) * k[i].detach() for e, k in zip(_E, ks) if e != 0.0) for i in range(len(y))]
            scale = [
                atol + rtol * torch.maximum(a.detach().abs(), b.detach().abs()) for a, b in zip(y, y_new)
            ]
            ratio = _rms_ratio(err, scale)  # type: ignore[arg-type]
        accepted = ratio <= 1.0
        if accepted:
            counts["steps"] += 1
            t = t1 if last else t + dt
            y, k1 = y_new, k7
            if last:
                break
        else:
            counts["rejected"] += 1
        if ratio == 0.0:
            factor = _MAX_FACTOR
        elif math.isfinite(ratio):
            factor = min(_MAX_FACTOR, max(_MIN_FACTOR, _SAFETY * ratio ** (-1.0 / 5.0)))
        else:
            factor = _MIN_FACTOR
        if not accepted:
            factor = min(factor, 1.0)
        h = h * factor
        if h <= 4.0 * math.ulp(max(abs(t), span)):
            raise RuntimeError(
                f"dopri5: step size underflow at t={t} (error ratio {ratio:.3g}); the dynamics may be "
                "stiff or produce non-finite values"
            )
    if stats is not None:
        stats.update(counts)
    return y


def odeint(
    f: Dynamics,
    y0: State,
    t0: float,
    t1: float,
    *,
    method: str = "dopri5",
    rtol: float = 1e-6,
    atol: float = 1e-8,
    steps: int = 10,
    first_step: float | None = None,
    max_steps: int = 10_000,
    stats: dict[str, int] | None = None,
) -> State:
    r"""Integrates ``f`` from ``t0`` to ``t1`` with ``method`` (``"dopri5"`` or ``"rk4"``).

    Approximates the solution of the initial value problem :math:`\dot y = f(t, y)`,
    :math:`y(t_0) = y_0`, at :math:`t_1`:

    .. math:: y(t_1) = y_0 + \int_{t_0}^{t_1} f(t, y(t))\,dt.

    ``rtol``, ``atol``, ``first_step``, ``max_steps`` and ``stats`` apply to ``dopri5``, ``steps``
    to ``rk4``. See :func:`dopri5` and :func:`rk4`.

    Reference: Hairer, Nørsett & Wanner, "Solving Ordinary Differential Equations I: Nonstiff
    Problems", 2nd ed., 1993.

    Args:
        f: the dynamics ``f(t, y) -> dy/dt`` on tuples of tensors.
        y0: the initial state, a tuple of tensors.
        t0: initial time.
        t1: final time (smaller than ``t0`` to integrate backwards).
        method: ``"dopri5"`` (adaptive) or ``"rk4"`` (fixed steps).
        rtol: relative tolerance (``dopri5``).
        atol: absolute tolerance (``dopri5``).
        steps: number of equal steps (``rk4``).
        first_step: size of the first step; default: chosen automatically (``dopri5``).
        max_steps: the most steps, accepted and rejected, before giving up (``dopri5``).
        stats: a dict that receives the solver's counts (``dopri5``).

    Returns:
        The state at ``t1``, a tuple of tensors of the shapes of ``y0``, differentiable by
        backpropagation through the steps.

    Example:
        >>> y0 = (torch.ones(1, dtype=torch.float64),)
        >>> (y1,) = odeint(lambda t, y: (y[0],), y0, 0.0, 1.0, method="rk4", steps=50)
        >>> abs(float(y1) - math.e) < 1e-6
        True
    """
    if method == "dopri5":
        return dopri5(
            f, y0, t0, t1, rtol=rtol, atol=atol, first_step=first_step, max_steps=max_steps, stats=stats
        )
    if method == "rk4":
        return rk4(f, y0, t0, t1, steps=steps)
    raise ValueError(f"odeint: unknown method {method!r}; use one of {METHODS}")


class _Adjoint(torch.autograd.Function):
    """Solves forward without a graph; the backward pass solves the adjoint ODE backwards."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, f: Dynamics, t0: float, t1: float, options: dict[str, Any], n: int, *tensors: Tensor
    ) -> State:
        with torch.no_grad():
            y1 = odeint(f, tensors[:n], t0, t1, **options)
        ctx.f, ctx.t0, ctx.t1, ctx.options, ctx.n = f, t0, t1, options, n
        ctx.save_for_backward(*y1, *tensors[n:])
        return y1

    @staticmethod
    def backward(ctx: Any, *grads: Tensor | None) -> tuple[Tensor | None, ...]:
        n: int = ctx.n
        saved = ctx.saved_tensors
        y1, params = saved[:n], saved[n:]
        first = 5 + n  # index of the first parameter among forward's inputs
        wanted = [i for i in range(len(params)) if ctx.needs_input_grad[first + i]]
        wp = tuple(params[i] for i in wanted)
        f: Dynamics = ctx.f
        adj = tuple(torch.zeros_like(y) if g is None else g for g, y in zip(grads, y1))

        def augmented(t: float, state: State) -> State:
            y, a = state[:n], state[n : 2 * n]
            with torch.enable_grad():
                y_ = tuple(v.detach().requires_grad_() for v in y)
                out = f(t, y_)
                pairs = [(o, g) for o, g in zip(out, a) if o.requires_grad]
                vjp: Sequence[Tensor | None] = (None,) * (n + len(wp))
                if pairs:
                    vjp = torch.autograd.grad(
                        [o for o, _ in pairs], (*y_, *wp), [g for _, g in pairs], allow_unused=True
                    )
            dy = tuple(o.detach() for o in out)
            da = tuple(torch.zeros_like(v) if g is None else -g for g, v in zip(vjp[:n], y))
            dp = tuple(torch.zeros_like(p) if g is None else -g for g, p in zip(vjp[n:], wp))
            return (*dy, *da, *dp)

        state = (*(y.detach() for y in y1), *adj, *(torch.zeros_like(p) for p in wp))
        with torch.no_grad():
            final = odeint(augmented, state, ctx.t1, ctx.t0, **ctx.options)
        param_grads: list[Tensor | None] = [None] * len(params)
        for j, i in enumerate(wanted):
            param_grads[i] = final[2 * n + j]
        return (None, None, None, None, None, *final[n : 2 * n], *param_grads)


def odeint_adjoint(
    f: Dynamics,
    y0: State,
    t0: float,
    t1: float,
    params: Sequence[Tensor],
    *,
    method: str = "dopri5",
    rtol: float = 1e-6,
    atol: float = 1e-8,
    steps: int = 10,
    first_step: float | None = None,
    max_steps: int = 10_000,
) -> State:
    r"""As :func:`odeint`, with gradients by the adjoint method instead of through the steps.

    The forward solve records no graph. Given :math:`a(t_1) = \partial L / \partial y(t_1)`, the
    backward pass integrates the augmented state :math:`(y, a, g)`,

    .. math::

        \dot y = f(t, y), \qquad \dot a = -a^\top \frac{\partial f}{\partial y}, \qquad
        \dot g = -a^\top \frac{\partial f}{\partial \theta}, \qquad g(t_1) = 0,

    from :math:`t_1` to :math:`t_0` with the same method and options, and returns
    :math:`\partial L / \partial y(t_0) = a(t_0)` and :math:`\partial L / \partial \theta = g(t_0)`.
    Memory does not grow with the number of steps; the gradients match backpropagation through
    the solver up to the solver's error. Only first derivatives are supported.

    Reference: Chen, Rubanova, Bettencourt & Duvenaud, "Neural Ordinary Differential Equations",
    NeurIPS 2018 (the adjoint method for ODE solvers).

    Args:
        f: the dynamics; it may read any tensor of ``params`` (closed over), and no other tensor
            that needs a gradient.
        y0: the initial state, a tuple of tensors.
        t0: initial time.
        t1: final time.
        params: the tensors ``f`` reads that need gradients (module parameters, a context
            embedding); each must be the very tensor object ``f`` uses.
        method: ``"dopri5"`` or ``"rk4"``; other options as for :func:`odeint`.
        rtol: relative tolerance (``dopri5``).
        atol: absolute tolerance (``dopri5``).
        steps: number of steps (``rk4``).
        first_step: first step size (``dopri5``).
        max_steps: step limit (``dopri5``).

    Example:
        >>> w = torch.tensor(-1.0, dtype=torch.float64, requires_grad=True)
        >>> y0 = (torch.ones(1, dtype=torch.float64),)
        >>> (y1,) = odeint_adjoint(lambda t, y: (w * y[0],), y0, 0.0, 1.0, [w], rtol=1e-10, atol=1e-12)
        >>> y1.sum().backward()  # d/dw exp(w) = exp(w)
        >>> abs(float(w.grad) - math.exp(-1.0)) < 1e-8
        True
    """
    y0 = _check_state("odeint_adjoint", y0)
    if method not in METHODS:
        raise ValueError(f"odeint_adjoint: unknown method {method!r}; use one of {METHODS}")
    params = tuple(params)
    for p in params:
        if not isinstance(p, Tensor):
            raise TypeError("odeint_adjoint: params must be tensors")
    options: dict[str, Any] = dict(
        method=method, rtol=rtol, atol=atol, steps=steps, first_step=first_step, max_steps=max_steps
    )
    out: State = _Adjoint.apply(f, float(t0), float(t1), options, len(y0), *y0, *params)
    return tuple(out)
