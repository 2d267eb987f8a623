"""ActNorm and BatchNorm: data-dependent initialisation, batch statistics, log-dets, caching."""

from __future__ import annotations

import copy
import io
from collections.abc import Callable
from typing import Any

import pytest
import torch

import flowtorch
import flowtorch.distributions as dist
from flowtorch.bijectors.linear import LULinear
from flowtorch.bijectors.normalization import ActNorm, BatchNorm
from flowtorch.core.compose import Compose, Invert
from flowtorch.parameters import Tensor

S = torch.Size

DT = torch.float64


def jacobian_ladj(f, x: torch.Tensor) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """log|det J| of ``f`` at one event ``x``, from the autograd Jacobian."""
    n = x.numel()
    jac = torch.autograd.functional.jacobian(lambda t: f(t.reshape(x.shape)).reshape(n), x.reshape(n))
    return torch.linalg.slogdet(jac)[1]


def per_feature(t: torch.Tensor, fdim: int) -> tuple[torch.Tensor, torch.Tensor]:
    dims = [d for d in range(t.dim()) if d != t.dim() + fdim]
    return t.mean(dims), t.var(dims, correction=0)


# ----------------------------------------------------------------------------- ActNorm
@pytest.mark.parametrize(("shape", "dim"), [((3,), -1), ((2, 4, 4), -3), ((2, 4, 4), 0), ((4, 3), -1)])
def test_actnorm_forward_initialisation_standardises_the_first_batch(
    shape: tuple[int, ...], dim: int
) -> None:
    torch.manual_seed(0)
    b = ActNorm(dim=dim)(shape=torch.Size(shape)).to(DT)
    assert not b.is_initialized()
    x = 5.0 + 3.0 * torch.randn(32, *shape, dtype=DT)
    y = b.forward(x)
    assert b.is_initialized() and bool(b.initialized)
    fdim = dim - len(shape) if dim >= 0 else dim
    mean, var = per_feature(y, fdim)
    torch.testing.assert_close(mean, torch.zeros_like(mean), atol=1e-10, rtol=0)
    torch.testing.assert_close(var, torch.ones_like(var), atol=1e-6, rtol=0)
    # later batches do not re-initialise
    loc = b.loc.detach().clone()
    y2 = b.forward(x[:8] * 2)
    assert torch.equal(b.loc, loc)
    torch.testing.assert_close(y2, (x[:8] * 2 - b._expand(b.loc)) * b._expand(torch.exp(-b.log_scale)))


def test_actnorm_initialises_from_the_inverse_direction() -> None:
    torch.manual_seed(0)
    b = ActNorm()(shape=torch.Size([3])).to(DT)
    y = -2.0 + 0.5 * torch.randn(64, 3, dtype=DT)
    x, ladj = b.inverse_and_ladj(y)  # as Flow.log_prob would: x is standardised
    mean, var = per_feature(x, -1)
    torch.testing.assert_close(mean, torch.zeros(3, dtype=DT), atol=1e-10, rtol=0)
    torch.testing.assert_close(var, torch.ones(3, dtype=DT), atol=1e-5, rtol=0)  # var(y) / (var(y) + eps)
    y2, ladj2 = b.forward_and_ladj(x)
    torch.testing.assert_close(y2, y)
    torch.testing.assert_close(ladj2, ladj)
    torch.testing.assert_close(ladj, -b.log_scale.sum().expand(64))


