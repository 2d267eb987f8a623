"""Monotonic spline bijectors: elementwise and autoregressive."""

from __future__ import annotations

import torch

from flowtorch.core.bijector import Conditioner, Costs
from flowtorch.core.elementwise import ElementwiseBijector
from flowtorch.core.lazy import Plan
from flowtorch.core.validation import nonscalar_event
from flowtorch.parameters import DenseAutoregressive, Tensor
from flowtorch.transformers import SplineTransformer

__all__ = ["Spline", "SplineAutoregressive"]


class Spline(ElementwiseBijector):
    r"""Elementwise monotonic spline on ``[-bound, bound]`` with identity (linear) tails outside.

    ``order="quadratic"`` is the rational-quadratic spline of Durkan et al. (2019): with
    :math:`K` bins, knots :math:`(x_k, y_k)`, derivatives :math:`\delta_k`,
    :math:`s_k = (y_{k+1}-y_k)/(x_{k+1}-x_k)` and :math:`\xi = (x - x_k)/(x_{k+1}-x_k)`,

    .. math::
        y = y_k + \frac{(y_{k+1}-y_k)\,[s_k \xi^2 + \delta_k \xi(1-\xi)]}
                      {s_k + [\delta_{k+1} + \delta_k - 2 s_k]\,\xi(1-\xi)}.

    ``order="linear"`` is the linear-rational spline of Dolatabadi et al. (2020), flowtorch 0.8's
    default. Both have analytic inverses. The conditioner emits unnormalised bin widths and
    heights (``count_bins`` each), interior derivatives (``count_bins - 1``) and, for the linear
    order, ``count_bins`` mixing weights. The quadratic order offsets the unnormalised derivatives
    by :func:`flowtorch.ops.identity_derivative`, so that all-zero parameters (a conditioner at
    initialisation) give the identity map, as in :class:`~flowtorch.bijectors.SplineCoupling`. The
    maths is :class:`~flowtorch.transformers.SplineTransformer`'s, shared with the autoregressive
    and coupling spline layers.

    References: Durkan et al., "Neural Spline Flows", 2019; Dolatabadi et al., "Invertible
    Generative Modeling using Linear Rational Splines", 2020.

    Args:
        params_fn: conditioner plan; default ``flowtorch.parameters.Tensor()``.
        count_bins: number of bins :math:`K`.
        bound: half-width of the interval the spline covers.
        order: ``"quadratic"`` or ``"linear"``.

    Example:
        >>> import torch
        >>> import flowtorch.bijectors as bij
        >>> b = bij.Spline(count_bins=4)(shape=torch.Size([2]))
        >>> x = torch.randn(3, 2)
        >>> torch.allclose(b.inverse(b.forward(x)), x, atol=1e-5)
        True
    """

    costs = Costs(
        "analytic",
        "O(D log K) elementwise (K bins)",
        "O(D log K) elementwise",
        "O(D), with the pass",
        reference="Durkan et al. 2019; Dolatabadi et al. 2020",
    )

    transformer: SplineTransformer
    sign: int | None = 1  # monotonically increasing splines

    def __init__(
        self,
        params_fn: Conditioner | None = None,
        *,
        shape: torch.Size | tuple[int, ...],
        context_shape: torch.Size | tuple[int, ...] | None = None,
        count_bins: int = 8,
        bound: float = 3.0,
        order: str = "quadratic",
    ) -> None:
        if order not in ("linear", "quadratic"):
            raise ValueError(f"{type(self).__name__}: order must be 'linear' or 'quadratic', got {order!r}")
        if int(count_bins) != count_bins or int(count_bins) < 1:
            raise ValueError(
                f"{type(self).__name__}: count_bins must be a positive integer, got {count_bins}"
            )
        if not bound > 0:
            raise ValueError(f"{type(self).__name__}: bound must be positive, got {bound}")
        self.transformer = SplineTransformer(count_bins, bound, order)
        super().__init__(
            self._default_params() if params_fn is None else params_fn,
            shape=shape,
            context_shape=context_shape,
        )

    @property
    def count_bins(self) -> int:
        """:math:`K`, the number of bins."""
        return self.transformer.count_bins

    @property
    def bound(self) -> float:
        """The half-width of the interval the spline covers."""
        return self.transformer.bound

    @property
    def order(self) -> str:
        """``"quadratic"`` or ``"linear"``."""
        return self.transformer.order

    def _default_params(self) -> Conditioner:
        return Plan(Tensor)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, order={self.order!r}"


class SplineAutoregressive(Spline):
    r"""Autoregressive spline flow: each dim's spline parameters depend on the outputs before it.

    As :class:`~flowtorch.bijectors.AffineAutoregressive`, the conditioner reads the output side
    (MAF direction): density evaluation is one parallel pass, sampling takes :math:`D` passes;
    wrap in ``Invert`` for the opposite. Reference: Durkan et al., "Neural Spline Flows", 2019.

    Args:
        params_fn: autoregressive conditioner plan; default
            ``flowtorch.parameters.DenseAutoregressive()``.
        count_bins: number of bins :math:`K`.
        bound: half-width of the interval the spline covers.
        order: ``"quadratic"`` or ``"linear"``.

    Example:
        >>> import torch
        >>> import flowtorch.bijectors as bij
        >>> b = bij.SplineAutoregressive()(shape=torch.Size([3]))
        >>> b.forward(torch.randn(2, 3)).shape
        torch.Size([2, 3])
    """

    costs = Costs(
        "sequential",
        "D sequential passes of the conditioner",
        "1 parallel pass of the conditioner",
        "O(D), with the pass",
        reference="Durkan et al. 2019",
    )

    conditioned_on_output = True
    sign = None  # not elementwise

    def __init__(
        self,
        params_fn: Conditioner | None = None,
        *,
        shape: torch.Size | tuple[int, ...],
        context_shape: torch.Size | tuple[int, ...] | None = None,
        count_bins: int = 8,
        bound: float = 3.0,
        order: str = "quadratic",
    ) -> None:
        nonscalar_event("SplineAutoregressive", shape)
        super().__init__(
            params_fn,
            shape=shape,
            context_shape=context_shape,
            count_bins=count_bins,
            bound=bound,
            order=order,
        )

    def _default_params(self) -> Conditioner:
        return Plan(DenseAutoregressive)
