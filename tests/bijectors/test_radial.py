"""Radial: the inverse in closed form, exact including strong contractions.

The generic suite (``tests/bijectors/cases_planar.py``) runs it with round trips, autograd log-dets,
shapes, gradients, dtypes, contexts, cycles and serialisation; ``tests/bijectors/test_planar.py``
compares it with its peers and checks the cache of the family.
"""

from __future__ import annotations

import torch

from flowtorch.bijectors.radial import Radial
from tests.case import build_float64

DT = torch.float64


def test_radial_inverse_is_exact_including_contractions() -> None:
    b = build_float64(Radial(), d=3, seed=2)
    with torch.no_grad():  # beta close to -alpha: a strong contraction towards x0
        b.params_fn.params[2].fill_(-8.0)  # type: ignore[union-attr]
    x0 = b.params_fn.params[0].detach()  # type: ignore[union-attr]
    x = torch.cat([x0 + 1e-3 * torch.randn(5, 3, dtype=DT), torch.randn(100, 3, dtype=DT) * 4])
    y = b.forward(x)  # type: ignore[operator]
    torch.testing.assert_close(b.inverse(y), x, atol=1e-10, rtol=1e-10)  # type: ignore[operator]
    assert torch.equal(b.inverse(x0.unsqueeze(0)), x0.unsqueeze(0))  # type: ignore[operator]
