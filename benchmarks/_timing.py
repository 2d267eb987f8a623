"""Interleaved timing of several candidates in one process, with ratios against a baseline.

The machines we benchmark on are shared and noisy, so absolute times drift from minute to minute.
To make the comparison fair, every candidate is timed in *rounds*: each round runs every candidate
once (in an order that rotates from round to round), so slow phases of the machine hit all
candidates alike. The figures we report are the *ratios* of each candidate to a baseline computed
within the same round, summarised by their median and interquartile range.

A candidate is a function ``run(n) -> float | None`` that performs ``n`` iterations of the work.
``looped(f)`` turns a plain callable into one; ``looped(f, context=factory)`` enters
``factory()`` once around the ``n`` iterations (for example a ``TorchFunctionMode`` entered once
outside the loop). A candidate that returns a float reports its own elapsed seconds (used to
time work in subprocesses); otherwise the wall time of the call is used.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Optional

Runner = Callable[[int], Optional[float]]

__all__ = [
    "CLOCKS",
    "Candidate",
    "Result",
    "Stats",
    "format_table",
    "looped",
    "measure",
    "quantiles",
]


def looped(fn: Callable[[], Any], context: Callable[[], AbstractContextManager[Any]] | None = None) -> Runner:
    """A runner that calls ``fn`` ``n`` times, inside one ``context()`` if given."""

    if context is None:

        def run(n: int) -> None:
            for _ in range(n):
                fn()

    else:

        def run(n: int) -> None:
            with context():
                for _ in range(n):
                    fn()

    return run


@dataclass(frozen=True)
class Candidate:
    """One thing to time: a name, a runner and an optional fixed iteration count per sample."""

    name: str
    run: Runner
    #: Iterations per sample; ``None`` calibrates it so that one sample lasts about ``target_s``.
    number: int | None = None


def quantiles(values: Sequence[float]) -> tuple[float, float, float]:
    """(first quartile, median, third quartile), interpolated; a single value repeats itself."""
    xs = sorted(values)
    if not xs:
        return (math.nan, math.nan, math.nan)
    if len(xs) == 1:
        return (xs[0], xs[0], xs[0])
    q1, q2, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return (q1, q2, q3)


@dataclass
class Stats:
    """Median and quartiles of a list of samples."""

    samples: list[float]
    q1: float = field(init=False)
    median: float = field(init=False)
    q3: float = field(init=False)

    def __post_init__(self) -> None:
        self.q1, self.median, self.q3 = quantiles(self.samples)

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1

    def to_dict(self) -> dict[str, Any]:
        return {
            "median": self.median,
            "q1": self.q1,
            "q3": self.q3,
            "iqr": self.iqr,
            "n": len(self.samples),
            "samples": self.samples,
        }


@dataclass
class Result:
    """The timing of one candidate: seconds per iteration, and its ratio to the baseline."""

    name: str
    number: int
    seconds: Stats  # seconds per iteration, one sample per round
    ratio: Stats  # per-round ratio to the baseline's time in the same round

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "iterations_per_sample": self.number,
            "seconds_per_iteration": self.seconds.to_dict(),
            "ratio_to_baseline": self.ratio.to_dict(),
        }


#: A clock: seconds as a float.
Clock = Callable[[], float]

CLOCKS: dict[str, Clock] = {
    # Wall time: what a user waits for.
    "wall": time.perf_counter,
    # CPU time of this process (all its threads): insensitive to the time the process spends
    # descheduled on an oversubscribed machine; meaningful with one torch thread.
    "process": time.process_time,
}


def _timed(run: Runner, n: int, clock: Clock = time.perf_counter) -> float:
    """Seconds for ``run(n)``, with the garbage collector paused as ``timeit`` does."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        start = clock()
        reported = run(n)
        elapsed = clock() - start
    finally:
        if enabled:
            gc.enable()
    return elapsed if reported is None else float(reported)


def _calibrate(run: Runner, target_s: float, clock: Clock) -> int:
    """Iterations per sample so that one sample lasts about ``target_s`` (at least one).

    Each estimate is the best of three timings (one, if a single run already lasts ten targets),
    so that a slow spell of the machine does not leave a fast candidate with too few iterations.
    """
    n = 1
    while True:
        t = _timed(run, n, clock)
        if t < 10 * target_s:
            t = min(t, _timed(run, n, clock), _timed(run, n, clock))
        if t >= target_s or n >= 1 << 20:
            return n
        if t >= 1e-3:  # long enough to scale from
            return max(1, round(n * target_s / t))
        n *= 10


def measure(
    candidates: Sequence[Candidate],
    *,
    baseline: str,
    repeats: int,
    warmup: int = 1,
    target_s: float = 0.05,
    clock: Clock = time.perf_counter,
) -> list[Result]:
    """Times ``candidates`` in ``repeats`` interleaved rounds, after ``warmup`` rounds.

    ``clock`` measures each sample (see ``CLOCKS``); a candidate that reports its own time is
    not affected by it.

    Returns one :class:`Result` per candidate, in the given order; ``ratio`` is the candidate's
    time divided by the ``baseline`` candidate's time in the same round.
    """
    names = [c.name for c in candidates]
    if baseline not in names:
        raise ValueError(f"baseline {baseline!r} is not one of {names}")
    if len(set(names)) != len(names):
        raise ValueError(f"candidate names must be unique: {names}")
    if repeats < 1:
        raise ValueError("repeats must be at least 1")

    numbers: list[int] = []
    for c in candidates:
        c.run(1)  # first call: lazy initialisation, allocator warm-up
        numbers.append(c.number if c.number is not None else _calibrate(c.run, target_s, clock))
    for _ in range(warmup):
        for c, n in zip(candidates, numbers):
            _timed(c.run, n, clock)

    gc.collect()
    k = len(candidates)
    per_iter: list[list[float]] = [[] for _ in candidates]
    for r in range(repeats):
        round_times = [0.0] * k
        for j in range(k):
            i = (r + j) % k  # rotate the order so no candidate always runs first or last
            round_times[i] = _timed(candidates[i].run, numbers[i], clock) / numbers[i]
        for i in range(k):
            per_iter[i].append(round_times[i])

    b = names.index(baseline)
    results = []
    for i, c in enumerate(candidates):
        ratios = [t / tb for t, tb in zip(per_iter[i], per_iter[b])]
        results.append(Result(c.name, numbers[i], Stats(per_iter[i]), Stats(ratios)))
    return results


def _fmt_time(seconds: float) -> str:
    if math.isnan(seconds):
        return "nan"
    if seconds >= 1.0:
        return f"{seconds:.3f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} us"


def format_table(title: str, results: Sequence[Result], baseline: str, unit: str = "per iteration") -> str:
    """A plain-text table: median and IQR of the time, and the ratio to ``baseline``."""
    header = ["candidate", f"median {unit}", "IQR", f"ratio vs {baseline}", "ratio IQR", "n"]
    rows = []
    for r in results:
        rows.append(
            [
                r.name,
                _fmt_time(r.seconds.median),
                _fmt_time(r.seconds.iqr),
                f"{r.ratio.median:.3f}x",
                f"{r.ratio.q1:.3f}-{r.ratio.q3:.3f}",
                f"{len(r.seconds.samples)}x{r.number}",
            ]
        )
    widths = [max(len(header[i]), *(len(row[i]) for row in rows)) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]
        return "  ".join([first, *rest])

    rule = "-" * len(line(header))
    return "\n".join([title, rule, line(header), rule, *(line(row) for row in rows), rule])
