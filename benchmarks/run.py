"""flowtorch benchmarks: ``python benchmarks/run.py`` runs them all; ``--help`` lists the options.

Benchmarks:

* ``iaf_sample_score``: sample-then-score with a 5-layer IAF, without ``BijectiveMode`` (the
  log-density inverts each layer sequentially), with it (served from the cache), and with
  ``Flow.rsample_and_log_prob`` (one pass);
* ``mode_overhead``: a small MLP training step with no mode, inside a do-nothing
  ``TorchFunctionMode`` and inside ``BijectiveMode``, the modes entered once or per step;
* ``import_time``: ``import flowtorch`` against ``import torch`` in fresh subprocesses;
* against a hand-written floor, the peers (zuko, nflows, normflows, Pyro) and flowtorch 0.8
  (``compare.py``): ``maf_step``, ``iaf_step``, ``spline_ar_step``, ``spline_coupling_step``,
  ``build_time``, ``batch_scaling``, ``dim_scaling``, ``compile_step``. These run at one torch
  thread and at torch's default thread count (``--thread-settings``).

Candidates are timed in interleaved rounds (see ``_timing.py``); the figures to read are the
ratios, because the machines we run on are shared and noisy.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

sys.path.insert(0, str(Path(__file__).resolve().parent))

import compare
import peers
from _timing import CLOCKS, Candidate, Clock, Result, Stats, format_table, looped, measure
from floors import PassThroughMode

import flowtorch
import flowtorch.bijectors as bij
import flowtorch.distributions as dist
import flowtorch.parameters as params

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Config:
    """Settings shared by the benchmarks."""

    repeats: int | None  # None: each benchmark's own default
    quick: bool
    clock: Clock

    def rounds(self, default: int, quick: int) -> int:
        if self.repeats is not None:
            return self.repeats
        return quick if self.quick else default

    @property
    def target_s(self) -> float:
        """How long one timed sample of a fast candidate should last."""
        return 0.02 if self.quick else 0.08


# ---------------------------------------------------------------------------------------- helpers
def ratio_between(results: Sequence[Result], numerator: str, denominator: str) -> Stats:
    """Per-round ratio of two candidates' times (the rounds of one ``measure`` call align)."""
    by_name = {r.name: r for r in results}
    a, b = by_name[numerator].seconds.samples, by_name[denominator].seconds.samples
    return Stats([x / y for x, y in zip(a, b)])


def ratio_line(results: Sequence[Result], numerator: str, denominator: str) -> str:
    s = ratio_between(results, numerator, denominator)
    return f"  {numerator} / {denominator}: {s.median:.3f}x (IQR {s.q1:.3f}-{s.q3:.3f})"


def ratio_dict(results: Sequence[Result], numerator: str, denominator: str) -> dict[str, Any]:
    return {
        "numerator": numerator,
        "denominator": denominator,
        **ratio_between(results, numerator, denominator).to_dict(),
    }


def results_dict(results: Sequence[Result], baseline: str) -> dict[str, Any]:
    return {"baseline": baseline, "candidates": [r.to_dict() for r in results]}


def make_iaf(dim: int, layers: int = 5, hidden: tuple[int, ...] = (64, 64), seed: int = 0) -> dist.Flow:
    """A ``layers``-layer IAF on ``dim`` dims, with weights drawn from ``seed``.

    The conditioners' output layers are initialised near zero by the library (a near-identity
    flow); they are scaled up here so that every layer does real work and the correctness check
    compares non-trivial numbers.
    """
    torch.manual_seed(seed)
    plan = bij.Compose(
        [
            bij.Invert(bij.AffineAutoregressive(params.DenseAutoregressive(hidden_dims=hidden)))
            for _ in range(layers)
        ]
    )
    base = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(dim), torch.ones(dim)), 1)
    flow = dist.Flow(base, plan)
    with torch.no_grad():
        for module in flow.modules():
            if isinstance(module, params.DenseAutoregressive):
                module.output.weight.mul_(30.0)
                module.output.bias.normal_(0.0, 0.05)
    return flow


