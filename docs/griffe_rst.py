"""A griffe extension that renders flowtorch's reST-flavoured Google docstrings as Markdown.

flowtorch's docstrings are Google style (``Args:``, ``Example:``) with a few reST constructs that
read well in source and in ``help()``, and that the project's style asks for (formula first, with
``.. math::``). mkdocstrings renders docstrings as Markdown, so before parsing, this extension
rewrites, in every docstring it loads:

* ``.. math:: ...`` (one line, or an indented block) into a display-math block ``$$ ... $$``,
  which ``pymdownx.arithmatex`` hands to MathJax;
* the inline role ``:math:`...``` into ``\\( ... \\)``;
* cross-reference roles (``:class:``, ``:func:``, ``:meth:``, ``:mod:``, ``:attr:``, ``:exc:``,
  ``:data:``, ``:obj:``; ``~`` shows the last component only) into *optional* autorefs: a link
  when the target is documented on the site, plain code otherwise (never a broken link);
* a paragraph ending in ``::`` (a reST literal block follows) into one ending in ``:``;
* the section title ``Example:`` into ``Examples:``, the title griffe's Google parser reads as
  doctests (``Example:`` would be an admonition, its ``>>>`` lines rendered as prose).

The source docstrings are left as they are (doctests and ``help()`` see the original text).
See docs/contributing.md for why the conversion happens here.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

__all__ = ["RstToMarkdown", "convert"]

_INLINE_MATH = re.compile(r":math:`([^`]+)`")
_ROLE = re.compile(r":(?:py:)?(class|func|meth|mod|attr|exc|data|obj):`(!?)(~?)([^`]+)`")
_MATH_DIRECTIVE = re.compile(r"^(?P<indent>\s*)\.\. math::\s*(?P<rest>.*)$")


def _indent_of(line: str) -> int:
    return len(line) - len(line.lstrip())


def _math_blocks(lines: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(lines):
        m = _MATH_DIRECTIVE.match(lines[i])
        if not m:
            out.append(lines[i])
            i += 1
            continue
        indent = m["indent"]
        body = [m["rest"].strip()] if m["rest"].strip() else []
        i += 1
        # the directive's body: following lines indented deeper (blank lines inside are kept)
        while i < len(lines) and (not lines[i].strip() or _indent_of(lines[i]) > len(indent)):
            if not lines[i].strip():
                # a blank line ends the block unless more indented lines follow
                j = i
                while j < len(lines) and not lines[j].strip():
                    j += 1
                if j >= len(lines) or _indent_of(lines[j]) <= len(indent):
                    break
            body.append(lines[i].strip())
            i += 1
        if out and out[-1].strip():
            out.append("")
        out.append(f"{indent}$$")
        out.extend(f"{indent}{b}" for b in body if b)
        out.append(f"{indent}$$")
        if i < len(lines) and lines[i].strip():
            out.append("")
    return out


def _identifier(target: str, obj: Any) -> str:
    """A full dotted path for a role's target, resolving names relative to ``obj``."""
    if target.startswith(("flowtorch.", "torch.")) or target == "flowtorch":
        return target
    module = obj.module.path if hasattr(obj, "module") else obj.path
    first = target.split(".")[0]
    # a member of the documented class (``:meth:`rsample``` in ``Flow``'s docstrings)
    cls = obj if getattr(obj, "kind", None) is griffe.Kind.CLASS else None
    if cls is None and getattr(obj, "parent", None) is not None and obj.parent.kind is griffe.Kind.CLASS:
        cls = obj.parent
    if cls is not None and first in cls.all_members:
        return f"{cls.path}.{target}"
    return f"{module}.{target}"


def convert(text: str, obj: Any = None) -> str:
    """Rewrites the reST constructs of one docstring as Markdown (see the module docstring)."""
    lines = _math_blocks(text.splitlines())
    text = "\n".join(lines)
    text = _INLINE_MATH.sub(lambda m: "\\(" + m[1] + "\\)", text)

    def role(m: re.Match[str]) -> str:
        target = m[4].strip()
        if target.endswith("()"):
            target = target[:-2]
        title = target.rsplit(".", 1)[-1] if m[3] else target
        if m[2] or obj is None:  # ``!`` suppresses the link
            return f"`{title}`"
        ident = _identifier(target, obj)
        return f'<autoref identifier="{ident}" optional><code>{title}</code></autoref>'

    text = _ROLE.sub(role, text)
    # reST literal blocks: "text::" -> "text:" (the indented block below renders as code)
    text = re.sub(r"(?m)(\S)::$", r"\1:", text)
    # griffe's Google parser knows "Examples:" as the section of doctests; "Example:" would be an
    # admonition whose ">>>" lines render as prose
    text = re.sub(r"(?m)^(\s*)Example:\s*$", r"\1Examples:", text)
    return text


class RstToMarkdown(griffe.Extension):
    """Applies :func:`convert` to every docstring of a package once it is loaded.

    It runs on the whole package (not object by object as they are visited) so that a role
    naming a method of the enclosing class (``:meth:`rsample```) can be resolved against the
    class's members.
    """

    def on_package(self, *, pkg: Any, **kwargs: Any) -> None:
        self._walk(pkg, set())

    def _walk(self, obj: Any, seen: set[str]) -> None:
        if obj.is_alias or obj.path in seen:
            return
        seen.add(obj.path)
        docstring = obj.docstring
        if docstring is not None and docstring.value:
            docstring.value = convert(docstring.value, obj)
        for member in list(obj.members.values()):
            self._walk(member, seen)
