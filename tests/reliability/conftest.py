"""The ``slow`` marker of the reliability tests.

Tests marked ``@pytest.mark.slow`` (minutes of training) are skipped unless asked for, with
``pytest -m slow tests/reliability`` (any ``-m`` expression naming ``slow``) or with the
environment variable ``FLOWTORCH_SLOW=1``.
"""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slow: minutes-long reliability test; run with `-m slow` or FLOWTORCH_SLOW=1"
    )


def _slow_wanted(config: pytest.Config) -> bool:
    return os.environ.get("FLOWTORCH_SLOW", "") not in ("", "0") or "slow" in (config.option.markexpr or "")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _slow_wanted(config):
        return
    skip = pytest.mark.skip(reason="slow: run with `-m slow` or FLOWTORCH_SLOW=1")
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(skip)
