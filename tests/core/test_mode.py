"""The caching contract of ``flowtorch.BijectiveMode``, clause by clause (DESIGN.md section 2)."""

from __future__ import annotations

import copy
import io
import pickle
import threading
import warnings
import weakref

import pytest
import torch
from torch.overrides import TorchFunctionMode

import flowtorch
import flowtorch.bijectors as bij
import flowtorch.distributions as dist
import flowtorch.parameters as params
from flowtorch.core.bijector import Bijector, Params
from flowtorch.core.mode import entry_of, has_entry

D = 4


class Counter:
    """Counts calls of a module's forward (a conditioner) through a forward hook."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.calls = 0
        module.register_forward_hook(self._hook)

    def _hook(self, *args: object) -> None:
        self.calls += 1


def conditioners(b: Bijector) -> list[torch.nn.Module]:
    return [m for m in b.modules() if isinstance(m, params.Parameters)]


def counted(b: Bijector) -> Counter:
    """One counter hooked to every conditioner inside ``b``."""
    counter = Counter(torch.nn.Identity())
    for m in conditioners(b):
        m.register_forward_hook(counter._hook)
    return counter


def iaf(context: bool = False) -> Bijector:
    torch.manual_seed(0)
    return bij.Invert(bij.AffineAutoregressive(params.DenseAutoregressive(hidden_dims=(16,))))(
        shape=torch.Size([D]), context_shape=torch.Size([2]) if context else None
    )


def maf() -> Bijector:
    torch.manual_seed(1)
    return bij.AffineAutoregressive(params.DenseAutoregressive(hidden_dims=(16,)))(shape=torch.Size([D]))


def flow5() -> dist.Flow:
    torch.manual_seed(2)
    base = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(D), torch.ones(D)), 1)
    layers = [
        bij.Invert(bij.AffineAutoregressive(params.DenseAutoregressive(hidden_dims=(16,)))) for _ in range(3)
    ]
    return dist.Flow(base, bij.Compose([*layers, bij.Spline()]))


# ----------------------------------------------------------------------------- 1. scope
class TestScope:
    def test_no_recording_outside_a_mode(self) -> None:
        b = maf()
        x = torch.randn(3, D)
        y = b.forward(x)
        assert not has_entry(y)
        counter = counted(b)
        x2 = b.inverse(y)
        assert x2 is not x and counter.calls == 1
        torch.testing.assert_close(x2, x, atol=1e-5, rtol=1e-5)

    def test_entries_are_dropped_on_exit(self) -> None:
        b = maf()
        x = torch.randn(3, D)
        with flowtorch.BijectiveMode(), torch.no_grad():  # no graph that holds x either
            y = b.forward(x)
            assert has_entry(y)
        assert not has_entry(y)
        assert y.__dict__ == {}
        # and nothing keeps x alive through y any more
        ref = weakref.ref(x)
        del x
        assert ref() is None

    def test_nested_modes(self) -> None:
        b = maf()
        x = torch.randn(3, D)
        counter = counted(b)
        with flowtorch.BijectiveMode(requires_ladj=True):
            y_outer = b.forward(x)
            calls = counter.calls
            with flowtorch.BijectiveMode(requires_ladj=False):
                # outer entries stay usable inside
                assert b.inverse(y_outer) is x
                assert counter.calls == calls
                y_inner = b.forward(x + 1)
                entry = entry_of(y_inner)
                assert entry.ladj is None  # the innermost requires_ladj wins
                assert entry.params is not None
            # inner entries are dropped when the inner mode exits; outer ones remain
            assert not has_entry(y_inner)
            assert has_entry(y_outer)
            assert entry_of(y_outer).ladj is not None
        assert not has_entry(y_outer)

    def test_decorator_runs_in_a_fresh_mode(self) -> None:
        b = maf()

        @flowtorch.BijectiveMode(requires_ladj=False)
        def sample_and_invert(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
            y = b.forward(x)
            return y, b.inverse(y) is x

        y, hit = sample_and_invert(torch.randn(2, D))
        assert hit
        assert not has_entry(y)


# ----------------------------------------------------------------------------- 2/3. recording, hits
class TestHits:
    def test_inverse_of_forward_output_is_the_input_without_conditioner_call(self) -> None:
        b = maf()
        counter = counted(b)
        x = torch.randn(5, D)
        with flowtorch.BijectiveMode():
            y = b.forward(x)
            calls = counter.calls
            assert b.inverse(y) is x
            assert counter.calls == calls

    def test_forward_of_inverse_output_is_the_input(self) -> None:
        b = iaf()
        counter = counted(b)
        y = torch.randn(5, D)
        with flowtorch.BijectiveMode():
            x = b.inverse(y)
            calls = counter.calls
            assert b.forward(x) is y
            assert counter.calls == calls

    def test_hits_require_the_same_bijector_and_context(self) -> None:
        b, other = iaf(context=True), iaf(context=True)
        x, c = torch.randn(5, D), torch.randn(5, 2)
        with flowtorch.BijectiveMode():
            y = b.forward(x, c)
            assert other.inverse(y, c) is not x
            c2 = c.clone()
            x_new = b.inverse(y, c2)
            assert x_new is not x  # same values, different object: a miss by identity
            torch.testing.assert_close(x_new, x, atol=1e-5, rtol=1e-5)
            assert b.inverse(y, c) is x

    def test_log_abs_det_jacobian_returns_the_recorded_value(self) -> None:
        b = iaf()
        counter = counted(b)
        x = torch.randn(5, D)
        with flowtorch.BijectiveMode():
            y = b.forward(x)
            entry = entry_of(y)
            calls = counter.calls
            ladj = b.log_abs_det_jacobian(x, y)
            assert ladj is entry.ladj or torch.equal(ladj, -entry.ladj)
            assert counter.calls == calls
        torch.testing.assert_close(ladj, b.log_abs_det_jacobian(x, y))

    def test_requires_ladj_false_defers_log_det_without_conditioner_call(self) -> None:
        b = iaf()
        counter = counted(b)
        x = torch.randn(5, D)
        with flowtorch.BijectiveMode(requires_ladj=False):
            y = b.forward(x)
            assert entry_of(y).ladj is None
            calls = counter.calls
            ladj = b.log_abs_det_jacobian(x, y)
            assert counter.calls == calls
        torch.testing.assert_close(ladj, b.log_abs_det_jacobian(x, y))

    def test_miss_computes_from_values_with_one_warning(self) -> None:
        b = maf()
        x = torch.randn(5, D)
        y = b.forward(x)  # recorded outside any mode: nothing to hit
        with flowtorch.BijectiveMode(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            first = b.log_abs_det_jacobian(x, y)
            second = b.log_abs_det_jacobian(x, y)
        assert [w.category for w in caught] == [flowtorch.CacheMissWarning]
        torch.testing.assert_close(first, b.log_abs_det_jacobian(x, y))
        torch.testing.assert_close(second, first)

    def test_compose_walks_back_through_hits(self) -> None:
        b = flow5().bijector
        counter = counted(b)
        x = torch.randn(6, D)
        with flowtorch.BijectiveMode():
            y = b.forward(x)
            calls = counter.calls
            assert b.inverse(y) is x
            total = b.log_abs_det_jacobian(x, y)
            assert counter.calls == calls
        # the sum of the layers' log-dets, computed layer by layer outside the mode
        expected = torch.zeros(6)
        h = x
        for layer in b.bijectors:
            h, ladj = layer.forward_and_ladj(h)
            expected = expected + ladj
        torch.testing.assert_close(total, expected, atol=1e-5, rtol=1e-5)

    def test_flow_scores_its_own_samples_without_an_inverse_pass(self) -> None:
        flow = flow5()
        counter = counted(flow.bijector)
        with flowtorch.BijectiveMode():
            y = flow.rsample((7,))
            calls = counter.calls
            lp = flow.log_prob(y)
            assert counter.calls == calls
        torch.testing.assert_close(lp, flow.log_prob(y), atol=1e-4, rtol=1e-4)

    def test_rsample_and_log_prob_needs_no_mode(self) -> None:
        flow = flow5()
        counter = counted(flow.bijector)
        torch.manual_seed(5)
        y, lp = flow.rsample_and_log_prob((7,))
        # one conditioner call per IAF layer (no sequential inverse) and one for the spline
        assert counter.calls == 4
        torch.testing.assert_close(lp, flow.log_prob(y), atol=1e-4, rtol=1e-4)


def test_flow_and_composition_arithmetic_returns_plain_uncached_tensors() -> None:
    """A flow's base density, a composition's sum of log-dets and Invert's negation run with the
    mode off the stack; what they return is still exactly a torch.Tensor without an entry, and
    the samples carry the last layer's entry as a bijector output should."""
    flow = flow5()
    with flowtorch.BijectiveMode():
        y = flow.rsample((5,))
        results = [flow.log_prob(y), *flow.rsample_and_log_prob((5,))]
        x = torch.randn(5, D)
        out, ladj = flow.bijector.forward_and_ladj(x)
        results += [
            ladj,
            flow.bijector.inverse_and_ladj(out)[1],
            flow.bijector.bijectors[0].forward_and_ladj(x)[1],
        ]
        assert has_entry(y) and has_entry(out)
    for r in results:
        assert type(r) is torch.Tensor
        assert not has_entry(r)


