"""A Glow-like flow on 8x8 single-channel images, built from the library's bijectors alone."""

from __future__ import annotations

import math

import pytest
import torch

import flowtorch
import flowtorch.distributions as dist
from flowtorch.bijectors.channel_coupling import ChannelAffineCoupling
from flowtorch.bijectors.reshape import Squeeze, Unsqueeze
from flowtorch.core.bijector import Bijector
from flowtorch.core.combinators import FactorOut
from flowtorch.parameters.base import Parameters
from flowtorch.recipes import Glow

SHAPE = torch.Size([1, 8, 8])
D = SHAPE.numel()


def synthetic_images(n: int, seed: int) -> torch.Tensor:
    """Random bars and blobs on a dark background, quantised to 8 bits, in ``[0, 1]``."""
    g = torch.Generator().manual_seed(seed)
    grid = torch.arange(8.0)
    images = torch.zeros(n, 8, 8)
    kind = torch.randint(0, 3, (n,), generator=g)
    pos = torch.randint(1, 7, (n, 2), generator=g).float()
    brightness = 0.6 + 0.4 * torch.rand(n, generator=g)
    for i in range(n):
        if kind[i] == 0:  # horizontal bar
            images[i, int(pos[i, 0])] = 1.0
        elif kind[i] == 1:  # vertical bar
            images[i, :, int(pos[i, 1])] = 1.0
        else:  # gaussian blob
            d2 = (grid[:, None] - pos[i, 0]) ** 2 + (grid[None, :] - pos[i, 1]) ** 2
            images[i] = torch.exp(-d2 / 3.0)
    images = images * brightness[:, None, None] + 0.05 * torch.rand(n, 8, 8, generator=g)
    return (images.clamp(0, 1) * 255).round().unsqueeze(1) / 255  # (n, 1, 8, 8)


def dequantise(images: torch.Tensor, seed: int) -> torch.Tensor:
    """Uniform dequantisation to ``[-0.5, 0.5)``, as Glow's preprocessing."""
    g = torch.Generator().manual_seed(seed)
    return (images * 255 + torch.rand(images.shape, generator=g)) / 256 - 0.5


def bits_per_dim(log_prob: torch.Tensor) -> torch.Tensor:
    """NLL of the 8-bit images in bits per dimension (the 1/256 bins of the dequantisation)."""
    return (-log_prob / D + math.log(256)) / math.log(2)


def make_flow(seed: int = 0, **kwargs: object) -> dist.Flow:
    torch.manual_seed(seed)
    base = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(SHAPE), 1.0), 3)
    options = {"levels": 2, "steps": 2, "hidden_channels": 16, **kwargs}
    return dist.Flow(base, Glow(**options))  # type: ignore[arg-type]


def _count(module: torch.nn.Module, name: str) -> int:
    return sum(type(m).__name__ == name for m in module.modules())


def test_glow_builds_the_multiscale_architecture() -> None:
    flow = make_flow()
    b = flow.bijector
    assert b.shape == SHAPE and b.out_shape == SHAPE and flow.event_shape == SHAPE
    assert _count(b, "ActNorm") == 4 and _count(b, "Invertible1x1Conv") == 4
    assert sum(isinstance(m, ChannelAffineCoupling) for m in b.modules()) == 4
    (factor_out,) = [m for m in b.modules() if isinstance(m, FactorOut)]
    assert factor_out.shape == (4, 4, 4) and factor_out.keep == 2  # half of the squeezed channels
    assert factor_out.bijector.shape == (2, 4, 4)
    assert sum(isinstance(m, Squeeze) and not isinstance(m, Unsqueeze) for m in b.modules()) == 2
    # three levels: (1, 8, 8) -> (4, 4, 4) -> (8, 2, 2) -> (16, 1, 1)
    assert _count(make_flow(levels=3, steps=1).bijector, "FactorOut") == 2


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="permutation must be one of"):
        Glow(permutation="shuffle")
    with pytest.raises(ValueError, match="levels must be a positive integer"):
        Glow(levels=0)
    with pytest.raises(ValueError, match="divisible by factor=2"):
        make_flow(levels=4)  # 8x8 has only three halvings