# ------------------------------------------------------------------------------ iaf_sample_score
def bench_iaf_sample_score(cfg: Config) -> dict[str, Any]:
    dim, batch, layers = 64, 512, 5
    flow = make_iaf(dim, layers)
    shape = torch.Size([batch])
    n_params = sum(p.numel() for p in flow.parameters())
    print(
        f"{layers}-layer IAF, D={dim}, batch {batch}, MADE hidden (64, 64), {n_params} parameters", flush=True
    )

    def score_no_mode() -> torch.Tensor:
        y = flow.rsample(shape)
        return flow.log_prob(y)

    def score_in(requires_ladj: bool) -> Callable[[], torch.Tensor]:
        def score() -> torch.Tensor:
            with flowtorch.BijectiveMode(requires_ladj=requires_ladj):
                y = flow.rsample(shape)
                return flow.log_prob(y)

        return score

    def score_one_pass() -> torch.Tensor:
        return flow.rsample_and_log_prob(shape)[1]

    variants: list[tuple[str, Callable[[], torch.Tensor]]] = [
        ("no mode (sequential inverse)", score_no_mode),
        ("BijectiveMode()", score_in(True)),
        ("BijectiveMode(requires_ladj=False)", score_in(False)),
        ("rsample_and_log_prob", score_one_pass),
    ]
    baseline = variants[0][0]
    one_pass = variants[3][0]

    # Correctness: every variant from the same base noise (the same seed), against the one-pass
    # log-density; the gradients of the mean log-density as well.
    seed = 1234
    outputs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    cache_misses: dict[str, int] = {}
    for name, score in variants:
        flow.zero_grad(set_to_none=True)
        torch.manual_seed(seed)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            lp = score()
            lp.mean().backward()
        cache_misses[name] = sum(issubclass(w.category, flowtorch.CacheMissWarning) for w in caught)
        grad = torch.cat([p.grad.reshape(-1) for p in flow.parameters() if p.grad is not None])
        outputs[name] = (lp.detach(), grad)
    flow.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    z = flow.base_dist.sample(shape)
    with torch.no_grad():
        y = flow.bijector.forward(z)
        inverse_error = (flow.bijector.inverse(y) - z).abs().max().item()
    ref_lp, ref_grad = outputs[one_pass]
    correctness: dict[str, Any] = {
        "seed": seed,
        "reference": one_pass,
        "log_prob_range": [ref_lp.min().item(), ref_lp.max().item()],
        "grad_abs_max": ref_grad.abs().max().item(),
        "sequential_inverse_max_abs_error": inverse_error,
        "variants": {},
    }
    print(
        f"correctness (same base noise, seed {seed}; reference {one_pass}, "
        f"log p in [{ref_lp.min().item():.2f}, {ref_lp.max().item():.2f}], "
        f"max |grad| {ref_grad.abs().max().item():.3g}):"
    )
    for name, (lp, grad) in outputs.items():
        if name == one_pass:
            continue
        lp_diff = (lp - ref_lp).abs().max().item()
        grad_diff = (grad - ref_grad).abs().max().item()
        correctness["variants"][name] = {
            "log_prob_max_abs_diff": lp_diff,
            "grad_max_abs_diff": grad_diff,
            "cache_miss_warnings": cache_misses[name],
        }
        print(
            f"  {name}: max |d log p| {lp_diff:.2e}, max |d grad| {grad_diff:.2e}, "
            f"CacheMissWarnings {cache_misses[name]}"
        )
    print(f"  sequential inverse: max |f^-1(f(z)) - z| {inverse_error:.2e}")
    # float32 over 64 dims and 5 layers: differences of order 1e-5 are rounding.
    agree = all(
        v["log_prob_max_abs_diff"] < 1e-3 and v["grad_max_abs_diff"] < 1e-4 and v["cache_miss_warnings"] == 0
        for v in correctness["variants"].values()
    )
    correctness["agree"] = agree
    if not agree:
        print("  WARNING: the variants disagree beyond float32 rounding (or the mode missed its cache)")

    def train_step(score: Callable[[], torch.Tensor]) -> Callable[[], None]:
        def step() -> None:
            flow.zero_grad(set_to_none=True)
            score().mean().backward()

        return step

    out: dict[str, Any] = {
        "config": {"dim": dim, "batch": batch, "layers": layers, "hidden": [64, 64], "parameters": n_params},
        "correctness": correctness,
    }
    rounds = cfg.rounds(default=15, quick=3)
    for key, title, make in [
        ("train_step", "rsample + log_prob + backward (training-like step)", train_step),
        ("forward_only", "rsample + log_prob, no backward (grad mode on)", lambda s: s),
    ]:
        candidates = [Candidate(name, looped(make(score))) for name, score in variants]
        results = measure(
            candidates, baseline=baseline, repeats=rounds, target_s=cfg.target_s, clock=cfg.clock
        )
        print()
        print(format_table(f"iaf_sample_score / {key}: {title}", results, baseline, unit="per step"))
        for r in results[1:]:
            speedup = Stats([1.0 / x for x in r.ratio.samples])
            print(
                f"  speed-up of {r.name} over {baseline}: {speedup.median:.1f}x "
                f"(IQR {speedup.q1:.1f}-{speedup.q3:.1f})"
            )
        extra = [ratio_dict(results, name, one_pass) for name, _ in variants[1:3]]
        for name, _ in variants[1:3]:
            print(ratio_line(results, name, one_pass))
        out[key] = {**results_dict(results, baseline), "extra_ratios": extra}
    flow.zero_grad(set_to_none=True)
    return out


