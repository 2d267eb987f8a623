"""Radial flows (Rezende & Mohamed 2015): contractions and expansions around a point, on a
vector event. The inverse reduces to a quadratic in the radius, solved in closed form."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.distributions import constraints

from flowtorch.core.bijector import Bijector, Conditioner, Costs, Later, Params
from flowtorch.core.lazy import Plan
from flowtorch.core.validation import vector_event
from flowtorch.parameters import Tensor

__all__ = ["Radial"]


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
        >>> from flowtorch.bijectors.radial import Radial
        >>> b = Radial()(shape=torch.Size([3]))
        >>> x = torch.randn(4, 3)
        >>> torch.allclose(b.inverse(b.forward(x)), x, atol=1e-5)
        True
    """

    costs = Costs("analytic (a quadratic)", "O(D)", "O(D)", "O(D)", reference="Rezende & Mohamed 2015")

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

    # the forward maths is written once, in _forward_deferred: the base class derives the
    # fused and the value-only methods from it
    def _log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor, params: Params) -> torch.Tensor:
        x0, alpha, beta = self._parts(params)
        return self._ladj(alpha, beta, torch.linalg.vector_norm(x - x0, dim=-1))

    def _forward_deferred(self, x: torch.Tensor, params: Params) -> tuple[torch.Tensor, Later]:
        x0, alpha, beta = self._parts(params)
        diff = x - x0
        r = torch.linalg.vector_norm(diff, dim=-1)
        return x + (beta / (alpha + r)).unsqueeze(-1) * diff, lambda: self._ladj(alpha, beta, r)

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
