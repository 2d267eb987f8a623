"""The ``Bijector`` base class: everything generic about a transform, written once.

A concrete bijector is an ``nn.Module`` built for one event ``shape`` (and, if conditional, one
``context_shape``). Subclasses write only the maths given parameters, one method per direction:

* ``_forward_and_ladj(x, params) -> (y, ladj)``: the output with the forward log|det dy/dx|,
  elementwise over the event dims that ``type(self).domain`` does not already reduce (its
  ``event_dim``); the base class sums those dims and broadcasts to the batch shape;
* ``_inverse_and_ladj(y, params) -> (x, ladj)``, with the same *forward* log|det J|, where a
  closed-form inverse exists (leave it out otherwise).

Write them from the call's input and ``params`` only (never by reading the output):
``BijectiveMode`` stores that value on the output, and a value whose autograd graph holds the
output would keep it alive forever. ``_forward``, ``_inverse`` and
``_log_abs_det_jacobian(x, y, params)`` are derived from them; write one of those too only where
it is cheaper alone. (The older form, ``_forward`` and ``_log_abs_det_jacobian`` instead of
``_forward_and_ladj``, also works: then the mode stores ``params`` and computes log|det J| on
demand.) Elementwise maths shared by several wirings is a :mod:`flowtorch.transformers` class.

``BijectiveMode(requires_ladj=False)`` runs ``_forward_deferred(x, params) -> (y, later)`` (and
``_inverse_deferred``) instead: ``later()`` computes the raw log|det J| from what the pass kept
(a spline's bin and its knots), so that sampling skips the log-det and scoring later redoes
nothing. By default a class with a separate ``_forward`` runs it alone (``later`` is ``None``, and
the log-det comes from ``_log_abs_det_jacobian`` and the recorded ``params``), and a class with
only the fused method runs that and keeps its log-det. Override them where the log-det has a cost
of its own. A direction may also be written as its deferred pass alone (``Planar``, ``Radial``,
``Sylvester``): the fused and value-only methods are then derived from it.

A family's shared maths, not a bijector by itself, is declared ``class Family(Bijector,
base=True)``; the generic tests and the table of bijectors skip it (``is_base``).

``param_shapes()`` gives the shape of each parameter per event, if the bijector takes parameters
from a conditioner (``params_fn``); hyperparameters are set *before* calling
``super().__init__``.

The base class provides laziness (a class called without ``shape`` returns a plan), input and
context checks, the reduction of log|det J| to the batch shape, and the ``BijectiveMode`` cache.
"""

from __future__ import annotations

import contextlib
import itertools
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, Union, overload

import torch
from torch.distributions import constraints

from flowtorch.core import mode as _mode
from flowtorch.core.lazy import LazyModule, Plan
from flowtorch.core.shapes import broadcastable
from flowtorch.core.validation import check_context

if TYPE_CHECKING:  # the conditioners' base class, for types only: the engine does not import them
    from flowtorch.parameters.base import Parameters

__all__ = ["Bijector", "Conditioner", "Costs", "Params", "SequentialSamplingWarning", "build"]

#: What a bijector's maths methods receive: what its ``_params`` returns. Usually the tuple of
#: tensors its conditioner emits, ``None`` without a conditioner; wrappers pass their own records
#: (a list of calls, a solver's state). Each bijector reads its own, so there is no one type.
Params = Any

#: A bijector's ``params_fn``: a conditioner plan (``params.DenseAutoregressive.plan()``), a
#: conditioner class (built with its defaults), or a conditioner already built.
Conditioner = Union["Parameters", Plan["Parameters"], type["Parameters"]]

_M = TypeVar("_M", bound=torch.nn.Module)

#: What a deferred pass leaves for log|det J|: a function of no arguments that computes it from
#: tensors the pass computed (see ``Bijector._forward_deferred``).
Later = Callable[[], torch.Tensor]


def _kept(ladj: torch.Tensor) -> Later:
    """A ``Later`` for a log-det already computed."""
    return lambda: ladj


#: Runs a block with the active ``BijectiveMode`` off the torch-function stack: for the arithmetic
#: around bijector calls in wrappers and flows (a composition's sum of log-dets, a flow's base
#: density), whose ops write to no tensor the mode watches. The mode is consulted here, in the
#: base module, so that ``Compose`` and ``Flow`` need not know it.
unintercepted = _mode.unintercepted
#: The innermost active mode's activation on this thread (``None`` outside or under compile).
current_scope = _mode.current_scope


