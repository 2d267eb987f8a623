"""What differs between the torch versions flowtorch supports (``torch >= 2.0``)."""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["is_compiling"]


def _never_compiling() -> bool:
    return False


#: ``torch.compiler.is_compiling`` (torch >= 2.3): whether Dynamo is tracing the current call;
#: always False on older torch, whose Dynamo flowtorch does not support inside its own code.
is_compiling: Callable[[], bool] = getattr(getattr(torch, "compiler", None), "is_compiling", _never_compiling)
