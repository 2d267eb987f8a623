"""Timings of single hot-path components, each against the alternative it replaced or its floor.

``python benchmarks/components.py [--repeats N] [--threads N]`` prints one interleaved table per
component (see ``_timing.py`` for the method; the ratios are the figures to quote):

* ``affine tail``: an affine layer's elementwise work in the density direction, forward and
  backward, with the log-scale bounded by ``hardtanh`` (flowtorch's before: no gradient past the
  bound), by ``clamp`` and by ``soft_clamp`` (flowtorch's);
* ``spline op``: ``rational_quadratic_spline(inverse=True)`` against the floor's textbook
  inverse (``floors.rq_spline_inverse``), forward and backward, at the sizes of the D = 16
  spline workloads;
* ``broadcast_shapes``: ``torch.broadcast_shapes`` against flowtorch's;
* ``finiteness check``: ``isfinite(value).all()`` and torch's support check against the one sum
  ``Flow.log_prob`` takes under ``validate_args=True``;
* ``MAF sampling``: a 5-layer MAF's sequential sampling pass (without and with a backward pass)
  with each masked weight fixed for the pass (flowtorch's) against a product per conditioner
  call.

Each component runs in a few seconds; the whole script in about a minute.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import Any

import floors  # (benchmarks/ is on the path when this script runs)
import torch
import torch.nn.functional as F
from _timing import Candidate, format_table, looped, measure

import flowtorch.distributions as dist
from flowtorch import recipes
from flowtorch.core.shapes import broadcast_shapes
from flowtorch.nn import made
from flowtorch.ops import rational_quadratic_spline, soft_clamp


def _table(title: str, fns: Sequence[tuple[str, Callable[[], Any]]], repeats: int) -> None:
    for _, fn in fns:
        fn()  # first calls (allocations, lazy imports) outside the timing
    results = measure(
        [Candidate(name, looped(fn)) for name, fn in fns],
        baseline=fns[0][0],
        repeats=repeats,
        target_s=0.05,
        clock=time.process_time,
    )
    print()
    print(format_table(title, results, fns[0][0]))


def _affine_case(d: int, repeats: int) -> None:
    torch.manual_seed(0)
    s = torch.randn(512, d, requires_grad=True)
    loc = torch.randn(512, d, requires_grad=True)
    y = torch.randn(512, d)

    def step(clip: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            ls = clip(s)
            x = (y - loc) * torch.exp(-ls)
            (x.sum() + ls.sum()).backward()

        return run

    _table(
        f"affine tail, batch 512, D={d}: forward and backward",
        [
            ("hardtanh (before)", step(lambda t: F.hardtanh(t, -5.0, 3.0))),
            ("clamp", step(lambda t: t.clamp(-5.0, 3.0))),
            ("soft_clamp (flowtorch)", step(lambda t: soft_clamp(t, -5.0, 3.0))),
        ],
        repeats,
    )


def affine_tail(repeats: int) -> None:
    for d in (16, 64):
        _affine_case(d, repeats)


def _spline_case(n: int, repeats: int) -> None:
    torch.manual_seed(0)
    k = 8
    uw, uh = torch.randn(512, n, k, requires_grad=True), torch.randn(512, n, k, requires_grad=True)
    ud = torch.randn(512, n, k - 1, requires_grad=True)
    y = 1.5 * torch.randn(512, n)

    def ours() -> None:
        x, ld = rational_quadratic_spline(y, uw, uh, ud, bound=3.0, inverse=True)
        (x.sum() + ld.sum()).backward()

    def floor() -> None:
        x, ld = floors.rq_spline_inverse(y, uw, uh, ud, 3.0)
        (x.sum() + ld.sum()).backward()

    _table(
        f"spline op, inverse, batch 512, {n} splines of 8 bins: forward and backward",
        [("floor (textbook inverse)", floor), ("flowtorch", ours)],
        repeats,
    )


def spline_op(repeats: int) -> None:
    for n in (8, 16):  # the coupling (half of D = 16) and autoregressive workloads
        _spline_case(n, repeats)


def shapes(repeats: int) -> None:
    a = torch.Size([512, 16])
    _table(
        "broadcast_shapes of four equal (512, 16) shapes",
        [
            ("torch.broadcast_shapes", lambda: torch.broadcast_shapes(a, a, a, a)),
            ("flowtorch.core.shapes.broadcast_shapes", lambda: broadcast_shapes(a, a, a, a)),
        ],
        repeats,
    )


def finiteness(repeats: int) -> None:
    v = torch.randn(512, 64)
    _table(
        "finiteness check of a (512, 64) value",
        [
            ("isfinite(v).all()", lambda: bool(torch.isfinite(v).all())),
            ("support check (v == v).all()", lambda: bool((v == v).all())),
            ("isfinite(v.sum()) (flowtorch)", lambda: bool(torch.isfinite(v.sum()))),
        ],
        repeats,
    )


def _sampling_case(d: int, batch: int, backward: bool, repeats: int) -> None:
    torch.manual_seed(0)
    base = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(d), torch.ones(d)), 1)
    flow = dist.Flow(base, recipes.MAF(5, (64, 64)), validate_args=False)
    real = made._is_compiling

    def sample(fixed: bool) -> Callable[[], None]:
        def run() -> None:
            # (the scope does nothing where ``_is_compiling`` says True: a product per call)
            made._is_compiling = real if fixed else lambda: True
            try:
                if backward:
                    flow.rsample((batch,)).sum().backward()
                else:
                    with torch.no_grad():
                        flow.sample((batch,))
            finally:
                made._is_compiling = real

        return run

    what = "rsample and backward" if backward else "sample, no grad"
    _table(
        f"MAF sampling, 5 layers, hidden (64, 64), D={d}, batch {batch}: {what}",
        [("W * M per call", sample(False)), ("W * M once per pass (flowtorch)", sample(True))],
        max(repeats // 2, 3),
    )


def maf_sampling(repeats: int) -> None:
    for d, batch in ((16, 1), (64, 16), (64, 512)):
        _sampling_case(d, batch, False, repeats)
    for d, batch in ((16, 1), (64, 16)):
        _sampling_case(d, batch, True, repeats)


COMPONENTS = {
    "affine": affine_tail,
    "spline": spline_op,
    "shapes": shapes,
    "finite": finiteness,
    "sampling": maf_sampling,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=15, help="timed rounds per table (default 15)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--only", action="append", choices=sorted(COMPONENTS), help="run only these")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), process clock")
    for name, fn in COMPONENTS.items():
        if args.only is None or name in args.only:
            fn(args.repeats)


if __name__ == "__main__":
    main()
