"""Generates docs/bijectors.md (the table of bijectors) and docs/api/bijectors.md (their API pages).

The bijectors are discovered from the package, as the generic test suite discovers them: every
public ``Bijector`` subclass defined in a module of ``flowtorch.bijectors``, exported or not.
Domain and codomain come from the classes; whether the inverse exists, from whether the class
writes ``_inverse_and_ladj`` (or ``_inverse``). What cannot be read off the code (the kind of
inverse, the costs and a reference) each class declares itself, in its ``costs`` attribute (a
``flowtorch.core.bijector.Costs``); a bijector without one still gets a row, with what the code
says and its docstring's reference. Nothing is registered here.

Usage (from the repository root)::

    python docs/gen_bijector_table.py            # rewrite both pages
    python docs/gen_bijector_table.py --check    # exit 1 if either page is out of date

``nox -s docs`` runs it before ``mkdocs build --strict``; ``tests/test_docs.py`` runs the check,
so a page left stale by a change to a bijector fails the test suite.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import pkgutil
import re
import sys
import warnings
from pathlib import Path
from types import ModuleType

from torch.distributions import constraints

import flowtorch.bijectors as bij
from flowtorch.core.bijector import Bijector, Costs

__all__ = ["bijector_classes", "bijector_modules", "render_api", "render_table"]

DOCS = Path(__file__).resolve().parent


#: Sections of the table, in order; a class whose module is not listed goes under "Other".
FAMILIES: list[tuple[str, tuple[str, ...]]] = [
    ("Elementwise, fixed", ("elementwise",)),
    ("Affine and splines", ("affine", "spline", "circular")),
    ("Coupling", ("coupling", "channel_coupling")),
    ("Linear maps, permutations, normalisation", ("linear", "conv", "permute", "reverse", "normalization")),
    ("Shapes and combinators", ("reshape", "combinators", "compose")),
    ("Planar, radial, Sylvester and residual flows", ("planar", "radial", "sylvester", "residual")),
    ("Monotone neural transformers and continuous flows", ("monotonic", "naf", "ffjord")),
]


#: Modules of ``flowtorch.bijectors`` that only re-export the engine's names from ``flowtorch.core``.
MOVED = frozenset({"base", "mode", "compose", "combine"})
#: The engine's modules that define bijectors (documented on the ``flowtorch.core`` page).
CORE_BIJECTOR_MODULES = ("flowtorch.core.combinators", "flowtorch.core.compose")


def bijector_modules(allow_import_errors: bool = False) -> list[ModuleType]:
    """Every family module of ``flowtorch.bijectors``, then the engine's ``Compose`` and combinators."""
    names = [
        f"flowtorch.bijectors.{info.name}"
        for info in sorted(pkgutil.iter_modules(bij.__path__), key=lambda i: i.name)
        if info.name not in MOVED
    ]
    modules = []
    for name in [*names, *CORE_BIJECTOR_MODULES]:
        try:
            modules.append(importlib.import_module(name))
        except Exception as exc:
            if not allow_import_errors:
                raise
            warnings.warn(f"skipping {name}: {exc!r}", stacklevel=2)
    return modules


def bijector_classes(allow_import_errors: bool = False) -> list[type]:
    """Every public bijector class defined in a module of ``flowtorch.bijectors``."""
    out: dict[str, type] = {}
    for module in bijector_modules(allow_import_errors):
        for obj in vars(module).values():
            if (
                inspect.isclass(obj)
                and issubclass(obj, Bijector)
                and obj is not Bijector
                and obj.__module__ == module.__name__
                and not obj.__name__.startswith("_")
                and not obj.is_base
            ):
                out[obj.__name__] = obj
    return list(out.values())


def _aliases(cls: type) -> list[str]:
    """Other public names of ``cls`` in its module (an alias such as ``Lazy = Plan``)."""
    module = sys.modules[cls.__module__]
    names = getattr(module, "__all__", ())
    return [n for n in names if n != cls.__name__ and getattr(module, n, None) is cls]


