"""``BijectiveMode``: cache a bijector's intermediate values without a tensor subclass.

While a :class:`BijectiveMode` is active on a thread, every bijector call records an *entry*
about the tensor it returns: the bijector, the input, the context, and log|det J| or the
parameters needed to compute it later. Entries live in a table of the mode's activation on that
thread, keyed by the identity of the output and holding it weakly, never on the tensor itself:

* every op that makes a new tensor (``y + 0``, ``y[0]``, ``y.view(...)``, ``y.detach()``) returns an
  object the table does not know: stripping costs nothing;
* pickling, ``copy``, ``torch.save`` and other threads see plain tensors with nothing attached;
* the table, and every entry in it, goes when the activation ends.

**The freshness rule.** An entry is served only if every input of the recorded call is still the
same, where "same" is decided by things that change whenever the value can:

* the key (the call's input), the output, the context and a stored log|det J|: the same objects
  (held by the entry, or the lookup's own argument), the same ``_version``, the same
  ``requires_grad``;
* the bijector's state, read from the module at lookup time: for each submodule its ``training``
  flag, and for each parameter and buffer slot the tensor object, its ``__dict__`` object (which
  ``torch.utils.swap_tensors`` exchanges with the tensor's contents), its ``_version`` and its
  ``requires_grad``. Replacing, swapping, assign-loading or ``functional_call``-substituting a
  parameter is a different signature;
* the grad mode: an entry recorded without gradients does not serve a call that builds a graph
  (under ``torch.no_grad``, a hit serves detached values, as a recomputation would give);
* a process-wide *epoch*, moved by every write that version counters cannot show:
  ``torch.distributed`` collectives, kernels whose schema marks an argument as written but that
  left its ``_version`` alone (fused optimizers), writes through tensors that share storage under
  another version counter (``.data``, ``p.data = t``, ``set_``) created inside the mode, and
  :meth:`BijectiveMode.invalidate` for writes no mode can see;
* storage handed to code that writes behind torch's back (``.numpy()``, ``__array__``, storages,
  ``__dlpack__``, ``data_ptr()``) is *opaque*: entries that depend on it are not served again while
  a mode is active on the thread.

While a bijector computes, and while the library does its own arithmetic around bijector calls,
the mode steps off the torch-function stack (:func:`unintercepted`): that arithmetic writes to no
tensor the mode watches, and runs at the speed of plain torch. Under ``torch.compile`` the mode
does nothing: compiled code neither reads nor records entries, and computes everything.

This module is consulted only by :mod:`flowtorch.core.bijector`.
"""

from __future__ import annotations

import functools
import inspect
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import torch
from torch.overrides import TorchFunctionMode

from flowtorch.core.compat import is_compiling

__all__ = ["BijectiveMode", "CacheMissWarning"]

F = TypeVar("F", bound=Callable[..., Any])

#: Whether Dynamo is tracing this call (``torch.compile``); False on old torch.
_tracing = is_compiling
#: The module whose ``_is_compiling_flag`` is what ``torch.compiler.is_compiling`` returns outside
#: TorchScript, read directly on the per-op path (a tenth of the call); ``None`` where torch has
#: no such flag, and then ``_compiling_flag`` asks the function.
_FLAG: Any = getattr(torch, "compiler", None)
if not hasattr(_FLAG, "_is_compiling_flag"):
    _FLAG = None
_compiling_flag = is_compiling


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


# ------------------------------------------------------------------------------ the epoch
#: Moved by every write that version counters do not show; an entry records its value. One
#: number for the process: a write seen on one thread may concern tensors another thread uses.
#: (``+=`` on a list item may lose a concurrent increment, but the value still moves past the
#: one any entry recorded before either write.)
_EPOCH = [0]


def _bump() -> None:
    _EPOCH[0] += 1


# ------------------------------------------------------------------------------ per thread
class _Alias:
    """A tensor that shares storage with others under its own version counter, made inside a
    mode (``.data``, the tensor assigned by ``p.data = t``, ``set_``): writes through it move no
    counter that an entry holds, so its own counter is watched, through ``handle`` (a detached
    alias that shares it). ``seen`` is the count last looked at; ``ref`` watches the tensor's
    end, when a last look is taken."""

    __slots__ = ("handle", "ref", "seen")

    def __init__(self, t: torch.Tensor) -> None:
        self.handle = t.detach()
        self.seen = self.handle._version
        self.ref: weakref.ref[torch.Tensor] | None = None

    def moved(self) -> bool:
        v = self.handle._version
        if v == self.seen:
            return False
        self.seen = v
        return True


