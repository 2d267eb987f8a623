"""Two revisions of flowtorch side by side: the same workloads, in alternating processes.

A refactor claims "behaviour and speed unchanged"; this checks the speed half. Each round runs
the workload script once against each revision's ``src/`` (in a temporary ``git worktree``), in
alternating order, and the report gives each revision's median and the per-round ratios
``new / old``, whose median is the figure to quote (the machine is shared and noisy: read the
spread of the ratios, not one time).

Usage (from the repository root)::

    python benchmarks/revisions.py OLD [NEW] [--rounds 6]   # NEW defaults to the working tree

The workloads: a training step (``log_prob`` and backward) of a 5-layer MAF, NSF and RealNVP at
D = 8, batch 512, MADE (64, 64); an IAF VI step by ``rsample_and_log_prob``; and the same step as
sample-then-score inside ``BijectiveMode``; a 3-layer NAF's training step and sampling (a root
solve a layer); and an 8-layer planar flow's VI step. One torch thread.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

WORKLOAD = r"""
import json, time, torch
torch.set_num_threads(1)
import flowtorch
import flowtorch.distributions as dist
from flowtorch.recipes import IAF, MAF, NSF, RealNVP

torch.manual_seed(0)
D, B = 8, 512
base = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(D), torch.ones(D)), 1)
x = torch.randn(B, D)
out = {}

def bench(name, fn, n=30):
    for _ in range(3):
        fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    out[name] = sorted(times)[n // 2]

for name, recipe in [("MAF", MAF), ("NSF", NSF), ("RealNVP", RealNVP)]:
    flow = dist.Flow(base, recipe(layers=5, hidden_dims=(64, 64)))
    bench(f"{name} log_prob + backward", lambda flow=flow: (-flow.log_prob(x).mean()).backward())
iaf = dist.Flow(base, IAF(layers=5, hidden_dims=(64, 64)))

def vi():
    _, log_q = iaf.rsample_and_log_prob((B,))
    log_q.mean().backward()

def vi_mode():
    with flowtorch.BijectiveMode():
        y = iaf.rsample((B,))
        iaf.log_prob(y).mean().backward()

bench("IAF rsample_and_log_prob + backward", vi)
bench("IAF sample-then-score in the mode", vi_mode)

# the numerically inverted and the planar families: a root solve a layer when sampling
import flowtorch.bijectors as bij
import flowtorch.parameters as params
naf = dist.Flow(base, bij.Compose([
    bij.NeuralAutoregressive(params.DenseAutoregressive(hidden_dims=(64, 64))) for _ in range(3)
]))
bench("NAF log_prob + backward", lambda: (-naf.log_prob(x).mean()).backward())
with torch.no_grad():
    bench("NAF rsample (root solves)", lambda: naf.rsample((B,)), n=10)
planar = dist.Flow(base, bij.Compose([bij.Planar() for _ in range(8)]))

def planar_vi():
    _, log_q = planar.rsample_and_log_prob((B,))
    log_q.mean().backward()

bench("Planar x8 rsample_and_log_prob + backward", planar_vi)
print(json.dumps(out))
"""


def _run(src: Path) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", WORKLOAD],
        env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise SystemExit(f"the workload failed against {src}:\n{done.stderr[-3000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("old", help="a git revision")
    parser.add_argument("new", nargs="?", default=None, help="a git revision (default: the working tree)")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        trees = {}
        for tag, rev in (("old", args.old), ("new", args.new)):
            if rev is None:
                trees[tag] = ROOT / "src"
                continue
            path = Path(tmp) / tag
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "add", "-f", "--detach", str(path), rev], check=True
            )
            trees[tag] = path / "src"
        try:
            runs: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
            for r in range(args.rounds):
                order = ("old", "new") if r % 2 == 0 else ("new", "old")
                for tag in order:
                    runs[tag].append(_run(trees[tag]))
        finally:
            for tag, rev in (("old", args.old), ("new", args.new)):
                if rev is not None:
                    subprocess.run(
                        ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(Path(tmp) / tag)]
                    )
    print(f"old = {args.old}, new = {args.new or 'working tree'}, {args.rounds} rounds, medians of 30 calls")
    print(f"{'workload':40s} {'old ms':>8s} {'new ms':>8s} {'new/old':>8s}   per round")
    for key in runs["old"][0]:
        ratios = [n[key] / o[key] for o, n in zip(runs["old"], runs["new"])]
        old = statistics.median(o[key] for o in runs["old"]) * 1e3
        new = statistics.median(n[key] for n in runs["new"]) * 1e3
        spread = ", ".join(f"{x:.2f}" for x in ratios)
        print(f"{key:40s} {old:8.2f} {new:8.2f} {statistics.median(ratios):8.3f}   {spread}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
