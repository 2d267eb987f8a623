r"""Interop: flowtorch bijectors and flows as ``torch.distributions`` transforms, and flows in Pyro.

A bijector exports as a :class:`torch.distributions.Transform` that computes with the bijector
itself (same numbers, same parameters, gradients reach them):

.. math::
    t(x) = f(x; c), \qquad t^{-1}(y) = f^{-1}(y; c), \qquad
    \text{t.log\_abs\_det\_jacobian}(x, y) = \log|\det J_f(x; c)|,

with the context :math:`c` bound at export. Its ``domain`` and ``codomain`` are the bijector's
constraints, whose ``event_dim`` covers the whole event (``len(shape)``), so the log-det has the
batch shape, as ``TransformedDistribution`` expects. The transform keeps no cache of its own
(``cache_size=0``); inside :class:`flowtorch.BijectiveMode` the bijector's cache serves
``t.inv(t(x))`` and the log-det of a pair it computed, as for the bijector itself.

A :class:`~flowtorch.distributions.Flow` is already a ``torch.distributions.Distribution``;
:func:`to_transformed_distribution` gives the equivalent ``TransformedDistribution``, for code
that inspects ``transforms``. A ``Flow`` also works in Pyro directly (``pyro.sample("z", flow)``
samples by calling it and scores with ``log_prob``/``score_parts``; ``pyro.module("q", flow)``
registers its parameters). :func:`to_pyro` wraps it as a ``pyro.distributions.TorchDistribution``
for what Pyro does only with its own classes: broadcasting by ``pyro.plate``, ``.to_event``,
``.mask``. Pyro stays optional: it is imported only by :func:`to_pyro` and ``Flow.score_parts``.

:class:`~flowtorch.interop.autoguide.AutoFlow` (in :mod:`flowtorch.interop.autoguide`, also
reachable as ``flowtorch.interop.AutoFlow``, which imports Pyro on first access only) is a Pyro
autoguide whose posterior over all of a model's latent sites is a flowtorch flow.

References: the ``Transform`` and ``TransformedDistribution`` contract of
``torch.distributions`` (Paszke et al., "PyTorch: An Imperative Style, High-Performance Deep
Learning Library", 2019); Bingham et al., "Pyro: Deep Universal Probabilistic Programming",
JMLR 2019.

Example:
    >>> import torch
    >>> import flowtorch.bijectors as bij
    >>> from flowtorch.interop import to_transform
    >>> t = to_transform(bij.Exp()(shape=torch.Size([2])))
    >>> x = torch.zeros(3, 2)
    >>> t(x)
    tensor([[1., 1.],
            [1., 1.],
            [1., 1.]])
    >>> t.log_abs_det_jacobian(x, t(x)).shape, t.domain.event_dim, t.inv.inv is t
    (torch.Size([3]), 1, True)
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import torch
from torch.distributions import (
    ComposeTransform,
    Distribution,
    Transform,
    TransformedDistribution,
    constraints,
)

from flowtorch.core.bijector import Bijector
from flowtorch.core.compose import Compose, Invert
from flowtorch.core.mode import BijectiveMode
from flowtorch.core.shapes import broadcast_shapes
from flowtorch.distributions.flow import Flow

if TYPE_CHECKING:
    from flowtorch.interop.autoguide import AutoFlow as AutoFlow

# ``AutoFlow`` is left out: a star import would then need Pyro (see ``__getattr__``).
__all__ = ["BijectorTransform", "to_pyro", "to_transform", "to_transformed_distribution"]

#: Names served by ``__getattr__`` from modules that need Pyro, imported on first access.
_NEEDS_PYRO = {"AutoFlow": "flowtorch.interop.autoguide"}


def __getattr__(name: str) -> Any:
    """``flowtorch.interop.AutoFlow``: imports :mod:`flowtorch.interop.autoguide` (and Pyro) only
    when first asked for, so that ``import flowtorch.interop`` works without Pyro."""
    module_name = _NEEDS_PYRO.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name is None or error.name.split(".")[0] != "pyro":
            raise
        raise ModuleNotFoundError(
            f"flowtorch.interop.{name} needs Pyro: pip install pyro-ppl", name=error.name
        ) from error
    return getattr(module, name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_NEEDS_PYRO])


def _sign(b: Bijector) -> int:
    """The sign of a bijector's derivative: its ``sign`` attribute, multiplied through compositions."""
    if isinstance(b, Compose):
        sign = 1
        for layer in b.layers():
            sign *= _sign(layer)
        return sign
    if isinstance(b, Invert):
        return _sign(b.bijector)
    if b.sign is None:
        raise NotImplementedError(
            f"{type(b).__name__} has no sign: torch defines it only for elementwise monotonic transforms "
            "(a bijector that is one sets its class attribute sign to +1 or -1)"
        )
    return b.sign


