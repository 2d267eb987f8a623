r"""A mypy plugin that types flowtorch 0.8's spelling of plans: ``bij.X(...)`` without ``shape``.

mypy types a call of a class by the class's ``__init__``. A bijector's ``__init__`` requires
``shape`` (a conditioner's, ``param_shapes``), so without help mypy reports
``bij.AffineAutoregressive(params.DenseAutoregressive())`` as a call that lacks them, although
at run time it is a plan (``LazyModule.__new__`` returns one). With this plugin, a call of a
:class:`~flowtorch.core.lazy.LazyModule` subclass

* *without* its completing keyword (``_plan_key``: ``shape`` or ``param_shapes``) is typed
  :math:`\mathrm{Plan}[C]`, and the build arguments (``shape``, ``context_shape``,
  ``param_shapes``, ``input_shape``) may be left out; the other arguments are checked against
  ``__init__`` as usual;
* *with* it is typed :math:`C`, as without the plugin.

A class with its own ``__new__`` that builds from built parts (``Compose([b1, b2])`` of built
bijectors, ``Invert(b)``) is typed :math:`C` when the argument's type says every part is built.

Enable it in the mypy configuration (``pyproject.toml``)::

    [tool.mypy]
    plugins = ["flowtorch.mypy_plugin"]

Without it, write ``C.plan(...)`` (:meth:`flowtorch.core.lazy.LazyModule.plan`), which is typed
``Plan[C]`` for every type checker.

Reference: mypy's documentation, "Extending and integrating mypy" (the plugin hooks
``get_function_signature_hook`` and ``get_function_hook`` used here).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from mypy.nodes import (
    ARG_NAMED,
    ARG_NAMED_OPT,
    ARG_OPT,
    ARG_POS,
    ARG_STAR2,
    AssignmentStmt,
    CallExpr,
    ClassDef,
    NameExpr,
    StrExpr,
    TypeInfo,
)
from mypy.plugin import ClassDefContext, FunctionContext, FunctionSigContext, Plugin
from mypy.types import FunctionLike, Instance, TupleType, Type, get_proper_type

__all__ = ["FlowtorchPlugin", "plugin"]

_LAZY = "flowtorch.core.lazy.LazyModule"
_PLAN = "flowtorch.core.lazy.Plan"
_BIJECTOR = "flowtorch.core.bijector.Bijector"
#: the arguments a builder passes when it completes a plan (Flow, Compose, a bijector building
#: its conditioner); a plan may leave them out
_BUILD_ARGS = frozenset({"shape", "context_shape", "param_shapes", "input_shape"})
#: the key of the plugin's record in a class's metadata
_METADATA = "flowtorch"


def _own_plan_key(cls: ClassDef) -> str | None:
    """The string a class body assigns to ``_plan_key``, if it does."""
    for stmt in cls.defs.body:
        if (
            isinstance(stmt, AssignmentStmt)
            and any(isinstance(lv, NameExpr) and lv.name == "_plan_key" for lv in stmt.lvalues)
            and isinstance(stmt.rvalue, StrExpr)
        ):
            return stmt.rvalue.value
    return None


def _plan_key(info: TypeInfo) -> str:
    """The class's ``_plan_key``: as recorded by :func:`_record_plan_key` for the class or its
    nearest base (class bodies are not kept in mypy's cache, the record is), else ``"shape"``."""
    for base in info.mro:
        key = base.metadata.get(_METADATA, {}).get("plan_key")
        if isinstance(key, str):
            return key
        own = _own_plan_key(base.defn)  # a class analysed without the plugin's record
        if own is not None:
            return own
    return "shape"


def _record_plan_key(ctx: ClassDefContext) -> None:
    """Records a lazy class's ``_plan_key`` in its metadata, which mypy's cache keeps."""
    info = ctx.cls.info
    key = _own_plan_key(ctx.cls)
    info.metadata.setdefault(_METADATA, {})["plan_key"] = key if key is not None else _plan_key(info)


def _is_plan_call(call: object, key: str) -> bool:
    """Whether the call makes a plan: it does not pass ``key`` (and has no ``**kwargs``, which
    might)."""
    if not isinstance(call, CallExpr):
        return False
    if any(kind == ARG_STAR2 for kind in call.arg_kinds):
        return False
    return key not in call.arg_names


def _signature(ctx: FunctionSigContext, key: str) -> FunctionLike:
    """Makes the build arguments optional in a call that makes a plan."""
    sig = ctx.default_signature
    if not _is_plan_call(ctx.context, key):
        return sig
    optional = _BUILD_ARGS | {key}
    kinds = [
        (ARG_NAMED_OPT if kind == ARG_NAMED else ARG_OPT if kind == ARG_POS else kind)
        if name in optional
        else kind
        for kind, name in zip(sig.arg_kinds, sig.arg_names)
    ]
    return sig.copy_modified(arg_kinds=kinds)


def _is_built(arg: Type) -> bool:
    """Whether a type is a built bijector (a plan, ``Any`` or a union of them is not)."""
    arg = get_proper_type(arg)
    return isinstance(arg, Instance) and arg.type.has_base(_BIJECTOR)


def _all_built(arg: Type) -> bool:
    """Whether an argument's type says it is a built bijector, or a sequence of built ones."""
    arg = get_proper_type(arg)
    if isinstance(arg, TupleType):
        return bool(arg.items) and all(_is_built(item) for item in arg.items)
    if isinstance(arg, Instance) and arg.type.fullname in ("builtins.list", "builtins.tuple"):
        return _is_built(arg.args[0])
    return _is_built(arg)


def _return(ctx: FunctionContext, key: str, builds_from_parts: bool, plan: TypeInfo) -> Type:
    """``Plan[C]`` for a call that makes a plan, ``C`` otherwise."""
    if not _is_plan_call(ctx.context, key):
        return ctx.default_return_type
    # the argument's own type: the one inferred for the call is widened by the parameter's
    # declared type (a list of built bijectors reads as a list of bijectors or plans)
    if (
        builds_from_parts
        and ctx.args
        and ctx.args[0]
        and _all_built(ctx.api.get_expression_type(ctx.args[0][0]))
    ):
        return ctx.default_return_type
    return Instance(plan, [ctx.default_return_type])


class FlowtorchPlugin(Plugin):
    """Types a call of a flowtorch bijector or conditioner class without its shape as a plan.

    Reference: mypy's documentation, "Extending and integrating mypy" (the ``Plugin`` class).

    Args:
        options: mypy's options (passed by mypy).

    Example:
        In ``pyproject.toml``: ``[tool.mypy] plugins = ["flowtorch.mypy_plugin"]``; then mypy
        reads ``bij.AffineAutoregressive(params.DenseAutoregressive())`` as a
        ``Plan[AffineAutoregressive]``:

        >>> from flowtorch.mypy_plugin import plugin
        >>> plugin("2.0").__name__
        'FlowtorchPlugin'
    """

    def _lazy_class(self, fullname: str) -> TypeInfo | None:
        sym = self.lookup_fully_qualified(fullname)
        node = None if sym is None else sym.node
        if isinstance(node, TypeInfo) and node.has_base(_LAZY) and node.fullname != _LAZY:
            return node
        return None

    def get_base_class_hook(self, fullname: str) -> Callable[[ClassDefContext], None] | None:
        """The hook that records the ``_plan_key`` of each class derived from a lazy class."""
        if fullname == _LAZY or self._lazy_class(fullname) is not None:
            return _record_plan_key
        return None

    def get_function_signature_hook(
        self, fullname: str
    ) -> Callable[[FunctionSigContext], FunctionLike] | None:
        """The hook that lets a call of a lazy class leave out the build arguments."""
        info = self._lazy_class(fullname)
        if info is None:
            return None
        return partial(_signature, key=_plan_key(info))

    def get_function_hook(self, fullname: str) -> Callable[[FunctionContext], Type] | None:
        """The hook that types a call of a lazy class without its key as a plan."""
        info = self._lazy_class(fullname)
        plan = self.lookup_fully_qualified(_PLAN)
        if info is None or plan is None or not isinstance(plan.node, TypeInfo):
            return None
        # a ``__new__`` below LazyModule's may build from built parts (Compose, Invert, Cat, Stack)
        new = info.get("__new__")
        builds_from_parts = (
            new is not None and new.node is not None and new.node.fullname != f"{_LAZY}.__new__"
        )
        return partial(_return, key=_plan_key(info), builds_from_parts=builds_from_parts, plan=plan.node)


def plugin(version: str) -> type[Plugin]:
    """mypy's entry point: the plugin class, for any mypy version.

    Reference: mypy's documentation, "Extending and integrating mypy" (the ``plugin`` function).

    Args:
        version: the running mypy's version.

    Example:
        >>> from flowtorch.mypy_plugin import plugin
        >>> plugin("2.0").__name__
        'FlowtorchPlugin'
    """
    return FlowtorchPlugin
