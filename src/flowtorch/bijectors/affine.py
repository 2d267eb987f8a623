"""Affine bijectors: elementwise with learnable or fixed parameters, and autoregressive (MAF)."""

from __future__ import annotations

import math
from typing import Any

import torch

from flowtorch.core.bijector import Bijector, Params
from flowtorch.core.lazy import Plan
from flowtorch.core.validation import nonscalar_event
from flowtorch.ops.clamp import soft_clamp
from flowtorch.parameters import DenseAutoregressive, Tensor

__all__ = ["Affine", "AffineAutoregressive", "AffineFixed"]


class Affine(Bijector):
    r"""Elementwise affine map :math:`y = \mu + \exp(s) \odot x`.

    :math:`\log|\det J| = \sum_i s_i`. The conditioner emits :math:`(\mu, \tilde s)`, and
    :math:`s = f(\tilde s)` is :math:`\tilde s` softly clamped into
    ``(log_scale_min_clip, log_scale_max_clip)`` by :func:`flowtorch.ops.soft_clamp`, which keeps
    the scale bounded and, unlike a hard clamp, a gradient that brings an overshooting
    :math:`\tilde s` back.

    References: Dinh et al., "NICE: Non-linear Independent Components Estimation", 2015 (its
    diagonal scaling layer); Dinh et al., "Density estimation using Real NVP", 2017 (the
    :math:`\exp(s)` parametrisation of the scale).

    Args:
        params_fn: conditioner plan; default ``flowtorch.parameters.Tensor()`` (free parameters,
            or an affine function of the context).
        log_scale_min_clip: lower bound of :math:`s`, negative.
        log_scale_max_clip: upper bound of :math:`s`, positive.

    Example:
        >>> import torch
        >>> import flowtorch.bijectors as bij
        >>> b = bij.Affine()(shape=torch.Size([2]))
        >>> b.forward(torch.zeros(3, 2)).shape
        torch.Size([3, 2])
    """

    def __init__(
        self,
        params_fn: Any = None,
        *,
        shape: torch.Size | tuple[int, ...],
        context_shape: torch.Size | tuple[int, ...] | None = None,
        log_scale_min_clip: float = -5.0,
        log_scale_max_clip: float = 3.0,
        sigmoid_bias: float = 2.0,
    ) -> None:
        name = type(self).__name__
        if not log_scale_min_clip < log_scale_max_clip:
            raise ValueError(
                f"{name}: log_scale_min_clip ({log_scale_min_clip}) must be below "
                f"log_scale_max_clip ({log_scale_max_clip})"
            )
        if not -math.inf < log_scale_min_clip < 0.0 < log_scale_max_clip < math.inf:
            raise ValueError(
                f"{name}: the log-scale is softly clamped into (log_scale_min_clip, "
                "log_scale_max_clip), which must be finite and contain 0 (the identity map): "
                f"got ({log_scale_min_clip!r}, {log_scale_max_clip!r})"
            )
        self.log_scale_min_clip = float(log_scale_min_clip)
        self.log_scale_max_clip = float(log_scale_max_clip)
        self.sigmoid_bias = sigmoid_bias  # accepted for flowtorch 0.8 compatibility; unused
        super().__init__(
            self._default_params() if params_fn is None else params_fn,
            shape=shape,
            context_shape=context_shape,
        )

    def _default_params(self) -> Any:
        return Plan(Tensor)

    def param_shapes(self) -> tuple[torch.Size, ...]:
        return (self.shape, self.shape)

    def _log_scale(self, params: Params) -> torch.Tensor:
        return soft_clamp(params[1], self.log_scale_min_clip, self.log_scale_max_clip)

    def _forward(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        y: torch.Tensor = params[0] + self._log_scale(params).exp() * x
        return y

    def _inverse(self, y: torch.Tensor, params: Params) -> torch.Tensor:
        x: torch.Tensor = (y - params[0]) * torch.exp(-self._log_scale(params))
        return x

    def _log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor, params: Params) -> torch.Tensor:
        return self._log_scale(params)

    def _forward_and_ladj(self, x: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        log_scale = self._log_scale(params)
        return params[0] + log_scale.exp() * x, log_scale

    def _inverse_and_ladj(self, y: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        log_scale = self._log_scale(params)
        return (y - params[0]) * torch.exp(-log_scale), log_scale


class AffineAutoregressive(Affine):
    r"""Masked autoregressive affine flow (MAF): :math:`y_i = \mu_i(y_{<i}) + \exp(s_i(y_{<i}))\, x_i`.

    The conditioner reads the *output* side, so the inverse (density evaluation,
    :math:`x_i = (y_i - \mu_i) e^{-s_i}`) is one parallel pass and the forward (sampling) takes
    :math:`D` passes. ``Invert(AffineAutoregressive(...))`` is the inverse autoregressive flow
    (IAF) with the opposite costs.

    References: Papamakarios et al., "Masked Autoregressive Flow for Density Estimation", 2017;
    Kingma et al., "Improved Variational Inference with Inverse Autoregressive Flow", 2016.

    Args:
        params_fn: autoregressive conditioner plan; default
            ``flowtorch.parameters.DenseAutoregressive()``.

    Example:
        >>> import torch
        >>> import flowtorch.bijectors as bij
        >>> b = bij.AffineAutoregressive()(shape=torch.Size([3]))
        >>> x = torch.randn(4, 3)
        >>> torch.allclose(b.inverse(b.forward(x)), x, atol=1e-5)
        True
    """

    conditioned_on_output = True

    def __init__(
        self,
        params_fn: Any = None,
        *,
        shape: torch.Size | tuple[int, ...],
        context_shape: torch.Size | tuple[int, ...] | None = None,
        log_scale_min_clip: float = -5.0,
        log_scale_max_clip: float = 3.0,
        sigmoid_bias: float = 2.0,
    ) -> None:
        nonscalar_event("AffineAutoregressive", shape)
        super().__init__(
            params_fn,
            shape=shape,
            context_shape=context_shape,
            log_scale_min_clip=log_scale_min_clip,
            log_scale_max_clip=log_scale_max_clip,
            sigmoid_bias=sigmoid_bias,
        )

    def _default_params(self) -> Any:
        return Plan(DenseAutoregressive)


class AffineFixed(Bijector):
    r"""Elementwise affine map with fixed numbers: :math:`y = \text{loc} + \text{scale}\cdot x`.

    :math:`\log|\det J| = \sum_i \log|\text{scale}|` over the event; no learnable parameters.

    Reference: ``torch.distributions.transforms.AffineTransform`` (PyTorch documentation), the
    same map with scalar ``loc`` and ``scale``.

    Args:
        loc: the shift.
        scale: the scale; must be non-zero (negative flips the sign).

    Example:
        >>> import torch
        >>> import flowtorch.bijectors as bij
        >>> bij.AffineFixed(loc=1.0, scale=2.0)(shape=torch.Size([1])).forward(torch.ones(1))
        tensor([3.])
    """

    def __init__(
        self,
        params_fn: Any = None,
        *,
        shape: torch.Size | tuple[int, ...],
        context_shape: torch.Size | tuple[int, ...] | None = None,
        loc: float = 0.0,
        scale: float = 1.0,
    ) -> None:
        if scale == 0:
            raise ValueError("AffineFixed: scale must be non-zero")
        self.loc = float(loc)
        self.scale = float(scale)
        self._ladj = math.log(abs(self.scale))
        super().__init__(params_fn, shape=shape, context_shape=context_shape)

    def _forward(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        return x * self.scale + self.loc

    def _inverse(self, y: torch.Tensor, params: Params) -> torch.Tensor:
        return (y - self.loc) / self.scale

    def _log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor, params: Params) -> torch.Tensor:
        return x.new_full((), self._ladj)

    def _forward_and_ladj(self, x: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        return self._forward(x, params), x.new_full((), self._ladj)

    def _inverse_and_ladj(self, y: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        return self._inverse(y, params), y.new_full((), self._ladj)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, loc={self.loc}, scale={self.scale}"