# --------------------------------------------------------------------------------- mode_overhead
def bench_mode_overhead(cfg: Config) -> dict[str, Any]:
    torch.manual_seed(0)
    width, batch = 64, 256
    model = torch.nn.Sequential(
        torch.nn.Linear(width, width),
        torch.nn.ReLU(),
        torch.nn.Linear(width, width),
        torch.nn.ReLU(),
        torch.nn.Linear(width, 1),
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(batch, width)
    target = torch.randn(batch, 1)
    print(
        f"3-layer MLP ({width}-{width}-{width}-1, ReLU), batch {batch}, Adam (default implementation on CPU)"
    )

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model(x), target)
        loss.backward()
        opt.step()

    def per_step(mode: Callable[[], TorchFunctionMode]) -> Callable[[], None]:
        def wrapped() -> None:
            with mode():
                step()

        return wrapped

    no_mode = "no mode"
    nop_once, nop_each = "do-nothing mode, entered once", "do-nothing mode, entered per step"
    bij_once, bij_each = "BijectiveMode, entered once", "BijectiveMode, entered per step"
    candidates = [
        Candidate(no_mode, looped(step)),
        Candidate(nop_once, looped(step, context=PassThroughMode)),
        Candidate(nop_each, looped(per_step(PassThroughMode))),
        Candidate(bij_once, looped(step, context=flowtorch.BijectiveMode)),
        Candidate(bij_each, looped(per_step(flowtorch.BijectiveMode))),
    ]
    rounds = cfg.rounds(default=30, quick=5)
    results = measure(candidates, baseline=no_mode, repeats=rounds, target_s=cfg.target_s, clock=cfg.clock)
    print()
    print(format_table("mode_overhead / training step", results, no_mode, unit="per step"))
    pairs = [(bij_once, nop_once), (bij_each, nop_each), (nop_once, no_mode), (nop_each, no_mode)]
    for a, b in pairs:
        print(ratio_line(results, a, b))
    out: dict[str, Any] = {
        "config": {"width": width, "batch": batch, "optimizer": "Adam"},
        "train_step": {
            **results_dict(results, no_mode),
            "extra_ratios": [ratio_dict(results, a, b) for a, b in pairs],
        },
    }

    # The cost of entering and leaving a mode with nothing inside.
    def enter(mode: Callable[[], TorchFunctionMode]) -> Callable[[], None]:
        def run() -> None:
            with mode():
                pass

        return run

    entry = [
        Candidate("enter+exit do-nothing mode", looped(enter(PassThroughMode))),
        Candidate("enter+exit BijectiveMode", looped(enter(flowtorch.BijectiveMode))),
    ]
    entry_results = measure(
        entry, baseline=entry[0].name, repeats=rounds, target_s=cfg.target_s, clock=cfg.clock
    )
    print()
    print(format_table("mode_overhead / empty with-block", entry_results, entry[0].name, unit="per entry"))
    out["entry_exit"] = results_dict(entry_results, entry[0].name)
    return out


