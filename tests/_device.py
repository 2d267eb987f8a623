"""Pytest plugin: the ``--device`` option and the ``device`` fixture.

Load it from the root ``conftest.py`` with ``pytest_plugins = ["tests._device"]`` (or on the
command line with ``-p tests._device``); then ``pytest --device cuda`` runs the tests that take
the ``device`` fixture on a GPU, unchanged. The default is ``cpu``. Tests may also import the
fixture directly (``from tests._device import device``), which works without the option.
"""

from __future__ import annotations

import pytest
import torch

__all__ = ["device", "pytest_addoption"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--device",
        default="cpu",
        help="torch device for the tests that take the `device` fixture (cpu, cuda, cuda:1, mps, ...)",
    )


@pytest.fixture(scope="session")
def device(request: pytest.FixtureRequest) -> torch.device:
    """The ``torch.device`` chosen with ``--device`` (default ``cpu``); skips if it is not available."""
    name = request.config.getoption("--device", default="cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        pytest.skip(f"--device {name}: CUDA is not available")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        pytest.skip(f"--device {name}: MPS is not available")
    return dev
