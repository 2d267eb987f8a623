r"""Fixed-node quadrature and vectorised root finding for monotone maps, as pure tensor functions.

Quadrature: :func:`gauss_legendre` and :func:`clenshaw_curtis` give nodes :math:`s_j` and weights
:math:`w_j` on :math:`[-1, 1]`; :func:`quadrature` maps them onto :math:`[a, b]` elementwise,

.. math::

    \int_a^b f(t)\,dt \approx \frac{b - a}{2} \sum_{j=1}^{n} w_j\,
        f\!\left(a + \frac{b - a}{2}(s_j + 1)\right).

An :math:`n`-point Gauss-Legendre rule is exact for polynomials of degree :math:`2n - 1`, an
:math:`n`-point Clenshaw-Curtis rule (nodes :math:`\cos(\pi j / (n - 1))`) for degree :math:`n - 1`;
both converge spectrally for analytic integrands.

Root finding: for an increasing elementwise map :math:`f` and a target :math:`y`, find :math:`x`
with :math:`f(x) = y` for every element of a batch at once. :func:`find_bracket` expands an
interval until :math:`f(\mathrm{lo}) \le y \le f(\mathrm{hi})`; :func:`bisect_monotone` halves it;
:func:`newton_monotone` takes Newton steps :math:`x - (f(x) - y) / f'(x)` that stay inside the
shrinking bracket and bisects otherwise (the safeguard of "rtsafe", Press et al., *Numerical
Recipes*, section 9.4). Both stop when every element's step (or bracket) is within
``atol + rtol * |x|``, or after ``max_iter`` iterations, and return a tensor without gradient:
:func:`attach_root_gradient` then adds the implicit-function gradient with one Newton step.

References:
    G. H. Golub, J. H. Welsch. *Calculation of Gauss Quadrature Rules*. Math. Comp., 1969.
    L. N. Trefethen. *Is Gauss Quadrature Better than Clenshaw-Curtis?* SIAM Review, 2008.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from flowtorch.core.compat import is_compiling
from flowtorch.core.shapes import broadcast_shapes
from flowtorch.core.validation import integer_at_least

__all__ = [
    "attach_root_gradient",
    "bisect_monotone",
    "clenshaw_curtis",
    "find_bracket",
    "gauss_legendre",
    "newton_monotone",
    "quadrature",
    "quadrature_rule",
    "refuse_second_order",
]

#: Default tolerances of the root finders, in machine epsilons of the target's dtype.
DEFAULT_TOL_EPS = 16.0


# --------------------------------------------------------------------------- quadrature rules


@functools.lru_cache(maxsize=64)
def _gauss_legendre64(n: int) -> tuple[Tensor, Tensor]:
    # Golub-Welsch: the nodes are the eigenvalues of the Jacobi matrix of the Legendre
    # recurrence; two Newton steps on P_n then give them (and the weights) to full precision.
    k = torch.arange(1, n, dtype=torch.float64)
    beta = k / torch.sqrt(4.0 * k * k - 1.0)
    nodes = torch.linalg.eigvalsh(torch.diag(beta, 1) + torch.diag(beta, -1))
    for _ in range(2):
        p, dp = _legendre(n, nodes)
        nodes = nodes - p / dp
    _, dp = _legendre(n, nodes)
    weights = 2.0 / ((1.0 - nodes * nodes) * dp * dp)
    # exact symmetry about 0
    nodes = (nodes - nodes.flip(0)) / 2
    weights = (weights + weights.flip(0)) / 2
    return nodes, weights


def _legendre(n: int, x: Tensor) -> tuple[Tensor, Tensor]:
    """:math:`P_n(x)` and :math:`P_n'(x)` by the three-term recurrence."""
    p0, p1 = torch.ones_like(x), x
    for k in range(2, n + 1):
        p0, p1 = p1, ((2 * k - 1) * x * p1 - (k - 1) * p0) / k
    if n == 0:
        return p0, torch.zeros_like(x)
    return p1, n * (x * p1 - p0) / (x * x - 1.0)


@functools.lru_cache(maxsize=64)
def _clenshaw_curtis64(n: int) -> tuple[Tensor, Tensor]:
    m = n - 1  # number of intervals
    j = torch.arange(n, dtype=torch.float64)
    nodes = -torch.cos(math.pi * j / m)  # ascending
    k = torch.arange(1, m // 2 + 1, dtype=torch.float64)
    b = torch.full_like(k, 2.0)
    if m % 2 == 0:
        b[-1] = 1.0
    terms = b / (4.0 * k * k - 1.0) * torch.cos(2.0 * math.pi * j[:, None] * k[None, :] / m)
    c = torch.full_like(j, 2.0)
    c[0] = c[-1] = 1.0
    weights = c / m * (1.0 - terms.sum(-1))
    nodes = (nodes - nodes.flip(0)) / 2
    weights = (weights + weights.flip(0)) / 2
    return nodes, weights


def _check_nodes(name: str, n: int, minimum: int) -> None:
    integer_at_least(n, f"{name}: the number of nodes", minimum)


def gauss_legendre(
    n: int, dtype: torch.dtype | None = None, device: torch.device | str | None = None
) -> tuple[Tensor, Tensor]:
    r"""Nodes and weights of the :math:`n`-point Gauss-Legendre rule on :math:`[-1, 1]`.

    The nodes are the roots of the Legendre polynomial :math:`P_n` and the weights
    :math:`w_j = 2 / [(1 - s_j^2) P_n'(s_j)^2]`; the rule integrates polynomials of degree up to
    :math:`2n - 1` exactly. Computed once per ``n`` in float64 (Golub-Welsch, then Newton).

    Reference: Golub & Welsch, "Calculation of Gauss Quadrature Rules", Math. Comp., 1969.

    Args:
        n: number of nodes, at least 1.
        dtype: dtype of the returned tensors (default: torch's default dtype).
        device: device of the returned tensors.

    Returns:
        ``(nodes, weights)``, each of shape ``(n,)``, nodes ascending.

    Example:
        >>> nodes, weights = gauss_legendre(3, dtype=torch.float64)
        >>> round(float((weights * nodes**4).sum()), 12)  # integral of t^4 over [-1, 1]
        0.4
    """
    _check_nodes("gauss_legendre", n, 1)
    nodes, weights = _gauss_legendre64(n)
    dtype = dtype or torch.get_default_dtype()
    return nodes.to(device=device, dtype=dtype), weights.to(device=device, dtype=dtype)


def clenshaw_curtis(
    n: int, dtype: torch.dtype | None = None, device: torch.device | str | None = None
) -> tuple[Tensor, Tensor]:
    r"""Nodes and weights of the :math:`n`-point Clenshaw-Curtis rule on :math:`[-1, 1]`.

    With :math:`m = n - 1`, the nodes are the Chebyshev extrema :math:`s_j = -\cos(\pi j / m)`
    (both ends included) and the weights

    .. math::

        w_j = \frac{c_j}{m}\Big[1 - \sum_{k=1}^{\lfloor m/2 \rfloor}
              \frac{b_k}{4k^2 - 1}\cos\frac{2\pi jk}{m}\Big],

    :math:`c_0 = c_m = 1`, :math:`c_j = 2` otherwise, :math:`b_{m/2} = 1`, :math:`b_k = 2`
    otherwise. Exact for polynomials of degree up to :math:`n - 1`.

    References: Clenshaw & Curtis, "A method for numerical integration on an automatic
    computer", Numer. Math., 1960; Trefethen, "Is Gauss Quadrature Better than Clenshaw-Curtis?",
    SIAM Review, 2008.

    Args:
        n: number of nodes, at least 2.
        dtype: dtype of the returned tensors (default: torch's default dtype).
        device: device of the returned tensors.

    Returns:
        ``(nodes, weights)``, each of shape ``(n,)``, nodes ascending.

    Example:
        >>> nodes, weights = clenshaw_curtis(3, dtype=torch.float64)  # Simpson's rule
        >>> [round(w, 12) for w in weights.tolist()]
        [0.333333333333, 1.333333333333, 0.333333333333]
    """
    _check_nodes("clenshaw_curtis", n, 2)
    nodes, weights = _clenshaw_curtis64(n)
    dtype = dtype or torch.get_default_dtype()
    return nodes.to(device=device, dtype=dtype), weights.to(device=device, dtype=dtype)


_RULES: dict[str, Callable[..., tuple[Tensor, Tensor]]] = {
    "gauss-legendre": gauss_legendre,
    "clenshaw-curtis": clenshaw_curtis,
}


def quadrature_rule(
    rule: str, n: int, dtype: torch.dtype | None = None, device: torch.device | str | None = None
) -> tuple[Tensor, Tensor]:
    r"""Nodes and weights of ``rule`` (``"gauss-legendre"`` or ``"clenshaw-curtis"``) on [-1, 1].

    The rule approximates

    .. math:: \int_{-1}^{1} f(s)\,ds \approx \sum_{j=1}^{n} w_j f(s_j);

    see :func:`gauss_legendre` and :func:`clenshaw_curtis`.

    Reference: Trefethen, "Is Gauss Quadrature Better than Clenshaw-Curtis?", SIAM Review, 2008
    (the two rules compared).

    Args:
        rule: ``"gauss-legendre"`` or ``"clenshaw-curtis"``.
        n: number of nodes (at least 1 for Gauss-Legendre, 2 for Clenshaw-Curtis).
        dtype: dtype of the returned tensors (default: torch's default dtype).
        device: device of the returned tensors.

    Returns:
        ``(nodes, weights)``, each of shape ``(n,)``, nodes ascending.

    Example:
        >>> nodes, weights = quadrature_rule("gauss-legendre", 2, dtype=torch.float64)
        >>> round(float(nodes[1]) ** 2, 12), round(weights.sum().item(), 12)
        (0.333333333333, 2.0)
    """
    if rule not in _RULES:
        raise ValueError(f"quadrature_rule: unknown rule {rule!r}; use one of {sorted(_RULES)}")
    return _RULES[rule](n, dtype=dtype, device=device)


def quadrature(
    fn: Callable[[Tensor], Tensor],
    lower: Tensor | float,
    upper: Tensor | float,
    *,
    n: int = 32,
    rule: str = "gauss-legendre",
) -> Tensor:
    r"""Elementwise definite integrals :math:`\int_a^b f(t)\,dt` by a fixed ``n``-node rule.

    The rule's nodes :math:`s_j` and weights :math:`w_j` on :math:`[-1, 1]` are mapped onto
    every interval:

    .. math::
        \int_a^b f(t)\,dt \approx \frac{b - a}{2} \sum_{j=1}^{n} w_j\,
            f\!\left(a + \frac{b - a}{2}(s_j + 1)\right).

    Reference: Trefethen, "Is Gauss Quadrature Better than Clenshaw-Curtis?", SIAM Review, 2008.

    Args:
        fn: the integrand; called once with the nodes of every interval, a tensor of shape
            ``S + (n,)`` (``S`` the broadcast shape of ``lower`` and ``upper``), it returns values
            of the same shape (or one that broadcasts to it). Anything it closes over
            (per-element parameters) must broadcast against ``S + (n,)``.
        lower: lower limits :math:`a`, shape broadcasting to ``S``.
        upper: upper limits :math:`b`.
        n: number of nodes.
        rule: ``"gauss-legendre"`` or ``"clenshaw-curtis"``.

    Returns:
        The integrals, shape ``S``. Differentiable with respect to the limits and to whatever
        ``fn`` closes over.

    Example:
        >>> b = torch.tensor([1.0, 2.0], dtype=torch.float64)
        >>> quadrature(torch.exp, 0.0, b, n=16)  # e^b - 1
        tensor([1.7183, 6.3891], dtype=torch.float64)
    """
    tensors = [v for v in (lower, upper) if isinstance(v, Tensor)]
    if tensors:
        dtype = functools.reduce(torch.promote_types, [t.dtype for t in tensors])
        device = tensors[0].device
    else:
        dtype, device = torch.get_default_dtype(), torch.device("cpu")
    if not dtype.is_floating_point:
        raise TypeError(f"quadrature: the limits must be floating point, got {dtype}")
    a = torch.as_tensor(lower, dtype=dtype, device=device)
    b = torch.as_tensor(upper, dtype=dtype, device=device)
    nodes, weights = quadrature_rule(rule, n, dtype=dtype, device=device)
    half = (b - a) / 2
    t = a[..., None] + half[..., None] * (nodes + 1.0)
    values = fn(t)
    return half * (values * weights).sum(-1)


# --------------------------------------------------------------------------- root finding


def _tolerances(dtype: torch.dtype, atol: float | None, rtol: float | None) -> tuple[float, float]:
    eps = float(torch.finfo(dtype).eps)
    atol = DEFAULT_TOL_EPS * eps if atol is None else float(atol)
    rtol = DEFAULT_TOL_EPS * eps if rtol is None else float(rtol)
    if atol < 0 or rtol < 0 or not (atol > 0 or rtol > 0):
        raise ValueError(f"atol and rtol must be non-negative and not both zero, got {atol}, {rtol}")
    return atol, rtol


def _check_solver_args(name: str, target: Tensor, max_iter: int) -> None:
    if not isinstance(target, Tensor) or not target.is_floating_point():
        raise TypeError(f"{name}: target must be a floating-point tensor")
    integer_at_least(max_iter, f"{name}: max_iter")


def find_bracket(
    fn: Callable[[Tensor], Tensor],
    target: Tensor,
    lower: Tensor | float = -1.0,
    upper: Tensor | float = 1.0,
    *,
    max_expand: int = 64,
    strict: bool = True,
) -> tuple[Tensor, Tensor]:
    r"""Brackets the roots of :math:`f(x) = y` for an increasing elementwise ``fn``.

    Starting from ``[lower, upper]``, every element whose interval does not yet satisfy
    :math:`f(\mathrm{lo}) \le y \le f(\mathrm{hi})` becomes the interval of twice its width just beyond its
    offending end (so the search grows geometrically). No gradient is
    recorded.

    Reference: Press, Teukolsky, Vetterling & Flannery, "Numerical Recipes: The Art of Scientific
    Computing", 3rd ed., 2007, section 9.1 (bracketing a root by expanding the interval).

    Args:
        fn: increasing elementwise map; ``fn(x)`` broadcasts against ``target``.
        target: the values :math:`y`, any shape.
        lower: initial lower ends (broadcasting to the target's shape).
        upper: initial upper ends, larger than ``lower``.
        max_expand: how many expansions to try before giving up.
        strict: raise for elements that cannot be bracketed; with ``False`` their ends are NaN.

    Returns:
        ``(lo, hi)``, tensors of the broadcast shape of ``target`` and ``fn``'s output.

    Raises:
        ValueError: if ``strict`` and some element is still not bracketed after ``max_expand``
            expansions (its target lies outside the range of a bounded map, or ``fn`` is not
            increasing).

    Example:
        >>> lo, hi = find_bracket(torch.sinh, torch.tensor([-50.0, 0.5, 300.0]))
        >>> bool(((torch.sinh(lo) <= torch.tensor([-50.0, 0.5, 300.0])) & (lo < hi)).all())
        True
    """
    if isinstance(max_expand, bool) or not isinstance(max_expand, int) or max_expand < 0:
        raise ValueError(f"find_bracket: max_expand must be a non-negative integer, got {max_expand!r}")
    with torch.no_grad():
        target = target.detach()
        lo = torch.as_tensor(lower, dtype=target.dtype, device=target.device)
        hi = torch.as_tensor(upper, dtype=target.dtype, device=target.device)
        if bool((hi <= lo).any()):
            raise ValueError("find_bracket: every upper end must be larger than its lower end")
        f_lo, f_hi = fn(lo), fn(hi)
        shape = broadcast_shapes(lo.shape, hi.shape, f_lo.shape, f_hi.shape, target.shape)
        lo, hi = lo.expand(shape).clone(), hi.expand(shape).clone()
        f_lo, f_hi = f_lo.expand(shape), f_hi.expand(shape)
        for i in range(max_expand + 1):
            too_high = f_lo > target  # the root is below lo
            too_low = f_hi < target  # the root is above hi
            bad = too_high | too_low
            if not bool(bad.any()) or i == max_expand:
                break
            width = hi - lo
            lo, hi = (
                torch.where(too_high, lo - 2 * width, torch.where(too_low, hi, lo)),
                torch.where(too_low, hi + 2 * width, torch.where(too_high, lo, hi)),
            )
            f_lo, f_hi = fn(lo).expand(shape), fn(hi).expand(shape)
        if not bool(bad.any()):
            return lo, hi
        if not strict:
            nan = torch.full_like(lo, math.nan)
            return torch.where(bad, nan, lo), torch.where(bad, nan, hi)
        raise ValueError(
            f"find_bracket: {int(bad.sum())} element(s) not bracketed after {max_expand} expansions "
            f"(last interval [{float(lo[bad].min()):.4g}, {float(hi[bad].max()):.4g}]): the target lies "
            "outside the range of the map (a bounded map?) or the map is not increasing"
        )


def bisect_monotone(
    fn: Callable[[Tensor], Tensor],
    target: Tensor,
    lower: Tensor | float = -1.0,
    upper: Tensor | float = 1.0,
    *,
    atol: float | None = None,
    rtol: float | None = None,
    max_iter: int = 200,
    max_expand: int = 64,
    strict: bool = True,
) -> Tensor:
    r"""Solves :math:`f(x) = y` elementwise by bisection, for an increasing ``fn``.

    The bracket from :func:`find_bracket` is halved until every element's width is at most
    ``atol + rtol * max(|lo|, |hi|)`` (default ``16 * eps`` of the target's dtype for both), or
    ``max_iter`` times. The returned midpoint is then within half that width of the root. Each
    iteration evaluates ``fn`` once on the whole batch. No gradient is recorded: see
    :func:`attach_root_gradient`.

    Reference: Press, Teukolsky, Vetterling & Flannery, "Numerical Recipes: The Art of Scientific
    Computing", 3rd ed., 2007, section 9.1 (bisection).

    Args:
        fn: increasing elementwise map; ``fn(x)`` broadcasts against ``target``.
        target: the values :math:`y`.
        lower: initial lower ends of the bracket.
        upper: initial upper ends of the bracket.
        atol: absolute tolerance on the bracket width.
        rtol: relative tolerance on the bracket width.
        max_iter: maximum number of halvings.
        max_expand: maximum number of bracket expansions.
        strict: raise for elements that cannot be bracketed (see :func:`find_bracket`); with
            ``False`` they come back as NaN.

    Returns:
        The roots, of the broadcast shape of ``target`` and ``fn``'s output.

    Example:
        >>> y = torch.tensor([-3.0, 0.0, 10.0], dtype=torch.float64)
        >>> x = bisect_monotone(lambda x: x**3 + x, y)
        >>> torch.allclose(x**3 + x, y, atol=1e-12)
        True
    """
    _check_solver_args("bisect_monotone", target, max_iter)
    atol_, rtol_ = _tolerances(target.dtype, atol, rtol)
    with torch.no_grad():
        target = target.detach()
        lo, hi = find_bracket(fn, target, lower, upper, max_expand=max_expand, strict=strict)
        unbracketed = torch.isnan(lo)
        for _ in range(max_iter):
            mid = lo + (hi - lo) / 2
            below = fn(mid) < target
            lo = torch.where(below, mid, lo)
            hi = torch.where(below, hi, mid)
            if bool(((hi - lo <= atol_ + rtol_ * torch.maximum(lo.abs(), hi.abs())) | unbracketed).all()):
                break
        return lo + (hi - lo) / 2


def newton_monotone(
    fn: Callable[[Tensor], tuple[Tensor, Tensor]],
    target: Tensor,
    lower: Tensor | float = -1.0,
    upper: Tensor | float = 1.0,
    *,
    initial: Tensor | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    max_iter: int = 100,
    max_expand: int = 64,
    strict: bool = True,
) -> Tensor:
    r"""Solves :math:`f(x) = y` elementwise by safeguarded Newton steps, for an increasing ``fn``.

    Keeps a bracket :math:`[\mathrm{lo}, \mathrm{hi}]` (from :func:`find_bracket`, shrunk by the
    sign of :math:`f(x) - y` at every iterate). The Newton step
    :math:`x - (f(x) - y) / f'(x)` is taken when it lands strictly inside the bracket and at most
    halves the step before last; otherwise the bracket is bisected. An element stops when its
    step or its bracket is at most ``atol + rtol * |x|`` (default ``16 * eps`` of the target's
    dtype for both) or its residual is exactly zero; the loop stops when all have, or after
    ``max_iter`` iterations. Convergence is quadratic near a simple root and never slower than
    bisection. No gradient is recorded: see :func:`attach_root_gradient`.

    Reference: Press, Teukolsky, Vetterling & Flannery, "Numerical Recipes: The Art of Scientific
    Computing", 3rd ed., 2007, section 9.4 (``rtsafe``: Newton's method safeguarded by bisection).

    Args:
        fn: ``x -> (f(x), f'(x))`` for an increasing elementwise map; broadcasts against ``target``.
        target: the values :math:`y`.
        lower: initial lower ends of the bracket.
        upper: initial upper ends of the bracket.
        initial: starting points (clamped into the bracket); default: the bracket's midpoints.
        atol: absolute tolerance on the step.
        rtol: relative tolerance on the step.
        max_iter: maximum number of iterations.
        max_expand: maximum number of bracket expansions.
        strict: raise for elements that cannot be bracketed (see :func:`find_bracket`); with
            ``False`` they come back as NaN.

    Returns:
        The roots, of the broadcast shape of ``target`` and ``fn``'s output.

    Example:
        >>> y = torch.tensor([-3.0, 0.0, 1e4], dtype=torch.float64)
        >>> x = newton_monotone(lambda x: (x**3 + x, 3 * x**2 + 1), y)
        >>> torch.allclose(x**3 + x, y, rtol=1e-14, atol=1e-14)
        True
    """
    _check_solver_args("newton_monotone", target, max_iter)
    atol_, rtol_ = _tolerances(target.dtype, atol, rtol)
    with torch.no_grad():
        target = target.detach()
        lo, hi = find_bracket(lambda v: fn(v)[0], target, lower, upper, max_expand=max_expand, strict=strict)
        x = lo + (hi - lo) / 2 if initial is None else torch.minimum(torch.maximum(initial.detach(), lo), hi)
        x = x.expand(lo.shape).clone()
        step = hi - lo  # the last step
        step_before = step  # the one before it
        done = torch.isnan(lo)  # unbracketed (strict=False): NaN throughout
        for _ in range(max_iter):
            value, slope = fn(x)
            r = value - target
            lo = torch.where(r < 0, x, lo)
            hi = torch.where(r > 0, x, hi)
            newton = x - r / slope
            tol = atol_ + rtol_ * x.abs()
            use_newton = (
                torch.isfinite(newton)
                & (newton >= lo)
                & (newton <= hi)
                & (2 * r.abs() <= (step_before * slope).abs())
            )
            converged = (r == 0) | (use_newton & ((newton - x).abs() <= tol)) | (hi - lo <= tol)
            x_new = torch.where(use_newton, newton, lo + (hi - lo) / 2)
            x_new = torch.where(r == 0, x, x_new)  # an exact root stays
            step_before, step = step, (x_new - x).abs()
            x = torch.where(done, x, x_new)
            done = done | converged
            if bool(done.all()):
                break
        return x


def attach_root_gradient(root: Tensor, value: Tensor, derivative: Tensor, target: Tensor) -> Tensor:
    r"""One Newton step from a detached root that carries the implicit-function gradient.

    For :math:`x^\star` with :math:`f(x^\star; \theta) \approx y`,

    .. math::

        x = x^\star - \frac{f(x^\star; \theta) - y}{\operatorname{sg}[f'(x^\star; \theta)]}

    (:math:`\operatorname{sg}` stops gradients) has the value of a Newton step and the first
    derivatives of the exact root: :math:`\partial x / \partial y = 1 / f'` and
    :math:`\partial x / \partial \theta = -(\partial f / \partial \theta) / f'`.

    Its second derivatives are not the root's (they lack the terms in :math:`f''` and
    :math:`\partial f' / \partial \theta`), so differentiating a gradient that went through it
    (``create_graph=True``, then a second backward pass: a gradient penalty, a Hessian) raises a
    ``RuntimeError`` rather than give a wrong number. A gradient taken with ``create_graph=True``
    and not differentiated again (``torch.autograd.functional.jacobian``, ``torch.func.jacrev``)
    is unaffected. (Under ``torch.compile`` the check is left out.)

    Reference: Köhler, Krämer & Noé, "Smooth Normalizing Flows", 2021 (gradients through a
    numerically inverted flow by the inverse function theorem, with a black-box root finder).

    Args:
        root: :math:`x^\star`, without gradient.
        value: :math:`f(x^\star; \theta)`, computed from ``root`` with gradients to :math:`\theta`.
        derivative: :math:`f'(x^\star; \theta)` (detached here).
        target: :math:`y`, with whatever gradient it carries.

    Example:
        >>> y = torch.tensor(2.0, requires_grad=True)
        >>> root = bisect_monotone(torch.exp, y)
        >>> x = attach_root_gradient(root, root.exp(), root.exp(), y)
        >>> x.backward(); round(float(y.grad), 6)  # d log(y) / dy
        0.5
    """
    x = root - (value - target) / derivative.detach()
    if x.requires_grad and value.requires_grad and not is_compiling():
        refuse_second_order(x, value, "a root found numerically (attach_root_gradient)")
    return x


class _SecondOrderRefused(torch.autograd.Function):
    """Zeros shaped as ``anchor`` whose backward raises ``message``."""

    generate_vmap_rule = True

    @staticmethod
    def forward(anchor: Tensor, message: str) -> Tensor:  # type: ignore[override]
        return torch.zeros_like(anchor)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        ctx.message = inputs[1]

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Any:  # type: ignore[override]
        raise RuntimeError(ctx.message)


def refuse_second_order(x: Tensor, anchor: Tensor, what: str) -> None:
    r"""Makes differentiating a gradient that flows through ``x`` an error naming ``what``.

    For an op whose first derivatives are exact and whose second are not. During a backward
    pass with ``create_graph=True``, the gradient arriving at ``x`` gets a term of zeros whose
    own backward raises; ``anchor`` (a tensor of the op's graph that depends on its parameters)
    makes that term part of the graph even when the arriving gradient is a constant. First
    derivatives, with or without ``create_graph``, are unchanged.

    Reference: "Double Backward with Custom Functions" (PyTorch tutorials): a backward pass
    that is itself differentiated.

    Args:
        x: the op's output (requires grad).
        anchor: a tensor that requires grad, on which the op's parameter gradients depend.
        what: the op, for the message.

    Example:
        >>> theta = torch.tensor(2.0, requires_grad=True)
        >>> x = theta * 3.0
        >>> refuse_second_order(x, x, "an example")
        >>> (g,) = torch.autograd.grad(x, theta, create_graph=True); g.item()
        3.0
        >>> torch.autograd.grad(g, theta)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        RuntimeError: second derivatives through an example are not available...
    """
    message = (
        f"second derivatives through {what} are not available: its implicit gradient is exact to "
        "first order only, and a gradient computed through it with create_graph=True was "
        "differentiated again. Inside flowtorch.BijectiveMode() a flow's own samples are inverted "
        "from the cache, without a root finder; Planar and Sylvester give second derivatives"
    )

    def hook(grad: Tensor) -> Tensor | None:
        if not torch.is_grad_enabled():  # a plain backward pass
            return None
        guarded: Tensor = grad + _SecondOrderRefused.apply(anchor, message)
        return guarded

    x.register_hook(hook)
