"""Property-based tests (hypothesis) over every bijector the generic suite finds.

Each case of ``tests.conftest.CASES`` is checked on random sample and batch shapes, random
parameters and random valid inputs: the float64 round trip, and log|det J| against the autograd
Jacobian of one event. Budgets are small (two examples per case) and derandomized, so the run is
fast and the same in CI every time; raise ``max_examples`` locally to search harder.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import functools
import math
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

import flowtorch
import flowtorch.bijectors as bij
import flowtorch.parameters as params
from flowtorch.core.bijector import Bijector
from flowtorch.core.mode import STATE, has_entry
from tests._torch import FUSED_CPU_OPTIMIZERS
from tests.conftest import CASES, CONTEXT_SHAPE, Case, domain_sample

PER_CASE = settings(
    max_examples=2,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# The first of each strategy is what hypothesis tries first (its "simplest" example): a sample dim
# and a batch dim that the context broadcasts against, so that even that example is a real test.
samples = st.sampled_from([(2,), (), (3,), (1, 2)])
batches = st.sampled_from([(3,), (), (2,)])


@functools.cache
def built(name: str) -> Bijector:
    case = next(c for c in CASES if c.name == name)
    return case.build(torch.float64)


def randomise(b: Bijector, seed: int, scale: float) -> None:
    """Parameters drawn as ``Case.build`` draws them, at ``scale`` times its spread."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in b.parameters():
            fan_in = p.shape[-1] if p.dim() > 1 else 1
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * (scale / fan_in**0.5))


