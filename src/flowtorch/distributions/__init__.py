"""Distributions: ``Flow`` and target densities."""

from flowtorch.distributions.energy import EnergyDensity
from flowtorch.distributions.flow import Flow
from flowtorch.distributions.neals_funnel import NealsFunnel

__all__ = ["EnergyDensity", "Flow", "NealsFunnel"]
