"""Composition and inversion of bijectors."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, cast

import torch
from torch.distributions import constraints

from flowtorch.core.bijector import Bijector, Costs, build, current_scope, unintercepted, warn_miss
from flowtorch.core.lazy import Plan

__all__ = ["Compose", "Invert"]


class Compose(Bijector):
    r"""The composition :math:`f = f_n \circ \dots \circ f_1` of ``bijectors`` (applied in order).

    With :math:`x_0 = x` and :math:`x_k = f_k(x_{k-1})`, the chain rule gives

    .. math::
        \log|\det J_f(x)| = \sum_{k=1}^{n} \log|\det J_{f_k}(x_{k-1})|,

    the sum of the layers' log-dets. Each layer records its own cache entry inside
    ``BijectiveMode``, so inverting a composed output walks back through cache hits and the
    composed log|det J| is the sum of the recorded ones. The context, if any, goes to every
    conditional layer.

    Reference: Rezende & Mohamed, "Variational Inference with Normalizing Flows", 2015 (a flow
    as a composition of invertible maps, its log-density a sum of log-dets).

    Args:
        bijectors: plans or built bijectors, applied in order.

    Example:
        >>> import torch
        >>> import flowtorch.bijectors as bij
        >>> f = bij.Compose([bij.Exp(), bij.AffineFixed(loc=1.0, scale=2.0)])(shape=torch.Size([2]))
        >>> f.forward(torch.zeros(2))
        tensor([3., 3.])
    """

    costs = Costs("as its layers", "sum of its layers", "sum of its layers", "sum of its layers")

    def __new__(cls, bijectors: Sequence[Bijector | Plan[Bijector]] = (), **kwargs: Any) -> Any:
        built = list(bijectors)
        if kwargs.get("shape") is None and built and all(isinstance(b, Bijector) for b in built):
            kwargs["shape"] = cast(Bijector, built[0]).shape
        return super().__new__(cls, bijectors, **kwargs)

    def __init__(
        self,
        bijectors: Sequence[Bijector | Plan[Bijector]] = (),
        *,
        shape: torch.Size | tuple[int, ...] | None = None,
        context_shape: torch.Size | tuple[int, ...] | None = None,
    ) -> None:
        bijectors = list(bijectors)
        if shape is None:  # all built: ``Compose([b1, b2])``
            shape = cast(Bijector, bijectors[0]).shape
        layers = []
        current = torch.Size(shape)
        for plan in bijectors:
            layer = build(plan, shape=current, context_shape=context_shape)
            if not isinstance(layer, Bijector):
                raise TypeError(f"Compose takes bijectors or their plans, got {type(layer).__name__}")
            if layer.shape != current:
                raise ValueError(
                    f"Compose: {type(layer).__name__} acts on shape {tuple(layer.shape)}, "
                    f"but the previous layer produces {tuple(current)}"
                )
            layers.append(layer)
            current = layer.forward_shape(current)
        if not layers:
            raise ValueError("Compose needs at least one bijector")
        super().__init__(None, shape=shape, out_shape=current)
        self.bijectors = torch.nn.ModuleList(layers)
        self.context_shape = next((b.context_shape for b in layers if b.context_shape is not None), None)
        self.domain = layers[0].domain
        self.codomain = layers[-1].codomain

    def forward_shape(self, shape: torch.Size) -> torch.Size:
        for b in self.layers():
            shape = b.forward_shape(shape)
        return shape

    def inverse_shape(self, shape: torch.Size) -> torch.Size:
        for b in reversed(list(self.layers())):
            shape = b.inverse_shape(shape)
        return shape

    def layers(self) -> Iterator[Bijector]:
        """The layers, in the order ``forward`` applies them."""
        return cast("Iterator[Bijector]", iter(self.bijectors))

    def _ctx(self, b: Bijector, context: torch.Tensor | None) -> torch.Tensor | None:
        return context if b.context_shape is not None else None

    def _check_context(self, context: torch.Tensor | None) -> None:
        if context is not None and self.context_shape is None:
            raise ValueError("Compose: no layer takes a context, but a context was given")
        if context is None and self.context_shape is not None:
            raise ValueError(
                f"Compose is conditional (context_shape={tuple(self.context_shape)}), "
                "but no context was given"
            )

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        self._check_context(context)
        for b in self.layers():
            x = b.forward(x, self._ctx(b, context))
        return x

    def inverse(self, y: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        self._check_context(context)
        for b in reversed(list(self.layers())):
            y = b.inverse(y, self._ctx(b, context))
        return y

    def forward_and_ladj(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_context(context)
        total: torch.Tensor | None = None
        with unintercepted():  # the layers record their own entries; the sum needs no interception
            for b in self.layers():
                x, ladj = b.forward_and_ladj(x, self._ctx(b, context))
                total = ladj if total is None else total + ladj
        assert total is not None
        return x, total

    def inverse_and_ladj(
        self, y: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_context(context)
        total: torch.Tensor | None = None
        with unintercepted():
            for b in reversed(list(self.layers())):
                y, ladj = b.inverse_and_ladj(y, self._ctx(b, context))
                total = ladj if total is None else total + ladj
        assert total is not None
        return y, total

    def _recorded_key(
        self, value: torch.Tensor, forward: bool, context: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        layers = list(self.layers())
        for b in reversed(layers) if forward else layers:
            key = b._recorded_key(value, forward, self._ctx(b, context))
            if key is None:
                return None
            value = key
        return value

    def log_abs_det_jacobian(
        self, x: torch.Tensor, y: torch.Tensor, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Sum of the layers' log-dets at the points that walk back from ``y``.

        Inside ``BijectiveMode``, when every layer's ``inverse`` recorded the chain from ``y`` to
        ``x`` (``x = inverse(y)``), walks forward from ``x`` instead, so that every layer is a
        hit; walking back from ``y`` hits the entries of ``y = forward(x)``. Either way the
        layers' points are those of the walk back from ``y``, as outside the mode. With neither
        chain recorded, the mode warns once (``CacheMissWarning``).
        """
        scope = current_scope()
        if scope is not None:
            with unintercepted():
                if self._recorded_key(x, False, context) is y:
                    return self.forward_and_ladj(x, context)[1]
                if self._recorded_key(y, True, context) is None:
                    warn_miss(scope, self)
        return self.inverse_and_ladj(y, context)[1]

    def extra_repr(self) -> str:
        return ""


