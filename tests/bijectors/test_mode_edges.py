"""The identity set that the mode keeps of ``.data`` aliases: one member per tensor, dropped when freed."""

from __future__ import annotations

import gc

import torch

from flowtorch.bijectors.mode import TensorSet


def test_a_tensor_added_twice_is_one_member_and_leaves_when_freed() -> None:
    s = TensorSet()
    t, other = torch.zeros(2), torch.zeros(2)  # equal values, different objects
    s.add(t)
    s.add(t)  # replaces the first weak reference, which dies unreported
    s.add(other)
    assert len(s) == 2 and t in s and other in s and torch.zeros(2) not in s
    del t
    gc.collect()
    assert len(s) == 1 and s.alive()[0] is other
    del other
    gc.collect()
    assert not s and s.alive() == []
