"""``Flow``: a distribution defined by pushing a base distribution through a bijector."""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable
from typing import Any, ClassVar, Generic, Union

import torch
from torch import nn
from torch.distributions import Distribution, Transform, constraints
from torch.distributions import constraint_registry as constraints_registry
from typing_extensions import TypeVar

from flowtorch.core.bijector import Bijector, build, unintercepted
from flowtorch.core.compat import is_compiling
from flowtorch.core.lazy import Plan
from flowtorch.core.shapes import broadcast_shapes, broadcastable
from flowtorch.core.validation import as_size, check_context

__all__ = ["Flow"]

_Size = Union[torch.Size, list[int], tuple[int, ...]]

#: The type of a flow's bijector: ``Flow(base, MAF())`` is a ``Flow[Compose]``; a bare ``Flow`` is
#: a ``Flow[Bijector]``.
B = TypeVar("B", bound=Bijector, default=Bijector, covariant=True)


class Flow(nn.Module, Distribution, Generic[B]):
    r"""The distribution of :math:`y = f(z)`, :math:`z \sim p_0`.

    .. math:: \log p(y) = \log p_0(f^{-1}(y)) - \log|\det J_f(f^{-1}(y))|

    A ``torch.distributions.Distribution`` and an ``nn.Module`` (its bijector's parameters are
    the flow's parameters). The bijector may be a plan: it is built for the base's event shape.

    References: Rezende & Mohamed, "Variational Inference with Normalizing Flows", 2015;
    Papamakarios et al., "Normalizing Flows for Probabilistic Modeling and Inference", 2021.

    Args:
        base_dist: the base distribution :math:`p_0`; its event shape is the flow's.
        bijector: a bijector or a plan of one.
        context_shape: the event shape of the context, for a conditional flow (or give it to
            the bijector's plan).
        validate_args: as for ``torch.distributions``.

    Shapes: ``rsample(sample_shape, context)`` returns ``sample_shape + batch + event`` where
    ``batch`` broadcasts the base's batch shape with the context's batch shape;
    ``log_prob(value, context)`` returns ``value``'s shape without the event dims.

    Calling the flow samples: ``flow(sample_shape, context)`` is ``rsample``, which is what
    Pyro's ``pyro.sample("z", flow)`` does with a distribution (together with ``log_prob`` and
    :meth:`score_parts`); register the parameters with ``pyro.module("name", flow)``.

    Typing: ``Flow`` is generic in its bijector's class: ``Flow(base, bij.Exp.plan())`` is a
    ``Flow[Exp]`` whose ``bijector`` a type checker knows as an ``Exp``; a bare ``Flow`` is a
    ``Flow[Bijector]``.

    Devices and dtypes: ``.to(...)``, ``.double()``, ``.cuda()`` move the base distribution's
    tensors along with the parameters (the base is rebuilt from copies of its tensors, see
    :meth:`_apply`), so a flow moved to float64 or to a GPU is float64 or on the GPU end to end.

    Example:
        >>> import torch
        >>> import flowtorch.bijectors as bij
        >>> import flowtorch.distributions as dist
        >>> normal = torch.distributions.Normal(torch.zeros(2), torch.ones(2))
        >>> base = torch.distributions.Independent(normal, 1)
        >>> flow = dist.Flow(base, bij.AffineAutoregressive.plan())
        >>> y, log_p = flow.rsample_and_log_prob((5,))
        >>> y.shape, log_p.shape
        (torch.Size([5, 2]), torch.Size([5]))
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {}
    has_rsample = True

    def __init__(
        self,
        base_dist: Distribution,
        bijector: B | Plan[B],
        context_shape: torch.Size | tuple[int, ...] | None = None,
        validate_args: bool | None = None,
    ) -> None:
        nn.Module.__init__(self)
        if not isinstance(base_dist, Distribution):
            raise TypeError(f"Flow: base_dist must be a torch Distribution, got {type(base_dist).__name__}")
        # The base lives in a holder that views (``condition``, ``expand``) share with the flow, as
        # they share its modules: moving one (``.to``) moves the base for all of them.
        self._base = _BaseHolder(base_dist)
        self._base_batch: torch.Size | None = None  # set on ``expand`` views
        self._expanded: tuple[Distribution, Distribution] | None = None
        if isinstance(base_dist, nn.Module):  # e.g. a flow on a flow: its parameters are ours
            self._modules["base_dist"] = base_dist
        event_shape = base_dist.event_shape
        if context_shape is not None:
            context_shape = as_size(context_shape, "Flow: context_shape")
        try:
            built = build(bijector, shape=event_shape, context_shape=context_shape)
        except ValueError as error:
            if event_shape or not base_dist.batch_shape:
                raise
            raise ValueError(
                f"{error}. The base distribution has event shape () and batch shape "
                f"{tuple(base_dist.batch_shape)}: its dims are independent batch dims, not one event. "
                "For a flow over a vector, make them the event with torch.distributions.Independent("
                f"base_dist, {len(base_dist.batch_shape)})"
            ) from error
        if not isinstance(built, Bijector):
            raise TypeError(
                f"Flow: bijector must be a flowtorch bijector or plan, got {type(built).__name__}"
            )
        dtype = _floating_dtype(base_dist)
        if dtype is not None and any(p.dtype != dtype for p in built.parameters()):
            # Parameters are created in torch's default dtype; a flow takes its base's.
            built = built.to(dtype)
        if built.shape != event_shape:
            raise ValueError(
                f"Flow: the bijector acts on shape {tuple(built.shape)}, but the base distribution's "
                f"event shape is {tuple(event_shape)}"
            )
        #: the bijector, built for the base's event shape
        self.bijector: B = built
        # A support that is all of R^n has no outside: log_prob then skips the support check.
        support = built.codomain
        while isinstance(support, constraints.independent):
            support = support.base_constraint
        self._bounded_support = support is not constraints.real
        self._context: torch.Tensor | None = None
        Distribution.__init__(
            self,
            base_dist.batch_shape,
            built.forward_shape(event_shape),
            validate_args=validate_args,
        )

    @property
    def base_dist(self) -> Distribution:
        """The base distribution :math:`p_0` (expanded to the batch shape, on an ``expand`` view)."""
        base = self._base.dist
        if self._base_batch is None:
            return base
        cached = self._expanded
        if cached is None or cached[0] is not base:
            self._expanded = cached = (base, base.expand(self._base_batch))
        return cached[1]

    @property
    def context_shape(self) -> torch.Size | None:
        """The event shape of the context (``None`` for an unconditional flow)."""
        return self.bijector.context_shape

    @property
    def support(self) -> constraints.Constraint:  # type: ignore[override]
        return self.bijector.codomain

    def condition(self, context: torch.Tensor) -> Flow[B]:
        """A view of this flow with ``context`` bound; it shares the parameters.

        Its ``batch_shape`` includes the context's batch dims.
        """
        self._context_for(context)  # checks it
        view = copy.copy(self)
        view._context = context
        cs = self.context_shape
        assert cs is not None
        ctx_batch = context.shape[: context.dim() - len(cs)]
        view._batch_shape = broadcast_shapes(self.base_dist.batch_shape, ctx_batch)
        return view

    @property
    def event_dim(self) -> int:
        """The number of event dims, ``len(event_shape)`` (as Pyro's distributions report it)."""
        return len(self.event_shape)

    def expand(self, batch_shape: _Size, _instance: Any = None) -> Flow[B]:
        """A view of this flow with its batch dims expanded to ``batch_shape``; it shares the
        parameters (the base distribution is expanded, as ``torch.distributions`` does).

        ``batch_shape`` must be an expansion of ``self.batch_shape`` (dims of size 1 and new
        leading dims may grow).
        """
        batch_shape = torch.Size(batch_shape)
        try:
            ok = torch.broadcast_shapes(batch_shape, self.batch_shape) == batch_shape
        except RuntimeError:
            ok = False
        if not ok:
            raise ValueError(
                f"Flow.expand: cannot expand batch_shape {tuple(self.batch_shape)} to {tuple(batch_shape)}"
            )
        base = self._base.dist
        view = copy.copy(self)
        view._base_batch = batch_shape
        view._expanded = (base, base.expand(batch_shape))  # fails here if the base cannot expand
        view._batch_shape = batch_shape
        return view

    def _context_for(self, context: torch.Tensor | None) -> torch.Tensor | None:
        if context is None:
            context = self._context
        check_context(
            "Flow",
            self.context_shape,
            context,
            subject="Flow: this flow",
            unconditional="is not conditional",
            missing="; pass context=",
        )
        return context

    def _base_sample_shape(self, sample_shape: _Size, context: torch.Tensor | None) -> torch.Size:
        shape = as_size(sample_shape, "Flow: sample_shape", allow_int=False)
        if context is not None:
            cs = self.context_shape
            assert cs is not None
            ctx_batch = context.shape[: context.dim() - len(cs)]
            extra = broadcast_shapes(self.base_dist.batch_shape, ctx_batch)
            extra = extra[: len(extra) - len(self.base_dist.batch_shape)]
            shape = shape + extra
        return shape

    def _draw_base(self, sample_shape: _Size, context: torch.Tensor | None) -> torch.Tensor:
        r"""Base samples; a base without ``rsample`` (e.g. a mixture) is sampled without gradients,
        which the flow's parameters do not need: :math:`y = f(z; \theta)` stays differentiable in
        :math:`\theta`."""
        base = self.base_dist
        shape = self._base_sample_shape(sample_shape, context)
        return base.rsample(shape) if base.has_rsample else base.sample(shape)

    def rsample(self, sample_shape: _Size = (), context: torch.Tensor | None = None) -> torch.Tensor:
        """Reparametrised samples of shape ``sample_shape + batch + event``."""
        context = self._context_for(context)
        with unintercepted():
            return self.bijector.forward(self._draw_base(sample_shape, context), context)

    def forward(self, sample_shape: _Size = (), context: torch.Tensor | None = None) -> torch.Tensor:
        """``flow(sample_shape, context)``: reparametrised samples, the same as :meth:`rsample`.

        Makes the flow a callable that samples, as Pyro expects of a distribution in
        ``pyro.sample`` (and as ``nn.Module`` wrappers such as ``torch.compile`` call it).

        Pyro broadcasts only its own distribution classes over ``pyro.plate``: sampled inside a
        plate that the sample's batch dims do not fill (e.g. the particle plate of
        ``Trace_ELBO(vectorize_particles=True)``), a bare flow raises an error that says to wrap
        it with :func:`flowtorch.interop.to_pyro`. A tensor as the first argument (zuko's
        ``flow(context)``, which returns a distribution) is refused with a pointer to
        :meth:`condition`.
        """
        if isinstance(sample_shape, torch.Tensor) and sample_shape.is_floating_point():
            raise TypeError(
                "Flow: calling a flow samples, flow(sample_shape, context=None) (as Pyro calls a "
                "distribution), and a tensor is not a sample_shape. For the distribution given a "
                "context (zuko's flow(c)), use flow.condition(c), e.g. flow.condition(c).log_prob(x) "
                "or flow.condition(c).rsample((n,))"
            )
        y = self.rsample(sample_shape, context)
        if "pyro" in sys.modules and not is_compiling():
            self._check_pyro_plates(y)
        return y

    def _check_pyro_plates(self, y: torch.Tensor) -> None:
        """Raises if ``y`` is sampled inside ``pyro.plate`` contexts that its batch dims do not
        fill, where Pyro's shape check would later fail with a message that does not say why."""
        runtime = sys.modules.get("pyro.poutine.runtime")
        get_plates = getattr(runtime, "get_plates", None)
        if get_plates is None:
            return
        batch = y.shape[: y.dim() - len(self.event_shape)]
        for frame in get_plates():
            dim, size = frame.dim, frame.size
            if dim is None or not isinstance(size, int) or size < 0:
                continue  # a sequential plate, or one of unknown size
            have = batch[dim] if len(batch) >= -dim else 1
            if have != size:
                need = [1] * max(len(batch), -dim)
                for f in get_plates():
                    if f.dim is not None and isinstance(f.size, int) and f.size >= 0 and len(need) >= -f.dim:
                        need[f.dim] = f.size
                raise ValueError(
                    f"Flow: sampled inside pyro.plate({frame.name!r}, {size}) at dim {dim}, but a bare "
                    f"Flow is not a Pyro distribution and Pyro does not broadcast it: the sample has "
                    f"batch shape {tuple(batch)}, the plates need {tuple(need)}. Wrap the flow: "
                    "pyro.sample(name, flowtorch.interop.to_pyro(flow)) (to_pyro(flow, context) for a "
                    "conditional flow), which Pyro expands to the plates' shape"
                )

    def sample(self, sample_shape: _Size = (), context: torch.Tensor | None = None) -> torch.Tensor:
        """Samples without gradients."""
        with torch.no_grad():
            return self.rsample(sample_shape, context)

    def rsample_and_log_prob(
        self, sample_shape: _Size = (), context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples and their log-density in one forward pass (no inverse)."""
        context = self._context_for(context)
        with unintercepted():
            z = self._draw_base(sample_shape, context)
            y, ladj = self.bijector.forward_and_ladj(z, context)
            return y, self.base_dist.log_prob(z) - ladj

    def sample_and_log_prob(
        self, num_samples: int, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """nflows' name and signature for :meth:`rsample_and_log_prob`: ``num_samples`` samples
        (reparametrised) and their log-density, of shapes ``(num_samples, *event)`` and
        ``(num_samples,)``.

        nflows puts a batch of contexts first, ``(contexts, num_samples, ...)``; flowtorch puts
        sample dims first, as ``torch.distributions`` does. So that no code ported from nflows
        gets the other order unnoticed, a context with batch dims is refused here with both
        spellings: ``rsample_and_log_prob((num_samples,), context)`` for flowtorch's order, then
        ``.movedim(0, k)`` (``k`` context batch dims) for nflows'. A context without batch dims
        (shape ``context_shape``) is fine.

        Example:
            >>> import torch
            >>> import flowtorch.bijectors as bij
            >>> import flowtorch.distributions as dist
            >>> normal = torch.distributions.Normal(torch.zeros(2), torch.ones(2))
            >>> flow = dist.Flow(torch.distributions.Independent(normal, 1), bij.Affine())
            >>> y, log_p = flow.sample_and_log_prob(5)
            >>> y.shape, log_p.shape
            (torch.Size([5, 2]), torch.Size([5]))
        """
        shape = as_size(num_samples, "Flow.sample_and_log_prob: num_samples")
        context = self._context_for(context)
        cs = self.context_shape
        if context is not None and cs is not None and context.dim() > len(cs):
            k = context.dim() - len(cs)
            raise ValueError(
                f"Flow.sample_and_log_prob: the context has batch dims {tuple(context.shape[:k])}. "
                "nflows returns samples of shape (contexts, num_samples, ...), flowtorch (num_samples, "
                "contexts, ...); say which: flow.rsample_and_log_prob((num_samples,), context) gives "
                f"flowtorch's order, and .movedim(0, {k}) of both results gives nflows'"
            )
        return self.rsample_and_log_prob(shape, context)

    def log_prob(self, value: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """log p(value); inside ``BijectiveMode`` the flow's own samples are scored from the cache.

        NaN or inf in ``value`` or ``context`` is a ``ValueError`` that counts them and gives the
        first index, whenever the flow validates (``validate_args``, torch's default) or its base
        distribution does (it would reject what the bijector made of them); with validation off
        for both, those rows score NaN, as in ``torch.distributions``.
        """
        context = self._context_for(context)
        with unintercepted():  # the bijector calls record their own entries
            if self._validate_args:
                self._validate_value(value)
            outside = None if self._validate_args else self._outside_support(value)
            if outside is not None:  # score an inside point instead, then mask: never a finite number
                inside_point = constraints_registry.biject_to(self.support)(torch.zeros_like(value))
                value = torch.where(
                    outside.reshape(outside.shape + (1,) * len(self.event_shape)), inside_point, value
                )
            z, ladj = self.bijector.inverse_and_ladj(value, context)
            try:
                log_p = self.base_dist.log_prob(z) - ladj
            except ValueError:
                # The base validates what the bijector made of the data: name the data instead.
                for name, tensor in (("value", value), ("context", context)):
                    if tensor is not None and not bool(torch.isfinite(tensor).all()):
                        raise _non_finite(name, tensor) from None
                raise
            if outside is not None:
                log_p = log_p.masked_fill(outside, -torch.inf)
            return log_p

    def _validate_value(self, value: torch.Tensor) -> None:
        """``validate_args=True``: ``value`` must be finite and lie in the support.

        Finiteness is checked by one sum, finite only if every entry is: a tenth of the time of
        ``torch.isfinite(value).all()`` or of torch's support check (``value == value``, which
        lets inf through). NaN and inf get one short error about the data (see
        :func:`_non_finite`); torch's own check, with its error message, runs when the shape does
        not fit (torch's shape rule, in Python below), for a bounded support, and under
        ``torch.compile`` (where it also covers NaN, and inf is refused as below).
        """
        compiling = is_compiling()  # (under Dynamo: torch's own check, which it knows)
        fits = isinstance(value, torch.Tensor) and _shape_fits(
            value.shape, self.batch_shape, self.event_shape
        )
        if (
            fits
            and not compiling
            and not bool(torch.isfinite(value.sum()))  # (a NaN or inf makes the sum one too)
            and not bool(torch.isfinite(value).all())  # (not merely an overflowing sum)
        ):
            raise _non_finite("value", value)
        if self._bounded_support or compiling or not fits:
            self._validate_sample(value)
        if compiling and not bool(torch.isfinite(value).all()):  # the support check lets inf through
            raise ValueError("Flow.log_prob: value has non-finite entries (inf); validate_args=True")

    def _outside_support(self, value: torch.Tensor) -> torch.Tensor | None:
        r"""Without argument validation: which batch elements of ``value`` lie outside the support,
        or ``None`` when all are inside or the support is all of :math:`\mathbb{R}^n` (a flow whose
        last layer maps onto the reals, checked without touching ``value``)."""
        if not self._bounded_support or not isinstance(value, torch.Tensor) or not value.is_floating_point():
            return None  # (a value of the wrong type: the bijector's check names the problem)
        try:
            inside = self.support.check(value)
        except (RuntimeError, ValueError):  # a wrong shape: the bijector's own check names it
            return None
        if bool(inside.all()):
            return None
        # NaN and inf are not "outside": they go on, to the error about non-finite data
        finite = torch.isfinite(value)
        if self.event_shape:
            finite = finite.flatten(-len(self.event_shape)).all(-1)
        outside: torch.Tensor = ~inside & finite
        return outside

    def score_parts(self, value: torch.Tensor, context: torch.Tensor | None = None) -> Any:
        """Pyro's ingredients of the ELBO at ``value`` (``pyro.distributions.ScoreParts``).

        Pyro's ``Trace_ELBO`` asks a guide's distributions for them. A flow is reparametrised, so
        they are ``(log_prob, 0, log_prob)``, as for Pyro's own distributions. Needs ``pyro-ppl``;
        nothing else in flowtorch imports it.
        """
        from pyro.distributions.score_parts import ScoreParts  # type: ignore[import-not-found]

        log_prob = self.log_prob(value, context)
        # Pyro writes the absent term as the number 0 (which it skips), not as a tensor.
        if self.has_rsample:
            return ScoreParts(log_prob=log_prob, score_function=0, entropy_term=log_prob)  # type: ignore[arg-type]
        return ScoreParts(log_prob=log_prob, score_function=log_prob, entropy_term=0)  # type: ignore[arg-type]

    def normalize(self, value: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Maps ``value`` to the base space (no gradients)."""
        with torch.no_grad():
            return self.rnormalize(value, context)

    def rnormalize(self, value: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Maps ``value`` to the base space."""
        return self.bijector.inverse(value, self._context_for(context))

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], *args: Any, **kwargs: Any) -> Any:
        """Applies ``fn`` (``.to``, ``.double``, ``.cuda``, ...) to the parameters and buffers, and
        rebuilds the base distribution (and a bound context) from ``fn`` of their tensors.

        The base distribution is not a module, so ``nn.Module`` alone would leave it behind. Its
        object is shallow-copied with every tensor attribute replaced (nested distributions and
        transforms too); the base distribution the flow was built with is left unchanged. Views
        made by :meth:`condition` and :meth:`expand` share the moved base (and the parameters).
        """
        out = super()._apply(fn, *args, **kwargs)
        self._base.dist = _map_tensors(self._base.dist, fn, {})
        if self._context is not None:
            self._context = fn(self._context)
        return out

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "_base" not in state:  # pickled before the base moved into a shared holder
            base = state.pop("base_dist", None)
            state["_base"] = _BaseHolder(state["_modules"]["base_dist"] if base is None else base)
            state.setdefault("_base_batch", None)
            state.setdefault("_expanded", None)
        nn.Module.__setstate__(self, state)

    def __repr__(self) -> str:
        return nn.Module.__repr__(self)


class _BaseHolder:
    """Holds a flow's base distribution; a flow and its views share one holder."""

    def __init__(self, dist: Distribution) -> None:
        self.dist = dist


def _map_tensors(obj: Any, fn: Callable[[torch.Tensor], torch.Tensor], memo: dict[int, Any]) -> Any:
    """``obj`` with ``fn`` applied to every tensor it holds, copying distributions, transforms,
    constraints and containers that hold one; modules are left to ``nn.Module._apply``."""
    key = id(obj)
    if key in memo:
        return memo[key]
    out: Any = obj
    if isinstance(obj, torch.Tensor):
        out = fn(obj)
    elif isinstance(obj, nn.Module):
        pass
    elif isinstance(obj, (Distribution, Transform, constraints.Constraint)):
        out = copy.copy(obj)
        memo[key] = out  # before recursing: transforms and their inverses refer to each other
        if isinstance(obj, Transform):  # drop memoised values and the inverse (rebuilt on demand)
            out._inv = None
            if hasattr(obj, "_cached_x_y"):
                out._cached_x_y = (None, None)
        for name, value in list(vars(out).items()):
            new = _map_tensors(value, fn, memo)
            if new is not value:
                out.__dict__[name] = new
    elif isinstance(obj, (list, tuple)):
        items = [_map_tensors(v, fn, memo) for v in obj]
        if any(a is not b for a, b in zip(items, obj)):
            if isinstance(obj, list):
                out = copy.copy(obj)  # keeps a subclass and its attributes
                out[:] = items
            elif hasattr(obj, "_fields"):  # a named tuple
                out = type(obj)(*items)
            else:
                out = type(obj)(items)
    elif isinstance(obj, dict):
        mapped = {k: _map_tensors(v, fn, memo) for k, v in obj.items()}
        if any(mapped[k] is not v for k, v in obj.items()):
            out = copy.copy(obj)  # keeps a subclass (OrderedDict, defaultdict's factory)
            out.update(mapped)
    memo[key] = out
    return out


def _floating_dtype(obj: Any, seen: set[int] | None = None) -> torch.dtype | None:
    """The dtype of the first floating-point tensor a distribution holds (nested distributions
    and transforms too), or ``None``; a module's parameters count for a module."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return None
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return obj.dtype if obj.is_floating_point() else None
    if isinstance(obj, nn.Module):
        return next((p.dtype for p in obj.parameters() if p.is_floating_point()), None)
    if isinstance(obj, (Distribution, Transform)):
        values: Any = vars(obj).values()
    elif isinstance(obj, (list, tuple)):
        values = obj
    else:
        return None
    for value in values:
        found = _floating_dtype(value, seen)
        if found is not None:
            return found
    return None


def _non_finite(name: str, tensor: torch.Tensor) -> ValueError:
    """The error for NaN or inf in the user's ``tensor`` (the argument ``name`` of ``log_prob``):
    how many entries, of which kind, and the index of the first."""
    bad = ~torch.isfinite(tensor)
    count, nans = int(bad.sum()), int(torch.isnan(tensor).sum())
    first = tuple(int(i) for i in bad.nonzero()[0]) if count else ()
    kinds = ", ".join(f"{n} {k}" for n, k in ((nans, "NaN"), (count - nans, "inf")) if n)
    entries = "entry" if count == 1 else "entries"
    return ValueError(
        f"Flow.log_prob: {name} has {count} non-finite {entries} ({kinds}) out of {tensor.numel()}, "
        f"the first at index {first}. The data must be finite: ~torch.isfinite({name}) finds them; "
        "fix or drop those rows before scoring"
    )


def _shape_fits(shape: torch.Size, batch_shape: torch.Size, event_shape: torch.Size) -> bool:
    """Whether ``Distribution._validate_sample`` would accept a value of ``shape``: its trailing
    dims are ``event_shape`` and the rest broadcasts with ``batch_shape``."""
    k = len(shape) - len(event_shape)
    return k >= 0 and shape[k:] == event_shape and broadcastable(shape[:k], batch_shape)
