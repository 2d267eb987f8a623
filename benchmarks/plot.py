"""Plots one run of ``benchmarks/run.py``: ``python benchmarks/plot.py [results.json] [--out PNG]``.

Reads the JSON that ``run.py`` writes (default ``benchmarks/results/latest.json``) and draws, at
one torch thread (``--threads`` picks another setting that the run timed):

* each library's training step as a ratio to the hand-written floor, per workload (log scale);
* the time per sample of flowtorch's and the floor's MAF step as the batch grows and as D grows;
* the time to build a 5-layer MAF at D = 1000.

Writes ``docs/img/benchmarks.png`` by default (matplotlib's Agg backend: no display needed).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import ScalarFormatter

ROOT = Path(__file__).resolve().parent.parent
FLOOR = "floor (hand-written)"
LIBS = [
    ("flowtorch", "flowtorch", "#1f77b4"),
    ("zuko", "zuko", "#ff7f0e"),
    ("nflows", "nflows", "#2ca02c"),
    ("normflows", "normflows", "#d62728"),
    ("pyro", "Pyro", "#9467bd"),
    ("flowtorch 0.8", "flowtorch 0.8", "#8c564b"),
]
IAF_FT = "flowtorch, rsample_and_log_prob"


def _workloads(bench: dict[str, Any], key: str) -> list[tuple[str, dict[str, float]]]:
    """``(label, {candidate: ratio to the floor})`` for each workload the run has."""
    rows = []
    for name, label, sub in [
        ("maf_step", "MAF\nD=2", "D=2"),
        ("maf_step", "MAF\nD=16", "D=16"),
        ("maf_step", "MAF\nD=64", "D=64"),
        ("iaf_step", "IAF\nD=16", "D=16"),
        ("iaf_step", "IAF\nD=64", "D=64"),
        ("spline_ar_step", "RQ-spline AR\nD=16", "D=16"),
        ("spline_coupling_step", "RQ-spline\ncoupling D=16", "D=16"),
    ]:
        table = bench.get(name, {}).get(sub, {}).get(key)
        if table:
            ratios = dict(table["ratios"])
            if IAF_FT in ratios:
                ratios["flowtorch"] = ratios[IAF_FT]
            rows.append((label, ratios))
    return rows


def plot(results: dict[str, Any], out: Path, threads: int) -> None:
    bench = results["benchmarks"]
    meta = results["meta"]
    key = f"threads={threads}"
    fig, axes = plt.subplots(2, 2, figsize=(13, 9), gridspec_kw={"width_ratios": [1.6, 1]})

    ax = axes[0, 0]
    rows = _workloads(bench, key)
    width = 0.8 / len(LIBS)
    for i, (lib, label, color) in enumerate(LIBS):
        xs, ys = [], []
        for j, (_, ratios) in enumerate(rows):
            if lib in ratios:
                xs.append(j - 0.4 + (i + 0.5) * width)
                ys.append(ratios[lib])
        ax.bar(xs, ys, width, label=label, color=color)
    ax.axhline(1.0, color="black", lw=1)
    ax.axhline(1.1, color="grey", lw=1, ls="--", label="1.10x (target)")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.set_xticks(range(len(rows)), [label for label, _ in rows], fontsize=8)
    ax.set_ylabel("time per training step / hand-written floor")
    ax.set_title(
        f"Training step, batch 512, 5 layers, hidden [64, 64] ({threads} thread{'s' * (threads > 1)})"
    )
    ax.legend(fontsize=7, ncol=2)

    for ax, name, field, xlabel in [
        (axes[0, 1], "batch_scaling", "batch", "batch size"),
        (axes[1, 0], "dim_scaling", "d", "D (MADE hidden max(64, D))"),
    ]:
        table = bench.get(name, {}).get(key)
        if not table:
            ax.set_visible(False)
            continue
        xs = [r[field] for r in table["rows"]]
        ax.plot(
            xs, [r["floor_per_sample_s"] * 1e6 for r in table["rows"]], "o-", color="black", label="floor"
        )
        ax.plot(
            xs,
            [r["flowtorch_per_sample_s"] * 1e6 for r in table["rows"]],
            "s-",
            color="#1f77b4",
            label="flowtorch",
        )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(ScalarFormatter())
        ax.set_xlabel(xlabel)
        ax.set_ylabel("microseconds per sample (training step)")
        ax.set_title(f"MAF training step, time per sample vs {field}")
        ax.legend(fontsize=8)

    ax = axes[1, 1]
    table = bench.get("build_time", {}).get(key)
    if table:
        names = [c["name"] for c in table["candidates"]]
        secs = [c["seconds_per_iteration"]["median"] for c in table["candidates"]]
        labels = ["floor" if n == FLOOR else n for n in names]
        colors = [dict((lib, c) for lib, _, c in LIBS).get(n, "black") for n in names]
        ax.barh(labels, secs, color=colors)
        ax.axvline(1.0, color="grey", ls="--", lw=1)
        ax.set_xlabel("seconds")
        ax.set_title("Build a 5-layer MAF, D = 1000, hidden [1000, 1000]")
    else:
        ax.set_visible(False)

    fig.suptitle(
        f"flowtorch {meta.get('flowtorch')} benchmarks, torch {meta.get('torch')}, "
        f"{meta.get('cpu_count')} CPUs, {meta.get('date', '')[:10]}",
        fontsize=11,
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _ratio(r: dict[str, Any]) -> str:
    return f"**{r['median']:.3f}x** ({r['q1']:.2f}-{r['q3']:.2f})"


def tables(results: dict[str, Any]) -> str:
    """Markdown tables of a run's comparisons (what ``docs/benchmarks.md`` quotes)."""
    bench = results["benchmarks"]
    out: list[str] = []
    for name, subs in [
        ("maf_step", ["D=2", "D=16", "D=64"]),
        ("iaf_step", ["D=16", "D=64"]),
        ("spline_ar_step", ["D=16"]),
        ("spline_coupling_step", ["D=16"]),
    ]:
        for sub in subs:
            block = bench.get(name, {}).get(sub)
            if not block:
                continue
            keys = sorted(k for k in block if k.startswith("threads="))
            names = [c["name"] for c in block[keys[0]]["candidates"]]
            head = " | ".join(f"{k.replace('threads=', '')} thread(s): time, ratio (IQR)" for k in keys)
            out.append(f"**{name} {sub}**\n\n| candidate | parameters | {head} |")
            out.append("| --- | ---: |" + " ---: |" * len(keys))
            for n in names:
                cells = []
                for k in keys:
                    c = next((c for c in block[k]["candidates"] if c["name"] == n), None)
                    if c is None:
                        cells.append("")
                        continue
                    r = c["ratio_to_baseline"]
                    t = c["seconds_per_iteration"]["median"]
                    cells.append(f"{_ms(t)}, {_ratio(r)}")
                params = block.get("parameters", {}).get(n, "")
                out.append(f"| {n} | {params} | " + " | ".join(cells) + " |")
            pairs = block[keys[0]].get("pairs", {})
            for pair in pairs:
                vals = [block[k]["pairs"][pair] for k in keys if pair in block[k].get("pairs", {})]
                out.append(
                    f"\n{pair}: "
                    + ", ".join(
                        f"{k.replace('threads=', '')} thread(s) {_ratio(v)}" for k, v in zip(keys, vals)
                    )
                )
            out.append("")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("results", nargs="?", type=Path, default=ROOT / "benchmarks/results/latest.json")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/img/benchmarks.png")
    parser.add_argument("--threads", type=int, default=1, help="which thread setting to plot (default 1)")
    parser.add_argument("--tables", action="store_true", help="also print the comparisons as Markdown tables")
    args = parser.parse_args(argv)
    if args.tables:
        print(tables(json.loads(args.results.read_text())))
    plot(json.loads(args.results.read_text()), args.out, args.threads)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
