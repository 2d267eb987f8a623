"""Sessions: tests (per torch version), coverage, lint, typecheck, examples, docs, benchmarks, sbi
(the adapter's tests with the ``sbi`` package) and sbibm (NPE on sbibm's tasks, not in CI)."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "examples"]
nox.options.default_venv_backend = "venv"

# The torch versions the test matrix covers: the oldest supported (``torch>=2.1`` in
# pyproject.toml), one in the middle, the default (a CPU wheel on local disk) and the newest.
# CI runs the oldest, the default and the newest; the others are downloaded when asked for.
TORCH_VERSIONS = ["2.13.0", "2.1.2", "2.5.1", "2.14.1"]
DEFAULT_TORCH = TORCH_VERSIONS[0]
# The suite runs in worker processes, one per core up to four (pytest-xdist); every test is
# independent of the others and of the process it runs in. ``nox -s tests -- -n 0`` runs it in one.
PARALLEL = ("-n", "auto", "--maxprocesses=4")


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("+")[0].split(".")[:2])


def _install(session: nox.Session, torch_version: str, *extras: str, pins: tuple[str, ...] = ()) -> None:
    """Installs torch ``torch_version``, the package with ``extras`` and the ``pins`` in one resolve,
    then checks that torch is still that version."""
    target = f".[{','.join(extras)}]" if extras else "."
    pins = (f"torch=={torch_version}", *pins)
    if _release(torch_version) < (2, 3):
        pins += ("numpy<2",)  # torch before 2.3 was built against numpy 1 and cannot use numpy 2
    # one resolve, so that no dependency can move torch off the pinned version
    session.install(*pins, "-e", target)
    session.run(
        "python",
        "-c",
        "import sys, torch; v = torch.__version__.split('+')[0]; "
        f"sys.exit(None if v == {torch_version!r} else f'torch {{v}} installed, not {torch_version}')",
        silent=True,
    )


@nox.session(python="3.11")
@nox.parametrize("torch", TORCH_VERSIONS, ids=TORCH_VERSIONS)
def tests(session: nox.Session, torch: str) -> None:
    """The test suite (doctests included). Default: ``nox -s "tests(2.13.0)"``."""
    _install(session, torch, "test", "examples")
    session.run("pytest", "-q", *PARALLEL, *session.posargs)


@nox.session(python="3.11")
def coverage(session: nox.Session) -> None:
    """The test suite under coverage, the slow tests included (2,000-step training runs): line and
    branch coverage of ``src/``, at least 95%."""
    _install(session, DEFAULT_TORCH, "test", "examples")
    session.run(
        "pytest",
        "-q",
        *PARALLEL,
        "--cov=flowtorch",
        "--cov-branch",
        "--cov-report=term-missing:skip-covered",
        "--cov-fail-under=95",
        *session.posargs,
        env={"FLOWTORCH_SLOW": "1"},
    )


@nox.session(python="3.11")
def fuzz(session: nox.Session) -> None:
    """The differential fuzzer of ``BijectiveMode`` at length (nightly use): ``N`` random programs per
    bijector case, run inside the mode and without it. ``nox -s fuzz`` runs 40; ``nox -s fuzz -- 200``."""
    _install(session, DEFAULT_TORCH, "test")
    programs = session.posargs[0] if session.posargs else "40"
    session.run(
        "pytest",
        "-q",
        *PARALLEL,
        "tests/reliability/test_mode_fuzz.py",
        "-k",
        "same_program",
        env={"FLOWTORCH_FUZZ": programs},
    )


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff, and a static check of the package's claim of Python >= 3.9 (``requires-python``),
    which the tests, on Python 3.11, cannot make: ruff (``target-version = "py39"``) rejects newer
    syntax, vermin newer standard-library modules, functions and arguments."""
    session.install("ruff>=0.12", "vermin>=1.6")  # (ruff reports syntax newer than its target from 0.12 on)
    session.run("ruff", "check", "src", "tests", "examples", "benchmarks", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "examples", "benchmarks", "noxfile.py")
    session.run("vermin", "--target=3.9-", "--violations", "--no-tips", "src")


@nox.session(python="3.11")
def typecheck(session: nox.Session) -> None:
    """mypy, strict, on the package and on the code users copy: the python blocks of the README
    and of the documentation pages, the scripts in examples/ and docs/examples/ (see
    docs/typecheck_snippets.py, which extracts the blocks)."""
    _install(session, DEFAULT_TORCH, "examples")  # the examples' imports, for their types
    session.install("mypy>=1.8")
    session.run("mypy", "src")
    session.run("python", "docs/typecheck_snippets.py")


@nox.session(python="3.11")
def examples(session: nox.Session) -> None:
    """Runs every example in its short smoke mode."""
    _install(session, DEFAULT_TORCH, "examples")
    scripts = (
        "two_moons.py",
        "neals_funnel_vi.py",
        "bivariate_normal.py",
        "energy_vi.py",
        "digits.py",
        "conditional_density.py",
        "pyro_autoguide.py",
    )
    for script in scripts:
        session.run("python", f"examples/{script}", "--smoke", "--no-progress")
    session.run("python", "examples/ddp_train.py", "--smoke")