class _ThreadState(threading.local):
    def __init__(self) -> None:
        # The active activations on this thread, innermost last.
        self.scopes: list[_Scope] = []
        # Watched aliases, by id of the alias object (see ``_Alias``).
        self.aliases: dict[int, _Alias] = {}
        # Storage addresses handed to code the mode cannot watch.
        self.opaque: set[int] = set()


STATE = _ThreadState()


def _watch_alias(t: torch.Tensor) -> None:
    """Watches ``t`` (see ``_Alias``) until it is freed or the last mode on the thread exits."""
    aliases = STATE.aliases  # this thread's: the callback may run on another one
    key = id(t)
    if key in aliases:
        return
    alias = _Alias(t)

    def gone(ref: weakref.ref[torch.Tensor]) -> None:
        if aliases.get(key) is alias:
            del aliases[key]
            if alias.moved():
                _bump()

    alias.ref = weakref.ref(t, gone)
    aliases[key] = alias


def _sync_aliases(state: _ThreadState) -> None:
    """Moves the epoch if a watched alias was written since the last look."""
    for alias in list(state.aliases.values()):
        if alias.moved():
            _bump()


def _storage(t: torch.Tensor) -> int:
    # the storage's address, from ``data_ptr`` (run with the mode off the stack)
    return int(t.data_ptr()) - int(t.storage_offset()) * t.element_size()


# ------------------------------------------------------------------------------ entries
class _Ref(weakref.ref):  # type: ignore[type-arg]
    """A weak reference to a recorded output, carrying its table key (``id`` of the output)."""

    __slots__ = ("key",)
    key: int


class _Scope:
    """One activation of a mode on one thread, with its table of entries."""

    __slots__ = ("mode", "requires_ladj", "table", "warned")

    def __init__(self, mode: BijectiveMode, requires_ladj: bool) -> None:
        self.mode = mode
        self.requires_ladj = requires_ladj
        self.table: dict[int, Entry] = {}
        self.warned = False

    def _gone(self, ref: _Ref) -> None:
        # an output was freed: its entries go with it (may run on any thread)
        head = self.table.get(ref.key)
        if head is not None and head.ref is ref:
            del self.table[ref.key]


def _signature(module: torch.nn.Module, held: list[Any] | None = None) -> list[Any]:
    """What a module's maps depend on, read from the module now: each submodule's ``training``
    flag, and for each parameter and buffer slot (``None`` included) the tensor's ``id``, the
    ``id`` of its ``__dict__``, its ``_version`` and its ``requires_grad``. ``held`` collects the
    tensors and their ``__dict__`` objects, which an entry keeps so that their ids stay theirs."""
    sig: list[Any] = []
    _walk(module, sig, held)
    return sig


def _walk(m: torch.nn.Module, sig: list[Any], held: list[Any] | None) -> None:
    # (written out per slot dict, with one tuple a tensor: the hot path of every lookup)
    sig.append(m.training)
    for slots in (m._parameters, m._buffers):
        if slots:
            for t in slots.values():
                if t is None:
                    sig.append(None)
                    continue
                d = t.__dict__
                sig.append((id(t), id(d), t._version, t.requires_grad))
                if held is not None:
                    held.append(t)
                    held.append(d)
    children = m._modules
    if children:
        for child in children.values():
            if child is not None:
                _walk(child, sig, held)


