r"""The soft clamp that bounds every affine log-scale in flowtorch.

An affine layer :math:`y = \mu + e^{s} x` needs its log-scale :math:`s` bounded, or one large
conditioner output makes :math:`e^{s}` overflow. A hard clamp bounds it but has no gradient past
its bounds, so a log-scale that overshoots during training never comes back; a straight-through
clamp passes a gradient that is not the map's own, and the parameter behind it can drift without
limit. :func:`soft_clamp` is smooth, strictly increasing and the identity to first order at
zero, and its true gradient decays only as :math:`1 / x^2`, never to zero.
"""

from __future__ import annotations

import torch

__all__ = ["soft_clamp"]


def soft_clamp(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    r"""Maps :math:`x \in \mathbb{R}` smoothly and monotonically into the open interval
    :math:`(\text{low}, \text{high})`, with :math:`\text{low} < 0 < \text{high}`:

    .. math::
        f(x) = \frac{x}{1 + x / b(x)}, \qquad b(x) = \begin{cases} \text{high} & x \ge 0 \\
        \text{low} & x < 0 \end{cases}, \qquad f'(x) = \frac{1}{(1 + x / b(x))^2}.

    :math:`f(0) = 0` and :math:`f'(0) = 1` (the identity near zero, so a conditioner initialised
    at zero still gives the identity map), :math:`f(\text{high}) = \text{high} / 2`, and the
    gradient is positive everywhere: at :math:`x = 10\,\text{high}` it is still :math:`1/121`,
    where a hard clamp's is 0 and :math:`\text{high} \tanh(x / \text{high})`'s is
    :math:`8 \cdot 10^{-9}`. It is :math:`C^1`; it is computed as
    :math:`x / (1 + c\,x)` with :math:`c = 1 / b(x)` chosen by the sign of :math:`x`, which
    carries no gradient: two differentiable ops, so a training step's backward pass has two
    nodes per layer for the bound.

    Reference: the "softclip" of zuko (``zuko.transforms.SoftclipTransform``,
    :math:`x / (1 + |x / B|)`), of which this is the version with two bounds.

    Args:
        x: any tensor.
        low: the lower bound, negative.
        high: the upper bound, positive.

    Returns:
        A tensor of ``x``'s shape and dtype, strictly inside ``(low, high)``.

    Example:
        >>> import torch
        >>> from flowtorch.ops import soft_clamp
        >>> soft_clamp(torch.tensor([-1e6, -5.0, 0.0, 3.0, 1e6]), -5.0, 3.0)
        tensor([-5.0000, -2.5000,  0.0000,  1.5000,  3.0000])
    """
    positive = x >= 0.0
    if x.dtype == torch.get_default_dtype():  # (two Python numbers give the default dtype)
        inverse_bound = torch.where(positive, 1.0 / high, 1.0 / low)
    else:
        inverse_bound = torch.where(positive, x.new_full((), 1.0 / high), x.new_full((), 1.0 / low))
    return x / torch.addcmul(x.new_ones(()), x, inverse_bound)
