"""Neural-network building blocks used by conditioners."""

from flowtorch.nn.made import MaskedLinear, made_degrees, made_masks

__all__ = ["MaskedLinear", "made_degrees", "made_masks"]