class Entry:
    """What a bijector call recorded about its output.

    ``forward`` says which direction produced the output: ``True`` for ``b.forward(key)``,
    ``False`` for ``b.inverse(key)``. ``ladj`` is the forward log|det J| at the pair, reduced to
    the batch shape, or ``None``; ``params`` is what the bijector needs to compute it; ``later``,
    from a pass that deferred the log-det, computes the raw value from what the pass kept (called
    at most once, then ``ladj`` holds its result).
    """

    __slots__ = (
        "bijector",
        "context",
        "epoch",
        "flags",
        "forward",
        "grad",
        "held",
        "key",
        "ladj",
        "ladj_state",
        "later",
        "needs_grad",
        "params",
        "previous",
        "ref",
        "sig",
        "versions",
    )

    def __init__(
        self,
        bijector: Any,
        forward: bool,
        key: torch.Tensor,
        out: torch.Tensor,
        context: torch.Tensor | None,
        ladj: torch.Tensor | None,
        params: Any,
        later: Callable[[], torch.Tensor] | None = None,
    ) -> None:
        self.bijector = bijector
        self.forward = forward
        self.key = key
        self.context = context
        self.ladj = ladj
        self.params = params
        self.later = later
        self.grad = torch.is_grad_enabled()
        self.epoch = _EPOCH[0]
        self.versions = _versions(key, out, context)
        self.flags = _flags(key, out, context)
        self.ladj_state = None if ladj is None else (ladj._version, ladj.requires_grad)
        held: list[Any] = []
        self.sig = _signature(bijector, held)  # a list, compared with a list
        self.held = tuple(held)  # (tensor, its __dict__) pairs
        self.needs_grad = (
            any(self.flags)
            or (ladj is not None and ladj.requires_grad)
            or any(t.requires_grad for t in self.held[::2])
        )
        self.previous: Entry | None = None
        self.ref: _Ref | None = None

    def store_ladj(self, ladj: torch.Tensor) -> None:
        """Stores a log|det J| computed after the call (from ``later``), guarded as one stored
        at the call: served while unwritten and of the same ``requires_grad``."""
        self.ladj = ladj
        self.ladj_state = (ladj._version, ladj.requires_grad)

    def stored_ladj(self) -> torch.Tensor | None:
        """The recorded log|det J|, unless it was written or detached since (the caller got
        this very tensor and may have used it as a buffer)."""
        ladj = self.ladj
        if ladj is None or (ladj._version, ladj.requires_grad) != self.ladj_state:
            return None
        return served(ladj)


def served(t: torch.Tensor, scope: _Scope | None = None) -> torch.Tensor:
    """A recorded tensor as a hit serves it: itself, or under ``torch.no_grad`` (where a
    recomputation would carry no graph) a detached alias of it when it has a graph. With
    ``scope``, the fresh entries about ``t`` are recorded about the alias too, so that the next
    layer of a composition finds its hit on what this one served."""
    if not t.requires_grad or torch.is_grad_enabled():
        return t
    alias = t.detach()
    if scope is not None:
        entry = entry_of(t)
        state = STATE
        while entry is not None:
            if _fresh(entry, t, state):
                record(
                    scope,
                    entry.bijector,
                    entry.forward,
                    entry.key,
                    alias,
                    entry.context,
                    entry.ladj,
                    entry.params,
                )
            entry = entry.previous
    return alias


def _versions(key: torch.Tensor, out: torch.Tensor, context: Any) -> tuple[int, int, int]:
    return (key._version, out._version, -1 if context is None else context._version)


def _flags(key: torch.Tensor, out: torch.Tensor, context: Any) -> tuple[bool, bool, bool]:
    return (key.requires_grad, out.requires_grad, context is not None and context.requires_grad)


def current_scope() -> _Scope | None:
    """The innermost activation on this thread; ``None`` outside every mode and under
    ``torch.compile`` (compiled code neither reads nor records entries)."""
    scopes = STATE.scopes
    if not scopes or _tracing():
        return None
    return scopes[-1]


def lookup(out: torch.Tensor, bijector: Any, forward: bool, context: torch.Tensor | None) -> Entry | None:
    """The fresh entry that ``bijector`` recorded about ``out`` in direction ``forward`` with this
    very ``context``, or ``None``."""
    state = STATE
    key = id(out)
    for scope in reversed(state.scopes):
        entry = scope.table.get(key)
        if entry is None or entry.ref is None or entry.ref() is not out:
            continue
        while entry is not None:
            if entry.bijector is bijector and entry.forward is forward and entry.context is context:
                return entry if _fresh(entry, out, state) else None
            entry = entry.previous
    return None


def _fresh(entry: Entry, out: torch.Tensor, state: _ThreadState) -> bool:
    """The freshness rule (module docstring), in order of cost."""
    if state.aliases:
        _sync_aliases(state)
    if entry.epoch != _EPOCH[0]:
        return False
    if not entry.grad and entry.needs_grad and torch.is_grad_enabled():
        return False  # recorded without a graph, asked for one (see ``served``)
    key, context = entry.key, entry.context
    if _versions(key, out, context) != entry.versions or _flags(key, out, context) != entry.flags:
        return False
    bijector = entry.bijector
    if not bijector._cacheable() or _signature(bijector) != entry.sig:
        return False
    if state.opaque:
        deps: Iterable[Any] = (key, out, context, entry.ladj, *entry.held[::2])
        if any(isinstance(t, torch.Tensor) and _storage(t) in state.opaque for t in deps):
            return False
    return True