def test_round_trip_and_log_prob_shapes() -> None:
    flow = make_flow()
    x = dequantise(synthetic_images(32, seed=1), seed=2)
    flow.log_prob(x)  # ActNorm's data-dependent initialisation on a first batch
    with torch.no_grad():  # move the couplings away from their near-identity start
        for m in flow.modules():
            if isinstance(m, Parameters):
                last = m.net[-1]  # type: ignore[index]
                last.weight.normal_(0.0, 0.05)
                last.bias.normal_(0.0, 0.05)
    b: Bijector = flow.bijector
    z = b.inverse(x)
    assert z.shape == x.shape and z.dtype == torch.float32
    torch.testing.assert_close(b.forward(z), x, atol=1e-4, rtol=0)
    samples = flow.sample((6,))
    torch.testing.assert_close(b.forward(b.inverse(samples)), samples, atol=1e-4, rtol=1e-4)
    assert flow.log_prob(x).shape == (32,)
    assert flow.log_prob(x.view(4, 8, *SHAPE)).shape == (4, 8)
    y, lp = flow.rsample_and_log_prob((5,))
    assert y.shape == (5, *SHAPE) and lp.shape == (5,)
    torch.testing.assert_close(lp, flow.log_prob(y), atol=1e-3, rtol=1e-4)


def test_log_det_matches_the_autograd_jacobian() -> None:
    flow = make_flow(steps=1, hidden_channels=4).double()
    x = dequantise(synthetic_images(8, seed=3), seed=4).double()
    flow.log_prob(x)  # initialise ActNorm
    encoder = flow.bijector.bijector  # Invert(encoder): log_prob runs the encoder
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x0 = x[0]
    jac = torch.autograd.functional.jacobian(
        lambda t: encoder.forward(t.view(SHAPE)).reshape(D), x0.reshape(D)
    )
    expected = torch.linalg.slogdet(jac)[1]
    torch.testing.assert_close(encoder.forward_and_ladj(x0)[1], expected, atol=1e-8, rtol=1e-8)
    torch.testing.assert_close(flow.bijector.inverse_and_ladj(x0)[1], -expected, atol=1e-8, rtol=1e-8)


def _train(flow: dist.Flow, steps: int, context: torch.Tensor | None = None) -> tuple[float, float]:
    train = synthetic_images(256, seed=10)
    test = dequantise(synthetic_images(128, seed=11), seed=12)
    flow.log_prob(dequantise(train[:128], seed=0), context=None if context is None else context[:128])
    with torch.no_grad():
        before = bits_per_dim(flow.log_prob(test, context=context)).mean().item()
    opt = torch.optim.Adam(flow.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(13)
    for step in range(steps):
        idx = torch.randint(0, 256, (64,), generator=g)
        x = dequantise(train[idx], seed=100 + step)
        loss = bits_per_dim(flow.log_prob(x, context=None if context is None else context[idx % 128])).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = bits_per_dim(flow.log_prob(test, context=context)).mean().item()
    return before, after


def test_training_lowers_the_bits_per_dim() -> None:
    flow = make_flow(seed=0)
    before, after = _train(flow, 30)
    assert math.isfinite(after) and after < before - 0.3, (before, after)


def test_reverse_permutation_without_actnorm_trains_too() -> None:
    flow = make_flow(seed=1, actnorm=False, permutation="reverse", steps=2)
    assert _count(flow, "ActNorm") == 0 and _count(flow, "Reverse") == 4
    before, after = _train(flow, 15)
    assert after < before, (before, after)


def test_conditional_glow() -> None:
    flow = make_flow(context_shape=(3,), steps=1, hidden_channels=8)
    assert flow.context_shape == (3,)
    x = dequantise(synthetic_images(4, seed=5), seed=6)
    c = torch.randn(4, 3)
    flow.log_prob(x, context=c)
    with torch.no_grad():
        for m in flow.modules():
            if isinstance(m, Parameters):
                m.net[-1].weight.normal_(0.0, 0.05)  # type: ignore[index]
    lp = flow.log_prob(x, context=c)
    assert lp.shape == (4,)
    assert not torch.allclose(lp, flow.log_prob(x, context=c.flip(0)))
    assert flow.sample((2,), context=c).shape == (2, 4, *SHAPE)


def test_samples_are_scored_from_the_cache() -> None:
    flow = make_flow(steps=1)
    flow.log_prob(dequantise(synthetic_images(16, seed=7), seed=8))  # initialise ActNorm
    calls = [0]
    for m in flow.modules():
        if isinstance(m, Parameters):
            m.register_forward_hook(lambda *args: calls.__setitem__(0, calls[0] + 1))
    with flowtorch.BijectiveMode():
        y = flow.rsample((4,))
        n = calls[0]
        lp = flow.log_prob(y)
        assert calls[0] == n
    torch.testing.assert_close(lp, flow.log_prob(y), atol=1e-3, rtol=1e-4)
