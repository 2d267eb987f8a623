"""The checks of user arguments: each error names the owner, the argument and what was given."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flowtorch.core.validation import (
    as_size,
    check_context,
    integer_at_least,
    nonscalar_event,
    positive_int,
    positive_ints,
    vector_event,
)


@pytest.mark.parametrize("value", [3, np.int64(3), torch.tensor(3), 3.0])
def test_integers_are_what_operator_index_takes_and_integral_floats(value: object) -> None:
    assert integer_at_least(value, "x") == 3 and positive_int(value, "x") == 3


@pytest.mark.parametrize(
    ("value", "minimum", "match"),
    [
        (0, 1, r"rk4: steps must be a positive integer, got 0"),
        (True, 1, r"must be a positive integer, got True"),
        (2.5, 1, r"got 2\.5"),
        ("3", 1, r"got '3'"),
        (-1, 0, r"rk4: steps must be an integer >= 0, got -1"),
    ],
)
def test_bad_integers_are_named(value: object, minimum: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        integer_at_least(value, "rk4: steps", minimum)


def test_sizes_and_hidden_sizes() -> None:
    assert as_size(4, "shape") == torch.Size([4]) and as_size((2, 3), "shape") == torch.Size([2, 3])
    with pytest.raises(TypeError, match=r"sample_shape must be a torch.Size or a tuple of ints, e.g. \(5,\)"):
        as_size(5, "sample_shape", allow_int=False)
    assert positive_ints([8, 8], "MAF: hidden_dims") == (8, 8)
    with pytest.raises(TypeError, match=r"e.g. \(16,\) for one hidden layer of 16"):
        positive_ints(16, "MAF: hidden_dims")
    with pytest.raises(ValueError, match=r"got \(16.5,\)"):
        positive_ints((16.5,), "MAF: hidden_dims")


def test_event_ranks() -> None:
    assert vector_event("Planar", (3,)) == torch.Size([3])
    with pytest.raises(
        ValueError, match=r"Planar acts on a vector event \(shape \(D,\)\), got shape \(2, 2\)"
    ):
        vector_event("Planar", (2, 2))
    assert nonscalar_event("MAF", (2, 3)) == torch.Size([2, 3])
    with pytest.raises(ValueError, match=r"MAF needs an event of at least one dim, got shape \(\)"):
        nonscalar_event("MAF", ())


@pytest.mark.parametrize(
    ("context_shape", "context", "error", "match"),
    [
        (None, torch.zeros(2), ValueError, r"^MAF takes no context, but a context was given$"),
        ((2,), None, ValueError, r"^MAF is conditional \(context_shape=\(2,\)\), but no context was given$"),
        ((2,), [0.0, 0.0], TypeError, r"^MAF: context must be a torch.Tensor, got list$"),
        ((2,), torch.zeros(5, 3), ValueError, r"trailing dims must be the context shape \(2,\)$"),
        ((2, 2), torch.zeros(2), ValueError, r"context has shape \(2,\)"),
    ],
)
def test_context_errors(
    context_shape: tuple[int, ...] | None, context: object, error: type, match: str
) -> None:
    cs = None if context_shape is None else torch.Size(context_shape)
    with pytest.raises(error, match=match):
        check_context("MAF", cs, context)


def test_context_errors_speak_of_the_subject_and_say_where_to_pass_it() -> None:
    with pytest.raises(ValueError, match=r"^Flow: this flow is not conditional, but a context was given$"):
        check_context(
            "Flow", None, torch.zeros(2), subject="Flow: this flow", unconditional="is not conditional"
        )
    with pytest.raises(ValueError, match=r"\(context_shape=\(3,\)\); pass context=$"):
        check_context("Flow", torch.Size([3]), None, missing="; pass context=")
    check_context("Flow", torch.Size([3]), torch.zeros(4, 5, 3))  # any batch dims