class SequentialSamplingWarning(UserWarning):
    r"""A bijector's ``forward`` ran one conditioner pass per dimension (given once per class).

    An autoregressive bijector whose conditioner reads its *output* (``AffineAutoregressive``,
    ``SplineAutoregressive``: the MAF direction, as in flowtorch 0.8's default) computes
    :math:`y_i = f(x_i; 	heta(y_{<i}))`, so ``forward`` (sampling) needs :math:`D` sequential
    passes while ``inverse`` (scoring data) needs one. Where sampling is the hot path (a
    variational guide, ``rsample`` in a loop), invert it: ``bij.Invert(bij.AffineAutoregressive(...))``
    or the ``flowtorch.recipes.IAF`` recipe sample in one pass per layer. Silence it with
    ``warnings.filterwarnings("ignore", category=flowtorch.bijectors.SequentialSamplingWarning)``.

    Reference: Kingma et al., "Improved Variational Inference with Inverse Autoregressive Flow",
    2016 (IAF: the direction that samples in parallel).

    Example:
        >>> import warnings, torch
        >>> import flowtorch.bijectors as bij
        >>> from flowtorch.core.bijector import SequentialSamplingWarning
        >>> issubclass(SequentialSamplingWarning, UserWarning)
        True
    """


#: Classes that have given their ``SequentialSamplingWarning`` in this process.
_WARNED_SEQUENTIAL: set[type] = set()
#: Above this many dimensions a sequential forward pass warns (once per class).
SEQUENTIAL_WARNING_DIMS = 8


@overload
def build(plan: Plan[_M], **kwargs: Any) -> _M: ...
@overload
def build(plan: type[_M], **kwargs: Any) -> _M: ...
@overload
def build(plan: _M, **kwargs: Any) -> _M: ...
def build(plan: Plan[_M] | type[_M] | _M, **kwargs: Any) -> _M:
    r"""Builds ``plan`` (a :class:`~flowtorch.core.lazy.Plan` or a class) or returns a built object.

    .. math::
        \mathrm{build}(P, s) = P(s) \ \text{for a plan or class } P, \qquad
        \mathrm{build}(b, s) = b \ \text{for a built object } b.

    Reference: ``functools.partial`` (Python documentation), the partial application that a plan
    stands for (see :class:`~flowtorch.core.lazy.Plan`).

    Args:
        plan: a plan, a class, or an object already built (returned as it is, ``kwargs`` unused).
        **kwargs: the build arguments (``shape``, ``context_shape``, ``param_shapes``, ...).

    Example:
        >>> import torch
        >>> import flowtorch.bijectors as bij
        >>> from flowtorch.core.bijector import build
        >>> b = build(bij.Exp(), shape=torch.Size([2]))
        >>> type(b).__name__, tuple(b.shape), build(b, shape=torch.Size([5])) is b
        ('Exp', (2,), True)
    """
    if isinstance(plan, (Plan, type)):
        return plan(**kwargs)
    return plan


@dataclass(frozen=True)
class Costs:
    """What a bijector class declares about itself for the docs' table of bijectors
    (``docs/bijectors.md``), where its code does not tell.

    Reference: the cost columns of Papamakarios et al., "Normalizing Flows for Probabilistic
    Modeling and Inference", JMLR 2021, table 1.

    Args:
        inverse: ``"analytic"``, ``"sequential"`` (analytic, one conditioner pass per dim),
            ``"numerical"`` (a solver), ``"cache-only"`` (no inverse except on the bijector's own
            outputs inside ``BijectiveMode``), or a phrase for wrappers (``"as its parts"``).
        forward: the cost of ``forward`` (:math:`D` is the number of elements of the event).
        inverse_cost: the cost of ``inverse``.
        ladj: the cost of log|det J|, given the forward or inverse pass.
        reference: a short citation.
        maps: domain -> codomain, where the class-level constraints do not tell.

    Example:
        >>> Costs("analytic", "O(D) elementwise", "O(D) elementwise", "O(D)").inverse
        'analytic'
    """

    inverse: str
    forward: str
    inverse_cost: str
    ladj: str
    reference: str = ""
    maps: str = ""


