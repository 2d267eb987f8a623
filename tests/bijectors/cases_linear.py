"""Generic-test cases for the linear, convolutional and normalisation bijectors.

``LULinear`` and ``Householder`` are also built with default arguments by ``conftest``. The
others need an image-shaped event, data-dependent state or eval mode, so they are listed here
and in ``CUSTOM``. A training-mode ``BatchNorm`` is not a generic case: its map depends on the
whole batch (a single event has no variance), so ``tests/bijectors/test_normalization.py``
checks it against the autograd Jacobian with the statistics fixed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from flowtorch.bijectors.affine import Affine
from flowtorch.bijectors.conv import Invertible1x1Conv
from flowtorch.bijectors.linear import Householder, LULinear
from flowtorch.bijectors.normalization import ActNorm, BatchNorm
from flowtorch.core.bijector import Bijector
from flowtorch.core.compose import Compose
from tests.case import Case

__all__ = ["CASES", "CUSTOM"]

CUSTOM = {"ActNorm", "BatchNorm", "Invertible1x1Conv"}


def _prepared(plan: Callable[[], Any], prepare: Callable[[Bijector], None]) -> Callable[[], Any]:
    """A ``Case.make`` whose built bijector is passed through ``prepare`` before use."""

    def make() -> Callable[..., Bijector]:
        def build(**kwargs: Any) -> Bijector:
            b: Bijector = plan()(**kwargs)
            prepare(b)
            return b

        return build

    return make


def _initialise(b: Bijector) -> None:
    """Runs one training batch through an ActNorm, so that it starts initialised."""
    b.forward(2.0 + 3.0 * torch.randn(16, *b.shape))


def _trained_then_eval(b: Bijector) -> None:
    """Gives a BatchNorm non-trivial running statistics, then puts it in eval mode."""
    for _ in range(3):
        b.forward(1.0 + 2.0 * torch.randn(16, *b.shape))
    b.eval()


CASES = [
    Case(
        "LULinear[exp,no-bias,random-init,2x3]",
        lambda: LULinear(diag_activation="exp", bias=False, identity_init=False),
        shape=(2, 3),
    ),
    Case("LULinear[identity-perm]", lambda: LULinear(permutation="identity")),
    Case("Householder[1 reflection,2x3]", lambda: Householder(n_reflections=1), shape=(2, 3)),
    Case("Invertible1x1Conv[2x4x4]", lambda: Invertible1x1Conv(), shape=(2, 4, 4)),
    Case(
        "Invertible1x1Conv[exp,bias,2x2x3x3]",
        lambda: Invertible1x1Conv(diag_activation="exp", bias=True, identity_init=False),
        shape=(2, 2, 3, 3),
    ),
    Case("ActNorm[initialised]", _prepared(lambda: ActNorm(), _initialise)),
    # initialised by the first training-mode call of each test (9 values per channel suffice)
    Case("ActNorm[chw]", lambda: ActNorm(dim=-3), shape=(2, 3, 3)),
    Case("BatchNorm[eval]", _prepared(lambda: BatchNorm(), _trained_then_eval)),
    Case("BatchNorm[eval,chw]", _prepared(lambda: BatchNorm(dim=-3), _trained_then_eval), shape=(2, 3, 3)),
    Case(
        "Compose(LULinear, Affine, Householder)[context]",
        lambda: Compose([LULinear(), Affine(), Householder()]),
        context=True,
    ),
    Case(
        "Compose(ActNorm, Invertible1x1Conv)[chw]",
        lambda: Compose([ActNorm(dim=-3), Invertible1x1Conv(identity_init=False)]),
        shape=(2, 3, 3),
    ),
]
