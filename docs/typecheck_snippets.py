"""Runs ``mypy --strict`` on the code users copy: the README's and the guides' ``python`` blocks,
the scripts in ``examples/`` and the guides' worked examples in ``docs/examples/``.

The blocks of one page are checked together, in order, as one module: the documentation test
(``tests/test_docs.py``) runs them that way, in one namespace. A block it does not run (marked
``<!-- docs-test: skip -->``: a fragment, or another library's code) is not checked either. A
block that runs but must not be checked is marked, on one of the comment lines right above its
fence, with ``<!-- typecheck: skip REASON -->``; the reason is required and printed with
``--list``.

Errors are reported at the page's own line (``docs/concepts/lazy.md:21: error: ...``).

Usage::

    python docs/typecheck_snippets.py           # check; exit status 1 on any error
    python docs/typecheck_snippets.py --list    # what is checked, and what is skipped and why
    python docs/typecheck_snippets.py --keep DIR  # also leave the extracted modules in DIR

``flowtorch`` is read from this checkout's ``src/`` (mypy's ``mypy_path``), whatever is
installed. Third-party packages the examples use without type information (scikit-learn, tqdm,
zuko) are imported as ``Any``, as a user's configuration would do for them.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Block", "Page", "main", "pages"]

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

#: the pages whose blocks are checked: the README and every documentation page with python code
PAGE_GLOBS = ("README.md", "docs/*.md", "docs/how-to/*.md", "docs/concepts/*.md", "docs/migration/*.md")
#: scripts checked as they are
SCRIPT_GLOBS = ("examples/*.py", "docs/examples/*.py")
#: packages without type information that the checked code imports (sbi: or not installed, outside nox -s sbi)
UNTYPED = ("sbi.*", "sklearn.*", "tqdm.*", "zuko.*")
#: packages whose untyped functions the checked code may call: torch has many (``Tensor.backward``)
UNTYPED_CALLS = ("torch", "pyro", "sbi")

# the same fence and snippet syntax as tests/test_docs.py reads
_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)(?P<fence>`{3,})(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)(?P=fence)[ \t]*$",
    re.M | re.S,
)
_SNIPPET = re.compile(r'^[ \t]*--8<--\s+"([^"]+)"\s*$')
_COMMENT = re.compile(r"^\s*<!--\s*(?P<tool>[\w-]+):\s*(?P<text>.*?)\s*-->\s*$")


@dataclass
class Block:
    """One ``python`` block: where it is, its lines (with their source lines), its markers."""

    page: Path
    index: int
    lines: list[tuple[str, Path, int]]  # (code, source file, 1-based line in it)
    markers: dict[str, str] = field(default_factory=dict)  # tool -> text, from the comments above

    @property
    def skip_reason(self) -> str | None:
        """Why the block is not checked, or ``None`` if it is."""
        text = self.markers.get("typecheck")
        if text is None:
            return "docs-test: skip (shown, not run)" if self.markers.get("docs-test") == "skip" else None
        if not text.startswith("skip"):
            raise ValueError(f"{self.where}: unknown marker <!-- typecheck: {text} -->")
        reason = text[len("skip") :].strip(" -:")
        if not reason:
            raise ValueError(f"{self.where}: <!-- typecheck: skip --> needs a reason")
        return f"typecheck: skip -- {reason}"

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}[block {self.index}]"


@dataclass
class Page:
    """A page's blocks, and the module that holds the checked ones."""

    path: Path
    blocks: list[Block]

    def module(self) -> tuple[str, list[tuple[Path, int]]]:
        """The checked blocks as one module, and for each of its lines the source line."""
        code: list[str] = []
        where: list[tuple[Path, int]] = []
        for block in self.blocks:
            if block.skip_reason is not None:
                continue
            for text, path, line in block.lines:
                code.append(text)
                where.append((path, line))
        return "\n".join(code) + "\n", where

    @property
    def module_name(self) -> str:
        rel = self.path.relative_to(ROOT).with_suffix("")
        return "page_" + re.sub(r"\W", "_", str(rel))


