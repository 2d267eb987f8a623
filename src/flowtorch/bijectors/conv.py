"""Convolutional bijectors on image-shaped events ``(C, H, W)``."""

from __future__ import annotations

from typing import Literal

import torch
from torch.distributions import constraints

from flowtorch.bijectors.linear import LUBijector, Permutation
from flowtorch.core.bijector import Conditioner, Costs

__all__ = ["Invertible1x1Conv"]


class Invertible1x1Conv(LUBijector):
    r"""Glow's invertible 1x1 convolution: the same channel-mixing matrix at every pixel.

    For an event :math:`x` of shape ``(C, H, W)``,

    .. math::
        y_{:, h, w} = W x_{:, h, w} \;(+\, b), \qquad W = P\, L\, (U + \mathrm{diag}(d)), \qquad
        \log|\det J| = H \cdot W \cdot \sum_{c=1}^{C} \log d_c,

    which equals ``torch.nn.functional.conv2d(x, W.view(C, C, 1, 1))``. :math:`W` is
    LU-parametrised exactly as in :class:`~flowtorch.bijectors.LULinear` (same factors, same
    eval-mode cache of :math:`W^{-1}`, same arguments), with :math:`P` a fixed permutation,
    :math:`L` unit lower triangular, :math:`U` strictly upper triangular and :math:`d > 0`.
    Leading event dims before ``(C, H, W)``, if any, are mapped independently.

    The parameters live on the bijector (no conditioner), so it takes no context.

    Reference: Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions", 2018.

    Args:
        permutation: :math:`P` (``None``: random; ``"identity"``; or a permutation of the channels).
        identity_init: start from :math:`W = P` (default).
        diag_activation: ``"softplus"`` (default) or ``"exp"`` (Glow's :math:`d = e^{s}`).
        min_diag: added to the diagonal; default ``1e-3`` for softplus, ``0`` for exp.
        bias: learn a per-channel shift :math:`b` (default ``False``; Glow leaves shifts to ActNorm).

    Shapes: ``x`` is ``sample + batch + (C, H, W)``; log|det J| is ``sample + batch``.

    Example:
        >>> import torch
        >>> import flowtorch.bijectors as bij
        >>> b = bij.Invertible1x1Conv(identity_init=False)(shape=torch.Size([3, 4, 4]))
        >>> x = torch.randn(2, 3, 4, 4)
        >>> y, ladj = b.forward_and_ladj(x)
        >>> conv = torch.nn.functional.conv2d(x, b.weight().view(3, 3, 1, 1))
        >>> torch.allclose(y, conv, atol=1e-6), ladj.shape
        (True, torch.Size([2]))
    """

    costs = Costs(
        "analytic",
        "O(C²HW) + O(C³) to form W",
        "2 triangular solves, O(C²HW)",
        "O(C)",
        reference="Kingma & Dhariwal 2018",
    )

    _mix_from_end = 3
    domain = constraints.independent(constraints.real, 3)
    codomain = constraints.independent(constraints.real, 3)

    def __init__(
        self,
        params_fn: Conditioner | None = None,
        *,
        shape: torch.Size | tuple[int, ...],
        context_shape: torch.Size | tuple[int, ...] | None = None,
        permutation: Permutation = None,
        identity_init: bool = True,
        diag_activation: Literal["softplus", "exp"] = "softplus",
        min_diag: float | None = None,
        bias: bool = False,
    ) -> None:
        super().__init__(
            params_fn,
            shape=shape,
            context_shape=context_shape,
            permutation=permutation,
            identity_init=identity_init,
            diag_activation=diag_activation,
            min_diag=min_diag,
            bias=bias,
        )
