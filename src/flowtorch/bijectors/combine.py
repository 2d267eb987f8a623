"""``Cat``, ``Stack`` and ``FactorOut``: an import path kept for code written against it; the code lives in
:mod:`flowtorch.core.combinators`, whose public names this module re-exports."""

from flowtorch.core.combinators import *  # noqa: F403
from flowtorch.core.combinators import __all__ as __all__
