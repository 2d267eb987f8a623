"""ChannelAffineCoupling: bad hyperparameters, the soft clamp, a context wider than the input, repr."""

from __future__ import annotations

import pytest
import torch

from flowtorch.bijectors.channel_coupling import ChannelAffineCoupling
from flowtorch.parameters.conv_coupling import ConvCoupling

S = torch.Size
F64 = torch.float64


def _build(shape: tuple[int, ...], context_shape: tuple[int, ...] | None = None, **kwargs: object):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    b = ChannelAffineCoupling(ConvCoupling(hidden_channels=4), **kwargs)(
        shape=S(shape), context_shape=None if context_shape is None else S(context_shape)
    )
    with torch.no_grad():  # large enough parameters for the clamp to matter
        for p in b.parameters():
            p.normal_(0.0, 1.0)
    return b.to(F64)


@pytest.mark.parametrize(
    ("shape", "kwargs", "match"),
    [
        ((4, 4), {}, r"needs a \(C, H, W\) event, got shape \(4, 4\)"),
        ((2, 3, 3, 3), {}, r"needs a \(C, H, W\) event, got shape \(2, 3, 3, 3\)"),
        ((1, 2, 2), {}, r"identity_channels must be an integer in \[1, 0\] for 1 channels"),
        ((4, 2, 2), {"identity_channels": 0}, r"in \[1, 3\] for 4 channels .* got 0"),
        ((4, 2, 2), {"identity_channels": 4}, r"in \[1, 3\] for 4 channels .* got 4"),
        ((4, 2, 2), {"identity_channels": 1.5}, r"got 1\.5"),
        ((4, 2, 2), {"identity_channels": True}, r"got True"),
        ((4, 2, 2), {"log_scale_max_clip": 0.0}, r"must be finite and contain 0 .* got \(-3.0, 0.0\)"),
        (
            (4, 2, 2),
            {"log_scale_min_clip": 4.0},
            r"log_scale_min_clip \(4.0\) must be below log_scale_max_clip",
        ),
        (
            (4, 2, 2),
            {"log_scale_max_clip": float("nan")},
            r"ChannelAffineCoupling: log_scale_min_clip \(-3.0\) must be below",
        ),
    ],
)
def test_bad_hyperparameters_are_named(shape, kwargs, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=match):
        ChannelAffineCoupling(**kwargs)(shape=S(shape))


@pytest.mark.parametrize("clip", [0.1, 3.0])
def test_log_scale_is_softly_clamped_into_the_clip_bounds(clip: float) -> None:
    b = _build((3, 2, 2), identity_channels=1, log_scale_min_clip=-clip, log_scale_max_clip=clip)
    x = torch.randn(5, 3, 2, 2, dtype=F64)
    y, ladj = b.forward_and_ladj(x)
    shift, raw = b.params_fn(x[:, :1])
    s = raw / (1 + raw.abs() / clip)  # the formula of the docstring, by hand
    torch.testing.assert_close(y[:, :1], x[:, :1])
    torch.testing.assert_close(y[:, 1:], x[:, 1:] * s.exp() + shift)
    torch.testing.assert_close(ladj, s.sum((-3, -2, -1)))
    assert bool((ladj.abs() <= clip * 8).all())  # 8 transformed elements, each within +-clip
    torch.testing.assert_close(b.inverse(y), x)


def test_a_context_batch_wider_than_the_input_expands_the_identity_channels() -> None:
    b = _build((2, 2, 2), (2,))
    x = torch.randn(2, 2, 2, dtype=F64)  # one event, no batch dims
    c = torch.randn(4, 2, dtype=F64)  # four contexts
    y, ladj = b.forward_and_ladj(x, c)
    assert y.shape == (4, 2, 2, 2) and ladj.shape == (4,)
    for i in range(4):
        torch.testing.assert_close(y[i, :1], x[:1])

        def f(v: torch.Tensor, i: int = i) -> torch.Tensor:
            return b.forward(v.reshape(2, 2, 2), c[i]).reshape(-1)

        jac = torch.autograd.functional.jacobian(f, x.reshape(-1))
        torch.testing.assert_close(y[i], f(x.reshape(-1)).reshape(2, 2, 2))
        torch.testing.assert_close(ladj[i], torch.linalg.slogdet(jac)[1])
    # the same numbers as with the input expanded to the context's batch
    y_expanded = b.forward(x.expand(4, 2, 2, 2), c)
    torch.testing.assert_close(y, y_expanded)
    torch.testing.assert_close(b.log_abs_det_jacobian(x, y, c), ladj)
    x_back, ladj_back = b.inverse_and_ladj(y, c)
    torch.testing.assert_close(x_back, x.expand(4, 2, 2, 2))
    torch.testing.assert_close(ladj_back, ladj)


def test_extra_repr_names_the_hyperparameters() -> None:
    b = ChannelAffineCoupling(
        ConvCoupling(hidden_channels=2), identity_channels=1, log_scale_min_clip=-2, log_scale_max_clip=2
    )(shape=S([3, 2, 2]), context_shape=S([5]))
    assert b.extra_repr() == (
        "shape=(3, 2, 2), context_shape=(5,), identity_channels=1, "
        "log_scale_min_clip=-2.0, log_scale_max_clip=2.0"
    )
    assert b.params_fn.input_shape == (1, 2, 2) and b.param_shapes() == (S([2, 2, 2]), S([2, 2, 2]))
    default = ChannelAffineCoupling()(shape=S([5, 1, 1]))
    assert default.identity_channels == 2 and "log_scale_min_clip=-3.0, log_scale_max_clip=3.0" in repr(
        default
    )