def _check_context(b: Bijector, context: torch.Tensor | None) -> None:
    name = type(b).__name__
    cs = b.context_shape
    if cs is None:
        if context is not None:
            raise ValueError(f"to_transform: {name} takes no context, but a context was given")
        return
    if context is None:
        raise ValueError(
            f"to_transform: {name} is conditional (context_shape={tuple(cs)}); pass the context to bind"
        )
    if not isinstance(context, torch.Tensor):
        raise TypeError(f"to_transform: the context must be a torch.Tensor, got {type(context).__name__}")
    if context.dim() < len(cs) or context.shape[context.dim() - len(cs) :] != cs:
        raise ValueError(
            f"to_transform: context has shape {tuple(context.shape)}, but its trailing dims must be the "
            f"context shape {tuple(cs)}"
        )


class BijectorTransform(Transform):
    r"""A flowtorch :class:`~flowtorch.core.bijector.Bijector` as a ``torch.distributions.Transform``.

    ``t(x)`` is ``bijector.forward(x, context)``, ``t.inv(y)`` is ``bijector.inverse(y, context)``
    and ``t.log_abs_det_jacobian(x, y)`` is ``bijector.log_abs_det_jacobian(x, y, context)``:
    :math:`\log|\det \partial y / \partial x|` summed over the whole event, of shape ``batch``.

    Args:
        bijector: a built bijector (not a plan).
        context: the context bound to every call, for a conditional bijector; its batch dims
            broadcast against the inputs'.
        cache_size: torch's own one-pair cache, ``0`` (default; flowtorch's
            :class:`~flowtorch.BijectiveMode` caches instead) or ``1``.

    Shapes: ``x`` is ``batch + bijector.shape`` and ``t(x)`` is ``batch + bijector.out_shape``;
    ``domain.event_dim == len(bijector.shape)``, ``codomain.event_dim == len(bijector.out_shape)``.
    ``sign`` is defined (``+1`` or ``-1``) for elementwise monotonic bijectors and compositions of
    them, and raises ``NotImplementedError`` otherwise, as torch's transforms do.

    Reference: ``torch.distributions.transforms.Transform`` (PyTorch documentation), whose
    contract this class follows.

    Example:
        >>> import torch
        >>> import flowtorch.bijectors as bij
        >>> from flowtorch.interop import BijectorTransform
        >>> t = BijectorTransform(bij.AffineFixed(loc=1.0, scale=-2.0)(shape=torch.Size([1])))
        >>> t(torch.ones(1)), t.sign
        (tensor([-1.]), -1)
    """

    bijective = True

    def __init__(self, bijector: Bijector, context: torch.Tensor | None = None, cache_size: int = 0) -> None:
        if not isinstance(bijector, Bijector):
            raise TypeError(
                "BijectorTransform takes a built flowtorch bijector, got "
                f"{type(bijector).__name__}; build a plan first, e.g. plan(shape=torch.Size([2]))"
            )
        _check_context(bijector, context)
        super().__init__(cache_size=cache_size)
        self.bijector = bijector
        self.context = context

    @property
    def domain(self) -> constraints.Constraint:  # type: ignore[override]
        """The bijector's domain; its ``event_dim`` is the number of event dims."""
        return self.bijector.domain

    @property
    def codomain(self) -> constraints.Constraint:  # type: ignore[override]
        """The bijector's codomain; its ``event_dim`` is the number of output event dims."""
        return self.bijector.codomain

    @property
    def sign(self) -> int:
        return _sign(self.bijector)

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        return self.bijector.forward(x, self.context)

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        return self.bijector.inverse(y, self.context)

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.bijector.log_abs_det_jacobian(x, y, self.context)

    def forward_shape(self, shape: torch.Size | tuple[int, ...]) -> torch.Size:
        return self.bijector.forward_shape(torch.Size(shape))

    def inverse_shape(self, shape: torch.Size | tuple[int, ...]) -> torch.Size:
        return self.bijector.inverse_shape(torch.Size(shape))

    def with_cache(self, cache_size: int = 1) -> BijectorTransform:
        """The same transform with torch's single-value cache (``cache_size=1``) or none (``0``)."""
        if cache_size == self._cache_size:
            return self
        return BijectorTransform(self.bijector, self.context, cache_size)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, BijectorTransform)
            and other.bijector is self.bijector
            and other.context is self.context
        )

    def __hash__(self) -> int:
        return hash((id(self.bijector), id(self.context)))

    def __repr__(self) -> str:
        return f"BijectorTransform({type(self.bijector).__name__}({self.bijector.extra_repr()}))"


