"""Sylvester: arguments the other checks do not name, and repr of each variant."""

from __future__ import annotations

import pytest
import torch

from flowtorch.bijectors.sylvester import Sylvester

S = torch.Size


@pytest.mark.parametrize(
    ("kwargs", "shape", "match"),
    [
        ({}, (2, 2), r"Sylvester acts on a vector event \(shape \(D,\)\), got shape \(2, 2\)"),
        ({}, (), r"Sylvester acts on a vector event \(shape \(D,\)\), got shape \(\)"),
        ({"variant": "triangular", "n_reflections": 2}, (3,), "n_reflections applies to the householder"),
        ({"n_reflections": True}, (3,), "n_reflections must be a positive integer, got True"),
        ({"hidden": 2.0}, (3,), r"hidden must be an integer in \[1, D=3\], got 2\.0"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, object], shape: tuple[int, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Sylvester(**kwargs)(shape=S(shape))


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"hidden": 2, "n_reflections": 1}, "shape=(4,), hidden=2, variant='householder', n_reflections=1"),
        ({}, "shape=(4,), hidden=4, variant='householder', n_reflections=4"),
        ({"variant": "triangular"}, "shape=(4,), hidden=4, variant='triangular'"),
        ({"variant": "triangular", "flip": True}, "shape=(4,), hidden=4, variant='triangular', flip=True"),
    ],
)
def test_extra_repr_names_the_variant_and_its_options(kwargs: dict[str, object], expected: str) -> None:
    b = Sylvester(**kwargs)(shape=S([4]))
    assert b.extra_repr() == expected
    m = b.hidden
    tri = S([m * (m + 1) // 2])
    shapes = (tri, tri, S([m]))
    if b.variant == "householder":
        shapes = (*shapes, S([b.n_reflections, 4]))
    assert b.param_shapes() == shapes
