"""Shape helpers for the hot path."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["as_slice", "broadcast_shapes", "broadcastable", "swap_event", "take_last"]


def broadcast_shapes(*shapes: Sequence[int]) -> torch.Size:
    """``torch.broadcast_shapes(*shapes)`` without its Python overhead.

    ``torch.broadcast_shapes`` goes through ``torch._refs`` and its symbolic-shape checks: about
    12 us a call on CPU, more than a small tensor op, and 0.3 s for the first call in a process
    (``python benchmarks/components.py --only shapes``). Equal shapes (the common case) return at
    once; other shapes are broadcast here, and shapes that do not broadcast are handed to
    ``torch.broadcast_shapes`` so that the error is torch's own.

    Right-aligned, dim :math:`i` of the result is the one size other than 1 among the
    :math:`n^{(k)}_i` of the shapes :math:`k` that have that dim (1 if there is none); two
    different sizes other than 1 at a dim do not broadcast.

    Reference: NumPy's broadcasting rules, as ``torch.broadcast_shapes`` (PyTorch documentation)
    applies them.

    Args:
        shapes: the shapes to broadcast (``torch.Size`` or tuples of ints).

    Example:
        >>> broadcast_shapes((4, 1), (3,))
        torch.Size([4, 3])
    """
    out = _broadcast(shapes)
    if out is None:
        torch.broadcast_shapes(*shapes)  # raises torch's error
        raise AssertionError(f"shapes {shapes} broadcast in torch but not here")  # pragma: no cover
    return out


def broadcastable(*shapes: Sequence[int]) -> bool:
    """Whether ``shapes`` broadcast together, without raising: at every right-aligned dim
    :math:`i`, the sizes :math:`n^{(k)}_i` other than 1 are all equal (the rule of
    :func:`broadcast_shapes`).

    Reference: NumPy's broadcasting rules, as ``torch.broadcast_shapes`` (PyTorch documentation)
    applies them.

    Args:
        shapes: the shapes to check (``torch.Size`` or tuples of ints).

    Example:
        >>> broadcastable((4, 1), (3,)), broadcastable((2,), (3,))
        (True, False)
    """
    return _broadcast(shapes) is not None


def _broadcast(shapes: Sequence[Sequence[int]]) -> torch.Size | None:
    """The broadcast shape, or ``None`` if ``shapes`` do not broadcast; equal shapes at once."""
    first = shapes[0] if shapes else ()
    if all(s == first for s in shapes):
        return torch.Size(first)
    n = max(len(s) for s in shapes)
    out = [1] * n
    for s in shapes:
        offset = n - len(s)
        for i, size in enumerate(s):
            current = out[offset + i]
            if current == 1:
                out[offset + i] = size
            elif size != 1 and size != current:
                return None
    return torch.Size(out)


def swap_event(name: str, shape: torch.Size, event_in: torch.Size, event_out: torch.Size) -> torch.Size:
    """``batch + event_in`` -> ``batch + event_out``: the ``forward_shape``/``inverse_shape`` of a
    bijector that changes its event's shape.

    Reference: ``torch.distributions.transforms.ReshapeTransform.forward_shape`` (PyTorch
    documentation), which maps shapes the same way.

    Args:
        name: the bijector's name, for the error.
        shape: ``batch + event_in`` (any number of batch dims).
        event_in: the event shape ``shape`` must end with.
        event_out: the event shape that replaces it.

    Example:
        >>> swap_event("Reshape", torch.Size([5, 2, 3]), torch.Size([2, 3]), torch.Size([6]))
        torch.Size([5, 6])
    """
    shape = torch.Size(shape)
    n = len(event_in)
    if len(shape) < n or shape[len(shape) - n :] != event_in:
        raise ValueError(f"{name}: shape {tuple(shape)} does not end with the event shape {tuple(event_in)}")
    return shape[: len(shape) - n] + event_out


def as_slice(index: list[int]) -> slice | None:
    """The ``slice(start, stop, step)`` that selects exactly ``index`` (increasing and evenly
    spaced), or ``None``: a regular coupling mask then selects a strided view, not a gather.

    Reference: Python's ``slice`` (Python documentation).

    Args:
        index: positions along the last dim, increasing.

    Example:
        >>> as_slice([1, 3, 5]), as_slice([0, 1, 3])
        (slice(1, 6, 2), None)
    """
    if not index:
        return None
    step = index[1] - index[0] if len(index) > 1 else 1
    if step < 1 or index != list(range(index[0], index[-1] + 1, step)):
        return None
    return slice(index[0], index[-1] + 1, step)


def take_last(flat: torch.Tensor, positions: slice | None, index: torch.Tensor) -> torch.Tensor:
    """``flat[..., index]``: a strided view when ``positions`` (from :func:`as_slice`) is a slice,
    else a gather.

    Reference: ``torch.index_select`` (PyTorch documentation).

    Args:
        flat: values whose last dim is indexed.
        positions: ``as_slice(index.tolist())``.
        index: the positions, a 1-D integer tensor.

    Example:
        >>> take_last(torch.arange(6.0), slice(1, 6, 2), torch.tensor([1, 3, 5]))
        tensor([1., 3., 5.])
    """
    return flat[..., positions] if positions is not None else flat[..., index]
