r"""Continuous normalizing flow (FFJORD): an ODE whose flow map is the bijection."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from flowtorch.core.bijector import Bijector, Conditioner, Costs, Params
from flowtorch.core.lazy import Plan
from flowtorch.core.shapes import broadcast_shapes
from flowtorch.core.validation import integer_at_least, nonscalar_event
from flowtorch.nn.ode import ACTIVATIONS, ODEMLP
from flowtorch.ops.ode import METHODS, State, odeint, odeint_adjoint
from flowtorch.parameters import Tensor

__all__ = ["FFJORD"]

TRACES = ("exact", "hutchinson")


class FFJORD(Bijector):
    r"""Continuous normalizing flow: the time-:math:`T` map of :math:`\dot z = f(z, t, e(c))`.

    ``forward`` integrates from :math:`z(0) = x` to :math:`y = z(T)`, ``inverse`` from :math:`T`
    back to :math:`0`, and the log-det follows the instantaneous change of variables,

    .. math::

        \log\left|\det \frac{\partial y}{\partial x}\right|
            = \int_0^T \operatorname{tr}\frac{\partial f}{\partial z}(z(t), t)\,dt,

    integrated together with :math:`z` as one ODE state. The trace is exact (``trace="exact"``,
    :math:`D` Jacobian-vector products in one forward-mode pass of :class:`ODEMLP`) or
    Hutchinson's unbiased estimate :math:`\epsilon^\top (\partial f / \partial z)\,\epsilon` with
    one Rademacher :math:`\epsilon` per sample held fixed along the trajectory
    (``trace="hutchinson"``, for large :math:`D`; the log-det is then random, its mean exact).
    The inverse is exact up to the solver's tolerance; ``Flow.log_prob`` costs one backward
    solve. A context :math:`c` enters through an embedding :math:`e(c)` from the conditioner
    (by default an affine map, ``flowtorch.parameters.Tensor()``), fed to :math:`f` with
    :math:`z` and :math:`t`.

    Solvers (:mod:`flowtorch.ops.ode`): adaptive Dormand-Prince (``solver="dopri5"``, ``rtol``,
    ``atol``) or fixed-step RK4 (``solver="rk4"``, ``steps``). Gradients by backpropagation
    through the solver, or with ``adjoint=True`` by the adjoint method (memory independent of
    the number of steps, gradients equal up to the solver's tolerance, first order only).

    Reference: Grathwohl, Chen, Bettencourt, Sutskever, Duvenaud, "FFJORD: Free-form Continuous
    Dynamics for Scalable Reversible Generative Models", ICLR 2019; Chen, Rubanova, Bettencourt,
    Duvenaud, "Neural Ordinary Differential Equations", NeurIPS 2018.

    Args:
        params_fn: conditioner plan for the context embedding; default ``Tensor()`` when a
            ``context_shape`` is given, none otherwise.
        hidden_dims: hidden layer sizes of :math:`f`.
        activation: ``"tanh"`` or ``"softplus"``.
        time: the integration time :math:`T`.
        solver: ``"dopri5"`` or ``"rk4"``.
        rtol: relative tolerance (``dopri5``).
        atol: absolute tolerance (``dopri5``).
        steps: number of steps (``rk4``).
        trace: ``"exact"`` or ``"hutchinson"``.
        adjoint: gradients by the adjoint method.
        context_features: size of the context embedding :math:`e(c)`.

    Example:
        >>> import torch
        >>> from flowtorch.bijectors.ffjord import FFJORD
        >>> b = FFJORD(hidden_dims=(16,), rtol=1e-7, atol=1e-7)(shape=torch.Size([2]))
        >>> x = torch.randn(4, 2)
        >>> y, ladj = b.forward_and_ladj(x)
        >>> torch.allclose(b.inverse(y), x, atol=1e-5)
        True
    """

    costs = Costs(
        "numerical (backward ODE solve)",
        "an ODE solve (N evaluations of f)",
        "an ODE solve (N evaluations of f)",
        "integrated with the solve: D JVPs per evaluation (exact) or 1 (Hutchinson)",
        reference="Grathwohl et al. 2019; Chen et al. 2018",
    )

    def __init__(
        self,
        params_fn: Conditioner | None = None,
        *,
        shape: torch.Size | tuple[int, ...],
        context_shape: torch.Size | tuple[int, ...] | None = None,
        hidden_dims: Sequence[int] = (64, 64),
        activation: str = "tanh",
        time: float = 1.0,
        solver: str = "dopri5",
        rtol: float = 1e-5,
        atol: float = 1e-5,
        steps: int = 8,
        trace: str = "exact",
        adjoint: bool = False,
        context_features: int = 8,
    ) -> None:
        nonscalar_event("FFJORD", shape)
        hidden = tuple(hidden_dims)
        if not hidden or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden):
            raise ValueError(f"FFJORD: hidden_dims must be positive integers, got {hidden_dims!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"FFJORD: activation must be one of {ACTIVATIONS}, got {activation!r}")
        if not time > 0:
            raise ValueError(f"FFJORD: time must be positive, got {time}")
        if solver not in METHODS:
            raise ValueError(f"FFJORD: solver must be one of {METHODS}, got {solver!r}")
        if not (rtol > 0 and atol > 0):
            raise ValueError(f"FFJORD: rtol and atol must be positive, got {rtol}, {atol}")
        integer_at_least(steps, "FFJORD: steps")
        if trace not in TRACES:
            raise ValueError(f"FFJORD: trace must be one of {TRACES}, got {trace!r}")
        integer_at_least(context_features, "FFJORD: context_features")
        self.hidden_dims = hidden
        self.time = float(time)
        self.solver = solver
        self.rtol, self.atol, self.steps = float(rtol), float(atol), steps
        self.trace = trace
        self.adjoint = bool(adjoint)
        self.context_features = context_features
        if params_fn is None and context_shape is not None:
            params_fn = Plan(Tensor)
        super().__init__(params_fn, shape=shape, context_shape=context_shape)
        self.dim = int(self.shape.numel())
        self.dynamics = ODEMLP(
            self.dim, hidden, context_features if self.params_fn is not None else 0, activation
        )

    def param_shapes(self) -> tuple[torch.Size, ...]:
        return (torch.Size([self.context_features]),)

    def _raw_event_dim(self) -> int:
        return len(self.shape)

    # ------------------------------------------------------------------ integration
    def _integrate(
        self, value: torch.Tensor, params: Params, t0: float, t1: float, with_ladj: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        n = len(self.shape)
        z = value.reshape(*value.shape[: value.dim() - n], self.dim)
        e = None if params is None else params[0]
        batch = z.shape[:-1] if e is None else broadcast_shapes(z.shape[:-1], e.shape[:-1])
        z = z.expand(*batch, self.dim)
        if e is not None:
            e = e.expand(*batch, e.shape[-1])
        t_shape = (*batch, 1)
        net = self.dynamics
        if with_ladj:
            if self.trace == "exact":
                tangents = torch.eye(self.dim, dtype=z.dtype, device=z.device)
            else:
                tangents = (torch.randint(0, 2, z.shape, device=z.device).to(z.dtype) * 2 - 1)[..., None]

            def f(t: float, state: State) -> State:
                out, jv = net.jvp(state[0], z.new_full(t_shape, t), e, tangents)
                return out, (tangents * jv).sum((-2, -1))

            y0: State = (z, z.new_zeros(batch))
        else:

            def f(t: float, state: State) -> State:
                return (net(state[0], z.new_full(t_shape, t), e),)

            y0 = (z,)
        options: dict[str, Any] = dict(method=self.solver, rtol=self.rtol, atol=self.atol, steps=self.steps)
        if self.adjoint:
            params_ = (*net.parameters(), *(() if e is None else (e,)))
            out = odeint_adjoint(f, y0, t0, t1, [p for p in params_ if p.requires_grad], **options)
        else:
            out = odeint(f, y0, t0, t1, **options)
        result = out[0].reshape(*batch, *self.shape)
        return result, (out[1] if with_ladj else None)

    def _forward(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        return self._integrate(x, params, 0.0, self.time, False)[0]

    def _inverse(self, y: torch.Tensor, params: Params) -> torch.Tensor:
        return self._integrate(y, params, self.time, 0.0, False)[0]

    def _forward_and_ladj(self, x: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        y, ladj = self._integrate(x, params, 0.0, self.time, True)
        assert ladj is not None
        return y, ladj

    def _inverse_and_ladj(self, y: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        x, ladj = self._integrate(y, params, self.time, 0.0, True)
        assert ladj is not None
        return x, -ladj  # the integral from T to 0 is minus the forward log-det

    def _log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor, params: Params) -> torch.Tensor:
        return self._forward_and_ladj(x, params)[1]

    def extra_repr(self) -> str:
        s = f"{super().extra_repr()}, time={self.time}, solver={self.solver!r}, trace={self.trace!r}"
        return s + (", adjoint=True" if self.adjoint else "")