def _event(c: constraints.Constraint) -> str:
    """Which events a (class-level) constraint accepts, from its ``event_dim``."""
    n = c.event_dim
    return {0: "any shape", 1: "vector (last dim)", 3: "image (C, H, W)"}.get(n, f"{n}-dim")


def _constraint(c: constraints.Constraint) -> str:
    """A short mathematical name for one element of a (class-level) constraint."""
    base = c
    while isinstance(base, constraints.independent):
        base = base.base_constraint
    if isinstance(base, type(constraints.real)):
        return "\u211d"  # the real line
    lower = getattr(base, "lower_bound", None)
    upper = getattr(base, "upper_bound", None)
    if lower is not None and upper is not None:
        return f"({float(lower):g}, {float(upper):g})"
    if lower is not None:
        return f"({float(lower):g}, ∞)"
    if upper is not None:
        return f"(-∞, {float(upper):g})"
    return type(base).__name__.lstrip("_")


def _inverse_kind(cls: type) -> str:
    has_inverse = (
        cls._inverse is not Bijector._inverse or cls._inverse_and_ladj is not Bijector._inverse_and_ladj
    )
    if not has_inverse and "inverse" not in vars(cls):
        return "cache-only"
    return "sequential" if getattr(cls, "conditioned_on_output", False) else "analytic"


def _docstring_reference(cls: type) -> str:
    doc = inspect.getdoc(cls) or ""
    m = re.search(r"References?:\s*(.+?)(?:\n\s*\n|$)", doc, re.S)
    return " ".join(m[1].split()) if m else ""


def _row(cls: type) -> tuple[str, ...]:
    name = cls.__name__
    meta = vars(cls).get("costs")  # the class's own row, never a parent's
    if meta is None:
        see = "see the API"
        meta = Costs(_inverse_kind(cls), see, see, see, _docstring_reference(cls))
    path = f"{cls.__module__}.{name}"
    exported = name in bij.__all__
    label = f"[`{name}`][{path}]"
    aliases = _aliases(cls)
    if aliases:
        label += " (" + ", ".join(f"`{a}`" for a in aliases) + ")"
    if not exported:
        label += f"<br><small>`{cls.__module__}`</small>"
    wrapper = meta.inverse.startswith("as ")
    maps = meta.maps or (
        "as its parts" if wrapper else f"{_constraint(cls.domain)} → {_constraint(cls.codomain)}"
    )
    event = "as its parts" if wrapper else _event(cls.domain)
    costs = (meta.inverse, meta.forward, meta.inverse_cost, meta.ladj)
    return (label, event, maps, *costs, meta.reference or "—")


HEADER = """# Bijectors

<!-- Generated by docs/gen_bijector_table.py from the package: do not edit by hand. -->

Every bijector defined in `flowtorch.bijectors`, found by importing the package (the same way the
generic test suite finds them), so the table cannot miss one. Each name links to its API entry.

How to read the columns:

* **Event**: the events it acts on: *any shape*, a *vector* (the last event dim; other event
  dims, if any, are mapped independently) or an *image* `(C, H, W)`. Shape-changing bijectors
  (`Reshape`, `Squeeze`, ...) say what they map to in their API entry.
* **Maps**: domain → codomain of each element.
* **Inverse**: *analytic* (closed form, as cheap as the forward); *sequential* (closed form, but
  one conditioner pass per dimension: autoregressive layers in the MAF direction, whose
  `forward` samples dimension by dimension); *numerical* (a root finder, fixed-point iteration
  or ODE solve, accurate to a tolerance, with implicit gradients); *cache-only* (no inverse,
  except on the bijector's own outputs inside `flowtorch.BijectiveMode`, see
  [Caching](concepts/caching.md)).
* **Forward / inverse / log\\|det J\\|**: the cost of each, with `D` the number of elements of the
  event. "1 parallel pass" means one call of the conditioner network for all dimensions at once;
  "D sequential passes" means `D` calls, one after another. log\\|det J\\| is usually a by-product
  of the pass that computes the output ("with the pass").
* `Invert(b)` swaps the forward and inverse columns of `b`: `Invert(AffineAutoregressive())` is an
  IAF, with one-pass sampling and `D`-pass density evaluation.

A name listed with its module (e.g. `flowtorch.bijectors.monotonic`) is not re-exported by
`flowtorch.bijectors` yet: import it from that module.
"""