def test_the_mode_is_back_on_the_stack_after_a_flow_call() -> None:
    """Writes through ``.data`` after ``rsample`` are seen only by the mode's interception: the
    next ``log_prob`` must recompute, not serve the stale entry."""
    flow = flow5()
    with flowtorch.BijectiveMode() as mode:
        y = flow.rsample((5,))
        assert torch._C._get_function_stack_at(torch._C._len_torch_function_stack() - 1) is mode
        y.data.mul_(1.5)
        served = flow.log_prob(y)
    torch.testing.assert_close(served, flow.log_prob(y.detach().clone()), atol=1e-4, rtol=1e-4)


# ----------------------------------------------------------------------------- 4. stripping
STRIPPING_OPS = {
    "add": lambda y: y + 0,
    "clone": lambda y: y.clone(),
    "detach": lambda y: y.detach(),
    "index": lambda y: y[0],
    "view": lambda y: y.view(-1),
    "cat": lambda y: torch.cat([y, y]),
    "reshape": lambda y: y.reshape(y.shape),
    "to_float64": lambda y: y.to(torch.float64),
    "mul_scalar": lambda y: y * 1.0,
}


@pytest.mark.parametrize("op", list(STRIPPING_OPS), ids=list(STRIPPING_OPS))
def test_results_of_other_ops_carry_no_entry(op: str) -> None:
    b = maf()
    x = torch.randn(3, D)
    with flowtorch.BijectiveMode():
        y = b.forward(x)
        z = STRIPPING_OPS[op](y)
        assert z is not y
        assert type(z) is torch.Tensor
        assert not has_entry(z)


