"""What differs between the torch versions flowtorch supports (``torch >= 2.1``)."""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["TORCH_RELEASE", "is_compiling"]


def _release(version: str) -> tuple[int, int]:
    major, minor = version.split("+")[0].split(".")[:2]
    return int(major), int(minor)


#: The installed torch's ``(major, minor)``.
TORCH_RELEASE = _release(torch.__version__)

#: Whether Dynamo is tracing the current call: ``torch.compiler.is_compiling`` (torch >= 2.3), and
#: before it ``torch._utils.is_compiling``, which Dynamo also traces as True (torch 2.1 and 2.2;
#: deprecated since). False in eager code.
is_compiling: Callable[[], bool] = (
    torch.compiler.is_compiling if TORCH_RELEASE >= (2, 3) else torch._utils.is_compiling
)
