"""``Glow``: an import path kept for code written against it; the recipe lives in
:mod:`flowtorch.recipes.glow` and is exported as ``flowtorch.recipes.Glow``."""

from flowtorch.recipes.glow import *  # noqa: F403
from flowtorch.recipes.glow import __all__ as __all__
