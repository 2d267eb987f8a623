"""What the installed torch can do, for tests of features that older releases lack.

The suite runs on every torch version in the test matrix (``noxfile.py``); a test of a torch
feature newer than the oldest supported release is skipped by a version check, with the release
that brought the feature as its reason.
"""

from __future__ import annotations

import pytest
import torch

__all__ = [
    "COLLECTIVES_REACH_MODES",
    "COMPILES_FLOWS",
    "FUSED_CPU_OPTIMIZERS",
    "RELEASE",
    "needs_collectives_in_modes",
    "needs_compilable_flows",
    "needs_fused_cpu_optimizers",
    "release",
]


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

#: ``torch.compile`` of a flow outside ``BijectiveMode`` (``log_prob``, a training step, with
#: ``fullgraph=True``): Dynamo traces the bijectors' call path from torch 2.12 on. Older Dynamo
#: stops at one of three constructs in ``Bijector`` (flowtorch/core/bijector.py): attribute
#: caches written on a module, after which 2.1 cannot trace its ``parameters()``; ``next()`` with
#: a default (2.5, 2.6); a tuple indexed by a bool (2.9, 2.11). Seen on those releases.
COMPILES_FLOWS = RELEASE >= (2, 12)

needs_compilable_flows = pytest.mark.skipif(
    not COMPILES_FLOWS,
    reason=f"torch.compile of flows needs torch >= 2.12: older Dynamo cannot trace Bijector's call "
    f"path (this is {torch.__version__})",
)

#: ``torch.distributed`` collectives (``all_reduce``, ``broadcast``) dispatch ``__torch_function__``
#: from torch 2.12 on, so ``BijectiveMode`` sees them as the writes they are; before, they bump
#: no version counter and pass no mode, and an entry recorded before one is served after it.
COLLECTIVES_REACH_MODES = RELEASE >= (2, 12)

needs_collectives_in_modes = pytest.mark.skipif(
    not COLLECTIVES_REACH_MODES,
    reason=f"collectives reach torch-function modes from torch 2.12 (this is {torch.__version__})",
)
