"""Checks of user arguments whose errors name the argument, show what was given (its ``repr``)
and say what is expected, instead of a bare ``'int' object is not iterable`` from deep inside."""

from __future__ import annotations

import operator
from typing import Any

import torch

__all__ = ["as_size", "integer_at_least", "nonscalar_event", "positive_int", "positive_ints", "vector_event"]


def _integer(value: Any) -> int | None:
    """``value`` as an ``int`` if it is an integer (``int``, a NumPy or 0-d tensor integer, or an
    integral float such as ``3.0``), else ``None``; never a ``bool`` or a string."""
    if isinstance(value, (bool, str, bytes)):
        return None
    try:
        return operator.index(value)
    except TypeError:
        pass
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def as_size(value: Any, what: str, *, allow_int: bool = True) -> torch.Size:
    """``value`` as a ``torch.Size``: a ``torch.Size`` or a sequence of integers, and with
    ``allow_int`` one integer ``n`` for ``(n,)``, as torch's size arguments take it
    (``torch.zeros(5)``); without it, as ``torch.distributions``' ``sample_shape`` refuses it.

    Reference: the size arguments of ``torch.zeros`` and ``Tensor.view`` (PyTorch documentation).

    Args:
        value: what the user gave.
        what: the owner and the argument's name, for the error (``"Flow: context_shape"``).
        allow_int: take one integer ``n`` as ``(n,)``.

    Example:
        >>> as_size(5, "shape"), as_size([2, 3], "sample_shape", allow_int=False)
        (torch.Size([5]), torch.Size([2, 3]))
    """
    if isinstance(value, torch.Size):
        return value
    n = _integer(value)
    if n is not None:
        if allow_int:
            return torch.Size([n])
        raise TypeError(f"{what} must be a torch.Size or a tuple of ints, e.g. ({n},), got the int {value!r}")
    if isinstance(value, (tuple, list)):
        dims = [_integer(v) for v in value]
        if all(d is not None for d in dims):
            return torch.Size([d for d in dims if d is not None])
    kinds = "a torch.Size, a tuple of ints or an int" if allow_int else "a torch.Size or a tuple of ints"
    raise TypeError(f"{what} must be {kinds}, got {value!r}")


def integer_at_least(value: Any, what: str, minimum: int = 1) -> int:
    """``value`` as an ``int`` if it is an integer of at least ``minimum``, else a ``ValueError``
    that names the argument and shows its ``repr``: the one check of every integer argument.

    Reference: ``operator.index`` (Python documentation), which decides what is an integer.

    Args:
        value: what the user gave.
        what: the owner and the argument's name, for the error (``"rk4: steps"``).
        minimum: the smallest value allowed.

    Example:
        >>> integer_at_least(0, "SOSPolynomial: degree", minimum=0)
        0
    """
    n = _integer(value)
    if n is None or n < minimum:
        expected = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{what} must be {expected}, got {value!r}")
    return n


def positive_int(value: Any, what: str) -> int:
    """``value`` as an ``int`` if it is a positive integer, else a ``ValueError`` showing its ``repr``
    (:func:`integer_at_least` with ``minimum=1``).

    Reference: ``operator.index`` (Python documentation), which decides what is an integer.

    Args:
        value: what the user gave.
        what: the owner and the argument's name, for the error (``"MAF: layers"``).

    Example:
        >>> positive_int(3, "MAF: layers")
        3
    """
    return integer_at_least(value, what, 1)


def positive_ints(value: Any, what: str) -> tuple[int, ...]:
    """``value`` as a tuple of ints if it is a non-empty sequence of positive integers; one
    integer is refused with a hint, as it could mean one layer or a count of layers.

    Reference: ``operator.index`` (Python documentation), which decides what is an integer.

    Args:
        value: what the user gave.
        what: the owner and the argument's name, for the error (``"MAF: hidden_dims"``).

    Example:
        >>> positive_ints([32, 32], "MAF: hidden_dims")
        (32, 32)
    """
    n = _integer(value)
    if n is not None:
        raise TypeError(
            f"{what} must be a sequence of hidden sizes, e.g. ({n},) for one hidden layer of {n} "
            f"or ({n}, {n}) for two, got the int {value!r}"
        )
    if not isinstance(value, (tuple, list, torch.Size)):
        raise TypeError(f"{what} must be a tuple or list of positive integers, got {value!r}")
    sizes = [_integer(v) for v in value]
    if not sizes:
        raise ValueError(f"{what} must be one or more positive integers (at least one hidden layer), got ()")
    if any(s is None or s < 1 for s in sizes):
        raise ValueError(f"{what} must be one or more positive integers, got {tuple(value)!r}")
    return tuple(s for s in sizes if s is not None)


def vector_event(name: str, shape: torch.Size | tuple[int, ...]) -> torch.Size:
    """``shape`` as a ``torch.Size`` if it is a vector event ``(D,)``, else a ``ValueError`` that
    names the bijector and shows the shape.

    Reference: ``torch.distributions.constraints.independent(real, 1)`` (PyTorch documentation),
    the domain of a bijector on vectors.

    Args:
        name: the bijector's name, for the error.
        shape: the event shape it was built for.

    Example:
        >>> vector_event("Planar", (3,))
        torch.Size([3])
    """
    shape = torch.Size(shape)
    if len(shape) != 1:
        raise ValueError(f"{name} acts on a vector event (shape (D,)), got shape {tuple(shape)}")
    return shape


def nonscalar_event(name: str, shape: torch.Size | tuple[int, ...]) -> torch.Size:
    """``shape`` as a ``torch.Size`` if it has at least one dim (the autoregressive and coupling
    bijectors order or split its last dim), else a ``ValueError`` that names the bijector.

    Reference: ``torch.distributions.constraints.independent`` (PyTorch documentation), whose
    ``event_dim`` counts an event's dims.

    Args:
        name: the bijector's name, for the error.
        shape: the event shape it was built for.

    Example:
        >>> nonscalar_event("AffineAutoregressive", (2, 3))
        torch.Size([2, 3])
    """
    shape = torch.Size(shape)
    if len(shape) < 1:
        raise ValueError(f"{name} needs an event of at least one dim, got shape ()")
    return shape
