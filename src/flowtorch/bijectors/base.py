"""The ``Bijector`` base class: an import path kept for code written against it; the code lives in
:mod:`flowtorch.core.bijector`, whose public names this module re-exports."""

from flowtorch.core.bijector import *  # noqa: F403
from flowtorch.core.bijector import __all__ as __all__