# The sbi release the adapter (flowtorch.interop.sbi) is tested against.
SBI_VERSION = "0.27.0"


@nox.session(python="3.11")
def sbi(session: nox.Session) -> None:
    """The adapter to the ``sbi`` package: its tests, its doctests and the NPE example (smoke mode),
    with ``sbi`` installed. sbi is pinned with torch in one resolve, so that it cannot pull another
    torch (an unpinned upgrade would download a CUDA build of several GB)."""
    _install(session, DEFAULT_TORCH, "test", "examples", pins=(f"sbi=={SBI_VERSION}",))
    session.run(
        "pytest", "-q", "tests/interop/test_interop_sbi.py", "src/flowtorch/interop/sbi.py", *session.posargs
    )
    session.run("python", "examples/sbi_npe.py", "--smoke", "--no-progress")


# sbibm 1.1.0 (the benchmark of Lueckmann et al., 2021) pins sbi>=0.20,<0.22; 0.21.0 is the newest
# release it allows and runs on torch 2.13.0. It is installed without its dependencies, which bring
# runtimes for other tasks and algorithms (Julia through diffeqtorch, elfi, pyabc, pyabcranger);
# what its tasks and C2ST import is listed here.
SBIBM = ("sbibm==1.1.0",)
SBIBM_NEEDS = ("pyro-ppl", "pandas", "scikit-learn", "autograd", "future", "joblib", "tqdm", "matplotlib")


@nox.session(python="3.11")
@nox.parametrize("side", ["reference", "flowtorch"], ids=["reference", "flowtorch"])
def sbibm(session: nox.Session, side: str) -> None:
    """NPE on sbibm's tasks (``benchmarks/sbibm_npe.py``, not part of CI): ``reference`` runs sbibm's
    own NPE runner with sbi 0.21.0 and saves its simulations, ``flowtorch`` then trains flowtorch's
    NSF, MAF and coupling NSF through sbi 0.27.0 on the same simulations. ``nox -s sbibm`` runs
    both, in that order; options after ``--`` go to the script's ``run`` (e.g. ``-- --budgets 1000
    10000``)."""
    if side == "reference":
        session.install(f"torch=={DEFAULT_TORCH}", "sbi==0.21.0", *SBIBM_NEEDS)
        methods = ["sbibm-npe"]
    else:
        _install(session, DEFAULT_TORCH, pins=(f"sbi=={SBI_VERSION}", *SBIBM_NEEDS))
        methods = ["flowtorch-nsf", "flowtorch-maf", "flowtorch-nsf-coupling"]
    session.install("--no-deps", *SBIBM)
    session.run(
        "python",
        "-c",
        "import sys, torch; v = torch.__version__.split('+')[0]; "
        f"sys.exit(None if v == {DEFAULT_TORCH!r} else f'torch {{v}} installed, not {DEFAULT_TORCH}')",
        silent=True,
    )
    session.run(
        "python",
        "benchmarks/sbibm_npe.py",
        "run",
        "--methods",
        *methods,
        *session.posargs,
        env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"},
    )


@nox.session(python="3.11")
def benchmarks(session: nox.Session) -> None:
    """Side-by-side timings against the peers (not part of the default sessions)."""
    _install(session, DEFAULT_TORCH, "benchmarks", "peers")
    session.run("python", "benchmarks/run.py", *session.posargs)


@nox.session(python="3.11")
def docs(session: nox.Session) -> None:
    """The documentation site, built strictly (any warning fails); ``nox -s docs -- serve`` previews it."""
    _install(session, DEFAULT_TORCH, "docs")
    session.install("ruff>=0.5")  # mkdocstrings formats signatures with it
    # a stale bijector table fails the build, which leaves the working tree as it is
    session.run("python", "docs/gen_bijector_table.py", "--check")
    # every public object has a docstring, an Args section and an example that runs as a doctest
    session.run("python", "docs/audit_docstrings.py", "--strict")
    env = {"NO_MKDOCS_2_WARNING": "1"}
    if session.posargs[:1] == ["serve"]:
        session.run("mkdocs", "serve", *session.posargs[1:], env=env)
    else:
        session.run("mkdocs", "build", "--strict", *session.posargs, env=env)
        # the built site renders formulas offline: MathJax is in it and no page loads a CDN script
        session.run("python", "-c", _SITE_CHECK, silent=True)


_SITE_CHECK = """
import pathlib, re, sys
site = pathlib.Path("site")
if not (site / "javascripts" / "mathjax" / "tex-mml-chtml.js").is_file():
    sys.exit("site/javascripts/mathjax/tex-mml-chtml.js is missing: docs/hooks.py did not copy MathJax")
cdn = re.compile(r'<script[^>]+src="https?://')
remote = sorted(str(p.relative_to(site)) for p in site.rglob("*.html") if cdn.search(p.read_text()))
if remote:
    sys.exit(f"pages that load a script from another site: {remote}")
"""
