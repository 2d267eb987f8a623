"""The examples run end to end in their ``--smoke`` mode and write a valid PNG."""

from __future__ import annotations

import importlib.util
import math
import pathlib
import sys
from types import ModuleType

import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HELPERS = ("_common", "_data")  # modules in examples/ that the examples import by their bare names


def _load(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Imports ``examples/<name>.py`` by path (the examples import their helpers from that folder)."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    for helper in HELPERS:  # restored at teardown, so the generic names do not leak to other tests
        monkeypatch.delitem(sys.modules, helper, raising=False)
    spec = importlib.util.spec_from_file_location(f"flowtorch_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    try:
        spec.loader.exec_module(module)
    finally:
        for helper in HELPERS:
            sys.modules.pop(helper, None)
    return module


# (example, lowest and highest plausible value of what ``main`` returns after a smoke run)
CASES = [
    # Test NLL in nats: a standard normal scores about 2.5 on this data, the true density 0.3.
    ("two_moons", 0.2, 2.5),
    # ELBO in nats: at most log Z = 0 (up to Monte Carlo error); the initial flow scores about -1.
    ("neals_funnel_vi", -1.5, 0.05),
    # Test NLL in nats: the target's entropy is 1.63; the initial flow scores about 14.
    ("bivariate_normal", 1.5, 8.0),
    # Test NLL in nats per image of the dequantised 8x8 digits: a uniform density over the pixel
    # levels scores 181.3, the initial flow about 130, the smoke run about 120; the full run (many
    # more steps, a larger flow) reaches about 90, which no smoke run gets near.
    ("digits", 85.0, 128.0),
    # Held-out gap E[log p(y|c) - log q(y|c)] in nats: zero for a perfect fit (a finite test set
    # can put it slightly below), about 1.35 for the initial flow, 0.09 after the smoke run and
    # 0.01 after the full run.
    ("conditional_density", -0.02, 0.5),
    # ELBO in nats of flowtorch's Pyro autoguide on Neal's funnel: at most log Z = 0 (up to Monte
    # Carlo error); the initial guide, about N(0, I) in (v, x), scores -1.0, the smoke run -0.4.
    ("pyro_autoguide", -0.75, 0.05),
    # Forward KL from the true Gaussian posteriors to the flow's, in nats, after NPE with sbi: about
    # 0.25 after the smoke run (1,000 simulations, 12 epochs), a few hundredths after the full run.
    ("sbi_npe", -0.05, 1.5),
]

# Modules an example needs beyond matplotlib and tqdm (the case is skipped without them).
REQUIRES = {"digits": ("sklearn",), "pyro_autoguide": ("pyro",), "sbi_npe": ("sbi",)}


@pytest.mark.parametrize(("name", "low", "high"), CASES, ids=[c[0] for c in CASES])
def test_example_smoke(
    name: str, low: float, high: float, tmp_path: pathlib.Path, monkeypatch, capsys
) -> None:
    for requirement in REQUIRES.get(name, ()):
        pytest.importorskip(requirement)
    module = _load(name, monkeypatch)
    out = tmp_path / "x.png"
    value = module.main(["--smoke", "--out", str(out)])
    assert isinstance(value, float)
    assert math.isfinite(value)
    assert low < value < high, f"{name}: implausible result {value}"
    data = out.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{name}: {out} is not a PNG"
    assert len(data) > 10_000, f"{name}: the figure is suspiciously small ({len(data)} bytes)"
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed and printed[-1].startswith("final "), f"{name}: the last line should report the result"
