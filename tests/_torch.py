"""What the installed torch can do, for tests of features that older releases lack.

The suite runs on every torch version in the test matrix (``noxfile.py``); a test of a torch
feature newer than the oldest supported release is skipped by a version check, with the release
that brought the feature as its reason.
"""

from __future__ import annotations

import pytest
import torch

__all__ = ["FUSED_CPU_OPTIMIZERS", "RELEASE", "needs_fused_cpu_optimizers", "release"]


def release(version: str) -> tuple[int, int]:
    """``(major, minor)`` of a version string such as ``"2.5.1+cpu"``."""
    major, minor = version.split("+")[0].split(".")[:2]
    return int(major), int(minor)


#: The installed torch's ``(major, minor)``.
RELEASE = release(torch.__version__)

#: ``fused=True`` for ``Adam``, ``AdamW`` and ``SGD`` on CPU tensors (torch 2.4; before, fused
#: kernels were CUDA-only and ``SGD`` took no ``fused`` argument).
FUSED_CPU_OPTIMIZERS = RELEASE >= (2, 4)

needs_fused_cpu_optimizers = pytest.mark.skipif(
    not FUSED_CPU_OPTIMIZERS,
    reason=f"fused optimizers on CPU need torch >= 2.4 (this is {torch.__version__})",
)
