r"""Ready-made flows: functions that return *plans* of well-known architectures.

Each recipe returns a :class:`~flowtorch.core.lazy.Plan` of a
:class:`~flowtorch.bijectors.Compose`, which ``flowtorch.distributions.Flow(base, plan)``
builds for the base distribution's event shape (or ``plan(shape=...)`` builds directly). A
conditional recipe takes ``context_shape`` (or give it to ``Flow``); the context then reaches
every layer's conditioner.

Between layers the recipes change which dimensions depend on which, so that every dimension
gets transformed conditioned on every other: autoregressive layers alternate the order of
their MADE conditioner (``"identity"``, then ``"reverse"``, ...), coupling layers alternate
``flip``. Alternating the order is the same family of maps as inserting a reversal between
layers, without the extra layer, its gather and its cache entry, and it needs no event size
when the plan is written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from flowtorch.bijectors.affine import AffineAutoregressive
from flowtorch.bijectors.coupling import AffineCoupling, SplineCoupling
from flowtorch.bijectors.spline import SplineAutoregressive
from flowtorch.core.bijector import Bijector
from flowtorch.core.compose import Compose, Invert
from flowtorch.core.lazy import Plan
from flowtorch.core.validation import positive_int, positive_ints
from flowtorch.parameters.coupling import DenseCoupling
from flowtorch.parameters.dense_autoregressive import DenseAutoregressive

__all__ = ["IAF", "MAF", "NSF", "RealNVP"]


def _check(name: str, layers: int, hidden_dims: Sequence[int]) -> tuple[int, tuple[int, ...]]:
    return positive_int(layers, f"{name}: layers"), positive_ints(hidden_dims, f"{name}: hidden_dims")


def _made(
    hidden: tuple[int, ...], nonlinearity: Callable[[], nn.Module], i: int
) -> Plan[DenseAutoregressive]:
    """The MADE plan of layer ``i``: orders alternate between the identity and its reversal."""
    order = "identity" if i % 2 == 0 else "reverse"
    return Plan(DenseAutoregressive, hidden_dims=hidden, nonlinearity=nonlinearity, permutation=order)


def _compose(
    layers: Sequence[Plan[Bijector]], context_shape: torch.Size | tuple[int, ...] | None
) -> Plan[Compose]:
    cs = None if context_shape is None else torch.Size(context_shape)
    return Plan(Compose, layers, context_shape=cs)


def MAF(
    layers: int = 5,
    hidden_dims: Sequence[int] = (64, 64),
    context_shape: torch.Size | tuple[int, ...] | None = None,
    *,
    nonlinearity: Callable[[], nn.Module] = nn.ReLU,
) -> Plan[Compose]:
    r"""Masked autoregressive flow: ``layers`` affine autoregressive layers.

    .. math::
        y_i = \mu_i(y_{<i}, c) + e^{s_i(y_{<i}, c)}\, x_i \quad\text{in each layer,}

    with MADE conditioners (``hidden_dims``) whose order alternates between the identity and
    its reversal. Density evaluation is one parallel pass per layer; sampling takes :math:`D`.

    Reference: Papamakarios et al., "Masked Autoregressive Flow for Density Estimation", 2017.

    Args:
        layers: number of autoregressive layers.
        hidden_dims: hidden sizes of each MADE (each at least :math:`D - 1`).
        context_shape: event shape of the context, for a conditional flow.
        nonlinearity: activation module class of the conditioners.

    Example:
        >>> import torch
        >>> import flowtorch.distributions as dist
        >>> from flowtorch.recipes import MAF
        >>> normal = torch.distributions.Normal(torch.zeros(3), torch.ones(3))
        >>> flow = dist.Flow(torch.distributions.Independent(normal, 1), MAF(layers=2))
        >>> flow.log_prob(torch.randn(4, 3)).shape
        torch.Size([4])
    """
    layers, hidden = _check("MAF", layers, hidden_dims)
    return _compose(
        [Plan(AffineAutoregressive, _made(hidden, nonlinearity, i)) for i in range(layers)],
        context_shape,
    )


def IAF(
    layers: int = 5,
    hidden_dims: Sequence[int] = (64, 64),
    context_shape: torch.Size | tuple[int, ...] | None = None,
    *,
    nonlinearity: Callable[[], nn.Module] = nn.ReLU,
) -> Plan[Compose]:
    r"""Inverse autoregressive flow: ``layers`` inverted affine autoregressive layers.

    .. math::
        y_i = \big(x_i - \mu_i(x_{<i}, c)\big)\, e^{-s_i(x_{<i}, c)} \quad\text{in each layer,}

    i.e. :class:`~flowtorch.bijectors.Invert` of each :func:`MAF` layer: sampling (and
    ``rsample_and_log_prob``, the variational-inference path) is one parallel pass per layer,
    while the density of an arbitrary point takes :math:`D` passes.

    Reference: Kingma et al., "Improved Variational Inference with Inverse Autoregressive
    Flow", 2016.

    Args:
        layers: number of layers.
        hidden_dims: hidden sizes of each MADE (each at least :math:`D - 1`).
        context_shape: event shape of the context, for a conditional flow.
        nonlinearity: activation module class of the conditioners.

    Example:
        >>> import torch
        >>> import flowtorch.distributions as dist
        >>> from flowtorch.recipes import IAF
        >>> normal = torch.distributions.Normal(torch.zeros(3), torch.ones(3))
        >>> flow = dist.Flow(torch.distributions.Independent(normal, 1), IAF(layers=2))
        >>> y, log_p = flow.rsample_and_log_prob((4,))
        >>> y.shape, log_p.shape
        (torch.Size([4, 3]), torch.Size([4]))
    """
    layers, hidden = _check("IAF", layers, hidden_dims)
    return _compose(
        [Plan(Invert, Plan(AffineAutoregressive, _made(hidden, nonlinearity, i))) for i in range(layers)],
        context_shape,
    )


def RealNVP(
    layers: int = 6,
    hidden_dims: Sequence[int] = (64, 64),
    context_shape: torch.Size | tuple[int, ...] | None = None,
    *,
    mask: str | torch.Tensor = "alternate",
    additive: bool = False,
    nonlinearity: Callable[[], nn.Module] = nn.ReLU,
) -> Plan[Compose]:
    r"""RealNVP: ``layers`` affine coupling layers whose identity and transformed parts alternate.

    .. math::
        y_a = x_a, \qquad y_b = x_b \odot e^{s(x_a, c)} + t(x_a, c) \quad\text{in each layer,}

    with ``flip`` alternating so that each part is transformed every other layer. Sampling and
    density evaluation are both one parallel pass per layer. ``additive=True`` gives NICE's
    volume-preserving additive coupling.

    References: Dinh et al., "Density estimation using Real NVP", 2017; Dinh et al., "NICE:
    Non-linear Independent Components Estimation", 2015.

    Args:
        layers: number of coupling layers (an even number transforms each part equally often).
        hidden_dims: hidden sizes of each :class:`~flowtorch.parameters.DenseCoupling`.
        context_shape: event shape of the context, for a conditional flow.
        mask: the first layer's mask (see :class:`~flowtorch.bijectors.AffineCoupling`).
        additive: NICE's additive coupling.
        nonlinearity: activation module class of the conditioners.

    Example:
        >>> import torch
        >>> import flowtorch.distributions as dist
        >>> from flowtorch.recipes import RealNVP
        >>> normal = torch.distributions.Normal(torch.zeros(2), torch.ones(2))
        >>> flow = dist.Flow(torch.distributions.Independent(normal, 1), RealNVP(context_shape=(1,)))
        >>> flow.sample((5,), context=torch.ones(1)).shape
        torch.Size([5, 2])
    """
    layers, hidden = _check("RealNVP", layers, hidden_dims)
    return _compose(
        [
            Plan(
                AffineCoupling,
                Plan(DenseCoupling, hidden_dims=hidden, nonlinearity=nonlinearity),
                mask=mask,
                flip=i % 2 == 1,
                additive=additive,
            )
            for i in range(layers)
        ],
        context_shape,
    )


def NSF(
    layers: int = 5,
    bins: int = 8,
    bound: float = 3.0,
    autoregressive: bool = True,
    hidden_dims: Sequence[int] = (64, 64),
    context_shape: torch.Size | tuple[int, ...] | None = None,
    *,
    nonlinearity: Callable[[], nn.Module] = nn.ReLU,
) -> Plan[Compose]:
    r"""Neural spline flow: ``layers`` rational-quadratic spline layers, autoregressive or coupling.

    .. math::
        y_i = g_{\theta_i}(x_i), \qquad \theta_i = \theta(y_{<i}, c)\ \text{(autoregressive)}
        \ \text{or}\ \theta(x_a, c)\ \text{(coupling)},

    where :math:`g_\theta` is a monotonic rational-quadratic spline with ``bins`` bins on
    ``[-bound, bound]`` and identity tails. ``autoregressive=True`` uses
    :class:`~flowtorch.bijectors.SplineAutoregressive` layers (MADE orders alternating; fast
    density, :math:`D`-pass sampling); ``False`` uses :class:`~flowtorch.bijectors.SplineCoupling`
    layers (alternating ``flip``; both directions one pass).

    Reference: Durkan et al., "Neural Spline Flows", 2019.

    Args:
        layers: number of spline layers.
        bins: number of spline bins :math:`K`.
        bound: half-width of the interval the splines cover.
        autoregressive: autoregressive (True) or coupling (False) layers.
        hidden_dims: hidden sizes of each conditioner (autoregressive: each at least
            :math:`D - 1`).
        context_shape: event shape of the context, for a conditional flow.
        nonlinearity: activation module class of the conditioners.

    Example:
        >>> import torch
        >>> import flowtorch.distributions as dist
        >>> from flowtorch.recipes import NSF
        >>> normal = torch.distributions.Normal(torch.zeros(2), torch.ones(2))
        >>> flow = dist.Flow(torch.distributions.Independent(normal, 1), NSF(layers=2, autoregressive=False))
        >>> flow.log_prob(torch.randn(4, 2)).shape
        torch.Size([4])
    """
    layers, hidden = _check("NSF", layers, hidden_dims)
    if int(bins) != bins or bins < 2:
        raise ValueError(f"NSF: bins must be an integer of at least 2, got {bins}")
    if not bound > 0:
        raise ValueError(f"NSF: bound must be positive, got {bound}")
    plans: list[Plan[Bijector]] = []
    for i in range(layers):
        if autoregressive:
            made = _made(hidden, nonlinearity, i)
            plans.append(Plan(SplineAutoregressive, made, count_bins=bins, bound=bound))
        else:
            net = Plan(DenseCoupling, hidden_dims=hidden, nonlinearity=nonlinearity)
            plans.append(Plan(SplineCoupling, net, flip=i % 2 == 1, count_bins=bins, bound=bound))
    return _compose(plans, context_shape)
