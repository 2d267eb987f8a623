"""Planar and radial flows (Rezende & Mohamed 2015): one-unit residual maps on a vector event.

Neither inverse is a textbook formula, but both reduce to one scalar equation per event: the
radial one is a quadratic (solved in closed form), the planar one is
:math:`a + p \\tanh a = s` with :math:`p > -1`, a strictly increasing function of :math:`a` that
:func:`solve_shifted_tanh` solves by Newton's method safeguarded by bisection inside a bracket
that always holds the root. So ``inverse`` works outside ``BijectiveMode`` too, to float
precision; inside the mode, a flow's own samples are scored from the cache without it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.distributions import constraints

from flowtorch.core.bijector import Bijector, Params
from flowtorch.core.lazy import Plan
from flowtorch.parameters import Tensor

__all__ = ["Planar", "Radial", "solve_shifted_tanh"]


def solve_shifted_tanh(
    t: torch.Tensor, p: torch.Tensor, q: torch.Tensor, c: torch.Tensor, max_iter: int = 200
) -> torch.Tensor:
    r"""Solves :math:`z + p \tanh(q z + c) = t` elementwise (broadcasting), without gradients.

    For :math:`p q \ge -1` the left side is non-decreasing in :math:`z` (its derivative is
    :math:`1 + p q \,\mathrm{sech}^2(q z + c) \ge 0`), and since :math:`|\tanh| \le 1` the root
    lies in :math:`[t - |p|, t + |p|]`. Newton steps are taken while they stay inside the
    shrinking bracket and are at most half the step before last, bisection steps otherwise (the
    safeguard of Numerical Recipes' ``rtsafe``), so the iteration always converges (at worst
    like bisection); each element stops when its step is below a few ulps, all of them after
    ``max_iter`` steps at most.

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
        width = p.abs()
        lo, hi = t - width, t + width
        z = t.clone()
        last_step = older_step = 2.0 * width
        pq = p * q
        tol = 4.0 * torch.finfo(t.dtype).eps
        done = torch.zeros_like(t, dtype=torch.bool)
        for _ in range(max_iter):
            th = torch.tanh(q * z + c)
            f = z + p * th - t
            above = f > 0
            hi = torch.where(above, z, hi)
            lo = torch.where(above, lo, z)
            newton = z - f / (1.0 + pq * (1.0 - th * th))
            # Newton's step if it stays in the bracket and is at most half the step before last
            # (which rules out cycles between the bracket's ends); else bisection
            step = (newton - z).abs()
            use_newton = (newton >= lo) & (newton <= hi) & (step <= 0.5 * older_step)
            z_next = torch.where(done, z, torch.where(use_newton, newton, 0.5 * (lo + hi)))
            older_step, last_step = last_step, (z_next - z).abs()
            z = z_next
            done = done | (last_step <= tol * (1.0 + z.abs()))
            if bool(done.all()):
                break
        return z


