"""The engine that every bijector shares, apart from the catalogue of families.

* :mod:`flowtorch.core.lazy`: plans, the lazy construction of modules;
* :mod:`flowtorch.core.bijector`: the ``Bijector`` base class (checks, log-det reduction, cache calls);
* :mod:`flowtorch.core.mode`: ``BijectiveMode``, the cache and its freshness rule;
* :mod:`flowtorch.core.compose`: ``Compose`` and ``Invert``;
* :mod:`flowtorch.core.combinators`: ``Cat``, ``Stack`` and ``FactorOut``;
* :mod:`flowtorch.core.shapes` and :mod:`flowtorch.core.validation`: shape helpers and the checks
  of user arguments, whose errors name the argument;
* :mod:`flowtorch.core.compat`: what differs between the supported torch versions.

The families (``flowtorch.bijectors``), conditioners (``flowtorch.parameters``), network modules
(``flowtorch.nn``) and recipes build on these; nothing here imports them.
"""

from flowtorch.core.bijector import Bijector, Params, SequentialSamplingWarning, build
from flowtorch.core.combinators import Cat, FactorOut, Stack
from flowtorch.core.compose import Compose, Invert
from flowtorch.core.lazy import Lazy, LazyModule, Plan
from flowtorch.core.mode import BijectiveMode, CacheMissWarning

__all__ = [
    "BijectiveMode",
    "Bijector",
    "CacheMissWarning",
    "Cat",
    "Compose",
    "FactorOut",
    "Invert",
    "Lazy",
    "LazyModule",
    "Params",
    "Plan",
    "SequentialSamplingWarning",
    "Stack",
    "build",
]
