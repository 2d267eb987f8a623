"""The description of one generic-test case (kept free of side effects so that
``tests/bijectors/cases_*.py`` modules can import it)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from flowtorch.bijectors.base import Bijector

__all__ = ["CONTEXT_SHAPE", "D", "Case"]

D = 3
CONTEXT_SHAPE = torch.Size([2])


@dataclasses.dataclass(frozen=True)
class Case:
    """One way to build a bijector for the generic tests."""

    name: str
    make: Callable[[], Any]  # returns a plan
    shape: tuple[int, ...] = (D,)
    context: bool = False

    def build(self, dtype: torch.dtype = torch.float64, seed: int = 0) -> Bijector:
        torch.manual_seed(seed)
        b = self.make()(shape=self.shape, context_shape=CONTEXT_SHAPE if self.context else None)
        b = b.to(dtype)
        with torch.no_grad():  # move away from the near-identity initialisation
            for p in b.parameters():
                fan_in = p.shape[-1] if p.dim() > 1 else 1
                p.normal_(0.0, 0.5 / fan_in**0.5)
        return b
