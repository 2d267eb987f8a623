"""The documentation site stays complete and its code runs.

* every bijector that ``flowtorch.bijectors`` defines or exports is in the table (docs/bijectors.md);
* every page in mkdocs.yml's navigation exists (or is a stub that docs/hooks.py supplies), and
  every page in docs/ is in the navigation;
* the how-to guides' worked examples (docs/examples/*.py) run and are correct bijectors and
  conditioners;
* every ``python`` code block of every page runs, page by page in one namespace (a block
  preceded by ``<!-- docs-test: skip -->`` is shown only; ``<!-- docs-test: requires pyro -->``
  skips the page's remaining blocks when ``pyro`` is not installed, and
  ``<!-- docs-test: requires torch 2.12 -->`` when the installed torch is older).
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import inspect
import re
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

import flowtorch
import flowtorch.bijectors as bij
import flowtorch.distributions as dist
import flowtorch.parameters as params
from flowtorch.core.bijector import Bijector
from tests._torch import RELEASE, release
from tests.conftest import bijector_classes

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _load(path: Path) -> ModuleType:
    name = f"_docs_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------- the bijector table
def test_bijector_table_lists_every_bijector() -> None:
    table = (DOCS / "bijectors.md").read_text()
    exported = {
        name
        for name in bij.__all__
        if isinstance(getattr(bij, name), type)
        and issubclass(getattr(bij, name), Bijector)
        and getattr(bij, name) is not Bijector
    }
    defined = {cls.__name__ for cls in bijector_classes()}
    missing = sorted(n for n in exported | defined if f"`{n}`" not in table)
    assert not missing, f"docs/bijectors.md lacks {missing}: run python docs/gen_bijector_table.py"


def test_every_library_bijector_declares_its_costs_on_its_class() -> None:
    """The table's rows are class attributes (``costs``), each class's own; no table elsewhere."""
    undeclared = sorted(cls.__name__ for cls in bijector_classes() if vars(cls).get("costs") is None)
    assert not undeclared, f"{undeclared}: give each class a costs = Costs(...) attribute (see Costs)"


def test_a_bijector_without_costs_still_gets_a_row_from_its_code() -> None:
    gen = _load(DOCS / "gen_bijector_table.py")

    class Cube(Bijector):
        """y = x^3 + x. Reference: nobody, 2026."""

        def _forward_and_ladj(self, x: torch.Tensor, params: object) -> tuple[torch.Tensor, torch.Tensor]:
            return x**3 + x, torch.log(3 * x**2 + 1)

    row = gen._row(Cube)
    assert row[3] == "cache-only" and row[-1] == "nobody, 2026." and "see the API" in row


def test_generated_bijector_pages_are_up_to_date(capsys: pytest.CaptureFixture[str]) -> None:
    """``python docs/gen_bijector_table.py --check``, as CI would run it: the checked-in pages
    are what the generator makes of the code."""
    gen = _load(DOCS / "gen_bijector_table.py")
    status = gen.main(["--check"])
    assert status == 0, capsys.readouterr().err


def test_generator_check_names_a_stale_page_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    gen = _load(DOCS / "gen_bijector_table.py")
    (tmp_path / "api").mkdir()
    stale = tmp_path / "bijectors.md"
    stale.write_text("# an old table\n")
    (tmp_path / "api" / "bijectors.md").write_text((DOCS / "api" / "bijectors.md").read_text())
    monkeypatch.setattr(gen, "DOCS", tmp_path)
    assert gen.main(["--check"]) == 1
    err = capsys.readouterr().err
    shown = stale.relative_to(tmp_path.parent)  # as docs/bijectors.md is shown from the root
    assert f"{shown} is out of date with the code: run python docs/gen_bijector_table.py" in err
    assert "api" not in err  # the page that is up to date is not named
    assert stale.read_text() == "# an old table\n"  # --check writes nothing
    assert gen.main([]) == 0  # without it the pages are rewritten ...
    assert gen.main(["--check"]) == 0  # ... and then pass the check
    assert stale.read_text() == (DOCS / "bijectors.md").read_text()


# ----------------------------------------------------------------------------- navigation
def _nav_pages() -> list[str]:
    text = (ROOT / "mkdocs.yml").read_text()
    nav = text[text.index("\nnav:") :]
    return re.findall(r":\s*(\S+\.md)\s*$", nav, re.M)


def _stub_pages() -> set[str]:
    return set(re.findall(r'^\s*"([\w/-]+\.md)":\s*"""', (DOCS / "hooks.py").read_text(), re.M))


