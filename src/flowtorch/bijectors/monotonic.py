r"""Monotone polynomial and integral transformers, inverted numerically.

Each bijector here is an elementwise, strictly increasing *transformer* :math:`T` with
parameters from a conditioner. Following the papers, which use them for density estimation,
:math:`T` maps the data side to the base side: ``inverse(y) = T(y)`` is closed form (or a
fixed quadrature) and parallel, and ``log_prob`` costs one pass. ``forward`` (sampling) solves
:math:`T(y) = x` numerically for the whole batch at once: a bracket
:math:`T(\mathrm{lo}) \le x \le T(\mathrm{hi})` found by expansion from :math:`[x - 1, x + 1]`, then
safeguarded Newton steps (``solver="newton"``, the default) or bisection (``"bisection"``) until
the step is within ``tol * (1 + |y|)`` (default ``tol``: 16 machine epsilons of the dtype), or
``max_iter`` iterations; a last Newton step carries the implicit-function gradient
(:func:`flowtorch.ops.numerical.attach_root_gradient`). Round trips are tested to ``1e-9`` in
float64 and ``1e-4`` in float32. ``Invert(...)`` swaps the costs (sampling closed form,
density numerical).

With an autoregressive conditioner (``SOSPolynomial`` and ``UMNN`` by default) the conditioner
reads the data side (MAF direction, ``conditioned_on_output = True``): density evaluation is one
parallel pass; sampling takes :math:`D` passes, each a numerical elementwise inverse.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from flowtorch.core.bijector import Bijector, Costs, Later, Params
from flowtorch.core.lazy import Plan
from flowtorch.core.validation import integer_at_least, nonscalar_event
from flowtorch.nn.integrand import IntegrandNet
from flowtorch.ops.numerical import (
    attach_root_gradient,
    bisect_monotone,
    newton_monotone,
    quadrature,
    quadrature_rule,
)
from flowtorch.parameters import DenseAutoregressive, Tensor

__all__ = ["UMNN", "Bernstein", "SOSPolynomial"]

SOLVERS = ("newton", "bisection")


class _Monotone(Bijector):
    """An elementwise increasing transformer ``x = T(y; params)``: ``inverse`` evaluates it, ``forward``
    solves it numerically (see the module docstring). Subclasses write ``_transform``."""

    def __init__(
        self,
        params_fn: Any = None,
        *,
        shape: torch.Size | tuple[int, ...],
        context_shape: torch.Size | tuple[int, ...] | None = None,
        solver: str = "newton",
        tol: float | None = None,
        max_iter: int = 100,
    ) -> None:
        name = type(self).__name__
        if solver not in SOLVERS:
            raise ValueError(f"{name}: solver must be one of {SOLVERS}, got {solver!r}")
        if tol is not None and not tol > 0:
            raise ValueError(f"{name}: tol must be positive, got {tol}")
        self.solver = solver
        self.tol = None if tol is None else float(tol)
        self.max_iter = integer_at_least(max_iter, f"{name}: max_iter")
        super().__init__(params_fn, shape=shape, context_shape=context_shape)

    def _transform(self, y: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        """``(T(y), log T'(y))``, elementwise."""
        raise NotImplementedError

    def _solve(self, x: torch.Tensor, params: Params, strict: bool) -> torch.Tensor:
        """The root ``y`` of ``T(y) = x``, without gradient (NaN where ``not strict`` and unbracketed)."""
        target = x.detach()
        lower, upper = target - 1.0, target + 1.0
        options: dict[str, Any] = dict(atol=self.tol, rtol=self.tol, max_iter=self.max_iter, strict=strict)
        if self.solver == "bisection":
            return bisect_monotone(lambda v: self._transform(v, params)[0], target, lower, upper, **options)

        def value_and_slope(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            value, log_slope = self._transform(v, params)
            return value, log_slope.exp()

        return newton_monotone(value_and_slope, target, lower, upper, initial=target, **options)

    def _solve_with_gradient(self, x: torch.Tensor, params: Params, strict: bool) -> torch.Tensor:
        root = self._solve(x, params, strict)
        if strict:
            value, log_slope = self._transform(root, params)
            return attach_root_gradient(root, value, log_slope.exp(), x)
        # elements without a root (possible only in the intermediate passes of an autoregressive
        # forward, whose not-yet-exact dims may give a conditioner extreme inputs) keep x: finite
        # and moderate, so that no NaN reaches the conditioner or its gradients
        failed = torch.isnan(root)
        root = torch.where(failed, x.detach(), root)
        value, log_slope = self._transform(root, params)
        slope = torch.where(failed, torch.ones_like(log_slope), log_slope.exp())
        return torch.where(failed, x, attach_root_gradient(root, value, slope, x))

    def _forward(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        return self._solve_with_gradient(x, params, True)

    def _sequential_forward(
        self, x: torch.Tensor, context: torch.Tensor | None, need_ladj: bool, defer: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None, Params, Later | None]:
        # As the base class's, except that the intermediate passes tolerate elements without a
        # root: their values are discarded by later passes, the final pass is strict.
        y = torch.zeros_like(x)
        with self._repeated_conditioner():
            for _ in range(max(int(self.shape.numel()), 1) - 1):
                y = self._solve_with_gradient(x, self._params(y, context), False)
            params = self._params(y, context)
        y, ladj, later = self._forward_pass(x, params, need_ladj, defer)
        return y, ladj, params, later

    def _inverse(self, y: torch.Tensor, params: Params) -> torch.Tensor:
        return self._transform(y, params)[0]

    def _log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor, params: Params) -> torch.Tensor:
        return -self._transform(y, params)[1]

    def _inverse_and_ladj(self, y: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        x, log_slope = self._transform(y, params)
        return x, -log_slope

    def _inverse_deferred(self, y: torch.Tensor, params: Params) -> tuple[torch.Tensor, Later]:
        # the transform gives its log-slope with its value: keep it
        x, log_slope = self._transform(y, params)
        return x, lambda: -log_slope

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, solver={self.solver!r}"


class SOSPolynomial(_Monotone):
    r"""Sum-of-squares polynomial flow: an autoregressive, strictly increasing polynomial transformer.

    For each dim, with coefficients :math:`a_{k,l}(y_{<i})` and offset :math:`\beta(y_{<i})` from the
    conditioner, :math:`q_k(t) = 1 + \sum_{l=0}^{r} a_{k,l} t^l` and

    .. math::

        x = T(y) = \beta + \epsilon y + \int_0^y \frac1K \sum_{k=1}^{K} q_k(t)^2\,dt
          = \beta + \epsilon y + \sum_{j=0}^{2r} \frac{c_j}{j + 1} y^{j+1},
        \qquad c_j = \frac1K \sum_k \sum_{l + m = j} \tilde a_{k,l} \tilde a_{k,m},

    (:math:`\tilde a_{k,0} = 1 + a_{k,0}`, :math:`\tilde a_{k,l} = a_{k,l}` otherwise), a
    polynomial of odd degree :math:`2r + 1` with
    :math:`T'(y) = \epsilon + \frac1K \sum_k q_k(y)^2 \ge \epsilon > 0`; the integral is analytic.
    Zero coefficients give :math:`T(y) = (1 + \epsilon) y`. ``inverse`` evaluates :math:`T`;
    ``forward`` solves it numerically (module docstring).

    Reference: Jaini, Selby, Yu, "Sum-of-Squares Polynomial Flow", ICML 2019.

    Args:
        params_fn: conditioner plan; default ``flowtorch.parameters.DenseAutoregressive()``.
        count: number :math:`K` of squared polynomials.
        degree: degree :math:`r` of each polynomial (the map has degree :math:`2r + 1`).
        min_slope: :math:`\epsilon`, a lower bound on :math:`T'`.
        solver: ``"newton"`` or ``"bisection"`` for ``forward``.
        tol: tolerance of the numerical inverse (default: 16 machine epsilons).
        max_iter: iterations of the numerical inverse.

    Example:
        >>> import torch
        >>> import flowtorch.bijectors as bij
        >>> from flowtorch.bijectors.monotonic import SOSPolynomial
        >>> b = SOSPolynomial()(shape=torch.Size([3]))
        >>> y = torch.randn(4, 3)
        >>> torch.allclose(b.forward(b.inverse(y)), y, atol=1e-4)
        True
    """

    costs = Costs(
        "numerical, sequential",
        "D sequential passes, each an elementwise root solve",
        "1 parallel pass of the conditioner",
        "O(D·K·r), closed form",
        reference="Jaini et al. 2019",
    )

    conditioned_on_output = True
    _antidiagonals: torch.Tensor

    def __init__(
        self,
        params_fn: Any = None,
        *,
        shape: torch.Size | tuple[int, ...],
        context_shape: torch.Size | tuple[int, ...] | None = None,
        count: int = 3,
        degree: int = 2,
        min_slope: float = 1e-3,
        solver: str = "newton",
        tol: float | None = None,
        max_iter: int = 100,
    ) -> None:
        nonscalar_event("SOSPolynomial", shape)
        self.count = integer_at_least(count, "SOSPolynomial: count")
        self.degree = integer_at_least(degree, "SOSPolynomial: degree", 0)
        if not min_slope > 0:
            raise ValueError(f"SOSPolynomial: min_slope must be positive, got {min_slope}")
        self.min_slope = float(min_slope)
        super().__init__(
            Plan(DenseAutoregressive) if params_fn is None else params_fn,
            shape=shape,
            context_shape=context_shape,
            solver=solver,
            tol=tol,
            max_iter=max_iter,
        )
        r = self.degree
        ell = torch.arange(r + 1)
        sums = (ell[:, None] + ell[None, :])[..., None] == torch.arange(2 * r + 1)
        self.register_buffer("_antidiagonals", sums.to(torch.get_default_dtype()), persistent=False)

    def param_shapes(self) -> tuple[torch.Size, ...]:
        return (torch.Size((*self.shape, self.count, self.degree + 1)), self.shape)

    def _transform(self, y: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        a, beta = params
        r = self.degree
        coeffs = torch.cat([a[..., :1] + 1.0, a[..., 1:]], dim=-1)  # (..., K, r + 1)
        exponents = torch.arange(2 * r + 2, dtype=y.dtype, device=y.device)
        powers = y[..., None] ** exponents  # y^0 .. y^(2r+1)
        q = (coeffs * powers[..., None, : r + 1]).sum(-1)  # (..., K)
        slope = q.square().mean(-1) + self.min_slope
        products = (coeffs[..., :, None] * coeffs[..., None, :]).mean(-3)  # (..., r + 1, r + 1)
        c = (products[..., None] * self._antidiagonals.to(y.dtype)).sum((-3, -2))  # (..., 2r + 1)
        integral = (c * powers[..., 1:] / exponents[1:]).sum(-1)
        return beta + self.min_slope * y + integral, slope.log()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, count={self.count}, degree={self.degree}"


class Bernstein(_Monotone):
    r"""Bernstein-polynomial transformer, elementwise, with linear extrapolation outside ``[-B, B]``.

    With :math:`u = (y + B) / (2B)` and increasing coefficients
    :math:`\theta_0 = -B + \tilde\theta_0`,
    :math:`\theta_k = \theta_{k-1} + \operatorname{softplus}(\tilde\theta_k + s)`,
    :math:`s = \log(e^{2B/M} - 1)` (cumulative softplus),

    .. math::

        T(y) = \sum_{k=0}^{M} \theta_k \binom{M}{k} u^k (1 - u)^{M-k}, \qquad
        T'(y) = \frac{M}{2B} \sum_{k=0}^{M-1} (\theta_{k+1} - \theta_k)
                \binom{M-1}{k} u^k (1 - u)^{M-1-k} > 0

    on :math:`[-B, B]`, and outside it :math:`T(y) = T(y_c) + T'(y_c)(y - y_c)` with
    :math:`y_c = \operatorname{clamp}(y, -B, B)` (:math:`C^1`, onto :math:`\mathbb{R}`). The log-slope is
    a log-sum-exp over the basis. Zero parameters give the identity. ``inverse`` evaluates
    :math:`T`; ``forward`` solves it numerically (module docstring). The conditioner is free
    parameters by default (``flowtorch.parameters.Tensor()``), an affine function of the
    context when one is given.

    References: Sick, Hothorn, Dürr, "Deep transformation models: Tackling complex regression
    problems with neural network based transformation models", ICPR 2020; Ramasinghe et al.,
    "Robust normalizing flows using Bernstein-type polynomials", 2021.

    Args:
        params_fn: conditioner plan; default ``flowtorch.parameters.Tensor()``.
        degree: polynomial degree :math:`M` (``M + 1`` coefficients per element).
        bound: :math:`B`, half-width of the polynomial's interval.
        solver: ``"newton"`` or ``"bisection"`` for ``forward``.
        tol: tolerance of the numerical inverse (default: 16 machine epsilons).
        max_iter: iterations of the numerical inverse.

    Example:
        >>> import torch
        >>> from flowtorch.bijectors.monotonic import Bernstein
        >>> b = Bernstein(degree=6)(shape=torch.Size([2]))
        >>> y = torch.tensor([[-7.0, 0.5]])
        >>> bool((b.inverse(y) - y).abs().max() < 0.05)  # near the identity at initialisation
        True
        >>> torch.allclose(b.forward(b.inverse(y)), y, atol=1e-5)
        True
    """

    costs = Costs(
        "numerical",
        "an elementwise root solve",
        "O(D·M) elementwise (degree M)",
        "O(D·M), closed form",
        reference="Sick et al. 2020; Ramasinghe et al. 2021",
    )

    def __init__(
        self,
        params_fn: Any = None,
        *,
        shape: torch.Size | tuple[int, ...],
        context_shape: torch.Size | tuple[int, ...] | None = None,
        degree: int = 10,
        bound: float = 4.0,
        solver: str = "newton",
        tol: float | None = None,
        max_iter: int = 100,
    ) -> None:
        self.degree = integer_at_least(degree, "Bernstein: degree")
        if not bound > 0:
            raise ValueError(f"Bernstein: bound must be positive, got {bound}")
        self.bound = float(bound)
        self._shift = math.log(math.expm1(2.0 * self.bound / self.degree))
        super().__init__(
            Plan(Tensor) if params_fn is None else params_fn,
            shape=shape,
            context_shape=context_shape,
            solver=solver,
            tol=tol,
            max_iter=max_iter,
        )

    def param_shapes(self) -> tuple[torch.Size, ...]:
        return (torch.Size((*self.shape, self.degree + 1)),)

    def _transform(self, y: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
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


class UMNN(_Monotone):
    r"""Unconstrained monotonic neural network transformer: the integral of a positive network.

    For each dim, with an embedding :math:`h(y_{<i})` and offset :math:`\beta(y_{<i})` from an
    autoregressive conditioner and a network :math:`z(t, h)` shared by all dims,

    .. math::

        x = T(y) = \beta + \int_0^{y} g(t, h)\,dt, \qquad g = \operatorname{ELU}(z) + 1 > 0,
        \qquad \log T'(y) = \log g(y, h),

    the integral by a fixed ``nodes``-point Gauss-Legendre (or Clenshaw-Curtis) rule on
    :math:`[0, y]`. The log-det is that of the exact integral, :math:`\log g`, as in the paper;
    the map actually computed is the quadrature, which differs from the exact integral by the
    quadrature error (tested: about ``1e-8`` against a 256-node rule for outputs up to 20).
    ``forward`` inverts the quadrature numerically (module docstring), so round trips are exact to
    the solver's tolerance. A smooth activation (``tanh``) keeps the quadrature's convergence
    spectral. ``inverse`` evaluates :math:`T`.

    Reference: Wehenkel and Louppe, "Unconstrained Monotonic Neural Networks", NeurIPS 2019.

    Args:
        params_fn: conditioner plan; default ``flowtorch.parameters.DenseAutoregressive()``.
        embedding_dim: size of :math:`h` per dim.
        hidden_dims: hidden layers of the integrand network.
        nodes: number of quadrature nodes.
        rule: ``"gauss-legendre"`` or ``"clenshaw-curtis"``.
        nonlinearity: activation module class of the integrand network.
        solver: ``"newton"`` or ``"bisection"`` for ``forward``.
        tol: tolerance of the numerical inverse (default: 16 machine epsilons).
        max_iter: iterations of the numerical inverse.

    Example:
        >>> import torch
        >>> from flowtorch.bijectors.monotonic import UMNN
        >>> b = UMNN(hidden_dims=(8,), nodes=16)(shape=torch.Size([2]))
        >>> y = torch.randn(5, 2)
        >>> x, ladj = b.inverse_and_ladj(y)
        >>> x.shape, ladj.shape
        (torch.Size([5, 2]), torch.Size([5]))
    """

    costs = Costs(
        "numerical, sequential",
        "D sequential passes, each an elementwise root solve",
        "1 parallel pass of the conditioner + quadrature (N nodes)",
        "O(D), the integrand at y",
        reference="Wehenkel & Louppe 2019",
    )

    conditioned_on_output = True

    def __init__(
        self,
        params_fn: Any = None,
        *,
        shape: torch.Size | tuple[int, ...],
        context_shape: torch.Size | tuple[int, ...] | None = None,
        embedding_dim: int = 8,
        hidden_dims: Sequence[int] = (32, 32),
        nodes: int = 32,
        rule: str = "gauss-legendre",
        nonlinearity: Callable[[], nn.Module] = nn.Tanh,
        solver: str = "newton",
        tol: float | None = None,
        max_iter: int = 100,
    ) -> None:
        nonscalar_event("UMNN", shape)
        self.embedding_dim = integer_at_least(embedding_dim, "UMNN: embedding_dim")
        hidden = tuple(hidden_dims)
        if not hidden:
            raise ValueError("UMNN: hidden_dims needs at least one layer")
        for h in hidden:
            integer_at_least(h, "UMNN: every hidden dim")
        self.hidden_dims = hidden
        quadrature_rule(rule, nodes)  # checks rule and nodes
        self.nodes = nodes
        self.rule = rule
        super().__init__(
            Plan(DenseAutoregressive) if params_fn is None else params_fn,
            shape=shape,
            context_shape=context_shape,
            solver=solver,
            tol=tol,
            max_iter=max_iter,
        )
        self.integrand = IntegrandNet(self.embedding_dim, hidden, nonlinearity)

    def param_shapes(self) -> tuple[torch.Size, ...]:
        return (torch.Size((*self.shape, self.embedding_dim)), self.shape)

    def _transform(self, y: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        h, beta = params

        def g(t: torch.Tensor) -> torch.Tensor:
            return F.elu(self.integrand(t, h)) + 1.0

        integral = quadrature(
            g, torch.zeros((), dtype=y.dtype, device=y.device), y, n=self.nodes, rule=self.rule
        )
        z = self.integrand(y[..., None], h)[..., 0]
        log_g = torch.where(z > 0, torch.log1p(z.clamp_min(0)), z.clamp_max(0))  # log(ELU(z) + 1)
        return beta + integral, log_g

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, nodes={self.nodes}, rule={self.rule!r}"
