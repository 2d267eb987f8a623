"""SpectralNormLinear: the bound on each layer's spectral norm, its gradient, the power iteration's
buffer, the layer as a module, and NaN weights."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from flowtorch.nn import SpectralNormLinear

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


def test_spectral_norm_bounds_each_layer() -> None:
    torch.manual_seed(0)
    for out_f, in_f in [(16, 3), (16, 16), (3, 16), (40, 7)]:
        layer = SpectralNormLinear(in_f, out_f, coefficient=0.8).to(F64)
        with torch.no_grad():
            layer.weight.normal_()
        sigma = torch.linalg.matrix_norm(layer.weight, 2)
        torch.testing.assert_close(layer.sigma(), sigma, atol=0, rtol=1e-10)
        torch.testing.assert_close(
            torch.linalg.matrix_norm(layer.normalized_weight(), 2), torch.tensor(0.8, dtype=F64)
        )
    small = SpectralNormLinear(4, 4, coefficient=0.8).to(F64)
    with torch.no_grad():
        small.weight.mul_(0.1 / torch.linalg.matrix_norm(small.weight, 2))
    assert torch.equal(small.normalized_weight(), small.weight)  # already below c: unchanged


def test_spectral_norm_gradient_is_the_top_singular_pair() -> None:
    torch.manual_seed(1)
    w = torch.randn(6, 4, dtype=F64)
    layer = SpectralNormLinear(4, 6).to(F64)
    with torch.no_grad():
        layer.weight.copy_(w)
    layer.sigma().backward()
    exact = w.clone().requires_grad_()
    torch.linalg.matrix_norm(exact, 2).backward()
    # u and v are accurate to about the square root of sigma's tolerance
    torch.testing.assert_close(layer.weight.grad, exact.grad, atol=1e-6, rtol=1e-6)


def test_power_iteration_writes_its_buffer_only_when_it_moved() -> None:
    """The buffer's version is part of ``BijectiveMode``'s staleness check: it must stay put
    while the weight does."""
    torch.manual_seed(2)
    layer = SpectralNormLinear(5, 8).to(F64)
    layer.sigma()  # converges from the random start and stores u
    version = layer.u._version
    for _ in range(3):
        layer.normalized_weight()
    assert layer.u._version == version
    with torch.no_grad():
        layer.weight.add_(0.3 * torch.randn(8, 5, dtype=F64))
    layer.sigma()
    assert layer.u._version > version


def test_exact_spectral_norm_has_no_state_to_update() -> None:
    torch.manual_seed(3)
    layer = SpectralNormLinear(3, 5, exact=True).to(F64)
    with torch.no_grad():
        layer.weight.normal_()
    version = layer.u._version
    torch.testing.assert_close(layer.sigma(), torch.linalg.matrix_norm(layer.weight, 2))
    assert layer.u._version == version


VALUE_ERRORS: list[tuple[str, Callable[[], Any], str]] = [
    (
        "SpectralNormLinear coefficient",
        lambda: SpectralNormLinear(2, 2, coefficient=0.0),
        "SpectralNormLinear: coefficient must be positive, got 0.0",
    ),
]


@pytest.mark.parametrize(("make", "match"), [c[1:] for c in VALUE_ERRORS], ids=[c[0] for c in VALUE_ERRORS])
def test_bad_values_are_named(make: Callable[[], Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


REPRS: list[tuple[str, Callable[[], Any], str]] = [
    (
        "SpectralNormLinear",
        lambda: SpectralNormLinear(3, 4, coefficient=0.5, bias=False, exact=True),
        "in_features=3, out_features=4, coefficient=0.5, bias=False, exact=True",
    ),
]


@pytest.mark.parametrize(("make", "expected"), [c[1:] for c in REPRS], ids=[c[0] for c in REPRS])
def test_extra_repr_shows_the_hyperparameters(make: Callable[[], Any], expected: str) -> None:
    module = make()
    assert module.extra_repr() == expected
    text = repr(module)
    assert text.startswith(f"{type(module).__name__}(") and expected in text
