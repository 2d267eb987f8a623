"""ODEMLP, the dynamics network of FFJORD: its forward-mode Jacobian equals autograd's (to 1e-12),
and bad arguments."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from flowtorch.nn import ODEMLP
from tests.case import perturb

F64 = torch.float64


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


@pytest.mark.parametrize("activation", ["tanh", "softplus"])
def test_odemlp_jvp_is_the_jacobian(activation: str) -> None:
    net = ODEMLP(4, (8, 6), context_dim=3, activation=activation).double()
    perturb(net, 1.0)
    z = torch.randn(5, 4, dtype=F64)
    t = torch.full((5, 1), 0.3, dtype=F64)
    e = torch.randn(5, 3, dtype=F64)
    out, jv = net.jvp(z, t, e, torch.eye(4, dtype=F64))
    torch.testing.assert_close(out, net(z, t, e), atol=1e-14, rtol=1e-14)
    for i in range(5):
        jac = torch.autograd.functional.jacobian(lambda v: net(v, t[i], e[i]), z[i])  # noqa: B023
        torch.testing.assert_close(jv[i], jac, atol=1e-12, rtol=1e-12)
    # batched tangents: one vector per sample
    v = torch.randn(5, 4, 1, dtype=F64)
    _, jv1 = net.jvp(z, t, e, v)
    torch.testing.assert_close(jv1, jv @ v, atol=1e-12, rtol=1e-12)
