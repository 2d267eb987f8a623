"""Neural autoregressive flows: what the generic suite cannot see (the DSF maths and its tails, a
peer, BNAF's block structure and range, the numerical inverse's accuracy, learning)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import flowtorch.distributions as dist
import flowtorch.parameters as params
from flowtorch.bijectors.naf import BlockNeuralAutoregressive, NeuralAutoregressive
from flowtorch.bijectors.reverse import Reverse
from flowtorch.core.compose import Compose
from flowtorch.transformers import _MIN_SLOPE, _SOFTPLUS_ONE, DeepSigmoidTransformer
from tests.case import perturb


def _deep_sigmoid(y: torch.Tensor, *params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """NAF's transformer T and its log-slope."""
    return DeepSigmoidTransformer(hidden_units=params[0].shape[-1]).transform(y, params)


S = torch.Size

F64 = torch.float64


def random_dsf_params(
    batch: tuple[int, ...], k: int, dtype: torch.dtype, seed: int = 0
) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(*batch, k, generator=gen, dtype=dtype) * s for s in (1.0, 2.0, 1.0))


# --------------------------------------------------------------------------- the DSF transformer


def test_dsf_is_the_identity_at_zero_parameters() -> None:
    y = torch.linspace(-30, 30, 61, dtype=F64)
    zeros = torch.zeros(61, 5, dtype=F64)
    x, log_slope = _deep_sigmoid(y, zeros, zeros, zeros)
    torch.testing.assert_close(x, y, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(log_slope, torch.zeros_like(y), atol=1e-12, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=["f32", "f64"])
def test_dsf_log_slope_matches_autograd_and_is_finite_in_the_tails(dtype: torch.dtype) -> None:
    y = torch.cat([torch.linspace(-6, 6, 49), torch.tensor([-80.0, -25.0, 25.0, 80.0])]).to(dtype)
    a, b, w = random_dsf_params((y.numel(),), 6, dtype)
    y.requires_grad_()
    x, log_slope = _deep_sigmoid(y, a, b, w)
    assert torch.isfinite(x).all() and torch.isfinite(log_slope).all()
    (grad,) = torch.autograd.grad(x.sum(), y)
    assert (grad > 0).all()
    inner = slice(0, 49)  # where the derivative is not below the dtype's resolution
    tol = 1e-12 if dtype == F64 else 1e-4
    torch.testing.assert_close(log_slope[inner], grad[inner].log(), atol=tol, rtol=tol)
    # the tails are asymptotically linear with the smallest slope a_min: x grows without bound
    assert x[-1] > x[-2] > x[48] and x[49] < x[50] < x[0]


def test_dsf_agrees_with_pyro() -> None:
    """Peer check: pyro's NeuralAutoregressive (sigmoid activation) is the same DSF transformer."""
    pytest.importorskip("pyro")
    from pyro.distributions.transforms import NeuralAutoregressive as PyroNAF

    d, k = 3, 5
    a, b, w = random_dsf_params((d,), k, F64, seed=3)
    # pyro's slopes are softplus(its parameter): give it the pre-activation of ours
    slope = _MIN_SLOPE + F.softplus(a + _SOFTPLUS_ONE)
    pyro_a = slope + torch.log(-torch.expm1(-slope))

    class Fixed(torch.nn.Module):  # pyro's params have shape (..., K, D)
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            shape = (*x.shape[:-1], k, d)
            return (pyro_a.T.expand(shape), w.T.expand(shape), b.T.expand(shape))

    transform = PyroNAF(Fixed(), hidden_units=k)
    y = torch.randn(7, d, dtype=F64, generator=torch.Generator().manual_seed(1)) * 2
    theirs = transform(y)
    theirs_ladj = transform.log_abs_det_jacobian(y, theirs)
    ours, log_slope = _deep_sigmoid(y, a, b, w)
    value_diff = float((ours - theirs).abs().max())
    ladj_diff = float((log_slope.sum(-1) - theirs_ladj).abs().max())
    print(f"max |ours - pyro|: values {value_diff:.2e}, log-det {ladj_diff:.2e}")
    assert value_diff < 1e-12
    assert ladj_diff < 1e-6  # pyro adds 1e-8 inside log(a)


# --------------------------------------------------------------------------- NeuralAutoregressive


def test_naf_round_trips_across_the_real_line() -> None:
    """Sampling inverts the closed-form density direction to ``1e-12`` in float64, tails included
    (every sigmoid's slope is at least ``_MIN_SLOPE``, so the root of each dim is bracketed however
    far out the conditioner's outputs are; ``test_log_dets_are_finite_at_extreme_valid_inputs``
    goes to ``1e6``)."""
    torch.manual_seed(0)
    b = NeuralAutoregressive(params.DenseAutoregressive(hidden_dims=(16,)), hidden_units=6)(
        shape=(4,), context_shape=(2,)
    ).double()
    perturb(b)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(300, 4, dtype=F64, generator=gen) * torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=F64)
    c = torch.randn(300, 2, dtype=F64, generator=gen)
    y = b.forward(x, c)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(b.inverse(y, c), x, atol=1e-12, rtol=1e-12)
    # the Jacobian's diagonal: forward's log-det is minus the transformer's at y
    _, ladj = b.forward_and_ladj(x[:3], c[:3])
    _, ladj_inv = b.inverse_and_ladj(y[:3], c[:3])
    torch.testing.assert_close(ladj, ladj_inv, atol=1e-12, rtol=1e-12)


