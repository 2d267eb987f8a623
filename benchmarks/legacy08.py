"""flowtorch 0.8, loaded beside this flowtorch under the name ``flowtorch08``.

Both packages are called ``flowtorch``, so 0.8 cannot be imported in the same process as is. At
benchmark time :func:`load` downloads the 0.8 wheel with ``pip download`` (once, into a cache
directory outside the repository), unpacks it, renames its top-level package to ``flowtorch08``
and rewrites every ``flowtorch`` name in its sources to ``flowtorch08``, then imports that copy.
None of 0.8's code is kept in this repository. Without network access (or pip), the benchmarks
that use it print a message and skip it.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from types import ModuleType

__all__ = ["CACHE_DIR", "NAME", "VERSION", "load"]

VERSION = "0.8"
NAME = "flowtorch08"
#: Where the wheel and the renamed copy live (reused between runs).
CACHE_DIR = Path(os.environ.get("FLOWTORCH08_CACHE", Path(tempfile.gettempdir()) / "flowtorch-benchmarks-08"))

_loaded: ModuleType | None = None
_failure: str | None = None


def _download(dest: Path) -> Path:
    wheels = sorted(dest.glob(f"flowtorch-{VERSION}-*.whl"))
    if not wheels:
        cmd = [sys.executable, "-m", "pip", "download", f"flowtorch=={VERSION}", "--no-deps", "-d", str(dest)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"pip download failed: {tail[0]}")
        wheels = sorted(dest.glob(f"flowtorch-{VERSION}-*.whl"))
    if not wheels:
        raise RuntimeError("pip download produced no wheel")
    return wheels[0]


def _renamed_copy(wheel: Path, root: Path) -> None:
    """Unpacks ``wheel``'s ``flowtorch`` package into ``root/flowtorch08`` with its names rewritten."""
    target = root / NAME
    if (target / "__init__.py").exists():
        return
    staging = Path(tempfile.mkdtemp(dir=root))
    try:
        with zipfile.ZipFile(wheel) as zf:
            members = [m for m in zf.namelist() if m.startswith("flowtorch/")]
            zf.extractall(staging, members)
        pattern = re.compile(r"\bflowtorch\b")
        for path in (staging / "flowtorch").rglob("*.py"):
            path.write_text(pattern.sub(NAME, path.read_text()))
        (staging / "flowtorch").rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load() -> ModuleType | None:
    """Imports flowtorch 0.8 as ``flowtorch08`` (with its ``bijectors``, ``parameters`` and
    ``distributions``), or returns None after printing why it is unavailable."""
    global _loaded, _failure
    if _loaded is not None or _failure is not None:
        return _loaded
    try:
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        _renamed_copy(_download(CACHE_DIR), CACHE_DIR)
        if str(CACHE_DIR) not in sys.path:
            sys.path.append(str(CACHE_DIR))
        module = importlib.import_module(NAME)
        for sub in ("bijectors", "parameters", "distributions"):
            importlib.import_module(f"{NAME}.{sub}")
    except Exception as exc:  # network, pip, an incompatible torch: all mean "skip 0.8"
        _failure = f"{type(exc).__name__}: {exc}"
        print(f"  flowtorch {VERSION} unavailable, skipped ({_failure})", flush=True)
        return None
    _loaded = module
    return module