class _ComposeOfLayers(ComposeTransform):
    """``ComposeTransform`` of a ``Compose``'s exported layers whose log-det is the ``Compose``'s.

    torch's ``ComposeTransform`` gets the intermediate values by calling each layer forward on
    ``x`` again (free only with torch's own caches); ``Compose`` walks back from ``y``, which
    inside ``BijectiveMode`` is a chain of cache hits, and outside it gives the same numbers.
    """

    def __init__(
        self, parts: list[Transform], bijector: Compose, context: torch.Tensor | None, cache_size: int = 0
    ) -> None:
        super().__init__(parts, cache_size=cache_size)
        self.bijector = bijector
        self.context = context

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.bijector.log_abs_det_jacobian(x, y, self.context)

    def with_cache(self, cache_size: int = 1) -> Transform:
        if cache_size == self._cache_size:
            return self
        return _ComposeOfLayers(self.parts, self.bijector, self.context, cache_size)


def to_transform(
    bijector: Bijector, context: torch.Tensor | None = None, *, flatten: bool = False
) -> Transform:
    r"""Exports ``bijector`` as a ``torch.distributions.Transform`` (see :class:`BijectorTransform`).

    For a bijector :math:`f` and a bound context :math:`c`, the transform :math:`t` computes

    .. math::
        t(x) = f(x; c), \qquad t^{-1}(y) = f^{-1}(y; c), \qquad
        \log|\det J_t(x)| = \log|\det J_f(x; c)|;

    flattened, a ``Compose`` :math:`f_n \circ \dots \circ f_1` becomes :math:`t_n \circ \dots
    \circ t_1` and an ``Invert`` of :math:`g` becomes :math:`t_g^{-1}`.

    Reference: ``torch.distributions.transforms.Transform`` and ``ComposeTransform`` (PyTorch
    documentation).

    Args:
        bijector: a built bijector.
        context: the context to bind, for a conditional bijector.
        flatten: export a :class:`~flowtorch.bijectors.Compose` as a ``ComposeTransform`` of its
            layers (recursively; an ``Invert`` of a flattened bijector becomes its ``.inv``)
            instead of one transform. Both give the same numbers; one transform makes one
            call per direction, the flattened form lets torch code see the layers.

    torch's ``TransformedDistribution.log_prob`` asks a transform for ``inv(y)`` and then, in a
    second call, for ``log_abs_det_jacobian(x, y)``; outside :class:`~flowtorch.BijectiveMode`
    nothing links the two, so a ``Compose`` walks its layers again for the log-det (twice the
    conditioner calls of ``Flow.log_prob``). :func:`to_transformed_distribution` scores in one
    pass; for a ``TransformedDistribution`` built by hand, call its ``log_prob`` inside the mode.

    Example:
        >>> import torch
        >>> import flowtorch.bijectors as bij
        >>> from flowtorch.interop import to_transform
        >>> f = bij.Compose([bij.Exp(), bij.AffineFixed(loc=1.0)])(shape=torch.Size([2]))
        >>> t = to_transform(f, flatten=True)
        >>> isinstance(t, torch.distributions.ComposeTransform), len(t.parts), t(torch.zeros(2))
        (True, 2, tensor([2., 2.]))
    """
    if not flatten:
        return BijectorTransform(bijector, context)
    if isinstance(bijector, Compose):
        _check_context(bijector, context)
        parts = [
            to_transform(b, context if b.context_shape is not None else None, flatten=True)
            for b in bijector.layers()
        ]
        return _ComposeOfLayers(parts, bijector, context)
    if isinstance(bijector, Invert):
        _check_context(bijector, context)
        return to_transform(bijector.bijector, context, flatten=True).inv
    return BijectorTransform(bijector, context)


