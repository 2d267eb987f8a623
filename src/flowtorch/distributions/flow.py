"""``Flow``: a distribution defined by pushing a base distribution through a bijector."""

from __future__ import annotations

import copy
from typing import Any, ClassVar, Union

import torch
from torch import nn
from torch.distributions import Distribution, constraints

from flowtorch.bijectors.base import Bijector, build

__all__ = ["Flow"]

_Size = Union[torch.Size, list[int], tuple[int, ...]]


class Flow(nn.Module, Distribution):
    r"""The distribution of :math:`y = f(z)`, :math:`z \sim p_0`.

    .. math:: \log p(y) = \log p_0(f^{-1}(y)) - \log|\det J_f(f^{-1}(y))|

    A ``torch.distributions.Distribution`` and an ``nn.Module`` (its bijector's parameters are
    the flow's parameters). The bijector may be a plan: it is built for the base's event shape.

    Args:
        base_dist: the base distribution :math:`p_0`; its event shape is the flow's.
        bijector: a bijector or a plan of one.
        context_shape: the event shape of the context, for a conditional flow (or give it to
            the bijector's plan).
        validate_args: as for ``torch.distributions``.

    Shapes: ``rsample(sample_shape, context)`` returns ``sample_shape + batch + event`` where
    ``batch`` broadcasts the base's batch shape with the context's batch shape;
    ``log_prob(value, context)`` returns ``value``'s shape without the event dims.

    Example:
        >>> import torch
        >>> import flowtorch.bijectors as bij
        >>> import flowtorch.distributions as dist
        >>> normal = torch.distributions.Normal(torch.zeros(2), torch.ones(2))
        >>> base = torch.distributions.Independent(normal, 1)
        >>> flow = dist.Flow(base, bij.AffineAutoregressive())
        >>> y, log_p = flow.rsample_and_log_prob((5,))
        >>> y.shape, log_p.shape
        (torch.Size([5, 2]), torch.Size([5]))
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {}
    has_rsample = True

    def __init__(
        self,
        base_dist: Distribution,
        bijector: Any,
        context_shape: torch.Size | tuple[int, ...] | None = None,
        validate_args: bool | None = None,
    ) -> None:
        nn.Module.__init__(self)
        if not isinstance(base_dist, Distribution):
            raise TypeError(f"Flow: base_dist must be a torch Distribution, got {type(base_dist).__name__}")
        self.base_dist = base_dist
        event_shape = base_dist.event_shape
        built = build(bijector, shape=event_shape, context_shape=context_shape)
        if not isinstance(built, Bijector):
            raise TypeError(
                f"Flow: bijector must be a flowtorch bijector or plan, got {type(built).__name__}"
            )
        if built.shape != event_shape:
            raise ValueError(
                f"Flow: the bijector acts on shape {tuple(built.shape)}, but the base distribution's "
                f"event shape is {tuple(event_shape)}"
            )
        self.bijector = built
        self._context: torch.Tensor | None = None
        Distribution.__init__(
            self,
            base_dist.batch_shape,
            built.forward_shape(event_shape),
            validate_args=validate_args,
        )

    @property
    def context_shape(self) -> torch.Size | None:
        return self.bijector.context_shape

    @property
    def support(self) -> constraints.Constraint:  # type: ignore[override]
        return self.bijector.codomain

    def condition(self, context: torch.Tensor) -> Flow:
        """A view of this flow with ``context`` bound; it shares the parameters.

        Its ``batch_shape`` includes the context's batch dims.
        """
        self._context_for(context)  # checks it
        view = copy.copy(self)
        view._context = context
        cs = self.context_shape
        assert cs is not None
        ctx_batch = context.shape[: context.dim() - len(cs)]
        view._batch_shape = torch.broadcast_shapes(self.base_dist.batch_shape, ctx_batch)
        return view

    def _context_for(self, context: torch.Tensor | None) -> torch.Tensor | None:
        if context is None:
            context = self._context
        cs = self.context_shape
        if cs is None:
            if context is not None:
                raise ValueError("Flow: this flow is not conditional, but a context was given")
            return None
        if context is None:
            raise ValueError(f"Flow: this flow is conditional (context_shape={tuple(cs)}); pass context=")
        if context.shape[context.dim() - len(cs) :] != cs or context.dim() < len(cs):
            raise ValueError(
                f"Flow: context has shape {tuple(context.shape)}, but its trailing dims must be {tuple(cs)}"
            )
        return context

    def _base_sample_shape(self, sample_shape: _Size, context: torch.Tensor | None) -> torch.Size:
        shape = torch.Size(sample_shape)
        if context is not None:
            cs = self.context_shape
            assert cs is not None
            ctx_batch = context.shape[: context.dim() - len(cs)]
            extra = torch.broadcast_shapes(self.base_dist.batch_shape, ctx_batch)
            extra = extra[: len(extra) - len(self.base_dist.batch_shape)]
            shape = shape + extra
        return shape

    def rsample(self, sample_shape: _Size = (), context: torch.Tensor | None = None) -> torch.Tensor:
        """Reparametrised samples of shape ``sample_shape + batch + event``."""
        context = self._context_for(context)
        z = self.base_dist.rsample(self._base_sample_shape(sample_shape, context))
        return self.bijector.forward(z, context)

    def sample(self, sample_shape: _Size = (), context: torch.Tensor | None = None) -> torch.Tensor:
        """Samples without gradients."""
        with torch.no_grad():
            return self.rsample(sample_shape, context)

    def rsample_and_log_prob(
        self, sample_shape: _Size = (), context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples and their log-density in one forward pass (no inverse)."""
        context = self._context_for(context)
        z = self.base_dist.rsample(self._base_sample_shape(sample_shape, context))
        y, ladj = self.bijector.forward_and_ladj(z, context)
        return y, self.base_dist.log_prob(z) - ladj

    def log_prob(self, value: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """log p(value); inside ``BijectiveMode`` the flow's own samples are scored from the cache."""
        context = self._context_for(context)
        if self._validate_args:
            self._validate_sample(value)
        z, ladj = self.bijector.inverse_and_ladj(value, context)
        return self.base_dist.log_prob(z) - ladj

    def normalize(self, value: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Maps ``value`` to the base space (no gradients)."""
        with torch.no_grad():
            return self.rnormalize(value, context)

    def rnormalize(self, value: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Maps ``value`` to the base space."""
        return self.bijector.inverse(value, self._context_for(context))

    def __repr__(self) -> str:
        return nn.Module.__repr__(self)
