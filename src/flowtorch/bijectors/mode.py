"""``BijectiveMode``: cache a bijector's intermediate values without a tensor subclass.

While a :class:`BijectiveMode` is active on a thread, every bijector call records an *entry* on
the tensor it returns: the bijector, the input, the context, and log|det J| or the parameters
needed to compute it later. The entry lives in the returned tensor's ``__dict__``, so

* every op that makes a new tensor (``y + 0``, ``y[0]``, ``y.view(...)``, ``y.detach()``) returns a
  tensor without an entry: stripping costs nothing;
* an op that returns the very same object (``y.contiguous()``) returns the entry with it, and the
  staleness checks below still guard it;
* ``torch.compile`` sees a tensor attribute rather than a side table keyed by tensors.

A hit is served only if nothing it depends on changed since it was recorded: the version
counters of the input, the output, the context and the bijector's parameters and buffers, the
grad mode, the module's training flag, and a per-thread *epoch* that the mode bumps when it
sees a write that version counters miss (``p.data = ...``, in-place writes through a ``.data``
alias taken inside the mode, ``Tensor.set_``, fused optimizer kernels). Storage handed to code
the mode cannot watch (``.numpy()``, ``untyped_storage()``, ``__array__``, ``__dlpack__``) marks
that storage opaque: entries that depend on it are never served again while a mode is active.

While a bijector computes, the mode steps off the torch-function stack (if it is on top): the
bijector's own arithmetic needs no interception, so it runs at the speed of plain torch.

When a mode exits, it removes every entry it recorded; nothing remains on any tensor. This
module is consulted only by :mod:`flowtorch.bijectors.base`.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import torch
from torch.overrides import TorchFunctionMode

from flowtorch._compat import is_compiling

__all__ = ["BijectiveMode", "CacheMissWarning"]

F = TypeVar("F", bound=Callable[..., Any])


#: Whether Dynamo is tracing this call (``torch.compile``); cheap, and False on old torch.
_tracing = is_compiling

#: Whether the bookkeeping functions (``record``, ``_classify``, ``_pop``) are
#: ``torch.compiler.disable``d; see :func:`_disable_bookkeeping`.
_BOOKKEEPING_DISABLED = False


def _disable_bookkeeping() -> None:
    """Rebinds the mode's bookkeeping functions to ``torch.compiler.disable`` of themselves.

    Their string checks and ``__dict__`` edits are nothing Dynamo can trace: a call of a disabled
    function is a graph break, after which it runs eagerly, and the flow's maths around it still
    compiles. ``torch.compiler.disable`` imports Dynamo, which takes seconds, so this is done only
    once Dynamo is loaded: at import if it already is, else when a mode is entered outside
    compiled code (eager calls of the disabled functions then cost a few microseconds more). A
    traced ``record`` that was not yet disabled (a mode entered inside compiled code before any
    could be) records nothing, so results stay correct and are not cached.
    """
    global record, _classify, _pop, _BOOKKEEPING_DISABLED
    disable = getattr(getattr(torch, "compiler", None), "disable", None)
    if _BOOKKEEPING_DISABLED or disable is None:
        return
    record = disable(_record)
    _classify = disable(_classify_func)
    _pop = disable(_pop_scope)
    _BOOKKEEPING_DISABLED = True


#: The attribute under which an entry is stored on a tensor.
ATTR = "_flowtorch_entry"


class CacheMissWarning(UserWarning):
    r"""Inside a ``BijectiveMode``, log|det J| had to be recomputed from values alone.

    ``b.log_abs_det_jacobian(x, y, context)`` found no fresh entry for the pair: this bijector
    recorded neither :math:`y = f(x; c)` nor :math:`x = f^{-1}(y; c)` (or the entry went stale), so

    .. math:: \log|\det J_f(x; c)|

    is computed from :math:`x` (and :math:`y`), calling the conditioner again. The value is right;
    the warning (given once per mode) points at a pair that the cache could have served, such as
    one that went through a copy (``y.clone()``, ``y + 0``) between the calls.

    Reference: Dillon et al., "TensorFlow Distributions", 2017 (bijectors that cache their
    input/output pairs, whose misses this reports).

    Example:
        >>> import warnings, torch, flowtorch
        >>> import flowtorch.bijectors as bij
        >>> b = bij.Exp(shape=torch.Size([2]))
        >>> x = torch.zeros(2)
        >>> with warnings.catch_warnings(record=True) as caught, flowtorch.BijectiveMode():
        ...     warnings.simplefilter("always")
        ...     ladj = b.log_abs_det_jacobian(x, x.exp())  # x.exp() is not an output of b
        >>> [w.category is flowtorch.CacheMissWarning for w in caught], ladj
        ([True], tensor(0.))
    """


class TensorSet:
    """A set of tensors by identity, holding them weakly.

    ``weakref.WeakSet`` compares members with ``==``, which tensors answer elementwise; this set
    keys on ``id`` and drops a member when it is freed.
    """

    __slots__ = ("__weakref__", "_refs")

    def __init__(self) -> None:
        self._refs: dict[int, weakref.ref[torch.Tensor]] = {}

    def add(self, t: torch.Tensor) -> None:
        key = id(t)
        owner = weakref.ref(self)

        def gone(ref: weakref.ref[torch.Tensor]) -> None:
            s = owner()
            if s is not None and s._refs.get(key) is ref:
                del s._refs[key]

        self._refs[key] = weakref.ref(t, gone)

    def __contains__(self, t: object) -> bool:
        ref = self._refs.get(id(t))
        return ref is not None and ref() is t

    def __bool__(self) -> bool:
        return bool(self._refs)

    def __len__(self) -> int:
        return len(self._refs)

    def alive(self) -> list[torch.Tensor]:
        return [t for t in (r() for r in list(self._refs.values())) if t is not None]

    def clear(self) -> None:
        self._refs.clear()


class _ThreadState(threading.local):
    def __init__(self) -> None:
        self.scopes: list[_Scope] = []
        # Bumped on writes that tensor version counters do not see.
        self.epoch = 0
        # ``.data`` aliases handed out inside a mode (their writes bypass the original's version).
        self.aliases = TensorSet()
        # Storage addresses handed to code the mode cannot watch (numpy arrays, storages).
        self.opaque: set[int] = set()


STATE = _ThreadState()


class _Structure:
    """Counts module-structure changes (parameters, buffers or submodules registered).

    Bijectors cache the tuple of their parameter and buffer tensors for the staleness check and
    rebuild it when this count moves. The registration hooks are installed the first time a mode
    is entered (never at import) and then stay: each costs one counter increment per module
    registration. Where torch lacks them, ``tracking`` is False and nothing is cached.
    """

    def __init__(self) -> None:
        self.count = 0
        self.tracking = False
        self._lock = threading.Lock()

    def _bump(self, *args: Any) -> None:
        self.count += 1

    def install(self) -> None:
        if self.tracking:
            return
        with self._lock:
            if self.tracking:
                return
            mm = torch.nn.modules.module
            registers = [
                getattr(mm, name, None)
                for name in (
                    "register_module_parameter_registration_hook",
                    "register_module_buffer_registration_hook",
                    "register_module_module_registration_hook",
                )
            ]
            if all(r is not None for r in registers):
                for register in registers:
                    register(self._bump)  # type: ignore[misc]
                self.count += 1  # caches built before the hooks existed are void
                self.tracking = True


STRUCTURE = _Structure()


class _Scope:
    """One activation of a mode on one thread."""

    __slots__ = ("__weakref__", "mode", "requires_ladj", "tagged", "warned")

    def __init__(self, mode: BijectiveMode, requires_ladj: bool) -> None:
        self.mode = mode
        self.requires_ladj = requires_ladj
        self.tagged = TensorSet()
        self.warned = False


class Entry:
    """What a bijector call recorded on its output.

    ``forward`` says which direction produced the output: ``True`` for ``b.forward(key)``,
    ``False`` for ``b.inverse(key)``. ``ladj`` is the forward log|det J| at the pair, reduced to
    the batch shape, or ``None``; ``params`` is what the bijector needs to compute it.
    """

    __slots__ = (
        "bijector",
        "context",
        "epoch",
        "forward",
        "grad",
        "key",
        "ladj",
        "params",
        "previous",
        "scope",
        "state_version",
        "training",
        "versions",
    )

    def __init__(
        self,
        scope: _Scope,
        bijector: Any,
        forward: bool,
        key: torch.Tensor,
        out: torch.Tensor,
        context: torch.Tensor | None,
        ladj: torch.Tensor | None,
        params: Any,
    ) -> None:
        self.scope = scope
        self.bijector = bijector
        self.forward = forward
        self.key = key
        self.context = context
        self.ladj = ladj
        self.params = params
        self.grad = torch.is_grad_enabled()
        self.epoch = STATE.epoch
        self.versions = _versions(key, out, context)
        self.state_version = bijector._state_version()
        self.training = bijector.training
        self.previous: Entry | None = None


def _versions(key: torch.Tensor, out: torch.Tensor, context: torch.Tensor | None) -> tuple[int, int, int]:
    return (key._version, out._version, -1 if context is None else context._version)


def _storage(t: torch.Tensor) -> int:
    # the storage's address without ``untyped_storage()``, which the mode itself would intercept
    return int(t.data_ptr()) - int(t.storage_offset()) * t.element_size()


_C = torch._C
_STACK_API = all(
    hasattr(_C, name)
    for name in (
        "_len_torch_function_stack",
        "_get_function_stack_at",
        "_pop_torch_function_stack",
        "_push_on_torch_function_stack",
    )
)


class suspended:
    """Takes ``scope``'s mode off the top of the torch-function stack while a bijector computes.

    A bijector's own arithmetic needs no interception: its cache entries are recorded by the base
    class, not by ``__torch_function__``. Running it without the mode saves the per-op cost of a
    Python mode. If another mode was pushed above ours, nothing is popped.
    """

    __slots__ = ("mode", "popped")

    def __init__(self, scope: _Scope) -> None:
        self.mode = scope.mode
        self.popped = False

    def __enter__(self) -> None:
        if _STACK_API:
            n = _C._len_torch_function_stack()
            if n and _C._get_function_stack_at(n - 1) is self.mode:
                _C._pop_torch_function_stack()
                self.popped = True

    def __exit__(self, *exc: Any) -> None:
        if self.popped:
            _C._push_on_torch_function_stack(self.mode)


_NULL = contextlib.nullcontext()


def quiet(scope: _Scope) -> contextlib.AbstractContextManager[None]:
    """:class:`suspended` for the cache bookkeeping in eager code. Under ``torch.compile`` a null
    context: Dynamo traces the lookups with the mode in place (and a graph break inside a context
    manager of ours would not be a clean one)."""
    return _NULL if _tracing() else suspended(scope)


def quietly() -> contextlib.AbstractContextManager[None]:
    """:func:`quiet` for the innermost active scope; a null context outside every mode.

    For library code around bijector calls (a flow's base density, the sum of a composition's
    log-dets): its ops write to no tensor the mode watches, so they need no interception.
    """
    scopes = STATE.scopes
    return quiet(scopes[-1]) if scopes else _NULL


def current_scope() -> _Scope | None:
    scopes = STATE.scopes
    return scopes[-1] if scopes else None


def lookup(out: torch.Tensor, bijector: Any, forward: bool, context: torch.Tensor | None) -> Entry | None:
    """The fresh entry that ``bijector`` recorded on ``out`` in direction ``forward``, or None."""
    entry: Entry | None = getattr(out, ATTR, None)
    while entry is not None:
        if entry.bijector is bijector and entry.forward is forward and entry.context is context:
            return entry if _fresh(entry, out) else None
        entry = entry.previous
    return None


def _fresh(entry: Entry, out: torch.Tensor) -> bool:
    state = STATE
    if entry.scope not in state.scopes or entry.epoch != state.epoch:
        return False
    if not entry.grad and torch.is_grad_enabled():
        return False
    if entry.versions != _versions(entry.key, out, entry.context):
        return False
    bijector = entry.bijector
    if entry.training is not bijector.training or not bijector._cacheable():
        return False
    if entry.state_version != bijector._state_version():
        return False
    if state.opaque:
        deps: Iterable[torch.Tensor] = (entry.key, out, *bijector._state_tensors())
        if entry.context is not None:
            deps = (*deps, entry.context)
        if any(_storage(t) in state.opaque for t in deps):
            return False
    return True


def _record(
    scope: _Scope,
    bijector: Any,
    forward: bool,
    key: torch.Tensor,
    out: torch.Tensor,
    context: torch.Tensor | None,
    ladj: torch.Tensor | None,
    params: Any,
) -> None:
    """Records an entry on ``out``. Entries are never recorded under inference mode."""
    if _tracing() or out is key or torch.is_inference_mode_enabled():
        return
    with suspended(scope):  # reading tensors' flags and version counters needs no interception
        if out.is_inference() or key.is_inference() or not bijector._cacheable():
            return
        entry = Entry(scope, bijector, forward, key, out, context, ladj, params)
    entry.previous = getattr(out, ATTR, None)
    setattr(out, ATTR, entry)
    scope.tagged.add(out)


record = _record


def _unlink(t: torch.Tensor, scope: _Scope) -> None:
    """Removes the entries that ``scope`` recorded on ``t``, keeping other scopes' entries."""
    entry: Entry | None = t.__dict__.get(ATTR)
    kept: list[Entry] = []
    while entry is not None:
        if entry.scope is not scope:
            kept.append(entry)
        entry = entry.previous
    head: Entry | None = None
    for e in reversed(kept):
        e.previous = head
        head = e
    if head is None:
        t.__dict__.pop(ATTR, None)
    else:
        t.__dict__[ATTR] = head