class Invert(Bijector):
    r"""The inverse of a bijector: ``forward`` is its ``inverse`` and vice versa.

    For the inner bijector :math:`g`, this is :math:`f = g^{-1}` with

    .. math::
        \log|\det J_f(x)| = -\log|\det J_g(g^{-1}(x))|,

    so ``log_abs_det_jacobian(x, y)`` is minus the inner one at the swapped pair ``(y, x)``. The
    domain and codomain, the event shapes and the context are the inner bijector's, swapped
    where they have a direction.

    ``Invert(AffineAutoregressive(...))`` is an inverse autoregressive flow (IAF): parallel
    forward (fast sampling), sequential inverse.

    Reference: Kingma et al., "Improved Variational Inference with Inverse Autoregressive Flow",
    2016.

    Args:
        bijector: the bijector to invert, built or a plan; a plan is built so that its *output*
            event is ``shape`` (and its input event becomes this bijector's ``out_shape``).

    Example:
        >>> import torch
        >>> import flowtorch.bijectors as bij
        >>> log = bij.Invert(bij.Exp())(shape=torch.Size([1]))
        >>> log.forward(torch.ones(1))
        tensor([0.])
    """

    costs = Costs(
        "as the inner bijector's forward",
        "the inner bijector's inverse",
        "the inner bijector's forward",
        "minus the inner bijector's",
    )

    def __new__(cls, bijector: Bijector | Plan[Bijector] | None = None, **kwargs: Any) -> Any:
        if kwargs.get("shape") is None and isinstance(bijector, Bijector):
            kwargs["shape"] = bijector.out_shape
        return super().__new__(cls, bijector, **kwargs)

    def __init__(
        self,
        bijector: Bijector | Plan[Bijector],
        *,
        shape: torch.Size | tuple[int, ...] | None = None,
        context_shape: torch.Size | tuple[int, ...] | None = None,
    ) -> None:
        if shape is None:  # built: ``Invert(b)``
            shape = cast(Bijector, bijector).out_shape
        shape = torch.Size(shape)
        inner: Bijector = build(bijector, shape=shape, context_shape=context_shape)
        if not isinstance(inner, Bijector):
            raise TypeError(f"Invert takes a bijector or its plan, got {type(inner).__name__}")
        if inner.out_shape != shape and bijector is not inner:
            # a shape-changing plan: build it for the shape whose forward output is ``shape``
            inner = build(bijector, shape=inner.inverse_shape(shape), context_shape=context_shape)
        if inner.out_shape != shape:
            raise ValueError(
                f"Invert: the inner bijector maps {tuple(inner.shape)} to {tuple(inner.out_shape)}, "
                f"so its inverse cannot act on shape {tuple(shape)}"
            )
        super().__init__(None, shape=shape, out_shape=inner.shape)
        self.bijector = inner
        self.context_shape = inner.context_shape
        self.domain: constraints.Constraint = inner.codomain
        self.codomain: constraints.Constraint = inner.domain

    def forward_shape(self, shape: torch.Size) -> torch.Size:
        return self.bijector.inverse_shape(shape)

    def inverse_shape(self, shape: torch.Size) -> torch.Size:
        return self.bijector.forward_shape(shape)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.bijector.inverse(x, context)

    def inverse(self, y: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.bijector.forward(y, context)

    def forward_and_ladj(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        with unintercepted():
            y, ladj = self.bijector.inverse_and_ladj(x, context)
            return y, -ladj

    def inverse_and_ladj(
        self, y: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        with unintercepted():
            x, ladj = self.bijector.forward_and_ladj(y, context)
            return x, -ladj

    def _recorded_key(
        self, value: torch.Tensor, forward: bool, context: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        return self.bijector._recorded_key(value, not forward, context)

    def log_abs_det_jacobian(
        self, x: torch.Tensor, y: torch.Tensor, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        with unintercepted():
            return -self.bijector.log_abs_det_jacobian(y, x, context)

    def extra_repr(self) -> str:
        return ""