def test_naf_solvers_agree_and_a_loose_tolerance_still_round_trips() -> None:
    plan = params.DenseAutoregressive(hidden_dims=(8,), permutation="identity")
    torch.manual_seed(0)
    newton = NeuralAutoregressive(plan, hidden_units=4)(shape=(3,)).double()
    perturb(newton)
    bisection = NeuralAutoregressive(plan, hidden_units=4, solver="bisection")(shape=(3,)).double()
    bisection.load_state_dict(newton.state_dict())
    x = torch.randn(50, 3, dtype=F64)
    torch.testing.assert_close(newton.forward(x), bisection.forward(x), atol=1e-12, rtol=1e-12)
    # a loose tolerance still round trips well: the last Newton step squares the solver's error
    loose = NeuralAutoregressive(plan, hidden_units=4, tol=1e-3)(shape=(3,)).double()
    loose.load_state_dict(newton.state_dict())
    with torch.no_grad():
        assert float((loose.inverse(loose.forward(x)) - x).abs().max()) < 1e-5


def test_naf_bad_arguments() -> None:
    with pytest.raises(ValueError, match="hidden_units"):
        NeuralAutoregressive(hidden_units=0)(shape=(2,))
    with pytest.raises(ValueError, match="solver"):
        NeuralAutoregressive(solver="secant")(shape=(2,))
    with pytest.raises(ValueError, match="tol"):
        NeuralAutoregressive(tol=-1.0)(shape=(2,))
    with pytest.raises(ValueError, match="max_iter"):
        NeuralAutoregressive(max_iter=0)(shape=(2,))
    with pytest.raises(ValueError, match="at least one dim"):
        NeuralAutoregressive()(shape=())


# --------------------------------------------------------------------------- BNAF


def _bnaf(**kwargs: object) -> BlockNeuralAutoregressive:
    b: BlockNeuralAutoregressive = BlockNeuralAutoregressive(**kwargs)(shape=(4,)).double()
    perturb(b, 1.0)
    return b


def test_bnaf_is_block_triangular_with_positive_diagonal() -> None:
    b = _bnaf(hidden_units=3, hidden_layers=2)
    y = torch.randn(4, dtype=F64)
    jac = torch.autograd.functional.jacobian(lambda v: b.inverse(v), y)
    assert torch.equal(jac.triu(1), torch.zeros_like(jac))
    assert (jac.diagonal() > 0).all()
    _, ladj = b.inverse_and_ladj(y)  # the forward log-det: minus the network's
    torch.testing.assert_close(ladj, -torch.linalg.slogdet(jac)[1], atol=1e-12, rtol=1e-12)


def test_bnaf_weights_above_the_diagonal_blocks_are_ignored() -> None:
    b = _bnaf(hidden_units=2)
    y = torch.randn(6, 4, dtype=F64)
    before = b.inverse(y)
    with torch.no_grad():
        for layer, w in enumerate(b.weights):
            diagonal, below = b._masks(layer)
            w.add_((1 - diagonal - below) * torch.randn_like(w) * 10)
    assert torch.equal(b.inverse(y), before)


def test_bnaf_range_with_and_without_the_linear_slope() -> None:
    x = torch.tensor([[-200.0, 50.0, 0.0, 1e3]], dtype=F64)
    b = _bnaf(hidden_units=3, slope=0.1)  # onto R^D: far points have preimages
    torch.testing.assert_close(b.inverse(b.forward(x)), x, atol=1e-9, rtol=1e-12)
    tanh_only = _bnaf(hidden_units=3, slope=0.0)  # De Cao's tanh: a bounded image
    with pytest.raises(ValueError, match="outside the range"):
        tanh_only.forward(x)
    y = torch.randn(5, 4, dtype=F64)
    torch.testing.assert_close(tanh_only.forward(tanh_only.inverse(y)), y, atol=1e-10, rtol=1e-10)


