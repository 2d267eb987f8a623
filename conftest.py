"""pytest's collection from the repository root: the doctests of ``src/flowtorch`` are collected by
importing each module, and ``flowtorch.mypy_plugin`` imports mypy, which only the ``test`` extra
installs; without mypy that module's doctests are left out (its tests skip with a reason)."""

from __future__ import annotations

import importlib.util

collect_ignore = [] if importlib.util.find_spec("mypy") else ["src/flowtorch/mypy_plugin.py"]
