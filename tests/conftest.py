"""Shared fixtures: the registry of every bijector, built in each configuration the suite tests."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import pathlib
import pkgutil
import re
import sys
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.distributions import transform_to

import flowtorch.bijectors as bij
from flowtorch.core.bijector import Bijector
from tests._torch import FUSED_CPU_OPTIMIZERS, needs_fused_cpu_optimizers
from tests.case import CONTEXT_SHAPE, Case, D

torch.set_num_threads(1)

# ``--device cuda`` runs the device-parametrised tests on a GPU unchanged
pytest_plugins = ["tests._device"]


def pytest_configure(config: pytest.Config) -> None:
    # A cache miss the suite did not ask for is an error. Set here rather than in pyproject.toml:
    # resolving the category there imports flowtorch before coverage measurement starts.
    config.addinivalue_line("filterwarnings", "error::flowtorch.CacheMissWarning")
    # shown once per class and process: which test meets it first depends on the order
    config.addinivalue_line("filterwarnings", "ignore::flowtorch.bijectors.SequentialSamplingWarning")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A parametrised case whose id names a fused optimizer (``adam_fused``, ``sgd-fused``) needs
    fused kernels on CPU: skipped on a torch that lacks them (before 2.4)."""
    if FUSED_CPU_OPTIMIZERS:
        return
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and re.search(r"(^|[-_])fused($|[-_])", callspec.id):
            item.add_marker(needs_fused_cpu_optimizers)


def _plain(cls: type) -> Callable[[], Any]:
    return lambda: cls()


def _conditional(b: Bijector) -> bool:
    return b.params_fn is not None


def bijector_classes() -> list[type]:
    """Every bijector class defined in a module of ``flowtorch.bijectors``, exported or not, and
    the engine's own (``Compose``, ``Invert`` and the combinators in ``flowtorch.core``)."""
    out: dict[str, type] = {}
    names = [f"flowtorch.bijectors.{info.name}" for info in pkgutil.iter_modules(bij.__path__)]
    for name in [*names, "flowtorch.core.compose", "flowtorch.core.combinators"]:
        module = importlib.import_module(name)
        for obj in vars(module).values():
            if (
                inspect.isclass(obj)
                and issubclass(obj, Bijector)
                and obj is not Bijector
                and obj.__module__ == module.__name__
                and not obj.__name__.startswith("_")
                and not obj.is_base
            ):
                out[obj.__name__] = obj
    return list(out.values())


def example_bijector_classes() -> list[type]:
    """Every bijector class defined in the how-to guides' worked examples (``docs/examples/*.py``):
    the generic suite tests a bijector written from the guide with no registration anywhere."""
    out: list[type] = []
    for path in sorted((pathlib.Path(__file__).parent.parent / "docs" / "examples").glob("*.py")):
        spec = importlib.util.spec_from_file_location(f"_docs_examples_{path.stem}", path)
        assert spec is not None and spec.loader is not None
        module = sys.modules.get(spec.name)  # loaded once: pickling finds its classes by name
        if module is None:
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            spec.loader.exec_module(module)
        out += [
            obj
            for obj in vars(module).values()
            if inspect.isclass(obj) and issubclass(obj, Bijector) and obj.__module__ == spec.name
        ]
    return out


# Wrappers that take other bijectors are tested through the cases below.
WRAPPERS = {bij.Compose, bij.Invert}


def _cases() -> list[Case]:
    extra: list[Case] = []
    custom: set[str] = set()
    # Families whose bijectors need arguments or special inputs add ``tests/bijectors/cases_*.py``
    # modules defining ``CASES`` (and ``CUSTOM``: class names not built with default arguments).
    for path in sorted((pathlib.Path(__file__).parent / "bijectors").glob("cases_*.py")):
        module = importlib.import_module(f"tests.bijectors.{path.stem}")
        extra += module.CASES
        custom |= set(getattr(module, "CUSTOM", ()))
    cases: list[Case] = []
    for cls in bijector_classes() + example_bijector_classes():
        if cls in WRAPPERS or cls.__name__ in custom:
            continue
        cases.append(Case(cls.__name__, _plain(cls)))
        probe = cls()(shape=torch.Size([D]), context_shape=CONTEXT_SHAPE)
        if _conditional(probe):
            cases.append(Case(f"{cls.__name__}[context]", _plain(cls), context=True))
        if cls.__name__ in {"Exp", "Affine", "Spline"}:  # elementwise on a 2-D event
            cases.append(Case(f"{cls.__name__}[2x2]", _plain(cls), shape=torch.Size([2, 2])))
    cases += [
        Case("Invert(AffineAutoregressive)", lambda: bij.Invert(bij.AffineAutoregressive())),
        Case(
            "Invert(SplineAutoregressive)[context]",
            lambda: bij.Invert(bij.SplineAutoregressive()),
            context=True,
        ),
        Case("Invert(Exp)", lambda: bij.Invert(bij.Exp())),
        Case(
            "Compose(MAF, Permute, Sigmoid)",
            lambda: bij.Compose([bij.AffineAutoregressive(), bij.Permute(), bij.Sigmoid()]),
        ),
        Case(
            "Compose(IAF, Spline, MAF)[context]",
            lambda: bij.Compose(
                [bij.Invert(bij.AffineAutoregressive()), bij.Spline(), bij.AffineAutoregressive()]
            ),
            context=True,
        ),
        Case("Spline[linear]", lambda: bij.Spline(order="linear")),
        Case("SplineAutoregressive[linear]", lambda: bij.SplineAutoregressive(order="linear")),
        Case("AffineFixed[loc,scale]", lambda: bij.AffineFixed(loc=-1.0, scale=-2.5)),
        Case("Power[-0.5]", lambda: bij.Power(exponent=-0.5)),
        Case("LeakyReLU[0.3]", lambda: bij.LeakyReLU(negative_slope=0.3)),
    ]
    return cases + extra


CASES = _cases()


@pytest.fixture(params=CASES, ids=[c.name for c in CASES])
def case(request: pytest.FixtureRequest) -> Case:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request: pytest.FixtureRequest) -> torch.dtype:
    return request.param  # type: ignore[no-any-return]


def domain_sample(
    b: Bijector, batch: tuple[int, ...], dtype: torch.dtype, scale: float = 1.0
) -> torch.Tensor:
    """Valid inputs for ``b``: standard normal noise pushed into its domain."""
    z = torch.randn(*batch, *b.shape, dtype=dtype) * scale
    return transform_to(b.domain)(z)


def context_for(case: Case, batch: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor | None:
    return torch.randn(*batch, *CONTEXT_SHAPE, dtype=dtype) if case.context else None
