r"""Monotone polynomial and integral flows, inverted numerically.

Each bijector here applies an elementwise, strictly increasing *transformer* :math:`T` (a
:class:`~flowtorch.transformers.MonotoneTransformer`) with parameters from a conditioner.
Following the papers, which use them for density estimation, :math:`T` maps the data side to the
base side: ``inverse(y) = T(y)`` is closed form (or a fixed quadrature) and parallel, and
``log_prob`` costs one pass. ``forward`` (sampling) solves :math:`T(y) = x` numerically for the
whole batch at once: a bracket :math:`T(\mathrm{lo}) \le x \le T(\mathrm{hi})` found by expansion
from :math:`[x - 1, x + 1]`, then safeguarded Newton steps (``solver="newton"``, the default) or
bisection (``"bisection"``) until the step is within ``tol * (1 + |y|)`` (default ``tol``: 16
machine epsilons of the dtype), or ``max_iter`` iterations; a last Newton step carries the
implicit-function gradient (:func:`flowtorch.ops.numerical.attach_root_gradient`). Round trips are
tested to ``1e-9`` in float64 and ``1e-4`` in float32. ``Invert(...)`` swaps the costs (sampling
closed form, density numerical).

With an autoregressive conditioner (``SOSPolynomial`` and ``UMNN`` by default) the conditioner
reads the data side (MAF direction, ``conditioned_on_output = True``): density evaluation is one
parallel pass; sampling takes :math:`D` passes, each a numerical elementwise inverse.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from flowtorch.core.bijector import Conditioner, Costs
from flowtorch.core.elementwise import ElementwiseBijector
from flowtorch.core.lazy import Plan
from flowtorch.core.validation import integer_at_least, nonscalar_event
from flowtorch.nn.integrand import IntegrandNet
from flowtorch.ops.numerical import quadrature_rule
from flowtorch.parameters import DenseAutoregressive, Tensor
from flowtorch.transformers import (
    SOLVERS,
    BernsteinTransformer,
    MonotoneTransformer,
    SOSTransformer,
    UMNNTransformer,
)

__all__ = ["SOLVERS", "UMNN", "Bernstein", "MonotoneBijector", "SOSPolynomial"]


class MonotoneBijector(ElementwiseBijector, base=True):
    """The family base: an elementwise bijector applying a
    :class:`~flowtorch.transformers.MonotoneTransformer` (closed form in ``inverse``, a root solve
    in ``forward``). Subclasses set ``self.transformer`` before calling ``super().__init__``.

    Example:
        >>> import torch
        >>> from flowtorch.bijectors.monotonic import MonotoneBijector
        >>> from flowtorch.parameters import Tensor
        >>> from flowtorch.transformers import DeepSigmoidTransformer
        >>> class DeepSigmoid(MonotoneBijector):  # one deep-sigmoid map per element
        ...     def __init__(self, params_fn=Tensor(), *, shape, context_shape=None):
        ...         self.transformer = DeepSigmoidTransformer(hidden_units=4)
        ...         super().__init__(params_fn, shape=shape, context_shape=context_shape)
        >>> b = DeepSigmoid(shape=torch.Size([2]))
        >>> y = torch.randn(5, 2)
        >>> x = b.inverse(y)  # closed form
        >>> torch.allclose(b.forward(x), y, atol=1e-4), b.log_abs_det_jacobian(x, y).shape
        (True, torch.Size([5]))
    """

    transformer: MonotoneTransformer
    forward_ladj_reads_output = True  # the log-derivative of a root solve is T's at the root

    # the solver's settings may be changed after construction, as plain attributes could before
    @property
    def solver(self) -> str:
        """``"newton"`` or ``"bisection"``: the numerical inverse of ``forward``."""
        return self.transformer.solver

    @solver.setter
    def solver(self, value: str) -> None:
        if value not in SOLVERS:
            raise ValueError(f"{type(self).__name__}: solver must be one of {SOLVERS}, got {value!r}")
        self.transformer.solver = value

    @property
    def tol(self) -> float | None:
        """The tolerance of the numerical inverse (``None``: 16 machine epsilons of the dtype)."""
        return self.transformer.tol

    @tol.setter
    def tol(self, value: float | None) -> None:
        if value is not None and not value > 0:
            raise ValueError(f"{type(self).__name__}: tol must be positive or None, got {value}")
        self.transformer.tol = None if value is None else float(value)

    @property
    def max_iter(self) -> int:
        """The iterations of the numerical inverse."""
        return self.transformer.max_iter

    @max_iter.setter
    def max_iter(self, value: int) -> None:
        self.transformer.max_iter = integer_at_least(value, f"{type(self).__name__}: max_iter")


class SOSPolynomial(MonotoneBijector):
    r"""Sum-of-squares polynomial flow: an autoregressive, strictly increasing polynomial transformer.

    For each dim, with coefficients :math:`a_{k,l}(y_{<i})` and offset :math:`\beta(y_{<i})` from the
    conditioner, :math:`q_k(t) = 1 + \sum_{l=0}^{r} a_{k,l} t^l` and

    .. math::

        x = T(y) = \beta + \epsilon y + \int_0^y \frac1K \sum_{k=1}^{K} q_k(t)^2\,dt,

    a polynomial of odd degree :math:`2r + 1` with :math:`T' \ge \epsilon > 0`, its integral in
    closed form (:class:`~flowtorch.transformers.SOSTransformer`, which this bijector applies,
    gives the coefficients). Zero coefficients give :math:`T(y) = (1 + \epsilon) y`. ``inverse``
    evaluates :math:`T`; ``forward`` solves it numerically (module docstring).

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
    transformer: SOSTransformer

    def __init__(
        self,
        params_fn: Conditioner | None = None,
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
        self.transformer = SOSTransformer(count, degree, min_slope, solver, tol, max_iter, "SOSPolynomial")
        super().__init__(
            Plan(DenseAutoregressive) if params_fn is None else params_fn,
            shape=shape,
            context_shape=context_shape,
        )

    @property
    def count(self) -> int:
        """:math:`K`, the number of squared polynomials."""
        return self.transformer.count

    @property
    def degree(self) -> int:
        """:math:`r`, the degree of each polynomial."""
        return self.transformer.degree

    @property
    def min_slope(self) -> float:
        """:math:`\\epsilon`, the lower bound on :math:`T'`."""
        return self.transformer.min_slope


class Bernstein(MonotoneBijector):
    r"""Bernstein-polynomial transformer, elementwise, with linear extrapolation outside ``[-B, B]``.

    With :math:`u = (y + B) / (2B)` and increasing coefficients :math:`\theta_0 < \dots < \theta_M`
    from the conditioner's output (a cumulative softplus),

    .. math::

        T(y) = \sum_{k=0}^{M} \theta_k \binom{M}{k} u^k (1 - u)^{M-k}

    on :math:`[-B, B]`, continued linearly outside it (:math:`C^1`, onto :math:`\mathbb{R}`); the
    map and its log-slope are those of :class:`~flowtorch.transformers.BernsteinTransformer`,
    which this bijector applies. Zero parameters give the identity. ``inverse`` evaluates
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

    sign = 1  # increasing, elementwise
    transformer: BernsteinTransformer

    def __init__(
        self,
        params_fn: Conditioner | None = None,
        *,
        shape: torch.Size | tuple[int, ...],
        context_shape: torch.Size | tuple[int, ...] | None = None,
        degree: int = 10,
        bound: float = 4.0,
        solver: str = "newton",
        tol: float | None = None,
        max_iter: int = 100,
    ) -> None:
        self.transformer = BernsteinTransformer(degree, bound, solver, tol, max_iter, "Bernstein")
        super().__init__(
            Plan(Tensor) if params_fn is None else params_fn,
            shape=shape,
            context_shape=context_shape,
        )

    @property
    def degree(self) -> int:
        """:math:`M`, the polynomial degree."""
        return self.transformer.degree

    @property
    def bound(self) -> float:
        """:math:`B`, the half-width of the polynomial's interval."""
        return self.transformer.bound


class UMNN(MonotoneBijector):
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
    transformer: UMNNTransformer

    def __init__(
        self,
        params_fn: Conditioner | None = None,
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
        self.transformer = UMNNTransformer(
            None, self.embedding_dim, nodes, rule, solver, tol, max_iter, "UMNN"
        )
        super().__init__(
            Plan(DenseAutoregressive) if params_fn is None else params_fn,
            shape=shape,
            context_shape=context_shape,
        )
        # registered here (its parameters are the bijector's), applied by the transformer
        self.integrand = self.transformer.integrand = IntegrandNet(self.embedding_dim, hidden, nonlinearity)

    # the quadrature may be refined after training (the paper evaluates with more nodes)
    @property
    def nodes(self) -> int:
        """The number of quadrature nodes."""
        return self.transformer.nodes

    @nodes.setter
    def nodes(self, value: int) -> None:
        quadrature_rule(self.rule, value)  # checks it
        self.transformer.nodes = value

    @property
    def rule(self) -> str:
        """The quadrature rule."""
        return self.transformer.rule

    @rule.setter
    def rule(self, value: str) -> None:
        quadrature_rule(value, self.nodes)  # checks it
        self.transformer.rule = value
