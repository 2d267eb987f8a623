"""flowtorch against a hand-written PyTorch floor, its peers and flowtorch 0.8.

Every workload is timed with :func:`_timing.measure` (interleaved rounds, medians, per-round
ratios), once with one torch thread and once with torch's default thread count, and reported as
ratios to the hand-written floor of the same model (``floors.py``). The models (``peers.py``)
share one architecture: 5 layers, MADE or MLP conditioners with hidden layers ``[64, 64]`` and
ReLU, batch 512, Adam.

Benchmarks (names for ``run.py --only``):

* ``maf_step``: MAF training step (``log_prob`` of data, backward, Adam step) at D = 2, 16, 64;
* ``iaf_step``: IAF sample-then-score training step at D = 16, 64 (flowtorch's
  ``rsample_and_log_prob``; ``rsample`` + ``log_prob`` inside ``BijectiveMode`` against the floor
  inside a do-nothing ``TorchFunctionMode``);
* ``spline_ar_step`` and ``spline_coupling_step``: rational-quadratic spline flows at D = 16;
* ``build_time``: building a 5-layer MAF at D = 1000;
* ``batch_scaling`` and ``dim_scaling``: time per sample as the batch grows 64 -> 4096 and as D
  grows 2 -> 256 (flowtorch and the floor);
* ``compile_step``: the flowtorch MAF step with ``torch.compile`` against eager (in a subprocess,
  given two minutes to compile).

:func:`targets` turns the results into the project's performance targets, met or not.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import floors
import legacy08
import peers
import torch
from _timing import Candidate, Result, Stats, format_table, looped, measure
from torch import Tensor, nn

import flowtorch

__all__ = ["BENCHMARKS", "targets"]

LAYERS, HIDDEN, BATCH = 5, (64, 64), 512
SPLINE = {"bins": 8, "bound": 3.0}
LR = 1e-5  # small: the same batch is used for every step, the weights should barely move

FLOOR = "floor (hand-written)"
FT = "flowtorch"
FT_VALIDATE = "flowtorch, validate_args=True"


@dataclass(frozen=True)
class Settings:
    """What ``run.py`` passes in: rounds, sample length, clock and thread settings."""

    quick: bool
    repeats: int | None
    target_s: float
    clock: Callable[[], float]
    threads: tuple[int, ...]  # torch thread counts to time at

    def rounds(self, default: int, quick: int) -> int:
        if self.repeats is not None:
            return self.repeats
        return quick if self.quick else default

    def clock_for(self, threads: int) -> Callable[[], float]:
        """The clock for a thread setting: the process clock adds up the CPU time of all threads,
        which is not the time a multi-threaded step takes, so above one thread it is wall time."""
        return self.clock if threads == 1 else time.perf_counter


# ------------------------------------------------------------------------------------ helpers
def _per_round_ratio(results: Sequence[Result], a: str, b: str) -> Stats:
    by = {r.name: r for r in results}
    return Stats([x / y for x, y in zip(by[a].seconds.samples, by[b].seconds.samples)])


def _summary(
    results: Sequence[Result], baseline: str, pairs: Sequence[tuple[str, str]] = ()
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "baseline": baseline,
        "candidates": [r.to_dict() for r in results],
        "ratios": {r.name: r.ratio.median for r in results},
    }
    if pairs:
        out["pairs"] = {f"{a} / {b}": _per_round_ratio(results, a, b).to_dict() for a, b in pairs}
    return out


def _print_pairs(results: Sequence[Result], pairs: Sequence[tuple[str, str]]) -> None:
    for a, b in pairs:
        s = _per_round_ratio(results, a, b)
        print(f"  {a} / {b}: {s.median:.3f}x (IQR {s.q1:.3f}-{s.q3:.3f})")


def _with_threads(n: int) -> AbstractContextManager[None]:
    class _Threads:
        def __enter__(self) -> None:
            self.saved = torch.get_num_threads()
            torch.set_num_threads(n)

        def __exit__(self, *exc: Any) -> None:
            torch.set_num_threads(self.saved)

    return _Threads()


def _train_step(
    module: nn.Module,
    loss: Callable[[], Tensor],
    mode: Callable[[], AbstractContextManager[Any]] | None = None,
) -> Callable[[], None]:
    """One training step: zero the gradients, the loss (inside ``mode()`` if given), backward, Adam."""
    opt = torch.optim.Adam(module.parameters(), lr=LR)
    enter = mode or nullcontext

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with enter():
            value = loss()
        value.backward()
        opt.step()

    return step


def _density_loss(run: Callable[[Tensor], Tensor], x: Tensor) -> Callable[[], Tensor]:
    """``-run(x).mean()`` on a new tensor object per step (``x.detach()``, sharing ``x``'s memory), as
    each step of real training reads a new batch: Pyro's transforms cache their last call by
    identity and would otherwise return the previous step's (freed) graph."""
    return lambda: -run(x.detach()).mean()


def _reverse_kl_loss(run: Callable[[int], tuple[Tensor, Tensor]], n: int) -> Callable[[], Tensor]:
    """Reverse KL to a standard normal target, up to a constant: ``E_q[log q(y) + |y|^2 / 2]``."""

    def loss() -> Tensor:
        y, lp = run(n)
        return (lp + 0.5 * (y * y).sum(-1)).mean()

    return loss


def _peer_models(kind: str, d: int, hidden: Sequence[int] = HIDDEN, **kw: Any) -> list[peers.Model]:
    """The peers' models of ``kind``; a library that is missing or fails is reported and left out."""
    models = []
    for lib in peers.LIBRARIES:
        extra = dict(kw)
        if lib == "flowtorch 0.8":
            ft08 = legacy08.load()
            if ft08 is None:
                continue
            extra["ft08"] = ft08
        try:
            torch.manual_seed(1)
            models.append(peers.build(lib, kind, d, LAYERS, hidden, **extra))
        except ImportError as exc:
            print(f"  {lib}: not installed ({exc})")
        except NotImplementedError as exc:
            print(f"  {lib}: skipped ({exc})")
    return models


def _trial(name: str, step: Callable[[], None]) -> bool:
    """Runs one step; a library that fails on this workload is reported and left out."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            step()
        return True
    except Exception as exc:
        print(f"  {name}: fails on this workload, skipped ({type(exc).__name__}: {exc})")
        return False


def _time(
    cfg: Settings,
    title: str,
    steps: Sequence[tuple[str, Callable[[], None]]],
    baseline: str,
    pairs: Sequence[tuple[str, str]] = (),
    rounds: tuple[int, int] = (12, 4),
    unit: str = "per step",
) -> dict[str, Any]:
    """Times ``steps`` at each thread setting; returns ``{"threads=N": summary}``."""
    out: dict[str, Any] = {}
    for n in cfg.threads:
        with _with_threads(n):
            candidates = [Candidate(name, looped(step)) for name, step in steps]
            results = measure(
                candidates,
                baseline=baseline,
                repeats=cfg.rounds(*rounds),
                target_s=cfg.target_s,
                clock=cfg.clock_for(n),
            )
        print()
        print(format_table(f"{title}, {n} thread{'s' if n > 1 else ''}", results, baseline, unit=unit))
        _print_pairs(results, pairs)
        out[f"threads={n}"] = _summary(results, baseline, pairs)
    return out


# ------------------------------------------------------------------------- density workloads
_FLOOR_CLASSES: dict[str, Callable[..., nn.Module]] = {
    "maf": lambda d, hidden: floors.FloorMAF(d, LAYERS, hidden),
    "spline_ar": lambda d, hidden: floors.FloorSplineAR(d, LAYERS, hidden, **SPLINE),
    "spline_coupling": lambda d, hidden: floors.FloorCouplingSpline(d, LAYERS, hidden, **SPLINE),
}


def _density(cfg: Settings, kind: str, d: int, title: str) -> dict[str, Any]:
    """Training step on data: ``-log_prob(x).mean()``, backward, Adam step."""
    kw = SPLINE if kind.startswith("spline") else {}
    torch.manual_seed(0)
    x = torch.randn(BATCH, d)
    ft = peers.flowtorch_model(kind, d, LAYERS, HIDDEN, validate=False, **kw)
    ft_v = peers.flowtorch_model(kind, d, LAYERS, HIDDEN, validate=True, **kw)
    ft_v.module.load_state_dict(ft.module.state_dict())
    floor = _FLOOR_CLASSES[kind](d, HIDDEN)
    floors.copy_weights(ft.module, floor)
    with torch.no_grad():
        diff = (ft.run(x) - floor.log_prob(x)).abs().max().item()  # type: ignore[operator]
    print(f"  same weights: max |log p(flowtorch) - log p(floor)| = {diff:.2e}")
    models = [
        (FLOOR, floor, floor.log_prob, "plain nn.Linear x masks, formulas inline"),  # type: ignore[attr-defined]
        (FT, ft.module, ft.run, ft.note),
        (FT_VALIDATE, ft_v.module, ft_v.run, ft_v.note),
    ]
    models += [(m.name, m.module, m.run, m.note) for m in _peer_models(kind, d, **kw)]
    counts = {name: peers.n_params(module) for name, module, _, _ in models}
    steps = []
    for name, module, run, note in models:
        step = _train_step(module, _density_loss(run, x))
        if _trial(name, step):
            steps.append((name, step))
        print(f"  {name}: {counts[name]} parameters" + (f" ({note})" if note else ""))
    if len(set(counts.values())) != 1:
        print(f"  NOTE: parameter counts differ: {counts}")
    rounds = (13, 3) if d <= 16 else (10, 3)
    out = _time(cfg, title, steps, FLOOR, pairs=[(FT_VALIDATE, FT)], rounds=rounds)
    return {
        "config": {"d": d, "batch": BATCH, "layers": LAYERS, "hidden": list(HIDDEN), **kw},
        "parameters": counts,
        "floor_max_abs_diff": diff,
        **out,
    }


def bench_maf_step(cfg: Settings) -> dict[str, Any]:
    out = {}
    for d in (2, 16, 64):
        print(
            f"\n-- MAF, D={d}, batch {BATCH}, {LAYERS} layers, MADE hidden {list(HIDDEN)}: "
            "-log_prob(x).mean(), backward, Adam step"
        )
        out[f"D={d}"] = _density(cfg, "maf", d, f"maf_step D={d}")
    return out


def bench_spline_ar_step(cfg: Settings) -> dict[str, Any]:
    d = 16
    print(
        f"\n-- autoregressive RQ-spline flow (NSF), D={d}, {SPLINE['bins']} bins on "
        f"[-{SPLINE['bound']}, {SPLINE['bound']}], batch {BATCH}: training step on data"
    )
    return {f"D={d}": _density(cfg, "spline_ar", d, f"spline_ar_step D={d}")}


def bench_spline_coupling_step(cfg: Settings) -> dict[str, Any]:
    d = 16
    print(
        f"\n-- coupling RQ-spline flow, D={d}, alternating halves, {SPLINE['bins']} bins, "
        f"batch {BATCH}: training step on data"
    )
    return {f"D={d}": _density(cfg, "spline_coupling", d, f"spline_coupling_step D={d}")}


# ------------------------------------------------------------------------------------- IAF
FT_MODE = "flowtorch, rsample + log_prob in BijectiveMode"
FLOOR_MODE = "floor in a do-nothing mode"


def bench_iaf_step(cfg: Settings) -> dict[str, Any]:
    out = {}
    for d in (16, 64):
        print(f"\n-- IAF, D={d}, {LAYERS} layers: sample {BATCH}, score, reverse-KL loss, backward, Adam")
        torch.manual_seed(0)
        ft = peers.flowtorch_model("iaf", d, LAYERS, HIDDEN, validate=False)
        flow = ft.module
        floor = floors.FloorIAF(d, LAYERS, HIDDEN)
        floors.copy_weights(flow, floor)
        torch.manual_seed(1)
        y0, lp0 = floor.rsample_and_log_prob(BATCH)
        torch.manual_seed(1)
        y1, lp1 = flow.rsample_and_log_prob((BATCH,))  # type: ignore[operator]
        diff = max((y0 - y1).abs().max().item(), (lp0 - lp1).abs().max().item())
        print(f"  same weights and noise: max |difference| of samples and log q = {diff:.2e}")

        def in_mode(n: int, flow: Any = flow) -> tuple[Tensor, Tensor]:
            y = flow.rsample((n,))
            return y, flow.log_prob(y)

        ft_name = "flowtorch, rsample_and_log_prob"
        models: list[tuple[str, nn.Module, Callable[[], Tensor], Any, str]] = [
            (FLOOR, floor, _reverse_kl_loss(floor.rsample_and_log_prob, BATCH), None, ""),
            (
                FLOOR_MODE,
                floor,
                _reverse_kl_loss(floor.rsample_and_log_prob, BATCH),
                floors.PassThroughMode,
                "",
            ),
            (ft_name, flow, _reverse_kl_loss(ft.run, BATCH), None, ""),
            (FT_MODE, flow, _reverse_kl_loss(in_mode, BATCH), flowtorch.BijectiveMode, ""),
        ]
        models += [
            (m.name, m.module, _reverse_kl_loss(m.run, BATCH), None, m.note) for m in _peer_models("iaf", d)
        ]
        steps = []
        for name, module, loss, mode, note in models:
            step = _train_step(module, loss, mode)
            if _trial(name, step):
                steps.append((name, step))
            print(f"  {name}: {peers.n_params(module)} parameters" + (f" ({note})" if note else ""))
        pairs = [(ft_name, FLOOR), (FT_MODE, FLOOR_MODE), (FLOOR_MODE, FLOOR)]
        res = _time(cfg, f"iaf_step D={d}", steps, FLOOR, pairs=pairs, rounds=(13, 3))
        out[f"D={d}"] = {"config": {"d": d, "batch": BATCH}, "floor_max_abs_diff": diff, **res}
    return out


# ------------------------------------------------------------------------------- build time
def bench_build_time(cfg: Settings) -> dict[str, Any]:
    d, hidden = 1000, (1000, 1000)
    print(
        f"\n-- building a {LAYERS}-layer MAF at D={d}, MADE hidden {list(hidden)} "
        "(flowtorch's MADE needs hidden layers of at least D - 1 units)"
    )
    base = peers._standard_normal(d, False)
    ft08 = legacy08.load()
    import flowtorch.distributions as ftdist
    from flowtorch import recipes

    builders: list[tuple[str, Callable[[], Any]]] = [
        (FLOOR, lambda: floors.FloorMAF(d, LAYERS, hidden)),
        (FT, lambda: ftdist.Flow(base, recipes.MAF(LAYERS, hidden))),
    ]
    for lib in peers.LIBRARIES:
        if lib == "flowtorch 0.8":
            if ft08 is None:
                continue
            builders.append((lib, lambda lib=lib: peers.build(lib, "maf", d, LAYERS, hidden, ft08=ft08)))
        else:
            builders.append((lib, lambda lib=lib: peers.build(lib, "maf", d, LAYERS, hidden)))
    steps = [(name, fn) for name, fn in builders if _trial(name, fn)]
    out: dict[str, Any] = {"config": {"d": d, "hidden": list(hidden), "layers": LAYERS}}
    for n in cfg.threads:
        with _with_threads(n):
            candidates = [Candidate(name, looped(fn), number=1) for name, fn in steps]
            results = measure(candidates, baseline=FLOOR, repeats=cfg.rounds(5, 2), clock=cfg.clock_for(n))
        print()
        print(
            format_table(f"build_time D={d}, {n} thread{'s' if n > 1 else ''}", results, FLOOR, unit="build")
        )
        out[f"threads={n}"] = _summary(results, FLOOR)
    return out


# ---------------------------------------------------------------------------------- scaling
def _scaling(
    cfg: Settings,
    points: Sequence[tuple[int, int, tuple[int, ...]]],
    label: Callable[[int, int], str],
    title: str,
) -> dict[str, Any]:
    """flowtorch's and the floor's MAF training step at each ``(batch, d, hidden)``."""
    steps = []
    for batch, d, hidden in points:
        torch.manual_seed(0)
        x = torch.randn(batch, d)
        ft = peers.flowtorch_model("maf", d, LAYERS, hidden, validate=False)
        floor = floors.FloorMAF(d, LAYERS, hidden)
        floors.copy_weights(ft.module, floor)
        steps.append((f"{FLOOR} {label(batch, d)}", _train_step(floor, _density_loss(floor.log_prob, x))))
        steps.append((f"{FT} {label(batch, d)}", _train_step(ft.module, _density_loss(ft.run, x))))
    out: dict[str, Any] = {"points": [{"batch": b, "d": d, "hidden": list(h)} for b, d, h in points]}
    for n in cfg.threads:
        with _with_threads(n):
            candidates = [Candidate(name, looped(step)) for name, step in steps]
            results = measure(
                candidates,
                baseline=steps[0][0],
                repeats=cfg.rounds(10, 3),
                target_s=cfg.target_s,
                clock=cfg.clock_for(n),
            )
        by = {r.name: r for r in results}
        rows = []
        print(f"\n{title}, {n} thread{'s' if n > 1 else ''}")
        print(
            f"  {'point':>14}  {'floor / sample':>15}  {'flowtorch / sample':>19}  {'flowtorch / floor':>18}"
        )
        for batch, d, _ in points:
            f, t = by[f"{FLOOR} {label(batch, d)}"], by[f"{FT} {label(batch, d)}"]
            ratio = _per_round_ratio(results, t.name, f.name)
            row = {
                "batch": batch,
                "d": d,
                "floor_per_sample_s": f.seconds.median / batch,
                "flowtorch_per_sample_s": t.seconds.median / batch,
                "flowtorch_over_floor": ratio.to_dict(),
                "floor_step_s": f.seconds.to_dict(),
                "flowtorch_step_s": t.seconds.to_dict(),
            }
            rows.append(row)
            print(
                f"  {label(batch, d):>14}  {row['floor_per_sample_s'] * 1e6:12.2f} us  "
                f"{row['flowtorch_per_sample_s'] * 1e6:16.2f} us  {ratio.median:11.3f}x "
                f"({ratio.q1:.2f}-{ratio.q3:.2f})"
            )
        out[f"threads={n}"] = {"rows": rows}
    return out


def bench_batch_scaling(cfg: Settings) -> dict[str, Any]:
    d = 16
    batches = (64, 256, 512, 1024, 4096) if cfg.quick else (64, 128, 256, 512, 1024, 2048, 4096)
    print(f"\n-- time per sample of the MAF training step as the batch grows, D={d}")
    out = _scaling(cfg, [(b, d, HIDDEN) for b in batches], lambda b, d: f"batch {b}", "batch_scaling")
    for key, value in out.items():
        if key.startswith("threads="):
            rows = {r["batch"]: r for r in value["rows"]}
            growth = rows[4096]["flowtorch_per_sample_s"] / rows[512]["flowtorch_per_sample_s"]
            value["flowtorch_per_sample_4096_over_512"] = growth
            print(f"  {key}: flowtorch time per sample at batch 4096 / at batch 512: {growth:.3f}x")
    return out


def bench_dim_scaling(cfg: Settings) -> dict[str, Any]:
    dims = (2, 16, 64, 256) if cfg.quick else (2, 4, 8, 16, 32, 64, 128, 256)
    print(
        f"\n-- time per sample of the MAF training step as D grows, batch {BATCH}, MADE hidden "
        "[max(64, D)] * 2 (flowtorch's MADE needs at least D - 1 hidden units)"
    )
    points = [(BATCH, d, (max(64, d),) * 2) for d in dims]
    return _scaling(cfg, points, lambda b, d: f"D {d}", "dim_scaling")


# ---------------------------------------------------------------------------------- compile
_COMPILE_CHILD = textwrap.dedent(
    """
    import json, sys, time
    sys.path.insert(0, {bench_dir!r})
    import torch
    torch.set_num_threads({threads})
    import floors, peers
    from _timing import Candidate, looped, measure
    torch.manual_seed(0)
    d = {d}
    x = torch.randn({batch}, d)
    ft = peers.flowtorch_model("maf", d, {layers}, {hidden}, validate=False)
    eager_flow = ft.module
    compiled_flow = peers.flowtorch_model("maf", d, {layers}, {hidden}, validate=False).module
    compiled_flow.load_state_dict(eager_flow.state_dict())
    loss = torch.compile(lambda v: -compiled_flow.log_prob(v).mean())
    opt_e = torch.optim.Adam(eager_flow.parameters(), lr=1e-5)
    opt_c = torch.optim.Adam(compiled_flow.parameters(), lr=1e-5)
    def eager():
        opt_e.zero_grad(set_to_none=True); l = -eager_flow.log_prob(x).mean(); l.backward(); opt_e.step()
    def compiled():
        opt_c.zero_grad(set_to_none=True); l = loss(x); l.backward(); opt_c.step()
    t0 = time.perf_counter()
    compiled()
    t1 = time.perf_counter()
    print(json.dumps({{"compile_s": t1 - t0}}), flush=True)
    with torch.no_grad():
        diff = (loss(x) + eager_flow.log_prob(x).mean()).abs().item()
    res = measure([Candidate("eager", looped(eager)), Candidate("torch.compile", looped(compiled))],
                  baseline="eager", repeats={rounds}, target_s={target_s})
    print(json.dumps({{"loss_diff": diff, "results": [r.to_dict() for r in res]}}), flush=True)
    """
)

COMPILE_LIMIT_S = 120.0


def bench_compile_step(cfg: Settings) -> dict[str, Any]:
    d = 16
    print(
        f"\n-- torch.compile of flowtorch's MAF loss (D={d}, batch {BATCH}) against eager; "
        f"compile given {COMPILE_LIMIT_S:.0f} s"
    )
    out: dict[str, Any] = {"config": {"d": d, "batch": BATCH}}
    for n in cfg.threads:
        code = _COMPILE_CHILD.format(
            bench_dir=str(Path(__file__).resolve().parent),
            threads=n,
            d=d,
            batch=BATCH,
            layers=LAYERS,
            hidden=HIDDEN,
            rounds=cfg.rounds(10, 3),
            target_s=cfg.target_s,
        )
        key = f"threads={n}"
        proc = subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        start = time.perf_counter()
        try:
            stdout, stderr = proc.communicate(timeout=COMPILE_LIMIT_S + 120)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        lines = [json.loads(s) for s in stdout.splitlines() if s.startswith("{")]
        elapsed = time.perf_counter() - start
        if not lines:
            why = "failed" if proc.returncode else f"did not finish in {elapsed:.0f} s"
            tail = stderr.strip().splitlines()[-1:] or [""]
            print(f"  {key}: torch.compile {why}: {tail[0]}")
            out[key] = {"status": "failed", "error": tail[0]}
            continue
        compile_s = lines[0]["compile_s"]
        if compile_s > COMPILE_LIMIT_S:
            print(f"  {key}: compiling took {compile_s:.0f} s (> {COMPILE_LIMIT_S:.0f} s)")
        if len(lines) < 2:
            print(f"  {key}: compiled in {compile_s:.1f} s, then the timing did not finish")
            out[key] = {"status": "incomplete", "compile_s": compile_s}
            continue
        eager, comp = lines[1]["results"]
        ratio = comp["ratio_to_baseline"]
        print(
            f"  {key}: first call (compiles) {compile_s:.1f} s; "
            f"|loss difference| {lines[1]['loss_diff']:.1e}; "
            f"eager {eager['seconds_per_iteration']['median'] * 1e3:.2f} ms, compiled "
            f"{comp['seconds_per_iteration']['median'] * 1e3:.2f} ms per step: compiled / eager "
            f"{ratio['median']:.3f}x (IQR {ratio['q1']:.3f}-{ratio['q3']:.3f})"
        )
        out[key] = {
            "status": "ok",
            "compile_s": compile_s,
            "loss_diff": lines[1]["loss_diff"],
            "eager": eager,
            "compiled": comp,
        }
    return out


BENCHMARKS: dict[str, Callable[[Settings], dict[str, Any]]] = {
    "maf_step": bench_maf_step,
    "iaf_step": bench_iaf_step,
    "spline_ar_step": bench_spline_ar_step,
    "spline_coupling_step": bench_spline_coupling_step,
    "build_time": bench_build_time,
    "batch_scaling": bench_batch_scaling,
    "dim_scaling": bench_dim_scaling,
    "compile_step": bench_compile_step,
}


# ---------------------------------------------------------------------------------- targets
def _ratio(table: dict[str, Any], name: str) -> float | None:
    return table.get("ratios", {}).get(name)


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The performance targets, evaluated on one run's results (those benchmarks that ran)."""
    rows: list[dict[str, Any]] = []

    def add(name: str, value: float | None, limit: float, note: str = "") -> None:
        if value is None:
            return
        rows.append({"target": name, "value": value, "limit": limit, "met": value <= limit, "note": note})

    for threads_key in sorted(
        {
            k
            for b in results.values()
            if isinstance(b, dict)
            for v in b.values()
            if isinstance(v, dict)
            for k in v
            if k.startswith("threads=")
        }
    ):
        sfx = f" [{threads_key.replace('=', ' ')}]"
        for d in (2, 16, 64):
            table = results.get("maf_step", {}).get(f"D={d}", {}).get(threads_key)
            if table:
                add(f"MAF step D={d}: flowtorch / floor{sfx}", _ratio(table, FT), 1.10)
                add(
                    f"MAF step D={d}: flowtorch (validate_args=True) / floor{sfx}",
                    _ratio(table, FT_VALIDATE),
                    1.10,
                )
                peer_ratios = [v for k, v in table["ratios"].items() if k in peers.LIBRARIES]
                if peer_ratios:
                    add(
                        f"MAF step D={d}: flowtorch / fastest peer{sfx}",
                        _ratio(table, FT) / min(peer_ratios),
                        1.0,
                    )
        for d in (16, 64):
            table = results.get("iaf_step", {}).get(f"D={d}", {}).get(threads_key)
            if table:
                add(
                    f"IAF step D={d}: rsample_and_log_prob / floor{sfx}",
                    _ratio(table, "flowtorch, rsample_and_log_prob"),
                    1.15,
                )
                pair = table.get("pairs", {}).get(f"{FT_MODE} / {FLOOR_MODE}")
                if pair:
                    add(
                        f"IAF step D={d}: in BijectiveMode / floor in do-nothing mode{sfx}",
                        pair["median"],
                        1.05,
                    )
        for bench, label in (
            ("spline_ar_step", "RQ-spline autoregressive"),
            ("spline_coupling_step", "RQ-spline coupling"),
        ):
            table = results.get(bench, {}).get("D=16", {}).get(threads_key)
            if table:
                add(f"{label} step D=16: flowtorch / floor{sfx}", _ratio(table, FT), 1.10)
        table = results.get("build_time", {}).get(threads_key)
        if table:
            secs = {c["name"]: c["seconds_per_iteration"]["median"] for c in table["candidates"]}
            add(f"build 5-layer MAF at D=1000 (seconds){sfx}", secs.get(FT), 1.0)
        table = results.get("batch_scaling", {}).get(threads_key)
        if table:
            add(
                f"time per sample, batch 4096 / batch 512{sfx}",
                table.get("flowtorch_per_sample_4096_over_512"),
                1.2,
            )
    mode = results.get("mode_overhead", {}).get("train_step", {})
    for pair in mode.get("extra_ratios", []):
        if pair["numerator"].startswith("BijectiveMode") and pair["denominator"].startswith("do-nothing"):
            add(f"MLP step: {pair['numerator']} / {pair['denominator']}", pair["median"], 1.05)
    imp = results.get("import_time", {}).get("added_seconds_after_torch_same_process")
    if imp:
        add("import flowtorch after torch (seconds)", imp["median"], 0.15)
    return rows


def print_targets(rows: Sequence[dict[str, Any]]) -> None:
    if not rows:
        return
    print("\n=== targets ===")
    width = max(len(r["target"]) for r in rows)
    for r in rows:
        status = "met" if r["met"] else "NOT MET"
        print(f"  {r['target']:<{width}}  {r['value']:8.3f}  (<= {r['limit']})  {status}")
