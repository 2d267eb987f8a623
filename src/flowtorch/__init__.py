"""flowtorch: normalizing flows and bijectors for PyTorch, with caching by ``BijectiveMode``."""

from flowtorch.bijectors.mode import BijectiveMode, CacheMissWarning
from flowtorch.lazy import Lazy, Plan

__version__ = "0.9.0"

__all__ = ["BijectiveMode", "CacheMissWarning", "Lazy", "Plan", "__version__"]
