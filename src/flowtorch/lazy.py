"""Lazy plans: an import path kept for code written against it; the code lives in
:mod:`flowtorch.core.lazy`, whose public names this module re-exports."""

from flowtorch.core.lazy import *  # noqa: F403
from flowtorch.core.lazy import __all__ as __all__