def _blocks(path: Path) -> list[Block]:
    text = path.read_text()
    blocks: list[Block] = []
    for m in _FENCE.finditer(text):
        if m["lang"] != "python":
            continue
        markers: dict[str, str] = {}
        for before in reversed(text[: m.start()].rstrip("\n").splitlines()):
            c = _COMMENT.match(before)
            if c is None:
                break
            markers[c["tool"]] = c["text"]
        first = text.count("\n", 0, m.start("body")) + 1
        body = textwrap.dedent(m["body"]).splitlines()
        lines: list[tuple[str, Path, int]] = []
        for i, line in enumerate(body):
            s = _SNIPPET.match(line)
            if s is None:
                lines.append((line, path, first + i))
                continue
            included = DOCS / s[1]
            lines += [(t, included, j + 1) for j, t in enumerate(included.read_text().splitlines())]
        blocks.append(Block(path, len(blocks), lines, markers))
    return blocks


def pages() -> list[Page]:
    """Every page with a ``python`` block, in the order of :data:`PAGE_GLOBS`."""
    found: list[Page] = []
    for pattern in PAGE_GLOBS:
        for path in sorted(ROOT.glob(pattern)):
            blocks = _blocks(path)
            if blocks:
                found.append(Page(path, blocks))
    return found


def _scripts() -> list[Path]:
    return [p for pattern in SCRIPT_GLOBS for p in sorted(ROOT.glob(pattern))]


def _config(cache: Path) -> str:
    untyped = ", ".join(f'"{m}"' for m in UNTYPED)
    return textwrap.dedent(
        f"""\
        [mypy]
        python_version = 3.11
        strict = True
        mypy_path = {ROOT / "src"}
        cache_dir = {cache}
        pretty = False
        show_error_codes = True
        # torch's own untyped functions (Tensor.backward, torch.split, ...) are callable, as the
        # package's configuration has it; calls to untyped code anywhere else are errors
        untyped_calls_exclude = {",".join(UNTYPED_CALLS)}

        [mypy-{untyped.replace('"', "").replace(" ", "")}]
        ignore_missing_imports = True

        # flowtorch as a user's mypy sees an installed package: analysed, its own errors not
        # reported (nox -s typecheck checks src/ with the project's configuration)
        [mypy-flowtorch.*]
        follow_imports = silent
        """
    )


def _relocate(output: str, modules: dict[str, list[tuple[Path, int]]]) -> str:
    """Rewrites ``page_x.py:LINE:`` in mypy's output to the page's own file and line."""

    def sub(m: re.Match[str]) -> str:
        where = modules.get(Path(m["file"]).name)
        if where is None or not 0 < int(m["line"]) <= len(where):
            return m[0]
        path, line = where[int(m["line"]) - 1]
        return f"{path.relative_to(ROOT)}:{line}:"

    return re.sub(r"^(?P<file>[^\s:]+\.py):(?P<line>\d+):", sub, output, flags=re.M)


def main(argv: list[str] | None = None) -> int:
    """Checks everything; returns mypy's exit status (0: no errors)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--list", action="store_true", help="list what is checked and what is skipped")
    parser.add_argument("--keep", type=Path, help="write the extracted modules to this directory")
    args = parser.parse_args(argv)

    found = pages()
    if args.list:
        for page in found:
            for block in page.blocks:
                reason = block.skip_reason
                print(f"{'skip' if reason else 'check'}  {block.where}" + (f"  ({reason})" if reason else ""))
        for script in _scripts():
            print(f"check  {script.relative_to(ROOT)}")
        return 0

    work = Path(tempfile.mkdtemp(prefix="flowtorch-typecheck-")) if args.keep is None else args.keep
    work.mkdir(parents=True, exist_ok=True)
    try:
        modules: dict[str, list[tuple[Path, int]]] = {}
        files: list[str] = []
        for page in found:
            code, where = page.module()
            if not where:
                continue
            name = f"{page.module_name}.py"
            (work / name).write_text(code)
            modules[name] = where
            files.append(str(work / name))
        config = work / "mypy.ini"
        config.write_text(_config(ROOT / ".mypy_cache" / "snippets"))
        scripts = [str(p) for p in _scripts()]
        result = subprocess.run(
            [sys.executable, "-m", "mypy", "--config-file", str(config), *files, *scripts],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        # a worked example included in a guide is reported twice, from the guide and as a script
        lines = dict.fromkeys(_relocate(result.stdout, modules).splitlines(keepends=True))
        sys.stdout.write("".join(lines))
        sys.stderr.write(result.stderr)
        n_blocks = sum(1 for p in found for b in p.blocks if b.skip_reason is None)
        print(f"checked {n_blocks} blocks on {len(modules)} pages and {len(scripts)} scripts")
        return result.returncode
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
