"""EnergyDensity and NealsFunnel with argument validation on: the densities, and wrong shapes."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal

from flowtorch.distributions import NealsFunnel
from flowtorch.distributions.energy import EnergyDensity

F64 = torch.float64


def test_energy_log_prob_validates_and_is_minus_the_energy() -> None:
    p = EnergyDensity("U2", validate_args=True)
    z = torch.randn(5, 2, dtype=F64)
    w1 = torch.sin(math.pi * z[:, 0] / 2)
    torch.testing.assert_close(p.log_prob(z), -0.5 * ((z[:, 1] - w1) / 0.4) ** 2)
    with pytest.raises(ValueError, match="event_shape"):
        p.log_prob(torch.zeros(5, 3))
    with pytest.raises(ValueError, match="support"):
        p.log_prob(torch.tensor([0.0, float("nan")]))


def test_funnel_log_prob_validates_and_matches_torch() -> None:
    d = NealsFunnel(validate_args=True)
    value = torch.tensor([[0.3, -1.0], [-2.0, 2.5], [0.0, 0.0]], dtype=F64)
    x, v = value[:, 0], value[:, 1]
    expected = Normal(0.0, 3.0).log_prob(v) + Normal(0.0, torch.exp(v / 2)).log_prob(x)
    torch.testing.assert_close(d.log_prob(value), expected)
    with pytest.raises(ValueError, match="event_shape"):
        d.log_prob(torch.zeros(4, 3))
