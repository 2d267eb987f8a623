"""Typed plans, as mypy sees them: ``Cls.plan(...)`` is a ``Plan[Cls]`` for plain ``mypy --strict``,
flowtorch 0.8's ``Cls(...)`` is one with ``flowtorch.mypy_plugin``, and mistakes are reported.

mypy runs in this process (``mypy.api``), on this checkout's ``src/``; skipped without mypy.
"""

from __future__ import annotations

import gc
import re
import sys
import textwrap
from pathlib import Path

import pytest

api = pytest.importorskip("mypy.api")

ROOT = Path(__file__).resolve().parent.parent

HEADER = """\
import torch
import flowtorch.bijectors as bij
import flowtorch.distributions as dist
import flowtorch.parameters as params
from flowtorch import Plan
from flowtorch.recipes import MAF

base = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(2), torch.ones(2)), 1)
"""

# (code, what mypy says about that line: a pattern of a revealed type or an error, "" for nothing);
# a class's module is left open (``flowtorch.<module>.Exp``)
TYPED_FORM = [
    ("plan = bij.AffineAutoregressive.plan(params.DenseAutoregressive.plan(hidden_dims=(8,)))", ""),
    (
        "reveal_type(plan)",
        r'Revealed type is "flowtorch\.[\w.]+\.Plan\[flowtorch\.[\w.]+\.AffineAutoregressive\]"',
    ),
    ("b = plan(shape=torch.Size([2]))", ""),
    ("reveal_type(b)", r'Revealed type is "flowtorch\.[\w.]+\.AffineAutoregressive"'),
    ("reveal_type(bij.Exp(shape=torch.Size([2])))", r'Revealed type is "flowtorch\.[\w.]+\.Exp"'),
    ("flow = dist.Flow(base, plan)", ""),
    ("reveal_type(flow.bijector)", r'Revealed type is "flowtorch\.[\w.]+\.AffineAutoregressive"'),
    ("reveal_type(dist.Flow(base, MAF()).bijector)", r'Revealed type is "flowtorch\.[\w.]+\.Compose"'),
    ("layers: list[Plan[bij.Bijector]] = [plan, bij.Permute.plan()]", ""),
    ("composed: dist.Flow = dist.Flow(base, bij.Compose.plan(layers))", ""),
    ("reveal_type(composed.bijector)", r'Revealed type is "flowtorch\.[\w.]+\.Bijector"'),
    ("plan.forward(torch.zeros(2))", r'error: "Plan\[AffineAutoregressive\]" has no attribute "forward"'),
    ("dist.Flow(base, params.Tensor.plan())", r'error: .*"Flow".*"Tensor"'),
]
# flowtorch 0.8's spelling
OLD_FORM = [
    ("old = bij.AffineAutoregressive(params.DenseAutoregressive(hidden_dims=(8,)))", ""),
    ("reveal_type(old)", ""),
    ("built = bij.AffineAutoregressive(shape=torch.Size([2]))", ""),
    ("reveal_type(bij.Compose([built, built]))", ""),
    ("reveal_type(bij.Compose([built, bij.Exp()]))", ""),
    ("reveal_type(bij.Invert(built))", ""),
    ("reveal_type(bij.Invert(bij.Exp()))", ""),
    ("bij.Affine(log_scale_max_clip='2')", ""),
    ("reveal_type(bij.Compose((built, built)))", ""),
    ("kwargs: dict[str, torch.Size] = {'shape': torch.Size([2])}", ""),
    ("reveal_type(bij.Exp(**kwargs))", ""),  # may hold the shape: typed as built
    (
        "reveal_type(params.DenseAutoregressive(param_shapes=[], input_shape=torch.Size([2])))",
        "",
    ),
]
WITHOUT_PLUGIN = {
    0: r'error: Missing named argument "shape" for "AffineAutoregressive"',
    1: r'Revealed type is "flowtorch\.[\w.]+\.AffineAutoregressive"',  # wrong, hence .plan
}
WITH_PLUGIN = {
    1: r'Revealed type is "flowtorch\.[\w.]+\.Plan\[flowtorch\.[\w.]+\.AffineAutoregressive\]"',
    3: r'Revealed type is "flowtorch\.[\w.]+\.Compose"',
    4: r'Revealed type is "flowtorch\.[\w.]+\.Plan\[flowtorch\.[\w.]+\.Compose\]"',
    5: r'Revealed type is "flowtorch\.[\w.]+\.Invert"',
    6: r'Revealed type is "flowtorch\.[\w.]+\.Plan\[flowtorch\.[\w.]+\.Invert\]"',
    7: r'error: Argument "log_scale_max_clip" to "Affine" has incompatible type "str"; expected "float"',
    8: r'Revealed type is "flowtorch\.[\w.]+\.Compose"',
    10: r'Revealed type is "flowtorch\.[\w.]+\.Exp"',
    11: r'Revealed type is "flowtorch\.[\w.]+\.DenseAutoregressive"',  # its key is param_shapes
}


