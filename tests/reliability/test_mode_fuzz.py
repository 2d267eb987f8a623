"""A differential fuzzer for ``BijectiveMode``: one random program, run inside the mode and without it.

A program is a list of steps drawn from a seed: bijector calls (``forward``, ``inverse``, their
``_and_ladj`` forms, ``log_abs_det_jacobian`` of recorded pairs, the opposite call on a recorded
output, calls through ``torch.func.functional_call`` and from another thread) interleaved with what
users do between calls: in-place writes to inputs, outputs, contexts, log-dets and parameters (by
in-place ops, ``out=``, ``__setitem__``, ``.data`` aliases and in-place functionals on them, numpy
and DLPack), ``detach_``, ``requires_grad`` switches, parameter replacement, ``swap_tensors`` and
``load_state_dict(assign=True)``, optimizer steps of every kind, ``p.data = ...``, grad-mode and
train/eval switches, nested modes, and pickling from another thread. The program runs twice on
identical fresh copies of one bijector case (every case of the generic suite that has an
inverse): once inside ``BijectiveMode``, once with no mode. Every value it produced must agree,
and so must the gradients of a loss over those values with respect to the parameters, the leaf
inputs, the contexts and the ``functional_call`` substitutes.

Writes go only to tensors that are new in both runs (leaves, and the results of a call on a
leaf): a cache hit returns the very recorded object, so writing into a hit's result would, by
the contract, change the original too. Writes that no mode can see (through a DLPack capsule, or
with torch functions disabled) are followed by ``BijectiveMode.invalidate()``, as the contract
asks of users.

Profiles: ``FLOWTORCH_FUZZ`` unset runs one program of 28 steps per case (the CI profile, about a
minute); ``FLOWTORCH_FUZZ=N`` runs ``N`` programs per case with longer programs (nightly use:
``FLOWTORCH_FUZZ=40 pytest tests/reliability/test_mode_fuzz.py``). The last tests switch off one
part of the freshness rule at a time and check that the fuzzer notices.
"""

from __future__ import annotations

import dataclasses
import io
import os
import random
import threading
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import flowtorch
import flowtorch.bijectors as bij
import flowtorch.parameters as params
from flowtorch.core import mode as _mode
from flowtorch.core.bijector import Bijector
from tests.case import CONTEXT_SHAPE, Case
from tests.conftest import CASES, domain_sample

F64 = torch.float64
TORCH = tuple(int(v) for v in torch.__version__.split("+")[0].split(".")[:2])
PROGRAMS = int(os.environ.get("FLOWTORCH_FUZZ", "1"))
STEPS = 28 if PROGRAMS == 1 else 60
TOL = dict(atol=1e-5, rtol=1e-5, equal_nan=True)
#: For bijectors whose inverse or log-det is numerical (a root, a fixed point, a quadrature, an
#: ODE): the recomputation without the mode carries the solver's error, in values and more so in
#: the implicit gradients (d f^-1(f(x)) / d theta is zero only up to it). The writes the programs
#: make change values by 10%, so a stale hit stays far outside this.
#: The solver's error in a gradient scales with the whole gradient, not with each element: an
#: element that is near zero in one run may be a solver error off in the other. So for these
#: cases ``rtol`` applies to the largest magnitude of the reference result (see ``_close``),
#: and ``atol`` is the noise seen in gradients that are zero in exact arithmetic (a hit's
#: ``d x / d theta`` of a round trip through a root solve, up to 1.3e-3 in long programs).
TOL_NUMERICAL = dict(atol=5e-3, rtol=1e-2, equal_nan=True, scaled=True)

