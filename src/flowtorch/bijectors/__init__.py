"""Bijectors: invertible maps with tractable log|det J|, built lazily for an event shape.

Importing this package defines classes only; no bijector is built at import time.
"""

from flowtorch.bijectors.affine import Affine, AffineAutoregressive, AffineFixed
from flowtorch.bijectors.base import Bijector
from flowtorch.bijectors.compose import Compose, Invert
from flowtorch.bijectors.elementwise import ELU, Exp, LeakyReLU, Power, Sigmoid, Softplus, Tanh
from flowtorch.bijectors.mode import BijectiveMode, CacheMissWarning
from flowtorch.bijectors.permute import Permute
from flowtorch.bijectors.spline import Spline, SplineAutoregressive

__all__ = [
    "ELU",
    "Affine",
    "AffineAutoregressive",
    "AffineFixed",
    "BijectiveMode",
    "Bijector",
    "CacheMissWarning",
    "Compose",
    "Exp",
    "Invert",
    "LeakyReLU",
    "Permute",
    "Power",
    "Sigmoid",
    "Softplus",
    "Spline",
    "SplineAutoregressive",
    "Tanh",
]
