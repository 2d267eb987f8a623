"""Regression tests for ways ``BijectiveMode`` once served stale values or lost gradients.

Each test is a program a user might write; inside the mode it must give what it gives outside.
The differential fuzzer (``tests/reliability/test_mode_fuzz.py``) covers the same ground at random;
these are the cases written out.
"""

from __future__ import annotations

import copy
import io
import os
import pickle
import socket
import threading
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
import torch.nn.functional as F

import flowtorch
import flowtorch.bijectors as bij
import flowtorch.distributions as dist
import flowtorch.parameters as params
from flowtorch.core import mode as _mode
from flowtorch.core.bijector import Bijector
from tests._torch import needs_collectives_in_modes

D = 3
TORCH = tuple(int(v) for v in torch.__version__.split("+")[0].split(".")[:2])


def base(d: int = D) -> torch.distributions.Distribution:
    return torch.distributions.Independent(torch.distributions.Normal(torch.zeros(d), torch.ones(d)), 1)


def maf(seed: int = 1, context: int | None = None) -> Bijector:
    torch.manual_seed(seed)
    b = bij.AffineAutoregressive(params.DenseAutoregressive(hidden_dims=(8,)))(
        shape=torch.Size([D]), context_shape=None if context is None else torch.Size([context])
    )
    with torch.no_grad():
        for p in b.parameters():
            p.normal_(0, 0.5)
    return b


def iaf(seed: int = 0, context: int | None = None) -> Bijector:
    torch.manual_seed(seed)
    return bij.Invert(bij.AffineAutoregressive(params.DenseAutoregressive(hidden_dims=(8,))))(
        shape=torch.Size([D]), context_shape=None if context is None else torch.Size([context])
    )


def served_and_correct(b: Bijector, y: torch.Tensor, x: torch.Tensor) -> tuple[bool, float]:
    got = b.inverse(y)
    return got is x, float((got - b.inverse(y.detach().clone())).abs().max())


# ----------------------------------------------------------------------------- parameters
@pytest.mark.parametrize("how", ["setattr", "swap_tensors", "load_state_dict(assign=True)"])
def test_a_replaced_parameter_is_a_change_even_at_the_same_version(how: str) -> None:
    if how == "swap_tensors" and TORCH < (2, 3):
        pytest.skip("torch.utils.swap_tensors came in torch 2.3")
    if how.startswith("load") and TORCH < (2, 1):
        pytest.skip("load_state_dict(assign=True) came in torch 2.1")
    # the same version counts before and after: a sum of them cannot tell the two apart
    if how == "load_state_dict(assign=True)":
        b, other = maf(1), maf(2)  # (each parameter written once: "trained for as many steps")
    else:
        b = bij.Affine(params.Tensor())(shape=torch.Size([D]))  # parameters at version 0
    x = torch.randn(4, D)
    with flowtorch.BijectiveMode(), torch.no_grad():  # (swap_tensors refuses tensors a graph holds)
        y = b.forward(x)
        if how == "setattr":
            b.params_fn.params[0] = torch.nn.Parameter(torch.full((D,), 5.0))
        elif how == "swap_tensors":
            for p in b.parameters():
                torch.utils.swap_tensors(p, torch.nn.Parameter(p.detach() * 3 + 1))
        else:
            b.load_state_dict(other.state_dict(), assign=True)
        hit, error = served_and_correct(b, y, x)
    assert not hit and error < 1e-6


