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

Most transformers have both directions in closed form. A :class:`MonotoneTransformer` has only
:math:`T = g_\theta^{-1}` (a polynomial, an integral, a deep sigmoid: the maps of ``SOSPolynomial``,
``Bernstein``, ``UMNN`` and ``NeuralAutoregressive``), and solves :math:`T(y) = x` numerically for
the other direction.

Reference: Papamakarios et al., "Normalizing Flows for Probabilistic Modeling and Inference",
JMLR 2021, section 3.1 (the split of an autoregressive or coupling flow into a *transformer* and
a *conditioner*).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from flowtorch.core.validation import integer_at_least
from flowtorch.ops import (
    circular_rational_quadratic_spline,
    identity_derivative,
    linear_rational_spline,
    rational_quadratic_spline,
    rational_quadratic_spline_deferred,
)
from flowtorch.ops.clamp import soft_clamp
from flowtorch.ops.numerical import (
    attach_root_gradient,
    bisect_monotone,
    newton_monotone,
    quadrature,
    quadrature_rule,
)

__all__ = [
    "AffineTransformer",
    "BernsteinTransformer",
    "CircularSplineTransformer",
    "DeepSigmoidTransformer",
    "MonotoneTransformer",
    "SOSTransformer",
    "SplineTransformer",
    "Transformer",
    "UMNNTransformer",
]


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

    def log_derivative(
        self, x: torch.Tensor, params: tuple[torch.Tensor, ...], y: torch.Tensor | None = None
    ) -> torch.Tensor:
        r""":math:`\log g_\theta'(x)` alone (by default from :meth:`forward`); ``y``, when the
        caller has it, is :math:`g_\theta(x)`, for transformers whose closed form is the inverse."""
        return self.forward(x, params)[1]

    def forward_deferred(
        self, x: torch.Tensor, params: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, Callable[[], torch.Tensor] | None]:
        r""":math:`g_\theta(x)` and a function that gives :math:`\log g_\theta'(x)` later, from
        what the pass computed (``BijectiveMode(requires_ladj=False)``), or ``None`` when it is to
        come from :meth:`log_derivative` given the output. By default the pass computes both at
        once; override where the log-derivative has a cost of its own."""
        y, ladj = self.forward(x, params)
        return y, lambda: ladj

    def inverse_deferred(
        self, y: torch.Tensor, params: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, Callable[[], torch.Tensor]]:
        r""":math:`g_\theta^{-1}(y)` and a function that gives the forward log-derivative later
        (see :meth:`forward_deferred`)."""
        x, ladj = self.inverse(y, params)
        return x, lambda: ladj

    def forward_intermediate(self, x: torch.Tensor, params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        r""":math:`g_\theta(x)` in an intermediate pass of an autoregressive forward, whose
        parameters come from an output not yet exact (by default the value of
        :meth:`forward_deferred`)."""
        return self.forward_deferred(x, params)[0]

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

    def log_derivative(
        self, x: torch.Tensor, params: tuple[torch.Tensor, ...], y: torch.Tensor | None = None
    ) -> torch.Tensor:
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
    ) -> tuple[torch.Tensor, Callable[[], torch.Tensor] | None]:
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


#: the numerical solvers of :class:`MonotoneTransformer`
SOLVERS = ("newton", "bisection")


