"""Affine bijectors: elementwise with learnable or fixed parameters, and autoregressive (MAF)."""

from __future__ import annotations

import math
import warnings

import torch

from flowtorch.core.bijector import Bijector, Conditioner, Costs, Params
from flowtorch.core.elementwise import ElementwiseBijector
from flowtorch.core.lazy import Plan
from flowtorch.core.validation import nonscalar_event
from flowtorch.parameters import DenseAutoregressive, Tensor
from flowtorch.transformers import AffineTransformer

__all__ = ["Affine", "AffineAutoregressive", "AffineFixed"]


class Affine(ElementwiseBijector):
    r"""Elementwise affine map :math:`y = \mu + \exp(s) \odot x`.

    :math:`\log|\det J| = \sum_i s_i`. The conditioner emits :math:`(\mu, \tilde s)`, and
    :math:`s = f(\tilde s)` is :math:`\tilde s` softly clamped into
    ``(log_scale_min_clip, log_scale_max_clip)`` by :func:`flowtorch.ops.soft_clamp`, which keeps
    the scale bounded and, unlike a hard clamp, a gradient that brings an overshooting
    :math:`\tilde s` back. The maths is :class:`~flowtorch.transformers.AffineTransformer`'s,
    shared with the autoregressive and coupling affine layers.

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

    costs = Costs(
        "analytic", "O(D) elementwise + conditioner", "O(D) elementwise + conditioner", "O(D), with the pass"
    )

    transformer: AffineTransformer
    sign: int | None = 1  # the scale is exp(s) > 0

    def __init__(
        self,
        params_fn: Conditioner | None = None,
        *,
        shape: torch.Size | tuple[int, ...],
        context_shape: torch.Size | tuple[int, ...] | None = None,
        log_scale_min_clip: float = -5.0,
        log_scale_max_clip: float = 3.0,
        sigmoid_bias: float = 2.0,
    ) -> None:
        self.transformer = AffineTransformer(
            log_scale_min_clip, log_scale_max_clip, owner=type(self).__name__
        )
        if sigmoid_bias != 2.0:
            warnings.warn(
                f"{type(self).__name__}: sigmoid_bias has no effect (flowtorch 0.8 accepted it and "
                "ignored it too); the log-scale is bounded by log_scale_min_clip and log_scale_max_clip",
                UserWarning,
                stacklevel=3,
            )
        self.sigmoid_bias = sigmoid_bias
        super().__init__(
            self._default_params() if params_fn is None else params_fn,
            shape=shape,
            context_shape=context_shape,
        )

    @property
    def log_scale_min_clip(self) -> float:
        """The lower bound of the log-scale (see :class:`~flowtorch.transformers.AffineTransformer`)."""
        return self.transformer.log_scale_min_clip

    @property
    def log_scale_max_clip(self) -> float:
        """The upper bound of the log-scale."""
        return self.transformer.log_scale_max_clip

    def _default_params(self) -> Conditioner:
        return Plan(Tensor)


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

    costs = Costs(
        "sequential",
        "D sequential passes of the conditioner",
        "1 parallel pass of the conditioner",
        "O(D), with the pass",
        reference="Papamakarios et al. 2017 (MAF); Kingma et al. 2016 (IAF, via `Invert`)",
    )

    conditioned_on_output = True
    sign = None  # not elementwise

    def __init__(
        self,
        params_fn: Conditioner | None = None,
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

    def _default_params(self) -> Conditioner:
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

    costs = Costs("analytic", "O(D) elementwise", "O(D) elementwise", "O(1)")

    def __init__(
        self,
        params_fn: Conditioner | None = None,
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
        self.sign = 1 if self.scale > 0 else -1
        self._ladj = math.log(abs(self.scale))
        super().__init__(params_fn, shape=shape, context_shape=context_shape)

    def _forward_and_ladj(self, x: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        return x * self.scale + self.loc, x.new_full((), self._ladj)

    def _inverse_and_ladj(self, y: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        return (y - self.loc) / self.scale, y.new_full((), self._ladj)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, loc={self.loc}, scale={self.scale}"
