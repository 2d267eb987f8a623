"""flowtorch: normalizing flows and bijectors for PyTorch, with caching by ``BijectiveMode``."""

from flowtorch.core.lazy import Lazy, Plan
from flowtorch.core.mode import BijectiveMode, CacheMissWarning

__version__ = "0.9.0"

__all__ = ["BijectiveMode", "CacheMissWarning", "Lazy", "Plan", "__version__"]