def test_bnaf_bisection_and_gradients_of_the_numerical_direction() -> None:
    b = _bnaf(hidden_units=2, solver="bisection")
    x = torch.randn(3, 4, dtype=F64, requires_grad=True)
    y = b.forward(x)
    torch.testing.assert_close(b.inverse(y), x, atol=1e-11, rtol=1e-11)
    # implicit-function gradients: the Jacobian of forward is the inverse of the network's
    jac_forward = torch.autograd.functional.jacobian(lambda v: b.forward(v), x[0])
    jac_network = torch.autograd.functional.jacobian(lambda v: b.inverse(v), y[0].detach())
    torch.testing.assert_close(jac_forward @ jac_network, torch.eye(4, dtype=F64), atol=1e-10, rtol=1e-10)


def test_bnaf_bad_arguments() -> None:
    with pytest.raises(ValueError, match="hidden_units"):
        BlockNeuralAutoregressive(hidden_units=0)(shape=(2,))
    with pytest.raises(ValueError, match="hidden_layers"):
        BlockNeuralAutoregressive(hidden_layers=-1)(shape=(2,))
    with pytest.raises(ValueError, match="slope"):
        BlockNeuralAutoregressive(slope=-0.5)(shape=(2,))
    with pytest.raises(ValueError, match="solver"):
        BlockNeuralAutoregressive(solver="brent")(shape=(2,))


# --------------------------------------------------------------------------- learning


def two_moons(n: int, generator: torch.Generator) -> torch.Tensor:
    """Two interleaved half circles (the lower one shifted to (1, 0.5)) with noise 0.1."""
    label = torch.randint(0, 2, (n,), generator=generator).bool()
    t = math.pi * torch.rand(n, generator=generator)
    upper = torch.stack([t.cos(), t.sin()], -1)
    lower = torch.stack([1 - t.cos(), 0.5 - t.sin()], -1)
    return torch.where(label[:, None], lower, upper) + 0.1 * torch.randn(n, 2, generator=generator)


def test_naf_learns_two_moons() -> None:
    """Two NAF layers (K=16 sigmoids, MADE (64,)) with a Reverse between, 300 Adam steps (lr 1e-2,
    cosine) of 256 points from 2000: held-out NLL 1.15-1.22 nats over seeds 0-2 (2.52 at the start,
    1.89 for the best Gaussian, about 1.02 for the data). Threshold 1.45. About 3 s on one core."""
    g = torch.Generator().manual_seed(0)
    train, test = two_moons(2000, g), two_moons(2000, g)
    torch.manual_seed(0)
    layer = lambda: NeuralAutoregressive(params.DenseAutoregressive(hidden_dims=(64,)), hidden_units=16)  # noqa: E731
    base = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(2), torch.ones(2)), 1)
    flow = dist.Flow(base, Compose([layer(), Reverse(), layer()]))
    with torch.no_grad():
        start = -flow.log_prob(test).mean().item()
    opt = torch.optim.Adam(flow.parameters(), lr=1e-2)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 300)
    for _ in range(300):
        idx = torch.randint(0, len(train), (256,))
        loss = -flow.log_prob(train[idx]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
    with torch.no_grad():
        nll = -flow.log_prob(test).mean().item()
        samples = flow.sample((200,))  # the numerical direction
    assert start > 2.3 and nll < 1.45, (start, nll)
    assert torch.isfinite(samples).all() and samples.shape == (200, 2)


VALUE_ERRORS: list[tuple[str, Callable[[], Any], str]] = [
    (
        "BNAF scalar",
        lambda: BlockNeuralAutoregressive()(shape=S([])),
        "BlockNeuralAutoregressive needs an event of at least one dim",
    ),
    (
        "BNAF tol",
        lambda: BlockNeuralAutoregressive(tol=0.0)(shape=S([2])),
        "BlockNeuralAutoregressive: tol must be positive, got 0.0",
    ),
]


@pytest.mark.parametrize(("make", "match"), [c[1:] for c in VALUE_ERRORS], ids=[c[0] for c in VALUE_ERRORS])
def test_bad_values_are_named(make: Callable[[], Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


REPRS: list[tuple[str, Callable[[], Any], str]] = [
    (
        "NeuralAutoregressive",
        lambda: NeuralAutoregressive(hidden_units=4)(shape=S([2])),
        "shape=(2,), solver='newton', hidden_units=4",
    ),
    (
        "BlockNeuralAutoregressive",
        lambda: BlockNeuralAutoregressive(hidden_units=3, hidden_layers=2, slope=0.2)(shape=S([2])),
        "shape=(2,), hidden_units=3, hidden_layers=2, slope=0.2",
    ),
]


@pytest.mark.parametrize(("make", "expected"), [c[1:] for c in REPRS], ids=[c[0] for c in REPRS])
def test_extra_repr_shows_the_hyperparameters(make: Callable[[], Any], expected: str) -> None:
    module = make()
    assert module.extra_repr() == expected
    text = repr(module)
    assert text.startswith(f"{type(module).__name__}(") and expected in text
