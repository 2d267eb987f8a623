"""Reverse: a dim of the wrong type, and repr."""

from __future__ import annotations

import pytest
import torch

from flowtorch.bijectors.reverse import Reverse

S = torch.Size


@pytest.mark.parametrize("dim", [True, 1.0, "0", None])
def test_a_dim_that_is_not_an_int_is_named(dim: object) -> None:
    with pytest.raises(TypeError, match=f"Reverse: dim must be an int, got {dim!r}"):
        Reverse(dim)(shape=S([2, 3]))


@pytest.mark.parametrize(("dim", "stored"), [(-1, 1), (-2, 0), (0, 0), (1, 1)])
def test_extra_repr_gives_the_dim_from_the_first_event_dim(dim: int, stored: int) -> None:
    b = Reverse(dim)(shape=S([2, 3]))
    assert b.extra_repr() == f"shape=(2, 3), dim={stored}"
    x = torch.arange(12.0).reshape(2, 2, 3)
    torch.testing.assert_close(b.forward(x), x.flip(1 + stored))
