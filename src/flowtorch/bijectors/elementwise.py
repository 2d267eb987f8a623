"""Fixed elementwise bijectors (no learnable parameters).

Each writes its maths once: ``_forward_and_ladj`` and ``_inverse_and_ladj``, each returning the
*forward* log|det J| computed from the call's own input (so that ``BijectiveMode`` may store it
safely); the base class derives the rest.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.distributions import constraints

from flowtorch.core.bijector import Bijector, Conditioner, Costs, Params

__all__ = ["ELU", "Exp", "LeakyReLU", "Power", "Sigmoid", "Softplus", "Tanh"]


class Exp(Bijector):
    r""":math:`y = e^x`, :math:`\log|dy/dx| = x`; the inverse is :math:`x = \log y`.

    Shapes: ``x`` is ``sample + batch + shape`` (elementwise, any event shape); log|det J| is
    ``sample + batch``.

    Reference: ``torch.distributions.transforms.ExpTransform`` (PyTorch documentation), the same
    map; a standard normal pushed through it is the log-normal distribution.

    Example:
        >>> import torch
        >>> import flowtorch.bijectors as bij
        >>> bij.Exp()(shape=torch.Size([1])).forward(torch.zeros(1))
        tensor([1.])
    """

    costs = Costs("analytic", "O(D) elementwise", "O(D) elementwise", "O(D)")

    sign = 1

    codomain = constraints.positive

    def _forward_and_ladj(self, x: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        return x.exp(), x

    def _inverse_and_ladj(self, y: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        return y.log(), y.log()


class Sigmoid(Bijector):
    r""":math:`y = 1 / (1 + e^{-x})`, :math:`\log|dy/dx| = -\mathrm{softplus}(-x) - \mathrm{softplus}(x)`.

    The inverse clamps :math:`y` into the open unit interval before taking the logit.

    References: ``torch.distributions.transforms.SigmoidTransform`` (PyTorch documentation);
    Dinh et al., "Density estimation using Real NVP", 2017, which models images in logit space,
    through the inverse of this map.

    Example:
        >>> import torch
        >>> import flowtorch.bijectors as bij
        >>> b = bij.Sigmoid()(shape=torch.Size([2]))
        >>> y, ladj = b.forward_and_ladj(torch.zeros(2))
        >>> y, round(ladj.item(), 4)  # 2 log(1/4)
        (tensor([0.5000, 0.5000]), -2.7726)
    """

    costs = Costs("analytic", "O(D) elementwise", "O(D) elementwise", "O(D)")

    sign = 1

    codomain = constraints.unit_interval

    def _forward_and_ladj(self, x: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.sigmoid(x), -F.softplus(-x) - F.softplus(x)

    def _inverse_and_ladj(self, y: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        eps = torch.finfo(y.dtype).eps
        y = y.clamp(eps, 1 - eps)
        return torch.logit(y), torch.log(y) + torch.log1p(-y)


class Softplus(Bijector):
    r""":math:`y = \log(1 + e^x)`, :math:`\log|dy/dx| = -\mathrm{softplus}(-x)`.

    The inverse is :math:`x = y + \log(1 - e^{-y})` on :math:`y > 0`.

    Reference: Dugas et al., "Incorporating Second-Order Functional Knowledge for Better Option
    Pricing", 2001 (the softplus function).

    Example:
        >>> import torch
        >>> import flowtorch.bijectors as bij
        >>> b = bij.Softplus()(shape=torch.Size([3]))
        >>> x = torch.tensor([-2.0, 0.0, 2.0])
        >>> torch.allclose(b.inverse(b.forward(x)), x, atol=1e-6)
        True
    """

    costs = Costs("analytic", "O(D) elementwise", "O(D) elementwise", "O(D)")

    sign = 1

    codomain = constraints.positive

    def _forward_and_ladj(self, x: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        return F.softplus(x), -F.softplus(-x)

    def _inverse_and_ladj(self, y: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        log_term = torch.log(-torch.expm1(-y))  # log(1 - e^{-y}) = log sigmoid(x)
        return y + log_term, log_term


class Tanh(Bijector):
    r""":math:`y = \tanh x`, :math:`\log|dy/dx| = 2(\log 2 - x - \mathrm{softplus}(-2x))`.

    The inverse clamps :math:`y` into :math:`(-1, 1)` before taking :math:`\operatorname{atanh}`.

    Reference: Haarnoja et al., "Soft Actor-Critic: Off-Policy Maximum Entropy Deep Reinforcement
    Learning with a Stochastic Actor", 2018 (appendix C: a Gaussian squashed by tanh and the
    change of variables of its log-density).

    Example:
        >>> import torch
        >>> import flowtorch.bijectors as bij
        >>> b = bij.Tanh()(shape=torch.Size([1]))
        >>> y, ladj = b.forward_and_ladj(torch.zeros(1))
        >>> y, ladj
        (tensor([0.]), tensor(0.))
    """

    costs = Costs("analytic", "O(D) elementwise", "O(D) elementwise", "O(D)")

    sign = 1

    codomain = constraints.interval(-1.0, 1.0)

    def _forward_and_ladj(self, x: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tanh(x), 2.0 * (math.log(2.0) - x - F.softplus(-2.0 * x))

    def _inverse_and_ladj(self, y: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        eps = torch.finfo(y.dtype).eps
        y = y.clamp(-1 + eps, 1 - eps)
        return torch.atanh(y), torch.log1p(-y * y)


class ELU(Bijector):
    r""":math:`y = x` for :math:`x > 0`, :math:`e^x - 1` otherwise; :math:`\log|dy/dx| = \min(x, 0)`.

    Maps the real line onto :math:`(-1, \infty)`; the inverse is :math:`\log(1 + y)` for
    :math:`y \le 0`. Reference: Clevert et al., "Fast and Accurate Deep Network Learning by
    Exponential Linear Units (ELUs)", 2016.

    Example:
        >>> import torch
        >>> import flowtorch.bijectors as bij
        >>> bij.ELU()(shape=torch.Size([2])).forward(torch.tensor([1.0, 0.0]))
        tensor([1., 0.])
    """

    costs = Costs("analytic", "O(D) elementwise", "O(D) elementwise", "O(D)")

    sign = 1

    codomain = constraints.greater_than(-1.0)

    def _forward_and_ladj(self, x: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        return F.elu(x), x.clamp(max=0)

    def _inverse_and_ladj(self, y: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        neg = torch.log1p(y.clamp(max=0))
        return torch.where(y > 0, y, neg), neg


class LeakyReLU(Bijector):
    r""":math:`y = x` for :math:`x \ge 0`, :math:`a x` otherwise (``negative_slope`` :math:`a > 0`).

    :math:`\log|dy/dx| = \log a` for :math:`x < 0` and 0 otherwise; the inverse is the same map
    with slope :math:`1/a`.

    Reference: Maas, Hannun & Ng, "Rectifier Nonlinearities Improve Neural Network Acoustic
    Models", 2013 (the leaky rectifier).

    Args:
        negative_slope: :math:`a`, the slope for negative inputs; must be positive.

    Example:
        >>> import torch
        >>> import flowtorch.bijectors as bij
        >>> bij.LeakyReLU(negative_slope=0.5)(shape=torch.Size([2])).forward(torch.tensor([-2.0, 2.0]))
        tensor([-1.,  2.])
    """

    costs = Costs("analytic", "O(D) elementwise", "O(D) elementwise", "O(D)")

    sign = 1

    def __init__(
        self,
        params_fn: Conditioner | None = None,
        *,
        shape: torch.Size | tuple[int, ...],
        context_shape: torch.Size | tuple[int, ...] | None = None,
        negative_slope: float = 0.01,
    ) -> None:
        if negative_slope <= 0:
            raise ValueError(f"LeakyReLU: negative_slope must be positive, got {negative_slope}")
        self.negative_slope = float(negative_slope)
        self._log_slope = math.log(self.negative_slope)
        super().__init__(params_fn, shape=shape, context_shape=context_shape)

    def _forward_and_ladj(self, x: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        return F.leaky_relu(x, self.negative_slope), (x < 0).to(x.dtype) * self._log_slope

    def _inverse_and_ladj(self, y: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        return F.leaky_relu(y, 1.0 / self.negative_slope), (y < 0).to(y.dtype) * self._log_slope


class Power(Bijector):
    r""":math:`y = x^p` on the positive reals (:math:`p \ne 0`).

    :math:`\log|dy/dx| = \log|p| + (p-1)\log x`; the inverse is :math:`x = y^{1/p}`.

    Reference: ``torch.distributions.transforms.PowerTransform`` (PyTorch documentation), the
    same map.

    Args:
        exponent: :math:`p`; must be non-zero.

    Example:
        >>> import torch
        >>> import flowtorch.bijectors as bij
        >>> bij.Power(exponent=3.0)(shape=torch.Size([2])).forward(torch.tensor([1.0, 2.0]))
        tensor([1., 8.])
    """

    costs = Costs("analytic", "O(D) elementwise", "O(D) elementwise", "O(D)")

    domain = constraints.positive
    codomain = constraints.positive

    def __init__(
        self,
        params_fn: Conditioner | None = None,
        *,
        shape: torch.Size | tuple[int, ...],
        context_shape: torch.Size | tuple[int, ...] | None = None,
        exponent: float = 2.0,
    ) -> None:
        if exponent == 0:
            raise ValueError("Power: exponent must be non-zero")
        self.exponent = float(exponent)
        self.sign = 1 if self.exponent > 0 else -1
        self._log_abs_exponent = math.log(abs(self.exponent))
        super().__init__(params_fn, shape=shape, context_shape=context_shape)

    def _forward_and_ladj(self, x: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        return x.pow(self.exponent), self._log_abs_exponent + (self.exponent - 1.0) * x.log()

    def _inverse_and_ladj(self, y: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.exponent
        return y.pow(1.0 / p), self._log_abs_exponent + (p - 1.0) / p * y.log()