def test_every_nav_page_exists() -> None:
    pages = _nav_pages()
    assert len(pages) > 20
    stubs = _stub_pages()
    assert stubs == {"benchmarks.md", "ecosystem.md"}
    missing = [p for p in pages if not (DOCS / p).is_file() and p not in stubs]
    assert not missing, f"mkdocs.yml's nav names pages that do not exist: {missing}"


def test_every_page_is_in_the_nav() -> None:
    pages = set(_nav_pages())
    orphans = sorted(
        str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md") if str(p.relative_to(DOCS)) not in pages
    )
    assert not orphans, f"pages missing from mkdocs.yml's nav: {orphans}"


# ----------------------------------------------------------------------------- worked examples
def _jacobian_ladj(b: Bijector, x: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
    n = x.numel()
    jac = torch.autograd.functional.jacobian(
        lambda f: b.forward(f.reshape(x.shape), c).reshape(n), x.reshape(n)
    )
    return torch.linalg.slogdet(jac)[1]


def test_how_to_new_bijector_example() -> None:
    ex = _load(DOCS / "examples" / "new_bijector.py")
    torch.manual_seed(0)
    # a plan until it has a shape; conditional through its default conditioner
    assert isinstance(ex.SinhArcsinh(), flowtorch.Plan)
    b = ex.SinhArcsinh()(shape=torch.Size([3]), context_shape=torch.Size([2])).double()
    with torch.no_grad():  # move away from the identity so the test means something
        for p in b.parameters():
            p.normal_()
    x = torch.randn(4, 5, 3, dtype=torch.float64)
    c = torch.randn(5, 2, dtype=torch.float64)  # broadcasts against the sample dim
    y, ladj = b.forward_and_ladj(x, c)
    assert y.shape == x.shape and ladj.shape == (4, 5)
    torch.testing.assert_close(b.inverse(y, c), x)
    _, ladj2 = b.inverse_and_ladj(y, c)
    torch.testing.assert_close(ladj2, ladj)
    torch.testing.assert_close(b.log_abs_det_jacobian(x, y, c), ladj)
    for i in range(3):  # log|det J| against the autograd Jacobian, one event at a time
        torch.testing.assert_close(ladj[0, i], _jacobian_ladj(b, x[0, i], c[i]))
    # gradients reach every parameter
    ladj.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in b.parameters())
    # the cache: the inverse of a forward output is the very input
    with flowtorch.BijectiveMode():
        y = b.forward(x, c)
        assert b.inverse(y, c) is x
    # bad hyperparameters are refused with a clear message
    with pytest.raises(ValueError, match="min_tailweight"):
        ex.SinhArcsinh(min_tailweight=0.0)(shape=torch.Size([3]))
    before, after = ex.demo(steps=40)
    assert after < before


def test_how_to_new_conditioner_example() -> None:
    ex = _load(DOCS / "examples" / "new_conditioner.py")
    torch.manual_seed(0)
    cond = ex.LinearAutoregressive(init_scale=1.0)(
        param_shapes=[torch.Size([4]), torch.Size([4, 3])], input_shape=torch.Size([4]), context_shape=None
    )
    x = torch.randn(4, requires_grad=True)
    loc, spline = cond(x)
    assert loc.shape == (4,) and spline.shape == (4, 3)
    # autoregressive: outputs of dim i depend only on inputs j < i
    for i in range(4):
        (grad,) = torch.autograd.grad(loc[i] + spline[i].sum(), x, retain_graph=True)
        assert torch.all(grad[i:] == 0)
    # drives the autoregressive bijectors, with a context that broadcasts
    for plan in (
        bij.AffineAutoregressive(ex.LinearAutoregressive()),
        bij.SplineAutoregressive(ex.LinearAutoregressive()),
    ):
        b = plan(shape=torch.Size([3]), context_shape=torch.Size([2]))
        x = torch.randn(6, 5, 3)
        c = torch.randn(5, 2)
        torch.testing.assert_close(b.inverse(b.forward(x, c), c), x, atol=1e-4, rtol=1e-4)
    before, after = ex.demo(steps=30)
    assert after < before


