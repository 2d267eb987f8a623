"""The sbibm benchmark script's pieces that run without sbi or sbibm: the table it prints from
its results file."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sbibm_npe() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sbibm_npe", ROOT / "benchmarks" / "sbibm_npe.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["sbibm_npe"] = module
    spec.loader.exec_module(module)
    return module


def _write(
    path: Path, rows: list[tuple[str, int, str, float, float]], seed: int = 0, mode: str = "w"
) -> None:
    with path.open(mode) as f:
        for task, budget, method, c2st, fit in rows:
            record = {"task": task, "budget": budget, "observation": 1, "seed": seed, "method": method}
            f.write(json.dumps({**record, "c2st": c2st, "fit_s": fit}) + "\n")


def test_table_columns_follow_the_methods_asked_for(
    sbibm_npe: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "runs.jsonl"
    _write(
        log,
        [
            ("two_moons", 1000, "sbibm-npe", 0.60, 60.0),
            ("two_moons", 1000, "flowtorch-nsf", 0.57, 130.0),
            ("gaussian_mixture", 10000, "sbibm-npe", 0.54, 380.0),
            ("gaussian_mixture", 10000, "flowtorch-nsf", 0.61, 180.0),
            ("gaussian_mixture", 10000, "flowtorch-nsf-coupling", 0.53, 90.0),
            ("gaussian_mixture", 10000, "flowtorch-nsf-fullbatch", 0.63, 300.0),
        ],
    )
    monkeypatch.setattr(sbibm_npe, "LOG", log)
    monkeypatch.setattr(sbibm_npe, "_paper", lambda: {})
    default = sbibm_npe.table()
    assert "flowtorch-nsf-fullbatch" not in default  # the sweep's four columns
    assert "goal met (NSF / MAF / NSF coupling+LU)" in default
    row = "| two_moons | 1,000 | 0.600 | 60 | **0.570** | 130 | not run |  | not run |  | C2ST only / - / - |"
    assert row in default
    extra = sbibm_npe.table(
        methods=["sbibm-npe", "flowtorch-nsf-fullbatch"], tasks=["gaussian_mixture"], budgets=[10000]
    )
    lines = extra.splitlines()
    assert len(lines) == 3  # the header, the rule, one row
    assert "goal met (NSF full-batch)" in lines[0]
    assert lines[2].startswith("| gaussian_mixture | 10,000 | **0.540** | 380 | 0.630 | 300 | time only |")
    # the rows where every method asked for ran
    both = sbibm_npe.table(methods=["sbibm-npe", "flowtorch-nsf-fullbatch"], complete=True).splitlines()
    assert both[2:] == lines[2:]


def test_a_cell_of_several_seeds_shows_the_mean_c2st_and_the_median_fit_time(
    sbibm_npe: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "runs.jsonl"
    # seed 0 ran while the machine was loaded: its fits took 4 to 10 times as long
    _write(
        log, [("two_moons", 1000, "sbibm-npe", 0.60, 65.0), ("two_moons", 1000, "flowtorch-nsf", 0.57, 130.0)]
    )
    for seed, (ours, theirs) in enumerate([(0.61, 0.66), (0.60, 0.68)], start=1):
        rows = [
            ("two_moons", 1000, "sbibm-npe", theirs, 15.0 + seed),
            ("two_moons", 1000, "flowtorch-nsf", ours, 12.0),
        ]
        _write(log, rows, seed=seed, mode="a")
    monkeypatch.setattr(sbibm_npe, "LOG", log)
    monkeypatch.setattr(sbibm_npe, "_paper", lambda: {})
    row = sbibm_npe.table(methods=["sbibm-npe", "flowtorch-nsf"]).splitlines()[2]
    # C2ST: the means 0.647 and 0.593; fit: the medians 17 and 12, not the means 32 and 51
    assert row.startswith("| two_moons | 1,000 | 0.647 (n=3) | 17 | **0.593 (n=3)** | 12 | yes |"), row


def _between(text: str, marker: str) -> str:
    start = text.index(f"<!-- {marker} -->\n") + len(f"<!-- {marker} -->\n")
    return text[start : text.index(f"<!-- /{marker} -->", start)].strip()


def test_the_sbi_pages_tables_are_those_of_the_results_file(sbibm_npe: ModuleType) -> None:
    """The tables on the docs page are what ``table`` prints from the committed results, so the
    page cannot claim a figure the results file does not hold."""
    page = (ROOT / "docs" / "sbi.md").read_text()
    assert _between(page, "sbibm-table") == sbibm_npe.table()
    fullbatch = sbibm_npe.table(
        methods=["sbibm-npe", "flowtorch-nsf", "flowtorch-nsf-fullbatch"], complete=True
    )
    assert _between(page, "sbibm-fullbatch-table") == fullbatch