WRITES = (
    "mul_",
    "setitem",
    "copy_",
    "out",
    "data_mul",
    "data_hardtanh",
    "data_relu_module",
    "numpy",
    "dlpack",
)
PARAM_OPS = (
    "replace",
    "swap",
    "assign",
    "data_set",
    "data_alias",
    "data_functional",
    "foreign",
    "requires_grad",
    "freeze",
    "sgd",
    "adam",
    "adam_foreach",
    "adam_fused",
    "sgd_fused",
)
#: what an episode changes between a call and the opposite call
EPISODE = (
    "nothing",
    "write_out",
    "write_key",
    "write_ladj",
    "detach_out",
    "key_requires_grad",
    "context",
    "param",
    "param",
    "param",
    "grad_mode",
    "train",
    "functional_call",
)
#: step kinds and their weights
KINDS = {
    "fwd": 6,
    "inv": 6,
    "undo": 8,
    "ladj": 4,
    "write": 5,
    "detach_": 1,
    "leaf_requires_grad": 1,
    "param": 5,
    "context": 2,
    "functional_call": 1,
    "grad_mode": 1,
    "train": 1,
    "clone": 1,
    "episode": 12,
    "nest": 1,
    "thread": 1,
    "pickle_in_thread": 1,
}


@dataclasses.dataclass(frozen=True)
class Step:
    kind: str
    i: int  # which tensor, record, parameter or context (taken modulo the pool's length)
    j: int  # a second choice (a write mechanism, a context, an optimizer)
    flag: bool


def program(seed: int, n: int, no_grad: bool) -> list[Step]:
    rng = random.Random(seed)
    kinds = [k for k in KINDS if not (no_grad and k in ("grad_mode", "functional_call"))]
    weights = [KINDS[k] for k in kinds]
    draw = rng.randrange
    return [
        Step(rng.choices(kinds, weights)[0], draw(1 << 16), draw(1 << 16), rng.random() < 0.5)
        for _ in range(n)
    ]


def has_inverse(case: Case) -> bool:
    b = case.build(F64)
    x = domain_sample(b, (2,), F64)
    c = torch.randn(2, *CONTEXT_SHAPE, dtype=F64) if case.context else None
    try:
        with torch.no_grad():
            b.inverse(b.forward(x, c).clone(), c)
    except NotImplementedError:
        return False
    return True


FUZZ_CASES = [c for c in CASES if has_inverse(c)]
NUMERICAL: set[str] = set()


def _solved(b: torch.nn.Module) -> bool:
    """Whether a part of ``b`` declares a numerical inverse (a root, a fixed point, an ODE): its
    round trip is exact only up to the solver's tolerance, whatever one probe shows."""
    return any(
        str(getattr(getattr(type(m), "costs", None), "inverse", "")).startswith("numerical")
        for m in b.modules()
    )


def tolerance(case: Case) -> dict[str, Any]:
    """``TOL_NUMERICAL`` for a case with a numerical inverse, or whose round trip is not exact to
    float64 rounding, in value or in gradient (``f^-1(f(x))`` has gradient 1 in ``x`` and 0 in the
    parameters)."""
    if case.name not in NUMERICAL and case.name not in EXACT:
        b = case.build(F64)
        if _solved(b):
            NUMERICAL.add(case.name)
            return TOL_NUMERICAL
        torch.manual_seed(0)
        x = domain_sample(b, (8,), F64).requires_grad_()
        c = torch.randn(8, *CONTEXT_SHAPE, dtype=F64) if case.context else None
        back = b.inverse(b.forward(x, c), c)
        ps = [p for p in b.parameters() if p.requires_grad]
        grads = torch.autograd.grad(back.sum(), [x, *ps], allow_unused=True)
        error = max(
            (back - x).abs().max().item(),
            (grads[0] - 1).abs().max().item(),
            *(g.abs().max().item() for g in grads[1:] if g is not None),
        )
        (NUMERICAL if error > 1e-9 else EXACT).add(case.name)
    return TOL_NUMERICAL if case.name in NUMERICAL else TOL


EXACT: set[str] = set()


class GradError(str):
    """A backward that raised (e.g. a tensor saved for it was written since)."""


