r"""Bijectors that only move elements around: reshaping and space-to-depth squeezing.

They change the event shape but not the values, so :math:`\log|\det J| = 0`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.distributions import constraints

from flowtorch.core.bijector import Bijector, Costs, Params
from flowtorch.core.shapes import swap_event
from flowtorch.core.validation import integer_at_least

__all__ = ["Reshape", "Squeeze", "Unsqueeze"]


def _target(shape: torch.Size, target_shape: Sequence[int]) -> torch.Size:
    """``target_shape`` with a ``-1`` inferred, checked against the number of elements."""
    target = [int(s) for s in target_shape]
    numel = shape.numel()
    if target.count(-1) > 1 or any(s < -1 for s in target):
        raise ValueError(
            f"Reshape: target_shape {tuple(target)} may contain at most one -1 and no other negatives"
        )
    if -1 in target:
        known = math.prod(s for s in target if s != -1)
        if known == 0 or numel % known:
            raise ValueError(
                f"Reshape: cannot infer the -1 in target_shape {tuple(target)} for an event of shape "
                f"{tuple(shape)} ({numel} elements)"
            )
        target[target.index(-1)] = numel // known
    if math.prod(target) != numel:
        raise ValueError(
            f"Reshape: target_shape {tuple(target)} has {math.prod(target)} elements, but the event "
            f"shape {tuple(shape)} has {numel}"
        )
    return torch.Size(target)


class Reshape(Bijector):
    r"""Reshapes the event: :math:`y = \mathrm{reshape}(x)`, :math:`\log|\det J| = 0`.

    Elements keep their row-major order, as with ``torch.reshape``.

    Reference: ``torch.distributions.transforms.ReshapeTransform`` (PyTorch documentation), the
    same map for torch transforms.

    Args:
        target_shape: the event shape of the output; it must have as many elements as the input
            event, and may contain one ``-1`` to be inferred.

    Shapes: ``x`` is ``batch + shape`` and ``y`` is ``batch + target_shape``; the log-det is
    zero, of shape ``batch``.

    Example:
        >>> import torch
        >>> from flowtorch.bijectors.reshape import Reshape
        >>> r = Reshape((2, -1))(shape=torch.Size([6]))
        >>> r.forward(torch.arange(6.0).expand(4, 6)).shape
        torch.Size([4, 2, 3])
        >>> r.inverse_shape(torch.Size([2, 3]))
        torch.Size([6])
    """

    costs = Costs("analytic", "a view", "a view", "0 (volume preserving)")

    def __init__(
        self,
        target_shape: Sequence[int],
        *,
        shape: torch.Size | tuple[int, ...],
        context_shape: torch.Size | tuple[int, ...] | None = None,
    ) -> None:
        self.target_shape = _target(torch.Size(shape), target_shape)
        super().__init__(None, shape=shape, context_shape=context_shape, out_shape=self.target_shape)

    def _raw_event_dim(self) -> int:
        return len(self.shape)

    def forward_shape(self, shape: torch.Size) -> torch.Size:
        return swap_event("Reshape", shape, self.shape, self.target_shape)

    def inverse_shape(self, shape: torch.Size) -> torch.Size:
        return swap_event("Reshape", shape, self.target_shape, self.shape)

    def _forward_and_ladj(self, x: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        return x.reshape(self.forward_shape(x.shape)), x.new_zeros(())

    def _inverse_and_ladj(self, y: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        return y.reshape(self.inverse_shape(y.shape)), y.new_zeros(())

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, target_shape={tuple(self.target_shape)}"


def _squeezed(name: str, shape: torch.Size, f: int) -> torch.Size:
    """``(..., C, H, W)`` -> ``(..., C f^2, H / f, W / f)``."""
    if len(shape) < 3:
        raise ValueError(f"{name}: needs a (C, H, W) event, got shape {tuple(shape)}")
    c, h, w = shape[-3:]
    if h % f or w % f:
        raise ValueError(
            f"{name}: height and width must be divisible by factor={f}, got (C, H, W) = {(c, h, w)}"
        )
    return shape[:-3] + torch.Size((c * f * f, h // f, w // f))


def _unsqueezed(name: str, shape: torch.Size, f: int) -> torch.Size:
    """``(..., C, H, W)`` -> ``(..., C / f^2, H f, W f)``."""
    if len(shape) < 3:
        raise ValueError(f"{name}: needs a (C, H, W) event, got shape {tuple(shape)}")
    c, h, w = shape[-3:]
    if c % (f * f):
        raise ValueError(
            f"{name}: the number of channels must be divisible by factor**2={f * f}, "
            f"got (C, H, W) = {(c, h, w)}"
        )
    return shape[:-3] + torch.Size((c // (f * f), h * f, w * f))


class Squeeze(Bijector):
    r"""Space-to-depth (the "squeeze" of RealNVP and Glow): :math:`(C, H, W) \to (f^2 C, H/f, W/f)`.

    Each :math:`f \times f` block of pixels becomes :math:`f^2` channels:

    .. math::
        y_{c f^2 + i f + j,\; h,\; w} = x_{c,\; h f + i,\; w f + j},
        \qquad \log|\det J| = 0,

    the channel order of ``torch.nn.functional.pixel_unshuffle``. It trades spatial size for
    channels so that channel-wise couplings and 1x1 convolutions can mix neighbouring pixels.

    References: Dinh et al., "Density estimation using Real NVP", 2017; Kingma and Dhariwal,
    "Glow: Generative Flow with Invertible 1x1 Convolutions", 2018.

    Args:
        factor: the block size :math:`f`; ``H`` and ``W`` must be divisible by it.

    Shapes: acts on the last three event dims ``(C, H, W)``; ``x`` is ``batch + (C, H, W)``.

    Example:
        >>> import torch
        >>> from flowtorch.bijectors.reshape import Squeeze
        >>> s = Squeeze()(shape=torch.Size([1, 4, 4]))
        >>> y = s.forward(torch.arange(16.0).view(1, 4, 4))
        >>> y.shape, y[:, 0, 0].tolist()
        (torch.Size([4, 2, 2]), [0.0, 1.0, 4.0, 5.0])
    """

    costs = Costs(
        "analytic",
        "O(D) copy",
        "O(D) copy",
        "0 (volume preserving)",
        reference="Dinh et al. 2017; Kingma & Dhariwal 2018",
    )

    domain = constraints.independent(constraints.real, 3)
    codomain = constraints.independent(constraints.real, 3)
    _squeeze = True  # Unsqueeze flips it

    def __init__(
        self,
        factor: int = 2,
        *,
        shape: torch.Size | tuple[int, ...],
        context_shape: torch.Size | tuple[int, ...] | None = None,
    ) -> None:
        self.factor = integer_at_least(factor, f"{type(self).__name__}: factor")
        super().__init__(None, shape=shape, context_shape=context_shape)

    def _raw_event_dim(self) -> int:
        return len(self.shape)

    def forward_shape(self, shape: torch.Size) -> torch.Size:
        fn = _squeezed if self._squeeze else _unsqueezed
        return fn(type(self).__name__, torch.Size(shape), self.factor)

    def inverse_shape(self, shape: torch.Size) -> torch.Size:
        fn = _unsqueezed if self._squeeze else _squeezed
        return fn(type(self).__name__, torch.Size(shape), self.factor)

    def _move(self, value: torch.Tensor, squeeze: bool) -> torch.Tensor:
        if squeeze:
            return F.pixel_unshuffle(value, self.factor)
        return F.pixel_shuffle(value, self.factor)

    def _forward_and_ladj(self, x: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        return self._move(x, self._squeeze), x.new_zeros(())

    def _inverse_and_ladj(self, y: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        return self._move(y, not self._squeeze), y.new_zeros(())

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, factor={self.factor}"


class Unsqueeze(Squeeze):
    r"""Depth-to-space, the inverse of :class:`Squeeze`: :math:`(C, H, W) \to (C/f^2, H f, W f)`.

    .. math:: y_{c,\; h f + i,\; w f + j} = x_{c f^2 + i f + j,\; h,\; w}, \qquad \log|\det J| = 0.

    A multi-scale flow that keeps the event shape of the data ends each scale with it (see
    :class:`~flowtorch.core.combinators.FactorOut`). ``C`` must be divisible by :math:`f^2`.

    References: Dinh et al., "Density estimation using Real NVP", 2017; Kingma and Dhariwal,
    "Glow: Generative Flow with Invertible 1x1 Convolutions", 2018.

    Args:
        factor: the block size :math:`f`.

    Example:
        >>> import torch
        >>> from flowtorch.bijectors.reshape import Squeeze, Unsqueeze
        >>> x = torch.randn(3, 1, 4, 4)
        >>> y = Squeeze()(shape=torch.Size([1, 4, 4])).forward(x)
        >>> torch.equal(Unsqueeze()(shape=torch.Size([4, 2, 2])).forward(y), x)
        True
    """

    costs = Costs(
        "analytic",
        "O(D) copy",
        "O(D) copy",
        "0 (volume preserving)",
        reference="Dinh et al. 2017; Kingma & Dhariwal 2018",
    )

    _squeeze = False
