"""What ``BijectiveMode(requires_ladj=False)`` saves a residual flow's forward pass.

Run from the repository root::

    python benchmarks/residual.py             # about a minute on 2 shared cores
    python benchmarks/residual.py --quick     # a few seconds, rough numbers

A residual block ``y = x + g(x)`` costs one pass of its network ``g``; its log|det J| costs far
more: ``D`` vector-Jacobian products for the exact log-det, ``n_terms`` for the truncated power
series. Inside ``BijectiveMode(requires_ladj=False)`` the forward pass records the normalised
weights and leaves the log-det to a later ``log_abs_det_jacobian`` call, or to none. The flow
here is ``--blocks`` residual blocks (hidden layers (64, 64)) on D = 16, batch 256, gradients on
(as in a training step's forward); the candidates, timed in interleaved rounds (see
``_timing.py``), with the mode entered per call:

* ``BijectiveMode(requires_ladj=True)``: ``flow.forward(x)``, log-dets computed and recorded;
* ``BijectiveMode(requires_ladj=False)``: ``flow.forward(x)``, log-dets deferred;
* ``requires_ladj=False, then log_abs_det_jacobian``: the deferred log-det asked for at once;
* ``forward_and_ladj`` (no mode): the one-pass forward with log-dets, the baseline.

One table per estimator (``--estimators``; ``exact`` and ``series`` are deterministic in cost,
``roulette`` draws its number of terms). Before timing, a check prints the largest difference
between the deferred and the one-pass log-dets (exact estimator: equal to rounding).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import CLOCKS, Candidate, Result, Stats, format_table, looped, measure

import flowtorch
from flowtorch.bijectors.residual import ResidualFlow
from flowtorch.core.compose import Compose

BASELINE = "forward_and_ladj (no mode)"


def make_flow(dim: int, blocks: int, estimator: str, seed: int = 0) -> Compose:
    torch.manual_seed(seed)
    plans = [ResidualFlow(hidden_dims=(64, 64), estimator=estimator, n_terms=8) for _ in range(blocks)]
    flow: Compose = Compose(plans)(shape=torch.Size([dim]))
    return flow


def bench(
    estimator: str, dim: int, batch: int, blocks: int, repeats: int, target_s: float, clock: str
) -> list[Result]:
    flow = make_flow(dim, blocks, estimator)
    torch.manual_seed(1)
    x = torch.randn(batch, dim)

    def forward_in(requires_ladj: bool) -> Callable[[], object]:
        def run() -> object:
            with flowtorch.BijectiveMode(requires_ladj=requires_ladj):
                return flow.forward(x)

        return run

    def deferred() -> object:
        with flowtorch.BijectiveMode(requires_ladj=False):
            y = flow.forward(x)
            return flow.log_abs_det_jacobian(x, y)

    def one_pass() -> object:
        return flow.forward_and_ladj(x)

    if estimator == "exact":
        torch.manual_seed(2)
        ref = flow.forward_and_ladj(x)[1]
        later = deferred()
        assert isinstance(later, torch.Tensor)
        print(f"  check: max |deferred log-det - one-pass log-det| = {(later - ref).abs().max().item():.2e}")
    candidates = [
        Candidate("BijectiveMode(requires_ladj=True)", looped(forward_in(True))),
        Candidate("BijectiveMode(requires_ladj=False)", looped(forward_in(False))),
        Candidate("requires_ladj=False, then log_abs_det_jacobian", looped(deferred)),
        Candidate(BASELINE, looped(one_pass)),
    ]
    return measure(candidates, baseline=BASELINE, repeats=repeats, target_s=target_s, clock=CLOCKS[clock])


def main(argv: list[str] | None = None) -> dict[str, list[Result]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--estimators", nargs="+", default=["exact", "series"], choices=["exact", "series", "roulette"]
    )
    parser.add_argument("--blocks", type=int, default=4, help="residual blocks (default 4)")
    parser.add_argument("--dim", type=int, default=16, help="event size D (default 16)")
    parser.add_argument("--batch", type=int, default=256, help="batch size (default 256)")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 15; 3 with --quick)")
    parser.add_argument(
        "--clock", choices=sorted(CLOCKS), default="wall", help="wall (default) or process time"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--quick", action="store_true", help="a fast smoke run: few rounds, short samples")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(args.threads, 1))
    repeats = args.repeats if args.repeats is not None else (3 if args.quick else 15)
    target_s = 0.02 if args.quick else 0.08
    print(
        f"residual flow: {args.blocks} blocks, D={args.dim}, hidden (64, 64), batch {args.batch}, "
        f"{torch.get_num_threads()} thread(s), torch {torch.__version__}, gradients on"
    )
    out: dict[str, list[Result]] = {}
    for estimator in args.estimators:
        print(f"estimator {estimator!r}:", flush=True)
        results = bench(estimator, args.dim, args.batch, args.blocks, repeats, target_s, args.clock)
        out[estimator] = results
        print(format_table(f"forward pass, estimator={estimator!r}", results, BASELINE, unit="per call"))
        by_name = {r.name: r for r in results}
        with_ladj = by_name["BijectiveMode(requires_ladj=True)"].seconds.samples
        without = by_name["BijectiveMode(requires_ladj=False)"].seconds.samples
        ratio = Stats([a / b for a, b in zip(without, with_ladj)])
        iqr = f"IQR {ratio.q1:.3f}-{ratio.q3:.3f}"
        print(f"  requires_ladj=False / requires_ladj=True: {ratio.median:.3f}x ({iqr})\n", flush=True)
    return out


if __name__ == "__main__":
    main()
