"""Neural-network building blocks of conditioners and bijectors: masked (MADE) layers, spectrally
normalised layers (residual flows), the dynamics of continuous flows and the integrand of UMNN."""

from flowtorch.nn.integrand import IntegrandNet
from flowtorch.nn.made import MaskedLinear, made_degrees, made_masks
from flowtorch.nn.ode import ODEMLP
from flowtorch.nn.spectral import SpectralNormLinear

__all__ = ["IntegrandNet", "MaskedLinear", "ODEMLP", "SpectralNormLinear", "made_degrees", "made_masks"]