class _Direction(torch.nn.Module):
    """``b.forward`` or ``b.inverse`` as a module's forward, for ``functional_call``."""

    def __init__(self, b: Bijector, forward: bool) -> None:
        super().__init__()
        self.b = b
        self.forward_direction = forward

    def forward(self, t: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        return self.b.forward(t, c) if self.forward_direction else self.b.inverse(t, c)


@dataclasses.dataclass
class Item:
    t: torch.Tensor
    fresh: bool  # new in both runs: a leaf, or the result of a call on a leaf
    leaf: bool = False


class Run:
    """One execution of a program, inside the mode (``mode`` given) or without one."""

    def __init__(self, case: Case, seed: int, mode: flowtorch.BijectiveMode | None, no_grad: bool) -> None:
        self.case = case
        self.mode = mode
        self.no_grad = no_grad
        self.b = case.build(F64, seed)
        torch.manual_seed(seed + 1)
        self.xs: list[Item] = []
        self.ys: list[Item] = []
        for _ in range(2):
            self.xs.append(Item(domain_sample(self.b, (4,), F64).requires_grad_(), True, True))
            with torch.no_grad():
                c0 = self._context_sample((4,))
                y0 = self.b.forward(domain_sample(self.b, (4,), F64), c0).clone()
            self.ys.append(Item(y0.requires_grad_(), True, True))
        self.contexts: list[torch.Tensor | None] = [None]
        if case.context:  # the same batch, broadcast from no batch, and wider than the inputs
            self.contexts = [self._context_sample(s).requires_grad_() for s in ((4,), (), (2, 4))]
        self.records: list[tuple[Item, Item, torch.Tensor | None]] = []  # (x, y, context)
        self.results: list[Any] = []
        self.snapshots: list[Any] = []  # each result's value when it was produced
        self.substitutes: list[torch.Tensor] = []
        self.inner: list[flowtorch.BijectiveMode] = []
        # Which tensor each write, detach_ or requires_grad switch targets: chosen in the run
        # inside the mode, among tensors whose storage one slot only holds (a hit's result is an
        # earlier tensor, or under no_grad a detached alias of one, so writing it would change
        # two slots there and one here), and replayed.
        self.choices: list[tuple[str, int] | None] = []
        self.replay: list[tuple[str, int] | None] | None = None

    def _context_sample(self, batch: tuple[int, ...]) -> torch.Tensor | None:
        return torch.randn(*batch, *CONTEXT_SHAPE, dtype=F64) if self.case.context else None

    # ------------------------------------------------------------------ helpers
    def _params(self) -> list[tuple[torch.nn.Module, str, torch.Tensor]]:
        return [
            (m, name, p)
            for m in self.b.modules()
            for name, p in m._parameters.items()
            if p is not None and p.is_floating_point()
        ]

    def _keep(self, value: Any) -> None:
        """Keeps a result: its value now, and now its gradient with respect to every parameter,
        leaf, context and substitute that requires one. (Now, not after the program: a later
        write that bypasses version counters, such as ``.data`` or a fused optimizer step, would
        change the tensors a graph saved, and so torch's own backward outside the mode.)"""
        self.results.append(value)
        t = value.t if isinstance(value, Item) else value
        if not isinstance(t, torch.Tensor):
            self.snapshots.append(t)
            return
        self.snapshots.append(t.detach().clone())
        if not t.requires_grad:
            self.snapshots.append("no graph")
            return
        wrt = self._wrt()
        try:
            grads = torch.autograd.grad(t.sum(), list(wrt.values()), allow_unused=True, retain_graph=True)
        except RuntimeError as e:
            self.snapshots.append(GradError(str(e).split("\n")[0][:80]))
            return
        zero = torch.zeros_like
        self.snapshots.append(
            {k: zero(w) if g is None else g.clone() for (k, w), g in zip(wrt.items(), grads)}
        )

    def _wrt(self) -> dict[str, torch.Tensor]:
        out = {f"p:{n}": p for n, p in self.b.named_parameters()}
        out.update({f"x:{i}": it.t for i, it in enumerate(self.xs) if it.leaf})
        out.update({f"y:{i}": it.t for i, it in enumerate(self.ys) if it.leaf})
        out.update({f"c:{i}": c for i, c in enumerate(self.contexts) if c is not None})
        out.update({f"s:{i}": t for i, t in enumerate(self.substitutes)})
        return {k: w for k, w in out.items() if w.requires_grad}

    def _pools(self) -> dict[str, list[Any]]:
        return {"x": self.xs, "y": self.ys, "r": self.results}

    def _choose(self, s: Step, ok: Callable[[Item], bool], only: Item | None = None) -> Item | None:
        """The target of a write-like step (see ``choices``); ``only``: that item or none."""
        pools = self._pools()
        if self.replay is not None:
            where = self.replay[len(self.choices)]
        else:
            held = [it.t if isinstance(it, Item) else it for pool in pools.values() for it in pool]
            with _mode.unintercepted():  # (reading data_ptr inside the mode would make it opaque)
                storage = {id(t): _mode._storage(t) for t in held if isinstance(t, torch.Tensor)}
            counts: dict[int, int] = {}
            for key in (storage[id(t)] for t in held if isinstance(t, torch.Tensor)):
                counts[key] = counts.get(key, 0) + 1
            candidates = [
                (name, i)
                for name, pool in pools.items()
                for i, it in enumerate(pool)
                if isinstance(it, Item) and it.fresh and counts[storage[id(it.t)]] == 1 and ok(it)
                if only is None or it is only
            ]
            where = candidates[s.i % len(candidates)] if candidates else None
        self.choices.append(where)
        if where is None:
            return None
        item = pools[where[0]][where[1]]
        assert isinstance(item, Item)
        return item

    def _call(
        self, t: Item, c: torch.Tensor | None, forward: bool, ladj: bool, through: str | None = None
    ) -> None:
        """A call on ``t``; ``through``: a parameter's name, to call via ``functional_call``
        with a substitute for it."""
        b = self.b
        if through is not None:
            sub = (dict(b.named_parameters())[through].detach() * 0.8 + 0.05).requires_grad_()
            self.substitutes.append(sub)
            out = torch.func.functional_call(_Direction(b, forward), {f"b.{through}": sub}, (t.t, c))
            lad = None
        elif ladj:
            out, lad = b.forward_and_ladj(t.t, c) if forward else b.inverse_and_ladj(t.t, c)
        else:
            out, lad = (b.forward(t.t, c) if forward else b.inverse(t.t, c)), None
        new = Item(out, t.leaf)
        self._keep(out)
        if lad is not None:
            self._keep(Item(lad, t.leaf))  # a log-det the caller may write into
        (self.ys if forward else self.xs).append(new)
        self.records.append((t, new, c) if forward else (new, t, c))

    def _written_silently(self, *ts: torch.Tensor) -> None:
        """After a write that left the tensors' version counters where they were (through
        ``.data``, numpy, DLPack, a fused optimizer): a graph that saved one of them before the
        write differentiates silently with the new values, so torch's own result is undefined
        there. The reference run moves the counters, so that torch refuses such a backward and
        the comparison skips it; the run inside the mode keeps the silent write, which the mode
        must see by itself."""
        if self.mode is None:
            with torch.no_grad():
                for t in ts:
                    t.add_(0.0)

    def _write(self, item: Item, how: int) -> None:
        """A shrinking write (stays in every domain the suite uses), by one of several means."""
        t = item.t
        mech = WRITES[how % len(WRITES)]
        with torch.no_grad():
            if mech == "mul_":
                t.mul_(0.9)
            elif mech == "setitem":
                t[..., 0] = t[..., 0] * 0.9
            elif mech == "copy_":
                t.copy_(t * 0.9)
            elif mech == "out":
                torch.mul(t, 0.9, out=t)
            elif mech == "data_mul":
                t.data.mul_(0.9)
            elif mech == "data_hardtanh":
                F.hardtanh(t.data, -0.5, 0.5, inplace=True)
            elif mech == "data_relu_module":
                torch.nn.ReLU(inplace=True)(t.data)
            elif mech == "numpy":
                t.detach().numpy()[...] *= 0.9
            else:  # DLPack: a foreign alias the mode cannot see, announced as the contract asks
                torch.from_dlpack(torch.utils.dlpack.to_dlpack(t.detach())).mul_(0.9)
                flowtorch.BijectiveMode.invalidate()
        if mech in ("data_mul", "data_hardtanh", "data_relu_module", "numpy", "dlpack"):
            self._written_silently(t)

    def _param_op(self, step: Step) -> None:
        ps = self._params()
        if not ps:
            return
        m, name, p = ps[step.i % len(ps)]
        op = PARAM_OPS[step.j % len(PARAM_OPS)]

        def changed(t: torch.Tensor) -> torch.nn.Parameter:
            return torch.nn.Parameter(t.detach() * 0.9 + 0.01, requires_grad=t.requires_grad)

        with torch.no_grad():
            if op == "replace":
                setattr(m, name, changed(p))
            elif op == "swap":
                # swap_tensors refuses a parameter that a graph holds, and the run inside the mode
                # builds fewer graphs (its hits compute nothing): swap where no graph is built
                if TORCH >= (2, 3) and self.no_grad:
                    torch.utils.swap_tensors(p, changed(p))
            elif op == "assign":
                if TORCH >= (2, 1):
                    # new parameter values; buffers (masks, flags) as they are, as new objects
                    names = dict(self.b.named_parameters())
                    sd = {
                        k: v.detach() * 0.9 + 0.01 if k in names else v.detach().clone()
                        for k, v in self.b.state_dict().items()
                    }
                    self.b.load_state_dict(sd, assign=True)
            elif op == "data_set":
                p.data = p.data * 0.9 + 0.01
            elif op == "data_alias":
                p.data.mul_(0.9)
            elif op == "data_functional":
                F.hardtanh(p.data, -0.2, 0.2, inplace=True)
            elif op == "foreign":  # a write no mode can see, then the announcement
                with torch._C.DisableTorchFunction():
                    p.data.mul_(0.9)
                flowtorch.BijectiveMode.invalidate()
            elif op == "requires_grad":
                p.requires_grad_(not p.requires_grad)
            elif op == "freeze":
                self.b.requires_grad_(step.flag)
            else:
                self._step(op, [q for _, _, q in ps])
            if op in ("data_set", "data_alias", "data_functional", "foreign"):
                self._written_silently(p)

    def _step(self, op: str, ps: list[torch.Tensor]) -> None:
        ps = [q for q in ps if q.requires_grad]
        if not ps:
            return
        fused = op.endswith("_fused")
        if fused and TORCH < (2, 4):  # fused CPU optimizers came in torch 2.4
            return
        for q in ps:
            q.grad = 0.1 * torch.cos(q.detach())
        if op.startswith("sgd"):
            opt: torch.optim.Optimizer = torch.optim.SGD(ps, lr=0.05, momentum=0.5, fused=fused or None)
        elif op == "adam_foreach":
            opt = torch.optim.Adam(ps, lr=0.01, foreach=True)
        else:
            opt = torch.optim.Adam(ps, lr=0.01, fused=fused or None)
        with torch.enable_grad():
            opt.step()
        for q in ps:
            q.grad = None
        if fused:
            self._written_silently(*ps)

    def _episode(self, s: Step) -> None:
        """A call on a leaf, one change to something the call depends on, then the opposite call
        on its output and the log-det of the pair: where a stale hit would show."""
        forward = s.flag
        pool = self.xs if forward else self.ys
        leaves = [it for it in pool if it.leaf]
        c = self.contexts[s.j % len(self.contexts)]
        change = EPISODE[(s.j // 7) % len(EPISODE)]
        names = sorted(n for n, _ in self.b.named_parameters())
        through = names[s.i % len(names)] if change == "functional_call" and names else None
        self._call(leaves[s.i % len(leaves)], c, forward, s.j % 2 == 0, through)
        x, y, rc = self.records[-1]
        out, key = (y, x) if forward else (x, y)
        ladj = self.results[-1] if isinstance(self.results[-1], Item) else None
        sub = Step(change, s.i, s.j // 7, s.flag)
        if change in ("write_out", "write_key", "write_ladj", "detach_out"):
            item = {"write_out": out, "write_key": key, "write_ladj": ladj, "detach_out": out}[change]
            target = self._choose(sub, lambda it: it.t._base is None, only=item or out)
            if target is not None:
                if change == "detach_out":
                    target.t.detach_()
                else:
                    self._write(target, sub.j)
        elif change == "key_requires_grad":
            target = self._choose(sub, lambda it: it.leaf, only=key)
            if target is not None and target.t.grad_fn is None:
                target.t.requires_grad_(not target.t.requires_grad)
        elif change == "context" and rc is not None:
            with torch.no_grad():
                rc.mul_(0.9) if s.i % 2 else rc.requires_grad_(not rc.requires_grad)
        elif change == "param":
            self._param_op(Step("param", s.i, s.j // 7, s.flag))
        elif change == "grad_mode":
            torch.set_grad_enabled(not torch.is_grad_enabled())
        elif change == "train":
            self.b.train(not self.b.training)
        self._call(out, rc, not forward, s.i % 3 == 0)
        self._keep(self.b.log_abs_det_jacobian(x.t, y.t, rc))

    def _in_thread(self, fn: Callable[[], Any]) -> Any:
        out: list[Any] = []

        def target() -> None:
            try:
                out.append(fn())
            except Exception as e:  # compared across the two runs
                out.append(type(e).__name__)

        worker = threading.Thread(target=target)
        worker.start()
        worker.join()
        return out[0]

    # ------------------------------------------------------------------ steps
    def do(self, step: Step) -> None:
        try:
            self._do(step)
        except Exception as e:  # the same step must fail the same way in both runs
            self._keep(f"{step.kind}: {type(e).__name__}")

    def _do(self, s: Step) -> None:
        k = s.kind
        c = self.contexts[s.j % len(self.contexts)]
        if k == "fwd":
            self._call(self.xs[s.i % len(self.xs)], c, True, s.flag)
        elif k == "inv":
            self._call(self.ys[s.i % len(self.ys)], c, False, s.flag)
        elif k == "undo" and self.records:
            x, y, rc = self.records[-1 - s.i % min(len(self.records), 4)]
            forward = s.j % 2 == 0
            self._call(x if forward else y, rc, forward, s.flag)
        elif k == "ladj" and self.records:
            x, y, rc = self.records[-1 - s.i % min(len(self.records), 4)]
            self._keep(self.b.log_abs_det_jacobian(x.t, y.t, rc))
        elif k == "episode":
            self._episode(s)
        elif k == "write":
            target = self._choose(s, lambda it: it.t._base is None)
            if target is not None:
                self._write(target, s.j)
        elif k == "detach_":
            target = self._choose(s, lambda it: not it.leaf and it.t._base is None)
            if target is not None:
                target.t.detach_()
        elif k == "leaf_requires_grad":
            target = self._choose(s, lambda it: it.leaf)
            if target is not None and target.t.grad_fn is None:
                target.t.requires_grad_(s.flag)
        elif k == "param":
            self._param_op(s)
        elif k == "context" and self.case.context:
            i = s.i % len(self.contexts)
            ctx = self.contexts[i]
            assert ctx is not None
            if s.j % 3 == 0:
                with torch.no_grad():
                    ctx.mul_(0.9)
            elif s.j % 3 == 1:
                ctx.requires_grad_(not ctx.requires_grad)
            else:
                self.contexts[i] = ctx.detach().clone().requires_grad_(s.flag)
        elif k == "functional_call":
            table = dict(self.b.named_parameters())
            names = sorted(table)
            if names:
                name = names[s.i % len(names)]
                sub = (table[name].detach() * 0.8 + 0.05).requires_grad_()
                self.substitutes.append(sub)
                forward = s.flag
                pool = self.xs if forward else self.ys
                t = pool[s.j % len(pool)]
                wrapper = _Direction(self.b, forward)
                self._keep(torch.func.functional_call(wrapper, {f"b.{name}": sub}, (t.t, c)))
        elif k == "grad_mode":
            torch.set_grad_enabled(s.flag)
        elif k == "train":
            self.b.train(s.flag)
        elif k == "clone":
            pool = self.xs if s.flag else self.ys
            src = pool[s.i % len(pool)].t
            pool.append(Item(src.detach().clone().requires_grad_(s.j % 2 == 0), True, True))
        elif k == "nest":
            if self.mode is not None:
                if self.inner and not s.flag:
                    self.inner.pop().__exit__(None, None, None)
                else:
                    inner = flowtorch.BijectiveMode(requires_ladj=s.flag)
                    inner.__enter__()
                    self.inner.append(inner)
        elif k == "thread":
            x = self.xs[s.i % len(self.xs)].t
            mode = self.mode
            b = self.b
            no_grad = self.no_grad

            def round_trip() -> torch.Tensor:
                with torch.set_grad_enabled(not no_grad):
                    if mode is None:
                        return b.inverse(b.forward(x, c), c)
                    with mode:  # the very mode object the main thread is in
                        return b.inverse(b.forward(x, c), c)

            self._keep(self._in_thread(round_trip))
        elif k == "pickle_in_thread" and self.ys:
            y = self.ys[s.i % len(self.ys)].t

            def save_load() -> torch.Tensor:
                buf = io.BytesIO()
                torch.save(y.detach(), buf)
                buf.seek(0)
                return torch.load(buf, weights_only=True)  # type: ignore[no-any-return]

            self._keep(self._in_thread(save_load))

    def run(self, steps: list[Step]) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", flowtorch.CacheMissWarning)
            try:
                torch.set_grad_enabled(not self.no_grad)
                if self.mode is not None:
                    with self.mode:
                        for s in steps:
                            self.do(s)
                        while self.inner:
                            self.inner.pop().__exit__(None, None, None)
                else:
                    for s in steps:
                        self.do(s)
            finally:
                torch.set_grad_enabled(True)

    # ------------------------------------------------------------------ what is compared
    def values(self) -> list[Any]:
        return self.snapshots


def differential(case: Case, seed: int, n: int = STEPS) -> None:
    """Runs program ``seed`` on ``case`` without and inside the mode; asserts equal outcomes."""
    rng = random.Random(seed)
    no_grad = rng.random() < 0.25
    requires_ladj = rng.random() < 0.5
    steps = program(seed, n, no_grad)
    got = Run(case, seed, flowtorch.BijectiveMode(requires_ladj=requires_ladj), no_grad)
    got.run(steps)
    ref = Run(case, seed, None, no_grad)
    ref.replay = got.choices
    ref.run(steps)
    where = f"{case.name}, program {seed} (no_grad={no_grad}, requires_ladj={requires_ladj})"
    a, b = ref.values(), got.values()
    assert len(a) == len(b), where
    for k, (u, v) in enumerate(zip(a, b)):
        _same(u, v, f"{where}: result {k // 2}, {'gradient' if k % 2 else 'value'}", tolerance(case))


def _largest(*ts: torch.Tensor) -> float:
    finite = [t[torch.isfinite(t)].abs() for t in ts]
    return max((f.max().item() for f in finite if f.numel()), default=0.0)


def _close(
    v: torch.Tensor, u: torch.Tensor, tol: dict[str, Any], what: str, scale: float | None = None
) -> None:
    """``v`` is close to the reference ``u``: elementwise, or with ``scaled`` in ``tol`` within
    ``atol + rtol * scale`` everywhere, ``scale`` being the largest magnitude of the reference
    result (all of a gradient's tensors)."""
    tol = dict(tol)
    if tol.pop("scaled", False):
        scale = _largest(u) if scale is None else scale
        tol = dict(tol, atol=tol["atol"] + tol["rtol"] * scale, rtol=0.0)
    torch.testing.assert_close(v, u, **tol, msg=lambda m: f"{what}: {m}")


def _same(u: Any, v: Any, what: str, tol: dict[str, Any]) -> None:
    """``v`` (inside the mode) agrees with ``u`` (without it)."""
    if isinstance(u, GradError):  # the reference could not differentiate: nothing to compare
        return
    if isinstance(v, GradError):
        raise AssertionError(f"{what}: backward failed inside the mode only: {v}")
    # A hit may return a tensor without a graph where a recomputation has one whose gradient
    # cancels (d f^-1(f(x)) / d theta = 0): then the reference's gradient must be zero.
    if isinstance(u, dict) and v == "no graph":
        v = {key: torch.zeros_like(g) for key, g in u.items()}
    if u == "no graph" and isinstance(v, dict):
        u = {key: torch.zeros_like(g) for key, g in v.items()}
    if isinstance(u, dict) and isinstance(v, dict):
        assert u.keys() == v.keys(), f"{what}: with respect to {sorted(v)}, not {sorted(u)}"
        scale = _largest(*u.values())
        for key in u:
            _close(v[key], u[key], tol, f"{what} ({key})", scale)
    elif isinstance(u, torch.Tensor) and isinstance(v, torch.Tensor):
        assert u.shape == v.shape, f"{what}: shape {tuple(v.shape)}, not {tuple(u.shape)}"
        _close(v, u, tol, what)
    else:
        assert type(u) is type(v) and u == v, f"{what}: {v!r} instead of {u!r}"


@pytest.mark.parametrize("case", FUZZ_CASES, ids=[c.name for c in FUZZ_CASES])
def test_the_same_program_inside_and_outside_the_mode(case: Case) -> None:
    base = sum(map(ord, case.name))  # a different program for every case, stable across runs
    for k in range(PROGRAMS):
        differential(case, base * 1000 + k)


# ---------------------------------------------------------------------- injected faults
# Each fault switches off one part of the freshness rule; the fuzzer must notice it on a few cases.
FAULT_CASES = [
    c
    for c in FUZZ_CASES
    if c.name in {"AffineAutoregressive[context]", "Compose(IAF, Spline, MAF)[context]", "Affine", "Spline"}
]


def _no_identity(m: torch.nn.Module, sig: list[Any], held: list[Any] | None) -> None:
    # the old rule: a sum of version counters
    sig.append(sum(t._version for t in m.parameters()))


def _compose_ladj_from_x_if_first_recorded(
    self: Any, x: torch.Tensor, y: torch.Tensor, context: torch.Tensor | None = None
) -> torch.Tensor:
    # the old rule: walk forward from x whenever its first layer recorded it, wherever that leads
    first = self.bijectors[0]
    if (
        _mode.current_scope() is not None
        and first._recorded_key(x, False, self._ctx(first, context)) is not None
    ):
        return self.forward_and_ladj(x, context)[1]  # type: ignore[no-any-return]
    return self.inverse_and_ladj(y, context)[1]  # type: ignore[no-any-return]


FAULTS: dict[str, tuple[Any, str, Any]] = {
    "parameters by version sum only": (_mode, "_walk", _no_identity),
    "no requires_grad or detach_ check": (_mode, "_flags", lambda *a: ()),
    "the returned log-det is the cache's": (_mode.Entry, "stored_ladj", lambda self: self.ladj),
    "no .data alias watch": (_mode, "_watch_alias", lambda t: None),
    "no epoch": (_mode, "_bump", lambda: None),
    "no version check": (_mode, "_versions", lambda *a: ()),
    "no grad-mode check": (_mode, "served", lambda t: t),
    "hits ignore a wider context batch": (Bijector, "_hit", lambda self, e, v, f: e.key),
    "Compose walks forward from x": (
        bij.Compose,
        "log_abs_det_jacobian",
        _compose_ladj_from_x_if_first_recorded,
    ),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_the_fuzzer_catches_an_injected_fault(fault: str, monkeypatch: pytest.MonkeyPatch) -> None:
    owner, name, replacement = FAULTS[fault]
    monkeypatch.setattr(owner, name, replacement)
    caught = []
    # a fault in Compose can show only on a composed case
    cases = [c for c in FAULT_CASES if c.name.startswith("Compose")] if owner is bij.Compose else FAULT_CASES
    for case in cases:
        for k in range(12):
            try:
                differential(case, 7_000 + k, n=40)
            except AssertionError as e:
                caught.append(str(e).split("\n")[0])
                break
        if caught:
            break
    assert caught, f"the fuzzer did not notice: {fault}"


def test_the_fault_free_runs_of_the_fault_programs_pass() -> None:
    """The programs the fault tests use pass without a fault (so what they catch is the fault)."""
    for case in FAULT_CASES:
        for k in range(3):
            differential(case, 7_000 + k, n=40)


def test_the_suite_fuzzes_conditional_and_composed_cases() -> None:
    names = {c.name for c in FUZZ_CASES}
    assert {"AffineAutoregressive[context]", "Compose(IAF, Spline, MAF)[context]"} <= names
    assert len(FUZZ_CASES) >= 40
    assert params is not None
