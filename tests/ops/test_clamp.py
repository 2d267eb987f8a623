"""soft_clamp: bounds, identity near zero, monotone, a gradient everywhere; the one bound of every
affine log-scale in the library."""

from __future__ import annotations

import pytest
import torch

import flowtorch.bijectors as bij
import flowtorch.parameters as params
from flowtorch.bijectors.channel_coupling import ChannelAffineCoupling
from flowtorch.ops import soft_clamp

F64 = torch.float64


@pytest.mark.parametrize(("low", "high"), [(-5.0, 3.0), (-2.0, 2.0), (-0.1, 7.0)])
def test_values_bounds_and_gradient(low: float, high: float) -> None:
    x = torch.cat([torch.linspace(-1e4, 1e4, 2001, dtype=F64), torch.linspace(-20, 20, 401, dtype=F64)])
    x.requires_grad_(True)
    y = soft_clamp(x, low, high)
    bound = torch.where(x >= 0, torch.tensor(high, dtype=F64), torch.tensor(low, dtype=F64))
    torch.testing.assert_close(y, x / (1 + x / bound))  # the docstring's formula, by hand
    assert bool(((y > low) & (y < high)).all())
    (grad,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(grad, 1 / (1 + x / bound) ** 2)
    assert bool((grad > 0).all())  # past the bounds too: a log-scale that overshoots comes back
    assert torch.equal(soft_clamp(torch.zeros(3, dtype=F64), low, high), torch.zeros(3, dtype=F64))
    assert y.dtype == F64


def test_identity_to_first_order_at_zero_and_autograd_checks() -> None:
    x = torch.tensor([-1e-4, 0.0, 1e-4], dtype=F64, requires_grad=True)
    torch.testing.assert_close(soft_clamp(x, -5.0, 3.0), x, atol=1e-8, rtol=0)
    z = torch.randn(20, dtype=F64, requires_grad=True) * 4
    assert torch.autograd.gradcheck(lambda t: soft_clamp(t, -5.0, 3.0), (z.detach().requires_grad_(),))


def test_does_not_write_into_its_input() -> None:
    x = torch.randn(10)
    before = x.clone()
    soft_clamp(x, -1.0, 1.0)
    assert torch.equal(x, before)


def _set(b: torch.nn.Module, value: float) -> None:
    with torch.no_grad():
        for p in b.parameters():
            p.fill_(value)


def test_every_affine_map_bounds_its_log_scale_with_soft_clamp() -> None:
    """Affine, AffineAutoregressive, AffineCoupling and ChannelAffineCoupling give the same
    log-scale for the same raw conditioner output: soft_clamp's."""
    raw = 40.0  # far past every default bound
    affine = bij.Affine(params.Tensor())(shape=torch.Size([2]))
    _set(affine, raw)
    x = torch.zeros(1, 2)
    torch.testing.assert_close(
        affine.log_abs_det_jacobian(x, affine.forward(x)),
        2 * soft_clamp(torch.tensor(raw), -5.0, 3.0).expand(1),
    )

    coupling = bij.AffineCoupling(log_scale_min_clip=-5.0, log_scale_max_clip=5.0)(shape=torch.Size([2]))
    _set(coupling, 3.0)
    x = torch.randn(4, 2)
    _, s = coupling.params_fn(x)
    assert bool((s.abs() > 5.0).all())  # past the bound
    _, ladj = coupling.forward_and_ladj(x)
    torch.testing.assert_close(ladj, soft_clamp(s, -5.0, 5.0).sum(-1))

    channel = ChannelAffineCoupling(log_scale_min_clip=-3.0, log_scale_max_clip=3.0)(
        shape=torch.Size([2, 2, 2])
    )
    _set(channel, 0.5)
    xi = torch.randn(1, 2, 2, 2)
    _, s = channel.params_fn(xi[:, :1])
    _, ladj = channel.forward_and_ladj(xi)
    torch.testing.assert_close(ladj, soft_clamp(s, -3.0, 3.0).sum((-3, -2, -1)))
