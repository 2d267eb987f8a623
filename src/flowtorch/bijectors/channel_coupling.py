"""Channel-wise affine coupling for images (RealNVP / Glow)."""

from __future__ import annotations

import torch
from torch.distributions import constraints

from flowtorch.core.bijector import Bijector, Conditioner, Costs, Params, build
from flowtorch.core.lazy import Plan
from flowtorch.parameters.conv_coupling import ConvCoupling
from flowtorch.transformers import AffineTransformer

__all__ = ["ChannelAffineCoupling"]


class ChannelAffineCoupling(Bijector):
    r"""Affine coupling over the channels of a ``(C, H, W)`` event.

    The first ``identity_channels`` channels :math:`x_a` are copied; the others are scaled and
    shifted by numbers computed from :math:`x_a` (and the context :math:`c`):

    .. math::
        y_a = x_a, \qquad y_b = x_b \odot e^{s} + t, \qquad
        (t, \tilde s) = \mathrm{NN}(x_a, c), \quad s = \mathrm{softclamp}(\tilde s),

    .. math:: \log|\det J| = \textstyle\sum_{c, h, w} s_{c h w}.

    The inverse, :math:`x_b = (y_b - t)\, e^{-s}`, is as cheap as the forward, since
    :math:`y_a = x_a`. The conditioner emits the unconstrained :math:`(t, \tilde s)`; the soft
    clamp :func:`flowtorch.ops.soft_clamp` into ``(log_scale_min_clip, log_scale_max_clip)``
    (the :class:`~flowtorch.transformers.AffineTransformer` that every affine layer applies)
    keeps the scale bounded while being the identity near zero. Stack it with channel
    mixing (``Invertible1x1Conv``, or ``Reverse(dim=-3)``) so that every channel gets
    transformed.

    The conditioner is built with ``input_shape = (identity_channels, H, W)`` and receives only
    :math:`x_a`; it must return two parameters of shape ``(C - identity_channels, H, W)``.

    References: Dinh et al., "Density estimation using Real NVP", 2017; Kingma and Dhariwal,
    "Glow: Generative Flow with Invertible 1x1 Convolutions", 2018.

    Args:
        params_fn: conditioner plan; default
            :class:`~flowtorch.parameters.conv_coupling.ConvCoupling`.
        identity_channels: how many leading channels condition the rest; default ``C // 2``.
        log_scale_min_clip: the lower bound of the log-scale :math:`s`, negative.
        log_scale_max_clip: its upper bound, positive.

    Example:
        >>> import torch
        >>> from flowtorch.bijectors.channel_coupling import ChannelAffineCoupling
        >>> from flowtorch.parameters.conv_coupling import ConvCoupling
        >>> b = ChannelAffineCoupling(ConvCoupling(hidden_channels=8))(shape=torch.Size([4, 8, 8]))
        >>> x = torch.randn(3, 4, 8, 8)
        >>> y, ladj = b.forward_and_ladj(x)
        >>> ladj.shape, torch.equal(y[:, :2], x[:, :2]), torch.allclose(b.inverse(y), x, atol=1e-5)
        (torch.Size([3]), True, True)
    """

    costs = Costs(
        "analytic",
        "1 parallel pass of the (conv) conditioner",
        "1 parallel pass of the (conv) conditioner",
        "O(CHW), with the pass",
        reference="Dinh et al. 2017; Kingma & Dhariwal 2018",
    )

    domain = constraints.independent(constraints.real, 3)
    codomain = constraints.independent(constraints.real, 3)

    def __init__(
        self,
        params_fn: Conditioner | None = None,
        *,
        shape: torch.Size | tuple[int, ...],
        context_shape: torch.Size | tuple[int, ...] | None = None,
        identity_channels: int | None = None,
        log_scale_min_clip: float = -3.0,
        log_scale_max_clip: float = 3.0,
    ) -> None:
        shape = torch.Size(shape)
        if len(shape) != 3:
            raise ValueError(f"ChannelAffineCoupling: needs a (C, H, W) event, got shape {tuple(shape)}")
        c = shape[0]
        c_a = c // 2 if identity_channels is None else identity_channels
        if isinstance(c_a, bool) or int(c_a) != c_a or not 1 <= c_a < c:
            raise ValueError(
                f"ChannelAffineCoupling: identity_channels must be an integer in [1, {c - 1}] for "
                f"{c} channels (a coupling needs at least 2), got {identity_channels!r}"
            )
        self.transformer = AffineTransformer(
            log_scale_min_clip, log_scale_max_clip, owner="ChannelAffineCoupling"
        )
        self.identity_channels = int(c_a)
        super().__init__(None, shape=shape, context_shape=context_shape)
        # The conditioner reads only the identity channels, so it is built for their shape.
        self.params_fn = build(
            Plan(ConvCoupling) if params_fn is None else params_fn,
            param_shapes=self.param_shapes(),
            input_shape=torch.Size((self.identity_channels, *shape[1:])),
            context_shape=None if context_shape is None else torch.Size(context_shape),
        )
        cs = getattr(self.params_fn, "context_shape", context_shape)
        self.context_shape = None if cs is None else torch.Size(cs)

    def param_shapes(self) -> tuple[torch.Size, ...]:
        s = torch.Size((self.shape[0] - self.identity_channels, *self.shape[1:]))
        return (s, s)

    def _params(self, input: torch.Tensor | None, context: torch.Tensor | None) -> Params:
        assert self.params_fn is not None and input is not None
        return self.params_fn(input[..., : self.identity_channels, :, :], context)

    def _join(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        batch = b.shape[: b.dim() - 3]  # the parameters may carry a wider (context) batch
        if a.shape[: a.dim() - 3] != batch:
            a = a.expand(*batch, *a.shape[-3:])
        return torch.cat([a, b], dim=-3)

    def _map(self, value: torch.Tensor, params: Params, forward: bool) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.identity_channels
        a, b = value[..., :k, :, :], value[..., k:, :, :]
        b, ladj = self.transformer.forward(b, params) if forward else self.transformer.inverse(b, params)
        return self._join(a, b), ladj.sum((-3, -2, -1))

    def _raw_event_dim(self) -> int:
        return 3

    def _log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor, params: Params) -> torch.Tensor:
        return self.transformer.log_scale(params).sum((-3, -2, -1))

    def _forward_and_ladj(self, x: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        return self._map(x, params, True)

    def _inverse_and_ladj(self, y: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        return self._map(y, params, False)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, identity_channels={self.identity_channels}, "
            f"{self.transformer.extra_repr()}"
        )
