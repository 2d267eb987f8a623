"""The fast ``broadcast_shapes`` agrees with torch's, error type included."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flowtorch.core.shapes import broadcast_shapes, broadcastable

shape = st.lists(st.sampled_from([0, 1, 2, 3]), max_size=4).map(tuple)


@settings(max_examples=400, deadline=None)
@given(st.lists(shape, min_size=1, max_size=5))
def test_agrees_with_torch(shapes: list[tuple[int, ...]]) -> None:
    try:
        want: torch.Size | type = torch.broadcast_shapes(*shapes)
    except RuntimeError:
        want = RuntimeError
    try:
        got: torch.Size | type = broadcast_shapes(*shapes)
        assert type(got) is torch.Size
    except RuntimeError:
        got = RuntimeError
    assert got == want
    assert broadcastable(*shapes) == (want is not RuntimeError)


def test_examples() -> None:
    assert broadcast_shapes((4, 1), (3,)) == torch.Size([4, 3])
    assert broadcast_shapes((2, 3), (2, 3), (2, 3)) == torch.Size([2, 3])
    assert broadcast_shapes((), (5,)) == torch.Size([5])
    assert broadcast_shapes() == torch.Size([])
    with pytest.raises(RuntimeError):
        broadcast_shapes((2,), (3,))