# ----------------------------------------------------------------------------------- import_time
_IMPORT_TORCH = """
import json, time
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
import flowtorch
t2 = time.perf_counter()
import flowtorch.bijectors, flowtorch.distributions, flowtorch.parameters
t3 = time.perf_counter()
print(json.dumps([t1 - t0, t2 - t1, t3 - t2]))
"""

_IMPORT_FLOWTORCH = """
import json, time
t0 = time.perf_counter()
import flowtorch
t1 = time.perf_counter()
print(json.dumps([t1 - t0]))
"""


#: Where the import benchmark's subprocesses keep bytecode (outside the repository, reused).
PYCACHE_DIR = Path(tempfile.gettempdir()) / "flowtorch-benchmarks-pycache"


def _subprocess_times(code: str, cached: bool) -> list[float]:
    """Runs ``code`` in a fresh interpreter and returns the times it prints.

    ``cached``: bytecode is read from and written to ``PYCACHE_DIR``, as an installed package
    would have it. Otherwise the environment is inherited as is: where ``PYTHONDONTWRITEBYTECODE``
    is set (as in our development containers), an editable flowtorch is compiled from source at
    every import while torch reads the bytecode its wheel installed.
    """
    env = dict(os.environ)
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    if cached:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(PYCACHE_DIR)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    return [float(t) for t in json.loads(proc.stdout.strip().splitlines()[-1])]


def _ms(s: Stats) -> str:
    return f"{s.median * 1e3:.1f} ms (IQR {s.q1 * 1e3:.1f} to {s.q3 * 1e3:.1f} ms)"


def bench_import_time(cfg: Config) -> dict[str, Any]:
    # Times measured in the ``import torch`` subprocesses right after torch: (flowtorch, the rest).
    after_torch: dict[bool, list[tuple[float, float]]] = {True: [], False: []}

    def run_torch(cached: bool) -> Callable[[int], float]:
        def run(n: int) -> float:
            total = 0.0
            for _ in range(n):
                t_torch, t_ft, t_rest = _subprocess_times(_IMPORT_TORCH, cached)
                after_torch[cached].append((t_ft, t_rest))
                total += t_torch
            return total

        return run

    def run_flowtorch(n: int) -> float:
        return sum(_subprocess_times(_IMPORT_FLOWTORCH, True)[0] for _ in range(n))

    dont_write = bool(os.environ.get("PYTHONDONTWRITEBYTECODE"))
    torch_name, ft_name = "import torch", "import flowtorch (cold)"
    env_name = "import torch (environment as is)"
    candidates = [
        Candidate(torch_name, run_torch(True), number=1),
        Candidate(ft_name, run_flowtorch, number=1),
        Candidate(env_name, run_torch(False), number=1),
    ]
    rounds = cfg.rounds(default=6, quick=2)
    # The first call of each candidate is its warm-up (for the first run ever, it also fills the
    # bytecode cache); only the timed rounds are kept below.
    results = measure(candidates, baseline=torch_name, repeats=rounds, warmup=0)
    print()
    title = "import_time: fresh subprocesses, seconds inside the process (bytecode cached unless noted)"
    print(format_table(title, results, torch_name, unit="import"))
    diff = Stats([b - a for a, b in zip(results[0].seconds.samples, results[1].seconds.samples)])
    inc = Stats([t for t, _ in after_torch[True][-rounds:]])
    rest = Stats([t for _, t in after_torch[True][-rounds:]])
    inc_env = Stats([t for t, _ in after_torch[False][-rounds:]])
    env_note = (
        "PYTHONDONTWRITEBYTECODE set: compiled from source" if dont_write else "bytecode as Python writes it"
    )
    print(f"  added by flowtorch, separate processes (per-round difference): {_ms(diff)}")
    print(f"  added by flowtorch, same process right after import torch: {_ms(inc)}")
    print(f"  the same, environment as is ({env_note}): {_ms(inc_env)}")
    print(f"  then flowtorch.bijectors/.distributions/.parameters: {_ms(rest)}")
    return {
        **results_dict(results, torch_name),
        "pythondontwritebytecode": dont_write,
        "added_seconds_separate_processes": diff.to_dict(),
        "added_seconds_after_torch_same_process": inc.to_dict(),
        "added_seconds_after_torch_environment_as_is": inc_env.to_dict(),
        "submodules_after_flowtorch_seconds": rest.to_dict(),
    }