def to_transformed_distribution(
    flow: Flow, context: torch.Tensor | None = None, *, flatten: bool = False
) -> TransformedDistribution:
    r"""``flow`` as a ``torch.distributions.TransformedDistribution`` (base and exported bijector).

    The result shares the flow's parameters and gives the same ``log_prob``,

    .. math::
        \log p(y) = \log p_0\big(f^{-1}(y; c)\big) - \log\big|\det J_f\big(f^{-1}(y; c); c\big)\big|,

    its ``log_prob`` runs one inverse pass, as ``Flow.log_prob`` does (each call opens its own
    :class:`~flowtorch.BijectiveMode`, which closes with it), and its ``rsample`` follows the
    same maths, :math:`y = f(z; c)` with :math:`z \sim p_0` (with its own draws from the base).
    A conditional flow needs ``context`` (or to be a ``flow.condition(context)`` view); the base
    is then expanded to the batch shape that the context's batch dims make, so that
    ``batch_shape`` is the flow's.

    Args:
        flow: a :class:`~flowtorch.distributions.Flow`.
        context: the context to bind (default: the one bound by ``flow.condition``).
        flatten: as for :func:`to_transform`.

    References: Papamakarios et al., "Normalizing Flows for Probabilistic Modeling and
    Inference", 2021 (the change of variables above); ``torch.distributions.TransformedDistribution``
    (PyTorch documentation).

    Example:
        >>> import torch
        >>> import flowtorch.bijectors as bij
        >>> import flowtorch.distributions as dist
        >>> from flowtorch.interop import to_transformed_distribution
        >>> base = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(2), 1.0), 1)
        >>> flow = dist.Flow(base, bij.AffineAutoregressive())
        >>> td = to_transformed_distribution(flow)
        >>> y = torch.randn(5, 2)
        >>> torch.allclose(td.log_prob(y), flow.log_prob(y), atol=1e-6)
        True
    """
    if not isinstance(flow, Flow):
        raise TypeError(f"to_transformed_distribution takes a flowtorch Flow, got {type(flow).__name__}")
    context = flow._context_for(context)
    base: Distribution = flow.base_dist
    batch = flow.batch_shape
    if context is not None:
        cs = flow.context_shape
        assert cs is not None
        batch = broadcast_shapes(batch, context.shape[: context.dim() - len(cs)])
    if base.batch_shape != batch:
        base = base.expand(batch)
    return _TransformedInOnePass(
        base, [to_transform(flow.bijector, context, flatten=flatten)], validate_args=flow._validate_args
    )


