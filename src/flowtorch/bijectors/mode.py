"""``BijectiveMode``, the cache: an import path kept for code written against it; the code lives in
:mod:`flowtorch.core.mode`, whose public names this module re-exports."""

from flowtorch.core.mode import *  # noqa: F403
from flowtorch.core.mode import __all__ as __all__