def record(
    scope: _Scope,
    bijector: Any,
    forward: bool,
    key: torch.Tensor,
    out: torch.Tensor,
    context: torch.Tensor | None,
    ladj: torch.Tensor | None,
    params: Any,
    later: Callable[[], torch.Tensor] | None = None,
) -> None:
    """Records an entry about ``out`` in ``scope``'s table. Nothing is recorded under inference
    mode (inference tensors have no version counter), nor when ``out`` is ``key``."""
    if out is key or torch.is_inference_mode_enabled() or out.is_inference() or key.is_inference():
        return
    if not bijector._cacheable():
        return
    state = STATE
    if state.aliases:
        _sync_aliases(state)  # so that a write before this call does not void the entry
    entry = Entry(bijector, forward, key, out, context, ladj, params, later)
    table = scope.table
    head = table.get(id(out))
    if head is not None and head.ref is not None and head.ref() is out:
        entry.previous = head
        entry.ref = head.ref
    else:
        ref = _Ref(out, scope._gone)
        ref.key = id(out)
        entry.ref = ref
    table[id(out)] = entry


def entry_of(t: torch.Tensor) -> Entry | None:
    """The newest entry about ``t`` (fresh or not) that an active mode on this thread holds."""
    for scope in reversed(STATE.scopes):
        entry = scope.table.get(id(t))
        if entry is not None and entry.ref is not None and entry.ref() is t:
            return entry
    return None


def has_entry(t: torch.Tensor) -> bool:
    """Whether an active mode on this thread holds an entry about ``t`` (fresh or not)."""
    return entry_of(t) is not None


# ------------------------------------------------------------------------------ stepping off
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


class unintercepted:
    """Runs a block with the ``BijectiveMode``\\ s on top of the torch-function stack taken off it.

    The one way the library steps off the stack: around a bijector's own computation and the
    cache bookkeeping, and around the arithmetic that wrappers and flows do between bijector
    calls. None of those ops writes to a tensor the mode watches, so none needs interception,
    and they run at the speed of plain torch. A mode of another kind on top is left alone (and
    so are ours below it). Under ``torch.compile`` and outside every mode, nothing happens.
    """

    __slots__ = ("popped",)

    def __enter__(self) -> None:
        popped: list[BijectiveMode] = []
        if STATE.scopes and _STACK_API and not _tracing():
            n = _C._len_torch_function_stack()
            while n:
                top = _C._get_function_stack_at(n - 1)
                if not isinstance(top, BijectiveMode):
                    break
                popped.append(_C._pop_torch_function_stack())
                n -= 1
        self.popped = popped

    def __exit__(self, *exc: Any) -> None:
        for mode in reversed(self.popped):
            _C._push_on_torch_function_stack(mode)


# ------------------------------------------------------------------------------ interception
# How the mode treats each torch function it intercepts (cached per function).
# ``_OUT``: writes only through keyword arguments (``out=``); ``_WRITES_SELF``: writes its first
# positional argument (and maybe ``out=``); ``_WRITES``: any other set of written arguments.
_PLAIN, _OUT, _WRITES_SELF, _WRITES, _EPOCH_OP, _OPAQUE, _DATA_GET, _DATA_SET, _SET, _DETACH = range(10)


def _special_functions() -> dict[Any, int]:
    kinds: dict[Any, int] = {
        torch.Tensor.data.__get__: _DATA_GET,  # type: ignore[attr-defined]
        torch.Tensor.data.__set__: _DATA_SET,  # type: ignore[attr-defined]
        torch.Tensor.set_: _SET,
        torch.Tensor.detach: _DETACH,
        torch.detach: _DETACH,
    }
    # hand out the memory itself: whoever holds it can write without a version counter
    raw = ("numpy", "untyped_storage", "storage", "_typed_storage", "__array__", "__dlpack__", "data_ptr")
    for name in raw:
        f = getattr(torch.Tensor, name, None)
        if f is not None:
            kinds[f] = _OPAQUE
    for name in ("__cuda_array_interface__", "__array_interface__"):
        prop = getattr(torch.Tensor, name, None)
        if isinstance(prop, property) and prop.fget is not None:
            kinds[prop.fget] = _OPAQUE
    return kinds


_KINDS: dict[Any, int] = _special_functions()
#: For functions of kind ``_WRITES``: the positions and names of the arguments that their
#: schemas mark as written (``Tensor(a!)``).
_WRITTEN: dict[Any, tuple[frozenset[int], frozenset[str]]] = {}