# ------------------------------------------------------------------------------------------ main
BENCHMARKS: dict[str, Callable[[Config], dict[str, Any]]] = {
    "iaf_sample_score": bench_iaf_sample_score,
    "mode_overhead": bench_mode_overhead,
    "import_time": bench_import_time,
}


def _git_revision() -> dict[str, Any]:
    """The commit of the checkout and whether ``src/`` differs from it (read-only git calls)."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    status = git("status", "--porcelain", "--", "src")
    modified = None if status is None else bool(status)
    return {"commit": git("rev-parse", "--short", "HEAD"), "src_modified": modified}


ALL_BENCHMARKS = [*BENCHMARKS, *compare.BENCHMARKS]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=ALL_BENCHMARKS,
        metavar="NAME",
        help=f"run only this benchmark (repeatable): {', '.join(ALL_BENCHMARKS)}",
    )
    parser.add_argument(
        "--thread-settings",
        default="1,0",
        help="torch thread counts for the comparisons with the floor and the peers, comma-separated; "
        "0 is torch's default (default: 1,0)",
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed rounds per benchmark (default: per benchmark)"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (default 1; 0 keeps torch's default)"
    )
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall time (default) or this process's CPU time, steadier on a busy machine with --threads 1",
    )
    parser.add_argument("--quick", action="store_true", help="a fast smoke run: few rounds, short samples")
    parser.add_argument(
        "--json",
        type=Path,
        default=RESULTS_DIR / "latest.json",
        help="where to write the results (default: benchmarks/results/latest.json)",
    )
    args = parser.parse_args(argv)
    if args.threads < 0:
        parser.error("--threads must be 0 (torch default) or positive")
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    default_threads = torch.get_num_threads()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    cfg = Config(repeats=args.repeats, quick=args.quick, clock=CLOCKS[args.clock])
    thread_settings = tuple(
        dict.fromkeys(int(t) or default_threads for t in args.thread_settings.split(",") if t.strip())
    )
    settings = compare.Settings(
        quick=args.quick,
        repeats=args.repeats,
        target_s=cfg.target_s,
        clock=cfg.clock,
        threads=thread_settings,
    )
    names = args.only or ALL_BENCHMARKS
    peer_versions = peers.import_peers() if any(n in compare.BENCHMARKS for n in names) else {}
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "flowtorch": flowtorch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "threads_arg": args.threads,
        "default_threads": default_threads,
        "thread_settings": list(thread_settings),
        "peers": peer_versions,
        "quick": args.quick,
        "clock": args.clock,
        "repeats_arg": args.repeats,
        **_git_revision(),
    }
    print(
        f"flowtorch {meta['flowtorch']}, torch {meta['torch']}, python {meta['python']}, "
        f"{meta['cpu_count']} CPUs, torch threads {meta['threads']}, {args.clock} clock, "
        f"commit {meta['commit']}"
        + (" (src/ has uncommitted changes)" if meta["src_modified"] else "")
        + (" (quick)" if args.quick else ""),
        flush=True,
    )
    if peer_versions:
        print("peers: " + ", ".join(f"{k} {v}" for k, v in peer_versions.items()), flush=True)
    results: dict[str, Any] = {}
    for name in names:
        print(f"\n=== {name} ===", flush=True)
        start = time.perf_counter()
        if name in BENCHMARKS:
            results[name] = BENCHMARKS[name](cfg)
        else:
            results[name] = compare.BENCHMARKS[name](settings)
        results[name]["elapsed_s"] = time.perf_counter() - start
        print(f"({name}: {results[name]['elapsed_s']:.0f} s)", flush=True)
    rows = compare.targets(results)
    compare.print_targets(rows)
    payload = {"meta": meta, "benchmarks": results, "targets": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