class MonotoneTransformer(Transformer):
    r"""A transformer with a closed form in one direction only, :math:`T = g_\theta^{-1}`, which
    it solves numerically for the other.

    Subclasses write :meth:`transform`: :math:`(T(y), \log T'(y))` elementwise, with :math:`T`
    strictly increasing and onto :math:`\mathbb{R}`. Following the papers, which use these maps
    for density estimation, :math:`T` maps the data side to the base side, so :meth:`inverse`
    (scoring) is closed form and :meth:`forward` (sampling) solves :math:`T(y) = x` for the whole
    batch at once: a bracket :math:`T(\mathrm{lo}) \le x \le T(\mathrm{hi})` found by expansion
    from :math:`[x - 1, x + 1]`, then safeguarded Newton steps (``solver="newton"``, the default)
    or bisection (``"bisection"``) until the step is within ``tol * (1 + |y|)`` (default
    ``tol``: 16 machine epsilons of the dtype), or ``max_iter`` iterations. A last Newton step
    carries the implicit-function gradient (:func:`flowtorch.ops.numerical.attach_root_gradient`),
    so gradients flow to :math:`x` and to the parameters as if the root were exact.

    Args:
        solver: ``"newton"`` or ``"bisection"``.
        tol: the solver's tolerance (default: 16 machine epsilons of the dtype).
        max_iter: the solver's iterations.
        owner: the name the errors give (the bijector's).

    Example:
        >>> import torch
        >>> t = DeepSigmoidTransformer(hidden_units=4)
        >>> theta = tuple(torch.randn(3, *s) for s in t.param_shapes(torch.Size([2])))
        >>> y = torch.randn(3, 2)
        >>> x, ladj = t.inverse(y, theta)  # closed form
        >>> torch.allclose(t.forward(x, theta)[0], y, atol=1e-4)  # numerical
        True
    """

    def __init__(
        self,
        solver: str = "newton",
        tol: float | None = None,
        max_iter: int = 100,
        owner: str | None = None,
    ) -> None:
        name = type(self).__name__ if owner is None else owner
        if solver not in SOLVERS:
            raise ValueError(f"{name}: solver must be one of {SOLVERS}, got {solver!r}")
        if tol is not None and not tol > 0:
            raise ValueError(f"{name}: tol must be positive, got {tol}")
        self.solver = solver
        self.tol = None if tol is None else float(tol)
        self.max_iter = integer_at_least(max_iter, f"{name}: max_iter")

    def transform(
        self, y: torch.Tensor, params: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        r""":math:`(T(y), \log T'(y))`, elementwise: the closed-form direction, :math:`g_\theta^{-1}`."""
        raise NotImplementedError

    def _root(self, x: torch.Tensor, params: tuple[torch.Tensor, ...], strict: bool) -> torch.Tensor:
        """The root ``y`` of ``T(y) = x``, without gradient (NaN where ``not strict`` and unbracketed)."""
        target = x.detach()
        lower, upper = target - 1.0, target + 1.0
        options: dict[str, Any] = dict(atol=self.tol, rtol=self.tol, max_iter=self.max_iter, strict=strict)
        if self.solver == "bisection":
            return bisect_monotone(lambda v: self.transform(v, params)[0], target, lower, upper, **options)

        def value_and_slope(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            value, log_slope = self.transform(v, params)
            return value, log_slope.exp()

        return newton_monotone(value_and_slope, target, lower, upper, initial=target, **options)

    def solve(self, x: torch.Tensor, params: tuple[torch.Tensor, ...], strict: bool = True) -> torch.Tensor:
        r""":math:`g_\theta(x) = T^{-1}(x)`, with the implicit-function gradient.

        With ``strict=False`` (the intermediate passes of an autoregressive forward, whose
        not-yet-exact dims may give a conditioner extreme inputs), elements without a root keep
        :math:`x`: finite and moderate, so that no NaN reaches the conditioner or its gradients;
        the final pass is strict and refuses them.
        """
        root = self._root(x, params, strict)
        if strict:
            value, log_slope = self.transform(root, params)
            return attach_root_gradient(root, value, log_slope.exp(), x)
        failed = torch.isnan(root)
        root = torch.where(failed, x.detach(), root)
        value, log_slope = self.transform(root, params)
        slope = torch.where(failed, torch.ones_like(log_slope), log_slope.exp())
        return torch.where(failed, x, attach_root_gradient(root, value, slope, x))

    def forward(self, x: torch.Tensor, params: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.solve(x, params)
        return y, -self.transform(y, params)[1]

    def forward_intermediate(self, x: torch.Tensor, params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The value of an intermediate autoregressive pass (see :meth:`solve`)."""
        return self.solve(x, params, strict=False)

    def inverse(self, y: torch.Tensor, params: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        x, log_slope = self.transform(y, params)
        return x, -log_slope

    def log_derivative(
        self, x: torch.Tensor, params: tuple[torch.Tensor, ...], y: torch.Tensor | None = None
    ) -> torch.Tensor:
        if y is None:
            return self.forward(x, params)[1]
        return -self.transform(y, params)[1]

    def forward_deferred(
        self, x: torch.Tensor, params: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, Callable[[], torch.Tensor] | None]:
        # the root solve alone; the log-derivative, asked for later, is T's at the output
        return self.solve(x, params), None

    def extra_repr(self) -> str:
        return f"solver={self.solver!r}"


class SOSTransformer(MonotoneTransformer):
    r"""The sum-of-squares polynomial of ``SOSPolynomial`` (Jaini et al., 2019).

    With coefficients :math:`a_{k,l}` and offset :math:`\beta` from the conditioner,
    :math:`q_k(t) = 1 + \sum_{l=0}^{r} a_{k,l} t^l` and

    .. math::

        T(y) = \beta + \epsilon y + \int_0^y \frac1K \sum_{k=1}^{K} q_k(t)^2\,dt
          = \beta + \epsilon y + \sum_{j=0}^{2r} \frac{c_j}{j + 1} y^{j+1},
        \qquad c_j = \frac1K \sum_k \sum_{l + m = j} \tilde a_{k,l} \tilde a_{k,m},

    (:math:`\tilde a_{k,0} = 1 + a_{k,0}`, :math:`\tilde a_{k,l} = a_{k,l}` otherwise), a
    polynomial of odd degree :math:`2r + 1` with
    :math:`T'(y) = \epsilon + \frac1K \sum_k q_k(y)^2 \ge \epsilon > 0`; the integral is analytic.
    Zero coefficients give :math:`T(y) = (1 + \epsilon) y`.

    Args:
        count: :math:`K`, the number of squared polynomials.
        degree: :math:`r`, the degree of each.
        min_slope: :math:`\epsilon`.
        solver: ``"newton"`` or ``"bisection"``, as in :class:`MonotoneTransformer`.
        tol: the solver's tolerance (default: 16 machine epsilons of the dtype).
        max_iter: the solver's iterations.
        owner: the name the errors give (the bijector's).

    Example:
        >>> import torch
        >>> t = SOSTransformer(count=2, degree=2)
        >>> theta = tuple(torch.zeros(3, *s) for s in t.param_shapes(torch.Size([2])))
        >>> y = torch.randn(3, 2)
        >>> torch.allclose(t.transform(y, theta)[0], (1 + t.min_slope) * y)  # zero coefficients
        True
    """

    def __init__(
        self,
        count: int = 3,
        degree: int = 2,
        min_slope: float = 1e-3,
        solver: str = "newton",
        tol: float | None = None,
        max_iter: int = 100,
        owner: str | None = None,
    ) -> None:
        name = type(self).__name__ if owner is None else owner
        self.count = integer_at_least(count, f"{name}: count")
        self.degree = integer_at_least(degree, f"{name}: degree", 0)
        if not min_slope > 0:
            raise ValueError(f"{name}: min_slope must be positive, got {min_slope}")
        self.min_slope = float(min_slope)
        super().__init__(solver, tol, max_iter, name)
        ell = torch.arange(self.degree + 1)
        # (l, m, j): whether l + m == j, which sums the products of coefficients into c_j
        self._antidiagonals = (ell[:, None] + ell[None, :])[..., None] == torch.arange(2 * self.degree + 1)

    def param_shapes(self, shape: torch.Size) -> tuple[torch.Size, ...]:
        return (torch.Size((*shape, self.count, self.degree + 1)), shape)

    def transform(
        self, y: torch.Tensor, params: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        a, beta = params
        r = self.degree
        coeffs = torch.cat([a[..., :1] + 1.0, a[..., 1:]], dim=-1)  # (..., K, r + 1)
        exponents = torch.arange(2 * r + 2, dtype=y.dtype, device=y.device)
        powers = y[..., None] ** exponents  # y^0 .. y^(2r+1)
        q = (coeffs * powers[..., None, : r + 1]).sum(-1)  # (..., K)
        slope = q.square().mean(-1) + self.min_slope
        products = (coeffs[..., :, None] * coeffs[..., None, :]).mean(-3)  # (..., r + 1, r + 1)
        antidiagonals = self._antidiagonals.to(device=y.device, dtype=y.dtype)
        c = (products[..., None] * antidiagonals).sum((-3, -2))  # (..., 2r + 1)
        integral = (c * powers[..., 1:] / exponents[1:]).sum(-1)
        return beta + self.min_slope * y + integral, slope.log()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, count={self.count}, degree={self.degree}"


class BernsteinTransformer(MonotoneTransformer):
    r"""The Bernstein polynomial of ``Bernstein``, with linear extrapolation outside ``[-B, B]``.

    With :math:`u = (y + B) / (2B)` and increasing coefficients
    :math:`\theta_0 = -B + \tilde\theta_0`,
    :math:`\theta_k = \theta_{k-1} + \operatorname{softplus}(\tilde\theta_k + s)`,
    :math:`s = \log(e^{2B/M} - 1)` (cumulative softplus),

    .. math::

        T(y) = \sum_{k=0}^{M} \theta_k \binom{M}{k} u^k (1 - u)^{M-k}, \qquad
        T'(y) = \frac{M}{2B} \sum_{k=0}^{M-1} (\theta_{k+1} - \theta_k)
                \binom{M-1}{k} u^k (1 - u)^{M-1-k} > 0

    on :math:`[-B, B]`, and outside it :math:`T(y) = T(y_c) + T'(y_c)(y - y_c)` with
    :math:`y_c = \operatorname{clamp}(y, -B, B)` (:math:`C^1`, onto :math:`\mathbb{R}`). The
    log-slope is a log-sum-exp over the basis. Zero parameters give the identity.

    Args:
        degree: :math:`M` (``M + 1`` coefficients per element).
        bound: :math:`B`.
        solver: ``"newton"`` or ``"bisection"``, as in :class:`MonotoneTransformer`.
        tol: the solver's tolerance (default: 16 machine epsilons of the dtype).
        max_iter: the solver's iterations.
        owner: the name the errors give (the bijector's).

    Example:
        >>> import torch
        >>> t = BernsteinTransformer(degree=6, bound=3.0)
        >>> theta = tuple(torch.zeros(4, *s) for s in t.param_shapes(torch.Size([2])))
        >>> y = 5.0 * torch.randn(4, 2)  # tails included
        >>> x, log_slope = t.transform(y, theta)
        >>> torch.allclose(x, y, atol=1e-5), torch.allclose(log_slope, torch.zeros(4, 2), atol=1e-5)
        (True, True)
    """

    def __init__(
        self,
        degree: int = 10,
        bound: float = 4.0,
        solver: str = "newton",
        tol: float | None = None,
        max_iter: int = 100,
        owner: str | None = None,
    ) -> None:
        name = type(self).__name__ if owner is None else owner
        self.degree = integer_at_least(degree, f"{name}: degree")
        if not bound > 0:
            raise ValueError(f"{name}: bound must be positive, got {bound}")
        self.bound = float(bound)
        self._shift = math.log(math.expm1(2.0 * self.bound / self.degree))
        super().__init__(solver, tol, max_iter, name)

    def param_shapes(self, shape: torch.Size) -> tuple[torch.Size, ...]:
        return (torch.Size((*shape, self.degree + 1)),)

    def transform(
        self, y: torch.Tensor, params: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        (raw,) = params
        m, b = self.degree, self.bound
        increments = F.softplus(raw[..., 1:] + self._shift)  # (..., M)
        theta = torch.cumsum(torch.cat([raw[..., :1] - b, increments], dim=-1), dim=-1)
        inside = (y > -b) & (y < b)
        yc = torch.where(inside, y, y.detach().clamp(-b, b))  # the bounds belong to the linear tails
        tiny = torch.finfo(y.dtype).tiny
        log_2b = math.log(2.0 * b)
        log_u = torch.log((yc + b).clamp_min(tiny))[..., None] - log_2b
        log_1mu = torch.log((b - yc).clamp_min(tiny))[..., None] - log_2b
        value = (theta * _log_bernstein_basis(m, log_u, log_1mu).exp()).sum(-1)
        log_slope = math.log(m / (2.0 * b)) + torch.logsumexp(
            increments.log() + _log_bernstein_basis(m - 1, log_u, log_1mu), dim=-1
        )
        return value + log_slope.exp() * (y - yc), log_slope

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, degree={self.degree}, bound={self.bound}"


def _log_bernstein_basis(degree: int, log_u: torch.Tensor, log_1mu: torch.Tensor) -> torch.Tensor:
    r""":math:`\log \binom{M}{k} + k \log u + (M - k) \log(1 - u)` for :math:`k = 0..M` (last dim)."""
    k = torch.arange(degree + 1, dtype=log_u.dtype, device=log_u.device)
    log_binom = math.lgamma(degree + 1) - torch.lgamma(k + 1) - torch.lgamma(degree - k + 1)
    return log_binom + k * log_u + (degree - k) * log_1mu


class UMNNTransformer(MonotoneTransformer):
    r"""The integral of a positive network, of ``UMNN`` (Wehenkel and Louppe, 2019).

    With an embedding :math:`h` and offset :math:`\beta` from the conditioner and the network
    :math:`z(t, h)` (``integrand``, an :class:`~flowtorch.nn.IntegrandNet` that the owning
    bijector registers as its submodule),

    .. math::

        T(y) = \beta + \int_0^{y} g(t, h)\,dt, \qquad g = \operatorname{ELU}(z) + 1 > 0,
        \qquad \log T'(y) = \log g(y, h),

    the integral by a fixed ``nodes``-point Gauss-Legendre (or Clenshaw-Curtis) rule on
    :math:`[0, y]`. The log-derivative is that of the exact integral, as in the paper.

    Args:
        integrand: the network :math:`z` (``None`` until the owner builds it, which then sets
            ``integrand``).
        embedding_dim: the size of :math:`h` per element.
        nodes: the number of quadrature nodes.
        rule: ``"gauss-legendre"`` or ``"clenshaw-curtis"``.
        solver: ``"newton"`` or ``"bisection"``, as in :class:`MonotoneTransformer`.
        tol: the solver's tolerance (default: 16 machine epsilons of the dtype).
        max_iter: the solver's iterations.
        owner: the name the errors give (the bijector's).

    Example:
        >>> import torch
        >>> from flowtorch.nn import IntegrandNet
        >>> net = IntegrandNet(embedding_dim=3, hidden_dims=[8], nonlinearity=torch.nn.ELU)
        >>> t = UMNNTransformer(net, embedding_dim=3)
        >>> theta = tuple(torch.randn(4, *s) for s in t.param_shapes(torch.Size([2])))
        >>> y = torch.randn(4, 2)
        >>> x, ladj = t.inverse(y, theta)  # the quadrature
        >>> torch.allclose(t.forward(x, theta)[0], y, atol=1e-4)  # the root solve
        True
    """

    def __init__(
        self,
        integrand: nn.Module | None,
        embedding_dim: int,
        nodes: int = 32,
        rule: str = "gauss-legendre",
        solver: str = "newton",
        tol: float | None = None,
        max_iter: int = 100,
        owner: str | None = None,
    ) -> None:
        quadrature_rule(rule, nodes)  # checks rule and nodes
        self.integrand = integrand
        self.embedding_dim = embedding_dim
        self.nodes = nodes
        self.rule = rule
        super().__init__(solver, tol, max_iter, owner)

    def param_shapes(self, shape: torch.Size) -> tuple[torch.Size, ...]:
        return (torch.Size((*shape, self.embedding_dim)), shape)

    def transform(
        self, y: torch.Tensor, params: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h, beta = params
        net = self.integrand
        if net is None:
            raise RuntimeError("UMNNTransformer: no integrand network was given")

        def g(t: torch.Tensor) -> torch.Tensor:
            return F.elu(net(t, h)) + 1.0

        integral = quadrature(
            g, torch.zeros((), dtype=y.dtype, device=y.device), y, n=self.nodes, rule=self.rule
        )
        z = net(y[..., None], h)[..., 0]
        log_g = torch.where(z > 0, torch.log1p(z.clamp_min(0)), z.clamp_max(0))  # log(ELU(z) + 1)
        return beta + integral, log_g

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, nodes={self.nodes}, rule={self.rule!r}"


#: the smallest slope a of a deep-sigmoid unit: keeps the map's tails strictly increasing
_MIN_SLOPE = 1e-3
_SOFTPLUS_ONE = math.log(math.expm1(1.0 - _MIN_SLOPE))  # _MIN_SLOPE + softplus(_SOFTPLUS_ONE) == 1


class DeepSigmoidTransformer(MonotoneTransformer):
    r"""The deep sigmoidal transformer of the neural autoregressive flow (Huang et al., 2018).

    With pseudo-parameters :math:`(\tilde a, b, \tilde w) \in \mathbb{R}^{3K}` per element,
    :math:`a = a_{\min} + \operatorname{softplus}(\tilde a + s)` (:math:`a_{\min} = 10^{-3}`, and
    :math:`s` such that :math:`a = 1` at :math:`\tilde a = 0`),
    :math:`w = \operatorname{softmax}(\tilde w)`, :math:`u_k = a_k y + b_k`,

    .. math::

        T(y) = \sigma^{-1}\Big(\sum_k w_k \sigma(u_k)\Big)
          = \log \sum_k w_k \sigma(u_k) - \log \sum_k w_k \sigma(-u_k),

    .. math::

        \log T'(y) = \operatorname{LSE}_k\big[\log w_k + \log a_k + \log\sigma(u_k)
                     + \log\sigma(-u_k)\big] - \operatorname{LSE}_k\big[\log w_k + \log\sigma(u_k)\big]
                     - \operatorname{LSE}_k\big[\log w_k + \log\sigma(-u_k)\big],

    every term a log-sum-exp of log-sigmoids, stable in both tails. :math:`T` is strictly
    increasing and onto :math:`\mathbb{R}`; with zero pseudo-parameters it is the identity. The
    floor :math:`a_{\min}` keeps every slope of the tails, :math:`\min_k a_k`, away from zero even
    when the conditioner's outputs are huge (inputs of order :math:`10^6`), so the numerical
    inverse always finds a bracket.

    Args:
        hidden_units: :math:`K`, the number of sigmoids per element.
        solver: ``"newton"`` or ``"bisection"``, as in :class:`MonotoneTransformer`.
        tol: the solver's tolerance (default: 16 machine epsilons of the dtype).
        max_iter: the solver's iterations.
        owner: the name the errors give (the bijector's).

    Example:
        >>> import torch
        >>> t = DeepSigmoidTransformer(hidden_units=4)
        >>> theta = tuple(torch.zeros(3, *s) for s in t.param_shapes(torch.Size([2])))
        >>> y = torch.randn(3, 2)
        >>> torch.allclose(t.transform(y, theta)[0], y, atol=1e-5)  # zero parameters: identity
        True
    """

    def __init__(
        self,
        hidden_units: int = 16,
        solver: str = "newton",
        tol: float | None = None,
        max_iter: int = 100,
        owner: str | None = None,
    ) -> None:
        name = type(self).__name__ if owner is None else owner
        self.hidden_units = integer_at_least(hidden_units, f"{name}: hidden_units")
        super().__init__(solver, tol, max_iter, name)

    def param_shapes(self, shape: torch.Size) -> tuple[torch.Size, ...]:
        s = torch.Size((*shape, self.hidden_units))
        return (s, s, s)

    def transform(
        self, y: torch.Tensor, params: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        a_raw, b, w_raw = params
        a = _MIN_SLOPE + F.softplus(a_raw + _SOFTPLUS_ONE)
        log_w = torch.log_softmax(w_raw, dim=-1)
        u = a * y[..., None] + b
        log_s, log_1ms = F.logsigmoid(u), F.logsigmoid(-u)
        log_h = torch.logsumexp(log_w + log_s, dim=-1)
        log_1mh = torch.logsumexp(log_w + log_1ms, dim=-1)
        log_dh = torch.logsumexp(log_w + a.log() + log_s + log_1ms, dim=-1)
        return log_h - log_1mh, log_dh - log_h - log_1mh

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, hidden_units={self.hidden_units}"