def test_actnorm_initialisation_survives_state_dict_and_torch_save() -> None:
    torch.manual_seed(0)
    b = ActNorm(dim=-3)(shape=torch.Size([2, 3, 3]))
    b.forward(1.0 + torch.randn(8, 2, 3, 3))
    assert "initialized" in b.state_dict()
    fresh = ActNorm(dim=-3)(shape=torch.Size([2, 3, 3]))
    fresh.load_state_dict(b.state_dict())
    buf = io.BytesIO()
    torch.save(b, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    x = 7.0 * torch.randn(8, 2, 3, 3)
    expected = b.forward(x)
    for other in (fresh, loaded, copy.deepcopy(b)):
        assert other.is_initialized()
        torch.testing.assert_close(other.forward(x), expected)  # not re-initialised from x


def test_actnorm_eval_mode_does_not_initialise_and_a_single_value_is_an_error() -> None:
    b = ActNorm()(shape=torch.Size([3])).eval()
    x = torch.randn(4, 3)
    torch.testing.assert_close(b.forward(x), x)  # the identity until initialised
    assert not b.is_initialized()
    b.train()
    with pytest.raises(ValueError, match="more than one value per feature"):
        b.forward(torch.randn(3))
    with pytest.raises(ValueError, match="more than one value per feature"):
        b.inverse(torch.randn(1, 3))
    assert not b.is_initialized()
    b.forward(x)
    assert b.is_initialized()
    # resetting the buffer asks for a new initialisation (the host-side flag follows it)
    b.initialized.fill_(False)
    assert not b.is_initialized()


def test_actnorm_autograd_jacobian_and_gradients() -> None:
    torch.manual_seed(0)
    b = ActNorm(dim=-3)(shape=torch.Size([2, 3, 3])).to(DT)
    x = torch.randn(16, 2, 3, 3, dtype=DT)
    b.forward(x)
    with torch.no_grad():
        b.loc.normal_()
        b.log_scale.normal_()
    x0 = torch.randn(2, 3, 3, dtype=DT)
    _, ladj = b.forward_and_ladj(x0)
    torch.testing.assert_close(ladj, jacobian_ladj(b.forward, x0))
    y, ladj = b.forward_and_ladj(x)
    (y.sum() + ladj.sum()).backward()
    assert b.loc.grad is not None and b.loc.grad.abs().min() > 0
    assert b.log_scale.grad is not None and b.log_scale.grad.abs().min() > 0


def test_actnorm_in_bijective_mode() -> None:
    torch.manual_seed(0)
    b = ActNorm()(shape=torch.Size([3]))
    x = torch.randn(8, 3)
    with flowtorch.BijectiveMode():
        y = b.forward(x)  # initialises, then records: the entry is fresh
        assert b.inverse(y) is x
    # uninitialised in eval mode the map is the identity, but the next training call
    # initialises: an entry recorded before must not be served after
    b2 = ActNorm()(shape=torch.Size([3])).eval()
    with flowtorch.BijectiveMode():
        y2 = b2.forward(x)
        b2.train()
        x2 = b2.inverse(y2)  # initialises from y2
        assert x2 is not x
        assert b2.is_initialized()
        torch.testing.assert_close(per_feature(x2, -1)[0], torch.zeros(3), atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------- BatchNorm
def batchnorm(shape: tuple[int, ...] = (3,), dim: int = -1, **kwargs: object) -> BatchNorm:
    torch.manual_seed(0)
    b = BatchNorm(dim=dim, **kwargs)(shape=torch.Size(shape)).to(DT)
    with torch.no_grad():
        b.log_gamma.normal_(0.0, 0.5)
        b.beta.normal_()
    return b


@pytest.mark.parametrize(("shape", "dim"), [((3,), -1), ((2, 3, 3), -3)])
def test_batchnorm_training_normalises_and_tracks_running_statistics(
    shape: tuple[int, ...], dim: int
) -> None:
    b = batchnorm(shape, dim, momentum=0.2)
    # torch's own batch norm keeps the same running statistics
    ref = (torch.nn.BatchNorm1d if len(shape) == 1 else torch.nn.BatchNorm2d)(
        shape[dim], momentum=0.2, affine=False, dtype=DT
    )
    for i in range(3):
        x = float(i) + 2.0 * torch.randn(16, *shape, dtype=DT)
        y = b.forward(x)
        expected = ref(x) * b._expand(b.log_gamma.exp()) + b._expand(b.beta)
        torch.testing.assert_close(y, expected)
        torch.testing.assert_close(b.running_mean, ref.running_mean)
        torch.testing.assert_close(b.running_var, ref.running_var)
        torch.testing.assert_close(b.batch_mean, per_feature(x, dim)[0])
        torch.testing.assert_close(b.batch_var, per_feature(x, dim)[1])
    b.eval()
    ref.eval()
    x = torch.randn(5, *shape, dtype=DT)
    torch.testing.assert_close(b.forward(x), ref(x) * b._expand(b.log_gamma.exp()) + b._expand(b.beta))


@pytest.mark.parametrize(("shape", "dim"), [((3,), -1), ((2, 3, 3), -3)])
def test_batchnorm_log_det_against_autograd_in_train_and_eval_mode(shape: tuple[int, ...], dim: int) -> None:
    b = batchnorm(shape, dim)
    x = 1.0 + 2.0 * torch.randn(16, *shape, dtype=DT)
    # training mode: the log-det of the batch-statistic map, statistics held constant
    y, ladj = b.forward_and_ladj(x)
    torch.testing.assert_close(b.log_abs_det_jacobian(x, y), ladj)
    x2, ladj_inv = b.inverse_and_ladj(y)  # the inverse of the map forward just applied
    torch.testing.assert_close(x2, x)
    torch.testing.assert_close(ladj_inv, ladj)
    # the same map with the statistics fixed: copy them into the running buffers, use eval mode
    fixed = copy.deepcopy(b)
    with torch.no_grad():
        fixed.running_mean.copy_(b.batch_mean)
        fixed.running_var.copy_(b.batch_var)
    fixed.eval()
    torch.testing.assert_close(fixed.forward(x), y)
    for i in (0, 7):
        torch.testing.assert_close(ladj[i], jacobian_ladj(fixed.forward, x[i]))
    # eval mode with the running statistics
    b.eval()
    y_eval, ladj_eval = b.forward_and_ladj(x[:3])
    assert not torch.allclose(ladj_eval, ladj[:3])
    for i in range(3):
        torch.testing.assert_close(ladj_eval[i], jacobian_ladj(b.forward, x[i]))
    torch.testing.assert_close(b.log_abs_det_jacobian(x[:3], y_eval), ladj_eval)
    torch.testing.assert_close(b.inverse(y_eval), x[:3])


def test_batchnorm_training_gradients_flow_through_the_statistics() -> None:
    b = batchnorm()
    x = torch.randn(8, 3, dtype=DT, requires_grad=True)
    y, ladj = b.forward_and_ladj(x)
    # each output feature has mean beta whatever x is: the gradient of its sum w.r.t. x is zero
    (gx,) = torch.autograd.grad(y.sum(), x, retain_graph=True)
    torch.testing.assert_close(gx, torch.zeros_like(gx), atol=1e-12, rtol=0)
    ladj.sum().backward()
    assert b.log_gamma.grad is not None and x.grad is not None and x.grad.abs().sum() > 0


def test_batchnorm_in_bijective_mode_training_is_a_correct_miss() -> None:
    b = batchnorm()
    x = 1.0 + 2.0 * torch.randn(16, 3, dtype=DT)
    x_other = torch.randn(16, 3, dtype=DT)
    twin = copy.deepcopy(b)
    with flowtorch.BijectiveMode():
        y = b.forward(x)  # updates the running statistics in place
        x2 = b.inverse(y)
        assert x2 is not x  # a miss, recomputed from the statistics forward stored
        torch.testing.assert_close(x2, x)
        _, ladj = b.inverse_and_ladj(y)
        b.forward(x_other)  # a new batch redefines the map
        x3 = b.inverse(y)
        # an inverse's output normalised afresh, as outside the mode (running stats move again)
        z = torch.randn(16, 3, dtype=DT)
        xz = b.inverse(z)
        yz = b.forward(xz)
        assert yz is not z
    # the same calls outside the mode give the same numbers and the same buffers
    torch.testing.assert_close(twin.forward(x), y)
    torch.testing.assert_close(twin.inverse(y), x2)
    torch.testing.assert_close(twin.inverse_and_ladj(y)[1], ladj)
    twin.forward(x_other)
    torch.testing.assert_close(twin.inverse(y), x3)
    torch.testing.assert_close(twin.forward(twin.inverse(z)), yz)
    for name, buf in b.named_buffers():
        torch.testing.assert_close(buf, dict(twin.named_buffers())[name], msg=name)


def test_batchnorm_in_bijective_mode_eval_is_cached_and_mode_switches_are_misses() -> None:
    b = batchnorm()
    b.forward(torch.randn(16, 3, dtype=DT))
    b.eval()
    x = torch.randn(4, 3, dtype=DT)
    with flowtorch.BijectiveMode():
        y = b.forward(x)
        assert b.inverse(y) is x
        assert b.log_abs_det_jacobian(x, y) is not None
        b.train()  # the training-mode map is another map: not served
        x2 = b.inverse(y)
        assert x2 is not x
        b.eval()
        y3 = b.forward(x)
        b.train()
        b.forward(torch.randn(16, 3, dtype=DT))  # moves the running statistics
        b.eval()
        x3 = b.inverse(y3)  # recorded before the running statistics moved: a miss
        assert x3 is not x
        torch.testing.assert_close(b.forward(x3), y3)


def test_inverted_batchnorm_trains_a_flow_by_maximum_likelihood() -> None:
    torch.manual_seed(0)
    base = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(2), torch.ones(2)), 1)
    flow = dist.Flow(base, Compose([LULinear(), Invert(BatchNorm())]))
    bn = flow.bijector.bijectors[1].bijector  # type: ignore[union-attr,index]
    data = 4.0 + 3.0 * torch.randn(64, 2)
    opt = torch.optim.Adam(flow.parameters(), lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        loss = -flow.log_prob(data).mean()
        loss.backward()
        opt.step()
    assert torch.isfinite(loss)
    # log_prob runs the layers backwards: the BatchNorm normalises the data itself, each step
    kept = 1 - 0.9**3
    torch.testing.assert_close(bn.running_mean, kept * data.mean(0))
    torch.testing.assert_close(bn.running_var, (1 - kept) + kept * data.var(0))
    assert all(p.grad is not None for p in flow.parameters())
    flow.eval()
    with torch.no_grad():
        assert flow.sample((5,)).shape == (5, 2)


def test_normalisation_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="dim=3 is not a dim"):
        ActNorm(dim=3)(shape=torch.Size([2, 3]))
    with pytest.raises(ValueError, match="momentum"):
        BatchNorm(momentum=0.0)(shape=torch.Size([3]))
    with pytest.raises(ValueError, match="eps"):
        ActNorm(eps=-1.0)(shape=torch.Size([3]))
    with pytest.raises(TypeError, match="takes no conditioner"):
        BatchNorm(Tensor())(shape=torch.Size([3]))
    b = BatchNorm()(shape=torch.Size([3]))
    with pytest.raises(ValueError, match="more than one value per feature"):
        b.forward(torch.randn(1, 3))
    with pytest.raises(ValueError, match="takes no context"):
        b.forward(torch.randn(2, 3), torch.randn(2, 2))


