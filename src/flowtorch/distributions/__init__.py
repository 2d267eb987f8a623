"""Distributions: ``Flow`` and target densities."""

from flowtorch.distributions.flow import Flow
from flowtorch.distributions.neals_funnel import NealsFunnel

__all__ = ["Flow", "NealsFunnel"]