class _TransformedInOnePass(TransformedDistribution):
    """A ``TransformedDistribution`` whose ``log_prob`` runs one inverse pass.

    torch's ``log_prob`` asks each transform for ``inv(y)``, then for
    ``log_abs_det_jacobian(x, y)`` in a second call; without a cache a ``Compose`` has to find its
    intermediate values again for the second. Here both calls run inside one
    :class:`~flowtorch.BijectiveMode`, opened and closed by this ``log_prob``: the log-det is the
    one recorded by the inverse pass, and no entry outlives the call.
    """

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        with BijectiveMode():
            log_p: torch.Tensor = super().log_prob(value)
        return log_p


@functools.cache
def _pyro_flow_class() -> type:
    import pyro.distributions as pyro_dist  # type: ignore[import-not-found]

    class PyroFlow(pyro_dist.TorchDistribution):  # type: ignore[misc]
        """A flowtorch ``Flow`` as a ``pyro.distributions.TorchDistribution`` (shares its parameters)."""

        arg_constraints: dict[str, constraints.Constraint] = {}  # noqa: RUF012
        has_rsample = True

        def __init__(self, flow: Flow) -> None:
            self.flow = flow
            super().__init__(flow.batch_shape, flow.event_shape, validate_args=False)

        @property
        def support(self) -> constraints.Constraint:
            return self.flow.support

        def rsample(self, sample_shape: Any = ()) -> torch.Tensor:
            return self.flow.rsample(torch.Size(sample_shape))

        def sample(self, sample_shape: Any = ()) -> torch.Tensor:
            return self.flow.sample(torch.Size(sample_shape))

        def log_prob(self, value: torch.Tensor) -> torch.Tensor:
            return self.flow.log_prob(value)

        def expand(self, batch_shape: Any, _instance: Any = None) -> Any:
            return PyroFlow(self.flow.expand(torch.Size(batch_shape)))

        def __repr__(self) -> str:
            return f"PyroFlow(batch_shape={tuple(self.batch_shape)}, event_shape={tuple(self.event_shape)})"

    return PyroFlow


def to_pyro(flow: Flow, context: torch.Tensor | None = None) -> Any:
    r"""``flow`` as a ``pyro.distributions.TorchDistribution``, sharing its parameters.

    The wrapper scores with the flow's own density,
    :math:`\log p(y) = \log p_0(f^{-1}(y; c)) - \log|\det J_f(f^{-1}(y; c); c)|`, and samples
    :math:`y = f(z; c)`, :math:`z \sim p_0`, reparametrised.

    A ``Flow`` works in ``pyro.sample`` as it is; this wrapper adds what Pyro reserves for its own
    distribution classes: ``pyro.plate`` expands it to the plate's batch shape, and
    ``.to_event``, ``.mask`` and ``.expand_by`` are available. Register the parameters with
    ``pyro.module("name", flow)``. Needs ``pyro-ppl``.

    Args:
        flow: a :class:`~flowtorch.distributions.Flow`.
        context: the context to bind, for a conditional flow (default: the one bound by
            ``flow.condition``).

    Reference: Bingham et al., "Pyro: Deep Universal Probabilistic Programming", JMLR 2019.

    Example (needs ``pyro-ppl``):
        >>> import pyro  # doctest: +SKIP
        >>> def guide():  # doctest: +SKIP
        ...     pyro.module("q", flow)
        ...     with pyro.plate("particles", 8):
        ...         pyro.sample("z", to_pyro(flow))  # shape (8, *flow.event_shape)
    """
    if not isinstance(flow, Flow):
        raise TypeError(f"to_pyro takes a flowtorch Flow, got {type(flow).__name__}")
    if context is not None:
        flow = flow.condition(context)
    return _pyro_flow_class()(flow)
