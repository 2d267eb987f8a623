"""Ready-made flows: functions that return *plans* of well-known architectures.

* :mod:`flowtorch.recipes.flows`: ``MAF``, ``IAF``, ``RealNVP`` and ``NSF`` on vectors;
* :mod:`flowtorch.recipes.glow`: ``Glow``, a multi-scale flow on images.
"""

from flowtorch.recipes.flows import IAF, MAF, NSF, RealNVP
from flowtorch.recipes.glow import Glow

__all__ = ["IAF", "MAF", "NSF", "RealNVP", "Glow"]