def render_table(classes: list[type]) -> str:
    """The Markdown of docs/bijectors.md."""
    by_module: dict[str, list[type]] = {}
    for cls in classes:
        by_module.setdefault(cls.__module__.rsplit(".", 1)[-1], []).append(cls)
    sections: list[tuple[str, list[type]]] = []
    seen: set[str] = set()
    for title, mods in FAMILIES:
        members = [c for m in mods for c in sorted(by_module.get(m, []), key=lambda c: c.__name__)]
        seen |= set(mods)
        if members:
            sections.append((title, members))
    rest = [c for m, cs in sorted(by_module.items()) if m not in seen for c in cs]
    if rest:
        sections.append(("Other", rest))
    lines = [HEADER]
    cols = ("Bijector", "Event", "Maps", "Inverse", "Forward", "Inverse cost", "log\\|det J\\|", "Reference")
    for title, members in sections:
        lines += [f"## {title}", "", "| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
        for cls in members:
            lines.append("| " + " | ".join(_row(cls)) + " |")
        lines.append("")
    lines += [
        "## References",
        "",
        "Full citations are in each bijector's docstring (see the [API reference](api/bijectors.md)).",
        "",
    ]
    return "\n".join(lines)


def render_api(modules: list[ModuleType]) -> str:
    """The Markdown of docs/api/bijectors.md: one section per module of ``flowtorch.bijectors``."""
    lines = [
        "# `flowtorch.bijectors`",
        "",
        "<!-- Generated by docs/gen_bijector_table.py from the package: do not edit by hand. -->",
        "",
        "::: flowtorch.bijectors",
        "    options:",
        "      show_root_heading: false",
        "      members: false",
        "",
        "The [table of bijectors](../bijectors.md) compares them by domain, inverse and cost;",
        "[Write a new bijector](../how-to/new-bijector.md) explains the base class, which lives in",
        "[`flowtorch.core`](core.md) with `Compose`, `Invert` and the combinators.",
        "",
    ]
    for module in modules:
        if module.__name__.startswith("flowtorch.core."):
            continue  # documented on the flowtorch.core page
        lines += [f"::: {module.__name__}", "    options:", "      show_root_heading: true", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Writes the pages, or with ``--check`` only compares them: exit status 1 and a message
    naming each stale page (nothing is written), so that CI and ``nox -s docs`` can fail on a
    page that was not regenerated instead of rewriting a tracked file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a page is out of date (writes nothing)")
    parser.add_argument("--allow-import-errors", action="store_true", help="skip modules that fail to import")
    args = parser.parse_args(argv)
    pages = {
        DOCS / "bijectors.md": render_table(bijector_classes(args.allow_import_errors)),
        DOCS / "api" / "bijectors.md": render_api(bijector_modules(args.allow_import_errors)),
    }
    stale = []
    for path, text in pages.items():
        if path.exists() and path.read_text() == text:
            continue
        name = _shown(path)
        if args.check:
            stale.append(name)
        else:
            path.write_text(text)
            print(f"wrote {name}")
    if stale:
        print(
            f"{', '.join(stale)} {'is' if len(stale) == 1 else 'are'} out of date with the code: "
            "run python docs/gen_bijector_table.py and commit the result",
            file=sys.stderr,
        )
        return 1
    return 0


def _shown(path: Path) -> str:
    """``path`` relative to the repository root (as it is when the docs are in a checkout)."""
    try:
        return str(path.relative_to(DOCS.parent))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())