def test_a_stripped_tensor_misses_and_recomputes() -> None:
    b = maf()
    x = torch.randn(3, D)
    with flowtorch.BijectiveMode():
        y = b.forward(x)
        x2 = b.inverse(y + 0)
        assert x2 is not x
        torch.testing.assert_close(x2, x, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "op",
    [lambda y: y.contiguous(), lambda y: y.to(y.dtype), lambda y: torch.nn.Identity()(y)],
    ids=["contiguous", "to_same_dtype", "identity_module"],
)
def test_ops_returning_the_same_object_keep_the_entry(op) -> None:  # type: ignore[no-untyped-def]
    b = maf()
    x = torch.randn(3, D)
    with flowtorch.BijectiveMode():
        y = b.forward(x)
        same = op(y)
        assert same is y
        assert b.inverse(same) is x


# ----------------------------------------------------------------------------- 5. never stale
def _expect_recompute(b: Bijector, x: torch.Tensor, y: torch.Tensor) -> None:
    """``b.inverse(y)`` must miss and agree with a recomputation from ``y``'s current values."""
    got = b.inverse(y)
    assert got is not x
    with torch.no_grad():
        expected = b.inverse(y.detach().clone())
    torch.testing.assert_close(got, expected)


class TestNeverStale:
    def _setup(self) -> tuple[Bijector, torch.Tensor, torch.Tensor]:
        b = maf()
        x = torch.randn(3, D)
        return b, x, b.forward(x)

    @pytest.mark.parametrize(
        "write",
        [
            lambda y: y.add_(1),
            lambda y: y.__setitem__(0, 5.0),
            lambda y: y.copy_(torch.zeros_like(y)),
            lambda y: torch.add(y, 1, out=y),
            lambda y: y.data.mul_(2),
            lambda y: y.data[0].fill_(3.0),
            lambda y: y.detach().add_(1),
        ],
        ids=["add_", "setitem", "copy_", "out=", "data_alias", "data_view", "detach_alias"],
    )
    def test_writes_to_the_output_inside_the_mode(self, write) -> None:  # type: ignore[no-untyped-def]
        b, x, _ = self._setup()
        with flowtorch.BijectiveMode():
            y = b.forward(x)
            with torch.no_grad():
                write(y)
            _expect_recompute(b, x, y)

    def test_writes_through_numpy(self) -> None:
        b, x, _ = self._setup()
        with flowtorch.BijectiveMode():
            y = b.forward(x)
            with torch.no_grad():
                array = y.detach().numpy()
            array[0, 0] = 42.0  # invisible to torch: the storage was marked opaque
            _expect_recompute(b, x, y)

    def test_writes_with_the_mode_disabled(self) -> None:
        b, x, _ = self._setup()
        with flowtorch.BijectiveMode():
            y = b.forward(x)
            with torch._C.DisableTorchFunction(), torch.no_grad():
                y.add_(1)
            _expect_recompute(b, x, y)

    def test_writes_to_the_input(self) -> None:
        b, x, _ = self._setup()
        with flowtorch.BijectiveMode():
            y = b.forward(x)
            x.add_(1)
            got = b.inverse(y)
            assert got is not x
            torch.testing.assert_close(got, x - 1, atol=1e-5, rtol=1e-5)

    def test_writes_to_the_context(self) -> None:
        b = iaf(context=True)
        x, c = torch.randn(3, D), torch.randn(3, 2)
        with flowtorch.BijectiveMode():
            y = b.forward(x, c)
            c.mul_(3)
            got = b.inverse(y, c)
            assert got is not x
            torch.testing.assert_close(got, b.inverse(y.detach().clone(), c), atol=1e-5, rtol=1e-5)

    @pytest.mark.parametrize(
        "make_opt",
        [
            lambda p: torch.optim.SGD(p, lr=0.1),
            lambda p: torch.optim.Adam(p, lr=0.1),
            lambda p: torch.optim.Adam(p, lr=0.1, fused=True),
            lambda p: torch.optim.SGD(p, lr=0.1, fused=True),
            lambda p: torch.optim.AdamW(p, lr=0.1, foreach=False),
        ],
        ids=["sgd", "adam", "adam_fused", "sgd_fused", "adamw_loop"],
    )
    def test_optimizer_steps(self, make_opt) -> None:  # type: ignore[no-untyped-def]
        b, x, _ = self._setup()
        opt = make_opt(list(b.parameters()))
        with flowtorch.BijectiveMode():
            y = b.forward(x)
            ladj_before = b.log_abs_det_jacobian(b.inverse(y), y)
            loss = y.square().sum() + ladj_before.sum()
            loss.backward()
            opt.step()
            _expect_recompute(b, x, y)
            with pytest.warns(flowtorch.CacheMissWarning):  # the entry is stale after the step
                ladj_after = b.log_abs_det_jacobian(x, y)
            with torch.no_grad():
                expected = b.log_abs_det_jacobian(b.inverse(y.detach().clone()), y.detach().clone())
        torch.testing.assert_close(ladj_after.detach(), expected)

    def test_parameter_writes_through_data(self) -> None:
        b, x, _ = self._setup()
        with flowtorch.BijectiveMode():
            y = b.forward(x)
            for p in b.parameters():
                p.data.mul_(1.5)
            _expect_recompute(b, x, y)

    def test_parameter_data_assignment(self) -> None:
        b, x, _ = self._setup()
        with flowtorch.BijectiveMode():
            y = b.forward(x)
            for p in b.parameters():
                p.data = p.data * 1.5
            _expect_recompute(b, x, y)

    def test_parameter_replaced_by_a_new_object(self) -> None:
        b, x, _ = self._setup()
        with flowtorch.BijectiveMode():
            y = b.forward(x)
            layer = b.params_fn.output  # type: ignore[union-attr]
            layer.bias = torch.nn.Parameter(layer.bias.detach() + 1.0)
            _expect_recompute(b, x, y)

    def test_no_grad_entry_does_not_serve_a_grad_call(self) -> None:
        b, x, _ = self._setup()
        with flowtorch.BijectiveMode():
            with torch.no_grad():
                y = b.forward(x)
            assert b.inverse(y) is not x
            with torch.no_grad():
                y2 = b.forward(x)
                assert b.inverse(y2) is x  # a no-grad call may use it

    def test_inference_mode_records_nothing(self) -> None:
        b, x, _ = self._setup()
        with flowtorch.BijectiveMode(), torch.inference_mode():
            y = b.forward(x)
            assert not has_entry(y)
            torch.testing.assert_close(b.inverse(y), x, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- 6. plain tensors
def test_every_returned_tensor_is_plain() -> None:
    flow = flow5()
    for requires_ladj in (True, False, None):
        ctx = flowtorch.BijectiveMode(requires_ladj) if requires_ladj is not None else None
        if ctx is not None:
            ctx.__enter__()
        try:
            y = flow.rsample((3,))
            outs = [y, flow.log_prob(y), *flow.rsample_and_log_prob((2,)), flow.sample((2,))]
            outs += [
                flow.bijector.inverse(y),
                *flow.bijector.forward_and_ladj(y),
                *flow.bijector.inverse_and_ladj(y),
            ]
            outs.append(flow.bijector.log_abs_det_jacobian(flow.bijector.inverse(y), y))
            for t in outs:
                assert type(t) is torch.Tensor
        finally:
            if ctx is not None:
                ctx.__exit__(None, None, None)


# ----------------------------------------------------------------------------- 7. same numbers
def test_values_and_gradients_agree_inside_and_outside() -> None:
    flow = flow5()
    w = torch.randn(D, requires_grad=True)  # upstream of the base sample

    def run(mode: bool) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        flow.zero_grad()
        w.grad = None
        torch.manual_seed(11)
        z = flow.base_dist.rsample((6,)) * w.exp()
        if mode:
            with flowtorch.BijectiveMode():
                y = flow.bijector.forward(z)
                lp = flow.log_prob(y)
        else:
            y = flow.bijector.forward(z)
            lp = flow.log_prob(y)
        (lp.sum() + y.square().sum()).backward()
        assert w.grad is not None
        return lp.detach(), [p.grad.clone() for p in flow.parameters()], w.grad.clone()  # type: ignore[union-attr]

    lp0, g0, w0 = run(False)
    lp1, g1, w1 = run(True)
    torch.testing.assert_close(lp1, lp0, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(w1, w0, atol=1e-3, rtol=1e-3)
    for a, b_ in zip(g1, g0):
        torch.testing.assert_close(a, b_, atol=1e-3, rtol=1e-3)


def test_gradient_with_respect_to_y_needs_a_fresh_tensor() -> None:
    b = maf()
    x = torch.randn(3, D)
    with flowtorch.BijectiveMode():
        y = b.forward(x)
        y_fresh = y.detach().requires_grad_()
        x2 = b.inverse(y_fresh)
        assert x2 is not x
        x2.sum().backward()
    assert y_fresh.grad is not None and torch.isfinite(y_fresh.grad).all()


# ----------------------------------------------------------------------------- 8. threads, processes
def test_modes_are_per_thread() -> None:
    b = maf()
    x = torch.randn(3, D)
    results: dict[str, object] = {}
    with flowtorch.BijectiveMode():
        y = b.forward(x)

        def other() -> None:
            # no mode here: the entry recorded by the main thread must not be used
            results["hit"] = b.inverse(y) is x
            with flowtorch.BijectiveMode():
                results["hit_in_own_mode"] = b.inverse(y) is x

        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert b.inverse(y) is x
    assert results == {"hit": False, "hit_in_own_mode": False}


def test_threads_with_their_own_modes_match_serial_results() -> None:
    flow = flow5()
    zs = [torch.randn(5, D) for _ in range(4)]
    with torch.no_grad():
        serial = [flow.log_prob(flow.bijector.forward(z)) for z in zs]
    out: list[torch.Tensor | None] = [None] * 4

    def work(i: int) -> None:
        with flowtorch.BijectiveMode(), torch.no_grad():
            for _ in range(5):
                out[i] = flow.log_prob(flow.bijector.forward(zs[i]))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, expected in zip(out, serial):
        assert got is not None
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_pickle_save_and_deepcopy_see_plain_tensors() -> None:
    b = maf()
    with flowtorch.BijectiveMode(), torch.no_grad():  # deepcopy needs graph leaves
        y = b.forward(torch.randn(3, D))
        assert has_entry(y)
        for clone in (pickle.loads(pickle.dumps(y)), copy.deepcopy(y)):
            assert type(clone) is torch.Tensor and not has_entry(clone)
            torch.testing.assert_close(clone, y)
        buffer = io.BytesIO()
        torch.save(y, buffer)
        buffer.seek(0)
        loaded = torch.load(buffer)  # weights_only=True by default
        assert type(loaded) is torch.Tensor and not has_entry(loaded)
        assert has_entry(y)  # the original keeps its entry


# ----------------------------------------------------------------------------- 9. cost
def test_memory_stays_flat_over_many_cached_calls() -> None:
    b = maf()
    tracked: list[weakref.ref[torch.Tensor]] = []
    with flowtorch.BijectiveMode():
        for _ in range(2000):
            x = torch.randn(2, D)
            y = b.forward(x)
            assert b.inverse(y) is x
            tracked.append(weakref.ref(y))
        alive = sum(r() is not None for r in tracked)
    assert alive <= 1


def test_composes_with_other_modes() -> None:
    class Logging(TorchFunctionMode):
        def __init__(self) -> None:
            super().__init__()
            self.n = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            self.n += 1
            return func(*args, **(kwargs or {}))

    b = maf()
    x = torch.randn(3, D)
    with Logging() as log, flowtorch.BijectiveMode():
        y = b.forward(x)
        assert b.inverse(y) is x
    assert log.n > 0


# ---------------------------------------------------------------------- mode bookkeeping
class Fixed(Bijector):
    """A degenerate 'bijector' that always returns the same tensor objects: it lets two calls in
    two modes record entries on one tensor."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor, *, shape: torch.Size) -> None:
        super().__init__(None, shape=shape)
        self.a, self.b = a, b

    def _forward(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        return self.b

    def _inverse(self, y: torch.Tensor, params: Params) -> torch.Tensor:
        return self.a

    def _log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor, params: Params) -> torch.Tensor:
        return torch.zeros_like(x)


def test_entries_of_several_modes_on_one_tensor() -> None:
    """Leaving the inner mode removes its entries and keeps the outer mode's, in their order."""
    a, a2, b = torch.randn(3), torch.randn(3), torch.randn(3)
    f = Fixed(a, b, shape=torch.Size([3]))
    g = Fixed(a2, b, shape=torch.Size([3]))
    h = Fixed(a, b, shape=torch.Size([3]))
    with flowtorch.BijectiveMode():
        assert f.forward(a) is b  # entry 1 (outer) on b
        with flowtorch.BijectiveMode():
            assert g.forward(a2) is b  # entry 2 (inner) on b
            assert f.inverse(b) is a and g.inverse(b) is a2  # both served
        assert h.forward(a) is b  # entry 3 (outer), recorded after the inner mode left
        with flowtorch.BijectiveMode():
            assert g.forward(a2) is b  # entry 4 (inner), on top of two outer ones
        assert f.inverse(b) is a and h.inverse(b) is a  # the outer entries survive
        entry, n = entry_of(b), 0
        while entry is not None:
            n, entry = n + 1, entry.previous
        assert n == 2
    assert not has_entry(b)


def _maf(context: bool = False) -> Bijector:
    torch.manual_seed(0)
    return bij.AffineAutoregressive(params.DenseAutoregressive(hidden_dims=(8,)))(
        shape=torch.Size([3]), context_shape=torch.Size([2]) if context else None
    )


def test_context_handed_to_numpy_makes_its_entries_stale() -> None:
    b = _maf(context=True)
    x, c = torch.randn(4, 3), torch.randn(4, 2)
    with flowtorch.BijectiveMode():
        y = b.forward(x, c)
        torch.randn(2).numpy()  # unrelated storage
        assert b.inverse(y, c) is x
        c.numpy()  # the context's storage can now change unseen
        x2 = b.inverse(y, c)
        assert x2 is not x
        torch.testing.assert_close(x2, x, atol=1e-5, rtol=1e-5)


def test_out_tuple_writing_through_a_data_alias_makes_entries_stale() -> None:
    b = _maf()
    x = torch.randn(4, 3)
    with flowtorch.BijectiveMode():
        y = b.forward(x)
        alias = x.data  # shares x's memory, not its version counter
        idx = torch.empty(4, 3, dtype=torch.long)
        torch.max(torch.randn(2, 4, 3), dim=0, out=[torch.empty(4, 3), idx])  # unrelated targets
        assert b.inverse(y) is x
        torch.max(torch.randn(2, 4, 3), dim=0, out=(alias, idx))  # writes x unseen by its version
        x2 = b.inverse(y)
        assert x2 is not x
        torch.testing.assert_close(b.forward(x2), y, atol=1e-5, rtol=1e-5)


def test_unrelated_writes_while_an_alias_exists_keep_entries() -> None:
    b = _maf()
    x, other = torch.randn(4, 3), torch.randn(4, 3)
    with flowtorch.BijectiveMode():
        y = b.forward(x)
        _ = other.data  # an alias exists: in-place ops are now inspected
        other.add_(1.0)
        torch.add(other, 1.0, out=other)
        torch.add(other, 1.0, out=None)  # an out= that is not a tensor
        assert b.inverse(y) is x
        x.data.mul_(1.0)  # a write through an alias of x: stale
        assert b.inverse(y) is not x


def test_pickle_and_deepcopy_of_tensors_without_entries_inside_the_mode() -> None:
    with flowtorch.BijectiveMode(), torch.no_grad():
        t = torch.randn(3)
        for clone in (pickle.loads(pickle.dumps(t)), copy.deepcopy(t)):
            assert type(clone) is torch.Tensor and torch.equal(clone, t)
        assert not has_entry(t)


def test_mode_as_a_decorator_and_cache_miss_warning_once() -> None:
    b = _maf()

    @flowtorch.BijectiveMode(requires_ladj=False)
    def score(x: torch.Tensor) -> tuple[bool, torch.Tensor]:
        y = b.forward(x)
        return b.inverse(y) is x, b.log_abs_det_jacobian(x, y)

    x = torch.randn(4, 3)
    hit, ladj = score(x)
    assert hit
    torch.testing.assert_close(ladj, b.forward_and_ladj(x)[1])
    with flowtorch.BijectiveMode(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y = b.forward(x)
        for _ in range(3):  # a pair the cache does not know: computed, warned about once
            b.log_abs_det_jacobian(x.clone(), y.clone())
    assert [w.category for w in caught] == [flowtorch.CacheMissWarning]
