"""EnergyDensity with argument validation on: the density, and wrong shapes."""

from __future__ import annotations

import math

import pytest
import torch

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
