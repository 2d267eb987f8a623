"""The abstract conditioner: what a subclass that defines nothing does."""

from __future__ import annotations

import pytest
import torch

import flowtorch.parameters as params

S = torch.Size


def test_the_abstract_conditioner_has_no_forward() -> None:
    class Unfinished(params.Parameters):
        pass

    cond = Unfinished()(param_shapes=[S([2])], input_shape=S([2]))
    assert cond.extra_repr() == "input_shape=(2,)"
    with pytest.raises(NotImplementedError):
        cond(torch.zeros(2))