# ----------------------------------------------------------------------------- code blocks of the pages
_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)(?P<fence>`{3,})(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)(?P=fence)[ \t]*$",
    re.M | re.S,
)
_SNIPPET = re.compile(r'^[ \t]*--8<--\s+"([^"]+)"\s*$', re.M)


def _pages_with_code() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if "```python" in p.read_text())


def _blocks(page: Path) -> list[tuple[str, str]]:
    """``(marker, code)`` for each python block; ``marker`` is the docs-test comment before it."""
    text = page.read_text()
    out = []
    for m in _FENCE.finditer(text):
        if m["lang"] != "python":
            continue
        before = text[: m.start()].rstrip().splitlines()
        marker = ""
        if before and (mm := re.match(r"\s*<!--\s*docs-test:\s*(.+?)\s*-->", before[-1])):
            marker = mm[1]
        code = textwrap.dedent(m["body"])
        code = _SNIPPET.sub(lambda s: (DOCS / s[1]).read_text(), code)
        out.append((marker, code))
    return out


@pytest.mark.parametrize("page", _pages_with_code(), ids=lambda p: str(p.relative_to(DOCS)))
def test_code_blocks_of_the_page_run(page: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # pages that save files write them here
    namespace: dict[str, object] = {"__name__": "__docs__"}
    state = torch.random.get_rng_state()
    validate = torch.distributions.Distribution._validate_args
    if "torch.compile" in page.read_text():
        # As in a fresh process, where the first torch.compile turns torch's default argument
        # validation off (Dynamo does this once per process; a test may have turned it back on).
        torch.distributions.Distribution.set_default_validate_args(False)
    try:
        for i, (marker, code) in enumerate(_blocks(page)):
            if marker == "skip":
                continue
            if marker.startswith("requires torch "):  # a torch release, as in tests/_torch.py
                needed = marker.split()[2]
                if release(needed) > RELEASE:
                    pytest.skip(f"{page.relative_to(DOCS)}[block {i}] needs torch >= {needed}")
            elif marker.startswith("requires "):
                for module in marker.split()[1:]:
                    pytest.importorskip(module)
            exec(compile(code, f"{page.relative_to(ROOT)}[block {i}]", "exec"), namespace)
    finally:
        torch.random.set_rng_state(state)
        torch.distributions.Distribution.set_default_validate_args(validate)


def test_the_docs_helpers_import() -> None:
    # the docs' helper modules are plain Python files; keep them importable in the test env
    assert dist.Flow and params.Tensor
    gen = _load(DOCS / "gen_bijector_table.py")
    assert "Affine" in gen.render_table(bijector_classes())
    importlib.import_module("flowtorch.bijectors")


# ----------------------------------------------------------------------------- MathJax
def test_the_site_loads_no_script_from_a_cdn() -> None:
    """MathJax comes from a package in the ``docs`` extra, copied into the site by the docs hook;
    ``nox -s docs`` also checks the built site for it."""
    config = (ROOT / "mkdocs.yml").read_text()
    block = config.split("extra_javascript:")[1].split("\n\n")[0]
    scripts = re.findall(r"^\s*-\s*(\S+)", block, re.MULTILINE)
    assert "javascripts/mathjax/tex-mml-chtml.js" in scripts
    assert [s for s in scripts if "://" in s] == []
    pyproject = (ROOT / "pyproject.toml").read_text()
    docs_extra = re.search(r"^docs = \[(.*)\]$", pyproject, re.MULTILINE)
    assert docs_extra is not None and '"django-static-mathjax==' in docs_extra.group(1)


def test_the_docs_hook_copies_mathjax_or_names_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("mkdocs", reason="the docs hook runs in nox -s docs, which installs mkdocs")
    hooks = _load(DOCS / "hooks.py")
    package = tmp_path / "pkg" / "mathjax"
    (package / "static" / "mathjax" / "es5" / "output").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "static" / "mathjax" / "es5" / "tex-mml-chtml.js").write_text("// MathJax")
    monkeypatch.syspath_prepend(str(tmp_path / "pkg"))
    importlib.invalidate_caches()
    sys.modules.pop("mathjax", None)
    hooks.on_post_build({"site_dir": str(tmp_path / "site")})
    assert (tmp_path / "site" / "javascripts" / "mathjax" / "tex-mml-chtml.js").read_text() == "// MathJax"
    monkeypatch.setattr(hooks, "MATHJAX_PACKAGE", ("django-static-mathjax", "no_such_mathjax_module"))
    with pytest.raises(Exception, match=r"MathJax is not installed: .*'django-static-mathjax'"):
        hooks.mathjax_files()


# ----------------------------------------------------------------------------- the README's layout
#: modules kept only so that old import paths work: each re-exports names from flowtorch.core
_SHIMS = {"lazy", "recipes_glow"}
_BIJECTOR_SHIMS = {"base", "mode", "compose", "combine"}


def test_the_readmes_layout_matches_the_package() -> None:
    """ "What is inside" names every package and module of ``src/flowtorch`` and every family
    module of ``flowtorch.bijectors``, and nothing that is not there."""
    section = (ROOT / "README.md").read_text().split("## What is inside")[1].split("\n## ")[0]
    package = ROOT / "src" / "flowtorch"
    present = {
        p.stem
        for p in package.iterdir()
        if not p.name.startswith("_") and (p.suffix == ".py" or (p / "__init__.py").is_file())
    } - _SHIMS
    named = set(re.findall(r"^\| `flowtorch\.(\w+)`", section, re.MULTILINE))
    assert named == present, (
        f"README lists {sorted(named - present)} not in the package, lacks {sorted(present - named)}"
    )
    row = next(line for line in section.splitlines() if line.startswith("| `flowtorch.bijectors`"))
    families = {p.stem for p in (package / "bijectors").glob("*.py") if not p.name.startswith("_")}
    missing = sorted(m for m in families - _BIJECTOR_SHIMS if f"`{m}`" not in row)
    assert not missing, f"the bijectors row of the README lacks the family modules {missing}"
    # the shims: each is named in the section and holds nothing but a docstring and re-exports
    shims = [package / f"{m}.py" for m in _SHIMS] + [
        package / "bijectors" / f"{m}.py" for m in _BIJECTOR_SHIMS
    ]
    for path in shims:
        assert f"`{path.stem}`" in section or f"`.{path.stem}`" in section or f".{path.stem}`" in section, (
            path
        )
        tree = ast.parse(path.read_text())
        body = tree.body[1:] if ast.get_docstring(tree) else tree.body
        assert body and all(isinstance(node, ast.ImportFrom) for node in body), (
            f"{path} is more than re-exports"
        )


def test_typecheck_exceptions_are_few_and_say_why() -> None:
    """docs/typecheck_snippets.py checks every block that runs, except the few marked
    ``<!-- typecheck: skip -- reason -->``; each gives its reason (mypy itself runs in
    ``nox -s typecheck`` and, on a snippet, in tests/test_typing.py)."""
    snippets = _load(DOCS / "typecheck_snippets.py")
    blocks = [b for page in snippets.pages() for b in page.blocks]
    assert {p.relative_to(ROOT).as_posix() for p in {b.page for b in blocks}} >= {
        "README.md",
        "docs/concepts/lazy.md",
        "docs/how-to/new-bijector.md",
        "docs/migration/flowtorch-08.md",
    }
    exceptions = [b for b in blocks if "typecheck" in b.markers]
    assert all(b.skip_reason.startswith("typecheck: skip -- ") for b in exceptions)
    assert len(exceptions) <= 6, [b.where for b in exceptions]
    checked = [b for b in blocks if b.skip_reason is None]
    assert len(checked) > 40
    # a marker without a reason is refused
    bare = snippets.Block(blocks[0].page, 0, [], {"typecheck": "skip"})
    with pytest.raises(ValueError, match="needs a reason"):
        _ = bare.skip_reason


# ----------------------------------------------------------------------------- nox sessions named
def _nox_sessions() -> set[str]:
    """The session names ``nox -l`` lists, read from ``noxfile.py`` without importing nox: each
    ``@nox.session`` function, and with ``@nox.parametrize`` each ``name(id)``, where an id is
    nox's own (``ids=``) or its default, ``arg='value'``."""
    tree = ast.parse((ROOT / "noxfile.py").read_text())
    constants: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            with contextlib.suppress(ValueError):
                constants[node.targets[0].id] = ast.literal_eval(node.value)

    def value(node: ast.expr) -> Any:
        return constants[node.id] if isinstance(node, ast.Name) else ast.literal_eval(node)

    names: set[str] = set()
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef):
            continue
        decorators = [ast.unparse(d.func if isinstance(d, ast.Call) else d) for d in node.decorator_list]
        if "nox.session" not in decorators:
            continue
        names.add(node.name)
        for d in node.decorator_list:
            if isinstance(d, ast.Call) and ast.unparse(d.func) == "nox.parametrize":
                arg, values = value(d.args[0]), value(d.args[1])
                ids = next((value(k.value) for k in d.keywords if k.arg == "ids"), None)
                names |= {f"{node.name}({i})" for i in (ids or [f"{arg}={v!r}" for v in values])}
    return names


