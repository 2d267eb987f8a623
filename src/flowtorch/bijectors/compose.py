"""``Compose`` and ``Invert``: an import path kept for code written against it; the code lives in
:mod:`flowtorch.core.compose`, whose public names this module re-exports."""

from flowtorch.core.compose import *  # noqa: F403
from flowtorch.core.compose import __all__ as __all__
