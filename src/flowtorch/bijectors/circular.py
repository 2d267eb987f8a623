"""Bijectors of angles: diffeomorphisms of the circle."""

from __future__ import annotations

import math

import torch
from torch.distributions import constraints

from flowtorch.core.bijector import Conditioner, Costs
from flowtorch.core.elementwise import ElementwiseBijector
from flowtorch.core.lazy import Plan
from flowtorch.parameters import Tensor
from flowtorch.transformers import CircularSplineTransformer

__all__ = ["CircularSpline"]


class CircularSpline(ElementwiseBijector):
    r"""Elementwise circular rational-quadratic spline on angles in ``[-bound, bound]``.

    The rational-quadratic spline of Durkan et al. (2019) with :math:`K` bins, no tails, and one
    shared derivative :math:`\delta_0 = \delta_K` at both ends, so the map fixes :math:`\pm B`
    and is a :math:`C^1` diffeomorphism of the circle :math:`[-B, B]/\{-B \sim B\}` (Rezende et al.
    2020). The conditioner emits unnormalised widths and heights (``count_bins`` each) and
    ``count_bins`` derivatives (the interior knots and the shared end); with a context it
    conditions, e.g. one angle on others.

    Reference: Rezende et al., "Normalizing Flows on Tori and Spheres", 2020.

    Args:
        params_fn: conditioner plan; default ``flowtorch.parameters.Tensor()``.
        count_bins: number of bins :math:`K`.
        bound: half the period :math:`B` (default :math:`\pi`).

    Example:
        >>> import torch
        >>> import flowtorch.bijectors as bij
        >>> b = bij.CircularSpline(count_bins=6)(shape=torch.Size([2]))
        >>> theta = torch.rand(4, 2) * 6.0 - 3.0
        >>> torch.allclose(b.inverse(b.forward(theta)), theta, atol=1e-5)
        True
    """

    costs = Costs(
        "analytic",
        "O(D log K) elementwise (K bins)",
        "O(D log K) elementwise",
        "O(D), with the pass",
        reference="Rezende et al. 2020; Durkan et al. 2019",
        maps="circle [-B, B] → circle",
    )

    transformer: CircularSplineTransformer

    def __init__(
        self,
        params_fn: Conditioner | None = None,
        *,
        shape: torch.Size | tuple[int, ...],
        context_shape: torch.Size | tuple[int, ...] | None = None,
        count_bins: int = 8,
        bound: float = math.pi,
    ) -> None:
        if isinstance(count_bins, bool) or int(count_bins) != count_bins or int(count_bins) < 2:
            raise ValueError(f"CircularSpline: count_bins must be an integer of at least 2, got {count_bins}")
        if not bound > 0:
            raise ValueError(f"CircularSpline: bound must be positive, got {bound}")
        self.transformer = CircularSplineTransformer(count_bins, bound)
        super().__init__(
            Plan(Tensor) if params_fn is None else params_fn, shape=shape, context_shape=context_shape
        )
        circle = constraints.interval(-float(bound), float(bound))
        self.domain = constraints.independent(circle, len(self.shape))
        self.codomain = constraints.independent(circle, len(self.shape))

    @property
    def count_bins(self) -> int:
        """:math:`K`, the number of bins."""
        return self.transformer.count_bins

    @property
    def bound(self) -> float:
        """Half the period."""
        return self.transformer.bound
