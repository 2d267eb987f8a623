"""ConvCoupling: bad shapes and hyperparameters, image and flattened contexts, broadcasting, repr."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from flowtorch.parameters.conv_coupling import ConvCoupling

S = torch.Size


def _build(
    input_shape: tuple[int, ...],
    param_shapes: list[tuple[int, ...]],
    context_shape: tuple[int, ...] | None = None,
    **kwargs: object,
) -> ConvCoupling:
    torch.manual_seed(0)
    net = ConvCoupling(**kwargs)(
        param_shapes=[S(s) for s in param_shapes],
        input_shape=S(input_shape),
        context_shape=None if context_shape is None else S(context_shape),
    )
    with torch.no_grad():  # away from the small initialisation of the last layer
        for p in net.parameters():
            p.normal_(0.0, 0.5)
    return net.double()  # type: ignore[no-any-return]


def _by_hand(net: ConvCoupling, h: torch.Tensor) -> torch.Tensor:
    """Glow's three convolutions with ReLU, written with ``F.conv2d`` on the module's weights."""
    first, middle, last = net.net[0], net.net[2], net.net[4]
    pad = first.kernel_size[0] // 2
    h = F.relu(F.conv2d(h, first.weight, first.bias, padding=pad))
    h = F.relu(F.conv2d(h, middle.weight, middle.bias))
    return F.conv2d(h, last.weight, last.bias, padding=pad)


@pytest.mark.parametrize(
    ("input_shape", "param_shapes", "context_shape", "kwargs", "match"),
    [
        ((2, 4), [(2, 4)], None, {}, r"input must be a \(C, H, W\) image, got shape \(2, 4\)"),
        ((2, 4, 4), [(2, 4, 5)], None, {}, r"parameter shape \(2, 4, 5\) must be \(channels, 4, 4\)"),
        ((2, 4, 4), [(2, 16)], None, {}, r"parameter shape \(2, 16\) must be \(channels, 4, 4\)"),
        ((2, 4, 4), [(0, 4, 4)], None, {}, r"parameter shape \(0, 4, 4\) must be"),
        ((2, 4, 4), [(2, 4, 4)], None, {"hidden_channels": 0}, "hidden_channels must be positive, got 0"),
        (
            (2, 4, 4),
            [(2, 4, 4)],
            None,
            {"kernel_size": 2},
            "kernel_size must be a positive odd integer, got 2",
        ),
        ((2, 4, 4), [(2, 4, 4)], None, {"kernel_size": -1}, "kernel_size must be a positive odd integer"),
        ((0, 4, 4), [(2, 4, 4)], None, {}, "no identity channels and no context"),
    ],
)
def test_bad_shapes_and_hyperparameters_are_named(  # type: ignore[no-untyped-def]
    input_shape, param_shapes, context_shape, kwargs, match
) -> None:
    with pytest.raises(ValueError, match=match):
        _build(input_shape, param_shapes, context_shape, **kwargs)


def test_no_identity_channels_but_a_context_is_allowed() -> None:
    net = _build((0, 3, 3), [(1, 3, 3)], (2,), hidden_channels=4)
    c = torch.randn(5, 2, dtype=torch.float64)
    (out,) = net(torch.zeros(5, 0, 3, 3, dtype=torch.float64), c)
    expected = _by_hand(net, c[:, :, None, None].expand(5, 2, 3, 3))
    torch.testing.assert_close(out, expected)


def test_missing_input_or_context_is_named() -> None:
    net = _build((1, 3, 3), [(1, 3, 3)], (2,), hidden_channels=4)
    with pytest.raises(ValueError, match="needs the identity channels"):
        net(None, torch.zeros(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="ConvCoupling is conditional, but no context was given"):
        net(torch.zeros(1, 3, 3, dtype=torch.float64))


def test_image_context_is_used_as_channels_pixel_by_pixel() -> None:
    net = _build((2, 3, 4), [(1, 3, 4), (1, 3, 4)], (3, 3, 4), hidden_channels=6)
    assert net._image_context and net.net[0].in_channels == 5
    x = torch.randn(2, 2, 3, 4, dtype=torch.float64)
    c = torch.randn(2, 3, 3, 4, dtype=torch.float64)
    shift, log_scale = net(x, c)
    expected = _by_hand(net, torch.cat([x, c], dim=1))
    torch.testing.assert_close(torch.cat([shift, log_scale], dim=1), expected)
    assert shift.shape == log_scale.shape == (2, 1, 3, 4)


def test_image_context_broadcasts_against_the_input_batch() -> None:
    net = _build((1, 2, 2), [(2, 2, 2)], (1, 2, 2), hidden_channels=3)
    x = torch.randn(4, 1, 1, 2, 2, dtype=torch.float64)  # batch (4, 1)
    c = torch.randn(3, 1, 2, 2, dtype=torch.float64)  # batch (3,)
    (out,) = net(x, c)
    assert out.shape == (4, 3, 2, 2, 2)
    for i in range(4):
        for j in range(3):
            expected = _by_hand(net, torch.cat([x[i], c[j : j + 1]], dim=1))[0]
            torch.testing.assert_close(out[i, j], expected)


def test_flat_context_is_broadcast_over_the_pixels() -> None:
    net = _build((1, 2, 3), [(2, 2, 3)], (2, 2), hidden_channels=4)  # not an image of (H, W)
    assert not net._image_context and net.net[0].in_channels == 1 + 4
    x = torch.randn(1, 2, 3, dtype=torch.float64)  # no batch dims
    c = torch.randn(5, 2, 2, dtype=torch.float64)
    (out,) = net(x, c)
    assert out.shape == (5, 2, 2, 3)
    planes = c.reshape(5, 4, 1, 1).expand(5, 4, 2, 3)
    expected = _by_hand(net, torch.cat([x.expand(5, 1, 2, 3), planes], dim=1))
    torch.testing.assert_close(out, expected)


def test_extra_repr_names_the_shapes_and_the_width() -> None:
    net = ConvCoupling(hidden_channels=8)(
        param_shapes=[S([2, 4, 4])], input_shape=S([2, 4, 4]), context_shape=S([3])
    )
    assert net.extra_repr() == "input_shape=(2, 4, 4), context_shape=(3,), hidden_channels=8"
    plain = ConvCoupling(hidden_channels=5)(param_shapes=[S([1, 2, 2])], input_shape=S([1, 2, 2]))
    assert plain.extra_repr() == "input_shape=(1, 2, 2), hidden_channels=5"
    assert "hidden_channels=5" in repr(plain)


def test_without_a_context_the_parameters_are_cut_in_order() -> None:
    net = _build((2, 3, 3), [(1, 3, 3), (2, 3, 3)], None, hidden_channels=4, kernel_size=1)
    x = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    first, second = net(x)
    expected = _by_hand(net, x)
    torch.testing.assert_close(first, expected[:, :1])
    torch.testing.assert_close(second, expected[:, 1:])