def _vector_event(name: str, shape: torch.Size | tuple[int, ...]) -> None:
    if len(torch.Size(shape)) != 1:
        raise ValueError(f"{name} acts on a vector event (shape (D,)), got shape {tuple(shape)}")


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

    domain = constraints.real_vector
    codomain = constraints.real_vector

    def __init__(
        self,
        params_fn: Any = None,
        *,
        shape: torch.Size | tuple[int, ...],
        context_shape: torch.Size | tuple[int, ...] | None = None,
    ) -> None:
        _vector_event(type(self).__name__, shape)
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

    def _forward(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        u_hat, w, b, _ = self._parts(params)
        return x + u_hat * torch.tanh((x * w).sum(-1, keepdim=True) + b)

    def _log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor, params: Params) -> torch.Tensor:
        _, w, b, p = self._parts(params)
        return self._ladj(p, (x * w).sum(-1, keepdim=True) + b)

    def _forward_and_ladj(self, x: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        u_hat, w, b, p = self._parts(params)
        a = (x * w).sum(-1, keepdim=True) + b
        return x + u_hat * torch.tanh(a), self._ladj(p, a)

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

    def _inverse(self, y: torch.Tensor, params: Params) -> torch.Tensor:
        return self._solve(y, params)[0]

    def _inverse_and_ladj(self, y: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        x, a, p = self._solve(y, params)
        return x, self._ladj(p, a)


class Radial(Bijector):
    r"""Radial flow: :math:`y = x + \beta h(\alpha, r)(x - x_0)` on a vector event.

    .. math::
        r = \|x - x_0\|, \quad h(\alpha, r) = \frac{1}{\alpha + r}, \quad
        \log|\det J| = (D - 1)\log(1 + \beta h) + \log(1 + \beta h + \beta h'(\alpha, r)\, r)
                     = (D - 1)\log(1 + \beta h) + \log(1 + \alpha\beta h^2),

    with :math:`\alpha = \mathrm{softplus}(\alpha')` and :math:`\beta = -\alpha +
    \mathrm{softplus}(\beta') > -\alpha`, which makes the map invertible. The inverse is exact:
    :math:`\|y - x_0\| = r (1 + \beta h)` is a quadratic in :math:`r`, and then
    :math:`x = x_0 + (y - x_0) / (1 + \beta h)`.

    The conditioner emits :math:`(x_0, \alpha', \beta')` with shapes ``(D,), (1,), (1,)``; the
    default ``flowtorch.parameters.Tensor()`` makes them free, or affine in a context.

    Reference: Rezende & Mohamed, "Variational Inference with Normalizing Flows", 2015.

    Example:
        >>> import torch
        >>> from flowtorch.bijectors.planar import Radial
        >>> b = Radial()(shape=torch.Size([3]))
        >>> x = torch.randn(4, 3)
        >>> torch.allclose(b.inverse(b.forward(x)), x, atol=1e-5)
        True
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector

    def __init__(
        self,
        params_fn: Any = None,
        *,
        shape: torch.Size | tuple[int, ...],
        context_shape: torch.Size | tuple[int, ...] | None = None,
    ) -> None:
        _vector_event(type(self).__name__, shape)
        super().__init__(
            Plan(Tensor) if params_fn is None else params_fn, shape=shape, context_shape=context_shape
        )

    def param_shapes(self) -> tuple[torch.Size, ...]:
        return (torch.Size([self.shape[0]]), torch.Size([1]), torch.Size([1]))

    @staticmethod
    def _parts(params: Params) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x0, alpha, beta)``; ``alpha`` and ``beta`` without their trailing dim of size 1."""
        x0, alpha_raw, beta_raw = params
        alpha = F.softplus(alpha_raw.squeeze(-1))
        return x0, alpha, F.softplus(beta_raw.squeeze(-1)) - alpha

    def _ladj(self, alpha: torch.Tensor, beta: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        h = 1.0 / (alpha + r)
        return (self.shape[0] - 1) * torch.log1p(beta * h) + torch.log1p(alpha * beta * h * h)

    def _forward_and_ladj(self, x: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        x0, alpha, beta = self._parts(params)
        diff = x - x0
        r = torch.linalg.vector_norm(diff, dim=-1)
        y = x + (beta / (alpha + r)).unsqueeze(-1) * diff
        return y, self._ladj(alpha, beta, r)

    def _forward(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        x0, alpha, beta = self._parts(params)
        diff = x - x0
        r = torch.linalg.vector_norm(diff, dim=-1)
        y: torch.Tensor = x + (beta / (alpha + r)).unsqueeze(-1) * diff
        return y

    def _log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor, params: Params) -> torch.Tensor:
        x0, alpha, beta = self._parts(params)
        return self._ladj(alpha, beta, torch.linalg.vector_norm(x - x0, dim=-1))

    def _inverse_and_ladj(self, y: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        x0, alpha, beta = self._parts(params)
        diff = y - x0
        r_y = torch.linalg.vector_norm(diff, dim=-1)
        # r^2 + B r - alpha r_y = 0 with B = alpha + beta - r_y; the positive root, written
        # without cancellation for either sign of B
        big_b = alpha + beta - r_y
        root = torch.sqrt(big_b * big_b + 4.0 * alpha * r_y)
        r = torch.where(
            big_b >= 0,
            2.0 * alpha * r_y / (big_b + root).clamp_min(torch.finfo(y.dtype).tiny),
            0.5 * (root - big_b),
        )
        scale = 1.0 + beta / (alpha + r)
        return x0 + diff / scale.unsqueeze(-1), self._ladj(alpha, beta, r)

    def _inverse(self, y: torch.Tensor, params: Params) -> torch.Tensor:
        return self._inverse_and_ladj(y, params)[0]
