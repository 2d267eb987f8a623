"""NealsFunnel with argument validation on: the density, and wrong shapes."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Normal

from flowtorch.distributions import NealsFunnel

F64 = torch.float64


def test_funnel_log_prob_validates_and_matches_torch() -> None:
    d = NealsFunnel(validate_args=True)
    value = torch.tensor([[0.3, -1.0], [-2.0, 2.5], [0.0, 0.0]], dtype=F64)
    x, v = value[:, 0], value[:, 1]
    expected = Normal(0.0, 3.0).log_prob(v) + Normal(0.0, torch.exp(v / 2)).log_prob(x)
    torch.testing.assert_close(d.log_prob(value), expected)
    with pytest.raises(ValueError, match="event_shape"):
        d.log_prob(torch.zeros(4, 3))
