"""Conditioners: networks that map a bijector's input and context to its parameters."""

from flowtorch.parameters.base import Parameters
from flowtorch.parameters.conv_coupling import ConvCoupling
from flowtorch.parameters.coupling import DenseCoupling
from flowtorch.parameters.dense_autoregressive import DenseAutoregressive
from flowtorch.parameters.tensor import Tensor

__all__ = ["ConvCoupling", "DenseAutoregressive", "DenseCoupling", "Parameters", "Tensor"]
