r"""Glow: a multi-scale flow on images, written with the library's bijectors alone.

The recipe returns a :class:`~flowtorch.core.lazy.Plan`; ``flowtorch.distributions.Flow(base, plan)``
builds it for the base distribution's ``(C, H, W)`` event shape.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from flowtorch.bijectors.channel_coupling import ChannelAffineCoupling
from flowtorch.bijectors.reshape import Squeeze, Unsqueeze
from flowtorch.bijectors.reverse import Reverse
from flowtorch.core.bijector import Bijector
from flowtorch.core.combinators import FactorOut
from flowtorch.core.compose import Compose, Invert
from flowtorch.core.lazy import Plan
from flowtorch.core.validation import positive_int
from flowtorch.parameters.conv_coupling import ConvCoupling

__all__ = ["Glow"]

_PERMUTATIONS = ("conv1x1", "reverse")


def Glow(
    levels: int = 2,
    steps: int = 4,
    hidden_channels: int = 64,
    context_shape: torch.Size | tuple[int, ...] | None = None,
    *,
    actnorm: bool = True,
    permutation: str = "conv1x1",
    kernel_size: int = 3,
    log_scale_min_clip: float = -3.0,
    log_scale_max_clip: float = 3.0,
    nonlinearity: Callable[[], nn.Module] = nn.ReLU,
) -> Plan[Invert]:
    r"""Glow (Kingma and Dhariwal, 2018): ``levels`` scales of ``steps`` flow steps each.

    Read from data :math:`x` to latent :math:`z` (the encoder, the direction of the paper), one
    *step of flow* is

    .. math::
        h \mapsto \mathrm{coupling}\big(W \cdot \mathrm{actnorm}(h)\big),

    an :class:`~flowtorch.bijectors.ActNorm` over channels, an
    :class:`~flowtorch.bijectors.Invertible1x1Conv` :math:`W`, and a
    :class:`~flowtorch.bijectors.channel_coupling.ChannelAffineCoupling` whose
    :class:`~flowtorch.parameters.conv_coupling.ConvCoupling` reads half of the channels. A
    *scale* squeezes the image (:math:`(C, H, W) \to (4C, H/2, W/2)`), runs ``steps`` steps,
    and, except at the last scale, factors out half of the channels, which go straight to the
    base distribution while the other half goes on to the next scale:

    .. math::
        \mathrm{scale}_\ell = \mathrm{Unsqueeze} \circ \mathrm{FactorOut}(\mathrm{scale}_{\ell+1})
        \circ \mathrm{step}^{\,\text{steps}} \circ \mathrm{Squeeze}.

    Each scale ends by unsqueezing, so the latent has the data's shape ``(C, H, W)`` and the base
    is one distribution over it (a standard normal, as in the paper without its learned priors).

    The plan is ``Invert(encoder)``: in a ``Flow``, ``log_prob`` runs the encoder (so ActNorm's
    data-dependent initialisation sees the data on the first training batch) and
    ``sample``/``rsample`` run the decoder. Every step has a closed-form inverse, so both are one
    parallel pass.

    Reference: Kingma and Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions",
    2018.

    Args:
        levels: number of scales :math:`L`; ``H`` and ``W`` must be divisible by :math:`2^L`.
        steps: steps of flow per scale.
        hidden_channels: width of each coupling's CNN.
        context_shape: event shape of the context, for a conditional flow; it reaches every
            coupling's CNN as extra channels.
        actnorm: start each step with ActNorm.
        permutation: the channel mixing of each step: ``"conv1x1"`` (Glow) or ``"reverse"``
            (reverse the channels; the paper's cheaper baseline).
        kernel_size: kernel size of the couplings' first and last convolutions.
        log_scale_min_clip: lower bound of the couplings' log-scales.
        log_scale_max_clip: upper bound of the couplings' log-scales.
        nonlinearity: activation module class of the couplings' CNNs.

    Shapes: the event is ``(C, H, W)``; every step keeps the number of elements.

    Example:
        >>> import torch
        >>> import flowtorch.distributions as dist
        >>> from flowtorch.recipes import Glow
        >>> normal = torch.distributions.Normal(torch.zeros(1, 8, 8), torch.ones(1, 8, 8))
        >>> flow = dist.Flow(torch.distributions.Independent(normal, 3), Glow(steps=2, hidden_channels=8))
        >>> images = torch.rand(16, 1, 8, 8)
        >>> flow.log_prob(images).shape, flow.sample((2,)).shape
        (torch.Size([16]), torch.Size([2, 1, 8, 8]))
    """
    levels = positive_int(levels, "Glow: levels")
    steps = positive_int(steps, "Glow: steps")
    hidden_channels = positive_int(hidden_channels, "Glow: hidden_channels")
    if permutation not in _PERMUTATIONS:
        raise ValueError(f"Glow: permutation must be one of {_PERMUTATIONS}, got {permutation!r}")
    # ActNorm and Invertible1x1Conv live in their own modules; imported here, when asked for.
    mixing: list[Plan[Bijector]] = []
    if actnorm:
        from flowtorch.bijectors.normalization import ActNorm

        mixing.append(Plan(ActNorm, dim=-3))
    if permutation == "conv1x1":
        from flowtorch.bijectors.conv import Invertible1x1Conv

        mixing.append(Plan(Invertible1x1Conv))
    else:
        mixing.append(Plan(Reverse, -3))
    coupling = Plan(
        ChannelAffineCoupling,
        Plan(
            ConvCoupling, hidden_channels=hidden_channels, kernel_size=kernel_size, nonlinearity=nonlinearity
        ),
        log_scale_min_clip=log_scale_min_clip,
        log_scale_max_clip=log_scale_max_clip,
    )

    def scale(level: int) -> Plan[Compose]:
        layers: list[Plan[Bijector]] = [Plan(Squeeze)]
        for _ in range(steps):
            layers += [*mixing, coupling]
        if level + 1 < levels:
            layers.append(Plan(FactorOut, scale(level + 1)))
        layers.append(Plan(Unsqueeze))
        return Plan(Compose, layers)

    cs = None if context_shape is None else torch.Size(context_shape)
    return Plan(Invert, scale(0), context_shape=cs)