def _pop_scope(mode: BijectiveMode) -> None:
    """Ends ``mode``'s innermost scope: removes the scope and every entry it recorded."""
    scope = mode._scopes.pop()
    state = STATE
    state.scopes.remove(scope)
    for t in scope.tagged.alive():
        _unlink(t, scope)
    scope.tagged.clear()
    if not state.scopes:
        state.aliases.clear()
        state.opaque.clear()


_pop = _pop_scope


# How the mode treats each torch function it intercepts.
_PLAIN, _INPLACE, _DATA_GET, _EPOCH, _OPAQUE, _STRIP_STATE = range(6)
_KINDS: dict[Any, int] = {
    torch.Tensor.data.__get__: _DATA_GET,  # type: ignore[attr-defined]
    torch.Tensor.data.__set__: _EPOCH,  # type: ignore[attr-defined]
    torch.Tensor.set_: _EPOCH,
    torch.Tensor.numpy: _OPAQUE,
    torch.Tensor.untyped_storage: _OPAQUE,
    torch.Tensor.storage: _OPAQUE,
    torch.Tensor.__array__: _OPAQUE,
    torch.Tensor.__dlpack__: _OPAQUE,
    torch.Tensor.__reduce_ex__: _STRIP_STATE,
    torch.Tensor.__deepcopy__: _STRIP_STATE,
}