def jacobian_log_det(b: Bijector, x: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
    """log|det J| of one event from the autograd Jacobian (``x`` is one event)."""
    n = x.numel()

    def f(flat: torch.Tensor) -> torch.Tensor:
        return b.forward(flat.reshape(x.shape), c).reshape(n)

    return torch.linalg.slogdet(torch.autograd.functional.jacobian(f, x.reshape(n)))[1]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@PER_CASE
@given(
    sample=samples,
    batch=batches,
    seed=st.integers(0, 2**31 - 1),
    scale=st.floats(0.3, 0.75),
    event=st.integers(0, 2**16),
)
def test_round_trip_and_log_det_on_random_shapes_and_parameters(
    case: Case, sample: tuple[int, ...], batch: tuple[int, ...], seed: int, scale: float, event: int
) -> None:
    dtype = torch.float64
    b = built(case.name)
    randomise(b, seed, scale)
    torch.manual_seed(seed)
    x = domain_sample(b, (*sample, *batch), dtype)
    c = torch.randn(*batch, *CONTEXT_SHAPE, dtype=dtype) if case.context else None  # broadcasts
    y, ladj = b.forward_and_ladj(x, c)
    assert y.shape == (*sample, *batch, *b.out_shape) and ladj.shape == (*sample, *batch)
    assert torch.isfinite(y).all() and torch.isfinite(ladj).all()
    # round trips, both ways, in float64
    torch.testing.assert_close(b.inverse(y, c), x, atol=1e-10, rtol=1e-10)
    _, ladj_inv = b.inverse_and_ladj(y, c)
    torch.testing.assert_close(ladj_inv, ladj, atol=1e-8, rtol=1e-8)
    y2 = b.forward(domain_sample(b, (*sample, *batch), dtype), c).detach()
    torch.testing.assert_close(b.forward(b.inverse(y2, c), c), y2, atol=1e-10, rtol=1e-10)
    # log|det J| of one event (chosen at random) against autograd
    flat_x = x.reshape(-1, *b.shape)
    i = event % flat_x.shape[0]
    c_i = None
    if c is not None:
        c_i = c.expand(*sample, *batch, *CONTEXT_SHAPE).reshape(-1, *CONTEXT_SHAPE)[i]
    expected = jacobian_log_det(b, flat_x[i], c_i)
    assert math.isfinite(expected.item())
    torch.testing.assert_close(ladj.reshape(-1)[i], expected, atol=1e-8, rtol=1e-8)
    torch.testing.assert_close(b.log_abs_det_jacobian(x, y, c).reshape(-1)[i], expected, atol=1e-8, rtol=1e-8)


# ---------------------------------------------------------------------- the cache contract
# A random program inside ``BijectiveMode``: bijector calls, torch ops, in-place writes, optimizer
# steps, grad-mode and training-flag switches and nested modes. A model of the contract
# (DESIGN.md section 2) says, before each call, whether a cache hit is allowed; the call must
# return the recorded object exactly then, and its value must always match a cache-free
# recomputation (the same call on a fresh copy of the input, which can only miss).


def _bijectors() -> dict[str, Bijector]:
    torch.manual_seed(0)
    made = functools.partial(params.DenseAutoregressive, hidden_dims=(8,))
    plans = {
        "affine": bij.Affine(),
        "iaf": bij.Invert(bij.AffineAutoregressive(made())),
        "compose": bij.Compose([bij.AffineAutoregressive(made()), bij.Permute(), bij.Spline(count_bins=4)]),
        "coupling": bij.AffineCoupling(params.DenseCoupling(hidden_dims=(8,))),
    }
    out = {name: plan(shape=torch.Size([3])) for name, plan in plans.items()}
    out["cmaf"] = bij.AffineAutoregressive(made())(shape=torch.Size([3]), context_shape=CONTEXT_SHAPE)
    for i, b in enumerate(out.values()):
        b.double()
        randomise(b, seed=i, scale=0.3)
    return out


BIJ = _bijectors()
NAMES = sorted(BIJ)
SAVED = {name: copy.deepcopy(b.state_dict()) for name, b in BIJ.items()}
F64 = torch.float64
INDEX = st.integers(0, 2**16)
RECENT = st.integers(0, 2)  # one of the last few records: meets them while they may still be fresh
# Whether the program hands tensors to numpy. Off until mode._storage stops calling
# Tensor.untyped_storage() (see test_numpy_in_nested_modes_does_not_disable_the_cache in
# test_resources.py): inside nested modes, one .numpy() call makes every later lookup miss.
NUMPY_RULE = False
STATS: collections.Counter[str] = collections.Counter()  # hits and misses seen, for tuning


@dataclasses.dataclass(eq=False)
class Record:
    """A call that recorded an entry: ``out = name.forward(key)`` (or ``inverse`` if not forward)."""

    name: str
    forward: bool
    key: torch.Tensor
    out: torch.Tensor
    context: torch.Tensor | None
    scope: int
    grad: bool
    training: bool
    dirty: bool = False


class CacheProgram(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.modes: list[tuple[int, flowtorch.BijectiveMode]] = []  # innermost last
        self.n_scopes = 0
        self.pool: list[torch.Tensor] = []
        self.groups: list[int] = []  # storage group of each pool tensor (views share one)
        self.n_groups = 0
        self.opaque: set[int] = set()  # groups handed to numpy
        self.records: list[Record] = []
        self.grad = True
        self.context = torch.randn(2, dtype=F64)

    # -------------------------------------------------------------- bookkeeping
    def _enter(self, requires_ladj: bool) -> None:
        mode = flowtorch.BijectiveMode(requires_ladj=requires_ladj)
        mode.__enter__()
        self.n_scopes += 1
        self.modes.append((self.n_scopes, mode))

    def _add(self, t: torch.Tensor, group: int | None = None) -> None:
        if group is None:
            self.n_groups += 1
            group = self.n_groups
        self.pool.append(t)
        self.groups.append(group)

    def _group(self, t: torch.Tensor) -> int:
        return next(g for p, g in zip(self.pool, self.groups) if p is t)

    def _fresh(self, r: Record) -> bool:
        live = {s for s, _ in self.modes}
        return (
            not r.dirty
            and r.scope in live
            and (r.grad or not self.grad)
            and r.training == BIJ[r.name].training
            and self._group(r.key) not in self.opaque
            and self._group(r.out) not in self.opaque
        )

    def _dirty(self, which: Any) -> None:
        for r in self.records:
            if which(r):
                r.dirty = True

    def _touch_group(self, group: int) -> None:
        self._dirty(lambda r: group in (self._group(r.key), self._group(r.out)))

    def _no_dead_entries(self) -> None:
        if not STATE.scopes:
            assert not any(has_entry(t) for t in self.pool), "an entry outlived the mode that recorded it"

    # -------------------------------------------------------------- set-up and tear-down
    @initialize()
    def start(self) -> None:
        for name, b in BIJ.items():
            b.load_state_dict(SAVED[name])
            b.train()
        torch.set_grad_enabled(True)
        self._enter(requires_ladj=True)
        g = torch.Generator().manual_seed(0)
        for _ in range(3):
            self._add(torch.randn(4, 3, generator=g, dtype=F64))

    def teardown(self) -> None:
        try:
            while self.modes:
                self.modes.pop()[1].__exit__(None, None, None)
            for t in self.pool:
                assert not has_entry(t), "an entry survived the last mode's exit"
        finally:
            torch.set_grad_enabled(True)

    # -------------------------------------------------------------- bijector calls
    @rule(
        name=st.sampled_from(NAMES), i=INDEX, inverse=st.booleans(), ladj=st.booleans(), fresh=st.booleans()
    )
    def call(self, name: str, i: int, inverse: bool, ladj: bool, fresh: bool) -> None:
        c = None
        if BIJ[name].context_shape is not None:
            c = self.context.clone() if fresh else self.context
        self._call(name, self.pool[i % len(self.pool)], inverse, ladj, c)

    @precondition(lambda self: self.records)
    @rule(j=RECENT, ladj=st.booleans(), other_context=st.booleans())
    def undo_a_recorded_call(self, j: int, ladj: bool, other_context: bool) -> None:
        """The opposite call on a recorded output: a hit if nothing changed since (and if the
        context is the very same object)."""
        r = self.records[-1 - j % len(self.records)]
        c = r.context.clone() if other_context and r.context is not None else r.context
        self._call(r.name, r.out, r.forward, ladj, c)

    @precondition(lambda self: self.records)
    @rule(ladj=st.booleans())
    def undo_the_latest_call(self, ladj: bool) -> None:
        r = self.records[-1]
        self._call(r.name, r.out, r.forward, ladj, r.context)

    @rule(name=st.sampled_from(NAMES), inverse=st.booleans(), ladj=st.booleans())
    def call_on_the_newest(self, name: str, inverse: bool, ladj: bool) -> None:
        """Chains calls: the newest tensor is often the output of a call."""
        self._call(
            name, self.pool[-1], inverse, ladj, None if BIJ[name].context_shape is None else self.context
        )

    def _call(self, name: str, t: torch.Tensor, inverse: bool, ladj: bool, c: torch.Tensor | None) -> None:
        b = BIJ[name]
        # a hit is allowed only from a fresh record of the opposite call on this very tensor
        hit = next(
            (
                r
                for r in self.records
                if r.name == name and r.out is t and r.forward == inverse and r.context is c
            ),
            None,
        )
        hit = hit if hit is not None and self._fresh(hit) else None
        if inverse:
            out, lad = b.inverse_and_ladj(t, c) if ladj else (b.inverse(t, c), None)
        else:
            out, lad = b.forward_and_ladj(t, c) if ladj else (b.forward(t, c), None)
        STATS["hit" if hit is not None else "miss"] += 1
        if hit is not None:
            key = hit.key
            if key.requires_grad and not torch.is_grad_enabled():
                # under no_grad a hit serves the key without its graph, as a recomputation would
                assert out.data_ptr() == key.data_ptr() and not out.requires_grad, f"{name}: not served"
            else:
                assert out is key, f"{name}: a fresh entry was not served"
        else:
            assert not any(out is p for p in self.pool), f"{name}: a stale or foreign entry was served"
        assert type(out) is torch.Tensor
        # the same call on fresh copies (a guaranteed miss) gives the same numbers
        t_ref = t.detach().clone()
        c_ref = None if c is None else c.detach().clone()
        ref_out, ref_lad = b.inverse_and_ladj(t_ref, c_ref) if inverse else b.forward_and_ladj(t_ref, c_ref)
        torch.testing.assert_close(out, ref_out, atol=1e-9, rtol=1e-9)
        if lad is not None:
            torch.testing.assert_close(lad, ref_lad, atol=1e-9, rtol=1e-9)
        if hit is None:
            scope = self.modes[-1][0]
            self.records.append(Record(name, not inverse, t, out, c, scope, self.grad, b.training))
            self._add(out)

    @rule(
        name=st.sampled_from(NAMES),
        i=INDEX,
        inverse=st.booleans(),
        change=st.sampled_from(
            [
                "nothing",
                "key.add_",
                "out[0]=",
                "out.view.add_",
                "out.data.add_",
                "sgd",
                "adam-fused",
                "p.data=",
                "recorded-without-grad",
                "train-flag",
                "other-context",
                "other-bijector-step",
            ]
        ),
    )
    def episode(self, name: str, i: int, inverse: bool, change: str) -> None:
        """A call, one change (or none), and the opposite call on its output: the model decides
        whether that is a hit, on top of whatever state the program is in."""
        t = self.pool[i % len(self.pool)]
        c = None if BIJ[name].context_shape is None else self.context
        grad = self.grad
        if change == "recorded-without-grad":
            self.grad_mode(False)
        n = len(self.records)
        self._call(name, t, inverse, False, c)
        if len(self.records) == n:
            return  # the call was itself a hit: nothing recorded
        r = self.records[-1]
        where = {id(p): k for k, p in enumerate(self.pool)}
        if change == "key.add_":
            self.write_in_place(where[id(r.key)], "add_")
        elif change == "out[0]=":
            self.write_in_place(where[id(r.out)], "setitem")
        elif change == "out.view.add_":
            self.write_in_place(where[id(r.out)], "view.add_")
        elif change == "out.data.add_":
            self.write_in_place(where[id(r.out)], "data.add_")
        elif change in ("sgd", "adam-fused", "p.data="):
            self.update_parameters(name, None, change)
        elif change == "recorded-without-grad":
            self.grad_mode(True)
        elif change == "train-flag":
            self.training_flag(name, None, not BIJ[name].training)
        elif change == "other-bijector-step":
            self.update_parameters(NAMES[(NAMES.index(name) + 1) % len(NAMES)], None, "sgd")
        c2 = r.context.clone() if change == "other-context" and r.context is not None else r.context
        self._call(name, r.out, r.forward, False, c2)
        if change == "train-flag":
            self.training_flag(name, None, not BIJ[name].training)
        self.grad_mode(grad)

    @precondition(lambda self: self.records)
    @rule(j=INDEX)
    def log_det_of_a_recorded_pair(self, j: int) -> None:
        r = self.records[j % len(self.records)]
        if not self._fresh(r):
            return  # served from the values with a warning: not part of the contract's hits
        b = BIJ[r.name]
        x, y = (r.key, r.out) if r.forward else (r.out, r.key)
        got = b.log_abs_det_jacobian(x, y, r.context)  # a miss would warn, and warnings are errors
        c_ref = None if r.context is None else r.context.detach().clone()
        torch.testing.assert_close(
            got, b.forward_and_ladj(x.detach().clone(), c_ref)[1], atol=1e-9, rtol=1e-9
        )

    # -------------------------------------------------------------- other torch ops
    @rule(i=INDEX, op=st.sampled_from(["add0", "clone", "view", "index", "detach", "contiguous", "to"]))
    def torch_op(self, i: int, op: str) -> None:
        t = self.pool[i % len(self.pool)]
        if op in ("contiguous", "to"):
            same = t.contiguous() if op == "contiguous" else t.to(t.dtype)
            assert same is t  # the very object, entry and all
            return
        new = {
            "add0": lambda: t + 0,
            "clone": t.clone,
            "view": lambda: t.view(-1, 3),
            "index": lambda: t[: max(1, t.shape[0] - 1)],
            "detach": t.detach,
        }[op]()
        assert new is not t and not has_entry(new), f"{op} kept an entry"
        self._add(new, self._group(t) if op in ("view", "index", "detach") else None)

    @rule(
        i=INDEX,
        op=st.sampled_from(
            ["add_", "mul_", "setitem", "copy_", "out=", "view.add_", "detach.add_", "data.add_"]
        ),
    )
    def write_in_place(self, i: int, op: str) -> None:
        t = self.pool[i % len(self.pool)]
        with torch.no_grad():
            if op == "add_":
                t.add_(0.01)
            elif op == "mul_":
                t.mul_(0.99)
            elif op == "setitem":
                t[0] = 0.5
            elif op == "copy_":
                t.copy_(t * 0.5)
            elif op == "out=":
                torch.add(t, 0.01, out=t)
            elif op == "view.add_":
                t.view(-1)[:2].add_(0.01)
            elif op == "detach.add_":
                t.detach().add_(0.01)
            else:
                t.data.add_(0.01)  # no version bump: the mode bumps its epoch
        if op == "data.add_":
            self._dirty(lambda r: True)
        else:
            self._touch_group(self._group(t))

    @precondition(lambda self: NUMPY_RULE)
    @rule(i=INDEX)
    def hand_to_numpy(self, i: int) -> None:
        t = self.pool[i % len(self.pool)]
        t.detach().numpy()  # storage the mode cannot watch: never served again in this mode
        self.opaque.add(self._group(t))

    def _name(self, name: str, j: int | None) -> str:
        """``name``, or (to meet the records more often) the bijector of a recent record."""
        return name if j is None or not self.records else self.records[-1 - j % len(self.records)].name

    @rule(
        name=st.sampled_from(NAMES),
        j=st.none() | RECENT,
        how=st.sampled_from(["sgd", "adam", "sgd-fused", "adam-fused", "p.data=", "p.add_"]),
    )
    def update_parameters(self, name: str, j: int | None, how: str) -> None:
        name = self._name(name, j)
        ps = list(BIJ[name].parameters())
        # Without fused CPU kernels (torch < 2.4), a fused step becomes the other write that no
        # version counter sees, ``p.data = ...``: the program draws the same steps on every torch,
        # so the derandomized search explores the same programs everywhere.
        if how in ("p.data=", "p.add_") or (how.endswith("fused") and not FUSED_CPU_OPTIMIZERS):
            with torch.no_grad():
                for p in ps:
                    if how == "p.add_":
                        p.add_(1e-3)
                    else:
                        p.data = p.data + 1e-3
        else:
            for p in ps:
                p.grad = torch.full_like(p, 1e-2)
            cls = torch.optim.SGD if how.startswith("sgd") else torch.optim.Adam
            # (``fused`` only when asked for: SGD takes no such argument before torch 2.4)
            cls(ps, lr=1e-3, **({"fused": True} if how.endswith("fused") else {})).step()
            for p in ps:
                p.grad = None
        if how in ("p.data=", "sgd-fused", "adam-fused"):
            self._dirty(lambda r: True)  # no version bump: the mode bumps its epoch
        else:
            self._dirty(lambda r: r.name == name)

    @rule(enabled=st.booleans())
    def grad_mode(self, enabled: bool) -> None:
        torch.set_grad_enabled(enabled)
        self.grad = enabled

    @rule(name=st.sampled_from(NAMES), j=st.none() | RECENT, training=st.booleans())
    def training_flag(self, name: str, j: int | None, training: bool) -> None:
        BIJ[self._name(name, j)].train(training)

    @precondition(lambda self: len(self.modes) < 3)
    @rule(requires_ladj=st.booleans())
    def enter_nested_mode(self, requires_ladj: bool) -> None:
        self._enter(requires_ladj)

    @precondition(lambda self: len(self.modes) > 1)
    @rule()
    def exit_nested_mode(self) -> None:
        self.modes.pop()[1].__exit__(None, None, None)
        self._no_dead_entries()


CacheProgram.TestCase.settings = settings(
    max_examples=50,
    stateful_step_count=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestCacheContract = CacheProgram.TestCase
