"""Bijectors: invertible maps with tractable log|det J|, built lazily for an event shape.

Importing this package defines classes only; no bijector is built at import time.
"""

from flowtorch.bijectors.affine import Affine, AffineAutoregressive, AffineFixed
from flowtorch.bijectors.channel_coupling import ChannelAffineCoupling
from flowtorch.bijectors.circular import CircularSpline
from flowtorch.bijectors.conv import Invertible1x1Conv
from flowtorch.bijectors.coupling import AffineCoupling, SplineCoupling
from flowtorch.bijectors.elementwise import ELU, Exp, LeakyReLU, Power, Sigmoid, Softplus, Tanh
from flowtorch.bijectors.ffjord import FFJORD
from flowtorch.bijectors.linear import Householder, LULinear
from flowtorch.bijectors.monotonic import UMNN, Bernstein, SOSPolynomial
from flowtorch.bijectors.naf import BlockNeuralAutoregressive, NeuralAutoregressive
from flowtorch.bijectors.normalization import ActNorm, BatchNorm
from flowtorch.bijectors.permute import Permute
from flowtorch.bijectors.planar import Planar
from flowtorch.bijectors.radial import Radial
from flowtorch.bijectors.reshape import Reshape, Squeeze, Unsqueeze
from flowtorch.bijectors.residual import FixedPointWarning, InvertibleResNet, ResidualFlow
from flowtorch.bijectors.reverse import Reverse
from flowtorch.bijectors.spline import Spline, SplineAutoregressive
from flowtorch.bijectors.sylvester import Sylvester
from flowtorch.core.bijector import Bijector, SequentialSamplingWarning
from flowtorch.core.combinators import Cat, FactorOut, Stack
from flowtorch.core.compose import Compose, Invert
from flowtorch.core.mode import BijectiveMode, CacheMissWarning

__all__ = [
    "FixedPointWarning",
    "InvertibleResNet",
    "Planar",
    "Radial",
    "ResidualFlow",
    "Sylvester",
    "FFJORD",
    "UMNN",
    "Bernstein",
    "BlockNeuralAutoregressive",
    "NeuralAutoregressive",
    "SOSPolynomial",
    "AffineCoupling",
    "SplineCoupling",
    "ActNorm",
    "BatchNorm",
    "Cat",
    "CircularSpline",
    "ChannelAffineCoupling",
    "FactorOut",
    "Householder",
    "Invertible1x1Conv",
    "LULinear",
    "Reshape",
    "Reverse",
    "Squeeze",
    "Stack",
    "Unsqueeze",
    "ELU",
    "Affine",
    "AffineAutoregressive",
    "AffineFixed",
    "BijectiveMode",
    "Bijector",
    "CacheMissWarning",
    "SequentialSamplingWarning",
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