def _classify(func: Any) -> int:
    """A function's kind, from what it does: its module for ``torch.distributed`` (collectives
    write their tensors with no version bump), else the schemas of the ATen operator it calls."""
    module = getattr(func, "__module__", None) or ""
    if module.startswith("torch.distributed"):
        return _EPOCH_OP
    name = getattr(func, "__name__", None)
    if not isinstance(name, str):
        return _PLAIN
    try:
        schemas = _C._jit_get_schemas_for_operator(f"aten::{name}")
    except RuntimeError:
        return _PLAIN
    positions: set[int] = set()
    names: set[str] = set()
    for schema in schemas:
        for i, arg in enumerate(schema.arguments):
            info = arg.alias_info
            if info is not None and info.is_write:
                names.add(arg.name)
                if not arg.kwarg_only:
                    positions.add(i)
    if not names:
        return _PLAIN
    _WRITTEN[func] = (frozenset(positions), frozenset(names))
    if not positions:
        return _OUT
    return _WRITES_SELF if positions == {0} else _WRITES


def _tensors(values: Iterable[Any]) -> Iterator[torch.Tensor]:
    for v in values:
        if isinstance(v, torch.Tensor):
            yield v
        elif isinstance(v, (list, tuple)):
            yield from (t for t in v if isinstance(t, torch.Tensor))