def _mypy(tmp_path: Path, lines: list[str], plugin: bool, run: int = 0) -> dict[int, list[str]]:
    """mypy's messages about ``lines`` (after HEADER), by index into ``lines``; ``run`` changes
    the file (a trailing comment), so that mypy checks it again, with flowtorch from its cache."""
    code = HEADER + "\n".join(lines) + f"\n# run {run}\n"
    first = HEADER.count("\n") + 1
    (tmp_path / "snippet.py").write_text(code)
    name = "plugin" if plugin else "plain"
    config = tmp_path / "mypy.ini"
    config.write_text(
        textwrap.dedent(
            f"""\
            [mypy]
            python_version = 3.11
            strict = True
            mypy_path = {ROOT / "src"}
            cache_dir = {ROOT / ".mypy_cache" / f"test-typing-{name}"}
            untyped_calls_exclude = torch
            show_error_codes = False
            {"plugins = flowtorch.mypy_plugin" if plugin else ""}

            # as a user's mypy sees an installed package: analysed, its own errors not reported
            [mypy-flowtorch.*]
            follow_imports = silent
            """
        )
    )
    # mypy tunes the process for itself (the garbage collector's thresholds, the recursion
    # limit); put them back for the tests that run after this one
    threshold, limit = gc.get_threshold(), sys.getrecursionlimit()
    try:
        out, err, _ = api.run(["--config-file", str(config), str(tmp_path / "snippet.py")])
    finally:
        gc.set_threshold(*threshold)
        sys.setrecursionlimit(limit)
    messages: dict[int, list[str]] = {}
    for m in re.finditer(r"^(?P<file>[^:\n]+):(?P<line>\d+): (?P<msg>.*)$", out, re.M):
        msg = m["msg"]
        assert Path(m["file"]).name == "snippet.py", out
        if msg.startswith("note: ") and "Revealed type" not in msg:
            continue  # the notes that go with an error ("defined in ...")
        index = int(m["line"]) - first
        assert index >= 0, f"mypy reports on the snippet's imports:\n{out}"
        messages.setdefault(index, []).append(msg.removeprefix("note: "))
    assert not err, err
    return messages


def _check(messages: dict[int, list[str]], expected: dict[int, str], lines: list[str]) -> None:
    for i, code in enumerate(lines):
        said = messages.get(i, [])
        want = expected.get(i, "")
        if want:
            assert any(re.search(want, s) for s in said), (
                f"line {code!r}: expected {want!r}, mypy said {said}"
            )
        else:
            assert not said, f"line {code!r}: mypy said {said}"


def test_typed_form_and_its_errors_under_plain_strict_mypy(tmp_path: Path) -> None:
    lines = [code for code, _ in TYPED_FORM] + [code for code, _ in OLD_FORM[:2]]
    expected = {i: said for i, (_, said) in enumerate(TYPED_FORM)}
    expected.update({len(TYPED_FORM) + i: said for i, said in WITHOUT_PLUGIN.items()})
    _check(_mypy(tmp_path, lines, plugin=False), expected, lines)


def test_the_08_spelling_type_checks_with_the_plugin(tmp_path: Path) -> None:
    lines = [code for code, _ in TYPED_FORM] + [code for code, _ in OLD_FORM]
    expected = {i: said for i, (_, said) in enumerate(TYPED_FORM)}
    expected.update({len(TYPED_FORM) + i: said for i, said in WITH_PLUGIN.items()})
    # twice: the second run reads flowtorch from mypy's cache, which keeps no class bodies
    for run in range(2):
        _check(_mypy(tmp_path, lines, plugin=True, run=run), expected, lines)