def test_every_nox_command_in_the_docs_names_a_session() -> None:
    """``nox -s NAME`` in the README, the docs, the benchmarks, the noxfile and CI names a session
    that nox has (a parametrized session is ``name(id)``)."""
    sessions = _nox_sessions()
    assert {"tests(2.13.0)", "lint", "sbibm(reference)", "sbibm(flowtorch)"} <= sessions
    files = [ROOT / "README.md", ROOT / "noxfile.py", ROOT / ".ci" / "run", *(ROOT / "docs").rglob("*.md")]
    files += sorted((ROOT / "benchmarks").glob("*.py"))
    named = []
    for path in files:
        for match in re.finditer(r"""nox (?:-R )?-s ("[^"]+"|'[^']+'|[\w.()-]+)""", path.read_text()):
            named.append((path.relative_to(ROOT).as_posix(), match.group(1).strip("\"'")))
    assert len(named) > 20
    unknown = [(where, name) for where, name in named if name not in sessions and name != "$@"]
    assert not unknown, f"nox has no such session: {unknown}"


def test_every_args_entry_names_one_parameter() -> None:
    """The API pages' renderer (griffe, in ``nox -s docs``) refuses an Args entry that names no
    parameter, such as ``a, b: ...``; the docstring audit finds them in the suite already."""
    pytest.importorskip("mypy", reason="the audit imports every module, flowtorch.mypy_plugin included")
    audit = _load(DOCS / "audit_docstrings.py")

    def two_in_one(solver: str, tol: float) -> None:
        """Example.

        Args:
            solver, tol: as elsewhere.
        """

    def fine(solver: str, *, tol: float = 0.0) -> None:
        """Example.

        Args:
            solver: a name.
            tol (float): a tolerance.
        """

    assert audit._unknown_args(two_in_one, inspect.getdoc(two_in_one)) == ["solver, tol"]
    assert audit._unknown_args(fine, inspect.getdoc(fine)) == []
    reports = audit.audit()
    assert len(reports) > 100
    assert [(r.name, r.unknown_args) for r in reports if r.unknown_args] == []