def test_functional_call_uses_the_substituted_parameters_and_their_gradients() -> None:
    torch.manual_seed(0)
    flow = dist.Flow(base(), bij.AffineAutoregressive(params.DenseAutoregressive(hidden_dims=(8,))))
    new = {k: v.detach() + 0.3 * torch.randn_like(v) for k, v in flow.named_parameters()}

    class Score(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.flow = flow

        def forward(self, y: torch.Tensor) -> torch.Tensor:
            return self.flow.log_prob(y)

    score = Score()
    subs = {f"flow.{k}": v for k, v in new.items()}
    with flowtorch.BijectiveMode():
        y = flow.rsample((4,))
        served = torch.func.functional_call(score, subs, (y,))
        correct = torch.func.functional_call(score, subs, (y.detach().clone(),))
        g = torch.func.grad(lambda p: torch.func.functional_call(score, p, (y,)).sum())(subs)
        g_ref = torch.func.grad(lambda p: torch.func.functional_call(score, p, (y.detach().clone(),)).sum())(
            subs
        )
    torch.testing.assert_close(served, correct)
    for k in g:
        torch.testing.assert_close(g[k], g_ref[k])
    assert sum(float(v.detach().abs().sum()) for v in g.values()) > 1.0
    # and outside any mode afterwards, a float64 substitute is taken at its dtype
    b = bij.Affine()(shape=torch.Size([D]))
    b.forward(torch.randn(2, D))
    out = torch.func.functional_call(
        b,
        {k: v.detach().double() for k, v in b.named_parameters()},
        (torch.randn(2, D, dtype=torch.float64),),
    )
    assert out.dtype == torch.float64


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built in")
@needs_collectives_in_modes
def test_collectives_inside_the_mode_are_writes() -> None:
    """``all_reduce`` and ``broadcast`` write their tensors without a version bump; the mode
    sees them (a one-process group: the values stay, but no entry may be trusted after)."""
    import torch.distributed as tdist

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(_free_port())
    tdist.init_process_group("gloo", rank=0, world_size=1)
    try:
        b = maf()
        x = torch.randn(4, D)
        with flowtorch.BijectiveMode(), torch.no_grad():
            for collective in (lambda p: tdist.all_reduce(p), lambda p: tdist.broadcast(p, 0)):
                y = b.forward(x)
                assert b.inverse(y) is x
                for p in b.parameters():
                    collective(p)
                assert b.inverse(y) is not x
    finally:
        tdist.destroy_process_group()


def test_invalidate_covers_writes_no_mode_can_see() -> None:
    """A write through a DLPack capsule (``to_dlpack`` is not a torch function, so the mode
    cannot see the alias being made) or with torch functions disabled: ``invalidate()``."""
    b = maf()
    x = torch.randn(3, D)
    with flowtorch.BijectiveMode(), torch.no_grad():
        y = b.forward(x)
        alias = torch.from_dlpack(torch.utils.dlpack.to_dlpack(y))
        alias[0, 0] = 123.0
        flowtorch.BijectiveMode.invalidate()
        hit, error = served_and_correct(b, y, x)
        assert not hit and error < 1e-6
        y = b.forward(x)
        with torch._C.DisableTorchFunction():
            for p in b.parameters():
                p.data.mul_(2.0)
        flowtorch.BijectiveMode.invalidate()
        hit, error = served_and_correct(b, y, x)
        assert not hit and error < 1e-6


# ----------------------------------------------------------------------------- returned values
def test_the_returned_log_det_is_the_callers_to_write() -> None:
    torch.manual_seed(0)
    layers = [maf(), bij.Spline()(shape=torch.Size([D])), bij.Affine()(shape=torch.Size([D]))]
    with torch.no_grad():
        for layer in layers[1:]:
            for p in layer.parameters():
                p.normal_(0, 0.5)
    flow = dist.Flow(base(), bij.Compose(layers))
    with flowtorch.BijectiveMode(), torch.no_grad():
        z = flow.base_dist.sample((4,))
        h, total = z, None
        for layer in layers:
            h, ladj = layer.forward_and_ladj(h)
            if total is None:
                total = ladj
            else:
                total += ladj  # accumulates into the first layer's log-det
        by_hand = flow.base_dist.log_prob(z) - total
        torch.testing.assert_close(flow.log_prob(h), by_hand)
        torch.testing.assert_close(flow.log_prob(h), flow.log_prob(h.clone()))
        x = torch.randn(4, D)
        y, ladj = layers[0].forward_and_ladj(x)
        expected = ladj.clone()
        ladj.zero_()
        torch.testing.assert_close(layers[0].log_abs_det_jacobian(x, y), expected)


def flow_of_two() -> dist.Flow:
    torch.manual_seed(0)
    made = (params.DenseAutoregressive(hidden_dims=(8,)) for _ in range(2))
    return dist.Flow(base(), bij.Compose([bij.AffineAutoregressive(m) for m in made]))


def _grads(flow: dist.Flow, loss: torch.Tensor) -> torch.Tensor:
    flow.zero_grad(set_to_none=True)
    loss.backward()
    return torch.cat(
        [(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in flow.parameters()]
    )


def test_requires_grad_switched_on_between_sample_and_score() -> None:
    """Alternating optimisation: samples drawn with the flow frozen, then scored to train it."""
    flow = flow_of_two()
    results = []
    for use_mode in (False, True):
        torch.manual_seed(1)
        with flowtorch.BijectiveMode() if use_mode else torch.enable_grad():
            flow.requires_grad_(False)
            y = flow.rsample((8,))
            flow.requires_grad_(True)
            loss = -flow.log_prob(y).mean()
            assert loss.requires_grad
            results.append((loss.detach(), _grads(flow, loss)))
    torch.testing.assert_close(results[1][0], results[0][0])
    torch.testing.assert_close(results[1][1], results[0][1])


def test_a_context_that_gets_requires_grad_later() -> None:
    b = iaf(context=2)
    x = torch.randn(4, D)
    out = []
    for use_mode in (False, True):
        c = torch.randn(4, 2)
        torch.manual_seed(0)
        c = torch.randn(4, 2)
        with flowtorch.BijectiveMode() if use_mode else torch.enable_grad():
            y = b.forward(x, c)
            c.requires_grad_()
            back = b.inverse(y, c)
            (g,) = torch.autograd.grad(back.sum() + y.sum(), c, allow_unused=True)
            out.append(torch.zeros_like(c) if g is None else g)
    torch.testing.assert_close(out[1], out[0])


def test_detach_in_place_of_a_sample_then_score() -> None:
    loc = torch.zeros(D, requires_grad=True)
    torch.manual_seed(3)
    layers = [
        bij.Invert(bij.AffineAutoregressive(params.DenseAutoregressive(hidden_dims=(8,)))),
        bij.AffineAutoregressive(params.DenseAutoregressive(hidden_dims=(8,))),
    ]
    flow = dist.Flow(
        torch.distributions.Independent(torch.distributions.Normal(loc, torch.ones(D)), 1),
        bij.Compose(layers),
    )
    with torch.no_grad():
        for p in flow.parameters():
            p.normal_(0, 0.3)
    out = []
    for use_mode in (False, True):
        flow.zero_grad(set_to_none=True)
        loc.grad = None
        torch.manual_seed(1)
        with flowtorch.BijectiveMode() if use_mode else torch.enable_grad():
            y = flow.rsample((16,))
            y.detach_()  # stop gradients through the sample, in place
            loss = -flow.log_prob(y).mean()
            loss.backward()
        assert loc.grad is not None
        out.append((torch.cat([p.grad.flatten() for p in flow.parameters()]), loc.grad.clone()))  # type: ignore[union-attr]
    torch.testing.assert_close(out[1][0], out[0][0])
    torch.testing.assert_close(out[1][1], out[0][1])


# ----------------------------------------------------------------------------- writes
INPLACE_FUNCTIONALS = {
    "F.relu": lambda a: F.relu(a, inplace=True),
    "F.dropout": lambda a: F.dropout(a, 0.5, True, inplace=True),
    "F.hardtanh": lambda a: F.hardtanh(a, -0.1, 0.1, inplace=True),
    "F.leaky_relu": lambda a: F.leaky_relu(a, 0.5, inplace=True),
    "nn.ReLU(inplace=True)": lambda a: torch.nn.ReLU(inplace=True)(a),
    "relu_": lambda a: a.relu_(),
    "__setitem__": lambda a: a.__setitem__(0, 0.0),
}


@pytest.mark.parametrize("write", sorted(INPLACE_FUNCTIONALS))
def test_in_place_functionals_through_a_data_alias(write: str) -> None:
    b = maf()
    x = torch.randn(5, D) * 3
    with flowtorch.BijectiveMode():
        y = b.forward(x)
        INPLACE_FUNCTIONALS[write](y.data)
        hit, error = served_and_correct(b, y, x)
    assert not hit and error < 1e-5


def test_parameters_clipped_through_data_by_an_in_place_functional() -> None:
    b = maf()
    x = torch.randn(5, D)
    with flowtorch.BijectiveMode():
        y = b.forward(x)
        for p in b.parameters():
            F.hardtanh(p.data, -0.01, 0.01, inplace=True)  # weight clipping, WGAN-style
        hit, error = served_and_correct(b, y, x)
    assert not hit and error < 1e-6


def test_a_data_alias_kept_and_written_later() -> None:
    b = maf()
    x = torch.randn(5, D)
    with flowtorch.BijectiveMode():
        y = b.forward(x)
        alias = y.data
        assert b.inverse(y) is x  # taking it changes nothing
        alias.mul_(2.0)
        hit, error = served_and_correct(b, y, x)
        assert not hit and error < 1e-6
        y = b.forward(x)
        alias = y.data
        kept = alias.detach()  # shares the alias's version counter, and outlives it
        del alias
        assert b.inverse(y) is x
        kept.mul_(0.5)
        hit, error = served_and_correct(b, y, x)
        assert not hit and error < 1e-6


# ----------------------------------------------------------------------------- threads
def test_one_mode_object_entered_by_two_threads_at_once() -> None:
    mode = flowtorch.BijectiveMode()
    b = maf()
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def first() -> None:
        try:
            x = torch.randn(4, D)
            with mode:
                y = b.forward(x)
                a_in.set()
                b_in.wait(5)
                assert b.inverse(y) is x
        except BaseException as e:
            errors.append(e)
        finally:
            a_out.set()

    def second() -> None:
        try:
            x = torch.randn(4, D)
            a_in.wait(5)
            with mode:
                y = b.forward(x)
                b_in.set()
                a_out.wait(5)
                assert b.inverse(y) is x
        except BaseException as e:
            errors.append(e)

    def later() -> tuple[int, bool, int]:
        x = torch.randn(4, D)
        y = b.forward(x)
        return len(_mode.STATE.scopes), _mode.has_entry(y), torch._C._len_torch_function_stack()

    with ThreadPoolExecutor(2) as pool:
        for f in [pool.submit(first), pool.submit(second)]:
            f.result()
        leftovers = [pool.submit(later).result() for _ in range(4)]
    assert not errors, errors
    assert leftovers == [(0, False, 0)] * 4


def test_recorded_tensors_pickle_and_copy_from_another_thread() -> None:
    b = maf()
    results: dict[str, object] = {}

    def elsewhere(y: torch.Tensor) -> None:
        buf = io.BytesIO()
        torch.save(y, buf)
        buf.seek(0)
        results["torch.save"] = torch.load(buf, weights_only=True)
        results["pickle"] = pickle.loads(pickle.dumps(y))
        results["copy"] = copy.copy(y)
        results["deepcopy"] = copy.deepcopy(y)

    with flowtorch.BijectiveMode(), torch.no_grad():
        y = b.forward(torch.randn(2, D))
        worker = threading.Thread(target=elsewhere, args=(y,))
        worker.start()
        worker.join()
        assert _mode.has_entry(y)
    for name, t in results.items():
        assert type(t) is torch.Tensor and torch.equal(t, y), name
        assert t.__dict__ == {} and not _mode.has_entry(t), name


# ----------------------------------------------------------------------------- shapes, Compose
@pytest.mark.parametrize("make", [iaf, maf], ids=["IAF", "MAF"])
def test_a_context_batch_wider_than_the_input(make) -> None:  # type: ignore[no-untyped-def]
    b = make(context=2)
    with torch.no_grad():
        for p in b.parameters():
            p.normal_(0, 0.5)
    x, c = torch.randn(D), torch.randn(5, 2)
    with torch.no_grad():
        y_ref = b.forward(x, c)
        x_ref, ladj_ref = b.inverse_and_ladj(y_ref, c)
    with flowtorch.BijectiveMode(), torch.no_grad():
        y = b.forward(x, c)
        back = b.inverse(y, c)
        back2, ladj = b.inverse_and_ladj(y, c)
    assert back.shape == back2.shape == x_ref.shape == (5, D)
    torch.testing.assert_close(back, x_ref)
    torch.testing.assert_close(ladj, ladj_ref)


def test_compose_log_det_after_the_output_is_edited() -> None:
    torch.manual_seed(0)
    b = bij.Compose([bij.Reverse(), bij.AffineAutoregressive(params.DenseAutoregressive(hidden_dims=(8,)))])(
        shape=torch.Size([D])
    )
    with torch.no_grad():
        for p in b.parameters():
            p.normal_(0, 0.5)
    y = torch.randn(4, D)
    out = []
    for use_mode in (False, True):
        yy = y.clone()
        with flowtorch.BijectiveMode() if use_mode else torch.enable_grad(), torch.no_grad():
            x = b.inverse(yy)
            yy[0] = 3.0
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", flowtorch.CacheMissWarning)
                out.append(b.log_abs_det_jacobian(x, yy))
    torch.testing.assert_close(out[1], out[0])


def test_a_compose_miss_warns_like_a_single_bijector() -> None:
    x = torch.randn(3, 2)
    for f in [bij.Exp()(shape=torch.Size([2])), bij.Compose([bij.Exp(), bij.Exp()])(shape=torch.Size([2]))]:
        with flowtorch.BijectiveMode(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            y = f.forward(x)
            f.log_abs_det_jacobian(x, y + 0)
        assert [w.category for w in caught] == [flowtorch.CacheMissWarning], type(f).__name__


def test_a_compose_hit_walks_forward_from_x_only_to_y() -> None:
    torch.manual_seed(0)
    f = bij.Compose([bij.Exp(), bij.Affine(), bij.Exp()])(shape=torch.Size([2]))
    y = torch.rand(3, 2) + 1.5
    with flowtorch.BijectiveMode(), warnings.catch_warnings():
        warnings.simplefilter("error", flowtorch.CacheMissWarning)
        x = f.inverse(y)
        torch.testing.assert_close(f.log_abs_det_jacobian(x, y), f.inverse_and_ladj(y.clone())[1])


# ----------------------------------------------------------------------------- decorator
def test_decorated_generator_runs_each_resumption_in_a_mode() -> None:
    b = maf()

    @flowtorch.BijectiveMode()
    def pairs(n: int) -> Iterator[tuple[int, bool]]:
        for _ in range(n):
            x = torch.randn(2, D)
            y = b.forward(x)
            yield len(_mode.STATE.scopes), b.inverse(y) is x

    gen = pairs(3)
    assert next(gen) == (1, True)
    assert _mode.STATE.scopes == []  # nothing active between resumptions
    assert list(gen) == [(1, True), (1, True)]

    @flowtorch.BijectiveMode()
    def failing() -> Iterator[int]:
        yield 1
        raise ValueError("inside")

    g = failing()
    assert next(g) == 1
    with pytest.raises(ValueError, match="inside"):
        next(g)
    assert _mode.STATE.scopes == []


def test_decorating_an_async_function_is_refused() -> None:
    async def sample() -> None:
        return None

    with pytest.raises(TypeError, match="open the mode inside it"):
        flowtorch.BijectiveMode()(sample)


def test_a_composition_recorded_with_gradients_is_served_under_no_grad() -> None:
    """Under no_grad each layer serves a detached alias of its key; the next layer must still
    find its hit on that alias, so the walk back calls no conditioner."""
    torch.manual_seed(0)
    b = bij.Compose([maf(), bij.Spline(), bij.Affine()])(shape=torch.Size([D]))
    calls = []
    for m in b.modules():
        if isinstance(m, params.Parameters):
            m.register_forward_hook(lambda *a: calls.append(1))
    x = torch.randn(4, D)
    with flowtorch.BijectiveMode():
        y = b.forward(x)
        calls.clear()
        with torch.no_grad():
            back, ladj = b.inverse_and_ladj(y)
        assert calls == [] and not back.requires_grad
        torch.testing.assert_close(back, x)
        torch.testing.assert_close(ladj, b.inverse_and_ladj(y.detach().clone())[1])
