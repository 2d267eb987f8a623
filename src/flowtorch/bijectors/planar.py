"""Planar flows (Rezende & Mohamed 2015): a one-unit residual map on a vector event.

The inverse is no textbook formula, but it reduces to one scalar equation per event,
:math:`a + p \tanh a = s` with :math:`p > -1`, a strictly increasing function of :math:`a` that
:func:`solve_shifted_tanh` solves by Newton's method safeguarded by bisection inside a bracket
that always holds the root. So ``inverse`` works outside ``BijectiveMode`` too, to float
precision; inside the mode, a flow's own samples are scored from the cache without it.
Radial flows, from the same paper, are in :mod:`flowtorch.bijectors.radial`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.distributions import constraints

from flowtorch.core.bijector import Bijector, Conditioner, Costs, Later, Params
from flowtorch.core.lazy import Plan
from flowtorch.core.validation import vector_event
from flowtorch.ops.numerical import newton_monotone
from flowtorch.parameters import Tensor

__all__ = ["Planar", "solve_shifted_tanh"]


def solve_shifted_tanh(
    t: torch.Tensor, p: torch.Tensor, q: torch.Tensor, c: torch.Tensor, max_iter: int = 200
) -> torch.Tensor:
    r"""Solves :math:`z + p \tanh(q z + c) = t` elementwise (broadcasting), without gradients.

    For :math:`p q \ge -1` the left side is non-decreasing in :math:`z` (its derivative is
    :math:`1 + p q \,\mathrm{sech}^2(q z + c) \ge 0`), and since :math:`|\tanh| \le 1` the root
    lies in :math:`[t - |p|, t + |p|]`. Newton steps are taken while they stay inside the
    shrinking bracket and are at most half the step before last, bisection steps otherwise (the
    safeguard of Numerical Recipes' ``rtsafe``, :func:`flowtorch.ops.numerical.newton_monotone`),
    so the iteration always converges (at worst like bisection); each element stops when its
    step is below a few ulps, all of them after ``max_iter`` steps at most.

    Reference: Press, Teukolsky, Vetterling & Flannery, "Numerical Recipes: The Art of Scientific
    Computing", 3rd ed., 2007, section 9.4 (``rtsafe``: Newton's method safeguarded by bisection).

    Args:
        t: the right-hand side :math:`t`.
        p: the amplitude :math:`p`; :math:`|p|` is the half-width of the initial bracket.
        q: the slope :math:`q` inside the tanh, with :math:`p q \ge -1`.
        c: the shift :math:`c` inside the tanh.
        max_iter: the most iterations.

    Shapes: all arguments broadcast; the result has their broadcast shape.

    Example:
        >>> import torch
        >>> from flowtorch.bijectors.planar import solve_shifted_tanh
        >>> t = torch.tensor([0.5, -2.0], dtype=torch.float64)
        >>> p, q, c = torch.tensor(-0.9, dtype=torch.float64), torch.tensor(1.0), torch.tensor(0.0)
        >>> z = solve_shifted_tanh(t, p, q, c)
        >>> torch.allclose(z + p * torch.tanh(q * z + c), t)
        True
    """
    with torch.no_grad():
        t, p, q, c = torch.broadcast_tensors(t, p, q, c)
        pq = p * q

        def residual_and_slope(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            th = torch.tanh(q * z + c)
            return z + p * th, 1.0 + pq * (1.0 - th * th)

        if max_iter == 0:
            return t.clone()  # the centre of the bracket
        # the root lies in [t - |p|, t + |p|] (an upper end one ulp up where p vanishes)
        lower = t - p.abs()
        upper = torch.maximum(t + p.abs(), torch.nextafter(lower, torch.full_like(lower, math.inf)))
        tol = 4.0 * torch.finfo(t.dtype).eps
        z = newton_monotone(
            residual_and_slope, t, lower, upper, initial=t, atol=tol, rtol=tol, max_iter=max_iter
        )
        # where tanh saturates, rounding can move the bracket's end past the root: the root is in it
        return torch.minimum(torch.maximum(z, lower), upper)


class Planar(Bijector):
    r"""Planar flow: :math:`y = x + \hat u \tanh(w^\top x + b)` on a vector event.

    .. math::
        \hat u = u + \big(m(w^\top u) - w^\top u\big)\frac{w}{\|w\|^2}, \qquad
        m(s) = -1 + \mathrm{softplus}(s), \qquad
        \log|\det J| = \log\big|1 + \hat u^\top w\, \tanh'(w^\top x + b)\big|.

    The reparametrisation gives :math:`w^\top \hat u = m(w^\top u) > -1`, which makes the map
    invertible. The inverse solves the scalar equation :math:`a + (w^\top \hat u)\tanh a =
    w^\top y + b` for :math:`a = w^\top x + b` (see :func:`solve_shifted_tanh`), then
    :math:`x = y - \hat u \tanh a`; its gradients follow from the implicit function theorem
    (two differentiable Newton steps from the converged root: first and second derivatives).

    The conditioner emits :math:`(u, w, b)` with shapes ``(D,), (D,), (1,)``. The default
    ``flowtorch.parameters.Tensor()`` gives free parameters, or, with a context, parameters
    that are an affine function of it: the amortised setting of the paper's variational
    inference experiments.

    Reference: Rezende & Mohamed, "Variational Inference with Normalizing Flows", 2015.

    Shapes: ``x`` is ``sample + batch + (D,)``; each parameter is ``param_batch + param_shape``
    and ``param_batch`` broadcasts against ``sample + batch``.

    Example:
        >>> import torch
        >>> from flowtorch.bijectors.planar import Planar
        >>> b = Planar()(shape=torch.Size([3]))
        >>> x = torch.randn(4, 3)
        >>> y, ladj = b.forward_and_ladj(x)
        >>> torch.allclose(b.inverse(y), x, atol=1e-5), ladj.shape
        (True, torch.Size([4]))
    """

    costs = Costs(
        "numerical (1 scalar Newton solve per sample)",
        "O(D)",
        "O(D) + a scalar solve",
        "O(D)",
        reference="Rezende & Mohamed 2015",
    )

    domain = constraints.real_vector
    codomain = constraints.real_vector

    def __init__(
        self,
        params_fn: Conditioner | None = None,
        *,
        shape: torch.Size | tuple[int, ...],
        context_shape: torch.Size | tuple[int, ...] | None = None,
    ) -> None:
        vector_event(type(self).__name__, shape)
        super().__init__(
            Plan(Tensor) if params_fn is None else params_fn, shape=shape, context_shape=context_shape
        )

    def param_shapes(self) -> tuple[torch.Size, ...]:
        d = self.shape[0]
        return (torch.Size([d]), torch.Size([d]), torch.Size([1]))

    def _parts(self, params: Params) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(u_hat, w, b, p)`` with ``p = w^T u_hat`` (computed as ``m(w^T u)``); ``b`` and ``p``
        keep a trailing dim of size 1."""
        u, w, b = params
        wu = (w * u).sum(-1, keepdim=True)
        p = F.softplus(wu) - 1.0
        w_sq = w.square().sum(-1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)
        u_hat = u + ((p - wu) / w_sq) * w
        return u_hat, w, b, p

    @staticmethod
    def _ladj(p: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        th = torch.tanh(a)
        return torch.log1p(p * (1.0 - th * th)).squeeze(-1)

    # the forward maths is written once, in _forward_deferred: the base class derives the
    # fused and the value-only methods from it
    def _log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor, params: Params) -> torch.Tensor:
        _, w, b, p = self._parts(params)
        return self._ladj(p, (x * w).sum(-1, keepdim=True) + b)

    def _forward_deferred(self, x: torch.Tensor, params: Params) -> tuple[torch.Tensor, Later]:
        u_hat, w, b, p = self._parts(params)
        a = (x * w).sum(-1, keepdim=True) + b
        return x + u_hat * torch.tanh(a), lambda: self._ladj(p, a)

    def _solve(self, y: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x, a, p)``: the inverse and the pre-activation ``a = w^T x + b`` at it."""
        u_hat, w, b, p = self._parts(params)
        s = (y * w).sum(-1, keepdim=True) + b
        one = torch.ones((), dtype=s.dtype, device=s.device)
        a = solve_shifted_tanh(s.detach(), p.detach(), one, torch.zeros_like(one))
        # Two differentiable Newton steps from the root: the same value, with the implicit
        # function's derivatives. The first step has its first derivatives; the second, taken
        # from a point whose value and first derivatives are right, also its second ones (the
        # Newton map's derivative vanishes at the root), as gradient penalties need.
        for _ in range(2):
            th = torch.tanh(a)
            a = a - (a + p * th - s) / (1.0 + p * (1.0 - th * th))
        return y - u_hat * torch.tanh(a), a, p

    def _inverse_deferred(self, y: torch.Tensor, params: Params) -> tuple[torch.Tensor, Later]:
        x, a, p = self._solve(y, params)
        return x, lambda: self._ladj(p, a)
