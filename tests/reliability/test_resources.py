"""Resources: memory stays flat under many cached calls, nothing waits for the cycle collector,
and threads with their own modes compute what serial code computes."""

from __future__ import annotations

import contextlib
import gc
import os
import threading
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
import torch

import flowtorch
import flowtorch.bijectors as bij
import flowtorch.distributions as dist
import flowtorch.parameters as params
from flowtorch.core import mode as _mode
from flowtorch.core.bijector import Bijector
from flowtorch.recipes import IAF, MAF, NSF, RealNVP


def normal(d: int) -> torch.distributions.Distribution:
    return torch.distributions.Independent(torch.distributions.Normal(torch.zeros(d), torch.ones(d)), 1)


def rss() -> int:
    """Resident set size of this process, in bytes (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads the RSS from /proc")
def test_100k_cached_calls_in_one_mode_keep_memory_flat() -> None:
    """100,000 forward calls and cache hits on tiny tensors inside one mode: the process RSS grows
    by less than 4 MiB after a warm-up of 10,000 (a leaked entry and its two tensors per call
    would be about 50 MiB), and the mode holds on to no dead tensor."""
    b = bij.Exp()(shape=torch.Size([2]))
    with flowtorch.BijectiveMode():
        scope = _mode.current_scope()
        assert scope is not None
        for i in range(100_000):
            x = torch.randn(2)
            y = b.forward(x)
            if i % 10 == 0:
                assert b.inverse(y) is x
            if i == 10_000:
                gc.collect()
                before = rss()
        gc.collect()
        grown = rss() - before
        assert len(scope.table) <= 1  # only the live ``y``
        assert sum(type(o) is _mode.Entry for o in gc.get_objects()) <= 2
    assert grown < 4 * 2**20, f"RSS grew by {grown / 2**20:.1f} MiB over 90,000 cached calls"


# ---------------------------------------------------------------------- reference cycles
@contextlib.contextmanager
def collector_off() -> Iterator[list[Any]]:
    """Disables the cycle collector; on exit, collects and yields (in the list) what only the
    collector could free."""
    found: list[Any] = []
    gc.collect()
    gc.disable()
    try:
        yield found
    finally:
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            gc.collect()
            found.extend(gc.garbage)
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()


def _ours(objects: list[Any]) -> list[str]:
    """The flowtorch objects and tensors among ``objects``."""
    out = []
    for o in objects:
        t = o if isinstance(o, type) else type(o)
        if isinstance(o, torch.Tensor) or t.__module__.startswith("flowtorch"):
            out.append(f"{t.__module__}.{t.__qualname__}")
    return out


def _maf(context: bool = False) -> Bijector:
    return bij.AffineAutoregressive(params.DenseAutoregressive(hidden_dims=(8,)))(
        shape=torch.Size([3]), context_shape=torch.Size([2]) if context else None
    )


USES = {
    "MAF forward/inverse/log-det": lambda: _use_bijector(_maf(), None, True),
    "MAF, requires_ladj=False": lambda: _use_bijector(_maf(), None, False),
    "conditional MAF": lambda: _use_bijector(_maf(context=True), torch.randn(4, 2), True),
    "Spline": lambda: _use_bijector(bij.Spline()(shape=torch.Size([3])), None, True),
    "Compose(IAF, Spline, Sigmoid)": lambda: _use_bijector(
        bij.Compose([bij.Invert(bij.AffineAutoregressive()), bij.Spline(), bij.Sigmoid()])(
            shape=torch.Size([3])
        ),
        None,
        False,
    ),
    "Flow(MAF) in nested modes": lambda: _use_flow(MAF(layers=2, hidden_dims=(8,))),
    "Flow(IAF)": lambda: _use_flow(IAF(layers=2, hidden_dims=(8,))),
    "Flow(RealNVP)": lambda: _use_flow(RealNVP(layers=2, hidden_dims=(8,))),
    "Flow(NSF)": lambda: _use_flow(NSF(layers=2, hidden_dims=(8,))),
}


def _use_bijector(b: Bijector, c: torch.Tensor | None, requires_ladj: bool) -> list[weakref.ref[Any]]:
    refs: list[weakref.ref[Any]] = [weakref.ref(b)]
    x = torch.randn(4, 3)
    with flowtorch.BijectiveMode(requires_ladj=requires_ladj):
        y = b.forward(x, c)
        assert b.inverse(y, c) is x
        ladj = b.log_abs_det_jacobian(x, y, c)
        ladj.sum().backward()
        x2, ladj2 = b.inverse_and_ladj(y.detach().clone(), c)
        refs += [weakref.ref(t) for t in (x, y, ladj, x2, ladj2)]
    return refs


def _use_flow(plan: Any) -> list[weakref.ref[Any]]:
    f = dist.Flow(normal(3), plan)
    refs: list[weakref.ref[Any]] = [weakref.ref(f)]
    with flowtorch.BijectiveMode():
        y = f.rsample((4,))
        with flowtorch.BijectiveMode(requires_ladj=False):
            lp = f.log_prob(y)
            z, lpz = f.rsample_and_log_prob((2,))
        (lp.sum() + lpz.sum()).backward()
        refs += [weakref.ref(t) for t in (y, lp, z, lpz)]
    return refs


@pytest.mark.parametrize("use", list(USES))
def test_no_reference_cycles_keep_tensors_alive(use: str) -> None:
    """With the cycle collector off, every tensor, bijector and flow of a session inside (nested)
    modes is freed by reference counting as soon as the test drops it; the collector then finds
    no flowtorch object and no tensor."""
    with collector_off() as found:
        refs = USES[use]()
        alive = [r() for r in refs if r() is not None]
        assert not alive, f"kept alive by a reference cycle: {[type(o).__name__ for o in alive]}"
    assert not _ours(found), f"the cycle collector had to free: {_ours(found)}"


@pytest.mark.parametrize(
    "nested",
    [
        False,
        True,
    ],
    ids=["one mode", "nested modes"],
)
def test_numpy_elsewhere_does_not_disable_the_cache(nested: bool) -> None:
    """An unrelated tensor handed to numpy inside the mode marks only its own storage opaque."""
    b = bij.Affine()(shape=torch.Size([3]))
    with flowtorch.BijectiveMode(), flowtorch.BijectiveMode() if nested else contextlib.nullcontext():
        torch.randn(3).numpy()
        x = torch.randn(4, 3)
        y = b.forward(x)
        assert b.inverse(y) is x
        assert b.inverse(y) is x
        x.detach().numpy()  # now this entry's own key is opaque: a miss, recomputed
        assert b.inverse(y) is not x


# ---------------------------------------------------------------------- threads
def _flow() -> dist.Flow:
    torch.manual_seed(3)
    return dist.Flow(normal(3), MAF(layers=3, hidden_dims=(8,)))


def _session(flow: dist.Flow, z: torch.Tensor, barrier: threading.Barrier | None) -> list[torch.Tensor]:
    """Sample, score from the cache, score fresh data, and invert; asserts the hits it expects."""
    out = []
    with torch.no_grad():
        for step in range(5):
            if barrier is not None:
                barrier.wait()  # interleave the threads' calls step by step
            with flowtorch.BijectiveMode():
                y = flow.bijector.forward(z)
                lp = flow.log_prob(y)  # from the cache
                assert flow.bijector.inverse(y) is z
                with flowtorch.BijectiveMode(requires_ladj=False):
                    lp_fresh = flow.log_prob(y.clone() + step)
            out += [y, lp, lp_fresh]
    return out


def test_four_threads_with_their_own_modes_match_serial_use() -> None:
    flow = _flow()
    zs = [torch.randn(6, 3, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    serial = [_session(flow, z, None) for z in zs]
    results: list[list[torch.Tensor] | BaseException | None] = [None] * 4
    barrier = threading.Barrier(4)

    def work(i: int) -> None:
        try:
            results[i] = _session(flow, zs[i], barrier)
        except BaseException as e:  # reported below, with the thread's number
            results[i] = e
            barrier.abort()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for i, (got, expected) in enumerate(zip(results, serial)):
        if isinstance(got, BaseException):
            raise AssertionError(f"thread {i} failed") from got
        assert got is not None, f"thread {i} did not finish"
        for g, e in zip(got, expected):
            assert torch.equal(g, e), f"thread {i} computed other numbers than serial code"


def test_an_entry_recorded_by_one_thread_is_never_served_to_another() -> None:
    b = _maf()
    x = torch.randn(4, 3)
    seen: dict[str, bool] = {}
    with flowtorch.BijectiveMode():
        y = b.forward(x)

        def other() -> None:
            with flowtorch.BijectiveMode():
                x_other = b.inverse(y)
                seen["hit"] = x_other is x
                seen["close"] = bool(torch.allclose(x_other, x, atol=1e-5))

        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert b.inverse(y) is x  # still served here
    assert seen == {"hit": False, "close": True}
