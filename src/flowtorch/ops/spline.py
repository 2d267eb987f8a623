r"""Monotonic rational splines as pure, elementwise tensor functions.

Three spline families are provided, each returning ``(outputs, logabsdet)``
where ``logabsdet`` is the elementwise :math:`\log|\mathrm{d}\,\text{out} /
\mathrm{d}\,\text{in}|` *of the map performed* (forward or inverse):

* :func:`rational_quadratic_spline` -- Durkan et al. (2019), identity tails;
* :func:`linear_rational_spline` -- Dolatabadi et al. (2020), identity tails;
* :func:`circular_rational_quadratic_spline` -- Rezende et al. (2020), a C1
  diffeomorphism of the circle :math:`[-B, B]/\{-B \sim B\}`.

Shared conventions
------------------
``inputs`` has any shape ``S``. Every parameter tensor has shape ``P + (n,)``
where ``P`` broadcasts against ``S``; outputs have the broadcast shape.

With :math:`K` bins on :math:`[-B, B]`, the bin widths and heights are

.. math::

    w_k = w_{\min} + (1 - K w_{\min})\,\operatorname{softmax}(u^w)_k, \qquad
    h_k = h_{\min} + (1 - K h_{\min})\,\operatorname{softmax}(u^h)_k,

(fractions of :math:`2B`), the knots are :math:`x_0 = -B`,
:math:`x_k = -B + 2B\sum_{j<k} w_j`, :math:`x_K = B` (likewise :math:`y_k`)
and the interior knot derivatives are
:math:`\delta_k = \delta_{\min} + \operatorname{softplus}(u^\delta_k)`.
The boundary knots are pinned to exactly :math:`\pm B` so that the spline maps
:math:`[-B, B]` onto itself.

The bin containing a point is found with one :func:`torch.searchsorted` over
the knots of the searched side (``right=True``, index clamped to
:math:`[0, K-1]`): a point on an interior knot opens the bin to its right and
:math:`B` itself belongs to the last bin. Each point is then evaluated from
the nearer end of its piece, so knots map exactly onto knots and outputs of
inside points never leave :math:`[-B, B]`.

References
----------
* C. Durkan, A. Bekasov, I. Murray, G. Papamakarios. *Neural Spline Flows*.
  NeurIPS 2019. arXiv:1906.04032.
* H. M. Dolatabadi, S. Erfani, C. Leckie. *Invertible Generative Modeling
  using Linear Rational Splines*. AISTATS 2020. arXiv:2001.05168.
* D. J. Rezende, G. Papamakarios, S. Racanière, M. S. Albergo, G. Kanwar,
  P. E. Shanahan, K. Cranmer. *Normalizing Flows on Tori and Spheres*.
  ICML 2020. arXiv:2002.02428.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from flowtorch.core.shapes import broadcast_shapes

__all__ = [
    "circular_rational_quadratic_spline",
    "identity_derivative",
    "linear_rational_spline",
    "rational_quadratic_spline",
    "rational_quadratic_spline_deferred",
]

#: Linear rational spline split fraction: ``lambda = 0.95 * sigmoid(u) + 0.025``.
_LAMBDA_SCALE = 0.95
_LAMBDA_SHIFT = 0.025


def identity_derivative(min_derivative: float = 1e-3) -> float:
    r"""Unnormalised derivative whose constrained value is exactly one.

    .. math::

        u^\star = \log\left(e^{1 - \delta_{\min}} - 1\right)
        \quad\Longrightarrow\quad
        \delta_{\min} + \operatorname{softplus}(u^\star) = 1.

    Filling ``unnormalized_derivatives`` with this value and the widths and
    heights with zeros (equal bins) makes every spline in this module the
    identity map.

    Args:
        min_derivative: The ``min_derivative`` the spline is called with; must
            lie in ``[0, 1)``.

    Returns:
        The value :math:`u^\star` as a Python float.

    Reference: Durkan et al., "Neural Spline Flows", 2019 (the derivative parametrisation).

    Example:
        >>> import torch
        >>> from flowtorch.ops import identity_derivative, rational_quadratic_spline
        >>> u = identity_derivative()
        >>> x = torch.linspace(-2.0, 2.0, 5)
        >>> y, logdet = rational_quadratic_spline(x, torch.zeros(4), torch.zeros(4), torch.full((3,), u))
        >>> torch.allclose(y, x, atol=1e-6), torch.allclose(logdet, torch.zeros(5), atol=1e-6)
        (True, True)
    """
    if not 0.0 <= min_derivative < 1.0:
        raise ValueError(f"min_derivative must lie in [0, 1), got {min_derivative}")
    return math.log(math.expm1(1.0 - min_derivative))


# ---------------------------------------------------------------------------
# Parameter constraints
# ---------------------------------------------------------------------------


def _pad_ends(inner: Tensor, first: float, last: float) -> Tensor:
    """Prepend ``first`` and append ``last`` along the last dimension.

    (``F.pad`` for equal ends, else one ``cat`` of broadcast constants: the faster of the two on
    CPU for the small last dims of spline parameters.)
    """
    if first == last:
        return F.pad(inner, (1, 1), value=first)
    shape = (*inner.shape[:-1], 1)
    return torch.cat(
        (inner.new_full((), first).expand(shape), inner, inner.new_full((), last).expand(shape)), dim=-1
    )


def _knots(unnormalized: Tensor, min_size: float, bound: float) -> Tensor:
    """Knot positions ``(..., K + 1)`` on ``[-bound, bound]``, ends exact.

    The bin sizes are ``2B [m + (1 - mK) softmax(u)]``. The softmax is written out: over a short
    last dim (a few bins) ``torch.softmax`` is several times slower on CPU. Subtracting the
    (detached) maximum keeps it overflow-free without changing the value or the gradient, and
    its normalisation and the scale ``2B (1 - mK)`` are one factor per row, applied with the
    offset ``2Bm`` in one ``addcmul``: three fewer ops on these tensors than the textbook order,
    forward and backward.
    """
    num_bins = unnormalized.shape[-1]
    if num_bins < 1:
        raise ValueError("splines need at least one bin")
    if min_size < 0.0 or min_size * num_bins > 1.0:
        raise ValueError(
            f"minimal bin size {min_size} is invalid for {num_bins} bins (need 0 <= min_size * num_bins <= 1)"
        )
    e = torch.exp(unnormalized - unnormalized.detach().amax(dim=-1, keepdim=True))
    scale = (2.0 * bound * (1.0 - min_size * num_bins)) / e.sum(dim=-1, keepdim=True)
    sizes = torch.addcmul(e.new_full((), 2.0 * bound * min_size), e, scale)
    # Only the K - 1 interior knots come from the cumulative sum; the two
    # boundary knots are set exactly so round-off never moves them.
    interior = torch.cumsum(sizes[..., :-1], dim=-1) - bound
    return _pad_ends(interior, -bound, bound)


def _softplus_derivatives(unnormalized: Tensor, min_derivative: float) -> Tensor:
    if min_derivative < 0.0:
        raise ValueError(f"min_derivative must be >= 0, got {min_derivative}")
    return min_derivative + F.softplus(unnormalized)


def _check_last_dim(name: str, tensor: Tensor, expected: int) -> None:
    if tensor.shape[-1:] != (expected,):
        raise ValueError(f"{name} must have last dimension {expected}, got shape {tuple(tensor.shape)}")


def _check_bound(bound: float) -> None:
    if not bound > 0.0:
        raise ValueError(f"bound must be positive, got {bound}")


def _num_bins(bound: float, unnormalized_widths: Tensor) -> int:
    """Checks ``bound``; returns the number of bins (the widths' last dim), which must be >= 1."""
    _check_bound(bound)
    num_bins = int(unnormalized_widths.shape[-1])
    if num_bins < 1:
        raise ValueError("splines need at least one bin (unnormalized_widths has last dimension 0)")
    return num_bins


# ---------------------------------------------------------------------------
# Bin lookup
# ---------------------------------------------------------------------------


def _bin_index(x: Tensor, knots: Tensor, batch: torch.Size) -> Tensor:
    """Index ``batch + (1,)`` in ``[0, K - 1]`` of the bin holding ``x``.

    ``searchsorted(right=True) - 1`` puts a point equal to a knot in the bin
    to its right; the clamp sends ``x == knots[-1]`` (and any round-off
    beyond the ends) to an end bin, so no knot needs nudging.
    """
    num_bins = knots.shape[-1] - 1
    if knots.shape[:-1] != batch:
        knots = knots.expand(*batch, num_bins + 1)
    if x.shape != batch:
        x = x.expand(batch)
    idx = torch.searchsorted(knots.contiguous(), x.unsqueeze(-1).contiguous(), right=True)
    return (idx - 1).clamp(0, num_bins - 1)


def _take(row: Tensor, index: Tensor, batch: torch.Size) -> Tensor:
    """``row[..., index]`` for a per-knot ``row`` broadcast to ``batch``."""
    if row.shape[:-1] != batch:  # (parameters shared across the batch)
        row = row.expand(*batch, row.shape[-1])
    return row.gather(-1, index)


def _anchored(idx: Tensor, flip: Tensor) -> Tensor:
    """Bin-end indices ``(near, far)``: ``(k, k + 1)``, or ``(k + 1, k)`` where ``flip``.

    Every spline piece is evaluated from the knot nearer the point, with
    signed widths and heights: the mirrored piece is the same formula, the
    knot itself is reproduced exactly, and the output cannot overshoot the
    anchoring knot (so ``[-B, B]`` maps into ``[-B, B]`` without clamping).
    """
    return idx + torch.stack((flip, ~flip), dim=-1)


def _within(inputs: Tensor, bound: float) -> tuple[Tensor, Tensor]:
    """``(inside, points)``: where ``|x| <= bound``, and the inputs with the tails' points set to
    0, for the spline to evaluate in range (its values there are discarded).

    Not ``inputs.clamp(-bound, bound)``: from torch 2.14 on, clamp's gradient is 0 at exactly
    ``+-bound``, where the spline's slope is that of the identity tails, 1.
    """
    inside = inputs.abs() <= bound
    return inside, torch.where(inside, inputs, 0.0)


def _identity_tails(
    inputs: Tensor, inside: Tensor, outputs: Tensor, logabsdet: Tensor
) -> tuple[Tensor, Tensor]:
    return torch.where(inside, outputs, inputs), torch.where(inside, logabsdet, 0.0)


# ---------------------------------------------------------------------------
# Spline cores (inputs already inside the knots)
# ---------------------------------------------------------------------------


def _rq_core(
    x: Tensor, xk: Tensor, yk: Tensor, dk: Tensor, inverse: bool
) -> tuple[Tensor, Callable[[], Tensor]]:
    """RQ spline on knots ``(xk, yk, dk)``; ``x`` must lie in ``[xk_0, xk_K]``. Returns the output
    and a function that computes the log-derivative of the map performed from the bin's values
    gathered for the output (nothing is searched or gathered again)."""
    batch = broadcast_shapes(x.shape, xk.shape[:-1], yk.shape[:-1], dk.shape[:-1])
    search = yk if inverse else xk
    idx = _bin_index(x, search, batch)
    # (the bin's ends only pick the nearer one: no gradient flows through them)
    lower, upper = _take(search.detach(), torch.cat((idx, idx + 1), dim=-1), batch).unbind(-1)
    # Anchor at the nearer knot. The map is symmetric under
    # (xi, x_k, y_k, d_k) <-> (1 - xi, x_{k+1}, y_{k+1}, d_{k+1}), so with
    # signed w, h below the same formulas serve both ends.
    ends = _anchored(idx, x - lower > upper - x)
    near, far = ends[..., :1], ends[..., 1:]  # (one gather per value: cheaper to differentiate)
    x0, x1 = _take(xk, near, batch).squeeze(-1), _take(xk, far, batch).squeeze(-1)
    y0, y1 = _take(yk, near, batch).squeeze(-1), _take(yk, far, batch).squeeze(-1)
    d0, d1 = _take(dk, near, batch).squeeze(-1), _take(dk, far, batch).squeeze(-1)

    w = x1 - x0
    h = y1 - y0
    s = h / w
    kappa = torch.add(d0 + d1, s, alpha=-2.0)
    # (products and sums are fused into ``addcmul`` where they meet: each saves an op and its
    # backward node, a tenth of the ops of this function)

    if inverse:
        # phi [s + kappa xi(1 - xi)] = s xi^2 + d0 xi(1 - xi), phi = (y - y0)/h,
        # i.e. a xi^2 + b xi + c = 0 with c = -s phi <= 0, whose wanted root is
        # (-b + sqrt(D)) / 2a = 2c / (-b - sqrt(D)). Each form cancels
        # catastrophically for one sign of b, so take the other one: with
        # p = (b + sign(b) sqrt(D)) / 2 the root is c / -p for b >= 0 and
        # -p / a for b < 0 (where a > 0). D is clamped against round-off.
        # Written with a_neg = -a and s_phi = -c.
        phi = (x - y0) / h
        phi_kappa = phi * kappa
        a_neg = d0 - s - phi_kappa
        b = d0 - phi_kappa
        s_phi = s * phi
        root = torch.addcmul(b * b, a_neg, s_phi, value=-4.0).clamp(min=0.0).sqrt()
        b_pos = b >= 0.0
        p = 0.5 * (b + torch.where(b_pos, root, -root))
        xi = torch.where(b_pos, s_phi / p, p / torch.where(b_pos, 1.0, a_neg))
    else:
        xi = (x - x0) / w

    one_minus_xi = 1.0 - xi
    xi1 = xi * one_minus_xi
    denom = torch.addcmul(s, kappa, xi1)

    def log_deriv() -> Tensor:
        # log dy/dx = log(s^2 [d1 xi^2 + 2 s xi(1-xi) + d0 (1-xi)^2]) - 2 log denom
        bracket = torch.addcmul(d1 * xi * xi, d0 * one_minus_xi, one_minus_xi)
        numer = s * s * torch.addcmul(bracket, s, xi1, value=2.0)
        log_deriv = torch.add(torch.log(numer), torch.log(denom), alpha=-2.0)
        return -log_deriv if inverse else log_deriv

    if inverse:
        return torch.addcmul(x0, w, xi), log_deriv
    return torch.addcmul(y0, h, torch.addcmul(d0 * xi1, s * xi, xi) / denom), log_deriv


def _lr_core(
    x: Tensor, xk: Tensor, yk: Tensor, dk: Tensor, lam: Tensor, inverse: bool
) -> tuple[Tensor, Tensor]:
    """Linear rational spline on knots ``(xk, yk, dk)`` and bin splits ``lam``."""
    qk = dk.sqrt()
    batch = broadcast_shapes(x.shape, xk.shape[:-1], yk.shape[:-1], qk.shape[:-1], lam.shape[:-1])
    search = yk if inverse else xk
    idx = _bin_index(x, search, batch)
    pair = torch.cat((idx, idx + 1), dim=-1)
    lower, upper = _take(search, pair, batch).unbind(-1)
    q0, q1 = _take(qk, pair, batch).unbind(-1)
    lam = _take(lam, idx, batch).squeeze(-1)
    m = lam * q0 + (1.0 - lam) * q1  # symmetric under the mirroring below
    # Right piece: theta > lambda, i.e. y > y_c = y_k + h lambda q_k / m.
    split = lam * q0 / m if inverse else lam  # as a fraction of the bin
    second = x - lower > (upper - lower) * split
    # Evaluate each piece from its outer knot: the right piece is the left
    # piece's formula mirrored, (x_k, y_k, d_k, lambda) -> (x_{k+1}, y_{k+1},
    # d_{k+1}, 1 - lambda), with signed w and h.
    ends = _anchored(idx, second)
    x0, x1 = _take(xk, ends, batch).unbind(-1)
    y0, y1 = _take(yk, ends, batch).unbind(-1)
    q0 = torch.where(second, q1, q0)
    lam = torch.where(second, 1.0 - lam, lam)

    w = x1 - x0
    h = y1 - y0
    s = h / w
    ratio = q0 * m / s  # r = sqrt(slope at anchor / slope at split)
    height = h * lam * q0 / m  # signed height of the piece
    log_slope = 2.0 * torch.log(q0)  # log of the slope at the anchor knot

    if inverse:
        phi = (x - y0) / height
        e = phi + ratio * (1.0 - phi)
        return x0 + w * lam * (phi / e), 2.0 * torch.log(ratio / e) - log_slope
    t = (x - x0) / (w * lam)
    denom = 1.0 + (ratio - 1.0) * t
    return y0 + height * ratio * t / denom, log_slope - 2.0 * torch.log(denom)


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------


def rational_quadratic_spline(
    inputs: Tensor,
    unnormalized_widths: Tensor,
    unnormalized_heights: Tensor,
    unnormalized_derivatives: Tensor,
    *,
    bound: float = 3.0,
    inverse: bool = False,
    min_bin_width: float = 1e-3,
    min_bin_height: float = 1e-3,
    min_derivative: float = 1e-3,
) -> tuple[Tensor, Tensor]:
    r"""Monotonic rational-quadratic spline with identity tails.

    In bin :math:`k` (:math:`x_k \le x \le x_{k+1}`) let
    :math:`w = x_{k+1} - x_k`, :math:`h = y_{k+1} - y_k`, :math:`s = h / w`,
    :math:`\xi = (x - x_k) / w`. Then

    .. math::

        y = y_k + \frac{h\,[s\xi^2 + \delta_k\,\xi(1-\xi)]}
                       {s + (\delta_k + \delta_{k+1} - 2s)\,\xi(1-\xi)},
        \qquad
        \frac{dy}{dx} = \frac{s^2\,[\delta_{k+1}\xi^2 + 2s\,\xi(1-\xi)
                        + \delta_k(1-\xi)^2]}
                       {[s + (\delta_k + \delta_{k+1} - 2s)\,\xi(1-\xi)]^2},

    with :math:`\delta_0 = \delta_K = 1` so the map is :math:`C^1` where it
    joins the identity used outside :math:`[-B, B]`. The inverse solves
    :math:`a\xi^2 + b\xi + c = 0` for :math:`\phi = (y - y_k)/h`,

    .. math::

        a = s - \delta_k + \phi\,(\delta_k + \delta_{k+1} - 2s),\quad
        b = \delta_k - \phi\,(\delta_k + \delta_{k+1} - 2s),\quad
        c = -s\phi,\qquad
        \xi = \frac{2c}{-b - \sqrt{D}} = \frac{-b + \sqrt{D}}{2a},

    with :math:`D = \max(b^2 - 4ac, 0)`, using the first form when
    :math:`b \ge 0` and the second when :math:`b < 0` so that neither
    cancels catastrophically. Its log-derivative is :math:`-\log(dy/dx)` at
    that :math:`\xi`, computed from :math:`y` and the parameters alone.

    Numerically, each point is evaluated from the nearer knot of its bin
    (the formulas are symmetric under
    :math:`(\xi, x_k, y_k, \delta_k) \leftrightarrow
    (1 - \xi, x_{k+1}, y_{k+1}, \delta_{k+1})` with signed :math:`w, h`), so
    knots map exactly onto knots, :math:`\pm B` onto :math:`\pm B`, and
    :math:`[-B, B]` into itself without clamping. Widths, heights and
    interior derivatives are constrained as described in
    :mod:`flowtorch.ops.spline`.

    Args:
        inputs: Points to transform, any shape ``S``.
        unnormalized_widths: Shape ``P + (K,)``.
        unnormalized_heights: Shape ``P + (K,)``.
        unnormalized_derivatives: Shape ``P + (K - 1,)``, at interior knots.
        bound: Half-width :math:`B` of the spline box :math:`[-B, B]^2`.
        inverse: Compute :math:`x = f^{-1}(y)` instead of :math:`y = f(x)`.
        min_bin_width: Minimal bin width as a fraction of :math:`2B`.
        min_bin_height: Minimal bin height as a fraction of :math:`2B`.
        min_derivative: Minimal interior knot derivative.

    Returns:
        ``(outputs, logabsdet)``, both of shape ``broadcast(S, P)``;
        ``logabsdet`` is the elementwise log-derivative of the map performed
        (zero in the tails, where outputs equal inputs).

    References:
        Durkan, Bekasov, Murray, Papamakarios. *Neural Spline Flows*.
        NeurIPS 2019.

    Example:
        >>> import torch
        >>> from flowtorch.ops import rational_quadratic_spline
        >>> w, h, d = torch.randn(3, 8), torch.randn(3, 8), torch.randn(3, 7)  # 3 splines, 8 bins
        >>> x = torch.randn(5, 3)
        >>> y, logdet = rational_quadratic_spline(x, w, h, d)
        >>> x2, logdet_inv = rational_quadratic_spline(y, w, h, d, inverse=True)
        >>> torch.allclose(x2, x, atol=1e-5), torch.allclose(logdet_inv, -logdet, atol=1e-5)
        (True, True)
    """
    num_bins = _num_bins(bound, unnormalized_widths)
    _check_last_dim("unnormalized_heights", unnormalized_heights, num_bins)
    _check_last_dim("unnormalized_derivatives", unnormalized_derivatives, num_bins - 1)

    outputs, later = rational_quadratic_spline_deferred(
        inputs,
        unnormalized_widths,
        unnormalized_heights,
        unnormalized_derivatives,
        bound=bound,
        inverse=inverse,
        min_bin_width=min_bin_width,
        min_bin_height=min_bin_height,
        min_derivative=min_derivative,
    )
    return outputs, later()


def rational_quadratic_spline_deferred(
    inputs: Tensor,
    unnormalized_widths: Tensor,
    unnormalized_heights: Tensor,
    unnormalized_derivatives: Tensor,
    *,
    bound: float = 3.0,
    inverse: bool = False,
    min_bin_width: float = 1e-3,
    min_bin_height: float = 1e-3,
    min_derivative: float = 1e-3,
) -> tuple[Tensor, Callable[[], Tensor]]:
    r""":func:`rational_quadratic_spline` with its log-derivative left for later: ``(outputs,
    later)``, where ``later()`` computes the log-derivative (identity tails included) from the
    bin's values that the pass gathered, without searching the bins again. For
    ``BijectiveMode(requires_ladj=False)``: sampling skips the log-derivative, and scoring the
    sample later costs what computing it in the pass would have.

    The pass computes :math:`y` (or :math:`x`) and keeps :math:`\xi`, :math:`s`,
    :math:`\delta_k`, :math:`\delta_{k+1}` and the denominator of the bin it found; ``later()``
    evaluates

    .. math::
        \log\frac{dy}{dx} = \log\big(s^2\,[\delta_{k+1}\xi^2 + 2s\,\xi(1-\xi)
        + \delta_k(1-\xi)^2]\big) - 2\log\big(s + (\delta_k + \delta_{k+1} - 2s)\,\xi(1-\xi)\big)

    (negated for ``inverse=True``; 0 in the tails).

    Reference: Durkan, Bekasov, Murray, Papamakarios, *Neural Spline Flows*, NeurIPS 2019.

    Args:
        inputs: points to transform, any shape ``S``.
        unnormalized_widths: shape ``P + (K,)``.
        unnormalized_heights: shape ``P + (K,)``.
        unnormalized_derivatives: shape ``P + (K - 1,)``, at interior knots.
        bound: half-width :math:`B` of the spline box :math:`[-B, B]^2`.
        inverse: compute :math:`x = f^{-1}(y)` instead of :math:`y = f(x)`.
        min_bin_width: minimal bin width as a fraction of :math:`2B`.
        min_bin_height: minimal bin height as a fraction of :math:`2B`.
        min_derivative: minimal interior knot derivative.

    Returns:
        ``(outputs, later)``: ``outputs`` of shape ``broadcast(S, P)``, and a function of no
        arguments that returns the elementwise log-derivative of the map performed (a new
        tensor at each call).

    Example:
        >>> import torch
        >>> from flowtorch.ops import rational_quadratic_spline, rational_quadratic_spline_deferred
        >>> w, h, d = torch.randn(3, 8), torch.randn(3, 8), torch.randn(3, 7)
        >>> x = torch.randn(5, 3)
        >>> y, later = rational_quadratic_spline_deferred(x, w, h, d)
        >>> y2, logdet = rational_quadratic_spline(x, w, h, d)
        >>> torch.equal(y, y2), torch.allclose(later(), logdet)
        (True, True)
    """
    num_bins = _num_bins(bound, unnormalized_widths)
    _check_last_dim("unnormalized_heights", unnormalized_heights, num_bins)
    _check_last_dim("unnormalized_derivatives", unnormalized_derivatives, num_bins - 1)

    xk = _knots(unnormalized_widths, min_bin_width, bound)
    yk = _knots(unnormalized_heights, min_bin_height, bound)
    dk = _pad_ends(_softplus_derivatives(unnormalized_derivatives, min_derivative), 1.0, 1.0)
    inside, points = _within(inputs, bound)
    outputs, log_deriv = _rq_core(points, xk, yk, dk, inverse)

    def later() -> Tensor:
        return torch.where(inside, log_deriv(), 0.0)

    return torch.where(inside, outputs, inputs), later


def linear_rational_spline(
    inputs: Tensor,
    unnormalized_widths: Tensor,
    unnormalized_heights: Tensor,
    unnormalized_derivatives: Tensor,
    unnormalized_lambdas: Tensor,
    *,
    bound: float = 3.0,
    inverse: bool = False,
    min_bin_width: float = 1e-3,
    min_bin_height: float = 1e-3,
    min_derivative: float = 1e-3,
) -> tuple[Tensor, Tensor]:
    r"""Monotonic linear rational spline with identity tails.

    Each bin :math:`k` is split at :math:`\theta = \lambda_k`, with
    :math:`\theta = (x - x_k)/w` and
    :math:`\lambda_k = 0.025 + 0.95\,\sigma(u^\lambda_k)`, into two
    linear-rational (Möbius) pieces. With weights
    :math:`w_a = 1/\sqrt{\delta_k}`, :math:`w_b = 1/\sqrt{\delta_{k+1}}`,
    :math:`w_c = m/s`, :math:`m = \lambda\sqrt{\delta_k}
    + (1-\lambda)\sqrt{\delta_{k+1}}` and split ordinate
    :math:`y_c = y_k + h\lambda\sqrt{\delta_k}/m`,

    .. math::

        y = \begin{cases}
          \dfrac{w_a y_k(\lambda - \theta) + w_c y_c \theta}
                {w_a(\lambda - \theta) + w_c\theta}, & \theta \le \lambda,\\[2ex]
          \dfrac{w_c y_c(1 - \theta) + w_b y_{k+1}(\theta - \lambda)}
                {w_c(1 - \theta) + w_b(\theta - \lambda)}, & \theta > \lambda,
        \end{cases}

    which matches :math:`\delta_k`, :math:`\delta_{k+1}` at the knots and is
    :math:`C^1` at the split, where its slope is :math:`(s/m)^2`
    (:math:`w_b / w_a = \sqrt{\delta_k / \delta_{k+1}}` as in the paper, up
    to a common scale of the weights). Each piece is a Möbius map evaluated
    from its outer knot :math:`(x_o, y_o)` (:math:`x_k` for the left piece,
    :math:`x_{k+1}` for the right one, with signed lengths), in the local
    coordinate :math:`t = (x - x_o) / (w \ell) \in [0, 1]`,
    :math:`\ell = \lambda` or :math:`1 - \lambda`:

    .. math::

        y = y_o + \frac{\Delta\,r t}{1 + (r - 1) t}, \qquad
        \frac{dy}{dx} = \frac{\delta_o}{[1 + (r - 1) t]^2}, \qquad
        r = \frac{\sqrt{\delta_o}\,m}{s}, \qquad
        \Delta = \frac{h \ell \sqrt{\delta_o}}{m},

    where :math:`\delta_o` is the knot derivative at :math:`x_o`,
    :math:`r^2` the ratio of the slopes at the piece's ends and
    :math:`\Delta` its (signed) height. The inverse, with
    :math:`\phi = (y - y_o)/\Delta`, is

    .. math::

        t = \frac{\phi}{\phi + r(1 - \phi)}, \qquad
        \log\left|\frac{dx}{dy}\right|
            = 2\log\frac{r}{\phi + r(1 - \phi)} - \log\delta_o,

    computed from :math:`y` and the parameters alone. Boundary derivatives
    are :math:`\delta_0 = \delta_K = 1`.

    Args:
        inputs: Points to transform, any shape ``S``.
        unnormalized_widths: Shape ``P + (K,)``.
        unnormalized_heights: Shape ``P + (K,)``.
        unnormalized_derivatives: Shape ``P + (K - 1,)``, at interior knots.
        unnormalized_lambdas: Shape ``P + (K,)``, split positions per bin.
        bound: Half-width :math:`B` of the spline box :math:`[-B, B]^2`.
        inverse: Compute :math:`x = f^{-1}(y)` instead of :math:`y = f(x)`.
        min_bin_width: Minimal bin width as a fraction of :math:`2B`.
        min_bin_height: Minimal bin height as a fraction of :math:`2B`.
        min_derivative: Minimal interior knot derivative.

    Returns:
        ``(outputs, logabsdet)``, both of shape ``broadcast(S, P)``;
        ``logabsdet`` is the elementwise log-derivative of the map performed.

    References:
        Dolatabadi, Erfani, Leckie. *Invertible Generative Modeling using
        Linear Rational Splines*. AISTATS 2020.

    Example:
        >>> import torch
        >>> from flowtorch.ops import linear_rational_spline
        >>> _ = torch.manual_seed(0)
        >>> w, h, d, lam = torch.randn(8), torch.randn(8), torch.randn(7), torch.randn(8)
        >>> x = torch.randn(5)
        >>> y, logdet = linear_rational_spline(x, w, h, d, lam)
        >>> x2, _ = linear_rational_spline(y, w, h, d, lam, inverse=True)
        >>> torch.allclose(x2, x, atol=1e-5)
        True
    """
    num_bins = _num_bins(bound, unnormalized_widths)
    _check_last_dim("unnormalized_heights", unnormalized_heights, num_bins)
    _check_last_dim("unnormalized_derivatives", unnormalized_derivatives, num_bins - 1)
    _check_last_dim("unnormalized_lambdas", unnormalized_lambdas, num_bins)

    xk = _knots(unnormalized_widths, min_bin_width, bound)
    yk = _knots(unnormalized_heights, min_bin_height, bound)
    dk = _pad_ends(_softplus_derivatives(unnormalized_derivatives, min_derivative), 1.0, 1.0)
    lam = _LAMBDA_SHIFT + _LAMBDA_SCALE * torch.sigmoid(unnormalized_lambdas)
    inside, points = _within(inputs, bound)
    outputs, logabsdet = _lr_core(points, xk, yk, dk, lam, inverse)
    return _identity_tails(inputs, inside, outputs, logabsdet)


def circular_rational_quadratic_spline(
    inputs: Tensor,
    unnormalized_widths: Tensor,
    unnormalized_heights: Tensor,
    unnormalized_derivatives: Tensor,
    *,
    bound: float = math.pi,
    inverse: bool = False,
    min_bin_width: float = 1e-3,
    min_bin_height: float = 1e-3,
    min_derivative: float = 1e-3,
) -> tuple[Tensor, Tensor]:
    r"""Circular rational-quadratic spline, a diffeomorphism of the circle.

    The rational-quadratic map of :func:`rational_quadratic_spline` on
    :math:`[-B, B]` with :math:`K` bins and no tails; the derivative at both
    boundary knots is one shared learnable value,

    .. math::

        \delta_0 = \delta_K = \delta_{\min}
            + \operatorname{softplus}(u^\delta_{K-1}), \qquad
        \delta_k = \delta_{\min} + \operatorname{softplus}(u^\delta_{k-1}),
        \quad 1 \le k \le K-1,

    so with :math:`f(-B) = -B`, :math:`f(B) = B` the map is a :math:`C^1`
    diffeomorphism of the circle :math:`[-B, B]/\{-B \sim B\}` fixing the
    point :math:`\pm B`. Inputs outside :math:`[-B, B]` are handled by the
    periodic lift :math:`f(x + 2Bn) = f(x) + 2Bn` (:math:`n \in \mathbb{Z}`),
    so angles that differ by whole turns map to outputs that differ by the
    same turns.

    Args:
        inputs: Angles to transform, any shape ``S``, normally in
            ``[-bound, bound]``.
        unnormalized_widths: Shape ``P + (K,)``.
        unnormalized_heights: Shape ``P + (K,)``.
        unnormalized_derivatives: Shape ``P + (K,)``: entries ``0..K-2`` at
            the interior knots (as in :func:`rational_quadratic_spline`),
            entry ``K-1`` at the boundary knot :math:`\pm B`.
        bound: Half-period :math:`B` (default :math:`\pi`).
        inverse: Compute :math:`x = f^{-1}(y)` instead of :math:`y = f(x)`.
        min_bin_width: Minimal bin width as a fraction of :math:`2B`.
        min_bin_height: Minimal bin height as a fraction of :math:`2B`.
        min_derivative: Minimal knot derivative.

    Returns:
        ``(outputs, logabsdet)``, both of shape ``broadcast(S, P)``;
        ``logabsdet`` is the elementwise log-derivative of the map performed.

    References:
        Rezende, Papamakarios, Racanière, Albergo, Kanwar, Shanahan, Cranmer.
        *Normalizing Flows on Tori and Spheres*. ICML 2020.
        Durkan, Bekasov, Murray, Papamakarios. *Neural Spline Flows*.
        NeurIPS 2019.

    Example:
        >>> import math, torch
        >>> from flowtorch.ops import circular_rational_quadratic_spline
        >>> w, h, d = torch.randn(8), torch.randn(8), torch.randn(8)
        >>> x = torch.tensor([-1.0, 0.5, 2.0])
        >>> y, _ = circular_rational_quadratic_spline(x, w, h, d)
        >>> y2, _ = circular_rational_quadratic_spline(x + 2 * math.pi, w, h, d)  # one turn later
        >>> torch.allclose(y2, y + 2 * math.pi, atol=1e-5)
        True
    """
    num_bins = _num_bins(bound, unnormalized_widths)
    _check_last_dim("unnormalized_heights", unnormalized_heights, num_bins)
    _check_last_dim("unnormalized_derivatives", unnormalized_derivatives, num_bins)

    xk = _knots(unnormalized_widths, min_bin_width, bound)
    yk = _knots(unnormalized_heights, min_bin_height, bound)
    d = _softplus_derivatives(unnormalized_derivatives, min_derivative)
    dk = torch.cat((d[..., -1:], d), dim=-1)

    period = 2.0 * bound
    inside = (inputs >= -bound) & (inputs <= bound)
    # Whole turns to remove; exactly zero (so no round-off) for inside points.
    shift = torch.where(inside, 0.0, torch.floor((inputs + bound) / period) * period)
    reduced = inputs - shift
    # Round-off can leave a reduced outside point just beyond +-bound, where
    # the rational function must not be extrapolated: clamp its value but
    # keep its gradient (a no-op for inside points).
    reduced = reduced + (reduced.clamp(-bound, bound) - reduced).detach()
    outputs, log_deriv = _rq_core(reduced, xk, yk, dk, inverse)
    logabsdet = log_deriv()
    return outputs + shift, logabsdet
