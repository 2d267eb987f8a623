r"""Transformers: the elementwise maths that every wiring of a bijector family applies.

A *transformer* is a strictly increasing elementwise map :math:`g_\theta` whose parameters
:math:`\theta` are the unconstrained numbers a conditioner emits; the transformer constrains them
itself (a softly clamped log-scale, normalised spline bins), so that all-zero parameters give the
identity map. The bijectors then differ only in where :math:`\theta` comes from:

* elementwise (``Affine``, ``Spline``): free parameters, or a function of the context;
* autoregressive (``AffineAutoregressive``, ``SplineAutoregressive``): :math:`\theta_i` from the
  dims before :math:`i` (a MADE conditioner);
* coupling (``AffineCoupling``, ``SplineCoupling``, ``ChannelAffineCoupling``): :math:`\theta`
  from the untouched part of the event.

Each of those classes holds one transformer and writes the maths nowhere else.

Reference: Papamakarios et al., "Normalizing Flows for Probabilistic Modeling and Inference",
JMLR 2021, section 3.1 (the split of an autoregressive or coupling flow into a *transformer* and
a *conditioner*).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from flowtorch.ops import (
    circular_rational_quadratic_spline,
    identity_derivative,
    linear_rational_spline,
    rational_quadratic_spline,
    rational_quadratic_spline_deferred,
)
from flowtorch.ops.clamp import soft_clamp

__all__ = ["AffineTransformer", "CircularSplineTransformer", "SplineTransformer", "Transformer"]


class Transformer:
    r"""An elementwise, strictly increasing map :math:`y = g_\theta(x)` with its log-derivative.

    Subclasses write :meth:`param_shapes`, :meth:`forward` and :meth:`inverse`; both directions
    return the *forward* log-derivative :math:`\log g_\theta'(x)` elementwise (of the shape of the
    values, or a shape that broadcasts to it), computed from their input and :math:`\theta` only.

    Example:
        >>> import torch
        >>> t = AffineTransformer()
        >>> y, ladj = t.forward(torch.ones(2), (torch.zeros(2), torch.zeros(2)))
        >>> y, ladj
        (tensor([1., 1.]), tensor([0., 0.]))
    """

    def param_shapes(self, shape: torch.Size) -> tuple[torch.Size, ...]:
        """The shape of each parameter for values of ``shape`` (one event, or the transformed
        part of one)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, params: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        r""":math:`(g_\theta(x), \log g_\theta'(x))`."""
        raise NotImplementedError

    def inverse(self, y: torch.Tensor, params: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        r""":math:`(x, \log g_\theta'(x))` with :math:`x = g_\theta^{-1}(y)`."""
        raise NotImplementedError

    def log_derivative(self, x: torch.Tensor, params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        r""":math:`\log g_\theta'(x)` alone (by default from :meth:`forward`)."""
        return self.forward(x, params)[1]

    def forward_deferred(
        self, x: torch.Tensor, params: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, Callable[[], torch.Tensor]]:
        r""":math:`g_\theta(x)` and a function that gives :math:`\log g_\theta'(x)` later, from
        what the pass computed (``BijectiveMode(requires_ladj=False)``). By default the pass
        computes both at once; override where the log-derivative has a cost of its own."""
        y, ladj = self.forward(x, params)
        return y, lambda: ladj

    def inverse_deferred(
        self, y: torch.Tensor, params: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, Callable[[], torch.Tensor]]:
        r""":math:`g_\theta^{-1}(y)` and a function that gives the forward log-derivative later
        (see :meth:`forward_deferred`)."""
        x, ladj = self.inverse(y, params)
        return x, lambda: ladj

    def extra_repr(self) -> str:
        """The hyperparameters, for the owning bijector's ``repr``."""
        return ""


class AffineTransformer(Transformer):
    r"""The affine transformer :math:`g(x) = \mu + e^{s} x`, or :math:`\mu + x` when ``additive``.

    The conditioner emits :math:`(\mu, \tilde s)`; :math:`s` is :math:`\tilde s` softly clamped
    into ``(log_scale_min_clip, log_scale_max_clip)`` by :func:`flowtorch.ops.soft_clamp`:

    .. math::
        s = \mathrm{softclamp}(\tilde s), \qquad \log g'(x) = s,

    smooth and with a gradient everywhere (a hard clamp's is zero past its bounds, and a
    log-scale that overshoots never comes back), and the identity near zero. This is the one
    bounding of an affine log-scale in flowtorch: ``Affine``, ``AffineAutoregressive``,
    ``AffineCoupling`` and ``ChannelAffineCoupling`` all apply it.

    References: Dinh et al., "Density estimation using Real NVP", 2017 (the :math:`e^{s}`
    parametrisation); Dinh et al., "NICE", 2015 (the additive coupling); zuko's
    ``SoftclipTransform`` (the soft clamp, with one bound).

    Args:
        log_scale_min_clip: the lower bound of :math:`s`, negative and finite.
        log_scale_max_clip: the upper bound of :math:`s`, positive and finite.
        additive: drop the scale (volume preserving, :math:`\log g' = 0`); then the conditioner
            emits :math:`\mu` only.
        owner: the name the errors give (the bijector's).

    Example:
        >>> import torch
        >>> t = AffineTransformer(-5.0, 3.0)
        >>> x = torch.randn(4, 2)
        >>> theta = (torch.randn(4, 2), 100.0 * torch.randn(4, 2))
        >>> y, ladj = t.forward(x, theta)
        >>> torch.allclose(t.inverse(y, theta)[0], x, atol=1e-5), bool((ladj < 3.0).all())
        (True, True)
    """

    def __init__(
        self,
        log_scale_min_clip: float = -5.0,
        log_scale_max_clip: float = 3.0,
        additive: bool = False,
        owner: str = "AffineTransformer",
    ) -> None:
        if not log_scale_min_clip < log_scale_max_clip:
            raise ValueError(
                f"{owner}: log_scale_min_clip ({log_scale_min_clip}) must be below "
                f"log_scale_max_clip ({log_scale_max_clip})"
            )
        if not -math.inf < log_scale_min_clip < 0.0 < log_scale_max_clip < math.inf:
            raise ValueError(
                f"{owner}: the log-scale is softly clamped into (log_scale_min_clip, "
                "log_scale_max_clip), which must be finite and contain 0 (the identity map): "
                f"got ({log_scale_min_clip!r}, {log_scale_max_clip!r})"
            )
        self.log_scale_min_clip = float(log_scale_min_clip)
        self.log_scale_max_clip = float(log_scale_max_clip)
        self.additive = bool(additive)

    def param_shapes(self, shape: torch.Size) -> tuple[torch.Size, ...]:
        return (shape,) if self.additive else (shape, shape)

    def log_scale(self, params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """:math:`s`, the clamped log-scale."""
        return soft_clamp(params[1], self.log_scale_min_clip, self.log_scale_max_clip)

    def forward(self, x: torch.Tensor, params: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.additive:
            return x + params[0], x.new_zeros(())
        log_scale = self.log_scale(params)
        return params[0] + log_scale.exp() * x, log_scale

    def inverse(self, y: torch.Tensor, params: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.additive:
            return y - params[0], y.new_zeros(())
        log_scale = self.log_scale(params)
        return (y - params[0]) * torch.exp(-log_scale), log_scale

    def log_derivative(self, x: torch.Tensor, params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return x.new_zeros(()) if self.additive else self.log_scale(params)

    def extra_repr(self) -> str:
        if self.additive:
            return "additive=True"
        return f"log_scale_min_clip={self.log_scale_min_clip}, log_scale_max_clip={self.log_scale_max_clip}"


#: the unnormalised derivative that softplus maps to slope 1 (all-zero parameters: identity)
_IDENTITY_DERIVATIVE = identity_derivative()


class SplineTransformer(Transformer):
    r"""A monotonic spline on ``[-bound, bound]`` with identity (linear) tails outside.

    ``order="quadratic"`` is the rational-quadratic spline of Durkan et al. (2019) (see
    :func:`flowtorch.ops.rational_quadratic_spline`); ``order="linear"`` the linear-rational
    spline of Dolatabadi et al. (2020) (:func:`flowtorch.ops.linear_rational_spline`), flowtorch
    0.8's default. The conditioner emits, per element, unnormalised bin widths and heights
    (:math:`K` each), interior derivatives (:math:`K - 1`) and, for the linear order, :math:`K`
    mixing weights. The quadratic order offsets the derivatives by
    :func:`flowtorch.ops.identity_derivative`, so all-zero parameters give the identity map.

    References: Durkan et al., "Neural Spline Flows", 2019; Dolatabadi et al., "Invertible
    Generative Modeling using Linear Rational Splines", 2020.

    Args:
        count_bins: :math:`K`, the number of bins.
        bound: the half-width :math:`B` of the interval the spline covers.
        order: ``"quadratic"`` or ``"linear"``.

    Example:
        >>> import torch
        >>> t = SplineTransformer(count_bins=4)
        >>> theta = tuple(torch.randn(3, *s) for s in t.param_shapes(torch.Size([2])))
        >>> x = torch.randn(3, 2)
        >>> y, ladj = t.forward(x, theta)
        >>> torch.allclose(t.inverse(y, theta)[0], x, atol=1e-5)
        True
    """

    def __init__(self, count_bins: int = 8, bound: float = 3.0, order: str = "quadratic") -> None:
        self.count_bins = int(count_bins)
        self.bound = float(bound)
        self.order = order

    def param_shapes(self, shape: torch.Size) -> tuple[torch.Size, ...]:
        k = self.count_bins
        shapes = (torch.Size((*shape, k)), torch.Size((*shape, k)), torch.Size((*shape, k - 1)))
        return (*shapes, torch.Size((*shape, k))) if self.order == "linear" else shapes

    def _spline(
        self, value: torch.Tensor, params: tuple[torch.Tensor, ...], inverse: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.order == "linear":
            return linear_rational_spline(value, *params, bound=self.bound, inverse=inverse)
        widths, heights, derivatives = params
        return rational_quadratic_spline(
            value, widths, heights, derivatives + _IDENTITY_DERIVATIVE, bound=self.bound, inverse=inverse
        )

    def forward(self, x: torch.Tensor, params: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        return self._spline(x, params, False)

    def inverse(self, y: torch.Tensor, params: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        x, ladj_inverse = self._spline(y, params, True)
        return x, -ladj_inverse

    def _deferred(
        self, value: torch.Tensor, params: tuple[torch.Tensor, ...], inverse: bool
    ) -> tuple[torch.Tensor, Callable[[], torch.Tensor]] | None:
        """The quadratic spline with its log-derivative left for later (the bin's gathered values
        kept); ``None`` for the other orders, which compute it in the pass."""
        if type(self)._spline is not SplineTransformer._spline or self.order != "quadratic":
            return None
        widths, heights, derivatives = params
        out, later = rational_quadratic_spline_deferred(
            value, widths, heights, derivatives + _IDENTITY_DERIVATIVE, bound=self.bound, inverse=inverse
        )
        if not inverse:
            return out, later
        return out, lambda: -later()

    def forward_deferred(
        self, x: torch.Tensor, params: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, Callable[[], torch.Tensor]]:
        deferred = self._deferred(x, params, False)
        return super().forward_deferred(x, params) if deferred is None else deferred

    def inverse_deferred(
        self, y: torch.Tensor, params: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, Callable[[], torch.Tensor]]:
        deferred = self._deferred(y, params, True)
        return super().inverse_deferred(y, params) if deferred is None else deferred

    def extra_repr(self) -> str:
        return f"count_bins={self.count_bins}, bound={self.bound}"


class CircularSplineTransformer(SplineTransformer):
    r"""The circular rational-quadratic spline on angles in ``[-bound, bound]``: :math:`K` bins, no
    tails, and one derivative shared by both ends, so that the map fixes :math:`\pm B` and is a
    :math:`C^1` diffeomorphism of the circle (see
    :func:`flowtorch.ops.circular_rational_quadratic_spline`). The conditioner emits :math:`K`
    unnormalised widths, heights and derivatives per element.

    Reference: Rezende et al., "Normalizing Flows on Tori and Spheres", 2020.

    Args:
        count_bins: :math:`K`, the number of bins.
        bound: half the period :math:`B`.

    Example:
        >>> import math, torch
        >>> t = CircularSplineTransformer(count_bins=4, bound=math.pi)
        >>> theta = tuple(torch.randn(3, *s) for s in t.param_shapes(torch.Size([2])))
        >>> y, _ = t.forward(torch.full((3, 2), math.pi), theta)
        >>> torch.allclose(y, torch.full((3, 2), math.pi))
        True
    """

    def __init__(self, count_bins: int = 8, bound: float = math.pi) -> None:
        super().__init__(count_bins, bound, "quadratic")

    def param_shapes(self, shape: torch.Size) -> tuple[torch.Size, ...]:
        k = self.count_bins
        return (torch.Size((*shape, k)),) * 3

    def _spline(
        self, value: torch.Tensor, params: tuple[torch.Tensor, ...], inverse: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return circular_rational_quadratic_spline(value, *params, bound=self.bound, inverse=inverse)