class Bijector(LazyModule):
    r"""An invertible, differentiable map :math:`y = f(x; \theta(c))` on events of ``shape``.

    The parameters :math:`\theta` come from the conditioner ``params_fn``, which may read the input
    and the context :math:`c`. A flow's density follows from the change of variables

    .. math::
        \log p_Y(y) = \log p_X\big(f^{-1}(y)\big) - \log\big|\det J_f\big(f^{-1}(y)\big)\big|,

    for which every bijector gives ``forward``, ``inverse`` (where it has one) and
    ``log_abs_det_jacobian``: :math:`\log|\det \partial y / \partial x|`, summed over the event.

    References: Rezende & Mohamed, "Variational Inference with Normalizing Flows", 2015;
    Papamakarios et al., "Normalizing Flows for Probabilistic Modeling and Inference", 2021.

    Args:
        params_fn: a conditioner plan (e.g. ``flowtorch.parameters.Tensor()``) that maps the
            input (and context) to this bijector's parameters, or ``None`` for a bijector without
            learnable parameters.
        shape: the event shape the bijector acts on. Without it, the class returns a plan.
        context_shape: the event shape of the context, for a conditional bijector.
        out_shape: the event shape of ``forward``'s output, for wrappers that know it before
            their layers are registered; by default ``forward_shape(shape)``.

    Shapes: ``x`` has shape ``sample + batch + shape``; the context, if any, has shape
    ``context_batch + context_shape`` and broadcasts against the sample and batch dims;
    ``log_abs_det_jacobian`` returns the broadcast ``sample + batch`` shape.

    Example:
        >>> import torch
        >>> from flowtorch.core.bijector import Bijector
        >>> class Shift(Bijector):  # y = x + 1
        ...     def _forward_and_ladj(self, x, params):
        ...         return x + 1.0, torch.zeros_like(x)
        ...     def _inverse_and_ladj(self, y, params):
        ...         return y - 1.0, torch.zeros_like(y)
        >>> Shift()
        Plan(Shift)
        >>> b = Shift(shape=torch.Size([2]))
        >>> y, ladj = b.forward_and_ladj(torch.zeros(3, 2))
        >>> y[0], ladj
        (tensor([1., 1.]), tensor([0., 0., 0.]))
        >>> torch.equal(b.inverse(y), torch.zeros(3, 2))
        True
    """

    _plan_key = "shape"
    #: The sign of :math:`dy/dx` for an elementwise monotonic bijector (``+1`` increasing, ``-1``
    #: decreasing), ``None`` for any other; torch's ``Transform.sign``. A subclass that is no
    #: longer elementwise (an autoregressive one) sets it back to ``None``.
    sign: int | None = None
    #: The row of the docs' table of bijectors (costs of each direction, reference); read from
    #: the class itself only, not inherited. Without it the table derives what the code tells.
    costs: ClassVar[Costs | None] = None
    #: Constraint of one element of the maths; its ``event_dim`` says how many trailing dims
    #: ``_log_abs_det_jacobian`` already reduces.
    domain: constraints.Constraint = constraints.real
    codomain: constraints.Constraint = constraints.real
    #: True for a family's base class, declared ``class MonotoneBijector(ElementwiseBijector,
    #: base=True)``: maths that bijectors share, not a bijector by itself, so the docs' table and
    #: the generic tests skip it. Set for each class by its own declaration (never inherited).
    is_base: ClassVar[bool] = True
    #: True when the fused forward method computes log|det J| from its output (a map solved
    #: numerically, whose log-derivative is its closed-form inverse's at the root): the mode then
    #: keeps the parameters and computes it again when asked, instead of storing a value whose
    #: graph would hold the output (and keep it alive).
    forward_ladj_reads_output: ClassVar[bool] = False
    #: True when the conditioner reads the output of ``forward`` (MAF direction): the forward
    #: pass is then sequential and the inverse parallel.
    conditioned_on_output = False

    def __init__(
        self,
        params_fn: Conditioner | None = None,
        *,
        shape: torch.Size | tuple[int, ...],
        context_shape: torch.Size | tuple[int, ...] | None = None,
        out_shape: torch.Size | None = None,
    ) -> None:
        super().__init__()
        self.shape = torch.Size(shape)
        cls = type(self)
        if any(n < 0 for n in self.shape):
            raise ValueError(f"{cls.__name__}: shape {tuple(self.shape)} has a negative size")
        if context_shape is not None and any(n < 0 for n in context_shape):
            raise ValueError(f"{cls.__name__}: context_shape {tuple(context_shape)} has a negative size")
        if len(self.shape) < cls.domain.event_dim:
            raise ValueError(
                f"{cls.__name__} needs an event of at least {cls.domain.event_dim} dims, "
                f"got shape {tuple(self.shape)}"
            )
        #: the event shape of ``forward``'s output
        self.out_shape = torch.Size(self.forward_shape(self.shape) if out_shape is None else out_shape)
        k = self._raw_event_dim()
        self._elem_shape = self.shape[: len(self.shape) - k]  # dims the raw log-det still has
        self._sum_dims = tuple(range(-len(self._elem_shape), 0))
        # whether the output of an inverse (index 0) or forward (index 1) call has the raw log-det's
        # event dims, so that a log-det of the output's shape needs no broadcast
        self._ladj_like_output = (self.shape == self._elem_shape, self.out_shape == self._elem_shape)
        self.domain = constraints.independent(cls.domain, len(self.shape) - cls.domain.event_dim)
        self.codomain = constraints.independent(cls.codomain, len(self.out_shape) - cls.codomain.event_dim)
        self.params_fn: Parameters | None = None
        if params_fn is not None:
            self.params_fn = build(
                params_fn,
                param_shapes=self.param_shapes(),
                input_shape=self.shape,
                context_shape=None if context_shape is None else torch.Size(context_shape),
            )
            context_shape = getattr(self.params_fn, "context_shape", context_shape)
        # A bijector without a conditioner takes no context (wrappers set their own).
        self.context_shape: torch.Size | None = (
            torch.Size(context_shape) if context_shape is not None and self.params_fn is not None else None
        )
        self._dtype_cache: torch.dtype | bool | None = False  # False: not looked up yet

    # ------------------------------------------------------------------ for subclasses
    def param_shapes(self) -> tuple[torch.Size, ...]:
        """The shape of each parameter for one event, as the conditioner must produce them."""
        return ()

    # One method per direction is required: ``_forward_and_ladj`` (or ``_forward`` with
    # ``_log_abs_det_jacobian``) and, where an inverse exists, ``_inverse_and_ladj`` (or
    # ``_inverse``). Each default below is derived from the others and refuses, naming what to
    # write, when the one it would be derived from is not written either.
    def _forward(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        if not self._writes_forward_fused:
            raise NotImplementedError(
                f"{type(self).__name__} writes no forward maths: define _forward_and_ladj(x, params) "
                "(or _forward and _log_abs_det_jacobian)"
            )
        return self._forward_and_ladj(x, params)[0]

    def _inverse(self, y: torch.Tensor, params: Params) -> torch.Tensor:
        if not self._writes_inverse_fused:
            raise NotImplementedError(
                f"{type(self).__name__} has no closed-form inverse: call inverse on its own outputs "
                "inside flowtorch.BijectiveMode(), or use Flow.rsample_and_log_prob"
            )
        return self._inverse_and_ladj(y, params)[0]

    def _log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor, params: Params) -> torch.Tensor:
        if not self._writes_forward_fused:
            raise NotImplementedError(
                f"{type(self).__name__} gives no log|det J|: define _forward_and_ladj(x, params) "
                "(or _log_abs_det_jacobian(x, y, params))"
            )
        return self._forward_and_ladj(x, params)[1]

    def _forward_and_ladj(self, x: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        y = _tensor_from(self, "_forward", self._forward(x, params))
        return y, self._log_abs_det_jacobian(x, y, params)

    def _inverse_and_ladj(self, y: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        x = _tensor_from(self, "_inverse", self._inverse(y, params))
        return x, self._log_abs_det_jacobian(x, y, params)

    def _forward_deferred(self, x: torch.Tensor, params: Params) -> tuple[torch.Tensor, Later | None]:
        """The forward pass of ``BijectiveMode(requires_ladj=False)``: ``(y, later)``.

        ``later()`` returns the raw forward log|det J| (as ``_forward_and_ladj`` would) from
        tensors computed in this pass from ``x`` and ``params``; the mode calls it at most once,
        only while the call's entry is fresh, in the grad mode of the call. ``later`` is ``None``
        when the log-det is to come from ``_log_abs_det_jacobian(x, y, params)``.
        """
        if self._forward_is_derived:  # the only forward maths is the fused one: keep its log-det
            y, ladj = self._forward_and_ladj(x, params)
            return y, _kept(ladj)
        return self._forward(x, params), None

    def _inverse_deferred(self, y: torch.Tensor, params: Params) -> tuple[torch.Tensor, Later | None]:
        """The inverse pass of ``BijectiveMode(requires_ladj=False)``: ``(x, later)``, with
        ``later()`` the raw *forward* log|det J| (see :meth:`_forward_deferred`)."""
        if self._inverse_is_derived:
            x, ladj = self._inverse_and_ladj(y, params)
            return x, _kept(ladj)
        return self._inverse(y, params), None

    def _forward_intermediate(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        """The value of an intermediate pass of a sequential forward (``conditioned_on_output``),
        whose ``params`` come from an output not yet exact, and whose value only the next pass
        reads: ``_forward`` by default. A numerically inverted map tolerates unbracketed elements
        here (``MonotoneTransformer.solve(strict=False)``)."""
        return self._forward(x, params)

    def _params(self, input: torch.Tensor | None, context: torch.Tensor | None) -> Params:
        """Calls the conditioner on ``input`` (the side it reads) and ``context``."""
        if self.params_fn is None:
            return None
        return self.params_fn(input, context)

    def _repeated_conditioner(self) -> contextlib.AbstractContextManager[None]:
        """The conditioner's scope for many calls with the same weights (a sequential pass)."""
        repeated = getattr(self.params_fn, "repeated", None)
        return contextlib.nullcontext() if repeated is None else repeated()  # type: ignore[no-any-return]

    def _raw_event_dim(self) -> int:
        """How many trailing event dims ``_log_abs_det_jacobian`` already sums over.

        Default: the ``event_dim`` of the class's ``domain`` (0 for elementwise maths). A bijector
        whose raw log-det is one number per batch element returns ``len(self.shape)``.
        """
        return type(self).domain.event_dim

    def forward_shape(self, shape: torch.Size) -> torch.Size:
        """The shape of ``forward``'s output for an input of ``shape``."""
        return shape

    def inverse_shape(self, shape: torch.Size) -> torch.Size:
        """The shape of ``inverse``'s output for an input of ``shape``."""
        return shape

    # ------------------------------------------------------------------ generic machinery
    def __init_subclass__(cls, *, base: bool = False, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.is_base = base
        # A direction whose only maths is its deferred pass: the fused method and the value-only
        # one come from it (written once, with ``later()`` computing the log-det).
        for deferred, fused, value in (
            ("_forward_deferred", "_forward_and_ladj", "_forward"),
            ("_inverse_deferred", "_inverse_and_ladj", "_inverse"),
        ):
            own = vars(cls).get(deferred)
            if (
                own is not None
                and getattr(cls, fused) is getattr(Bijector, fused)
                and (getattr(cls, value) is getattr(Bijector, value))
            ):
                setattr(cls, fused, _fused_from_deferred(deferred))
                setattr(cls, value, _value_from_deferred(deferred))
        # A value-only method written beside the fused one (cheaper alone) belongs to that fused
        # maths: a subclass that writes its own fused method gets the value from it.
        if _defined_below(cls, "_forward", ("_forward_and_ladj",)):
            cls._forward = Bijector._forward  # type: ignore[method-assign]
        if _defined_below(cls, "_inverse", ("_inverse_and_ladj",)):
            cls._inverse = Bijector._inverse  # type: ignore[method-assign]
        # log|det J| from a fused method is computed from the call's input and may be stored in
        # the cache; otherwise it may read the output and only ``params`` are stored.
        cls._writes_forward_fused = cls._forward_and_ladj is not Bijector._forward_and_ladj
        cls._writes_inverse_fused = cls._inverse_and_ladj is not Bijector._inverse_and_ladj
        cls._stores_forward_ladj = cls._writes_forward_fused and not cls.forward_ladj_reads_output
        cls._stores_inverse_ladj = cls._writes_inverse_fused
        # whether ``_forward``/``_inverse`` are only the fused method's first output
        cls._forward_is_derived = cls._writes_forward_fused and cls._forward is Bijector._forward
        cls._inverse_is_derived = cls._writes_inverse_fused and cls._inverse is Bijector._inverse
        # A deferred pass is written for the maths of the class that wrote it: a subclass that
        # writes its own maths (and no deferred pass) defers as the base class does.
        if _defined_below(cls, "_forward_deferred", ("_forward_and_ladj", "_forward")):
            cls._forward_deferred = Bijector._forward_deferred  # type: ignore[method-assign]
        if _defined_below(cls, "_inverse_deferred", ("_inverse_and_ladj", "_inverse")):
            cls._inverse_deferred = Bijector._inverse_deferred  # type: ignore[method-assign]

    _writes_forward_fused = False
    _writes_inverse_fused = False
    _stores_forward_ladj = False
    _stores_inverse_ladj = False
    _forward_is_derived = False
    _inverse_is_derived = False

    def _cacheable(self) -> bool:
        """Whether calls can be cached now.

        Override for maps that are not, at the moment, fixed functions of their input, context
        and parameters (batch statistics in training mode, a data-dependent initialisation still
        to happen). Wrappers that record their own entries ask their parts.
        """
        return True

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        self._dtype_cache = False
        return super()._apply(fn, *args, **kwargs)

    def _param_dtype(self) -> torch.dtype | None:
        """The floating dtype of this bijector's parameters and buffers (``None`` if it has none);
        cached until the module is converted (``.to``, ``.double``, ...), and looked up again by
        ``_check`` before it refuses an input."""
        dtype = self._dtype_cache
        if dtype is False:
            state = itertools.chain(self.parameters(), self.buffers())
            dtype = next((t.dtype for t in state if t.is_floating_point()), None)
            self._dtype_cache = dtype
        return dtype  # type: ignore[return-value]

    def _check(self, value: torch.Tensor, context: torch.Tensor | None, forward: bool) -> None:
        """Checks a call's input and context; every error names the bijector and the problem."""
        name = "x" if forward else "y"
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"{type(self).__name__}: {name} must be a torch.Tensor, got {type(value).__name__}"
            )
        event = self.shape if forward else self.out_shape
        shape = value.shape
        k = len(shape) - len(event)
        if k < 0 or shape[k:] != event:
            raise ValueError(
                f"{type(self).__name__}: {name} has shape {tuple(value.shape)}, but its trailing "
                f"dims must be the event shape {tuple(event)}"
            )
        if not value.is_floating_point():
            raise TypeError(f"{type(self).__name__}: {name} must be floating point, got {value.dtype}")
        dtype = self._param_dtype()
        if dtype is not None and value.dtype != dtype:
            self._dtype_cache = False  # look again: parameters may have been replaced since
            dtype = self._param_dtype()
        if dtype is not None and value.dtype != dtype:
            raise TypeError(
                f"{type(self).__name__}: {name} has dtype {value.dtype}, but the parameters have dtype "
                f"{dtype}; convert one of them (e.g. {name}.to({dtype}) or bijector.to({value.dtype}))"
            )
        cs = self.context_shape
        check_context(type(self).__name__, cs, context)
        if cs is None:
            return
        assert context is not None
        c_shape = context.shape
        j = len(c_shape) - len(cs)
        if not context.is_floating_point():
            raise TypeError(f"{type(self).__name__}: context must be floating point, got {context.dtype}")
        if dtype is not None and context.dtype != dtype:
            raise TypeError(
                f"{type(self).__name__}: context has dtype {context.dtype}, but the parameters have "
                f"dtype {dtype}"
            )
        if j and c_shape[:j] != shape[:k] and not broadcastable(c_shape[:j], shape[:k]):
            raise ValueError(
                f"{type(self).__name__}: context has shape {tuple(c_shape)}, whose batch dims "
                f"{tuple(c_shape[:j])} do not broadcast with those of {name}, shape {tuple(shape)}"
            )

    def _reduce(self, ladj: torch.Tensor, out: torch.Tensor, forward: bool) -> torch.Tensor:
        """Broadcasts a raw log|det J| to the elements of ``out`` (the output of a ``forward`` or
        inverse call) and sums it to the batch shape."""
        shape = out.shape
        # An elementwise log-det of the output's shape needs no broadcast (the common case).
        if shape != ladj.shape or not self._ladj_like_output[forward]:
            full = shape[: len(shape) - len(self.out_shape if forward else self.shape)] + self._elem_shape
            if ladj.shape != full:
                ladj = ladj.expand(full)
        if self._sum_dims:
            ladj = ladj.sum(self._sum_dims)
        return ladj

    def _forward_pass(
        self, x: torch.Tensor, params: Params, need_ladj: bool, defer: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None, Later | None]:
        """One forward pass given ``params``: ``(y, ladj or None, later or None)``."""
        if need_ladj:
            y, ladj = self._forward_and_ladj(x, params)
            return y, self._reduce(ladj, y, True), None
        if defer:
            y, later = self._forward_deferred(x, params)
            return y, None, later
        return self._forward(x, params), None, None

    def _forward_with_params(
        self, x: torch.Tensor, context: torch.Tensor | None, need_ladj: bool, defer: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None, Params, Later | None]:
        if self.conditioned_on_output:
            return self._sequential_forward(x, context, need_ladj, defer)
        params = self._params(x, context)
        y, ladj, later = self._forward_pass(x, params, need_ladj, defer)
        return y, ladj, params, later

    def _sequential_forward(
        self, x: torch.Tensor, context: torch.Tensor | None, need_ladj: bool, defer: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None, Params, Later | None]:
        """Forward pass when the conditioner reads the output (autoregressive, MAF direction).

        After ``k`` passes the first ``k`` outputs in the conditioner's order are exact; the
        parameters of the last pass depend only on those, so they are the parameters at ``y``.
        """
        cls = type(self)
        n = int(self.shape.numel())
        if n > SEQUENTIAL_WARNING_DIMS and cls not in _WARNED_SEQUENTIAL and not _mode._tracing():
            _WARNED_SEQUENTIAL.add(cls)
            warnings.warn(
                f"{cls.__name__}.forward ran {n} sequential conditioner passes: its conditioner reads "
                "the output (the MAF direction), so sampling is sequential and scoring data is one "
                f"pass. To sample fast (a VI guide), use bij.Invert({cls.__name__}(...)) or "
                "flowtorch.recipes.IAF. (Shown once per class; see SequentialSamplingWarning.)",
                SequentialSamplingWarning,
                stacklevel=4,
            )
        y = torch.zeros_like(x)
        with self._repeated_conditioner():
            for _ in range(max(int(self.shape.numel()), 1) - 1):
                y = self._forward_intermediate(x, self._params(y, context))
            params = self._params(y, context)
        y, ladj, later = self._forward_pass(x, params, need_ladj, defer)
        return y, ladj, params, later

    def _inverse_with_params(
        self, y: torch.Tensor, context: torch.Tensor | None, need_ladj: bool, defer: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None, Params, Later | None]:
        params = self._params(y, context)
        if need_ladj:
            x, ladj = self._inverse_and_ladj(y, params)
            return x, self._reduce(ladj, x, False), params, None
        if defer:
            x, later = self._inverse_deferred(y, params)
            return x, None, params, later
        return self._inverse(y, params), None, params, None

    def _ladj_from_values(
        self, x: torch.Tensor, y: torch.Tensor, context: torch.Tensor | None, params: Params = None
    ) -> torch.Tensor:
        if params is None:
            params = self._params(y if self.conditioned_on_output else x, context)
        ladj = self._log_abs_det_jacobian(x, y, params)
        # the larger batch of the two (a context may broadcast one of them)
        if y.dim() - len(self.out_shape) >= x.dim() - len(self.shape):
            return self._reduce(ladj, y, True)
        return self._reduce(ladj, x, False)

    # ------------------------------------------------------------------ public API
    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Maps ``x`` (``sample + batch + shape``) to ``y``."""
        return self._call(x, context, True, False)[0]

    def inverse(self, y: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Maps ``y`` back to ``x``."""
        return self._call(y, context, False, False)[0]

    def forward_and_ladj(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``y`` and log|det dy/dx| (shape ``sample + batch``) in one pass."""
        y, ladj = self._call(x, context, True, True)
        assert ladj is not None
        return y, ladj

    def inverse_and_ladj(
        self, y: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``x`` and the *forward* log|det dy/dx| at ``x`` in one pass."""
        x, ladj = self._call(y, context, False, True)
        assert ladj is not None
        return x, ladj

    def _recorded_key(
        self, value: torch.Tensor, forward: bool, context: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """Inside a mode, the input of the fresh recorded call of this bijector (``forward`` if
        ``forward``, else ``inverse``, with this context) whose output is ``value``; else
        ``None``. Wrappers that delegate their calls answer for their parts."""
        entry = _mode.lookup(value, self, forward, context)
        return None if entry is None else entry.key

    def _hit(
        self, entry: _mode.Entry, value: torch.Tensor, forward: bool, scope: _mode._Scope | None = None
    ) -> torch.Tensor | None:
        """What a hit returns for ``value``: the recorded key (detached under ``torch.no_grad``
        if it has a graph, as a recomputation would be). ``None`` when ``value``'s batch dims are
        wider than the key's (a context batch broadcast them): a recomputation has ``value``'s."""
        key: torch.Tensor = entry.key
        event_in, event_out = (self.shape, self.out_shape) if forward else (self.out_shape, self.shape)
        if value.shape[: value.dim() - len(event_in)] != key.shape[: key.dim() - len(event_out)]:
            return None
        return _mode.served(key, scope)

    def _entry_ladj(
        self, entry: _mode.Entry, x: torch.Tensor, y: torch.Tensor, context: torch.Tensor | None
    ) -> torch.Tensor:
        """log|det J| of a fresh entry's pair: the stored value; else from what the deferred pass
        kept (once: the value is then stored, and guarded as a stored one); else from the
        recorded parameters."""
        ladj = entry.stored_ladj()
        if ladj is not None:
            return ladj
        later = entry.later
        if later is not None:
            entry.later = None
            # in the grad mode of the call, so that the graph is the one an eager pass keeps
            with torch.set_grad_enabled(entry.grad):
                raw = later()
                ladj = self._reduce(raw, y, True) if entry.forward else self._reduce(raw, x, False)
            entry.store_ladj(ladj)
            stored = entry.stored_ladj()
            assert stored is not None
            return stored
        return self._ladj_from_values(x, y, context, entry.params)

    def log_abs_det_jacobian(
        self, x: torch.Tensor, y: torch.Tensor, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        """log|det dy/dx| at the pair ``(x, y)``, reduced to the ``sample + batch`` shape.

        Inside ``BijectiveMode``, a pair this bijector recorded is served from the cache.
        """
        scope = _mode.current_scope()
        if scope is None:
            self._check(x, context, True)
            return self._ladj_from_values(x, y, context)
        with _mode.unintercepted():
            entry = _mode.lookup(y, self, True, context)
            if entry is None or entry.key is not x:
                entry = _mode.lookup(x, self, False, context)
                if entry is not None and entry.key is not y:
                    entry = None
            if entry is not None:
                return self._entry_ladj(entry, x, y, context)
            warn_miss(scope, self)
            self._check(x, context, True)
            return self._ladj_from_values(x, y, context)

    def _call(
        self, value: torch.Tensor, context: torch.Tensor | None, forward: bool, need_ladj: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        scope = _mode.current_scope()
        if scope is None:
            self._check(value, context, forward)
            if forward:
                out, ladj, _, _ = self._forward_with_params(value, context, need_ladj)
            else:
                out, ladj, _, _ = self._inverse_with_params(value, context, need_ladj)
            if not isinstance(out, torch.Tensor):
                _tensor_from(self, "_forward" if forward else "_inverse", out)
            return out, ladj
        # Inside a mode, the cache bookkeeping and the maths run with the mode off the
        # torch-function stack: none of their tensor ops and attribute reads is intercepted.
        with _mode.unintercepted():
            # ``value`` may be the output of the opposite call: then the answer is its key.
            entry = _mode.lookup(value, self, not forward, context)
            hit = None if entry is None else self._hit(entry, value, forward, scope)
            if hit is not None:
                assert entry is not None
                if not need_ladj:
                    return hit, None
                x, y = (value, hit) if forward else (hit, value)
                return hit, self._entry_ladj(entry, x, y, context)
            self._check(value, context, forward)
            compute = need_ladj or scope.requires_ladj
            if forward:
                out, ladj, params, later = self._forward_with_params(value, context, compute, not compute)
                stores = self._stores_forward_ladj
            else:
                out, ladj, params, later = self._inverse_with_params(value, context, compute, not compute)
                stores = self._stores_inverse_ladj
            if not isinstance(out, torch.Tensor):
                _tensor_from(self, "_forward" if forward else "_inverse", out)
            _mode.record(scope, self, forward, value, out, context, ladj if stores else None, params, later)
        return out, ladj

    def extra_repr(self) -> str:
        s = f"shape={tuple(self.shape)}"
        if self.context_shape is not None:
            s += f", context_shape={tuple(self.context_shape)}"
        return s


def _fused_from_deferred(
    deferred: str,
) -> Callable[[Bijector, torch.Tensor, Params], tuple[torch.Tensor, torch.Tensor]]:
    """The fused method of a class that writes only the deferred pass ``deferred``."""

    def fused(self: Bijector, value: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        out, later = getattr(self, deferred)(value, params)
        if later is None:
            raise TypeError(
                f"{type(self).__name__}.{deferred} returned no later(): a class whose only maths "
                f"is its deferred pass computes the log-det there (or writes _{deferred[1:-9]}_and_ladj)"
            )
        return out, later()

    return fused


def _value_from_deferred(deferred: str) -> Callable[[Bijector, torch.Tensor, Params], torch.Tensor]:
    """The value-only method of a class that writes only the deferred pass ``deferred``: the pass,
    whose ``later`` is never called."""

    def value_only(self: Bijector, value: torch.Tensor, params: Params) -> torch.Tensor:
        return _tensor_from(self, deferred, getattr(self, deferred)(value, params)[0])

    return value_only


def _defined_below(cls: type, method: str, maths: tuple[str, ...]) -> bool:
    """Whether ``cls`` inherits ``method`` from a class above the nearest one that writes any
    of ``maths`` (a deferred pass, or a value-only method, written for other maths than the
    class's own)."""
    mro = cls.__mro__
    where = next(i for i, k in enumerate(mro) if method in vars(k))
    maths_at = next(i for i, k in enumerate(mro) if any(m in vars(k) for m in maths))
    return mro[where] is not Bijector and where > maths_at


def _tensor_from(bijector: Bijector, method: str, out: Any) -> torch.Tensor:
    """``out`` if it is a tensor; else the error that says how to port a flowtorch 0.8 bijector."""
    if isinstance(out, torch.Tensor):
        return out
    name = type(bijector).__name__
    if isinstance(out, tuple):
        raise TypeError(
            f"{name}.{method} returned a tuple of {len(out)}: in flowtorch 0.8 it returned "
            f"(value, log|det J|); here {method} returns the value only, and log|det J| comes from "
            f"_log_abs_det_jacobian(x, y, params) (or, in one pass, from _{method[1:]}_and_ladj, which "
            "returns both). See 'Custom bijectors' in docs/migration/flowtorch-08.md"
        )
    raise TypeError(f"{name}.{method} must return a torch.Tensor, got {type(out).__name__}")


def warn_miss(scope: _mode._Scope, bijector: Bijector) -> None:
    """The ``CacheMissWarning`` of a ``log_abs_det_jacobian`` that found no fresh entry inside a
    mode, given once per activation."""
    if scope.warned:
        return
    scope.warned = True
    warnings.warn(
        f"{type(bijector).__name__}.log_abs_det_jacobian: no fresh cache entry for this "
        "(x, y) pair inside BijectiveMode; computing it from the values",
        _mode.CacheMissWarning,
        stacklevel=3,
    )
