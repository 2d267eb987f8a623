"""ODEMLP, the dynamics network of FFJORD: bad arguments."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from flowtorch.nn import ODEMLP

VALUE_ERRORS: list[tuple[str, Callable[[], Any], str]] = [
    (
        "ODEMLP activation",
        lambda: ODEMLP(2, (4,), activation="relu6"),
        r"ODEMLP: activation must be one of \('tanh', 'softplus'\), got 'relu6'",
    ),
]


@pytest.mark.parametrize(("make", "match"), [c[1:] for c in VALUE_ERRORS], ids=[c[0] for c in VALUE_ERRORS])
def test_bad_values_are_named(make: Callable[[], Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()
