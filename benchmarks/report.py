"""Renders the comparison tables of a results file as Markdown, for ``docs/benchmarks.md``.

``python benchmarks/report.py [benchmarks/results/latest.json]`` prints the targets and, for each
side-by-side workload (MAF, IAF, RQ-spline steps, build time), one table: every candidate's
parameter count and its median time and per-round ratio to the floor (with the interquartile
range) at each thread setting, followed by the ratios of the named pairs. The figures are the
file's; nothing is re-measured.
"""

from __future__ import annotations

import argparse
import json
import pathlib
from typing import Any

DEFAULT = pathlib.Path(__file__).resolve().parent / "results" / "latest.json"
WORKLOADS = ("maf_step", "iaf_step", "spline_ar_step", "spline_coupling_step")


def _time(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _ratio(stats: dict[str, Any]) -> str:
    return f"**{stats['median']:.3f}x** ({stats['q1']:.2f}-{stats['q3']:.2f})"


def _threads(table: dict[str, Any]) -> list[str]:
    return sorted((k for k in table if k.startswith("threads=")), key=lambda k: int(k.split("=")[1]))


def comparison(title: str, table: dict[str, Any]) -> list[str]:
    """One Markdown table of candidates (rows) by thread settings (columns)."""
    settings = _threads(table)
    params: dict[str, int] = table.get("parameters", {})
    names: list[str] = []
    cells: dict[tuple[str, str], str] = {}
    for setting in settings:
        for cand in table[setting]["candidates"]:
            if cand["name"] not in names:
                names.append(cand["name"])
            t = cand["seconds_per_iteration"]["median"]
            cells[cand["name"], setting] = f"{_time(t)}, {_ratio(cand['ratio_to_baseline'])}"
    head = [s.replace("threads=", "") + " thread(s): time, ratio (IQR)" for s in settings]
    lines = [f"**{title}**", "", "| candidate | parameters | " + " | ".join(head) + " |"]
    lines.append("| --- | ---: | " + " | ".join("---:" for _ in settings) + " |")
    for name in names:
        row = [cells.get((name, s), "failed or skipped") for s in settings]
        lines.append(f"| {name} | {params.get(name, '')} | " + " | ".join(row) + " |")
    pairs = {p for s in settings for p in table[s].get("pairs", {})}
    for pair in sorted(pairs):
        values = [
            f"{s.replace('threads=', '')} thread(s) {_ratio(table[s]['pairs'][pair])}"
            for s in settings
            if pair in table[s].get("pairs", {})
        ]
        lines += ["", f"{pair}: " + ", ".join(values)]
    return [*lines, ""]


def targets(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| target | measured | limit | met |", "| --- | ---: | ---: | --- |"]
    for r in rows:
        value = "n/a" if r["value"] is None else f"{r['value']:.3f}"
        met = "yes" if r["met"] else "**no**"
        note = f" ({r['note']})" if r.get("note") else ""
        lines.append(f"| {r['target']}{note} | {value} | {r['limit']} | {met} |")
    return [*lines, ""]


def render(results: dict[str, Any]) -> str:
    meta = results["meta"]
    out = [
        f"Run of {meta.get('date', '?')}: torch {meta.get('torch', '?')}, flowtorch "
        f"{meta.get('flowtorch', '?')}, {meta.get('cpu_count', '?')} CPU cores.",
        "",
        *targets(results.get("targets", [])),
    ]
    bench = results["benchmarks"]
    for name in WORKLOADS:
        for key, table in bench.get(name, {}).items():
            if isinstance(table, dict) and _threads(table):
                out += comparison(f"{name} {key}", table)
    if "build_time" in bench:
        out += comparison("build_time (5-layer MAF, D = 1000)", bench["build_time"])
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("path", nargs="?", type=pathlib.Path, default=DEFAULT)
    args = parser.parse_args(argv)
    print(render(json.loads(args.path.read_text())))


if __name__ == "__main__":
    main()
