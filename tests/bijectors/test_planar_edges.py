"""The scalar solver of the planar family when its iteration budget runs out."""

from __future__ import annotations

import torch

from flowtorch.bijectors.planar import solve_shifted_tanh

F64 = torch.float64


def test_the_solver_returns_its_iterate_when_max_iter_runs_out() -> None:
    g = torch.Generator().manual_seed(0)
    t = torch.randn(50, generator=g, dtype=F64) * 3
    p = torch.randn(50, generator=g, dtype=F64) * 2
    q = p.sign() * torch.rand(50, generator=g, dtype=F64) * 2  # p q >= 0: Newton's first step is taken
    c = torch.randn(50, generator=g, dtype=F64)
    # no iteration: the centre of the bracket [t - |p|, t + |p|]
    torch.testing.assert_close(solve_shifted_tanh(t, p, q, c, max_iter=0), t)
    # one iteration: one Newton step from t, by hand
    th = torch.tanh(q * t + c)
    newton = t - p * th / (1.0 + p * q * (1.0 - th * th))
    z1 = solve_shifted_tanh(t, p, q, c, max_iter=1)
    torch.testing.assert_close(z1, newton)
    z = solve_shifted_tanh(t, p, q, c)
    residual = z + p * torch.tanh(q * z + c) - t
    assert float(residual.abs().max()) < 1e-12
    assert float((z1 - z).abs().max()) > 1e-6  # one step was not enough
