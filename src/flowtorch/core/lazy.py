"""Lazy construction: a *plan* records a class and its arguments until the shapes are known.

A bijector needs the event shape it acts on (and the shape of its context, if any) before it
can create its parameters, but users describe a flow before they know that shape. Calling a
bijector or conditioner class *without* its shape argument therefore returns a :class:`Plan`
instead of an instance::

    >>> import flowtorch.bijectors as bij
    >>> plan = bij.Exp()
    >>> plan
    Plan(Exp)
    >>> b = plan(shape=(3,))
    >>> type(b).__name__, tuple(b.shape)
    ('Exp', (3,))

Calling the class *with* the shape argument builds the object directly. Nothing else is
deferred and nothing happens at import time.

For type checkers, ``Cls.plan(...)`` is the spelling that says what it returns: a
``Plan[Cls]``, whose call returns a ``Cls``. It makes the same plan as ``Cls(...)``::

    >>> bij.Exp.plan()
    Plan(Exp)
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Callable, Generic, TypeVar

import torch
from typing_extensions import Self

from flowtorch.core.validation import as_size

__all__ = ["Plan", "Lazy", "LazyModule"]

#: What a plan builds. Covariant: a ``Plan[AffineAutoregressive]`` is a ``Plan[Bijector]``.
T_co = TypeVar("T_co", covariant=True)

# The build arguments that are shapes: an int ``n`` is taken for ``(n,)``, as torch takes sizes.
_SHAPE_ARGS = ("shape", "context_shape")


class Plan(Generic[T_co]):
    r"""A class with some of its arguments, waiting for the shape arguments that build it.

    A plan is the partial application of a constructor :math:`C` to its arguments :math:`a`;
    calling it with the build arguments :math:`s` (a shape, a context shape) completes it:

    .. math:: \mathrm{Plan}(C, a)(s) = C(a, s).

    Reference: ``functools.partial`` (Python documentation), which defers a call the same way;
    a plan differs in letting its own non-``None`` keyword arguments win over the build ones,
    and in its ``repr``.

    Typing: ``Plan[C]`` is a plan that builds a ``C``; calling it returns a ``C``. Write
    ``C.plan(...)`` (see :meth:`LazyModule.plan`) to get a ``Plan[C]`` that type checkers see.

    Args:
        cls: the class to build.
        *args: positional arguments passed to ``cls`` when built.
        **kwargs: keyword arguments passed to ``cls`` when built; they take precedence over
            arguments with the same name given when the plan is called, except those that are
            ``None``.

    Example:
        >>> import torch
        >>> import flowtorch.bijectors as bij
        >>> from flowtorch.core.lazy import Plan
        >>> plan = Plan(bij.AffineFixed, scale=2.0)  # the same as bij.AffineFixed(scale=2.0)
        >>> plan
        Plan(AffineFixed, scale=2.0)
        >>> plan(shape=torch.Size([2])).forward(torch.ones(2))
        tensor([2., 2.])
    """

    __slots__ = ("args", "cls", "kwargs")

    cls: type[T_co]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    def __init__(self, cls: type[T_co], *args: Any, **kwargs: Any) -> None:
        self.cls = cls
        self.args = args
        self.kwargs = kwargs

    def __call__(self, **build_kwargs: Any) -> T_co:
        """Builds the object, e.g. ``plan(shape=torch.Size([2]))``; a ``shape`` or
        ``context_shape`` may be an int ``n``, for ``(n,)``."""
        kwargs = dict(build_kwargs)
        for key, value in self.kwargs.items():
            if value is not None or key not in kwargs:
                kwargs[key] = value
        for key in _SHAPE_ARGS:
            if kwargs.get(key) is not None:
                kwargs[key] = as_size(kwargs[key], f"{self.cls.__name__}: {key}")
        return self.cls(*self.args, **kwargs)

    if not TYPE_CHECKING:  # at run time only: type checkers keep seeing a plan's real attributes

        def __getattr__(self, name: str) -> Any:
            """Reached only for names a plan lacks: says it is a plan and how to build it."""
            try:
                cls = object.__getattribute__(self, "cls")
            except AttributeError:
                cls = None  # a plan being unpickled, before its slots are set
            if cls is None or (name.startswith("__") and name.endswith("__")):
                raise AttributeError(name)
            key = getattr(cls, "_plan_key", "shape")
            how = (
                "dist.Flow(base_dist, plan) (then use flow.parameters(), flow.bijector) or "
                "plan(shape=event_shape)"
                if key == "shape"
                else f"plan({key}=...)"
            )
            raise AttributeError(
                f"{self!r} has no attribute {name!r}: it is a plan that builds a {cls.__name__} "
                f"once the shapes are known, not a {cls.__name__} itself; build it first, with {how}"
            )

    def __repr__(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        inner = ", ".join([self.cls.__name__, *parts])
        return f"Plan({inner})"


#: flowtorch 0.8's name for a plan.
Lazy = Plan


def _sizes_checked(init: Callable[..., None]) -> Callable[..., None]:
    """``init`` with its ``shape`` and ``context_shape`` keywords made ``torch.Size`` (an int ``n``
    is ``(n,)``), or a ``TypeError`` that names the class and the argument."""

    @functools.wraps(init)
    def checked(self: torch.nn.Module, *args: Any, **kwargs: Any) -> None:
        for key in _SHAPE_ARGS:
            value = kwargs.get(key)
            if value is not None and not isinstance(value, torch.Size):
                kwargs[key] = as_size(value, f"{type(self).__name__}: {key}")
        init(self, *args, **kwargs)

    return checked


class LazyModule(torch.nn.Module):
    r"""An ``nn.Module`` whose class returns a :class:`Plan` when called without ``_plan_key``.

    Subclasses name the keyword argument that completes them in ``_plan_key`` (``"shape"`` for
    bijectors, ``"param_shapes"`` for conditioners). ``cls(..., shape=s)`` builds an instance;
    ``cls(...)`` without it returns ``Plan(cls, ...)``:

    .. math:: C(a) = \mathrm{Plan}(C, a), \qquad C(a)(s) = C(a, s).

    Pickling and ``copy.deepcopy`` pass the key back, so they rebuild instances, never plans.

    Typing: a type checker reads ``cls(...)`` through the subclass's ``__init__``, which requires
    the key, so it cannot see that ``cls(...)`` without the key is a plan. ``cls.plan(...)``
    makes the same plan and is typed ``Plan[cls]``; the ``flowtorch.mypy_plugin`` plugin teaches mypy
    the ``cls(...)`` spelling as well (see the lazy-plans page of the documentation).

    Reference: ``torch.nn.modules.lazy.LazyModuleMixin`` (PyTorch documentation), which defers
    the shapes of a module's parameters to its first call; here the shapes come in an explicit
    build call instead, before any data.

    Example:
        >>> import torch
        >>> from flowtorch.core.lazy import LazyModule
        >>> class Scale(LazyModule):
        ...     _plan_key = "size"
        ...     def __init__(self, factor: float = 1.0, *, size: int) -> None:
        ...         super().__init__()
        ...         self.weight = torch.nn.Parameter(torch.full((size,), factor))
        >>> Scale(2.0)
        Plan(Scale, 2.0)
        >>> Scale(2.0)(size=3).weight.shape
        torch.Size([3])
        >>> Scale.plan(2.0)  # the same plan, typed Plan[Scale]
        Plan(Scale, 2.0)
    """

    _plan_key: str = "shape"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Direct construction, ``bij.Affine(shape=2)``, takes the same shapes as a plan's build
        # call: each class's own ``__init__`` sees a ``torch.Size`` for ``shape`` and
        # ``context_shape``, or the user gets an error that names the argument.
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is not None:
            cls.__init__ = _sizes_checked(init)  # type: ignore[method-assign]

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get(cls._plan_key) is None:
            return Plan(cls, *args, **kwargs)
        return super().__new__(cls)

    @classmethod
    def plan(cls, *args: Any, **kwargs: Any) -> Plan[Self]:
        """A plan of this class with these arguments: the plan ``cls(*args, **kwargs)`` makes
        without the key, typed ``Plan[cls]`` so that type checkers know what it builds.

        Unlike ``cls(...)``, it returns a plan even when the key is given (calling that plan
        with no arguments builds it).

        Args:
            *args: positional arguments passed to the class when the plan is built.
            **kwargs: keyword arguments passed to the class when the plan is built.

        Example:
            >>> import torch
            >>> import flowtorch.bijectors as bij
            >>> import flowtorch.parameters as params
            >>> plan = bij.AffineAutoregressive.plan(params.DenseAutoregressive.plan(hidden_dims=(8,)))
            >>> plan
            Plan(AffineAutoregressive, Plan(DenseAutoregressive, hidden_dims=(8,)))
            >>> b = plan(shape=torch.Size([3]))  # an AffineAutoregressive, to mypy too
            >>> b.forward(torch.zeros(2, 3)).shape
            torch.Size([2, 3])
        """
        return Plan(cls, *args, **kwargs)

    def __getnewargs_ex__(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (), {self._plan_key: getattr(self, self._plan_key)}
