"""ResidualFlow and SpectralNormLinear: the layer as a module, NaN weights, a context batch wider
than the input, and the inverse without gradients."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from flowtorch.bijectors.residual import ResidualFlow, SpectralNormLinear
from tests.case import check_a_context_batch_wider_than_the_input

S = torch.Size
F64 = torch.float64


def test_spectral_norm_linear_as_a_module_rescales_only_large_weights() -> None:
    torch.manual_seed(0)
    layer = SpectralNormLinear(3, 4, coefficient=0.5, exact=True).double()
    x = torch.randn(6, 3, dtype=F64)
    w = layer.weight.detach()
    sigma = torch.linalg.matrix_norm(w, 2)
    assert sigma > 0.5  # the default initialisation is above the bound: rescaled to it
    torch.testing.assert_close(layer(x), F.linear(x, w * 0.5 / sigma, layer.bias))
    with torch.no_grad():
        layer.weight.mul_(0.1 / sigma)  # now below the bound: left as it is
    torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias))


def test_nan_weights_do_not_overwrite_the_power_iteration_buffer() -> None:
    torch.manual_seed(0)
    layer = SpectralNormLinear(3, 3, power_max_iter=5)
    u = layer.u.clone()
    with torch.no_grad():
        layer.weight[0, 0] = float("nan")
    out = layer(torch.ones(2, 3))
    assert bool(out.isnan().all())
    assert torch.equal(layer.u, u)  # the warm start survives a diverged step


def _flow() -> ResidualFlow:
    torch.manual_seed(0)
    b = ResidualFlow(hidden_dims=(8,), estimator="exact")(shape=S([2]), context_shape=S([3])).to(F64)
    with torch.no_grad():
        b.context_layer.weight.normal_()
    return b


def test_a_context_batch_wider_than_the_input() -> None:
    b = _flow()
    x = torch.randn(2, dtype=F64)  # one event
    c = torch.randn(4, 3, dtype=F64)  # four contexts
    y, _ = check_a_context_batch_wider_than_the_input(b, x, c)
    torch.testing.assert_close(b.inverse(y, c), x.expand(4, 2))


def test_the_inverse_without_gradients_is_the_fixed_point_alone() -> None:
    b = _flow()
    x = torch.randn(5, 2, dtype=F64)
    c = torch.randn(5, 3, dtype=F64)
    y = b.forward(x, c).detach()
    with torch.no_grad():
        x_back = b.inverse(y, c)
    assert not x_back.requires_grad and x_back.grad_fn is None
    torch.testing.assert_close(x_back, x)
    # with gradients on, the same point, now differentiable in the parameters
    x_grad = b.inverse(y, c)
    assert x_grad.requires_grad
    torch.testing.assert_close(x_grad.detach(), x_back)
