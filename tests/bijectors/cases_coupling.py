"""Generic-test cases of the coupling family (``AffineCoupling``, ``SplineCoupling``).

The default-argument cases (``AffineCoupling``, ``AffineCoupling[context]`` and the same for
``SplineCoupling``) come from ``conftest``; these add masks, NICE, even and odd event sizes,
2-D events and a conditioner that does not take a mask.
"""

from __future__ import annotations

import torch

from flowtorch.bijectors.coupling import AffineCoupling, SplineCoupling
from flowtorch.parameters import Tensor
from tests.case import Case

__all__ = ["CASES", "CUSTOM"]

CUSTOM: set[str] = set()

_CHECKER = torch.tensor([[True, False, True], [False, True, False]])

CASES: list[Case] = [
    Case("AffineCoupling[additive]", lambda: AffineCoupling(additive=True)),
    Case("AffineCoupling[additive,context]", lambda: AffineCoupling(additive=True), context=True),
    Case("AffineCoupling[half,flip]", lambda: AffineCoupling(mask="half", flip=True)),
    Case("AffineCoupling[D=4,half]", lambda: AffineCoupling(mask="half"), shape=(4,)),
    Case(
        "AffineCoupling[mask]",
        lambda: AffineCoupling(mask=torch.tensor([False, True, True, False, True])),
        shape=(5,),
    ),
    Case("AffineCoupling[2x3]", lambda: AffineCoupling(), shape=(2, 3)),
    Case(
        "AffineCoupling[2x3,checker,context]",
        lambda: AffineCoupling(mask=_CHECKER),
        shape=(2, 3),
        context=True,
    ),
    Case("AffineCoupling[Tensor,context]", lambda: AffineCoupling(Tensor()), context=True),
    Case(
        "SplineCoupling[D=4,half,flip]",
        lambda: SplineCoupling(mask="half", flip=True, count_bins=5, bound=2.0),
        shape=(4,),
    ),
    Case(
        "SplineCoupling[mask,context]",
        lambda: SplineCoupling(mask=torch.tensor([True, True, False, False, True])),
        shape=(5,),
        context=True,
    ),
    Case("SplineCoupling[2x2,context]", lambda: SplineCoupling(count_bins=2), shape=(2, 2), context=True),
]
