"""Neal's funnel, a target density with a hard-to-sample neck."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch.distributions import Distribution, constraints

__all__ = ["NealsFunnel"]

# log(3) + log(2 pi): the normalising constants of both Gaussian factors
_LOG_NORM = math.log(3.0) + math.log(2.0 * math.pi)


class NealsFunnel(Distribution):
    r"""Neal's funnel in 2-D: :math:`v \sim \mathcal N(0, 3^2)`, :math:`x \mid v \sim \mathcal N(0, e^{v})`.

    Events are :math:`(x, v)` (flowtorch 0.8's order). Reference: Neal, "Slice sampling", 2003.

    .. math:: \log p(x, v) = \log \mathcal N(v; 0, 3^2) + \log \mathcal N(x; 0, e^{v}).

    Args:
        validate_args: as for ``torch.distributions``.

    Shapes: ``sample`` and ``rsample`` return ``sample_shape + (2,)``; ``log_prob(value)`` returns
    ``value``'s shape without its last dim.

    Example:
        >>> import torch
        >>> from flowtorch.distributions import NealsFunnel
        >>> d = NealsFunnel()
        >>> d.sample((4,)).shape
        torch.Size([4, 2])
    """

    support = constraints.real_vector
    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {}
    has_rsample = True

    def __init__(self, validate_args: bool | None = None) -> None:
        super().__init__(torch.Size(), torch.Size([2]), validate_args=validate_args)

    def rsample(
        self,
        sample_shape: torch.Size | list[int] | tuple[int, ...] = (),
    ) -> torch.Tensor:
        eps = torch.randn((*sample_shape, 2))
        v = 3.0 * eps[..., 1]
        x = torch.exp(v / 2.0) * eps[..., 0]
        return torch.stack([x, v], dim=-1)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        x, v = value[..., 0], value[..., 1]
        # in log-scale form, finite for any finite (x, v): Normal(0, exp(v / 2)) over- or
        # underflows its scale for |v| beyond a few hundred in float32
        log_p: torch.Tensor = -0.5 * (v / 3.0) ** 2 - 0.5 * x**2 * torch.exp(-v) - 0.5 * v - _LOG_NORM
        return log_p