def _written(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[torch.Tensor]:
    positions, names = _WRITTEN[func]
    chosen = [a for i, a in enumerate(args) if i in positions]
    chosen += [v for k, v in kwargs.items() if k in names]
    return [t for t in _tensors(chosen) if not t.is_inference()]


class BijectiveMode(TorchFunctionMode):
    r"""Caches bijector calls while active: ``with BijectiveMode(requires_ladj=False): ...``.

    Inside the mode:

    * ``b.inverse(y, context)`` on a ``y`` that ``b.forward(x, context)`` returned gives back the
      very object ``x`` (``is``) without computing anything, and ``b.forward`` on the output of
      ``b.inverse`` gives back its input; ``Compose`` chains these hits layer by layer, so a
      flow scores its own samples without an inverse pass;
    * ``b.log_abs_det_jacobian(x, y, context)`` on a recorded pair returns the recorded value;
      with ``requires_ladj=False`` the forward pass skips the part of log|det J| that has a cost
      of its own (a spline's derivative, a residual block's series) and keeps what that part
      needs (the spline's bin and knots, the parameters); a later call computes it from those,
      without calling the conditioner or redoing the pass. Sampling alone then costs less, and
      sampling then scoring costs what it costs with ``requires_ladj=True``;
    * every tensor stays a plain ``torch.Tensor``; the results of other ops carry no entry.

    A hit is served only if nothing it depends on changed since it was recorded (the freshness
    rule of :mod:`flowtorch.core.mode`): the tensors' objects, version counters and
    ``requires_grad``, the bijector's parameters and buffers as the module holds them at the
    moment of the call, the grad mode, and writes that version counters miss. Writes the mode
    cannot see at all (a foreign library writing through a raw pointer, a ``.data`` alias taken
    before the mode was entered, another thread) are announced with :meth:`invalidate`.

    Entries are dropped when the ``with`` block exits. Modes nest: the innermost
    ``requires_ladj`` applies, and entries recorded by outer modes stay usable inside. A mode is
    per thread; one mode object may be entered by several threads at once. The mode can also
    decorate a function, which then runs in a fresh mode (a generator: each resumption).

    Gradients: a hit returns the original ``x``, whose graph does not pass through ``y``. To
    differentiate with respect to ``y`` itself, pass a fresh tensor
    (``y.detach().requires_grad_()``), which is a different object and so a miss.

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

    @staticmethod
    def invalidate() -> None:
        """Declares that tensors may have changed in a way no mode could see, so that no entry
        recorded before this call is served again (on any thread).

        For writes through memory that torch does not track: a foreign library writing through a
        pointer or a DLPack capsule (``torch.utils.dlpack.to_dlpack``), a ``.data`` alias or a
        numpy array taken before the mode was entered, another thread. Writes that the mode can
        see (in-place ops, optimizer steps fused or not, ``torch.distributed`` collectives called
        inside the mode on torch >= 2.12, ``.data`` aliases taken inside it) need no call.

        Example:
            >>> import torch, flowtorch
            >>> import flowtorch.bijectors as bij
            >>> b = bij.Exp(shape=torch.Size([2]))
            >>> x = torch.zeros(2)
            >>> with flowtorch.BijectiveMode():
            ...     y = b.forward(x)
            ...     flowtorch.BijectiveMode.invalidate()  # e.g. after writing y through a pointer
            ...     b.inverse(y) is x
            False
        """
        _bump()

    def __enter__(self) -> BijectiveMode:
        scope = _Scope(self, self.requires_ladj)
        STATE.scopes.append(scope)
        try:
            super().__enter__()
        except BaseException:
            _end(self)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            super().__exit__(*exc)
        finally:
            _end(self)

    def __call__(self, fn: F) -> F:
        """Decorates ``fn`` so that each call runs inside a new mode with the same settings.

        A generator function runs each resumption (up to its next ``yield``) inside a new mode:
        code outside the mode runs between resumptions, so entries do not outlive one.
        """
        requires_ladj = self.requires_ladj
        if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
            raise TypeError(
                "BijectiveMode cannot decorate an async function (other coroutines run while it "
                "awaits); open the mode inside it: `with BijectiveMode(): ...`"
            )
        if inspect.isgeneratorfunction(fn):

            @functools.wraps(fn)
            def generator(*args: Any, **kwargs: Any) -> Any:
                gen = fn(*args, **kwargs)
                send: Any = None
                thrown: BaseException | None = None
                while True:
                    try:
                        with BijectiveMode(requires_ladj):
                            value = gen.send(send) if thrown is None else gen.throw(thrown)
                    except StopIteration as stop:
                        return stop.value
                    thrown = None
                    try:
                        send = yield value
                    except GeneratorExit:
                        with BijectiveMode(requires_ladj):
                            gen.close()
                        raise
                    except BaseException as e:
                        thrown = e

            return generator  # type: ignore[return-value]

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
        if _compiling_flag() if _FLAG is None else _FLAG._is_compiling_flag:
            # compiled code: the mode does nothing (and Dynamo traces only this)
            return func(*args, **kwargs) if kwargs else func(*args)
        kind = _KINDS.get(func)
        if kind is None:
            kind = _KINDS[func] = _classify(func)
        if kind == _PLAIN or (kind == _OUT and not kwargs):  # the common case, kept short
            return func(*args, **kwargs) if kwargs else func(*args)
        t = args[0] if args else None
        if kind == _WRITES_SELF and isinstance(t, torch.Tensor) and (not kwargs or "out" not in kwargs):
            # an in-place method, ``t.add_(u, alpha=2)``: the common write, kept short
            try:
                version = t._version
            except RuntimeError:  # an inference tensor: no version counter, never recorded
                return func(*args, **kwargs) if kwargs else func(*args)
            result = func(*args, **kwargs) if kwargs else func(*args)
            if t._version == version:
                _bump()  # written (as the schema says) without a version bump
            return result
        if kind == _DETACH and not STATE.aliases:
            return func(*args)
        return _special(kind, func, args, kwargs or {})


def _end(mode: BijectiveMode) -> None:
    """Ends ``mode``'s innermost activation on this thread, and every entry it recorded."""
    scopes = STATE.scopes
    for i in range(len(scopes) - 1, -1, -1):
        if scopes[i].mode is mode:
            scopes.pop(i).table.clear()
            break
    if not scopes:
        STATE.aliases.clear()
        STATE.opaque.clear()


def _special(kind: int, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    state = STATE
    if kind in (_OUT, _WRITES_SELF, _WRITES):
        targets = _written(func, args, kwargs)
        before = [t._version for t in targets]
        result = func(*args, **kwargs)
        if any(t._version == v for t, v in zip(targets, before)):
            _bump()  # written (as the schema says) without a version bump: a fused kernel
        return result
    if kind == _EPOCH_OP:
        result = func(*args, **kwargs)
        _bump()
        return result
    if kind == _OPAQUE:
        t = args[0] if args else None
        if isinstance(t, torch.Tensor) and not t.is_inference():
            state.opaque.add(_storage(t))
        return func(*args, **kwargs)
    result = func(*args, **kwargs)
    if kind == _DATA_GET or (kind == _DETACH and args and id(args[0]) in state.aliases):
        if isinstance(result, torch.Tensor) and not result.is_inference():
            _watch_alias(result)
    elif kind == _DATA_SET:  # ``t.data = new``: t's values changed, and ``new`` is an alias of t
        _bump()
        if len(args) > 1 and isinstance(args[1], torch.Tensor):
            _watch_alias(args[1])
    elif kind == _SET:  # ``t.set_(source)``: t and source share storage, each with its own counter
        _bump()
        for t in _tensors(args[:2]):
            _watch_alias(t)
    return result
