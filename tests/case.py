"""The description of one generic-test case (kept free of side effects so that
``tests/bijectors/cases_*.py`` modules can import it)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from flowtorch.core.bijector import Bijector

__all__ = [
    "CONTEXT_SHAPE",
    "D",
    "Case",
    "build_float64",
    "check_a_context_batch_wider_than_the_input",
    "perturb",
]

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


def build_float64(plan: Any, d: int = 4, seed: int = 0, scale: float = 1.0, **kwargs: Any) -> Any:
    """Builds ``plan`` for a ``d``-vector event in float64, every parameter drawn from
    N(0, scale^2) (the bijectors of ``tests/bijectors/test_planar.py`` and its neighbours)."""
    torch.manual_seed(seed)
    b = plan(shape=torch.Size([d]), **kwargs).to(torch.float64)
    with torch.no_grad():
        for p in b.parameters():
            p.normal_(0.0, scale)
    return b


def perturb(module: torch.nn.Module, scale: float = 0.5, seed: int = 0, by_fan_in: bool = True) -> None:
    """Moves ``module``'s parameters away from the near-identity initialisation: each entry drawn
    from N(0, scale^2), divided by the fan-in (the last dim of a matrix) when ``by_fan_in``."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            fan_in = p.shape[-1] if by_fan_in and p.dim() > 1 else 1
            p.normal_(0.0, scale / fan_in**0.5)


def check_a_context_batch_wider_than_the_input(
    b: Bijector, x: torch.Tensor, c: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One event ``x`` with a batch ``c`` of contexts: the output and log-det have the contexts'
    batch, agree with the input expanded to it, and the log-det of each row is the autograd
    Jacobian's. Returns ``forward_and_ladj(x, c)``."""
    n = c.shape[0]
    y, ladj = b.forward_and_ladj(x, c)
    assert y.shape == (n, *x.shape) and ladj.shape == (n,)
    y_expanded, ladj_expanded = b.forward_and_ladj(x.expand(n, *x.shape), c)
    torch.testing.assert_close(y, y_expanded)
    torch.testing.assert_close(ladj, ladj_expanded)
    for i in range(n):
        jac = torch.autograd.functional.jacobian(lambda v, i=i: b.forward(v, c[i]), x)
        torch.testing.assert_close(ladj[i], torch.linalg.slogdet(jac)[1])
    return y, ladj