VALUE_ERRORS: list[tuple[str, Callable[[], Any], str]] = [
    (
        "BatchNorm eps=0",
        lambda: BatchNorm(eps=0.0)(shape=S([2])),
        "eps must be a positive number",
    ),
    (
        "BatchNorm eps=inf",
        lambda: BatchNorm(eps=float("inf"))(shape=S([2])),
        "BatchNorm: eps must be a positive number, got inf",
    ),
]


@pytest.mark.parametrize(("make", "match"), [c[1:] for c in VALUE_ERRORS], ids=[c[0] for c in VALUE_ERRORS])
def test_bad_values_are_named(make: Callable[[], Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


REPRS: list[tuple[str, Callable[[], Any], str]] = [
    (
        "ActNorm",
        lambda: ActNorm(dim=0)(shape=S([3, 2])),
        "shape=(3, 2), dim=-2",
    ),
    (
        "BatchNorm",
        lambda: BatchNorm(momentum=0.5, eps=1e-3)(shape=S([3])),
        "shape=(3,), dim=-1, momentum=0.5, eps=0.001",
    ),
]


@pytest.mark.parametrize(("make", "expected"), [c[1:] for c in REPRS], ids=[c[0] for c in REPRS])
def test_extra_repr_shows_the_hyperparameters(make: Callable[[], Any], expected: str) -> None:
    module = make()
    assert module.extra_repr() == expected
    text = repr(module)
    assert text.startswith(f"{type(module).__name__}(") and expected in text
