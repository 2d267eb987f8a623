"""Audits the docstrings of every public class and function in ``flowtorch``.

For each name in a module's ``__all__`` (defined in that module), checks that the docstring

* exists,
* gives a formula (``.. math::`` or ``:math:``) -- reported, not required, since some objects
  (a reshape, a conditioner) have no formula worth writing,
* describes its arguments (an ``Args:`` section) when the callable takes any,
* names a reference (``Reference``/``References``, or an author-year citation), and
* has an example that runs as a doctest (``>>>``).

Public methods defined on public classes are checked for a docstring only.

Run ``python docs/audit_docstrings.py`` for a table of gaps; ``--strict`` exits non-zero on a
required gap (a missing docstring, ``Args:`` section or example, or a public method without a
docstring of its own or inherited).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import pkgutil
import re
import sys
from dataclasses import dataclass, field

import flowtorch

__all__ = ["Report", "audit", "public_objects"]

_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)

#: gaps that fail ``--strict``; the others (formula, reference) are reported as recommendations,
#: since some objects (a reshape, a warning class, a plan) have neither
REQUIRED = ("docstring", "args", "example")

#: methods whose meaning the name and nn.Module already give
_SELF_EXPLANATORY = {"extra_repr"}

_REFERENCE = re.compile(r"Reference|et al\.|\b(19|20)\d\d\b|arXiv|doi", re.IGNORECASE)


@dataclass
class Report:
    """The docstring gaps of one public object."""

    name: str
    kind: str
    missing: list[str] = field(default_factory=list)
    methods_without_doc: list[str] = field(default_factory=list)
    unknown_args: list[str] = field(default_factory=list)


def public_objects() -> list[tuple[str, object]]:
    """``(qualified name, object)`` for every public class and function of ``flowtorch``."""
    out: dict[str, object] = {}
    modules = [flowtorch]
    for info in pkgutil.walk_packages(flowtorch.__path__, "flowtorch."):
        modules.append(importlib.import_module(info.name))
    for module in modules:
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name, None)
            if not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            if getattr(obj, "__module__", None) != module.__name__:
                continue  # re-exported: audited where it is defined
            out[f"{module.__name__}.{name}"] = obj
    return sorted(out.items())


def _takes_arguments(obj: object) -> bool:
    target = obj.__init__ if inspect.isclass(obj) else obj  # type: ignore[misc]
    try:
        sig = inspect.signature(target)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    names = [p for p in sig.parameters if p not in ("self", "cls")]
    # documented once, on the base classes: a bijector's shape, context shape and conditioner, a
    # conditioner's shapes, a distribution's validate_args
    common = (
        "shape",
        "context_shape",
        "out_shape",
        "param_shapes",
        "input_shape",
        "params_fn",
        "validate_args",
    )
    names = [p for p in names if p not in common and sig.parameters[p].kind not in _VARIADIC]
    return bool(names)


def _unknown_args(obj: object, doc: str) -> list[str]:
    """The entries of the docstring's Args section that name no parameter of the signature (one
    entry a parameter: the API pages' renderer refuses ``a, b: ...``)."""
    match = re.search(r"^(?:Args|Arguments|Parameters):\n((?:(?: {4}.*)?\n)+)", doc + "\n", re.M)
    if match is None:
        return []
    target = obj.__init__ if inspect.isclass(obj) else obj  # type: ignore[misc]
    try:
        signature = inspect.signature(target)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return []
    if any(p.kind in _VARIADIC for p in signature.parameters.values()):
        return []  # e.g. a compiled base class's __init__, whose signature Python cannot read
    params = set(signature.parameters)
    entries = re.findall(r"^ {4}(\*{0,2}[^\s:(][^:(]*?)\s*(?:\([^)]*\))?:", match.group(1), re.M)
    return [e for e in entries if e.lstrip("*") not in params]


def audit() -> list[Report]:
    """One report per public object."""
    reports = []
    for qualname, obj in public_objects():
        doc = inspect.getdoc(obj) if obj.__doc__ else None
        kind = "class" if inspect.isclass(obj) else "function"
        report = Report(qualname, kind)
        if not doc:
            report.missing.append("docstring")
        else:
            if ".. math::" not in doc and ":math:" not in doc:
                report.missing.append("formula")
            if _takes_arguments(obj) and not re.search(r"^(Args|Arguments|Parameters):", doc, re.M):
                report.missing.append("args")
            report.unknown_args = _unknown_args(obj, doc)
            if not _REFERENCE.search(doc):
                report.missing.append("reference")
            if ">>>" not in doc:
                report.missing.append("example")
        if inspect.isclass(obj):
            for name, member in vars(obj).items():
                if name.startswith("_") or name in _SELF_EXPLANATORY:
                    continue
                if not (callable(member) or isinstance(member, (property, staticmethod, classmethod))):
                    continue
                # an override without a docstring inherits its base class's (as help() shows it)
                if not inspect.getdoc(getattr(obj, name)):
                    report.methods_without_doc.append(name)
        reports.append(report)
    return reports


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strict", action="store_true", help="fail on a required gap (see REQUIRED)")
    args = parser.parse_args()
    reports = audit()
    counts: dict[str, int] = {}
    print(f"{'object':70s} missing")
    for r in reports:
        for m in r.missing:
            counts[m] = counts.get(m, 0) + 1
        extra = ""
        if r.methods_without_doc:
            extra = f"; methods without docstring: {', '.join(r.methods_without_doc)}"
        if r.unknown_args:
            extra += f"; Args entries that name no parameter: {', '.join(r.unknown_args)}"
        if r.missing or extra:
            print(f"{r.name:70s} {', '.join(r.missing)}{extra}")
    hard = [r for r in reports if set(REQUIRED) & set(r.missing) or r.methods_without_doc or r.unknown_args]
    print(f"\n{len(reports)} public objects; gaps: {counts}; {len(hard)} objects with a required gap")
    return 1 if args.strict and hard else 0


if __name__ == "__main__":
    sys.exit(main())