def _classify_func(func: Any) -> int:
    name = getattr(func, "__name__", "")
    if name.startswith("_fused_"):
        return _EPOCH  # fused optimizer kernels do not bump version counters
    if name.endswith("_") and not name.startswith("__"):
        return _INPLACE
    if name == "__setitem__" or (name.startswith("__i") and name.endswith("__")):
        return _INPLACE
    return _PLAIN


_classify = _classify_func


def _written(target: Any, aliases: TensorSet) -> bool:
    if isinstance(target, torch.Tensor):
        return target in aliases or (target._base is not None and target._base in aliases)
    if isinstance(target, (list, tuple)):
        return any(_written(t, aliases) for t in target)
    return False


class BijectiveMode(TorchFunctionMode):
    r"""Caches bijector calls while active: ``with BijectiveMode(requires_ladj=False): ...``.

    Inside the mode:

    * ``b.inverse(y, context)`` on a ``y`` that ``b.forward(x, context)`` returned gives back the
      very object ``x`` (``is``) without computing anything, and ``b.forward`` on the output of
      ``b.inverse`` gives back its input; ``Compose`` chains these hits layer by layer, so a
      flow scores its own samples without an inverse pass;
    * ``b.log_abs_det_jacobian(x, y, context)`` on a recorded pair returns the recorded value;
      with ``requires_ladj=False`` the forward pass skips log|det J| and a later call computes it
      from the recorded parameters, without calling the conditioner again;
    * every tensor stays a plain ``torch.Tensor``; the results of other ops carry no entry.

    Entries are dropped when the ``with`` block exits. Modes nest: the innermost
    ``requires_ladj`` applies, and entries recorded by outer modes stay usable inside. A mode is
    per thread. The mode can also decorate a function, which then runs in a fresh mode.

    Gradients: a hit returns the original ``x``, whose graph does not pass through ``y``. To
    differentiate with respect to ``y`` itself, pass a fresh tensor
    (``y.detach().requires_grad_()``), which is a different object and so a miss.

    Not seen: writes through aliases that bypass version counters (``.data``, numpy arrays,
    storages) taken *before* the mode was entered, and writes from other threads.

    In formulas: a call :math:`y = f(x; c)` inside the mode records
    :math:`(f, x, y, c, \ell, \theta)`, with :math:`\ell = \log|\det J_f(x; c)|` (none when
    ``requires_ladj=False``) and the conditioner's output :math:`\theta`; then, by identity,

    .. math::
        f^{-1}(y; c) = x, \qquad \log|\det J_f(x; c)| = \ell \ \text{or}\ \ell(x; \theta),

    so that a flow scores its own sample :math:`y = f(z)` as
    :math:`\log p(y) = \log p_0(z) - \ell` without an inverse pass.

    References: Dillon et al., "TensorFlow Distributions", 2017 (bijectors that cache their
    input/output pairs and log-dets); ``torch.overrides.TorchFunctionMode`` (PyTorch
    documentation), the mechanism the mode is built on.

    Args:
        requires_ladj: whether forward and inverse calls compute log|det J| as they go (``True``)
            or leave it to a later ``log_abs_det_jacobian`` call (``False``).

    Example:
        >>> import torch, flowtorch
        >>> import flowtorch.bijectors as bij
        >>> b = bij.Exp(shape=torch.Size([2]))
        >>> x = torch.randn(4, 2)
        >>> with flowtorch.BijectiveMode():
        ...     y = b.forward(x)
        ...     b.inverse(y) is x
        True
    """

    def __init__(self, requires_ladj: bool = True) -> None:
        super().__init__()
        self.requires_ladj = requires_ladj
        self._scopes: list[_Scope] = []

    def __enter__(self) -> BijectiveMode:
        if not _BOOKKEEPING_DISABLED and "torch._dynamo" in sys.modules and not _tracing():
            _disable_bookkeeping()
        scope = _Scope(self, self.requires_ladj)
        STRUCTURE.install()
        self._scopes.append(scope)
        STATE.scopes.append(scope)
        try:
            super().__enter__()
        except BaseException:
            _pop(self)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            super().__exit__(*exc)
        finally:
            _pop(self)

    def __call__(self, fn: F) -> F:
        """Decorates ``fn`` so that each call runs inside a new mode with the same settings."""
        requires_ladj = self.requires_ladj

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with BijectiveMode(requires_ladj):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    def __torch_function__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kind = _KINDS.get(func)
        if kind is None:
            kind = _KINDS[func] = _classify(func)
        if kind == _PLAIN:  # the common case, kept short: this runs for every op in the mode
            if not kwargs:
                return func(*args)
            if "out" not in kwargs:
                return func(*args, **kwargs)
        elif kind == _INPLACE and not STATE.aliases._refs:  # (an optimizer step: nothing to watch)
            return func(*args, **kwargs) if kwargs else func(*args)
        return _special(kind, func, args, kwargs or {})


def _special(kind: int, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    state = STATE
    if kind == _INPLACE and not state.aliases:  # in-place ops (optimizer steps), nothing to watch
        return func(*args, **kwargs)
    if kind == _STRIP_STATE:
        # Pickling and deepcopy see the tensor as it would be outside the mode.
        t = args[0]
        saved = t.__dict__.pop(ATTR, None)
        try:
            return func(*args, **kwargs)
        finally:
            if saved is not None:
                t.__dict__[ATTR] = saved
    if kind == _EPOCH:
        state.epoch += 1
        return func(*args, **kwargs)
    if kind == _OPAQUE:
        if isinstance(args[0], torch.Tensor):
            state.opaque.add(_storage(args[0]))
        return func(*args, **kwargs)
    result = func(*args, **kwargs)
    if kind == _DATA_GET:
        if isinstance(result, torch.Tensor):
            state.aliases.add(result)
    elif state.aliases and (
        (kind == _INPLACE and args and _written(args[0], state.aliases))
        or ("out" in kwargs and _written(kwargs["out"], state.aliases))
    ):
        state.epoch += 1
    return result


if "torch._dynamo" in sys.modules:
    _disable_bookkeeping()
